//! Registered clients and the client-credentials grant (issue #17) over real HTTP: client
//! authentication at `/token` (HTTP Basic and `client_secret`), the client's own tokens on the API and
//! at `/introspect`, rotation with its hour of overlap, removal seen by another instance at the next
//! request, throttling of failures, the password-grant switch, the metadata, the command line, the
//! admin API and the admin page.

use std::process::{Command, Stdio};

use base64::Engine as _;
use chrono::Utc;
use diesel::RunQueryDsl;
use gatehouse::accounts::Actor;
use gatehouse::accounts::clients;
use gatehouse::domain::ClientDraft;
use reqwest::{Client, Response, header};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_bearer_error, assert_token_error, spawn_app, spawn_app_with, spawn_pair};

/// A client registered straight through the service layer (as `gatehouse client add` does).
struct TestClient {
    id: String,
    secret: String,
}

fn register(app: &TestApp, draft: ClientDraft) -> TestClient {
    let registered = clients::register(&mut app.db.conn(), &Actor::command_line(), draft, Utc::now()).unwrap();
    TestClient {
        id: registered.client.client_id,
        secret: registered.secret.map(|secret| secret.expose_secret().to_owned()).unwrap_or_default(),
    }
}

/// A confidential client allowed `client_credentials`, with these scopes.
fn service(app: &TestApp, scopes: &[&str]) -> TestClient {
    register(
        app,
        ClientDraft {
            name: "billing".into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            ..ClientDraft::default()
        },
    )
}

async fn basic(app: &TestApp, id: &str, secret: &str, fields: &[(&str, &str)]) -> Response {
    app.client.post(app.url("/token")).basic_auth(id, Some(secret)).form(fields).send().await.unwrap()
}

async fn client_token(app: &TestApp, client: &TestClient, scope: Option<&str>) -> String {
    let mut fields = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        fields.push(("scope", scope));
    }
    let response = basic(app, &client.id, &client.secret, &fields).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn assert_invalid_client(response: Response) -> Value {
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(challenge.as_deref(), Some(r#"Basic realm="gatehouse""#));
    let body = assert_token_error(response, 401, "invalid_client").await;
    assert_eq!(body["error_description"], "Client authentication failed", "never tells which");
    body
}

async fn introspect(app: &TestApp, caller: &str, token: &str) -> Response {
    app.client.post(app.url("/introspect")).bearer_auth(caller).form(&[("token", token)]).send().await.unwrap()
}

#[tokio::test]
async fn client_credentials_with_http_basic_give_the_clients_own_token_without_a_refresh_token() {
    let app = spawn_app().await;
    let client = service(&app, &["tokens:introspect", "items:read"]);
    let response = basic(&app, &client.id, &client.secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    let body: Value = response.json().await.unwrap();
    let mut fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["access_token", "expires_in", "scope", "token_type"], "no refresh_token: {body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "items:read tokens:introspect", "all of the client's scopes by default");

    let claims = claims(body["access_token"].as_str().unwrap());
    let mut names: Vec<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["aud", "client_id", "exp", "iat", "iss", "jti", "nbf", "scope", "sub"], "nothing of a user");
    assert_eq!(claims["sub"], client.id.as_str());
    assert_eq!(claims["client_id"], client.id.as_str());

    let events = app.events();
    let issued = events.last().unwrap();
    assert_eq!((issued.kind.as_str(), issued.channel.as_str()), ("token_issued", "api"));
    assert_eq!(issued.attempted_username.as_deref(), Some(client.id.as_str()));
}

#[tokio::test]
async fn client_secret_post_works_as_well_as_basic() {
    let app = spawn_app().await;
    let client = service(&app, &["items:read"]);
    let response = app
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ])
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(claims(body["access_token"].as_str().unwrap())["sub"], client.id.as_str());
}

