//! Access tokens: RFC 9068 JWTs. What they claim, and the checks every token must pass whatever key
//! signed it (`auth::keys` owns the keys).
//!
//! Time is always a parameter, so expiry is checked against the caller's clock and tests need no sleeping.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// RFC 9068 §2.1: the `typ` header of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Tolerated clock difference for `nbf`/`iat`, as tokens may be checked by other instances.
pub const LEEWAY_SECS: i64 = 5;
/// Header members that would let a token choose its own key or demand extensions: refused outright.
const FORBIDDEN_HEADERS: [&str; 6] = ["jku", "jwk", "x5u", "x5c", "crit", "zip"];

/// The claims of an access token, named as RFC 7519 / RFC 9068 name them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user's stable id (never the username), or a client's own `client_id`.
    pub sub: Subject,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// A UUIDv7 whose timestamp dates the token more finely than `iat` (see [`jti_at`]).
    pub jti: Uuid,
    pub scope: String,
    /// RFC 9068 §2.2: the client the token was issued to; present only for a registered client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A user's; a client's own token has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// OIDC Core §2 / RFC 9068 §2.2.1: when the person signed in (seconds since the epoch); a
    /// refresh keeps it. A user's tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// RFC 8176: how they signed in (`pwd`; `otp` and `mfa` with a second factor). A refresh keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
}

/// Whom a token is about: a user (`sub` is their id, a UUID), or a client acting for itself
/// (`sub` is its `client_id`, which always starts `gc_` and is never a UUID).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum Subject {
    User(Uuid),
    Client(String),
}

impl Subject {
    /// The user's id, for a user's token.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Subject::User(id) => Some(*id),
            Subject::Client(_) => None,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(id) => write!(f, "{id}"),
            Subject::Client(client_id) => f.write_str(client_id),
        }
    }
}

impl AccessClaims {
    /// When the token was issued, to a fraction of a microsecond: the `jti` is a UUIDv7 whose 12 bits
    /// after the millisecond timestamp hold the sub-millisecond part (RFC 9562 §6.2, method 3).
    /// Invalidation cut-offs are compared at this precision. Falls back to `iat` for other `jti`s.
    pub fn issued_at(&self) -> DateTime<Utc> {
        issued_at_of(self.jti).unwrap_or_else(|| Utc.timestamp_opt(self.iat, 0).single().unwrap_or_default())
    }

    /// Checks the time window at `now`: not expired, not issued in the future beyond the leeway.
    pub fn check_time(&self, now: DateTime<Utc>) -> Result<(), TokenRejection> {
        let now = now.timestamp();
        if now >= self.exp {
            return Err(TokenRejection::Expired);
        }
        if self.nbf > now + LEEWAY_SECS || self.iat > now + LEEWAY_SECS {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(())
    }
}

/// A UUIDv7 `jti` for a token issued at `at`, carrying `at` to 1/4096 of a millisecond.
pub fn jti_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let sub_ms_nanos = u64::from(at.timestamp_subsec_nanos() % 1_000_000);
    // Rounded down, so a token never looks younger than it is.
    let fraction = (sub_ms_nanos * 4096 / 1_000_000) as u16;
    let mut random = [0u8; 10];
    random.copy_from_slice(&crate::random::bytes(10));
    random[0] = (fraction >> 8) as u8;
    random[1] = (fraction & 0xff) as u8;
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

fn issued_at_of(jti: Uuid) -> Option<DateTime<Utc>> {
    if jti.get_version_num() != 7 {
        return None;
    }
    let bytes = jti.as_bytes();
    let millis = bytes[..6].iter().fold(0_i64, |acc, byte| (acc << 8) | i64::from(*byte));
    let fraction = (u64::from(bytes[6] & 0x0f) << 8) | u64::from(bytes[7]);
    let nanos = i64::try_from(fraction * 1_000_000 / 4096).ok()?;
    Utc.timestamp_millis_opt(millis).single().map(|at| at + chrono::Duration::nanoseconds(nanos))
}

/// Why a presented token was refused; the text goes into `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("The access token is malformed")]
    Malformed,
    #[error("The access token signature is invalid")]
    BadSignature,
    #[error("The access token was not issued for this service")]
    WrongIssuerOrAudience,
    #[error("The access token is not an RFC 9068 access token")]
    WrongType,
    #[error("The access token expired")]
    Expired,
    #[error("The access token is not valid yet")]
    NotYetValid,
    #[error("The access token was revoked")]
    Revoked,
    #[error("The user of this access token no longer exists")]
    UnknownUser,
    #[error("The client of this access token no longer exists")]
    UnknownClient,
    /// A well-formed personal access token that was never issued (or whose user was deleted).
    #[error("The access token is not known")]
    Unknown,
}

/// The subject of a new token.
pub struct TokenSubject<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub roles: &'a [String],
    pub auth_time: DateTime<Utc>,
    pub amr: &'a [String],
    /// The registered client the token is issued to (RFC 9068 `client_id`).
    pub client_id: Option<&'a str>,
}

/// The protected header of a presented token, read before any key is chosen.
#[derive(Debug, Clone)]
pub struct PresentedHeader {
    pub alg: String,
    pub kid: Option<String>,
}

/// Reads a token's header and refuses, before any cryptography, what gatehouse never issues: no
/// `typ: at+jwt` (RFC 9068 §4), a header that names its own key (`jku`, `jwk`, `x5u`, `x5c`) or
/// demands extensions (`crit`), or anything that is not three base64url parts.
pub fn read_header(token: &str) -> Result<PresentedHeader, TokenRejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenRejection::Malformed);
    };
    let json =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenRejection::Malformed)?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| TokenRejection::Malformed)?;
    if FORBIDDEN_HEADERS.iter().any(|name| fields.contains_key(*name)) {
        return Err(TokenRejection::BadSignature);
    }
    let text = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let alg = text("alg").ok_or(TokenRejection::Malformed)?.to_owned();
    let typ_ok = text("typ").is_some_and(|typ| {
        typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(TokenRejection::WrongType);
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenRejection::Malformed),
    };
    Ok(PresentedHeader { alg, kid })
}

