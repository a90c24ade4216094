//! examples/resource_server.rs, a service of someone else's that trusts gatehouse access tokens
//! through the published keys alone, run in-process against live gatehouse instances: scopes per
//! route, RFC 6750 answers, forged and foreign tokens, a key rotation, and how often it fetches the
//! keys (counted by a proxy in front of gatehouse, which can also fail or shorten `max-age`).

#[allow(dead_code)] // its `main`, and what only `main` uses
#[path = "../../examples/resource_server.rs"]
mod example;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Response, header};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, spawn_app, spawn_pair};
use crate::keys::{b64, execute, jwt_part, private_key_of, reload};

/// The example's minimum refetch interval in these tests (five seconds by default).
const REFETCH: Duration = Duration::from_secs(1);

/// The example, serving on a loopback port; stopped when dropped.
struct ResourceServer {
    address: String,
    client: reqwest::Client,
    server: actix_web::dev::ServerHandle,
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        let handle = self.server.clone();
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

/// Starts the example's own server code with `settings` on port 0.
fn start(settings: &example::Settings) -> ResourceServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = example::run(listener, settings).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    ResourceServer { address, client: reqwest::Client::new(), server: handle }
}

/// Settings for tokens of `issuer`, with a short refetch interval; the JWKS address from the metadata
/// unless `jwks_uri` is given.
fn settings(issuer: &str, jwks_uri: Option<String>) -> example::Settings {
    let mut settings = example::Settings::for_issuer(issuer).unwrap();
    settings.jwks_uri = jwks_uri;
    settings.min_refetch_interval = REFETCH;
    settings
}

impl ResourceServer {
    async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// Asserts status, the exact `WWW-Authenticate` (or its absence) and the exact JSON body.
async fn assert_answer(response: Response, status: u16, challenge: Option<&str>, body: Value) {
    assert_eq!(response.status(), status);
    let actual = response.headers().get(header::WWW_AUTHENTICATE).map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(actual.as_deref(), challenge);
    assert_eq!(response.json::<Value>().await.unwrap(), body);
}

/// Asserts RFC 6750's answer to an invalid token, with `description` in the header and the body.
async fn assert_invalid_token(response: Response, description: &str) {
    let challenge = format!(r#"Bearer error="invalid_token", error_description="{description}""#);
    let body = json!({"error": "invalid_token", "error_description": description});
    assert_answer(response, 401, Some(&challenge), body).await;
}

async fn assert_insufficient_scope(response: Response, scope: &str) {
    let challenge = format!(r#"Bearer error="insufficient_scope", scope="{scope}""#);
    let body = json!({"error": "insufficient_scope", "error_description": format!("The access token lacks the scope {scope}")});
    assert_answer(response, 403, Some(&challenge), body).await;
}

fn kid_of(token: &str) -> String {
    jwt_part(token, 0)["kid"].as_str().unwrap().to_owned()
}

/// A load balancer in front of gatehouse instances (round robin, as deploy/nginx.conf is) that
/// counts the JWKS requests it sees, and can be told to answer 503 or to shorten `max-age`.
struct KeyProxy {
    address: String,
    control: Arc<ProxyControl>,
    server: actix_web::dev::ServerHandle,
}

struct ProxyControl {
    upstreams: Vec<String>,
    next: AtomicUsize,
    jwks_requests: Mutex<Vec<Instant>>,
    down: AtomicBool,
    max_age: Mutex<Option<u64>>,
}

impl Drop for KeyProxy {
    fn drop(&mut self) {
        let handle = self.server.clone();
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

impl KeyProxy {
    fn start(listener: TcpListener, upstreams: Vec<String>) -> Self {
        let address = format!("http://{}", listener.local_addr().unwrap());
        let control = Arc::new(ProxyControl {
            upstreams,
            next: AtomicUsize::new(0),
            jwks_requests: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            max_age: Mutex::new(None),
        });
        let shared = web::Data::from(Arc::clone(&control));
        let server = HttpServer::new(move || App::new().app_data(shared.clone()).default_service(web::to(forward)))
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { address, control, server: handle }
    }

    fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.address)
    }

    /// How many times the JWKS was asked for (answered or not).
    fn jwks_requests(&self) -> usize {
        self.control.jwks_requests.lock().unwrap().len()
    }

    fn set_down(&self, down: bool) {
        self.control.down.store(down, Ordering::SeqCst);
    }

    /// From now on, answers carry `Cache-Control: public, max-age={seconds}` instead of gatehouse's.
    fn set_max_age(&self, seconds: u64) {
        *self.control.max_age.lock().unwrap() = Some(seconds);
    }
}

async fn forward(req: HttpRequest, control: web::Data<ProxyControl>) -> HttpResponse {
    if req.path() == "/.well-known/jwks.json" {
        control.jwks_requests.lock().unwrap().push(Instant::now());
    }
    if control.down.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let upstream = &control.upstreams[control.next.fetch_add(1, Ordering::SeqCst) % control.upstreams.len()];
    // A client per request: the proxy's worker runtime must not keep another runtime's connections.
    let response = reqwest::get(format!("{upstream}{}", req.uri())).await.unwrap();
    let mut answer = HttpResponse::build(actix_web::http::StatusCode::from_u16(response.status().as_u16()).unwrap());
    if let Some(content_type) = response.headers().get(header::CONTENT_TYPE) {
        answer.insert_header(("content-type", content_type.to_str().unwrap()));
    }
    let max_age = *control.max_age.lock().unwrap();
    match (max_age, response.headers().get(header::CACHE_CONTROL)) {
        (Some(seconds), _) => {
            answer.insert_header(("cache-control", format!("public, max-age={seconds}")));
        }
        (None, Some(cache_control)) => {
            answer.insert_header(("cache-control", cache_control.to_str().unwrap()));
        }
        (None, None) => {}
    }
    answer.body(response.bytes().await.unwrap())
}

/// `gatehouse keys rotate`, as an operator runs it, then every instance reloads its keys.
fn rotate(apps: &[&TestApp]) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", &apps[0].db.url)
        .env("GATEHOUSE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    reload(apps);
}

/// A token signed with `key` (ES256), its header and claims exactly as given.
fn sign(key: &EncodingKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::ES256).unwrap();
    format!("{input}.{signature}")
}

/// `value` with the members of `changes` set (`null` removes one).
fn with(value: &Value, changes: Value) -> Value {
    let mut object = value.as_object().unwrap().clone();
    for (name, change) in changes.as_object().unwrap() {
        if change.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), change.clone());
        }
    }
    Value::Object(object)
}

