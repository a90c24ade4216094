//! Browser sessions: a PostgreSQL-backed store for actix-session, and the typed view of what a
//! session holds (who signed in, when, and the CSRF token).

use std::future::Future;
use std::pin::Pin;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionExt, SessionInsertError};
use actix_web::cookie::Key;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::credentials::SignedIn;
use crate::auth::guard::Requirement;
use crate::db::{self, PgPool, users::User};
use crate::domain::RoleName;
use crate::errors::WebError;
use crate::routes::web::pages::{Layout, LayoutUser};
use crate::state::AppState;

/// A session lives at most this long, however active.
pub const ABSOLUTE_LIFETIME: chrono::Duration = chrono::Duration::hours(12);
/// A session unused for this long ends.
pub const IDLE_TIMEOUT: chrono::Duration = chrono::Duration::minutes(30);

const USER_ID: &str = "user_id";
const SIGNED_IN_AT: &str = "signed_in_at";
const CSRF: &str = "csrf";
const PREVIOUS_SIGN_IN: &str = "previous_sign_in";

/// The 64-byte cookie key, derived with HKDF-SHA256 from `GATEHOUSE_SESSION_KEY` when set, otherwise
/// from the JWT secret under a different label, so the two secrets are never the same key.
pub fn cookie_key(session_key: Option<&SecretString>, jwt_secret: &SecretString) -> Key {
    let (input, label): (&SecretString, &[u8]) = match session_key {
        Some(key) => (key, b"gatehouse session cookie key"),
        None => (jwt_secret, b"gatehouse session cookie key, derived from the JWT secret"),
    };
    let mut okm = [0u8; 64];
    // 64 bytes is far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(None, input.expose_secret().as_bytes()).expand(label, &mut okm);
    Key::from(&okm)
}

/// actix-session's store over the `sessions` table. Keys are random, and only their hashes are stored.
#[derive(Clone)]
pub struct PgSessionStore {
    pool: PgPool,
}

impl PgSessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn key_hash(key: &SessionKey) -> Vec<u8> {
    db::refresh_tokens::token_hash(key.as_ref())
}

fn expiry(ttl: &CookieDuration, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::seconds(ttl.whole_seconds())
}

/// actix-session keeps values JSON-encoded; the signed-in user's id is copied into its own column.
fn user_of(state: &HashMap<String, String>) -> Option<Uuid> {
    state.get(USER_ID).and_then(|raw| serde_json::from_str::<Uuid>(raw).ok())
}

impl SessionStore for PgSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        let hash = key_hash(session_key);
        let state = db::run(&self.pool, move |conn| Ok(db::sessions::load_live(conn, &hash, Utc::now())?))
            .await
            .map_err(|err| LoadError::Other(err.into()))?;
        state
            .map(|value| serde_json::from_value(value).map_err(|err| LoadError::Deserialization(err.into())))
            .transpose()
    }

    async fn save(&self, state: HashMap<String, String>, ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        let key = SessionKey::try_from(crate::auth::random_token(32)).map_err(|err| SaveError::Other(err.into()))?;
        let hash = key_hash(&key);
        let now = Utc::now();
        let expires_at = expiry(ttl, now).min(now + ABSOLUTE_LIFETIME);
        let user_id = user_of(&state);
        let value = serde_json::to_value(state).map_err(|err| SaveError::Serialization(err.into()))?;
        db::run(&self.pool, move |conn| {
            let session = db::sessions::NewSession {
                key_hash: &hash,
                user_id,
                state: value,
                created_at: now,
                expires_at,
                absolute_expires_at: now + ABSOLUTE_LIFETIME,
            };
            Ok(db::sessions::insert(conn, &session)?)
        })
        .await
        .map_err(|err| SaveError::Other(err.into()))?;
        Ok(key)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: HashMap<String, String>,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let hash = key_hash(&session_key);
        let user_id = user_of(&state);
        let value = serde_json::to_value(&state).map_err(|err| UpdateError::Serialization(err.into()))?;
        let expires_at = expiry(ttl, Utc::now());
        let updated =
            db::run(&self.pool, move |conn| Ok(db::sessions::update_state(conn, &hash, user_id, value, expires_at)?))
                .await
                .map_err(|err| UpdateError::Other(err.into()))?;
        if updated {
            Ok(session_key)
        } else {
            // The session was ended meanwhile (e.g. sign out everywhere): never resurrect it under
            // its old key; start a fresh one without the sign-in.
            let mut fresh = state;
            fresh.remove(USER_ID);
            fresh.remove(SIGNED_IN_AT);
            self.save(fresh, ttl).await.map_err(|err| UpdateError::Other(anyhow::anyhow!("{err}")))
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &CookieDuration) -> Result<(), anyhow::Error> {
        let hash = key_hash(session_key);
        let expires_at = expiry(ttl, Utc::now());
        db::run(&self.pool, move |conn| Ok(db::sessions::touch(conn, &hash, expires_at)?)).await?;
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let hash = key_hash(session_key);
        db::run(&self.pool, move |conn| Ok(db::sessions::delete(conn, &hash)?)).await?;
        Ok(())
    }
}

/// Who a session says is signed in, and since when.
#[derive(Debug, Clone, Copy)]
struct SessionSignIn {
    user_id: Uuid,
    signed_in_at: DateTime<Utc>,
}

