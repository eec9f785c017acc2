//! wix-ingest configuration: every key, its environment variable and its default, parsed and
//! validated before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wixprint_shared::auth::{self, Secret};
use wixprint_shared::backoff::{Backoff, BackoffError};
use wixprint_shared::breaker::BreakerConfig;
use wixprint_shared::bus::{self, BusConfig};
use wixprint_shared::config::{ConfigError, Key, Source};

const OWN_KEYS: &[Key] = &[
    Key { name: "http_addr", env: "INGEST_HTTP_ADDR", help: "webhook listener (default 0.0.0.0:8080)" },
    Key {
        name: "metrics_addr",
        env: "INGEST_METRICS_ADDR",
        help: "Prometheus endpoint GET /metrics: a port (on 127.0.0.1) or host:port (default off; OTLP export is set by OTEL_EXPORTER_OTLP_ENDPOINT)",
    },
    Key {
        name: "alert_internet_offline_secs",
        env: "ALERT_INTERNET_OFFLINE_SECS",
        help: "e-mail when the internet is offline this long (sent when it is back; default 300)",
    },
    Key {
        name: "alert_peer_secs",
        env: "ALERT_PEER_SECS",
        help: "e-mail when the other service is unheard on the bus this long (default 300)",
    },
    Key {
        name: "alert_opening_hours",
        env: "ALERT_OPENING_HOURS",
        help: "opening hours for the no-orders alert, e.g. 'mon-fri 11:00-14:00,17:30-22:00; sat,sun 17:00-23:00' (default: off)",
    },
    Key {
        name: "alert_no_orders_secs",
        env: "ALERT_NO_ORDERS_SECS",
        help: "e-mail when no order arrived this long during ALERT_OPENING_HOURS (default 3600)",
    },
    Key { name: "grpc_addr", env: "INGEST_GRPC_ADDR", help: "admin gRPC listener (default 127.0.0.1:50051)" },
    Key {
        name: "admin_token_file",
        env: "INGEST_ADMIN_TOKEN_FILE",
        help: "bearer token of IngestAdmin (required unless INGEST_GRPC_ADDR is loopback; %d/<name> = systemd credential)",
    },
    Key {
        name: "print_submit_token_file",
        env: "PRINT_SUBMIT_TOKEN_FILE",
        help: "bearer token sent with SubmitOrder to wix-print (required unless PRINT_SERVICE_URL is loopback)",
    },
    Key {
        name: "wix_instance_id",
        env: "WIX_INSTANCE_ID",
        help: "comma-separated Wix app instance ids accepted; webhooks of other instances get 401 (default: any)",
    },
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
        name: "http_header_timeout_ms",
        env: "INGEST_HTTP_HEADER_TIMEOUT_MS",
        help: "a webhook connection must complete its request head within this (default 10000)",
    },
    Key {
        name: "http_body_timeout_ms",
        env: "INGEST_HTTP_BODY_TIMEOUT_MS",
        help: "a webhook body must arrive within this, else 408 (default 10000)",
    },
    Key {
        name: "http_idle_timeout_ms",
        env: "INGEST_HTTP_IDLE_TIMEOUT_MS",
        help: "an idle keep-alive webhook connection is closed after this (default 30000)",
    },
    Key {
        name: "http_max_connections",
        env: "INGEST_HTTP_MAX_CONNECTIONS",
        help: "open webhook connections at most (default: RLIMIT_NOFILE soft limit - 128, at most 1024)",
    },
    Key {
        name: "http_body_budget_bytes",
        env: "INGEST_HTTP_BODY_BUDGET_BYTES",
        help: "webhook body bytes held in memory at once, all requests together (default 16777216)",
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
        name: "outbox_dead_after",
        env: "INGEST_OUTBOX_DEAD_AFTER",
        help: "an outbox row wix-print refuses this many times becomes a dead letter (default 10)",
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
    Key { name: "wix_api_base_url", env: "WIX_API_BASE_URL", help: "Wix REST API (default https://www.wixapis.com)" },
    Key {
        name: "wix_api_key_file",
        env: "WIX_API_KEY_FILE",
        help: "file holding the Wix API key (order sync is off without it; %d/<name> = systemd credential)",
    },
    Key { name: "wix_site_id", env: "WIX_SITE_ID", help: "Wix site id (order sync is off without it)" },
    Key { name: "order_sync_interval_secs", env: "ORDER_SYNC_INTERVAL_SECS", help: "order sync period (default 30)" },
    Key {
        name: "order_sync_margin_secs",
        env: "ORDER_SYNC_MARGIN_SECS",
        help: "search this far behind the watermark (default 300)",
    },
    Key {
        name: "order_sync_lookback_secs",
        env: "ORDER_SYNC_LOOKBACK_SECS",
        help: "first sync looks back this far (default 86400)",
    },
    Key {
        name: "wix_retry_first_ms",
        env: "INGEST_WIX_RETRY_FIRST_MS",
        help: "first delay before retrying a Wix API call that failed transiently (5xx, 429, reset) (default 500)",
    },
    Key {
        name: "wix_retry_factor",
        env: "INGEST_WIX_RETRY_FACTOR",
        help: "each retry delay is the previous one times this, 1.0..=10.0 (default 1.5)",
    },
    Key { name: "wix_retry_max_ms", env: "INGEST_WIX_RETRY_MAX_MS", help: "largest retry delay (default 60000)" },
    Key {
        name: "wix_retry_jitter_pct",
        env: "INGEST_WIX_RETRY_JITTER_PCT",
        help: "± this percentage of each retry delay at random, 0..=100 (default 20)",
    },
    Key {
        name: "wix_retry_tries",
        env: "INGEST_WIX_RETRY_TRIES",
        help: "tries of one Wix API call per sync run, 1..=10; the next run continues from the watermark (default 3)",
    },
    Key {
        name: "wix_breaker_failures",
        env: "INGEST_WIX_BREAKER_FAILURES",
        help: "consecutive transient Wix API failures that open the wix-api circuit breaker (default 3)",
    },
    Key {
        name: "wix_breaker_open_ms",
        env: "INGEST_WIX_BREAKER_OPEN_MS",
        help: "how long the open wix-api breaker makes no call before its probe (default 60000)",
    },
    Key {
        name: "wix_breaker_successes",
        env: "INGEST_WIX_BREAKER_SUCCESSES",
        help: "good calls after the probe that close the wix-api breaker (default 2)",
    },
    Key {
        name: "time_zone",
        env: "INGEST_TIME_ZONE",
        help: "IANA zone for local order numbers L-<yyyymmdd>-<n> (default: the system's)",
    },
    Key {
        name: "retention_days",
        env: "INGEST_RETENTION_DAYS",
        help: "webhook events, orders and delivered outbox rows older than this are deleted, personal data with them (default 30, at least 3)",
    },
    Key {
        name: "reorder_window_ms",
        env: "INGEST_REORDER_WINDOW_MS",
        help: "an order event after a sequence gap waits this long for earlier ones (default 2000; 0 = off)",
    },
    Key { name: "shutdown_grace_ms", env: "INGEST_SHUTDOWN_GRACE_MS", help: "drain time on SIGTERM (default 4000)" },
    Key {
        name: "internet_probes",
        env: "INGEST_INTERNET_PROBES",
        help: "comma-separated [tcp://]host:port the internet monitor connects to (default www.wixapis.com:443,1.1.1.1:443)",
    },
    Key {
        name: "internet_interval_ms",
        env: "INGEST_INTERNET_INTERVAL_MS",
        help: "time between internet probe rounds (default 5000)",
    },
    Key {
        name: "internet_timeout_ms",
        env: "INGEST_INTERNET_TIMEOUT_MS",
        help: "a probe that has not connected within this fails (default 2000)",
    },
    Key {
        name: "internet_debounce",
        env: "INGEST_INTERNET_DEBOUNCE",
        help: "consecutive agreeing probe rounds needed to change the internet state (default 2)",
    },
    Key {
        name: "connectivity_retention_days",
        env: "INGEST_CONNECTIVITY_RETENTION_DAYS",
        help: "closed connectivity_events rows older than this are pruned (default 30)",
    },
    Key {
        name: "bus_pub_addr",
        env: "INGEST_PUB_ADDR",
        help: "where this service's connectivity bus PUB socket binds: ipc:///path or tcp://host:port (default ipc://$RUNTIME_DIRECTORY/ingest-bus.sock)",
    },
    Key {
        name: "print_pub_addr",
        env: "PRINT_PUB_ADDR",
        help: "wix-print's connectivity bus PUB socket (default ipc://$RUNTIME_DIRECTORY/print-bus.sock)",
    },
    Key { name: "bus_heartbeat_ms", env: "BUS_HEARTBEAT_MS", help: "connectivity bus heartbeat (default 1000)" },
    Key {
        name: "bus_stale_ms",
        env: "BUS_STALE_MS",
        help: "wix-print is \"unknown\" after this long without a heartbeat (default 3500)",
    },
    Key {
        name: "bus_key_file",
        env: "BUS_KEY_FILE",
        help: "shared secret file (>= 16 random bytes, the same on both hosts) authenticating every bus message; required when a bus address is not loopback or ipc:// (default none)",
    },
];

