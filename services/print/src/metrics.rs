//! wix-print's instruments (README "Metrics": the names, units and attributes are the
//! contract). Recording is an in-memory update on the dispatcher's path; gauges read
//! snapshots refreshed in the background (`wixprint_shared::telemetry`) or the printers'
//! monitors in memory, never the database at collection time.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tokio_util::sync::CancellationToken;
use wixprint_shared::proto::print::ReceiptType;
use wixprint_shared::telemetry::{self, Telemetry, read, refreshed};

use crate::job::JobState;
use crate::priority::Priority;

/// Ticket print latency buckets, ms (`sending` → confirmed by the printer).
pub const TICKET_BUCKETS_MS: &[f64] =
    &[10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0];
/// Order latency buckets, s (wix-ingest's receipt → the order's last ticket confirmed).
pub const ORDER_BUCKETS_S: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

pub struct PrintMetrics {
    /// `wixprint.print.tickets` {printer, receipt, reprint}
    pub tickets: Counter<u64>,
    /// `wixprint.print.ticket.duration` ms {printer}
    pub ticket_duration: Histogram<f64>,
    /// `wixprint.print.order.latency` s
    pub order_latency: Histogram<f64>,
    /// `wixprint.print.uncertain` {printer}
    pub uncertain: Counter<u64>,
    /// `wixprint.print.dead_letters` {printer, class}
    pub dead_letters: Counter<u64>,
    /// `wixprint.print.printer.transitions` {printer, from, to}
    pub transitions: Counter<u64>,
    /// `wixprint.print.recovery.sessions` {printer, result}
    pub recovery_sessions: Counter<u64>,
    /// `wixprint.print.recovery.drain_rate` tickets/s {printer}
    pub drain_rate: Histogram<f64>,
}

