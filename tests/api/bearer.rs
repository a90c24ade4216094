//! Bearer authentication of `/api/*`: every row of the contract's "Bearer failures (RFC 6750 §3)" table.

use base64::Engine as _;
use diesel::RunQueryDsl;
use gatehouse::db::users::AccessCheck;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{self, HeaderValue};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{JWT_SECRET, TestApp, TestUser, assert_bearer_error, spawn_app_with};

/// These tests forge tokens with the shared secret, so here the server signs with HS256 too.
async fn spawn_app() -> TestApp {
    spawn_app_with(&[("GATEHOUSE_SIGNING_ALG", "HS256")]).await
}

const ME: &str = "/api/users/me";
const STATS: &str = "/api/admin/stats";
/// Any `invalid_token` challenge: the description varies with the reason.
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token", error_description="*"#;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims the server itself would put in a token for `user`, valid for ten minutes from now.
fn claims_for(app: &TestApp, user: &TestUser, scope: &str) -> Value {
    let now = now();
    json!({
        "iss": app.address,
        "sub": user.id,
        "aud": app.address,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": Uuid::now_v7(),
        "scope": scope,
        "preferred_username": user.username,
        "roles": ["user"],
    })
}

/// Signs `claims` with `secret`, `alg` and the `typ` header given (none when `None`).
fn sign(claims: &Value, alg: Algorithm, typ: Option<&str>, secret: &str) -> String {
    let mut header = Header::new(alg);
    header.typ = typ.map(str::to_owned);
    header.kid = Some(gatehouse::auth::keys::hs256_kid(&JWT_SECRET.into()).unwrap());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
}

