//! `GET /metrics`: its own small server on `GATEHOUSE_METRICS_BIND`, never the public listener, and
//! the middleware that counts every public request by route pattern.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::AppState;
use crate::metrics::{Metrics, PoolLabels, RequestLabels, RouteLabels};

/// The metrics listener, bound by `startup::build_state` and served by [`start`]; the server stops
/// when the state is dropped.
pub struct MetricsEndpoint {
    pub addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    server: Mutex<Option<ServerHandle>>,
}

impl MetricsEndpoint {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        Ok(Self { addr: listener.local_addr()?, listener: Mutex::new(Some(listener)), server: Mutex::new(None) })
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        if let Some(handle) = self.server.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            // Sends the stop command now; nobody needs to wait for it.
            drop(handle.stop(false));
        }
    }
}

/// Starts the metrics server, if one is configured (on the current runtime).
pub fn start(state: &web::Data<AppState>) -> std::io::Result<()> {
    let Some(endpoint) = &state.metrics_endpoint else { return Ok(()) };
    let Some(listener) = endpoint.listener.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() else {
        return Ok(());
    };
    let scraped = state.clone();
    let server = HttpServer::new(move || App::new().app_data(scraped.clone()).route("/metrics", web::get().to(scrape)))
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
    *endpoint.server.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(server.handle());
    tokio::spawn(server);
    Ok(())
}

async fn scrape(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let metrics = &state.grants.metrics;
    // Gauges of "now" are read at scrape time.
    metrics.password_hash_queue.set(i64::try_from(state.grants.hasher.waiting()).unwrap_or(i64::MAX));
    let (open, idle) = state.pool.connection_counts();
    metrics.db_pool_connections.get_or_create(&PoolLabels { state: "idle" }).set(i64::from(idle));
    metrics
        .db_pool_connections
        .get_or_create(&PoolLabels { state: "in_use" })
        .set(i64::from(open.saturating_sub(idle)));
    // Prometheus asks for OpenMetrics first; anything else gets the classic text format.
    let wants_open_metrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_open_metrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(metrics.encode())
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(metrics.encode_prometheus_text())
    }
}

/// The `method` label: the methods HTTP defines, and `other` for any other token a client makes
/// up, so clients cannot create series at will.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("other", |known| known.as_str())
}

/// Counts every request of the public listener by route pattern (never the raw path: that would
/// let clients create series at will), method and status, and times it.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics: Option<Arc<Metrics>> =
        req.app_data::<web::Data<AppState>>().map(|state| Arc::clone(&state.grants.metrics));
    // (No clone of the request may be kept across `next`: routing needs it unshared.)
    let method = method_label(req.method());
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &response {
            Ok(response) => (response.request().match_pattern(), response.status()),
            // A middleware failed before any route answered.
            Err(err) => (None, err.as_response_error().status_code()),
        };
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .http_request_duration
            .get_or_create(&RouteLabels { route: route.clone() })
            .observe(started.elapsed().as_secs_f64());
        metrics.http_requests.get_or_create(&RequestLabels { route, method, status: status.as_u16() }).inc();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["BREW", "PROPFIND", "X1", "get"] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "other", "{made_up}");
        }
    }
}
