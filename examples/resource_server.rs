//! A service of your own, protected by gatehouse access tokens (`cargo run --example resource_server`).
//!
//! It checks every token the way RFC 9068 §4 asks, with nothing but the keys gatehouse publishes
//! (its JWKS): never the database, never the shared secret. Failures are answered as RFC 6750 §3
//! says. docs/protect-your-service.md explains it step by step, for Rust and for other languages.
//!
//! Environment:
//! - `RESOURCE_SERVER_ISSUER` (required): gatehouse's issuer URL, e.g. `http://127.0.0.1:8080`. Tokens
//!   must carry it as `iss` and as `aud`; the JWKS address is read from the issuer's metadata (RFC 8414).
//! - `RESOURCE_SERVER_JWKS_URI` (optional): the JWKS address itself, to skip the metadata.
//! - `RESOURCE_SERVER_BIND` (default `127.0.0.1:8090`): where this service listens.
//!
//! Routes: `GET /whoami` needs scope `profile`, `GET /orders` needs `items:read`, `POST /orders`
//! (`{"item": "…"}`) needs `items:write`, and `DELETE /orders` (all of the caller's orders) needs
//! `items:write` and a person who signed in with two factors (`amr` has `mfa`): otherwise it answers
//! `401` with RFC 9470's `insufficient_user_authentication`.
//!
//! The keys are cached as long as the JWKS answer's `Cache-Control: max-age` allows. A token whose
//! `kid` is not in the cache makes this service fetch the set again (a new key may have been
//! published since), but never more often than once every [`MIN_REFETCH_INTERVAL`], so a flood of
//! made-up kids cannot become a flood of fetches. When a fetch fails, the keys fetched before keep
//! serving.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::BoxBody;
use actix_web::dev::{Handler, Server, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpServer, Responder, ResponseError, web};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where this service listens unless `RESOURCE_SERVER_BIND` says otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8090";
/// An unknown `kid` makes this service fetch the JWKS again at most this often.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a JWKS answer without `max-age` is kept.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The longest a JWKS answer is kept, whatever its `max-age`: a key the issuer withdraws is
/// dropped here within this time at most.
const LONGEST_MAX_AGE: Duration = Duration::from_secs(3600);
/// Tolerated clock difference with gatehouse when checking `exp` and `nbf`.
const LEEWAY_SECS: i64 = 5;
/// The largest JSON body this service reads.
const JSON_LIMIT: usize = 4096;
/// A metadata document or a JWKS larger than this is not one.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

// --- Settings ---

#[derive(Debug, Clone)]
pub struct Settings {
    /// gatehouse's issuer URL, exactly as its tokens carry it in `iss` and `aud`.
    pub issuer: String,
    /// The JWKS address; `None`: read `jwks_uri` from the issuer's metadata.
    pub jwks_uri: Option<String>,
    pub bind: SocketAddr,
    /// See [`MIN_REFETCH_INTERVAL`] (tests shorten it).
    pub min_refetch_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    name: &'static str,
    problem: String,
}

impl Settings {
    /// Settings for an issuer, everything else as by default.
    pub fn for_issuer(issuer: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| (name == "RESOURCE_SERVER_ISSUER").then(|| issuer.to_owned()))
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let issuer = get("RESOURCE_SERVER_ISSUER").ok_or_else(|| ConfigError {
            name: "RESOURCE_SERVER_ISSUER",
            problem: "missing: set it to gatehouse's issuer URL, e.g. http://127.0.0.1:8080".to_owned(),
        })?;
        // gatehouse writes its issuer without a trailing slash; tokens are compared with it exactly.
        let issuer = http_url("RESOURCE_SERVER_ISSUER", &issuer)?.trim_end_matches('/').to_owned();
        let jwks_uri =
            get("RESOURCE_SERVER_JWKS_URI").map(|uri| http_url("RESOURCE_SERVER_JWKS_URI", &uri)).transpose()?;
        // This repository builds reqwest without a TLS stack (nothing else in it needs one), so the
        // example can fetch over plain HTTP only. Your own service enables reqwest's `rustls` feature,
        // drops this check, and fetches keys over https from anything that is not on loopback:
        // whoever can change the keys it receives can sign tokens it will accept.
        let (name, fetched) = match &jwks_uri {
            Some(uri) => ("RESOURCE_SERVER_JWKS_URI", uri),
            None => ("RESOURCE_SERVER_ISSUER", &issuer),
        };
        if fetched.to_ascii_lowercase().starts_with("https:") {
            return Err(ConfigError {
                name,
                problem: format!(
                    "`{fetched}`: this example is built without TLS; see docs/protect-your-service.md to fetch keys over https"
                ),
            });
        }
        let bind = get("RESOURCE_SERVER_BIND").unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind = bind.trim().parse().map_err(|_| ConfigError {
            name: "RESOURCE_SERVER_BIND",
            problem: format!("`{bind}` is not an address like {DEFAULT_BIND}"),
        })?;
        Ok(Self { issuer, jwks_uri, bind, min_refetch_interval: MIN_REFETCH_INTERVAL })
    }
}

