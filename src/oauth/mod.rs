//! The OAuth2 authorization server: parsing token requests and carrying out the grants.

pub mod form;
pub mod grant;
pub mod request;
