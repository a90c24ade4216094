//! The guarantees that must hold when requests race, on two instances sharing one database: each
//! row of "tried as an attacker would" is a test here. Where an interleaving matters, the test forces
//! it (the hasher held between a sign-in's claim and its verdict, or a family's row lock held from
//! the test) instead of hoping for it.

use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::{Client, Response, header};
use serde_json::Value;

use crate::helpers::{StoredEvent, TestApp, TestUser, assert_token_error, lock_waiters, spawn_pair};

const NO_THROTTLE: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0");
/// A burst of 10, then one attempt every 6 s: the 11th quick attempt is refused however slow the machine.
const SLOW_RATE: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "10");
const TRUST_LOOPBACK: (&str, &str) = ("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1");

/// A password-grant request that can be sent from a spawned task.
fn password_grant(app: &TestApp, username: &str, password: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url("/token")).form(&[
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ])
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `condition` until it holds (at most ten seconds).
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn scalar(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Row>(&mut app.db.conn()).unwrap().n
}

fn execute(app: &TestApp, sql: &str) {
    diesel::sql_query(sql).execute(&mut app.db.conn()).unwrap();
}

fn failures_with(events: &[StoredEvent], reason: &str) -> usize {
    events.iter().filter(|e| e.kind == "login_failed" && e.reason.as_deref() == Some(reason)).count()
}

// --- Lockout ---

#[tokio::test]
async fn twenty_simultaneous_guesses_on_two_instances_verify_at_most_five_and_the_right_password_is_refused() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    // Held: five attempts claim a verification and wait for a hashing thread; the others find the
    // account busy and wait for those five to settle. All twenty are in flight together, on both
    // instances.
    let paused = (a.state.grants.hasher.pause(), b.state.grants.hasher.pause());
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(send(password_grant(app, "alice", &format!("guess-{i}"))))
        })
        .collect();
    let admitted = || a.state.grants.hasher.admitted() + b.state.grants.hasher.admitted();
    let waiting = || a.state.grants.hasher.waiting() + b.state.grants.hasher.waiting();
    wait_until("all twenty guesses are in flight", || admitted() == 20).await;
    wait_until("five of them claimed a verification", || waiting() == 5).await;
    assert_eq!(scalar(&a, "SELECT check_claims::bigint AS n FROM users"), 5);
    // The right password, sent while the guesses are in flight.
    let right = tokio::spawn(send(password_grant(&a, "alice", &alice.password)));
    wait_until("the right password waits too", || admitted() == 21).await;
    drop(paused);

    for guess in guesses {
        let (status, body) = guess.await.unwrap();
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    }
    let (status, body) = right.await.unwrap();
    assert_eq!((status, &body["error_description"]), (400, &Value::from("Incorrect username or password")));

    let events = a.events();
    assert_eq!(failures_with(&events, "wrong_password"), 5, "verifications against the real hash");
    assert_eq!(failures_with(&events, "locked"), 16, "15 guesses and the right password, against a dummy hash");
    assert!(!events.iter().any(|e| e.kind == "login_ok"));
    assert_eq!(events.iter().filter(|e| e.kind == "lockout").count(), 1);
    // Every one of the 21 answers cost one hash at the configured cost (4): no answer is cheaper.
    let work = a.state.grants.hasher.work_done() + b.state.grants.hasher.work_done();
    assert_eq!(work, 21 * 16);
}

