//! The observability stack for tests and the local demo (`scripts/observability.sh`): a real
//! OpenTelemetry collector (rotel, PyPI `rotel`), a real Prometheus (Debian's `prometheus`)
//! scraping both services the way `deploy/dashboards/prometheus.yml` says, and the dashboard's
//! panels (`deploy/dashboards/panels.toml`) with the checks each query must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::harness::{free_port, free_ports, wait_until};

const START: Duration = Duration::from_secs(30);

/// The repository's `deploy/dashboards`.
pub fn dashboards_dir() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).join("deploy/dashboards")
}

/// rotel's binary: `$ROTEL_BIN`, `rotel` on PATH, or the one inside the PyPI package.
pub fn rotel_bin() -> Option<PathBuf> {
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

/// A real collector on loopback: OTLP/gRPC and OTLP/HTTP in, the blackhole exporter out, and
/// a detailed debug log of what it received (`debug`: "metrics", "traces", ...).
pub struct Rotel {
    _child: tokio::process::Child,
    log: PathBuf,
    pub grpc: u16,
    pub http: u16,
}

impl Rotel {
    pub async fn start(dir: &Path, debug: &[&str]) -> anyhow::Result<Rotel> {
        let bin = rotel_bin().context("rotel not found: run scripts/install-deps.sh (pip install rotel)")?;
        let [grpc, http] = free_ports::<2>();
        let log = dir.join("rotel.log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--exporter", "blackhole"]);
        for d in debug {
            cmd.args(["--debug-log", d]);
        }
        let child = cmd
            .args(["--debug-log-verbosity", "detailed"])
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        wait_until(START, "rotel listening (OTLP/gRPC and OTLP/HTTP)", || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", grpc)).await.is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", http)).await.is_ok())
        })
        .await?;
        Ok(Rotel { _child: child, log, grpc, http })
    }

    /// The OTLP/gRPC endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Debian's `prometheus` binary, if installed.
pub fn prometheus_bin() -> Option<PathBuf> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// One series of an instant query: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// A real Prometheus on loopback scraping both services with `deploy/dashboards/prometheus.yml`
/// (the targets pointed at the given ports, `scrape` as the interval).
pub struct Prometheus {
    _child: tokio::process::Child,
    pub port: u16,
    log: PathBuf,
}

impl Prometheus {
    pub async fn start(
        dir: &Path,
        ingest_port: u16,
        print_port: u16,
        scrape: Duration,
        port: Option<u16>,
    ) -> anyhow::Result<Prometheus> {
        let bin = prometheus_bin().context("prometheus not found: run scripts/install-deps.sh (apt prometheus)")?;
        let shipped = std::fs::read_to_string(dashboards_dir().join("prometheus.yml"))?;
        let interval = format!("{}s", scrape.as_secs().max(1));
        let config = shipped
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{ingest_port}"))
            .replace("127.0.0.1:9465", &format!("127.0.0.1:{print_port}"))
            .replace("scrape_interval: 15s", &format!("scrape_interval: {interval}"))
            .replace("evaluation_interval: 15s", &format!("evaluation_interval: {interval}"));
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config)?;
        let port = port.unwrap_or_else(free_port);
        let log = dir.join("prometheus.log");
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus")?;
        let p = Prometheus { _child: child, port, log };
        let pr = &p;
        wait_until(START, "prometheus ready", || async move {
            Ok(reqwest::get(format!("{}/-/ready", pr.url())).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query through the HTTP API: every series with its value (NaN included).
    pub async fn query(&self, q: &str) -> anyhow::Result<Vec<Sample>> {
        instant_query(&reqwest::Client::new(), &self.url(), q).await
    }
}

/// An instant query against the Prometheus at `base` (`http://host:port`): every series of a
/// vector (or the one value of a scalar) with its labels; a failed query names itself.
pub async fn instant_query(http: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<Vec<Sample>> {
    let encoded: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let v: serde_json::Value = http.get(format!("{base}/api/v1/query?query={encoded}")).send().await?.json().await?;
    if v["status"] != "success" {
        bail!("{q}: {}", v["error"]);
    }
    let mut out = Vec::new();
    let data = &v["data"];
    let results: Vec<&serde_json::Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        Some("scalar") => vec![data],
        other => bail!("{q}: unexpected result type {other:?}"),
    };
    for r in results {
        let value = if data["resultType"] == "scalar" { &r["result"][1] } else { &r["value"][1] };
        let value = value.as_str().and_then(|s| s.parse::<f64>().ok()).context("a value")?;
        let labels = r["metric"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
            .unwrap_or_default();
        out.push((labels, value));
    }
    Ok(out)
}

/// `deploy/dashboards/panels.toml`.
#[derive(Debug, Deserialize)]
pub struct Panels {
    pub panel: Vec<Panel>,
}

#[derive(Debug, Deserialize)]
pub struct Panel {
    pub row: String,
    pub title: String,
    pub kind: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub description: String,
    pub query: Vec<PanelQuery>,
}

#[derive(Debug, Deserialize)]
pub struct PanelQuery {
    pub expr: String,
    #[serde(default)]
    pub legend: String,
    pub check: Check,
}

/// What a query's values must be after the test's scenario (see panels.toml's header).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub any_min: Option<f64>,
    pub per_order: Option<f64>,
}

impl Check {
    /// Why `samples` do not pass (None: they do). Every query must return data.
    pub fn failure(&self, samples: &[Sample], orders: f64) -> Option<String> {
        if samples.is_empty() {
            return Some("no data".into());
        }
        if let Some((l, v)) = samples.iter().find(|(_, v)| !v.is_finite()) {
            return Some(format!("{v} for {l:?}"));
        }
        if let Some(min) = self.min
            && let Some((l, v)) = samples.iter().find(|(_, v)| *v < min)
        {
            return Some(format!("{v} < {min} for {l:?}"));
        }
        if let Some(max) = self.max
            && let Some((l, v)) = samples.iter().find(|(_, v)| *v > max)
        {
            return Some(format!("{v} > {max} for {l:?}"));
        }
        if let Some(any) = self.any_min
            && !samples.iter().any(|(_, v)| *v >= any)
        {
            return Some(format!("no value >= {any}"));
        }
        if let Some(k) = self.per_order {
            let sum: f64 = samples.iter().map(|(_, v)| v).sum();
            if (sum - k * orders).abs() > 1e-9 {
                return Some(format!("sum {sum} != {k} x {orders} orders"));
            }
        }
        None
    }
}

impl Panels {
    pub fn load() -> anyhow::Result<Panels> {
        let path = dashboards_dir().join("panels.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Every query with its panel's title.
    pub fn queries(&self) -> impl Iterator<Item = (&Panel, &PanelQuery)> {
        self.panel.iter().flat_map(|p| p.query.iter().map(move |q| (p, q)))
    }
}

/// Every panel query in the generated Grafana dashboard (`wixprint.json`), in order.
pub fn dashboard_exprs() -> anyhow::Result<Vec<String>> {
    let path = dashboards_dir().join("wixprint.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut out = Vec::new();
    for p in v["panels"].as_array().context("panels")? {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().context("expr")?.to_owned());
        }
    }
    Ok(out)
}

/// `GET /metrics` on a service's Prometheus endpoint.
pub async fn scrape(port: u16) -> anyhow::Result<String> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?;
    if !resp.status().is_success() {
        bail!("metrics endpoint answered {}", resp.status());
    }
    Ok(resp.text().await?)
}

/// The sum of every sample of `name` (any labels) whose labels contain all of `labels`.
pub fn sample_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
