//! "Sign in with gatehouse" seen from an app: a small relying party that signs people in with OpenID
//! Connect through the `openidconnect` crate (discovery, the code flow with PKCE, nonce and state,
//! ID-token and at_hash checks, userinfo, RP-initiated logout).
//!
//! ```sh
//! scripts/dev                          # gatehouse on http://localhost:8080, with the demo client
//! cargo run --example relying_party    # this app on http://127.0.0.1:8081
//! ```
//!
//! `GATEHOUSE_URL` is the issuer (default `http://localhost:8080`, what `serve --dev` calls itself);
//! `GATEHOUSE_CLIENT_ID` defaults to `gc_example-app-demo`, the public client `--dev` registers; set
//! `GATEHOUSE_CLIENT_SECRET` for a confidential client. A client of your own needs the redirect URI
//! `http://127.0.0.1:8081/callback` and the post-logout redirect URI `http://127.0.0.1:8081/`.
//! Everything is kept in memory, and the HTTP client has no TLS stack: a local demo on `http://`.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Mutex, MutexGuard, PoisonError};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer, ResponseError, get, web};
use askama::Template;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;

const LISTEN: &str = "127.0.0.1:8081";
const HOME: &str = "http://127.0.0.1:8081/";
const CALLBACK: &str = "http://127.0.0.1:8081/callback";
/// Ties a sign-in in progress to the browser that started it (its value is the state).
const FLOW_COOKIE: &str = "rp_flow";
/// Names a signed-in browser's entry in memory.
const SESSION_COOKIE: &str = "rp_session";

/// The client discovery configures (token and userinfo endpoints are optional there: "maybe set").
type Rp = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// What discovery found: the client, and where people go to sign out.
struct Provider {
    client: Rp,
    end_session: Option<EndSessionUrl>,
}

/// A sign-in started at `/login`, until its `/callback`.
struct Pending {
    provider: Provider,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

/// A signed-in browser: what the ID token and userinfo said; the ID token again as the logout hint.
struct SignedIn {
    claims: Vec<(String, String)>,
    userinfo: String,
    id_token: CoreIdToken,
    end_session: Option<EndSessionUrl>,
}

struct Demo {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    pending: Mutex<HashMap<String, Pending>>,
    signed_in: Mutex<HashMap<String, SignedIn>>,
}

/// A poisoned map is still a consistent map here (every change is one insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a page failed: shown to the person (it is their own demo) and logged.
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
struct Failure(StatusCode, String);

/// The browser's request does not fit a sign-in this app started.
fn refused(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

/// Gatehouse (or the way to it) failed at `step`; the message carries the whole cause chain.
fn failed<E: Error + 'static>(step: &'static str) -> impl FnOnce(E) -> Failure {
    move |err| {
        let chain = std::iter::successors(Some(&err as &dyn Error), |&e| e.source());
        Failure(StatusCode::BAD_GATEWAY, chain.fold(step.to_owned(), |message, e| format!("{message}: {e}")))
    }
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Example app</title></head><body>
<h1>Example app</h1>
{% if let Some(error) = error %}<p><strong>Sign-in failed:</strong> {{ error }}</p>{% endif %}
{% if let Some(user) = user %}<p>Signed in with gatehouse. <a href="/logout">Sign out</a></p>
<h2>ID token claims</h2>
<table>{% for (name, value) in user.claims %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h2>userinfo</h2>
<pre>{{ user.userinfo }}</pre>
{% else %}<p><a href="/login">Sign in with gatehouse</a></p>{% endif %}
</body></html>"#
)]
struct Page<'a> {
    user: Option<&'a SignedIn>,
    error: Option<&'a str>,
}

fn html(status: StatusCode, page: &Page<'_>) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body),
        Err(err) => HttpResponse::InternalServerError().body(format!("template: {err}")),
    }
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.0
    }

    fn error_response(&self) -> HttpResponse {
        log::warn!("{}", self.1);
        html(self.0, &Page { user: None, error: Some(&self.1) })
    }
}

/// openidconnect's HTTP client: requests sent with reqwest, never following a redirect (a redirect
/// from a token endpoint would be an attack, not an answer).
async fn http(request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let (parts, body) = request.into_parts();
    let response = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let (status, headers) = (response.status(), response.headers().clone());
    let mut answer = http::Response::new(response.bytes().await?.to_vec());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

/// Discovery on every sign-in: `serve --dev` makes new signing keys each time it restarts, and a
/// fresh key set keeps this app working across that.
async fn discover(demo: &Demo) -> Result<Provider, Failure> {
    let metadata =
        ProviderMetadataWithLogout::discover_async(demo.issuer.clone(), &http).await.map_err(failed("discovery"))?;
    let end_session = metadata.additional_metadata().end_session_endpoint.clone();
    let client = CoreClient::from_provider_metadata(metadata, demo.client_id.clone(), demo.client_secret.clone())
        .set_redirect_uri(demo.redirect.clone());
    Ok(Provider { client, end_session })
}

fn cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value).path("/").http_only(true).same_site(SameSite::Lax).finish()
}

