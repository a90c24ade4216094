//! `serve --dev` works only on a database of its own: one it made, or found empty and marked. The
//! mark is the database's comment, so it survives restarts and needs no table.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

/// The comment that marks a database as `--dev`'s own.
pub const MARK: &str = "gatehouse serve --dev: demo data only";

/// Whether `--dev` may use the connected database.
#[derive(Debug, PartialEq, Eq)]
pub enum DevClaim {
    /// Marked as `--dev`'s already.
    Ours,
    /// It held nothing: now marked as `--dev`'s.
    Claimed,
    /// It holds data `--dev` did not make: leave it alone.
    Foreign { users: i64, keys: i64 },
}

#[derive(QueryableByName)]
struct Mark {
    #[diesel(sql_type = Nullable<Text>)]
    mark: Option<String>,
}

struct Held {
    users: i64,
    keys: i64,
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(QueryableByName)]
struct Rows {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Claims the connected database for `--dev`, before any migration or write touches it.
pub fn claim(conn: &mut PgConnection) -> QueryResult<DevClaim> {
    conn.transaction(|conn| {
        let mark: Mark = diesel::sql_query(
            "SELECT shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname = current_database()",
        )
        .get_result(conn)?;
        if mark.mark.as_deref() == Some(MARK) {
            return Ok(DevClaim::Ours);
        }
        // The tables may not exist yet (a database created a moment ago): nothing is held then.
        let count = |conn: &mut PgConnection, table: &str| -> QueryResult<i64> {
            let present: Present = diesel::sql_query("SELECT to_regclass($1) IS NOT NULL AS present")
                .bind::<Text, _>(table)
                .get_result(conn)?;
            if !present.present {
                return Ok(0);
            }
            let rows: Rows = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}")).get_result(conn)?;
            Ok(rows.n)
        };
        let held = Held { users: count(conn, "users")?, keys: count(conn, "signing_keys")? };
        if held.users > 0 || held.keys > 0 {
            return Ok(DevClaim::Foreign { users: held.users, keys: held.keys });
        }
        diesel::sql_query(format!(
            "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), '{MARK}'); END $$"
        ))
        .execute(conn)?;
        Ok(DevClaim::Claimed)
    })
}
