//! Sign in with gatehouse (issue #20) over real HTTP: a real OpenID Connect relying party (the
//! `openidconnect` crate) doing discovery, the code flow with PKCE and nonce, ID-token verification,
//! userinfo and refresh; the authorization endpoint's errors; codes used twice (also raced on two
//! instances); consent and "Connected apps"; the device grant; RP-initiated logout.
//! The browser part of the pages is in `browser.rs`; here a cookie-keeping HTTP client plays it.

use base64::Engine as _;
use chrono::Utc;
use diesel::RunQueryDsl as _;
use gatehouse::accounts::Actor;
use gatehouse::accounts::clients;
use gatehouse::domain::ClientDraft;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::redirect::Policy;
use reqwest::{Client, Response, header};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::Digest as _;

use crate::helpers::{
    TestApp, TestUser, assert_bearer_error, assert_token_error, spawn_app, spawn_app_with, spawn_pair,
};

pub(crate) const REDIRECT: &str = "https://rp.example/callback";

/// A registered client.
pub(crate) struct RegisteredClient {
    pub id: String,
    pub secret: Option<String>,
}

/// Registers a client through the service layer (as `gatehouse client add` does).
pub(crate) fn register(app: &TestApp, draft: ClientDraft) -> RegisteredClient {
    let registered = clients::register(&mut app.db.conn(), &Actor::command_line(), draft, Utc::now()).unwrap();
    // What the server's next periodic reload does within a minute: publish the client's ID-token key.
    app.state.grants.keys.reload(&mut app.db.conn(), Utc::now()).unwrap();
    RegisteredClient {
        id: registered.client.client_id,
        secret: registered.secret.map(|secret| secret.expose_secret().to_owned()),
    }
}

/// A confidential web app asking for the OpenID scopes, redirecting to [`REDIRECT`].
pub(crate) fn web_app(app: &TestApp) -> RegisteredClient {
    register(
        app,
        ClientDraft {
            name: "Recipes".into(),
            scopes: vec!["openid".into(), "profile".into(), "email".into(), "items:read".into()],
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec!["https://rp.example/bye".into()],
            ..ClientDraft::default()
        },
    )
}

/// A public client (no secret), ID tokens signed with `alg`.
pub(crate) fn public_app(app: &TestApp, alg: &str, first_party: bool) -> RegisteredClient {
    register(
        app,
        ClientDraft {
            name: "Phone app".into(),
            public: true,
            first_party,
            scopes: vec!["openid".into(), "profile".into()],
            redirect_uris: vec![REDIRECT.into()],
            id_token_alg: Some(alg.into()),
            ..ClientDraft::default()
        },
    )
}

/// A browser: keeps cookies, follows nothing by itself.
pub(crate) fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(Policy::none()).build().unwrap()
}

/// openidconnect's HTTP client: its requests through reqwest, never following a redirect.
pub(crate) async fn rp_http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let client = Client::builder().redirect(Policy::none()).build()?;
    let (parts, body) = request.into_parts();
    let response = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let mut answer = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    Ok(answer.body(response.bytes().await?.to_vec()).unwrap())
}

/// A PKCE pair: (verifier, S256 challenge).
pub(crate) fn pkce() -> (String, String) {
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (index, byte) in uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).enumerate() {
        bytes[index] = *byte;
    }
    bytes
}

/// The authorization URL for `client_id` with these extra parameters (PKCE included unless overridden).
pub(crate) fn authorize_url(app: &TestApp, client_id: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT);
    query.append_pair("code_challenge", challenge).append_pair("code_challenge_method", "S256");
    query.append_pair("state", "st-1").append_pair("scope", "openid profile");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    app.url(&format!("/authorize?{}", query.finish()))
}

pub(crate) fn location(response: &Response) -> String {
    response.headers().get(header::LOCATION).expect("a Location header").to_str().unwrap().to_owned()
}

/// The query parameters of a redirect to the client.
pub(crate) fn params(location: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

/// What askama escapes in attribute values, undone.
fn unescape(text: &str) -> String {
    text.replace("&#39;", "'").replace("&#34;", "\"").replace("&#60;", "<").replace("&#62;", ">").replace("&#38;", "&")
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let value = crate::web::hidden_value(html, name).unwrap_or_else(|| panic!("no {name} field in:\n{html}"));
    unescape(&value)
}

/// Signs `user` in at the login page `login_location` points to, and follows the redirect back.
pub(crate) async fn sign_in_at(app: &TestApp, browser: &Client, login_location: &str, user: &TestUser) -> Response {
    let signed_in = submit_login(app, browser, login_location, user).await;
    assert_eq!(signed_in.status(), 303, "signed in");
    let back = location(&signed_in);
    assert!(back.starts_with("/authorize?"), "back to the authorization request: {back}");
    browser.get(app.url(&back)).send().await.unwrap()
}

/// Opens the login page at `login_location` and submits it with `user`'s password: the answer.
async fn submit_login(app: &TestApp, browser: &Client, login_location: &str, user: &TestUser) -> Response {
    let page = browser.get(app.url(login_location)).send().await.unwrap();
    assert_eq!(page.status(), 200, "the login page");
    let html = page.text().await.unwrap();
    let fields = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("username", user.username.clone()),
        ("password", user.password.clone()),
        ("next", hidden(&html, "next")),
    ];
    browser.post(app.url("/login")).form(&fields).send().await.unwrap()
}

