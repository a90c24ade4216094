//! A registered client's credentials: its id and secrets (format, what is stored, which stored secret a
//! presented one matches, what a rotation changes) and the scopes its own tokens get. Pure and
//! table-tested; `db::clients` loads and writes, `accounts::clients` and `oauth` decide with these.

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::domain::{ClientKind, ScopeSet, StoredSecret};

/// How long a rotated-out secret keeps working, so the services holding it can be updated.
pub const ROTATION_OVERLAP: Duration = Duration::hours(1);
/// A client id: `gc_` and 128 random bits; a secret: `gcs_` and 256 random bits. The prefixes let
/// a person (and a leak scanner) tell them apart at a glance.
pub const CLIENT_ID_PREFIX: &str = "gc_";
pub const SECRET_PREFIX: &str = "gcs_";

/// A new client id.
pub fn new_client_id() -> String {
    format!("{CLIENT_ID_PREFIX}{}", crate::random::token(16))
}

/// A new secret (shown once) and what is stored of it.
pub fn new_secret() -> (SecretString, [u8; 32]) {
    let secret = format!("{SECRET_PREFIX}{}", crate::random::token(32));
    let hash = secret_hash(&secret);
    (SecretString::from(secret), hash)
}

/// What is stored of a secret: its SHA-256 (256 random bits need no slow hash).
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// True when `presented` is the current secret or one still within its overlap at `now`. Every
/// stored hash is compared, in constant time, so the answer's timing tells nothing about which.
pub fn secret_matches(stored: &[StoredSecret], presented: &str, now: DateTime<Utc>) -> bool {
    let hash = secret_hash(presented);
    stored.iter().fold(false, |found, secret| found | (secret.is_live(now) & bool::from(secret.hash.ct_eq(&hash))))
}

/// What a rotation at `now` does to the stored secrets: the current one keeps working for
/// [`ROTATION_OVERLAP`]; one still overlapping from an earlier rotation ends now (only the secret
/// just replaced is owed a grace period). Returns `(secret id, new expiry)` for each change; `None`
/// for a public client, which has no secret to rotate.
pub fn plan_rotation(
    kind: ClientKind,
    stored: &[StoredSecret],
    now: DateTime<Utc>,
) -> Option<Vec<(Uuid, DateTime<Utc>)>> {
    if kind == ClientKind::Public {
        return None;
    }
    Some(
        stored
            .iter()
            .filter_map(|secret| match secret.expires_at {
                None => Some((secret.id, now + ROTATION_OVERLAP)),
                Some(until) if until > now => Some((secret.id, now)),
                Some(_) => None,
            })
            .collect(),
    )
}

/// The scopes of a client-credentials token: those requested, which must all be the client's;
/// without `scope`, all of the client's. `Err` holds the requested scopes the client lacks.
pub fn grant_scopes(client: &ScopeSet, requested: Option<&ScopeSet>) -> Result<ScopeSet, ScopeSet> {
    match requested {
        None => Ok(client.clone()),
        Some(requested) if requested.is_subset(client) => Ok(requested.clone()),
        Some(requested) => Err(requested.difference(client)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_256_bits_and_are_stored_as_sha256() {
        use secrecy::ExposeSecret;
        let (secret, hash) = new_secret();
        let text = secret.expose_secret();
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(text.len(), SECRET_PREFIX.len() + 43, "32 random bytes in base64url");
        assert_eq!(hash, secret_hash(text));
        let id = new_client_id();
        assert!(id.starts_with(CLIENT_ID_PREFIX) && id.len() == CLIENT_ID_PREFIX.len() + 22);
    }

    #[test]
    fn a_secret_matches_while_it_is_current_or_within_its_overlap() {
        let now = Utc::now();
        let stored = |expires_at: Option<DateTime<Utc>>| StoredSecret {
            id: Uuid::nil(),
            hash: secret_hash("s3cret").to_vec(),
            expires_at,
        };
        let cases = [
            ("current", Some(stored(None)), "s3cret", true),
            ("within the overlap", Some(stored(Some(now + Duration::minutes(59)))), "s3cret", true),
            ("overlap over", Some(stored(Some(now))), "s3cret", false),
            ("wrong secret", Some(stored(None)), "s3creT", false),
            ("no secret stored", None, "s3cret", false),
        ];
        for (case, secret, presented, expected) in cases {
            let secrets: Vec<StoredSecret> = secret.into_iter().collect();
            assert_eq!(secret_matches(&secrets, presented, now), expected, "{case}");
        }
    }

    #[test]
    fn a_rotation_gives_the_current_secret_an_hour_and_ends_older_overlaps() {
        let now = Utc::now();
        let secret = |n: u128, expires_at| StoredSecret { id: Uuid::from_u128(n), hash: vec![], expires_at };
        let stored = [
            secret(1, None),
            secret(2, Some(now + Duration::minutes(30))),
            secret(3, Some(now - Duration::minutes(1))),
        ];
        assert_eq!(
            plan_rotation(ClientKind::Confidential, &stored, now),
            Some(vec![(Uuid::from_u128(1), now + Duration::hours(1)), (Uuid::from_u128(2), now)])
        );
        assert_eq!(plan_rotation(ClientKind::Confidential, &[], now), Some(vec![]));
        assert_eq!(plan_rotation(ClientKind::Public, &[], now), None, "a public client has no secret");
    }

    #[test]
    fn token_scopes_are_the_requested_subset_or_everything_the_client_has() {
        let set = |text: &str| ScopeSet::parse(text).unwrap();
        let client = set("items:read tokens:introspect");
        let cases = [
            (None, Ok(set("items:read tokens:introspect"))),
            (Some(set("items:read")), Ok(set("items:read"))),
            (Some(set("")), Ok(set(""))),
            (Some(set("items:read profile")), Err(set("profile"))),
        ];
        for (requested, expected) in cases {
            assert_eq!(grant_scopes(&client, requested.as_ref()), expected, "{requested:?}");
        }
    }
}
