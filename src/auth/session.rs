//! Browser sessions: actix-session's store, and the typed view of what a session holds (who signed
//! in, when their credential check began, the CSRF token).
//!
//! An anonymous visitor costs no database row: their state (only the login form's CSRF token) is the
//! session key itself, inside the signed and encrypted cookie. Signing in renews the key and writes
//! a row to `sessions`, which every instance reads, so a session works on any instance and ends
//! everywhere at once when its row is deleted. Every load compares when the session's credential
//! check began with the user's invalidation cut-off, so a session written just after a password
//! change or sign-out-everywhere, by a sign-in that began before it, does not work.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionInsertError};
use actix_web::cookie::Key;
use actix_web::cookie::time::Duration as CookieDuration;
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::credentials::SignedIn;
use crate::db::{self, PgPool, users::User};
use crate::errors::ServerError;

/// A session lives at most this long, however active.
pub const ABSOLUTE_LIFETIME: chrono::Duration = chrono::Duration::hours(12);
/// A session unused for this long ends.
pub const IDLE_TIMEOUT: chrono::Duration = chrono::Duration::minutes(30);

const SESSION_ID: &str = "sid";
const USER_ID: &str = "user_id";
const SIGNED_IN_AT: &str = "signed_in_at";
const CSRF: &str = "csrf";
const PREVIOUS_SIGN_IN: &str = "previous_sign_in";
const CLIENT_ADDR: &str = "client_addr";
const USER_AGENT: &str = "user_agent";
/// Present while the sign-in is half done (password right, second step pending): until when the
/// second step may be given. Such a session is no sign-in: it opens `/login/verify` only.
const SECOND_STEP_UNTIL: &str = "second_step_until";
/// How the person signed in (RFC 8176 `amr` values).
const AMR: &str = "amr";
/// User agents are client-controlled: only a bounded prefix is kept.
const USER_AGENT_CHARS: usize = 256;

/// Keys of anonymous sessions start with this; what follows is their state. Keys of signed-in
/// sessions are random tokens (base64url, which never contains it).
const ANONYMOUS: &str = "anon:";

/// The 64-byte cookie key, derived with HKDF-SHA256 from `GATEHOUSE_SESSION_KEY` when set, otherwise
/// from the master secret under a different label, so the two secrets are never the same key.
pub fn cookie_key(session_key: Option<&SecretString>, master_secret: &SecretString) -> Key {
    let (input, label): (&SecretString, &[u8]) = match session_key {
        Some(key) => (key, b"gatehouse session cookie key"),
        None => (master_secret, b"gatehouse session cookie key, derived from the JWT secret"),
    };
    let mut okm = [0u8; 64];
    // 64 bytes is far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
    let _ = Hkdf::<Sha256>::new(None, input.expose_secret().as_bytes()).expand(label, &mut okm);
    Key::from(&okm)
}

/// actix-session's store: anonymous state in the cookie, signed-in sessions in the `sessions` table
/// (keys are random; only their hashes are stored).
#[derive(Clone)]
pub struct HybridSessionStore {
    pool: PgPool,
}

impl HybridSessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn insert_signed_in(
        &self,
        user_id: Uuid,
        state: HashMap<String, String>,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, anyhow::Error> {
        let key = SessionKey::try_from(crate::random::token(32))?;
        let hash = key_hash(&key);
        let now = Utc::now();
        let expires_at = expiry(ttl, now).min(now + ABSOLUTE_LIFETIME);
        let row_id = read::<Uuid>(&state, SESSION_ID).unwrap_or_else(Uuid::new_v4);
        let client_addr = read::<String>(&state, CLIENT_ADDR);
        let user_agent = read::<String>(&state, USER_AGENT);
        let value = serde_json::to_value(state)?;
        db::run(&self.pool, move |conn| {
            let session = db::sessions::NewSession {
                id: row_id,
                key_hash: &hash,
                user_id,
                state: value,
                expires_at,
                absolute_expires_at: now + ABSOLUTE_LIFETIME,
                client_addr: client_addr.as_deref(),
                user_agent: user_agent.as_deref(),
            };
            db::sessions::insert(conn, &session)
        })
        .await?;
        Ok(key)
    }
}

fn key_hash(key: &SessionKey) -> Vec<u8> {
    db::refresh_tokens::token_hash(key.as_ref())
}

