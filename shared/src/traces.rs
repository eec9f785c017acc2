//! Traces (issue 13): one order is one trace across both processes.
//!
//! `tracing` spans with the target [`SPANS`] are the trace: the OpenTelemetry layer
//! (`tracing-opentelemetry`, added by `logging::init` only when traces are on) turns them into
//! OpenTelemetry spans, and they are the only ones it sees (no event, no library span); the
//! stderr log never shows them, so the log lines stay as they were. With traces off the
//! callsites are disabled: a span costs one interest check, its fields are not evaluated.
//!
//! The context crosses the two durable hops as a W3C `traceparent` string: wix-ingest stores
//! the webhook span's with the outbox row, the forwarder's `SubmitOrder` call sends it in the
//! gRPC metadata (`traceparent`, `tracestate`), and wix-print stores its `SubmitOrder` span's
//! with each job it creates, so the dispatcher's `print.ticket` span joins the same trace
//! however long the ticket waited. What a peer sends is parsed strictly ([`parse`]): anything
//! that is not a version-00 traceparent of exactly 55 characters with non-zero ids is ignored
//! (the span starts a new trace), never an error; only our own spans' contexts are stored.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span that belongs to the trace (`tracing::info_span!(target: SPANS, ..)`).
pub const SPANS: &str = "wixprint::span";

/// The length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
pub const TRACEPARENT_LEN: usize = 55;

/// The longest `tracestate` passed on (the W3C limit: 32 members in 512 characters); a longer
/// one is dropped, the traceparent still counts.
const TRACESTATE_MAX: usize = 512;

/// Whether a callsite is one of the trace's spans.
pub fn is_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == SPANS
}

/// The `traceparent` of `span` (to store with a row), `None` when it is not traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !crate::telemetry::traces_on() {
        return None;
    }
    span_traceparent(span)
}

fn span_traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format_traceparent(&sc))
}

fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// Parses a version-00 `traceparent`, strictly: exactly [`TRACEPARENT_LEN`] characters,
/// lowercase hex, trace and span id not all zeros. Anything else is `None`.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let b = traceparent.as_bytes();
    if b.len() != TRACEPARENT_LEN || !traceparent.starts_with("00-") || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    let (trace, span, flags) = (&traceparent[3..35], &traceparent[36..52], &traceparent[53..]);
    if !hex(trace) || !hex(span) || !hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED, true, TraceState::NONE);
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the stored `traceparent`; nothing when it is missing or invalid
/// (the span starts its own trace) or the span is not traced.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(sc) = traceparent.and_then(parse) {
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

