//! Private keys at rest: made, named by their thumbprint, sealed under a key derived from the
//! master secret, and re-encrypted when that secret changes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use diesel::PgConnection;
use hkdf::Hkdf;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::SigningAlgorithm;
use crate::db::{self, locks};

use super::*;

/// Encrypts private keys at rest: ChaCha20-Poly1305 under a key derived from the master secret,
/// a random nonce stored first, the kid as associated data (a ciphertext moved to another row fails).
pub struct KeyCipher(ChaCha20Poly1305);

impl KeyCipher {
    pub fn new(master_secret: &SecretString) -> Self {
        Self::with_label(master_secret, b"gatehouse signing keys at rest")
    }

    /// A cipher for another kind of secret at rest, under its own HKDF label: a ciphertext of one
    /// kind never opens as another.
    pub fn with_label(master_secret: &SecretString, label: &[u8]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expansion cannot fail.
        let _ = Hkdf::<Sha256>::new(None, master_secret.expose_secret().as_bytes()).expand(label, key.as_mut());
        Self(ChaCha20Poly1305::new(&Key::from(*key)))
    }

    /// Seals `private_der`, bound to `kid` (associated data).
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

pub(super) fn jose(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::Es256 => Algorithm::ES256,
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        SigningAlgorithm::Hs256 => Algorithm::HS256,
        SigningAlgorithm::Rs256 => Algorithm::RS256,
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
        SigningAlgorithm::Rs256 => {
            // aws-lc-rs: constant-time RSA (the `rsa` crate has an open timing advisory, RUSTSEC-2023-0071).
            use aws_lc_rs::encoding::AsDer as _;
            let key =
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|err| failed(&err))?;
            let der = key.as_der().map_err(|err| failed(&err))?;
            Zeroizing::new(der.as_ref().to_vec())
        }
        SigningAlgorithm::Hs256 => return Err(KeyError::Generate("HS256 has no key to generate".into())),
    };
    let encoding = encoding_key(alg, &private_der).map_err(|err| failed(&err))?;
    let mut public_jwk = Jwk::from_encoding_key(&encoding, jose(alg)).map_err(|err| failed(&err))?;
    let kid = public_jwk.thumbprint(ThumbprintHash::SHA256).map_err(|err| failed(&err))?;
    public_jwk.common.key_id = Some(kid.clone());
    public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(NewKey { kid, public_jwk, private_der })
}

/// The signing key of a stored PKCS#8 private key. jsonwebtoken reads RSA keys as PKCS#1
/// (`RSAPrivateKey`), which PKCS#8 wraps: the inner key is handed over.
pub(super) fn encoding_key(
    alg: SigningAlgorithm,
    private_der: &[u8],
) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    Ok(match alg {
        SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(private_der),
        SigningAlgorithm::Rs256 => {
            let info = p256::pkcs8::PrivateKeyInfoRef::try_from(private_der)
                .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
            EncodingKey::from_rsa_der(info.private_key.as_bytes())
        }
        _ => EncodingKey::from_ec_der(private_der),
    })
}

/// The kid of the HS256 key that `secret` is: the thumbprint of its symmetric JWK (never published).
pub fn hs256_kid(secret: &SecretString) -> Result<String, KeyError> {
    let key =
        EncodingKey::from_secret(secret.expose_secret().as_bytes()).map_err(|err| KeyError::Generate(err.into()))?;
    Jwk::from_encoding_key(&key, Algorithm::HS256)
        .and_then(|jwk| jwk.thumbprint(ThumbprintHash::SHA256))
        .map_err(|err| KeyError::Generate(err.into()))
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

    #[test]
    fn generated_keys_are_named_by_their_thumbprint_and_sealed_at_rest() {
        for alg in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
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
