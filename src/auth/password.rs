//! bcrypt hashing and verification, kept off the async executor and rationed so that a login storm
//! cannot take every core away from the API.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the blocking thread pool is gone")]
    Canceled,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    Match,
    /// The password matched, and here is a new hash at the configured cost to store instead.
    MatchRehashed(String),
}

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// A hash of a random password at the configured cost: verified against when a username does not
    /// exist, so unknown users cost the same time as known ones.
    dummy_hash: Arc<str>,
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    /// Hashing is CPU-bound: leave at least one core to everything else.
    pub fn new(cost: u32) -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let dummy_hash = bcrypt::hash(crate::auth::random_token(24), cost)?;
        Ok(Self {
            cost,
            dummy_hash: dummy_hash.into(),
            permits: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        let cost = self.cost;
        self.rationed(move || Ok(bcrypt::hash(password.expose_secret(), cost)?)).await
    }

    /// Checks `password` against `stored` (or against the dummy hash when there is no user), and
    /// re-hashes on success when the stored cost is below the configured one.
    pub async fn verify(&self, password: SecretString, stored: Option<String>) -> Result<Verification, HashError> {
        let cost = self.cost;
        let dummy = self.dummy_hash.clone();
        self.rationed(move || {
            let (hash, real) = match &stored {
                Some(hash) => (hash.as_str(), true),
                None => (&*dummy, false),
            };
            let secret = password.expose_secret();
            // bcrypt only reads 72 bytes; a longer password could never have been set here, and
            // must not match a prefix. Still spend the time, so length does not show in timing.
            let too_long = secret.len() > crate::domain::NewPassword::MAX_BYTES;
            let candidate = if too_long { &secret[..0] } else { secret };
            let matched = bcrypt::verify(candidate, hash).unwrap_or(false) && real && !too_long;
            if !matched {
                return Ok(Verification::Mismatch);
            }
            if stored_cost(hash).is_some_and(|stored| stored < cost) {
                return Ok(Verification::MatchRehashed(bcrypt::hash(secret, cost)?));
            }
            Ok(Verification::Match)
        })
        .await
    }

    async fn rationed<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Canceled)?;
        actix_web::web::block(work).await.map_err(|_| HashError::Canceled)?
    }
}

/// The cost field of a `$2b$12$…` hash.
fn stored_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// Hashes on the calling thread: for the command line, which has no executor to protect.
pub fn hash_blocking(password: &SecretString, cost: u32) -> Result<String, HashError> {
    Ok(bcrypt::hash(password.expose_secret(), cost)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_correct_password_matches_and_a_wrong_one_does_not() {
        let hasher = PasswordHasher::new(4).unwrap();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert_eq!(hasher.verify("correct horse".into(), Some(hash.clone())).await.unwrap(), Verification::Match);
        assert_eq!(hasher.verify("wrong".into(), Some(hash)).await.unwrap(), Verification::Mismatch);
        assert_eq!(hasher.verify("anything".into(), None).await.unwrap(), Verification::Mismatch);
    }

    #[actix_web::test]
    async fn a_cheaper_stored_hash_is_upgraded_on_success() {
        let old = bcrypt::hash("correct horse", 4).unwrap();
        let hasher = PasswordHasher::new(5).unwrap();
        match hasher.verify("correct horse".into(), Some(old)).await.unwrap() {
            Verification::MatchRehashed(new) => assert_eq!(stored_cost(&new), Some(5)),
            other => panic!("expected a re-hash, got {other:?}"),
        }
    }

    #[actix_web::test]
    async fn a_password_longer_than_72_bytes_never_matches_its_prefix() {
        let hasher = PasswordHasher::new(4).unwrap();
        let hash = bcrypt::hash("x".repeat(72), 4).unwrap();
        assert_eq!(hasher.verify("x".repeat(80).into(), Some(hash)).await.unwrap(), Verification::Mismatch);
    }
}