/// The health monitor's keys (`INGEST_HEALTH_*`, parsed by `wixprint_shared::health`).
const HEALTH_KEYS: &[Key] = &wixprint_shared::health_keys!("INGEST"
    ; "outbox_backlog" / "OUTBOX_BACKLOG" / "rows" / "ROWS": "undelivered outbox rows (waiting, never restarts; default warning 200)"
    ; "outbox_age" / "OUTBOX_AGE" / "secs" / "SECS": "oldest undelivered outbox row (waiting, never restarts; default warning 900 s)");

/// Every key of this service.
pub static KEYS: &[Key] =
    &wixprint_shared::config::concat_keys::<{ OWN_KEYS.len() + SHARED_KEYS.len() }>(OWN_KEYS, SHARED_KEYS);

/// The e-mail alert keys (`ALERT_*`, the same for both services, parsed by
/// `wixprint_shared::alerts::AlertConfig`).
const ALERT_KEYS: &[Key] = &wixprint_shared::alert_keys!();
const SHARED_KEYS: &[Key] =
    &wixprint_shared::config::concat_keys::<{ HEALTH_KEYS.len() + ALERT_KEYS.len() }>(HEALTH_KEYS, ALERT_KEYS);

#[derive(Debug, Clone)]
pub struct Config {
    /// The health monitor, and wix-ingest's own checks.
    pub health: wixprint_shared::health::HealthConfig,
    /// E-mail alerts; `None` = off (`ALERT_SMTP_URL` unset).
    pub alerts: Option<wixprint_shared::alerts::AlertConfig>,
    pub outbox_backlog: wixprint_shared::health::Thresholds,
    pub outbox_age: wixprint_shared::health::Thresholds,
    pub http_addr: SocketAddr,
    /// The Prometheus endpoint (`INGEST_METRICS_ADDR`), off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    pub grpc_addr: SocketAddr,
    pub db_path: PathBuf,
    pub db_busy_timeout: Duration,
    pub webhook_public_key_pem: Vec<u8>,
    pub webhook_public_key_file: PathBuf,
    pub print_service_url: String,
    /// Bearer token of `IngestAdmin`; `None` (open) only on a loopback `grpc_addr`.
    pub admin_token: Option<Secret>,
    /// Bearer token sent with `SubmitOrder`; `None` only for a loopback `print_service_url`.
    pub submit_token: Option<Secret>,
    /// Wix app instance ids whose webhooks are accepted; empty = any.
    pub wix_instance_ids: Vec<String>,
    pub max_body_bytes: usize,
    /// The webhook listener's timeouts, connection cap and body budget.
    pub listener: crate::listener::Limits,
    pub reorder_window_ms: i64,
    /// How long stored webhooks, orders and delivered outbox rows are kept.
    pub retention: Duration,
    pub outbox_backoff: Backoff,
    pub outbox_rpc_timeout: Duration,
    /// Refusals (answers, not transport failures) before an outbox row becomes dead.
    pub outbox_dead_after: u32,
    pub shutdown_grace: Duration,
    /// `None` when no API key / site id is configured: the order sync is off.
    pub sync: Option<SyncConfig>,
    /// The `wix-api` circuit breaker (validated whether or not the sync is on).
    pub wix_breaker: BreakerConfig,
    pub time_zone: jiff::tz::TimeZone,
    /// When wix-ingest's alerts fire (README "Alert catalogue").
    pub alert_thresholds: crate::alerting::AlertThresholds,
    /// The internet monitor, and how long its closed `connectivity_events` rows are kept.
    pub internet: crate::internet::InternetSettings,
    pub bus: BusConfig,
}

