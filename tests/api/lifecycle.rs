//! The token lifecycle and the safeguards around it: refresh-token rotation and reuse detection,
//! revocation (RFC 7009), deactivation, per-account lockout, per-address throttling, bcrypt cost
//! upgrades, the RFC 8414 metadata document and the admin statistics that count all of this.

use std::time::Duration;

use diesel::RunQueryDsl;
use reqwest::{Response, header};
use serde_json::Value;

use crate::helpers::{TestApp, TestUser, assert_bearer_error, assert_token_error, spawn_app, spawn_app_with};

/// Throttling off, for tests that make more token requests than one burst allows.
const NO_THROTTLE: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0");
/// The default burst of 10, refilled slowly (one attempt per 6 s instead of per 2 s), so that a slow
/// machine cannot earn an extra attempt while a test spends the burst.
const SLOW_REFILL: (&str, &str) = ("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "10");

fn execute_sql(app: &TestApp, sql: &str) {
    diesel::sql_query(sql).execute(&mut app.db.conn()).unwrap();
}

fn refresh_token_of(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap().to_owned()
}

fn access_token_of(body: &Value) -> String {
    body["access_token"].as_str().unwrap().to_owned()
}

fn stored_hash(app: &TestApp, username: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Text)]
        password_hash: String,
    }
    let stored: Stored = diesel::sql_query("SELECT password_hash FROM users WHERE username = $1")
        .bind::<diesel::sql_types::Text, _>(username)
        .get_result(&mut app.db.conn())
        .unwrap();
    stored.password_hash
}

