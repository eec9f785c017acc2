//! The health monitor of both services: resource checks (system memory, the process's RSS and
//! CPU, the database's file system, the SQLite file and its WAL, the SoC temperature) every
//! `health.resource_interval_ms` (60 s), the service's own cheap checks ([`Hooks::readings`]:
//! oldest waiting ticket, a stuck printer connection, the outbox backlog) every
//! `health.check_interval_ms` (30 s). Each check has warning / critical / emergency thresholds
//! (configurable, [`HealthConfig::parse`]); a state change is recorded (`self_healing_events`,
//! kind `check`), a healing action runs (kind `action`, with before/after), and
//! `grpc.health.v1` says NOT_SERVING while any check is critical or worse.
//!
//! Controlled restart: a restart-worthy check (memory, RSS, CPU, WAL, a stuck printer) that
//! stays critical for `health.restart_after_secs` despite its healing asks for the service's
//! own restart: recorded in the ledger and as a `restart` event, then the fatal path drains and
//! exits with [`crate::fatal::EXIT_RESTART`] (75), which the unit restarts on. At most one
//! restart per `health.restart_cooldown_secs` and `health.restart_max_per_hour` per hour
//! ([`decide_restart`]); past that the service stays up, degraded, and says so once, loudly.
//!
//! Cheap: sysinfo refreshes only the system's RAM and this one process; statvfs, two file
//! sizes, one small file per thermal zone and a couple of indexed queries per round.
//!
//! Must never: treat waiting as failing. The waiting checks (oldest waiting ticket, outbox
//! backlog) warn by default and never restart the service: a printer that is offline or a
//! wix-print that is down is waited for.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Source};
use crate::healing::{self, Healing, HealingEvent, KIND_ACTION, KIND_CHECK, KIND_RESTART};
use crate::proto::events as pb;
use crate::time::{now_ms, timestamp_from_ms};
use crate::watchdog::Watchdog;

// ---------------------------------------------------------------------------------------------
// Levels and thresholds (pure)

/// A check's state; ordered from harmless to worst (`Unknown` below `Ok`: a check that cannot
/// be measured here never makes the service look worse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Unknown,
    Ok,
    Warning,
    Critical,
    Emergency,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
            Level::Emergency => "emergency",
        }
    }

    pub fn is_critical(self) -> bool {
        self >= Level::Critical
    }
}

/// Warning / critical / emergency levels in the check's unit; 0 = that level is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub warning: f64,
    pub critical: f64,
    pub emergency: f64,
}

impl Thresholds {
    pub const fn new(warning: f64, critical: f64, emergency: f64) -> Thresholds {
        Thresholds { warning, critical, emergency }
    }

    /// The level of `value` (at or above a threshold = that level).
    pub fn level(&self, value: f64) -> Level {
        let at = |t: f64| t > 0.0 && value >= t;
        if at(self.emergency) {
            Level::Emergency
        } else if at(self.critical) {
            Level::Critical
        } else if at(self.warning) {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    fn scaled(self, by: f64) -> Thresholds {
        Thresholds { warning: self.warning * by, critical: self.critical * by, emergency: self.emergency * by }
    }
}

/// How long a value must stay above a level before it counts (the CPU check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sustain {
    /// Above warning this long → warning.
    pub warning_after: Duration,
    /// Above critical (emergency) this long → critical (emergency).
    pub critical_after: Duration,
}

/// Since when (monotonic ms) a sustained value has been at or above each level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SustainState {
    warning_since: Option<u64>,
    critical_since: Option<u64>,
    emergency_since: Option<u64>,
}

/// The level of a sustained check at `now_ms` after reading `value`. Pure: unit-tested.
pub fn sustained(t: &Thresholds, s: &Sustain, st: &mut SustainState, value: f64, now_ms: u64) -> Level {
    let raw = t.level(value);
    let track = |since: &mut Option<u64>, above: bool| {
        if above {
            since.get_or_insert(now_ms);
        } else {
            *since = None;
        }
    };
    track(&mut st.warning_since, raw >= Level::Warning);
    track(&mut st.critical_since, raw >= Level::Critical);
    track(&mut st.emergency_since, raw >= Level::Emergency);
    let held =
        |since: Option<u64>, d: Duration| since.is_some_and(|s| now_ms.saturating_sub(s) >= d.as_millis() as u64);
    if held(st.emergency_since, s.critical_after) {
        Level::Emergency
    } else if held(st.critical_since, s.critical_after) {
        Level::Critical
    } else if held(st.warning_since, s.warning_after) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// The worst state of all checks (`ok` without any).
pub fn overall<'a>(levels: impl IntoIterator<Item = &'a Level>) -> Level {
    levels.into_iter().copied().max().map_or(Level::Ok, |l| l.max(Level::Ok))
}

// ---------------------------------------------------------------------------------------------
// Controlled restart (pure)

/// The limits on self-restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// A restart-worthy check critical this long (despite its healing) asks for a restart.
    pub after: Duration,
    /// At most one self-restart per this.
    pub cooldown: Duration,
    /// At most this many self-restarts per hour; past it: degraded.
    pub max_per_hour: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Nothing critical for long enough.
    Stay,
    /// Due, but the last restart is within the cooldown: wait until then (wall ms).
    Wait {
        until_ms: i64,
    },
    Restart,
    /// The hourly limit is reached: stay up, degraded.
    Refuse {
        reason: String,
    },
}

