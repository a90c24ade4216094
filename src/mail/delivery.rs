//! The delivery loop every instance runs when mail is on: lease due mails from the outbox, hand each
//! to the SMTP server (or, under `--dev` without one, print it), and mark it sent or due again.
//! Instances share the outbox: `SKIP LOCKED` and the lease keep them from taking the same row.
//!
//! A mail goes out twice only if an instance stalls or crashes after the SMTP server accepted it and
//! before the row is marked sent (the window is one UPDATE; a stall longer than the lease, 60 s,
//! also lets another instance take the row over).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::{LEASE, SMTP_TIMEOUT, retry_after};
use crate::db::{self, PgPool, outbox::LeasedMail};
use crate::metrics::{Metrics, OutboxLabels};

/// How often an idle instance looks for due mails.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Mails leased at a time.
const BATCH: i64 = 10;

/// Why mail could not be set up (the server does not start).
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("GATEHOUSE_SMTP_URL is not an SMTP address lettre understands: {0}")]
    Url(String),
    #[error("GATEHOUSE_MAIL_FROM is not a mail address: {0}")]
    From(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `--dev` without SMTP: each mail is printed to the terminal.
    Print,
}

/// Where mails go, and whom they come from.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl Mailer {
    /// An SMTP server: `smtp://host:port` (STARTTLS when offered), `smtp://user:pass@host:587?tls=starttls`
    /// (STARTTLS required), `smtps://host:465` (TLS from the start).
    pub fn smtp(url: &SecretString, from: &str) -> Result<Self, MailSetupError> {
        // lettre calls the required STARTTLS `tls=required`.
        let url = url.expose_secret().replace("tls=starttls", "tls=required");
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|err| MailSetupError::Url(err.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Self { transport: Transport::Smtp(transport), from: mailbox(from)? })
    }

    /// `--dev` without SMTP: mails are printed.
    pub fn print(from: &str) -> Result<Self, MailSetupError> {
        Ok(Self { transport: Transport::Print, from: mailbox(from)? })
    }

    /// Hands one mail over. `Err(permanent, reason)`: `permanent` when trying again cannot help (a
    /// recipient that is no mail address).
    async fn send(&self, mail: &LeasedMail) -> Result<(), (bool, String)> {
        let to: Mailbox = mail.recipient.parse().map_err(|err| (true, format!("recipient: {err}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.body_text.clone().unwrap_or_default(),
                mail.body_html.clone().unwrap_or_default(),
            ))
            .map_err(|err| (true, err.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => match tokio::time::timeout(SMTP_TIMEOUT, smtp.send(message)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err((err.is_permanent(), err.to_string())),
                Err(_) => Err((false, "the SMTP server did not answer in time".to_owned())),
            },
            Transport::Print => {
                println!(
                    "--- mail to {} ---\nSubject: {}\n\n{}\n--- end of mail ---",
                    mail.recipient,
                    mail.subject,
                    mail.body_text.as_deref().unwrap_or_default()
                );
                Ok(())
            }
        }
    }
}

fn mailbox(from: &str) -> Result<Mailbox, MailSetupError> {
    from.parse().map_err(|err: lettre::address::AddressError| MailSetupError::From(err.to_string()))
}

/// Delivers due mails until the process ends.
pub async fn run(pool: PgPool, mailer: Arc<Mailer>, metrics: Arc<Metrics>) {
    loop {
        let leased = db::run(&pool, |conn| db::outbox::lease_due(conn, BATCH, LEASE.as_secs() as i64)).await;
        let busy = match leased {
            Ok(mails) => {
                let full = mails.len() as i64 == BATCH;
                for mail in mails {
                    deliver(&pool, &mailer, &mail).await;
                }
                full
            }
            Err(err) => {
                log::warn!("mail: cannot read the outbox: {err}");
                false
            }
        };
        if let Ok(counts) = db::run(&pool, db::outbox::counts).await {
            for (state, count) in [("pending", counts.pending), ("sent", counts.sent), ("failed", counts.failed)] {
                metrics.mail_outbox.get_or_create(&OutboxLabels { state }).set(count);
            }
            metrics.mail_oldest_pending_seconds.set(counts.oldest_pending_secs);
        }
        if !busy {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

async fn deliver(pool: &PgPool, mailer: &Mailer, mail: &LeasedMail) {
    let id = mail.id;
    match mailer.send(mail).await {
        Ok(()) => match db::run(pool, move |conn| db::outbox::mark_sent(conn, id)).await {
            Ok(true) => log::info!("mail {id} delivered to the SMTP server"),
            Ok(false) => {
                log::warn!("mail {id} delivered, but its lease had run out: another instance may deliver it too")
            }
            // The SMTP server has it; the row stays pending and goes out again when the lease ends:
            // the one duplicate the outbox allows.
            Err(err) => log::error!("mail {id} delivered, but could not be marked sent: {err}"),
        },
        Err((permanent, reason)) => {
            let next = if permanent { None } else { retry_after(mail.attempts, mail.created_at, Utc::now()) };
            match next {
                Some(at) => log::warn!("mail {id}: delivery failed ({reason}); next attempt at {at}"),
                None => log::error!("mail {id}: delivery failed for good ({reason})"),
            }
            if let Err(err) = db::run(pool, move |conn| db::outbox::mark_unsent(conn, id, &reason, next)).await {
                log::error!("mail {id}: could not record the failed delivery: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(url: &str) -> Result<Mailer, MailSetupError> {
        Mailer::smtp(&SecretString::from(url.to_owned()), "gatehouse <noreply@example.com>")
    }

    #[test]
    fn the_three_smtp_address_forms_are_understood_and_others_refused() {
        for url in [
            "smtp://mail.example.com:25",
            "smtp://user:secret@mail.example.com:587?tls=starttls",
            "smtps://user:secret@mail.example.com:465",
        ] {
            assert!(setup(url).is_ok(), "{url}");
        }
        for url in ["http://mail.example.com", "mail.example.com:25", ""] {
            assert!(matches!(setup(url), Err(MailSetupError::Url(_))), "{url}");
        }
        let bad_from = Mailer::smtp(&SecretString::from("smtp://mail.example.com".to_owned()), "not an address");
        assert!(matches!(bad_from, Err(MailSetupError::From(_))));
    }
}