/// The order sync's connection to Wix and its rhythm.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub base_url: String,
    pub api_key: crate::wix_api::ApiKey,
    pub site_id: String,
    pub settings: crate::sync::SyncSettings,
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
        let outbox_dead_after: u32 = src.parse("outbox_dead_after", 10)?;
        if !(1..=1000).contains(&outbox_dead_after) {
            return Err(src.invalid("outbox_dead_after", "must be between 1 and 1000"));
        }
        let (wix_retry, wix_tries) = wix_retry(src)?;
        let wix_breaker = BreakerConfig::WIX_API.from_source(src, "wix_breaker")?;
        let sync = match (src.get("wix_api_key_file"), src.get("wix_site_id")) {
            (None, None) => None,
            (Some(_), None) => return Err(src.invalid("wix_site_id", "is required when WIX_API_KEY_FILE is set")),
            (None, Some(_)) => return Err(src.invalid("wix_api_key_file", "is required when WIX_SITE_ID is set")),
            (Some(raw), Some(site)) => {
                // "%d/<name>" is a systemd credential (LoadCredential=), like the tokens.
                let creds = std::env::var("CREDENTIALS_DIRECTORY").ok();
                let path = wixprint_shared::auth::credential_path(raw, creds.as_deref())
                    .map_err(|e| src.invalid("wix_api_key_file", e))?;
                let file = path.display();
                let key = std::fs::read_to_string(&path)
                    .map_err(|e| src.invalid("wix_api_key_file", format!("cannot read {file}: {e}")))?;
                let key = key.trim();
                if key.is_empty() {
                    return Err(src.invalid("wix_api_key_file", format!("{file} is empty")));
                }
                let base_url = src.string("wix_api_base_url", crate::wix_api::DEFAULT_BASE_URL);
                if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                    return Err(src.invalid("wix_api_base_url", format!("{base_url:?} must start with https://")));
                }
                let secs = |key: &str, default: u64| -> Result<Duration, ConfigError> {
                    let v: u64 = src.parse(key, default)?;
                    if v == 0 {
                        return Err(src.invalid(key, "must be greater than 0"));
                    }
                    Ok(Duration::from_secs(v))
                };
                let interval = secs("order_sync_interval_secs", 30)?;
                Some(SyncConfig {
                    base_url,
                    api_key: crate::wix_api::ApiKey::new(key),
                    site_id: site.to_owned(),
                    settings: crate::sync::SyncSettings {
                        interval,
                        margin: secs("order_sync_margin_secs", 300)?,
                        lookback: secs("order_sync_lookback_secs", 86_400)?,
                        retry: wix_retry,
                        tries: wix_tries,
                        auth_pause: interval * 10,
                    },
                })
            }
        };
        let time_zone = match src.get("time_zone") {
            None => jiff::tz::TimeZone::system(),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| src.invalid("time_zone", e))?,
        };
        // Mails show times in the service's time zone.
        let alerts = wixprint_shared::alerts::AlertConfig::parse(src, time_zone.clone())?;
        let listener = listener_limits(src, max_body_bytes, nofile_soft_limit())?;
        let internet = internet_settings(src)?;
        let bus = bus_config(src)?;
        let grpc_addr: SocketAddr = src.parse("grpc_addr", "127.0.0.1:50051".parse().expect("literal"))?;
        let admin_token = auth::token_from_source(src, "admin_token_file")?;
        auth::require_unless_loopback(
            src,
            "admin_token_file",
            &admin_token,
            auth::is_loopback(&grpc_addr),
            &format!("INGEST_GRPC_ADDR {grpc_addr}"),
        )?;
        let submit_token = auth::token_from_source(src, "print_submit_token_file")?;
        auth::require_unless_loopback(
            src,
            "print_submit_token_file",
            &submit_token,
            auth::url_is_loopback(&print_service_url),
            &format!("PRINT_SERVICE_URL {print_service_url}"),
        )?;
        auth::require_distinct(src, "admin_token_file", &admin_token, "PRINT_SUBMIT_TOKEN_FILE", &submit_token)?;
        let wix_instance_ids = instance_ids(src)?;
        let alert_secs = |key: &str, default: u64| -> Result<Duration, ConfigError> {
            let secs: u64 = src.parse(key, default)?;
            if secs > 7 * 86_400 {
                return Err(src.invalid(key, "at most one week (604800 s)"));
            }
            Ok(Duration::from_secs(secs))
        };
        let alert_thresholds = crate::alerting::AlertThresholds {
            internet_offline: alert_secs("alert_internet_offline_secs", 300)?,
            peer: alert_secs("alert_peer_secs", 300)?,
            no_orders: alert_secs("alert_no_orders_secs", 3600)?,
            opening_hours: match src.get("alert_opening_hours").map(str::trim).filter(|s| !s.is_empty()) {
                None => None,
                Some(text) => Some(
                    crate::alerting::OpeningHours::parse(text).map_err(|e| src.invalid("alert_opening_hours", e))?,
                ),
            },
        };
        Ok(Self {
            alert_thresholds,
            health: wixprint_shared::health::HealthConfig::parse(src)?,
            alerts,
            outbox_backlog: wixprint_shared::health::thresholds(
                src,
                "outbox_backlog",
                "rows",
                wixprint_shared::health::Thresholds::new(200.0, 0.0, 0.0),
            )?,
            outbox_age: wixprint_shared::health::thresholds(
                src,
                "outbox_age",
                "secs",
                wixprint_shared::health::Thresholds::new(900.0, 0.0, 0.0),
            )?,
            admin_token,
            submit_token,
            wix_instance_ids,
            sync,
            wix_breaker,
            time_zone,
            internet,
            bus,
            metrics_addr: wixprint_shared::telemetry::metrics_addr(src, "metrics_addr")?,
            http_addr: src.parse("http_addr", "0.0.0.0:8080".parse().expect("literal"))?,
            grpc_addr,
            db_path: src.path("db_path").unwrap_or_else(|| "ingest.db".into()),
            db_busy_timeout: src.millis("db_busy_timeout_ms", 5_000)?,
            webhook_public_key_pem: pem,
            webhook_public_key_file: key_file,
            print_service_url,
            max_body_bytes,
            listener,
            reorder_window_ms: src.parse::<u32>("reorder_window_ms", 2_000)? as i64,
            retention: wixprint_shared::retention::days(src, "retention_days", 30)?,
            outbox_backoff,
            outbox_dead_after,
            outbox_rpc_timeout: src.millis("outbox_rpc_timeout_ms", 5_000)?,
            shutdown_grace: src.millis("shutdown_grace_ms", 4_000)?,
        })
    }
}