/// Answers the consent page `page` (Allow or Deny); returns the redirect to the client.
pub(crate) async fn answer_consent(app: &TestApp, browser: &Client, page: Response, allow: bool) -> Response {
    let status = page.status();
    let html = page.text().await.unwrap();
    assert_eq!(status, 200, "the consent page: {html}");
    assert!(html.contains(r#"id="consent""#), "{html}");
    let decision = if allow { "allow" } else { "deny" };
    let fields = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("request", hidden(&html, "request")),
        ("decision", decision.to_owned()),
    ];
    browser.post(app.url("/authorize")).form(&fields).send().await.unwrap()
}

/// The whole browser part: signs in if needed, allows if asked; the code.
pub(crate) async fn code_for(app: &TestApp, browser: &Client, url: &str, user: &TestUser) -> String {
    let mut response = browser.get(url).send().await.unwrap();
    if response.status() == 303 {
        response = sign_in_at(app, browser, &location(&response), user).await;
    }
    if response.status() == 200 {
        response = answer_consent(app, browser, response, true).await;
    }
    assert_eq!(response.status(), 302);
    let back = params(&location(&response));
    assert_eq!(back.get("state").map(String::as_str), Some("st-1"));
    back.get("code").cloned().expect("a code")
}

/// A public app of a device (a TV, a CLI): the device grant and refresh tokens, allowed `scopes`.
fn device_app(app: &TestApp, scopes: &[&str]) -> RegisteredClient {
    register(
        app,
        ClientDraft {
            name: "TV".into(),
            public: true,
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            grants: vec!["urn:ietf:params:oauth:grant-type:device_code".into(), "refresh_token".into()],
            ..ClientDraft::default()
        },
    )
}

/// The "Disconnect" button of Connected apps on `/account`, for `client_id`.
fn disconnect_request(app: &TestApp, browser: &Client, client_id: &str, csrf: &str) -> reqwest::RequestBuilder {
    browser.post(app.url(&format!("/account/apps/{client_id}/disconnect"))).form(&[("csrf_token", csrf)])
}

/// A device's request (RFC 8628 §3.1) for `client_id`: the answer, which must be a `200`.
pub(crate) async fn start_device(app: &TestApp, client_id: &str, scope: Option<&str>) -> Value {
    let mut form = vec![("client_id", client_id)];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let response = app.client.post(app.url("/device_authorization")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn exchange(app: &TestApp, client: &RegisteredClient, code: &str, verifier: &str) -> Response {
    let mut request = app.client.post(app.url("/token"));
    if let Some(secret) = &client.secret {
        request = request.basic_auth(&client.id, Some(secret));
    }
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
        ("client_id", client.id.as_str()),
    ];
    request.form(&fields).send().await.unwrap()
}

fn claims_of(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header_of(jwt: &str) -> Value {
    let part = jwt.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn the_openidconnect_crate_signs_in_with_discovery_pkce_and_nonce_then_reads_userinfo_and_refreshes() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = web_app(&app);

    let issuer = IssuerUrl::new(app.address.clone()).unwrap();
    let provider = CoreProviderMetadata::discover_async(issuer, &rp_http).await.expect("discovery");
    let rp = CoreClient::from_provider_metadata(
        provider,
        ClientId::new(client.id.clone()),
        client.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser: not signed in → login page → consent → back to the app with the code and state.
    let browser = browser();
    let first = browser.get(url.as_str()).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let consent = sign_in_at(&app, &browser, &location(&first), &alice).await;
    let redirect = answer_consent(&app, &browser, consent, true).await;
    assert_eq!(redirect.status(), 302);
    let back = params(&location(&redirect));
    assert_eq!(back.get("state"), Some(state.secret()));
    assert_eq!(back.get("iss"), Some(&app.address), "RFC 9207 iss");
    let code = back.get("code").unwrap();
    assert!(code.len() >= 43, "at least 128 random bits (32 bytes here)");

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp_http)
        .await
        .expect("the code exchange");
    let id_token = tokens.id_token().expect("an ID token with scope openid");
    let id_verifier = rp.id_token_verifier();
    let claims: &CoreIdTokenClaims = id_token.claims(&id_verifier, &nonce).expect("a valid ID token");
    assert_eq!(claims.subject().as_str(), alice.id.to_string());
    assert_eq!(claims.preferred_username().map(|name| name.as_str()), Some("alice"));
    assert_eq!(claims.email().map(|email| email.as_str()), Some("alice@example.org"));
    assert_eq!(claims.email_verified(), Some(false), "never proven by a mailed link");
    assert!(claims.auth_time().is_some());
    assert_eq!(claims.auth_method_refs().unwrap().iter().map(|amr| amr.as_str()).collect::<Vec<_>>(), ["pwd"]);
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let alg = id_token.signing_alg().unwrap();
    let actual =
        AccessTokenHash::from_token(tokens.access_token(), alg, id_token.signing_key(&id_verifier).unwrap()).unwrap();
    assert_eq!(&actual, expected_hash);
    assert_eq!(header_of(&id_token.to_string())["alg"], "RS256", "RS256 by default");

    // The access token names the client, and works on the API.
    let access = tokens.access_token().secret().clone();
    assert_eq!(claims_of(&access)["client_id"], client.id);
    assert_eq!(app.get("/api/users/me", Some(&access)).await.status(), 200);

    let info: CoreUserInfoClaims =
        rp.user_info(tokens.access_token().clone(), None).unwrap().request_async(&rp_http).await.expect("userinfo");
    assert_eq!(info.subject().as_str(), alice.id.to_string());
    assert_eq!(info.preferred_username().map(|name| name.as_str()), Some("alice"));

    let refreshed = rp
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&rp_http)
        .await
        .expect("refresh");
    assert_ne!(refreshed.refresh_token().unwrap().secret(), tokens.refresh_token().unwrap().secret(), "rotated");
    let renewed_id = refreshed.id_token().expect("a new ID token on refresh");
    assert_eq!(claims_of(&renewed_id.to_string())["sub"], alice.id.to_string());
    assert_eq!(claims_of(&renewed_id.to_string())["auth_time"], claims_of(&id_token.to_string())["auth_time"]);

    // Consent is remembered: the same request now goes straight back with a code.
    let (_, challenge) = pkce();
    let again = browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap();
    assert_eq!(again.status(), 302);
    assert!(params(&location(&again)).contains_key("code"));
    assert!(app.event_kinds().contains(&"consent_granted".to_owned()));
}

#[tokio::test]
async fn a_refresh_token_issued_to_a_confidential_client_is_refreshed_only_with_its_authentication() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = web_app(&app);
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser(), &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // Without the client: refused (and the token stays usable by its client).
    assert_token_error(app.refresh(refresh, None).await, 400, "invalid_grant").await;
    let wrong = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client.id, Some("not-the-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .post(app.url("/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
}

#[tokio::test]
async fn the_authorization_endpoint_never_redirects_to_an_unknown_uri_and_sends_other_errors_back() {
    let app = spawn_app().await;
    let client = public_app(&app, "RS256", false);
    let (_, challenge) = pkce();
    let get = |url: String| {
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    // Unknown client, a redirect URI not registered (not even a prefix): a 400 page, no redirect.
    for url in [
        authorize_url(&app, "gc_nosuchclient00000000", &challenge, &[]),
        authorize_url(&app, &client.id, &challenge, &[]).replace("rp.example%2Fcallback", "evil.example%2Fcallback"),
        authorize_url(&app, &client.id, &challenge, &[]).replace("rp.example%2Fcallback", "rp.example%2Fcallback%2Fx"),
        app.url("/authorize?response_type=code&client_id=a&client_id=b"),
    ] {
        let response = get(url.clone()).await;
        assert_eq!(response.status(), 400, "{url}");
        assert!(response.headers().get(header::LOCATION).is_none());
        assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    }
    // Everything else: back to the client with error and state.
    let base = |extra: &str| {
        format!(
            "{}/authorize?client_id={}&redirect_uri=https%3A%2F%2Frp.example%2Fcallback&state=s9{extra}",
            app.address, client.id
        )
    };
    let cases = [
        (format!("&response_type=code&code_challenge={challenge}"), "invalid_request"),
        (format!("&response_type=code&code_challenge={challenge}&code_challenge_method=plain"), "invalid_request"),
        ("&response_type=code".to_owned(), "invalid_request"),
        (
            format!("&response_type=token&code_challenge={challenge}&code_challenge_method=S256"),
            "unsupported_response_type",
        ),
        (
            format!("&response_type=code&code_challenge={challenge}&code_challenge_method=S256&scope=admin:users"),
            "invalid_scope",
        ),
        (
            format!("&response_type=code&code_challenge={challenge}&code_challenge_method=S256&prompt=none"),
            "login_required",
        ),
    ];
    for (extra, error) in cases {
        let response = get(base(&extra)).await;
        assert_eq!(response.status(), 302, "{extra}");
        let back = params(&location(&response));
        assert!(location(&response).starts_with(REDIRECT), "{extra}");
        assert_eq!(
            (back.get("error").map(String::as_str), back.get("state").map(String::as_str)),
            (Some(error), Some("s9")),
            "{extra}"
        );
    }
}

#[tokio::test]
async fn a_code_works_once_within_its_client_redirect_uri_and_verifier_and_a_second_use_revokes_the_first() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "ES256", false);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let url = authorize_url(&app, &client.id, &challenge, &[]);
    let code = code_for(&app, &browser, &url, &alice).await;
    let first = exchange(&app, &client, &code, &verifier).await;
    assert_eq!(first.status(), 200);
    let tokens: Value = first.json().await.unwrap();
    assert_eq!(header_of(tokens["id_token"].as_str().unwrap())["alg"], "ES256", "the client's registered alg");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 200);

    // The client refreshes once: that access token was issued from the code too.
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", client.id.as_str()),
    ];
    let refreshed: Value = app.post_token(&fields).await.json().await.unwrap();
    let later_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(later_access)).await.status(), 200);

    let second = exchange(&app, &client, &code, &verifier).await;
    assert_token_error(second, 400, "invalid_grant").await;
    assert_eq!(app.get("/api/users/me", Some(later_access)).await.status(), 401, "every token issued from it");
    // What the first use issued is dead now.
    assert_bearer_error(
        app.get("/api/users/me", Some(access)).await,
        401,
        Some("Bearer error=\"invalid_token\"*"),
        "invalid_token",
    )
    .await;
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", client.id.as_str()),
    ];
    assert_token_error(app.post_token(&refresh).await, 400, "invalid_grant").await;
    assert!(app.event_kinds().contains(&"code_reused".to_owned()));
    assert_eq!(app.state.grants.metrics.code_reuse.get(), 1, "counted as a code's reuse");
    assert_eq!(app.state.grants.metrics.refresh_reuse.get(), 0, "not as a refresh token's");

    // A wrong verifier, another redirect URI or another client: refused, and the code is spent.
    for spoil in ["verifier", "redirect", "client"] {
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
        let other = public_app(&app, "RS256", false);
        let response = match spoil {
            "verifier" => exchange(&app, &client, &code, &pkce().0).await,
            "redirect" => {
                let fields = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", "https://rp.example/other"),
                    ("code_verifier", verifier.as_str()),
                    ("client_id", client.id.as_str()),
                ];
                app.post_token(&fields).await
            }
            _ => exchange(&app, &other, &code, &verifier).await,
        };
        assert_token_error(response, 400, "invalid_grant").await;
        assert_token_error(exchange(&app, &client, &code, &verifier).await, 400, "invalid_grant").await;
    }
}

