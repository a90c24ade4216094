//! A second factor for people: authenticator apps ([`totp`]) and recovery codes ([`recovery`]).
//! What a presented code means, how a sign-in is described (`amr`) and whom the policy covers are
//! decided here, purely; `db::second_factors` loads the rows under the user's lock and makes the
//! one conditional write that spends a step or a code; `auth::credentials` puts it in the sign-in.

pub mod passkey;
pub mod recovery;
pub mod totp;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::keys::KeyCipher;

/// The HKDF label of the key that seals TOTP secrets at rest (never the signing keys' key).
const TOTP_SEAL_LABEL: &[u8] = b"gatehouse totp secrets at rest";

/// Seals and opens TOTP secrets, bound to their user (a ciphertext moved to another user's row
/// does not open).
pub struct TotpSealer(KeyCipher);

impl TotpSealer {
    pub fn new(master_secret: &SecretString) -> Self {
        Self(KeyCipher::with_label(master_secret, TOTP_SEAL_LABEL))
    }

    pub fn seal(&self, user_id: Uuid, secret: &[u8]) -> Option<Vec<u8>> {
        self.0.seal(&user_id.to_string(), secret).ok()
    }

    pub fn open(&self, user_id: Uuid, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.0.open(&user_id.to_string(), sealed).ok()
    }
}

pub use crate::config::SecondFactorPolicy as Policy;

/// Why the TOTP secrets could not be re-encrypted (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ReencryptError {
    #[error("the previous secret cannot decrypt the authenticator-app secret of user {0}")]
    Undecryptable(Uuid),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// Re-seals every stored TOTP secret from the `old` master secret to `new` (`gatehouse keys
/// re-encrypt`, in the caller's transaction). All or nothing: one secret that `old` cannot open
/// stops it. Returns how many were re-sealed.
pub fn reencrypt(
    conn: &mut diesel::PgConnection,
    old: &SecretString,
    new: &SecretString,
) -> Result<usize, ReencryptError> {
    let (from, to) = (TotpSealer::new(old), TotpSealer::new(new));
    let stored = crate::db::second_factors::all_sealed(conn)?;
    for (user_id, sealed) in &stored {
        let secret = from.open(*user_id, sealed).ok_or(ReencryptError::Undecryptable(*user_id))?;
        let resealed = to.seal(*user_id, &secret).ok_or(ReencryptError::Undecryptable(*user_id))?;
        crate::db::second_factors::set_sealed(conn, *user_id, &resealed)?;
    }
    Ok(stored.len())
}

/// How a person signed in (RFC 8176 method names), for `amr` in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMethod {
    Password,
    /// Password and an authenticator-app code.
    PasswordAndApp,
    /// Password and a recovery code (a one-time code too).
    PasswordAndRecoveryCode,
    /// Password and a passkey (user verification required).
    PasswordAndPasskey,
    /// A discoverable passkey alone: user-verified, so two factors in one (the device and the PIN or
    /// biometric that unlocked it).
    Passkey,
}

impl SignInMethod {
    /// The `amr` claim's values.
    pub fn amr(self) -> Vec<String> {
        let methods: &[&str] = match self {
            Self::Password => &["pwd"],
            Self::PasswordAndApp | Self::PasswordAndRecoveryCode => &["pwd", "otp", "mfa"],
            Self::PasswordAndPasskey => &["pwd", "hwk", "user", "mfa"],
            Self::Passkey => &["hwk", "user", "mfa"],
        };
        methods.iter().map(|method| (*method).to_owned()).collect()
    }
}

/// Whether a stored `amr` says two factors were used (what a resource server demanding `mfa` checks).
pub fn is_multi_factor(amr: &[String]) -> bool {
    amr.iter().any(|method| method == "mfa")
}

/// A user's authenticator app as stored, opened.
pub struct StoredApp {
    pub secret: Zeroizing<Vec<u8>>,
    pub last_used_step: Option<i64>,
}

/// What a presented second-step code turns out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeVerdict {
    /// An app code of this step, not spent yet: spend it (one conditional update) and pass.
    SpendStep(u64),
    /// Shaped like a recovery code: pass if this hash is stored unused (one conditional update).
    SpendRecoveryCode(Vec<u8>),
    /// No code at all.
    Missing,
    /// Neither a current app code nor a recovery code.
    Wrong,
}

/// Judges `code` for `user_id`, whose app is `app` (`None`: enrolled without one, recovery codes only).
pub fn judge_code(user_id: Uuid, app: Option<&StoredApp>, code: Option<&str>, now: DateTime<Utc>) -> CodeVerdict {
    let Some(code) = code.map(str::trim).filter(|code| !code.is_empty()) else { return CodeVerdict::Missing };
    if totp::typed_code(code).is_some() {
        let unix = u64::try_from(now.timestamp()).unwrap_or(0);
        return match app.and_then(|app| Some((app, totp::matching_step(&app.secret, code, unix)?))) {
            Some((app, step)) if totp::may_accept(step, app.last_used_step) => CodeVerdict::SpendStep(step),
            _ => CodeVerdict::Wrong,
        };
    }
    match recovery::normalise(code) {
        Some(normalised) => CodeVerdict::SpendRecoveryCode(recovery::hash(user_id, &normalised)),
        None => CodeVerdict::Wrong,
    }
}