/// What a service whose worst restart-worthy check has been critical for `critical_for`
/// does, given its ledger (restarts within the last hour before `now_ms`, the newest one).
/// Pure: unit-tested.
pub fn decide_restart(
    p: &RestartPolicy,
    critical_for: Option<Duration>,
    restarts_last_hour: u32,
    last_restart_ms: Option<i64>,
    now_ms: i64,
) -> RestartDecision {
    if critical_for.is_none_or(|d| d < p.after) {
        return RestartDecision::Stay;
    }
    if restarts_last_hour >= p.max_per_hour {
        return RestartDecision::Refuse {
            reason: format!(
                "{restarts_last_hour} self-restart(s) in the last hour (limit {}): staying up degraded",
                p.max_per_hour
            ),
        };
    }
    if let Some(last) = last_restart_ms {
        let until = last.saturating_add(p.cooldown.as_millis() as i64);
        if now_ms < until {
            return RestartDecision::Wait { until_ms: until };
        }
    }
    RestartDecision::Restart
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Declares the health keys of a service (`health_keys!("PRINT", ...)`): the shared ones plus
/// the service's own threshold triples (`"queue_age" / "QUEUE_AGE" / "secs" / "SECS": "help"`).
/// Parse them with [`HealthConfig::parse`] and [`thresholds`].
#[macro_export]
macro_rules! health_keys {
    ($prefix:literal $(; $name:literal / $env:literal / $unit:literal / $envunit:literal : $help:literal)* $(;)?) => {
        [
            $crate::config::Key { name: "health.resource_interval_ms", env: concat!($prefix, "_HEALTH_RESOURCE_INTERVAL_MS"), help: "health monitor: memory, CPU, disk, temperature every (default 60000)" },
            $crate::config::Key { name: "health.check_interval_ms", env: concat!($prefix, "_HEALTH_CHECK_INTERVAL_MS"), help: "health monitor: database sizes and the service's cheap checks every (default 30000)" },
            $crate::config::Key { name: "health.memory_warn_pct", env: concat!($prefix, "_HEALTH_MEMORY_WARN_PCT"), help: "system memory used: warning (default 70)" },
            $crate::config::Key { name: "health.memory_crit_pct", env: concat!($prefix, "_HEALTH_MEMORY_CRIT_PCT"), help: "system memory used: critical (default 85)" },
            $crate::config::Key { name: "health.memory_emergency_pct", env: concat!($prefix, "_HEALTH_MEMORY_EMERGENCY_PCT"), help: "system memory used: emergency (default 95)" },
            $crate::config::Key { name: "health.cpu_warn_pct", env: concat!($prefix, "_HEALTH_CPU_WARN_PCT"), help: "process CPU (% of one core), sustained: warning (default 70)" },
            $crate::config::Key { name: "health.cpu_crit_pct", env: concat!($prefix, "_HEALTH_CPU_CRIT_PCT"), help: "process CPU, sustained: critical (default 85)" },
            $crate::config::Key { name: "health.cpu_emergency_pct", env: concat!($prefix, "_HEALTH_CPU_EMERGENCY_PCT"), help: "process CPU, sustained: emergency (default 95)" },
            $crate::config::Key { name: "health.cpu_warn_after_secs", env: concat!($prefix, "_HEALTH_CPU_WARN_AFTER_SECS"), help: "CPU above its warning level this long is a warning (default 300)" },
            $crate::config::Key { name: "health.cpu_crit_after_secs", env: concat!($prefix, "_HEALTH_CPU_CRIT_AFTER_SECS"), help: "CPU above its critical level this long is critical (default 120)" },
            $crate::config::Key { name: "health.disk_warn_pct", env: concat!($prefix, "_HEALTH_DISK_WARN_PCT"), help: "database file system used: warning (default 80)" },
            $crate::config::Key { name: "health.disk_crit_pct", env: concat!($prefix, "_HEALTH_DISK_CRIT_PCT"), help: "database file system used: critical (default 90)" },
            $crate::config::Key { name: "health.disk_emergency_pct", env: concat!($prefix, "_HEALTH_DISK_EMERGENCY_PCT"), help: "database file system used: emergency (default 95)" },
            $crate::config::Key { name: "health.rss_warn_mib", env: concat!($prefix, "_HEALTH_RSS_WARN_MIB"), help: "process resident memory: warning (default 256)" },
            $crate::config::Key { name: "health.rss_crit_mib", env: concat!($prefix, "_HEALTH_RSS_CRIT_MIB"), help: "process resident memory: critical (default 512)" },
            $crate::config::Key { name: "health.rss_emergency_mib", env: concat!($prefix, "_HEALTH_RSS_EMERGENCY_MIB"), help: "process resident memory: emergency (default 1024)" },
            $crate::config::Key { name: "health.db_size_warn_mib", env: concat!($prefix, "_HEALTH_DB_SIZE_WARN_MIB"), help: "SQLite file: warning (default 1024)" },
            $crate::config::Key { name: "health.db_size_crit_mib", env: concat!($prefix, "_HEALTH_DB_SIZE_CRIT_MIB"), help: "SQLite file: critical (default 4096)" },
            $crate::config::Key { name: "health.db_size_emergency_mib", env: concat!($prefix, "_HEALTH_DB_SIZE_EMERGENCY_MIB"), help: "SQLite file: emergency (default 0 = off)" },
            $crate::config::Key { name: "health.wal_size_warn_mib", env: concat!($prefix, "_HEALTH_WAL_SIZE_WARN_MIB"), help: "SQLite WAL: warning, checkpointed (default 96)" },
            $crate::config::Key { name: "health.wal_size_crit_mib", env: concat!($prefix, "_HEALTH_WAL_SIZE_CRIT_MIB"), help: "SQLite WAL: critical (default 256)" },
            $crate::config::Key { name: "health.wal_size_emergency_mib", env: concat!($prefix, "_HEALTH_WAL_SIZE_EMERGENCY_MIB"), help: "SQLite WAL: emergency (default 1024)" },
            $crate::config::Key { name: "health.temperature_warn_c", env: concat!($prefix, "_HEALTH_TEMPERATURE_WARN_C"), help: "SoC temperature: warning (default 70)" },
            $crate::config::Key { name: "health.temperature_crit_c", env: concat!($prefix, "_HEALTH_TEMPERATURE_CRIT_C"), help: "SoC temperature: critical (default 80, where a Pi throttles)" },
            $crate::config::Key { name: "health.temperature_emergency_c", env: concat!($prefix, "_HEALTH_TEMPERATURE_EMERGENCY_C"), help: "SoC temperature: emergency (default 85)" },
            $crate::config::Key { name: "health.thermal_path", env: concat!($prefix, "_HEALTH_THERMAL_PATH"), help: "where thermal_zone*/temp are read (default /sys/class/thermal)" },
            $crate::config::Key { name: "health.stall_ms", env: concat!($prefix, "_HEALTH_STALL_MS"), help: "a component without progress this long stops the watchdog pings (default 60000)" },
            $crate::config::Key { name: "health.restart_after_secs", env: concat!($prefix, "_HEALTH_RESTART_AFTER_SECS"), help: "a restart-worthy check critical this long despite healing restarts the service, exit 75 (default 300)" },
            $crate::config::Key { name: "health.restart_cooldown_secs", env: concat!($prefix, "_HEALTH_RESTART_COOLDOWN_SECS"), help: "at most one self-restart per (default 300)" },
            $crate::config::Key { name: "health.restart_max_per_hour", env: concat!($prefix, "_HEALTH_RESTART_MAX_PER_HOUR"), help: "at most this many self-restarts per hour, then degraded (default 3)" },
            $(
                $crate::config::Key { name: concat!("health.", $name, "_warn_", $unit), env: concat!($prefix, "_HEALTH_", $env, "_WARN_", $envunit), help: concat!($help, ": warning") },
                $crate::config::Key { name: concat!("health.", $name, "_crit_", $unit), env: concat!($prefix, "_HEALTH_", $env, "_CRIT_", $envunit), help: concat!($help, ": critical (0 = off)") },
                $crate::config::Key { name: concat!("health.", $name, "_emergency_", $unit), env: concat!($prefix, "_HEALTH_", $env, "_EMERGENCY_", $envunit), help: concat!($help, ": emergency (0 = off)") },
            )*
        ]
    };
}

/// Thresholds from keys `health.<check>_{warn,crit,emergency}_<unit>`: each ≥ 0 (0 = off),
/// finite, and the levels that are on in order (warning ≤ critical ≤ emergency).
pub fn thresholds(src: &Source, check: &str, unit: &str, default: Thresholds) -> Result<Thresholds, ConfigError> {
    let key = |level: &str| format!("health.{check}_{level}_{unit}");
    let read = |level: &str, d: f64| -> Result<f64, ConfigError> {
        let name = key(level);
        let v: f64 = src.parse(&name, d)?;
        if !v.is_finite() || v < 0.0 {
            return Err(src.invalid(&name, format!("must be a number ≥ 0 (0 = off), got {v}")));
        }
        Ok(v)
    };
    let t = Thresholds {
        warning: read("warn", default.warning)?,
        critical: read("crit", default.critical)?,
        emergency: read("emergency", default.emergency)?,
    };
    // Out of order: blame the key that was set (the other one is its default).
    let blame =
        |a: &str, b: &str| if src.get(&key(a)).is_none() && src.get(&key(b)).is_some() { key(b) } else { key(a) };
    if t.critical > 0.0 && t.warning > t.critical {
        let name = blame("warn", "crit");
        return Err(src.invalid(&name, format!("warning {} is above critical {}", t.warning, t.critical)));
    }
    let below = t.critical.max(t.warning);
    if t.emergency > 0.0 && below > t.emergency {
        let name = blame("emergency", if t.critical >= t.warning { "crit" } else { "warn" });
        return Err(src.invalid(&name, format!("emergency {} is below {below}", t.emergency)));
    }
    Ok(t)
}

/// The health monitor's settings (the keys of [`health_keys!`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub resource_interval: Duration,
    pub check_interval: Duration,
    /// % of system memory used.
    pub memory: Thresholds,
    /// % of one core, sustained.
    pub cpu: Thresholds,
    pub cpu_sustain: Sustain,
    /// % of the database's file system used.
    pub disk: Thresholds,
    /// Bytes (configured in MiB).
    pub rss: Thresholds,
    pub db_size: Thresholds,
    pub wal_size: Thresholds,
    /// °C.
    pub temperature: Thresholds,
    pub thermal_path: PathBuf,
    pub stall: Duration,
    pub restart: RestartPolicy,
}

