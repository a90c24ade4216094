//! The signing keys: which key signs, which are published, which are accepted, and how they rotate.
//!
//! Keys live in PostgreSQL (private parts encrypted under a key derived from the master secret), so
//! every instance signs with the same current key and picks up a key another instance (or the CLI)
//! made within [`RELOAD_EVERY`]. A key's life follows from activation times alone:
//!
//! * **next**: made [`PUBLICATION_DELAY`] before it activates — published in the JWKS (whose
//!   `max-age` is [`JWKS_MAX_AGE`]) before any token it signs can be seen;
//! * **current**: the newest activated key; it signs;
//! * **retired**: superseded, still published and accepted until every token it signed has expired
//!   (the access-token lifetime plus [`RETIREMENT_MARGIN`]), then gone.
//!
//! HS256 "keys" are `GATEHOUSE_JWT_SECRET` itself: a row records when HS256 was current, so after a
//! change of algorithm the old algorithm's tokens are accepted until they expire, and no longer.
//! A token is accepted only with the algorithm of the key its `kid` names.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use hkdf::Hkdf;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::auth::jwt::{ACCESS_TOKEN_TYP, AccessClaims, Subject, TokenRejection, TokenSubject, jti_at, read_header};
use crate::config::SigningAlgorithm;
use crate::db::{self, PgPool, locks, signing_keys::StoredKey};
use crate::domain::ScopeSet;

/// `Cache-Control: max-age` of the JWKS: how long a verifier may keep a copy.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// How often every instance reloads the keys (and the one holding the lock rotates them).
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// Between two reloads asked for by tokens whose key this instance has not loaded: tokens with
/// made-up kids cost the database at most one reload a second per instance.
const RELOAD_FOR_UNKNOWN_KID_EVERY: chrono::Duration = chrono::Duration::seconds(1);
/// A new key is published this long before it signs, so its first token never meets a set that
/// lacks it: an instance that has not reloaded yet serves the old set for up to one reload period
/// after the key is made, a verifier may keep that copy one max-age, and one more reload period
/// covers a slow reload (a busy pool, the rotation lock) and the instances' clocks differing.
pub const PUBLICATION_DELAY: chrono::Duration =
    chrono::Duration::seconds((JWKS_MAX_AGE.as_secs() + 2 * RELOAD_EVERY.as_secs()) as i64);
// Checked when compiling, not by a test: a new key is published at least one max-age ahead.
const _: () = assert!(PUBLICATION_DELAY.num_seconds() >= JWKS_MAX_AGE.as_secs() as i64);
/// A retired key stays this long past the access-token lifetime: instances that have not reloaded
/// yet may still sign with it for up to [`RELOAD_EVERY`], and clocks differ a little.
pub const RETIREMENT_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// Rows of keys gone from the set are deleted this long after (their private parts with them).
const DELETE_AFTER: chrono::Duration = chrono::Duration::days(1);
/// The kid of the HS256 row a pre-keys deployment gets from its migration: its tokens carry no kid.
const LEGACY_HS256_KID: &str = "hs256-legacy";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "GATEHOUSE_JWT_SECRET cannot decrypt the signing key {kid} stored in the database: start with the secret the keys were made with, or re-encrypt them with `gatehouse keys re-encrypt`"
    )]
    Undecryptable { kid: String },
    #[error("the signing key {kid} stored in the database is not usable")]
    Damaged {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot make a signing key")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot connect to the database to read the signing keys")]
    Connect(#[source] diesel::ConnectionError),
    #[error("the signing keys could not be read or written")]
    Query(#[from] diesel::result::Error),
}

// --- Keys at rest ---

/// Encrypts private keys at rest: ChaCha20-Poly1305 under a key derived from the master secret,
/// a random nonce stored first, the kid as associated data (a ciphertext moved to another row fails).
pub struct KeyCipher(ChaCha20Poly1305);

impl KeyCipher {
    pub fn new(master_secret: &SecretString) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expansion cannot fail.
        let _ = Hkdf::<Sha256>::new(None, master_secret.expose_secret().as_bytes())
            .expand(b"gatehouse signing keys at rest", key.as_mut());
        Self(ChaCha20Poly1305::new(&Key::from(*key)))
    }

    pub fn seal(&self, kid: &str, private_der: &[u8]) -> Result<Vec<u8>, KeyError> {
        let nonce = crate::random::bytes(12);
        let sealed = self
            .0
            .encrypt(&nonce_of(&nonce), Payload { msg: private_der, aad: kid.as_bytes() })
            .map_err(|_| KeyError::Generate("encryption failed".into()))?;
        Ok([nonce, sealed].concat())
    }

    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let undecryptable = || KeyError::Undecryptable { kid: kid.to_owned() };
        let (nonce, ciphertext) = sealed.split_at_checked(12).ok_or_else(undecryptable)?;
        self.0
            .decrypt(&nonce_of(nonce), Payload { msg: ciphertext, aad: kid.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| undecryptable())
    }
}

/// The 12-byte nonce stored in front of a ciphertext (callers pass exactly 12 bytes).
fn nonce_of(bytes: &[u8]) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[..12]);
    Nonce::from(nonce)
}