/// Makes `span` a child of the remote parent a request carried ([`extract`]).
pub fn set_remote_parent(span: &tracing::Span, parent: Option<Context>) {
    if let Some(cx) = parent
        && !span.is_disabled()
    {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s context into outgoing gRPC metadata (`traceparent`, `tracestate`) through
/// the global propagator (W3C trace context).
pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
}

/// The remote parent an incoming request carries: `None` when traces are off or its
/// `traceparent` is missing or does not [`parse`]; a `tracestate` over 512 bytes is dropped.
pub fn extract(metadata: &tonic::metadata::MetadataMap) -> Option<Context> {
    if !crate::telemetry::traces_on() {
        return None;
    }
    extract_checked(metadata)
}

fn extract_checked(metadata: &tonic::metadata::MetadataMap) -> Option<Context> {
    let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok());
    let traceparent = get("traceparent").filter(|t| parse(t).is_some())?;
    let tracestate = get("tracestate").filter(|s| s.len() <= TRACESTATE_MAX);
    let carrier = Checked { traceparent, tracestate };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// What [`extract`] lets the propagator read: the checked headers, nothing else.
struct Checked<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Checked<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = vec!["traceparent"];
        if self.tracestate.is_some() {
            keys.push("tracestate");
        }
        keys
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_parses_only_when_it_is_exactly_w3c_version_00() {
        let sc = parse(VALID).expect("valid");
        assert_eq!(format!("{}", sc.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{}", sc.span_id()), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(format_traceparent(&sc), VALID, "stored as it came");
        assert!(!parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().is_sampled());
        let bad = [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // another version
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // invalid version
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // extra part
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // dashes moved
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", // not hex
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // a sign from_str_radix takes
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ];
        for b in bad {
            assert!(parse(b).is_none(), "{b:?} parsed");
        }
        assert!(parse(&format!("{VALID}{}", "0".repeat(10_000))).is_none());
    }

    /// A subscriber with the layer `logging::init` adds, over a tracer provider without an
    /// exporter, and the global propagator.
    fn traced<R>(f: impl FnOnce() -> R) -> R {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{Layer, filter};
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(filter::filter_fn(is_trace_span));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
    }

    #[test]
    fn a_stored_traceparent_makes_the_span_its_child_and_garbage_starts_a_new_trace() {
        traced(|| {
            let child = tracing::info_span!(target: SPANS, "child");
            set_parent(&child, Some(VALID));
            let tp = span_traceparent(&child).expect("traced");
            assert_eq!(tp.len(), TRACEPARENT_LEN);
            assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
            assert!(!tp.contains("00f067aa0ba902b7"), "its own span id: {tp}");
            assert!(parse(&tp).is_some());

            for garbage in ["00-zz", "", &"x".repeat(10_000)] {
                let root = tracing::info_span!(target: SPANS, "root");
                set_parent(&root, Some(garbage));
                let tp = span_traceparent(&root).expect("traced");
                assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736") && parse(&tp).is_some(), "{tp}");
            }
            // Not one of the trace's spans: no context.
            assert!(span_traceparent(&tracing::info_span!("other")).is_none());
        });
    }

    #[test]
    fn grpc_metadata_carries_the_context_and_hostile_metadata_is_ignored() {
        use tonic::metadata::MetadataMap;
        traced(|| {
            let span = tracing::info_span!(target: SPANS, "client");
            set_parent(&span, Some(VALID));
            let mut md = MetadataMap::new();
            inject(&span, &mut md);
            let sent = md.get("traceparent").and_then(|v| v.to_str().ok()).expect("injected").to_owned();
            assert_eq!(Some(sent.clone()), span_traceparent(&span));
            md.insert("tracestate", "vendor=1".parse().unwrap());
            // `extract` answers only while traces are on (a process-wide switch, not set here).
            assert!(extract(&md).is_none());
            let cx = extract_checked(&md).expect("what we sent");
            assert_eq!(cx.span().span_context().trace_state().get("vendor"), Some("1"));
            let server = tracing::info_span!(target: SPANS, "server");
            set_remote_parent(&server, Some(cx));
            let tp = span_traceparent(&server).unwrap();
            assert_eq!(&tp[..36], &sent[..36], "same trace");

            let mut long_state = md.clone();
            long_state.insert("tracestate", format!("a={}", "b".repeat(600)).parse().unwrap());
            let cx = extract_checked(&long_state).expect("the traceparent still counts");
            assert_eq!(cx.span().span_context().trace_state().header(), "");

            let mut hostile = MetadataMap::new();
            hostile.insert("traceparent", format!("{VALID}; drop").parse().unwrap());
            assert!(extract_checked(&hostile).is_none());
            hostile.insert("traceparent", "x".repeat(8000).parse().unwrap());
            assert!(extract_checked(&hostile).is_none());
            hostile.insert_bin("traceparent-bin", tonic::metadata::MetadataValue::from_bytes(b"\xff\x00"));
            hostile.insert("traceparent", tonic::metadata::MetadataValue::try_from(&b"00-\xff"[..]).unwrap());
            assert!(extract_checked(&hostile).is_none(), "not even UTF-8");
            assert!(extract_checked(&MetadataMap::new()).is_none());
        });
    }
}
