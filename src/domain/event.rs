//! What the audit trail records: the kind of each event, the channel it came through, and why a
//! sign-in failed. Each enum knows the text it is stored as; the database's CHECK constraints list
//! the same texts, and the statistics, the CLI and the admin pages read them back through these types.

use std::fmt;
use std::str::FromStr;

/// Declares a closed set of names stored as text: the enum, its `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! stored_names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: a width such as `{:<14}` must apply (the CLI lines up columns).
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName { kind: stringify!($name), text: other.to_owned() }),
                }
            }
        }
    };
}

/// A stored name that none of the variants has (a row written by a newer version, or by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a known {kind}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub text: String,
}

stored_names! {
    /// What happened.
    EventKind {
        LoginOk = "login_ok",
        LoginFailed = "login_failed",
        TokenIssued = "token_issued",
        Refresh = "refresh",
        ReuseDetected = "reuse_detected",
        Revoke = "revoke",
        Logout = "logout",
        Lockout = "lockout",
        SignOutAll = "sign_out_all",
        PasswordChanged = "password_changed",
        Deactivated = "deactivated",
        Activated = "activated",
        UserCreated = "user_created",
        RolesChanged = "roles_changed",
        /// One browser session ended from its owner's account page.
        SessionEnded = "session_ended",
        /// A client was registered.
        ClientCreated = "client_created",
        ClientSecretRotated = "client_secret_rotated",
        ClientRemoved = "client_removed",
        /// A `/token` request failed to authenticate a client (unknown, wrong secret, public).
        ClientAuthFailed = "client_auth_failed",
        /// A personal access token made (its id and name in the detail; never the token).
        PatCreated = "pat_created",
        /// A personal access token revoked by its owner, an admin or the command line.
        PatRevoked = "pat_revoked",
        /// An authenticator app was added (enrolment confirmed by a code from it).
        SecondFactorAdded = "second_factor_added",
        /// A person removed their authenticator app.
        SecondFactorRemoved = "second_factor_removed",
        /// A sign-in's second step passed (the detail says whether by app or recovery code).
        SecondFactorUsed = "second_factor_used",
        /// A wrong code while enrolling (a wrong code at sign-in is a `login_failed`, reason `second_factor`).
        SecondFactorFailed = "second_factor_failed",
        /// A new set of recovery codes (the old set died).
        RecoveryCodesGenerated = "recovery_codes_generated",
        /// An admin or the command line removed every second factor of a user.
        SecondFactorsReset = "second_factors_reset",
        /// A password-reset link was mailed (queued) to the user.
        PasswordResetRequested = "password_reset_requested",
        /// A person changed their own full name on the account page.
        ProfileChanged = "profile_changed",
        /// A link to confirm a new email address was mailed to that address.
        EmailChangeRequested = "email_change_requested",
        /// A new email address took effect (its link was used).
        EmailChanged = "email_changed",
        /// A user created without a password was mailed an invitation to set one.
        InvitationSent = "invitation_sent",
        /// A person allowed an app scopes on the consent page.
        ConsentGranted = "consent_granted",
        /// A person disconnected an app ("Connected apps"): its consent and refresh families end.
        ConsentRevoked = "consent_revoked",
        /// An authorization code was presented again: what its first use issued is revoked.
        CodeReused = "code_reused",
        /// A person allowed or denied a device at /device.
        DeviceDecided = "device_decided",
    }
}

stored_names! {
    /// Where an event came from.
    Channel {
        Web = "web",
        Api = "api",
        Cli = "cli",
    }
}

stored_names! {
    /// Why a sign-in failed. The client is never told; the audit trail is.
    FailureReason {
        UnknownUser = "unknown_user",
        WrongPassword = "wrong_password",
        /// The account was locked: no verification against its real hash ran.
        Locked = "locked",
        InactiveUser = "inactive_user",
        /// The password was right; the second factor was missing or wrong.
        SecondFactor = "second_factor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_itself() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(*kind));
        }
        for reason in FailureReason::ALL {
            assert_eq!(reason.to_string().parse::<FailureReason>(), Ok(*reason));
        }
        assert_eq!("web".parse::<Channel>(), Ok(Channel::Web));
        assert_eq!(format!("[{:<8}]", EventKind::Revoke), "[revoke  ]");
    }

    #[test]
    fn an_unknown_name_is_an_error_not_a_default() {
        let err = "login_maybe".parse::<EventKind>().unwrap_err();
        assert_eq!(err.to_string(), "`login_maybe` is not a known EventKind");
    }
}