fn jose(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::Es256 => Algorithm::ES256,
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        SigningAlgorithm::Hs256 => Algorithm::HS256,
    }
}

/// A fresh asymmetric key: its kid (RFC 7638 thumbprint), public JWK and PKCS#8 private key.
pub struct NewKey {
    pub kid: String,
    pub public_jwk: Jwk,
    pub private_der: Zeroizing<Vec<u8>>,
}

pub fn generate(alg: SigningAlgorithm) -> Result<NewKey, KeyError> {
    use p256::pkcs8::EncodePrivateKey as _;
    let failed = |err: &dyn std::fmt::Display| KeyError::Generate(err.to_string().into());
    let private_der: Zeroizing<Vec<u8>> = match alg {
        SigningAlgorithm::Es256 => loop {
            // A random scalar; the one in 2^128 that is out of range is simply drawn again.
            let seed = Zeroizing::new(crate::random::bytes(32));
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&seed) {
                break Zeroizing::new(key.to_pkcs8_der().map_err(|err| failed(&err))?.as_bytes().to_vec());
            }
        },
        SigningAlgorithm::EdDsa => {
            // Any 32 bytes are an Ed25519 secret key. PKCS#8 v1 (RFC 8410, no public key inside):
            // the form jsonwebtoken reads the public key back from.
            let mut keypair = ed25519_dalek::pkcs8::KeypairBytes { secret_key: [0u8; 32], public_key: None };
            keypair.secret_key.copy_from_slice(&crate::random::bytes(32));
            let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&keypair).map_err(|err| failed(&err));
            keypair.secret_key.fill(0);
            Zeroizing::new(der?.as_bytes().to_vec())
        }
        SigningAlgorithm::Hs256 => return Err(KeyError::Generate("HS256 has no key to generate".into())),
    };
    let encoding = encoding_key(alg, &private_der);
    let mut public_jwk = Jwk::from_encoding_key(&encoding, jose(alg)).map_err(|err| failed(&err))?;
    let kid = public_jwk.thumbprint(ThumbprintHash::SHA256).map_err(|err| failed(&err))?;
    public_jwk.common.key_id = Some(kid.clone());
    public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(NewKey { kid, public_jwk, private_der })
}

fn encoding_key(alg: SigningAlgorithm, private_der: &[u8]) -> EncodingKey {
    match alg {
        SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(private_der),
        _ => EncodingKey::from_ec_der(private_der),
    }
}

/// The kid of the HS256 key that `secret` is: the thumbprint of its symmetric JWK (never published).
pub fn hs256_kid(secret: &SecretString) -> Result<String, KeyError> {
    let key =
        EncodingKey::from_secret(secret.expose_secret().as_bytes()).map_err(|err| KeyError::Generate(err.into()))?;
    Jwk::from_encoding_key(&key, Algorithm::HS256)
        .and_then(|jwk| jwk.thumbprint(ThumbprintHash::SHA256))
        .map_err(|err| KeyError::Generate(err.into()))
}

// --- The timeline ---

/// What the keys must look like: the algorithm new keys use, and how often they change.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    pub alg: SigningAlgorithm,
    /// `None`: no automatic rotation.
    pub rotation: Option<chrono::Duration>,
    pub access_token_ttl: chrono::Duration,
}

impl KeyPolicy {
    /// How long past its retirement a key is still accepted and published.
    fn grace(&self) -> chrono::Duration {
        self.access_token_ttl + RETIREMENT_MARGIN
    }
}

/// Where a key is in its life at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Current,
    /// Superseded at `since`; accepted and published until `until`.
    Retired {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// Past its retirement (at `since`) and grace: no longer accepted.
    Expired {
        since: DateTime<Utc>,
    },
}

impl KeyState {
    pub fn name(&self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired { .. } => "retired",
            KeyState::Expired { .. } => "expired",
        }
    }

    /// Next, current or retired: in the set (published, and its tokens accepted).
    pub fn is_accepted(&self) -> bool {
        !matches!(self, KeyState::Expired { .. })
    }
}

/// A key's identity and times, as the timeline needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTimes {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
}

/// Each key's state at `now`; `keys` sorted by activation.
pub fn states(keys: &[KeyTimes], policy: &KeyPolicy, now: DateTime<Utc>) -> Vec<KeyState> {
    let current = keys.iter().rposition(|key| key.activates_at <= now);
    keys.iter()
        .enumerate()
        .map(|(index, key)| match current {
            _ if key.activates_at > now => KeyState::Next,
            Some(current) if index == current => KeyState::Current,
            _ => {
                // Superseded when the key after it activated (every key before `current` has one).
                let since = keys.get(index + 1).map_or(now, |successor| successor.activates_at);
                let until = since + policy.grace();
                if until > now { KeyState::Retired { since, until } } else { KeyState::Expired { since } }
            }
        })
        .collect()
}

/// A change rotation must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create { alg: SigningAlgorithm, activates_at: DateTime<Utc> },
    Delete { kid: String },
}

