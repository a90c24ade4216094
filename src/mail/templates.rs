//! What each mail says, in text and HTML. Every mail has one shape (a greeting, paragraphs, at most
//! one link to act on, paragraphs after it), so one pair of askama templates
//! (`templates/mail/message.{txt,html}`) renders them all; the functions here are the words. Links
//! are absolute, from the issuer.

use askama::Template;
use uuid::Uuid;

use crate::db::outbox::NewMail;

/// The link a mail asks its reader to open.
struct Action {
    label: &'static str,
    url: String,
}

#[derive(Template)]
#[template(path = "mail/message.txt")]
struct Text<'a> {
    service: &'a str,
    username: &'a str,
    before: &'a [String],
    action: &'a Option<Action>,
    after: &'a [String],
}

#[derive(Template)]
#[template(path = "mail/message.html")]
struct Html<'a> {
    service: &'a str,
    username: &'a str,
    before: &'a [String],
    action: &'a Option<Action>,
    after: &'a [String],
}

/// Who a mail is for.
pub struct Recipient<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub email: &'a str,
}

/// Where mails come from: links start at the issuer; the service is named by the issuer's host.
#[derive(Debug, Clone)]
pub struct Sender {
    pub issuer: String,
    pub service: String,
}

impl Sender {
    /// Mails from `issuer`, naming the service by its host.
    pub fn for_issuer(issuer: &str) -> Self {
        let service = url::Url::parse(issuer)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "gatehouse".to_owned());
        Self { issuer: issuer.to_owned(), service }
    }

    /// The command line's sender: mail on (`GATEHOUSE_SMTP_URL`) and an explicit issuer, which its
    /// links need (the command line binds no address to take one from). The mails it queues go out
    /// from the outbox through any running instance.
    pub fn for_command_line(settings: &crate::config::Settings) -> Option<Self> {
        settings.smtp_url.as_ref()?;
        settings.issuer.as_deref().map(Self::for_issuer)
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }

    fn compose(
        &self,
        kind: &'static str,
        to: &Recipient<'_>,
        subject: String,
        before: &[String],
        action: Option<Action>,
        after: &[String],
    ) -> askama::Result<NewMail> {
        let (service, username, action) = (self.service.as_str(), to.username, &action);
        Ok(NewMail {
            kind,
            user_id: Some(to.user_id),
            recipient: to.email.to_owned(),
            subject,
            body_text: Text { service, username, before, action, after }.render()?,
            body_html: Html { service, username, before, action, after }.render()?,
        })
    }

    /// The password-reset mail, with its link (`{issuer}/password-reset/{token}`).
    pub fn password_reset(&self, to: &Recipient<'_>, token: &str) -> askama::Result<NewMail> {
        let service = &self.service;
        self.compose(
            "password_reset",
            to,
            format!("Reset your {service} password"),
            &[format!(
                "someone (we hope you) asked to reset the password of your {service} account. To choose a new \
                 password, open this link within 30 minutes:"
            )],
            Some(Action { label: "Choose a new password", url: self.link(&format!("/password-reset/{token}")) }),
            &["It works once. If you did not ask for it, ignore this mail: your password stays as it is.".to_owned()],
        )
    }

    /// The invitation of a user created without a password (`{issuer}/invitation/{token}`).
    pub fn invitation(&self, to: &Recipient<'_>, token: &str) -> askama::Result<NewMail> {
        let service = &self.service;
        self.compose(
            "invitation",
            to,
            format!("Your {service} account"),
            &[format!(
                "an account named {} was made for you on {service}. To choose its password, open this link \
                 within 72 hours:",
                to.username
            )],
            Some(Action { label: "Choose your password", url: self.link(&format!("/invitation/{token}")) }),
            &["It works once. If you did not expect this mail, ignore it.".to_owned()],
        )
    }

    /// The link that makes a new address the account's (`{issuer}/email-confirm/{token}`), mailed to
    /// the new address.
    pub fn email_confirmation(&self, to: &Recipient<'_>, token: &str) -> askama::Result<NewMail> {
        let service = &self.service;
        self.compose(
            "email_confirmation",
            to,
            format!("Confirm your new {service} email address"),
            &[format!(
                "someone (we hope you) asked to make this address the email address of the {service} account {}. \
                 To confirm it, open this link within 24 hours:",
                to.username
            )],
            Some(Action { label: "Confirm this address", url: self.link(&format!("/email-confirm/{token}")) }),
            &["Until then the account keeps its old address. If you did not ask for this, ignore this mail."
                .to_owned()],
        )
    }

    /// A security notice: what happened to the account, with the way back if it was not the reader.
    pub fn security_notice(&self, to: &Recipient<'_>, notice: &Notice<'_>) -> askama::Result<NewMail> {
        let service = &self.service;
        let (subject, what) = match notice {
            Notice::PasswordChanged => (
                format!("Your {service} password was changed"),
                "The password of your account was just changed, and every session and token of the account was \
                 signed out."
                    .to_owned(),
            ),
            Notice::SecondFactorAdded(what) => (
                format!("A second factor was added to your {service} account"),
                format!("{what} was added to your account for two-step sign-in."),
            ),
            Notice::SecondFactorRemoved(what) => (
                format!("A second factor was removed from your {service} account"),
                format!("{what} removed from your account."),
            ),
            Notice::PersonalTokenCreated(name) => (
                format!("A new personal access token for your {service} account"),
                format!("A personal access token named \u{201c}{name}\u{201d} was created for your account."),
            ),
            Notice::EmailChanging(Some(new)) => (
                format!("Your {service} email address is changing"),
                format!(
                    "Someone asked to make {new} your account's email address. It changes only when the link mailed \
                     there is used; until then this address stays."
                ),
            ),
            Notice::EmailChanging(None) => (
                format!("Your {service} email address was removed"),
                "Your account's email address was removed: password-reset links can no longer reach you.".to_owned(),
            ),
        };
        self.compose(
            notice.kind(),
            to,
            subject,
            &[what],
            Some(Action { label: "If that was not you, reset your password now", url: self.link("/password-reset") }),
            &[format!("Then review your sessions and tokens on {}.", self.link("/account"))],
        )
    }
}

