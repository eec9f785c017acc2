//! What wix-ingest tells the owner by e-mail (issue 12): twice a second it looks at what it
//! already knows (the internet monitor, the order sync, the outbox, the Wix API breaker, the
//! bus peer, health, the last order) and feeds a [`Watcher`], which raises and resolves
//! alerts through the durable alert outbox.
//!
//! Must never: send mail itself, or hold up a webhook (it reads shared state and one count
//! query a tick).

use std::time::{Duration, Instant};

use jiff::civil::{Time, Weekday};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use wixprint_shared::alerts::{AlertKind, Watcher};
use wixprint_shared::proto::events::Component;

use crate::store::Store;
use crate::sync::SyncHandle;

/// The thresholds of wix-ingest's alerts (README "Alert catalogue").
#[derive(Debug, Clone, PartialEq)]
pub struct AlertThresholds {
    /// The internet offline this long (`ALERT_INTERNET_OFFLINE_SECS`, default 300).
    pub internet_offline: Duration,
    /// wix-print unheard on the bus this long (`ALERT_PEER_SECS`, default 300).
    pub peer: Duration,
    /// No order for this long during opening hours (`ALERT_NO_ORDERS_SECS`, default 3600),
    /// only with `ALERT_OPENING_HOURS`.
    pub no_orders: Duration,
    pub opening_hours: Option<OpeningHours>,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            internet_offline: Duration::from_secs(300),
            peer: Duration::from_secs(300),
            no_orders: Duration::from_secs(3600),
            opening_hours: None,
        }
    }
}

/// Opening hours: per weekday, time ranges (an end before its start runs past midnight and
/// belongs to the day it starts on).
///
/// Written `mon-fri 11:00-14:00,17:30-22:00; sat,sun 12:00-23:00`, or ranges alone for every
/// day (`11:00-22:00`). Days: mon tue wed thu fri sat sun (or mo di mi do fr sa so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningHours {
    /// (weekday, start, end)
    ranges: Vec<(Weekday, Time, Time)>,
}

const DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

fn day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_lowercase();
    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == s)
        .or_else(|| ["mo", "di", "mi", "do", "fr", "sa", "so"].iter().position(|d| *d == s))?;
    Some(DAYS[i])
}

fn time(s: &str) -> Result<Time, String> {
    let (h, m) = s.trim().split_once(':').ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let (h, m): (i8, i8) =
        (h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?, m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?);
    Time::new(h, m, 0, 0).map_err(|_| format!("{s:?} is not a time of day"))
}

impl OpeningHours {
    pub fn parse(text: &str) -> Result<OpeningHours, String> {
        let mut ranges = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (days, spans) = match entry.split_once(char::is_whitespace) {
                Some((d, rest)) if d.chars().next().is_some_and(|c| c.is_alphabetic()) => (Some(d), rest),
                _ => (None, entry),
            };
            let days: Vec<Weekday> = match days {
                None => DAYS.to_vec(),
                Some(d) => {
                    let mut out = Vec::new();
                    for part in d.split(',') {
                        match part.split_once('-') {
                            Some((a, b)) => {
                                let (a, b) = (
                                    day(a).ok_or(format!("unknown day {a:?}"))?,
                                    day(b).ok_or(format!("unknown day {b:?}"))?,
                                );
                                let (i, j) = (a.to_monday_zero_offset(), b.to_monday_zero_offset());
                                let mut k = i;
                                loop {
                                    out.push(DAYS[k as usize]);
                                    if k == j {
                                        break;
                                    }
                                    k = (k + 1) % 7;
                                }
                            }
                            None => out.push(day(part).ok_or(format!("unknown day {part:?}"))?),
                        }
                    }
                    out
                }
            };
            for span in spans.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (a, b) = span.split_once('-').ok_or_else(|| format!("{span:?} is not HH:MM-HH:MM"))?;
                let (a, b) = (time(a)?, time(b)?);
                if a == b {
                    return Err(format!("{span:?} is empty"));
                }
                ranges.extend(days.iter().map(|d| (*d, a, b)));
            }
        }
        if ranges.is_empty() {
            return Err("no opening hours given".into());
        }
        Ok(OpeningHours { ranges })
    }

    /// When the opening period containing `at` began, if the restaurant is open at `at`.
    pub fn open_since(&self, at: &jiff::Zoned) -> Option<jiff::Zoned> {
        let today = at.date();
        let mut best: Option<jiff::Zoned> = None;
        for (wd, start, end) in &self.ranges {
            // A range of today, or one of yesterday that runs past midnight.
            for (date, overnight) in [(today, false), (today.yesterday().ok()?, true)] {
                if date.weekday() != *wd || (overnight && end > start) {
                    continue;
                }
                let begin = date.to_datetime(*start).to_zoned(at.time_zone().clone()).ok()?;
                let finish_date = if end > start { date } else { date.tomorrow().ok()? };
                let finish = finish_date.to_datetime(*end).to_zoned(at.time_zone().clone()).ok()?;
                if &begin <= at && *at < finish && best.as_ref().is_none_or(|b| &begin < b) {
                    best = Some(begin);
                }
            }
        }
        best
    }
}