/// What to do at `now` so that the keys follow `policy`; `hs256` is the kid of the configured secret.
pub fn plan(keys: &[KeyTimes], policy: &KeyPolicy, hs256: &str, now: DateTime<Utc>) -> Vec<Step> {
    let states = states(keys, policy, now);
    let mut steps: Vec<Step> = keys
        .iter()
        .zip(&states)
        .filter(
            |(_, state)| matches!(state, KeyState::Expired { since } if *since + policy.grace() + DELETE_AFTER <= now),
        )
        .map(|(key, _)| Step::Delete { kid: key.kid.clone() })
        .collect();
    let current = keys.iter().zip(&states).find(|(_, state)| **state == KeyState::Current).map(|(key, _)| key);
    let pending = keys.iter().zip(&states).any(|(key, state)| *state == KeyState::Next && key.alg == policy.alg);
    // An HS256 row signs only if it is this secret's: the legacy row (tokens from before keys had
    // ids) and another secret's row never sign here.
    let can_sign = |key: &KeyTimes| key.alg != SigningAlgorithm::Hs256 || key.kid == hs256;
    let serves_policy = |key: &KeyTimes| key.alg == policy.alg && can_sign(key);
    // No moment without a key allowed to sign: while an asymmetric key waits out its publication
    // delay behind a current key that cannot sign here (a database upgraded from before keys had
    // ids), the configured secret signs (HS256 publishes nothing, so it may sign at once).
    let gap = current.map_or(pending, |current| !can_sign(current));
    if gap && policy.alg != SigningAlgorithm::Hs256 {
        steps.push(Step::Create { alg: SigningAlgorithm::Hs256, activates_at: now });
    }
    match current {
        // Nothing yet (a new deployment): the first key signs at once; nobody can have cached a set.
        None if !pending => steps.push(Step::Create { alg: policy.alg, activates_at: now }),
        Some(current) if !serves_policy(current) && !pending => {
            // A new algorithm (or HS256 secret). HS256 publishes nothing: it may sign at once (the
            // other instances load it when its first token reaches them). An asymmetric key is
            // published first, also after HS256: a verifier may hold the empty set HS256 served.
            let immediate = policy.alg == SigningAlgorithm::Hs256;
            let activates_at = if immediate { now } else { now + PUBLICATION_DELAY };
            steps.push(Step::Create { alg: policy.alg, activates_at });
        }
        Some(current) if !pending && policy.alg != SigningAlgorithm::Hs256 => {
            if let Some(period) = policy.rotation
                && current.activates_at + period <= now
            {
                steps.push(Step::Create { alg: policy.alg, activates_at: now + PUBLICATION_DELAY });
            }
        }
        _ => {}
    }
    steps
}

/// The stored keys with their states at `now`, read only: nothing is made, rotated or decrypted.
pub fn stored_timeline(
    conn: &mut PgConnection,
    policy: &KeyPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<(KeyTimes, KeyState)>, KeyError> {
    let times: Vec<KeyTimes> = db::signing_keys::all(conn)?.iter().filter_map(times_of).collect();
    let states = states(&times, policy, now);
    Ok(times.into_iter().zip(states).collect())
}

/// For each stored key with a private part: whether `secret` can decrypt it (read only; what
/// `gatehouse keys list` shows, e.g. after `keys re-encrypt`).
pub fn readable_with(
    conn: &mut PgConnection,
    secret: &SecretString,
) -> Result<std::collections::HashMap<String, bool>, KeyError> {
    let cipher = KeyCipher::new(secret);
    Ok(db::signing_keys::all(conn)?
        .into_iter()
        .filter_map(|key| key.private_key.map(|sealed| (key.kid.clone(), cipher.open(&key.kid, &sealed).is_ok())))
        .collect())
}

fn times_of(stored: &StoredKey) -> Option<KeyTimes> {
    Some(KeyTimes {
        kid: stored.kid.clone(),
        alg: SigningAlgorithm::parse(&stored.alg)?,
        created_at: stored.created_at,
        activates_at: stored.activates_at,
    })
}

// --- The ring every instance signs and verifies with ---

struct LoadedKey {
    times: KeyTimes,
    /// When the next key activates (this one stops signing); `None` while it is the newest.
    retires_at: Option<DateTime<Utc>>,
    /// Until when its tokens are accepted and it is published; `None` while it is the newest.
    accepted_until: Option<DateTime<Utc>>,
    /// `None`: this instance cannot sign with it (an HS256 row of another secret).
    encoding: Option<EncodingKey>,
    /// `None`: not verifiable here (an HS256 row of another secret).
    decoding: Option<DecodingKey>,
    public_jwk: Option<Jwk>,
}

struct Snapshot {
    keys: Vec<LoadedKey>,
}

/// The signing and verification keys of this instance, reloaded from the database.
pub struct KeyRing {
    snapshot: RwLock<Arc<Snapshot>>,
    policy: KeyPolicy,
    issuer: String,
    cipher: KeyCipher,
    secret: SecretString,
    hs256_kid: String,
    /// When a token with a kid this instance had not loaded last made it reload (milliseconds).
    reloaded_for_unknown_kid_at: AtomicI64,
}

/// How `KeyRing::load` treats stored keys this master secret cannot decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecryptable {
    /// Refuse to start (`serve`).
    Refuse,
    /// Delete them and make new ones (`serve --dev`, whose secret is thrown away at every start).
    Replace,
}