fn http_url(name: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let parsed = url::Url::parse(value)
        .map_err(|err| ConfigError { name, problem: format!("`{value}` is not a URL ({err})") })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError {
            name,
            problem: format!("`{value}` is not an http(s) URL without query or fragment"),
        });
    }
    Ok(value.to_owned())
}

// --- The published keys: cached per max-age, refetched on an unknown kid at most once per interval ---

/// A published key this service verifies with, and the one algorithm its JWK allows.
pub struct PublicKey {
    alg: Algorithm,
    decoding: DecodingKey,
}

/// The keys of one JWKS answer, and until when that answer is fresh (`None`: nothing fetched yet).
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<PublicKey>>,
    fresh_until: Option<Instant>,
}

/// Fetch bookkeeping, behind an async lock so that one request fetches while the others wait.
struct Refresh {
    /// Known once configured or read from the metadata.
    jwks_uri: Option<String>,
    last_attempt: Option<Instant>,
}

enum Lookup {
    Found(Arc<PublicKey>),
    /// A set is at hand and this kid is not in it.
    Unknown,
    /// No set could be fetched yet.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("GET {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("{url} is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not the JSON document expected")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the metadata at {url} is for the issuer `{found}`, not `{expected}` (RFC 8414 §3.3)")]
    WrongIssuer { url: String, found: String, expected: String },
    #[error("the issuer URL `{0}` has no metadata address")]
    NoMetadataUrl(String),
}

/// The signing keys gatehouse publishes, as this service last fetched them.
pub struct Jwks {
    client: reqwest::Client,
    issuer: String,
    min_refetch_interval: Duration,
    cached: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<Refresh>,
}