#[tokio::test]
async fn more_simultaneous_sign_ins_with_the_right_password_than_the_threshold_all_succeed() {
    // Eight at once on two instances (a script, a few devices): five claim a verification, three
    // find the account busy and wait for those to settle, which frees it.
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    let paused = (a.state.grants.hasher.pause(), b.state.grants.hasher.pause());
    let sign_ins: Vec<_> = (0..8)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(send(password_grant(app, "alice", &alice.password)))
        })
        .collect();
    let admitted = || a.state.grants.hasher.admitted() + b.state.grants.hasher.admitted();
    let waiting = || a.state.grants.hasher.waiting() + b.state.grants.hasher.waiting();
    wait_until("all eight are in flight", || admitted() == 8).await;
    wait_until("five of them claimed a verification", || waiting() == 5).await;
    drop(paused);
    for sign_in in sign_ins {
        let (status, body) = sign_in.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let events = a.events();
    assert_eq!(events.iter().filter(|e| e.kind == "login_ok").count(), 8);
    assert!(!events.iter().any(|e| e.kind == "login_failed"));
    assert_eq!(scalar(&a, "SELECT (check_claims + failed_logins)::bigint AS n FROM users"), 0);
}

#[tokio::test]
async fn guesses_racing_without_any_hold_still_verify_only_five_times() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(send(password_grant(app, "alice", &format!("guess-{i}"))))
        })
        .collect();
    for guess in guesses {
        assert_eq!(guess.await.unwrap().0, 400);
    }
    assert_eq!(send(password_grant(&b, "alice", &alice.password)).await.0, 400, "the account is locked");
    let events = a.events();
    assert_eq!(failures_with(&events, "wrong_password"), 5);
    assert_eq!(failures_with(&events, "locked"), 20);
}

#[tokio::test]
async fn claims_of_an_instance_that_died_mid_check_expire() {
    let (a, _b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    // Five checks claimed by an instance that never settled them: no verification may run; a
    // check waits for them to settle as long as the hashing queue lets a check wait, then is busy…
    execute(&a, "UPDATE users SET check_claims = 5, claims_expire_at = now() + interval '1 minute'");
    let response = password_grant(&a, "alice", &alice.password).send().await.unwrap();
    assert_eq!(response.headers()[reqwest::header::RETRY_AFTER], "5");
    assert_token_error(response, 503, "temporarily_unavailable").await;
    assert_eq!(scalar(&a, "SELECT failed_logins::bigint AS n FROM users"), 0, "nothing verified, nothing failed");
    // …until the claims expire: then the right password works, and the count starts afresh.
    execute(&a, "UPDATE users SET claims_expire_at = now() - interval '1 second'");
    assert_eq!(send(password_grant(&a, "alice", &alice.password)).await.0, 200);
    assert_eq!(scalar(&a, "SELECT (check_claims + failed_logins)::bigint AS n FROM users"), 0);
}

// --- Invalidation of sign-ins in flight ---

/// Starts a password grant for `user` on `app` with its hasher held, and waits until the check has
/// claimed its verification and is waiting to run it. Dropping the returned guard lets it go on.
async fn sign_in_held_in_flight(
    app: &TestApp,
    user: &TestUser,
) -> (gatehouse::auth::password::Paused, tokio::task::JoinHandle<(u16, Value)>) {
    let paused = app.state.grants.hasher.pause();
    let login = tokio::spawn(send(password_grant(app, &user.username, &user.password)));
    let hasher = app.state.grants.hasher.clone();
    wait_until("the sign-in waits for bcrypt", || hasher.waiting() == 1).await;
    assert_eq!(scalar(app, "SELECT check_claims::bigint AS n FROM users"), 1, "it claimed its check");
    (paused, login)
}

fn live_families(app: &TestApp) -> i64 {
    scalar(app, "SELECT count(*) AS n FROM refresh_families WHERE revoked_at IS NULL")
}

#[tokio::test]
async fn a_sign_in_in_flight_during_sign_out_everywhere_on_the_other_instance_gets_nothing_that_works() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let earlier = b.access_token(&alice, Some("profile")).await;

    let (paused, login) = sign_in_held_in_flight(&a, &alice).await;
    assert_eq!(b.post_empty("/api/users/me/sign-out-all", Some(&earlier)).await.status(), 204);
    drop(paused);

    let (status, body) = login.await.unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(live_families(&a), 0, "no refresh token was stored for it");
    // A sign-in that begins after the sign-out works.
    assert_eq!(send(password_grant(&b, "alice", &alice.password)).await.0, 200);
}