impl KeyRing {
    /// Brings the stored keys in line with `policy` (under the rotation lock), then loads them.
    pub fn load(
        conn: &mut PgConnection,
        policy: KeyPolicy,
        issuer: &str,
        secret: &SecretString,
        undecryptable: Undecryptable,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let ring = Self {
            snapshot: RwLock::new(Arc::new(Snapshot { keys: Vec::new() })),
            policy,
            issuer: issuer.to_owned(),
            cipher: KeyCipher::new(secret),
            secret: secret.clone(),
            hs256_kid: hs256_kid(secret)?,
            reloaded_for_unknown_kid_at: AtomicI64::new(i64::MIN),
        };
        if undecryptable == Undecryptable::Replace {
            let replaced = ring.replace_undecryptable(conn)?;
            if replaced > 0 {
                log::warn!(
                    "--dev: {replaced} stored signing key(s) were made with another secret; replaced them with new ones"
                );
            }
        }
        ring.reload(conn, now)?;
        Ok(ring)
    }

    fn replace_undecryptable(&self, conn: &mut PgConnection) -> Result<usize, KeyError> {
        let stored = db::signing_keys::all(conn)?;
        let doomed: Vec<String> = stored
            .iter()
            .filter(|key| key.private_key.as_ref().is_some_and(|sealed| self.cipher.open(&key.kid, sealed).is_err()))
            .map(|key| key.kid.clone())
            .collect();
        Ok(db::signing_keys::delete(conn, &doomed)?)
    }

    /// Rotates the stored keys if they are due (one instance at a time), then reloads them. A key
    /// that cannot be decrypted is an error: never sign with (or silently replace) a key we cannot read.
    pub fn reload(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> Result<(), KeyError> {
        self.rotate_if_due(conn, now)?;
        let stored = db::signing_keys::all(conn)?;
        let mut keys = Vec::with_capacity(stored.len());
        for row in &stored {
            let Some(times) = times_of(row) else { continue };
            keys.push(self.load_key(row, times)?);
        }
        // Rows come sorted by activation: each key retires when the next one activates.
        let successors: Vec<Option<DateTime<Utc>>> =
            keys.iter().skip(1).map(|key| Some(key.times.activates_at)).chain(std::iter::once(None)).collect();
        for (key, retires_at) in keys.iter_mut().zip(successors) {
            key.retires_at = retires_at;
            key.accepted_until = retires_at.map(|at| at + self.policy.grace());
        }
        *self.snapshot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Snapshot { keys });
        Ok(())
    }

    fn load_key(&self, row: &StoredKey, times: KeyTimes) -> Result<LoadedKey, KeyError> {
        let damaged = |source| KeyError::Damaged { kid: row.kid.clone(), source };
        if times.alg == SigningAlgorithm::Hs256 {
            let ours = row.kid == self.hs256_kid || row.kid == LEGACY_HS256_KID;
            let bytes = self.secret.expose_secret().as_bytes();
            let (encoding, decoding) = if ours {
                (
                    Some(EncodingKey::from_secret(bytes).map_err(damaged)?),
                    Some(DecodingKey::from_secret(bytes).map_err(damaged)?),
                )
            } else {
                (None, None)
            };
            // The legacy row stands for tokens made before keys had ids: it never signs again.
            let encoding = encoding.filter(|_| row.kid != LEGACY_HS256_KID);
            return Ok(LoadedKey {
                times,
                retires_at: None,
                accepted_until: None,
                encoding,
                decoding,
                public_jwk: None,
            });
        }
        let public_jwk: Jwk = row
            .public_jwk
            .clone()
            .and_then(|json| serde_json::from_value(json).ok())
            .ok_or_else(|| damaged(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()))?;
        let decoding = DecodingKey::from_jwk(&public_jwk).map_err(damaged)?;
        let sealed = row.private_key.as_deref().ok_or_else(|| KeyError::Undecryptable { kid: row.kid.clone() })?;
        let private_der = self.cipher.open(&row.kid, sealed)?;
        let encoding = encoding_key(times.alg, &private_der);
        Ok(LoadedKey {
            times,
            retires_at: None,
            accepted_until: None,
            encoding: Some(encoding),
            decoding: Some(decoding),
            public_jwk: Some(public_jwk),
        })
    }

