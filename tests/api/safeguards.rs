//! The password grant's safeguards, observed from outside: equal bcrypt work for every wrong answer
//! (unknown user, wrong password, cheaper stored hash, locked account), a per-account lock that
//! doubles with each lockout, and the client address behind trusted proxies as the audit trail
//! records it.

use diesel::RunQueryDsl;
use reqwest::Response;

use crate::helpers::{TestApp, assert_token_error, spawn_app_with, spawn_pair};

/// Throttling off: these tests make more sign-in attempts than one burst allows.
const NO_THROTTLE: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0");

fn execute_sql(app: &TestApp, sql: &str) {
    diesel::sql_query(sql).execute(&mut app.db.conn()).unwrap();
}

async fn password_grant(app: &TestApp, username: &str, password: &str) -> Response {
    app.post_token(&[("grant_type", "password"), ("username", username), ("password", password)]).await
}

/// The bcrypt work one refused password grant costs the server (a call at cost c counts 2^c).
async fn work_of_a_refused_grant(app: &TestApp, username: &str, password: &str) -> u64 {
    let before = app.state.grants.hasher.work_done();
    assert_token_error(password_grant(app, username, password).await, 400, "invalid_grant").await;
    app.state.grants.hasher.work_done() - before
}

// ---------------------------------------------------------------------------------------------
// Equal work for every wrong answer

#[tokio::test]
async fn an_unknown_username_costs_the_same_bcrypt_work_as_a_wrong_password() {
    let app = spawn_app_with(&[("GATEHOUSE_BCRYPT_COST", "4")]).await;
    app.alice();

    let wrong_password = work_of_a_refused_grant(&app, "alice", "not-the-password").await;
    let unknown_user = work_of_a_refused_grant(&app, "nobody-by-that-name", "not-the-password").await;

    // One verification at the configured cost each: the unknown user's against a dummy hash.
    assert_eq!(wrong_password, 1 << 4);
    assert_eq!(unknown_user, wrong_password);
}

#[tokio::test]
async fn a_wrong_password_against_a_cheaper_stored_hash_costs_as_much_as_an_unknown_user() {
    // alice's hash is stored at cost 4 (as before a cost increase); the server hashes at 6.
    let app = spawn_app_with(&[("GATEHOUSE_BCRYPT_COST", "6")]).await;
    app.alice();

    let unknown_user = work_of_a_refused_grant(&app, "nobody-by-that-name", "not-the-password").await;
    let cheaper_hash = work_of_a_refused_grant(&app, "alice", "not-the-password").await;

    assert_eq!(unknown_user, 1 << 6);
    assert_eq!(cheaper_hash, unknown_user, "the cost-4 check is not padded up to cost 6");
}

#[tokio::test]
async fn a_locked_account_costs_the_same_bcrypt_work_as_a_wrong_password() {
    let app = spawn_app_with(&[("GATEHOUSE_BCRYPT_COST", "5"), NO_THROTTLE]).await;
    let alice = app.alice();
    let wrong_password = work_of_a_refused_grant(&app, "alice", "not-the-password").await;
    for _ in 1..5 {
        work_of_a_refused_grant(&app, "alice", "not-the-password").await;
    }

    // Locked now: the right password is refused, after a verification against a dummy hash.
    let locked = work_of_a_refused_grant(&app, "alice", &alice.password).await;

    assert_eq!(wrong_password, 1 << 5);
    assert_eq!(locked, wrong_password);
}

// ---------------------------------------------------------------------------------------------
// Lock length doubling

/// `users.locked_until` of alice, as seconds from now (by the database's clock); `None` when unlocked.
fn lock_left_secs(app: &TestApp) -> Option<f64> {
    #[derive(diesel::QueryableByName)]
    struct Lock {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        left: Option<f64>,
    }
    let lock: Lock = diesel::sql_query(
        "SELECT extract(epoch FROM locked_until - now())::float8 AS left FROM users WHERE username = 'alice'",
    )
    .get_result(&mut app.db.conn())
    .unwrap();
    lock.left
}

/// Five wrong passwords for alice, each refused, sent to the two instances in turn.
async fn five_wrong_passwords(instances: [&TestApp; 2]) {
    for attempt in 0..5 {
        let app = instances[attempt % 2];
        assert_token_error(password_grant(app, "alice", "not-the-password").await, 400, "invalid_grant").await;
    }
}

