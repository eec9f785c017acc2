//! Traces (issue 13) through the real binaries and a real OpenTelemetry collector (rotel,
//! PyPI `rotel`, `--debug-log traces --debug-log-verbosity detailed`): one order is one trace
//! across both processes, every span under the parent it belongs to, with the order's id and
//! number; the context survives both durable hops (ingest's outbox row and wix-print's jobs
//! store the exact traceparent); sampling follows `OTEL_TRACES_SAMPLER` and the parent's
//! decision; a hostile `traceparent` starts a new trace and is never an error; a collector that
//! is down costs one log line.
//!
//! Needs `scripts/install-deps.sh` (rotel).

use std::collections::BTreeMap;
use std::time::Duration;

use wixprint_shared::proto::order::{LineItem, Order, OrderStatus, PriceSummary};
use wixprint_shared::proto::print::SubmitOrderRequest;
use wixprint_tests::harness::{Stack, StackOptions, free_port, wait_until};
use wixprint_tests::observability::{Rotel, sample_sum, scrape};
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";

/// Both services export spans to `endpoint`, a batch every 100 ms.
fn traced(mut opts: StackOptions, endpoint: &str) -> StackOptions {
    for (k, v) in [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")] {
        opts = opts.ingest_env(k, v).print_env(k, v);
    }
    opts
}

async fn tickets(stack: &Stack, n: usize) {
    if let Err(e) = stack.sim.wait_for_tickets(n, T).await {
        panic!("{e:#}\n{}", stack.logs());
    }
}

/// One span as rotel's detailed debug log prints it.
#[derive(Debug, Default, Clone)]
struct Span {
    service: String,
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    kind: String,
    attrs: BTreeMap<String, String>,
}

impl Span {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map_or("", String::as_str)
    }
}

