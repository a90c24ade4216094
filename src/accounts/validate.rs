//! Input for an account, as typed into a form, a JSON body or the command line, checked field by
//! field so that every problem can be shown next to its field at once.

use secrecy::{ExposeSecret, SecretString};

use super::AccountError;
use crate::domain::{Email, FullName, NewPassword, RoleName, Username};

/// The fields a form or body may be refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Username,
    Email,
    FullName,
    /// The password an admin sets (or the first of the two typed).
    Password,
    /// The repeated password.
    PasswordAgain,
    CurrentPassword,
    /// The new password on `/account`.
    NewPassword,
    Roles,
    /// A second factor's code (app or recovery code).
    Code,
}

impl Field {
    /// The name of the field in forms and JSON bodies.
    pub fn name(self) -> &'static str {
        match self {
            Field::Username => "username",
            Field::Email => "email",
            Field::FullName => "full_name",
            Field::Password => "password",
            Field::PasswordAgain => "password_again",
            Field::CurrentPassword => "current_password",
            Field::NewPassword => "new_password",
            Field::Roles => "roles",
            Field::Code => "code",
        }
    }
}

/// One problem with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Field,
    pub message: String,
}

/// A new account as submitted, not yet checked.
pub struct AccountDraft {
    pub username: String,
    /// `None`: no password (the user is invited by mail to set one).
    pub password: Option<SecretString>,
    /// The password typed a second time, where the form asks for it.
    pub password_again: Option<SecretString>,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub roles: Vec<String>,
}

/// A new account whose every field is well formed (whether the username is free and the roles exist
/// is the database's to say).
pub struct ValidAccount {
    pub username: Username,
    pub password: Option<NewPassword>,
    pub email: Option<Email>,
    pub full_name: Option<FullName>,
    pub roles: Vec<String>,
}

impl ValidAccount {
    /// What the password must not be made of.
    pub fn user_inputs(&self) -> Vec<&str> {
        [
            Some(self.username.as_str()),
            self.email.as_ref().map(Email::as_str),
            self.full_name.as_ref().map(FullName::as_str),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl AccountDraft {
    /// Every field checked; all problems reported together.
    pub fn validate(self) -> Result<ValidAccount, AccountError> {
        let mut problems = Vec::new();
        let mut note = |field, message: String| problems.push(Invalid { field, message });
        let username = Username::parse(&self.username).map_err(|err| note(super::Field::Username, sentence(&err))).ok();
        let email = match self.email.as_deref().map(str::trim).filter(|email| !email.is_empty()) {
            Some(email) => {
                Email::parse(email).map(Some).map_err(|err| note(Field::Email, sentence(&err))).ok().flatten()
            }
            None => None,
        };
        let full_name = match self.full_name.as_deref() {
            Some(name) => FullName::parse(name).map_err(|err| note(Field::FullName, sentence(&err))).ok().flatten(),
            None => None,
        };
        if let Err(AccountError::Invalid(found)) = role_names(&self.roles) {
            problems.extend(found);
        }
        let password = match self.password.map(|password| new_password(password, self.password_again, Field::Password))
        {
            None => Some(None),
            Some(Ok(password)) => Some(Some(password)),
            Some(Err(AccountError::Invalid(found))) => {
                problems.extend(found);
                None
            }
            Some(Err(other)) => return Err(other),
        };
        match (username, password) {
            (Some(username), Some(password)) if problems.is_empty() => {
                let mut roles = self.roles;
                roles.sort();
                roles.dedup();
                Ok(ValidAccount { username, password, email, full_name, roles })
            }
            _ => Err(AccountError::Invalid(problems)),
        }
    }
}

/// Role names must at least look like role names before the database is asked whether they exist.
pub fn role_names(roles: &[String]) -> Result<(), AccountError> {
    let problems: Vec<Invalid> = roles
        .iter()
        .filter_map(|role| RoleName::parse(role).err())
        .map(|err| Invalid { field: Field::Roles, message: sentence(&err) })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(AccountError::Invalid(problems)) }
}

/// A new password of the right length, typed the same twice where it was typed twice.
pub fn new_password(
    password: SecretString,
    again: Option<SecretString>,
    field: Field,
) -> Result<NewPassword, AccountError> {
    if let Some(again) = again
        && again.expose_secret() != password.expose_secret()
    {
        return Err(AccountError::Invalid(vec![Invalid {
            field: Field::PasswordAgain,
            message: "The two passwords are not the same.".to_owned(),
        }]));
    }
    NewPassword::parse(password).map_err(|err| AccountError::Invalid(vec![Invalid { field, message: sentence(&err) }]))
}

/// An error's text as a sentence to show a person: capitalised, with a full stop.
pub fn sentence(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    let mut sentence: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return text,
    };
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(username: &str, password: &str, again: Option<&str>, email: Option<&str>) -> AccountDraft {
        AccountDraft {
            username: username.to_owned(),
            password: Some(password.into()),
            password_again: again.map(SecretString::from),
            email: email.map(str::to_owned),
            full_name: None,
            roles: vec!["user".to_owned()],
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field_at_once() {
        let Err(AccountError::Invalid(problems)) = draft("a b", "short", None, Some("not-an-email")).validate() else {
            panic!("expected validation errors");
        };
        let fields: Vec<Field> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, vec![Field::Username, Field::Email, Field::Password]);
        assert_eq!(problems[2].message, "Password must be at least 8 characters.");
    }

    #[test]
    fn two_different_passwords_are_refused_at_the_second_field() {
        let Err(AccountError::Invalid(problems)) =
            draft("bob", "long-enough-1", Some("long-enough-2"), None).validate()
        else {
            panic!("expected a mismatch");
        };
        assert_eq!(problems[0].field, Field::PasswordAgain);
    }

    #[test]
    fn a_blank_email_is_no_email_and_role_names_are_checked_for_form() {
        let valid = draft("bob", "long-enough-1", None, Some("  ")).validate().unwrap();
        assert!(valid.email.is_none());
        assert!(matches!(role_names(&["Not A Role".to_owned()]), Err(AccountError::Invalid(_))));
    }
}
