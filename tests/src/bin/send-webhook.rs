//! Sends one signed Wix order webhook (a fixture, made distinct) to a running wix-ingest, the
//! way Wix would: for smoke tests of an installed system (scripts/systemd-boot-test.sh) and for
//! an operator checking a deployment with a key pair of their own.
//!
//! `send-webhook --url http://127.0.0.1:8080/webhooks/wix --key private.pem [--n N] [--fixture NAME]`
//! `send-webhook --new-key DIR` writes a fresh key pair (private.pem, public.pem) into DIR.

use anyhow::Context;
use wixprint_tests::webhook::{KeyPair, distinct_order};

const HELP: &str =
    "send-webhook: sends one RS256-signed Wix order webhook (a fixture order made distinct) and prints the answer.

USAGE: send-webhook --url URL --key PRIVATE.pem [--n N] [--fixture NAME]
       send-webhook --new-key DIR      write private.pem and public.pem (a fresh RSA 2048 key pair) into DIR
  --url      the webhook endpoint, e.g. http://127.0.0.1:8080/webhooks/wix
  --key      the PKCS#8 private key PEM whose public key wix-ingest has (WIX_WEBHOOK_PUBLIC_KEY_FILE)
  --n        makes the order distinct: order number 20000+N (default 1)
  --fixture  order_created.pickup.json (default), order_approved.delivery.json, ...
  -h, --help / -V, --version
Exit status: 0 when the answer is 200, 1 otherwise.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wixprint_tests::cli::help_or_version("send-webhook", HELP);
    let mut url = None;
    let mut key = None;
    let mut n = 1u64;
    let mut fixture = "order_created.pickup.json".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n\n{HELP}"));
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--key" => key = Some(value()?),
            "--n" => n = value()?.parse().context("--n")?,
            "--fixture" => fixture = value()?,
            "--new-key" => {
                let dir = std::path::PathBuf::from(value()?);
                let k = KeyPair::generate();
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("private.pem"), &k.private_pem)?;
                std::fs::write(dir.join("public.pem"), &k.public_pem)?;
                println!("wrote {0}/private.pem and {0}/public.pem", dir.display());
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n\n{HELP}"),
        }
    }
    let url = url.context("--url is required")?;
    let key = key.context("--key is required")?;
    let private = std::fs::read_to_string(&key).with_context(|| format!("reading {key}"))?;
    let keys = KeyPair::from_private_pem(&private).context("the private key")?;
    let body = keys.sign_event(&distinct_order(&fixture, n));
    let resp = reqwest::Client::new().post(&url).body(body).send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    println!("{} {}", status.as_u16(), resp.text().await.unwrap_or_default());
    if !status.is_success() {
        std::process::exit(1);
    }
    Ok(())
}
