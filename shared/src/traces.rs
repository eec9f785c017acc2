//! Traces (issue 13): one order is one trace across both processes.
//!
//! `tracing` spans with the target [`SPANS`] are the trace: the OpenTelemetry layer
//! (`tracing-opentelemetry`, added by `logging::init` only when traces are on) turns them into
//! OpenTelemetry spans, and they are the only ones it sees (no event, no library span); the
//! stderr log never shows them, so the log lines stay as they were.
//!
//! Each hop of an order's trace (the webhook, the outbox's forward, `SubmitOrder`, a ticket)
//! starts with [`hop`], which takes the sampling decision **before** any span exists: the
//! configured [`Sampler`] (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, the SDK's names and
//! meaning) looks at the parent the hop continues. A hop that is not sampled builds no span at
//! all (no `tracing` span, no OpenTelemetry span builder, no attributes) and only passes the
//! context on with the "sampled" flag off, so the next hop, in this process or the other, comes
//! to the same decision; a sampled hop builds its span, and its children ([`Hop::child`]) are
//! built only under a built span. The SDK's own sampler is `always_on`: whatever reaches it was
//! already chosen. With traces off nothing is built and nothing is passed on.
//!
//! The context crosses the two durable hops as a W3C `traceparent` string: wix-ingest stores
//! the webhook hop's with the outbox row, the forwarder's `SubmitOrder` call sends it in the
//! gRPC metadata (`traceparent`, `tracestate`), and wix-print stores its `SubmitOrder` hop's
//! with each job it creates, so the dispatcher's `print.ticket` span joins the same trace
//! however long the ticket waited. What a peer sends is parsed strictly ([`parse`]): anything
//! that is not a version-00 traceparent of exactly 55 characters with non-zero ids is ignored
//! (the hop starts a new trace), never an error; only our own hops' contexts are stored.

use std::sync::OnceLock;

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

/// The sampler every hop consults, set once by `telemetry::start_traces` (unset: traces off).
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Installs the process's sampler (traces on). A second call changes nothing.
pub fn install(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
}

/// The installed sampler; `None` while traces are off.
pub fn sampler() -> Option<Sampler> {
    SAMPLER.get().copied()
}

/// Which hops are traced: `OTEL_TRACES_SAMPLER` with the SDK's names and meaning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// `parentbased_*`: a hop with a parent follows the parent's "sampled" flag.
    parent_based: bool,
    /// The decision for a hop without a parent (or for every hop when not parent-based).
    rule: Rule,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    On,
    Off,
    /// `traceidratio`: this share of trace ids, decided on the trace id as the SDK does (the
    /// same trace id, the same answer, in both processes).
    Ratio(f64),
}

impl Sampler {
    /// The default, `parentbased_always_on`.
    pub const DEFAULT: Sampler = Sampler { parent_based: true, rule: Rule::On };

    /// Reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` from the environment.
    pub fn from_env() -> Result<Sampler, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Sampler::parse(var("OTEL_TRACES_SAMPLER").as_deref(), var("OTEL_TRACES_SAMPLER_ARG").as_deref())
    }

    /// `name` as `OTEL_TRACES_SAMPLER` spells it (unset: the default), `arg` the ratio for the
    /// `*traceidratio` ones (unset: 1.0). Anything else is an error naming the variable.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!("OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a ratio from 0 to 1")),
            }
        };
        let (parent_based, rule) = match name.map(str::trim).unwrap_or("parentbased_always_on") {
            "always_on" => (false, Rule::On),
            "always_off" => (false, Rule::Off),
            "traceidratio" => (false, Rule::Ratio(ratio()?)),
            "parentbased_always_on" => (true, Rule::On),
            "parentbased_always_off" => (true, Rule::Off),
            "parentbased_traceidratio" => (true, Rule::Ratio(ratio()?)),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER: {other:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ));
            }
        };
        Ok(Sampler { parent_based, rule })
    }

    /// Whether a hop continuing `parent` (none: a new trace) is traced.
    pub fn keeps(&self, parent: Option<&SpanContext>) -> bool {
        match (parent, self.rule) {
            (Some(p), _) if self.parent_based => p.is_sampled(),
            (_, Rule::On) => true,
            (_, Rule::Off) => false,
            (Some(p), Rule::Ratio(r)) => ratio_keeps(p.trace_id(), r),
            (None, Rule::Ratio(r)) => rand::random::<f64>() < r,
        }
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = if self.parent_based { "parentbased_" } else { "" };
        match self.rule {
            Rule::On => write!(f, "{prefix}always_on"),
            Rule::Off => write!(f, "{prefix}always_off"),
            Rule::Ratio(r) => write!(f, "{prefix}traceidratio {r}"),
        }
    }
}

/// The SDK's `TraceIdRatioBased` test: the trace id's low 63 bits below `ratio` × 2^63.
fn ratio_keeps(trace_id: TraceId, ratio: f64) -> bool {
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes(bytes[8..].try_into().unwrap_or([0; 8]));
    (low >> 1) < (ratio.max(0.0) * (1u64 << 63) as f64) as u64
}

