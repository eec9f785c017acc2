//! `compose-driver`: the fault scenarios of the docker compose stack (`compose/run-tests.sh`).
//!
//! Runs on the host, against what `compose/docker-compose.test.yml` publishes on 127.0.0.1
//! (random ports, found with `docker port`): the webhook, both admin gRPC services (with their
//! bearer tokens), the printer simulators' control ports, the fake Wix API's control port and
//! Prometheus. It plays Wix (webhooks signed with the stack's private key, retried until
//! answered 200 as Wix retries) and the operator (docker kill / pause / stop / start / network
//! disconnect / compose down + up), and judges by what is on paper: the printers' journals
//! (`printer-sim --journal`, kept on volumes), read through their control ports.
//!
//! What every scenario requires of the orders it sends: each order's three tickets (kitchen,
//! driver, customer) on paper, complete; at most one copy of each without the `KOPIE / REPRINT`
//! banner (a duplicate is always flagged); kitchen tickets on the kitchen printer, or on the
//! front printer with the `FÜR/FOR: KITCHEN` banner; nothing left in ingest's outbox or in the
//! print queue. Waits poll a readiness signal (GetStatus, paper, Prometheus) with a deadline;
//! nothing sleeps for a guessed time. Prints each check; ends with "N passed, M failed" (one
//! per scenario) and exits 1 if any failed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use wixprint_shared::proto::ingest::ingest_admin_client::IngestAdminClient;
use wixprint_shared::proto::ingest::{self as iapi};
use wixprint_shared::proto::print::print_admin_client::PrintAdminClient;
use wixprint_shared::proto::print::{self as papi, JobState};
use wixprint_tests::fake_wix::order_from_template;
use wixprint_tests::harness::{IngestAdmin, PrintAdmin, client_auth};
use wixprint_tests::webhook::{KeyPair, distinct_order, fixture, order_mut};

const USAGE: &str =
    "usage: compose-driver --project NAME --secrets DIR [--failover-secs N] [--high-total AMOUNT] -- COMPOSE...
Runs the docker compose fault scenarios against a running stack (compose/run-tests.sh starts it).
  --project NAME       the compose project (its containers, networks and volumes carry its label)
  --secrets DIR        the stack's secrets (compose/make-secrets.sh): tokens, wix-private.pem
  --failover-secs N    wix-print's PRINT_FAILOVER_AFTER_SECS in the stack (default 5)
  --high-total AMOUNT  wix-print's PRINT_HIGH_PRIORITY_TOTAL in the stack (default 500)
  --only a,b,...       run only these scenarios (names as printed)
  -- COMPOSE...        the compose command with its files, e.g.
                       docker-compose -p NAME -f compose/docker-compose.yml -f compose/docker-compose.test.yml
Prints every check, then \"N passed, M failed\"; exits 1 if a scenario failed.
  -h, --help     this text
  -V, --version  the version";

/// How long the stack may take to become ready (all containers started, printers online,
/// internet online, both services hearing each other on the bus).
const READY: Duration = Duration::from_secs(90);
/// How long a batch of orders may take to reach paper once nothing stands in its way.
const PRINTED: Duration = Duration::from_secs(90);
/// Polling period of every wait.
const POLL: Duration = Duration::from_millis(200);

struct Args {
    project: String,
    secrets: PathBuf,
    failover_secs: u64,
    high_total: f64,
    only: Option<Vec<String>>,
    compose: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    wixprint_tests::cli::help_or_version("compose-driver", USAGE);
    let mut argv = std::env::args().skip(1);
    let (mut project, mut secrets, mut failover_secs, mut high_total, mut only) = (None, None, 5, 500.0, None);
    let mut compose = Vec::new();
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--project" => project = Some(value()?),
            "--secrets" => secrets = Some(PathBuf::from(value()?)),
            "--failover-secs" => failover_secs = value()?.parse().context("--failover-secs N")?,
            "--high-total" => high_total = value()?.parse().context("--high-total AMOUNT")?,
            "--only" => only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--" => {
                compose = argv.by_ref().collect();
                break;
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(!compose.is_empty(), "the compose command is missing after --\n{USAGE}");
    Ok(Args {
        project: project.with_context(|| format!("--project is required\n{USAGE}"))?,
        secrets: secrets.with_context(|| format!("--secrets is required\n{USAGE}"))?,
        failover_secs,
        high_total,
        only,
        compose,
    })
}

// ---------------------------------------------------------------------------------------------
// Commands