    /// Plans and makes the due changes in one transaction holding the rotation lock, so two
    /// instances (or an instance and the CLI) never both make a key. It waits for another holder
    /// (a few milliseconds): an instance starting next to another must not load before the first
    /// key exists.
    fn rotate_if_due(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> Result<(), KeyError> {
        use diesel::Connection as _;
        conn.transaction(|conn| {
            locks::lock_for_transaction(conn, locks::Job::SigningKeys)?;
            let stored = db::signing_keys::all(conn)?;
            let times: Vec<KeyTimes> = stored.iter().filter_map(times_of).collect();
            for step in plan(&times, &self.policy, &self.hs256_kid, now) {
                self.apply(conn, &step, now)?;
            }
            Ok(())
        })
    }

    /// Publishes a new key of the configured algorithm now, to sign after [`PUBLICATION_DELAY`]
    /// (`gatehouse keys rotate`). Returns its kid and activation, or `None` when one is already waiting.
    pub fn rotate_now(&self, conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Option<KeyTimes>, KeyError> {
        use diesel::Connection as _;
        if self.policy.alg == SigningAlgorithm::Hs256 {
            return Ok(None);
        }
        let made = conn.transaction(|conn| {
            locks::lock_for_transaction(conn, locks::Job::SigningKeys)?;
            let stored = db::signing_keys::all(conn)?;
            let pending =
                stored.iter().filter_map(times_of).any(|key| key.activates_at > now && key.alg == self.policy.alg);
            if pending {
                return Ok(None);
            }
            self.apply(conn, &Step::Create { alg: self.policy.alg, activates_at: now + PUBLICATION_DELAY }, now)
        })?;
        self.reload(conn, now)?;
        Ok(made)
    }

    fn apply(&self, conn: &mut PgConnection, step: &Step, now: DateTime<Utc>) -> Result<Option<KeyTimes>, KeyError> {
        match step {
            Step::Delete { kid } => {
                db::signing_keys::delete(conn, std::slice::from_ref(kid))?;
                log::info!("deleted signing key {kid}: every token it signed has expired");
                Ok(None)
            }
            Step::Create { alg, activates_at } => {
                let row = match alg {
                    SigningAlgorithm::Hs256 => StoredKey {
                        kid: self.hs256_kid.clone(),
                        alg: alg.as_str().to_owned(),
                        public_jwk: None,
                        private_key: None,
                        created_at: now,
                        activates_at: *activates_at,
                    },
                    alg => {
                        let key = generate(*alg)?;
                        StoredKey {
                            private_key: Some(self.cipher.seal(&key.kid, &key.private_der)?),
                            public_jwk: Some(
                                serde_json::to_value(&key.public_jwk).map_err(|err| KeyError::Generate(err.into()))?,
                            ),
                            kid: key.kid,
                            alg: alg.as_str().to_owned(),
                            created_at: now,
                            activates_at: *activates_at,
                        }
                    }
                };
                db::signing_keys::insert(conn, &row)?;
                log::info!("made {} signing key {}, signing from {}", row.alg, row.kid, row.activates_at.to_rfc3339());
                Ok(times_of(&row))
            }
        }
    }

    /// Forgets every loaded key until the next reload: for tests of what happens when nothing can sign.
    #[cfg(any(test, feature = "test-support"))]
    pub fn unload(&self) {
        *self.snapshot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(Snapshot { keys: Vec::new() });
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn ttl_secs(&self) -> i64 {
        self.policy.access_token_ttl.num_seconds()
    }

    /// True when some key may sign a token issued at `at` (checked before a password grant spends
    /// a bcrypt run and records a sign-in it could not answer).
    pub fn can_sign(&self, at: DateTime<Utc>) -> bool {
        self.snapshot()
            .keys
            .iter()
            .any(|key| key.encoding.is_some() && key.times.activates_at <= at && key.is_accepted_at(at))
    }

    /// Signs a user's access token issued at `issued_at` with the key current then.
    pub fn issue(
        &self,
        subject: &TokenSubject<'_>,
        scopes: &ScopeSet,
        issued_at: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
        let iat = issued_at.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: Subject::User(subject.user_id),
            aud: self.issuer.clone(),
            exp: iat + self.ttl_secs(),
            iat,
            nbf: iat,
            jti: jti_at(issued_at),
            scope: scopes.to_string(),
            client_id: None,
            preferred_username: Some(subject.username.to_owned()),
            roles: Some(subject.roles.to_vec()),
        };
        self.sign(claims, issued_at)
    }

    /// Signs a client's own access token (client credentials): `sub` and `client_id` are the client's,
    /// and nothing of a user is in it.
    pub fn issue_for_client(
        &self,
        client_id: &str,
        scopes: &ScopeSet,
        issued_at: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
        let iat = issued_at.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: Subject::Client(client_id.to_owned()),
            aud: self.issuer.clone(),
            exp: iat + self.ttl_secs(),
            iat,
            nbf: iat,
            jti: jti_at(issued_at),
            scope: scopes.to_string(),
            client_id: Some(client_id.to_owned()),
            preferred_username: None,
            roles: None,
        };
        self.sign(claims, issued_at)
    }

    fn sign(
        &self,
        claims: AccessClaims,
        issued_at: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
        let snapshot = self.snapshot();
        let (signer, encoding) = snapshot
            .keys
            .iter()
            .filter(|key| key.times.activates_at <= issued_at && key.is_accepted_at(issued_at))
            .filter_map(|key| key.encoding.as_ref().map(|encoding| (key, encoding)))
            .max_by_key(|(key, _)| key.times.activates_at)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut header = Header::new(jose(signer.times.alg));
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(signer.times.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, encoding)?;
        Ok((token, claims))
    }

    /// Checks the header, the key its `kid` names (accepted at `now`, and of the header's algorithm),
    /// the signature, issuer and audience; not the time window. Returns the key's kid with the claims.
    pub fn verify_signature(&self, token: &str, now: DateTime<Utc>) -> Result<(String, AccessClaims), TokenRejection> {
        let header = read_header(token)?;
        let snapshot = self.snapshot();
        let mut usable = snapshot.keys.iter().filter(|key| key.decoding.is_some() && key.is_accepted_at(now));
        let key = match &header.kid {
            Some(kid) => usable.find(|key| &key.times.kid == kid),
            // Tokens from before keys had ids were HS256: only an accepted HS256 key of this secret may check them.
            None => usable.find(|key| key.times.alg == SigningAlgorithm::Hs256),
        }
        .ok_or(TokenRejection::BadSignature)?;
        // Only the algorithm of the key the kid names: no HS256 token "signed" with a public key.
        if header.alg != key.times.alg.as_str() {
            return Err(TokenRejection::BadSignature);
        }
        let decoding = key.decoding.as_ref().ok_or(TokenRejection::BadSignature)?;
        let mut validation = Validation::new(jose(key.times.alg));
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf", "iat"]);
        // The time window is checked against the caller's `now`, cached or not.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<AccessClaims>(token, decoding, &validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenRejection::BadSignature
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenRejection::WrongIssuerOrAudience,
                _ => TokenRejection::Malformed,
            }
        })?;
        Ok((key.times.kid.clone(), data.claims))
    }

    /// [`Self::verify_signature`], except that a token naming a key this instance has never loaded
    /// first makes it reload the keys (at most once a second). A key made with immediate effect —
    /// the first key of a new algorithm, or an HS256 secret switched back to — signs on the
    /// instance that made it at once, while the others would load it only at their next periodic
    /// reload, up to a minute later: its tokens must work on every instance from the start.
    pub async fn verify_signature_fresh(
        self: &Arc<Self>,
        pool: &PgPool,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), TokenRejection> {
        let rejection = match self.verify_signature(token, now) {
            Err(rejection) if self.may_reload_for(token, now) => rejection,
            verified => return verified,
        };
        let ring = Arc::clone(self);
        match db::run(pool, move |conn| Ok(ring.reload(conn, now))).await {
            Ok(Ok(())) => self.verify_signature(token, now),
            Ok(Err(err)) => {
                log::error!("reloading the signing keys for an unknown kid failed: {}", crate::errors::report(&err));
                Err(rejection)
            }
            Err(err) => {
                log::warn!("reloading the signing keys for an unknown kid failed: {}", crate::errors::report(&err));
                Err(rejection)
            }
        }
    }

    /// True for a token whose header names a kid this instance has not loaded, when no such reload
    /// ran in the last second (and this caller is the one to run it).
    fn may_reload_for(&self, token: &str, now: DateTime<Utc>) -> bool {
        let Ok(header) = read_header(token) else { return false };
        let Some(kid) = header.kid else { return false };
        if self.snapshot().keys.iter().any(|key| key.times.kid == kid) {
            return false;
        }
        let (at, last) = (now.timestamp_millis(), self.reloaded_for_unknown_kid_at.load(Ordering::Relaxed));
        at.saturating_sub(last) >= RELOAD_FOR_UNKNOWN_KID_EVERY.num_milliseconds()
            && self.reloaded_for_unknown_kid_at.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Still true at `now` for a key whose tokens were verified earlier (the verification cache asks).
    pub fn accepts(&self, kid: &str, now: DateTime<Utc>) -> bool {
        self.snapshot().keys.iter().any(|key| key.times.kid == kid && key.is_accepted_at(now))
    }

    /// The public keys verifiers need at `now` (RFC 7517): next, current and retired asymmetric keys.
    /// Never a private or symmetric member.
    pub fn jwks(&self, now: DateTime<Utc>) -> JwkSet {
        let snapshot = self.snapshot();
        JwkSet {
            keys: snapshot
                .keys
                .iter()
                .filter(|key| key.is_accepted_at(now))
                .filter_map(|key| key.public_jwk.clone())
                .collect(),
        }
    }
}