#[tokio::test]
async fn one_code_exchanged_twice_at_once_on_two_instances_leaves_no_working_token() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let client = public_app(&a, "RS256", true);
    let browser = browser();
    for _ in 0..5 {
        let (verifier, challenge) = pkce();
        // First-party: no consent page; signed in once, each request goes straight back with a code.
        let mut response = browser.get(authorize_url(&a, &client.id, &challenge, &[])).send().await.unwrap();
        if response.status() == 303 {
            response = sign_in_at(&a, &browser, &location(&response), &alice).await;
        }
        assert_eq!(response.status(), 302);
        let code = params(&location(&response)).get("code").cloned().unwrap();
        let (first, second) =
            tokio::join!(exchange(&a, &client, &code, &verifier), exchange(&b, &client, &code, &verifier));
        let statuses = [first.status().as_u16(), second.status().as_u16()];
        assert!(statuses.contains(&200) && statuses.contains(&400), "one wins: {statuses:?}");
        let winner: Value =
            if first.status() == 200 { first.json().await.unwrap() } else { second.json().await.unwrap() };
        // The loser's request revoked what the winner got.
        let access = winner["access_token"].as_str().unwrap();
        assert_eq!(a.get("/api/users/me", Some(access)).await.status(), 401);
        assert_eq!(b.get("/api/users/me", Some(access)).await.status(), 401);
        let refresh = [
            ("grant_type", "refresh_token"),
            ("refresh_token", winner["refresh_token"].as_str().unwrap()),
            ("client_id", client.id.as_str()),
        ];
        assert_token_error(b.post_token(&refresh).await, 400, "invalid_grant").await;
    }
}

