//! What every form of the admin and account pages shares: the CSRF check before anything is read
//! further, the messages shown next to fields, and the notices a redirect after a change carries.

use actix_session::Session;
use actix_web::{HttpRequest, web};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::WebError;
use super::login::read_form;
use crate::accounts::{AccountError, Field};
use crate::auth::session::csrf_matches;
use crate::auth::throttle::retry_after_secs;
use crate::domain::AddressBucket;
use crate::domain::form::FormFields;
use crate::routes::AppState;

/// Reads a form body and refuses it (403) unless it carries this session's CSRF token.
pub async fn checked_form(req: &HttpRequest, payload: web::Payload, session: &Session) -> Result<FormFields, WebError> {
    let form = read_form(req, payload).await?;
    if !csrf_matches(session, form.get("csrf_token")) {
        return Err(WebError::CsrfRejected);
    }
    Ok(form)
}

/// Spends one unit of the client address's password budget (shared by every instance), or answers
/// the 429 page: every form that checks a password or a second-factor code spends it, as a sign-in does.
pub async fn spend_password_budget(req: &HttpRequest, state: &AppState) -> Result<(), WebError> {
    let client = state.client_ip(req);
    if let Err(wait) = state.login_throttle.check(&state.pool, client.map(AddressBucket::of)).await? {
        state.grants.metrics.throttled.inc();
        return Err(WebError::TooManyRequests { retry_after_secs: retry_after_secs(wait) });
    }
    Ok(())
}

/// The message to show next to each field of a refused form.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors {
    pub username: Option<String>,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub password: Option<String>,
    pub password_again: Option<String>,
    pub current_password: Option<String>,
    pub new_password: Option<String>,
    pub roles: Option<String>,
    pub code: Option<String>,
}

impl FieldErrors {
    pub fn of(err: &AccountError) -> Self {
        let message = |field| err.message_for(field).map(str::to_owned);
        let mut errors = Self {
            username: message(Field::Username),
            email: message(Field::Email),
            full_name: message(Field::FullName),
            password: message(Field::Password),
            password_again: message(Field::PasswordAgain),
            current_password: message(Field::CurrentPassword),
            new_password: message(Field::NewPassword),
            roles: message(Field::Roles),
            code: message(Field::Code),
        };
        if let AccountError::UnknownRole(role) = err {
            errors.roles = Some(format!("There is no role named {role}."));
        }
        errors
    }
}

/// Characters escaped in a path segment (a username may hold `@`, `+`, `.`; never a `/` or `?`).
const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'<').add(b'>');

/// `/admin/users/{username}` for this user.
pub fn user_path(username: &str) -> String {
    format!("/admin/users/{}", utf8_percent_encode(username, SEGMENT))
}

/// The notices a page shows after a redirect: a fixed set, so a link cannot make a page say anything else.
pub fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "The user was created.",
        "roles" => "The roles were saved.",
        "activated" => "The user was activated.",
        "deactivated" => "The user was deactivated; their tokens and sessions no longer work.",
        "password" => "The password was set; the user's earlier tokens and sessions no longer work.",
        "signed-out" => "The user was signed out everywhere.",
        "password-changed" => "Your password was changed. Your other sessions and tokens no longer work.",
        "session-ended" => "The session was ended.",
        "profile-saved" => "Your profile was saved.",
        "email-pending" => {
            "A link was mailed to the new address: your email address changes when you open it (within 24 hours)."
        }
        "email-removed" => "Your email address was removed.",
        "email-confirmed" => "Your new email address is confirmed.",
        "family-revoked" => "The refresh token was revoked.",
        "app-disconnected" => "The app was disconnected: its refresh tokens ended, and it asks again next time.",
        "token-revoked" => "The personal access token was revoked; it no longer works.",
        "second-factor-removed" => "Your authenticator app and recovery codes were removed.",
        "reset-link-sent" => "A password-reset link was mailed to the user.",
        "reset-link-not-sent" => {
            "No link was sent: the user has no email address, is inactive, or had three reset mails this hour."
        }
        "second-factors-reset" => "The user's second factors were removed; their sessions and tokens no longer work.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_one_path_segment() {
        assert_eq!(user_path("bob.smith+x@example.org"), "/admin/users/bob.smith+x@example.org");
        assert_eq!(user_path("zoë"), "/admin/users/zo%C3%AB");
    }

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice(Some("created")).is_some());
        assert_eq!(notice(Some("<script>")), None);
        assert_eq!(notice(None), None);
    }
}