/// One hop of an order's trace: its span when the sampler kept it, else the context it passes
/// on (the parent's, or a new trace's, with "sampled" off).
#[derive(Debug)]
pub struct Hop {
    span: tracing::Span,
    passed: Option<SpanContext>,
}

/// Starts a hop continuing `parent` (a stored traceparent ([`parse`]) or a request's
/// ([`extract`])); `make` builds its span and is called only when the hop is sampled.
pub fn hop(parent: Option<SpanContext>, make: impl FnOnce() -> tracing::Span) -> Hop {
    match SAMPLER.get() {
        Some(sampler) => hop_with(sampler, parent, make),
        None => Hop { span: tracing::Span::none(), passed: None },
    }
}

fn hop_with(sampler: &Sampler, parent: Option<SpanContext>, make: impl FnOnce() -> tracing::Span) -> Hop {
    if sampler.keeps(parent.as_ref()) {
        let span = make();
        if let Some(p) = parent
            && !span.is_disabled()
        {
            let _ = span.set_parent(Context::new().with_remote_span_context(p));
        }
        return Hop { span, passed: None };
    }
    let passed = match parent {
        Some(p) => SpanContext::new(p.trace_id(), p.span_id(), TraceFlags::default(), true, p.trace_state().clone()),
        None => {
            use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
            let ids = RandomIdGenerator::default();
            SpanContext::new(ids.new_trace_id(), ids.new_span_id(), TraceFlags::default(), false, TraceState::NONE)
        }
    };
    Hop { span: tracing::Span::none(), passed: Some(passed) }
}

impl Hop {
    /// The hop's span (a disabled one when the hop is not sampled or traces are off): to
    /// instrument the hop's future and record its fields.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A child span of this hop, built by `make` only when the hop's span was.
    pub fn child(&self, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
        if self.span.is_disabled() { tracing::Span::none() } else { make() }
    }

    /// The context to store with a row (the next hop continues it); `None` with traces off.
    pub fn traceparent(&self) -> Option<String> {
        self.context().map(|sc| format_traceparent(&sc))
    }

    /// Writes the hop's context into outgoing gRPC metadata (`traceparent`, `tracestate`)
    /// through the global propagator (W3C trace context).
    pub fn inject(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(sc) = self.context() {
            let cx = Context::new().with_remote_span_context(sc);
            opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
        }
    }

    fn context(&self) -> Option<SpanContext> {
        if self.span.is_disabled() {
            return self.passed.clone();
        }
        let sc = self.span.context().span().span_context().clone();
        sc.is_valid().then_some(sc)
    }
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

/// The remote parent an incoming request carries: `None` when traces are off or its
/// `traceparent` is missing or does not [`parse`]; a `tracestate` over 512 bytes is dropped.
pub fn extract(metadata: &tonic::metadata::MetadataMap) -> Option<SpanContext> {
    SAMPLER.get()?;
    extract_checked(metadata)
}

fn extract_checked(metadata: &tonic::metadata::MetadataMap) -> Option<SpanContext> {
    let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok());
    let traceparent = get("traceparent").filter(|t| parse(t).is_some())?;
    let tracestate = get("tracestate").filter(|s| s.len() <= TRACESTATE_MAX);
    let carrier = Checked { traceparent, tracestate };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
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

    const ON: Sampler = Sampler::DEFAULT;

    fn hop_on(parent: Option<&str>, name: &'static str) -> Hop {
        hop_with(&ON, parent.and_then(parse), || match name {
            "child" => tracing::info_span!(target: SPANS, "child"),
            _ => tracing::info_span!(target: SPANS, "root"),
        })
    }

    #[test]
    fn a_stored_traceparent_makes_the_span_its_child_and_garbage_starts_a_new_trace() {
        traced(|| {
            let child = hop_on(Some(VALID), "child");
            assert!(!child.span().is_disabled());
            let tp = child.traceparent().expect("traced");
            assert_eq!(tp.len(), TRACEPARENT_LEN);
            assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
            assert!(!tp.contains("00f067aa0ba902b7"), "its own span id: {tp}");
            assert!(tp.ends_with("-01") && parse(&tp).is_some());

            for garbage in ["00-zz", "", &"x".repeat(10_000)] {
                let root = hop_on(Some(garbage), "root");
                let tp = root.traceparent().expect("traced");
                assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736") && parse(&tp).is_some(), "{tp}");
            }
            // Traces off (no sampler installed in this test process): nothing built, nothing passed.
            let mut built = false;
            let off = hop(parse(VALID), || {
                built = true;
                tracing::info_span!(target: SPANS, "x")
            });
            assert!(!built && off.span().is_disabled() && off.traceparent().is_none());
        });
    }

