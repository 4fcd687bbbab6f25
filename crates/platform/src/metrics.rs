//! Prometheus metrics. Each service owns a [`Metrics`] registry — several services share one
//! process in `portal up` and in the tests, so nothing is global — and serves it at
//! `GET /metrics` in Prometheus's text format (clean for `promtool check metrics`). Names start
//! with `portal_`, are in base units (`_seconds`), and counters end in `_total`.
//!
//! [`instrument`] adds `/metrics` and the HTTP layer to a service's router: requests by route
//! template (never the raw path: ids would make a series per user), method and status, and how
//! long they took; one access log line each; and the request's trace id made current for its
//! handler. Figures that are read rather than counted (the outbox backlog, queue depths,
//! pool use) are refreshed by probes run at each scrape ([`Metrics::on_scrape`]), each bounded
//! by [`PROBE_TIMEOUT`], so a scrape never hangs on a database that is down.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use prometheus::Error;

/// Latency buckets in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Batch size buckets: 1 to 1000 messages or rows.
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// The longest the pool's acquire probe waits (below [`PROBE_TIMEOUT`], so it reports).
pub const ACQUIRE_WAIT_CAP: Duration = Duration::from_millis(1500);

/// How long one probe may take at a scrape before the figures are served without it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

type Probe = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// One service's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    probes: Mutex<Vec<Probe>>,
    scraping: tokio::sync::Mutex<()>,
}