/// Signs `claims` exactly as the server does: HS256, `typ: at+jwt`, the test secret.
fn sign_like_the_server(claims: &Value) -> String {
    sign(claims, Algorithm::HS256, Some("at+jwt"), JWT_SECRET)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET path` with this exact `Authorization` header value.
async fn get_with_authorization(app: &TestApp, path: &str, value: HeaderValue) -> reqwest::Response {
    app.client.get(app.url(path)).header(header::AUTHORIZATION, value).send().await.unwrap()
}

/// RFC 6750 §3.1: a request without credentials gets a bare challenge, without an error code.
async fn assert_unauthenticated(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "body: {body}");
    assert_ne!(body["error"], "invalid_token", "no token was presented; body: {body}");
}

/// A 401 `invalid_token` answer, with a description in the challenge and in the body.
async fn assert_invalid_token(response: reqwest::Response) {
    let body = assert_bearer_error(response, 401, Some(INVALID_TOKEN), "invalid_token").await;
    assert!(!body["error_description"].as_str().unwrap().is_empty(), "body: {body}");
}

fn execute(app: &TestApp, sql: &str) -> usize {
    diesel::sql_query(sql).execute(&mut app.db.conn()).unwrap()
}

#[tokio::test]
async fn a_request_without_an_authorization_header_gets_a_bare_bearer_challenge() {
    let app = spawn_app().await;
    assert_unauthenticated(app.get(ME, None).await).await;
}

#[tokio::test]
async fn another_authentication_scheme_counts_as_no_credentials() {
    let app = spawn_app().await;
    let alice = app.alice();
    let response = app.client.get(app.url(ME)).basic_auth(&alice.username, Some(&alice.password)).send().await.unwrap();
    assert_unauthenticated(response).await;
    let response = get_with_authorization(&app, ME, HeaderValue::from_static("Digest username=\"alice\"")).await;
    assert_unauthenticated(response).await;
}

#[tokio::test]
async fn a_token_built_the_way_the_server_builds_them_is_accepted() {
    // The control for the forged tokens below: each of them differs from this one in one way only.
    let app = spawn_app().await;
    let alice = app.alice();
    let token = sign_like_the_server(&claims_for(&app, &alice, "profile"));
    let response = app.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_malformed_bearer_credential_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let good = app.access_token(&alice, None).await;
    let values = [
        "Bearer garbage".to_owned(),
        "Bearer a.b.c".to_owned(),
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJ.x".to_owned(),
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
        // Characters outside RFC 6750 §2.1 b64token.
        format!("Bearer {good}$"),
        format!("Bearer {good} extra"),
        format!("Bearer \"{good}\""),
        "Bearer a,b".to_owned(),
    ];
    for value in values {
        let response = get_with_authorization(&app, ME, HeaderValue::from_str(&value).unwrap()).await;
        assert_eq!(response.status(), 401, "Authorization: {value}");
        assert_invalid_token(response).await;
    }
    // Bytes that are not visible ASCII at all.
    let response = get_with_authorization(&app, ME, HeaderValue::from_bytes(b"Bearer t\xf6ken").unwrap()).await;
    assert_invalid_token(response).await;
}

#[tokio::test]
async fn two_authorization_headers_are_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    let response = app
        .client
        .get(app.url(ME))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_invalid_token(response).await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let claims = claims_for(&app, &alice, "profile");
    let token = sign(&claims, Algorithm::HS256, Some("at+jwt"), "another-secret-that-is-also-long-enough-0123456789");
    assert_invalid_token(app.get(ME, Some(&token)).await).await;
}

#[tokio::test]
async fn a_token_whose_claims_were_altered_after_signing_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("profile")).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    let mut claims: Value = serde_json::from_slice(&payload).unwrap();
    claims["scope"] = json!("profile items:read items:write admin:stats");
    parts[1] = b64(claims.to_string().as_bytes());
    assert_invalid_token(app.get(ME, Some(&parts.join("."))).await).await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let mut claims = claims_for(&app, &alice, "profile");
    claims["iss"] = json!("http://127.0.0.1:1");
    assert_invalid_token(app.get(ME, Some(&sign_like_the_server(&claims))).await).await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let mut claims = claims_for(&app, &alice, "profile");
    claims["aud"] = json!("https://other-api.example.org");
    assert_invalid_token(app.get(ME, Some(&sign_like_the_server(&claims))).await).await;
}

#[tokio::test]
async fn a_token_not_typed_as_an_access_token_is_invalid_token() {
    // RFC 9068 §4: an ID token or any other JWT signed with the same key must not pass as an access token.
    let app = spawn_app().await;
    let alice = app.alice();
    for typ in [Some("JWT"), Some("id_token+jwt"), None] {
        let token = sign(&claims_for(&app, &alice, "profile"), Algorithm::HS256, typ, JWT_SECRET);
        let response = app.get(ME, Some(&token)).await;
        assert_eq!(response.status(), 401, "typ {typ:?}");
        assert_invalid_token(response).await;
    }
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let claims = claims_for(&app, &alice, "profile");
    let payload = b64(claims.to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#).as_bytes());
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            let response = app.get(ME, Some(&token)).await;
            assert_eq!(response.status(), 401, "{token}");
            assert_invalid_token(response).await;
        }
    }
}

#[tokio::test]
async fn hs384_and_hs512_are_refused_even_with_the_right_secret() {
    let app = spawn_app().await;
    let alice = app.alice();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(&claims_for(&app, &alice, "profile"), alg, Some("at+jwt"), JWT_SECRET);
        let response = app.get(ME, Some(&token)).await;
        assert_eq!(response.status(), 401, "{alg:?}");
        assert_invalid_token(response).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let mut claims = claims_for(&app, &alice, "profile");
    let now = now();
    claims["iat"] = json!(now - 960);
    claims["nbf"] = json!(now - 960);
    claims["exp"] = json!(now - 60);
    assert_invalid_token(app.get(ME, Some(&sign_like_the_server(&claims))).await).await;
}

#[tokio::test]
async fn a_token_dated_a_few_seconds_ahead_is_accepted_within_the_five_second_leeway() {
    // Another instance's clock may run a little ahead of this one's.
    let app = spawn_app().await;
    let alice = app.alice();
    let mut claims = claims_for(&app, &alice, "profile");
    let ahead = now() + 3;
    claims["iat"] = json!(ahead);
    claims["nbf"] = json!(ahead);
    let response = app.get(ME, Some(&sign_like_the_server(&claims))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice");
}

#[tokio::test]
async fn a_token_not_valid_for_another_thirty_seconds_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    for claim in ["nbf", "iat"] {
        let mut claims = claims_for(&app, &alice, "profile");
        claims[claim] = json!(now() + 30);
        let response = app.get(ME, Some(&sign_like_the_server(&claims))).await;
        assert_eq!(response.status(), 401, "{claim} 30 s ahead");
        let body = assert_bearer_error(response, 401, Some(INVALID_TOKEN), "invalid_token").await;
        assert_eq!(body["error_description"], "The access token is not valid yet", "{claim} 30 s ahead");
    }
}

#[tokio::test]
async fn a_token_missing_a_required_claim_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    for claim in ["exp", "sub", "iss", "aud"] {
        let mut claims = claims_for(&app, &alice, "profile");
        claims.as_object_mut().unwrap().remove(claim);
        let response = app.get(ME, Some(&sign_like_the_server(&claims))).await;
        assert_eq!(response.status(), 401, "without {claim}");
        assert_invalid_token(response).await;
    }
}

#[tokio::test]
async fn a_revoked_access_token_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.revoke(&token, Some("access_token")).await.status(), 200);
    assert_invalid_token(app.get(ME, Some(&token)).await).await;
}

#[tokio::test]
async fn the_token_of_a_deleted_user_is_invalid_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    assert_eq!(execute(&app, &format!("DELETE FROM users WHERE id = '{}'", alice.id)), 1);
    assert_invalid_token(app.get(ME, Some(&token)).await).await;
}

#[tokio::test]
async fn a_valid_token_without_the_required_scope_gets_insufficient_scope_naming_it() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, Some("items:read")).await;
    let response = app.get(ME, Some(&token)).await;
    let body = assert_bearer_error(
        response,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="profile""#),
        "insufficient_scope",
    )
    .await;
    assert!(body["error_description"].is_string(), "body: {body}");
}

#[tokio::test]
async fn admin_stats_need_the_admin_stats_scope() {
    let app = spawn_app().await;
    let alice = app.alice();
    let admin = app.admin();
    let challenge = Some(r#"Bearer error="insufficient_scope", scope="admin:stats""#);
    // A plain user with every scope her role allows.
    let token = app.access_token(&alice, None).await;
    assert_bearer_error(app.get(STATS, Some(&token)).await, 403, challenge, "insufficient_scope").await;
    // An admin whose token was not granted the scope.
    let token = app.access_token(&admin, Some("profile items:read")).await;
    assert_bearer_error(app.get(STATS, Some(&token)).await, 403, challenge, "insufficient_scope").await;
}

#[tokio::test]
async fn admin_stats_need_the_admin_role_as_it_is_now_not_as_the_token_says() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, Some("admin:stats")).await;
    assert_eq!(app.get(STATS, Some(&token)).await.status(), 200);
    let removed =
        execute(&app, &format!("DELETE FROM user_roles WHERE user_id = '{}' AND role_name = 'admin'", admin.id));
    assert_eq!(removed, 1);
    let response = app.get(STATS, Some(&token)).await;
    assert_bearer_error(response, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
}

#[tokio::test]
async fn admin_stats_count_the_users_items_and_sign_ins_that_happened() {
    let app = spawn_app().await;
    let admin = app.admin();
    let alice = app.alice();
    app.create_user("dormant", "dormant-password", &["user"]);
    execute(&app, "UPDATE users SET is_active = false WHERE username = 'dormant'");

    // Two failures: a wrong password and an unknown user.
    for (username, password) in [("alice", "wrong-password"), ("nobody", "whatever")] {
        assert_eq!(app.post_token(&[("username", username), ("password", password)]).await.status(), 400);
    }
    // Two sign-ins, and two items.
    let alice_token = app.access_token(&alice, Some("items:write")).await;
    for title in ["first", "second"] {
        let response = app.post_json("/api/items", Some(&alice_token), &json!({"title": title})).await;
        assert_eq!(response.status(), 201);
    }
    let admin_token = app.access_token(&admin, Some("admin:stats")).await;

    let response = app.get(STATS, Some(&admin_token)).await;
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await.unwrap();
    assert_eq!(
        stats["users"],
        json!({"total": 3, "active": 2, "by_role": {"admin": 1, "service": 0, "user": 3}}),
        "{stats}"
    );
    assert_eq!(stats["items"], 2, "{stats}");
    assert_eq!(stats["last_24h"]["logins"], 2, "{stats}");
    assert_eq!(stats["last_24h"]["failures"], 2, "{stats}");
    assert_eq!(stats["last_24h"]["tokens_issued"], 2, "{stats}");
    assert_eq!(stats["last_24h"]["lockouts"], 0, "{stats}");
}

#[tokio::test]
async fn a_user_deactivated_after_sign_in_is_refused_on_the_very_next_request() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    execute(&app, &format!("UPDATE users SET is_active = false WHERE id = '{}'", alice.id));
    let response = app.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "inactive_user", "body: {body}");
    assert!(body["error_description"].is_string(), "body: {body}");
}

#[tokio::test]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let app = spawn_app().await;
    let alice = app.alice();
    let token = app.access_token(&alice, None).await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let value = HeaderValue::from_str(&format!("{scheme} {token}")).unwrap();
        let response = get_with_authorization(&app, ME, value).await;
        assert_eq!(response.status(), 200, "scheme {scheme}");
    }
}

/// Concurrent requests share batched lookups: each must still get its own caller's answer.
#[tokio::test]
async fn concurrent_callers_each_get_their_own_answer() {
    // Twelve sign-ins from one address: more than the login throttle's burst.
    let app = spawn_app_with(&[("GATEHOUSE_LOGIN_RATE_PER_MINUTE", "0")]).await;
    let mut expected: Vec<(String, u16, Option<String>)> = Vec::new();
    for n in 0..8 {
        let user = app.create_user(&format!("caller-{n}"), "caller-password", &["user"]);
        let token = app.access_token(&user, None).await;
        expected.push((token, 200, Some(user.username)));
    }
    // A second token of one caller, revoked; its sibling stays valid.
    let revoked_owner = app.create_user("caller-revoked", "caller-password", &["user"]);
    let kept = app.access_token(&revoked_owner, None).await;
    let revoked = app.access_token(&revoked_owner, None).await;
    assert_eq!(app.revoke(&revoked, Some("access_token")).await.status(), 200);
    expected.push((kept, 200, Some(revoked_owner.username.clone())));
    expected.push((revoked, 401, None));
    let inactive = app.create_user("caller-inactive", "caller-password", &["user"]);
    let inactive_token = app.access_token(&inactive, None).await;
    execute(&app, &format!("UPDATE users SET is_active = false WHERE id = '{}'", inactive.id));
    expected.push((inactive_token, 403, None));
    let deleted = app.create_user("caller-deleted", "caller-password", &["user"]);
    let deleted_token = app.access_token(&deleted, None).await;
    execute(&app, &format!("DELETE FROM users WHERE id = '{}'", deleted.id));
    expected.push((deleted_token, 401, None));

    let mut requests = tokio::task::JoinSet::new();
    for round in 0..6 {
        for (i, (token, status, username)) in expected.iter().enumerate() {
            let (client, url) = (app.client.clone(), app.url(ME));
            let (token, status, username) = (token.clone(), *status, username.clone());
            requests.spawn(async move {
                let response = client.get(url).bearer_auth(token).send().await.unwrap();
                let got = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(got, status, "request {i} of round {round}: {body}");
                if let Some(username) = username {
                    assert_eq!(body["username"], username.as_str(), "request {i} of round {round}");
                }
            });
        }
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
}

/// The batch lookup behind bearer checks answers every lookup on its own, in order.
#[tokio::test]
async fn a_batch_of_token_lookups_answers_each_lookup_in_order() {
    let app = spawn_app().await;
    let alice = app.alice();
    let admin = app.admin();
    let (kept, revoked) = (Uuid::now_v7(), Uuid::now_v7());
    execute(
        &app,
        &format!(
            "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) VALUES ('{revoked}', '{}', now() + interval '1 hour')",
            alice.id
        ),
    );
    let nobody = Uuid::now_v7();
    let live_client = crate::oidc::public_app(&app, "RS256", false).id;
    let removed_client = crate::oidc::public_app(&app, "RS256", false).id;
    execute(&app, &format!("UPDATE oauth_clients SET removed_at = now() WHERE client_id = '{removed_client}'"));
    let check = |user_id, jti, client_id: Option<&String>| AccessCheck { user_id, jti, client_id: client_id.cloned() };
    let checks = [
        check(alice.id, kept, None),
        check(nobody, kept, None),
        check(admin.id, revoked, None),
        check(alice.id, revoked, Some(&live_client)),
        check(alice.id, kept, Some(&removed_client)),
        check(alice.id, kept, Some(&"gc_never-registered".to_owned())),
    ];
    let answers = gatehouse::db::users::token_holders(&mut app.db.conn(), &checks).unwrap();
    // Username, roles, revoked, client removed.
    type Summary = (String, Vec<String>, bool, bool);
    let summary: Vec<Option<Summary>> = answers
        .into_iter()
        .map(|answer| {
            answer.map(|holder| (holder.user.username, holder.roles, holder.token_revoked, holder.client_removed))
        })
        .collect();
    let user = |name: &str, roles: &[&str], revoked, client_removed| {
        Some((name.to_owned(), roles.iter().map(|r| r.to_string()).collect(), revoked, client_removed))
    };
    assert_eq!(
        summary,
        vec![
            user("alice", &["user"], false, false),
            None,
            // Revocation is by jti: the same jti under another user still counts as revoked.
            user("root-admin", &["admin", "user"], true, false),
            user("alice", &["user"], true, false),
            // A client that was removed, or never registered, is gone for its tokens.
            user("alice", &["user"], false, true),
            user("alice", &["user"], false, true),
        ]
    );
    assert!(gatehouse::db::users::token_holders(&mut app.db.conn(), &[]).unwrap().is_empty());
}