#[tokio::test]
async fn a_wrong_secret_an_unknown_client_a_public_client_or_no_client_is_401_invalid_client() {
    let app = spawn_app().await;
    let client = service(&app, &[]);
    let public = register(&app, ClientDraft { name: "spa".into(), public: true, ..ClientDraft::default() });
    let cc = [("grant_type", "client_credentials")];
    assert_invalid_client(basic(&app, &client.id, "gcs_wrong", &cc).await).await;
    assert_invalid_client(basic(&app, "gc_nosuchclient0000000000", &client.secret, &cc).await).await;
    assert_invalid_client(app.post_token(&[("grant_type", "client_credentials"), ("client_id", &public.id)]).await)
        .await;
    assert_invalid_client(app.post_token(&[("grant_type", "client_credentials"), ("client_id", &client.id)]).await)
        .await;
    assert_invalid_client(app.post_token(&cc).await).await;

    let failures: Vec<Option<String>> =
        app.events().into_iter().filter(|event| event.kind == "client_auth_failed").map(|event| event.detail).collect();
    let expected = ["wrong_secret", "unknown_client", "public_client", "no_secret", "no_client"];
    assert_eq!(failures, expected.map(|detail| Some(detail.to_owned())));
    let metrics = app.state.grants.metrics.encode();
    assert!(metrics.contains(r#"gatehouse_client_authentications_total{outcome="wrong_secret"} 1"#), "{metrics}");
}

#[tokio::test]
async fn two_authentication_methods_at_once_or_a_malformed_basic_header_are_400_invalid_request() {
    let app = spawn_app().await;
    let client = service(&app, &[]);
    let both = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client.id, Some(&client.secret))
        .form(&[("grant_type", "client_credentials"), ("client_secret", &client.secret)])
        .send()
        .await
        .unwrap();
    assert_token_error(both, 400, "invalid_request").await;
    for header_value in ["Basic not-base64!", "Basic", "Basic Zm9v"] {
        let response = app
            .client
            .post(app.url("/token"))
            .header(header::AUTHORIZATION, header_value)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_token_error(response, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn requested_scopes_must_be_among_the_clients() {
    let app = spawn_app().await;
    let client = service(&app, &["items:read", "tokens:introspect"]);
    let one =
        basic(&app, &client.id, &client.secret, &[("grant_type", "client_credentials"), ("scope", "items:read")]).await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["scope"], "items:read");
    let wider = basic(
        &app,
        &client.id,
        &client.secret,
        &[("grant_type", "client_credentials"), ("scope", "items:read profile")],
    )
    .await;
    assert_token_error(wider, 400, "invalid_scope").await;
}

#[tokio::test]
async fn a_rotated_out_secret_keeps_working_for_an_hour_and_the_new_one_works_at_once() {
    let app = spawn_app().await;
    let client = service(&app, &[]);
    let rotated = clients::rotate_secret(&mut app.db.conn(), &Actor::command_line(), &client.id, Utc::now()).unwrap();
    let new_secret = rotated.secret.expose_secret().to_owned();
    let cc = [("grant_type", "client_credentials")];
    assert_eq!(basic(&app, &client.id, &client.secret, &cc).await.status(), 200, "the old secret, within the hour");
    assert_eq!(basic(&app, &client.id, &new_secret, &cc).await.status(), 200, "the new secret");

    #[derive(diesel::QueryableByName)]
    struct Expiry {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
        seconds: Option<f64>,
    }
    let expiries: Vec<Expiry> = diesel::sql_query(
        "SELECT extract(epoch FROM expires_at - now())::float8 AS seconds FROM oauth_client_secrets ORDER BY created_at",
    )
    .load(&mut app.db.conn())
    .unwrap();
    assert_eq!(expiries.len(), 2);
    let old = expiries[0].seconds.unwrap();
    assert!((3500.0..=3600.0).contains(&old), "the old secret expires an hour after the rotation: {old}");
    assert!(expiries[1].seconds.is_none(), "the new secret is current");

    // An hour later the old secret is refused.
    diesel::sql_query("UPDATE oauth_client_secrets SET expires_at = now() WHERE expires_at IS NOT NULL")
        .execute(&mut app.db.conn())
        .unwrap();
    assert_invalid_client(basic(&app, &client.id, &client.secret, &cc).await).await;
    assert_eq!(basic(&app, &client.id, &new_secret, &cc).await.status(), 200);
}

#[tokio::test]
async fn a_removed_clients_token_is_refused_on_the_other_instance_at_the_next_request() {
    let (a, b) = spawn_pair(&[]).await;
    let admin = a.admin();
    let admin_token = a.access_token(&admin, None).await;
    let client = service(&a, &["tokens:introspect"]);
    let token = client_token(&a, &client, None).await;
    let before = introspect(&b, &token, &token).await;
    assert_eq!(before.status(), 200, "the client token works on the other instance");
    assert_eq!(before.json::<Value>().await.unwrap()["active"], true);

    let removed = a
        .client
        .delete(a.url(&format!("/api/admin/clients/{}", client.id)))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let after = introspect(&b, &token, &token).await;
    assert_bearer_error(after, 401, Some("Bearer error=\"invalid_token\"*"), "invalid_token").await;
    // Nor can it get another.
    assert_invalid_client(basic(&b, &client.id, &client.secret, &[("grant_type", "client_credentials")]).await).await;
}

#[tokio::test]
async fn failed_client_authentications_are_throttled_per_address_and_successes_are_not() {
    let app = spawn_app().await;
    let client = service(&app, &[]);
    let cc = [("grant_type", "client_credentials")];
    for attempt in 0..15 {
        assert_eq!(basic(&app, &client.id, &client.secret, &cc).await.status(), 200, "success {attempt}");
    }
    for attempt in 0..10 {
        let response = basic(&app, &client.id, "gcs_wrong", &cc).await;
        assert_eq!(response.status(), 401, "failure {attempt} is within the burst");
    }
    let throttled = basic(&app, &client.id, "gcs_wrong", &cc).await;
    assert!(throttled.headers().contains_key(header::RETRY_AFTER));
    assert_token_error(throttled, 429, "slow_down").await;
    assert_eq!(
        basic(&app, &client.id, &client.secret, &cc).await.status(),
        200,
        "a success is not throttled, even from a throttled address"
    );
    let audited = app.events().iter().filter(|event| event.kind == "client_auth_failed").count();
    assert_eq!(audited, 10, "429 answers are not audited");
}

#[tokio::test]
async fn with_the_password_grant_off_only_a_client_registered_for_it_may_use_it() {
    let app = spawn_app_with(&[("GATEHOUSE_PASSWORD_GRANT", "off")]).await;
    let alice = app.alice();
    let plain =
        app.post_token(&[("grant_type", "password"), ("username", "alice"), ("password", &alice.password)]).await;
    assert_token_error(plain, 400, "unsupported_grant_type").await;
    let unknown_client = app
        .post_token(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", &alice.password),
            ("client_id", "swagger-ui"),
        ])
        .await;
    assert_token_error(unknown_client, 400, "unsupported_grant_type").await;

    let script = register(
        &app,
        ClientDraft { name: "script".into(), grants: vec!["password".into()], ..ClientDraft::default() },
    );
    let allowed = basic(
        &app,
        &script.id,
        &script.secret,
        &[("grant_type", "password"), ("username", "alice"), ("password", &alice.password)],
    )
    .await;
    assert_eq!(allowed.status(), 200);

    let metadata: Value = app.get("/.well-known/oauth-authorization-server", None).await.json().await.unwrap();
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
}

#[tokio::test]
async fn a_request_naming_a_registered_client_must_authenticate_it_and_the_client_must_be_allowed_the_grant() {
    let app = spawn_app().await;
    let alice = app.alice();
    let password = [("grant_type", "password"), ("username", "alice"), ("password", alice.password.as_str())];
    let service = service(&app, &[]);
    let not_allowed = basic(&app, &service.id, &service.secret, &password).await;
    assert_token_error(not_allowed, 400, "unauthorized_client").await;
    let wrong = basic(&app, &service.id, "gcs_wrong", &password).await;
    assert_invalid_client(wrong).await;
    let no_secret = [password.as_slice(), &[("client_id", service.id.as_str())]].concat();
    assert_invalid_client(app.post_token(&no_secret).await).await;
    // A client_id that names no registered client is ignored, as FastAPI-style clients send any.
    let arbitrary = [password.as_slice(), &[("client_id", "my-fastapi-app"), ("client_secret", "")]].concat();
    assert_eq!(app.post_token(&arbitrary).await.status(), 200);
}

#[tokio::test]
async fn the_metadata_lists_every_grant_and_client_authentication_method() {
    let app = spawn_app().await;
    let metadata: Value = app.get("/.well-known/oauth-authorization-server", None).await.json().await.unwrap();
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "password",
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["none", "client_secret_basic", "client_secret_post"])
    );
}