#[tokio::test]
async fn a_gatehouse_token_opens_exactly_the_routes_its_scopes_allow() {
    let gatehouse = spawn_app().await;
    let alice = gatehouse.alice();
    // The JWKS address comes from gatehouse's metadata (RFC 8414).
    let service = start(&settings(&gatehouse.address, None));
    let reader = gatehouse.access_token(&alice, Some("profile items:read")).await;
    let writer = gatehouse.access_token(&alice, Some("items:write")).await;

    let response = service.get("/whoami", Some(&reader)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"sub": alice.id.to_string(), "username": "alice", "scopes": ["items:read", "profile"]})
    );
    let response = service.get("/orders", Some(&reader)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"orders": []}));

    assert_insufficient_scope(service.post("/orders", Some(&reader), r#"{"item": "tea"}"#).await, "items:write").await;
    let response = service.post("/orders", Some(&writer), r#"{"item": "tea"}"#).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"id": 1, "item": "tea"}));
    assert_insufficient_scope(service.get("/orders", Some(&writer)).await, "items:read").await;
    assert_insufficient_scope(service.get("/whoami", Some(&writer)).await, "profile").await;
    let response = service.get("/orders", Some(&reader)).await;
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"orders": [{"id": 1, "item": "tea"}]}));

    // No token, or another scheme: a bare challenge (RFC 6750 §3.1), checked before the body is read.
    let anonymous = json!({"error": "unauthorized", "error_description": "This request needs an access token"});
    assert_answer(service.get("/whoami", None).await, 401, Some("Bearer"), anonymous.clone()).await;
    assert_answer(service.post("/orders", None, "not json").await, 401, Some("Bearer"), anonymous.clone()).await;
    let basic = service.client.get(format!("{}/whoami", service.address)).basic_auth("alice", Some("pw"));
    assert_answer(basic.send().await.unwrap(), 401, Some("Bearer"), anonymous).await;
    for malformed in ["Bearer", "Bearer two tokens", "Bearer a\"b"] {
        let request = service.client.get(format!("{}/whoami", service.address)).header("authorization", malformed);
        assert_invalid_token(request.send().await.unwrap(), "The access token is malformed").await;
    }

    // A caller with the scope and a broken body, and an address that does not exist.
    let bad_body =
        json!({"error": "invalid_request", "error_description": r#"The body must be JSON like {"item": "tea"}"#});
    assert_answer(service.post("/orders", Some(&writer), "not json").await, 400, None, bad_body).await;
    let blank = json!({"error": "invalid_request", "error_description": "item must have 1 to 100 characters"});
    assert_answer(service.post("/orders", Some(&writer), r#"{"item": " "}"#).await, 400, None, blank).await;
    let missing = json!({"error": "not_found", "error_description": "No such resource"});
    assert_answer(service.get("/nowhere", Some(&reader)).await, 404, None, missing).await;
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused_with_401_invalid_token() {
    let gatehouse = spawn_app().await;
    let alice = gatehouse.alice();
    let token = gatehouse.access_token(&alice, Some("profile")).await;
    // The JWKS address given directly, without the metadata.
    let service = start(&settings(&gatehouse.address, Some(gatehouse.url("/.well-known/jwks.json"))));
    let (header, claims) = (jwt_part(&token, 0), jwt_part(&token, 1));
    let kid = kid_of(&token);
    let real_key = EncodingKey::from_ec_der(&private_key_of(&gatehouse, &kid));
    let now = Utc::now().timestamp();

    // The controls: the real token, and one the test re-signs with gatehouse's own key, are accepted;
    // so is one that expired two seconds ago (the leeway is five).
    assert_eq!(service.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(service.get("/whoami", Some(&sign(&real_key, &header, &claims))).await.status(), 200);
    let just_expired = sign(&real_key, &header, &with(&claims, json!({"exp": now - 2})));
    assert_eq!(service.get("/whoami", Some(&just_expired)).await.status(), 200);

    const SIGNATURE: &str = "The access token signature is invalid";
    // Another ES256 key claiming gatehouse's kid.
    let other = gatehouse::auth::keys::generate(gatehouse::config::SigningAlgorithm::Es256).unwrap();
    let other_key = EncodingKey::from_ec_der(&other.private_der);
    assert_invalid_token(service.get("/whoami", Some(&sign(&other_key, &header, &claims))).await, SIGNATURE).await;
    // HS256 "signed" with the published public key as the secret.
    let set: Value = gatehouse.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    let public = set["keys"][0].to_string();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.typ = Some("at+jwt".to_owned());
    hs_header.kid = Some(kid.clone());
    let hs256 =
        jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(public.as_bytes()).unwrap()).unwrap();
    assert_invalid_token(service.get("/whoami", Some(&hs256)).await, SIGNATURE).await;
    // alg none, and an algorithm other than the one the key's JWK names.
    let none = format!(
        "{}.{}.",
        b64(with(&header, json!({"alg": "none"})).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    assert_invalid_token(service.get("/whoami", Some(&none)).await, SIGNATURE).await;
    let eddsa = sign(&real_key, &with(&header, json!({"alg": "EdDSA"})), &claims);
    assert_invalid_token(service.get("/whoami", Some(&eddsa)).await, SIGNATURE).await;

    // Signed with gatehouse's own key, but not what RFC 9068 asks of an access token.
    let cases = [
        (
            with(&header, json!({"typ": "JWT"})),
            claims.clone(),
            "The access token is not an RFC 9068 access token (typ at+jwt)",
        ),
        (
            with(&header, json!({"typ": null})),
            claims.clone(),
            "The access token is not an RFC 9068 access token (typ at+jwt)",
        ),
        (
            with(&header, json!({"crit": ["exp"]})),
            claims.clone(),
            "The access token demands header extensions (crit) this service does not support",
        ),
        (
            with(&header, json!({"kid": null})),
            claims.clone(),
            "The access token is signed with a key this service does not know",
        ),
        (
            header.clone(),
            with(&claims, json!({"iss": "http://another-issuer.test"})),
            "The access token was not issued by the authorization server this service trusts",
        ),
        (
            header.clone(),
            with(&claims, json!({"aud": "http://another-service.test"})),
            "The access token is not meant for this service",
        ),
        (header.clone(), with(&claims, json!({"exp": now - 600})), "The access token expired"),
        (header.clone(), with(&claims, json!({"nbf": now + 60})), "The access token is not valid yet"),
        (header.clone(), with(&claims, json!({"sub": null})), "The access token is malformed"),
    ];
    for (header, claims, description) in cases {
        let forged = sign(&real_key, &header, &claims);
        assert_invalid_token(service.get("/whoami", Some(&forged)).await, description).await;
    }
    for garbage in ["not-a-jwt", "a.b.c", "bm90IGpzb24.e30.e30", "e30.e30.e30.e30"] {
        assert_invalid_token(service.get("/whoami", Some(garbage)).await, "The access token is malformed").await;
    }

    // A genuine token of another gatehouse: its key is not among this issuer's.
    let foreign = spawn_app().await;
    let stranger = foreign.alice();
    let foreign_token = foreign.access_token(&stranger, Some("profile")).await;
    assert_invalid_token(
        service.get("/whoami", Some(&foreign_token)).await,
        "The access token is signed with a key this service does not know",
    )
    .await;
}

#[tokio::test]
async fn across_a_key_rotation_old_tokens_work_until_their_key_leaves_the_jwks_and_new_ones_work_at_once() {
    // Two gatehouse instances behind one address (the proxy), which is their issuer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (a, b) = spawn_pair(&[("GATEHOUSE_ISSUER", issuer.as_str())]).await;
    let proxy = KeyProxy::start(listener, vec![a.address.clone(), b.address.clone()]);
    let service = start(&settings(&issuer, None));
    let alice = a.alice();

    let old = a.access_token(&alice, Some("items:read")).await;
    assert_eq!(service.get("/orders", Some(&old)).await.status(), 200);
    assert_eq!(proxy.jwks_requests(), 1);

    // A new key is published; it does not sign yet, and the example's copy is fresh (max-age=300).
    rotate(&[&a, &b]);
    assert_eq!(service.get("/orders", Some(&old)).await.status(), 200);
    assert_eq!(proxy.jwks_requests(), 1, "a fresh copy is not fetched again");

    // The publication delay passes: the new key signs. The example has never seen it, and learns it
    // from the unknown kid without a restart (once the refetch interval since its last fetch is over).
    execute(&a, "UPDATE signing_keys SET activates_at = now() WHERE activates_at > now()");
    reload(&[&a, &b]);
    tokio::time::sleep(REFETCH).await;
    // From here on the proxy shortens max-age, so that the test need not wait five minutes below.
    proxy.set_max_age(1);
    let new = b.access_token(&alice, Some("items:read")).await;
    assert_ne!(kid_of(&new), kid_of(&old));
    assert_eq!(service.get("/orders", Some(&new)).await.status(), 200);
    assert_eq!(proxy.jwks_requests(), 2, "the unknown kid was fetched");
    // The retired key stays published while its tokens may live, so they keep working.
    assert_eq!(service.get("/orders", Some(&old)).await.status(), 200);

    // Every token of the old key has expired (gatehouse's clock moved on): the key leaves the set,
    // and the example drops it at its next fetch, once its copy is stale.
    execute(&a, "UPDATE signing_keys SET activates_at = activates_at - interval '25 minutes'");
    reload(&[&a, &b]);
    tokio::time::sleep(REFETCH + Duration::from_millis(100)).await;
    let requests = proxy.jwks_requests();
    assert_invalid_token(
        service.get("/orders", Some(&old)).await,
        "The access token is signed with a key this service does not know",
    )
    .await;
    assert_eq!(proxy.jwks_requests(), requests + 1);
    assert_eq!(service.get("/orders", Some(&new)).await.status(), 200);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_refetch_interval() {
    let gatehouse = spawn_app().await;
    let alice = gatehouse.alice();
    let proxy = KeyProxy::start(TcpListener::bind("127.0.0.1:0").unwrap(), vec![gatehouse.address.clone()]);
    let service = start(&settings(&gatehouse.address, Some(proxy.jwks_uri())));
    let token = gatehouse.access_token(&alice, Some("profile")).await;
    let payload = token.split('.').nth(1).unwrap().to_owned();

    let started = Instant::now();
    assert_eq!(service.get("/whoami", Some(&token)).await.status(), 200);
    // Bursts of tokens, each with a kid never published, for a while longer than two intervals.
    let mut sent = 0;
    while started.elapsed() < REFETCH * 5 / 2 || sent < 200 {
        let burst = (0..20).map(|_| {
            let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": uuid::Uuid::new_v4().to_string()});
            let forged = format!("{}.{payload}.{}", b64(header.to_string().as_bytes()), b64(&[7; 64]));
            let service = &service;
            async move { service.get("/whoami", Some(&forged)).await }
        });
        for response in futures_util::future::join_all(burst).await {
            assert_invalid_token(response, "The access token is signed with a key this service does not know").await;
        }
        sent += 20;
    }
    let elapsed = started.elapsed();

    let fetches = proxy.jwks_requests();
    let allowed = 1 + (elapsed.as_secs_f64() / REFETCH.as_secs_f64()).floor() as usize;
    assert!(fetches <= allowed, "{fetches} fetches for {sent} unknown kids in {elapsed:?}: at most {allowed}");
    assert!(fetches >= 2, "after the interval an unknown kid may fetch again ({fetches} fetches)");
    // The flood left the real key in place.
    assert_eq!(service.get("/whoami", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn when_the_jwks_cannot_be_fetched_the_keys_fetched_before_keep_serving() {
    let gatehouse = spawn_app().await;
    let alice = gatehouse.alice();
    let proxy = KeyProxy::start(TcpListener::bind("127.0.0.1:0").unwrap(), vec![gatehouse.address.clone()]);
    proxy.set_max_age(1);
    let service = start(&settings(&gatehouse.address, Some(proxy.jwks_uri())));
    let token = gatehouse.access_token(&alice, Some("profile")).await;

    // Nothing fetched yet and the JWKS unreachable: the token cannot be judged, which is no fault of its own.
    proxy.set_down(true);
    let unavailable = json!({
        "error": "temporarily_unavailable",
        "error_description": "The keys that verify access tokens cannot be fetched now; try again shortly",
    });
    assert_answer(service.get("/whoami", Some(&token)).await, 503, None, unavailable).await;
    assert_eq!(proxy.jwks_requests(), 1);

    proxy.set_down(false);
    tokio::time::sleep(REFETCH).await;
    assert_eq!(service.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(proxy.jwks_requests(), 2);

    // The copy goes stale (max-age=1) while the JWKS is down: the refetch fails, the copy keeps serving.
    proxy.set_down(true);
    tokio::time::sleep(REFETCH + Duration::from_millis(100)).await;
    assert_eq!(service.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(proxy.jwks_requests(), 3, "it did try");
    // With a set at hand, a kid that is not in it is refused, not excused.
    let unknown = format!(
        "{}.{}.{}",
        b64(json!({"alg": "ES256", "typ": "at+jwt", "kid": "never-published"}).to_string().as_bytes()),
        token.split('.').nth(1).unwrap(),
        b64(&[7; 64])
    );
    assert_invalid_token(
        service.get("/whoami", Some(&unknown)).await,
        "The access token is signed with a key this service does not know",
    )
    .await;
}

/// RFC 9470: a route that wants two factors refuses a password-only token with
/// `insufficient_user_authentication`, and takes one from a sign-in with an authenticator app.
#[tokio::test]
async fn a_route_that_demands_two_factors_refuses_a_password_only_token() {
    use gatehouse::auth::second_factor::totp;
    let gatehouse = spawn_app().await;
    let alice = gatehouse.alice();
    let service = start(&settings(&gatehouse.address, None));
    let password_only = gatehouse.access_token(&alice, Some("items:write")).await;
    let mut request = service.client.delete(format!("{}/orders", service.address)).bearer_auth(&password_only);
    let description = "This needs a sign-in with a second factor";
    let challenge = format!(r#"Bearer error="insufficient_user_authentication", error_description="{description}""#);
    let body = json!({"error": "insufficient_user_authentication", "error_description": description});
    assert_answer(request.send().await.unwrap(), 401, Some(&challenge), body).await;

    let (secret, _) = crate::second_factor::seed_second_factor(&gatehouse, &alice);
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let code = totp::code_at(&secret, now).unwrap();
    let fields =
        [("username", "alice"), ("password", alice.password.as_str()), ("otp", &code), ("scope", "items:write")];
    let two_factor: Value = gatehouse.post_token(&fields).await.json().await.unwrap();
    request = service.client.delete(format!("{}/orders", service.address));
    let response = request.bearer_auth(two_factor["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(response.status(), 204);
}
