//! The demo: starts wix-print, wix-ingest and the printer simulator with a freshly generated
//! webhook key, posts the Wix fixture orders through the real webhook endpoint (signed the way
//! Wix signs them), and shows the printed tickets as text.
//!
//! `demo --keep` leaves everything running for grpcurl until Ctrl-C.

use std::time::Duration;

use wixprint_shared::proto::print::{PreviewReceiptRequest, ReceiptType, preview_receipt_request::Source};
use wixprint_tests::harness::{Stack, StackOptions, bin_dir};
use wixprint_tests::webhook::{approved_after, fixture};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wixprint_tests::cli::help_or_version(
        "demo",
        "demo [--keep]: starts wix-print, wix-ingest and the printer simulator on loopback with a fresh webhook
key, posts the Wix fixture orders (a redelivery, a forged signature and a malformed body among
them) through the real webhook endpoint and shows the printed tickets as text.
  --keep         stay up for grpcurl until Ctrl-C
  -h, --help     this text
  -V, --version  the version",
    );
    let keep = std::env::args().any(|a| a == "--keep");
    println!("wix-printer demo: binaries from {}", bin_dir().display());
    let stack = Stack::start(StackOptions::default()).await?;
    println!("  webhook endpoint  {}/webhooks/wix", stack.http_url);
    println!("  ingest admin      {} (grpcurl -plaintext {} list)", stack.ingest_grpc, stack.ingest_grpc);
    println!("  print admin       {} (grpcurl -plaintext {} list)", stack.print_grpc, stack.print_grpc);
    println!("  printer simulator {}", stack.sim.url());
    println!("  state in          {}\n", stack.dir.path().display());

    let pickup = fixture("order_created.pickup.json");
    let delivery = fixture("order_approved.delivery.json");
    let events = [
        ("order_created  #10033 (pickup, cash, CHF)", pickup.clone()),
        ("order_created  #10033 again (Wix redelivery)", pickup.clone()),
        ("order_approved #10033", approved_after(&pickup)),
        ("order_approved (delivery, paid, EUR)", delivery),
    ];
    for (what, ev) in &events {
        let (status, body) = stack.post_webhook(stack.keys.sign_event(ev)).await?;
        println!("POST {what:<48} → {status} {body}");
    }
    // A well-formed JWT signed with someone else's key: the signature check refuses it.
    let forged = wixprint_tests::webhook::KeyPair::generate().sign_event(&pickup);
    let (status, body) = stack.post_webhook(forged).await?;
    println!("POST {:<48} → {status} {body}", "a forged signature (another key)");
    // Not a JWT at all.
    let (status, body) = stack.post_webhook("{\"orderId\": \"10033\"}").await?;
    println!("POST {:<48} → {status} {body}", "a malformed body (JSON, not a JWT)");

    let tickets = stack.sim.wait_for_tickets(6, Duration::from_secs(30)).await?;
    stack.wait_quiet(Duration::from_secs(30)).await?;
    println!(
        "\nThe printer received {} tickets (two orders × kitchen, driver, customer):\n",
        stack.sim.tickets().len()
    );
    for t in &tickets {
        println!(
            "┌──── ticket #{} ({} bytes, {}) ────",
            t.seq,
            t.raw.len(),
            if t.complete { "cut" } else { "PARTIAL" }
        );
        for line in t.text.lines() {
            println!("│ {line}");
        }
        println!("└────\n");
    }
    // An operator checks a layout without printing: the delivery order's kitchen ticket on a
    // 58 mm (32-column) printer.
    let mut admin = stack.print_admin().await?;
    let preview = admin
        .preview_receipt(PreviewReceiptRequest {
            source: Some(Source::OrderId("a1b2c3d4-0000-4000-8000-0000000000b2".into())),
            receipt_type: ReceiptType::Kitchen as i32,
            printer: String::new(),
            width: 32,
        })
        .await?
        .into_inner();
    println!("PreviewReceipt: kitchen ticket of the delivery order at 32 columns (nothing printed):\n");
    for line in preview.text.lines() {
        println!("  │ {line}");
    }
    println!();
    if keep {
        // The stack runs with bearer tokens: the admin calls carry them.
        let header =
            |service: &str| stack.grpcurl_auth(service).get(1).map(|h| format!("-H '{h}' ")).unwrap_or_default();
        let (p, i) = (header("print"), header("ingest"));
        println!(
            "Running until Ctrl-C. Try:\n  grpcurl -plaintext {p}{} wixprint.print.v1.PrintAdmin/GetStatus\n  grpcurl -plaintext {p}-d '{{\"state\":\"JOB_STATE_PRINTED\"}}' {} wixprint.print.v1.PrintAdmin/ListJobs\n  grpcurl -plaintext {i}{} wixprint.ingest.v1.IngestAdmin/ListOrders",
            stack.print_grpc, stack.print_grpc, stack.ingest_grpc
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