impl Jwks {
    pub fn new(settings: &Settings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            // The JWKS address is configured or published by the issuer: follow no one elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // Fetches are minutes apart and may come from different worker threads: no pooling.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self {
            client,
            issuer: settings.issuer.clone(),
            min_refetch_interval: settings.min_refetch_interval,
            cached: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(Refresh { jwks_uri: settings.jwks_uri.clone(), last_attempt: None }),
        })
    }

    fn cached(&self) -> Arc<KeySet> {
        Arc::clone(&self.cached.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The key `kid` names: from the cache while it is fresh; otherwise after fetching the set again.
    async fn find(&self, kid: &str) -> Lookup {
        let cached = self.cached();
        match cached.keys.get(kid) {
            Some(key) if cached.fresh_until.is_some_and(|until| Instant::now() < until) => {
                return Lookup::Found(Arc::clone(key));
            }
            // Stale: fetch again, unless another request already is (this one makes do with the copy it has).
            Some(_) => {
                if let Ok(refresh) = self.refresh.try_lock() {
                    self.fetch_if_allowed(refresh).await;
                }
            }
            // Not in the set: perhaps a key published since. Wait for a fetch in progress, or make one.
            None => self.fetch_if_allowed(self.refresh.lock().await).await,
        }
        let cached = self.cached();
        match cached.keys.get(kid) {
            Some(key) => Lookup::Found(Arc::clone(key)),
            None if cached.fresh_until.is_some() => Lookup::Unknown,
            None => Lookup::Unavailable,
        }
    }

    /// Fetches the set now, unless the last attempt was less than the minimum interval ago. On
    /// failure the cached set stays (and its error goes to the log).
    async fn fetch_if_allowed(&self, mut refresh: tokio::sync::MutexGuard<'_, Refresh>) {
        let started = Instant::now();
        if refresh.last_attempt.is_some_and(|at| started.duration_since(at) < self.min_refetch_interval) {
            return;
        }
        refresh.last_attempt = Some(started);
        match self.fetch(&mut refresh, started).await {
            Ok(set) => {
                log::info!("fetched {} signing key(s) for {}", set.keys.len(), self.issuer);
                *self.cached.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
            }
            Err(err) => match self.cached().fresh_until {
                Some(_) => log::warn!(
                    "fetching the signing keys failed; the ones fetched before still serve: {}",
                    report(&err)
                ),
                None => log::warn!("fetching the signing keys failed; tokens get 503 until it works: {}", report(&err)),
            },
        }
    }

    /// Fetches the set at start, so that a wrong address shows in the log at once.
    pub async fn prefetch(&self) {
        self.fetch_if_allowed(self.refresh.lock().await).await;
    }

    async fn fetch(&self, refresh: &mut Refresh, started: Instant) -> Result<KeySet, FetchError> {
        let jwks_uri = match &refresh.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                refresh.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let (max_age, body) = self.get(&jwks_uri).await?;
        let max_age = max_age.unwrap_or(DEFAULT_MAX_AGE).min(LONGEST_MAX_AGE);
        #[derive(Deserialize)]
        struct JwkSet {
            keys: Vec<Value>,
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|source| FetchError::Json { url: jwks_uri.clone(), source })?;
        // RFC 7517 §5: members this service cannot use are skipped, not fatal.
        let keys = set.keys.iter().filter_map(usable_key).collect();
        // The answer is as old as the request that asked for it.
        Ok(KeySet { keys, fresh_until: Some(started + max_age) })
    }

    /// `jwks_uri` from the issuer's RFC 8414 metadata, after checking that it describes this issuer.
    async fn discover(&self) -> Result<String, FetchError> {
        let url = metadata_url(&self.issuer).ok_or_else(|| FetchError::NoMetadataUrl(self.issuer.clone()))?;
        let (_, body) = self.get(&url).await?;
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|source| FetchError::Json { url: url.clone(), source })?;
        if metadata.issuer != self.issuer {
            return Err(FetchError::WrongIssuer { url, found: metadata.issuer, expected: self.issuer.clone() });
        }
        Ok(metadata.jwks_uri)
    }

    /// A small JSON document: how long it may be kept (its `max-age`) and its body, refused past
    /// [`MAX_DOCUMENT_BYTES`].
    async fn get(&self, url: &str) -> Result<(Option<Duration>, Vec<u8>), FetchError> {
        let failed = |source| FetchError::Request { url: url.to_owned(), source };
        let mut response =
            self.client.get(url).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url: url.to_owned(), status: response.status() });
        }
        let cache_control = response.headers().get_all(reqwest::header::CACHE_CONTROL).iter();
        let max_age = max_age(cache_control.filter_map(|value| value.to_str().ok()));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge { url: url.to_owned() });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((max_age, body))
    }
}

/// RFC 8414 §3.1: the well-known path goes between the host and the issuer's own path.
fn metadata_url(issuer: &str) -> Option<String> {
    let mut url = url::Url::parse(issuer).ok()?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    Some(url.to_string())
}

/// How long a response may be kept, from its `Cache-Control` values: `max-age`, zero for
/// `no-store`/`no-cache`, `None` when they say neither.
fn max_age<'a>(cache_control: impl Iterator<Item = &'a str>) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.flat_map(|value| value.split(',')) {
        let directive = directive.trim();
        let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            max_age = argument.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// A published key this service may verify with, by its kid: it names an asymmetric signature
/// algorithm (never `none` or an HMAC, which anyone holding the public set could "sign" with), is
/// meant for signatures, and its key type fits that algorithm.
fn usable_key(json: &Value) -> Option<(String, Arc<PublicKey>)> {
    let kid = json.get("kid")?.as_str()?.to_owned();
    if json.get("use").is_some_and(|usage| usage != "sig") {
        return None;
    }
    let alg: Algorithm = json.get("alg")?.as_str()?.parse().ok()?;
    if alg.family() == AlgorithmFamily::Hmac {
        return None;
    }
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(json.clone()).ok()?;
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    if decoding.family() != alg.family() {
        return None;
    }
    Some((kid, Arc::new(PublicKey { alg, decoding })))
}

// --- Verification (RFC 9068 §4) ---

/// Who called, as a valid access token says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    pub username: Option<String>,
    pub scopes: BTreeSet<String>,
    /// How the person signed in (RFC 8176): `mfa` when two factors were used.
    pub amr: Vec<String>,
}

