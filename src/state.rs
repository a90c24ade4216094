//! What every handler shares: built once in `startup`, handed to actix as `web::Data`.

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::config::Settings;
use crate::db::PgPool;

pub struct AppState {
    pub pool: PgPool,
    pub settings: Settings,
    /// The issuer as served: `GATEHOUSE_ISSUER`, or `http://` and the address actually bound.
    pub issuer: String,
    pub keys: JwtKeys,
    pub hasher: PasswordHasher,
    pub login_throttle: crate::auth::throttle::LoginThrottle,
    /// Signs and encrypts the session cookie.
    pub session_key: actix_web::cookie::Key,
}
