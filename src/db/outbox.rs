//! The `mail_outbox` table: mails written in the transaction that causes them, delivered by
//! whichever instance leases them first. The retry rule is `mail::retry_after`'s; here rows are
//! leased, marked and counted.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::schema::mail_outbox;

/// A mail to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    /// What it is about (`password_reset`, `password_changed`, …), for the metadata that stays.
    pub kind: &'static str,
    pub user_id: Option<Uuid>,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
}

/// Queues `mail` (in the caller's transaction, so it exists exactly when what caused it does).
pub fn queue(conn: &mut PgConnection, mail: &NewMail) -> QueryResult<Uuid> {
    let id = Uuid::now_v7();
    diesel::insert_into(mail_outbox::table)
        .values((
            mail_outbox::id.eq(id),
            mail_outbox::kind.eq(mail.kind),
            mail_outbox::user_id.eq(mail.user_id),
            mail_outbox::recipient.eq(&mail.recipient),
            mail_outbox::subject.eq(&mail.subject),
            mail_outbox::body_text.eq(&mail.body_text),
            mail_outbox::body_html.eq(&mail.body_html),
        ))
        .execute(conn)?;
    Ok(id)
}

/// Queues each of `mails` (none at all is fine: a notice to a user without an address, or mail off).
pub fn queue_each<'a>(conn: &mut PgConnection, mails: impl IntoIterator<Item = &'a NewMail>) -> QueryResult<()> {
    for mail in mails {
        queue(conn, mail)?;
    }
    Ok(())
}

/// A leased mail, to deliver now.
#[derive(Debug, Clone, QueryableByName)]
pub struct LeasedMail {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub recipient: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub body_text: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub body_html: Option<String>,
    /// Attempts including this one.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Leases up to `limit` due mails for `lease_secs` seconds: due (`next_attempt_at` passed), pending,
/// and not leased by anyone (or their lease ran out: a crashed instance's). `SKIP LOCKED`, so
/// instances polling at once take different rows, never the same one.
pub fn lease_due(conn: &mut PgConnection, limit: i64, lease_secs: i64) -> QueryResult<Vec<LeasedMail>> {
    diesel::sql_query(
        "UPDATE mail_outbox m SET leased_until = clock_timestamp() + make_interval(secs => $2), \
                attempts = m.attempts + 1 \
         FROM (SELECT id FROM mail_outbox \
               WHERE state = 'pending' AND next_attempt_at <= clock_timestamp() \
                 AND (leased_until IS NULL OR leased_until < clock_timestamp()) \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE m.id = due.id \
         RETURNING m.id, m.recipient, m.subject, m.body_text, m.body_html, m.attempts, m.created_at",
    )
    .bind::<BigInt, _>(limit)
    .bind::<diesel::sql_types::Double, _>(lease_secs as f64)
    .load(conn)
}

/// Delivered: the body (which may hold a link) goes, the metadata stays. `false` when the lease was
/// lost meanwhile (another instance took the row over and may deliver it too: the one duplicate
/// the outbox allows, after a stall longer than the lease).
pub fn mark_sent(conn: &mut PgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::update(mail_outbox::table.find(id).filter(mail_outbox::state.eq("pending")))
        .set((
            mail_outbox::state.eq("sent"),
            mail_outbox::sent_at.eq(diesel::dsl::now),
            mail_outbox::body_text.eq(None::<String>),
            mail_outbox::body_html.eq(None::<String>),
            mail_outbox::leased_until.eq(None::<DateTime<Utc>>),
            mail_outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Not delivered: try again at `next_attempt_at`, or (`None`) give up: `failed`, the body deleted.
pub fn mark_unsent(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    next_attempt_at: Option<DateTime<Utc>>,
) -> QueryResult<()> {
    let row = mail_outbox::table.find(id).filter(mail_outbox::state.eq("pending"));
    match next_attempt_at {
        Some(at) => diesel::update(row)
            .set((
                mail_outbox::next_attempt_at.eq(at),
                mail_outbox::leased_until.eq(None::<DateTime<Utc>>),
                mail_outbox::last_error.eq(error),
            ))
            .execute(conn)?,
        None => diesel::update(row)
            .set((
                mail_outbox::state.eq("failed"),
                mail_outbox::body_text.eq(None::<String>),
                mail_outbox::body_html.eq(None::<String>),
                mail_outbox::leased_until.eq(None::<DateTime<Utc>>),
                mail_outbox::last_error.eq(error),
            ))
            .execute(conn)?,
    };
    Ok(())
}

/// Rows by state, and the age of the oldest pending mail in seconds: the outbox's metrics.
#[derive(Debug, Clone, Default, QueryableByName)]
pub struct OutboxCounts {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub sent: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub oldest_pending_secs: f64,
}

pub fn counts(conn: &mut PgConnection) -> QueryResult<OutboxCounts> {
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending, \
                count(*) FILTER (WHERE state = 'sent') AS sent, \
                count(*) FILTER (WHERE state = 'failed') AS failed, \
                coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE state = 'pending')), 0)::float8 \
                    AS oldest_pending_secs \
         FROM mail_outbox",
    )
    .get_result(conn)
}

/// How many mails of `kind` were queued for `user_id` since `since` (the per-account limit).
pub fn queued_since(conn: &mut PgConnection, user_id: Uuid, kind: &str, since: DateTime<Utc>) -> QueryResult<i64> {
    mail_outbox::table
        .filter(mail_outbox::user_id.eq(user_id))
        .filter(mail_outbox::kind.eq(kind))
        .filter(mail_outbox::created_at.ge(since))
        .count()
        .get_result(conn)
}