/// The Wix API's retry policy (issue 11: 0.5 s, × 1.5, at most 60 s, ± 20 %, 3 tries per run);
/// each error names the key it is about.
fn wix_retry(src: &Source) -> Result<(Backoff, u32), ConfigError> {
    let first = src.millis("wix_retry_first_ms", 500)?;
    let max = src.millis("wix_retry_max_ms", 60_000)?;
    let factor: f64 = src.parse("wix_retry_factor", 1.5)?;
    let jitter_pct: u32 = src.parse("wix_retry_jitter_pct", 20)?;
    if jitter_pct > 100 {
        return Err(src.invalid("wix_retry_jitter_pct", "must be between 0 and 100"));
    }
    if max > Duration::from_secs(3600) {
        return Err(src.invalid("wix_retry_max_ms", "must be at most 3600000 (one hour)"));
    }
    let backoff = Backoff::exponential(first, factor, max, f64::from(jitter_pct) / 100.0).map_err(|e| match e {
        BackoffError::Factor(_) => src.invalid("wix_retry_factor", e),
        BackoffError::Jitter(_) => src.invalid("wix_retry_jitter_pct", e),
        BackoffError::MinAboveMax { .. } => {
            src.invalid("wix_retry_max_ms", "must not be below INGEST_WIX_RETRY_FIRST_MS")
        }
        BackoffError::ZeroMin => src.invalid("wix_retry_first_ms", e),
    })?;
    let tries: u32 = src.parse("wix_retry_tries", 3)?;
    if !(1..=10).contains(&tries) {
        return Err(src.invalid("wix_retry_tries", "must be between 1 and 10"));
    }
    Ok((backoff, tries))
}

