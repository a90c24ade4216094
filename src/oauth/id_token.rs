//! OpenID Connect's claims about a person: the ID token (Core §2) and the userinfo answer (§5.3),
//! both chosen by scope (§5.4: `profile` gives the names, `email` the address and whether it is
//! verified).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use uuid::Uuid;

use crate::config::SigningAlgorithm;
use crate::domain::ScopeSet;

pub const OPENID: &str = "openid";
pub const EMAIL: &str = "email";
pub const PROFILE: &str = "profile";

/// The person as the claims describe them.
#[derive(Debug, Clone)]
pub struct Person<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub full_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub email_verified: bool,
}

/// The claims the scopes allow (`sub` always): the userinfo answer, and part of the ID token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PersonClaims {
    /// The user's id, as in access tokens.
    pub sub: Uuid,
    /// `profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// `profile`, when the account has a full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `email`, when the account has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `email`: whether the address was proven (a link mailed to it was used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl PersonClaims {
    pub fn of(person: &Person<'_>, scopes: &ScopeSet) -> Self {
        let profile = scopes.contains(PROFILE);
        let email = scopes.contains(EMAIL) && person.email.is_some();
        PersonClaims {
            sub: person.user_id,
            preferred_username: profile.then(|| person.username.to_owned()),
            name: person.full_name.filter(|_| profile).map(str::to_owned),
            email: person.email.filter(|_| email).map(str::to_owned),
            email_verified: email.then_some(person.email_verified),
        }
    }
}

/// An ID token's claims (Core §2, §3.1.3.6).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub iss: String,
    /// The client.
    pub aud: String,
    /// The client again (Core §2: the party the token was issued to).
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub amr: Vec<String>,
    /// Left half of the access token's hash (Core §3.1.3.6), so the client can tie the two together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(flatten)]
    pub person: PersonClaims,
}

/// `at_hash`: base64url of the left half of the access token's hash, where the hash is the one of
/// the ID token's algorithm (SHA-256 for RS256 and ES256; SHA-512 for EdDSA with Ed25519).
pub fn at_hash(alg: SigningAlgorithm, access_token: &str) -> String {
    let digest: Vec<u8> = match alg {
        SigningAlgorithm::EdDsa => sha2::Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_openid_example() {
        // OIDC Core's example: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" has
        // at_hash "77QmUPtjPfzWtF2AnpK9RQ" under RS256.
        assert_eq!(
            at_hash(SigningAlgorithm::Rs256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash(SigningAlgorithm::EdDsa, "x").len(), 43);
    }

    #[test]
    fn claims_follow_the_scopes() {
        let person = Person {
            user_id: Uuid::nil(),
            username: "alice",
            full_name: Some("Alice A."),
            email: Some("alice@example.com"),
            email_verified: true,
        };
        let only = PersonClaims::of(&person, &ScopeSet::parse("openid").unwrap());
        assert_eq!((only.preferred_username, only.email), (None, None));
        let all = PersonClaims::of(&person, &ScopeSet::parse("openid profile email").unwrap());
        assert_eq!(all.preferred_username.as_deref(), Some("alice"));
        assert_eq!(all.name.as_deref(), Some("Alice A."));
        assert_eq!((all.email.as_deref(), all.email_verified), (Some("alice@example.com"), Some(true)));
        let no_address = Person { email: None, ..person };
        let claims = PersonClaims::of(&no_address, &ScopeSet::parse("openid email").unwrap());
        assert_eq!((claims.email, claims.email_verified), (None, None));
    }
}