#[tokio::test]
async fn a_browser_sign_in_in_flight_during_sign_out_everywhere_gets_no_working_session() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let earlier = b.access_token(&alice, Some("profile")).await;

    let form = a.client.get(a.url("/login")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden_field(&form, "csrf_token");
    let paused = a.state.grants.hasher.pause();
    let fields = [("csrf_token", csrf.as_str()), ("username", "alice"), ("password", &alice.password)];
    let post = tokio::spawn(a.client.post(a.url("/login")).form(&fields).send());
    let hasher = a.state.grants.hasher.clone();
    wait_until("the sign-in waits for bcrypt", || hasher.waiting() == 1).await;
    assert_eq!(b.post_empty("/api/users/me/sign-out-all", Some(&earlier)).await.status(), 204);
    drop(paused);

    let response = post.await.unwrap().unwrap();
    assert_eq!(response.status(), 303);
    // The session that sign-in wrote counts from when its check began: before the sign-out.
    let home = a.client.get(a.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 303, "the session must not open the home page");
    assert_eq!(home.headers()[header::LOCATION], "/login?next=%2F");
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The real `gatehouse` binary against `app`'s database.
fn gatehouse_cli(app: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("GATEHOUSE_BCRYPT_COST", "4")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run_to_end(mut command: Command, stdin: &str) {
    use std::io::Write as _;
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn a_sign_in_in_flight_during_a_password_change_from_the_cli_is_refused() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let (paused, login) = sign_in_held_in_flight(&a, &alice).await;
    let command = gatehouse_cli(&b, &["user", "set-password", "alice"]);
    tokio::task::spawn_blocking(move || run_to_end(command, "a-brand-new-password\n")).await.unwrap();
    drop(paused);

    // The check read the old hash before the change was stored: as if it had come after.
    assert_eq!(login.await.unwrap().0, 400);
    assert_eq!(live_families(&a), 0);
    assert_eq!(send(password_grant(&b, "alice", "a-brand-new-password")).await.0, 200);
}

#[tokio::test]
async fn a_sign_in_in_flight_during_deactivation_is_refused_and_reactivation_brings_nothing_back() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let (paused, login) = sign_in_held_in_flight(&a, &alice).await;
    let command = gatehouse_cli(&b, &["user", "deactivate", "alice"]);
    tokio::task::spawn_blocking(move || run_to_end(command, "")).await.unwrap();
    drop(paused);
    assert_eq!(login.await.unwrap().0, 400);

    let command = gatehouse_cli(&b, &["user", "activate", "alice"]);
    tokio::task::spawn_blocking(move || run_to_end(command, "")).await.unwrap();
    assert_eq!(live_families(&a), 0);
}

/// A sign-in's claim is decided on the account as last committed and stored only if nothing it was
/// decided on changed since: a lock that another instance commits between the two (held open by the
/// test while the sign-in reads) makes the store miss, and the claim, decided again under the row
/// lock, is refused, the right password answered like a wrong one.
#[tokio::test]
async fn a_lock_committed_between_a_claims_read_and_its_write_refuses_the_sign_in() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let mut locker = a.db.conn();
    diesel::sql_query("BEGIN").execute(&mut locker).unwrap();
    diesel::sql_query(format!(
        "UPDATE users SET locked_until = now() + interval '1 hour', lockouts = 1 WHERE id = '{}'",
        alice.id
    ))
    .execute(&mut locker)
    .unwrap();
    let waiting = tokio::spawn(send(password_grant(&b, "alice", &alice.password)));
    crate::helpers::until_lock_waiters(&a, 1, "the claim's write waits for the user's row").await;
    diesel::sql_query("COMMIT").execute(&mut locker).unwrap();
    let (status, body) = waiting.await.unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

/// A sign-in's success gives back its own claim and no other: a claim another instance stores while
/// this one verifies (the test's, held open as the success writes) makes the success's optimistic
/// write miss, and the success, settled again under the row lock, leaves that claim running.
#[tokio::test]
async fn a_claim_stored_while_a_sign_in_verifies_outlives_that_sign_ins_success() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    // A hash of the production cost: the verification takes a quarter of a second, time enough to
    // step in between the claim and the success (a dearer stored hash is not re-hashed).
    let slow_hash = bcrypt::hash(&alice.password, 12).unwrap();
    let claims =
        |app: &TestApp| scalar(app, &format!("SELECT check_claims::bigint AS n FROM users WHERE id = '{}'", alice.id));
    execute(&a, &format!("UPDATE users SET password_hash = '{slow_hash}' WHERE id = '{}'", alice.id));
    let signing_in = tokio::spawn(send(password_grant(&b, "alice", &alice.password)));
    wait_until("the sign-in's claim is stored", || claims(&a) == 1).await;
    let mut other = a.db.conn();
    diesel::sql_query("BEGIN").execute(&mut other).unwrap();
    diesel::sql_query(format!("UPDATE users SET check_claims = 2 WHERE id = '{}'", alice.id))
        .execute(&mut other)
        .unwrap();
    crate::helpers::until_lock_waiters(&a, 1, "the success's write waits for the user's row").await;
    diesel::sql_query("COMMIT").execute(&mut other).unwrap();
    let (status, body) = signing_in.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(&a), 1, "the other instance's claim is still counted");
}

