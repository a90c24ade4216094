//! `POST /token`: the password grant and every row of the contract's error table.

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::{assert_token_error, spawn_app, spawn_app_with};

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn the_password_grant_returns_a_bearer_token_with_no_store_headers() {
    let app = spawn_app().await;
    let alice = app.alice();
    let response = app.post_token(&[("username", "alice"), ("password", "alice-password")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "email items:read items:write openid profile");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);

    let token = body["access_token"].as_str().unwrap();
    let header = jwt_part(token, 0);
    assert_eq!(header["typ"], "at+jwt");
    // ES256 by default, with the key named by its RFC 7638 thumbprint (43 base64url characters).
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"].as_str().unwrap().len(), 43, "{header}");
    let claims = jwt_part(token, 1);
    let mut names: Vec<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["amr", "aud", "auth_time", "exp", "iat", "iss", "jti", "nbf", "preferred_username", "roles", "scope", "sub"]
    );
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]), "the password alone");
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert_eq!(claims["sub"], alice.id.to_string());
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["user"]));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
}

#[tokio::test]
async fn usernames_are_matched_without_regard_to_case() {
    let app = spawn_app().await;
    app.alice();
    let response = app.post_token(&[("username", "ALICE"), ("password", "alice-password")]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn requested_scopes_are_granted_when_the_roles_allow_them() {
    let app = spawn_app().await;
    let alice = app.alice();
    let body = app.login(&alice, Some("profile")).await;
    assert_eq!(body["scope"], "profile");
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_user_get_one_identical_answer() {
    let app = spawn_app().await;
    app.alice();
    app.create_user("dormant", "dormant-password", &["user"]);
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE users SET is_active = false WHERE username = 'dormant'"),
        &mut app.db.conn(),
    )
    .unwrap();

    let mut bodies = Vec::new();
    for (username, password) in [("alice", "wrong"), ("nobody", "whatever"), ("dormant", "dormant-password")] {
        let response = app.post_token(&[("username", username), ("password", password)]).await;
        bodies.push(assert_token_error(response, 400, "invalid_grant").await);
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    assert_eq!(bodies[0]["error_description"], "Incorrect username or password");
    let failures = app.event_kinds().iter().filter(|k| *k == "login_failed").count();
    assert_eq!(failures, 3);
}

#[tokio::test]
async fn missing_username_or_password_is_invalid_request() {
    let app = spawn_app().await;
    for fields in [vec![("password", "x")], vec![("username", "alice")], vec![("username", ""), ("password", "x")]] {
        assert_token_error(app.post_token(&fields).await, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_repeated_field_is_invalid_request() {
    let app = spawn_app().await;
    app.alice();
    let response = app
        .post_token_raw("application/x-www-form-urlencoded", "username=alice&password=alice-password&password=other")
        .await;
    assert_token_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_json_body_is_invalid_request() {
    let app = spawn_app().await;
    app.alice();
    let response = app.post_token_raw("application/json", r#"{"username":"alice","password":"alice-password"}"#).await;
    assert_token_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_invalid_request() {
    let app = spawn_app().await;
    let response =
        app.post_token_raw("application/x-www-form-urlencoded", b"username=al%FFice&password=x".to_vec()).await;
    assert_token_error(response, 400, "invalid_request").await;
    let response = app.post_token_raw("application/x-www-form-urlencoded", b"username=\xff&password=x".to_vec()).await;
    assert_token_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_a_json_error() {
    let app = spawn_app().await;
    let body = format!("username=alice&password={}", "x".repeat(64 * 1024));
    let response = app.post_token_raw("application/x-www-form-urlencoded", body).await;
    assert_token_error(response, 413, "invalid_request").await;
}

#[tokio::test]
async fn an_unknown_grant_type_is_unsupported_grant_type() {
    let app = spawn_app().await;
    for grant_type in ["implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer", "PASSWORD"] {
        let response = app.post_token(&[("grant_type", grant_type), ("username", "a"), ("password", "b")]).await;
        assert_token_error(response, 400, "unsupported_grant_type").await;
    }
}

#[tokio::test]
async fn a_scope_that_does_not_exist_is_invalid_scope() {
    let app = spawn_app().await;
    let alice = app.alice();
    let response = app
        .post_token(&[("username", &*alice.username), ("password", &*alice.password), ("scope", "profile nope")])
        .await;
    assert_token_error(response, 400, "invalid_scope").await;
}

#[tokio::test]
async fn a_scope_the_roles_do_not_allow_is_invalid_scope() {
    let app = spawn_app().await;
    let alice = app.alice();
    let response = app
        .post_token(&[("username", &*alice.username), ("password", &*alice.password), ("scope", "profile admin:stats")])
        .await;
    assert_token_error(response, 400, "invalid_scope").await;
}

#[tokio::test]
async fn admins_may_have_admin_scopes() {
    let app = spawn_app().await;
    let admin = app.admin();
    let body = app.login(&admin, Some("admin:stats")).await;
    assert_eq!(body["scope"], "admin:stats");
    let body = app.login(&admin, None).await;
    assert_eq!(body["scope"], "admin:stats admin:users email items:read items:write openid profile");
}

#[tokio::test]
async fn strict_mode_requires_grant_type() {
    let app = spawn_app_with(&[("GATEHOUSE_STRICT_GRANT_TYPE", "true")]).await;
    app.alice();
    let response = app.post_token(&[("username", "alice"), ("password", "alice-password")]).await;
    assert_token_error(response, 400, "invalid_request").await;
    let response =
        app.post_token(&[("grant_type", "password"), ("username", "alice"), ("password", "alice-password")]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn client_credentials_in_the_body_or_basic_auth_are_accepted_and_ignored() {
    let app = spawn_app().await;
    app.alice();
    let response = app
        .post_token(&[
            ("username", "alice"),
            ("password", "alice-password"),
            ("client_id", "cli"),
            ("client_secret", ""),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let response = app
        .client
        .post(app.url("/token"))
        .basic_auth("cli", Some("s"))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_successful_grant_is_audited_with_channel_and_address() {
    let app = spawn_app().await;
    let alice = app.alice();
    app.login(&alice, None).await;
    let events = app.events();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["login_ok", "token_issued"]);
    assert!(events.iter().all(|e| e.channel == "api" && e.user_id == Some(alice.id)));
    assert_eq!(events[0].client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(events[0].attempted_username.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_nul_character_in_a_field_is_invalid_request_not_a_server_error() {
    let app = spawn_app().await;
    app.alice();
    for body in ["username=al%00ice&password=alice-password", "username=alice&password=alice%00password"] {
        let response = app.post_token_raw("application/x-www-form-urlencoded", body).await;
        assert_token_error(response, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn the_configured_access_token_lifetime_is_what_the_client_is_told_and_what_the_token_says() {
    let app = spawn_app_with(&[("GATEHOUSE_ACCESS_TOKEN_TTL", "90s")]).await;
    let alice = app.alice();
    let body = app.login(&alice, None).await;
    assert_eq!(body["expires_in"], 90);
    let claims = jwt_part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 90);
}
