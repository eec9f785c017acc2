//! The dispatcher: one per printer. Takes that printer's next job in queue order and walks it
//! through `sending → awaiting_confirm → printed`, one job at a time. A printer with a backup
//! that has been not ready for the failover time hands its waiting jobs to the backup; they
//! print there once, with a banner naming the printer they were meant for.
//!
//! Invariants (design §1, §4):
//! - each transition is committed before the side effect it announces;
//! - a printer that is unreachable, silent or not ready pauses the queue and uses no attempt;
//! - a job is `printed` only on the printer's confirmation; any doubt after bytes went out
//!   makes it `uncertain`, reprinted with the KOPIE banner, never a silent second copy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::failure::FailureClass;
use wixprint_shared::traces::SPANS;

use crate::printer::{
    Confirmation, GS_R_PAPER, Link, Monitor, Observed, PrintError, PrinterUrl, Session, State, Timeouts, process_id,
    process_id_request,
};
use crate::receipt::{self, Layout};
use crate::store::{Content, JobState, Printable, ReadyJob, Store, queue_now_ms};
use wixprint_shared::proto::print::ReceiptType;

/// The banner a reprint after an uncertain outcome carries.
pub const REPRINT_BANNER: &str = "KOPIE / REPRINT";

/// The banner of a ticket printed on a backup printer: which printer it was meant for.
pub fn failover_banner(routed_from: &str) -> String {
    format!("FÜR/FOR: {}", routed_from.to_uppercase())
}

/// Hands a not-ready printer's jobs to its backup.
pub struct Failover {
    pub backup: String,
    pub backup_monitor: Monitor,
    pub backup_wake: Arc<Notify>,
    /// How long the printer must have been not ready.
    pub after: Duration,
}

pub struct Dispatcher {
    pub store: Store,
    /// The printer's name: this dispatcher prints the jobs routed to it.
    pub printer: String,
    pub url: PrinterUrl,
    pub monitor: Monitor,
    /// The printer's one connection (status polls and jobs share it).
    pub link: Link,
    pub layout: Arc<Layout>,
    /// Receipt types that sound the buzzer, and the layout that does.
    pub buzzer: Vec<ReceiptType>,
    pub buzzer_layout: Arc<Layout>,
    pub failover: Option<Failover>,
    pub timeouts: Timeouts,
    pub retry_backoff: Backoff,
    /// Wakes the dispatcher when jobs are queued.
    pub wake: Arc<Notify>,
    /// Pause and pace, set by the recovery manager.
    pub gate: crate::printers::Gate,
    /// Status poll interval while idle (the printer monitor): a printer that goes away or
    /// comes back is noticed even when nothing is printing.
    pub idle_poll: Duration,
    /// Time a job in flight may take to finish after shutdown was requested.
    pub grace: Duration,
    /// Beaten on every turn of the loop and while legitimately waiting (paused, a stopped
    /// printer holding a ticket): the watchdog stops pinging when it goes quiet.
    pub heartbeat: wixprint_shared::watchdog::Heartbeat,
}

/// Renders a job the way it prints: with the KOPIE banner when it is a reprint, and the
/// printer it was meant for when it failed over.
pub fn render_job(p: &Printable, layout: &Layout) -> receipt::Document {
    let banners: Vec<String> =
        [p.reprint.then(|| REPRINT_BANNER.to_owned()), p.routed_from.as_deref().map(failover_banner)]
            .into_iter()
            .flatten()
            .collect();
    let banner = (!banners.is_empty()).then(|| banners.join("\n"));
    let banner = banner.as_deref();
    match &p.content {
        Content::Ticket => receipt::render(&p.order, p.receipt_type, layout, banner),
        Content::Change { base } => {
            let changes = crate::changes::diff(base, &p.order);
            receipt::render_change(&p.order, p.receipt_type, &changes, layout, banner)
        }
        Content::Storno => receipt::render_storno(&p.order, p.receipt_type, layout, banner),
    }
}

fn status_detail(s: &crate::printer::PrinterStatus) -> String {
    if s.ready() && s.state() == State::Online {
        String::new()
    } else {
        format!("status bytes {:02X} {:02X} {:02X}", s.printer, s.offline_cause, s.paper)
    }
}

/// A printer observed as `me` hands its jobs to a backup observed as `backup` after `after`
/// not ready without a break (monotonic), unless the backup is known to be down too.
pub fn fail_over_due(me: &Observed, backup: &Observed, after: Duration) -> bool {
    !me.state.is_ready()
        && me.not_ready_since.is_some()
        && me.not_ready_for() >= after
        && (backup.state.is_ready() || backup.state == State::Unknown)
}