/// Why a token is refused: the text is the `error_description` (RFC 6750 §3 allows no `"` or `\`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("The access token is malformed")]
    Malformed,
    #[error("The access token is not an RFC 9068 access token (typ at+jwt)")]
    WrongType,
    #[error("The access token demands header extensions (crit) this service does not support")]
    CriticalHeader,
    #[error("The access token is signed with a key this service does not know")]
    UnknownKey,
    #[error("The access token signature is invalid")]
    BadSignature,
    #[error("The access token was not issued by the authorization server this service trusts")]
    WrongIssuer,
    #[error("The access token is not meant for this service")]
    WrongAudience,
    #[error("The access token expired")]
    Expired,
    #[error("The access token is not valid yet")]
    NotYetValid,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Invalid(#[from] Rejection),
    #[error("The keys that verify access tokens cannot be fetched now; try again shortly")]
    KeysUnavailable,
}

/// The members of a token's header this service looks at.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

/// Reads the header without trusting it yet: three parts, `typ` at+jwt, no `crit`.
fn read_header(token: &str) -> Result<TokenHeader, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Rejection::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| Rejection::Malformed)?;
    let fields: serde_json::Map<String, Value> = serde_json::from_slice(&json).map_err(|_| Rejection::Malformed)?;
    // RFC 7515 §4.1.11: extensions the recipient does not understand make the token invalid.
    if fields.contains_key("crit") {
        return Err(Rejection::CriticalHeader);
    }
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    // RFC 9068 §4: `at+jwt` (the `application/` prefix may be written out; media types ignore case).
    let typ = text("typ").map(|typ| typ.to_ascii_lowercase());
    if !matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt")) {
        return Err(Rejection::WrongType);
    }
    let alg = text("alg").ok_or(Rejection::Malformed)?.to_owned();
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    nbf: Option<i64>,
    #[serde(default)]
    scope: String,
    preferred_username: Option<String>,
    #[serde(default)]
    amr: Vec<String>,
}

/// Checks gatehouse access tokens with the published keys alone.
pub struct Verifier {
    issuer: String,
    jwks: Jwks,
}

