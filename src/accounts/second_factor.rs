//! A person's second factor from their account page, and an admin's reset of it: the rules of
//! `auth::second_factor`, the lockout of `auth::credentials` for the current password, and the
//! writes of `db::second_factors`, each with its audit row.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{AccountError, Accounts, Actor, Field, with_notice};
use crate::auth::credentials::{PasskeyFailure, SecondFactors};
use crate::auth::second_factor::passkey;
use crate::auth::second_factor::{self, CodeVerdict, ENROL_ATTEMPTS, StoredApp, recovery, totp};
use crate::db::passkeys::{Ceremony, PasskeyRow};
use crate::db::{self, second_factors::Factors, users::User};
use crate::domain::EventKind;
use crate::errors::ServerError;
use crate::mail::Notice;
use crate::metrics::SecondFactorLabels;

/// What the enrolment page shows while an enrolment is open: the app's link, as a QR code and as text.
#[derive(Debug, Clone)]
pub struct OpenEnrolment {
    pub otpauth_url: String,
    pub qr_svg: String,
    /// Base32 in groups of four, for typing into an app.
    pub secret: String,
}

/// Why a code on the account pages was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("That code did not work: enter the code your app shows now.")]
    Wrong { attempts_left: i32 },
    #[error("Five wrong codes: start again, with a new QR code.")]
    EnrolmentCancelled,
    #[error("There is no enrolment to confirm: start again.")]
    NothingToConfirm,
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<ServerError> for CodeError {
    fn from(err: ServerError) -> Self {
        CodeError::Account(AccountError::Server(err))
    }
}

/// The account pages' side of the second factor: [`Accounts`] and what opens app secrets.
pub struct SecondFactorAccounts<'a> {
    pub accounts: Accounts<'a>,
    pub factors: &'a SecondFactors,
    /// The name apps list the account under (the issuer's host).
    pub app_label: &'a str,
}

