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

    /// NIST SP 800-63B §5.1.1.2: beyond its length, a chosen password must not be one that is easy to
    /// guess (common, a keyboard pattern, the user's own name …). zxcvbn estimates how many guesses it
    /// takes, counting `user_inputs` (the username, email address, full name) as known to an attacker;
    /// a score of 3 (about 10^10 guesses) or more passes. The refusal carries the estimator's own advice.
    pub fn strength(&self, user_inputs: &[&str]) -> Result<(), WeakPassword> {
        // Each name counts whole and word by word: "ada.lovelace@example.org" gives away "lovelace" too.
        let mut known: Vec<&str> = user_inputs.to_vec();
        for input in user_inputs {
            known.extend(input.split(|c: char| !c.is_alphanumeric()).filter(|word| word.chars().count() >= 3));
        }
        let estimate = zxcvbn::zxcvbn(self.0.expose_secret(), &known);
        if estimate.score() >= zxcvbn::Score::Three {
            return Ok(());
        }
        let mut advice: Vec<String> = Vec::new();
        if let Some(feedback) = estimate.feedback() {
            advice.extend(feedback.warning().map(|warning| warning.to_string()));
            advice.extend(feedback.suggestions().iter().map(ToString::to_string));
        }
        if advice.is_empty() {
            advice.push("Add another word or two. Uncommon words are better.".to_owned());
        }
        Err(WeakPassword { score: u8::from(estimate.score()), advice: advice.join(" ") })
    }
}

/// A password the strength estimate refuses, with what the estimator says about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this password is too easy to guess (strength {score} of 4, at least 3 is needed). {advice}")]
pub struct WeakPassword {
    /// zxcvbn's score, 0–4.
    pub score: u8,
    /// The estimator's warning and suggestions, as sentences.
    pub advice: String,
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

    fn strength(password: &str, inputs: &[&str]) -> Result<(), WeakPassword> {
        NewPassword::parse(password.into()).unwrap().strength(inputs)
    }

    #[test]
    fn common_and_patterned_passwords_are_refused_with_the_estimators_advice() {
        let weak = strength("password1", &[]).unwrap_err();
        assert!(weak.score < 3);
        assert!(weak.advice.contains("common"), "{}", weak.advice);
        assert!(strength("qwertyuiop", &[]).is_err());
        assert!(strength("aaaaaaaaaaaa", &[]).is_err());
    }

    #[test]
    fn the_users_own_names_count_as_known_to_an_attacker() {
        // Strong on its own, weak for the user whose name and email it is made of.
        let password = "zephyrinequorvath";
        assert!(strength(password, &[]).is_ok());
        assert!(strength(password, &["zephyrine", "zephyrine.q@example.org", "Zephyrine Quorvath"]).is_err());
    }

    #[test]
    fn a_few_uncommon_words_pass() {
        assert!(strength("correct horse battery staple", &["alice"]).is_ok());
        assert!(strength("velvet-otter-sings-47", &[]).is_ok());
        // The example of the API document (`POST /api/admin/users`), with the example account's
        // own names known to the estimator, as the server checks it.
        assert!(strength("quartz-lantern-97-drifts-upward", &["bob", "bob@example.org", "Bob Example"]).is_ok());
    }
}