impl LoadedKey {
    /// Next, current, or retired within its grace at `now` (next keys too: an instance whose clock
    /// runs a little ahead may sign with one a moment early).
    fn is_accepted_at(&self, now: DateTime<Utc>) -> bool {
        self.accepted_until.is_none_or(|until| now < until)
    }
}

/// Keeps a ring fresh: a thread that reloads it every [`RELOAD_EVERY`] (rotating the keys when due,
/// on whichever instance gets the lock first) until this guard is dropped.
pub struct Reloader(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl KeyRing {
    /// Reloads every `every` (at most [`RELOAD_EVERY`], which the publication delay assumes).
    pub fn keep_fresh(self: &Arc<Self>, database_url: SecretString, every: Duration) -> Reloader {
        let every = every.min(RELOAD_EVERY);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ring = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("signing-keys".to_owned()).spawn(move || {
            // Ends when the guard (and with it the sender) is dropped.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(ring) = ring.upgrade() else { return };
                let reloaded = diesel::Connection::establish(database_url.expose_secret())
                    .map_err(KeyError::Connect)
                    .and_then(|mut conn: PgConnection| ring.reload(&mut conn, Utc::now()));
                if let Err(err) = reloaded {
                    log::error!(
                        "reloading the signing keys failed (still using the ones loaded before): {}",
                        crate::errors::report(&err)
                    );
                }
            }
        });
        if let Err(err) = spawned {
            log::error!("cannot start the signing-key reloader: {err}");
        }
        Reloader(stop)
    }
}

