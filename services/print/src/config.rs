//! wix-print configuration: every key, its environment variable and its default, parsed and
//! validated before any port is bound. `PRINTER_URL` is required: there is no silent dummy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wixprint_shared::auth::{self, Secret};
use wixprint_shared::backoff::Backoff;
use wixprint_shared::breaker::BreakerConfig;
use wixprint_shared::codepage::CodePage;
use wixprint_shared::config::{ConfigError, Key, Source};
use wixprint_shared::proto::print::ReceiptType;

use crate::printer::PrinterUrl;

const OWN_KEYS: &[Key] = &[
    Key {
        name: "grpc_addr",
        env: "PRINT_GRPC_ADDR",
        help: "gRPC listener: SubmitOrder + admin (default 127.0.0.1:50052)",
    },
    Key {
        name: "metrics_addr",
        env: "PRINT_METRICS_ADDR",
        help: "Prometheus endpoint GET /metrics: a port (on 127.0.0.1) or host:port (default off; OTLP export is set by OTEL_EXPORTER_OTLP_ENDPOINT)",
    },
    Key {
        name: "admin_token_file",
        env: "PRINT_ADMIN_TOKEN_FILE",
        help: "bearer token of PrintAdmin (required unless PRINT_GRPC_ADDR is loopback; %d/<name> = systemd credential)",
    },
    Key {
        name: "submit_token_file",
        env: "PRINT_SUBMIT_TOKEN_FILE",
        help: "bearer token wix-ingest sends with SubmitOrder (required unless PRINT_GRPC_ADDR is loopback)",
    },
    Key { name: "db_path", env: "PRINT_DB_PATH", help: "SQLite file (default ./print.db)" },
    Key {
        name: "printer_url",
        env: "PRINTER_URL",
        help: "the printer, e.g. tcp://192.168.1.50:9100 (required unless PRINT_PRINTERS names several)",
    },
    Key { name: "printer_name", env: "PRINTER_NAME", help: "name of PRINTER_URL's printer (default front)" },
    Key {
        name: "printers",
        env: "PRINT_PRINTERS",
        help: "several printers: name=url,... with per-printer ?width=&code_page=&backup= (e.g. kitchen=tcp://10.0.0.5:9100,front=tcp://10.0.0.6:9100?width=32&backup=kitchen)",
    },
    Key {
        name: "routes",
        env: "PRINT_ROUTES",
        help: "printer per receipt type, e.g. kitchen=kitchen,driver=front,customer=front (default: all on the first printer)",
    },
    Key {
        name: "failover_after_secs",
        env: "PRINT_FAILOVER_AFTER_SECS",
        help: "a printer with a backup hands its tickets over after being not ready this long (default 120)",
    },
    Key {
        name: "copies",
        env: "PRINT_COPIES",
        help: "copies per receipt type, e.g. kitchen=2 (default 1 each, at most 5)",
    },
    Key {
        name: "buzzer",
        env: "PRINT_BUZZER",
        help: "receipt types that sound the printer's buzzer, e.g. kitchen (default none)",
    },
    Key {
        name: "receipt_types",
        env: "PRINT_RECEIPT_TYPES",
        help: "receipts per order (default kitchen,driver,customer)",
    },
    Key {
        name: "storno_receipt_types",
        env: "PRINT_STORNO_RECEIPT_TYPES",
        help: "who gets a STORNO slip when a printed order is cancelled (default kitchen)",
    },
    Key {
        name: "restaurant_only",
        env: "PRINT_RESTAURANT_ONLY",
        help: "print only Wix Restaurants orders (default true)",
    },
    Key {
        name: "restaurant_app_id",
        env: "PRINT_RESTAURANT_APP_ID",
        help: "app id of restaurant line items (default the Wix Restaurants Orders app)",
    },
    Key {
        name: "reprint_driver_when_paid",
        env: "PRINT_REPRINT_DRIVER_WHEN_PAID",
        help: "reprint the driver slip when a printed unpaid order gets paid (default false)",
    },
    Key {
        name: "retention_days",
        env: "PRINT_RETENTION_DAYS",
        help: "finished jobs, order versions and recovery sessions older than this are deleted, personal data with them (an order's paper state is kept 400 days, so a late event never prints it again) (default 30, at least 3)",
    },
    Key {
        name: "late_window_mins",
        env: "PRINT_LATE_WINDOW_MINS",
        help: "after print.db was lost: an order it should know prints (with the KOPIE banner) only if placed at most this long ago (default 120)",
    },
    Key {
        name: "allergy_words",
        env: "PRINT_ALLERGY_WORDS",
        help: "comma-separated words that put an ALLERGIE block on kitchen tickets (default: German + English allergens)",
    },
    Key {
        name: "width",
        env: "PRINT_WIDTH",
        help: "characters per line: 48 (80 mm), 64 (80 mm, Font B), 42 or 32 (58 mm) (default 48)",
    },
    Key { name: "code_page", env: "PRINT_CODE_PAGE", help: "pc858 or wpc1252 (default pc858)" },
    Key { name: "time_zone", env: "PRINT_TIME_ZONE", help: "IANA time zone for printed times (default: the system's)" },
    Key { name: "restaurant_name", env: "PRINT_RESTAURANT_NAME", help: "header of the customer receipt" },
    Key {
        name: "restaurant_address",
        env: "PRINT_RESTAURANT_ADDRESS",
        help: "address lines under the name, separated by | (e.g. Bahnhofstrasse 1|9470 Buchs SG)",
    },
    Key { name: "restaurant_phone", env: "PRINT_RESTAURANT_PHONE", help: "phone number under the address" },
    Key { name: "restaurant_vat_id", env: "PRINT_RESTAURANT_VAT_ID", help: "VAT number on the customer receipt" },
    Key {
        name: "receipt_footer",
        env: "PRINT_RECEIPT_FOOTER",
        help: "footer lines of the customer receipt, separated by |",
    },
    Key {
        name: "receipt_qr",
        env: "PRINT_RECEIPT_QR",
        help: "QR code at the end of the customer receipt; {order_number} and {order_id} are replaced (default none)",
    },
    Key {
        name: "language",
        env: "PRINT_LANGUAGE",
        help: "label language for every receipt, e.g. de or en (default: the order's buyer, else site language)",
    },
    Key {
        name: "labels_file",
        env: "PRINT_LABELS_FILE",
        help: "TOML file overriding or adding receipt labels per language (see deploy/labels.example.toml)",
    },
    Key {
        name: "confirm_mode",
        env: "PRINT_CONFIRM_MODE",
        help: "auto (probe GS ( H once per connection; status read-back when unanswered), process_id (GS ( H, Epson) or status (GS r read-back) (default auto)",
    },
    Key {
        name: "confirm_timeout_ms",
        env: "PRINT_CONFIRM_TIMEOUT_MS",
        help: "wait for the printer's confirmation while it reports online (default 15000)",
    },
    Key {
        name: "status_timeout_ms",
        env: "PRINT_STATUS_TIMEOUT_MS",
        help: "wait for a status reply before calling the printer offline (default 2000)",
    },
    Key { name: "connect_timeout_ms", env: "PRINT_CONNECT_TIMEOUT_MS", help: "TCP connect timeout (default 2000)" },
    Key {
        name: "offline_poll_ms",
        env: "PRINT_OFFLINE_POLL_MS",
        help: "status poll interval while the printer is not ready (default 500)",
    },
    Key {
        name: "status_poll_ms",
        env: "PRINT_STATUS_POLL_MS",
        help: "printer status poll interval while idle (default 1000)",
    },
    Key {
        name: "status_debounce",
        env: "PRINT_STATUS_DEBOUNCE",
        help: "status reads in a row that confirm a printer went away (default 2; coming back counts at once)",
    },
    Key {
        name: "connectivity_retention_days",
        env: "PRINT_CONNECTIVITY_RETENTION_DAYS",
        help: "how long connectivity events are kept (default 30)",
    },
    Key {
        name: "pub_addr",
        env: "PRINT_PUB_ADDR",
        help: "this service's connectivity bus PUB socket: ipc:///path or tcp://host:port (default ipc://$RUNTIME_DIRECTORY/print-bus.sock)",
    },
    Key {
        name: "peer_pub_addr",
        env: "INGEST_PUB_ADDR",
        help: "wix-ingest's connectivity bus PUB socket (default ipc://$RUNTIME_DIRECTORY/ingest-bus.sock)",
    },
    Key {
        name: "bus_heartbeat_ms",
        env: "BUS_HEARTBEAT_MS",
        help: "connectivity state re-sent this often (default 1000)",
    },
    Key {
        name: "bus_stale_ms",
        env: "BUS_STALE_MS",
        help: "peer unknown after this long without a heartbeat (default 3500)",
    },
    Key {
        name: "bus_key_file",
        env: "BUS_KEY_FILE",
        help: "shared secret file (>= 16 random bytes, the same on both hosts) authenticating every bus message; required when a bus address is not loopback or ipc:// (default none)",
    },
    Key {
        name: "high_priority_total",
        env: "PRINT_HIGH_PRIORITY_TOTAL",
        help: "orders with a total at or above this amount print all receipts at HIGH priority (default off)",
    },
    Key {
        name: "recovery_rate",
        env: "PRINT_RECOVERY_RATE",
        help: "most tickets per second while a recovery drains a backlog (default 0 = as fast as the printer)",
    },
    Key { name: "max_attempts", env: "PRINT_MAX_ATTEMPTS", help: "attempts before a job is dead-lettered (default 5)" },
    Key {
        name: "retry_backoff_min_ms",
        env: "PRINT_RETRY_BACKOFF_MIN_MS",
        help: "first retry delay after a failed attempt (default 1000)",
    },
    Key {
        name: "retry_backoff_max_ms",
        env: "PRINT_RETRY_BACKOFF_MAX_MS",
        help: "largest retry delay (default 300000)",
    },
    Key {
        name: "retry_backoff_factor",
        env: "PRINT_RETRY_BACKOFF_FACTOR",
        help: "growth of the retry delay per attempt, 1.0-10.0 (default 2.0)",
    },
    Key {
        name: "retry_jitter_pct",
        env: "PRINT_RETRY_JITTER_PCT",
        help: "random spread of each retry delay, ± percent 0-100 (default 25)",
    },
    Key {
        name: "breaker_failures",
        env: "PRINT_BREAKER_FAILURES",
        help: "consecutive transient failures (mid-ticket) that open a printer's circuit breaker (default 5)",
    },
    Key {
        name: "breaker_open_ms",
        env: "PRINT_BREAKER_OPEN_MS",
        help: "how long an open printer breaker touches nothing before its status-read probe (default 30000)",
    },
    Key {
        name: "breaker_successes",
        env: "PRINT_BREAKER_SUCCESSES",
        help: "good tickets after the probe that close a half-open printer breaker (default 3)",
    },
    Key { name: "shutdown_grace_ms", env: "PRINT_SHUTDOWN_GRACE_MS", help: "drain time on SIGTERM (default 4000)" },
    Key {
        name: "alert_printer_not_ready_secs",
        env: "ALERT_PRINTER_NOT_READY_SECS",
        help: "e-mail when a printer is not ready this long, with the reason (default 300)",
    },
    Key {
        name: "alert_paper_low_secs",
        env: "ALERT_PAPER_LOW_SECS",
        help: "e-mail when a printer's paper is near its end this long (default 60)",
    },
    Key {
        name: "alert_peer_secs",
        env: "ALERT_PEER_SECS",
        help: "e-mail when the other service is unheard on the bus this long (default 300)",
    },
    Key {
        name: "alert_recovery_min_outage_secs",
        env: "ALERT_RECOVERY_MIN_OUTAGE_SECS",
        help: "after a printer outage at least this long, e-mail the recovery's summary (default 600)",
    },
];

