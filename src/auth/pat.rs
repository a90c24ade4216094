//! Personal access tokens: what a token looks like, and the rules a stored one is judged by. Pure:
//! nothing here reads a clock or the database; `db::personal_tokens` loads the rows and writes what
//! these functions decide.
//!
//! A token is `gth_` and 36 base62 characters: 30 random ones (178 bits) and a 6-character CRC32 of
//! them, so leak scanners recognise a token and check it offline (GitHub's format), and a mistyped
//! or truncated one is refused here without a database lookup.

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::domain::ScopeSet;

pub const PREFIX: &str = "gth_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// `gth_` and 36 characters.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

/// The lifetime a token gets when none is asked for, and the longest one it may have (GitLab's rule:
/// never open-ended, at most a year).
pub const DEFAULT_EXPIRY_DAYS: u16 = 30;
pub const MAX_EXPIRY_DAYS: u16 = 365;
/// The lifetimes the account page offers.
pub const OFFERED_EXPIRY_DAYS: [u16; 4] = [7, 30, 90, 365];
/// A token's name: what its owner recognises it by on the list.
pub const MAX_NAME_CHARS: usize = 100;

/// How often a token's last use is written: the first use at once, later ones at most this often,
/// so a busy script costs a write per ten minutes, not one per request.
pub fn last_used_interval() -> Duration {
    Duration::minutes(10)
}

/// A newly generated token: shown once to its owner, stored only as [`hash`].
pub struct NewToken(SecretString);

impl NewToken {
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    pub fn hash(&self) -> Vec<u8> {
        hash(self.0.expose_secret())
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(redacted)")
    }
}

/// A new random token from the operating system's generator.
pub fn generate() -> NewToken {
    let mut body = String::with_capacity(RANDOM_LEN);
    while body.len() < RANDOM_LEN {
        // 248 = 4 × 62: bytes above it are dropped, so every character is equally likely.
        for byte in crate::random::bytes(RANDOM_LEN) {
            if body.len() < RANDOM_LEN && byte < 248 {
                body.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    NewToken(SecretString::from(format!("{PREFIX}{body}{}", checksum(&body))))
}

/// CRC-32/IEEE (as zlib computes it) of `body`, in base62, most significant digit first, zero-padded
/// to 6 characters (62⁶ > 2³²).
fn checksum(body: &str) -> String {
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// Whether a bearer credential claims to be a personal access token (and so is judged as one, never
/// as a JWT).
pub fn is_personal_token(presented: &str) -> bool {
    presented.starts_with(PREFIX)
}

/// Why a presented string is not a personal access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the token does not start with gth_")]
    Prefix,
    #[error("the token has the wrong length")]
    Length,
    #[error("the token has characters outside 0-9A-Za-z")]
    Alphabet,
    #[error("the token's checksum does not match")]
    Checksum,
}

/// Checks a presented token's form and checksum, without any lookup.
pub fn check_format(presented: &str) -> Result<(), FormatError> {
    let body = presented.strip_prefix(PREFIX).ok_or(FormatError::Prefix)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN {
        return Err(FormatError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Alphabet);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// SHA-256 of the whole token: what is stored and looked up. The token has 178 random bits, so a
/// fast hash is enough (nothing to brute-force) and a lookup is one index probe.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A token's lifetime in days, `1..=365`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryDays(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token expires in 1 to 365 days")]
pub struct ExpiryError;

impl ExpiryDays {
    /// `None` (not asked for) is the default, 30 days.
    pub fn new(days: Option<i64>) -> Result<Self, ExpiryError> {
        match days {
            None => Ok(Self(DEFAULT_EXPIRY_DAYS)),
            Some(days) => u16::try_from(days)
                .ok()
                .filter(|days| (1..=MAX_EXPIRY_DAYS).contains(days))
                .map(Self)
                .ok_or(ExpiryError),
        }
    }

    /// The command line's `--expires-in`: `30d` or `30`.
    pub fn parse(text: &str) -> Result<Self, ExpiryError> {
        let digits = text.trim().strip_suffix('d').unwrap_or(text.trim());
        let days = digits.parse::<i64>().map_err(|_| ExpiryError)?;
        Self::new(Some(days))
    }

    pub fn days(self) -> u16 {
        self.0
    }

    pub fn expires_at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + Duration::days(i64::from(self.0))
    }
}

/// A token's name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a token needs a name")]
    Empty,
    #[error("a token's name has at most 100 characters")]
    TooLong,
    #[error("a token's name cannot contain control characters")]
    Control,
}

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the scopes asked for cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a token needs at least one scope")]
    None,
    #[error("your roles do not allow the scope(s) {0}")]
    NotAllowed(String),
}

/// The scopes a new token gets: exactly those asked for, each allowed by one of the owner's roles
/// now. Unlike the password grant, nothing is implied: a script's token carries what was chosen.
pub fn grantable(requested: &ScopeSet, allowed: &ScopeSet) -> Result<ScopeSet, ScopeError> {
    if requested.is_empty() {
        return Err(ScopeError::None);
    }
    let refused = requested.difference(allowed);
    if !refused.is_empty() {
        return Err(ScopeError::NotAllowed(refused.to_string()));
    }
    Ok(requested.clone())
}

/// The scopes a token acts with at use: those it was given that the owner's roles still allow.
pub fn scopes_at_use(granted: &ScopeSet, allowed_now: &ScopeSet) -> ScopeSet {
    granted.iter().filter(|scope| allowed_now.contains(scope.as_str())).cloned().collect()
}

/// What a stored token and its owner say at a use.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The owner's invalidation cut-off (password change, deactivation, sign-out everywhere).
    pub tokens_valid_after: DateTime<Utc>,
}

/// Why a stored token no longer works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    Revoked,
    Expired,
    /// Created before its owner's latest cut-off: dead for good, also after a reactivation.
    CutOff,
}