/// Every span in rotel's log: `ResourceSpans` (the resource's `-> service.name: Str(..)`),
/// then `Span #n` blocks of `Trace ID : ..`, `Parent ID : ..`, `ID : ..`, `Name : ..`,
/// `Kind : ..` and `-> key: Type(value)` attributes.
fn spans(log: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut service = String::new();
    let mut in_resource = false;
    let mut current: Option<Span> = None;
    for line in log.lines() {
        let l = line.trim();
        if l.starts_with("ResourceSpans #") || l.starts_with("ScopeSpans #") || l.starts_with("Span #") {
            out.extend(current.take());
            in_resource = l.starts_with("ResourceSpans #");
            if in_resource {
                service.clear();
            }
            if l.starts_with("Span #") {
                current = Some(Span { service: service.clone(), ..Default::default() });
            }
            continue;
        }
        if let Some((k, v)) = l.strip_prefix("-> ").and_then(|a| a.split_once(": ")) {
            // `Str(x)`, `Int(1)`, `Bool(true)`: the value inside.
            let v = v.split_once('(').and_then(|(_, rest)| rest.strip_suffix(')')).unwrap_or(v).to_owned();
            if in_resource {
                if k == "service.name" {
                    service = v;
                }
            } else if let Some(s) = current.as_mut() {
                s.attrs.insert(k.to_owned(), v);
            }
            continue;
        }
        if let (Some(s), Some((k, v))) = (current.as_mut(), l.split_once(':')) {
            let v = v.trim().to_owned();
            match k.trim() {
                "Trace ID" => s.trace_id = v,
                "Parent ID" => s.parent_id = v,
                "ID" => s.id = v,
                "Name" => s.name = v,
                "Kind" => s.kind = v,
                _ => {}
            }
        }
    }
    out.extend(current);
    out
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The trace a span of `order_id` named `name` belongs to: all its spans.
fn trace_of(all: &[Span], name: &str, order_id: &str) -> Vec<Span> {
    let Some(root) = all.iter().find(|s| s.name == name && s.attr("order.id") == order_id) else {
        return Vec::new();
    };
    all.iter().filter(|s| s.trace_id == root.trace_id).cloned().collect()
}

/// Waits until rotel has logged a trace of `order_id` (found by its `name` span) that
/// `complete` accepts; answers its spans.
async fn wait_for_trace(rotel: &Rotel, name: &str, order_id: &str, complete: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let (complete, rotel) = (&complete, &rotel);
    let res = wait_until(T, "the order's trace in rotel", || async move {
        Ok(complete(&trace_of(&spans(&rotel.log()), name, order_id)))
    })
    .await;
    if let Err(e) = res {
        let log = rotel.log();
        panic!("{e:#}\nrotel log tail:\n{}", &log[log.len().saturating_sub(6000)..]);
    }
    trace_of(&spans(&rotel.log()), name, order_id)
}

/// The print side of an order is complete: its SubmitOrder, the commit, and three tickets
/// printed, each with its round trip.
fn print_side_complete(t: &[Span]) -> bool {
    let printed = named(t, "print.ticket").iter().filter(|s| s.attr("result") == "printed").count();
    named(t, "SubmitOrder").len() == 1 && printed == 3 && named(t, "printer.roundtrip").len() == 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_webhook_to_the_printer_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start(dir.path(), &["traces"]).await.expect("rotel starts (scripts/install-deps.sh)");
    let stack = Stack::start(traced(StackOptions::default(), &rotel.endpoint())).await.expect("stack starts");
    let event = distinct_order(PICKUP, 1);
    let order_id = event["entityId"].as_str().unwrap().to_owned();
    stack.send_event(&event).await.unwrap();
    tickets(&stack, 3).await;

    let trace = wait_for_trace(&rotel, "webhook", &order_id, |t| {
        print_side_complete(t) && named(t, "sqlite.commit").len() == 2 && !named(t, "outbox.forward").is_empty()
    })
    .await;
    let dump = format!("{trace:#?}");
    let one = |name: &str| {
        let v = named(&trace, name);
        assert_eq!(v.len(), 1, "one {name}: {dump}");
        v[0].clone()
    };
    // wix-ingest: the webhook is the root; the commit and the forwarding are its children.
    let webhook = one("webhook");
    assert_eq!((webhook.service.as_str(), webhook.parent_id.as_str()), ("wix-ingest", ""), "{dump}");
    assert_eq!(webhook.kind, "SPAN_KIND_SERVER");
    assert_eq!(webhook.attr("order.id"), order_id);
    assert_eq!(webhook.attr("order.number"), "20001");
    assert_eq!(webhook.attr("webhook.result"), "applied");
    let commits = named(&trace, "sqlite.commit");
    let ingest_commit = commits.iter().find(|s| s.service == "wix-ingest").expect("ingest's commit");
    assert_eq!(ingest_commit.parent_id, webhook.id);
    assert_eq!(ingest_commit.attr("db.system.name"), "sqlite");
    let forwards = named(&trace, "outbox.forward");
    for f in &forwards {
        assert_eq!((f.service.as_str(), f.parent_id.as_str()), ("wix-ingest", webhook.id.as_str()), "{dump}");
        assert_eq!(f.kind, "SPAN_KIND_CLIENT");
        assert_eq!((f.attr("order.id"), f.attr("order.number")), (order_id.as_str(), "20001"));
    }
    assert_eq!(forwards.last().unwrap().attr("rpc.grpc.status_code"), "0", "{dump}");
    // wix-print: SubmitOrder is the forwarding call's child (the gRPC metadata carried it).
    let submit = one("SubmitOrder");
    assert_eq!(submit.service, "wix-print");
    assert_eq!(submit.kind, "SPAN_KIND_SERVER");
    assert!(forwards.iter().any(|f| f.id == submit.parent_id), "SubmitOrder's parent: {dump}");
    assert_eq!((submit.attr("order.id"), submit.attr("order.number")), (order_id.as_str(), "20001"));
    assert_eq!(submit.attr("jobs"), "3");
    let print_commit = commits.iter().find(|s| s.service == "wix-print").expect("print's commit");
    assert_eq!(print_commit.parent_id, submit.id);
    // Each ticket (the dispatcher, after the jobs waited in print.db) under SubmitOrder, each
    // round trip under its ticket.
    let mut receipts: Vec<&str> = Vec::new();
    for ticket in named(&trace, "print.ticket") {
        assert_eq!((ticket.service.as_str(), ticket.parent_id.as_str()), ("wix-print", submit.id.as_str()), "{dump}");
        assert_eq!((ticket.attr("order.id"), ticket.attr("order.number")), (order_id.as_str(), "20001"));
        assert_eq!(ticket.attr("printer"), "front");
        assert!(ticket.attr("job.id").parse::<i64>().is_ok(), "{dump}");
        receipts.push(ticket.attr("receipt"));
        let rt: Vec<_> = named(&trace, "printer.roundtrip").into_iter().filter(|r| r.parent_id == ticket.id).collect();
        assert_eq!(rt.len(), 1, "one round trip under ticket {}: {dump}", ticket.id);
        assert_eq!(rt[0].attr("result"), "confirmed");
    }
    receipts.sort();
    assert_eq!(receipts, ["customer", "driver", "kitchen"]);
    let ids: Vec<&str> = trace.iter().map(|s| s.id.as_str()).collect();
    for s in &trace {
        assert!(s.parent_id.is_empty() || ids.contains(&s.parent_id.as_str()), "orphan {s:?}");
    }

    // The context crossed the two durable hops as the exact traceparent of the span that
    // stored the row.
    let ingest = rusqlite::Connection::open(stack.dir.path().join("ingest.db")).unwrap();
    let stored: String =
        ingest.query_row("SELECT traceparent FROM outbox WHERE order_id = ?1", [&order_id], |r| r.get(0)).unwrap();
    assert_eq!(stored, format!("00-{}-{}-01", webhook.trace_id, webhook.id));
    let print = rusqlite::Connection::open(stack.dir.path().join("print.db")).unwrap();
    let mut st = print.prepare("SELECT traceparent FROM jobs WHERE order_id = ?1").unwrap();
    let jobs: Vec<String> = st.query_map([&order_id], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(jobs, vec![format!("00-{}-{}-01", submit.trace_id, submit.id); 3]);
}

/// An order as wix-ingest would forward it.
fn order(id: &str, number: &str) -> Order {
    Order {
        id: id.into(),
        number: number.into(),
        created_at: Some(prost_types::Timestamp { seconds: 1_758_738_240, nanos: 0 }),
        line_items: vec![LineItem {
            name: "Pad Thai".into(),
            quantity: 1,
            unit_price: "19.50".into(),
            line_total: "19.50".into(),
            ..Default::default()
        }],
        price_summary: Some(PriceSummary { total: "19.50".into(), currency: "CHF".into(), ..Default::default() }),
        status: OrderStatus::Approved as i32,
        catalog_app_ids: vec!["9a5d83fd-8570-482e-81ab-cfa88942ee60".into()],
        ..Default::default()
    }
}

/// A `SubmitOrder` call with `traceparent` / `tracestate` metadata as given.
fn submit(order: Order, traceparent: &str, tracestate: Option<String>) -> tonic::Request<SubmitOrderRequest> {
    let mut req = tonic::Request::new(SubmitOrderRequest {
        order: Some(order),
        version: 1,
        previous_version: 0,
        received_at: None,
    });
    req.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    if let Some(s) = tracestate {
        req.metadata_mut().insert("tracestate", s.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_variable_and_the_parent_and_a_hostile_traceparent_starts_a_new_trace() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start(dir.path(), &["traces"]).await.expect("rotel starts (scripts/install-deps.sh)");
    // wix-ingest samples nothing; wix-print keeps the default (parentbased_always_on).
    let opts = traced(StackOptions::default(), &rotel.endpoint()).ingest_env("OTEL_TRACES_SAMPLER", "always_off");
    let stack = Stack::start(opts).await.expect("stack starts");

    // A: through the webhook. Not sampled at ingest, and wix-print follows its parent's
    // decision (the traceparent it gets says "not sampled").
    let event = distinct_order(PICKUP, 2);
    let unsampled = event["entityId"].as_str().unwrap().to_owned();
    stack.send_event(&event).await.unwrap();
    tickets(&stack, 3).await;

    // B: straight to wix-print with a traceparent the SDK's own parser would take (version
    // 01 allows trailing parts) but that is not a version-00 one, and an oversized
    // tracestate: accepted, printed, a new trace.
    const HOSTILE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let hostile = format!("01-{HOSTILE_TRACE}-00f067aa0ba902b7-01-{}", "ab".repeat(1000));
    let mut client = stack.print_submit().await.unwrap();
    let resp = client.submit_order(submit(order("hostile-1", "7101"), &hostile, Some("k=v,".repeat(400)))).await;
    assert!(resp.is_ok(), "{resp:?}");
    tickets(&stack, 6).await;

    // C: straight to wix-print with a valid, sampled traceparent: SubmitOrder is its child.
    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const PARENT: &str = "b7ad6b7169203331";
    let valid = format!("00-{TRACE}-{PARENT}-01");
    client.submit_order(submit(order("traced-1", "7102"), &valid, Some("vendor=x".into()))).await.unwrap();
    tickets(&stack, 9).await;

    // C's spans are the last ones queued: once they are all in, so is everything before.
    let c = wait_for_trace(&rotel, "SubmitOrder", "traced-1", print_side_complete).await;
    let dump = format!("{c:#?}");
    let c_submit = named(&c, "SubmitOrder")[0];
    assert_eq!((c_submit.trace_id.as_str(), c_submit.parent_id.as_str()), (TRACE, PARENT), "{dump}");
    assert!(c.iter().all(|s| s.service == "wix-print"), "{dump}");

    let all = spans(&rotel.log());
    let b = trace_of(&all, "SubmitOrder", "hostile-1");
    let dump = format!("{b:#?}");
    assert!(print_side_complete(&b), "{dump}");
    let b_submit = named(&b, "SubmitOrder")[0];
    assert!(b_submit.parent_id.is_empty(), "a hostile traceparent was taken as the parent: {dump}");
    assert_ne!(b_submit.trace_id, HOSTILE_TRACE);
    assert!(all.iter().all(|s| s.trace_id != HOSTILE_TRACE), "the hostile trace id was used");

    assert!(all.iter().all(|s| s.service != "wix-ingest"), "wix-ingest exported spans with always_off");
    let leaked: Vec<_> = all.iter().filter(|s| s.attr("order.id") == unsampled).collect();
    assert!(leaked.is_empty(), "wix-print traced an order its parent did not sample: {leaked:#?}");
    // Every span rotel got belongs to B or C.
    assert_eq!(all.len(), b.len() + c.len(), "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_one_log_line_and_nothing_else() {
    // A closed port: every export is refused.
    let closed = free_port();
    let print_metrics = free_port();
    let opts = traced(StackOptions::default(), &format!("http://127.0.0.1:{closed}"))
        .print_env("PRINT_METRICS_ADDR", print_metrics.to_string());
    let mut stack = Stack::start(opts).await.expect("stack starts");
    let started = std::time::Instant::now();
    for i in 0..3 {
        stack.send_event(&distinct_order(PICKUP, 10 + i)).await.unwrap();
    }
    tickets(&stack, 9).await;
    let first = started.elapsed();
    // The first batches failed by now ...
    let stack_ref = &stack;
    let logged = wait_until(T, "the failed exports logged", || async move {
        Ok(stack_ref.ingest.log().contains("trace export failed")
            && stack_ref.print.log().contains("trace export failed"))
    })
    .await;
    if let Err(e) = logged {
        panic!("{e:#}\n{}", stack.logs());
    }
    // ... and counted, per signal (the dropped batches are not silent).
    let counted = wait_until(T, "the failed span exports counted", || async move {
        let text = scrape(print_metrics).await?;
        Ok(sample_sum(&text, "wixprint_telemetry_export_failures_total", &["signal=\"traces\""]) >= 1.0)
    })
    .await;
    if let Err(e) = counted {
        panic!("{e:#}\n{}", scrape(print_metrics).await.unwrap_or_default());
    }
    // ... and more spans fail the same way: still quick, still quiet.
    for i in 3..6 {
        stack.send_event(&distinct_order(PICKUP, 10 + i)).await.unwrap();
    }
    tickets(&stack, 18).await;
    assert!(started.elapsed() < Duration::from_secs(10), "18 tickets took {:?} ({first:?} for 9)", started.elapsed());
    // A graceful stop exports (and fails to export) the last batch.
    stack.ingest.terminate().await.unwrap();
    stack.print.terminate().await.unwrap();
    for (name, log) in [("wix-ingest", stack.ingest.log()), ("wix-print", stack.print.log())] {
        let lines = log.matches("trace export failed").count();
        assert_eq!(lines, 1, "{name} logged {lines} trace export failures:\n{log}");
    }
}

/// A sampler the SDK would not know, or a ratio outside 0..1, is a configuration error: exit 78
/// naming the variable, before anything is bound or stored (the SDK itself would fall back to
/// tracing everything without a word).
#[test]
fn a_sampler_that_does_not_exist_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("wix.pem");
    std::fs::write(&pem, &wixprint_tests::webhook::KeyPair::shared().public_pem).unwrap();
    for (sampler, arg, named) in [
        ("sometimes", "", "OTEL_TRACES_SAMPLER"),
        ("parentbased_traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG"),
        ("traceidratio", "ten percent", "OTEL_TRACES_SAMPLER_ARG"),
    ] {
        for binary in ["wix-ingest", "wix-print"] {
            let endpoint = format!("http://127.0.0.1:{}", free_port());
            let env = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_TRACES_SAMPLER", sampler),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ];
            let (code, err) = run_with(binary, &env, dir.path(), &pem, true);
            assert_eq!(code, Some(78), "{binary} {sampler} {arg}: {err}");
            assert!(err.contains(named), "{binary}: {err}");
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
    // The same variables are fine with traces off (nothing reads them then) ...
    let (code, err) = run_with("wix-print", &[("OTEL_TRACES_SAMPLER", "sometimes")], dir.path(), &pem, true);
    assert_eq!(code, Some(0), "{err}");
    // ... and a good sampler passes.
    let good = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ];
    let (code, err) = run_with("wix-print", &good, dir.path(), &pem, true);
    assert_eq!(code, Some(0), "{err}");
}

/// Runs `binary` (with `--check-config` when `check`) with only `env` and a minimal valid
/// configuration (databases in `dir`, the Wix key `pem`, a printer address); returns its exit
/// code and stderr.
fn run_with(
    binary: &str,
    env: &[(&str, &str)],
    dir: &std::path::Path,
    pem: &std::path::Path,
    check: bool,
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(wixprint_tests::harness::bin_path(binary));
    if check {
        cmd.arg("--check-config");
    }
    let out = cmd
        .env_clear()
        .env("WIX_WEBHOOK_PUBLIC_KEY_FILE", pem)
        .env("INGEST_DB_PATH", dir.join("ingest.db"))
        .env("PRINT_DB_PATH", dir.join("print.db"))
        .env("PRINTER_URL", "tcp://127.0.0.1:9")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`: the same trace and the metrics reach the
/// collector's OTLP/HTTP receiver (port 4318's protocol) from both services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_http_carries_the_trace_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start(dir.path(), &["traces", "metrics"]).await.expect("rotel starts (scripts/install-deps.sh)");
    let mut opts = traced(StackOptions::default(), &format!("http://127.0.0.1:{}", rotel.http));
    for (k, v) in [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_METRIC_EXPORT_INTERVAL", "300")] {
        opts = opts.ingest_env(k, v).print_env(k, v);
    }
    let stack = Stack::start(opts).await.expect("stack starts");
    // Metrics first (exported every 300 ms from start-up): both services reach the receiver.
    let res = wait_until(T, "both services' metrics over OTLP/HTTP", || {
        let log = rotel.log();
        async move {
            Ok(log.contains("wixprint.ingest.outbox.backlog") && log.contains("wixprint.print.printer.state"))
        }
    })
    .await;
    res.unwrap_or_else(|e| panic!("{e:#}\n{}\nrotel:\n{}", stack.logs(), rotel.log()));
    let event = distinct_order(PICKUP, 3);
    let order_id = event["entityId"].as_str().unwrap().to_owned();
    stack.send_event(&event).await.unwrap();
    tickets(&stack, 3).await;
    let trace = wait_for_trace(&rotel, "webhook", &order_id, |t| {
        print_side_complete(t) && !named(t, "outbox.forward").is_empty()
    })
    .await;
    let webhook = named(&trace, "webhook")[0];
    assert_eq!(webhook.service, "wix-ingest");
    assert!(trace.iter().all(|s| s.trace_id == webhook.trace_id), "{trace:#?}");
    let logs = stack.logs();
    assert!(!logs.contains("export failed"), "{logs}");
}

/// An OTLP protocol we do not speak is a configuration error naming the variable.
#[test]
fn an_otlp_protocol_we_do_not_speak_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("absent.pem");
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    for (key, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc+smoke-signals"),
    ] {
        // Both at start-up and under --check-config, before anything is created.
        for check in [false, true] {
            let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), (key, value)];
            let (code, err) = run_with("wix-print", &env, dir.path(), &pem, check);
            assert_eq!(code, Some(78), "{value}: {err}");
            assert!(err.contains(key) && err.contains(value), "{err}");
        }
    }
    assert!(!dir.path().join("print.db").exists());
}