/// Two consents to one app given at once (two tabs, answered on two instances) are both kept: the
/// stored consent is their union, each recorded once.
#[tokio::test]
async fn two_consents_given_at_once_on_two_instances_are_both_remembered() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let browser = browser();
    let mut last_client = None;
    for round in 0..5 {
        let client = register(
            &a,
            ClientDraft {
                name: "Mail app".into(),
                public: true,
                scopes: vec!["openid".into(), "profile".into(), "email".into()],
                redirect_uris: vec![REDIRECT.into()],
                ..ClientDraft::default()
            },
        );
        last_client = Some(client.id.clone());
        let (_, challenge) = pkce();
        let profile = authorize_url(&a, &client.id, &challenge, &[]);
        let email = profile.replace("scope=openid+profile", "scope=openid+email");
        let mut first = browser.get(&profile).send().await.unwrap();
        if first.status() == 303 {
            first = sign_in_at(&a, &browser, &location(&first), &alice).await;
        }
        let second = browser.get(&email).send().await.unwrap();
        let (on_a, on_b) =
            tokio::join!(answer_consent(&a, &browser, first, true), answer_consent(&b, &browser, second, true));
        for answer in [on_a, on_b] {
            assert_eq!(answer.status(), 302, "round {round}");
            assert!(params(&location(&answer)).contains_key("code"), "round {round}");
        }
        let stored: String = {
            use diesel::prelude::*;
            use gatehouse::db::schema::oauth_consents;
            oauth_consents::table
                .filter(oauth_consents::client_id.eq(&client.id))
                .select(oauth_consents::scope)
                .first::<gatehouse::domain::ScopeSet>(&mut a.db.conn())
                .unwrap()
                .to_string()
        };
        assert_eq!(stored, "email openid profile", "round {round}: both grants are kept");
        let granted = a.event_kinds().iter().filter(|kind| *kind == "consent_granted").count();
        assert_eq!(granted, 2 * (round + 1), "each grant recorded once");
    }
    // Both remembered: a request for all of it goes straight back with a code.
    let client_id = last_client.expect("five rounds");
    let (_, challenge) = pkce();
    let url =
        authorize_url(&b, &client_id, &challenge, &[]).replace("scope=openid+profile", "scope=openid+profile+email");
    assert_eq!(browser.get(&url).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn prompt_none_max_age_and_prompt_login_follow_the_sign_in_and_the_consent() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", false);
    let browser = browser();
    let (_, challenge) = pkce();
    // Signed in, but no consent yet: prompt=none answers consent_required.
    let first = browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap();
    let consent = sign_in_at(&app, &browser, &location(&first), &alice).await;
    assert_eq!(consent.status(), 200);
    let none = browser.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(params(&location(&none)).get("error").map(String::as_str), Some("consent_required"));
    // Deny: access_denied, with the state.
    let denied = answer_consent(
        &app,
        &browser,
        browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap(),
        false,
    )
    .await;
    let back = params(&location(&denied));
    assert_eq!((back["error"].as_str(), back["state"].as_str()), ("access_denied", "st-1"));
    // Allowed once: prompt=none now gives a code; prompt=consent shows the page again.
    let allowed = answer_consent(
        &app,
        &browser,
        browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap(),
        true,
    )
    .await;
    assert!(params(&location(&allowed)).contains_key("code"));
    let silent = browser.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "none")])).send().await.unwrap();
    assert!(params(&location(&silent)).contains_key("code"));
    let asked =
        browser.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "consent")])).send().await.unwrap();
    assert_eq!(asked.status(), 200);
    // max_age=0 and prompt=login: a new sign-in (the login page, with the username from login_hint).
    for extra in [[("max_age", "0"), ("login_hint", "alice")], [("prompt", "login"), ("login_hint", "alice")]] {
        let again = browser.get(authorize_url(&app, &client.id, &challenge, &extra)).send().await.unwrap();
        assert_eq!(again.status(), 303, "{extra:?}");
        let login = location(&again);
        assert!(login.starts_with("/login?"), "{login}");
        let page = browser.get(app.url(&login)).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(r#"value="alice""#), "login_hint fills the username");
        let back = sign_in_at(&app, &browser, &login, &alice).await;
        assert_eq!(back.status(), 302, "signed in again: straight back with a code");
        assert!(params(&location(&back)).contains_key("code"));
    }
    // Signed out: prompt=none answers login_required.
    let stranger = crate::oidc::browser();
    let none = stranger.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(params(&location(&none)).get("error").map(String::as_str), Some("login_required"));
}

