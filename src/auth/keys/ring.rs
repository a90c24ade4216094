//! The ring every instance signs and verifies with: the stored keys, loaded and decrypted.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::jwt::{ACCESS_TOKEN_TYP, AccessClaims, Subject, TokenRejection, TokenSubject, jti_at, read_header};
use crate::config::SigningAlgorithm;
use crate::db::{self, PgPool, locks, signing_keys::StoredKey};
use crate::domain::ScopeSet;

use super::plan::times_of;
use super::sealed::{encoding_key, jose};
use super::*;

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
    /// An RSA key, parsed once: jsonwebtoken parses and checks a 2048-bit key anew for every
    /// signature (most of an RS256 signature's cost), so RS256 signs with this instead.
    rsa: Option<aws_lc_rs::rsa::KeyPair>,
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
        // Rows come sorted by activation: each key retires when the next one of its lane activates.
        for index in 0..keys.len() {
            let lane = Lane::of(&keys[index].times);
            let retires_at = keys[index + 1..]
                .iter()
                .find(|later| Lane::of(&later.times) == lane)
                .map(|later| later.times.activates_at);
            let grace = lane.policy(&self.policy).grace();
            keys[index].retires_at = retires_at;
            keys[index].accepted_until = retires_at.map(|at| at + grace);
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
                rsa: None,
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
        let encoding = encoding_key(times.alg, &private_der).map_err(damaged)?;
        let rsa = match times.alg {
            SigningAlgorithm::Rs256 => Some(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(&private_der)
                    .map_err(|_| damaged(jsonwebtoken::errors::ErrorKind::InvalidRsaKey(row.kid.clone()).into()))?,
            ),
            _ => None,
        };
        Ok(LoadedKey {
            times,
            retires_at: None,
            accepted_until: None,
            encoding: Some(encoding),
            decoding: Some(decoding),
            public_jwk: Some(public_jwk),
            rsa,
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
            // ID-token lanes exist once a live client needs their algorithm (or keys of theirs exist):
            // a deployment without OpenID clients publishes its access keys alone. A lane's first key
            // signs at once, as every first key: no verifier can hold a set cached without it.
            let needed = db::clients::live_id_token_algs(conn)?;
            let lanes = Lane::all().filter(|lane| match lane {
                Lane::Access => true,
                Lane::IdToken(alg) => {
                    needed.iter().any(|name| name == alg.as_str()) || times.iter().any(|key| Lane::of(key) == *lane)
                }
            });
            for lane in lanes {
                let keys: Vec<KeyTimes> = times.iter().filter(|key| Lane::of(key) == lane).cloned().collect();
                for step in plan(&keys, &lane.policy(&self.policy), &self.hs256_kid, now) {
                    // HS256 is the access lane's bridge alone: an ID token is always verifiable by its RP.
                    if lane != Lane::Access && matches!(step, Step::Create { alg: SigningAlgorithm::Hs256, .. }) {
                        continue;
                    }
                    self.apply(conn, &step, lane.purpose(), now)?;
                }
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
            let pending = stored
                .iter()
                .filter_map(times_of)
                .any(|key| key.activates_at > now && key.alg == self.policy.alg && key.purpose == KeyPurpose::Access);
            if pending {
                return Ok(None);
            }
            let step = Step::Create { alg: self.policy.alg, activates_at: now + PUBLICATION_DELAY };
            self.apply(conn, &step, KeyPurpose::Access, now)
        })?;
        self.reload(conn, now)?;
        Ok(made)
    }

    fn apply(
        &self,
        conn: &mut PgConnection,
        step: &Step,
        purpose: KeyPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyTimes>, KeyError> {
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
                        purpose: purpose.as_str().to_owned(),
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
                            purpose: purpose.as_str().to_owned(),
                        }
                    }
                };
                db::signing_keys::insert(conn, &row)?;
                log::info!(
                    "made {} {} signing key {}, signing from {}",
                    row.alg,
                    row.purpose,
                    row.kid,
                    row.activates_at.to_rfc3339()
                );
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
        self.snapshot().keys.iter().any(|key| {
            key.times.purpose == KeyPurpose::Access
                && key.encoding.is_some()
                && key.times.activates_at <= at
                && key.is_accepted_at(at)
        })
    }

    /// True when an ID token of `alg` issued at `at` can be signed (its lane has a current key here).
    pub fn can_sign_id_token(&self, alg: SigningAlgorithm, at: DateTime<Utc>) -> bool {
        self.snapshot().keys.iter().any(|key| {
            Lane::of(&key.times) == Lane::IdToken(alg)
                && key.encoding.is_some()
                && key.times.activates_at <= at
                && key.is_accepted_at(at)
        })
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
            client_id: subject.client_id.map(str::to_owned),
            preferred_username: Some(subject.username.to_owned()),
            roles: Some(subject.roles.to_vec()),
            auth_time: Some(subject.auth_time.timestamp()),
            amr: Some(subject.amr.to_vec()),
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
            auth_time: None,
            amr: None,
        };
        self.sign(claims, issued_at)
    }

    fn sign(
        &self,
        claims: AccessClaims,
        issued_at: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
        let token = self.sign_in_lane(Lane::Access, Some(ACCESS_TOKEN_TYP), &claims, issued_at)?;
        Ok((token, claims))
    }

    /// Signs an OpenID Connect ID token with the current ID-token key of `alg` (`typ: JWT`).
    pub fn sign_id_token(
        &self,
        alg: SigningAlgorithm,
        claims: &impl serde::Serialize,
        issued_at: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_in_lane(Lane::IdToken(alg), Some("JWT"), claims, issued_at)
    }

    /// Signs with the newest key of `lane` activated by `issued_at`.
    fn sign_in_lane(
        &self,
        lane: Lane,
        typ: Option<&str>,
        claims: &impl serde::Serialize,
        issued_at: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let snapshot = self.snapshot();
        let (signer, encoding) = snapshot
            .keys
            .iter()
            .filter(|key| Lane::of(&key.times) == lane)
            .filter(|key| key.times.activates_at <= issued_at && key.is_accepted_at(issued_at))
            .filter_map(|key| key.encoding.as_ref().map(|encoding| (key, encoding)))
            .max_by_key(|(key, _)| key.times.activates_at)
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let mut header = Header::new(jose(signer.times.alg));
        header.typ = typ.map(str::to_owned);
        header.kid = Some(signer.times.kid.clone());
        match &signer.rsa {
            Some(rsa) => sign_rs256(rsa, &header, claims),
            None => jsonwebtoken::encode(&header, claims, encoding),
        }
    }

    /// Checks the header, the key its `kid` names (accepted at `now`, and of the header's algorithm),
    /// the signature, issuer and audience; not the time window. Returns the key's kid with the claims.
    pub fn verify_signature(&self, token: &str, now: DateTime<Utc>) -> Result<(String, AccessClaims), TokenRejection> {
        let header = read_header(token)?;
        let snapshot = self.snapshot();
        // Only access keys: an ID token (or anything else an ID-token key signed) is no access token.
        let mut usable = snapshot
            .keys
            .iter()
            .filter(|key| key.times.purpose == KeyPurpose::Access && key.decoding.is_some() && key.is_accepted_at(now));
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

    /// The client (`aud`) and person (`sub`) of an ID token this server signed, its expiry not
    /// checked (an `id_token_hint` is often an old one); `None` for anything else.
    pub fn id_token_audience(&self, token: &str, now: DateTime<Utc>) -> Option<(String, String)> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        let snapshot = self.snapshot();
        let key = snapshot
            .keys
            .iter()
            .find(|key| key.times.purpose == KeyPurpose::IdToken && key.times.kid == kid && key.is_accepted_at(now))?;
        if header.alg != jose(key.times.alg) {
            return None;
        }
        let mut validation = Validation::new(jose(key.times.alg));
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "aud"]);
        #[derive(serde::Deserialize)]
        struct Audience {
            aud: String,
            sub: String,
        }
        let data = jsonwebtoken::decode::<Audience>(token, key.decoding.as_ref()?, &validation).ok()?;
        Some((data.claims.aud, data.claims.sub))
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
        self.snapshot()
            .keys
            .iter()
            .any(|key| key.times.kid == kid && key.times.purpose == KeyPurpose::Access && key.is_accepted_at(now))
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

/// A compact JWS (RFC 7515 §7.1) signed RS256 (RSASSA-PKCS1-v1_5 with SHA-256) by a parsed key.
fn sign_rs256(
    key: &aws_lc_rs::rsa::KeyPair,
    header: &Header,
    claims: &impl serde::Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input =
        format!("{}.{}", b64.encode(serde_json::to_vec(header)?), b64.encode(serde_json::to_vec(claims)?));
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| jsonwebtoken::errors::ErrorKind::RsaFailedSigning)?;
    Ok(format!("{signing_input}.{}", b64.encode(signature)))
}

impl LoadedKey {
    /// Next, current, or retired within its grace at `now` (next keys too: an instance whose clock
    /// runs a little ahead may sign with one a moment early).
    fn is_accepted_at(&self, now: DateTime<Utc>) -> bool {
        self.accepted_until.is_none_or(|until| now < until)
    }
}
