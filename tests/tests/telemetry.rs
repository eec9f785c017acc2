//! Metrics (issue 13) through the real binaries: a real OpenTelemetry collector (rotel,
//! PyPI `rotel`, OTLP/gRPC receiver, debug log of what it received) gets every documented
//! metric from both services with their resource attributes; the Prometheus endpoints answer
//! with the Collector's names (tickets printed = 3 × orders); a real Prometheus (Debian's
//! `prometheus`) scraping both as `deploy/dashboards/prometheus.yml` says evaluates every
//! dashboard query (`deploy/dashboards/panels.toml`) after orders, a printer outage and a
//! recovery; and a collector that is not there changes nothing for webhooks or tickets.
//!
//! Needs `scripts/install-deps.sh` (rotel; prometheus).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wixprint_shared::proto::ingest::GetStatusRequest as IngestStatusRequest;
use wixprint_shared::proto::print::GetStatusRequest;
use wixprint_tests::fake_wix::FakeWix;
use wixprint_tests::harness::{Stack, StackOptions, free_port, free_ports, wait_until};
use wixprint_tests::observability::{Panels, Prometheus, Rotel, dashboard_exprs, sample_sum, scrape};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";
/// Orders sent one after the other while the printer is up (enough that the one order held
/// by the outage stays above the 99th percentile of order latency).
const STEADY_ORDERS: u64 = 120;

/// Every documented metric (README "Metrics") and the service that must send it.
const COMMON_METRICS: &[&str] = &[
    "wixprint.breaker.state",
    "wixprint.health.check.value",
    "wixprint.health.check.state",
    "wixprint.bus.peer.state",
    "wixprint.alerts",
    "wixprint.alerts.send.failures",
    "wixprint.telemetry.export.failures",
];
const INGEST_METRICS: &[&str] = &[
    "wixprint.ingest.webhooks",
    "wixprint.ingest.webhook.duration",
    "wixprint.ingest.outbox.backlog",
    "wixprint.ingest.outbox.oldest_age",
    "wixprint.ingest.orders.forwarded",
    "wixprint.ingest.internet.state",
    "wixprint.ingest.sync.runs",
    "wixprint.ingest.sync.pages",
    "wixprint.ingest.sync.orders",
    "wixprint.ingest.sync.rate_limited",
];
const PRINT_METRICS: &[&str] = &[
    "wixprint.print.tickets",
    "wixprint.print.ticket.duration",
    "wixprint.print.order.latency",
    "wixprint.print.order.last_received",
    "wixprint.print.queue.depth",
    "wixprint.print.queue.oldest_age",
    "wixprint.print.printer.state",
    "wixprint.print.printer.transitions",
    "wixprint.print.uncertain",
    "wixprint.print.dead_letters",
    "wixprint.print.recovery.sessions",
    "wixprint.print.recovery.drain_rate",
];

async fn send_orders(stack: &Stack, from: u64, n: u64) {
    for i in from..from + n {
        stack.send_event(&distinct_order(PICKUP, 700 + i)).await.unwrap();
    }
}

async fn tickets(stack: &Stack, n: usize) {
    if let Err(e) = stack.sim.wait_for_tickets(n, T).await {
        panic!("{e:#}\n{}", stack.logs());
    }
}

fn metrics_env(opts: StackOptions, endpoint: &str, ingest_port: u16, print_port: u16) -> StackOptions {
    let common = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test".to_owned()),
    ];
    let mut opts = opts
        .ingest_env("INGEST_METRICS_ADDR", ingest_port.to_string())
        .print_env("PRINT_METRICS_ADDR", print_port.to_string())
        .print_env("PRINT_STATUS_POLL_MS", "100");
    for (k, v) in common {
        opts = opts.ingest_env(k, v.clone()).print_env(k, v);
    }
    opts
}