/// What a right password means for a sign-in, given the user's second factors and the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPassword {
    /// Signed in.
    Complete,
    /// A second step is due (the browser's `/login/verify`, or the `otp` field of `/token`).
    SecondStep,
    /// The policy requires a factor the user has not added: a browser is taken to enrolment; the
    /// password grant refuses.
    MustEnrol,
}

pub fn after_password(has_second_factor: bool, policy: Policy, is_admin: bool) -> AfterPassword {
    if has_second_factor {
        AfterPassword::SecondStep
    } else if policy.covers(is_admin) {
        AfterPassword::MustEnrol
    } else {
        AfterPassword::Complete
    }
}

/// A half-signed-in session (password right, second step pending) ends this long after the password.
pub const SECOND_STEP_WINDOW: chrono::Duration = chrono::Duration::minutes(5);
/// Wrong codes while enrolling before the enrolment is cancelled.
pub const ENROL_ATTEMPTS: i32 = 5;

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_policy_covers_whom_it_names() {
        let cases = [
            (Policy::Optional, false, false),
            (Policy::Optional, true, false),
            (Policy::Admins, false, false),
            (Policy::Admins, true, true),
            (Policy::Everyone, false, true),
        ];
        for (policy, is_admin, expected) in cases {
            assert_eq!(policy.covers(is_admin), expected, "{policy:?} admin={is_admin}");
            assert_eq!(Policy::parse(policy.as_str()), Some(policy));
        }
        assert_eq!(Policy::parse("always"), None);
    }

    #[test]
    fn a_right_password_completes_asks_for_a_second_step_or_sends_to_enrolment() {
        let cases = [
            (true, Policy::Optional, false, AfterPassword::SecondStep),
            (false, Policy::Optional, true, AfterPassword::Complete),
            (false, Policy::Admins, false, AfterPassword::Complete),
            (false, Policy::Admins, true, AfterPassword::MustEnrol),
            (true, Policy::Everyone, false, AfterPassword::SecondStep),
            (false, Policy::Everyone, false, AfterPassword::MustEnrol),
        ];
        for (has, policy, admin, expected) in cases {
            assert_eq!(after_password(has, policy, admin), expected, "{has} {policy:?} {admin}");
        }
    }

    #[test]
    fn amr_names_the_methods_and_mfa_when_two_were_used() {
        assert_eq!(SignInMethod::Password.amr(), ["pwd"]);
        assert_eq!(SignInMethod::PasswordAndApp.amr(), ["pwd", "otp", "mfa"]);
        assert_eq!(SignInMethod::PasswordAndRecoveryCode.amr(), ["pwd", "otp", "mfa"]);
        assert!(is_multi_factor(&SignInMethod::PasswordAndApp.amr()));
        assert!(!is_multi_factor(&SignInMethod::Password.amr()));
        assert_eq!(SignInMethod::PasswordAndPasskey.amr(), ["pwd", "hwk", "user", "mfa"]);
        assert_eq!(SignInMethod::Passkey.amr(), ["hwk", "user", "mfa"]);
    }

    #[test]
    fn a_code_is_a_step_to_spend_a_recovery_code_to_spend_or_wrong() {
        let user = Uuid::new_v4();
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let unix = 1_800_000_000u64;
        let app = StoredApp { secret: totp::new_secret(), last_used_step: None };
        let code = totp::code_at(&app.secret, unix).unwrap();
        let step = totp::step_at(unix);
        let spent = StoredApp { secret: app.secret.clone(), last_used_step: Some(step as i64) };
        let recovery = recovery::generate().remove(0);
        let recovery_hash = recovery::hash(user, &recovery::normalise(&recovery).unwrap());
        let cases: [(Option<&StoredApp>, Option<&str>, CodeVerdict); 8] = [
            (Some(&app), Some(&code), CodeVerdict::SpendStep(step)),
            (Some(&app), Some(&format!(" {} {} ", &code[..3], &code[3..])), CodeVerdict::SpendStep(step)),
            (Some(&spent), Some(&code), CodeVerdict::Wrong),
            (
                Some(&app),
                Some("000000"),
                if code == "000000" { CodeVerdict::SpendStep(step) } else { CodeVerdict::Wrong },
            ),
            (None, Some(&code), CodeVerdict::Wrong),
            (Some(&app), Some(&recovery), CodeVerdict::SpendRecoveryCode(recovery_hash)),
            (Some(&app), None, CodeVerdict::Missing),
            (Some(&app), Some("  "), CodeVerdict::Missing),
        ];
        for (app, code, expected) in cases {
            assert_eq!(judge_code(user, app, code, now), expected, "{code:?}");
        }
        assert_eq!(judge_code(user, Some(&app), Some("not a code"), now), CodeVerdict::Wrong);
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_master_secret() {
        let master: SecretString = "m".repeat(40).into();
        let sealer = TotpSealer::new(&master);
        let (user, secret) = (Uuid::new_v4(), totp::new_secret());
        let sealed = sealer.seal(user, &secret).unwrap();
        assert_eq!(sealer.open(user, &sealed).unwrap().as_slice(), secret.as_slice());
        assert!(sealer.open(Uuid::new_v4(), &sealed).is_none());
        assert!(TotpSealer::new(&"n".repeat(40).into()).open(user, &sealed).is_none());
        // The signing keys' cipher (another label) cannot open it either.
        assert!(KeyCipher::new(&master).open(&user.to_string(), &sealed).is_err());
    }
}
