//! wix-ingest's instruments (README "Metrics": the names, units and attributes are the
//! contract). Recording is an in-memory update; gauges read snapshots refreshed in the
//! background (`wixprint_shared::telemetry`), never the database at collection time.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tokio_util::sync::CancellationToken;
use wixprint_shared::telemetry::{self, Telemetry, read, refreshed};

/// Webhook accept latency buckets, ms (body read → answer).
pub const ACCEPT_BUCKETS_MS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];

pub struct IngestMetrics {
    /// `wixprint.ingest.webhooks` {result}
    pub webhooks: Counter<u64>,
    /// `wixprint.ingest.webhook.duration` ms {result}
    pub accept: Histogram<f64>,
    /// `wixprint.ingest.orders.forwarded`
    pub forwarded: Counter<u64>,
    /// `wixprint.ingest.sync.runs` {result}
    pub sync_runs: Counter<u64>,
    /// `wixprint.ingest.sync.pages`
    pub sync_pages: Counter<u64>,
    /// `wixprint.ingest.sync.orders` {result}
    pub sync_orders: Counter<u64>,
    /// `wixprint.ingest.sync.rate_limited`
    pub sync_rate_limited: Counter<u64>,
}

static METRICS: LazyLock<IngestMetrics> = LazyLock::new(|| {
    let m = telemetry::meter();
    IngestMetrics {
        webhooks: m
            .u64_counter("wixprint.ingest.webhooks")
            .with_description("Webhooks answered, by result: applied, duplicate, stale, held, recorded, or the HTTP status of a refusal (400, 401, 408, 413, 503)")
            .with_unit("{webhook}")
            .build(),
        accept: m
            .f64_histogram("wixprint.ingest.webhook.duration")
            .with_description("Webhook accept latency: from the request to the answer (verify, commit)")
            .with_unit("ms")
            .with_boundaries(ACCEPT_BUCKETS_MS.to_vec())
            .build(),
        forwarded: m
            .u64_counter("wixprint.ingest.orders.forwarded")
            .with_description("Order versions wix-print accepted from the outbox")
            .with_unit("{order}")
            .build(),
        sync_runs: m
            .u64_counter("wixprint.ingest.sync.runs")
            .with_description("Order sync runs by result (the sync state after the run): ok, error, backing_off, breaker_open, waiting")
            .with_unit("{run}")
            .build(),
        sync_pages: m
            .u64_counter("wixprint.ingest.sync.pages")
            .with_description("Search result pages the order sync read from the Wix Orders API")
            .with_unit("{page}")
            .build(),
        sync_orders: m
            .u64_counter("wixprint.ingest.sync.orders")
            .with_description("Orders the sync found, by result: applied (a version the webhooks had missed), known (already stored), invalid (could not be mapped)")
            .with_unit("{order}")
            .build(),
        sync_rate_limited: m
            .u64_counter("wixprint.ingest.sync.rate_limited")
            .with_description("Answers HTTP 429 (rate limit) from the Wix Orders API")
            .with_unit("{answer}")
            .build(),
    }
});

/// The instruments (no-op until `Telemetry::start` turned metrics on).
pub fn get() -> &'static IngestMetrics {
    &METRICS
}

/// Counts one answered webhook and its latency.
pub fn webhook(result: &str, started: std::time::Instant) {
    let attrs = [KeyValue::new("result", result.to_owned())];
    let m = get();
    m.webhooks.add(1, &attrs);
    m.accept.record(started.elapsed().as_secs_f64() * 1000.0, &attrs);
}

#[derive(Default, Clone)]
struct Outbox {
    backlog: u64,
    oldest_ms: Option<i64>,
}

/// The observable gauges: outbox backlog and oldest age (the store's counts, refreshed),
/// the internet state (the monitor's watch, in memory).
pub fn register(
    t: &Telemetry,
    store: crate::store::Store,
    internet: tokio::sync::watch::Receiver<wixprint_shared::proto::events::Component>,
    shutdown: CancellationToken,
) {
    if !t.enabled() {
        return;
    }
    // Counters reported from the start (0), so "none yet" is a value, not a gap.
    let m = get();
    m.sync_pages.add(0, &[]);
    m.sync_rate_limited.add(0, &[]);
    for result in ["applied", "known", "invalid"] {
        m.sync_orders.add(0, &[KeyValue::new("result", result)]);
    }
    let outbox = refreshed(t, shutdown, move || {
        let store = store.clone();
        async move {
            let c = store.counts().await.ok()?;
            Some(Outbox { backlog: c.outbox_pending, oldest_ms: c.outbox_oldest_pending_ms })
        }
    });
    let m = telemetry::meter();
    let o = outbox.clone();
    m.u64_observable_gauge("wixprint.ingest.outbox.backlog")
        .with_description("Outbox rows not yet delivered to wix-print")
        .with_unit("{row}")
        .with_callback(move |obs| obs.observe(read(&o).backlog, &[]))
        .build();
    m.f64_observable_gauge("wixprint.ingest.outbox.oldest_age")
        .with_description("Age of the oldest undelivered outbox row (0 when none)")
        .with_unit("s")
        .with_callback(move |obs| {
            let age =
                read(&outbox).oldest_ms.map_or(0.0, |ms| (wixprint_shared::time::now_ms() - ms).max(0) as f64 / 1000.0);
            obs.observe(age, &[]);
        })
        .build();
    m.i64_observable_gauge("wixprint.ingest.internet.state")
        .with_description(
            "Internet state: 1 for the confirmed state (online, degraded, offline, unknown), 0 for the others",
        )
        .with_unit("{state}")
        .with_callback(move |obs| {
            let current = internet.borrow().state.clone();
            for state in ["online", "degraded", "offline", "unknown"] {
                obs.observe(i64::from(current == state), &[KeyValue::new("state", state)]);
            }
        })
        .build();
}
