//! Recovery codes: ten single-use codes of 80 random bits, shown once as `XXXX-XXXX-XXXX-XXXX`
//! (base32, so no 0/O or 1/I confusion), stored as SHA-256 of the user id and the normalised code.
//! 80 bits cannot be guessed or brute-forced from the hash, so a fast hash is enough (bcrypt would
//! only make using one slow); the user id in the hash keeps two users' equal codes apart.

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const CODES_PER_SET: usize = 10;
/// 10 bytes: 80 bits, 16 base32 characters.
const CODE_BYTES: usize = 10;
/// `/account` warns when this many or fewer are left.
pub const FEW_LEFT: i64 = 2;

/// A new set of codes, as the person sees them.
pub fn generate() -> Vec<String> {
    (0..CODES_PER_SET)
        .map(|_| {
            let encoded =
                base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &crate::random::bytes(CODE_BYTES));
            encoded
                .as_bytes()
                .chunks(4)
                .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// A typed code as stored: case, spaces and dashes ignored. `None` when it cannot be one.
pub fn normalise(raw: &str) -> Option<String> {
    let code: String =
        raw.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    let base32 = |b: u8| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b);
    (code.len() == 16 && code.bytes().all(base32)).then_some(code)
}

/// What is stored for `code` of `user_id`.
pub fn hash(user_id: Uuid, code: &str) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(user_id.as_bytes());
    digest.update(code.as_bytes());
    digest.finalize().to_vec()
}

/// The stored hashes of a new set.
pub fn hashes(user_id: Uuid, codes: &[String]) -> Vec<Vec<u8>> {
    codes.iter().filter_map(|code| normalise(code)).map(|code| hash(user_id, &code)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_ten_distinct_grouped_base32_codes() {
        let codes = generate();
        assert_eq!(codes.len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(code.split('-').count(), 4);
            assert!(normalise(code).is_some(), "{code}");
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
    }

    #[test]
    fn typed_codes_ignore_case_spaces_and_dashes() {
        let code = generate().remove(0);
        let user = Uuid::new_v4();
        let stored = hash(user, &normalise(&code).unwrap());
        for typed in [code.clone(), code.to_lowercase(), code.replace('-', " "), code.replace('-', "")] {
            assert_eq!(hash(user, &normalise(&typed).unwrap()), stored, "{typed}");
        }
        assert_ne!(hash(Uuid::new_v4(), &normalise(&code).unwrap()), stored, "bound to the user");
        for bad in ["", "ABCD-EFGH", "ABCD-EFGH-IJKL-MNO1", "123456"] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
        assert_eq!(hashes(user, &[code]), vec![stored]);
    }
}