fn anonymous_key(state: &HashMap<String, String>) -> Result<SessionKey, anyhow::Error> {
    Ok(SessionKey::try_from(format!("{ANONYMOUS}{}", serde_json::to_string(state)?))?)
}

fn expiry(ttl: &CookieDuration, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::seconds(ttl.whole_seconds())
}

/// actix-session keeps values JSON-encoded.
fn read<T: serde::de::DeserializeOwned>(state: &HashMap<String, String>, name: &str) -> Option<T> {
    state.get(name).and_then(|raw| serde_json::from_str(raw).ok())
}

/// The state without the sign-in: what is left of a session that was ended meanwhile.
fn without_sign_in(mut state: HashMap<String, String>) -> HashMap<String, String> {
    for name in [SESSION_ID, USER_ID, SIGNED_IN_AT, PREVIOUS_SIGN_IN, CLIENT_ADDR, USER_AGENT, SECOND_STEP_UNTIL, AMR] {
        state.remove(name);
    }
    state
}

impl SessionStore for HybridSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        if let Some(state) = session_key.as_ref().strip_prefix(ANONYMOUS) {
            // Signed-in state comes only from a session row: whatever an anonymous cookie carries
            // of a sign-in is dropped, so a cookie can never stand in for the row.
            return serde_json::from_str(state)
                .map(|state| Some(without_sign_in(state)))
                .map_err(|err| LoadError::Deserialization(err.into()));
        }
        let hash = key_hash(session_key);
        let now = Utc::now();
        let expires_at = now + IDLE_TIMEOUT;
        // A request with room for it gets the session's user in the same trip to the database.
        let wanted = LOADED_WITH_SESSION.try_with(|_| ()).is_ok();
        let loaded = db::run(&self.pool, move |conn| {
            let Some((state, user_id)) = db::sessions::load_live_and_touch(conn, &hash, expires_at, now)? else {
                return Ok(None);
            };
            let user = if wanted { Some(db::users::with_roles(conn, user_id)?) } else { None };
            Ok(Some((state, user_id, user)))
        })
        .await
        .map_err(|err| LoadError::Other(err.into()))?;
        let Some((state, user_id, user)) = loaded else { return Ok(None) };
        if let Some(user) = user {
            // Outside the room (`try_with` fails) there is nothing to keep.
            let _ = LOADED_WITH_SESSION.try_with(|room| *room.borrow_mut() = Some(LoadedUser { user_id, user }));
        }
        serde_json::from_value(state).map(Some).map_err(|err| LoadError::Deserialization(err.into()))
    }

    async fn save(&self, state: HashMap<String, String>, ttl: &CookieDuration) -> Result<SessionKey, SaveError> {
        match read::<Uuid>(&state, USER_ID) {
            Some(user_id) => self.insert_signed_in(user_id, state, ttl).await.map_err(SaveError::Other),
            None => anonymous_key(&state).map_err(SaveError::Other),
        }
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: HashMap<String, String>,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let signed_in = read::<Uuid>(&state, USER_ID);
        if session_key.as_ref().starts_with(ANONYMOUS) {
            return match signed_in {
                Some(user_id) => self.insert_signed_in(user_id, state, ttl).await.map_err(UpdateError::Other),
                None => anonymous_key(&state).map_err(UpdateError::Other),
            };
        }
        let hash = key_hash(&session_key);
        let now = Utc::now();
        let expires_at = expiry(ttl, now);
        let value = serde_json::to_value(&state).map_err(|err| UpdateError::Serialization(err.into()))?;
        let updated = signed_in.is_some()
            && db::run(&self.pool, move |conn| db::sessions::update_state(conn, &hash, value, expires_at, now))
                .await
                .map_err(|err| UpdateError::Other(err.into()))?;
        if updated {
            Ok(session_key)
        } else {
            // The session was ended meanwhile (e.g. sign out everywhere): never resurrect it under its
            // old key; carry on anonymously.
            anonymous_key(&without_sign_in(state)).map_err(UpdateError::Other)
        }
    }

    /// Nothing to write: loading the session pushed its idle expiry already (the cookie's own
    /// Max-Age is renewed by actix-session).
    async fn update_ttl(&self, _: &SessionKey, _: &CookieDuration) -> Result<(), anyhow::Error> {
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        if session_key.as_ref().starts_with(ANONYMOUS) {
            return Ok(());
        }
        let hash = key_hash(session_key);
        db::run(&self.pool, move |conn| db::sessions::delete(conn, &hash)).await?;
        Ok(())
    }
}

