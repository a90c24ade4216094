//! What an account is made of besides its username and password: an email address and a full name,
//! checked the same way wherever they are typed (the admin pages, the admin API, the command line).

use std::fmt;

/// An email address as far as a form can tell: one `@`, something before it, a dot after it, no
/// spaces, at most 254 characters (RFC 5321's path limit). Whether it receives mail is not our business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an email address")]
pub struct EmailError(pub String);

impl Email {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = raw.trim();
        // As typed, spaces included (see `Username::parse`).
        let valid = raw.chars().count() <= Self::MAX_CHARS
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.contains('@') && domain.contains('.') && !domain.ends_with('.')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid { Ok(Self(email.to_owned())) } else { Err(EmailError(raw.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's name as they write it: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FullNameError {
    #[error("full name must be at most {max} characters", max = FullName::MAX_CHARS)]
    TooLong,
    #[error("full name must not contain control characters")]
    ControlCharacters,
}

impl FullName {
    pub const MAX_CHARS: usize = 200;

    /// `None` for a blank name: an empty field means "no name".
    pub fn parse(raw: &str) -> Result<Option<Self>, FullNameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(FullNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(FullNameError::ControlCharacters);
        }
        Ok(Some(Self(name.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_trimmed_and_need_an_at_and_a_dotted_domain() {
        assert_eq!(Email::parse(" bob@example.org ").unwrap().as_str(), "bob@example.org");
        for bad in ["bob", "@example.org", "bob@example", "bob@exa mple.org", "bob@@example.org", "bob@example."] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.org", "b".repeat(250))).is_err());
    }

    #[test]
    fn a_blank_full_name_is_no_name_and_long_or_odd_ones_are_refused() {
        assert_eq!(FullName::parse("  "), Ok(None));
        assert_eq!(FullName::parse(" Zoë Q ").unwrap().unwrap().as_str(), "Zoë Q");
        assert_eq!(FullName::parse(&"n".repeat(201)), Err(FullNameError::TooLong));
        assert_eq!(FullName::parse("a\u{1b}[2Jb"), Err(FullNameError::ControlCharacters));
    }
}
