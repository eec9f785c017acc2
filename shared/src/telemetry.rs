//! Metrics and traces (issue 13): one OpenTelemetry `MeterProvider` per process, set up once
//! in `run()`, and one `TracerProvider`, set up by `cli::main` before logging starts.
//!
//! - OTLP export (gRPC; HTTP/protobuf with `OTEL_EXPORTER_OTLP_PROTOCOL`, see `crate::otlp_http`),
//!   configured only by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`; for traces also
//!   `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`); off when no endpoint is set.
//! - An opt-in Prometheus text endpoint (`GET /metrics` on `INGEST_METRICS_ADDR` /
//!   `PRINT_METRICS_ADDR`) over the same instruments, with the names the OpenTelemetry
//!   Collector's Prometheus exporter would give them (dots → underscores, unit suffixes,
//!   counters `_total`).
//!
//! Invariant: metrics never slow the print path. Recording is an in-memory atomic update; the
//! periodic reader exports from its own thread with a timeout; observable gauges read a
//! snapshot that a background task refreshes (at most one cheap query every
//! [`REFRESH`]), never the database; a collector that is down costs one log line, not one per
//! batch (the failed exports are counted in `wixprint.telemetry.export.failures`).
//!
//! Traces (see `crate::traces` for the spans and the context they carry): a finished span
//! goes into the batch span processor's bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048; full =
//! the span is dropped) and is exported from the processor's own thread, never from a webhook
//! or a ticket; a failing collector is logged once per outage, like the metrics.
//!
//! With neither exporter configured the global provider stays the no-op one: instruments cost
//! nothing and no refresh task runs; without an endpoint there is no tracer and no
//! OpenTelemetry layer in the subscriber.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the snapshots behind observable gauges are refreshed.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Open connections of the Prometheus endpoint at once; more wait in the accept queue.
const METRICS_MAX_CONNECTIONS: usize = 8;
/// A scrape connection (headers, answer, keep-alive) lives at most this long.
const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The request head must arrive within this.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// OTLP export timeout unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's metrics pipeline. Keep it until the end of `run()`, then [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkMeterProvider>,
    /// Where the Prometheus endpoint listens, when on.
    pub metrics_addr: Option<SocketAddr>,
}

/// Builds the OTLP exporter of `$builder` (a metric or span exporter builder: the same
/// methods, no common trait) for `$signal` (`"METRICS"` / `"TRACES"`) with the protocol and
/// timeout the environment names; `?` on a protocol that is not spoken.
macro_rules! otlp_exporter {
    ($builder:expr, $signal:literal) => {{
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let timeout = export_timeout($signal);
        match protocol($signal).map_err(anyhow::Error::msg)? {
            Protocol::Grpc => $builder.with_tonic().with_timeout(timeout).build(),
            Protocol::HttpProtobuf => $builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(timeout)
                .with_http_client(crate::otlp_http::Client::new(timeout))
                .build(),
        }
    }};
}