/// OIDC Core §3.1.2.1: an `id_token_hint` naming someone else than the person signed in is a new
/// sign-in (or `login_required` under prompt=none); a person the second-factor policy keeps at
/// enrolment cannot be signed in to an app without interaction (`interaction_required`).
#[tokio::test]
async fn prompt_none_answers_for_another_hinted_person_and_for_a_pending_enrolment() {
    let app = spawn_app_with(&[("GATEHOUSE_SECOND_FACTOR", "admins")]).await;
    let alice = app.alice();
    let bob = app.create_user("bob", "bob-password", &["user"]);
    let client = public_app(&app, "RS256", true);
    let mut hints = Vec::new();
    let mut browsers = Vec::new();
    for person in [&alice, &bob] {
        let browser = browser();
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), person).await;
        let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
        hints.push(tokens["id_token"].as_str().unwrap().to_owned());
        browsers.push(browser);
    }
    let (alice_browser, (alice_hint, bob_hint)) = (&browsers[0], (&hints[0], &hints[1]));
    let (_, challenge) = pkce();
    let ask = |extra: Vec<(&'static str, String)>| {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(name, value)| (*name, value.as_str())).collect();
        alice_browser.get(authorize_url(&app, &client.id, &challenge, &extra)).send()
    };
    // Her own hint, or one that is no ID token of ours: a code, without a question.
    for hint in [alice_hint.clone(), "not.a.token".to_owned()] {
        let own = ask(vec![("prompt", "none".into()), ("id_token_hint", hint)]).await.unwrap();
        assert!(params(&location(&own)).contains_key("code"), "{}", location(&own));
    }
    // Bob's: not without a sign-in.
    let other = ask(vec![("prompt", "none".into()), ("id_token_hint", bob_hint.clone())]).await.unwrap();
    assert_eq!(params(&location(&other)).get("error").map(String::as_str), Some("login_required"));
    let again = ask(vec![("id_token_hint", bob_hint.clone())]).await.unwrap();
    assert_eq!(again.status(), 303);
    let login = location(&again);
    assert!(login.starts_with("/login?") && login.contains("again=1"), "{login}");
    assert!(!login.contains("id_token_hint"), "the new sign-in is the person's own choice: {login}");
    // Alice is still signed in meanwhile: a link must not sign anyone out.
    assert!(params(&location(&ask(vec![]).await.unwrap())).contains_key("code"));

    // An admin without a second factor is sent to enrolment by every page; an app asking silently
    // gets interaction_required at its redirect URI instead.
    let admin = app.admin();
    let admin_browser = browser();
    let url = authorize_url(&app, &client.id, &challenge, &[]);
    let first = admin_browser.get(&url).send().await.unwrap();
    let signed_in = submit_login(&app, &admin_browser, &location(&first), &admin).await;
    assert_eq!(signed_in.status(), 303);
    assert!(location(&signed_in).starts_with("/account/second-factor"), "{}", location(&signed_in));
    let none =
        admin_browser.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(none.status(), 302);
    assert_eq!(params(&location(&none)).get("error").map(String::as_str), Some("interaction_required"));
    let interactive = admin_browser.get(&url).send().await.unwrap();
    assert!(location(&interactive).starts_with("/account/second-factor"), "{}", location(&interactive));
}

#[tokio::test]
async fn disconnecting_an_app_ends_its_refresh_tokens_and_asks_for_consent_again() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", false);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let account = browser.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    assert!(account.contains("Phone app"), "listed under Connected apps");
    let csrf = hidden(&account, "csrf_token");
    let disconnect = disconnect_request(&app, &browser, &client.id, &csrf).send().await.unwrap();
    assert_eq!(disconnect.status(), 303);
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", client.id.as_str()),
    ];
    assert_token_error(app.post_token(&refresh).await, 400, "invalid_grant").await;
    let again = browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap();
    assert_eq!(again.status(), 200, "the consent page again");
    assert!(app.event_kinds().contains(&"consent_revoked".to_owned()));
}

/// A code the person's Disconnect withdrew before the app exchanged it: refused like any unknown
/// code, and not audited or counted as a code used twice (nobody used it).
#[tokio::test]
async fn a_code_withdrawn_by_a_disconnect_is_refused_and_not_taken_for_a_reused_one() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", false);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let account = browser.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    let disconnect = disconnect_request(&app, &browser, &client.id, &hidden(&account, "csrf_token")).send();
    assert_eq!(disconnect.await.unwrap().status(), 303);
    assert_token_error(exchange(&app, &client, &code, &verifier).await, 400, "invalid_grant").await;
    let kinds = app.event_kinds();
    assert!(kinds.contains(&"consent_revoked".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"code_reused".to_owned()), "{kinds:?}");
}

