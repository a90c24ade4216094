//! Who is calling, and may they: password checks, access tokens, bearer tokens, browser sessions,
//! throttling. Nothing here speaks HTTP: `routes` turns these answers into responses.

pub mod bearer;
pub mod client_secret;
pub mod credentials;
pub mod guard;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod pat;
pub mod second_factor;
pub mod session;
pub mod throttle;
pub mod token_checks;
