//! The only place that builds the HTTP server. Tests call [`run`] with a listener on port 0 and a
//! pool of their own database, so they exercise exactly what `gatehouse serve` runs.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_session::SessionMiddleware;
use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_web::body::BodySize;
use actix_web::body::MessageBody;
use actix_web::cookie::SameSite;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Condition, Next, from_fn};
use actix_web::{App, HttpServer, web};

use crate::auth::credentials::SecondFactors;
use crate::auth::jwt::VerifiedTokens;
use crate::auth::keys::{KeyError, KeyPolicy, KeyRing, Undecryptable};
use crate::auth::password::{ApiLoad, PasswordHasher, QueueConfig};
use crate::auth::second_factor::TotpSealer;
use crate::auth::second_factor::passkey::RelyingParty;
use crate::auth::session::{HybridSessionStore, IDLE_TIMEOUT, cookie_key};
use crate::auth::throttle::LoginThrottle;
use crate::auth::token_checks::TokenChecks;
use crate::config::Settings;
use crate::db::PgPool;
use crate::log_context::{self, RequestId};
use crate::mail::delivery::Mailer;
use crate::metrics::Metrics;
use crate::oauth::grant::{Grants, RefreshPolicy};
use crate::routes::metrics::MetricsEndpoint;
use crate::routes::web::pages::secure_headers;
use crate::routes::{self, AppState};
use utoipa::OpenApi as _;
use utoipa_actix_web::AppExt as _;