/// The health monitor's keys (`PRINT_HEALTH_*`, parsed by `wixprint_shared::health`).
const HEALTH_KEYS: &[Key] = &wixprint_shared::health_keys!("PRINT"
    ; "queue_age" / "QUEUE_AGE" / "secs" / "SECS": "oldest waiting ticket (waiting, never restarts; default warning 900 s)"
    ; "printer_stuck" / "PRINTER_STUCK" / "secs" / "SECS": "a printer that looks ready but answered no status read for this long (default warning 60 s, critical 300 s)");

/// Every key of this service.
pub static KEYS: &[Key] =
    &wixprint_shared::config::concat_keys::<{ OWN_KEYS.len() + SHARED_KEYS.len() }>(OWN_KEYS, SHARED_KEYS);

/// The e-mail alert keys (`ALERT_*`, the same for both services, parsed by
/// `wixprint_shared::alerts::AlertConfig`).
const ALERT_KEYS: &[Key] = &wixprint_shared::alert_keys!();
const SHARED_KEYS: &[Key] =
    &wixprint_shared::config::concat_keys::<{ HEALTH_KEYS.len() + ALERT_KEYS.len() }>(HEALTH_KEYS, ALERT_KEYS);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmMode {
    /// Probe `GS ( H` support once per connection; a printer that does not answer it is
    /// confirmed by status read-back.
    Auto,
    /// `GS ( H` process-ID response: sent when the printer has finished printing (Epson TM).
    ProcessId,
    /// `GS r 1` read-back after the cut, then a `DLE EOT` check (clones without GS ( H).
    Status,
}