pub struct AlertWatch {
    pub store: Store,
    pub sync: SyncHandle,
    pub internet: watch::Receiver<Component>,
    pub healing: wixprint_shared::healing::Healing,
    pub bus: wixprint_shared::bus::Bus,
    pub health: wixprint_shared::health::Health,
    pub thresholds: AlertThresholds,
    pub time_zone: jiff::tz::TimeZone,
    pub watcher: Watcher,
}

const TICK: Duration = Duration::from_millis(500);
/// Every this many ticks (5 s) the watch also reads health (the restart ledger) and the
/// store's counts (dead letters, the last order).
const DB_EVERY: u32 = 10;

impl AlertWatch {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let started_ms = wixprint_shared::time::now_ms();
        let mut ticks: u32 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let internet = self.internet.borrow().clone();
            let offline = internet.state == wixprint_shared::connectivity::STATE_OFFLINE;
            self.watcher.observe(
                AlertKind::InternetOffline,
                "",
                offline,
                self.thresholds.internet_offline,
                now,
                || vec![("detail".into(), internet.detail.clone())],
            );
            let sync = self.sync.status();
            let refused = sync.state == "error" && (sync.detail.contains("401") || sync.detail.contains("403"));
            self.watcher.observe(AlertKind::SyncRefused, "", refused, Duration::ZERO, now, || {
                vec![("detail".into(), sync.detail.clone())]
            });
            self.watcher.breakers(&self.healing.breakers, now);
            self.watcher.peer("wix-print", &self.bus.peer(), self.thresholds.peer, now);
            // What needs the database (its one writer thread also commits webhooks) is read
            // every DB_EVERY ticks; what lives in memory every tick.
            ticks += 1;
            if ticks % DB_EVERY != 1 {
                continue;
            }
            if let Ok(h) = self.health.get().await {
                self.watcher.health(&h, now);
            }
            match self.store.counts().await {
                Ok(c) => {
                    self.watcher.observe(
                        AlertKind::DeadLetters,
                        "outbox",
                        c.outbox_dead > 0,
                        Duration::ZERO,
                        now,
                        || vec![("count".into(), c.outbox_dead.to_string())],
                    );
                    self.no_orders(c.last_webhook_ms, started_ms, now);
                }
                Err(e) => tracing::debug!(error = format!("{e:#}"), "alert watch: counts not read"),
            }
        }
    }

    /// During opening hours, no order for the threshold (counted from the opening, the last
    /// order or this process's start, whichever is latest).
    fn no_orders(&mut self, last_order_ms: Option<i64>, started_ms: i64, now: Instant) {
        let Some(hours) = &self.thresholds.opening_hours else { return };
        let at = jiff::Zoned::now().with_time_zone(self.time_zone.clone());
        let quiet = match hours.open_since(&at) {
            Some(opened) => {
                let from = opened.timestamp().as_millisecond().max(last_order_ms.unwrap_or(0)).max(started_ms);
                let quiet_ms = (at.timestamp().as_millisecond() - from).max(0) as u64;
                Some(Duration::from_millis(quiet_ms))
            }
            None => None,
        };
        let active = quiet.is_some_and(|q| q >= self.thresholds.no_orders);
        self.watcher.observe(AlertKind::NoOrders, "", active, Duration::ZERO, now, || {
            vec![("quiet".into(), quiet.map(wixprint_shared::alerts::format_duration).unwrap_or_default())]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Zoned {
        format!("{s}[Europe/Zurich]").parse().unwrap()
    }

    #[test]
    fn opening_hours_parse_and_answer() {
        let h = OpeningHours::parse("mon-fri 11:00-14:00,17:30-22:00; sat,so 18:00-01:30").unwrap();
        // 2026-12-07 is a Monday.
        assert_eq!(h.open_since(&at("2026-12-07T12:00")).map(|z| z.time()), Some(Time::new(11, 0, 0, 0).unwrap()));
        assert_eq!(h.open_since(&at("2026-12-07T15:00")), None);
        assert_eq!(h.open_since(&at("2026-12-12T23:00")).map(|z| z.time()), Some(Time::new(18, 0, 0, 0).unwrap()));
        // Past midnight: Saturday's evening runs into Sunday.
        assert!(h.open_since(&at("2026-12-13T01:00")).is_some());
        assert_eq!(h.open_since(&at("2026-12-13T02:00")), None);
        // Monday 00:30 after Sunday 18:00-01:30.
        assert!(h.open_since(&at("2026-12-14T00:30")).is_some());
        let every = OpeningHours::parse("11:00-22:00").unwrap();
        assert!(every.open_since(&at("2026-12-09T11:00")).is_some());
        for bad in ["", "mon 25:00-26:00", "xyz 11:00-12:00", "mon 11:00", "11:00-11:00"] {
            assert!(OpeningHours::parse(bad).is_err(), "{bad}");
        }
    }
}