/// Who a session says is signed in, and since when.
#[derive(Debug, Clone, Copy)]
pub struct SessionSignIn {
    /// The `sessions` row's public id.
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// When the credential check behind this session began.
    pub signed_in_at: DateTime<Utc>,
}

pub fn sign_in_of(session: &Session) -> Option<SessionSignIn> {
    if session.contains_key(SECOND_STEP_UNTIL) {
        return None;
    }
    Some(SessionSignIn {
        session_id: session.get::<Uuid>(SESSION_ID).ok()??,
        user_id: session.get::<Uuid>(USER_ID).ok()??,
        signed_in_at: session.get::<DateTime<Utc>>(SIGNED_IN_AT).ok()??,
    })
}

/// Where a browser signs in from, for its owner's list of sessions.
pub struct Device<'a> {
    pub client: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// Marks the session as signed in under a NEW session key, so a key planted before the sign-in
/// (session fixation) is worth nothing afterwards.
pub fn sign_in(session: &Session, signed_in: &SignedIn, device: &Device<'_>) -> Result<(), SessionInsertError> {
    start(session, signed_in, device)?;
    session.insert(AMR, signed_in.method.amr())
}

/// The password was right and a second step is due: a session row (under a new key) that is no
/// sign-in, only the right to give the second step until `until`.
pub fn begin_second_step(
    session: &Session,
    signed_in: &SignedIn,
    device: &Device<'_>,
    until: DateTime<Utc>,
) -> Result<(), SessionInsertError> {
    start(session, signed_in, device)?;
    session.insert(SECOND_STEP_UNTIL, until)
}