fn session_sign_in(session: &Session) -> Option<SessionSignIn> {
    let user_id = session.get::<Uuid>(USER_ID).ok()??;
    let signed_in_at = session.get::<DateTime<Utc>>(SIGNED_IN_AT).ok()??;
    Some(SessionSignIn { user_id, signed_in_at })
}

/// Marks the session as signed in under a NEW session key, so a key planted before the sign-in
/// (session fixation) is worth nothing afterwards.
pub fn sign_in(session: &Session, signed_in: &SignedIn, now: DateTime<Utc>) -> Result<(), SessionInsertError> {
    session.renew();
    session.clear();
    session.insert(USER_ID, signed_in.user_id)?;
    session.insert(SIGNED_IN_AT, now)?;
    if let Some(previous) = signed_in.previous_sign_in {
        session.insert(PREVIOUS_SIGN_IN, previous)?;
    }
    session.insert(CSRF, crate::auth::random_token(32))?;
    Ok(())
}

/// A browser whose session belongs to an existing, active user whose sessions were not ended since.
pub struct SignedInUser {
    pub user: User,
    pub roles: Vec<String>,
    pub previous_sign_in: Option<DateTime<Utc>>,
    pub csrf_token: String,
}

impl SignedInUser {
    pub fn is_admin(&self) -> bool {
        self.authorize(Requirement { scope: None, role: Some(RoleName::ADMIN) }).is_ok()
    }

    /// The shared authorization rule, answered the website way (the 403 page).
    pub fn authorize(&self, requirement: Requirement) -> Result<(), WebError> {
        requirement.check(&self.roles, None).map_err(|_| WebError::Forbidden { viewer: Box::new(self.layout_user()) })
    }

    pub fn layout(&self) -> Layout {
        Layout::signed_in(self.layout_user())
    }

    fn layout_user(&self) -> LayoutUser {
        LayoutUser {
            username: self.user.username.clone(),
            is_admin: self.roles.iter().any(|role| role == RoleName::ADMIN),
            csrf_token: self.csrf_token.clone(),
        }
    }
}

/// `Some` when signed in; never redirects.
pub struct MaybeSignedIn(pub Option<SignedInUser>);

impl FromRequest for SignedInUser {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
            current_user(&req).await?.ok_or(WebError::NotSignedIn { next })
        })
    }
}

impl FromRequest for MaybeSignedIn {
    type Error = WebError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { current_user(&req).await.map(MaybeSignedIn) })
    }
}

async fn current_user(req: &HttpRequest) -> Result<Option<SignedInUser>, WebError> {
    let session = req.get_session();
    let Some(sign_in) = session_sign_in(&session) else { return Ok(None) };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| WebError::Internal("AppState is not registered".to_owned()))?;
    let user_id = sign_in.user_id;
    let found = db::run(&state.pool, move |conn| Ok(db::users::with_roles(conn, user_id)?)).await?;
    let valid = found.filter(|(user, _)| user.is_active && sign_in.signed_in_at >= user.tokens_valid_after);
    let Some((user, roles)) = valid else {
        // Deactivated, deleted, or signed out everywhere since: this session is over.
        session.purge();
        return Ok(None);
    };
    let csrf_token = csrf_token(&session).map_err(WebError::session)?;
    let previous_sign_in = session.get::<DateTime<Utc>>(PREVIOUS_SIGN_IN).ok().flatten();
    Ok(Some(SignedInUser { user, roles, previous_sign_in, csrf_token }))
}

/// The session's CSRF token, created on first use (synchronizer-token pattern).
pub fn csrf_token(session: &Session) -> Result<String, SessionInsertError> {
    if let Ok(Some(token)) = session.get::<String>(CSRF) {
        return Ok(token);
    }
    let token = crate::auth::random_token(32);
    session.insert(CSRF, &token)?;
    Ok(token)
}

/// True when `submitted` is this session's CSRF token (compared in constant time).
pub fn csrf_matches(session: &Session, submitted: Option<&str>) -> bool {
    match (session.get::<String>(CSRF).ok().flatten(), submitted) {
        (Some(expected), Some(submitted)) => expected.as_bytes().ct_eq(submitted.as_bytes()).into(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::cookie_key;
    use secrecy::SecretString;

    #[test]
    fn the_cookie_key_follows_the_session_key_when_set_and_never_equals_the_jwt_secret() {
        let jwt: SecretString = "j".repeat(40).into();
        let one: SecretString = "a".repeat(40).into();
        let two: SecretString = "b".repeat(40).into();
        let derived = cookie_key(None, &jwt);
        assert_eq!(derived.master(), cookie_key(None, &jwt).master(), "derivation is deterministic");
        assert_ne!(&derived.master()[..40], "j".repeat(40).as_bytes());
        // Rotating GATEHOUSE_SESSION_KEY changes the cookie key without touching the JWT secret…
        assert_ne!(cookie_key(Some(&one), &jwt).master(), cookie_key(Some(&two), &jwt).master());
        // …and rotating the JWT secret leaves a configured session key's cookies valid.
        let other_jwt: SecretString = "k".repeat(40).into();
        assert_eq!(cookie_key(Some(&one), &jwt).master(), cookie_key(Some(&one), &other_jwt).master());
        assert_ne!(cookie_key(Some(&one), &jwt).master(), derived.master());
    }
}
