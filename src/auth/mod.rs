//! Who is calling, and may they: password checks, access tokens, bearer extraction.

pub mod bearer;
pub mod credentials;
pub mod guard;
pub mod jwt;
pub mod password;
pub mod session;
pub mod throttle;
pub mod token_checks;

use base64::Engine as _;

/// `bytes` bytes from the operating system's CSPRNG, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS generator failing is not a state the process can continue from safely.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