/// The soft `RLIMIT_NOFILE` of this process (what `LimitNOFILE=` / `ulimit -n` set).
pub fn nofile_soft_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Longest listener timeout accepted.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest in-flight body budget accepted (1 GiB).
const MAX_BODY_BUDGET: usize = 1 << 30;

fn listener_limits(
    src: &Source,
    max_body_bytes: usize,
    nofile_soft: u64,
) -> Result<crate::listener::Limits, ConfigError> {
    let timeout = |key: &str, default_ms: u64| -> Result<Duration, ConfigError> {
        let d = src.millis(key, default_ms)?;
        if d > MAX_HTTP_TIMEOUT {
            return Err(src.invalid(key, "must be at most 3600000 (one hour)"));
        }
        Ok(d)
    };
    let header_timeout = timeout("http_header_timeout_ms", 10_000)?;
    let body_timeout = timeout("http_body_timeout_ms", 10_000)?;
    let idle_timeout = timeout("http_idle_timeout_ms", 30_000)?;
    let room = nofile_soft.saturating_sub(crate::listener::FD_RESERVE);
    let max_connections = match src.get("http_max_connections") {
        None => crate::listener::derived_max_connections(nofile_soft).ok_or_else(|| {
            src.invalid(
                "http_max_connections",
                format!(
                    "the descriptor limit (RLIMIT_NOFILE {nofile_soft}) leaves no room: raise LimitNOFILE= / ulimit -n"
                ),
            )
        })?,
        Some(_) => {
            let n: u64 = src.parse("http_max_connections", 0)?;
            if n == 0 {
                return Err(src.invalid("http_max_connections", "must be at least 1"));
            }
            if n > room {
                return Err(src.invalid(
                    "http_max_connections",
                    format!(
                        "{n} does not fit the descriptor limit: at most RLIMIT_NOFILE ({nofile_soft}) - {} = {room}; raise LimitNOFILE= or lower it",
                        crate::listener::FD_RESERVE
                    ),
                ));
            }
            usize::try_from(n).map_err(|_| src.invalid("http_max_connections", "is too large"))?
        }
    };
    let body_budget_bytes: usize = src.parse("http_body_budget_bytes", 16 << 20)?;
    if body_budget_bytes < max_body_bytes || body_budget_bytes > MAX_BODY_BUDGET {
        return Err(src.invalid(
            "http_body_budget_bytes",
            format!("must be between INGEST_MAX_BODY_BYTES ({max_body_bytes}) and {MAX_BODY_BUDGET}"),
        ));
    }
    Ok(crate::listener::Limits { header_timeout, body_timeout, idle_timeout, max_connections, body_budget_bytes })
}