impl ConfirmMode {
    /// The confirmation a printer is fixed to; `None` for auto (probed per connection).
    pub fn fixed(self) -> Option<crate::printer::Confirmation> {
        match self {
            ConfirmMode::Auto => None,
            ConfirmMode::ProcessId => Some(crate::printer::Confirmation::ProcessId),
            ConfirmMode::Status => Some(crate::printer::Confirmation::Status),
        }
    }
}

/// One printer: where it is and how its paper looks.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterConfig {
    pub name: String,
    pub url: PrinterUrl,
    /// Characters per line (64 means Font B on 80 mm paper).
    pub width: usize,
    pub code_page: CodePage,
    /// Printer that takes over this one's tickets when it has been not ready for
    /// `failover_after`.
    pub backup: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The health monitor, and wix-print's own checks.
    pub health: wixprint_shared::health::HealthConfig,
    /// E-mail alerts; `None` = off (`ALERT_SMTP_URL` unset).
    pub alerts: Option<wixprint_shared::alerts::AlertConfig>,
    pub queue_age: wixprint_shared::health::Thresholds,
    pub printer_stuck: wixprint_shared::health::Thresholds,
    pub grpc_addr: SocketAddr,
    /// The Prometheus endpoint (`PRINT_METRICS_ADDR`), off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token of `PrintAdmin`; `None` (open) only on a loopback `grpc_addr`.
    pub admin_token: Option<Secret>,
    /// Bearer token of `PrintService` (SubmitOrder); `None` only on a loopback `grpc_addr`.
    pub submit_token: Option<Secret>,
    pub db_path: PathBuf,
    /// At least one; names are unique.
    pub printers: Vec<PrinterConfig>,
    /// The printer of each receipt type (a name in `printers`).
    pub routes: Vec<(ReceiptType, String)>,
    pub copies: Vec<(ReceiptType, u32)>,
    pub buzzer: Vec<ReceiptType>,
    pub failover_after: Duration,
    pub receipt_types: Vec<ReceiptType>,
    pub storno_types: Vec<ReceiptType>,
    /// `Some(app id)`: print only orders with a line item from that app.
    pub restaurant_app_id: Option<String>,
    pub reprint_driver_when_paid: bool,
    /// See `paper::QueuePolicy::late_window_ms`.
    pub late_window: std::time::Duration,
    /// How long finished jobs and order versions are kept.
    pub retention: std::time::Duration,
    pub allergy_words: Vec<String>,
    pub time_zone: jiff::tz::TimeZone,
    pub restaurant: crate::receipt::Restaurant,
    /// Label language forced for every receipt; `None` follows the order.
    pub language: Option<String>,
    pub labels: std::sync::Arc<crate::receipt::LabelBook>,
    pub confirm_mode: ConfirmMode,
    pub confirm_timeout: Duration,
    pub status_timeout: Duration,
    pub connect_timeout: Duration,
    pub offline_poll: Duration,
    pub status_poll: Duration,
    pub status_debounce: u32,
    pub connectivity_retention: Duration,
    pub bus: wixprint_shared::bus::BusConfig,
    /// Orders with at least this total (in minor units of any currency, 2 decimals) print
    /// at HIGH priority.
    pub high_priority_total: Option<String>,
    /// Tickets per second during a recovery; `None` = unlimited.
    pub recovery_rate: Option<f64>,
    pub max_attempts: u32,
    pub retry_backoff: Backoff,
    /// The printer transport's circuit breaker (one per printer, these numbers).
    pub breaker: BreakerConfig,
    pub shutdown_grace: Duration,
    /// When wix-print's alerts fire (README "Alert catalogue").
    pub alert_thresholds: crate::alerting::AlertThresholds,
}

