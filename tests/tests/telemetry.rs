//! Metrics (issue 13) through the real binaries: a real OpenTelemetry collector (rotel,
//! PyPI `rotel`, OTLP/gRPC receiver, debug log of what it received) gets every documented
//! metric from both services with their resource attributes; the Prometheus endpoints answer
//! with the Collector's names (tickets printed = 3 × orders); a real Prometheus (Debian's
//! `prometheus`) scraping both evaluates PromQL; and a collector that is not there changes
//! nothing for webhooks or tickets.
//!
//! Needs `scripts/install-deps.sh` (rotel; prometheus). Without rotel the collector test fails
//! with a message saying so; without prometheus its PromQL part is skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wixprint_shared::proto::ingest::GetStatusRequest as IngestStatusRequest;
use wixprint_shared::proto::print::GetStatusRequest;
use wixprint_tests::fake_wix::FakeWix;
use wixprint_tests::harness::{Stack, StackOptions, free_port, free_ports, wait_until};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";

/// Every documented metric (README "Metrics") and the service that must send it.
const INGEST_METRICS: &[&str] = &[
    "wixprint.ingest.webhooks",
    "wixprint.ingest.webhook.duration",
    "wixprint.ingest.outbox.backlog",
    "wixprint.ingest.outbox.oldest_age",
    "wixprint.ingest.orders.forwarded",
    "wixprint.ingest.internet.state",
    "wixprint.ingest.sync.runs",
    "wixprint.breaker.state",
    "wixprint.health.check.value",
    "wixprint.health.check.state",
    "wixprint.telemetry.export.failures",
];
const PRINT_METRICS: &[&str] = &[
    "wixprint.print.tickets",
    "wixprint.print.ticket.duration",
    "wixprint.print.order.latency",
    "wixprint.print.queue.depth",
    "wixprint.print.queue.oldest_age",
    "wixprint.print.printer.state",
    "wixprint.print.uncertain",
    "wixprint.print.dead_letters",
    "wixprint.breaker.state",
    "wixprint.health.check.value",
    "wixprint.health.check.state",
    "wixprint.telemetry.export.failures",
];