const MIB: f64 = 1024.0 * 1024.0;

impl HealthConfig {
    pub fn parse(src: &Source) -> Result<HealthConfig, ConfigError> {
        let secs = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let s: u64 = src.parse(name, default)?;
            if s == 0 {
                return Err(src.invalid(name, "must be greater than 0"));
            }
            Ok(Duration::from_secs(s))
        };
        let max_per_hour: u32 = src.parse("health.restart_max_per_hour", 3)?;
        Ok(HealthConfig {
            resource_interval: src.millis("health.resource_interval_ms", 60_000)?,
            check_interval: src.millis("health.check_interval_ms", 30_000)?,
            memory: thresholds(src, "memory", "pct", Thresholds::new(70.0, 85.0, 95.0))?,
            cpu: thresholds(src, "cpu", "pct", Thresholds::new(70.0, 85.0, 95.0))?,
            cpu_sustain: Sustain {
                warning_after: secs("health.cpu_warn_after_secs", 300)?,
                critical_after: secs("health.cpu_crit_after_secs", 120)?,
            },
            disk: thresholds(src, "disk", "pct", Thresholds::new(80.0, 90.0, 95.0))?,
            rss: thresholds(src, "rss", "mib", Thresholds::new(256.0, 512.0, 1024.0))?.scaled(MIB),
            db_size: thresholds(src, "db_size", "mib", Thresholds::new(1024.0, 4096.0, 0.0))?.scaled(MIB),
            wal_size: thresholds(src, "wal_size", "mib", Thresholds::new(96.0, 256.0, 1024.0))?.scaled(MIB),
            temperature: thresholds(src, "temperature", "c", Thresholds::new(70.0, 80.0, 85.0))?,
            thermal_path: src.path("health.thermal_path").unwrap_or_else(|| PathBuf::from("/sys/class/thermal")),
            stall: src.millis("health.stall_ms", 60_000)?,
            restart: RestartPolicy {
                after: secs("health.restart_after_secs", 300)?,
                cooldown: secs("health.restart_cooldown_secs", 300)?,
                max_per_hour,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// The SoC temperature in °C: the hottest `thermal_zone*/temp` (millidegrees) under `base`;
/// `None` where there is none.
pub fn read_temperature(base: &Path) -> Option<f64> {
    let mut hottest: Option<f64> = None;
    for entry in std::fs::read_dir(base).ok()?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("thermal_zone") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("temp")) else { continue };
        let Ok(milli) = text.trim().parse::<i64>() else { continue };
        let c = milli as f64 / 1000.0;
        hottest = Some(hottest.map_or(c, |h| h.max(c)));
    }
    hottest
}

/// % of the file system holding `path` in use (as `df` counts it: root's reserve excluded).
pub fn disk_used_pct(path: &Path) -> Option<f64> {
    let dir = if path.is_dir() { path } else { path.parent().filter(|p| !p.as_os_str().is_empty())? };
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let blocks = st.blocks() as f64;
    let free = st.blocks_free() as f64;
    let avail = st.blocks_available() as f64;
    let used = blocks - free;
    let total = used + avail;
    (total > 0.0).then(|| used / total * 100.0)
}

fn file_size(path: &Path) -> Option<f64> {
    match std::fs::metadata(path) {
        Ok(m) => Some(m.len() as f64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0.0),
        Err(_) => None,
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Memory, RSS and CPU through sysinfo, refreshing only what is read.
struct Resources {
    sys: Option<sysinfo::System>,
    pid: Option<sysinfo::Pid>,
    cpu_primed: bool,
}

impl Resources {
    fn new() -> Resources {
        Resources { sys: sysinfo::System::new().ok(), pid: sysinfo::get_current_pid().ok(), cpu_primed: false }
    }

    /// (memory %, RSS bytes, CPU % of one core since the last call; `None` on the first).
    fn read(&mut self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let Some(sys) = self.sys.as_mut() else { return (None, None, None) };
        sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
        let total = sys.total_memory();
        let memory = (total > 0).then(|| sys.used_memory() as f64 / total as f64 * 100.0);
        let Some(pid) = self.pid else { return (memory, None, None) };
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let Some(p) = sys.process(pid) else { return (memory, None, None) };
        let cpu = self.cpu_primed.then(|| f64::from(p.cpu_usage()));
        self.cpu_primed = true;
        (memory, Some(p.memory() as f64), cpu)
    }

    fn rss(&mut self) -> Option<f64> {
        let (sys, pid) = (self.sys.as_mut()?, self.pid?);
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing().with_memory(),
        );
        sys.process(pid).map(|p| p.memory() as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// What a service adds

/// One reading of a service's own check.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub name: String,
    pub unit: &'static str,
    /// `None`: not measurable now (unknown).
    pub value: Option<f64>,
    pub thresholds: Thresholds,
    pub detail: String,
    /// Whether a restart may mend it (a waiting check never).
    pub restart: bool,
}

/// What a healing action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub action: String,
    pub before: String,
    pub after: String,
    pub detail: String,
}

/// A service's part of the monitor.
pub trait Hooks: Send + Sync + 'static {
    /// The service's cheap checks (every check interval).
    fn readings(&self) -> impl Future<Output = Vec<Reading>> + Send;
    /// Heals the service's check `check`, now at `level` (warning or worse); `None`: nothing to do.
    fn heal(&self, check: &str, level: Level) -> impl Future<Output = Option<Action>> + Send;
    /// Drops caches that reload on use (memory pressure); says what it released.
    fn release_caches(&self) -> impl Future<Output = String> + Send;
    /// Prunes by the retention and gives pages back (disk pressure); says what.
    fn prune(&self) -> impl Future<Output = anyhow::Result<String>> + Send;
}

// ---------------------------------------------------------------------------------------------
// The monitor

/// How often a healing action repeats while its check stays at the level that called for it.
pub const ACTION_REPEAT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Check {
    unit: &'static str,
    value: Option<f64>,
    thresholds: Thresholds,
    level: Level,
    since_ms: i64,
    checked_at_ms: i64,
    last_action: String,
    detail: String,
    restart: bool,
    /// Monotonic: critical (or worse) since.
    critical_since: Option<Instant>,
    /// The level the last action ran for, and when.
    acted: Option<(Level, Instant)>,
    sustain: SustainState,
}

struct Shared {
    checks: Mutex<BTreeMap<String, Check>>,
    degraded: Mutex<Option<String>>,
    watchdog: Arc<Watchdog>,
}

/// A service's health: what `GetHealth` answers, and the monitor that keeps it.
#[derive(Clone)]
pub struct Health {
    shared: Arc<Shared>,
    healing: Healing,
    config: Arc<HealthConfig>,
    origin: Instant,
}

impl Health {
    /// Reads the watchdog's environment; nothing runs until [`Health::spawn`].
    pub fn new(config: &HealthConfig, healing: Healing) -> Health {
        Health {
            shared: Arc::new(Shared {
                checks: Mutex::new(BTreeMap::new()),
                degraded: Mutex::new(None),
                watchdog: Watchdog::new(config.stall),
            }),
            healing,
            config: Arc::new(config.clone()),
            origin: Instant::now(),
        }
    }

    pub fn watchdog(&self) -> &Arc<Watchdog> {
        &self.shared.watchdog
    }

    /// The checks as `GetHealth` shows them, from memory (no database access): what the
    /// health gauges read at each collection.
    pub fn checks(&self) -> Vec<pb::HealthCheck> {
        let checks = self.shared.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks
            .iter()
            .map(|(name, c)| pb::HealthCheck {
                name: name.clone(),
                value: c.value.unwrap_or(0.0),
                unit: c.unit.into(),
                warning: c.thresholds.warning,
                critical: c.thresholds.critical,
                emergency: c.thresholds.emergency,
                state: c.level.as_str().into(),
                since: Some(timestamp_from_ms(c.since_ms)),
                checked_at: Some(timestamp_from_ms(c.checked_at_ms)),
                last_action: c.last_action.clone(),
                detail: c.detail.clone(),
            })
            .collect()
    }

    /// Starts the watchdog and the monitor. `reporter` and `services`: the `grpc.health.v1`
    /// names turned NOT_SERVING (with the server, "") while a check is critical or worse.
    pub fn spawn<H: Hooks>(
        &self,
        hooks: H,
        reporter: tonic_health::server::HealthReporter,
        services: &[&'static str],
        shutdown: CancellationToken,
    ) {
        self.shared.watchdog.spawn(self.healing.db.clone(), self.healing.clone(), shutdown.clone());
        let monitor = Monitor {
            health: self.clone(),
            hooks,
            reporter,
            services: services.iter().copied().chain([""]).collect(),
            resources: Resources::new(),
            serving: true,
        };
        tokio::spawn(monitor.run(shutdown));
    }

    /// `GetHealth`.
    pub async fn get(&self) -> Result<pb::GetHealthResponse, tonic::Status> {
        let now = now_ms();
        let (restarts_last_hour, last_restart) = self
            .healing
            .db
            .call(move |c| {
                let (n, _) = healing::restarts_since(c, now - 3_600_000)?;
                Ok((n, healing::last_restart(c)?))
            })
            .await
            .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
        let checks = self.checks();
        let worst = overall(
            &checks
                .iter()
                .map(|c| match c.state.as_str() {
                    "warning" => Level::Warning,
                    "critical" => Level::Critical,
                    "emergency" => Level::Emergency,
                    "unknown" => Level::Unknown,
                    _ => Level::Ok,
                })
                .collect::<Vec<_>>(),
        );
        let degraded = self.shared.degraded.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let wd = &self.shared.watchdog;
        Ok(pb::GetHealthResponse {
            overall: worst.as_str().into(),
            checks,
            degraded: degraded.is_some(),
            degraded_reason: degraded.unwrap_or_default(),
            restarts_last_hour,
            last_restart_at: last_restart.map(timestamp_from_ms),
            watchdog_enabled: wd.enabled(),
            last_watchdog_at: wd.last_ping_ms().map(timestamp_from_ms),
            stalled: wd.stalled(),
        })
    }

    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

struct Monitor<H> {
    health: Health,
    hooks: H,
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
    resources: Resources,
    serving: bool,
}

/// Which built-in checks a restart may mend.
const RESTART_WORTHY: &[&str] = &["memory", "rss", "cpu", "wal_size"];

impl<H: Hooks> Monitor<H> {
    async fn run(mut self, shutdown: CancellationToken) {
        let cfg = self.health.config.clone();
        let mut resources = tokio::time::interval(cfg.resource_interval);
        let mut cheap = tokio::time::interval(cfg.check_interval);
        for i in [&mut resources, &mut cheap] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let (kind, started, readings) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = resources.tick() => ("resources", Instant::now(), self.resource_readings(&cfg)),
                _ = cheap.tick() => {
                    let started = Instant::now();
                    let mut r = self.db_readings(&cfg);
                    r.extend(self.hooks.readings().await);
                    ("cheap", started, r)
                }
            };
            self.round(readings).await;
            tracing::debug!(kind, took_us = started.elapsed().as_micros() as u64, "health round");
            if self.restart_if_due().await {
                return;
            }
        }
    }

    fn resource_readings(&mut self, cfg: &HealthConfig) -> Vec<Reading> {
        let (memory, rss, cpu) = self.resources.read();
        let disk = disk_used_pct(self.health.healing.db.path());
        let temperature = read_temperature(&cfg.thermal_path);
        let r = |name: &str, unit, value, thresholds, restart| Reading {
            name: name.into(),
            unit,
            value,
            thresholds,
            detail: String::new(),
            restart,
        };
        let mut temp = r("temperature", "°C", temperature, cfg.temperature, false);
        if temperature.is_none() {
            temp.detail = format!("no thermal_zone*/temp under {}", cfg.thermal_path.display());
        }
        let mut cpu_reading = r("cpu", "%", cpu, cfg.cpu, true);
        cpu_reading.detail = format!(
            "% of one core since the last round; sustained {} s warning / {} s critical",
            cfg.cpu_sustain.warning_after.as_secs(),
            cfg.cpu_sustain.critical_after.as_secs()
        );
        vec![
            r("memory", "%", memory, cfg.memory, true),
            r("rss", "bytes", rss, cfg.rss, true),
            cpu_reading,
            r("disk", "%", disk, cfg.disk, false),
            temp,
        ]
    }

    fn db_readings(&self, cfg: &HealthConfig) -> Vec<Reading> {
        let path = self.health.healing.db.path();
        vec![
            Reading {
                name: "db_size".into(),
                unit: "bytes",
                value: file_size(path),
                thresholds: cfg.db_size,
                detail: path.display().to_string(),
                restart: false,
            },
            Reading {
                name: "wal_size".into(),
                unit: "bytes",
                value: file_size(&wal_path(path)),
                thresholds: cfg.wal_size,
                detail: wal_path(path).display().to_string(),
                restart: true,
            },
        ]
    }

    /// Updates the checks from `readings`: records state changes, heals, flips health.
    async fn round(&mut self, readings: Vec<Reading>) {
        let cfg = self.health.config.clone();
        let now = now_ms();
        let mono = self.health.mono_ms();
        let mut changes = Vec::new();
        let mut to_heal = Vec::new();
        {
            let mut checks = self.health.shared.checks.lock().unwrap_or_else(|e| e.into_inner());
            for r in readings {
                let c = checks.entry(r.name.clone()).or_insert_with(|| Check {
                    unit: r.unit,
                    value: None,
                    thresholds: r.thresholds,
                    level: Level::Unknown,
                    since_ms: now,
                    checked_at_ms: now,
                    last_action: String::new(),
                    detail: String::new(),
                    restart: r.restart,
                    critical_since: None,
                    acted: None,
                    sustain: SustainState::default(),
                });
                let level = match r.value {
                    None => Level::Unknown,
                    Some(v) if r.name == "cpu" => sustained(&r.thresholds, &cfg.cpu_sustain, &mut c.sustain, v, mono),
                    Some(v) => r.thresholds.level(v),
                };
                c.value = r.value;
                c.thresholds = r.thresholds;
                c.detail = r.detail;
                c.checked_at_ms = now;
                c.restart = r.restart || RESTART_WORTHY.contains(&r.name.as_str());
                if level != c.level {
                    changes.push((r.name.clone(), c.level, level, r.value, r.thresholds, r.unit));
                    c.level = level;
                    c.since_ms = now;
                }
                c.critical_since = if level.is_critical() { c.critical_since.or(Some(Instant::now())) } else { None };
                // An action runs when its level is reached (or worsens), then every ACTION_REPEAT.
                let due = level >= Level::Warning
                    && c.acted.is_none_or(|(at_level, at)| level > at_level || at.elapsed() >= ACTION_REPEAT);
                if due {
                    to_heal.push((r.name.clone(), level));
                }
                if level < Level::Warning {
                    c.acted = None;
                }
            }
        }
        for (name, from, to, value, t, unit) in changes {
            // A check's first reading (unknown → ok/unknown) is not news: nothing is recorded.
            if from == Level::Unknown && to <= Level::Ok {
                continue;
            }
            let value = value.map_or("unknown".to_owned(), |v| format_value(v, unit));
            let level = |v: f64| if v > 0.0 { format_value(v, unit) } else { "off".into() };
            let detail = format!(
                "{value} (warning {}, critical {}, emergency {})",
                level(t.warning),
                level(t.critical),
                level(t.emergency)
            );
            if to > from && to >= Level::Warning {
                tracing::warn!(check = %name, from = from.as_str(), to = to.as_str(), %detail, "health check changed");
            } else {
                tracing::info!(check = %name, from = from.as_str(), to = to.as_str(), %detail, "health check changed");
            }
            self.health
                .healing
                .record(HealingEvent {
                    at_ms: now,
                    kind: KIND_CHECK,
                    subject: name,
                    action: to.as_str().into(),
                    before: from.as_str().into(),
                    after: to.as_str().into(),
                    detail,
                })
                .await;
        }
        for (name, level) in to_heal {
            let actions = self.heal(&name, level).await;
            let mut checks = self.health.shared.checks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = checks.get_mut(&name) {
                c.acted = Some((level, Instant::now()));
                if let Some(a) = actions.last() {
                    c.last_action = format!("{}: {} → {} ({})", a.action, a.before, a.after, a.detail);
                }
            }
        }
        self.update_serving().await;
    }

    /// Runs the healing actions of check `name` at `level`, records each.
    async fn heal(&mut self, name: &str, level: Level) -> Vec<Action> {
        let mut actions = Vec::new();
        match name {
            "memory" | "rss" if level.is_critical() => {
                let before = self.resources.rss();
                let released = self.hooks.release_caches().await;
                let db = self.health.healing.db.call(|c| Ok(c.execute_batch("PRAGMA shrink_memory")?)).await;
                let after = self.resources.rss();
                actions.push(Action {
                    action: "release_caches".into(),
                    before: format!("rss {}", before.map_or("unknown".into(), |b| format_value(b, "bytes"))),
                    after: format!("rss {}", after.map_or("unknown".into(), |b| format_value(b, "bytes"))),
                    detail: format!(
                        "{released}{}",
                        if db.is_ok() { "; SQLite cache shrunk" } else { "; SQLite shrink failed" }
                    ),
                });
            }
            "wal_size" => actions.push(self.checkpoint().await),
            "disk" => {
                actions.push(self.checkpoint().await);
                let path = self.health.healing.db.path().to_owned();
                let before = (file_size(&path), disk_used_pct(&path));
                let pruned = self.hooks.prune().await;
                let after = (file_size(&path), disk_used_pct(&path));
                let show = |(size, pct): (Option<f64>, Option<f64>)| {
                    format!(
                        "db {}, disk {}",
                        size.map_or("unknown".into(), |s| format_value(s, "bytes")),
                        pct.map_or("unknown".into(), |p| format_value(p, "%"))
                    )
                };
                actions.push(Action {
                    action: "prune".into(),
                    before: show(before),
                    after: show(after),
                    detail: match pruned {
                        Ok(what) => format!("retention prune and incremental vacuum: {what}"),
                        Err(e) => format!("pruning failed: {e:#}"),
                    },
                });
            }
            "memory" | "rss" | "cpu" | "db_size" | "temperature" => {}
            other => actions.extend(self.hooks.heal(other, level).await),
        }
        for a in &actions {
            tracing::warn!(check = %name, action = %a.action, before = %a.before, after = %a.after, detail = %a.detail, "healing action");
            self.health
                .healing
                .record(HealingEvent {
                    at_ms: now_ms(),
                    kind: KIND_ACTION,
                    subject: name.into(),
                    action: a.action.clone(),
                    before: a.before.clone(),
                    after: a.after.clone(),
                    detail: a.detail.clone(),
                })
                .await;
        }
        actions
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` on the writer; before/after WAL bytes.
    async fn checkpoint(&self) -> Action {
        let wal = wal_path(self.health.healing.db.path());
        let before = file_size(&wal);
        let result = self
            .health
            .healing
            .db
            .call(|c| Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))?))
            .await;
        let after = file_size(&wal);
        let bytes = |b: Option<f64>| format!("wal {}", b.map_or("unknown".into(), |b| format_value(b, "bytes")));
        Action {
            action: "wal_checkpoint".into(),
            before: bytes(before),
            after: bytes(after),
            detail: match result {
                Ok(0) => "checkpointed and truncated".into(),
                Ok(_) => "partly checkpointed: a reader holds the WAL".into(),
                Err(e) => format!("checkpoint failed: {e:#}"),
            },
        }
    }

    /// NOT_SERVING while any check is critical or worse; SERVING again when none is (never
    /// after a fatal condition).
    async fn update_serving(&mut self) {
        let critical = {
            let checks = self.health.shared.checks.lock().unwrap_or_else(|e| e.into_inner());
            overall(checks.values().map(|c| &c.level)).is_critical()
        };
        let serving = !critical && crate::fatal::current().is_none();
        if serving == self.serving {
            return;
        }
        self.serving = serving;
        let status =
            if serving { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
        tracing::warn!(serving, "grpc.health.v1 status changed by the health monitor");
        for name in &self.services {
            self.reporter.set_service_status(*name, status).await;
        }
    }

    /// Asks for a restart when a restart-worthy check stayed critical too long (true: exiting).
    async fn restart_if_due(&mut self) -> bool {
        let worst = {
            let checks = self.health.shared.checks.lock().unwrap_or_else(|e| e.into_inner());
            checks
                .iter()
                .filter(|(_, c)| c.restart)
                .filter_map(|(n, c)| c.critical_since.map(|s| (n.clone(), c.level, s)))
                .min_by_key(|(_, _, s)| *s)
        };
        let Some((name, level, since)) = worst else {
            let was = self.health.shared.degraded.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(reason) = was {
                tracing::warn!(%reason, "no longer degraded: the critical checks cleared");
            }
            return false;
        };
        let policy = self.health.config.restart;
        if since.elapsed() < policy.after {
            return false;
        }
        let now = now_ms();
        let ledger = self.health.healing.db.call(move |c| Ok(healing::restarts_since(c, now - 3_600_000)?)).await.ok();
        let Some((count, last)) = ledger else { return false };
        let reason = format!("{name} {} for {} s despite healing", level.as_str(), since.elapsed().as_secs());
        match decide_restart(&policy, Some(since.elapsed()), count, last, now) {
            RestartDecision::Stay | RestartDecision::Wait { .. } => false,
            RestartDecision::Restart => {
                tracing::error!(%reason, restarts_last_hour = count, "asking for a controlled restart (exit 75)");
                let event = HealingEvent {
                    at_ms: now,
                    kind: KIND_RESTART,
                    subject: name,
                    action: "restart".into(),
                    before: level.as_str().into(),
                    after: format!("exit {}", crate::fatal::EXIT_RESTART),
                    detail: reason.clone(),
                };
                let r = reason.clone();
                let written = self
                    .health
                    .healing
                    .db
                    .write(move |c| {
                        healing::record(c, &event)?;
                        healing::record_restart(c, now, &r)?;
                        Ok(())
                    })
                    .await;
                if let Err(e) = written {
                    // Without the ledger the limits could not hold: no restart.
                    tracing::error!(error = format!("{e:#}"), "could not record the restart; not restarting");
                    return false;
                }
                // The alert is written before the drain ends (the writer is FIFO) and mailed
                // after the restart.
                self.health.healing.alerts.raise(
                    crate::alerts::Alert::new(crate::alerts::AlertKind::SelfRestart, "", now)
                        .fact("reason", &reason)
                        .fact("restarts_last_hour", count + 1),
                );
                crate::fatal::trigger(crate::fatal::EXIT_RESTART, format!("controlled restart: {reason}"));
                true
            }
            RestartDecision::Refuse { reason: limit } => {
                let newly = {
                    let mut degraded = self.health.shared.degraded.lock().unwrap_or_else(|e| e.into_inner());
                    let full = format!("{reason}; {limit}");
                    degraded.is_none().then(|| {
                        *degraded = Some(full.clone());
                        full
                    })
                };
                if let Some(full) = newly {
                    tracing::error!(reason = %full, "DEGRADED: a critical check does not clear and the self-restart limit is reached; the service stays up. Look at GetHealth and the host");
                    self.health
                        .healing
                        .record(HealingEvent {
                            at_ms: now,
                            kind: KIND_RESTART,
                            subject: name,
                            action: "refused".into(),
                            before: level.as_str().into(),
                            after: "degraded".into(),
                            detail: full,
                        })
                        .await;
                }
                false
            }
        }
    }
}

/// A value for people: bytes in MiB, the rest with its unit.
pub fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "bytes" => format!("{:.1} MiB", v / MIB),
        "%" => format!("{v:.1} %"),
        "" => format!("{v}"),
        u => format!("{v:.1} {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_give_levels_and_zero_turns_a_level_off() {
        let t = Thresholds::new(70.0, 85.0, 95.0);
        assert_eq!(t.level(10.0), Level::Ok);
        assert_eq!(t.level(70.0), Level::Warning);
        assert_eq!(t.level(90.0), Level::Critical);
        assert_eq!(t.level(99.0), Level::Emergency);
        let warn_only = Thresholds::new(600.0, 0.0, 0.0);
        assert_eq!(warn_only.level(1e9), Level::Warning);
        assert_eq!(overall(&[Level::Unknown, Level::Ok, Level::Critical]), Level::Critical);
        assert_eq!(overall(&[Level::Unknown]), Level::Ok);
        assert_eq!(overall(&[]), Level::Ok);
    }

    #[test]
    fn cpu_counts_only_when_sustained() {
        let t = Thresholds::new(70.0, 85.0, 95.0);
        let s = Sustain { warning_after: Duration::from_secs(300), critical_after: Duration::from_secs(120) };
        let mut st = SustainState::default();
        let min = 60_000;
        assert_eq!(sustained(&t, &s, &mut st, 90.0, 0), Level::Ok, "a spike is not a warning");
        assert_eq!(sustained(&t, &s, &mut st, 90.0, min), Level::Ok);
        assert_eq!(sustained(&t, &s, &mut st, 90.0, 2 * min), Level::Critical, "above critical for 2 min");
        // Back to 75 %: still above warning since 0, but not for 5 min yet.
        assert_eq!(sustained(&t, &s, &mut st, 75.0, 3 * min), Level::Ok);
        assert_eq!(sustained(&t, &s, &mut st, 75.0, 5 * min), Level::Warning, "above warning for 5 min");
        // A dip below warning starts over.
        assert_eq!(sustained(&t, &s, &mut st, 10.0, 6 * min), Level::Ok);
        assert_eq!(sustained(&t, &s, &mut st, 99.0, 7 * min), Level::Ok);
        assert_eq!(sustained(&t, &s, &mut st, 99.0, 9 * min), Level::Emergency);
    }

    #[test]
    fn restarts_wait_for_the_window_the_cooldown_and_stop_at_the_hourly_limit() {
        let p = RestartPolicy { after: Duration::from_secs(180), cooldown: Duration::from_secs(300), max_per_hour: 3 };
        let now = 10_000_000;
        assert_eq!(decide_restart(&p, None, 0, None, now), RestartDecision::Stay);
        assert_eq!(decide_restart(&p, Some(Duration::from_secs(179)), 0, None, now), RestartDecision::Stay);
        assert_eq!(decide_restart(&p, Some(Duration::from_secs(180)), 0, None, now), RestartDecision::Restart);
        // One 100 s ago: wait for the cooldown; after it, restart.
        assert_eq!(
            decide_restart(&p, Some(Duration::from_secs(600)), 1, Some(now - 100_000), now),
            RestartDecision::Wait { until_ms: now + 200_000 }
        );
        assert_eq!(
            decide_restart(&p, Some(Duration::from_secs(600)), 2, Some(now - 300_000), now),
            RestartDecision::Restart
        );
        // Three in the last hour: refused, whatever the cooldown says.
        assert!(matches!(
            decide_restart(&p, Some(Duration::from_secs(600)), 3, Some(now - 400_000), now),
            RestartDecision::Refuse { .. }
        ));
    }

    fn source(env: &'static [(&'static str, &'static str)]) -> Source {
        static KEYS: &[crate::config::Key] =
            &crate::health_keys!("T"; "queue_age" / "QUEUE_AGE" / "secs" / "SECS": "oldest waiting ticket");
        Source::load_with(KEYS, None, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap()
    }

    #[test]
    fn config_defaults_overrides_and_errors_name_the_key() {
        let c = HealthConfig::parse(&source(&[])).unwrap();
        assert_eq!(c.memory, Thresholds::new(70.0, 85.0, 95.0));
        assert_eq!(c.disk, Thresholds::new(80.0, 90.0, 95.0));
        assert_eq!(c.cpu_sustain.warning_after, Duration::from_secs(300));
        assert_eq!(c.restart.max_per_hour, 3);
        let c = HealthConfig::parse(&source(&[("T_HEALTH_MEMORY_WARN_PCT", "1"), ("T_HEALTH_MEMORY_CRIT_PCT", "2")]))
            .unwrap();
        assert_eq!(c.memory, Thresholds::new(1.0, 2.0, 95.0));
        let e = HealthConfig::parse(&source(&[("T_HEALTH_MEMORY_WARN_PCT", "90")])).unwrap_err().to_string();
        assert!(e.contains("T_HEALTH_MEMORY_WARN_PCT") && e.contains("above critical"), "{e}");
        let e = HealthConfig::parse(&source(&[("T_HEALTH_MEMORY_CRIT_PCT", "50")])).unwrap_err().to_string();
        assert!(e.contains("T_HEALTH_MEMORY_CRIT_PCT"), "the key that was set: {e}");
        let e = HealthConfig::parse(&source(&[("T_HEALTH_DISK_CRIT_PCT", "-1")])).unwrap_err().to_string();
        assert!(e.contains("T_HEALTH_DISK_CRIT_PCT"), "{e}");
        let e = HealthConfig::parse(&source(&[("T_HEALTH_RESTART_AFTER_SECS", "0")])).unwrap_err().to_string();
        assert!(e.contains("T_HEALTH_RESTART_AFTER_SECS"), "{e}");
        let q = thresholds(
            &source(&[("T_HEALTH_QUEUE_AGE_WARN_SECS", "5")]),
            "queue_age",
            "secs",
            Thresholds::new(600.0, 0.0, 0.0),
        )
        .unwrap();
        assert_eq!(q, Thresholds::new(5.0, 0.0, 0.0));
    }

    #[test]
    fn temperature_is_the_hottest_zone_or_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_temperature(dir.path()), None);
        for (zone, milli) in [("thermal_zone0", "45000\n"), ("thermal_zone1", "81500")] {
            std::fs::create_dir(dir.path().join(zone)).unwrap();
            std::fs::write(dir.path().join(zone).join("temp"), milli).unwrap();
        }
        assert_eq!(read_temperature(dir.path()), Some(81.5));
        assert!(disk_used_pct(&dir.path().join("x.db")).is_some_and(|p| (0.0..=100.0).contains(&p)));
    }

    #[test]
    fn resources_are_read_cheaply() {
        let mut r = Resources::new();
        let (memory, rss, cpu) = r.read();
        assert!(memory.is_some_and(|m| m > 0.0 && m <= 100.0));
        assert!(rss.is_some_and(|b| b > 1e5));
        assert_eq!(cpu, None, "the first CPU reading has nothing to compare with");
        let started = Instant::now();
        let (_, _, cpu) = r.read();
        assert!(cpu.is_some());
        assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    }
}