impl SecondFactorAccounts<'_> {
    pub async fn status(&self, user_id: Uuid) -> Result<Factors, ServerError> {
        db::run(self.accounts.pool, move |conn| db::second_factors::of_user(conn, user_id)).await
    }

    /// The open enrolment's link and QR code, if one is open (and its secret opens).
    pub fn open_enrolment(&self, user: &User, factors: &Factors) -> Option<OpenEnrolment> {
        let row = factors.pending.as_ref()?;
        let secret = self.factors.sealer.open(user.id, &row.secret_sealed)?;
        let otpauth_url = totp::otpauth_url(&secret, self.app_label, &user.username)?;
        let qr_svg = totp::qr_svg(&otpauth_url)?;
        Some(OpenEnrolment { otpauth_url, qr_svg, secret: totp::grouped_secret(&secret) })
    }

    async fn confirm_password(&self, actor: &Actor, user: &User, password: SecretString) -> Result<(), AccountError> {
        self.accounts.confirm_own_password(actor, user, password).await
    }

    /// Opens an enrolment (after the current password): a new secret, sealed and stored until a
    /// code from it confirms it. Refused while an app is on (remove it first).
    pub async fn begin_enrolment(
        &self,
        actor: &Actor,
        user: &User,
        password: SecretString,
    ) -> Result<(), AccountError> {
        self.confirm_password(actor, user, password).await?;
        let secret = totp::new_secret();
        let sealed = self
            .factors
            .sealer
            .seal(user.id, &secret)
            .ok_or_else(|| ServerError::internal(crate::errors::Message("sealing a TOTP secret failed")))?;
        let user_id = user.id;
        let opened =
            db::run(self.accounts.pool, move |conn| db::second_factors::begin_enrolment(conn, user_id, &sealed))
                .await?;
        if !opened {
            return Err(AccountError::invalid(Field::Code, "An authenticator app is already on: remove it first."));
        }
        Ok(())
    }

    /// Confirms the open enrolment with a code from the app: its step is spent by the same write, and
    /// the first set of recovery codes is returned (shown once). A wrong code is refused, not counted
    /// by the lockout (the person is signed in); five cancel the enrolment.
    pub async fn confirm_enrolment(&self, actor: &Actor, user: &User, code: &str) -> Result<Vec<String>, CodeError> {
        let factors = self.status(user.id).await?;
        let Some(row) = factors.pending.as_ref() else { return Err(CodeError::NothingToConfirm) };
        let secret = self.factors.sealer.open(user.id, &row.secret_sealed).ok_or(CodeError::NothingToConfirm)?;
        let unix = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let user_id = user.id;
        let Some(step) = totp::matching_step(&secret, code, unix) else {
            let event = actor.event(EventKind::SecondFactorFailed, user_id).detail("wrong code while enrolling");
            let open = db::run(self.accounts.pool, move |conn| {
                db::second_factors::enrol_failure(conn, user_id, ENROL_ATTEMPTS, &event)
            })
            .await?;
            return Err(if open {
                CodeError::Wrong { attempts_left: ENROL_ATTEMPTS - row.enrol_failures - 1 }
            } else {
                CodeError::EnrolmentCancelled
            });
        };
        let codes = recovery::generate();
        let hashes = recovery::hashes(user_id, &codes);
        let events = [
            actor.event(EventKind::SecondFactorAdded, user_id).detail("authenticator app"),
            actor.event(EventKind::RecoveryCodesGenerated, user_id).detail(format!("{} codes", codes.len())),
        ];
        let checked = row.secret_sealed.clone();
        let notice = self.accounts.notice(user, Notice::SecondFactorAdded("An authenticator app"))?;
        let confirmed = db::run(self.accounts.pool, move |conn| {
            with_notice(conn, &notice, |conn| {
                db::second_factors::confirm_enrolment(conn, user_id, &checked, step, &hashes, &events)
            })
        })
        .await?;
        if !confirmed {
            return Err(CodeError::NothingToConfirm);
        }
        self.count("added");
        Ok(codes)
    }

    /// A new set of recovery codes (after the current password); the old set dies.
    pub async fn regenerate_recovery_codes(
        &self,
        actor: &Actor,
        user: &User,
        password: SecretString,
    ) -> Result<Vec<String>, AccountError> {
        self.confirm_password(actor, user, password).await?;
        let codes = recovery::generate();
        let (user_id, hashes) = (user.id, recovery::hashes(user.id, &codes));
        let event = actor.event(EventKind::RecoveryCodesGenerated, user_id).detail(format!("{} codes", codes.len()));
        let done = db::run(self.accounts.pool, move |conn| {
            db::second_factors::regenerate_recovery_codes(conn, user_id, &hashes, &event)
        })
        .await?;
        if !done {
            return Err(AccountError::invalid(
                Field::Code,
                "Recovery codes come with an authenticator app: add one first.",
            ));
        }
        Ok(codes)
    }

    /// Removes the app and the recovery codes: the current password and a current code (or a
    /// recovery code), so a session left open is not enough.
    pub async fn remove(
        &self,
        actor: &Actor,
        user: &User,
        password: SecretString,
        code: SecretString,
    ) -> Result<(), AccountError> {
        self.confirm_password(actor, user, password).await?;
        let factors = self.status(user.id).await?;
        let app = factors.app.as_ref().and_then(|row| {
            Some(StoredApp {
                secret: self.factors.sealer.open(user.id, &row.secret_sealed)?,
                last_used_step: row.last_used_step,
            })
        });
        let verdict = second_factor::judge_code(user.id, app.as_ref(), Some(code.expose_secret()), Utc::now());
        let user_id = user.id;
        let event = actor.event(EventKind::SecondFactorRemoved, user_id).detail("authenticator app and recovery codes");
        let notice = self
            .accounts
            .notice(user, Notice::SecondFactorRemoved("Your authenticator app and recovery codes were"))?;
        let removed = db::run(self.accounts.pool, move |conn| {
            with_notice(conn, &notice, |conn| {
                let proven = match verdict {
                    CodeVerdict::SpendStep(step) => db::second_factors::spend_step(conn, user_id, step)?,
                    CodeVerdict::SpendRecoveryCode(hash) => {
                        db::second_factors::spend_recovery_code(conn, user_id, &hash)?
                    }
                    CodeVerdict::Missing | CodeVerdict::Wrong => false,
                };
                if !proven {
                    return Ok(false);
                }
                db::second_factors::remove_all(conn, user_id, &event)
            })
        })
        .await?;
        if !removed {
            return Err(AccountError::invalid(
                Field::Code,
                "That code did not work: enter the code your app shows now.",
            ));
        }
        self.count("removed");
        Ok(())
    }

    /// The user's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: Uuid) -> Result<Vec<PasskeyRow>, ServerError> {
        db::run(self.accounts.pool, move |conn| db::passkeys::of_user(conn, user_id)).await
    }

    /// Begins adding a passkey, after the current password (a session alone must not be enough to
    /// plant a credential that outlives a password change): the browser's options and the ceremony id
    /// it sends back.
    pub async fn begin_passkey(
        &self,
        actor: &Actor,
        user: &User,
        password: SecretString,
    ) -> Result<(Uuid, serde_json::Value), PasskeyFailure> {
        let rp = self.factors.passkeys.as_ref().ok_or(PasskeyFailure::Off)?;
        match self.confirm_password(actor, user, password).await {
            Ok(()) => {}
            Err(AccountError::Server(err)) => return Err(err.into()),
            Err(_) => return Err(PasskeyFailure::WrongPassword),
        }
        let existing: Vec<_> =
            self.passkeys(user.id).await?.iter().filter_map(|row| passkey::stored(&row.passkey).ok()).collect();
        let display = user.full_name.clone().unwrap_or_else(|| user.username.clone());
        let (options, state) =
            rp.begin_registration(user.id, &user.username, &display, &existing).map_err(ServerError::internal)?;
        let (user_id, expires_at) = (user.id, Utc::now() + chrono::Duration::minutes(5));
        let id = db::run(self.accounts.pool, move |conn| {
            db::passkeys::begin_ceremony(conn, Ceremony::Register, Some(user_id), &state, expires_at)
        })
        .await?;
        Ok((id, options))
    }

    /// Finishes adding a passkey named `name`: the ceremony (this user's, once) and the browser's
    /// credential, verified; a credential registered already (here or to another account) is refused.
    pub async fn finish_passkey(
        &self,
        actor: &Actor,
        user: &User,
        ceremony: Uuid,
        name: &str,
        credential: serde_json::Value,
    ) -> Result<(), PasskeyFailure> {
        let rp = self.factors.passkeys.as_ref().ok_or(PasskeyFailure::Off)?;
        let name = passkey::name(name).unwrap_or_else(|| "Passkey".to_owned());
        let now = Utc::now();
        let taken = db::run(self.accounts.pool, move |conn| {
            db::passkeys::take_ceremony(conn, ceremony, Ceremony::Register, now)
        })
        .await?;
        let Some((Some(owner), state, expires_at)) = taken else { return Err(PasskeyFailure::NoCeremony) };
        if owner != user.id {
            return Err(PasskeyFailure::NoCeremony);
        }
        // The password was confirmed when the ceremony began: a cut-off since (a password change, an
        // admin's reset, sign-out everywhere) voids it.
        let confirmed_at = expires_at - chrono::Duration::from_std(passkey::CEREMONY_TTL).unwrap_or_default();
        let made = rp.finish_registration(&credential, &state).map_err(|err| {
            log::info!("passkey registration refused for user {}: {err}", user.id);
            PasskeyFailure::Refused
        })?;
        let stored = passkey::to_stored(&made).map_err(ServerError::internal)?;
        let credential_id = made.cred_id().to_vec();
        let event = actor.event(EventKind::SecondFactorAdded, user.id).detail(format!("passkey ({name})"));
        let named = format!("A passkey named \u{201c}{name}\u{201d}");
        let notice = self.accounts.notice(user, Notice::SecondFactorAdded(&named))?;
        let user_id = user.id;
        let added = db::run(self.accounts.pool, move |conn| {
            with_notice(conn, &notice, |conn| {
                db::passkeys::insert(conn, user_id, confirmed_at, &credential_id, &name, &stored, &event)
            })
        })
        .await?;
        if !added {
            return Err(PasskeyFailure::Refused);
        }
        self.count("added");
        Ok(())
    }

    /// Renames one of the user's passkeys; `false` when they have no such passkey.
    pub async fn rename_passkey(&self, user_id: Uuid, id: Uuid, name: &str) -> Result<bool, AccountError> {
        let name = passkey::name(name)
            .ok_or_else(|| AccountError::invalid(Field::Code, "A passkey's name has 1 to 100 characters."))?;
        Ok(db::run(self.accounts.pool, move |conn| db::passkeys::rename(conn, user_id, id, &name)).await?)
    }

    /// Removes one of the user's passkeys (after the current password); `false` when there is no such passkey.
    pub async fn remove_passkey(
        &self,
        actor: &Actor,
        user: &User,
        id: Uuid,
        password: SecretString,
    ) -> Result<bool, AccountError> {
        self.confirm_password(actor, user, password).await?;
        let event = actor.event(EventKind::SecondFactorRemoved, user.id).detail(format!("passkey {id}"));
        let notice = self.accounts.notice(user, Notice::SecondFactorRemoved("A passkey was"))?;
        let user_id = user.id;
        let removed = db::run(self.accounts.pool, move |conn| {
            with_notice(conn, &notice, |conn| db::passkeys::remove(conn, user_id, id, &event))
        })
        .await?;
        if removed {
            self.count("removed");
        }
        Ok(removed)
    }

    fn count(&self, outcome: &'static str) {
        self.accounts.metrics.second_factor.get_or_create(&SecondFactorLabels { outcome }).inc();
    }
}

/// What the notice of an admin's (or the command line's) reset says was removed.
pub(super) const RESET_NOTICE: &str = "An administrator signed out every session and token of your account; every \
                                       second factor (authenticator app, recovery codes, passkeys) was";

impl Accounts<'_> {
    /// An admin (or the command line) removes every second factor of a user. A cut-off: every session
    /// and token of the user ends, as after a password change. `false` when they had none.
    pub async fn reset_second_factors(&self, actor: &Actor, username: &str) -> Result<bool, AccountError> {
        let user = self.find(username).await?;
        let user_id = user.id;
        let event = actor.event(EventKind::SecondFactorsReset, user_id);
        let notice = self.notice(&user, Notice::SecondFactorRemoved(RESET_NOTICE))?;
        let removed = self
            .write_as(actor, move |conn| {
                with_notice(conn, &notice, |conn| db::second_factors::reset(conn, user_id, &event))
            })
            .await?;
        if removed {
            self.metrics.second_factor.get_or_create(&SecondFactorLabels { outcome: "removed" }).inc();
        }
        Ok(removed)
    }
}
