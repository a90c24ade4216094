//! What each mail says, in text and HTML (askama templates under `templates/mail/`). Links are
//! absolute, from the issuer.

use askama::Template;
use uuid::Uuid;

use crate::db::outbox::NewMail;

#[derive(Template)]
#[template(path = "mail/password_reset.txt")]
struct ResetText<'a> {
    service: &'a str,
    username: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password_reset.html")]
struct ResetHtml<'a> {
    service: &'a str,
    username: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password_changed.txt")]
struct ChangedText<'a> {
    service: &'a str,
    username: &'a str,
    reset_link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/password_changed.html")]
struct ChangedHtml<'a> {
    service: &'a str,
    username: &'a str,
    reset_link: &'a str,
}

/// Who a mail is for.
pub struct Recipient<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub email: &'a str,
}

/// The password-reset mail, with its link (`{issuer}/password-reset/{token}`).
pub fn password_reset(issuer: &str, service: &str, to: &Recipient<'_>, token: &str) -> askama::Result<NewMail> {
    let link = format!("{}/password-reset/{token}", issuer.trim_end_matches('/'));
    let (username, link) = (to.username, link.as_str());
    Ok(NewMail {
        kind: "password_reset",
        user_id: Some(to.user_id),
        recipient: to.email.to_owned(),
        subject: format!("Reset your {service} password"),
        body_text: ResetText { service, username, link }.render()?,
        body_html: ResetHtml { service, username, link }.render()?,
    })
}

/// The notice after a password change (by a reset link or otherwise).
pub fn password_changed(issuer: &str, service: &str, to: &Recipient<'_>) -> askama::Result<NewMail> {
    let reset_link = format!("{}/password-reset", issuer.trim_end_matches('/'));
    let (username, reset_link) = (to.username, reset_link.as_str());
    Ok(NewMail {
        kind: "password_changed",
        user_id: Some(to.user_id),
        recipient: to.email.to_owned(),
        subject: format!("Your {service} password was changed"),
        body_text: ChangedText { service, username, reset_link }.render()?,
        body_html: ChangedHtml { service, username, reset_link }.render()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_mail_carries_an_absolute_link_in_both_parts_and_escapes_names_in_html() {
        let to = Recipient { user_id: Uuid::nil(), username: "<alice>", email: "alice@example.org" };
        let mail = password_reset("https://id.example.com/", "id.example.com", &to, "TOKEN").unwrap();
        assert_eq!(mail.recipient, "alice@example.org");
        assert_eq!(mail.subject, "Reset your id.example.com password");
        assert!(mail.body_text.contains("https://id.example.com/password-reset/TOKEN"), "{}", mail.body_text);
        assert!(mail.body_html.contains(r#"href="https://id.example.com/password-reset/TOKEN""#), "{}", mail.body_html);
        assert!(
            mail.body_html.contains("&#60;alice&#62;") || mail.body_html.contains("&lt;alice&gt;"),
            "{}",
            mail.body_html
        );
        let notice = password_changed("https://id.example.com", "id.example.com", &to).unwrap();
        assert!(notice.body_text.contains("https://id.example.com/password-reset"));
    }
}
