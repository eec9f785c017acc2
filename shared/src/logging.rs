//! `tracing` setup: human-readable lines on stderr (journald adds its own timestamps),
//! filtered by `RUST_LOG` (default `info`); with traces on, the OpenTelemetry layer too.
//!
//! The two never write the same thing twice: the trace's spans (target
//! [`crate::traces::SPANS`]) go to OpenTelemetry only and never appear in the log lines; the
//! OpenTelemetry layer sees nothing else (no event, no library's span).

use tracing_subscriber::filter::{self, EnvFilter, FilterExt};
use tracing_subscriber::prelude::*;

/// Installs the global subscriber; `tracer` (from `telemetry::start_traces`) adds the
/// OpenTelemetry layer. Without it there is no such layer at all, and the trace's spans are
/// disabled at their callsites.
pub fn init(tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_filter(filter.and(filter::filter_fn(|meta| !crate::traces::is_trace_span(meta))));
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter::filter_fn(crate::traces::is_trace_span))
    });
    let _ = tracing_subscriber::registry().with(log).with(otel).try_init();
}
