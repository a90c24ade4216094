//! The only place that builds the HTTP server. Tests call [`run`] with a listener on port 0 and a
//! pool of their own database, so they exercise exactly what `gatehouse serve` runs.

use std::net::TcpListener;

use actix_session::SessionMiddleware;
use actix_session::config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy};
use actix_web::body::MessageBody;
use actix_web::cookie::SameSite;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Logger, Next, from_fn};
use actix_web::{App, HttpServer, web};

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::auth::session::{IDLE_TIMEOUT, PgSessionStore, cookie_key};
use crate::auth::throttle::LoginThrottle;
use crate::auth::token_checks::TokenChecks;
use crate::config::Settings;
use crate::db::PgPool;
use crate::routes;
use crate::routes::web::pages::secure_headers;
use crate::state::AppState;
use utoipa::OpenApi as _;
use utoipa_actix_web::AppExt as _;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gatehouse_session";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot prepare password hashing: {0}")]
    Hasher(#[from] crate::auth::password::HashError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Builds the shared state for a server listening on `listener`.
pub fn build_state(listener: &TcpListener, pool: PgPool, settings: Settings) -> Result<AppState, StartupError> {
    let issuer = settings.issuer_for(listener.local_addr()?);
    let secret = settings.resolve_jwt_secret()?;
    let keys = JwtKeys::new(&secret, &issuer, settings.access_token_ttl);
    let hasher = PasswordHasher::new(settings.bcrypt_cost)?;
    let login_throttle = LoginThrottle::new(settings.login_rate_per_minute);
    let session_key = cookie_key(settings.session_key.as_ref(), &secret);
    Ok(AppState { pool, settings, issuer, keys, hasher, login_throttle, session_key })
}

/// Starts serving on `listener`; the returned server runs until it is stopped or gets SIGTERM/SIGINT,
/// after which it finishes the requests in flight.
pub fn run(listener: TcpListener, pool: PgPool, settings: Settings) -> Result<Server, StartupError> {
    let state = web::Data::new(build_state(&listener, pool, settings)?);
    let server = HttpServer::new(move || {
        let (app, document) = App::new()
            .into_utoipa_app()
            .openapi(routes::docs::ApiDoc::openapi())
            .app_data(state.clone())
            // Built here, once per worker thread: the bearer checks of one thread's requests share batches.
            .app_data(TokenChecks::new(state.pool.clone()))
            .configure(routes::documented)
            .split_for_parts();
        app.wrap(from_fn(routes::head_as_get))
            .wrap(from_fn(security_headers))
            .wrap(request_logger())
            .configure(|cfg| routes::docs::configure(cfg, document))
            .configure(routes::web::pages::configure_static)
            // Everything else is the website, the only part with sessions.
            .service(
                web::scope("")
                    .wrap(session_middleware(&state))
                    .wrap(from_fn(routes::web::session_store_failures_as_503))
                    .configure(routes::web::configure)
                    .default_service(web::to(routes::web::fallback)),
            )
    })
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

fn session_middleware(state: &AppState) -> SessionMiddleware<PgSessionStore> {
    let idle = CookieDuration::seconds(IDLE_TIMEOUT.num_seconds());
    SessionMiddleware::builder(PgSessionStore::new(state.pool.clone()), state.session_key.clone())
        .cookie_name(SESSION_COOKIE.to_owned())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(!state.settings.dev_mode)
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
    let mut response = next.call(req).await?;
    secure_headers(response.headers_mut());
    Ok(response)
}

/// One line per request. The path is logged without its query string, and no headers are, so
/// tokens, passwords and cookies never reach the log.
fn request_logger() -> Logger {
    Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#).custom_request_replace("method", |req| req.method().to_string())
}