    #[test]
    fn an_unsampled_hop_builds_no_span_and_passes_the_decision_on() {
        traced(|| {
            let off = Sampler::parse(Some("always_off"), None).unwrap();
            let built = std::cell::Cell::new(0);
            let make = || {
                built.set(built.get() + 1);
                tracing::info_span!(target: SPANS, "x")
            };
            // A new trace, not sampled: no span, a fresh context with "sampled" off.
            let root = hop_with(&off, None, make);
            assert!(root.span().is_disabled() && root.child(|| panic!("no child of nothing")).is_disabled());
            let tp = root.traceparent().expect("the decision travels");
            assert!(tp.ends_with("-00") && parse(&tp).is_some(), "{tp}");
            // The next hop (default sampler) follows it, and passes the same trace on.
            let next = hop_with(&ON, parse(&tp), make);
            assert!(next.span().is_disabled());
            assert_eq!(next.traceparent().as_deref(), Some(tp.as_str()));
            let mut md = tonic::metadata::MetadataMap::new();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            next.inject(&mut md);
            assert_eq!(md.get("traceparent").and_then(|v| v.to_str().ok()), Some(tp.as_str()));
            // A sampled parent under a sampler that keeps nothing: passed on, flag off.
            let dropped = hop_with(&off, parse(VALID), make);
            assert_eq!(
                dropped.traceparent().as_deref(),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            );
            assert_eq!(built.get(), 0, "no span was built for an unsampled hop");
            // A sampled hop's child is built.
            let kept = hop_with(&ON, None, make);
            assert_eq!(built.get(), 1);
            assert!(!kept.child(|| tracing::info_span!(target: SPANS, "c")).is_disabled());
        });
    }

    #[test]
    fn the_sampler_reads_the_sdk_names_and_refuses_anything_else() {
        let p = |n: Option<&str>, a: Option<&str>| Sampler::parse(n, a);
        assert_eq!(p(None, None), Ok(Sampler::DEFAULT));
        assert_eq!(
            p(Some("parentbased_traceidratio"), Some("0.25")).unwrap().to_string(),
            "parentbased_traceidratio 0.25"
        );
        assert_eq!(p(Some("traceidratio"), None).unwrap().to_string(), "traceidratio 1");
        for (n, a) in [(Some("sometimes"), None), (Some("traceidratio"), Some("2")), (Some("traceidratio"), Some("x"))]
        {
            let e = p(n, a).unwrap_err();
            assert!(e.starts_with("OTEL_TRACES_SAMPLER"), "{e}");
        }
        let sampled = parse(VALID).unwrap();
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let s = |n: &str, a: Option<&str>| p(Some(n), a).unwrap();
        assert!(s("parentbased_always_off", None).keeps(Some(&sampled)));
        assert!(!s("parentbased_always_off", None).keeps(None));
        assert!(!s("parentbased_always_on", None).keeps(Some(&unsampled)));
        assert!(s("always_on", None).keeps(Some(&unsampled)));
        assert!(!s("always_off", None).keeps(Some(&sampled)));
        // traceidratio decides on the trace id: the low 63 bits of ...4736 are far below 1.0,
        // and above 0.0; the same id always gets the same answer.
        assert!(s("traceidratio", Some("1")).keeps(Some(&unsampled)));
        assert!(!s("traceidratio", Some("0")).keeps(Some(&sampled)));
        let half = s("traceidratio", Some("0.5"));
        let low = parse("00-000000000000000000000000000000ff-00f067aa0ba902b7-00").unwrap();
        let high = parse("00-0000000000000000ffffffffffffffff-00f067aa0ba902b7-01").unwrap();
        assert!(half.keeps(Some(&low)) && !half.keeps(Some(&high)));
        // Roots under a ratio: about that share.
        let tenth = s("parentbased_traceidratio", Some("0.1"));
        let kept = (0..10_000).filter(|_| tenth.keeps(None)).count();
        assert!((700..1300).contains(&kept), "{kept} of 10000");
    }

    #[test]
    fn grpc_metadata_carries_the_context_and_hostile_metadata_is_ignored() {
        use tonic::metadata::MetadataMap;
        traced(|| {
            let client = hop_on(Some(VALID), "child");
            let mut md = MetadataMap::new();
            client.inject(&mut md);
            let sent = md.get("traceparent").and_then(|v| v.to_str().ok()).expect("injected").to_owned();
            assert_eq!(Some(sent.clone()), client.traceparent());
            md.insert("tracestate", "vendor=1".parse().unwrap());
            // `extract` answers only while traces are on (a process-wide switch, not set here).
            assert!(extract(&md).is_none());
            let sc = extract_checked(&md).expect("what we sent");
            assert_eq!(sc.trace_state().get("vendor"), Some("1"));
            let server = hop_with(&ON, Some(sc), || tracing::info_span!(target: SPANS, "server"));
            let tp = server.traceparent().unwrap();
            assert_eq!(&tp[..36], &sent[..36], "same trace");

            let mut long_state = md.clone();
            long_state.insert("tracestate", format!("a={}", "b".repeat(600)).parse().unwrap());
            let sc = extract_checked(&long_state).expect("the traceparent still counts");
            assert_eq!(sc.trace_state().header(), "");

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