/// `WIX_INSTANCE_ID`: comma-separated, each a plausible id (no spaces or control characters).
fn instance_ids(src: &Source) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = src.get("wix_instance_id") else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for id in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(src.invalid("wix_instance_id", format!("{id:?} is not an app instance id")));
        }
        ids.push(id.to_owned());
    }
    if ids.is_empty() {
        return Err(src.invalid("wix_instance_id", "lists no instance id"));
    }
    Ok(ids)
}

/// Probes used when `INGEST_INTERNET_PROBES` is not set: Wix itself, and an address that needs
/// no DNS (so a DNS outage shows as "degraded", not "offline").
pub const DEFAULT_INTERNET_PROBES: &str = "www.wixapis.com:443,1.1.1.1:443";

fn internet_settings(src: &Source) -> Result<crate::internet::InternetSettings, ConfigError> {
    let probes = crate::internet::parse_probes(&src.string("internet_probes", DEFAULT_INTERNET_PROBES))
        .map_err(|e| src.invalid("internet_probes", e))?;
    let debounce: u32 = src.parse("internet_debounce", 2)?;
    if debounce == 0 {
        return Err(src.invalid("internet_debounce", "must be at least 1"));
    }
    let retention_days: u32 = src.parse("connectivity_retention_days", 30)?;
    if retention_days == 0 {
        return Err(src.invalid("connectivity_retention_days", "must be at least 1"));
    }
    Ok(crate::internet::InternetSettings {
        probes,
        interval: src.millis("internet_interval_ms", 5_000)?,
        timeout: src.millis("internet_timeout_ms", 2_000)?,
        debounce,
        retention: Duration::from_secs(u64::from(retention_days) * 86_400),
    })
}

