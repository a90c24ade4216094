//! `GET /admin/audit`: the audit trail, filtered by user, event kind and time range, newest first, 50
//! events a page (keyset paging: the link to older events carries where this page ended).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, web};
use askama::Template;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use uuid::Uuid;

use super::WebError;
use super::pages::{Layout, render};
use super::session::SignedInUser;
use crate::auth::guard::Requirement;
use crate::db::{
    self,
    auth_events::{EventCursor, EventFilter},
};
use crate::domain::form::FormFields;
use crate::domain::{Channel, EventKind};
use crate::routes::AppState;

const PER_PAGE: i64 = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(audit);
}

/// The filters as typed, shown again in the form.
#[derive(Default)]
struct Filters {
    user: String,
    kind: String,
    from: String,
    until: String,
}

#[derive(Default)]
struct FilterErrors {
    user: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    until: Option<String>,
}

struct EventRow {
    time: String,
    kind: &'static str,
    channel: &'static str,
    user: String,
    actor: String,
    address: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    filters: Filters,
    errors: FilterErrors,
    kinds: Vec<&'static str>,
    events: Vec<EventRow>,
    older: Option<String>,
    newest: Option<String>,
}

const TIME_HINT: &str = "Use a date and time like 2026-11-30T14:05 (UTC), or a date.";

/// `2026-11-30T14:05`, `2026-11-30T14:05:09`, `2026-11-30 14:05` or `2026-11-30`, in UTC, in the
/// years 1 to 9999 (chrono reads years PostgreSQL cannot store, such as -10000).
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    let formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"];
    let at = formats
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .or_else(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().and_then(|day| day.and_hms_opt(0, 0, 0)))?;
    (1..=9999).contains(&at.year()).then(|| at.and_utc())
}

/// A cursor as the "older events" link carries it: `<RFC 3339 time>~<id>`.
fn parse_cursor(raw: &str) -> Option<EventCursor> {
    let (at, id) = raw.split_once('~')?;
    Some(EventCursor { occurred_at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc), id: id.parse().ok()? })
}

fn cursor_text(cursor: EventCursor) -> String {
    format!("{}~{}", cursor.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), cursor.id)
}

fn link(filters: &Filters, after: Option<EventCursor>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in
        [("user", &filters.user), ("kind", &filters.kind), ("from", &filters.from), ("until", &filters.until)]
    {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    if let Some(after) = after {
        query.append_pair("after", &cursor_text(after));
    }
    format!("/admin/audit?{}", query.finish())
}

#[get("/admin/audit")]
async fn audit(req: HttpRequest, user: SignedInUser, state: web::Data<AppState>) -> Result<HttpResponse, WebError> {
    user.authorize(Requirement::ADMIN_PAGES)?;
    let query = FormFields::parse_query(req.query_string()).map_err(|_| WebError::BadRequest)?;
    let value = |name: &str| query.get(name).unwrap_or_default().trim().to_owned();
    let filters = Filters { user: value("user"), kind: value("kind"), from: value("from"), until: value("until") };
    let after = match query.get("after") {
        Some(raw) => Some(parse_cursor(raw).ok_or(WebError::BadRequest)?),
        None => None,
    };

    let mut errors = FilterErrors::default();
    let mut filter = EventFilter::default();
    if !filters.kind.is_empty() {
        match filters.kind.parse::<EventKind>() {
            Ok(kind) => filter.kind = Some(kind),
            Err(_) => errors.kind = Some(format!("There is no event kind {}.", filters.kind)),
        }
    }
    for (raw, slot, error) in
        [(&filters.from, &mut filter.from, &mut errors.from), (&filters.until, &mut filter.until, &mut errors.until)]
    {
        if !raw.is_empty() {
            match parse_time(raw) {
                Some(at) => *slot = Some(at),
                None => *error = Some(TIME_HINT.to_owned()),
            }
        }
    }
    if let (Some(from), Some(until)) = (filter.from, filter.until)
        && from >= until
    {
        errors.until = Some("The end must come after the start.".to_owned());
    }
    let username = filters.user.clone();
    let filter_errors = errors.kind.is_some() || errors.from.is_some() || errors.until.is_some();
    let found = db::run(&state.pool, move |conn| {
        // `Some(None)`: a user was named and there is no such user.
        let subject = if username.is_empty() { None } else { Some(db::users::find_by_username(conn, &username)?) };
        if matches!(subject, Some(None)) || filter_errors {
            return Ok((subject, None));
        }
        let filter = EventFilter { user_id: subject.as_ref().and_then(|found| found.as_ref().map(|u| u.id)), ..filter };
        let page = db::auth_events::page(conn, &filter, after, PER_PAGE)?;
        let mut ids: Vec<Uuid> =
            page.events.iter().flat_map(|event| [event.user_id, event.actor_id]).flatten().collect();
        ids.sort();
        ids.dedup();
        let names: HashMap<Uuid, String> = db::auth_events::usernames(conn, &ids)?.into_iter().collect();
        Ok((subject, Some((page, names))))
    })
    .await?;
    let (subject, page) = found;
    if matches!(subject, Some(None)) {
        errors.user = Some(format!("There is no user named {}.", filters.user));
    }
    let status = if page.is_none() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let (events, older) = match page {
        Some((page, names)) => {
            let name = |id: Option<Uuid>| id.and_then(|id| names.get(&id).cloned());
            let rows = page
                .events
                .into_iter()
                .map(|event| EventRow {
                    time: event.occurred_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    kind: event.kind.as_str(),
                    channel: event.channel.as_str(),
                    user: name(event.user_id).or(event.attempted_username).unwrap_or_default(),
                    actor: match (name(event.actor_id), event.channel) {
                        (Some(actor), _) => actor,
                        (None, Channel::Cli) => "command line".to_owned(),
                        (None, _) => String::new(),
                    },
                    address: event.client_addr.unwrap_or_default(),
                    detail: [event.reason.map(|reason| reason.to_string()), event.detail]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect();
            (rows, page.next.map(|next| link(&filters, Some(next))))
        }
        None => (Vec::new(), None),
    };
    let page = AuditPage {
        layout: user.layout(),
        newest: after.map(|_| link(&filters, None)),
        filters,
        errors,
        kinds: EventKind::ALL.iter().map(|kind| kind.as_str()).collect(),
        events,
        older,
    };
    render(status, &page)
}