impl Config {
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let printers = printers(src)?;
        let receipt_types = receipt_type_list(src, "receipt_types", "kitchen,driver,customer")?;
        let storno_types = receipt_type_list(src, "storno_receipt_types", "kitchen")?;
        let routes = routes(src, &printers)?;
        let copies = copies(src)?;
        let buzzer = receipt_type_list(src, "buzzer", "")?;
        let failover_secs: u64 = src.parse("failover_after_secs", 120)?;
        if failover_secs == 0 {
            return Err(src.invalid("failover_after_secs", "must be greater than 0"));
        }
        let restaurant_app_id =
            src.bool("restaurant_only", true)?.then(|| src.string("restaurant_app_id", WIX_RESTAURANTS_APP_ID));
        let time_zone = match src.get("time_zone") {
            None => jiff::tz::TimeZone::system(),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| src.invalid("time_zone", e))?,
        };
        // Mails show times in the service's time zone.
        let alerts = wixprint_shared::alerts::AlertConfig::parse(src, time_zone.clone())?;
        let labels = match src.path("labels_file") {
            None => crate::receipt::LabelBook::builtin(),
            Some(path) => crate::receipt::LabelBook::load(&path).map_err(|e| src.invalid("labels_file", e))?,
        };
        let language = src.get("language").map(str::to_owned);
        let confirm_mode = match src.string("confirm_mode", "auto").to_ascii_lowercase().as_str() {
            "auto" => ConfirmMode::Auto,
            "process_id" | "gs_h" => ConfirmMode::ProcessId,
            "status" | "gs_r" => ConfirmMode::Status,
            other => {
                return Err(src.invalid("confirm_mode", format!("unknown mode {other:?} (auto, process_id, status)")));
            }
        };
        let max_attempts: u32 = src.parse("max_attempts", 5)?;
        if max_attempts == 0 {
            return Err(src.invalid("max_attempts", "must be at least 1"));
        }
        let jitter_pct: f64 = src.parse("retry_jitter_pct", 25.0)?;
        if !(0.0..=100.0).contains(&jitter_pct) {
            return Err(src.invalid("retry_jitter_pct", "must be between 0 and 100"));
        }
        let factor: f64 = src.parse("retry_backoff_factor", 2.0)?;
        let retry_backoff = Backoff::exponential(
            src.millis("retry_backoff_min_ms", 1_000)?,
            factor,
            src.millis("retry_backoff_max_ms", 300_000)?,
            jitter_pct / 100.0,
        )
        .map_err(|e| match e {
            wixprint_shared::backoff::BackoffError::Factor(_) => src.invalid("retry_backoff_factor", e),
            _ => src.invalid("retry_backoff_min_ms", e),
        })?;
        let breaker = BreakerConfig::PRINTER.from_source(src, "breaker")?;
        let lines = |key: &str| -> Vec<String> {
            src.get(key)
                .map(|v| v.split(['|', '\n']).map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect())
                .unwrap_or_default()
        };
        let restaurant = crate::receipt::Restaurant {
            name: src.string("restaurant_name", ""),
            address: lines("restaurant_address"),
            phone: src.string("restaurant_phone", ""),
            vat_id: src.string("restaurant_vat_id", ""),
            footer: lines("receipt_footer"),
            qr: src.string("receipt_qr", ""),
        };
        let status_debounce: u32 = src.parse("status_debounce", 2)?;
        if status_debounce == 0 {
            return Err(src.invalid("status_debounce", "must be at least 1"));
        }
        let retention_days: u64 = src.parse("connectivity_retention_days", 30)?;
        if retention_days == 0 {
            return Err(src.invalid("connectivity_retention_days", "must be at least 1"));
        }
        let bus_keys = wixprint_shared::bus::BusKeys {
            pub_addr: "pub_addr",
            peer_addr: "peer_pub_addr",
            pub_socket: wixprint_shared::bus::PRINT_SOCKET,
            peer_socket: wixprint_shared::bus::INGEST_SOCKET,
        };
        let bus = wixprint_shared::bus::config_from(src, "wix-print", &bus_keys)?;
        let high_priority_total = match src.get("high_priority_total") {
            None => None,
            Some(v) if crate::priority::parse_amount(v).is_some() => Some(v.to_owned()),
            Some(v) => {
                return Err(src.invalid("high_priority_total", format!("{v:?} is not an amount like 100 or 99.50")));
            }
        };
        let rate: f64 = src.parse("recovery_rate", 0.0)?;
        if !rate.is_finite() || rate < 0.0 {
            return Err(src.invalid("recovery_rate", format!("{rate} must be 0 (unlimited) or a positive number")));
        }
        let recovery_rate = (rate > 0.0).then_some(rate);
        let grpc_addr: SocketAddr = src.parse("grpc_addr", "127.0.0.1:50052".parse().expect("literal"))?;
        let loopback = auth::is_loopback(&grpc_addr);
        let admin_token = auth::token_from_source(src, "admin_token_file")?;
        let submit_token = auth::token_from_source(src, "submit_token_file")?;
        let why = format!("PRINT_GRPC_ADDR {grpc_addr}");
        auth::require_unless_loopback(src, "admin_token_file", &admin_token, loopback, &why)?;
        auth::require_unless_loopback(src, "submit_token_file", &submit_token, loopback, &why)?;
        auth::require_distinct(src, "admin_token_file", &admin_token, "PRINT_SUBMIT_TOKEN_FILE", &submit_token)?;
        Ok(Self {
            health: wixprint_shared::health::HealthConfig::parse(src)?,
            alerts,
            queue_age: wixprint_shared::health::thresholds(
                src,
                "queue_age",
                "secs",
                wixprint_shared::health::Thresholds::new(900.0, 0.0, 0.0),
            )?,
            printer_stuck: wixprint_shared::health::thresholds(
                src,
                "printer_stuck",
                "secs",
                wixprint_shared::health::Thresholds::new(60.0, 300.0, 0.0),
            )?,
            grpc_addr,
            metrics_addr: wixprint_shared::telemetry::metrics_addr(src, "metrics_addr")?,
            admin_token,
            submit_token,
            db_path: src.path("db_path").unwrap_or_else(|| "print.db".into()),
            printers,
            routes,
            copies,
            buzzer,
            failover_after: Duration::from_secs(failover_secs),
            receipt_types,
            storno_types,
            restaurant_app_id,
            reprint_driver_when_paid: src.bool("reprint_driver_when_paid", false)?,
            late_window: std::time::Duration::from_secs(60 * src.parse::<u32>("late_window_mins", 120)? as u64),
            retention: wixprint_shared::retention::days(src, "retention_days", 30)?,
            allergy_words: match src.get("allergy_words") {
                None => crate::receipt::default_allergy_words(),
                Some(list) => list.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect(),
            },
            time_zone,
            restaurant,
            language,
            labels: std::sync::Arc::new(labels),
            confirm_mode,
            confirm_timeout: src.millis("confirm_timeout_ms", 15_000)?,
            status_timeout: src.millis("status_timeout_ms", 2_000)?,
            connect_timeout: src.millis("connect_timeout_ms", 2_000)?,
            offline_poll: src.millis("offline_poll_ms", 500)?,
            status_poll: src.millis("status_poll_ms", 1_000)?,
            status_debounce,
            connectivity_retention: Duration::from_secs(retention_days * 86_400),
            bus,
            high_priority_total,
            recovery_rate,
            max_attempts,
            retry_backoff,
            breaker,
            shutdown_grace: src.millis("shutdown_grace_ms", 4_000)?,
            alert_thresholds: crate::alerting::AlertThresholds {
                printer_not_ready: alert_secs(src, "alert_printer_not_ready_secs", 300)?,
                paper_low: alert_secs(src, "alert_paper_low_secs", 60)?,
                peer: alert_secs(src, "alert_peer_secs", 300)?,
                recovery_min_outage: alert_secs(src, "alert_recovery_min_outage_secs", 600)?,
            },
        })
    }

    /// The printer `receipt_type` is routed to.
    pub fn printer_for(&self, receipt_type: ReceiptType) -> &str {
        self.routes.iter().find(|(t, _)| *t == receipt_type).map_or(self.printers[0].name.as_str(), |(_, p)| p)
    }
}