impl Metrics {
    /// A registry for `service`, with the HTTP families and `portal_build_info`.
    pub fn new(service: &str) -> prometheus::Result<Arc<Self>> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "portal_http_requests_total",
                "HTTP requests answered, by route template, method and status code.",
            ),
            &["route", "method", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "portal_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let build = IntGaugeVec::new(
            Opts::new(
                "portal_build_info",
                "Always 1: the service, version and git commit of this build.",
            ),
            &["service", "version", "commit"],
        )?;
        build
            .with_label_values(&[service, env!("CARGO_PKG_VERSION"), crate::build::GIT_COMMIT])
            .set(1);
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(build))?;
        Ok(Arc::new(Self {
            registry,
            http_requests,
            http_seconds,
            probes: Mutex::new(Vec::new()),
            scraping: tokio::sync::Mutex::new(()),
        }))
    }

    /// Registers `metric` (a counter, gauge, histogram or a family of them) and gives it back.
    pub fn register<C: Collector + Clone + 'static>(&self, metric: C) -> prometheus::Result<C> {
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(name, help)?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        self.register(Gauge::new(name, help)?)
    }

    pub fn int_gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }

    pub fn int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<Histogram> {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        )?)
    }

    /// Runs `probe` before each scrape, at most [`PROBE_TIMEOUT`]: for figures that are read
    /// from elsewhere (a table, a queue, a pool) rather than counted as they happen.
    pub fn on_scrape<F, Fut>(&self, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || Box::pin(probe()));
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(probe);
    }

    /// The use of a database pool, read at each scrape: connections idle, in use and the
    /// maximum (`portal_db_pool_connections{database, state}`), and how long an acquire waited
    /// (`portal_db_pool_acquire_wait_seconds{database}`).
    pub fn watch_pool(&self, pool: sqlx::PgPool, database: &'static str) -> prometheus::Result<()> {
        let connections = self.int_gauge_vec(
            "portal_db_pool_connections",
            "Connections of the service's database pool: idle, in use, and the pool's maximum.",
            &["database", "state"],
        )?;
        let wait = self.register(prometheus::GaugeVec::new(
            Opts::new(
                "portal_db_pool_acquire_wait_seconds",
                "How long taking a connection from the pool took at the last scrape (what a \
                 request would have waited then); ACQUIRE_WAIT_CAP or more means the pool is \
                 exhausted or the database unreachable.",
            ),
            &["database"],
        )?)?;
        self.on_scrape(move || {
            let (connections, wait, pool) = (connections.clone(), wait.clone(), pool.clone());
            async move {
                let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
                let size = i64::from(pool.size());
                let max = i64::from(pool.options().get_max_connections());
                connections.with_label_values(&[database, "idle"]).set(idle);
                connections
                    .with_label_values(&[database, "in_use"])
                    .set((size - idle).max(0));
                connections.with_label_values(&[database, "max"]).set(max);
                // sqlx counts no waits: one acquire per scrape samples them instead.
                let started = Instant::now();
                let waited = match tokio::time::timeout(ACQUIRE_WAIT_CAP, pool.acquire()).await {
                    Ok(Ok(_connection)) => started.elapsed(),
                    _ => ACQUIRE_WAIT_CAP,
                };
                wait.with_label_values(&[database])
                    .set(waited.as_secs_f64());
            }
        });
        Ok(())
    }

    /// Every family in the text format, after the probes have run.
    pub async fn render(&self) -> String {
        // One scrape at a time: probes bring counters up to totals kept elsewhere
        // ([`catch_up`]), which two at once would both add.
        let _one = self.scraping.lock().await;
        let probes: Vec<Probe> = self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        futures::future::join_all(
            probes
                .iter()
                .map(|probe| tokio::time::timeout(PROBE_TIMEOUT, probe())),
        )
        .await;
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: a family could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn observe_http(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows (a service's own
/// atomics, which its readiness also reads).
pub fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// `router` with `GET /metrics` and every request counted and timed.
pub fn instrument(router: Router, metrics: &Arc<Metrics>) -> Router {
    let served = metrics.clone();
    router
        .route(
            "/metrics",
            get(move || {
                let metrics = served.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        metrics.render().await,
                    )
                }
            }),
        )
        .layer(middleware::from_fn_with_state(metrics.clone(), track))
}

/// Counts and times one request under its route template (`unmatched` for the 404 fallback),
/// runs it with its trace id current ([`crate::trace::scope`]), and writes its access line
/// (target `access`: method, route, status, duration, request id, trace id; never a token or a
/// body).
async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A fixed set: any token is a valid HTTP method, and each would be a series of its own.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    // Read in a block of its own: a borrow of the request must not live across the await
    // below (the future would not be `Send`).
    let (request_id, traceparent) = {
        let header = |name: &str| -> Option<String> {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("x-request-id"), header(crate::trace::TRACEPARENT))
    };
    let trace_id = traceparent.and_then(|t| crate::trace::trace_id_of(&t).map(str::to_owned));
    let started = Instant::now();
    let response = crate::trace::scope(trace_id.clone(), next.run(req)).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe_http(&route, &method, status, took);
    tracing::info!(
        target: "access",
        method,
        route,
        status,
        duration_ms = took.as_secs_f64() * 1000.0,
        request_id = request_id.as_deref().unwrap_or("-"),
        trace_id = trace_id.as_deref().unwrap_or("-"),
        "{method} {route} {status}"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn families_are_rendered_with_help_and_type_after_the_probes() {
        let metrics = Metrics::new("test-service").unwrap();
        let depth = metrics
            .int_gauge("portal_test_depth", "A depth read at scrape.")
            .unwrap();
        let read = depth.clone();
        metrics.on_scrape(move || {
            let read = read.clone();
            async move { read.set(7) }
        });
        let counter = metrics
            .counter("portal_test_things_total", "Things.")
            .unwrap();
        catch_up(&counter, 5);
        catch_up(&counter, 3);
        let text = metrics.render().await;
        assert!(
            text.contains("# TYPE portal_test_depth gauge\nportal_test_depth 7\n"),
            "{text}"
        );
        assert!(text.contains("portal_test_things_total 5\n"), "{text}");
        assert!(text.contains("portal_build_info{commit="), "{text}");
        assert!(text.contains("service=\"test-service\""), "{text}");
    }
}
