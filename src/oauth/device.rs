//! The device authorization grant (RFC 8628): user codes. What a poll is answered is a rule of
//! `domain::rules::device` (the database layer applies it under the code's lock).

pub use crate::domain::rules::device::{
    DEVICE_CODE_TTL, Decision, DeviceState, INTERVAL_SECS, PollOutcome, SLOW_DOWN_STEP, decide_poll,
};

/// The letters of a user code: no vowels (no words), no look-alikes such as 0/O or 1/I (RFC 8628 §6.1).
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LETTERS: usize = 8;

/// A fresh user code: 8 letters of [`ALPHABET`] (20^8, about 34 bits: guessing one at `/device`
/// is throttled like a password, and a code lives ten minutes).
pub fn new_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LETTERS);
    while code.len() < USER_CODE_LETTERS {
        for byte in crate::random::bytes(16) {
            // 240 is the largest multiple of 20 below 256: no letter is likelier than another.
            if byte < 240 && code.len() < USER_CODE_LETTERS {
                code.push(ALPHABET[usize::from(byte % 20)] as char);
            }
        }
    }
    code
}

/// How a person is shown the code: `XXXX-XXXX`.
pub fn display(user_code: &str) -> String {
    let (first, second) = user_code.split_at(user_code.len().min(4));
    format!("{first}-{second}")
}

/// What a person typed, as stored: case, dashes and spaces ignored; `None` when it cannot be a code.
pub fn normalize(typed: &str) -> Option<String> {
    let letters: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (letters.len() == USER_CODE_LETTERS && letters.bytes().all(|b| ALPHABET.contains(&b))).then_some(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_alphabet_and_read_back_however_typed() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), 8);
            assert!(code.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
            let shown = display(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(normalize(&shown).as_deref(), Some(code.as_str()));
            assert_eq!(normalize(&shown.to_lowercase()).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalize("bcdf ghjk").as_deref(), Some("BCDFGHJK"));
        for bad in ["BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", ""] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
