//! Prometheus metrics. Each service owns a [`Metrics`] registry — several services share one
//! process in `portal up` and in the tests, so nothing is global — and serves it at
//! `GET /metrics` in Prometheus's text format (clean for `promtool check metrics`). Names start
//! with `portal_`, are in base units (`_seconds`), and counters end in `_total`.
//!
//! `/metrics` is not for the world: a service reachable from other machines would otherwise
//! tell anyone its traffic, its backlog and its build. It answers a request from this machine
//! (a loopback peer that came through no proxy: Prometheus beside the service, the tests), or
//! one carrying `Authorization: Bearer <METRICS_TOKEN>` ([`instrument_with`]); anyone else gets
//! what the service answers for a path it does not have (404 JSON from an API), so a scan
//! learns nothing. A service bound to loopback only
//! is thus open to its machine, as before; one bound to another address is closed to the rest.
//!
//! [`instrument`] adds `/metrics` and the HTTP layer to a service's router: requests by route
//! template (never the raw path: ids would make a series per user), method and status, and how
//! long they took; one access log line each; and the request's trace id made current for its
//! handler. Figures that are read rather than counted (the outbox backlog, queue depths,
//! pool use) are refreshed by probes run at each scrape ([`Metrics::on_scrape`]), each bounded
//! by [`PROBE_TIMEOUT`], so a scrape never hangs on a database that is down.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
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

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<prometheus::HistogramVec> {
        self.register(prometheus::HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?)
    }

    /// `portal_consumer_queue_messages{queue}` for each of `queues` and
    /// `portal_consumer_queue_consumers{queue}` for each of `attached`, read at each scrape
    /// through `amqp_url` (passive declares): the queues a service reads and their dead letters.
    pub fn watch_queues(
        &self,
        amqp_url: &str,
        queues: Vec<String>,
        attached: Vec<String>,
    ) -> prometheus::Result<()> {
        let ready = self.int_gauge_vec(
            "portal_consumer_queue_messages",
            "Messages ready in the queues this service reads (main, retry, dead-letter, control), read at scrape.",
            &["queue"],
        )?;
        let consumers = self.int_gauge_vec(
            "portal_consumer_queue_consumers",
            "Consumers attached to the main queues this service reads, read at scrape.",
            &["queue"],
        )?;
        let url = amqp_url.to_owned();
        self.on_scrape(move || {
            let (ready, consumers, queues, attached, url) = (
                ready.clone(),
                consumers.clone(),
                queues.clone(),
                attached.clone(),
                url.clone(),
            );
            async move {
                // Figures that cannot be read now are left out, not served stale.
                ready.reset();
                consumers.reset();
                let Ok(conn) = crate::amqp::connect(&url, "metrics").await else {
                    return;
                };
                for queue in &queues {
                    // A channel each: a missing queue closes the channel it was asked on.
                    let Ok(ch) = conn.create_channel().await else {
                        break;
                    };
                    if let Ok((messages, attached_now)) =
                        crate::amqp::queue_counts(&ch, queue).await
                    {
                        ready.with_label_values(&[queue]).set(i64::from(messages));
                        if attached.contains(queue) {
                            consumers
                                .with_label_values(&[queue])
                                .set(i64::from(attached_now));
                        }
                        ch.close(200, "done").await.ok();
                    }
                }
                conn.close(200, "done").await.ok();
            }
        });
        Ok(())
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

    /// The size on disk and the dead-tuple ratio of `tables` of `database`:
    /// `portal_table_size_bytes{database, table}` (`pg_total_relation_size`: heap, indexes and
    /// TOAST; a partitioned table's is the sum of its partitions) and
    /// `portal_table_dead_tuple_ratio{database, table}` (`n_dead_tup / (n_live_tup +
    /// n_dead_tup)` of `pg_stat_user_tables`, partitions summed; 0 for an empty table). Read at
    /// a scrape at most every [`TABLE_FIGURES_EVERY`] (sizing every partition is not free, and
    /// the figures move slowly); a scrape in between serves the last figures. A table that
    /// does not exist is left out.
    pub fn watch_tables(
        &self,
        pool: sqlx::PgPool,
        database: &'static str,
        tables: &[&'static str],
    ) -> prometheus::Result<()> {
        let size = self.int_gauge_vec(
            "portal_table_size_bytes",
            "Size on disk of a table with its indexes and TOAST (a partitioned table: all its partitions), read every 30 s.",
            &["database", "table"],
        )?;
        let dead = self.register(prometheus::GaugeVec::new(
            Opts::new(
                "portal_table_dead_tuple_ratio",
                "Dead tuples / (live + dead) of a table (partitions summed), from pg_stat_user_tables, read every 30 s.",
            ),
            &["database", "table"],
        )?)?;
        let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        let last: Arc<Mutex<Option<Instant>>> = Arc::default();
        self.on_scrape(move || {
            let (size, dead, tables, pool, last) = (
                size.clone(),
                dead.clone(),
                tables.clone(),
                pool.clone(),
                last.clone(),
            );
            async move {
                {
                    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|t| t.elapsed() < TABLE_FIGURES_EVERY) {
                        return;
                    }
                    *last = Some(Instant::now());
                }
                let Ok(rows) = table_figures(&pool, &tables).await else {
                    return;
                };
                for figures in rows {
                    size.with_label_values(&[database, &figures.table])
                        .set(figures.bytes);
                    dead.with_label_values(&[database, &figures.table])
                        .set(figures.dead_ratio());
                }
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

/// How often [`Metrics::watch_tables`] reads its figures at most.
pub const TABLE_FIGURES_EVERY: Duration = Duration::from_secs(30);

/// A table's size and tuple counts, its partitions summed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TableFigures {
    pub table: String,
    /// `pg_total_relation_size`, summed over the partitions of a partitioned table.
    pub bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
}

impl TableFigures {
    /// Dead tuples / (live + dead); 0 for a table without tuples.
    pub fn dead_ratio(&self) -> f64 {
        let all = self.live_tuples + self.dead_tuples;
        if all <= 0 {
            return 0.0;
        }
        self.dead_tuples as f64 / all as f64
    }
}

/// The figures of each of `tables` that exists, in one query: a partitioned table's are its
/// partitions' (`pg_partition_tree`, which lists nothing for a plain table: the table itself
/// is added).
pub async fn table_figures(
    pool: &sqlx::PgPool,
    tables: &[String],
) -> Result<Vec<TableFigures>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name AS table, \
                coalesce(sum(pg_total_relation_size(p.relid)), 0)::int8 AS bytes, \
                coalesce(sum(s.n_live_tup), 0)::int8 AS live_tuples, \
                coalesce(sum(s.n_dead_tup), 0)::int8 AS dead_tuples \
         FROM unnest($1::text[]) AS t(name) \
         CROSS JOIN LATERAL (SELECT relid FROM pg_partition_tree(to_regclass(t.name)) \
                             UNION SELECT to_regclass(t.name)) AS p(relid) \
         LEFT JOIN pg_stat_user_tables s ON s.relid = p.relid \
         WHERE to_regclass(t.name) IS NOT NULL \
         GROUP BY t.name",
    )
    .bind(tables)
    .fetch_all(pool)
    .await
}

/// Brings `counter` up to `total`, a count kept elsewhere that only grows (a service's own
/// atomics, which its readiness also reads).
pub fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The shortest METRICS_TOKEN accepted: as many characters as `openssl rand -hex 16` gives.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The bearer token that lets a scraper on another machine read `/metrics` (METRICS_TOKEN).
/// Never shown: its `Debug` says `***`.
#[derive(Clone)]
pub struct MetricsToken(Arc<str>);

impl MetricsToken {
    /// `value`, if it is long enough to be unguessable and fits in a header. The error never
    /// quotes the value.
    pub fn new(value: &str) -> anyhow::Result<Self> {
        let value = value.trim();
        if value.chars().count() < MIN_TOKEN_CHARS {
            anyhow::bail!(
                "METRICS_TOKEN must be at least {MIN_TOKEN_CHARS} characters (e.g. the output of \
                 `openssl rand -hex 32`)"
            );
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "METRICS_TOKEN must be printable ASCII without spaces (e.g. the output of \
                 `openssl rand -hex 32`)"
            );
        }
        Ok(Self(value.into()))
    }

    /// Whether `presented` is this token, in time that does not depend on how much of it is
    /// right (both are hashed first, so not even the length shows).
    fn matches(&self, presented: &str) -> bool {
        let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        let (a, b) = (digest(&self.0), digest(presented));
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(***)")
    }
}

/// Whether a request for `/metrics` may have it: it came from this machine (a loopback peer,
/// and no proxy header — a TLS proxy or load balancer on this machine relays other people's
/// requests), or it carries `token`. A request without a known peer (not from the accept loop)
/// is not from this machine.
pub fn may_scrape(
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    token: Option<&MetricsToken>,
) -> bool {
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    let local = peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) && !proxied;
    local
        || token.is_some_and(|token| {
            headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split_once(' '))
                .any(|(scheme, given)| {
                    scheme.eq_ignore_ascii_case("bearer") && token.matches(given.trim())
                })
        })
}