/// A fake `/sys/class/thermal` at 47 °C, read by both services' health monitors.
fn thermal(opts: StackOptions, dir: &Path) -> StackOptions {
    let zone = dir.join("thermal").join("thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("temp"), "47000\n").unwrap();
    let path = dir.join("thermal").display().to_string();
    opts.ingest_env("INGEST_HEALTH_THERMAL_PATH", path.clone()).print_env("PRINT_HEALTH_THERMAL_PATH", path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_collector_receives_every_documented_metric_and_every_dashboard_query_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start(dir.path(), &["metrics"]).await.unwrap();
    let [ingest_port, print_port] = free_ports::<2>();
    // The order sync on (an empty fake Wix API): sync runs and the wix-api breaker.
    let wix = FakeWix::start("telemetry-api-key", "site-telemetry").await.unwrap();
    let opts = StackOptions::default()
        .wix_api(&wix.base_url(), "telemetry-api-key", "site-telemetry")
        .ingest_env("ORDER_SYNC_INTERVAL_SECS", "1");
    let opts = thermal(metrics_env(opts, &rotel.endpoint(), ingest_port, print_port), dir.path());
    let stack = Stack::start(opts).await.expect("stack starts");
    // Prometheus scrapes from the start, so it sees the outage.
    let prom = Prometheus::start(dir.path(), ingest_port, print_port, Duration::from_secs(1), None)
        .await
        .expect("prometheus starts (scripts/install-deps.sh installs it)");

    // A first order, seen by Prometheus: the histograms' series exist from here on, so the
    // rates over the steady orders below count every one of them.
    send_orders(&stack, 0, 1).await;
    tickets(&stack, 3).await;
    scraped(
        &prom,
        "sum(wixprint_print_order_latency_seconds_count) + sum(wixprint_ingest_webhook_duration_milliseconds_count)",
        2.0,
    )
    .await;
    // A steady evening: each order printed before the next arrives, spread over several
    // scrapes. Then a refused webhook, then a printer outage with one order waiting, and the
    // printer back (a recovery).
    for i in 1..=STEADY_ORDERS {
        send_orders(&stack, i, 1).await;
        tickets(&stack, 3 * (i as usize + 1)).await;
        if i % 20 == 0 {
            scraped(&prom, "sum(wixprint_ingest_orders_forwarded_total)", (i + 1) as f64).await;
        }
    }
    let (status, _) = stack.post_webhook("not a jwt").await.unwrap();
    assert!(status >= 400, "a garbage webhook was accepted ({status})");
    stack.sim.set_mode(Mode::Offline);
    send_orders(&stack, STEADY_ORDERS + 1, 1).await;
    let orders = (STEADY_ORDERS + 2) as f64;
    let prom_ref = &prom;
    let outage = wait_until(T, "the outage visible in Prometheus and the order waiting", || async move {
        let offline = prom_ref.query("max(wixprint_print_printer_state{state=\"offline\"})").await?;
        let text = scrape(print_port).await?;
        Ok(offline.first().is_some_and(|(_, v)| *v == 1.0)
            && sample_sum(&text, "wixprint_print_queue_depth", &["state=\"queued\""]) >= 1.0)
    })
    .await;
    if let Err(e) = outage {
        panic!("{e:#}\n{}\n{}", scrape(print_port).await.unwrap_or_default(), stack.logs());
    }
    stack.sim.set_mode(Mode::Online);
    tickets(&stack, 3 * orders as usize).await;
    stack.wait_quiet(T).await.unwrap();
    let recovered = wait_until(T, "the recovery session completed", || async move {
        let text = scrape(print_port).await?;
        Ok(sample_sum(&text, "wixprint_print_recovery_sessions_total", &["result=\"completed\""]) >= 1.0)
    })
    .await;
    if let Err(e) = recovered {
        panic!("{e:#}\n{}\n{}", scrape(print_port).await.unwrap_or_default(), stack.print.log());
    }

    // The Prometheus endpoints: the Collector's names, tickets printed = 3 × orders.
    let print_text = scrape(print_port).await.unwrap();
    let ingest_text = scrape(ingest_port).await.unwrap();
    assert_eq!(sample_sum(&print_text, "wixprint_print_tickets_total", &[]), 3.0 * orders, "{print_text}");
    for receipt in ["kitchen", "driver", "customer"] {
        let n = sample_sum(&print_text, "wixprint_print_tickets_total", &[&format!("receipt=\"{receipt}\"")]);
        assert_eq!(n, orders, "{receipt} tickets:\n{print_text}");
    }
    assert_eq!(sample_sum(&print_text, "wixprint_print_order_latency_seconds_count", &[]), orders, "{print_text}");
    assert!(sample_sum(&print_text, "wixprint_print_ticket_duration_milliseconds_count", &[]) >= 3.0 * orders);
    assert_eq!(sample_sum(&ingest_text, "wixprint_ingest_webhooks_total", &["result=\"applied\""]), orders);
    assert_eq!(
        sample_sum(&ingest_text, "wixprint_ingest_webhook_duration_milliseconds_count", &[]),
        orders + 1.0,
        "{ingest_text}"
    );
    assert_eq!(sample_sum(&ingest_text, "wixprint_ingest_orders_forwarded_total", &[]), orders);
    assert!(sample_sum(&ingest_text, "wixprint_ingest_sync_pages_total", &[]) >= 1.0, "{ingest_text}");
    assert!(ingest_text.contains("target_info{") && ingest_text.contains("service_name=\"wix-ingest\""));
    assert!(print_text.contains("service_name=\"wix-print\""));
    assert!(
        sample_sum(&print_text, "wixprint_print_printer_transitions_total", &["to=\"offline\""]) >= 1.0,
        "{print_text}"
    );
    // Every steady order reached paper well within a second of its receipt at wix-ingest.
    let under_1s = sample_sum(&print_text, "wixprint_print_order_latency_seconds_bucket", &["le=\"1\""]);
    assert!(under_1s >= STEADY_ORDERS as f64, "order latency buckets:\n{print_text}");

    // The collector: every documented metric from each service, with its resource.
    let want: Vec<(&str, &str)> = INGEST_METRICS
        .iter()
        .chain(COMMON_METRICS)
        .map(|m| ("wix-ingest", *m))
        .chain(PRINT_METRICS.iter().chain(COMMON_METRICS).map(|m| ("wix-print", *m)))
        .collect();
    let rotel_ref = &rotel;
    let want_ref = &want;
    let res = wait_until(T, "rotel received every documented metric", || async move {
        let seen = received(&rotel_ref.log());
        Ok(want_ref.iter().all(|(svc, m)| seen.get(*svc).is_some_and(|s| s.metrics.iter().any(|x| x == m))))
    })
    .await;
    let seen = received(&rotel.log());
    if let Err(e) = res {
        let missing: Vec<_> =
            want.iter().filter(|(svc, m)| !seen.get(*svc).is_some_and(|s| s.metrics.iter().any(|x| x == m))).collect();
        let log = rotel.log();
        let tail = &log[log.len().saturating_sub(4000)..];
        panic!("{e:#}; missing {missing:?}\nrotel log tail:\n{tail}");
    }
    for svc in ["wix-ingest", "wix-print"] {
        let r = &seen[svc];
        for attr in ["service.version", "service.instance.id", "host.name", "deployment.environment"] {
            assert!(r.resource.contains(attr), "{svc}: resource lacks {attr}: {}", r.resource);
        }
    }

    // Every dashboard query, evaluated by the real Prometheus.
    dashboard_queries_answer(&prom, orders).await;
    let up = prom.query("count(up == 1)").await.unwrap();
    assert_eq!(up.first().map(|s| s.1), Some(2.0), "both services scraped");
    let services = prom.query("count(count by (job, service_name) (target_info))").await.unwrap();
    assert_eq!(services.first().map(|s| s.1), Some(2.0), "target_info of both services");
}

/// Waits until Prometheus's answer to `q` is at least `at_least` (it scraped what happened).
async fn scraped(prom: &Prometheus, q: &str, at_least: f64) {
    let res =
        wait_until(T, q, || async move { Ok(prom.query(q).await?.first().is_some_and(|(_, v)| *v >= at_least)) }).await;
    if let Err(e) = res {
        panic!("{e:#}: {:?}\n{}", prom.query(q).await, prom.log());
    }
}

/// The generated Grafana JSON carries exactly panels.toml's queries, and each returns data
/// that passes its check (Prometheus may need a scrape or two to catch up: retried).
async fn dashboard_queries_answer(prom: &Prometheus, orders: f64) {
    let panels = Panels::load().unwrap();
    let listed: Vec<String> = panels.queries().map(|(_, q)| q.expr.clone()).collect();
    assert_eq!(
        dashboard_exprs().unwrap(),
        listed,
        "deploy/dashboards/wixprint.json is out of date: python3 deploy/dashboards/generate.py"
    );
    assert!(listed.len() >= 20, "{} queries", listed.len());
    let panels_ref = &panels;
    let failures = || async move {
        let mut failed = Vec::new();
        for (panel, q) in panels_ref.queries() {
            let why = match prom.query(&q.expr).await {
                Ok(samples) => q.check.failure(&samples, orders),
                Err(e) => Some(format!("{e:#}")),
            };
            if let Some(why) = why {
                failed.push(format!("[{} / {}] {}: {why}", panel.row, panel.title, q.expr));
            }
        }
        failed
    };
    let res =
        wait_until(T, "every dashboard query answers plausibly", || async move { Ok(failures().await.is_empty()) })
            .await;
    if let Err(e) = res {
        panic!("{e:#}:\n{}\n{}", failures().await.join("\n"), prom.log());
    }
}

/// What rotel's debug log says one service sent: its resource text and the metric names.
#[derive(Default, Debug)]
struct Received {
    resource: String,
    metrics: Vec<String>,
}

/// Splits rotel's detailed metrics log into resources (by `service.name`) and the metric
/// names under each. The log prints a resource's attributes, then its scopes and metrics;
/// lines are matched loosely (`service.name`, `Name:`), so a change of rotel's layout shows as
/// a missing metric with the log's tail in the failure.
fn received(log: &str) -> BTreeMap<String, Received> {
    let mut out: BTreeMap<String, Received> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut resource_lines: Vec<String> = Vec::new();
    for line in log.lines() {
        let l = line.trim();
        if l.contains("ResourceMetrics #") || l.starts_with("Resource SchemaURL") {
            resource_lines.clear();
            current = None;
        }
        if l.contains("service.name") {
            for svc in ["wix-ingest", "wix-print"] {
                if l.contains(svc) {
                    current = Some(svc.to_owned());
                    let r = out.entry(svc.to_owned()).or_default();
                    r.resource.push_str(&resource_lines.join("\n"));
                    r.resource.push('\n');
                    r.resource.push_str(l);
                }
            }
            continue;
        }
        if current.is_none() {
            resource_lines.push(l.to_owned());
            continue;
        }
        if let Some(svc) = &current {
            let r = out.get_mut(svc).expect("entry");
            if l.starts_with("-> ") && !l.contains("Name:") && !l.contains("Description") && r.metrics.is_empty() {
                r.resource.push('\n');
                r.resource.push_str(l);
            }
            for marker in ["-> Name: ", "Name: "] {
                if let Some(name) = l.strip_prefix(marker) {
                    let name = name.trim().to_owned();
                    if name.starts_with("wixprint.") && !r.metrics.contains(&name) {
                        r.metrics.push(name);
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_changes_nothing_for_webhooks_and_tickets() {
    // A closed port: every export is refused.
    let closed = free_port();
    let [ingest_port, print_port] = free_ports::<2>();
    let stack = Stack::start(metrics_env(
        StackOptions::default(),
        &format!("http://127.0.0.1:{closed}"),
        ingest_port,
        print_port,
    ))
    .await
    .expect("stack starts with the collector down");
    let started = Instant::now();
    send_orders(&stack, 0, 3).await;
    let accepted = started.elapsed();
    tickets(&stack, 9).await;
    let printed = started.elapsed();
    stack.wait_quiet(T).await.unwrap();
    // Several export intervals have passed by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(accepted < Duration::from_secs(3), "3 webhooks took {accepted:?}");
    assert!(printed < Duration::from_secs(10), "9 tickets took {printed:?}");
    let st = stack.print_admin().await.unwrap().get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.printers[0].state, "online");
    stack.ingest_admin().await.unwrap().get_status(IngestStatusRequest {}).await.unwrap();
    // Both still serve their own endpoint, which counts the failed exports.
    let text = scrape(print_port).await.unwrap();
    assert_eq!(sample_sum(&text, "wixprint_print_tickets_total", &[]), 9.0);
    // Each refused export is counted (an export to a closed port takes about a second).
    let counted = wait_until(T, "two failed exports counted", || async move {
        Ok(sample_sum(&scrape(print_port).await?, "wixprint_telemetry_export_failures_total", &[]) >= 2.0)
    })
    .await;
    if let Err(e) = counted {
        panic!("{e:#}\n{text}\n{}", stack.print.log());
    }
    // One line per outage, not one per batch.
    for (name, log) in [("wix-ingest", stack.ingest.log()), ("wix-print", stack.print.log())] {
        let lines = log.matches("metrics export failed").count();
        assert_eq!(lines, 1, "{name} logged {lines} export failures:\n{log}");
    }
    scrape(ingest_port).await.unwrap();
}