impl Telemetry {
    /// Sets up the global meter provider for `service` ("wix-ingest" / "wix-print"): OTLP
    /// when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) is set, the Prometheus
    /// endpoint when `metrics_addr` is. A bind error of the endpoint is a start-up error; a
    /// collector that is not there is not.
    pub async fn start(
        service: &'static str,
        metrics_addr: Option<SocketAddr>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Telemetry> {
        let otlp = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
        if !otlp && metrics_addr.is_none() {
            tracing::info!("metrics are off (no OTEL_EXPORTER_OTLP_ENDPOINT, no metrics address)");
            return Ok(Telemetry { provider: None, metrics_addr: None });
        }
        let mut builder = SdkMeterProvider::builder().with_resource(resource(service));
        if otlp {
            let exporter = otlp_exporter!(opentelemetry_otlp::MetricExporter::builder(), "METRICS");
            let exporter = exporter.context("building the OTLP metrics exporter (OTEL_EXPORTER_OTLP_*)")?;
            let exporter =
                LoggedOnce { inner: exporter, failing: AtomicBool::new(false), failures: &METRIC_EXPORT_FAILURES };
            // Its own thread; the interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        }
        let mut listener = None;
        if let Some(addr) = metrics_addr {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .context("building the Prometheus exporter")?;
            builder = builder.with_reader(exporter);
            let l = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics endpoint on {addr}"))?;
            listener = Some((l, registry));
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        meter()
            .u64_observable_counter("wixprint.telemetry.export.failures")
            .with_description("OTLP exports that failed, by signal (the batch is dropped; logged once per outage)")
            .with_unit("{export}")
            .with_callback(move |o| {
                o.observe(METRIC_EXPORT_FAILURES.load(Ordering::Relaxed), &[KeyValue::new("signal", "metrics")]);
                if TRACER_PROVIDER.get().is_some() {
                    o.observe(TRACE_EXPORT_FAILURES.load(Ordering::Relaxed), &[KeyValue::new("signal", "traces")]);
                }
            })
            .build();
        let mut bound = None;
        if let Some((l, registry)) = listener {
            bound = Some(l.local_addr()?);
            tokio::spawn(serve_metrics(l, registry, shutdown));
        }
        tracing::info!(otlp, prometheus = ?bound, "metrics are on");
        Ok(Telemetry { provider: Some(provider), metrics_addr: bound })
    }

    /// Whether any exporter is on (refresh tasks are only worth running then).
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporters (metrics and spans at once), waiting at most about a
    /// second and a half (a collector that is down must not hold the exit).
    pub async fn shutdown(self) {
        let metrics = self.provider.map(|p| move |t| p.shutdown_with_timeout(t));
        let traces = TRACER_PROVIDER.get().cloned().map(|p| move |t| p.shutdown_with_timeout(t));
        tokio::join!(stop_bounded("metrics provider", metrics), stop_bounded("tracer provider", traces));
    }
}

/// Runs a provider's blocking `shutdown_with_timeout` (1 s) off the runtime, waiting 1.5 s at
/// most; a failure is only worth a debug line at exit.
async fn stop_bounded<F>(what: &str, stop: Option<F>)
where
    F: FnOnce(Duration) -> OTelSdkResult + Send + 'static,
{
    let Some(stop) = stop else { return };
    let task = tokio::task::spawn_blocking(move || stop(Duration::from_secs(1)));
    match tokio::time::timeout(Duration::from_millis(1500), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "{what} shutdown"),
        _ => tracing::debug!("{what} shutdown did not finish in time"),
    }
}

/// Exports that failed (the batch dropped), for `wixprint.telemetry.export.failures`.
static METRIC_EXPORT_FAILURES: AtomicU64 = AtomicU64::new(0);
static TRACE_EXPORT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The process's tracer provider, when traces are on (set once by [`start_traces`]).
static TRACER_PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How OTLP travels: gRPC (our default, port 4317) or HTTP/protobuf (port 4318), as
/// `OTEL_EXPORTER_OTLP_{METRICS,TRACES}_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL` say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The protocol for `signal` (`METRICS` or `TRACES`); an unknown or unsupported value is an
/// error naming the variable.
pub fn protocol(signal: &str) -> Result<Protocol, String> {
    let specific = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let (key, value) = [specific.as_str(), "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
        .unwrap_or(("", "grpc".to_owned()));
    match value.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "http/json" => Err(format!("{key}: http/json is not supported; use grpc or http/protobuf")),
        other => Err(format!("{key}: {other:?} is not one of grpc, http/protobuf")),
    }
}

/// `OTEL_EXPORTER_OTLP_{signal}_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (ms), else
/// [`DEFAULT_EXPORT_TIMEOUT`] (shorter than the SDK's 10 s: a slow collector holds nothing).
fn export_timeout(signal: &str) -> Duration {
    [format!("OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"), "OTEL_EXPORTER_OTLP_TIMEOUT".to_owned()]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis)
}

/// Checks the `OTEL_*` variables that would stop a start (the protocols, the sampler) when
/// an OTLP endpoint is set; `--check-config` and `cli::main` ask it before anything starts.
pub fn check_env() -> Result<(), String> {
    let set = |k: &str| std::env::var(k).is_ok_and(|s| !s.trim().is_empty());
    if set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        protocol("METRICS")?;
    }
    if traces_config()?.is_some() {
        protocol("TRACES")?;
    }
    Ok(())
}

/// Whether traces are wanted (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT` set and
/// `OTEL_TRACES_EXPORTER` not `none`), and then with which sampler; an error names the
/// variable that is wrong. `--check-config` asks this too.
pub fn traces_config() -> Result<Option<crate::traces::Sampler>, String> {
    let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    if !endpoint || disabled {
        return Ok(None);
    }
    crate::traces::Sampler::from_env().map(Some)
}

