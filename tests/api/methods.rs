//! Methods: a known address asked with the wrong method says 405 and which methods it takes; HEAD
//! answers wherever GET does.

use reqwest::{Method, header};
use serde_json::Value;

use crate::helpers::spawn_app;
use gatehouse::routes::ROUTES;

/// Every address the service answers, with the `Allow` value a wrong method must get there, written
/// out by hand: HEAD wherever GET is, in the order the server lists them.
const ALLOW: &[(&str, &str)] = &[
    ("/token", "POST"),
    ("/revoke", "POST"),
    ("/introspect", "POST"),
    ("/.well-known/oauth-authorization-server", "GET, HEAD"),
    ("/.well-known/jwks.json", "GET, HEAD"),
    ("/api/users/me", "GET, HEAD"),
    ("/api/users/me/sign-out-all", "POST"),
    ("/api/users/me/tokens", "GET, POST, HEAD"),
    ("/api/users/me/tokens/{id}", "DELETE"),
    ("/api/items", "GET, POST, HEAD"),
    ("/api/admin/stats", "GET, HEAD"),
    ("/api/admin/users", "GET, POST, HEAD"),
    ("/api/admin/users/{username}", "PATCH"),
    ("/api/admin/users/{username}/sign-out-all", "POST"),
    ("/api/admin/clients", "GET, POST, HEAD"),
    ("/api/admin/clients/{client_id}", "GET, DELETE, HEAD"),
    ("/api/admin/clients/{client_id}/rotate-secret", "POST"),
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/openapi.json", "GET, HEAD"),
    ("/docs", "GET, HEAD"),
    ("/static/style.css", "GET, HEAD"),
    ("/login", "GET, POST, HEAD"),
    ("/logout", "POST"),
    ("/", "GET, HEAD"),
    ("/admin/stats", "GET, HEAD"),
    ("/admin/users", "GET, POST, HEAD"),
    ("/admin/users/{username}", "GET, HEAD"),
    ("/admin/users/{username}/roles", "POST"),
    ("/admin/users/{username}/active", "POST"),
    ("/admin/users/{username}/password", "POST"),
    ("/admin/users/{username}/sign-out-all", "POST"),
    ("/admin/users/{username}/tokens/{id}/revoke", "POST"),
    ("/admin/audit", "GET, HEAD"),
    ("/admin/clients", "GET, POST, HEAD"),
    ("/admin/clients/{client_id}/rotate-secret", "POST"),
    ("/admin/clients/{client_id}/remove", "POST"),
    ("/account", "GET, HEAD"),
    ("/account/profile", "POST"),
    ("/account/password", "POST"),
    ("/account/sessions/{id}/end", "POST"),
    ("/account/families/{id}/revoke", "POST"),
    ("/account/tokens", "GET, POST, HEAD"),
    ("/account/tokens/{id}/revoke", "POST"),
    ("/login/verify", "GET, POST, HEAD"),
    ("/account/second-factor", "GET, POST, HEAD"),
    ("/account/second-factor/confirm", "POST"),
    ("/account/second-factor/recovery-codes", "POST"),
    ("/account/second-factor/remove", "POST"),
    ("/admin/users/{username}/second-factors/remove", "POST"),
    ("/api/admin/users/{username}/second-factors", "DELETE"),
    ("/account/passkeys/begin", "POST"),
    ("/account/passkeys/finish", "POST"),
    ("/account/passkeys/{id}/rename", "POST"),
    ("/account/passkeys/{id}/remove", "POST"),
    ("/login/verify/passkey/begin", "POST"),
    ("/login/verify/passkey/finish", "POST"),
    ("/login/passkey/begin", "POST"),
    ("/login/passkey/finish", "POST"),
    ("/static/passkeys.js", "GET, HEAD"),
    ("/password-reset", "GET, POST, HEAD"),
    ("/password-reset/{token}", "GET, POST, HEAD"),
    ("/invitation/{token}", "GET, POST, HEAD"),
    ("/email-confirm/{token}", "GET, POST, HEAD"),
    ("/admin/users/{username}/password-reset", "POST"),
    ("/authorize", "GET, POST, HEAD"),
    ("/userinfo", "GET, POST, HEAD"),
    ("/.well-known/openid-configuration", "GET, HEAD"),
    ("/end_session", "GET, POST, HEAD"),
    ("/device_authorization", "POST"),
    ("/device", "GET, POST, HEAD"),
    ("/account/apps/{client_id}/disconnect", "POST"),
];

#[tokio::test]
async fn every_address_in_the_route_table_answers_a_wrong_method_with_405_and_allow() {
    let app = spawn_app().await;
    // No route takes PUT (a personal access token is revoked with DELETE). Templated paths
    // (`/admin/users/{username}`) are asked as they are written: `{username}` is as good a segment as any.
    for (path, allow) in ALLOW {
        let response = app.client.request(Method::PUT, app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 405, "PUT {path}");
        assert_eq!(response.headers()[header::ALLOW], *allow, "PUT {path}");
    }
}

#[test]
fn the_allow_table_above_covers_every_address_in_the_route_table() {
    // A new route must get its expected `Allow` written into the table, not computed.
    let mut routed: Vec<&str> = ROUTES.iter().map(|(_, path)| *path).collect();
    routed.sort_unstable();
    routed.dedup();
    let mut listed: Vec<&str> = ALLOW.iter().map(|(path, _)| *path).collect();
    listed.sort_unstable();
    assert_eq!(listed, routed);
}

#[tokio::test]
async fn a_get_on_the_token_endpoint_is_a_json_405_allowing_post() {
    let app = spawn_app().await;
    let response = app.get("/token", None).await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[header::ALLOW], "POST");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    assert!(body["error_description"].as_str().unwrap().contains("POST"), "{body}");
}

#[tokio::test]
async fn a_wrong_method_under_api_is_a_json_405_and_an_unknown_path_still_a_404() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/api/users/me")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");

    let response = app.client.put(app.url("/api/items")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[header::ALLOW], "GET, POST, HEAD");

    let response = app.client.delete(app.url("/api/no-such-thing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    for (path, token) in [("/healthz", None), ("/login", None), ("/api/users/me", Some(token.as_str()))] {
        let mut get = app.client.get(app.url(path));
        let mut head = app.client.head(app.url(path));
        if let Some(token) = token {
            get = get.bearer_auth(token);
            head = head.bearer_auth(token);
        }
        let get = get.send().await.unwrap();
        let head = head.send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()[header::CONTENT_TYPE], get.headers()[header::CONTENT_TYPE], "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} sent a body");
        assert!(!get.bytes().await.unwrap().is_empty(), "GET {path}");
    }
    // HEAD carries the same authentication as GET.
    assert_eq!(app.client.head(app.url("/api/users/me")).send().await.unwrap().status(), 401);
}