/// A refresh that must succeed; returns the token response.
async fn refresh_ok(app: &TestApp, refresh_token: &str, scope: Option<&str>) -> Value {
    let response = app.refresh(refresh_token, scope).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn refresh_refused(app: &TestApp, refresh_token: &str) {
    assert_token_error(app.refresh(refresh_token, None).await, 400, "invalid_grant").await;
}

/// The password grant with a wrong password.
async fn wrong_password(app: &TestApp, username: &str) -> Response {
    app.post_token(&[("grant_type", "password"), ("username", username), ("password", "not-the-password")]).await
}

async fn right_password(app: &TestApp, user: &TestUser) -> Response {
    app.post_token(&[("grant_type", "password"), ("username", &user.username), ("password", &user.password)]).await
}

/// The status, the two no-store headers and the exact body bytes of a token-endpoint answer.
async fn token_answer(response: Response) -> (u16, String, String, Vec<u8>) {
    let status = response.status().as_u16();
    let cache_control = response.headers()[header::CACHE_CONTROL].to_str().unwrap().to_owned();
    let pragma = response.headers()[header::PRAGMA].to_str().unwrap().to_owned();
    (status, cache_control, pragma, response.bytes().await.unwrap().to_vec())
}

/// A password attempt as if relayed by a proxy that sets `X-Forwarded-For`.
async fn attempt_forwarded_for(app: &TestApp, forwarded_for: &str, username: &str, password: &str) -> Response {
    app.client
        .post(app.url("/token"))
        .header("X-Forwarded-For", forwarded_for)
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn admin_stats(app: &TestApp, token: &str) -> Value {
    let response = app.get("/api/admin/stats", Some(token)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn retry_after_secs(response: &Response) -> u64 {
    let value = response.headers().get(header::RETRY_AFTER).expect("a Retry-After header");
    value.to_str().unwrap().parse().unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {value:?}"))
}

// ---------------------------------------------------------------------------------------------
// Refresh: rotation, reuse detection, scope, expiry

#[tokio::test]
async fn a_refresh_returns_new_tokens_with_no_store_headers_and_a_different_refresh_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let first = app.login(&alice, None).await;
    let old_refresh = refresh_token_of(&first);

    let response = app.refresh(&old_refresh, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "email items:read items:write openid profile");
    let new_refresh = refresh_token_of(&body);
    assert_ne!(new_refresh, old_refresh);
    assert!(new_refresh.len() >= 43);
    assert_ne!(access_token_of(&body), access_token_of(&first));

    let me = app.get("/api/users/me", Some(&access_token_of(&body))).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["username"], "alice");

    let refresh_event = app.events().into_iter().find(|e| e.kind == "refresh").expect("a refresh event");
    assert_eq!(refresh_event.user_id, Some(alice.id));
    assert_eq!(refresh_event.channel, "api");
}

#[tokio::test]
async fn presenting_a_used_refresh_token_fails_and_revokes_its_whole_family() {
    let app = spawn_app().await;
    let alice = app.alice();
    let old_refresh = refresh_token_of(&app.login(&alice, None).await);
    let new_refresh = refresh_token_of(&refresh_ok(&app, &old_refresh, None).await);

    let body = assert_token_error(app.refresh(&old_refresh, None).await, 400, "invalid_grant").await;
    assert_eq!(body["error_description"], "The refresh token is invalid, expired or revoked");
    // The legitimate holder's newer token goes down with the family: someone else had a copy.
    refresh_refused(&app, &new_refresh).await;

    let reuse: Vec<_> = app.events().into_iter().filter(|e| e.kind == "reuse_detected").collect();
    assert_eq!(reuse.len(), 1, "{:?}", app.event_kinds());
    assert_eq!(reuse[0].user_id, Some(alice.id));
    assert_eq!(reuse[0].client_addr.as_deref(), Some("127.0.0.1"));

    // The account itself is not locked out: a fresh sign-in starts a new family.
    let again = app.login(&alice, None).await;
    refresh_ok(&app, &refresh_token_of(&again), None).await;
}

#[tokio::test]
async fn reuse_in_one_family_leaves_the_users_other_families_alone() {
    let app = spawn_app().await;
    let alice = app.alice();
    let laptop = refresh_token_of(&app.login(&alice, None).await);
    let phone = refresh_token_of(&app.login(&alice, None).await);

    refresh_ok(&app, &laptop, None).await;
    refresh_refused(&app, &laptop).await;

    refresh_ok(&app, &phone, None).await;
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_and_the_narrowing_sticks() {
    let app = spawn_app().await;
    let alice = app.alice();
    let full = refresh_token_of(&app.login(&alice, None).await);

    let narrowed = refresh_ok(&app, &full, Some("profile")).await;
    assert_eq!(narrowed["scope"], "profile");
    let me: Value = app.get("/api/users/me", Some(&access_token_of(&narrowed))).await.json().await.unwrap();
    assert_eq!(me["scopes"], serde_json::json!(["profile"]));

    // Without a scope parameter a refresh keeps what the presented token had, not the original grant.
    let next = refresh_ok(&app, &refresh_token_of(&narrowed), None).await;
    assert_eq!(next["scope"], "profile");
    let response = app.refresh(&refresh_token_of(&next), Some("profile items:read")).await;
    assert_token_error(response, 400, "invalid_scope").await;
}

#[tokio::test]
async fn a_refresh_cannot_widen_the_scope_and_the_refusal_does_not_consume_the_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let refresh_token = refresh_token_of(&app.login(&alice, Some("profile")).await);

    for scope in ["profile items:read", "items:write", "admin:stats", "no-such-scope"] {
        let response = app.refresh(&refresh_token, Some(scope)).await;
        assert_token_error(response, 400, "invalid_scope").await;
    }

    let body = refresh_ok(&app, &refresh_token, None).await;
    assert_eq!(body["scope"], "profile");
    assert!(!app.event_kinds().contains(&"reuse_detected".to_owned()));
}

#[tokio::test]
async fn an_unknown_or_garbage_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let alice = app.alice();
    let login = app.login(&alice, None).await;

    for presented in ["garbage", "x".repeat(43).as_str(), access_token_of(&login).as_str()] {
        let body = assert_token_error(app.refresh(presented, None).await, 400, "invalid_grant").await;
        assert_eq!(body["error_description"], "The refresh token is invalid, expired or revoked");
    }
    // None of that touched the real one.
    refresh_ok(&app, &refresh_token_of(&login), None).await;
}

/// Seconds from issue to expiry of the stored refresh token `token`.
fn stored_refresh_lifetime_secs(app: &TestApp, token: &str) -> f64 {
    #[derive(diesel::QueryableByName)]
    struct Lifetime {
        #[diesel(sql_type = diesel::sql_types::Double)]
        secs: f64,
    }
    let lifetime: Lifetime = diesel::sql_query(
        "SELECT extract(epoch FROM expires_at - issued_at)::float8 AS secs FROM refresh_tokens \
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind::<diesel::sql_types::Text, _>(token)
    .get_result(&mut app.db.conn())
    .unwrap();
    lifetime.secs
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let app = spawn_app_with(&[("GATEHOUSE_REFRESH_TOKEN_TTL", "2m")]).await;
    let alice = app.alice();
    let expiring = refresh_token_of(&app.login(&alice, None).await);
    // The control: a sibling issued the same way, whose clock is left alone.
    let sibling = refresh_token_of(&app.login(&alice, None).await);
    for token in [&expiring, &sibling] {
        let lifetime = stored_refresh_lifetime_secs(&app, token);
        assert!((119.0..=121.0).contains(&lifetime), "stored lifetime {lifetime} s, configured 120 s");
    }

    // Two minutes and a second pass for the first token only.
    let moved = diesel::sql_query(
        "UPDATE refresh_tokens SET issued_at = issued_at - interval '121 seconds', \
                                   expires_at = expires_at - interval '121 seconds' \
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind::<diesel::sql_types::Text, _>(&expiring)
    .execute(&mut app.db.conn())
    .unwrap();
    assert_eq!(moved, 1);

    let body = assert_token_error(app.refresh(&expiring, None).await, 400, "invalid_grant").await;
    assert_eq!(body["error_description"], "The refresh token is invalid, expired or revoked");
    refresh_ok(&app, &sibling, None).await;
    // An expired token is refused, not taken for a reuse: nothing was revoked.
    assert!(!app.event_kinds().contains(&"reuse_detected".to_owned()), "{:?}", app.event_kinds());
}

#[tokio::test]
async fn a_refresh_without_the_refresh_token_field_is_invalid_request() {
    let app = spawn_app().await;
    let response = app.post_token(&[("grant_type", "refresh_token")]).await;
    assert_token_error(response, 400, "invalid_request").await;
    let response = app.post_token(&[("grant_type", "refresh_token"), ("refresh_token", "")]).await;
    assert_token_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_exactly_one_through() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let alice = app.alice();
    let refresh_token = refresh_token_of(&app.login(&alice, None).await);

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(app.url("/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())]);
        requests.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
            let body: Value = response.json().await.unwrap();
            (status, body)
        });
    }
    let answers = requests.join_all().await;

    let successes = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(successes, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation (RFC 7009)

#[tokio::test]
async fn a_revoked_refresh_token_can_no_longer_be_used() {
    let app = spawn_app().await;
    let alice = app.alice();
    let refresh_token = refresh_token_of(&app.login(&alice, None).await);

    let response = app.revoke(&refresh_token, Some("refresh_token")).await;
    assert_eq!(response.status(), 200);

    refresh_refused(&app, &refresh_token).await;
    let revokes: Vec<_> = app.events().into_iter().filter(|e| e.kind == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{:?}", app.event_kinds());
    assert_eq!(revokes[0].user_id, Some(alice.id));
    assert_eq!(revokes[0].channel, "api");
}

#[tokio::test]
async fn revoking_an_already_rotated_refresh_token_ends_its_whole_family() {
    let app = spawn_app().await;
    let alice = app.alice();
    let first = refresh_token_of(&app.login(&alice, None).await);
    let second = refresh_token_of(&refresh_ok(&app, &first, None).await);

    assert_eq!(app.revoke(&first, None).await.status(), 200);

    refresh_refused(&app, &second).await;
}

#[tokio::test]
async fn a_revoked_access_token_is_refused_by_the_api() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.get("/api/users/me", Some(&token)).await.status(), 200);

    let response = app.revoke(&token, Some("access_token")).await;
    assert_eq!(response.status(), 200);

    let response = app.get("/api/users/me", Some(&token)).await;
    assert_bearer_error(response, 401, Some(r#"Bearer error="invalid_token"*"#), "invalid_token").await;
    let revokes: Vec<_> = app.events().into_iter().filter(|e| e.kind == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{:?}", app.event_kinds());
    assert_eq!(revokes[0].user_id, Some(alice.id));
}

#[tokio::test]
async fn a_wrong_token_type_hint_does_not_stop_a_revocation() {
    let app = spawn_app().await;
    let alice = app.alice();
    let login = app.login(&alice, None).await;

    assert_eq!(app.revoke(&refresh_token_of(&login), Some("access_token")).await.status(), 200);
    assert_eq!(app.revoke(&access_token_of(&login), Some("refresh_token")).await.status(), 200);

    refresh_refused(&app, &refresh_token_of(&login)).await;
    let response = app.get("/api/users/me", Some(&access_token_of(&login))).await;
    assert_bearer_error(response, 401, Some(r#"Bearer error="invalid_token"*"#), "invalid_token").await;
}

#[tokio::test]
async fn revoking_an_unknown_token_still_answers_200() {
    let app = spawn_app().await;
    for token in ["garbage", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"] {
        assert_eq!(app.revoke(token, None).await.status(), 200);
        assert_eq!(app.revoke(token, Some("refresh_token")).await.status(), 200);
    }
}

#[tokio::test]
async fn a_revocation_without_a_token_is_invalid_request() {
    let app = spawn_app().await;
    let response =
        app.client.post(app.url("/revoke")).form(&[("token_type_hint", "refresh_token")]).send().await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_token_error(response, 400, "invalid_request").await;

    let response = app.client.post(app.url("/revoke")).form(&[("token", "")]).send().await.unwrap();
    assert_token_error(response, 400, "invalid_request").await;
}

// ---------------------------------------------------------------------------------------------
// Deactivation

#[tokio::test]
async fn a_deactivated_users_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let alice = app.alice();
    let refresh_token = refresh_token_of(&app.login(&alice, None).await);

    execute_sql(&app, "UPDATE users SET is_active = false WHERE username = 'alice'");

    refresh_refused(&app, &refresh_token).await;
}

// ---------------------------------------------------------------------------------------------
// Per-account lockout

#[tokio::test]
async fn a_locked_account_answers_the_right_password_exactly_like_a_wrong_one() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let alice = app.alice();

    let wrong = token_answer(wrong_password(&app, "alice").await).await;
    assert_eq!(wrong.0, 400);
    for _ in 1..5 {
        assert_eq!(token_answer(wrong_password(&app, "alice").await).await, wrong);
    }

    let locked = token_answer(right_password(&app, &alice).await).await;
    assert_eq!(locked.0, wrong.0);
    assert_eq!((&locked.1, &locked.2), (&wrong.1, &wrong.2));
    assert_eq!(String::from_utf8_lossy(&locked.3), String::from_utf8_lossy(&wrong.3));
    assert_eq!(locked, wrong);
    let body: Value = serde_json::from_slice(&locked.3).unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Incorrect username or password");

    let lockouts: Vec<_> = app.events().into_iter().filter(|e| e.kind == "lockout").collect();
    assert_eq!(lockouts.len(), 1, "{:?}", app.event_kinds());
    assert_eq!(lockouts[0].user_id, Some(alice.id));
    assert_eq!(lockouts[0].channel, "api");
    assert!(!app.event_kinds().contains(&"login_ok".to_owned()));
    // The audit trail, and only it, tells why: five wrong passwords, then a locked account.
    let reasons: Vec<_> =
        app.events().into_iter().filter(|e| e.kind == "login_failed").map(|e| (e.reason, e.detail)).collect();
    let wrong_password = (Some("wrong_password".to_owned()), None);
    assert_eq!(reasons, [vec![wrong_password; 5], vec![(Some("locked".to_owned()), None)]].concat());
}

#[tokio::test]
async fn locking_one_account_leaves_other_accounts_alone() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    app.alice();
    let bob = app.create_user("bob", "bob-password", &["user"]);
    for _ in 0..5 {
        assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    }

    assert_eq!(right_password(&app, &bob).await.status(), 200);
}

#[tokio::test]
async fn once_the_lock_has_run_out_the_right_password_works_again() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let alice = app.alice();
    for _ in 0..5 {
        assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    }
    assert_token_error(right_password(&app, &alice).await, 400, "invalid_grant").await;

    execute_sql(&app, "UPDATE users SET locked_until = now() - interval '1 second' WHERE username = 'alice'");

    assert_eq!(right_password(&app, &alice).await.status(), 200);
}

#[tokio::test]
async fn a_successful_sign_in_forgets_earlier_failures() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let alice = app.alice();
    for _ in 0..4 {
        assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    }
    assert_eq!(right_password(&app, &alice).await.status(), 200);
    for _ in 0..4 {
        assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    }

    assert_eq!(right_password(&app, &alice).await.status(), 200);
    assert!(!app.event_kinds().contains(&"lockout".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Per-address throttling

#[tokio::test]
async fn after_a_burst_of_ten_attempts_an_address_is_told_to_slow_down() {
    let app = spawn_app_with(&[SLOW_REFILL]).await;
    let alice = app.alice();
    for _ in 0..10 {
        assert_token_error(wrong_password(&app, "nobody").await, 400, "invalid_grant").await;
    }

    // Even the right password is not looked at any more.
    let response = right_password(&app, &alice).await;
    assert!(retry_after_secs(&response) >= 1);
    let body = assert_token_error(response, 429, "slow_down").await;
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert!(!app.event_kinds().contains(&"login_ok".to_owned()));
}

#[tokio::test]
async fn waiting_as_long_as_retry_after_says_is_enough() {
    let app = spawn_app_with(&[SLOW_REFILL]).await;
    let alice = app.alice();
    for _ in 0..10 {
        assert_token_error(wrong_password(&app, "nobody").await, 400, "invalid_grant").await;
    }
    let response = right_password(&app, &alice).await;
    assert_eq!(response.status(), 429);
    let wait = retry_after_secs(&response);

    tokio::time::sleep(Duration::from_secs(wait)).await;

    let response = right_password(&app, &alice).await;
    assert_eq!(response.status(), 200, "still throttled after waiting the {wait} s that Retry-After asked for");
}

#[tokio::test]
async fn a_login_rate_of_zero_turns_throttling_off() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let alice = app.alice();
    for _ in 0..15 {
        assert_token_error(wrong_password(&app, "nobody").await, 400, "invalid_grant").await;
    }
    assert_eq!(right_password(&app, &alice).await.status(), 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_is_throttled_on_its_own() {
    let app = spawn_app_with(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1"), SLOW_REFILL]).await;
    let alice = app.alice();
    for _ in 0..10 {
        let response = attempt_forwarded_for(&app, "198.51.100.7", "nobody", "x").await;
        assert_token_error(response, 400, "invalid_grant").await;
    }
    let response = attempt_forwarded_for(&app, "198.51.100.7", "alice", "alice-password").await;
    assert_token_error(response, 429, "slow_down").await;

    let response = attempt_forwarded_for(&app, "198.51.100.8", "alice", "alice-password").await;
    assert_eq!(response.status(), 200);

    let events = app.events();
    let failures: Vec<_> = events.iter().filter(|e| e.kind == "login_failed").collect();
    assert_eq!(failures.len(), 10);
    assert!(failures.iter().all(|e| e.client_addr.as_deref() == Some("198.51.100.7")), "{failures:?}");
    let ok = events.iter().find(|e| e.kind == "login_ok").unwrap();
    assert_eq!(ok.user_id, Some(alice.id));
    assert_eq!(ok.client_addr.as_deref(), Some("198.51.100.8"));
}

#[tokio::test]
async fn addresses_a_client_prepends_to_x_forwarded_for_do_not_escape_the_throttle() {
    let app = spawn_app_with(&[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1"), SLOW_REFILL]).await;
    app.alice();
    for i in 0..10 {
        let chain = format!("203.0.113.{i}, 198.51.100.7");
        assert_token_error(attempt_forwarded_for(&app, &chain, "nobody", "x").await, 400, "invalid_grant").await;
    }
    let response = attempt_forwarded_for(&app, "203.0.113.99, 198.51.100.7", "alice", "alice-password").await;
    assert_token_error(response, 429, "slow_down").await;
    assert!(app.events().iter().all(|e| e.client_addr.as_deref() == Some("198.51.100.7")));
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = spawn_app_with(&[SLOW_REFILL]).await;
    app.alice();
    for _ in 0..10 {
        let response = attempt_forwarded_for(&app, "198.51.100.7", "nobody", "x").await;
        assert_token_error(response, 400, "invalid_grant").await;
    }

    let response = attempt_forwarded_for(&app, "198.51.100.8", "alice", "alice-password").await;
    assert_token_error(response, 429, "slow_down").await;
    let events = app.events();
    assert!(events.len() >= 10);
    assert!(events.iter().all(|e| e.client_addr.as_deref() == Some("127.0.0.1")), "{events:?}");
}

// ---------------------------------------------------------------------------------------------
// bcrypt cost upgrades

#[tokio::test]
async fn a_cheaper_stored_hash_is_upgraded_on_the_next_successful_sign_in() {
    let app = spawn_app_with(&[("GATEHOUSE_BCRYPT_COST", "5")]).await;
    let alice = app.alice();
    let original = stored_hash(&app, "alice");
    assert!(original.starts_with("$2b$04$"), "{original}");

    assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    assert_eq!(stored_hash(&app, "alice"), original, "a wrong password must not touch the hash");

    app.login(&alice, None).await;
    let upgraded = stored_hash(&app, "alice");
    assert!(upgraded.starts_with("$2b$05$"), "{upgraded}");
    assert!(bcrypt::verify("alice-password", &upgraded).unwrap());

    app.login(&alice, None).await;
    assert_eq!(stored_hash(&app, "alice"), upgraded, "a hash at the configured cost is kept");
}

#[tokio::test]
async fn a_stronger_stored_hash_is_never_downgraded() {
    let app = spawn_app_with(&[("GATEHOUSE_BCRYPT_COST", "5")]).await;
    let alice = app.alice();
    let strong = bcrypt::hash("alice-password", 6).unwrap();
    diesel::sql_query("UPDATE users SET password_hash = $1 WHERE username = 'alice'")
        .bind::<diesel::sql_types::Text, _>(&strong)
        .execute(&mut app.db.conn())
        .unwrap();

    app.login(&alice, None).await;

    assert_eq!(stored_hash(&app, "alice"), strong);
}

// ---------------------------------------------------------------------------------------------
// RFC 8414 metadata

#[tokio::test]
async fn the_metadata_document_describes_this_server() {
    let app = spawn_app().await;
    let response = app.get("/.well-known/oauth-authorization-server", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();

    assert_eq!(body["issuer"], app.address);
    assert_eq!(body["token_endpoint"], format!("{}/token", app.address));
    assert_eq!(body["revocation_endpoint"], format!("{}/revoke", app.address));
    assert_eq!(
        body["grant_types_supported"],
        serde_json::json!([
            "password",
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    let mut scopes: Vec<&str> =
        body["scopes_supported"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    scopes.sort_unstable();
    assert_eq!(
        scopes,
        ["admin:stats", "admin:users", "email", "items:read", "items:write", "openid", "profile", "tokens:introspect"]
    );
    assert_eq!(body["introspection_endpoint"], format!("{}/introspect", app.address));
    assert_eq!(body["jwks_uri"], format!("{}/.well-known/jwks.json", app.address));
    assert_eq!(
        body["token_endpoint_auth_methods_supported"],
        serde_json::json!(["none", "client_secret_basic", "client_secret_post"])
    );
    assert_eq!(body["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(body["authorization_endpoint"], format!("{}/authorize", app.address));
    assert_eq!(body["code_challenge_methods_supported"], serde_json::json!(["S256"]));
}

#[tokio::test]
async fn the_metadata_document_follows_a_configured_issuer() {
    let app = spawn_app_with(&[("GATEHOUSE_ISSUER", "https://auth.example.org/")]).await;
    let body: Value = app.get("/.well-known/oauth-authorization-server", None).await.json().await.unwrap();
    assert_eq!(body["issuer"], "https://auth.example.org");
    assert_eq!(body["token_endpoint"], "https://auth.example.org/token");
    assert_eq!(body["revocation_endpoint"], "https://auth.example.org/revoke");
}

// ---------------------------------------------------------------------------------------------
// What the admin statistics show of all this

#[tokio::test]
async fn admin_stats_count_outstanding_refresh_tokens() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let admin = app.admin();
    let alice = app.alice();
    let token = app.access_token(&admin, Some("admin:stats")).await;
    // A live family has exactly one unused token, so this one number also counts live families.
    let counts = |stats: Value| {
        assert!(stats.get("refresh_families_active").is_none(), "the same figure twice: {stats}");
        stats["refresh_tokens_outstanding"].as_i64().unwrap()
    };
    assert_eq!(counts(admin_stats(&app, &token).await), 1);

    let first = refresh_token_of(&app.login(&alice, None).await);
    assert_eq!(counts(admin_stats(&app, &token).await), 2);

    // Rotation uses one token up and issues one: the family stays one.
    refresh_ok(&app, &first, None).await;
    assert_eq!(counts(admin_stats(&app, &token).await), 2);

    let other = refresh_token_of(&app.login(&alice, None).await);
    assert_eq!(counts(admin_stats(&app, &token).await), 3);

    // Reuse of the first token ends its family.
    refresh_refused(&app, &first).await;
    assert_eq!(counts(admin_stats(&app, &token).await), 2);

    assert_eq!(app.revoke(&other, None).await.status(), 200);
    let stats = admin_stats(&app, &token).await;
    assert_eq!(counts(stats.clone()), 1);
    assert_eq!(stats["last_24h"]["refreshes"], 1, "{stats}");
    assert_eq!(stats["last_24h"]["reuse_detections"], 1, "{stats}");
}

#[tokio::test]
async fn admin_stats_count_the_last_days_lockouts() {
    let app = spawn_app_with(&[NO_THROTTLE]).await;
    let admin = app.admin();
    app.alice();
    let token = app.access_token(&admin, Some("admin:stats")).await;
    let stats = admin_stats(&app, &token).await;
    assert_eq!(stats["last_24h"]["lockouts"], 0);
    assert_eq!(stats["last_24h"]["failures"], 0);

    for _ in 0..5 {
        assert_token_error(wrong_password(&app, "alice").await, 400, "invalid_grant").await;
    }

    let stats = admin_stats(&app, &token).await;
    assert_eq!(stats["last_24h"]["lockouts"], 1);
    assert_eq!(stats["last_24h"]["failures"], 5);
    assert_eq!(stats["last_24h"]["logins"], 1);
}