/// What a security notice tells of.
#[derive(Debug, Clone)]
pub enum Notice<'a> {
    PasswordChanged,
    /// What was added, as the start of a sentence ("An authenticator app", "A passkey named …").
    SecondFactorAdded(&'a str),
    /// What was removed, as the start of a sentence with its verb ("A passkey was").
    SecondFactorRemoved(&'a str),
    /// The new token's name (never the token).
    PersonalTokenCreated(&'a str),
    /// Told to the old address: the new one (`None`: the address was removed).
    EmailChanging(Option<&'a str>),
}

impl Notice<'_> {
    /// The outbox's `kind` of the mail.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::PasswordChanged => "password_changed",
            Notice::SecondFactorAdded(_) => "second_factor_added",
            Notice::SecondFactorRemoved(_) => "second_factor_removed",
            Notice::PersonalTokenCreated(_) => "pat_created",
            Notice::EmailChanging(_) => "email_changing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Sender {
        Sender { issuer: "https://id.example.com/".to_owned(), service: "id.example.com".to_owned() }
    }

    #[test]
    fn the_reset_mail_carries_an_absolute_link_in_both_parts_and_escapes_names_in_html() {
        let to = Recipient { user_id: Uuid::nil(), username: "<alice>", email: "alice@example.org" };
        let mail = sender().password_reset(&to, "TOKEN").unwrap();
        assert_eq!(mail.recipient, "alice@example.org");
        assert_eq!(mail.subject, "Reset your id.example.com password");
        assert!(mail.body_text.contains("https://id.example.com/password-reset/TOKEN"), "{}", mail.body_text);
        assert!(mail.body_text.contains("Hello <alice>,"), "{}", mail.body_text);
        assert!(mail.body_html.contains(r#"href="https://id.example.com/password-reset/TOKEN""#), "{}", mail.body_html);
        assert!(
            mail.body_html.contains("&#60;alice&#62;") || mail.body_html.contains("&lt;alice&gt;"),
            "{}",
            mail.body_html
        );
    }

    #[test]
    fn each_mail_links_to_its_own_page() {
        let to = Recipient { user_id: Uuid::nil(), username: "bob", email: "bob@example.org" };
        let cases = [
            (sender().invitation(&to, "T").unwrap(), "https://id.example.com/invitation/T"),
            (sender().email_confirmation(&to, "T").unwrap(), "https://id.example.com/email-confirm/T"),
            (sender().security_notice(&to, &Notice::PasswordChanged).unwrap(), "https://id.example.com/password-reset"),
        ];
        for (mail, link) in cases {
            assert!(mail.body_text.contains(link), "{}", mail.body_text);
            assert!(mail.body_html.contains(&format!(r#"href="{link}""#)), "{}", mail.body_html);
        }
    }
}
