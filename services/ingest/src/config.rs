//! wix-ingest configuration: every key, its environment variable and its default, parsed and
//! validated before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::config::{ConfigError, Key, Source};

pub static KEYS: &[Key] = &[
    Key { name: "http_addr", env: "INGEST_HTTP_ADDR", help: "webhook listener (default 0.0.0.0:8080)" },
    Key { name: "grpc_addr", env: "INGEST_GRPC_ADDR", help: "admin gRPC listener (default 127.0.0.1:50051)" },
    Key { name: "db_path", env: "INGEST_DB_PATH", help: "SQLite file (default ./ingest.db)" },
    Key {
        name: "webhook_public_key_file",
        env: "WIX_WEBHOOK_PUBLIC_KEY_FILE",
        help: "PEM public key of the Wix app (required)",
    },
    Key {
        name: "print_service_url",
        env: "PRINT_SERVICE_URL",
        help: "wix-print gRPC URL (default http://127.0.0.1:50052)",
    },
    Key {
        name: "max_body_bytes",
        env: "INGEST_MAX_BODY_BYTES",
        help: "largest webhook body accepted (default 1048576)",
    },
    Key {
        name: "outbox_backoff_min_ms",
        env: "INGEST_OUTBOX_BACKOFF_MIN_MS",
        help: "first retry delay while wix-print is down (default 250)",
    },
    Key {
        name: "outbox_backoff_max_ms",
        env: "INGEST_OUTBOX_BACKOFF_MAX_MS",
        help: "largest retry delay (default 30000)",
    },
    Key {
        name: "outbox_rpc_timeout_ms",
        env: "INGEST_OUTBOX_RPC_TIMEOUT_MS",
        help: "SubmitOrder deadline (default 5000)",
    },
    Key {
        name: "db_busy_timeout_ms",
        env: "INGEST_DB_BUSY_TIMEOUT_MS",
        help: "wait for a locked database before answering 503 (default 5000)",
    },
    Key { name: "shutdown_grace_ms", env: "INGEST_SHUTDOWN_GRACE_MS", help: "drain time on SIGTERM (default 4000)" },
];

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub db_path: PathBuf,
    pub db_busy_timeout: Duration,
    pub webhook_public_key_pem: Vec<u8>,
    pub webhook_public_key_file: PathBuf,
    pub print_service_url: String,
    pub max_body_bytes: usize,
    pub outbox_backoff: Backoff,
    pub outbox_rpc_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let key_file = PathBuf::from(src.required("webhook_public_key_file")?);
        let pem = std::fs::read(&key_file)
            .map_err(|e| src.invalid("webhook_public_key_file", format!("cannot read {}: {e}", key_file.display())))?;
        // Parse once here so a wrong key file fails at start-up, not at the first webhook.
        crate::wix::WebhookVerifier::from_pem(&pem).map_err(|e| src.invalid("webhook_public_key_file", e))?;
        let print_service_url = src.string("print_service_url", "http://127.0.0.1:50052");
        if !(print_service_url.starts_with("http://") || print_service_url.starts_with("https://")) {
            return Err(
                src.invalid("print_service_url", format!("{print_service_url:?} must start with http:// or https://"))
            );
        }
        let max_body_bytes: usize = src.parse("max_body_bytes", 1 << 20)?;
        if max_body_bytes < 1024 {
            return Err(src.invalid("max_body_bytes", "must be at least 1024"));
        }
        let min = src.millis("outbox_backoff_min_ms", 250)?;
        let max = src.millis("outbox_backoff_max_ms", 30_000)?;
        let outbox_backoff = Backoff::new(min, max, 0.3).map_err(|e| src.invalid("outbox_backoff_min_ms", e))?;
        Ok(Self {
            http_addr: src.parse("http_addr", "0.0.0.0:8080".parse().expect("literal"))?,
            grpc_addr: src.parse("grpc_addr", "127.0.0.1:50051".parse().expect("literal"))?,
            db_path: src.path("db_path").unwrap_or_else(|| "ingest.db".into()),
            db_busy_timeout: src.millis("db_busy_timeout_ms", 5_000)?,
            webhook_public_key_pem: pem,
            webhook_public_key_file: key_file,
            print_service_url,
            max_body_bytes,
            outbox_backoff,
            outbox_rpc_timeout: src.millis("outbox_rpc_timeout_ms", 5_000)?,
            shutdown_grace: src.millis("shutdown_grace_ms", 4_000)?,
        })
    }
}
