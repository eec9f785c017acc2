//! `fake-wix`: the fake Wix Orders API (`wixprint_tests::fake_wix`) as a process, for the docker
//! compose stack (`compose/`), where wix-ingest's order sync polls it and its internet monitor
//! probes it.
//!
//! Owns only argument parsing and a small HTTP control port for the test driver: put an order
//! into the fake, read how many searches it answered. All Wix behaviour lives in
//! `wixprint_tests::fake_wix`; this file must never grow protocol logic of its own.

use std::path::PathBuf;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wixprint_tests::fake_wix::FakeWix;

const USAGE: &str =
    "usage: fake-wix [--listen 127.0.0.1:8080] [--control 127.0.0.1:8081] --api-key-file FILE --site-id ID
Serves the fake Wix eCommerce Orders API (POST /ecom/v1/orders/search, GET /ecom/v1/orders/{id})
for wix-ingest's order sync; the API key is the file's content, trimmed.
Control port (HTTP, for tests):
  PUT /orders   body: a Wix order (REST shape) -> added, or replaced by id
  GET /orders   every order
  GET /stats    {\"search_calls\": n, \"requests\": n, \"answered_ok\": n}
  -h, --help     this text
  -V, --version  the version";

struct Args {
    listen: String,
    control: Option<String>,
    api_key_file: PathBuf,
    site_id: String,
}

fn parse_args() -> anyhow::Result<Args> {
    wixprint_tests::cli::help_or_version("fake-wix", USAGE);
    let (mut listen, mut control, mut key, mut site) = ("127.0.0.1:8080".to_owned(), None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value =
            || inline.clone().or_else(|| it.next()).with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--control" => control = Some(value()?),
            "--api-key-file" => key = Some(PathBuf::from(value()?)),
            "--site-id" => site = Some(value()?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        listen,
        control,
        api_key_file: key.with_context(|| format!("--api-key-file is required\n{USAGE}"))?,
        site_id: site.with_context(|| format!("--site-id is required\n{USAGE}"))?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let key = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let wix = FakeWix::start_on(&args.listen, key.trim(), &args.site_id).await?;
    println!("fake-wix: Orders API on {}", wix.addr());
    if let Some(control) = &args.control {
        let listener =
            TcpListener::bind(control).await.with_context(|| format!("binding the control port {control}"))?;
        println!("fake-wix: control port on {}", listener.local_addr()?);
        let app = Router::new()
            .route("/orders", put(put_order).get(list_orders))
            .route("/stats", get(stats))
            .with_state(wix.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake-wix: control port stopped: {e}");
            }
        });
    }
    wait_for_stop().await;
    wix.shutdown();
    Ok(())
}

async fn put_order(State(wix): State<FakeWix>, Json(order): Json<Value>) -> (StatusCode, String) {
    // `upsert_order` panics on an order search could not answer for; say so instead.
    let id = order.get("id").and_then(Value::as_str).map(str::to_owned);
    let dated = ["createdDate", "updatedDate"]
        .iter()
        .all(|f| order.get(*f).and_then(Value::as_str).is_some_and(|d| d.parse::<jiff::Timestamp>().is_ok()));
    match id {
        Some(id) if dated && order.get("status").is_some_and(Value::is_string) => {
            wix.upsert_order(order);
            println!("fake-wix: order {id} stored");
            (StatusCode::OK, "ok\n".into())
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "an order needs a string id and status, RFC 3339 createdDate/updatedDate\n".into(),
        ),
    }
}

async fn list_orders(State(wix): State<FakeWix>) -> Json<Value> {
    Json(Value::Array(wix.orders()))
}

async fn stats(State(wix): State<FakeWix>) -> Json<Value> {
    let requests = wix.requests();
    let ok = requests.iter().filter(|r| r.status == 200).count();
    Json(json!({ "search_calls": wix.search_calls(), "requests": requests.len(), "answered_ok": ok }))
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