fn bus_config(src: &Source) -> Result<BusConfig, ConfigError> {
    let keys = bus::BusKeys {
        pub_addr: "bus_pub_addr",
        peer_addr: "print_pub_addr",
        pub_socket: bus::INGEST_SOCKET,
        peer_socket: bus::PRINT_SOCKET,
    };
    bus::config_from(src, "wix-ingest", &keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(env: &[(&str, &str)]) -> Source {
        let env: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Source::load_with(KEYS, None, |k| env.get(k).cloned()).unwrap()
    }

    #[test]
    fn listener_limits_have_defaults_follow_the_descriptor_limit_and_refuse_bad_values() {
        let l = listener_limits(&source(&[]), 1 << 20, 1024).unwrap();
        assert_eq!(
            (l.header_timeout, l.body_timeout, l.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(10), Duration::from_secs(30))
        );
        assert_eq!((l.max_connections, l.body_budget_bytes), (896, 16 << 20));
        assert_eq!(listener_limits(&source(&[]), 1 << 20, 65_536).unwrap().max_connections, 1024);
        let l = listener_limits(&source(&[("INGEST_HTTP_MAX_CONNECTIONS", "50")]), 1 << 20, 1024).unwrap();
        assert_eq!(l.max_connections, 50);
        for (env, nofile) in [
            (("INGEST_HTTP_MAX_CONNECTIONS", "0"), 1024),
            (("INGEST_HTTP_MAX_CONNECTIONS", "1000"), 1024),
            (("INGEST_HTTP_MAX_CONNECTIONS", "lots"), 1024),
            (("INGEST_HTTP_HEADER_TIMEOUT_MS", "0"), 1024),
            (("INGEST_HTTP_IDLE_TIMEOUT_MS", "3600001"), 1024),
            (("INGEST_HTTP_BODY_BUDGET_BYTES", "1000"), 1024),
            (("INGEST_HTTP_BODY_TIMEOUT_MS", "x"), 1024),
        ] {
            let err = listener_limits(&source(&[env]), 1 << 20, nofile).unwrap_err().to_string();
            assert!(err.contains(env.0), "{env:?}: {err}");
        }
        let err = listener_limits(&source(&[]), 1 << 20, 100).unwrap_err().to_string();
        assert!(err.contains("INGEST_HTTP_MAX_CONNECTIONS") && err.contains("LimitNOFILE"), "{err}");
    }

    #[test]
    fn wix_retry_and_breaker_defaults_follow_the_issue_and_bad_values_name_their_variable() {
        let (retry, tries) = wix_retry(&source(&[])).unwrap();
        assert_eq!(tries, 3);
        assert_eq!(retry, Backoff::exponential(Duration::from_millis(500), 1.5, Duration::from_secs(60), 0.2).unwrap());
        let b = BreakerConfig::WIX_API.from_source(&source(&[]), "wix_breaker").unwrap();
        assert_eq!(b, BreakerConfig::WIX_API);
        let b = BreakerConfig::WIX_API
            .from_source(
                &source(&[
                    ("INGEST_WIX_BREAKER_FAILURES", "5"),
                    ("INGEST_WIX_BREAKER_OPEN_MS", "700"),
                    ("INGEST_WIX_BREAKER_SUCCESSES", "1"),
                ]),
                "wix_breaker",
            )
            .unwrap();
        assert_eq!((b.failure_threshold, b.open_for, b.success_threshold), (5, Duration::from_millis(700), 1));
        for env in [
            ("INGEST_WIX_RETRY_FIRST_MS", "0"),
            ("INGEST_WIX_RETRY_FIRST_MS", "120000"),
            ("INGEST_WIX_RETRY_FACTOR", "0.5"),
            ("INGEST_WIX_RETRY_FACTOR", "NaN"),
            ("INGEST_WIX_RETRY_FACTOR", "fast"),
            ("INGEST_WIX_RETRY_MAX_MS", "7200000"),
            ("INGEST_WIX_RETRY_JITTER_PCT", "101"),
            ("INGEST_WIX_RETRY_JITTER_PCT", "-1"),
            ("INGEST_WIX_RETRY_TRIES", "0"),
            ("INGEST_WIX_RETRY_TRIES", "11"),
        ] {
            let err = wix_retry(&source(&[env])).unwrap_err().to_string();
            // A first delay above the maximum is reported on the maximum.
            let named = if env == ("INGEST_WIX_RETRY_FIRST_MS", "120000") { "INGEST_WIX_RETRY_MAX_MS" } else { env.0 };
            assert!(err.contains(named), "{env:?}: {err}");
        }
        for env in [
            ("INGEST_WIX_BREAKER_FAILURES", "0"),
            ("INGEST_WIX_BREAKER_OPEN_MS", "0"),
            ("INGEST_WIX_BREAKER_OPEN_MS", "soon"),
            ("INGEST_WIX_BREAKER_SUCCESSES", "0"),
        ] {
            let err = BreakerConfig::WIX_API.from_source(&source(&[env]), "wix_breaker").unwrap_err().to_string();
            assert!(err.contains(env.0), "{env:?}: {err}");
        }
    }

    #[test]
    fn instance_ids_and_the_loopback_rule_for_tokens() {
        let ids = instance_ids(&source(&[("WIX_INSTANCE_ID", " a-1 , b-2 ,")])).unwrap();
        assert_eq!(ids, ["a-1", "b-2"]);
        assert!(instance_ids(&source(&[])).unwrap().is_empty());
        let err = instance_ids(&source(&[("WIX_INSTANCE_ID", "a b")])).unwrap_err().to_string();
        assert!(err.contains("WIX_INSTANCE_ID"), "{err}");
        let err = instance_ids(&source(&[("WIX_INSTANCE_ID", " , ")])).unwrap_err().to_string();
        assert!(err.contains("WIX_INSTANCE_ID"), "{err}");
    }

    #[test]
    fn connectivity_defaults() {
        let src = source(&[]);
        let internet = internet_settings(&src).unwrap();
        let probes: Vec<String> = internet.probes.iter().map(|p| p.to_string()).collect();
        assert_eq!(probes, ["www.wixapis.com:443", "1.1.1.1:443"]);
        assert_eq!(internet.interval, Duration::from_secs(5));
        assert_eq!(internet.timeout, Duration::from_secs(2));
        assert_eq!(internet.debounce, 2);
        assert_eq!(internet.retention, Duration::from_secs(30 * 86_400));
        let bus = bus_config(&src).unwrap();
        // Unix sockets in the runtime directory shared with wix-print (its path depends on the
        // environment: $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/wix-printer or /run/wix-printer).
        let dir = bus::runtime_dir();
        assert_eq!(bus.pub_addr, format!("ipc://{}", dir.join("ingest-bus.sock").display()));
        assert_eq!(bus.peer_addr, format!("ipc://{}", dir.join("print-bus.sock").display()));
        assert!(bus.key.is_none());
        assert_eq!((bus.heartbeat, bus.stale_after), (Duration::from_secs(1), Duration::from_millis(3500)));
        assert_eq!(bus.source, "wix-ingest");
    }

    #[test]
    fn connectivity_values_are_read_and_bad_ones_name_their_variable() {
        let src = source(&[
            ("INGEST_INTERNET_PROBES", "tcp://127.0.0.1:9000, [::1]:443"),
            ("INGEST_INTERNET_INTERVAL_MS", "100"),
            ("INGEST_INTERNET_DEBOUNCE", "3"),
            ("INGEST_PUB_ADDR", "tcp://127.0.0.1:7001"),
            ("PRINT_PUB_ADDR", "tcp://127.0.0.1:7002"),
            ("BUS_HEARTBEAT_MS", "200"),
            ("BUS_STALE_MS", "1000"),
        ]);
        let internet = internet_settings(&src).unwrap();
        assert_eq!(internet.probes.len(), 2);
        assert_eq!((internet.interval, internet.debounce), (Duration::from_millis(100), 3));
        let bus = bus_config(&src).unwrap();
        assert_eq!(bus.peer_addr, "tcp://127.0.0.1:7002");
        assert_eq!(bus.stale_after, Duration::from_secs(1));

        for (env, needle) in [
            (("INGEST_INTERNET_PROBES", "http://example.com:80"), "INGEST_INTERNET_PROBES"),
            (("INGEST_INTERNET_PROBES", " , "), "INGEST_INTERNET_PROBES"),
            (("INGEST_INTERNET_DEBOUNCE", "0"), "INGEST_INTERNET_DEBOUNCE"),
            (("INGEST_INTERNET_TIMEOUT_MS", "0"), "INGEST_INTERNET_TIMEOUT_MS"),
            (("INGEST_CONNECTIVITY_RETENTION_DAYS", "0"), "INGEST_CONNECTIVITY_RETENTION_DAYS"),
        ] {
            let err = internet_settings(&source(&[env])).unwrap_err().to_string();
            assert!(err.contains(needle), "{env:?}: {err}");
        }
        for (env, needle) in [
            (vec![("INGEST_PUB_ADDR", "127.0.0.1:5561")], "INGEST_PUB_ADDR"),
            (vec![("PRINT_PUB_ADDR", "tcp://127.0.0.1:0")], "PRINT_PUB_ADDR"),
            (
                vec![("INGEST_PUB_ADDR", "tcp://127.0.0.1:5561"), ("PRINT_PUB_ADDR", "tcp://127.0.0.1:5561")],
                "PRINT_PUB_ADDR",
            ),
            (vec![("INGEST_PUB_ADDR", "tcp://0.0.0.0:5561")], "BUS_KEY_FILE"),
            (vec![("PRINT_PUB_ADDR", "tcp://192.168.1.20:5562")], "BUS_KEY_FILE"),
            (vec![("PRINT_PUB_ADDR", "tcp://10.0.0.2:5562"), ("BUS_KEY_FILE", "/nonexistent/bus.key")], "BUS_KEY_FILE"),
            (vec![("BUS_HEARTBEAT_MS", "2000"), ("BUS_STALE_MS", "2000")], "BUS_STALE_MS"),
        ] {
            let err = bus_config(&source(&env)).unwrap_err().to_string();
            assert!(err.contains(needle), "{env:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bus.key");
        std::fs::write(&key, "short\n").unwrap();
        let across = |key: &std::path::Path| {
            source(&[("PRINT_PUB_ADDR", "tcp://10.0.0.2:5562"), ("BUS_KEY_FILE", key.to_str().unwrap())])
        };
        assert!(bus_config(&across(&key)).unwrap_err().to_string().contains("16 bytes"));
        std::fs::write(&key, "a secret of at least sixteen bytes\n").unwrap();
        assert!(bus_config(&across(&key)).unwrap().key.is_some());
    }
}