/// The session cookie's name. The `__Host-` prefix makes browsers refuse it unless it is `Secure`,
/// has `Path=/` and no `Domain`, so a sibling subdomain can neither set nor overwrite it.
pub const SESSION_COOKIE: &str = "__Host-gatehouse_session";
/// In `--dev` (plain HTTP, no `Secure`), where the prefix would make browsers drop the cookie.
pub const DEV_SESSION_COOKIE: &str = "gatehouse_session";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot prepare password hashing")]
    Hasher(#[from] crate::auth::password::HashError),
    #[error("cannot listen")]
    Listen(#[from] std::io::Error),
    #[error("cannot connect to the database to load the signing keys")]
    Database(#[from] diesel::ConnectionError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Mail(#[from] crate::mail::delivery::MailSetupError),
    #[error("cannot read the role definitions")]
    Roles(#[source] diesel::result::Error),
    #[error("cannot set up passkeys (check GATEHOUSE_WEBAUTHN_RP_ID and GATEHOUSE_WEBAUTHN_ORIGIN): {0}")]
    Passkeys(String),
}

/// Builds what every handler shares, for a server listening on `listener`.
pub fn build_state(
    listener: &TcpListener,
    pool: PgPool,
    settings: Settings,
) -> Result<web::Data<AppState>, StartupError> {
    let issuer = settings.issuer_for(listener.local_addr()?);
    let secret = settings.resolve_jwt_secret()?;
    settings.check_consistency()?;
    let metrics = Arc::new(Metrics::new());
    let metrics_endpoint = settings.metrics_bind.map(MetricsEndpoint::bind).transpose()?;
    let keys = load_keys(&settings, &secret, &issuer)?;
    let key_reloader = keys.keep_fresh(settings.database_url.clone(), settings.key_reload_every);
    let api_load = Arc::new(ApiLoad::default());
    let queue = QueueConfig { capacity: settings.hash_queue, threads: None, max_wait: None };
    let hasher = PasswordHasher::new(settings.bcrypt_cost, queue, Arc::clone(&api_load), &metrics)?;
    let policy = RefreshPolicy {
        token_ttl: chrono::Duration::from_std(settings.refresh_token_ttl).unwrap_or(chrono::Duration::days(14)),
        family_max_age: chrono::Duration::from_std(settings.refresh_family_max_age)
            .unwrap_or(chrono::Duration::days(90)),
    };
    let passkeys = match settings.webauthn_for(&issuer) {
        Some((rp_id, origin)) => {
            let rp = RelyingParty::new(&rp_id, &origin, "gatehouse")
                .map_err(|err| StartupError::Passkeys(err.to_string()))?;
            log::info!("passkeys: relying party {rp_id}, origin {origin}");
            Some(rp)
        }
        None => {
            log::warn!(
                "passkeys are off: the issuer {issuer} names an IP address, which WebAuthn cannot use; set GATEHOUSE_ISSUER to a name (or GATEHOUSE_WEBAUTHN_RP_ID)"
            );
            None
        }
    };
    let second_factors =
        Arc::new(SecondFactors { sealer: TotpSealer::new(&secret), policy: settings.second_factor, passkeys });
    let grants = Grants { pool: pool.clone(), hasher, keys, policy, metrics, second_factors };
    let login_throttle = LoginThrottle::new(settings.login_rate_per_minute);
    let session_key = cookie_key(settings.session_key.as_ref(), &secret);
    let role_scopes = load_role_scopes(&settings)?;
    let mailer = mailer_for(&settings)?;
    let mail = mailer.as_ref().map(|_| crate::mail::Sender::for_issuer(&issuer));
    Ok(web::Data::new(AppState {
        pool,
        settings,
        app_label: url::Url::parse(&issuer)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "gatehouse".to_owned()),
        role_scopes,
        mail,
        mailer,
        issuer,
        grants,
        login_throttle,
        session_key,
        api_load,
        key_reloader,
        metrics_endpoint,
    }))
}

/// The mailer: SMTP when `GATEHOUSE_SMTP_URL` is set; under `--dev` without it, mails are printed;
/// otherwise none (no mail feature appears).
fn mailer_for(settings: &Settings) -> Result<Option<Arc<Mailer>>, StartupError> {
    let mailer = match (&settings.smtp_url, settings.dev_mode) {
        (Some(url), _) => Mailer::smtp(url, settings.mail_from.as_deref().unwrap_or_default())?,
        (None, true) => Mailer::print(settings.mail_from.as_deref().unwrap_or("gatehouse <gatehouse@localhost>"))?,
        (None, false) => return Ok(None),
    };
    Ok(Some(Arc::new(mailer)))
}

/// The role definitions, read once: they change only with a migration, which a deploy applies
/// before every instance restarts.
fn load_role_scopes(settings: &Settings) -> Result<crate::domain::RoleScopes, StartupError> {
    use diesel::Connection as _;
    use secrecy::ExposeSecret as _;
    let mut conn = diesel::PgConnection::establish(settings.database_url.expose_secret())?;
    let by_role = crate::db::roles::scopes_by_role(&mut conn).map_err(StartupError::Roles)?;
    Ok(crate::domain::RoleScopes::new(by_role))
}

/// Loads the signing keys (making or rotating them if due) and keeps them fresh. A secret that cannot
/// decrypt the stored keys stops the start, except in `--dev` with a throwaway secret, which
/// replaces them (and says so).
fn load_keys(settings: &Settings, secret: &secrecy::SecretString, issuer: &str) -> Result<Arc<KeyRing>, StartupError> {
    use diesel::Connection as _;
    use secrecy::ExposeSecret as _;
    let policy = KeyPolicy {
        alg: settings.signing_alg,
        rotation: settings.key_rotation.and_then(|period| chrono::Duration::from_std(period).ok()),
        access_token_ttl: chrono::Duration::from_std(settings.access_token_ttl)
            .unwrap_or(chrono::Duration::minutes(15)),
    };
    let throwaway = settings.dev_mode && settings.jwt_secret.is_none();
    let undecryptable = if throwaway { Undecryptable::Replace } else { Undecryptable::Refuse };
    let mut conn = diesel::PgConnection::establish(settings.database_url.expose_secret())?;
    let ring = Arc::new(KeyRing::load(&mut conn, policy, issuer, secret, undecryptable, chrono::Utc::now())?);
    Ok(ring)
}

/// Starts serving on `listener`; the returned server runs until it is stopped or gets SIGTERM/SIGINT,
/// after which it finishes the requests in flight.
pub fn run(listener: TcpListener, pool: PgPool, settings: Settings) -> Result<Server, StartupError> {
    let state = build_state(&listener, pool, settings)?;
    serve(listener, state)
}

/// Serves `state` on `listener` (tests keep `state` to reach into the running server).
pub fn serve(listener: TcpListener, state: web::Data<AppState>) -> Result<Server, StartupError> {
    routes::metrics::start(&state)?;
    spawn_purger(state.pool.clone(), state.settings.purge_every);
    if let Some(mailer) = &state.mailer {
        // Every instance delivers: the outbox's leases keep them from sending a mail twice.
        tokio::spawn(crate::mail::delivery::run(
            state.pool.clone(),
            Arc::clone(mailer),
            Arc::clone(&state.grants.metrics),
        ));
    }
    let server = HttpServer::new(move || {
        let (app, document) = App::new()
            .into_utoipa_app()
            .openapi(routes::docs::ApiDoc::openapi())
            .app_data(state.clone())
            // Built here, once per worker thread: the bearer checks of one thread's requests share batches.
            .app_data(TokenChecks::new(state.pool.clone(), &state.grants.metrics))
            .app_data(VerifiedTokens::new())
            .configure(routes::documented)
            .split_for_parts();
        app.wrap(from_fn(routes::head_as_get))
            .wrap(from_fn(security_headers))
            .wrap(from_fn(routes::count_api_load))
            // Counted only when someone can read the counts.
            .wrap(Condition::new(state.metrics_endpoint.is_some(), from_fn(routes::metrics::record)))
            .wrap(from_fn(request_context))
            .configure(|cfg| routes::docs::configure(cfg, document))
            .configure(routes::web::pages::configure_static)
            // Everything else is the website, the only part with sessions.
            .service(
                web::scope("")
                    .wrap(session_middleware(&state))
                    .wrap(from_fn(routes::web::session_store_failures_as_503))
                    .wrap(from_fn(routes::web::with_room_for_the_session_user))
                    .configure(routes::web::configure)
                    .default_service(web::to(routes::web::fallback)),
            )
    })
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Deletes expired refresh tokens, revocations, sessions and throttle state every `every` (once at
/// start), on one instance at a time: an advisory lock makes the others skip that run. It ends with
/// the runtime that serves.
fn spawn_purger(pool: PgPool, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            match crate::db::run(&pool, |conn| crate::db::purge_expired(conn, chrono::Utc::now())).await {
                Ok(Some(purged)) if purged > 0 => log::info!("purged {purged} expired rows"),
                Ok(_) => {}
                Err(err) => log::warn!("purging expired rows failed: {}", crate::errors::report(&err)),
            }
        }
    });
}

fn session_middleware(state: &AppState) -> SessionMiddleware<HybridSessionStore> {
    let idle = CookieDuration::seconds(IDLE_TIMEOUT.num_seconds());
    let dev = state.settings.dev_mode;
    SessionMiddleware::builder(HybridSessionStore::new(state.pool.clone()), state.session_key.clone())
        .cookie_name(if dev { DEV_SESSION_COOKIE } else { SESSION_COOKIE }.to_owned())
        .cookie_path("/".to_owned())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(!dev)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(idle)
                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
        .build()
}

/// Security headers on every response. (An error that a middleware raises never becomes a response
/// here; `WebError` sets the same headers itself for that path.)
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let sign_in = routes::web::pages::leads_to_apps(req.path());
    let mut response = next.call(req).await?;
    secure_headers(response.headers_mut(), sign_in);
    Ok(response)
}