impl Verifier {
    pub fn new(settings: &Settings) -> Result<Self, reqwest::Error> {
        Ok(Self { issuer: settings.issuer.clone(), jwks: Jwks::new(settings)? })
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Everything RFC 9068 §4 asks, at `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Caller, VerifyError> {
        let header = read_header(token)?;
        // An algorithm no published key may have is refused before any key is looked up (or fetched).
        let alg: Algorithm = header.alg.parse().map_err(|_| Rejection::BadSignature)?;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(Rejection::BadSignature.into());
        }
        let kid = header.kid.ok_or(Rejection::UnknownKey)?;
        let key = match self.jwks.find(&kid).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(Rejection::UnknownKey.into()),
            Lookup::Unavailable => return Err(VerifyError::KeysUnavailable),
        };
        // Only the algorithm of the key the kid names.
        if alg != key.alg {
            return Err(Rejection::BadSignature.into());
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.issuer]);
        // gatehouse's tokens are addressed to the issuer itself (it has no registry of services).
        validation.set_audience(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // The time window is checked below, against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidKeyFormat => Rejection::BadSignature,
                    ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
                    ErrorKind::InvalidAudience => Rejection::WrongAudience,
                    _ => Rejection::Malformed,
                }
            })?
            .claims;
        if now >= claims.exp + LEEWAY_SECS {
            return Err(Rejection::Expired.into());
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(Rejection::NotYetValid.into());
        }
        Ok(Caller {
            sub: claims.sub,
            username: claims.preferred_username,
            scopes: claims.scope.split(' ').filter(|scope| !scope.is_empty()).map(str::to_owned).collect(),
            amr: claims.amr,
        })
    }
}

/// Seconds since the epoch, now.
fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

// --- HTTP: errors (RFC 6750 §3) ---

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("This request needs an access token")]
    MissingToken,
    #[error(transparent)]
    InvalidToken(Rejection),
    #[error("The access token lacks the scope {0}")]
    InsufficientScope(&'static str),
    /// RFC 9470: the token is fine, but the person did not sign in strongly enough for this.
    #[error("This needs a sign-in with a second factor")]
    InsufficientUserAuthentication,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("No such resource")]
    NotFound,
    #[error("The keys that verify access tokens cannot be fetched now; try again shortly")]
    KeysUnavailable,
    #[error("The service failed")]
    Internal,
}

impl From<VerifyError> for ApiError {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::Invalid(rejection) => ApiError::InvalidToken(rejection),
            VerifyError::KeysUnavailable => ApiError::KeysUnavailable,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    error_description: String,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::InsufficientUserAuthentication => "insufficient_user_authentication",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::NotFound => "not_found",
            ApiError::KeysUnavailable => "temporarily_unavailable",
            ApiError::Internal => "server_error",
        }
    }

    /// The `WWW-Authenticate` challenge: no error code when no token came (RFC 6750 §3.1).
    fn challenge(&self) -> Option<String> {
        match self {
            ApiError::MissingToken => Some("Bearer".to_owned()),
            ApiError::InvalidToken(rejection) => {
                Some(format!(r#"Bearer error="invalid_token", error_description="{rejection}""#))
            }
            ApiError::InsufficientScope(scope) => {
                Some(format!(r#"Bearer error="insufficient_scope", scope="{scope}""#))
            }
            ApiError::InsufficientUserAuthentication => {
                Some(format!(r#"Bearer error="insufficient_user_authentication", error_description="{self}""#))
            }
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken(_) | ApiError::InsufficientUserAuthentication => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(challenge) = self.challenge() {
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.json(ErrorBody { error: self.code(), error_description: self.to_string() })
    }
}

// --- HTTP: authorization per route ---

/// The token of the request's `Authorization: Bearer` header; `None` when there is none (another
/// scheme is no bearer token either).
fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let malformed = ApiError::InvalidToken(Rejection::Malformed);
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(malformed);
    }
    let value = value.to_str().map_err(|_| ApiError::InvalidToken(Rejection::Malformed))?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    // RFC 6750 §2.1: b64token.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)) {
        return Err(malformed);
    }
    Ok(Some(token))
}

/// Lets a request through only with a valid token that has `scope`, and hands its [`Caller`] on.
async fn authorize(
    scope: &'static str,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let caller = match authenticate(req.request()).await {
        Ok(caller) if caller.scopes.contains(scope) => caller,
        Ok(_) => return Ok(req.error_response(ApiError::InsufficientScope(scope))),
        Err(err) => return Ok(req.error_response(err)),
    };
    req.extensions_mut().insert(caller);
    next.call(req).await
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or(ApiError::Internal)?;
    let token = bearer_token(req)?.ok_or(ApiError::MissingToken)?;
    Ok(state.verifier.verify(token, unix_now()).await?)
}

/// A route that runs `handler` only for callers whose token has `scope`.
fn protected<F, Args>(route: actix_web::Route, scope: &'static str, handler: F) -> actix_web::Route
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    route.to(handler).wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| authorize(scope, req, next)))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // Put there by `authorize`; a handler outside `protected` finds nothing and fails closed.
        std::future::ready(req.extensions().get::<Caller>().cloned().ok_or(ApiError::Internal))
    }
}

// --- HTTP: the service itself ---

pub struct AppState {
    verifier: Verifier,
    /// Orders per caller (`sub`); a real service keeps them in its own database.
    orders: Mutex<HashMap<String, Vec<Order>>>,
}

impl AppState {
    pub fn new(settings: &Settings) -> Result<Self, reqwest::Error> {
        Ok(Self { verifier: Verifier::new(settings)?, orders: Mutex::new(HashMap::new()) })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

#[derive(Debug, Clone, Serialize)]
struct Order {
    id: usize,
    item: String,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

#[derive(Serialize)]
struct WhoAmI<'a> {
    sub: &'a str,
    username: Option<&'a str>,
    scopes: &'a BTreeSet<String>,
}

async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(WhoAmI { sub: &caller.sub, username: caller.username.as_deref(), scopes: &caller.scopes })
}

async fn list_orders(caller: Caller, state: web::Data<AppState>) -> HttpResponse {
    let orders = state.orders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mine = orders.get(&caller.sub).cloned().unwrap_or_default();
    HttpResponse::Ok().json(serde_json::json!({ "orders": mine }))
}

async fn create_order(
    caller: Caller,
    state: web::Data<AppState>,
    new: web::Json<NewOrder>,
) -> Result<HttpResponse, ApiError> {
    let item = new.into_inner().item.trim().to_owned();
    if item.is_empty() || item.chars().count() > 100 {
        return Err(ApiError::InvalidRequest("item must have 1 to 100 characters".to_owned()));
    }
    let mut orders = state.orders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mine = orders.entry(caller.sub).or_default();
    let order = Order { id: mine.len() + 1, item };
    mine.push(order.clone());
    Ok(HttpResponse::Created().json(order))
}

/// Deleting every order is the kind of thing worth a second factor: the caller must have signed in
/// with one (RFC 8176 `amr` has `mfa`), whatever scopes the token has.
async fn delete_orders(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !caller.amr.iter().any(|method| method == "mfa") {
        return Err(ApiError::InsufficientUserAuthentication);
    }
    let mut orders = state.orders.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    orders.remove(&caller.sub);
    Ok(HttpResponse::NoContent().finish())
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The routes, each with the scope it needs, and the state they share.
pub fn app_config(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let json = web::JsonConfig::default().limit(JSON_LIMIT).error_handler(|err, _| {
            use actix_web::error::JsonPayloadError;
            let problem = match err {
                JsonPayloadError::ContentType => "Content-Type must be application/json".to_owned(),
                JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                    format!("The body is larger than {JSON_LIMIT} bytes")
                }
                _ => r#"The body must be JSON like {"item": "tea"}"#.to_owned(),
            };
            ApiError::InvalidRequest(problem).into()
        });
        cfg.app_data(state)
            .app_data(json)
            .route("/whoami", protected(web::get(), "profile", whoami))
            .service(
                web::resource("/orders")
                    .route(protected(web::get(), "items:read", list_orders))
                    .route(protected(web::post(), "items:write", create_order))
                    .route(protected(web::delete(), "items:write", delete_orders)),
            )
            .default_service(web::to(not_found));
    }
}

/// Serves the routes on `listener` with `state`.
pub fn serve(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || App::new().configure(app_config(state.clone()))).listen(listener)?.run())
}

/// Builds the state from `settings` and serves on `listener` (tests call this on port 0).
pub fn run(listener: TcpListener, settings: &Settings) -> std::io::Result<Server> {
    serve(listener, web::Data::new(AppState::new(settings).map_err(std::io::Error::other)?))
}

/// An error and its causes on one line, for the log.
fn report(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("resource_server: {}", report(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_env()?;
    let listener = TcpListener::bind(settings.bind)?;
    let state = web::Data::new(AppState::new(&settings)?);
    state.verifier().jwks().prefetch().await;
    log::info!("listening on http://{}, accepting access tokens of {}", listener.local_addr()?, settings.issuer);
    serve(listener, state)?.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn settings_need_an_http_issuer_and_default_the_rest() {
        let ok = settings(&[("RESOURCE_SERVER_ISSUER", "http://127.0.0.1:8080/")]).unwrap();
        assert_eq!(
            (ok.issuer.as_str(), ok.jwks_uri, ok.bind.to_string()),
            ("http://127.0.0.1:8080", None, DEFAULT_BIND.to_owned())
        );
        assert!(settings(&[]).unwrap_err().starts_with("RESOURCE_SERVER_ISSUER: missing"));
        assert!(settings(&[("RESOURCE_SERVER_ISSUER", "ftp://x")]).is_err());
        assert!(settings(&[("RESOURCE_SERVER_ISSUER", "http://x"), ("RESOURCE_SERVER_BIND", "x")]).is_err());
        // Without a TLS stack, https is refused where keys would be fetched from, and only there.
        assert!(settings(&[("RESOURCE_SERVER_ISSUER", "https://auth.test")]).unwrap_err().contains("without TLS"));
        let direct =
            [("RESOURCE_SERVER_ISSUER", "https://auth.test"), ("RESOURCE_SERVER_JWKS_URI", "http://127.0.0.1:8081/k")];
        assert_eq!(settings(&direct).unwrap().jwks_uri.as_deref(), Some("http://127.0.0.1:8081/k"));
    }

    #[test]
    fn the_metadata_address_puts_the_well_known_path_before_the_issuers_own() {
        assert_eq!(
            metadata_url("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            metadata_url("http://auth.test/tenant").as_deref(),
            Some("http://auth.test/.well-known/oauth-authorization-server/tenant")
        );
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let of = |values: &[&str]| max_age(values.iter().copied());
        assert_eq!(of(&["public, max-age=300"]), Some(Duration::from_secs(300)));
        assert_eq!(of(&["public", "MAX-AGE=\"60\""]), Some(Duration::from_secs(60)));
        assert_eq!(of(&["no-store"]), Some(Duration::ZERO));
        assert_eq!(of(&["public"]), None);
        assert_eq!(of(&["max-age=soon"]), None);
    }
}
