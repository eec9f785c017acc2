//! wix-print configuration: every key, its environment variable and its default, parsed and
//! validated before any port is bound. `PRINTER_URL` is required: there is no silent dummy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::codepage::CodePage;
use wixprint_shared::config::{ConfigError, Key, Source};
use wixprint_shared::proto::print::ReceiptType;

use crate::printer::PrinterUrl;

pub static KEYS: &[Key] = &[
    Key {
        name: "grpc_addr",
        env: "PRINT_GRPC_ADDR",
        help: "gRPC listener: SubmitOrder + admin (default 127.0.0.1:50052)",
    },
    Key { name: "db_path", env: "PRINT_DB_PATH", help: "SQLite file (default ./print.db)" },
    Key { name: "printer_url", env: "PRINTER_URL", help: "printer, e.g. tcp://192.168.1.50:9100 (required)" },
    Key { name: "printer_name", env: "PRINTER_NAME", help: "name shown in status (default front)" },
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
        name: "allergy_words",
        env: "PRINT_ALLERGY_WORDS",
        help: "comma-separated words that put an ALLERGIE block on kitchen tickets (default: German + English allergens)",
    },
    Key { name: "width", env: "PRINT_WIDTH", help: "characters per line in Font A: 48, 42 or 32 (default 48)" },
    Key { name: "code_page", env: "PRINT_CODE_PAGE", help: "pc858 or wpc1252 (default pc858)" },
    Key { name: "time_zone", env: "PRINT_TIME_ZONE", help: "IANA time zone for printed times (default: the system's)" },
    Key { name: "restaurant_name", env: "PRINT_RESTAURANT_NAME", help: "header of the customer receipt" },
    Key {
        name: "confirm_mode",
        env: "PRINT_CONFIRM_MODE",
        help: "process_id (GS ( H, Epson) or status (GS r read-back) (default process_id)",
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
        help: "status poll interval while the printer is not ready (default 1000)",
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
        help: "largest retry delay (default 60000)",
    },
    Key { name: "shutdown_grace_ms", env: "PRINT_SHUTDOWN_GRACE_MS", help: "drain time on SIGTERM (default 4000)" },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmMode {
    /// `GS ( H` process-ID response: sent when the printer has finished printing (Epson TM).
    ProcessId,
    /// `GS r 1` read-back after the cut, then a `DLE EOT` check (clones without GS ( H).
    Status,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub db_path: PathBuf,
    pub printer_url: PrinterUrl,
    pub printer_name: String,
    pub receipt_types: Vec<ReceiptType>,
    pub storno_types: Vec<ReceiptType>,
    /// `Some(app id)`: print only orders with a line item from that app.
    pub restaurant_app_id: Option<String>,
    pub reprint_driver_when_paid: bool,
    pub allergy_words: Vec<String>,
    pub width: usize,
    pub code_page: CodePage,
    pub time_zone: jiff::tz::TimeZone,
    pub restaurant_name: String,
    pub confirm_mode: ConfirmMode,
    pub confirm_timeout: Duration,
    pub status_timeout: Duration,
    pub connect_timeout: Duration,
    pub offline_poll: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Backoff,
    pub shutdown_grace: Duration,
}

impl Config {
    pub fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let url = src.required("printer_url")?;
        let printer_url: PrinterUrl = url.parse().map_err(|e| src.invalid("printer_url", e))?;
        let receipt_types = receipt_type_list(src, "receipt_types", "kitchen,driver,customer")?;
        let storno_types = receipt_type_list(src, "storno_receipt_types", "kitchen")?;
        let restaurant_app_id =
            src.bool("restaurant_only", true)?.then(|| src.string("restaurant_app_id", WIX_RESTAURANTS_APP_ID));
        let width: usize = src.parse("width", 48)?;
        if !(24..=80).contains(&width) {
            return Err(src.invalid("width", format!("{width} is outside 24..=80 columns")));
        }
        let code_page = match src.string("code_page", "pc858").to_ascii_lowercase().as_str() {
            "pc858" | "cp858" => CodePage::Pc858,
            "wpc1252" | "cp1252" => CodePage::Wpc1252,
            other => return Err(src.invalid("code_page", format!("unknown code page {other:?} (pc858, wpc1252)"))),
        };
        let time_zone = match src.get("time_zone") {
            None => jiff::tz::TimeZone::system(),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| src.invalid("time_zone", e))?,
        };
        let confirm_mode = match src.string("confirm_mode", "process_id").to_ascii_lowercase().as_str() {
            "process_id" | "gs_h" => ConfirmMode::ProcessId,
            "status" | "gs_r" => ConfirmMode::Status,
            other => return Err(src.invalid("confirm_mode", format!("unknown mode {other:?} (process_id, status)"))),
        };
        let max_attempts: u32 = src.parse("max_attempts", 5)?;
        if max_attempts == 0 {
            return Err(src.invalid("max_attempts", "must be at least 1"));
        }
        let retry_backoff =
            Backoff::new(src.millis("retry_backoff_min_ms", 1_000)?, src.millis("retry_backoff_max_ms", 60_000)?, 0.2)
                .map_err(|e| src.invalid("retry_backoff_min_ms", e))?;
        Ok(Self {
            grpc_addr: src.parse("grpc_addr", "127.0.0.1:50052".parse().expect("literal"))?,
            db_path: src.path("db_path").unwrap_or_else(|| "print.db".into()),
            printer_url,
            printer_name: src.string("printer_name", "front"),
            receipt_types,
            storno_types,
            restaurant_app_id,
            reprint_driver_when_paid: src.bool("reprint_driver_when_paid", false)?,
            allergy_words: match src.get("allergy_words") {
                None => crate::receipt::default_allergy_words(),
                Some(list) => list.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect(),
            },
            width,
            code_page,
            time_zone,
            restaurant_name: src.string("restaurant_name", ""),
            confirm_mode,
            confirm_timeout: src.millis("confirm_timeout_ms", 15_000)?,
            status_timeout: src.millis("status_timeout_ms", 2_000)?,
            connect_timeout: src.millis("connect_timeout_ms", 2_000)?,
            offline_poll: src.millis("offline_poll_ms", 1_000)?,
            max_attempts,
            retry_backoff,
            shutdown_grace: src.millis("shutdown_grace_ms", 4_000)?,
        })
    }
}

/// App id of "Wix Restaurants Orders (New)": its line items mark an order as a restaurant order.
pub const WIX_RESTAURANTS_APP_ID: &str = "9a5d83fd-8570-482e-81ab-cfa88942ee60";

fn receipt_type_list(src: &Source, key: &str, default: &str) -> Result<Vec<ReceiptType>, ConfigError> {
    let mut out = Vec::new();
    for part in src.string(key, default).split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let t = match part.to_ascii_lowercase().as_str() {
            "kitchen" => ReceiptType::Kitchen,
            "driver" | "pickup" => ReceiptType::Driver,
            "customer" => ReceiptType::Customer,
            other => {
                return Err(src.invalid(key, format!("unknown receipt type {other:?} (kitchen, driver, customer)")));
            }
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}