fn removal(name: &'static str) -> Cookie<'static> {
    let mut cookie = cookie(name, String::new());
    cookie.make_removal();
    cookie
}

fn see_other(location: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::SeeOther();
    response.insert_header((header::LOCATION, location));
    response
}

#[get("/")]
async fn home(request: HttpRequest, demo: web::Data<Demo>) -> HttpResponse {
    let signed_in = lock(&demo.signed_in);
    let user = request.cookie(SESSION_COOKIE).and_then(|session| signed_in.get(session.value()));
    html(StatusCode::OK, &Page { user, error: None })
}

#[get("/login")]
async fn login(demo: web::Data<Demo>) -> Result<HttpResponse, Failure> {
    let provider = discover(&demo).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    // The crate adds the `openid` scope; state and nonce are random.
    let (url, state, nonce) = provider
        .client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".to_owned()))
        .add_scope(Scope::new("email".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    lock(&demo.pending).insert(state.secret().clone(), Pending { provider, verifier, nonce });
    Ok(see_other(url.as_str()).cookie(cookie(FLOW_COOKIE, state.into_secret())).finish())
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[get("/callback")]
async fn callback(
    request: HttpRequest,
    query: web::Query<Callback>,
    demo: web::Data<Demo>,
) -> Result<HttpResponse, Failure> {
    let query = query.into_inner();
    // The state must be the one this browser's own sign-in started with: otherwise someone is
    // signing this browser in with a code of theirs (login CSRF).
    let state = query.state.ok_or_else(|| refused("the answer has no state"))?;
    if request.cookie(FLOW_COOKIE).is_none_or(|flow| flow.value() != state) {
        return Err(refused("the state is not the one this browser's sign-in started with"));
    }
    let pending = lock(&demo.pending).remove(&state).ok_or_else(|| refused("no such sign-in (used already?)"))?;
    // RFC 9207: the answer names who sent it, so a code from another provider never goes to this one.
    if query.iss.is_some_and(|iss| iss != demo.issuer.as_str()) {
        return Err(refused("the answer comes from another issuer"));
    }
    if let Some(error) = query.error {
        return Err(refused(format!("gatehouse answered {error}: {}", query.error_description.unwrap_or_default())));
    }
    let code = query.code.ok_or_else(|| refused("the answer has no code"))?;

    let client = &pending.provider.client;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(failed("token endpoint"))?
        .set_pkce_verifier(pending.verifier)
        .request_async(&http)
        .await
        .map_err(failed("code exchange"))?;
    let id_token = tokens.id_token().ok_or_else(|| refused("the token answer has no ID token"))?;
    // Signature, issuer, audience, expiry, and the nonce this sign-in sent.
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &pending.nonce).map_err(failed("ID token"))?;
    // at_hash ties the access token to the ID token (optional in the code flow; gatehouse sends it).
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token.signing_alg().map_err(failed("ID token"))?;
        let key = id_token.signing_key(&verifier).map_err(failed("ID token"))?;
        if AccessTokenHash::from_token(tokens.access_token(), alg, key).map_err(failed("at_hash"))? != *expected {
            return Err(refused("the access token does not match the ID token's at_hash"));
        }
    }
    // The crate checks that userinfo is about the ID token's subject.
    let userinfo: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
        .map_err(failed("userinfo endpoint"))?
        .request_async(&http)
        .await
        .map_err(failed("userinfo"))?;

    let claims = match serde_json::to_value(claims).map_err(failed("ID token claims"))? {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(name, value)| (name, value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
            .collect(),
        _ => Vec::new(),
    };
    let userinfo = serde_json::to_string_pretty(&userinfo).map_err(failed("userinfo claims"))?;
    let session = CsrfToken::new_random().into_secret();
    let entry = SignedIn { claims, userinfo, id_token: id_token.clone(), end_session: pending.provider.end_session };
    lock(&demo.signed_in).insert(session.clone(), entry);
    Ok(see_other("/").cookie(cookie(SESSION_COOKIE, session)).cookie(removal(FLOW_COOKIE)).finish())
}

/// Forgets the browser here, then sends it to gatehouse's end_session endpoint (RP-initiated
/// logout), which signs it out there too and sends it back to this app's home page.
#[get("/logout")]
async fn logout(request: HttpRequest, demo: web::Data<Demo>) -> Result<HttpResponse, Failure> {
    let entry = request.cookie(SESSION_COOKIE).and_then(|session| lock(&demo.signed_in).remove(session.value()));
    let location = match entry.and_then(|entry| entry.end_session.map(|url| (url, entry.id_token))) {
        Some((url, id_token)) => LogoutRequest::from(url)
            .set_id_token_hint(&id_token)
            .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(HOME.to_owned()).map_err(failed("logout"))?)
            .http_get_url()
            .to_string(),
        None => "/".to_owned(),
    };
    Ok(see_other(&location).cookie(removal(SESSION_COOKIE)).finish())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let demo = web::Data::new(Demo {
        issuer: IssuerUrl::new(var("GATEHOUSE_URL").unwrap_or_else(|| "http://localhost:8080".to_owned()))?,
        client_id: ClientId::new(var("GATEHOUSE_CLIENT_ID").unwrap_or_else(|| "gc_example-app-demo".to_owned())),
        client_secret: var("GATEHOUSE_CLIENT_SECRET").map(ClientSecret::new),
        redirect: RedirectUrl::new(CALLBACK.to_owned())?,
        pending: Mutex::default(),
        signed_in: Mutex::default(),
    });
    // Once at start too: a gatehouse that is not there is reported now, not at the first click.
    let (issuer, client_id) = (demo.issuer.as_str(), demo.client_id.as_str());
    discover(&demo).await.map_err(|err| format!("{err} (is gatehouse running at {issuer}? scripts/dev)"))?;
    println!("example app on {HOME}, signing in with {issuer} as {client_id}");

    let app = demo.clone();
    HttpServer::new(move || {
        actix_web::App::new().app_data(app.clone()).service(home).service(login).service(callback).service(logout)
    })
    .bind(LISTEN)?
    .run()
    .await?;
    Ok(())
}