fn parse_width(v: &str) -> Result<usize, String> {
    let width: usize = v.parse().map_err(|_| format!("width {v:?} is not a number"))?;
    if !(24..=80).contains(&width) {
        return Err(format!("width {width} is outside 24..=80 columns"));
    }
    Ok(width)
}

fn parse_code_page(v: &str) -> Result<CodePage, String> {
    match v.to_ascii_lowercase().as_str() {
        "pc858" | "cp858" => Ok(CodePage::Pc858),
        "wpc1252" | "cp1252" => Ok(CodePage::Wpc1252),
        other => Err(format!("unknown code page {other:?} (pc858, wpc1252)")),
    }
}

/// `PRINT_PRINTERS` (name=url?width=..&code_page=..&backup=.., ...), or the single
/// `PRINTER_URL` named `PRINTER_NAME`. `PRINT_WIDTH` / `PRINT_CODE_PAGE` are the defaults of
/// every printer.
fn printers(src: &Source) -> Result<Vec<PrinterConfig>, ConfigError> {
    let width = match src.get("width") {
        None => 48,
        Some(v) => parse_width(v).map_err(|e| src.invalid("width", e))?,
    };
    let code_page = parse_code_page(&src.string("code_page", "pc858")).map_err(|e| src.invalid("code_page", e))?;
    let Some(list) = src.get("printers") else {
        let url = src.required("printer_url")?;
        let url: PrinterUrl = url.parse().map_err(|e| src.invalid("printer_url", e))?;
        let name = src.string("printer_name", "front");
        return Ok(vec![PrinterConfig { name, url, width, code_page, backup: None }]);
    };
    let bad = |e: String| src.invalid("printers", e);
    let mut out: Vec<PrinterConfig> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, spec) = entry.split_once('=').ok_or_else(|| bad(format!("{entry:?} is not name=url")))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(bad(format!("printer name {name:?} must be letters, digits, - or _")));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(bad(format!("printer {name:?} is listed twice")));
        }
        let (url, query) = spec.trim().split_once('?').unwrap_or((spec.trim(), ""));
        let mut p = PrinterConfig {
            name: name.to_owned(),
            url: url.parse().map_err(|e| bad(format!("printer {name}: {e}")))?,
            width,
            code_page,
            backup: None,
        };
        for param in query.split('&').filter(|q| !q.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k {
                "width" => p.width = parse_width(v).map_err(|e| bad(format!("printer {name}: {e}")))?,
                "code_page" => p.code_page = parse_code_page(v).map_err(|e| bad(format!("printer {name}: {e}")))?,
                "backup" => p.backup = Some(v.to_owned()),
                other => {
                    return Err(bad(format!("printer {name}: unknown setting {other:?} (width, code_page, backup)")));
                }
            }
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(bad("lists no printer".into()));
    }
    for p in &out {
        if let Some(b) = &p.backup {
            if b == &p.name {
                return Err(bad(format!("printer {} cannot be its own backup", p.name)));
            }
            if !out.iter().any(|q| &q.name == b) {
                return Err(bad(format!("printer {}: backup {b:?} is not a configured printer", p.name)));
            }
        }
    }
    Ok(out)
}