/// A half-done sign-in waiting for its second step.
#[derive(Debug, Clone, Copy)]
pub struct PendingSignIn {
    pub user_id: Uuid,
    /// When the password check began: the sign-in counts from here.
    pub signed_in_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

pub fn pending_sign_in(session: &Session) -> Option<PendingSignIn> {
    Some(PendingSignIn {
        user_id: session.get::<Uuid>(USER_ID).ok()??,
        signed_in_at: session.get::<DateTime<Utc>>(SIGNED_IN_AT).ok()??,
        until: session.get::<DateTime<Utc>>(SECOND_STEP_UNTIL).ok()??,
    })
}

/// The second step passed: the session becomes a sign-in, under yet another new key and CSRF token.
pub fn complete_second_step(session: &Session, signed_in: &SignedIn) -> Result<(), SessionInsertError> {
    session.renew();
    session.remove(SECOND_STEP_UNTIL);
    session.insert(SESSION_ID, Uuid::new_v4())?;
    session.insert(AMR, signed_in.method.amr())?;
    if let Some(previous) = signed_in.previous_sign_in {
        session.insert(PREVIOUS_SIGN_IN, previous)?;
    }
    session.insert(CSRF, crate::random::token(32))
}

/// How the signed-in person signed in (`amr`).
pub fn amr_of(session: &Session) -> Vec<String> {
    session.get::<Vec<String>>(AMR).ok().flatten().unwrap_or_default()
}

fn start(session: &Session, signed_in: &SignedIn, device: &Device<'_>) -> Result<(), SessionInsertError> {
    session.renew();
    session.clear();
    session.insert(SESSION_ID, Uuid::new_v4())?;
    session.insert(USER_ID, signed_in.user_id)?;
    session.insert(SIGNED_IN_AT, signed_in.began_at)?;
    if let Some(previous) = signed_in.previous_sign_in {
        session.insert(PREVIOUS_SIGN_IN, previous)?;
    }
    if let Some(client) = device.client {
        session.insert(CLIENT_ADDR, client.to_string())?;
    }
    if let Some(agent) = device.user_agent {
        session.insert(USER_AGENT, agent.chars().take(USER_AGENT_CHARS).collect::<String>())?;
    }
    session.insert(CSRF, crate::random::token(32))?;
    Ok(())
}

/// Counts this session as begun at `cutoff` under a new key and a new CSRF token (after its own
/// password change): nothing of the session before the change, key or form token, works after it.
pub fn renew_sign_in(session: &Session, cutoff: DateTime<Utc>) -> Result<(), SessionInsertError> {
    session.renew();
    session.insert(SESSION_ID, Uuid::new_v4())?;
    session.insert(CSRF, crate::random::token(32))?;
    session.insert(SIGNED_IN_AT, cutoff)
}

pub fn previous_sign_in(session: &Session) -> Option<DateTime<Utc>> {
    session.get::<DateTime<Utc>>(PREVIOUS_SIGN_IN).ok().flatten()
}

/// The signed-in user of `session`, as they are now; `None` (and the session ended) when the user
/// is gone or inactive, or their sessions were ended after this one's credential check began.
pub async fn current_user(pool: &PgPool, session: &Session) -> Result<Option<(User, Vec<String>)>, ServerError> {
    let Some(sign_in) = sign_in_of(session) else { return Ok(None) };
    let user_id = sign_in.user_id;
    let found = match take_loaded_user(user_id) {
        Some(found) => found,
        None => db::run(pool, move |conn| db::users::with_roles(conn, user_id)).await?,
    };
    let valid = found.filter(|(user, _)| user.is_active && sign_in.signed_in_at >= user.tokens_valid_after);
    if valid.is_none() {
        session.purge();
    }
    Ok(valid)
}

/// The user (and roles) the store read with this request's session, if it did and it is `user_id`'s;
/// taken, so only the first look of a request uses it (a later one, after a change, reads anew).
fn take_loaded_user(user_id: Uuid) -> Option<Option<(User, Vec<String>)>> {
    let loaded = LOADED_WITH_SESSION.try_with(|room| room.borrow_mut().take()).ok().flatten()?;
    (loaded.user_id == user_id).then_some(loaded.user)
}

/// A user read with the session that names them.
struct LoadedUser {
    user_id: Uuid,
    /// `None`: no such user (any more).
    user: Option<(User, Vec<String>)>,
}

tokio::task_local! {
    /// Room for the user the session store reads with a request's session, in the same trip to the
    /// database as the session itself: nearly every request of a signed-in browser needs both, and
    /// each trip is a hop to a blocking thread and back (docs/performance.md, f). Per request: the
    /// website's scope runs every request inside [`with_room_for_its_user`].
    static LOADED_WITH_SESSION: RefCell<Option<LoadedUser>>;
}

/// Runs a request (the rest of its middleware and its handler) with room for the user its session
/// store load reads.
pub async fn with_room_for_its_user<F: std::future::Future>(request: F) -> F::Output {
    LOADED_WITH_SESSION.scope(RefCell::new(None), request).await
}

/// The session's CSRF token, created on first use (synchronizer-token pattern).
pub fn csrf_token(session: &Session) -> Result<String, SessionInsertError> {
    if let Ok(Some(token)) = session.get::<String>(CSRF) {
        return Ok(token);
    }
    let token = crate::random::token(32);
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
    use super::*;

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

    #[test]
    fn an_anonymous_key_carries_its_state_and_cannot_pass_for_a_signed_in_one() {
        let state = HashMap::from([(CSRF.to_owned(), "\"t\"".to_owned())]);
        let key = anonymous_key(&state).unwrap();
        assert!(key.as_ref().starts_with(ANONYMOUS));
        assert_eq!(serde_json::from_str::<HashMap<String, String>>(&key.as_ref()[ANONYMOUS.len()..]).unwrap(), state);
        assert!(!crate::random::token(32).contains(ANONYMOUS));
    }

    #[test]
    fn an_ended_session_keeps_nothing_of_its_sign_in() {
        let state: HashMap<String, String> = [
            SESSION_ID,
            USER_ID,
            SIGNED_IN_AT,
            PREVIOUS_SIGN_IN,
            CLIENT_ADDR,
            USER_AGENT,
            SECOND_STEP_UNTIL,
            AMR,
            CSRF,
        ]
        .iter()
        .map(|name| ((*name).to_owned(), "\"x\"".to_owned()))
        .collect();
        assert_eq!(without_sign_in(state).into_keys().collect::<Vec<_>>(), vec![CSRF.to_owned()]);
    }
}
