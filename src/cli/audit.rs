//! `gatehouse audit …`: read the audit trail.

use clap::Subcommand;
use diesel::PgConnection;

use super::CliError;
use crate::db;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the latest authentication events, newest last.
    Tail {
        #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        lines: i64,
    },
}

pub(super) fn run(conn: &mut PgConnection, command: AuditCommand) -> Result<(), CliError> {
    let AuditCommand::Tail { lines } = command;
    let mut events = db::auth_events::latest(conn, lines).map_err(|err| CliError::from_error(&err))?;
    events.reverse();
    for event in events {
        let detail = [event.reason.map(|r| r.to_string()), event.detail].into_iter().flatten().collect::<Vec<_>>();
        println!(
            "{}  {:<14} {:<3} user={} attempted={} addr={} actor={} {}",
            event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
            event.kind,
            event.channel,
            event.user_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            escape_control(event.attempted_username.as_deref().unwrap_or("-")),
            escape_control(event.client_addr.as_deref().unwrap_or("-")),
            event.actor_id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
            escape_control(&detail.join(" ")),
        );
    }
    Ok(())
}

/// Text from clients as a terminal may show it: control characters (an escape sequence that would
/// rewrite the operator's screen, a newline that would forge a line) are written as `\x1b`, `\u{2028}`.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}');
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if needs(c) && (c as u32) < 0x100 => escaped.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs(c) => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}
