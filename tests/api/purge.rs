//! The hourly purge (`gatehouse::db::purge_expired`): what it deletes, what it keeps, and that it
//! does nothing while another instance holds its advisory lock.

use diesel::{Connection, PgConnection, RunQueryDsl};
use gatehouse::db::locks::Job;

use crate::helpers::{TestApp, spawn_app};

fn execute_sql(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).unwrap();
}

/// The `label`s left in a table whose rows the test labelled, sorted.
fn labels(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Label {
        #[diesel(sql_type = diesel::sql_types::Text)]
        label: String,
    }
    let mut labels: Vec<String> =
        diesel::sql_query(sql).load::<Label>(conn).unwrap().into_iter().map(|row| row.label).collect();
    labels.sort();
    labels
}

/// Everything the purge may touch, as labels: families and tokens by scope, revocations and
/// sessions by user agent / jti comment, throttle rows by bucket.
fn remaining(conn: &mut PgConnection) -> [Vec<String>; 5] {
    [
        labels(conn, "SELECT scope AS label FROM refresh_families"),
        labels(conn, "SELECT scope AS label FROM refresh_tokens"),
        labels(conn, "SELECT jti::text AS label FROM revoked_access_tokens"),
        labels(conn, "SELECT user_agent AS label FROM sessions"),
        labels(conn, "SELECT bucket AS label FROM login_throttle"),
    ]
}

const LIVE_JTI: &str = "00000000-0000-7000-8000-000000000001";
const EXPIRED_JTI: &str = "00000000-0000-7000-8000-000000000002";

/// Rows of every kind the purge looks at, each labelled `live…` (must stay) or `expired…` (must go).
fn stage_rows(app: &TestApp, user_id: uuid::Uuid) {
    let mut conn = app.db.conn();
    let user = format!("'{user_id}'");
    // A family that ended (its own expiry passed) though its token has not: both go.
    // A family whose every token expired: it goes.
    // A live family with one expired (used) token and one live token: the expired token goes.
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO refresh_families (id, user_id, scope, auth_time, expires_at) VALUES \
               ('00000000-0000-7000-8000-00000000f001', {user}, 'expired-family', now() - interval '91 days', now() - interval '1 day'), \
               ('00000000-0000-7000-8000-00000000f002', {user}, 'expired-tokens-family', now() - interval '20 days', now() + interval '70 days'), \
               ('00000000-0000-7000-8000-00000000f003', {user}, 'live-family', now() - interval '1 day', now() + interval '89 days')"
        ),
    );
    execute_sql(
        &mut conn,
        "INSERT INTO refresh_tokens (id, family_id, token_hash, scope, issued_at, expires_at, used_at) VALUES \
           (gen_random_uuid(), '00000000-0000-7000-8000-00000000f001', sha256('a'::bytea), 'expired-family-token', now() - interval '1 day', now() + interval '13 days', NULL), \
           (gen_random_uuid(), '00000000-0000-7000-8000-00000000f002', sha256('b'::bytea), 'expired-token-alone', now() - interval '15 days', now() - interval '1 day', NULL), \
           (gen_random_uuid(), '00000000-0000-7000-8000-00000000f003', sha256('c'::bytea), 'expired-token-used', now() - interval '15 days', now() - interval '1 second', now() - interval '1 day'), \
           (gen_random_uuid(), '00000000-0000-7000-8000-00000000f003', sha256('d'::bytea), 'live-token', now() - interval '1 day', now() + interval '13 days', NULL)",
    );
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) VALUES \
               ('{LIVE_JTI}', {user}, now() + interval '10 minutes'), \
               ('{EXPIRED_JTI}', {user}, now() - interval '1 second')"
        ),
    );
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO sessions (key_hash, user_id, state, expires_at, absolute_expires_at, user_agent) VALUES \
               (sha256('s1'::bytea), {user}, '{{}}', now() + interval '20 minutes', now() + interval '5 hours', 'live-session'), \
               (sha256('s2'::bytea), {user}, '{{}}', now() - interval '1 second', now() + interval '5 hours', 'expired-idle-session'), \
               (sha256('s3'::bytea), {user}, '{{}}', now() + interval '20 minutes', now() - interval '1 second', 'expired-absolute-session')"
        ),
    );
    execute_sql(
        &mut conn,
        "INSERT INTO login_throttle (bucket, tat) VALUES \
           ('live-throttle', now() + interval '30 seconds'), \
           ('expired-throttle', now() - interval '1 second')",
    );
}

