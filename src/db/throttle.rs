//! The `login_throttle` table: the per-address sign-in budget that every instance shares.
//!
//! One generic-cell-rate-algorithm state per address bucket, advanced in a single statement
//! (`INSERT … ON CONFLICT … DO UPDATE … RETURNING`) against PostgreSQL's clock, so concurrent
//! attempts on any number of instances are counted one after another and instances with skewed
//! clocks agree.

use std::time::Duration;

use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Double, Interval, Text};

use crate::domain::AddressBucket;

/// A rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Time between two attempts at the steady rate.
    pub emission_interval: Duration,
    /// Attempts that may come at once.
    pub burst: u32,
}

impl Budget {
    /// How far ahead of now the state may run: the burst, less the one attempt it admits at once.
    fn tolerance(&self) -> Duration {
        self.emission_interval * self.burst.saturating_sub(1)
    }
}

#[derive(QueryableByName)]
struct Verdict {
    #[diesel(sql_type = Bool)]
    allowed: bool,
    #[diesel(sql_type = Double)]
    ahead_secs: f64,
}

/// Counts one attempt from `bucket`: `Ok(())` when the budget allows it, `Err(wait)` otherwise
/// (then nothing is counted, and `wait` is how long until the next attempt would be allowed).
pub fn take(conn: &mut PgConnection, bucket: &AddressBucket, budget: Budget) -> QueryResult<Result<(), Duration>> {
    let verdict: Verdict = diesel::sql_query(
        "INSERT INTO login_throttle AS t (bucket, tat, last_allowed) VALUES ($1, now() + $2, TRUE) \
         ON CONFLICT (bucket) DO UPDATE SET \
             last_allowed = greatest(t.tat, now()) <= now() + $3, \
             tat = CASE WHEN greatest(t.tat, now()) <= now() + $3 THEN greatest(t.tat, now()) + $2 ELSE t.tat END \
         RETURNING last_allowed AS allowed, extract(epoch FROM tat - now())::float8 AS ahead_secs",
    )
    .bind::<Text, _>(bucket.as_str())
    .bind::<Interval, _>(interval(budget.emission_interval))
    .bind::<Interval, _>(interval(budget.tolerance()))
    .get_result(conn)?;
    if verdict.allowed {
        return Ok(Ok(()));
    }
    let wait = (verdict.ahead_secs - budget.tolerance().as_secs_f64()).max(0.0);
    Ok(Err(Duration::from_secs_f64(wait)))
}

/// Forgets addresses whose budget has fully recovered.
pub fn purge_recovered(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM login_throttle WHERE tat < now()").execute(conn)
}

fn interval(duration: Duration) -> PgInterval {
    PgInterval::from_microseconds(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
}