/// Sets up traces for `service` when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `..._TRACES_ENDPOINT`) is set and `OTEL_TRACES_EXPORTER` is not `none`: the OTLP span
/// exporter behind a batch span processor (its own thread, bounded queue), the sampler read
/// from `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`; a
/// value the SDK would not know is an error), and the W3C trace-context propagator. Returns the tracer for the
/// logging layer (`logging::init`), `None` when traces are off. Called before logging starts
/// (so it logs nothing itself) and inside the runtime (the exporter's channel needs it).
pub fn start_traces(service: &str) -> anyhow::Result<Option<SdkTracer>> {
    use opentelemetry::trace::TracerProvider as _;
    let Some(sampler) = traces_config().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let exporter = otlp_exporter!(opentelemetry_otlp::SpanExporter::builder(), "TRACES");
    let exporter = exporter.context("building the OTLP span exporter (OTEL_EXPORTER_OTLP_*)")?;
    let exporter = LoggedOnce { inner: exporter, failing: AtomicBool::new(false), failures: &TRACE_EXPORT_FAILURES };
    // The sampling decision is taken by `traces::hop` before a span is built (an unsampled
    // hop builds none); whatever reaches the SDK was chosen, so its sampler keeps everything.
    // Span limits come from the environment, as the SDK reads them.
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("wixprint");
    if TRACER_PROVIDER.set(provider).is_err() {
        anyhow::bail!("traces were started twice");
    }
    crate::traces::install(sampler);
    Ok(Some(tracer))
}

/// Reads a metrics address key: unset = off; a bare port = that port on 127.0.0.1 (loopback
/// by default); `host:port` as given, loopback only.
pub fn metrics_addr(src: &crate::config::Source, key: &str) -> Result<Option<SocketAddr>, crate::config::ConfigError> {
    let Some(v) = src.get(key) else { return Ok(None) };
    if let Ok(port) = v.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    let addr = v
        .parse::<SocketAddr>()
        .map_err(|e| src.invalid(key, format!("{v:?} is neither a port nor host:port ({e})")))?;
    // The endpoint has no authentication: it never leaves loopback (scrape it through a local
    // collector, or export OTLP to a remote one).
    if !addr.ip().is_loopback() {
        return Err(src.invalid(
            key,
            format!(
                "{addr} is not a loopback address; the metrics endpoint is unauthenticated and serves loopback only"
            ),
        ));
    }
    Ok(Some(addr))
}

/// The meter every instrument of this process comes from.
pub fn meter() -> Meter {
    opentelemetry::global::meter("wixprint")
}

/// A value refreshed in the background every [`REFRESH`] and read by gauge callbacks.
pub type Snapshot<T> = Arc<Mutex<T>>;

/// Reads a snapshot without caring about a poisoned lock.
pub fn read<T: Clone>(s: &Snapshot<T>) -> T {
    s.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Spawns a task that stores `fetch()`'s answer into the returned snapshot every [`REFRESH`]
/// (first at once) until `shutdown`. Not spawned (the default stays) when metrics are off.
pub fn refreshed<T, F, Fut>(telemetry: &Telemetry, shutdown: CancellationToken, fetch: F) -> Snapshot<T>
where
    T: Default + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<T>> + Send,
{
    let snapshot: Snapshot<T> = Arc::new(Mutex::new(T::default()));
    if telemetry.enabled() {
        let s = snapshot.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(v) = fetch().await {
                    *s.lock().unwrap_or_else(|e| e.into_inner()) = v;
                }
            }
        });
    }
    snapshot
}