/// `router` with `GET /metrics` (this machine only: see the module's documentation) and every
/// request counted and timed.
pub fn instrument(router: Router, metrics: &Arc<Metrics>) -> Router {
    instrument_with(router, metrics, None)
}

/// [`instrument`], `/metrics` also answering anyone who presents `token` as a bearer token.
pub fn instrument_with(
    router: Router,
    metrics: &Arc<Metrics>,
    token: Option<MetricsToken>,
) -> Router {
    let served = metrics.clone();
    // The service without `/metrics`: a refused scrape gets exactly what it answers for a path
    // it does not have (its own fallback: JSON from an API, a page from the web portal), so
    // nothing tells that the route exists.
    let without = router.clone();
    router
        .route(
            "/metrics",
            get(move |req: Request| {
                let metrics = served.clone();
                let token = token.clone();
                let without = without.clone();
                async move {
                    let peer = req
                        .extensions()
                        .get::<ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0);
                    if !may_scrape(peer, req.headers(), token.as_ref()) {
                        use tower::ServiceExt;
                        return match without.oneshot(req).await {
                            Ok(answer) => answer,
                            Err(never) => match never {},
                        };
                    }
                    (
                        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        metrics.render().await,
                    )
                        .into_response()
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

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    /// `path` asked of `router` as the accept loop hands it a request: from `peer` (none: not
    /// through the accept loop), with `headers`.
    async fn ask(
        router: &Router,
        path: &str,
        peer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(axum::body::Body::empty()).unwrap();
        if let Some(peer) = peer {
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let answer = router.clone().oneshot(req).await.unwrap();
        let status = answer.status().as_u16();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn service(token: Option<&str>) -> Router {
        let metrics = Metrics::new("test-service").unwrap();
        let token = token.map(|t| MetricsToken::new(t).unwrap());
        instrument_with(
            Router::new().fallback(crate::http::fallback_not_found),
            &metrics,
            token,
        )
    }

    #[tokio::test]
    async fn metrics_answer_this_machine_and_the_token_and_look_absent_to_anyone_else() {
        let bearer = format!("Bearer {TOKEN}");
        for router in [service(None), service(Some(TOKEN))] {
            // This machine, however it is written: served.
            for peer in [
                "127.0.0.1:5000",
                "127.0.0.2:5000",
                "[::1]:5000",
                "[::ffff:127.0.0.1]:5000",
            ] {
                let (status, text) = ask(&router, "/metrics", Some(peer), &[]).await;
                assert_eq!(status, 200, "{peer}");
                assert!(text.contains("portal_build_info"), "{peer}: {text}");
            }
            // Another machine, a proxy on this one relaying someone's request, or no known peer,
            // without the token: exactly what a route that does not exist answers.
            let (_, absent) = ask(&router, "/no-such-route", Some("192.0.2.7:5000"), &[]).await;
            assert!(absent.contains("not_found"), "{absent}");
            for (peer, headers) in [
                (Some("192.0.2.7:5000"), &[][..]),
                (Some("[2001:db8::7]:5000"), &[][..]),
                (
                    Some("192.0.2.7:5000"),
                    &[("authorization", "Bearer wrong")][..],
                ),
                (Some("192.0.2.7:5000"), &[("authorization", TOKEN)][..]),
                (
                    Some("127.0.0.1:5000"),
                    &[("x-forwarded-for", "192.0.2.7")][..],
                ),
                (
                    Some("127.0.0.1:5000"),
                    &[("forwarded", "for=192.0.2.7")][..],
                ),
                (Some("127.0.0.1:5000"), &[("x-real-ip", "192.0.2.7")][..]),
                (None, &[][..]),
            ] {
                let (status, text) = ask(&router, "/metrics", peer, headers).await;
                assert_eq!(
                    (status, text.as_str()),
                    (404, absent.as_str()),
                    "{peer:?} {headers:?}"
                );
            }
        }
        // With the token configured, whoever presents it is served, from anywhere.
        let router = service(Some(TOKEN));
        let lower = format!("bearer {TOKEN}");
        for (peer, headers) in [
            ("192.0.2.7:5000", vec![("authorization", bearer.as_str())]),
            (
                "[2001:db8::7]:5000",
                vec![("authorization", lower.as_str())],
            ),
            (
                "127.0.0.1:5000",
                vec![
                    ("x-forwarded-for", "192.0.2.7"),
                    ("authorization", bearer.as_str()),
                ],
            ),
        ] {
            let (status, text) = ask(&router, "/metrics", Some(peer), &headers).await;
            assert_eq!(status, 200, "{peer}");
            assert!(text.contains("portal_build_info"), "{peer}: {text}");
        }
        // The token of one service is not good at another without one.
        let (status, _) = ask(
            &service(None),
            "/metrics",
            Some("192.0.2.7:5000"),
            &[("authorization", bearer.as_str())],
        )
        .await;
        assert_eq!(status, 404);
    }

    #[test]
    fn a_short_or_unprintable_token_is_refused_without_being_shown() {
        for bad in [
            "short",
            "0123456789abcdef 0123456789abcdef",
            "0123456789abcdef0123456789abcde",
        ] {
            let error = MetricsToken::new(bad).unwrap_err().to_string();
            assert!(error.starts_with("METRICS_TOKEN must be"), "{error}");
            assert!(!error.contains(bad), "{error}");
        }
        let token = MetricsToken::new(&format!(" {TOKEN}\n")).unwrap();
        assert!(token.matches(TOKEN) && !token.matches("x"));
        assert_eq!(format!("{token:?}"), "MetricsToken(***)");
    }
}