async fn run(program: &str, args: &[String]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run("docker", &args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).await
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

// ---------------------------------------------------------------------------------------------
// Paper

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Receipt {
    Kitchen,
    Driver,
    Customer,
}

const RECEIPTS: [Receipt; 3] = [Receipt::Kitchen, Receipt::Driver, Receipt::Customer];

#[derive(Debug, Deserialize)]
struct Entry {
    seq: u64,
    complete: bool,
    text: String,
    printed_at_ms: u64,
}

/// One ticket on paper, as a printer's journal has it, and what it says.
#[derive(Debug, Clone)]
struct Printed {
    printer: &'static str,
    seq: u64,
    complete: bool,
    text: String,
    printed_at_ms: u64,
    number: Option<u32>,
    receipt: Option<Receipt>,
    /// `KOPIE / REPRINT`: a copy of a ticket that may already be on paper.
    reprint: bool,
    /// `FÜR/FOR: <PRINTER>`: printed here for another printer (failover).
    for_printer: Option<String>,
}

impl Printed {
    fn new(printer: &'static str, e: Entry) -> Printed {
        let number = e.text.split('#').skip(1).find_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        let receipt = e.text.lines().map(str::trim).find_map(|line| match line {
            "KÜCHE" | "KITCHEN" => Some(Receipt::Kitchen),
            "FAHRER" | "ABHOLSCHEIN" | "DRIVER" | "PICKUP SLIP" => Some(Receipt::Driver),
            "BELEG" | "RECEIPT" => Some(Receipt::Customer),
            _ => None,
        });
        let for_printer = e
            .text
            .lines()
            .find_map(|l| l.split_once("FOR: ").map(|(_, p)| p.trim().trim_end_matches('*').trim().to_owned()));
        Printed {
            printer,
            seq: e.seq,
            complete: e.complete,
            reprint: e.text.contains("KOPIE / REPRINT"),
            text: e.text,
            printed_at_ms: e.printed_at_ms,
            number,
            receipt,
            for_printer,
        }
    }

    fn is(&self, number: u32, receipt: Receipt) -> bool {
        self.complete && self.number == Some(number) && self.receipt == Some(receipt)
    }
}

/// What a batch of orders put on paper.
#[derive(Debug, Default)]
struct Tally {
    tickets: usize,
    reprints: usize,
    failovers: usize,
    partial: usize,
}

/// The orders' tickets are all on paper, complete, each at most once without the KOPIE
/// banner, each on its printer (kitchen tickets on the backup only with the FOR banner).
fn verify(paper: &[Printed], numbers: &[u32]) -> anyhow::Result<Tally> {
    let wanted: BTreeSet<u32> = numbers.iter().copied().collect();
    let mut tally = Tally::default();
    for t in paper.iter().filter(|t| t.number.is_some_and(|n| wanted.contains(&n))) {
        if !t.complete {
            tally.partial += 1;
            continue;
        }
        let receipt = t.receipt.with_context(|| format!("a ticket of no known receipt type:\n{}", t.text))?;
        tally.tickets += 1;
        tally.reprints += usize::from(t.reprint);
        match (receipt, t.printer, t.for_printer.as_deref()) {
            (Receipt::Kitchen, "kitchen", None) => {}
            (Receipt::Kitchen, "front", Some("KITCHEN")) => tally.failovers += 1,
            (Receipt::Driver | Receipt::Customer, "front", None) => {}
            (r, p, banner) => {
                bail!("{r:?} ticket of #{:?} on printer {p} with banner {banner:?}:\n{}", t.number, t.text)
            }
        }
    }
    let mut problems = Vec::new();
    for &n in numbers {
        for r in RECEIPTS {
            let copies: Vec<&Printed> = paper.iter().filter(|t| t.is(n, r)).collect();
            if copies.is_empty() {
                problems.push(format!("#{n} {r:?}: not on paper"));
            }
            let unflagged = copies.iter().filter(|t| !t.reprint).count();
            if unflagged > 1 {
                let seqs: Vec<String> = copies.iter().map(|t| format!("{}#{}", t.printer, t.seq)).collect();
                problems.push(format!("#{n} {r:?}: {unflagged} copies without the KOPIE banner ({})", seqs.join(", ")));
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// The stack

/// The host addresses the test override publishes (found again after a restart).
#[derive(Debug, Clone, Default)]
struct Endpoints {
    webhook: String,
    ingest: String,
    print: String,
    kitchen: String,
    front: String,
    fake_wix: String,
    prometheus: String,
}

struct Driver {
    project: String,
    compose: Vec<String>,
    keys: KeyPair,
    ingest_token: String,
    print_token: String,
    failover_secs: u64,
    high_total: f64,
    ep: Endpoints,
    http: reqwest::Client,
    next_order: u64,
    /// Every order sent, by number: its inner event.
    orders: BTreeMap<u32, Value>,
    /// Orders that may legitimately carry the KOPIE banner (a service was killed under them).
    reprint_allowed: BTreeSet<u32>,
    checks: usize,
    /// Printers whose container a scenario stopped, with their paper as it was: a stopped
    /// printer's journal cannot change, and its control port is gone.
    stopped: std::sync::Mutex<BTreeMap<&'static str, Vec<Printed>>>,
}

impl Driver {
    async fn new(args: &Args) -> anyhow::Result<Driver> {
        let read = |name: &str| {
            std::fs::read_to_string(args.secrets.join(name))
                .map(|t| t.trim().to_owned())
                .with_context(|| format!("reading {}", args.secrets.join(name).display()))
        };
        let keys = KeyPair::from_private_pem(&read("wix-private.pem")?)?;
        let mut d = Driver {
            project: args.project.clone(),
            compose: args.compose.clone(),
            keys,
            ingest_token: read("ingest-admin.token")?,
            print_token: read("print-admin.token")?,
            failover_secs: args.failover_secs,
            high_total: args.high_total,
            ep: Endpoints::default(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            next_order: 0,
            orders: BTreeMap::new(),
            reprint_allowed: BTreeSet::new(),
            checks: 0,
            stopped: std::sync::Mutex::new(BTreeMap::new()),
        };
        d.discover().await?;
        Ok(d)
    }

    fn ok(&mut self, what: impl AsRef<str>) {
        self.checks += 1;
        println!("  ok    {}", what.as_ref());
    }

    async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all: Vec<String> = self.compose[1..].to_vec();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run(&self.compose[0], &all).await
    }

    /// The container of a compose service (by the labels both Compose versions set).
    async fn container(&self, service: &str) -> anyhow::Result<String> {
        let out = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .await?;
        let ids: Vec<&str> = out.split_whitespace().collect();
        match ids.as_slice() {
            [id] => Ok((*id).to_owned()),
            _ => bail!("compose service {service}: expected one container, found {ids:?}"),
        }
    }

    async fn network(&self, name: &str) -> anyhow::Result<String> {
        let out = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.network={name}"),
        ])
        .await?;
        out.split_whitespace().next().map(str::to_owned).with_context(|| format!("no compose network {name}"))
    }

    async fn state(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        Ok(docker(&["inspect", "-f", "{{.State.Status}}", &id]).await?.trim().to_owned())
    }

    /// `127.0.0.1:PORT` where `service`'s container `port` is published.
    async fn published(&self, service: &str, port: u16) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        let out = docker(&["port", &id, &format!("{port}/tcp")]).await?;
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with("127.0.0.1:"))
            .map(str::to_owned)
            .with_context(|| format!("{service} {port}/tcp is not published on 127.0.0.1: {out:?}"))
    }

    async fn discover(&mut self) -> anyhow::Result<()> {
        self.ep = Endpoints {
            webhook: format!("http://{}/webhooks/wix", self.published("ingest-net", 8080).await?),
            ingest: self.published("ingest-net", 50051).await?,
            print: self.published("print-net", 50052).await?,
            kitchen: self.published("printer-kitchen", 9101).await?,
            front: self.published("printer-front", 9101).await?,
            fake_wix: format!("http://{}", self.published("fake-wix", 8081).await?),
            prometheus: format!("http://{}", self.published("prometheus", 9090).await?),
        };
        Ok(())
    }

    async fn channel(addr: &str) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?)
    }

    async fn ingest(&self) -> anyhow::Result<IngestAdmin> {
        Ok(IngestAdminClient::with_interceptor(
            Self::channel(&self.ep.ingest).await?,
            client_auth(Some(&self.ingest_token)),
        ))
    }

    async fn print(&self) -> anyhow::Result<PrintAdmin> {
        Ok(PrintAdminClient::with_interceptor(
            Self::channel(&self.ep.print).await?,
            client_auth(Some(&self.print_token)),
        ))
    }

    async fn ingest_status(&self) -> anyhow::Result<iapi::GetStatusResponse> {
        Ok(self.ingest().await?.get_status(iapi::GetStatusRequest {}).await?.into_inner())
    }

    async fn print_status(&self) -> anyhow::Result<papi::GetStatusResponse> {
        Ok(self.print().await?.get_status(papi::GetStatusRequest {}).await?.into_inner())
    }

    async fn internet_state(&self) -> anyhow::Result<String> {
        let st = self.ingest_status().await?;
        Ok(st.connectivity.iter().find(|c| c.kind == "internet").map(|c| c.state.clone()).unwrap_or_default())
    }

    async fn printer_state(&self, name: &str) -> anyhow::Result<String> {
        let st = self.print_status().await?;
        Ok(st.printers.iter().find(|p| p.name == name).map(|p| p.state.clone()).unwrap_or_default())
    }

    /// One line-based command on a printer's control port; `tickets` answers many lines.
    async fn control(addr: &str, command: &str) -> anyhow::Result<Vec<String>> {
        let talk = async {
            let mut conn = TcpStream::connect(addr).await?;
            conn.write_all(format!("{command}\n").as_bytes()).await?;
            let (read, _write) = conn.split();
            let mut lines = BufReader::new(read).lines();
            let mut out = Vec::new();
            while let Some(line) = lines.next_line().await? {
                if !command.starts_with("tickets") {
                    out.push(line);
                    break;
                }
                if line == "end" {
                    break;
                }
                out.push(line);
            }
            anyhow::Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(10), talk).await.context("printer control port timed out")?
    }

    async fn paper_of(&self, printer: &'static str) -> anyhow::Result<Vec<Printed>> {
        if let Some(paper) = self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(printer) {
            return Ok(paper.clone());
        }
        let addr = if printer == "kitchen" { &self.ep.kitchen } else { &self.ep.front };
        Self::control(addr, "tickets 0")
            .await?
            .iter()
            .map(|l| Ok(Printed::new(printer, serde_json::from_str(l).with_context(|| format!("journal line {l}"))?)))
            .collect()
    }

    /// Everything on paper, both printers.
    async fn paper(&self) -> anyhow::Result<Vec<Printed>> {
        let mut all = self.paper_of("kitchen").await?;
        all.extend(self.paper_of("front").await?);
        Ok(all)
    }

    /// Polls `check` until it says yes or `within` passes; the error names `what` and the
    /// last answer.
    async fn wait_for<F, Fut>(&self, within: Duration, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Result<(), String>>>,
    {
        let deadline = Instant::now() + within;
        loop {
            let last = match check().await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) => why,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("timed out after {within:?} waiting for {what}: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Both services answer with their tokens, both printers and the internet are online and
    /// each service hears the other on the bus.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_for(READY, "the stack to be ready", || async {
            let i = self.ingest_status().await?;
            let p = self.print_status().await?;
            let internet = i.connectivity.iter().find(|c| c.kind == "internet").map(|c| c.state.as_str());
            let printers: Vec<(&str, &str)> = p.printers.iter().map(|x| (x.name.as_str(), x.state.as_str())).collect();
            let ingest_peer = i.peer.as_ref().map(|x| x.state.as_str());
            let print_peer = p.peer.as_ref().map(|x| x.state.as_str());
            let ready = internet == Some("online")
                && printers.len() == 2
                && printers.iter().all(|(_, s)| *s == "online")
                && ingest_peer == Some("live")
                && print_peer == Some("live");
            Ok(if ready {
                Ok(())
            } else {
                Err(format!(
                    "internet {internet:?}, printers {printers:?}, ingest hears wix-print {ingest_peer:?}, wix-print hears ingest {print_peer:?}"
                ))
            })
        })
        .await
    }

    /// Ingest's outbox is empty (none dead) and no print job is open (none dead).
    async fn wait_quiet(&self) -> anyhow::Result<()> {
        self.wait_for(PRINTED, "the pipeline to be quiet", || async {
            let i = self.ingest_status().await?;
            let p = self.print_status().await?;
            ensure!(i.outbox_dead == 0, "ingest has {} dead outbox rows", i.outbox_dead);
            let open: Vec<String> = p
                .jobs
                .iter()
                .filter(|c| c.count > 0)
                .filter(|c| !matches!(JobState::try_from(c.state), Ok(JobState::Printed | JobState::Cancelled)))
                .map(|c| format!("{:?}: {}", JobState::try_from(c.state), c.count))
                .collect();
            ensure!(!open.iter().any(|o| o.starts_with("Ok(Dead)")), "dead print jobs: {open:?}");
            Ok(if i.outbox_pending == 0 && i.held_events == 0 && open.is_empty() {
                Ok(())
            } else {
                Err(format!("outbox pending {}, held {}, open jobs {open:?}", i.outbox_pending, i.held_events))
            })
        })
        .await
    }

    /// A new order (number 20000 + n), alternating the pickup and delivery fixtures.
    fn new_order(&mut self) -> (u32, Value) {
        self.next_order += 1;
        let n = self.next_order;
        let name = if n.is_multiple_of(2) { "order_created.pickup.json" } else { "order_approved.delivery.json" };
        let ev = distinct_order(name, n);
        let number = 20_000 + u32::try_from(n).unwrap_or(u32::MAX - 20_000);
        self.orders.insert(number, ev.clone());
        (number, ev)
    }

    fn orders(&mut self, count: usize) -> Vec<(u32, Value)> {
        (0..count).map(|_| self.new_order()).collect()
    }

    /// Posts a signed event until wix-ingest answers 200, as Wix retries.
    async fn post(http: &reqwest::Client, url: &str, body: String, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = match http.post(url).header("content-type", "text/plain").body(body.clone()).send().await {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!("webhook not accepted within {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send(&self, events: &[(u32, Value)]) -> anyhow::Result<()> {
        for (_, ev) in events {
            Self::post(&self.http, &self.ep.webhook, self.keys.sign_event(ev), Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// Sends `events` at `per_second` from `workers` concurrent posters (each retrying until
    /// 200, as Wix does); the counter counts accepted webhooks.
    fn send_in_background(
        &self,
        events: &[(u32, Value)],
        workers: usize,
        per_second: f64,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let pace = Arc::new(tokio::sync::Mutex::new(tokio::time::interval(Duration::from_secs_f64(1.0 / per_second))));
        let bodies: Arc<Vec<String>> = Arc::new(events.iter().map(|(_, ev)| self.keys.sign_event(ev)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (http, url) = (self.http.clone(), self.ep.webhook.clone());
        let acc = Arc::clone(&accepted);
        let handle = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..workers {
                let (bodies, next, acc, http, url, pace) = (
                    Arc::clone(&bodies),
                    Arc::clone(&next),
                    Arc::clone(&acc),
                    http.clone(),
                    url.clone(),
                    Arc::clone(&pace),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        pace.lock().await.tick().await;
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                        Self::post(&http, &url, body.clone(), Duration::from_secs(90)).await?;
                        acc.fetch_add(1, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            Ok(())
        });
        (accepted, handle)
    }

    /// Waits until every order's three tickets are on paper, then until the pipeline is quiet
    /// (a late duplicate would show), and verifies the paper.
    async fn wait_printed(&self, numbers: &[u32]) -> anyhow::Result<(Tally, Vec<Printed>)> {
        self.wait_for(PRINTED, &format!("{} orders on paper", numbers.len()), || async {
            let paper = self.paper().await?;
            let missing: Vec<String> = numbers
                .iter()
                .flat_map(|&n| RECEIPTS.iter().map(move |&r| (n, r)))
                .filter(|&(n, r)| !paper.iter().any(|t| t.is(n, r)))
                .map(|(n, r)| format!("#{n} {r:?}"))
                .collect();
            Ok(if missing.is_empty() { Ok(()) } else { Err(format!("missing {}", missing.join(", "))) })
        })
        .await?;
        self.wait_quiet().await?;
        let paper = self.paper().await?;
        let tally = verify(&paper, numbers)?;
        Ok((tally, paper))
    }

    /// Kills a container with SIGKILL and brings it back (`docker start`, unless its restart
    /// policy already did), then waits for the stack to be ready.
    async fn kill_and_restart(&mut self, service: &str) -> anyhow::Result<()> {
        let killed = self.kill(service).await?;
        self.ok(format!("docker kill {service} (SIGKILL)"));
        self.restart_killed(service, &killed).await
    }

    /// `docker kill` (SIGKILL); returns the container and when it had started.
    async fn kill(&self, service: &str) -> anyhow::Result<(String, String)> {
        let id = self.container(service).await?;
        let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]).await?;
        docker(&["kill", &id]).await?;
        Ok((id, started))
    }

    /// After [`Driver::kill`]: waits for the restart policy to restart the container, or
    /// starts it, then for the stack to be ready.
    async fn restart_killed(&mut self, service: &str, (id, started_before): &(String, String)) -> anyhow::Result<()> {
        // Restarted by the restart policy, or stopped for good: start it (a no-op if running).
        self.wait_for(Duration::from_secs(30), &format!("{service} to stop or restart"), || async {
            let out = docker(&["inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", id]).await?;
            let (status, started) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
            Ok(match status {
                "exited" | "dead" => Ok(()),
                "running" if started != started_before.trim() => Ok(()),
                other => Err(format!("state {other}")),
            })
        })
        .await?;
        let policy = if self.state(service).await? == "running" {
            "restarted by its restart policy"
        } else {
            docker(&["start", id]).await?;
            "docker start"
        };
        self.rediscover().await?;
        self.wait_ready().await?;
        self.ok(format!("{service} is back ({policy}): both services answer, printers and internet online, bus live"));
        Ok(())
    }

    /// `docker stop` of a printer's container (its paper remembered), and wix-print noticing.
    async fn stop_printer(&mut self, printer: &'static str) -> anyhow::Result<()> {
        let paper = self.paper_of(printer).await?;
        let id = self.container(&format!("printer-{printer}")).await?;
        self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(printer, paper);
        docker(&["stop", &id]).await?;
        self.ok(format!("docker stop printer-{printer}"));
        self.wait_for(Duration::from_secs(30), &format!("wix-print to see the {printer} printer gone"), || async {
            let s = self.printer_state(printer).await?;
            Ok(if s != "online" { Ok(()) } else { Err(s) })
        })
        .await?;
        self.ok(format!("wix-print: {printer} printer {}", self.printer_state(printer).await?));
        Ok(())
    }

    /// `docker start` of a printer's container; its control port has a new host port.
    async fn start_printer(&mut self, printer: &'static str) -> anyhow::Result<()> {
        let id = self.container(&format!("printer-{printer}")).await?;
        docker(&["start", &id]).await?;
        self.rediscover().await?;
        self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(printer);
        self.ok(format!("docker start printer-{printer}"));
        Ok(())
    }

    /// Finds the published ports again (a restarted container gets new host ports).
    async fn rediscover(&mut self) -> anyhow::Result<()> {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.discover().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(POLL).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no published ports")))
    }

    /// Undoes what a failed scenario may have left: paused or stopped containers, the
    /// internet network detached.
    async fn heal(&mut self) {
        for service in [
            "ingest-net",
            "wix-ingest",
            "print-net",
            "wix-print",
            "printer-kitchen",
            "printer-front",
            "fake-wix",
            "collector",
            "prometheus",
        ] {
            if let Ok(id) = self.container(service).await {
                match self.state(service).await.as_deref() {
                    Ok("paused") => drop(docker(&["unpause", &id]).await),
                    Ok("exited" | "created") => drop(docker(&["start", &id]).await),
                    _ => {}
                }
            }
        }
        if let (Ok(net), Ok(id)) = (self.network("internet").await, self.container("ingest-net").await) {
            // Fails harmlessly when it is still connected.
            let _ = docker(&["network", "connect", &net, &id]).await;
        }
        self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let _ = self.rediscover().await;
        if let Err(e) = self.wait_ready().await {
            println!("  (after the failure the stack did not become ready again: {e:#})");
        }
    }

    fn report(&mut self, numbers: &[u32], tally: &Tally) {
        self.ok(format!(
            "{} orders: all {} tickets on paper ({} complete tickets, {} with KOPIE, {} failed over, {} partial); no unflagged duplicate; outbox empty, print queue empty",
            numbers.len(),
            3 * numbers.len(),
            tally.tickets,
            tally.reprints,
            tally.failovers,
            tally.partial
        ));
    }

    async fn prometheus(&self, query: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        wixprint_tests::observability::instant_query(&self.http, &self.ep.prometheus, query).await
    }

    async fn prometheus_value(&self, query: &str) -> anyhow::Result<Option<f64>> {
        Ok(self.prometheus(query).await?.first().map(|(_, v)| *v))
    }

    // -----------------------------------------------------------------------------------------
    // Scenarios

    /// The stack as started: ready, only the expected ports published (all on loopback), and
    /// orders print on the right printers without banners.
    async fn baseline(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        self.ok("both services answer GetStatus with their tokens; printers kitchen and front online; internet online; bus live both ways");

        // Tokens are required off loopback: no token, no answer.
        let mut open = IngestAdminClient::new(Self::channel(&self.ep.ingest).await?);
        let refused = open.get_status(iapi::GetStatusRequest {}).await;
        ensure!(
            refused.as_ref().is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
            "IngestAdmin answered without a token: {refused:?}"
        );
        let mut open = PrintAdminClient::new(Self::channel(&self.ep.print).await?);
        let refused = open.get_status(papi::GetStatusRequest {}).await;
        ensure!(
            refused.as_ref().is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
            "PrintAdmin answered without a token: {refused:?}"
        );
        self.ok("admin calls without the bearer token are UNAUTHENTICATED (both services)");

        // Published ports: exactly the test override's, all on 127.0.0.1.
        let ids =
            docker(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={}", self.project)]).await?;
        let mut published = BTreeSet::new();
        for id in ids.split_whitespace() {
            let out = docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.docker.compose.service\"}} {{json .NetworkSettings.Ports}}",
                id,
            ])
            .await?;
            let (service, ports) = out.trim().split_once(' ').context("docker inspect output")?;
            let ports: Value = serde_json::from_str(ports).unwrap_or(Value::Null);
            for (port, bindings) in ports.as_object().into_iter().flatten() {
                for b in bindings.as_array().into_iter().flatten() {
                    let ip = b["HostIp"].as_str().unwrap_or_default();
                    ensure!(ip == "127.0.0.1", "{service} {port} is published on {ip:?}, not 127.0.0.1");
                    published.insert(format!("{service} {port}"));
                }
            }
        }
        let expected: BTreeSet<String> = [
            "ingest-net 8080/tcp",
            "ingest-net 50051/tcp",
            "print-net 50052/tcp",
            "printer-kitchen 9101/tcp",
            "printer-front 9101/tcp",
            "fake-wix 8081/tcp",
            "prometheus 9090/tcp",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        ensure!(published == expected, "published ports {published:?}, expected {expected:?}");
        self.ok(format!(
            "published: {} (all on 127.0.0.1; nothing else)",
            published.into_iter().collect::<Vec<_>>().join(", ")
        ));

        let batch = self.orders(5);
        self.send(&batch).await?;
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        let (tally, _) = self.wait_printed(&numbers).await?;
        ensure!(tally.reprints == 0 && tally.failovers == 0, "banners without a fault: {tally:?}");
        self.report(&numbers, &tally);
        Ok(())
    }

    /// `docker kill` of wix-ingest while webhooks arrive: Wix's retries and the outbox lose
    /// nothing; duplicates (if any) carry the banner.
    async fn kill_ingest(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let batch = self.orders(30);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.reprint_allowed.extend(&numbers);
        let (accepted, load) = self.send_in_background(&batch, 3, 15.0);
        self.wait_for(Duration::from_secs(60), "10 webhooks accepted", || {
            let n = accepted.load(Ordering::SeqCst);
            async move { Ok(if n >= 10 { Ok(()) } else { Err(format!("{n} accepted")) }) }
        })
        .await?;
        let at_kill = accepted.load(Ordering::SeqCst);
        self.kill_and_restart("wix-ingest").await?;
        ensure!(at_kill < 30, "the kill came after the load: all {at_kill} webhooks were already accepted");
        load.await??;
        self.ok(format!("mid-load: {at_kill} of 30 webhooks accepted before the kill; all 30 answered 200 in the end (retried as Wix does)"));
        let (tally, _) = self.wait_printed(&numbers).await?;
        self.report(&numbers, &tally);
        let st = self.ingest_status().await?;
        ensure!(st.orders >= numbers.len() as u64, "ingest knows {} orders", st.orders);
        Ok(())
    }

    /// `docker kill` of wix-print while tickets print: every ticket prints; one whose outcome
    /// was unknown comes again with KOPIE, never silently.
    async fn kill_print(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let batch = self.orders(30);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.reprint_allowed.extend(&numbers);
        let wanted: BTreeSet<u32> = numbers.iter().copied().collect();
        let (accepted, load) = self.send_in_background(&batch, 3, 15.0);
        let (w, this) = (&wanted, &*self);
        self.wait_for(Duration::from_secs(60), "15 tickets of the batch on paper", || async move {
            let n = this.paper().await?.iter().filter(|t| t.number.is_some_and(|n| w.contains(&n))).count();
            Ok(if n >= 15 { Ok(()) } else { Err(format!("{n} on paper")) })
        })
        .await?;
        // A ticket in doubt at the kill: the front printer prints but stops confirming, so its
        // current ticket waits in awaiting_confirm when the process dies.
        let reply = Self::control(&self.ep.front, "mode withhold_confirm").await?;
        ensure!(reply.first().map(String::as_str) == Some("ok"), "printer-front: {reply:?}");
        self.wait_for(Duration::from_secs(30), "a front ticket awaiting its confirmation", || async {
            let request =
                papi::ListJobsRequest { state: JobState::AwaitingConfirm as i32, limit: 1000, ..Default::default() };
            let jobs = self.print().await?.list_jobs(request).await?.into_inner().jobs;
            Ok(if jobs.iter().any(|j| j.printer == "front") {
                Ok(())
            } else {
                Err(format!("awaiting confirmation: {:?}", jobs.iter().map(|j| &j.printer).collect::<Vec<_>>()))
            })
        })
        .await?;
        let on_paper = self.paper().await?.iter().filter(|t| t.number.is_some_and(|n| wanted.contains(&n))).count();
        let at_kill = accepted.load(Ordering::SeqCst);
        let killed = self.kill("wix-print").await?;
        let reply = Self::control(&self.ep.front, "mode online").await?;
        ensure!(reply.first().map(String::as_str) == Some("ok"), "printer-front: {reply:?}");
        ensure!(
            on_paper < 90 && at_kill < 30,
            "the kill came after the load: {at_kill} accepted, {on_paper} tickets printed"
        );
        self.ok(format!(
            "docker kill wix-print mid-load, a front ticket awaiting its confirmation: {at_kill} of 30 webhooks accepted, {on_paper} of 90 tickets on paper"
        ));
        self.restart_killed("wix-print", &killed).await?;
        load.await??;
        let (tally, _) = self.wait_printed(&numbers).await?;
        ensure!(tally.reprints >= 1, "the ticket in doubt came back without the KOPIE banner: {tally:?}");
        self.report(&numbers, &tally);
        Ok(())
    }

    /// `docker pause` of wix-print: webhooks are still accepted, ingest's outbox holds the
    /// orders (none dead, nothing printed), and drains after `docker unpause`.
    async fn pause_print(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let id = self.container("wix-print").await?;
        let before = self.paper().await?.len();
        docker(&["pause", &id]).await?;
        self.ok("docker pause wix-print");
        let batch = self.orders(10);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.send(&batch).await?;
        self.ok("10 webhooks answered 200 while wix-print is frozen");
        // The outbox holds them until ingest has noticed wix-print is gone (silent on the bus).
        self.wait_for(
            Duration::from_secs(30),
            "ingest to hold 10 orders with wix-print unknown on the bus",
            || async {
                let st = self.ingest_status().await?;
                let peer = st.peer.as_ref().map(|p| p.state.clone()).unwrap_or_default();
                ensure!(st.outbox_dead == 0, "{} outbox rows went dead", st.outbox_dead);
                Ok(if st.outbox_pending >= 10 && peer == "unknown" {
                    Ok(())
                } else {
                    Err(format!("outbox pending {}, peer {peer}", st.outbox_pending))
                })
            },
        )
        .await?;
        let st = self.ingest_status().await?;
        ensure!(
            st.outbox_pending == 10 && st.outbox_dead == 0,
            "outbox pending {} dead {}",
            st.outbox_pending,
            st.outbox_dead
        );
        let during = self.paper().await?.len();
        ensure!(during == before, "{} tickets printed while wix-print was frozen", during - before);
        self.ok(format!(
            "outbox holds 10 pending (0 dead, last error {:?}); ingest sees wix-print unknown on the bus; nothing printed",
            st.outbox_last_error
        ));
        docker(&["unpause", &id]).await?;
        self.ok("docker unpause wix-print");
        let (tally, _) = self.wait_printed(&numbers).await?;
        ensure!(tally.reprints == 0, "KOPIE after a pause: {tally:?}");
        self.report(&numbers, &tally);
        Ok(())
    }

    /// The front printer's container stopped while orders arrive, then started: its backlog
    /// prints in priority order (a big order's slips first, then driver slips, then customer
    /// receipts), recorded as a completed recovery session.
    async fn printer_stop_start(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let front_before = self.paper_of("front").await?.len();
        self.stop_printer("front").await?;

        let mut batch = self.orders(4);
        let (big_number, mut big) = self.new_order();
        let amount = format!("{:.2}", self.high_total + 100.0);
        if let Some(order) = order_mut(&mut big) {
            order["priceSummary"]["total"] = json!({ "amount": amount, "formattedAmount": format!("CHF {amount}") });
        }
        self.orders.insert(big_number, big.clone());
        batch.push((big_number, big));
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.send(&batch).await?;
        // Every front ticket is queued before the printer returns (kitchen tickets print now).
        self.wait_for(Duration::from_secs(30), "10 tickets waiting for the front printer", || async {
            let q = self.print().await?.get_queue_status(papi::GetQueueStatusRequest {}).await?.into_inner();
            let waiting = q.printers.iter().find(|p| p.printer == "front").map_or(0, |p| p.waiting);
            Ok(if waiting >= 10 { Ok(()) } else { Err(format!("{waiting} waiting")) })
        })
        .await?;
        self.ok(format!("10 tickets wait for the front printer (#{big_number} is the big order, total {amount})"));
        let sessions_before = self
            .print()
            .await?
            .list_recovery_sessions(papi::ListRecoverySessionsRequest { printer: s("front"), limit: 1000 })
            .await?
            .into_inner()
            .sessions
            .len();

        self.start_printer("front").await?;
        let (tally, _) = self.wait_printed(&numbers).await?;
        self.report(&numbers, &tally);

        let front = self.paper_of("front").await?;
        let drained: Vec<&Printed> = front[front_before..].iter().filter(|t| t.complete).collect();
        let class = |t: &Printed| match (t.number == Some(big_number), t.receipt) {
            (true, _) => 1,
            (false, Some(Receipt::Driver)) => 2,
            (false, _) => 3,
        };
        let classes: Vec<u8> = drained.iter().map(|t| class(t)).collect();
        ensure!(
            drained.len() == 10,
            "the front printer printed {} tickets after it returned: {classes:?}",
            drained.len()
        );
        ensure!(
            classes.windows(2).all(|w| w[0] <= w[1]),
            "not in priority order (1 big, 2 driver, 3 customer): {classes:?}"
        );
        self.ok(format!("backlog printed in priority order: {classes:?} (1 = high: big order, 2 = normal: driver, 3 = low: customer)"));

        let sessions = self
            .print()
            .await?
            .list_recovery_sessions(papi::ListRecoverySessionsRequest { printer: s("front"), limit: 1000 })
            .await?
            .into_inner()
            .sessions;
        ensure!(sessions.len() > sessions_before, "no recovery session for the front printer: {sessions:?}");
        let newest = sessions.iter().max_by_key(|x| x.id).context("a session")?;
        self.wait_for(Duration::from_secs(30), "the recovery session to complete", || async {
            let list = self
                .print()
                .await?
                .list_recovery_sessions(papi::ListRecoverySessionsRequest { printer: s("front"), limit: 1000 })
                .await?
                .into_inner()
                .sessions;
            let x = list.iter().find(|x| x.id == newest.id).context("the session")?;
            Ok(if x.state == "completed" && x.done >= 10 {
                Ok(())
            } else {
                Err(format!("{} done {}/{}", x.state, x.done, x.total))
            })
        })
        .await?;
        self.ok(format!(
            "recovery session #{} for the front printer completed (trigger {})",
            newest.id, newest.trigger
        ));
        Ok(())
    }

    /// The kitchen printer's container down longer than PRINT_FAILOVER_AFTER_SECS: its tickets
    /// print on the backup (front) with the FOR: KITCHEN banner, once; when it returns, new
    /// kitchen tickets print there again and the moved ones are not printed twice.
    async fn kitchen_failover(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let kitchen_before = self.paper_of("kitchen").await?.len();
        let stopped = Instant::now();
        self.stop_printer("kitchen").await?;
        let batch = self.orders(3);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.send(&batch).await?;
        let (tally, paper) = self.wait_printed(&numbers).await?;
        let moved_after = stopped.elapsed();
        ensure!(tally.failovers == 3, "{} of 3 kitchen tickets failed over: {tally:?}", tally.failovers);
        ensure!(
            moved_after >= Duration::from_secs(self.failover_secs),
            "tickets moved after {moved_after:?}, before the failover time"
        );
        for n in &numbers {
            let t = paper.iter().find(|t| t.is(*n, Receipt::Kitchen)).context("kitchen ticket")?;
            ensure!(t.printer == "front" && t.for_printer.as_deref() == Some("KITCHEN"), "#{n}: {t:?}");
        }
        self.report(&numbers, &tally);
        self.ok(format!(
            "the 3 kitchen tickets printed on front with the FÜR/FOR: KITCHEN banner ({moved_after:.1?} after the stop; PRINT_FAILOVER_AFTER_SECS={})",
            self.failover_secs
        ));
        let jobs = self
            .print()
            .await?
            .list_jobs(papi::ListJobsRequest { limit: 1000, ..Default::default() })
            .await?
            .into_inner()
            .jobs;
        for n in &numbers {
            let j = jobs
                .iter()
                .find(|j| j.order_number == n.to_string() && j.receipt_type == papi::ReceiptType::Kitchen as i32)
                .with_context(|| format!("the kitchen job of #{n}"))?;
            ensure!(j.printer == "front", "kitchen job of #{n} on {}", j.printer);
        }
        self.ok("wix-print's kitchen jobs of these orders say printer front");

        self.start_printer("kitchen").await?;
        self.wait_ready().await?;
        let (n, ev) = self.new_order();
        self.send(&[(n, ev)]).await?;
        let (tally, _) = self.wait_printed(&[n]).await?;
        ensure!(tally.failovers == 0, "#{n} failed over although the kitchen printer is back");
        let kitchen = self.paper_of("kitchen").await?;
        let new: Vec<&Printed> = kitchen[kitchen_before..].iter().collect();
        ensure!(
            new.len() == 1 && new[0].is(n, Receipt::Kitchen) && new[0].for_printer.is_none(),
            "the kitchen printer printed {:?} after it returned",
            new.iter().map(|t| (t.number, t.receipt)).collect::<Vec<_>>()
        );
        self.ok(format!("kitchen printer back: #{n}'s kitchen ticket prints there without a banner; the moved tickets are not printed again"));
        Ok(())
    }

    /// wix-ingest cut off from the "internet" network: the internet monitor says offline and the
    /// order sync cannot reach Wix; an order placed at Wix meanwhile is fetched as soon as the
    /// network returns (the reaction to online, not the 300 s sync interval).
    async fn internet_cut(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        let net = self.network("internet").await?;
        let pod = self.container("ingest-net").await?;
        docker(&["network", "disconnect", &net, &pod]).await?;
        self.ok("docker network disconnect internet ingest-net (wix-ingest's namespace)");
        self.wait_for(Duration::from_secs(30), "ingest's internet state offline", || async {
            let s = self.internet_state().await?;
            Ok(if s == "offline" { Ok(()) } else { Err(s) })
        })
        .await?;
        self.ok("IngestAdmin GetStatus: internet offline");

        // An order at Wix (the fake) that no webhook announces.
        self.next_order += 1;
        let number = 20_000 + u32::try_from(self.next_order).unwrap_or(0);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", rand::random::<u32>(), self.next_order);
        let now = jiff::Timestamp::now().to_string();
        let order =
            order_from_template(&fixture("order_approved.delivery.json"), &id, &number.to_string(), "APPROVED", &now);
        self.orders.insert(number, json!({ "synced": id }));
        let put = self.http.put(format!("{}/orders", self.ep.fake_wix)).json(&order).send().await?;
        ensure!(put.status() == 200, "fake-wix refused the order: {}", put.status());
        let searches_before = self.fake_wix_stats().await?["search_calls"].as_u64().unwrap_or(0);
        self.ok(format!("order #{number} placed at (fake) Wix without a webhook"));

        // Offline, the sync cannot have it: not in ingest, nothing on paper.
        let st = self.ingest().await?.get_order(iapi::GetOrderRequest { id: id.clone() }).await;
        ensure!(
            st.as_ref().is_err_and(|e| e.code() == tonic::Code::NotFound),
            "ingest has the order while offline: {st:?}"
        );
        ensure!(!self.paper().await?.iter().any(|t| t.number == Some(number)), "#{number} printed while offline");
        self.ok(format!("while offline #{number} is neither in ingest nor on paper"));

        docker(&["network", "connect", &net, &pod]).await?;
        self.ok("docker network connect internet ingest-net");
        self.wait_for(Duration::from_secs(30), "ingest's internet state online", || async {
            let s = self.internet_state().await?;
            Ok(if s == "online" { Ok(()) } else { Err(s) })
        })
        .await?;
        self.ok("IngestAdmin GetStatus: internet online again");
        let (tally, _) = self.wait_printed(&[number]).await?;
        self.report(&[number], &tally);
        let searches_after = self.fake_wix_stats().await?["search_calls"].as_u64().unwrap_or(0);
        ensure!(searches_after > searches_before, "no search at Wix after the return");
        let got = self.ingest().await?.get_order(iapi::GetOrderRequest { id: id.clone() }).await?.into_inner();
        ensure!(got.order.is_some(), "ingest has no order {id}");
        self.ok(format!(
            "sync resumed on return: {} search(es) at Wix, #{number} stored and printed",
            searches_after - searches_before
        ));
        let events = self
            .ingest()
            .await?
            .list_connectivity_events(iapi::ListConnectivityEventsRequest {
                kind: s("internet"),
                limit: 10,
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
        ensure!(events.iter().any(|e| e.to_state == "offline"), "no internet offline event recorded: {events:?}");
        self.ok("the outage is recorded in ingest's connectivity events");
        Ok(())
    }

    async fn fake_wix_stats(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/stats", self.ep.fake_wix)).send().await?.json().await?)
    }

    /// The collector stopped: orders print as before; when it is back, both services export
    /// to it again. Prometheus scrapes both services throughout.
    async fn collector_stopped(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        for job in ["wix-ingest", "wix-print"] {
            let q = format!("up{{job=\"{job}\"}}");
            let this = &*self;
            self.wait_for(Duration::from_secs(30), &format!("Prometheus scraping {job}"), || {
                let q = q.clone();
                async move {
                    let v = this.prometheus_value(&q).await?;
                    Ok(if v == Some(1.0) { Ok(()) } else { Err(format!("{q} = {v:?}")) })
                }
            })
            .await?;
        }
        self.ok("Prometheus scrapes both services through their pods' relays (up == 1)");
        let id = self.container("collector").await?;
        docker(&["stop", &id]).await?;
        self.ok("docker stop collector");
        let batch = self.orders(10);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        let started = Instant::now();
        self.send(&batch).await?;
        let (tally, _) = self.wait_printed(&numbers).await?;
        let took = started.elapsed();
        ensure!(tally.reprints == 0 && tally.failovers == 0, "banners without a printing fault: {tally:?}");
        // A collector that is gone must not slow the print path (the export has its own thread
        // and a 5 s timeout): ten orders take well under a second when nothing is wrong.
        ensure!(took < Duration::from_secs(10), "10 orders took {took:?} with the collector down");
        self.report(&numbers, &tally);
        self.ok(format!("printing unaffected: 10 orders sent and printed in {took:.1?} with the collector down"));
        let i = self.ingest_status().await?;
        let p = self.print_status().await?;
        ensure!(!i.version.is_empty() && !p.version.is_empty(), "status without a version");
        let since = jiff::Timestamp::now().to_string();
        docker(&["start", &id]).await?;
        self.ok("docker start collector");
        self.rediscover().await?;
        self.wait_for(Duration::from_secs(60), "metrics from both services at the collector again", || async {
            let logs = self.collector_logs(&id, &since).await?;
            let named = |svc: &str| logs.lines().any(|l| l.contains("service.name") && l.contains(svc));
            let missing: Vec<&str> = ["wix-ingest", "wix-print"].into_iter().filter(|s| !named(s)).collect();
            Ok(if missing.is_empty() { Ok(()) } else { Err(format!("nothing from {missing:?} yet")) })
        })
        .await?;
        self.ok("both services export OTLP metrics to the restarted collector");
        Ok(())
    }

    async fn collector_logs(&self, id: &str, since: &str) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("docker")
            .args(["logs", "--since", since, id])
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// `compose down` (volumes kept) and `up` again: nothing printed before prints again, the
    /// databases, the dedupe and the connectivity history survive; new orders print; Prometheus
    /// counts exactly the new tickets.
    async fn restart_stack(&mut self) -> anyhow::Result<()> {
        self.wait_ready().await?;
        self.wait_quiet().await?;
        let paper_before = self.paper().await?;
        let ingest_before = self.ingest_status().await?;
        let print_before = self.print_status().await?;
        let printed_before =
            print_before.jobs.iter().filter(|c| c.state == JobState::Printed as i32).map(|c| c.count).sum::<u64>();

        self.compose(&["down"]).await?;
        self.ok("compose down (volumes kept)");
        let volumes =
            docker(&["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", self.project)])
                .await?;
        ensure!(volumes.split_whitespace().count() >= 5, "volumes after down: {volumes:?}");
        let restarted_at = jiff::Timestamp::now().as_second();
        self.compose(&["up", "-d", "--no-build"]).await?;
        self.ok("compose up -d");
        self.wait_for(READY, "published ports", || async {
            Ok(match self.published("prometheus", 9090).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{e:#}")),
            })
        })
        .await?;
        self.discover().await?;
        self.wait_ready().await?;
        self.ok("the new containers are ready");
        self.wait_quiet().await?;

        let paper_after = self.paper().await?;
        ensure!(
            paper_after.len() == paper_before.len(),
            "{} tickets printed again after the restart",
            paper_after.len() as i64 - paper_before.len() as i64
        );
        let ingest_after = self.ingest_status().await?;
        let print_after = self.print_status().await?;
        let printed_after =
            print_after.jobs.iter().filter(|c| c.state == JobState::Printed as i32).map(|c| c.count).sum::<u64>();
        ensure!(
            ingest_after.orders == ingest_before.orders && ingest_after.webhook_events == ingest_before.webhook_events,
            "ingest: orders {} -> {}, webhook events {} -> {}",
            ingest_before.orders,
            ingest_after.orders,
            ingest_before.webhook_events,
            ingest_after.webhook_events
        );
        ensure!(printed_after == printed_before, "wix-print printed jobs {printed_before} -> {printed_after}");
        self.ok(format!(
            "state survived: {} orders and {} webhook events in ingest, {} printed jobs in wix-print, {} tickets on paper; nothing printed again",
            ingest_after.orders,
            ingest_after.webhook_events,
            printed_after,
            paper_after.len()
        ));
        let events = self
            .print()
            .await?
            .list_connectivity_events(papi::ListConnectivityEventsRequest {
                kind: s("printer"),
                limit: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
        ensure!(
            events.iter().any(|e| e.name == "front" && e.to_state != "online")
                && events.iter().any(|e| e.name == "kitchen" && e.to_state != "online"),
            "the printer outages before the restart are not in the history: {events:?}"
        );
        self.ok("the printer outages of earlier scenarios are still in wix-print's connectivity history");

        // A webhook Wix repeats after the restart is a duplicate: nothing prints.
        let (&old_number, old) =
            self.orders.iter().find(|(_, ev)| ev.get("id").is_some()).context("an earlier order")?;
        let old = old.clone();
        Self::post(&self.http, &self.ep.webhook, self.keys.sign_event(&old), Duration::from_secs(30)).await?;
        let again = self.ingest_status().await?;
        ensure!(again.webhook_events == ingest_after.webhook_events, "the repeated event was stored anew");
        self.wait_quiet().await?;
        ensure!(self.paper().await?.len() == paper_after.len(), "#{old_number}'s repeated webhook printed again");
        self.ok(format!(
            "#{old_number}'s webhook repeated after the restart: answered 200, deduplicated, nothing printed"
        ));

        let batch = self.orders(3);
        let numbers: Vec<u32> = batch.iter().map(|(n, _)| *n).collect();
        self.send(&batch).await?;
        let (tally, _) = self.wait_printed(&numbers).await?;
        ensure!(tally.reprints == 0 && tally.failovers == 0, "banners after a clean restart: {tally:?}");
        self.report(&numbers, &tally);

        // The new wix-print counted exactly these tickets, and Prometheus has them (series
        // sampled since the restart: Prometheus keeps the old process's last samples for a while).
        let m = "wixprint_print_tickets_total{job=\"wix-print\"}";
        let q = format!("sum({m} and timestamp({m}) > {restarted_at})");
        let q = q.as_str();
        self.wait_for(Duration::from_secs(60), "Prometheus to count the 9 new tickets", || async {
            let v = self.prometheus_value(q).await?;
            ensure!(v.is_none_or(|v| v <= 9.0), "{q} = {v:?}, more than the 9 tickets printed since the restart");
            Ok(if v == Some(9.0) { Ok(()) } else { Err(format!("{q} = {v:?}")) })
        })
        .await?;
        self.ok(format!("Prometheus: {q} = 9 (3 orders x 3 tickets since the restart)"));
        Ok(())
    }

    /// Over the whole run: every order's tickets, KOPIE only where a service was killed, each
    /// printer's journal numbered without gaps.
    async fn whole_run(&mut self) -> anyhow::Result<()> {
        let paper = self.paper().await?;
        let numbers: Vec<u32> = self.orders.keys().copied().collect();
        let tally = verify(&paper, &numbers)?;
        let unexpected: Vec<String> = paper
            .iter()
            .filter(|t| t.reprint && t.number.is_some_and(|n| !self.reprint_allowed.contains(&n)))
            .map(|t| format!("{}#{} (#{:?})", t.printer, t.seq, t.number))
            .collect();
        ensure!(unexpected.is_empty(), "KOPIE tickets outside the kill scenarios: {unexpected:?}");
        let strays: Vec<String> = paper
            .iter()
            .filter(|t| t.complete && t.number.is_none_or(|n| !self.orders.contains_key(&n)))
            .map(|t| format!("{}#{}", t.printer, t.seq))
            .collect();
        ensure!(strays.is_empty(), "tickets of no order the driver sent: {strays:?}");
        for printer in ["kitchen", "front"] {
            let seqs: Vec<u64> = paper.iter().filter(|t| t.printer == printer).map(|t| t.seq).collect();
            ensure!(seqs.iter().copied().eq(1..=seqs.len() as u64), "{printer}'s journal has gaps: {seqs:?}");
        }
        let last = paper.iter().map(|t| t.printed_at_ms).max().unwrap_or(0);
        ensure!(last > 0, "no ticket has a print time");
        self.ok(format!(
            "whole run: {} orders, {} complete tickets ({} KOPIE, all in the kill scenarios; {} failed over), {} partial; no unflagged duplicate",
            numbers.len(),
            tally.tickets,
            tally.reprints,
            tally.failovers,
            tally.partial
        ));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compose-driver: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut d = match Driver::new(&args).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("compose-driver: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = |name: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($name:literal, $what:literal, $method:ident) => {
            if wanted($name) {
                println!("\n== {} — {}", $name, $what);
                let started = Instant::now();
                match d.$method().await {
                    Ok(()) => {
                        passed += 1;
                        println!("PASS  {} ({:.1?})", $name, started.elapsed());
                    }
                    Err(e) => {
                        failed += 1;
                        failures.push($name);
                        println!("FAIL  {} ({:.1?}): {e:#}", $name, started.elapsed());
                        d.heal().await;
                    }
                }
            }
        };
    }
    let started = Instant::now();
    scenario!("baseline", "the stack as started: tokens, published ports, orders on the right printers", baseline);
    scenario!("kill-ingest", "docker kill of wix-ingest mid-load", kill_ingest);
    scenario!("kill-print", "docker kill of wix-print mid-load", kill_print);
    scenario!("pause-print", "docker pause of wix-print: the outbox holds, then drains", pause_print);
    scenario!(
        "printer-stop-start",
        "the front printer's container stopped and started: recovery in priority order",
        printer_stop_start
    );
    scenario!("kitchen-failover", "the kitchen printer down past the failover time", kitchen_failover);
    scenario!("internet-cut", "wix-ingest cut off from the internet network", internet_cut);
    scenario!("collector-stopped", "the OpenTelemetry Collector stopped", collector_stopped);
    scenario!("restart-stack", "the whole stack restarted with its volumes", restart_stack);
    scenario!("whole-run", "every order of the run, once more", whole_run);
    println!("\ncompose-driver: {} checks in {:.0?}", d.checks, started.elapsed());
    if !failures.is_empty() {
        println!("failed: {}", failures.join(", "));
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