/// Whether the token works at `now`. The owner's active flag is not judged here: an inactive owner's
/// live token gets the same `403 inactive_user` as their access token would.
pub fn judge(token: &StoredToken, now: DateTime<Utc>) -> Result<(), Dead> {
    if token.revoked_at.is_some() {
        return Err(Dead::Revoked);
    }
    if token.created_at < token.tokens_valid_after {
        return Err(Dead::CutOff);
    }
    if now >= token.expires_at {
        return Err(Dead::Expired);
    }
    Ok(())
}

/// Whether a new token may be made for a user on the strength of a credential checked at
/// `credential_checked_at` (`None`: the operator at the command line, who needs none): not while
/// the user is inactive, and not from a credential that an invalidation has ended meanwhile (a
/// password change racing the request).
pub fn may_create(
    is_active: bool,
    tokens_valid_after: DateTime<Utc>,
    credential_checked_at: Option<DateTime<Utc>>,
) -> bool {
    is_active && credential_checked_at.is_none_or(|checked| checked >= tokens_valid_after)
}

/// Whether this use's time and address are written: the first use at once, later ones once the
/// last written one is [`last_used_interval`] old. The write itself repeats this test in its `WHERE`
/// (see [`stale_before`]), so racing requests on any number of instances write once per interval.
pub fn record_use(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used_at.is_none_or(|last| last <= stale_before(now))
}

