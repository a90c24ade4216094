//! The signing keys: which key signs, which are published, which are accepted, and how they rotate.
//!
//! Keys live in PostgreSQL (private parts encrypted under a key derived from the master secret), so
//! every instance signs with the same current key and picks up a key another instance (or the CLI)
//! made within [`RELOAD_EVERY`]. A key's life follows from activation times alone:
//!
//! * **next**: made [`PUBLICATION_DELAY`] before it activates — published in the JWKS (whose
//!   `max-age` is [`JWKS_MAX_AGE`]) before any token it signs can be seen;
//! * **current**: the newest activated key; it signs;
//! * **retired**: superseded, still published and accepted until every token it signed has expired
//!   (the access-token lifetime plus [`RETIREMENT_MARGIN`]), then gone.
//!
//! HS256 "keys" are `GATEHOUSE_JWT_SECRET` itself: a row records when HS256 was current, so after a
//! change of algorithm the old algorithm's tokens are accepted until they expire, and no longer.
//! A token is accepted only with the algorithm of the key its `kid` names.
//!
//! Keys have a purpose: access tokens follow `GATEHOUSE_SIGNING_ALG`; ID tokens (OpenID Connect)
//! have a timeline per algorithm a client may register (RS256, the default, ES256 and EdDSA). Each
//! purpose and algorithm is a lane that rotates and publishes as above on its own; the JWKS holds
//! them all, and an access token is accepted only under an access key.

//!
//! The parts: [`plan`] decides (a pure function of the stored keys' times), [`sealed`] keeps private
//! keys encrypted at rest, [`ring`] is what every instance signs and verifies with, and [`reload`]
//! keeps a ring fresh.

mod plan;
mod reload;
mod ring;
mod sealed;

pub use plan::{KeyPolicy, KeyState, KeyTimes, Lane, Step, plan, states, stored_timeline};
pub use reload::Reloader;
pub use ring::{KeyRing, Undecryptable};
pub use sealed::{KeyCipher, NewKey, generate, hs256_kid, readable_with, reencrypt};

use std::time::Duration;

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Access tokens (RFC 9068), verified by `/api` and other services.
    Access,
    /// OpenID Connect ID tokens, verified by relying parties.
    IdToken,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Access => "access",
            KeyPurpose::IdToken => "id_token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [KeyPurpose::Access, KeyPurpose::IdToken].into_iter().find(|purpose| purpose.as_str() == text)
    }
}

/// The algorithms ID tokens may be signed with, each a lane of its own (RS256 is the default).
pub const ID_TOKEN_ALGS: [crate::config::SigningAlgorithm; 3] = [
    crate::config::SigningAlgorithm::Rs256,
    crate::config::SigningAlgorithm::Es256,
    crate::config::SigningAlgorithm::EdDsa,
];

/// The ID-token lane of a client's registered algorithm.
pub fn id_token_signing_alg(alg: crate::domain::IdTokenAlg) -> crate::config::SigningAlgorithm {
    use crate::config::SigningAlgorithm;
    match alg {
        crate::domain::IdTokenAlg::Rs256 => SigningAlgorithm::Rs256,
        crate::domain::IdTokenAlg::Es256 => SigningAlgorithm::Es256,
        crate::domain::IdTokenAlg::EdDsa => SigningAlgorithm::EdDsa,
    }
}

/// `Cache-Control: max-age` of the JWKS: how long a verifier may keep a copy.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// How often every instance reloads the keys (and the one holding the lock rotates them).
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// Between two reloads asked for by tokens whose key this instance has not loaded: tokens with
/// made-up kids cost the database at most one reload a second per instance.
const RELOAD_FOR_UNKNOWN_KID_EVERY: chrono::Duration = chrono::Duration::seconds(1);
/// A new key is published this long before it signs, so its first token never meets a set that
/// lacks it: an instance that has not reloaded yet serves the old set for up to one reload period
/// after the key is made, a verifier may keep that copy one max-age, and one more reload period
/// covers a slow reload (a busy pool, the rotation lock) and the instances' clocks differing.
pub const PUBLICATION_DELAY: chrono::Duration =
    chrono::Duration::seconds((JWKS_MAX_AGE.as_secs() + 2 * RELOAD_EVERY.as_secs()) as i64);
// Checked when compiling, not by a test: a new key is published at least one max-age ahead.
const _: () = assert!(PUBLICATION_DELAY.num_seconds() >= JWKS_MAX_AGE.as_secs() as i64);
/// A retired key stays this long past the access-token lifetime: instances that have not reloaded
/// yet may still sign with it for up to [`RELOAD_EVERY`], and clocks differ a little.
pub const RETIREMENT_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// Rows of keys gone from the set are deleted this long after (their private parts with them).
const DELETE_AFTER: chrono::Duration = chrono::Duration::days(1);
/// The kid of the HS256 row a pre-keys deployment gets from its migration: its tokens carry no kid.
const LEGACY_HS256_KID: &str = "hs256-legacy";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "GATEHOUSE_JWT_SECRET cannot decrypt the signing key {kid} stored in the database: start with the secret the keys were made with, or re-encrypt them with `gatehouse keys re-encrypt`"
    )]
    Undecryptable { kid: String },
    #[error("the signing key {kid} stored in the database is not usable")]
    Damaged {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot make a signing key")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot connect to the database to read the signing keys")]
    Connect(#[source] diesel::ConnectionError),
    #[error("the signing keys could not be read or written")]
    Query(#[from] diesel::result::Error),
}
