//! Random values from the operating system's CSPRNG: secrets, session keys, refresh tokens, CSRF tokens.

use base64::Engine as _;

/// `bytes` random bytes, base64url without padding.
pub fn token(bytes: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self::bytes(bytes))
}

/// `count` random bytes.
pub fn bytes(count: usize) -> Vec<u8> {
    let mut buf = vec![0u8; count];
    // The OS generator failing is not a state the process can continue from safely.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_url_safe_and_differ() {
        let (a, b) = (super::token(32), super::token(32));
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