#[tokio::test]
async fn a_client_with_tokens_introspect_may_introspect_and_its_own_token_introspects_as_the_client() {
    let app = spawn_app().await;
    let alice = app.alice();
    let user_token = app.access_token(&alice, None).await;
    let client = service(&app, &["tokens:introspect"]);
    let token = client_token(&app, &client, None).await;

    let response = introspect(&app, &token, &user_token).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["active"].clone(), answer["username"].clone()), (json!(true), json!("alice")));

    let own: Value = introspect(&app, &token, &token).await.json().await.unwrap();
    assert_eq!(own["active"], true);
    assert_eq!(own["client_id"], client.id.as_str());
    assert_eq!(own["sub"], client.id.as_str());
    assert_eq!(own["scope"], "tokens:introspect");
    assert_eq!(own["token_use"], "access_token");
    assert!(own.get("username").is_none(), "{own}");

    let without_scope = service(&app, &["items:read"]);
    let other = client_token(&app, &without_scope, None).await;
    assert_bearer_error(
        introspect(&app, &other, &token).await,
        403,
        Some("Bearer error=\"insufficient_scope\"*"),
        "insufficient_scope",
    )
    .await;
}

#[tokio::test]
async fn a_client_token_is_refused_with_403_at_endpoints_about_a_person() {
    let app = spawn_app().await;
    let client = service(&app, &["profile", "items:write", "admin:users"]);
    let token = client_token(&app, &client, None).await;
    let me = app.get("/api/users/me", Some(&token)).await;
    let body = assert_bearer_error(me, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
    assert!(body["error_description"].as_str().unwrap().contains("person"), "{body}");
    let items = app.post_json("/api/items", Some(&token), &json!({"title": "x"})).await;
    assert_bearer_error(items, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
    let admin = app.get("/api/admin/clients", Some(&token)).await;
    assert_bearer_error(admin, 403, Some(r#"Bearer error="insufficient_scope""#), "insufficient_scope").await;
    // Anonymous-capable endpoints see a client as having no items of its own.
    assert_eq!(app.get("/api/items", Some(&token)).await.status(), 200);
}

// --- the command line -------------------------------------------------------------------------

fn gatehouse(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEHOUSE_") {
            command.env_remove(&name);
        }
    }
    let output = command
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", &app.db.url)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn printed<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {stdout}"))
}