/// Gives every request its id and logs one line when it is answered, both inside the request's
/// scope, so every line logged while it is served (its database work on blocking threads included)
/// and every audit row it writes carries the same id, which the answer's `X-Request-Id` shows.
/// The path is logged without its query string and without a mailed link's token, quoted safely,
/// and no headers are, so tokens, passwords and cookies never reach the log and a client cannot
/// forge fields of the line.
async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let incoming = req.headers().get(log_context::HEADER).and_then(|value| value.to_str().ok());
    let id = RequestId::accept_or_new(incoming);
    let header_value = HeaderValue::from_str(id.as_str()).ok();
    let started = Instant::now();
    // The request line's parts, only when it will be written (the hot path pays nothing for it otherwise).
    let line = log::log_enabled!(target: "gatehouse::request", log::Level::Info).then(|| {
        let client = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| state.client_ip(req.request()))
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        (client, req.method().to_string(), log_context::loggable_path(req.path()).into_owned())
    });
    log_context::scope(id, async move {
        let answered = next.call(req).await;
        if let Some((client, method, path)) = line {
            let (status, bytes) = match &answered {
                Ok(response) => (
                    response.status(),
                    match response.response().body().size() {
                        BodySize::Sized(bytes) => bytes.to_string(),
                        _ => "-".to_owned(),
                    },
                ),
                Err(err) => (err.as_response_error().status_code(), "-".to_owned()),
            };
            log::info!(
                target: "gatehouse::request",
                "{client} \"{} {}\" {} {bytes} {:.3}ms",
                log_context::quoted(&method),
                log_context::quoted(&path),
                status.as_u16(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        let mut response = answered?;
        if let Some(value) = header_value {
            response.headers_mut().insert(HeaderName::from_static(log_context::HEADER), value);
        }
        Ok(response)
    })
    .await
}