#[tokio::test]
async fn tokens_issued_while_the_cli_prompts_for_a_new_password_end_when_it_is_stored() {
    use std::io::Write as _;
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let mut cli = gatehouse_cli(&b, &["user", "set-password", "alice"]).spawn().unwrap();
    // The operator is still typing (the command waits in a read of its standard input); meanwhile
    // someone signs in with the old password.
    wait_until_reading_stdin(cli.id()).await;
    let during = a.login(&alice, Some("profile")).await;
    let access = during["access_token"].as_str().unwrap();
    let refresh = during["refresh_token"].as_str().unwrap();
    assert_eq!(a.get("/api/users/me", Some(access)).await.status(), 200);

    cli.stdin.take().unwrap().write_all(b"typed-at-last-password\n").unwrap();
    let output = tokio::task::spawn_blocking(move || cli.wait_with_output().unwrap()).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    assert_eq!(b.get("/api/users/me", Some(access)).await.status(), 401);
    assert_token_error(b.refresh(refresh, None).await, 400, "invalid_grant").await;
}

// --- Revocation ---

/// Refresh and revoke of one token, on the two instances, in a forced order: the test holds the
/// family's row lock, lets `first` queue on it, then `second`, then lets go.
async fn race_refresh_and_revoke(a: &TestApp, b: &TestApp, user: &TestUser, refresh_first: bool) {
    let tokens = a.login(user, None).await;
    let presented = tokens["refresh_token"].as_str().unwrap().to_owned();
    let mut holder = PgConnection::establish(&a.db.url).unwrap();
    let mut watcher = PgConnection::establish(&a.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query("SELECT id FROM refresh_families WHERE revoked_at IS NULL FOR UPDATE")
        .execute(&mut holder)
        .unwrap();

    let send_refresh = || {
        let form = [("grant_type", "refresh_token"), ("refresh_token", presented.as_str())];
        tokio::spawn(a.client.post(a.url("/token")).form(&form).send())
    };
    let send_revoke = || tokio::spawn(b.client.post(b.url("/revoke")).form(&[("token", presented.as_str())]).send());
    let queue_first = "the first request waits for the family";
    let queue_second = "both wait for the family";
    let (refreshed, revoked) = if refresh_first {
        let refreshed = send_refresh();
        wait_until(queue_first, || lock_waiters(&mut watcher) == 1).await;
        let revoked = send_revoke();
        wait_until(queue_second, || lock_waiters(&mut watcher) == 2).await;
        (refreshed, revoked)
    } else {
        let revoked = send_revoke();
        wait_until(queue_first, || lock_waiters(&mut watcher) == 1).await;
        let refreshed = send_refresh();
        wait_until(queue_second, || lock_waiters(&mut watcher) == 2).await;
        (refreshed, revoked)
    };
    // PostgreSQL grants the lock in the order they queued.
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let refreshed: Response = refreshed.await.unwrap().unwrap();
    assert_eq!(revoked.await.unwrap().unwrap().status(), 200);
    if refresh_first {
        assert_eq!(refreshed.status(), 200, "the refresh went first");
        let child: Value = refreshed.json().await.unwrap();
        let child = child["refresh_token"].as_str().unwrap();
        // The child was created before the revocation ended the family: it ends with it.
        assert_token_error(b.refresh(child, None).await, 400, "invalid_grant").await;
        assert_token_error(a.refresh(child, None).await, 400, "invalid_grant").await;
    } else {
        assert_token_error(refreshed, 400, "invalid_grant").await;
    }
    assert_eq!(live_families(a), 0);
}

#[tokio::test]
async fn a_refresh_racing_a_revocation_on_the_other_instance_never_leaves_a_working_child() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    for round in 0..60 {
        race_refresh_and_revoke(&a, &b, &alice, round % 2 == 0).await;
    }
}