/// Instruments both services have: the breakers (`Healing.breakers`), the health checks
/// (the `Health` handle's checks, as `GetHealth` shows them), the bus peer (`peer` names the
/// other service) and the alert counters; all read in memory at each collection.
pub fn register_common(
    telemetry: &Telemetry,
    breakers: Arc<crate::breaker::Breakers>,
    health: crate::health::Health,
    peer: &'static str,
    bus: &crate::bus::Bus,
) {
    if !telemetry.enabled() {
        return;
    }
    crate::alerts::delivery::register_metrics();
    let m = meter();
    let peer_status = bus.watch_peer();
    m.i64_observable_gauge("wixprint.bus.peer.state")
        .with_description("The bus peer (the other service): 1 for its current state (live, unknown), 0 for the other")
        .with_unit("{state}")
        .with_callback(move |o| {
            let current = peer_status.borrow().state.clone();
            for state in [crate::bus::PEER_LIVE, crate::bus::PEER_UNKNOWN] {
                o.observe(i64::from(current == state), &[KeyValue::new("peer", peer), KeyValue::new("state", state)]);
            }
        })
        .build();
    m.i64_observable_gauge("wixprint.breaker.state")
        .with_description("Circuit breaker state: 1 for the breaker's current state, 0 for the others")
        .with_unit("{state}")
        .with_callback(move |o| {
            for b in breakers.snapshots() {
                for state in ["closed", "open", "half_open"] {
                    let v = i64::from(b.state == state);
                    o.observe(v, &[KeyValue::new("breaker", b.name.clone()), KeyValue::new("state", state)]);
                }
            }
        })
        .build();
    let c = health.clone();
    m.f64_observable_gauge("wixprint.health.check.value")
        .with_description("The health monitor's last reading per check (GetHealth), in the check's unit")
        .with_callback(move |o| {
            for check in c.checks() {
                o.observe(
                    check.value,
                    &[KeyValue::new("check", check.name.clone()), KeyValue::new("unit", check.unit)],
                );
            }
        })
        .build();
    m.i64_observable_gauge("wixprint.health.check.state")
        .with_description(
            "Health check state: 1 for the check's current state (ok, warning, critical, emergency, unknown)",
        )
        .with_unit("{state}")
        .with_callback(move |o| {
            for check in health.checks() {
                for state in ["ok", "warning", "critical", "emergency", "unknown"] {
                    let v = i64::from(check.state == state);
                    o.observe(v, &[KeyValue::new("check", check.name.clone()), KeyValue::new("state", state)]);
                }
            }
        })
        .build();
}

/// The resource: defaults for `service.name`, `service.version`, `service.instance.id` and
/// `host.name`, then `OTEL_RESOURCE_ATTRIBUTES`, then `OTEL_SERVICE_NAME` (each overriding).
fn resource(service: &str) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let instance = format!("{:032x}", rand::random::<u128>());
    let mut b = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.to_owned()),
            KeyValue::new("service.version", crate::VERSION),
            KeyValue::new("service.instance.id", instance),
            KeyValue::new("host.name", host),
        ])
        .with_detectors(&[
            Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector),
            Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()),
        ]);
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        b = b.with_service_name(name);
    }
    b.build()
}

/// Passes exports on; the first failure of an outage is logged (and the recovery), every
/// failure is counted, and the reader (or span processor) never sees an error (so it logs
/// nothing per batch).
#[derive(Debug)]
struct LoggedOnce<E> {
    inner: E,
    failing: AtomicBool,
    failures: &'static AtomicU64,
}

impl<E> LoggedOnce<E> {
    /// Counts a failed export and logs the first of an outage (and the recovery) once.
    fn note(&self, result: OTelSdkResult, signal: &str, what: &str) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("{signal} export works again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "{signal} export failed; {what} are dropped until the collector answers (logged once)");
                }
            }
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for LoggedOnce<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.note(self.inner.export(metrics).await, "metrics", "batches");
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: SpanExporter> SpanExporter for LoggedOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.note(self.inner.export(batch).await, "trace", "spans");
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The Prometheus endpoint: `GET /metrics` in the text format, anything else 404. At most
/// [`METRICS_MAX_CONNECTIONS`] connections, each with a header and a total timeout.
async fn serve_metrics(listener: TcpListener, registry: prometheus::Registry, shutdown: CancellationToken) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move {
                    let resp = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                        use prometheus::Encoder;
                        let encoder = prometheus::TextEncoder::new();
                        let mut body = Vec::new();
                        match encoder.encode(&registry.gather(), &mut body) {
                            Ok(()) => hyper::Response::builder()
                                .header("content-type", encoder.format_type())
                                .body(Full::new(Bytes::from(body))),
                            Err(e) => {
                                hyper::Response::builder().status(500).body(Full::new(Bytes::from(e.to_string())))
                            }
                        }
                    } else {
                        hyper::Response::builder().status(404).body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, hyper::http::Error>(resp.expect("static response parts"))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, conn).await;
        });
    }
}