/// Recovery drain rate buckets, tickets per second (a TM-m30III prints a few a second).
pub const DRAIN_BUCKETS: &[f64] = &[0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

static METRICS: LazyLock<PrintMetrics> = LazyLock::new(|| {
    let m = telemetry::meter();
    PrintMetrics {
        tickets: m
            .u64_counter("wixprint.print.tickets")
            .with_description("Tickets the printer confirmed, by printer, receipt type (kitchen, driver, customer) and reprint (true: KOPIE after a doubt)")
            .with_unit("{ticket}")
            .build(),
        ticket_duration: m
            .f64_histogram("wixprint.print.ticket.duration")
            .with_description("Ticket print latency: from `sending` committed to the printer's confirmation")
            .with_unit("ms")
            .with_boundaries(TICKET_BUCKETS_MS.to_vec())
            .build(),
        order_latency: m
            .f64_histogram("wixprint.print.order.latency")
            .with_description("Order latency: from wix-ingest's receipt of the version (SubmitOrderRequest.received_at) to the order's last open ticket confirmed")
            .with_unit("s")
            .with_boundaries(ORDER_BUCKETS_S.to_vec())
            .build(),
        uncertain: m
            .u64_counter("wixprint.print.uncertain")
            .with_description("Tickets whose outcome became unknown after bytes went out (reprinted with the KOPIE banner)")
            .with_unit("{ticket}")
            .build(),
        dead_letters: m
            .u64_counter("wixprint.print.dead_letters")
            .with_description("Jobs dead-lettered, by printer and class (transient: attempts used up; permanent: can never print)")
            .with_unit("{job}")
            .build(),
        transitions: m
            .u64_counter("wixprint.print.printer.transitions")
            .with_description("Confirmed printer state changes, by printer, from and to state")
            .with_unit("{change}")
            .build(),
        recovery_sessions: m
            .u64_counter("wixprint.print.recovery.sessions")
            .with_description("Recovery sessions (a backlog drained after the printer returned), by printer and result: started, completed")
            .with_unit("{session}")
            .build(),
        drain_rate: m
            .f64_histogram("wixprint.print.recovery.drain_rate")
            .with_description("A completed recovery session's drain rate: tickets per second from its first printed ticket")
            .with_unit("{ticket}/s")
            .with_boundaries(DRAIN_BUCKETS.to_vec())
            .build(),
    }
});

/// When the last new order version arrived (Unix ms; 0 = none since the start).
static LAST_ORDER_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Notes a new order version (`wixprint.print.order.last_received`).
pub fn order_received() {
    LAST_ORDER_MS.store(wixprint_shared::time::now_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// The instruments (no-op until `Telemetry::start` turned metrics on).
pub fn get() -> &'static PrintMetrics {
    &METRICS
}

/// `kitchen`, `driver`, `customer`.
pub fn receipt_name(r: ReceiptType) -> String {
    r.as_str_name().trim_start_matches("RECEIPT_TYPE_").to_ascii_lowercase()
}

/// The observable gauges: queue depth and oldest waiting age (the store's queue counts,
/// refreshed), printer state (the monitors, in memory).
pub fn register(
    t: &Telemetry,
    store: crate::store::Store,
    printers: crate::printers::Printers,
    shutdown: CancellationToken,
) {
    if !t.enabled() {
        return;
    }
    // Counters every printer reports from the start (0), so "none yet" is a value, not a gap.
    for p in printers.iter() {
        let printer = KeyValue::new("printer", p.name.clone());
        get().uncertain.add(0, std::slice::from_ref(&printer));
        for class in ["transient", "permanent"] {
            get().dead_letters.add(0, &[printer.clone(), KeyValue::new("class", class)]);
        }
        for result in ["started", "completed"] {
            get().recovery_sessions.add(0, &[printer.clone(), KeyValue::new("result", result)]);
        }
    }
    let depth = refreshed(t, shutdown, move || {
        let store = store.clone();
        async move { store.queue_depth().await.ok() }
    });
    let m = telemetry::meter();
    let d = depth.clone();
    let names: Vec<String> = printers.iter().map(|p| p.name.clone()).collect();
    m.u64_observable_gauge("wixprint.print.queue.depth")
        .with_description("Open and dead jobs by printer, state (queued, sending, awaiting_confirm, uncertain, failed, held, dead) and priority")
        .with_unit("{job}")
        .with_callback(move |o| {
            let (counts, _) = read(&d);
            // Every printer reports at least a queued 0, so an empty queue is a value, not a gap.
            for name in &names {
                if !counts.iter().any(|(p, s, _, _)| p == name && *s == JobState::Queued) {
                    o.observe(
                        0,
                        &[
                            KeyValue::new("printer", name.clone()),
                            KeyValue::new("state", JobState::Queued.as_str()),
                            KeyValue::new("priority", Priority::Normal.name()),
                        ],
                    );
                }
            }
            for (printer, state, priority, n) in counts {
                o.observe(
                    n,
                    &[
                        KeyValue::new("printer", printer),
                        KeyValue::new("state", state.as_str()),
                        KeyValue::new("priority", priority.name()),
                    ],
                );
            }
        })
        .build();
    m.f64_observable_gauge("wixprint.print.queue.oldest_age")
        .with_description("Age of the oldest waiting ticket (queued, uncertain, failed); 0 when none")
        .with_unit("s")
        .with_callback(move |o| {
            let (_, oldest) = read(&depth);
            let age = oldest.map_or(0.0, |ms| (crate::store::queue_now_ms() - ms).max(0) as f64 / 1000.0);
            o.observe(age, &[]);
        })
        .build();
    m.f64_observable_gauge("wixprint.print.order.last_received")
        .with_description(
            "When the last new order version arrived from wix-ingest (Unix time); not reported before the first",
        )
        .with_unit("s")
        .with_callback(|o| {
            let ms = LAST_ORDER_MS.load(std::sync::atomic::Ordering::Relaxed);
            if ms > 0 {
                o.observe(ms as f64 / 1000.0, &[]);
            }
        })
        .build();
    m.i64_observable_gauge("wixprint.print.printer.state")
        .with_description("Printer state as the monitor confirmed it: 1 for the current state, 0 for the others")
        .with_unit("{state}")
        .with_callback(move |o| {
            for p in printers.iter() {
                let current = p.monitor.get().state;
                for state in crate::printer::State::ALL {
                    o.observe(
                        i64::from(current == state),
                        &[KeyValue::new("printer", p.name.clone()), KeyValue::new("state", state.as_str())],
                    );
                }
            }
        })
        .build();
}