#[tokio::test]
async fn refreshes_and_revocations_sent_at_once_leave_no_working_child() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let alice = a.alice();
    for _ in 0..50 {
        let tokens = a.login(&alice, None).await;
        let presented = tokens["refresh_token"].as_str().unwrap().to_owned();
        let refresh = tokio::spawn(
            a.client
                .post(a.url("/token"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &presented)])
                .send(),
        );
        let revoke = tokio::spawn(b.client.post(b.url("/revoke")).form(&[("token", presented.as_str())]).send());
        let refreshed = refresh.await.unwrap().unwrap();
        assert_eq!(revoke.await.unwrap().unwrap().status(), 200);
        if refreshed.status() == 200 {
            let child: Value = refreshed.json().await.unwrap();
            assert_token_error(b.refresh(child["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
                .await;
        }
    }
    assert_eq!(live_families(&a), 0);
}

#[tokio::test]
async fn a_family_ends_at_its_maximum_age_however_often_it_was_rotated() {
    use gatehouse::db::auth_events::NewEvent;
    use gatehouse::db::refresh_tokens::{NewToken, Rotation, rotate, token_hash};
    use gatehouse::domain::{Channel, EventKind};
    // Refresh tokens that live longer than the family may: only the family's age can end them.
    let (a, _b) = spawn_pair(&[("GATEHOUSE_REFRESH_TOKEN_TTL", "300d")]).await;
    let alice = a.alice();
    let tokens = a.login(&alice, None).await;
    let days_left = scalar(&a, "SELECT extract(day FROM expires_at - auth_time)::bigint AS n FROM refresh_families");
    assert_eq!(days_left, 90, "GATEHOUSE_REFRESH_FAMILY_MAX_AGE defaults to 90 days");

    let mut conn = a.db.conn();
    let event = || NewEvent::new(EventKind::Refresh, Channel::Api);
    let at = |days| chrono::Utc::now() + chrono::Duration::days(days);
    let presented = token_hash(tokens["refresh_token"].as_str().unwrap());
    let (child, child_hash) = ("child-token".to_owned(), token_hash("child-token"));
    let child_token = NewToken { hash: &child_hash, expires_at: at(89) + chrono::Duration::days(300) };
    let sign = || Box::new(|_: &gatehouse::db::refresh_tokens::Grantee| Ok(()));
    let rotated = rotate(&mut conn, &presented, None, None, &child_token, at(89), event(), sign()).unwrap();
    assert!(matches!(rotated, Rotation::Rotated(_)), "{rotated:?}");
    let grandchild_hash = token_hash("grandchild");
    let grandchild = NewToken { hash: &grandchild_hash, expires_at: at(91) + chrono::Duration::days(300) };
    let refused = rotate(&mut conn, &token_hash(&child), None, None, &grandchild, at(91), event(), sign()).unwrap();
    assert!(matches!(refused, Rotation::Refused), "{refused:?}");
}

// --- Throttling ---

/// A wrong-password attempt on `app` carrying this `X-Forwarded-For`.
async fn attempt_through(app: &TestApp, forwarded_for: Option<&str>) -> Response {
    let mut request = password_grant(app, "nobody", "wrong-password");
    if let Some(value) = forwarded_for {
        request = request.header("X-Forwarded-For", value);
    }
    request.send().await.unwrap()
}

async fn assert_slow_down(response: Response) {
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&wait), "Retry-After: {wait}");
    assert_token_error(response, 429, "slow_down").await;
}