fn routes(src: &Source, printers: &[PrinterConfig]) -> Result<Vec<(ReceiptType, String)>, ConfigError> {
    let mut out = Vec::new();
    for (t, name) in type_map(src, "routes")? {
        if !printers.iter().any(|p| p.name == name) {
            let known = printers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(src.invalid("routes", format!("printer {name:?} is not configured (printers: {known})")));
        }
        out.push((t, name));
    }
    Ok(out)
}

fn copies(src: &Source) -> Result<Vec<(ReceiptType, u32)>, ConfigError> {
    let mut out = Vec::new();
    for (t, n) in type_map(src, "copies")? {
        match n.parse::<u32>() {
            Ok(n @ 1..=5) => out.push((t, n)),
            _ => return Err(src.invalid("copies", format!("copies {n:?} must be a number from 1 to 5"))),
        }
    }
    Ok(out)
}

/// `type=value,...` with receipt type names as keys.
fn type_map(src: &Source, key: &str) -> Result<Vec<(ReceiptType, String)>, ConfigError> {
    let mut out: Vec<(ReceiptType, String)> = Vec::new();
    for part in src.string(key, "").split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (t, v) = part.split_once('=').ok_or_else(|| src.invalid(key, format!("{part:?} is not type=value")))?;
        let t = receipt_type(t).ok_or_else(|| src.invalid(key, unknown_type(t)))?;
        out.retain(|(seen, _)| *seen != t);
        out.push((t, v.trim().to_owned()));
    }
    Ok(out)
}

