use std::fmt;

/// A username as it may be registered: 1–64 characters from a conservative set, so usernames are
/// safe to show, log and type. Lookups at login are case-insensitive and do not require this form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    #[error("username must be 1 to 64 characters")]
    Length,
    #[error("username may contain only letters, digits and . _ - @ +")]
    Characters,
}

impl Username {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        // The limit counts what was typed, spaces around it included: one rule for forms, the API
        // and the document that describes it (JSON Schema's maxLength counts the same way).
        let name = raw.trim();
        if name.is_empty() || raw.chars().count() > Self::MAX_CHARS {
            return Err(UsernameError::Length);
        }
        if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')) {
            return Err(UsernameError::Characters);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted_and_trimmed() {
        assert_eq!(Username::parse(" alice ").unwrap().as_str(), "alice");
        assert!(Username::parse("bob.smith@example.org").is_ok());
        assert!(Username::parse("zoë").is_ok());
    }

    #[test]
    fn empty_long_and_odd_names_are_refused() {
        assert_eq!(Username::parse("  "), Err(UsernameError::Length));
        assert_eq!(Username::parse(&"a".repeat(65)), Err(UsernameError::Length));
        assert_eq!(Username::parse("a b"), Err(UsernameError::Characters));
        assert_eq!(Username::parse("<script>"), Err(UsernameError::Characters));
    }
}
