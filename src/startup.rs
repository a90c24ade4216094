//! The only place that builds the HTTP server. Tests call [`run`] with a listener on port 0 and a
//! pool of their own database, so they exercise exactly what `gatehouse serve` runs.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{Logger, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer, web};

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::auth::throttle::LoginThrottle;
use crate::config::Settings;
use crate::db::PgPool;
use crate::routes;
use crate::state::AppState;

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
    Ok(AppState { pool, settings, issuer, keys, hasher, login_throttle })
}

/// Starts serving on `listener`; the returned server runs until it is stopped or gets SIGTERM/SIGINT,
/// after which it finishes the requests in flight.
pub fn run(listener: TcpListener, pool: PgPool, settings: Settings) -> Result<Server, StartupError> {
    let state = web::Data::new(build_state(&listener, pool, settings)?);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(request_logger())
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// One line per request. The path is logged without its query string, and no headers are, so
/// tokens, passwords and cookies never reach the log.
fn request_logger() -> Logger {
    Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#).custom_request_replace("method", |req| req.method().to_string())
}