/// Disconnect on one instance while the app exchanges a code on another: whichever comes first, the
/// app is left with no working refresh token (the code is spent first, or its family ended after).
#[tokio::test]
async fn disconnecting_while_a_code_is_exchanged_on_another_instance_leaves_no_working_refresh_token() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let client = public_app(&a, "RS256", true);
    let browser = browser();
    let mut csrf = None;
    let mut exchanged = 0;
    for round in 0..6 {
        let (verifier, challenge) = pkce();
        let mut response = browser.get(authorize_url(&a, &client.id, &challenge, &[])).send().await.unwrap();
        if response.status() == 303 {
            response = sign_in_at(&a, &browser, &location(&response), &alice).await;
        }
        let code = params(&location(&response)).get("code").cloned().expect("a code");
        let csrf = match &csrf {
            Some(csrf) => csrf,
            None => {
                let account = browser.get(a.url("/account")).send().await.unwrap().text().await.unwrap();
                csrf.insert(hidden(&account, "csrf_token"))
            }
        };
        let disconnect = disconnect_request(&a, &browser, &client.id, csrf).send();
        let (exchange, disconnect) = tokio::join!(exchange(&b, &client, &code, &verifier), disconnect);
        assert_eq!(disconnect.unwrap().status(), 303, "round {round}");
        if exchange.status() == 200 {
            exchanged += 1;
            let tokens: Value = exchange.json().await.unwrap();
            let refresh = [
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", client.id.as_str()),
            ];
            assert_token_error(b.post_token(&refresh).await, 400, "invalid_grant").await;
        } else {
            assert_token_error(exchange, 400, "invalid_grant").await;
        }
    }
    // Which one won varies; each outcome was checked above.
    println!("the exchange came first in {exchanged} of 6 rounds");
}

