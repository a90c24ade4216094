//! `/api/users/me` and "sign out everywhere".

use serde_json::{Value, json};

use crate::helpers::{assert_bearer_error, assert_token_error, spawn_app};

const ME: &str = "/api/users/me";
const SIGN_OUT_ALL: &str = "/api/users/me/sign-out-all";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token", error_description="*"#;

#[tokio::test]
async fn me_returns_exactly_the_profile_fields_and_the_scopes_of_this_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let login = app.login(&alice, Some("profile items:read")).await;
    assert_eq!(login["scope"], "items:read profile", "{login}");

    let response = app.get(ME, login["access_token"].as_str()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "id": alice.id,
            "username": "alice",
            "email": "alice@example.org",
            "email_verified": false,
            "full_name": "Test Person",
            "roles": ["user"],
            "scopes": ["items:read", "profile"],
            "is_active": true,
        })
    );
}

#[tokio::test]
async fn me_shows_only_the_scopes_of_the_token_presented_not_all_the_user_may_have() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, Some("profile")).await;
    let body: Value = app.get(ME, Some(&token)).await.json().await.unwrap();
    assert_eq!(body["scopes"], json!(["profile"]));
    let mut roles: Vec<String> = serde_json::from_value(body["roles"].clone()).unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "user"]);
}

#[tokio::test]
async fn sign_out_all_ends_every_earlier_access_and_refresh_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let first = app.login(&alice, None).await;
    let second = app.login(&alice, Some("profile")).await;
    let access_tokens = [first["access_token"].as_str().unwrap(), second["access_token"].as_str().unwrap()];
    for token in access_tokens {
        assert_eq!(app.get(ME, Some(token)).await.status(), 200);
    }

    let response = app.post_empty(SIGN_OUT_ALL, Some(access_tokens[1])).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());

    for token in access_tokens {
        assert_bearer_error(app.get(ME, Some(token)).await, 401, Some(INVALID_TOKEN), "invalid_token").await;
    }
    for login in [&first, &second] {
        let response = app.refresh(login["refresh_token"].as_str().unwrap(), None).await;
        assert_token_error(response, 400, "invalid_grant").await;
    }
}

#[tokio::test]
async fn after_sign_out_all_a_fresh_sign_in_works() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.post_empty(SIGN_OUT_ALL, Some(&token)).await.status(), 204);

    let fresh = app.login(&alice, None).await;
    let response = app.get(ME, fresh["access_token"].as_str()).await;
    assert_eq!(response.status(), 200);
    let response = app.refresh(fresh["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(response.status(), 200);
    let refreshed: Value = response.json().await.unwrap();
    assert_eq!(app.get(ME, refreshed["access_token"].as_str()).await.status(), 200);
}

#[tokio::test]
async fn sign_out_all_is_audited() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.post_empty(SIGN_OUT_ALL, Some(&token)).await.status(), 204);
    let events = app.events();
    let sign_outs: Vec<_> = events.iter().filter(|e| e.kind == "sign_out_all").collect();
    assert_eq!(sign_outs.len(), 1, "{:?}", app.event_kinds());
    assert_eq!(sign_outs[0].user_id, Some(alice.id));
    assert_eq!(sign_outs[0].channel, "api");
    // Like every account change: who did it, from where, in which request.
    assert_eq!(sign_outs[0].actor_id, Some(alice.id));
    assert_eq!(sign_outs[0].client_addr.as_deref(), Some("127.0.0.1"));
    assert!(sign_outs[0].request_id.is_some());
    assert_eq!(app.event_kinds().last().map(String::as_str), Some("sign_out_all"));
}

#[tokio::test]
async fn sign_out_all_needs_the_profile_scope_and_changes_nothing_without_it() {
    let app = spawn_app().await;
    let alice = app.alice();
    let login = app.login(&alice, Some("items:read")).await;
    let token = login["access_token"].as_str().unwrap();
    let response = app.post_empty(SIGN_OUT_ALL, Some(token)).await;
    assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="profile""#),
        "insufficient_scope",
    )
    .await;

    assert!(!app.event_kinds().iter().any(|k| k == "sign_out_all"), "{:?}", app.event_kinds());
    assert_eq!(app.get("/api/items", Some(token)).await.status(), 200);
    let response = app.refresh(login["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sign_out_all_without_a_token_is_unauthorized() {
    let app = spawn_app().await;
    let response = app.post_empty(SIGN_OUT_ALL, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}
