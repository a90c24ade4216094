//! Access tokens: RFC 9068 JWTs signed with HS256.
//!
//! Time is always a parameter, so expiry is checked against the caller's clock and tests need no sleeping.

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ScopeSet;

/// RFC 9068 §2.1: the `typ` header of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
const ALGORITHM: Algorithm = Algorithm::HS256;
/// Tolerated clock difference for `nbf`/`iat`, as tokens may be checked by other instances.
const LEEWAY_SECS: i64 = 5;

/// The claims of an access token, named as RFC 7519 / RFC 9068 name them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user's stable id, never the username.
    pub sub: Uuid,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// A UUIDv7: unique, and its embedded millisecond timestamp dates the token more finely than `iat`.
    pub jti: Uuid,
    pub scope: String,
    pub preferred_username: String,
    pub roles: Vec<String>,
}

impl AccessClaims {
    /// When the token was issued, to a fraction of a microsecond: the `jti` is a UUIDv7 whose 12 bits
    /// after the millisecond timestamp hold the sub-millisecond part (RFC 9562 §6.2, method 3).
    /// Invalidation cut-offs are compared at this precision. Falls back to `iat` for other `jti`s.
    pub fn issued_at(&self) -> DateTime<Utc> {
        issued_at_of(self.jti).unwrap_or_else(|| Utc.timestamp_opt(self.iat, 0).single().unwrap_or_default())
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
}

/// The subject of a new token.
pub struct TokenSubject<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub roles: &'a [String],
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: chrono::Duration,
}

impl JwtKeys {
    /// `issuer` is also the audience: the API that accepts these tokens is this same service.
    pub fn new(secret: &SecretString, issuer: &str, ttl: std::time::Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf", "iat"]);
        // Expiry and not-before are checked by `verify` against the `now` it is given.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            issuer: issuer.to_owned(),
            audience: issuer.to_owned(),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15)),
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl.num_seconds()
    }

    pub fn issue(
        &self,
        subject: &TokenSubject<'_>,
        scopes: &ScopeSet,
        now: DateTime<Utc>,
    ) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.user_id,
            aud: self.audience.clone(),
            exp: iat + self.ttl.num_seconds(),
            iat,
            nbf: iat,
            jti: jti_at(now),
            scope: scopes.to_string(),
            preferred_username: subject.username.to_owned(),
            roles: subject.roles.to_vec(),
        };
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, `typ`, issuer, audience and the time window.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenRejection> {
        let claims = self.verify_ignoring_expiry(token)?;
        let now = now.timestamp();
        if now >= claims.exp {
            return Err(TokenRejection::Expired);
        }
        if claims.nbf > now + LEEWAY_SECS || claims.iat > now + LEEWAY_SECS {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }

    /// Checks everything [`verify`](Self::verify) does but the time window: for revoking a token,
    /// which is harmless however old it is.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        // RFC 9068 §4: reject anything not typed as an access token (the media type may be spelled out).
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if header.alg != ALGORITHM {
            return Err(TokenRejection::BadSignature);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenRejection::BadSignature
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenRejection::WrongIssuerOrAudience,
                _ => TokenRejection::Malformed,
            }
        })?;
        if !typ_ok {
            return Err(TokenRejection::WrongType);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const ISSUER: &str = "http://127.0.0.1:8080";

    fn keys() -> JwtKeys {
        JwtKeys::new(&"k".repeat(32).into(), ISSUER, std::time::Duration::from_secs(900))
    }

    fn issue(keys: &JwtKeys, now: DateTime<Utc>) -> (String, AccessClaims) {
        let roles = vec!["user".to_owned()];
        let subject = TokenSubject { user_id: Uuid::new_v4(), username: "alice", roles: &roles };
        keys.issue(&subject, &ScopeSet::parse("profile").unwrap(), now).unwrap()
    }

    #[test]
    fn a_fresh_token_verifies_and_carries_the_contract_claims() {
        let keys = keys();
        let now = Utc::now();
        let (token, claims) = issue(&keys, now);
        assert_eq!(keys.verify(&token, now).unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert!((claims.issued_at() - now).num_microseconds().unwrap().abs() <= 1);
        assert!(claims.issued_at() <= now, "never younger than it is");
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
    fn a_token_is_refused_from_its_expiry_on() {
        let keys = keys();
        let now = Utc::now();
        let (token, _) = issue(&keys, now);
        let later = now + chrono::Duration::seconds(900);
        assert_eq!(keys.verify(&token, later), Err(TokenRejection::Expired));
    }

    #[test]
    fn another_key_or_issuer_is_refused() {
        let now = Utc::now();
        let (token, _) = issue(&keys(), now);
        let other_key = JwtKeys::new(&"x".repeat(32).into(), ISSUER, std::time::Duration::from_secs(900));
        assert_eq!(other_key.verify(&token, now), Err(TokenRejection::BadSignature));
        let other_issuer =
            JwtKeys::new(&"k".repeat(32).into(), "http://elsewhere", std::time::Duration::from_secs(900));
        assert_eq!(other_issuer.verify(&token, now), Err(TokenRejection::WrongIssuerOrAudience));
    }

    #[test]
    fn alg_none_is_refused() {
        let now = Utc::now();
        let (token, _) = issue(&keys(), now);
        let payload = token.split('.').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
        let forged = format!("{header}.{payload}.");
        assert!(keys().verify(&forged, now).is_err());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in ["", ".", "a.b.c", "ÿÿÿ", "eyJ.eyJ.x"] {
            assert_eq!(keys().verify(input, Utc::now()), Err(TokenRejection::Malformed), "input {input:?}");
        }
    }
}