/// A Disconnect that commits while a signed-in `/authorize` is between reading the stored consent
/// and storing its code (held there: the code's foreign-key check waits for the client's row, which
/// the test locks): the code is stored after the Disconnect, and its exchange finds no consent.
#[tokio::test]
async fn a_code_stored_just_after_a_disconnect_that_raced_its_consent_check_gets_no_tokens() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", false);
    let browser = browser();
    let (_, challenge) = pkce();
    code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let account = browser.get(app.url("/account")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&account, "csrf_token");

    let mut holder = app.db.conn();
    diesel::sql_query("BEGIN").execute(&mut holder).unwrap();
    diesel::sql_query(format!("SELECT 1 FROM oauth_clients WHERE client_id = '{}' FOR UPDATE", client.id))
        .execute(&mut holder)
        .unwrap();
    let (verifier, challenge) = pkce();
    let pending = tokio::spawn(browser.get(authorize_url(&app, &client.id, &challenge, &[])).send());
    crate::helpers::until_lock_waiters(&app, 1, "the code's insert waits for the client's row").await;
    let disconnect = disconnect_request(&app, &browser, &client.id, &csrf).send().await.unwrap();
    assert_eq!(disconnect.status(), 303);
    diesel::sql_query("COMMIT").execute(&mut holder).unwrap();

    let answer = pending.await.unwrap().unwrap();
    let code = params(&location(&answer)).get("code").cloned().expect("the code was stored after all");
    assert_token_error(exchange(&app, &client, &code, &verifier).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn userinfo_answers_by_scope_and_refuses_a_token_without_openid() {
    let app = spawn_app().await;
    let alice = app.alice();
    let without = app.access_token(&alice, Some("profile")).await;
    assert_bearer_error(
        app.get("/userinfo", Some(&without)).await,
        403,
        Some("Bearer error=\"insufficient_scope\"*"),
        "insufficient_scope",
    )
    .await;
    assert_eq!(app.get("/userinfo", None).await.status(), 401);
    let with = app.access_token(&alice, Some("openid email")).await;
    let info: Value = app.get("/userinfo", Some(&with)).await.json().await.unwrap();
    assert_eq!(info["sub"], alice.id.to_string());
    assert_eq!(info["email"], "alice@example.org");
    assert_eq!(info["email_verified"], false);
    assert!(info.get("preferred_username").is_none(), "profile was not granted");
    let posted = app.client.post(app.url("/userinfo")).bearer_auth(&with).send().await.unwrap();
    assert_eq!(posted.status(), 200);
}

#[tokio::test]
async fn discovery_and_rfc_8414_metadata_describe_the_code_flow() {
    let app = spawn_app().await;
    let oidc: Value = app.get("/.well-known/openid-configuration", None).await.json().await.unwrap();
    assert_eq!(oidc["issuer"], app.address);
    assert_eq!(oidc["authorization_endpoint"], app.url("/authorize"));
    assert_eq!(oidc["userinfo_endpoint"], app.url("/userinfo"));
    assert_eq!(oidc["end_session_endpoint"], app.url("/end_session"));
    assert_eq!(oidc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(oidc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(oidc["id_token_signing_alg_values_supported"][0], "RS256");
    let oauth: Value = app.get("/.well-known/oauth-authorization-server", None).await.json().await.unwrap();
    assert_eq!(oauth["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(oauth["device_authorization_endpoint"], app.url("/device_authorization"));
    // No OpenID client, no ID-token key: the set is the access-token key alone.
    let jwks: Value = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    // Registered through the admin API: the client's ID-token key is published at once.
    let admin = app.admin();
    let token = app.access_token(&admin, Some("admin:users")).await;
    let body =
        serde_json::json!({"name": "eddsa app", "public": true, "redirect_uris": [REDIRECT], "id_token_alg": "EdDSA"});
    assert_eq!(app.post_json("/api/admin/clients", Some(&token), &body).await.status(), 201);
    let jwks: Value = app.get("/.well-known/jwks.json", None).await.json().await.unwrap();
    let algs: Vec<&str> = jwks["keys"].as_array().unwrap().iter().filter_map(|key| key["alg"].as_str()).collect();
    assert_eq!(algs.len(), 2, "{algs:?}");
    assert!(algs.contains(&"EdDSA"), "{algs:?}");
}

#[tokio::test]
async fn an_id_token_is_no_access_token() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "ES256", true);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let first = browser.get(authorize_url(&app, &client.id, &challenge, &[])).send().await.unwrap();
    let back = sign_in_at(&app, &browser, &location(&first), &alice).await;
    let code = params(&location(&back)).get("code").cloned().unwrap();
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_bearer_error(
        app.get("/api/users/me", Some(id_token)).await,
        401,
        Some("Bearer error=\"invalid_token\"*"),
        "invalid_token",
    )
    .await;
}

/// Polls `/token` with a device code.
async fn poll(app: &TestApp, client_id: &str, device_code: &str) -> Response {
    app.post_token(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", client_id),
    ])
    .await
}

/// Signs `user` in with a plain login (no `next`).
async fn signed_in_browser(app: &TestApp, user: &TestUser) -> Client {
    let browser = browser();
    let page = browser.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
    let fields = [
        ("csrf_token", hidden(&page, "csrf_token")),
        ("username", user.username.clone()),
        ("password", user.password.clone()),
    ];
    assert_eq!(browser.post(app.url("/login")).form(&fields).send().await.unwrap().status(), 303);
    browser
}

/// Answers a device's request at `/device` as the signed-in person of `browser`.
async fn decide_device(app: &TestApp, browser: &Client, user_code: &str, decision: &str) -> String {
    send_device_decision(app, browser, &show_device(app, browser, user_code).await, decision).await
}

/// Types `user_code` at `/device`: the page asking to allow or deny, with its form fields.
async fn show_device(app: &TestApp, browser: &Client, user_code: &str) -> String {
    let page = browser.get(app.url("/device")).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&page, "csrf_token");
    let shown = browser
        .post(app.url("/device"))
        .form(&[("csrf_token", csrf.as_str()), ("user_code", user_code)])
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let html = shown.text().await.unwrap();
    assert!(html.contains(r#"id="device-client""#), "{html}");
    html
}

/// Sends `decision` from the page `show_device` gave.
async fn send_device_decision(app: &TestApp, browser: &Client, shown: &str, decision: &str) -> String {
    let fields = [
        ("csrf_token", hidden(shown, "csrf_token")),
        ("user_code", hidden(shown, "user_code")),
        ("decision", decision.to_owned()),
    ];
    browser.post(app.url("/device")).form(&fields).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn the_device_grant_polls_pending_slow_down_then_delivers_once_on_either_instance() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let client = device_app(&a, &["openid", "profile"]);
    let device = start_device(&a, &client.id, Some("openid")).await;
    let user_code = device["user_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9);
    assert_eq!(&user_code[4..5], "-");
    assert_eq!(device["verification_uri"], format!("{}/device", crate::helpers::PAIR_ISSUER));
    assert_eq!((device["expires_in"].as_i64(), device["interval"].as_i64()), (Some(600), Some(5)));
    let device_code = device["device_code"].as_str().unwrap();

    assert_token_error(poll(&a, &client.id, device_code).await, 400, "authorization_pending").await;
    assert_token_error(poll(&b, &client.id, device_code).await, 400, "slow_down").await;
    // Another client cannot collect it.
    let other = public_app(&a, "RS256", false);
    assert_eq!(poll(&a, &other.id, device_code).await.status(), 400);

    let browser = signed_in_browser(&a, &alice).await;
    // Typed in lower case without the dash.
    let typed = user_code.replace('-', "").to_lowercase();
    let done = decide_device(&a, &browser, &typed, "allow").await;
    assert!(done.contains("id=\"device-done\""), "{done}");

    // Let the interval (now 10 s after the slow_down) pass since the last poll.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let delivered = poll(&b, &client.id, device_code).await;
    assert_eq!(delivered.status(), 200);
    let tokens: Value = delivered.json().await.unwrap();
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string());
    assert_eq!(claims_of(tokens["access_token"].as_str().unwrap())["client_id"], client.id);
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_token_error(poll(&a, &client.id, device_code).await, 400, "invalid_grant").await;

    // Denied: access_denied. Expired: expired_token.
    let denied = start_device(&a, &client.id, None).await;
    decide_device(&a, &browser, denied["user_code"].as_str().unwrap(), "deny").await;
    assert_token_error(poll(&a, &client.id, denied["device_code"].as_str().unwrap()).await, 400, "access_denied").await;
    let expired = start_device(&a, &client.id, None).await;
    diesel::sql_query("UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE decision IS NULL")
        .execute(&mut a.db.conn())
        .unwrap();
    assert_token_error(poll(&a, &client.id, expired["device_code"].as_str().unwrap()).await, 400, "expired_token")
        .await;
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_returns_only_to_a_registered_uri() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = web_app(&app);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let hint = tokens["id_token"].as_str().unwrap();
    // A registered post-logout URI, with the hint: out at once, back to the app with its state.
    let url = format!(
        "{}/end_session?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Frp.example%2Fbye&state=s2",
        app.address
    );
    let out = browser.get(url).send().await.unwrap();
    assert_eq!(out.status(), 302);
    assert_eq!(location(&out), "https://rp.example/bye?state=s2");
    assert_eq!(browser.get(app.url("/account")).send().await.unwrap().status(), 303, "signed out");

    // Signed in again: without a hint, a page asks first; an unregistered URI is never followed.
    let browser = signed_in_browser(&app, &alice).await;
    let asked = browser
        .get(app.url("/end_session?post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
    let html = asked.text().await.unwrap();
    let fields =
        [("csrf_token", hidden(&html, "csrf_token")), ("post_logout_redirect_uri", "https://evil.example/".to_owned())];
    let confirmed = browser.post(app.url("/end_session")).form(&fields).send().await.unwrap();
    assert_eq!(location(&confirmed), "/login");
    assert_eq!(browser.get(app.url("/account")).send().await.unwrap().status(), 303);
}

#[tokio::test]
async fn a_new_sign_in_asked_for_by_a_signed_out_browser_takes_one_sign_in_and_a_link_signs_nobody_out() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", true);
    let (_, challenge) = pkce();
    // Signed out, prompt=login: one sign-in, then straight back with a code.
    let browser = browser();
    let first = browser.get(authorize_url(&app, &client.id, &challenge, &[("prompt", "login")])).send().await.unwrap();
    let back = sign_in_at(&app, &browser, &location(&first), &alice).await;
    assert_eq!(back.status(), 302, "one sign-in is enough");
    assert!(params(&location(&back)).contains_key("code"));
    // Signed in, max_age=0: the login page, but the session lives until a new sign-in succeeds.
    let again = browser.get(authorize_url(&app, &client.id, &challenge, &[("max_age", "0")])).send().await.unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(browser.get(app.url("/account")).send().await.unwrap().status(), 200, "still signed in");
    // An authorization request may come as a form POST: the same request.
    let form = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("scope", "openid"),
    ];
    let posted = browser.post(app.url("/authorize")).form(&form).send().await.unwrap();
    assert_eq!(posted.status(), 303);
    let followed = browser.get(app.url(&location(&posted))).send().await.unwrap();
    assert!(params(&location(&followed)).contains_key("code"));
}

#[tokio::test]
async fn a_code_of_a_sign_in_cut_off_since_and_tokens_of_a_removed_client_are_refused() {
    let app = spawn_app().await;
    let alice = app.alice();
    let client = public_app(&app, "RS256", true);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    // Sign out everywhere between the code and its exchange.
    let token = app.access_token(&alice, Some("profile")).await;
    assert_eq!(app.post_empty("/api/users/me/sign-out-all", Some(&token)).await.status(), 204);
    assert_token_error(exchange(&app, &client, &code, &verifier).await, 400, "invalid_grant").await;
    // A missing verifier: refused.
    let browser = crate::oidc::browser();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client.id.as_str()),
    ];
    assert_token_error(app.post_token(&fields).await, 400, "invalid_grant").await;
    // A person's token issued to a client ends with the client.
    let code = code_for(&app, &browser, &authorize_url(&app, &client.id, &challenge, &[]), &alice).await;
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 200);
    let service = app.create_user("billing-service", "billing-service-password", &["service"]);
    let caller = app.access_token(&service, Some("tokens:introspect")).await;
    let active = || async {
        let response = app
            .client
            .post(app.url("/introspect"))
            .bearer_auth(&caller)
            .form(&[("token", access)])
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()["active"].as_bool().unwrap()
    };
    assert!(active().await);
    clients::remove(&mut app.db.conn(), &Actor::command_line(), &client.id, Utc::now()).unwrap();
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 401);
    assert!(!active().await, "introspection agrees with /api");
}