/// Tokens whose signature one worker thread has already verified, so a client that presents the same
/// token again costs a map lookup, not an ECDSA verification. Bounded; not shared between threads
/// (so no lock). Only the signature is cached: expiry, the signing key still being accepted, and
/// revocation are checked on every request.
pub struct VerifiedTokens {
    entries: RefCell<HashMap<Box<str>, Rc<VerifiedToken>>>,
    capacity: usize,
}

/// A token whose signature and claims checked out.
#[derive(Debug)]
pub struct VerifiedToken {
    pub kid: String,
    pub claims: AccessClaims,
    /// `claims.scope`, parsed once.
    pub scopes: crate::domain::ScopeSet,
}

impl VerifiedTokens {
    pub const CAPACITY: usize = 10_000;

    pub fn new() -> Rc<Self> {
        Rc::new(Self { entries: RefCell::new(HashMap::new()), capacity: Self::CAPACITY })
    }

    /// The verified claims of `token`, if its signature was checked before. The map is keyed by the
    /// whole token (SipHash and full comparison), so no forged token can hit another's entry.
    pub fn get(&self, token: &str) -> Option<Rc<VerifiedToken>> {
        self.entries.borrow().get(token).cloned()
    }

    pub fn insert(&self, token: &str, verified: VerifiedToken) -> Rc<VerifiedToken> {
        let verified = Rc::new(verified);
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity {
            // Full: forget everything rather than track recency; it refills at one verification per token.
            entries.clear();
        }
        entries.insert(token.into(), Rc::clone(&verified));
        verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(json: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.{}", encode(json), encode("{}"), encode("sig"))
    }

    #[test]
    fn the_jti_dates_a_token_below_the_millisecond() {
        let at = Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap();
        let jti = jti_at(at);
        assert_eq!(jti.get_version_num(), 7);
        let read = issued_at_of(jti).unwrap();
        assert!(read <= at && at - read < chrono::Duration::nanoseconds(250), "{read} vs {at}");
        assert_ne!(jti_at(at), jti, "and stays unique");
    }

    #[test]
    fn headers_that_choose_their_own_key_or_demand_extensions_are_refused() {
        for member in ["jku", "jwk", "x5u", "x5c", "crit", "zip"] {
            let token = header_of(&format!(r#"{{"alg":"ES256","typ":"at+jwt","{member}":"x"}}"#));
            assert_eq!(read_header(&token).unwrap_err(), TokenRejection::BadSignature, "{member}");
        }
        let plain = header_of(r#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#);
        assert_eq!(read_header(&plain).unwrap().kid.as_deref(), Some("k1"));
        let untyped = header_of(r#"{"alg":"ES256","kid":"k1"}"#);
        assert_eq!(read_header(&untyped).unwrap_err(), TokenRejection::WrongType);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in ["", ".", "a.b.c", "ÿÿÿ", "eyJ.eyJ.x", "a.b.c.d", "e30.e30"] {
            assert_eq!(read_header(input).unwrap_err(), TokenRejection::Malformed, "{input:?}");
        }
    }

    #[test]
    fn a_subject_is_a_user_id_or_a_client_id() {
        let user: Subject = serde_json::from_str("\"0192f6a4-1b2c-7d3e-8f40-123456789abc\"").unwrap();
        assert!(matches!(user, Subject::User(_)));
        let client: Subject = serde_json::from_str("\"gc_abcdefghijklmnopqrstuv\"").unwrap();
        assert_eq!(client, Subject::Client("gc_abcdefghijklmnopqrstuv".into()));
        assert_eq!(serde_json::to_string(&client).unwrap(), "\"gc_abcdefghijklmnopqrstuv\"");
    }

    #[test]
    fn the_time_window_has_five_seconds_of_leeway() {
        let now = Utc::now();
        let at = |offset: i64| AccessClaims {
            iss: "i".into(),
            sub: Subject::User(Uuid::nil()),
            aud: "i".into(),
            exp: now.timestamp() + 900 + offset,
            iat: now.timestamp() + offset,
            nbf: now.timestamp() + offset,
            jti: jti_at(now),
            scope: String::new(),
            client_id: None,
            preferred_username: Some("a".into()),
            roles: Some(vec![]),
            auth_time: None,
            amr: None,
        };
        assert_eq!(at(3).check_time(now), Ok(()));
        assert_eq!(at(30).check_time(now), Err(TokenRejection::NotYetValid));
        assert_eq!(at(-900).check_time(now), Err(TokenRejection::Expired));
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = VerifiedTokens { entries: RefCell::new(HashMap::new()), capacity: 2 };
        let claims = |kid: &str| VerifiedToken {
            kid: kid.into(),
            scopes: crate::domain::ScopeSet::default(),
            claims: AccessClaims {
                iss: String::new(),
                sub: Subject::User(Uuid::nil()),
                aud: String::new(),
                exp: 0,
                iat: 0,
                nbf: 0,
                jti: Uuid::nil(),
                scope: String::new(),
                client_id: None,
                preferred_username: None,
                roles: None,
                auth_time: None,
                amr: None,
            },
        };
        cache.insert("a", claims("1"));
        cache.insert("b", claims("1"));
        cache.insert("c", claims("1"));
        assert!(cache.get("a").is_none() && cache.get("c").is_some());
        assert_eq!(cache.entries.borrow().len(), 1);
    }
}