/// Lets the current lock run out, by moving its end into the past.
fn expire_the_lock(app: &TestApp) {
    execute_sql(app, "UPDATE users SET locked_until = now() - interval '1 second' WHERE username = 'alice'");
}

fn assert_locked_for(app: &TestApp, secs: f64) {
    let left = lock_left_secs(app).expect("alice is locked");
    assert!(secs - 10.0 < left && left <= secs, "locked for another {left} s, expected about {secs} s");
}

#[tokio::test]
async fn each_lockout_doubles_the_lock_and_a_successful_sign_in_starts_again_at_one_minute() {
    // Two instances behind a load balancer: the failures count together wherever they arrive.
    let (app, other) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = app.alice();
    let both = [&app, &other];

    five_wrong_passwords(both).await;
    assert_locked_for(&app, 60.0);
    assert_token_error(password_grant(&other, "alice", &alice.password).await, 400, "invalid_grant").await;

    expire_the_lock(&app);
    five_wrong_passwords(both).await;
    assert_locked_for(&app, 120.0);

    expire_the_lock(&app);
    five_wrong_passwords(both).await;
    assert_locked_for(&app, 240.0);

    expire_the_lock(&app);
    assert_eq!(password_grant(&other, "alice", &alice.password).await.status(), 200);
    assert_eq!(lock_left_secs(&app), None);

    five_wrong_passwords(both).await;
    assert_locked_for(&app, 60.0);
    let lockouts = app.event_kinds().into_iter().filter(|kind| kind == "lockout").count();
    assert_eq!(lockouts, 4);
}

// ---------------------------------------------------------------------------------------------
// The client address behind trusted proxies (CIDR), over real HTTP

/// A refused sign-in as `username`, sent with these `X-Forwarded-For` headers (one header each).
async fn attempt_with_forwarded_for(app: &TestApp, username: &str, headers: &[&str]) {
    let mut request = app.client.post(app.url("/token"));
    for value in headers {
        request = request.header("X-Forwarded-For", *value);
    }
    let response = request.form(&[("username", username), ("password", "whatever")]).send().await.unwrap();
    assert_token_error(response, 400, "invalid_grant").await;
}

/// The client address the audit trail recorded for the failed sign-in as `username`.
fn recorded_address(app: &TestApp, username: &str) -> String {
    let events: Vec<_> = app
        .events()
        .into_iter()
        .filter(|event| event.kind == "login_failed" && event.attempted_username.as_deref() == Some(username))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    events[0].client_addr.clone().expect("a client address")
}

#[tokio::test]
async fn behind_a_trusted_proxy_range_the_audit_trail_records_the_right_client_address() {
    let app = spawn_app_with(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.0/8")]).await;

    // Two headers are one list, the first header's entries first: walking from the right, past
    // 127.0.0.9 (trusted through the range), the client is 203.0.113.5. Read in the other order
    // it would be 198.51.100.1.
    attempt_with_forwarded_for(&app, "two-headers", &["198.51.100.1", "203.0.113.5, 127.0.0.9"]).await;
    // Entries with ports count as their address.
    attempt_with_forwarded_for(&app, "v4-port", &["6.6.6.6, 198.51.100.20:4711, 127.0.0.5:80"]).await;
    attempt_with_forwarded_for(&app, "v6-port", &["6.6.6.6, [2001:db8::7]:4711"]).await;
    // An entry that does not parse stops the walk: the last trusted hop is the client, and what the
    // client wrote further left is never reached.
    attempt_with_forwarded_for(&app, "garbage", &["198.51.100.30, garbage, 127.0.0.6"]).await;
    // Every hop trusted: the left-most.
    attempt_with_forwarded_for(&app, "all-trusted", &["127.0.0.7", "127.0.0.8"]).await;
    // No header: the socket peer.
    attempt_with_forwarded_for(&app, "no-header", &[]).await;

    assert_eq!(recorded_address(&app, "two-headers"), "203.0.113.5");
    assert_eq!(recorded_address(&app, "v4-port"), "198.51.100.20");
    assert_eq!(recorded_address(&app, "v6-port"), "2001:db8::7");
    assert_eq!(recorded_address(&app, "garbage"), "127.0.0.6");
    assert_eq!(recorded_address(&app, "all-trusted"), "127.0.0.7");
    assert_eq!(recorded_address(&app, "no-header"), "127.0.0.1");
}