#[tokio::test]
async fn another_persons_id_token_hint_does_not_sign_anyone_out_without_asking() {
    let app = spawn_app().await;
    let alice = app.alice();
    let bob = app.create_user("bob", "bob-password-1234", &["user"]);
    let client = web_app(&app);
    // Bob gets an ID token of his own.
    let (verifier, challenge) = pkce();
    let bobs = browser();
    let code = code_for(&app, &bobs, &authorize_url(&app, &client.id, &challenge, &[]), &bob).await;
    let tokens: Value = exchange(&app, &client, &code, &verifier).await.json().await.unwrap();
    let hint = tokens["id_token"].as_str().unwrap();
    // Alice follows Bob's link: she is asked, and stays signed in.
    let alices = signed_in_browser(&app, &alice).await;
    let url = format!(
        "{}/end_session?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Frp.example%2Fbye",
        app.address
    );
    let asked = alices.get(url).send().await.unwrap();
    assert_eq!(asked.status(), 200);
    assert_eq!(alices.get(app.url("/account")).send().await.unwrap().status(), 200, "still signed in");
}

#[tokio::test]
async fn two_decisions_on_one_device_at_once_on_two_instances_count_once() {
    let (a, b) = spawn_pair(&[]).await;
    let alice = a.alice();
    let client = device_app(&a, &["openid"]);
    let device = start_device(&a, &client.id, None).await;
    let code = device["user_code"].as_str().unwrap();
    let (on_a, on_b) = (signed_in_browser(&a, &alice).await, signed_in_browser(&b, &alice).await);
    // Both people see the question first; then both answers go at once.
    let (shown_a, shown_b) = (show_device(&a, &on_a, code).await, show_device(&b, &on_b, code).await);
    let (first, second) = tokio::join!(
        send_device_decision(&a, &on_a, &shown_a, "allow"),
        send_device_decision(&b, &on_b, &shown_b, "deny")
    );
    let counted = [&first, &second]
        .iter()
        .filter(|html| html.contains("id=\"device-done\"") && !html.contains("already answered"))
        .count();
    assert_eq!(counted, 1, "one decision counts: {first}\n{second}");
    let decided = a.event_kinds().iter().filter(|kind| *kind == "device_decided").count();
    assert_eq!(decided, 1);
}
