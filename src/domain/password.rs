use secrecy::{ExposeSecret, SecretString};

/// A password being set (not one being checked at login): long enough to mean something, and no
/// longer than bcrypt can hash, since bcrypt would silently ignore everything past 72 bytes.
pub struct NewPassword(SecretString);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password must be at least {min} characters", min = NewPassword::MIN_CHARS)]
    TooShort,
    #[error("password must be at most {max} bytes (bcrypt ignores anything longer)", max = NewPassword::MAX_BYTES)]
    TooLong,
}

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_BYTES: usize = 72;

    pub fn parse(raw: SecretString) -> Result<Self, PasswordError> {
        let text = raw.expose_secret();
        if text.chars().count() < Self::MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if text.len() > Self::MAX_BYTES {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(raw))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(NewPassword::parse("short".into()).unwrap_err(), PasswordError::TooShort);
        assert_eq!(NewPassword::parse("x".repeat(73).into()).unwrap_err(), PasswordError::TooLong);
        assert!(NewPassword::parse("x".repeat(72).into()).is_ok());
        // 24 three-byte characters are 72 bytes: allowed; one more is not.
        assert!(NewPassword::parse("€".repeat(24).into()).is_ok());
        assert_eq!(NewPassword::parse("€".repeat(25).into()).unwrap_err(), PasswordError::TooLong);
    }
}