fn receipt_type(name: &str) -> Option<ReceiptType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "kitchen" => Some(ReceiptType::Kitchen),
        "driver" | "pickup" => Some(ReceiptType::Driver),
        "customer" => Some(ReceiptType::Customer),
        _ => None,
    }
}

fn unknown_type(name: &str) -> String {
    format!("unknown receipt type {:?} (kitchen, driver, customer)", name.trim())
}

/// App id of "Wix Restaurants Orders (New)": its line items mark an order as a restaurant order.
pub const WIX_RESTAURANTS_APP_ID: &str = "9a5d83fd-8570-482e-81ab-cfa88942ee60";

fn receipt_type_list(src: &Source, key: &str, default: &str) -> Result<Vec<ReceiptType>, ConfigError> {
    let mut out = Vec::new();
    for part in src.string(key, default).split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let t = receipt_type(part).ok_or_else(|| src.invalid(key, unknown_type(part)))?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// An alert threshold in seconds: 0 ..= one week (0 = at once).
fn alert_secs(src: &Source, key: &str, default: u64) -> Result<Duration, ConfigError> {
    let secs: u64 = src.parse(key, default)?;
    if secs > 7 * 86_400 {
        return Err(src.invalid(key, "at most one week (604800 s)"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let src = Source::load_with(KEYS, None, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))?;
        Config::from_source(&src)
    }

    fn err(env: &[(&str, &str)]) -> String {
        config(env).expect_err("config must be refused").to_string()
    }

    #[test]
    fn one_printer_from_printer_url_takes_every_receipt_type() {
        let c = config(&[("PRINTER_URL", "tcp://10.0.0.5:9100"), ("PRINT_WIDTH", "32")]).unwrap();
        assert_eq!(c.printers.len(), 1);
        assert_eq!((c.printers[0].name.as_str(), c.printers[0].width), ("front", 32));
        for t in [ReceiptType::Kitchen, ReceiptType::Driver, ReceiptType::Customer] {
            assert_eq!(c.printer_for(t), "front");
        }
        assert!(err(&[]).contains("PRINTER_URL"));
    }

    #[test]
    fn tokens_are_required_off_loopback_and_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap();
            dir.path().join(name).display().to_string()
        };
        let (admin, submit) = (file("a", "admin-token-0123456789\n"), file("s", " submit-token-0123456789 "));
        let url = ("PRINTER_URL", "tcp://10.0.0.5:9100");
        let open = config(&[url]).unwrap();
        assert!(open.admin_token.is_none() && open.submit_token.is_none(), "loopback may run open");
        let lan = ("PRINT_GRPC_ADDR", "0.0.0.0:50052");
        assert!(err(&[url, lan]).contains("PRINT_ADMIN_TOKEN_FILE"));
        assert!(err(&[url, lan, ("PRINT_ADMIN_TOKEN_FILE", &admin)]).contains("PRINT_SUBMIT_TOKEN_FILE"));
        let c = config(&[url, lan, ("PRINT_ADMIN_TOKEN_FILE", &admin), ("PRINT_SUBMIT_TOKEN_FILE", &submit)]).unwrap();
        assert!(c.submit_token.unwrap().matches(b"submit-token-0123456789"));
        assert!(!format!("{:?}", c.admin_token).contains("admin-token"), "a token in Debug output");
        let empty = file("e", "\n");
        assert!(err(&[url, ("PRINT_ADMIN_TOKEN_FILE", &empty)]).contains("PRINT_ADMIN_TOKEN_FILE"));
    }

    #[test]
    fn confirm_mode_defaults_to_auto_and_keeps_the_fixed_modes() {
        let url = ("PRINTER_URL", "tcp://10.0.0.5:9100");
        assert_eq!(config(&[url]).unwrap().confirm_mode, ConfirmMode::Auto);
        assert_eq!(ConfirmMode::Auto.fixed(), None);
        for (v, want) in
            [("process_id", ConfirmMode::ProcessId), ("STATUS", ConfirmMode::Status), ("auto", ConfirmMode::Auto)]
        {
            assert_eq!(config(&[url, ("PRINT_CONFIRM_MODE", v)]).unwrap().confirm_mode, want, "{v}");
        }
        assert_eq!(ConfirmMode::Status.fixed(), Some(crate::printer::Confirmation::Status));
        assert!(err(&[url, ("PRINT_CONFIRM_MODE", "maybe")]).contains("PRINT_CONFIRM_MODE"));
    }

    #[test]
    fn several_printers_with_routes_settings_and_backup() {
        let c = config(&[
            (
                "PRINT_PRINTERS",
                "kitchen=tcp://10.0.0.5:9100?width=64&backup=front, front=tcp://10.0.0.6?code_page=wpc1252",
            ),
            ("PRINT_ROUTES", "kitchen=kitchen,driver=front,customer=front"),
            ("PRINT_COPIES", "customer=2"),
            ("PRINT_BUZZER", "kitchen"),
            ("PRINT_RESTAURANT_ADDRESS", "Bahnhofstrasse 1 | 9470 Buchs SG"),
        ])
        .unwrap();
        let k = &c.printers[0];
        assert_eq!(
            (k.name.as_str(), k.width, k.code_page, k.backup.as_deref()),
            ("kitchen", 64, CodePage::Pc858, Some("front"))
        );
        let f = &c.printers[1];
        assert_eq!((f.width, f.code_page, f.backup.as_deref()), (48, CodePage::Wpc1252, None));
        assert_eq!(f.url.to_string(), "tcp://10.0.0.6:9100");
        assert_eq!(c.printer_for(ReceiptType::Kitchen), "kitchen");
        assert_eq!(c.printer_for(ReceiptType::Customer), "front");
        assert_eq!(c.copies, [(ReceiptType::Customer, 2)]);
        assert_eq!(c.buzzer, [ReceiptType::Kitchen]);
        assert_eq!(c.restaurant.address, ["Bahnhofstrasse 1", "9470 Buchs SG"]);
    }

    #[test]
    fn bad_printer_settings_are_refused_naming_what_is_wrong() {
        let two = "kitchen=tcp://10.0.0.5:9100,front=tcp://10.0.0.6:9100";
        assert!(err(&[("PRINT_PRINTERS", "kitchen")]).contains("not name=url"));
        assert!(err(&[("PRINT_PRINTERS", "a=tcp://h:1,a=tcp://h:2")]).contains("listed twice"));
        assert!(err(&[("PRINT_PRINTERS", "a=tcp://h:1?width=100")]).contains("outside 24..=80"));
        assert!(err(&[("PRINT_PRINTERS", "a=tcp://h:1?speed=2")]).contains("unknown setting \"speed\""));
        assert!(
            err(&[("PRINT_PRINTERS", "a=tcp://h:1?backup=b")]).contains("backup \"b\" is not a configured printer")
        );
        assert!(err(&[("PRINT_PRINTERS", "a=tcp://h:1?backup=a")]).contains("its own backup"));
        assert!(err(&[("PRINT_PRINTERS", two), ("PRINT_ROUTES", "kitchen=bar")]).contains("\"bar\" is not configured"));
        assert!(err(&[("PRINT_PRINTERS", two), ("PRINT_ROUTES", "dessert=front")]).contains("unknown receipt type"));
        assert!(err(&[("PRINT_PRINTERS", two), ("PRINT_COPIES", "kitchen=9")]).contains("from 1 to 5"));
        assert!(
            err(&[("PRINT_PRINTERS", two), ("PRINT_FAILOVER_AFTER_SECS", "0")]).contains("PRINT_FAILOVER_AFTER_SECS")
        );
    }
}