enum Outcome {
    /// The job was handled (printed, uncertain, dead); go on at once.
    Next,
    /// The printer cannot take it now; wait a poll interval.
    PrinterNotReady,
    /// The printer's circuit breaker is open: touch nothing for this long.
    BreakerOpen(Duration),
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_poll: Option<tokio::time::Instant> = None;
        let mut last_print: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            self.heartbeat.beat();
            if self.gate.is_paused() {
                // Paused by the operator or the recovery: waiting, not stalled.
                let open = self.gate.open();
                tokio::pin!(open);
                loop {
                    tokio::select! {
                        _ = &mut open => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => self.heartbeat.beat(),
                        _ = shutdown.cancelled() => return,
                    }
                }
                continue;
            }
            if let (Some(interval), Some(at)) = (self.gate.min_interval(), last_print) {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + interval) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let job = match self.store.next_ready_job(&self.printer).await {
                Ok(j) => j,
                Err(e) if e.downcast_ref::<crate::store::Unprintable>().is_some() => {
                    // A poison job never blocks the queue: dead letter at once (permanent).
                    let Some(u) = e.downcast_ref::<crate::store::Unprintable>() else { continue };
                    tracing::error!(job_id = u.id, printer = %self.printer, reason = %u.reason, "job can never print; dead-lettered (permanent)");
                    crate::metrics::get().dead_letters.add(
                        1,
                        &[
                            opentelemetry::KeyValue::new("printer", self.printer.clone()),
                            opentelemetry::KeyValue::new("class", "permanent"),
                        ],
                    );
                    if let Err(db) = self.store.mark_dead_permanent(u.id, u.state, u.reason.clone()).await {
                        tracing::error!(error = format!("{db:#}"), "could not dead-letter an unprintable job");
                        self.idle(Duration::from_secs(1), &shutdown).await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "reading the queue failed");
                    self.idle(Duration::from_secs(1), &shutdown).await;
                    continue;
                }
            };
            let Some(job) = job else {
                // Idle: read the printer's status every `idle_poll`.
                if last_poll.is_none_or(|at| at.elapsed() >= self.idle_poll) {
                    self.poll_status().await;
                    last_poll = Some(tokio::time::Instant::now());
                }
                let wait = match self.store.next_due_ms(&self.printer).await {
                    Ok(Some(ms)) => Duration::from_millis((ms - queue_now_ms()).clamp(1, 60_000) as u64),
                    _ => Duration::from_secs(60),
                };
                self.idle(wait.min(self.idle_poll), &shutdown).await;
                continue;
            };
            // A job in flight finishes even when shutdown arrives meanwhile (bounded by the grace).
            let outcome = tokio::select! {
                o = self.print(job) => o,
                _ = async { shutdown.cancelled().await; tokio::time::sleep(self.grace).await } => {
                    tracing::warn!("shutdown grace over with a ticket in flight; it will be reprinted with the banner after restart");
                    return;
                }
            };
            last_poll = Some(tokio::time::Instant::now());
            match outcome {
                Outcome::Next => last_print = Some(tokio::time::Instant::now()),
                Outcome::BreakerOpen(retry_in) => {
                    // Nothing hammers the printer: no connect, no poll until the probe is due.
                    // Jobs still fail over to a backup meanwhile (by the monitor's clock).
                    self.maybe_fail_over().await;
                    // Re-checked at least every second: an operator's ResetBreaker takes effect.
                    tokio::select! {
                        _ = tokio::time::sleep(retry_in.min(Duration::from_secs(1))) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Outcome::PrinterNotReady => {
                    self.maybe_fail_over().await;
                    tokio::select! {
                        _ = tokio::time::sleep(self.timeouts.poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// One status read (`DLE EOT` 1, 2, 4 on the printer's connection) for the monitor. While
    /// the breaker is open nothing is read (the monitor keeps what it knew); half-open, this
    /// read is the breaker's probe.
    async fn poll_status(&self) {
        let result = match self.link.session().await {
            Ok(mut s) => s.status().await,
            Err(PrintError::BreakerOpen { .. }) => return,
            Err(e) => Err(e),
        };
        let (state, detail) = crate::printer::describe(result);
        self.monitor.set(state, detail);
    }

    /// Whether this printer's jobs (and a ticket it holds while stopped) go to the backup: it
    /// has been not ready for the failover time (a monotonic clock: a wall-clock step neither
    /// fires nor stalls it) and the backup is not known to be down.
    fn should_fail_over(&self) -> bool {
        let Some(f) = &self.failover else { return false };
        fail_over_due(&self.monitor.get(), &f.backup_monitor.get(), f.after)
    }

    /// Moves this printer's waiting jobs to its backup once it has been not ready for the
    /// failover time, unless the backup is known not to be ready either.
    async fn maybe_fail_over(&self) {
        let Some(f) = &self.failover else { return };
        if !self.should_fail_over() {
            return;
        }
        let me = self.monitor.get();
        let reason = format!("{} for {} s", me.state.as_str(), me.not_ready_for().as_secs());
        match self.store.fail_over(&self.printer, &f.backup, &reason).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(printer = %self.printer, backup = %f.backup, jobs = n, %reason, "printer not ready too long; tickets failed over to the backup");
                f.backup_wake.notify_one();
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "failover failed; jobs stay queued"),
        }
    }

    /// Waits `wait` (or until woken), beating the heartbeat at least every second: a long
    /// `PRINT_STATUS_POLL_MS` is waiting, not a stall.
    async fn idle(&self, wait: Duration, shutdown: &CancellationToken) {
        let until = tokio::time::Instant::now() + wait;
        loop {
            self.heartbeat.beat();
            let step = until.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(1));
            if step.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = self.wake.notified() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn print(&self, job: ReadyJob) -> Outcome {
        // Test hook: the dispatcher task panics with a ticket in hand.
        if wixprint_shared::fatal::failpoint("dispatcher-panic") {
            panic!("failpoint dispatcher-panic (job {})", job.id);
        }
        // Test hook: the dispatcher hangs forever with a ticket in hand (the watchdog test).
        if wixprint_shared::fatal::failpoint("dispatcher-stall") {
            tracing::warn!(job_id = job.id, printer = %self.printer, "failpoint dispatcher-stall: hanging with a ticket in hand");
            std::future::pending::<()>().await;
        }
        // 1. Is the printer there and ready? Nothing is recorded as an attempt until it is.
        let mut conn = match self.link.session().await {
            Ok(c) => c,
            Err(PrintError::BreakerOpen { retry_in, .. }) => return Outcome::BreakerOpen(retry_in),
            Err(e) => {
                self.monitor.set(State::Offline, e.to_string());
                return Outcome::PrinterNotReady;
            }
        };
        match conn.status().await {
            Ok(s) if s.ready() => self.monitor.set(s.state(), ""),
            Ok(s) => {
                self.monitor.set(s.state(), status_detail(&s));
                return Outcome::PrinterNotReady;
            }
            Err(e) => {
                self.monitor.set(State::Offline, e.to_string());
                return Outcome::PrinterNotReady;
            }
        }
        // How this printer confirms (auto mode: probed once per connection, while idle).
        let confirmation = match conn.confirmation().await {
            Ok(c) => c,
            Err(e) => {
                self.monitor.set(State::Offline, e.to_string());
                return Outcome::PrinterNotReady;
            }
        };

        // One span per ticket sent, in the trace of the order version it prints (a new trace
        // for a job made without one); attempts that find the printer not ready make none.
        let parent = job.traceparent.as_deref().and_then(wixprint_shared::traces::parse);
        let trace = wixprint_shared::traces::hop(parent, || {
            tracing::info_span!(target: SPANS, "print.ticket", otel.status_code = Empty, result = Empty,
                job.id = job.id, job.attempt = i64::from(job.attempts) + 1, order.id = %job.printable.order.id,
                order.number = %job.printable.order.number, order.version = job.version, printer = %self.printer,
                receipt = crate::metrics::receipt_name(job.printable.receipt_type), reprint = job.printable.reprint)
        });
        let span = trace.span().clone();
        let outcome = self.send_ticket(&job, conn, confirmation, &trace).instrument(span.clone()).await;
        span.record("result", outcome.0);
        if matches!(outcome.0, "uncertain" | "abandoned" | "not_recorded") {
            span.record("otel.status_code", "ERROR");
        }
        outcome.1
    }

    /// Steps 2 to 4 of a ticket on a ready printer; answers what became of it (the span's
    /// `result`) and how the loop goes on.
    async fn send_ticket(
        &self,
        job: &ReadyJob,
        conn: Session<'_>,
        confirmation: Confirmation,
        trace: &wixprint_shared::traces::Hop,
    ) -> (&'static str, Outcome) {
        // 2. Render and commit `sending` before the first byte goes out.
        let layout = if self.buzzer.contains(&job.printable.receipt_type) { &self.buzzer_layout } else { &self.layout };
        let doc = render_job(&job.printable, layout);
        let mut bytes = doc.to_escpos(layout);
        let id = process_id((job.id as u64) * 16 + u64::from(job.attempts));
        // Automatic Status Back on: a printer stopping while it holds this ticket says so.
        bytes.extend_from_slice(&crate::printer::GS_A_ASB);
        match confirmation {
            Confirmation::ProcessId => bytes.extend_from_slice(&process_id_request(id)),
            Confirmation::Status => bytes.extend_from_slice(&GS_R_PAPER),
        }
        let confirm_id = String::from_utf8_lossy(&id).into_owned();
        let sending = std::time::Instant::now();
        if let Err(e) = self.store.mark_sending(job, confirm_id).await {
            if e.downcast_ref::<crate::store::Stale>().is_some() {
                // Cancelled or changed since it was loaded: take the queue's word again.
                tracing::info!(job_id = job.id, reason = %e, "job changed before sending; reloading");
                return ("stale", Outcome::Next);
            }
            tracing::error!(job_id = job.id, error = format!("{e:#}"), "could not record sending; not printing");
            return ("not_recorded", Outcome::PrinterNotReady);
        }

        // 3. and 4., the printer round trip: send, then wait for the printer's word.
        let roundtrip = trace.child(|| {
            tracing::info_span!(target: SPANS, "printer.roundtrip", otel.status_code = Empty,
                printer = %self.printer, printer.confirmation = ?confirmation, bytes = bytes.len() as i64, result = Empty)
        });
        let confirmed = self.roundtrip(job, conn, confirmation, &bytes, id).instrument(roundtrip.clone()).await;
        roundtrip.record(
            "result",
            match &confirmed {
                Ok(()) => "confirmed",
                Err((_, None)) => "not_recorded",
                Err((JobState::Sending, _)) => "send_failed",
                Err(_) => "unconfirmed",
            },
        );
        if confirmed.is_err() {
            roundtrip.record("otel.status_code", "ERROR");
        }
        let confirmed = match confirmed {
            Ok(()) => Ok(()),
            Err((_, None)) => return ("not_recorded", Outcome::PrinterNotReady),
            Err((JobState::Sending, Some(e))) => return ("uncertain", self.uncertain(job, JobState::Sending, e).await),
            Err((_, Some(e))) => Err(e),
        };
        match &confirmed {
            Ok(()) => self.link.breaker().success(),
            Err(e) if e.class() == FailureClass::Transient => self.link.breaker().failure(e.to_string()),
            Err(_) => {}
        }
        match confirmed {
            Ok(()) => {
                let order_latency_ms = match self.store.mark_printed(job.id).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(job_id = job.id, error = format!("{e:#}"), "printed but could not record it");
                        return ("not_recorded", Outcome::PrinterNotReady);
                    }
                };
                let m = crate::metrics::get();
                let printer = opentelemetry::KeyValue::new("printer", self.printer.clone());
                m.tickets.add(
                    1,
                    &[
                        printer.clone(),
                        opentelemetry::KeyValue::new(
                            "receipt",
                            crate::metrics::receipt_name(job.printable.receipt_type),
                        ),
                        opentelemetry::KeyValue::new("reprint", job.printable.reprint),
                    ],
                );
                m.ticket_duration.record(sending.elapsed().as_secs_f64() * 1000.0, &[printer]);
                if let Some(ms) = order_latency_ms {
                    m.order_latency.record(ms as f64 / 1000.0, &[]);
                }
                tracing::info!(job_id = job.id, printer = %self.printer, order = %job.printable.order.number, receipt = ?job.printable.receipt_type, reprint = job.printable.reprint, "printed");
                ("printed", Outcome::Next)
            }
            Err(e @ PrintError::Abandoned { .. }) => {
                tracing::warn!(job_id = job.id, printer = %self.printer, error = %e, "ticket held by a stopped printer; failing over");
                self.uncertain(job, JobState::AwaitingConfirm, e).await;
                // The loop now fails this printer's waiting jobs (this one included) over.
                ("abandoned", Outcome::PrinterNotReady)
            }
            Err(e) => ("uncertain", self.uncertain(job, JobState::AwaitingConfirm, e).await),
        }
    }

    /// Sends the ticket and waits for the printer's confirmation (the connection is released
    /// when it returns). An error carries the state
    /// the job is in (`sending`: the send failed; `awaiting_confirm`: no confirmation) and why;
    /// no reason means the bytes went out but `awaiting_confirm` could not be recorded (the
    /// connection is closed, the job stays `sending` for the restart to reprint).
    async fn roundtrip(
        &self,
        job: &ReadyJob,
        mut conn: Session<'_>,
        confirmation: Confirmation,
        bytes: &[u8],
        id: [u8; 4],
    ) -> Result<(), (JobState, Option<PrintError>)> {
        // 3. Send. From the first byte on, the outcome can be unknown.
        if let Err(e) = conn.send(bytes).await {
            if e.class() == FailureClass::Transient {
                self.link.breaker().failure(e.to_string());
            }
            return Err((JobState::Sending, Some(e)));
        }
        if let Err(e) = self.store.mark_awaiting_confirm(job.id).await {
            // The ticket is out but we could not write that down: a restart will reprint it
            // with the banner. Leave it in `sending`; its late reply must not meet the next job.
            tracing::error!(job_id = job.id, error = format!("{e:#}"), "could not record awaiting_confirm");
            conn.close();
            return Err((JobState::AwaitingConfirm, None));
        }

        // 4. Wait for the printer's word. A printer that stops while holding the ticket is
        // waited for, up to the failover time when it has a backup.
        // Called on every status read while a stopped printer holds the ticket: waiting on a
        // printer is progress for the watchdog.
        let give_up = || {
            self.heartbeat.beat();
            self.should_fail_over()
        };
        conn.await_confirmation(confirmation, id, &self.monitor, &give_up)
            .await
            .map_err(|e| (JobState::AwaitingConfirm, Some(e)))
    }

    async fn uncertain(&self, job: &ReadyJob, from: JobState, e: PrintError) -> Outcome {
        crate::metrics::get().uncertain.add(1, &[opentelemetry::KeyValue::new("printer", self.printer.clone())]);
        let delay = self.retry_backoff.delay(job.attempts + 1);
        let retry_at = queue_now_ms() + delay.as_millis() as i64;
        match self.store.mark_uncertain(job.id, from, e.to_string(), retry_at).await {
            Ok(JobState::Dead) => {
                crate::metrics::get().dead_letters.add(
                    1,
                    &[
                        opentelemetry::KeyValue::new("printer", self.printer.clone()),
                        opentelemetry::KeyValue::new("class", "transient"),
                    ],
                );
                tracing::error!(job_id = job.id, order = %job.printable.order.number, error = %e, "attempts used up; job dead-lettered")
            }
            Ok(JobState::Cancelled) => {
                tracing::warn!(job_id = job.id, order = %job.printable.order.number, error = %e,
                "print outcome unknown and the order was cancelled meanwhile; not reprinted, its STORNO covers it")
            }
            Ok(_) => {
                tracing::warn!(job_id = job.id, order = %job.printable.order.number, error = %e, retry_in_ms = delay.as_millis() as u64,
                "print outcome unknown; will reprint with banner")
            }
            Err(db) => {
                tracing::error!(job_id = job.id, error = format!("{db:#}"), "could not record the uncertain outcome")
            }
        }
        Outcome::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(name: &str) -> Monitor {
        Monitor::new(name, &"tcp://127.0.0.1:9100".parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn failover_is_due_after_the_failover_time_on_the_monotonic_clock() {
        let after = Duration::from_secs(120);
        let (kitchen, front) = (monitor("kitchen"), monitor("front"));
        front.set(State::Online, "");
        kitchen.set(State::Online, "");
        assert!(!fail_over_due(&kitchen.get(), &front.get(), after));
        kitchen.set(State::PaperOut, "");
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(!fail_over_due(&kitchen.get(), &front.get(), after), "not yet");
        // Still out of paper, then offline: one wait, not two.
        kitchen.set(State::Offline, "");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(fail_over_due(&kitchen.get(), &front.get(), after));
        // Paper near its end on the backup is still a ready backup; a stopped one is not.
        front.set(State::PaperLow, "");
        assert!(fail_over_due(&kitchen.get(), &front.get(), after));
        front.set(State::CoverOpen, "");
        assert!(!fail_over_due(&kitchen.get(), &front.get(), after));
        front.set(State::Online, "");
        // Ready again (paper near end counts) resets the clock.
        kitchen.set(State::PaperLow, "");
        assert!(!fail_over_due(&kitchen.get(), &front.get(), after));
        kitchen.set(State::PaperOut, "");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!fail_over_due(&kitchen.get(), &front.get(), after));
    }
}
