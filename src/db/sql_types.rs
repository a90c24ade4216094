//! How the domain's stored names and scope lists travel to and from `text` columns. A value that does
//! not parse is an error (the row was written by something else), never a silent default.

use std::io::Write as _;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::{Channel, EventKind, FailureReason, ScopeSet};

macro_rules! text_column {
    ($type:ty, $to_text:expr) => {
        impl ToSql<Text, Pg> for $type {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                let text: String = $to_text(self);
                out.write_all(text.as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $type {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                let text = std::str::from_utf8(value.as_bytes())?;
                Ok(<$type>::from_str(text)?)
            }
        }
    };
}

text_column!(EventKind, |kind: &EventKind| kind.as_str().to_owned());
text_column!(Channel, |channel: &Channel| channel.as_str().to_owned());
text_column!(FailureReason, |reason: &FailureReason| reason.as_str().to_owned());
text_column!(ScopeSet, |scopes: &ScopeSet| scopes.to_string());
