//! Which request a log line is about. Every response carries `X-Request-Id` (an incoming one is
//! kept when it is sane, otherwise a new one is made), and every line logged while that request is
//! served — on the async worker, or on a blocking thread doing its database work — starts with it,
//! as do the audit rows it writes. The format of a line:
//!
//! `[2026-12-07T01:02:03Z INFO  gatehouse::routes] 0193a1b2c3d4… message`, with `-` for no request.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::Arc;

/// The header that carries the id, both ways.
pub const HEADER: &str = "x-request-id";
/// The longest incoming id that is kept as it is.
const MAX_INCOMING: usize = 64;

/// A request's id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, so it is safe in a log line and a
/// header alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's id if it is sane (a proxy's, so one id follows the request through), or a new one.
    pub fn accept_or_new(incoming: Option<&str>) -> Self {
        match incoming {
            Some(id) if is_sane(id) => Self(id.into()),
            _ => Self::new(),
        }
    }

    /// A new id: time-ordered (UUIDv7), so ids sort like the requests they name.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_INCOMING).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

tokio::task_local! {
    /// The request the current task serves.
    static TASK_REQUEST: RequestId;
}

thread_local! {
    /// The request a blocking thread is working for, while it does (see [`carry`]).
    static THREAD_REQUEST: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// The request being served here, if any.
pub fn current() -> Option<RequestId> {
    TASK_REQUEST.try_with(Clone::clone).ok().or_else(|| THREAD_REQUEST.with(|cell| cell.borrow().clone()))
}

/// Runs `future` as the work of request `id`.
pub async fn scope<F: Future>(id: RequestId, future: F) -> F::Output {
    TASK_REQUEST.scope(id, future).await
}

/// Wraps `work` that is about to move to another thread so that, there, it still counts as the
/// current request's.
pub fn carry<T>(work: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let id = current();
    move || {
        let previous = THREAD_REQUEST.with(|cell| cell.replace(id));
        let result = work();
        THREAD_REQUEST.with(|cell| *cell.borrow_mut() = previous);
        result
    }
}

/// Pages whose last path segment is a secret mailed to someone (a link that sets a password or an
/// email address): the request line shows the page, never the token.
const LINK_PAGES: [&str; 3] = ["/password-reset/", "/invitation/", "/email-confirm/"];

/// `path` as the request line may show it: a mailed link's token replaced by `…`.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match LINK_PAGES.iter().find(|page| path.starts_with(**page) && path.len() > page.len()) {
        Some(page) => format!("{page}\u{2026}").into(),
        None => path.into(),
    }
}

/// `text` made safe to stand between double quotes in a log line: `"`, `\\` and control characters
/// are escaped, so a client cannot forge fields or lines.
pub fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

/// env_logger with gatehouse's line format, filtered by `RUST_LOG` or else `default_filter`.
pub fn logger(default_filter: &str) -> env_logger::Builder {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    builder.format(|buf, record| {
        let id = current();
        writeln!(
            buf,
            "[{} {:<5} {}] {} {}",
            buf.timestamp_seconds(),
            record.level(),
            record.target(),
            id.as_ref().map_or("-", RequestId::as_str),
            record.args()
        )
    });
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailed_links_token_never_reaches_the_request_line() {
        assert_eq!(loggable_path("/password-reset/abcDEF123_-"), "/password-reset/\u{2026}");
        assert_eq!(loggable_path("/invitation/abc"), "/invitation/\u{2026}");
        assert_eq!(loggable_path("/email-confirm/abc/extra"), "/email-confirm/\u{2026}");
        assert_eq!(loggable_path("/password-reset"), "/password-reset");
        assert_eq!(loggable_path("/password-reset/"), "/password-reset/");
        assert_eq!(loggable_path("/api/users/me"), "/api/users/me");
    }

    #[test]
    fn a_sane_incoming_id_is_kept_and_anything_else_replaced() {
        for kept in ["abc", "req-1.2_3", &"a".repeat(64)] {
            assert_eq!(RequestId::accept_or_new(Some(kept)).as_str(), kept);
        }
        for replaced in ["", "a b", "a\"b", "line\nbreak", "ü", &"a".repeat(65), "x=1;y"] {
            let id = RequestId::accept_or_new(Some(replaced));
            assert_ne!(id.as_str(), replaced);
            assert!(is_sane(id.as_str()), "{id:?}");
        }
        assert!(is_sane(RequestId::accept_or_new(None).as_str()));
    }

    #[test]
    fn quoting_leaves_no_way_to_end_the_field_or_the_line() {
        assert_eq!(quoted("/api/users/me"), "/api/users/me");
        assert_eq!(quoted(r#"/x" 200 0 1ms"#), r#"/x\" 200 0 1ms"#);
        assert_eq!(quoted("/a\\b"), r"/a\\b");
        assert_eq!(quoted("/a\nb\r"), r"/a\u{a}b\u{d}");
    }

    #[test]
    fn the_id_follows_work_onto_another_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let id = RequestId::new();
        let seen = runtime.block_on(scope(id.clone(), async {
            let work = carry(current);
            std::thread::spawn(work).join().unwrap()
        }));
        assert_eq!(seen, Some(id));
        assert_eq!(current(), None, "nothing outside the request");
    }
}
