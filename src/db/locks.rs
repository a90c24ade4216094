//! PostgreSQL advisory locks: how background jobs run once across every instance.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

/// The advisory-lock keys gatehouse uses (one namespace: "gh" in the high bytes).
#[derive(Debug, Clone, Copy)]
#[repr(i64)]
pub enum Job {
    /// Deleting expired tokens, sessions and throttle state.
    Purge = 0x6768_0000_0001,
    /// Creating, activating and retiring signing keys.
    SigningKeys = 0x6768_0000_0002,
}

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

/// Takes `job`'s lock for the rest of the current transaction if nobody holds it; false otherwise.
pub fn try_lock_for_transaction(conn: &mut PgConnection, job: Job) -> QueryResult<bool> {
    let lock: Taken = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS taken")
        .bind::<BigInt, _>(job as i64)
        .get_result(conn)?;
    Ok(lock.taken)
}

/// Takes `job`'s lock for the rest of the current transaction, waiting for another holder first.
pub fn lock_for_transaction(conn: &mut PgConnection, job: Job) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)").bind::<BigInt, _>(job as i64).execute(conn).map(|_| ())
}

/// Runs `work` inside a transaction holding `job`'s lock, if no other session holds it; `Ok(None)`
/// when another instance is doing the job right now.
pub fn exclusively<T>(
    conn: &mut PgConnection,
    job: Job,
    work: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<Option<T>> {
    conn.transaction(|conn| if try_lock_for_transaction(conn, job)? { work(conn).map(Some) } else { Ok(None) })
}

/// Runs `work` inside a transaction holding `job`'s lock, waiting for another holder to finish first.
pub fn serialized<T>(
    conn: &mut PgConnection,
    job: Job,
    work: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    conn.transaction(|conn| {
        lock_for_transaction(conn, job)?;
        work(conn)
    })
}