/// rotel's binary: `$ROTEL_BIN`, `rotel` on PATH, or the one inside the PyPI package.
fn rotel_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROTEL_BIN") {
        return Some(p.into());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("rotel");
        if p.is_file() {
            return Some(p);
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// A real collector on loopback: OTLP/gRPC in, the blackhole exporter out, and a detailed
/// debug log of every metric it received.
struct Rotel {
    _child: tokio::process::Child,
    log: PathBuf,
    grpc: u16,
}

impl Rotel {
    async fn start(dir: &Path) -> Rotel {
        let bin = rotel_bin().expect("rotel not found: run scripts/install-deps.sh (pip install rotel)");
        let [grpc, http] = free_ports::<2>();
        let log = dir.join("rotel.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(&bin)
            .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--exporter", "blackhole", "--debug-log", "metrics", "--debug-log-verbosity", "detailed"])
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        wait_until(T, "rotel listening", || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", grpc)).await.is_ok())
        })
        .await
        .unwrap();
        Rotel { _child: child, log, grpc }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `GET /metrics` on a service's Prometheus endpoint.
async fn scrape(port: u16) -> String {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("metrics endpoint answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// The sum of every sample of `name` (any labels) whose labels contain all of `labels`.
fn sample_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_collector_receives_every_documented_metric_and_prometheus_counts_three_tickets_an_order() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start(dir.path()).await;
    let [ingest_port, print_port] = free_ports::<2>();
    // The order sync on (an empty fake Wix API): sync runs and the wix-api breaker.
    let wix = FakeWix::start("telemetry-api-key", "site-telemetry").await.unwrap();
    let opts = StackOptions::default()
        .wix_api(&wix.base_url(), "telemetry-api-key", "site-telemetry")
        .ingest_env("ORDER_SYNC_INTERVAL_SECS", "1");
    let stack =
        Stack::start(metrics_env(opts, &rotel.endpoint(), ingest_port, print_port)).await.expect("stack starts");

    // Three orders, a refused webhook, then a printer outage with a fourth order waiting.
    send_orders(&stack, 0, 3).await;
    tickets(&stack, 9).await;
    let (status, _) = stack.post_webhook("not a jwt").await.unwrap();
    assert!(status >= 400, "a garbage webhook was accepted ({status})");
    stack.sim.set_mode(Mode::Offline);
    send_orders(&stack, 3, 1).await;
    let print_scrape = wait_until(T, "the outage visible on the Prometheus endpoint", || async move {
        let text = scrape(print_port).await;
        Ok(sample_sum(&text, "wixprint_print_printer_state", &["state=\"offline\""]) >= 1.0
            && sample_sum(&text, "wixprint_print_queue_depth", &["state=\"queued\""]) >= 1.0)
    })
    .await;
    if let Err(e) = print_scrape {
        panic!("{e:#}\n{}\n{}", scrape(print_port).await, stack.logs());
    }
    stack.sim.set_mode(Mode::Online);
    tickets(&stack, 12).await;
    stack.wait_quiet(T).await.unwrap();
    let orders = 4.0;

    // The Prometheus endpoints: the Collector's names, tickets printed = 3 × orders.
    let res = wait_until(T, "12 tickets counted on the Prometheus endpoint", || async move {
        Ok(sample_sum(&scrape(print_port).await, "wixprint_print_tickets_total", &[]) == 3.0 * orders)
    })
    .await;
    let print_text = scrape(print_port).await;
    let ingest_text = scrape(ingest_port).await;
    if let Err(e) = res {
        panic!("{e:#}\n{print_text}");
    }
    for receipt in ["kitchen", "driver", "customer"] {
        let n = sample_sum(&print_text, "wixprint_print_tickets_total", &[&format!("receipt=\"{receipt}\"")]);
        assert_eq!(n, orders, "{receipt} tickets:\n{print_text}");
    }
    assert_eq!(sample_sum(&print_text, "wixprint_print_order_latency_seconds_count", &[]), orders, "{print_text}");
    assert!(sample_sum(&print_text, "wixprint_print_ticket_duration_milliseconds_count", &[]) >= 12.0);
    assert_eq!(sample_sum(&ingest_text, "wixprint_ingest_webhooks_total", &["result=\"applied\""]), orders);
    assert_eq!(
        sample_sum(&ingest_text, "wixprint_ingest_webhook_duration_milliseconds_count", &[]),
        orders + 1.0,
        "{ingest_text}"
    );
    assert_eq!(sample_sum(&ingest_text, "wixprint_ingest_orders_forwarded_total", &[]), orders);
    assert!(ingest_text.contains("target_info{") && ingest_text.contains("service_name=\"wix-ingest\""));
    assert!(print_text.contains("service_name=\"wix-print\""));
    // Every order reached paper well within a second of its receipt at wix-ingest, except the
    // one held by the outage.
    let under_1s = sample_sum(&print_text, "wixprint_print_order_latency_seconds_bucket", &["le=\"1\""]);
    assert!(under_1s >= 3.0, "order latency buckets:\n{print_text}");

    // The collector: every documented metric from each service, with its resource.
    let want: Vec<(&str, &str)> = INGEST_METRICS
        .iter()
        .map(|m| ("wix-ingest", *m))
        .chain(PRINT_METRICS.iter().map(|m| ("wix-print", *m)))
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

    // A real Prometheus scraping both endpoints, queried in PromQL.
    promql(dir.path(), ingest_port, print_port, orders).await;
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

/// Debian's `prometheus` (2.42) on loopback scraping both services; a few PromQL queries
/// through its HTTP API. Skipped with a note when it is not installed.
async fn promql(dir: &Path, ingest_port: u16, print_port: u16, orders: f64) {
    let Some(bin) =
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].iter().map(PathBuf::from).find(|p| p.is_file())
    else {
        eprintln!("NOTE: prometheus is not installed (scripts/install-deps.sh); PromQL part skipped");
        return;
    };
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wixprint\n    static_configs:\n      - targets: ['127.0.0.1:{ingest_port}', '127.0.0.1:{print_port}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let query = |q: &'static str| async move {
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={encoded}");
        let resp = reqwest::get(url).await?;
        let v: serde_json::Value = resp.json().await?;
        let value = v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
        anyhow::Ok(value)
    };
    // Both targets scraped at least once since the last order.
    let res = wait_until(T, "prometheus answers for both services", || async move {
        Ok(query("sum(wixprint_print_tickets_total)").await.ok().flatten() == Some(3.0 * orders)
            && query("sum(wixprint_ingest_webhooks_total{result=\"applied\"})").await.ok().flatten() == Some(orders))
    })
    .await;
    if let Err(e) = res {
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        panic!("{e:#}\n{log}");
    }
    let applied = query("sum(wixprint_ingest_webhooks_total{result=\"applied\"})").await.unwrap();
    assert_eq!(applied, Some(orders));
    let p99 = query("histogram_quantile(0.99, sum by (le) (wixprint_print_ticket_duration_milliseconds_bucket))")
        .await
        .unwrap()
        .expect("ticket latency p99");
    assert!(p99 > 0.0 && p99 <= 60_000.0, "ticket p99 {p99} ms");
    let up = query("count(up{job=\"wixprint\"} == 1)").await.unwrap();
    assert_eq!(up, Some(2.0), "both services scraped");
    let services = query("count(count by (service_name) (target_info))").await.unwrap();
    assert_eq!(services, Some(2.0), "target_info of both services");
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
    let text = scrape(print_port).await;
    assert_eq!(sample_sum(&text, "wixprint_print_tickets_total", &[]), 9.0);
    // Each refused export is counted (an export to a closed port takes about a second).
    let counted = wait_until(T, "two failed exports counted", || async move {
        Ok(sample_sum(&scrape(print_port).await, "wixprint_telemetry_export_failures_total", &[]) >= 2.0)
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
    let _ = scrape(ingest_port).await;
}