/// A last use at or before this instant is due to be overwritten at `now`.
pub fn stale_before(now: DateTime<Utc>) -> DateTime<Utc> {
    now - last_used_interval()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn scopes(raw: &str) -> ScopeSet {
        ScopeSet::parse(raw).unwrap()
    }

    #[test]
    fn a_generated_token_has_the_prefix_36_base62_characters_and_a_valid_checksum() {
        for _ in 0..200 {
            let token = generate();
            let text = token.secret().expose_secret();
            assert_eq!(text.len(), TOKEN_LEN);
            assert!(text.starts_with("gth_"));
            assert!(text[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(check_format(text), Ok(()));
        }
        assert_ne!(generate().secret().expose_secret(), generate().secret().expose_secret());
    }

    #[test]
    fn the_checksum_is_zlib_crc32_in_base62_most_significant_digit_first() {
        // Python: zlib.crc32(b"0" * 30) == 2011552642 == 2·62⁵ + 12·62⁴ + 8·62³ + 16·62² + 45·62 + 28
        let cases = [
            ("000000000000000000000000000000", 2_011_552_642, "2C8GjS"),
            ("abcdefghijABCDEFGHIJ0123456789", 2_010_150_927, "2C2O59"),
        ];
        for (body, crc, expected) in cases {
            assert_eq!(crc32fast::hash(body.as_bytes()), crc);
            assert_eq!(checksum(body), expected);
            assert_eq!(check_format(&format!("gth_{body}{expected}")), Ok(()));
        }
    }

    #[test]
    fn a_small_crc_is_zero_padded_to_six_digits() {
        // Any body whose CRC is below 62⁵ gets leading zeros; find one by search (about 1 in 62).
        let body = (0..100_000u32)
            .map(|n| format!("{n:0>30}"))
            .find(|body| crc32fast::hash(body.as_bytes()) < 62u32.pow(5))
            .unwrap();
        let sum = checksum(&body);
        assert_eq!(sum.len(), 6);
        assert!(sum.starts_with('0'));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        let good = generate().secret().expose_secret().to_owned();
        let mut wrong_sum = good.clone();
        let last = wrong_sum.pop().unwrap();
        wrong_sum.push(if last == 'a' { 'b' } else { 'a' });
        let cases: [(&str, Result<(), FormatError>); 7] = [
            (&good, Ok(())),
            ("ghp_000000000000000000000000000000000000", Err(FormatError::Prefix)),
            ("gth_0000", Err(FormatError::Length)),
            (&format!("{good}0"), Err(FormatError::Length)),
            ("gth_00000000000000000000000000000-000000", Err(FormatError::Alphabet)),
            (&wrong_sum, Err(FormatError::Checksum)),
            ("", Err(FormatError::Prefix)),
        ];
        for (presented, expected) in cases {
            assert_eq!(check_format(presented), expected, "{presented}");
        }
    }

    #[test]
    fn expiry_is_one_to_365_days_defaulting_to_30() {
        let cases: [(Option<i64>, Result<u16, ExpiryError>); 7] = [
            (None, Ok(30)),
            (Some(1), Ok(1)),
            (Some(365), Ok(365)),
            (Some(0), Err(ExpiryError)),
            (Some(366), Err(ExpiryError)),
            (Some(-7), Err(ExpiryError)),
            (Some(i64::MAX), Err(ExpiryError)),
        ];
        for (days, expected) in cases {
            assert_eq!(ExpiryDays::new(days).map(ExpiryDays::days), expected, "{days:?}");
        }
        assert_eq!(ExpiryDays::parse("30d").map(ExpiryDays::days), Ok(30));
        assert_eq!(ExpiryDays::parse("7").map(ExpiryDays::days), Ok(7));
        assert_eq!(ExpiryDays::parse("2w"), Err(ExpiryError));
        assert_eq!(ExpiryDays::parse("400d"), Err(ExpiryError));
        assert_eq!(ExpiryDays::new(Some(7)).unwrap().expires_at(at(0)), at(7 * 86_400));
    }

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(TokenName::parse("  ci deploy ").map(|n| n.as_str().to_owned()), Ok("ci deploy".to_owned()));
        assert_eq!(TokenName::parse("   "), Err(NameError::Empty));
        assert_eq!(TokenName::parse(&"x".repeat(101)), Err(NameError::TooLong));
        assert!(TokenName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(TokenName::parse("a\nb"), Err(NameError::Control));
    }

    #[test]
    fn requested_scopes_must_be_allowed_by_the_owners_roles() {
        let allowed = scopes("profile items:read items:write");
        let cases: [(&str, Result<&str, ScopeError>); 4] = [
            ("profile", Ok("profile")),
            ("items:read items:write", Ok("items:read items:write")),
            ("", Err(ScopeError::None)),
            ("profile admin:users admin:stats", Err(ScopeError::NotAllowed("admin:stats admin:users".to_owned()))),
        ];
        for (requested, expected) in cases {
            let got = grantable(&scopes(requested), &allowed);
            assert_eq!(got, expected.map(scopes), "{requested}");
        }
    }

    #[test]
    fn at_use_a_token_keeps_only_the_scopes_the_roles_still_allow() {
        let granted = scopes("profile admin:stats");
        assert_eq!(scopes_at_use(&granted, &scopes("profile items:read admin:stats")), granted);
        assert_eq!(scopes_at_use(&granted, &scopes("profile items:read")), scopes("profile"));
        assert_eq!(scopes_at_use(&granted, &ScopeSet::default()), ScopeSet::default());
    }

    #[test]
    fn a_token_is_dead_once_revoked_expired_or_cut_off() {
        let live = StoredToken { created_at: at(0), expires_at: at(100), revoked_at: None, tokens_valid_after: at(-5) };
        let cases = [
            (live.clone(), at(50), Ok(())),
            (live.clone(), at(100), Err(Dead::Expired)),
            (StoredToken { revoked_at: Some(at(10)), ..live.clone() }, at(50), Err(Dead::Revoked)),
            (StoredToken { tokens_valid_after: at(1), ..live.clone() }, at(50), Err(Dead::CutOff)),
            // Made at the very instant of the cut-off: after it (the cut-off is read under the user's lock).
            (StoredToken { tokens_valid_after: at(0), ..live.clone() }, at(50), Ok(())),
        ];
        for (token, now, expected) in cases {
            assert_eq!(judge(&token, now), expected, "{token:?} at {now}");
        }
    }

    #[test]
    fn a_token_is_made_only_for_an_active_user_from_a_credential_the_cut_off_did_not_end() {
        let cutoff = at(0);
        assert!(may_create(true, cutoff, Some(at(1))));
        assert!(may_create(true, cutoff, Some(at(0))));
        assert!(may_create(true, cutoff, None));
        assert!(!may_create(true, cutoff, Some(at(-1))));
        assert!(!may_create(false, cutoff, None));
    }

    #[test]
    fn the_first_use_is_written_at_once_and_later_ones_every_ten_minutes() {
        let cases = [
            (None, at(0), true),
            (Some(at(0)), at(1), false),
            (Some(at(0)), at(599), false),
            (Some(at(0)), at(600), true),
            (Some(at(0)), at(3600), true),
            // A clock behind the stored one writes nothing.
            (Some(at(10)), at(0), false),
        ];
        for (last, now, expected) in cases {
            assert_eq!(record_use(last, now), expected, "{last:?} at {now}");
        }
    }
}
