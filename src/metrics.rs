//! Prometheus metrics, one registry per running server (so tests that run many servers in one
//! process each read their own). Layers record through [`Metrics`]; `GET /metrics` on
//! `GATEHOUSE_METRICS_BIND` (never the public listener) writes the text format.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/api/admin/users/{username}`), never the raw path; `unmatched` for 404s.
    pub route: String,
    /// A method HTTP defines, or `other`.
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    /// A wrong password or a username nobody has: one outcome, so the metrics tell an observer no
    /// more than the answer does (the audit trail keeps the difference for the operator).
    invalid_credentials,
    locked,
    inactive_user,
    /// Refused before any check: the hashing queue was full.
    busy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub channel: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    /// `pending`, `sent`, `failed`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecondFactorLabels {
    /// `ok` (app code), `recovery_code`, `failed`, `locked`, `added`, `removed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientAuthLabels {
    /// `ok` or why it failed: `unknown_client`, `wrong_secret`, `no_secret`, `no_client`, `public_client`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub state: &'static str,
}

/// Every metric gatehouse keeps.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram>,
    pub logins: Family<LoginLabels, Counter>,
    pub tokens_issued: Family<GrantLabels, Counter>,
    pub refresh_reuse: Counter,
    pub code_reuse: Counter,
    pub lockouts: Counter,
    pub throttled: Counter,
    pub password_hash_queue: Gauge<i64, AtomicI64>,
    pub password_hash_seconds: Histogram,
    pub db_pool_connections: Family<PoolLabels, Gauge<i64, AtomicI64>>,
    pub bearer_batch_size: Histogram,
    pub client_authentications: Family<ClientAuthLabels, Counter>,
    pub second_factor: Family<SecondFactorLabels, Counter>,
    pub mail_outbox: Family<OutboxLabels, Gauge<i64, AtomicI64>>,
    pub mail_oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gatehouse_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 16))
        });
        registry.register(
            "gatehouse_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route pattern",
            http_request_duration.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register("gatehouse_logins", "Password checks, by channel (web, api) and outcome", logins.clone());
        let tokens_issued = Family::<GrantLabels, Counter>::default();
        registry.register("gatehouse_tokens_issued", "Access tokens issued, by grant", tokens_issued.clone());
        let refresh_reuse = Counter::<u64, AtomicU64>::default();
        registry.register(
            "gatehouse_refresh_reuse",
            "Already-used refresh tokens presented again (each revoked its family)",
            refresh_reuse.clone(),
        );
        let code_reuse = Counter::<u64, AtomicU64>::default();
        registry.register(
            "gatehouse_code_reuse",
            "Already-used authorization codes presented again (each revoked what its first exchange issued)",
            code_reuse.clone(),
        );
        let lockouts = Counter::<u64, AtomicU64>::default();
        registry.register("gatehouse_lockouts", "Accounts locked after repeated failures", lockouts.clone());
        let throttled = Counter::<u64, AtomicU64>::default();
        registry.register(
            "gatehouse_throttled",
            "Password attempts answered 429 (per-address budget spent)",
            throttled.clone(),
        );
        let password_hash_queue = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "gatehouse_password_hash_queue",
            "Password checks waiting for a hashing thread now",
            password_hash_queue.clone(),
        );
        let password_hash_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "gatehouse_password_hash_seconds",
            "Time one password check took on its hashing thread",
            password_hash_seconds.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "gatehouse_db_pool_connections",
            "Pooled database connections, by state (idle, in_use)",
            db_pool_connections.clone(),
        );
        let bearer_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "gatehouse_bearer_batch_size",
            "Bearer-token lookups answered by one database round trip",
            bearer_batch_size.clone(),
        );
        let client_authentications = Family::<ClientAuthLabels, Counter>::default();
        registry.register(
            "gatehouse_client_authentications",
            "Client authentications at /token (registered clients), by outcome",
            client_authentications.clone(),
        );
        let second_factor = Family::<SecondFactorLabels, Counter>::default();
        registry.register(
            "gatehouse_second_factor",
            "Second factors: sign-in steps by outcome, and apps added or removed",
            second_factor.clone(),
        );
        let mail_outbox = Family::<OutboxLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "gatehouse_mail_outbox",
            "Mails in the outbox, by state (pending, sent, failed)",
            mail_outbox.clone(),
        );
        let mail_oldest_pending_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "gatehouse_mail_oldest_pending_seconds",
            "Age of the oldest mail not delivered yet (0 when none waits)",
            mail_oldest_pending_seconds.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_duration,
            logins,
            tokens_issued,
            refresh_reuse,
            code_reuse,
            lockouts,
            throttled,
            password_hash_queue,
            password_hash_seconds,
            db_pool_connections,
            bearer_batch_size,
            client_authentications,
            second_factor,
            mail_outbox,
            mail_oldest_pending_seconds,
        }
    }

    /// Everything, in the OpenMetrics text format (what Prometheus asks for first).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Everything, in the classic Prometheus text format (0.0.4), for scrapers and people that do
    /// not ask for OpenMetrics. The samples are the same; the two formats differ in that a
    /// counter's `# HELP`/`# TYPE` lines name its `_total` series here, and in OpenMetrics' own
    /// `# UNIT` and `# EOF` lines, which go.
    pub fn encode_prometheus_text(&self) -> String {
        let open_metrics = self.encode();
        let counters: HashSet<&str> =
            open_metrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        let mut text = String::with_capacity(open_metrics.len() + 16 * counters.len());
        for line in open_metrics.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let counter_metadata = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
                let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
                counters.contains(name).then(|| format!("{prefix}{name}_total {rest}"))
            });
            text.push_str(counter_metadata.as_deref().unwrap_or(line));
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_carry_their_labels_and_the_total_suffix() {
        let metrics = Metrics::new();
        metrics.logins.get_or_create(&LoginLabels { channel: "api", outcome: Outcome::locked }).inc();
        metrics.lockouts.inc();
        let text = metrics.encode();
        assert!(text.contains(r#"gatehouse_logins_total{channel="api",outcome="locked"} 1"#), "{text}");
        assert!(text.contains("gatehouse_lockouts_total 1"), "{text}");
        assert!(text.contains("# TYPE gatehouse_password_hash_seconds histogram"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_classic_text_format_names_counters_by_their_total_series_and_has_no_eof() {
        let metrics = Metrics::new();
        metrics.lockouts.inc();
        let text = metrics.encode_prometheus_text();
        assert!(text.contains("# TYPE gatehouse_lockouts_total counter\ngatehouse_lockouts_total 1\n"), "{text}");
        assert!(text.contains("# HELP gatehouse_lockouts_total "), "{text}");
        assert!(text.contains("# TYPE gatehouse_password_hash_seconds histogram"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }
}