#[tokio::test]
async fn one_address_has_one_budget_across_both_instances() {
    let (a, b) = spawn_pair(&[SLOW_RATE]).await;
    for attempt in 1..=10 {
        let app = if attempt % 2 == 0 { &a } else { &b };
        assert_eq!(attempt_through(app, None).await.status(), 400, "attempt {attempt}");
    }
    assert_slow_down(attempt_through(&b, None).await).await;
    assert_slow_down(attempt_through(&a, None).await).await;
    // 429 answers are not audited: the trail holds the ten attempts that ran.
    assert_eq!(a.events().len(), 10);
}

#[tokio::test]
async fn a_rate_below_ten_a_minute_still_allows_the_burst_of_ten_then_waits_for_the_rate() {
    let (a, b) = spawn_pair(&[("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "2")]).await;
    for attempt in 1..=10 {
        let app = if attempt % 2 == 0 { &a } else { &b };
        assert_eq!(attempt_through(app, None).await.status(), 400, "attempt {attempt}");
    }
    let response = attempt_through(&a, None).await;
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((20..=30).contains(&wait), "one attempt every 30 s: Retry-After {wait}");
}

#[tokio::test]
async fn an_address_a_proxy_appends_with_its_port_is_the_client_and_is_throttled() {
    let (a, b) = spawn_pair(&[SLOW_RATE, TRUST_LOOPBACK]).await;
    for attempt in 1..=10 {
        let app = if attempt % 2 == 0 { &a } else { &b };
        let forged = format!("198.51.100.{attempt}, 203.0.113.77:4711");
        assert_eq!(attempt_through(app, Some(&forged)).await.status(), 400);
    }
    assert_slow_down(attempt_through(&a, Some("192.0.2.200, 203.0.113.77:4711")).await).await;
    let addresses: Vec<_> = a.events().into_iter().map(|e| e.client_addr.unwrap()).collect();
    assert_eq!(addresses, vec!["203.0.113.77".to_owned(); 10]);
    // Another client behind the same proxy has its own budget.
    assert_eq!(attempt_through(&b, Some("203.0.113.78:4711")).await.status(), 400);
}

#[tokio::test]
async fn the_addresses_of_one_ipv6_64_share_one_budget() {
    let (a, b) = spawn_pair(&[SLOW_RATE, TRUST_LOOPBACK]).await;
    for attempt in 1..=10 {
        let app = if attempt % 2 == 0 { &a } else { &b };
        assert_eq!(attempt_through(app, Some(&format!("2001:db8:1:2::{attempt:x}"))).await.status(), 400);
    }
    assert_slow_down(attempt_through(&a, Some("2001:db8:1:2:ffff:ffff:ffff:ffff")).await).await;
    assert_eq!(attempt_through(&b, Some("2001:db8:1:3::1")).await.status(), 400, "the next /64 is another client");
}

// --- Sessions ---

#[tokio::test]
async fn anonymous_visitors_cost_no_session_row_and_a_session_works_on_either_instance() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    a.alice();
    for _ in 0..150 {
        let visitor = Client::new();
        assert_eq!(visitor.get(a.url("/login")).send().await.unwrap().status(), 200);
    }
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM sessions"), 0);

    // One browser, signed in on the first instance, goes on on the second.
    let form = a.client.get(a.url("/login")).send().await.unwrap().text().await.unwrap();
    let fields = [
        ("csrf_token", hidden_field(&form, "csrf_token")),
        ("username", "alice".into()),
        ("password", "alice-password".into()),
    ];
    assert_eq!(a.client.post(a.url("/login")).form(&fields).send().await.unwrap().status(), 303);
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM sessions"), 1);
    let cookie = a
        .client
        .get(a.url("/"))
        .send()
        .await
        .unwrap()
        .cookies()
        .find(|c| c.name() == "__Host-gatehouse_session")
        .map(|c| c.value().to_owned())
        .unwrap();
    let on_b = |path: &str| {
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(b.url(path))
            .header(header::COOKIE, format!("__Host-gatehouse_session={cookie}"))
            .send()
    };
    let home = on_b("/").await.unwrap();
    assert_eq!(home.status(), 200);
    let csrf = hidden_field(&home.text().await.unwrap(), "csrf_token");

    // Signing out on the second instance ends it on the first at once.
    let signed_out = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(b.url("/logout"))
        .header(header::COOKIE, format!("__Host-gatehouse_session={cookie}"))
        .form(&[("csrf_token", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 303);
    assert_eq!(a.client.get(a.url("/")).send().await.unwrap().status(), 303);
    assert_eq!(scalar(&a, "SELECT count(*) AS n FROM sessions"), 0);
}

/// Waits until process `pid` is blocked reading its standard input (Linux: `/proc/PID/syscall`
/// names the system call a sleeping process is in, `0` being `read`, then its first argument, the
/// file descriptor).
async fn wait_until_reading_stdin(pid: u32) {
    let started = std::time::Instant::now();
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if syscall.starts_with("0 0x0 ") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the command never waited for input: {syscall}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A refresh that waits for a role change in flight on the other instance (its user-row lock held
/// until it commits) is issued with the roles the change leaves, never the ones it removed: the
/// roles are read after the lock is granted, by a statement of their own.
#[tokio::test]
async fn a_refresh_waiting_for_a_role_change_is_issued_with_the_roles_it_leaves() {
    let (a, b) = spawn_pair(&[NO_THROTTLE]).await;
    let carol = a.create_user("carol", "carol-password-1234", &["user", "service"]);
    let tokens = a.login(&carol, Some("profile")).await;
    let roles_of = |token: &str| crate::keys::jwt_part(token, 1)["roles"].clone();
    assert_eq!(roles_of(tokens["access_token"].as_str().unwrap()), serde_json::json!(["service", "user"]));

    // The change as an admin's takes it: the user's row locked, the role rows rewritten.
    let mut change = a.db.conn();
    diesel::sql_query("BEGIN").execute(&mut change).unwrap();
    diesel::sql_query(format!("SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE", carol.id))
        .execute(&mut change)
        .unwrap();
    diesel::sql_query(format!("DELETE FROM user_roles WHERE user_id = '{}' AND role_name = 'service'", carol.id))
        .execute(&mut change)
        .unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let waiting = {
        let request = b
            .client
            .post(b.url("/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())]);
        tokio::spawn(send(request))
    };
    crate::helpers::until_lock_waiters(&a, 1, "the refresh waits for the user's row").await;
    diesel::sql_query("COMMIT").execute(&mut change).unwrap();

    let (status, refreshed) = waiting.await.unwrap();
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(roles_of(refreshed["access_token"].as_str().unwrap()), serde_json::json!(["user"]));
}