#[tokio::test]
async fn the_purge_deletes_expired_tokens_families_revocations_sessions_and_recovered_throttle_rows() {
    let app = spawn_app().await;
    let alice = app.alice();
    stage_rows(&app, alice.id);
    let mut conn = app.db.conn();
    let [families, tokens, revocations, sessions, throttle] = remaining(&mut conn);
    assert_eq!(families.len(), 3);
    assert_eq!((tokens.len(), revocations.len(), sessions.len(), throttle.len()), (4, 2, 3, 2));

    let purged = gatehouse::db::purge_expired(&mut conn, chrono::Utc::now()).unwrap();

    let purged = purged.expect("the purge ran: nobody else held its lock");
    assert!(purged >= 7, "purged {purged} rows");
    assert_eq!(
        remaining(&mut conn),
        [
            vec!["live-family".to_owned()],
            vec!["live-token".to_owned()],
            vec![LIVE_JTI.to_owned()],
            vec!["live-session".to_owned()],
            vec!["live-throttle".to_owned()],
        ]
    );
    // Nothing left to do on the next run.
    assert_eq!(gatehouse::db::purge_expired(&mut conn, chrono::Utc::now()).unwrap(), Some(0));
}

/// Authorization codes and device codes stay an hour past their expiry (a late second use of a
/// code must still find the first, to revoke what it issued), then go.
#[tokio::test]
async fn the_purge_deletes_authorization_and_device_codes_an_hour_past_their_expiry() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = crate::oidc::public_app(&app, "RS256", false);
    let mut conn = app.db.conn();
    let (user, client) = (alice.id, client.id);
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, redirect_uri_given, \
               code_challenge, scope, auth_time, amr, expires_at, used_at) VALUES \
               (sha256('c1'::bytea), '{client}', '{user}', 'live-code', true, 'x', 'openid', now(), '{{pwd}}', now() + interval '1 minute', NULL), \
               (sha256('c2'::bytea), '{client}', '{user}', 'live-used-code', true, 'x', 'openid', now(), '{{pwd}}', now() - interval '59 minutes', now() - interval '60 minutes'), \
               (sha256('c3'::bytea), '{client}', '{user}', 'expired-code', true, 'x', 'openid', now(), '{{pwd}}', now() - interval '61 minutes', NULL)"
        ),
    );
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO device_codes (device_code_hash, user_code, client_id, scope, expires_at, interval_secs) VALUES \
               (sha256('d1'::bytea), 'BBBBBBBB', '{client}', 'live-device', now() + interval '10 minutes', 5), \
               (sha256('d2'::bytea), 'CCCCCCCC', '{client}', 'live-expired-device', now() - interval '59 minutes', 5), \
               (sha256('d3'::bytea), 'DDDDDDDD', '{client}', 'expired-device', now() - interval '61 minutes', 5)"
        ),
    );
    gatehouse::db::purge_expired(&mut conn, chrono::Utc::now()).unwrap().expect("the purge ran");
    assert_eq!(
        labels(&mut conn, "SELECT redirect_uri AS label FROM authorization_codes"),
        ["live-code", "live-used-code"]
    );
    assert_eq!(labels(&mut conn, "SELECT scope AS label FROM device_codes"), ["live-device", "live-expired-device"]);
}

#[tokio::test]
async fn the_purge_does_nothing_while_another_instance_holds_its_lock() {
    let app = spawn_app().await;
    let alice = app.alice();
    stage_rows(&app, alice.id);
    let mut conn = app.db.conn();
    let before = remaining(&mut conn);

    // Another instance, running the purge right now.
    let mut other = PgConnection::establish(&app.db.url).unwrap();
    execute_sql(&mut other, &format!("SELECT pg_advisory_lock({})", Job::Purge as i64));

    assert_eq!(gatehouse::db::purge_expired(&mut conn, chrono::Utc::now()).unwrap(), None);
    assert_eq!(remaining(&mut conn), before);

    // Once it is done, this instance's next run does the job.
    execute_sql(&mut other, &format!("SELECT pg_advisory_unlock({})", Job::Purge as i64));
    assert!(gatehouse::db::purge_expired(&mut conn, chrono::Utc::now()).unwrap().is_some_and(|n| n > 0));
    assert_eq!(remaining(&mut conn)[3], ["live-session"]);
}

#[tokio::test]
async fn a_running_server_purges_by_itself_at_its_interval() {
    let app = crate::helpers::spawn_app_with(&[("GATEHOUSE_PURGE_EVERY", "1s")]).await;
    let mut conn = app.db.conn();
    execute_sql(
        &mut conn,
        &format!(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) VALUES ('{EXPIRED_JTI}', '{}', now() - interval '1 minute')",
            app.alice().id
        ),
    );
    let started = std::time::Instant::now();
    while !labels(&mut conn, "SELECT jti::text AS label FROM revoked_access_tokens").is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "not purged within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