/// Re-encrypts every stored private key from `old` to `new` master secret, in one transaction
/// (`gatehouse keys re-encrypt`). Returns how many were re-encrypted.
pub fn reencrypt(conn: &mut PgConnection, old: &SecretString, new: &SecretString) -> Result<usize, KeyError> {
    let (from, to) = (KeyCipher::new(old), KeyCipher::new(new));
    locks::serialized(conn, locks::Job::SigningKeys, |conn| {
        let stored = db::signing_keys::all(conn)?;
        let mut rows = Vec::new();
        for key in &stored {
            if let Some(sealed) = &key.private_key {
                let plain = from.open(&key.kid, sealed).map_err(|_| diesel::result::Error::RollbackTransaction)?;
                rows.push((
                    key.kid.clone(),
                    to.seal(&key.kid, &plain).map_err(|_| diesel::result::Error::RollbackTransaction)?,
                ));
            }
        }
        for (kid, sealed) in &rows {
            db::signing_keys::set_private_key(conn, kid, sealed)?;
        }
        Ok(rows.len())
    })
    .map_err(|err| match err {
        diesel::result::Error::RollbackTransaction => KeyError::Undecryptable { kid: "(one of them)".to_owned() },
        other => KeyError::Query(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: chrono::Duration = chrono::Duration::minutes(15);

    fn policy(alg: SigningAlgorithm) -> KeyPolicy {
        KeyPolicy { alg, rotation: Some(chrono::Duration::days(30)), access_token_ttl: TTL }
    }

    fn key(kid: &str, alg: SigningAlgorithm, activates_at: DateTime<Utc>) -> KeyTimes {
        KeyTimes { kid: kid.into(), alg, created_at: activates_at - PUBLICATION_DELAY, activates_at }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    const ES: SigningAlgorithm = SigningAlgorithm::Es256;

    #[test]
    fn a_new_deployment_gets_a_key_that_signs_at_once() {
        assert_eq!(plan(&[], &policy(ES), "hs", t0()), vec![Step::Create { alg: ES, activates_at: t0() }]);
    }

    #[test]
    fn a_key_of_the_rotation_age_gets_a_successor_published_before_it_signs() {
        let keys = [key("a", ES, t0())];
        assert_eq!(plan(&keys, &policy(ES), "hs", t0() + chrono::Duration::days(29)), vec![]);
        let at = t0() + chrono::Duration::days(30);
        let steps = plan(&keys, &policy(ES), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }]);
        // Once it exists, nothing more is due, and rotation off means no successor at all.
        let with_next = [key("a", ES, t0()), key("b", ES, at + PUBLICATION_DELAY)];
        assert_eq!(plan(&with_next, &policy(ES), "hs", at + chrono::Duration::minutes(1)), vec![]);
        let off = KeyPolicy { rotation: None, ..policy(ES) };
        assert_eq!(plan(&keys, &off, "hs", t0() + chrono::Duration::days(300)), vec![]);
    }

    #[test]
    fn a_retired_key_stays_until_every_token_it_signed_has_expired() {
        let switch = t0() + chrono::Duration::days(30);
        let keys = [key("a", ES, t0()), key("b", ES, switch)];
        let p = policy(ES);
        let at = |offset: chrono::Duration| states(&keys, &p, switch + offset);
        assert_eq!(states(&keys, &p, switch - chrono::Duration::seconds(1)), vec![KeyState::Current, KeyState::Next]);
        let until = switch + TTL + RETIREMENT_MARGIN;
        assert_eq!(at(chrono::Duration::zero()), vec![KeyState::Retired { since: switch, until }, KeyState::Current]);
        assert_eq!(at(TTL), vec![KeyState::Retired { since: switch, until }, KeyState::Current]);
        assert_eq!(at(TTL + RETIREMENT_MARGIN), vec![KeyState::Expired { since: switch }, KeyState::Current]);
        // Its row goes a day later.
        let later = switch + TTL + RETIREMENT_MARGIN + DELETE_AFTER;
        assert_eq!(plan(&keys, &p, "hs", later), vec![Step::Delete { kid: "a".into() }]);
    }

    #[test]
    fn switching_from_hs256_publishes_the_new_key_first_and_back_signs_at_once() {
        let keys = [key("hs", SigningAlgorithm::Hs256, t0())];
        let at = t0() + chrono::Duration::hours(1);
        let steps = plan(&keys, &policy(ES), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }]);
        let both = [key("hs", SigningAlgorithm::Hs256, t0()), key("es", ES, at)];
        let hs = policy(SigningAlgorithm::Hs256);
        assert_eq!(plan(&both, &hs, "hs", at), vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]);
    }

    #[test]
    fn switching_between_published_algorithms_publishes_the_new_key_first() {
        let keys = [key("es", ES, t0())];
        let at = t0() + chrono::Duration::hours(1);
        let steps = plan(&keys, &policy(SigningAlgorithm::EdDsa), "hs", at);
        assert_eq!(steps, vec![Step::Create { alg: SigningAlgorithm::EdDsa, activates_at: at + PUBLICATION_DELAY }]);
    }

    #[test]
    fn the_secret_signs_while_the_first_published_key_waits_behind_the_legacy_row() {
        let legacy = [key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0())];
        let at = t0() + chrono::Duration::days(3);
        let steps = plan(&legacy, &policy(ES), "hs", at);
        assert_eq!(
            steps,
            vec![
                Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at },
                Step::Create { alg: ES, activates_at: at + PUBLICATION_DELAY }
            ]
        );
        // A database that an earlier version left with only the waiting key behind the legacy row.
        let waiting = [key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0()), key("es", ES, at + PUBLICATION_DELAY)];
        assert_eq!(
            plan(&waiting, &policy(ES), "hs", at),
            vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]
        );
        // Once the secret's row is current, nothing more until the published key takes over.
        let bridged = [
            key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0()),
            key("hs", SigningAlgorithm::Hs256, at),
            key("es", ES, at + PUBLICATION_DELAY),
        ];
        assert_eq!(plan(&bridged, &policy(ES), "hs", at + chrono::Duration::minutes(1)), vec![]);
        // Under HS256 the secret's own row is made at once, as before: no second step.
        let hs = policy(SigningAlgorithm::Hs256);
        assert_eq!(plan(&legacy, &hs, "hs", at), vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: at }]);
    }

    #[test]
    fn every_instant_has_a_key_that_signs() {
        // Walk a day in 10-minute steps over a handful of starting sets: after applying the plan at
        // each instant, some key that this instance can sign with is current.
        let starts: Vec<Vec<KeyTimes>> = vec![
            vec![],
            vec![key(LEGACY_HS256_KID, SigningAlgorithm::Hs256, t0())],
            vec![key("other-secret", SigningAlgorithm::Hs256, t0())],
            vec![key("hs", SigningAlgorithm::Hs256, t0())],
            vec![key("es", ES, t0())],
        ];
        for alg in [ES, SigningAlgorithm::EdDsa, SigningAlgorithm::Hs256] {
            for start in &starts {
                let mut keys = start.clone();
                let mut now = t0() + chrono::Duration::minutes(1);
                for _ in 0..144 {
                    for step in plan(&keys, &policy(alg), "hs", now) {
                        match step {
                            Step::Create { alg, activates_at } => {
                                let kid = if alg == SigningAlgorithm::Hs256 {
                                    "hs".to_owned()
                                } else {
                                    format!("{alg:?}{now}")
                                };
                                keys.retain(|key| key.kid != kid);
                                keys.push(KeyTimes { kid, alg, created_at: now, activates_at });
                            }
                            Step::Delete { kid } => keys.retain(|key| key.kid != kid),
                        }
                    }
                    keys.sort_by_key(|key| key.activates_at);
                    let current = keys.iter().rev().find(|key| key.activates_at <= now);
                    assert!(
                        current.is_some_and(|key| key.alg != SigningAlgorithm::Hs256 || key.kid == "hs"),
                        "{alg:?} from {start:?} at {now}: {keys:?}"
                    );
                    now += chrono::Duration::minutes(10);
                }
            }
        }
    }

    #[test]
    fn a_new_hs256_secret_is_a_new_key() {
        let keys = [key("old-secret", SigningAlgorithm::Hs256, t0())];
        let hs = policy(SigningAlgorithm::Hs256);
        let steps = plan(&keys, &hs, "new-secret", t0());
        assert_eq!(steps, vec![Step::Create { alg: SigningAlgorithm::Hs256, activates_at: t0() }]);
    }

    #[test]
    fn generated_keys_are_named_by_their_thumbprint_and_sealed_at_rest() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let key = generate(alg).unwrap();
            assert_eq!(key.public_jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), key.kid);
            let json = serde_json::to_value(&key.public_jwk).unwrap();
            assert!(json.get("d").is_none() && json.get("k").is_none(), "{json}");
            let cipher = KeyCipher::new(&"m".repeat(40).into());
            let sealed = cipher.seal(&key.kid, &key.private_der).unwrap();
            assert!(!sealed.windows(key.private_der.len()).any(|w| w == key.private_der.as_slice()));
            assert_eq!(cipher.open(&key.kid, &sealed).unwrap().as_slice(), key.private_der.as_slice());
            assert!(cipher.open("another-kid", &sealed).is_err(), "bound to its row");
            assert!(KeyCipher::new(&"n".repeat(40).into()).open(&key.kid, &sealed).is_err(), "bound to the secret");
        }
    }
}