#[tokio::test]
async fn client_add_list_rotate_secret_and_remove_on_the_command_line() {
    let app = spawn_app().await;
    let (code, stdout, stderr) = gatehouse(&app, &["client", "add", "billing", "--scope", "tokens:introspect"]);
    assert_eq!(code, Some(0), "{stderr}");
    let client_id = printed(&stdout, "client_id").to_owned();
    let secret = printed(&stdout, "client_secret").to_owned();
    assert!(client_id.starts_with("gc_") && secret.starts_with("gcs_"), "{stdout}");
    let cc = [("grant_type", "client_credentials")];
    assert_eq!(basic(&app, &client_id, &secret, &cc).await.status(), 200);

    let (code, stdout, _) = gatehouse(
        &app,
        &["client", "add", "web app", "--public", "--first-party", "--redirect-uri", "https://app.example/cb"],
    );
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("client_secret="), "a public client has no secret: {stdout}");
    let public_id = printed(&stdout, "client_id").to_owned();

    let (code, listing, _) = gatehouse(&app, &["client", "list"]);
    assert_eq!(code, Some(0));
    let line = listing.lines().find(|line| line.starts_with(&client_id)).unwrap();
    assert!(
        line.contains("confidential") && line.contains("client_credentials") && line.ends_with("billing"),
        "{line}"
    );
    let line = listing.lines().find(|line| line.starts_with(&public_id)).unwrap();
    assert!(line.contains("public") && line.contains("authorization_code,refresh_token"), "{line}");
    assert!(!listing.contains(&secret), "never a secret");

    let (code, stdout, _) = gatehouse(&app, &["client", "rotate-secret", &client_id]);
    assert_eq!(code, Some(0));
    let new_secret = printed(&stdout, "client_secret");
    assert_eq!(basic(&app, &client_id, new_secret, &cc).await.status(), 200);
    assert_eq!(basic(&app, &client_id, &secret, &cc).await.status(), 200, "the old one for an hour");

    let (code, _, _) = gatehouse(&app, &["client", "remove", &client_id]);
    assert_eq!(code, Some(0));
    assert_invalid_client(basic(&app, &client_id, new_secret, &cc).await).await;
    let (_, listing, _) = gatehouse(&app, &["client", "list"]);
    assert!(!listing.contains(&client_id));

    let kinds = app.event_kinds();
    for kind in ["client_created", "client_secret_rotated", "client_removed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn client_commands_exit_2_on_bad_usage_and_1_with_one_line_on_failure() {
    let app = spawn_app().await;
    for args in [&["client", "add"][..], &["client", "rotate-secret"], &["client", "frobnicate"]] {
        let (code, stdout, _) = gatehouse(&app, args);
        assert_eq!((code, stdout.as_str()), (Some(2), ""), "{args:?}");
    }
    let failures: [&[&str]; 5] = [
        &["client", "add", "x", "--scope", "no:such"],
        &["client", "add", "x", "--public", "--grant", "client_credentials"],
        &["client", "add", "x", "--redirect-uri", "https://a.example/cb#frag"],
        &["client", "rotate-secret", "gc_nosuchclient0000000000"],
        &["client", "remove", "gc_nosuchclient0000000000"],
    ];
    for args in failures {
        let (code, _, stderr) = gatehouse(&app, args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    let (_, listing, _) = gatehouse(&app, &["client", "list"]);
    assert_eq!(listing.lines().count(), 1, "nothing was registered: {listing}");
}

// --- the admin API ----------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_api_registers_lists_shows_rotates_and_removes_clients() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, None).await;
    let created = app
        .post_json(
            "/api/admin/clients",
            Some(&token),
            &json!({"name": "billing", "scopes": ["tokens:introspect"], "redirect_uris": ["https://billing.example/cb"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(created["kind"], "confidential");
    assert_eq!(created["grant_types"], json!(["authorization_code", "refresh_token", "client_credentials"]));
    assert_eq!(created["id_token_alg"], "RS256");

    let list: Value = app.get("/api/admin/clients", Some(&token)).await.json().await.unwrap();
    assert_eq!(list["clients"].as_array().unwrap().len(), 1);
    assert!(list["clients"][0].get("client_secret").is_none());
    assert_eq!(app.get("/api/admin/clients/gc_nosuchclient0000000000", Some(&token)).await.status(), 404);
    let shown = app.get(&format!("/api/admin/clients/{client_id}"), Some(&token)).await;
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.json::<Value>().await.unwrap()["scopes"], json!(["tokens:introspect"]));

    let rotated = app.post_empty(&format!("/api/admin/clients/{client_id}/rotate-secret"), Some(&token)).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(rotated.headers()[header::CACHE_CONTROL], "no-store");
    let rotated: Value = rotated.json().await.unwrap();
    assert_ne!(rotated["client_secret"], secret.as_str());
    assert!(rotated["previous_secret_expires_at"].is_string());

    let public = app.post_json("/api/admin/clients", Some(&token), &json!({"name": "spa", "public": true})).await;
    assert_eq!(public.status(), 201);
    let public: Value = public.json().await.unwrap();
    assert!(public.get("client_secret").is_none(), "a public client has no secret: {public}");
    let public_id = public["client_id"].as_str().unwrap();
    let no_secret = app.post_empty(&format!("/api/admin/clients/{public_id}/rotate-secret"), Some(&token)).await;
    assert_bearer_error(no_secret, 400, None, "invalid_request").await;

    let delete = |path: String| app.client.delete(app.url(&path)).bearer_auth(&token).send();
    assert_eq!(delete(format!("/api/admin/clients/{client_id}")).await.unwrap().status(), 204);
    assert_eq!(delete(format!("/api/admin/clients/{client_id}")).await.unwrap().status(), 404);
    assert_eq!(app.get(&format!("/api/admin/clients/{client_id}"), Some(&token)).await.status(), 404);

    let actions: Vec<_> = app.events().into_iter().filter(|event| event.kind.starts_with("client_")).collect();
    assert_eq!(actions.len(), 4, "created twice, rotated, removed: {actions:?}");
    assert!(actions.iter().all(|event| event.channel == "api"));
}

#[tokio::test]
async fn the_admin_api_refuses_bad_registrations_with_400_and_writes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin();
    let token = app.access_token(&admin, None).await;
    let alice = app.alice();
    let user_token = app.access_token(&alice, None).await;
    for body in [
        json!({"name": ""}),
        json!({"name": "x", "scopes": ["no:such"]}),
        json!({"name": "x", "public": true, "grant_types": ["client_credentials"]}),
        json!({"name": "x", "redirect_uris": ["/relative"]}),
        json!({"name": "x", "grant_types": ["implicit"]}),
        json!({"name": "x", "id_token_alg": "none"}),
        json!({"name": "x", "unknown": 1}),
    ] {
        let response = app.post_json("/api/admin/clients", Some(&token), &body).await;
        assert_bearer_error(response, 400, None, "invalid_request").await;
    }
    let forbidden = app.post_json("/api/admin/clients", Some(&user_token), &json!({"name": "x"})).await;
    assert_eq!(forbidden.status(), 403);
    let list: Value = app.get("/api/admin/clients", Some(&token)).await.json().await.unwrap();
    assert_eq!(list["clients"], json!([]));
}

// --- the admin page ---------------------------------------------------------------------------

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in:\n{html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn readonly_value(html: &str, id: &str) -> String {
    let marker = format!(r#"id="{id}" type="text" readonly value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {id} in:\n{html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn signed_in_admin(app: &TestApp) -> (Client, String) {
    let admin = app.admin();
    let client = Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let fields = [
        ("csrf_token", hidden(&form, "csrf_token")),
        ("username", admin.username.clone()),
        ("password", admin.password.clone()),
    ];
    assert_eq!(client.post(app.url("/login")).form(&fields).send().await.unwrap().status(), 303);
    let page = client.get(app.url("/admin/clients")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&page, "csrf_token");
    (client, csrf)
}

#[tokio::test]
async fn the_admin_page_registers_a_client_shows_its_secret_once_rotates_and_removes_it() {
    let app = spawn_app().await;
    let (browser, csrf) = signed_in_admin(&app).await;
    let created = browser
        .post(app.url("/admin/clients"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "reports"),
            ("kind", "confidential"),
            ("scope.tokens:introspect", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()[header::CACHE_CONTROL], "no-store");
    let html = created.text().await.unwrap();
    let client_id = readonly_value(&html, "shown-client-id");
    let secret = readonly_value(&html, "shown-client-secret");
    let cc = [("grant_type", "client_credentials")];
    assert_eq!(basic(&app, &client_id, &secret, &cc).await.status(), 200);

    let listed = browser.get(app.url("/admin/clients")).send().await.unwrap().text().await.unwrap();
    assert!(listed.contains(&client_id) && !listed.contains(&secret), "the secret is shown once");

    let refused = browser
        .post(app.url("/admin/clients"))
        .form(&[("csrf_token", csrf.as_str()), ("name", "bad"), ("redirect_uris", "https://a.example/#x")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("fragment"));

    let no_csrf =
        browser.post(app.url(&format!("/admin/clients/{client_id}/remove"))).form(&[("x", "y")]).send().await.unwrap();
    assert_eq!(no_csrf.status(), 403);

    let rotated = browser
        .post(app.url(&format!("/admin/clients/{client_id}/rotate-secret")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let new_secret = readonly_value(&rotated.text().await.unwrap(), "shown-client-secret");
    assert_eq!(basic(&app, &client_id, &new_secret, &cc).await.status(), 200);

    let removed = browser
        .post(app.url(&format!("/admin/clients/{client_id}/remove")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 303);
    assert_eq!(removed.headers()[header::LOCATION], "/admin/clients?done=removed");
    assert_invalid_client(basic(&app, &client_id, &new_secret, &cc).await).await;
    let web_events =
        app.events().into_iter().filter(|event| event.kind.starts_with("client_") && event.channel == "web");
    assert_eq!(web_events.count(), 3);
}

#[tokio::test]
async fn the_admin_page_is_for_admins_only() {
    let app = spawn_app().await;
    let anonymous = app.client.get(app.url("/admin/clients")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()[header::LOCATION], "/login?next=%2Fadmin%2Fclients");
}

#[tokio::test]
async fn two_rotations_at_once_both_succeed_one_after_the_other_and_leave_one_current_secret() {
    let app = spawn_app().await;
    let client = service(&app, &[]);
    // Two connections rotate at the same moment; the client row's lock orders them.
    let rotations: Vec<_> = (0..2)
        .map(|_| {
            let (mut conn, id) = (app.db.conn(), client.id.clone());
            std::thread::spawn(move || clients::rotate_secret(&mut conn, &Actor::command_line(), &id, Utc::now()))
        })
        .collect();
    let secrets: Vec<String> = rotations
        .into_iter()
        .map(|rotation| rotation.join().unwrap().unwrap().secret.expose_secret().to_owned())
        .collect();

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let current: Count = diesel::sql_query("SELECT count(*) AS n FROM oauth_client_secrets WHERE expires_at IS NULL")
        .get_result(&mut app.db.conn())
        .unwrap();
    assert_eq!(current.n, 1);
    // The later rotation's secret is current, the earlier one's has its hour; the original's overlap ended.
    let cc = [("grant_type", "client_credentials")];
    let working: Vec<u16> =
        statuses_with_secrets(&app, &client.id, &[secrets[0].as_str(), secrets[1].as_str()], &cc).await;
    assert_eq!(working, [200, 200]);
    assert_invalid_client(basic(&app, &client.id, &client.secret, &cc).await).await;
}

async fn statuses_with_secrets(app: &TestApp, id: &str, secrets: &[&str], fields: &[(&str, &str)]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for secret in secrets {
        statuses.push(basic(app, id, secret, fields).await.status().as_u16());
    }
    statuses
}
