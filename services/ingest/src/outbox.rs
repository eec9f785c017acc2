//! The outbox forwarder: hands every stored order version to wix-print with `SubmitOrder`,
//! in outbox order, until wix-print acknowledges it.
//!
//! Invariant: a row leaves `pending` only on wix-print's answer (delivered), on a permanent
//! refusal (dead at once, with its reason), or after `dead_after` non-permanent refusals
//! (dead; dead rows are listed by `ListDeadLetters` and retried by `RequeueOutbox`). Nothing
//! is ever dropped.
//!
//! Failure classes (issue 11, `wixprint_shared::failure`): wix-print unreachable or silent
//! (a transport failure) is *waiting*: the forwarder pauses, nothing counts, never a dead
//! letter. A refusal wix-print answers is *transient* (retried with this row's backoff, dead
//! after `dead_after`) unless it is *permanent* (`InvalidArgument`, `FailedPrecondition`,
//! `OutOfRange`: the request itself is wrong). The class prefixes the row's `last_error`
//! (`waiting: …`, `transient: …`, `permanent: …`).
//!
//! Invariant: no row blocks the queue. A row wix-print answers with a non-permanent refusal
//! backs off on its own (its refusals count its backoff) and the forwarder goes on with the
//! next row at once. Only a transport failure (wix-print unreachable, no answer in time) pauses
//! the whole forwarder: every row would fail the same way. Transport failures never count
//! towards `dead_after`. Delivery is at-least-once; wix-print makes it
//! exactly-once in effect with its UNIQUE (order id, version).
//!
//! Two signals shorten its waits: `wake` (a new row was stored) ends an idle wait but never a
//! backoff; `flush` (wix-print was seen arriving on the connectivity bus) ends any wait,
//! backoff included, resets the backoff and makes every pending row due at once. Neither is
//! needed for correctness: without them the rows are retried when their backoff runs out.
//!
//! Clocks: every wait here is on the monotonic clock (`tokio::time`). The stored
//! `next_attempt_ms` and held events' `release_ms` are wall-clock hints, clamped (see
//! `store.rs`), so a wall-clock step of an hour either way neither stalls a row nor releases a
//! held event early.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use wixprint_shared::auth::{ClientAuth, Secret};
use wixprint_shared::backoff::Backoff;
use wixprint_shared::failure::FailureClass;
use wixprint_shared::proto::print::print_service_client::PrintServiceClient;
use wixprint_shared::time::now_ms;

use crate::store::Store;

/// After a flush, this many failures retry after [`QUICK_RETRY_DELAY`] (about two seconds of
/// a starting wix-print: its bus may be up a moment before its gRPC server) before the
/// ordinary backoff applies again.
const QUICK_RETRIES_AFTER_FLUSH: u32 = 10;
const QUICK_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How long the forwarder waits after a transport failure: consecutive failures across rows
/// (the backoff belongs to wix-print's availability), shortened for a while after a flush.
#[derive(Debug, Default)]
struct Pace {
    failures: u32,
    quick: u32,
}

impl Pace {
    fn succeeded(&mut self) {
        *self = Pace::default();
    }

    /// Counts a failure; returns the delay before the next attempt.
    fn failed(&mut self, backoff: &Backoff) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff.delay(self.failures);
        if self.quick > 0 {
            self.quick -= 1;
            return delay.min(QUICK_RETRY_DELAY);
        }
        delay
    }

    fn flushed(&mut self) {
        self.failures = 0;
        self.quick = QUICK_RETRIES_AFTER_FLUSH;
    }
}

pub struct Forwarder {
    pub store: Store,
    pub client: SubmitClient,
    /// A new row is waiting: ends an idle wait (not a backoff).
    pub wake: Arc<Notify>,
    /// wix-print is back: ends any wait, resets the backoff, makes pending rows due now.
    pub flush: Arc<Notify>,
    pub backoff: Backoff,
    /// Non-permanent refusals after which a row becomes a dead letter.
    pub dead_after: u32,
    pub batch: usize,
    /// How long an event that arrived after a gap in Wix's sequence is held (monotonic).
    pub reorder_window: Duration,
}

/// Longest idle wait: a new row or a flush ends it sooner.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// wix-print's `PrintService`, with the submit token (`PRINT_SUBMIT_TOKEN_FILE`) on every call.
pub type SubmitClient = PrintServiceClient<InterceptedService<Channel, ClientAuth>>;

impl Forwarder {
    /// A lazily connecting client: creating it never waits for wix-print.
    pub fn client(url: &str, rpc_timeout: Duration, token: Option<&Secret>) -> anyhow::Result<SubmitClient> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(rpc_timeout)
            .connect_lazy();
        Ok(PrintServiceClient::with_interceptor(channel, ClientAuth::new(token)))
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pace = Pace::default();
        while !shutdown.is_cancelled() {
            if let Err(e) = self.store.release_due_events(self.reorder_window).await {
                tracing::error!(error = format!("{e:#}"), "releasing held order events failed");
            }
            let rows = match self.store.due_outbox(self.batch, self.backoff.max()).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "reading the outbox failed");
                    let delay = pace.failed(&self.backoff);
                    self.pause(delay, &shutdown, &mut pace).await;
                    continue;
                }
            };
            if rows.is_empty() {
                // Deadlines on the monotonic clock: a stored retry time is only a hint, never
                // more than the longest backoff away (a wall-clock step cannot stall a row).
                let longest = self.backoff.max().clamp(Duration::from_millis(1), MAX_IDLE);
                let outbox = self.store.next_outbox_due_ms().await.ok().flatten().map(|ms| {
                    let left = u64::try_from(ms.saturating_sub(now_ms())).unwrap_or(0);
                    let left = Duration::from_millis(left);
                    // Further ahead than any backoff: `due_outbox` treats it as due now.
                    if left > self.backoff.max() {
                        Duration::from_millis(1)
                    } else {
                        left.clamp(Duration::from_millis(1), longest)
                    }
                });
                let held =
                    self.store.next_release().await.ok().flatten().map(|at| {
                        at.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1))
                    });
                let wait = outbox.into_iter().chain(held).min().unwrap_or(MAX_IDLE).min(MAX_IDLE);
                self.pause(wait, &shutdown, &mut pace).await;
                continue;
            }
            for row in rows {
                if shutdown.is_cancelled() {
                    return;
                }
                // A child of the webhook that stored the row (a new trace for synced and phone
                // orders); each attempt is one span, its context goes along in the metadata.
                // (The span is built only when the trace is sampled.)
                let parent = row.traceparent.as_deref().and_then(wixprint_shared::traces::parse);
                let trace = wixprint_shared::traces::hop(parent, || {
                    tracing::info_span!(target: wixprint_shared::traces::SPANS, "outbox.forward",
                        otel.kind = "client", otel.status_code = tracing::field::Empty, rpc.system = "grpc",
                        rpc.method = "SubmitOrder", rpc.grpc.status_code = tracing::field::Empty,
                        order.id = %row.order_id, order.number = row.request.order.as_ref().map_or("", |o| o.number.as_str()),
                        order.version = row.version, outbox.attempt = i64::from(row.attempts) + 1)
                });
                let span = trace.span().clone();
                let mut request = tonic::Request::new(row.request);
                trace.inject(request.metadata_mut());
                let result = self.client.submit_order(request).instrument(span.clone()).await;
                let code = match &result {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                };
                span.record("rpc.grpc.status_code", code as i64);
                if code != tonic::Code::Ok {
                    span.record("otel.status_code", "ERROR");
                }
                drop((span, trace));
                let stored = match result {
                    Ok(resp) => {
                        pace.succeeded();
                        tracing::info!(order_id = %row.order_id, version = row.version,
                            disposition = resp.get_ref().disposition, "delivered to wix-print");
                        crate::metrics::get().forwarded.add(1, &[]);
                        self.store.mark_delivered(row.id).await
                    }
                    Err(status) if is_permanent(&status) => {
                        tracing::error!(order_id = %row.order_id, version = row.version, %status,
                            class = FailureClass::Permanent.as_str(),
                            "wix-print refused the order version for good; it is a dead letter now (IngestAdmin/ListDeadLetters, RequeueOutbox)");
                        let error = last_error(FailureClass::Permanent, &status);
                        // Dead at once: refused once with `dead_after` = 1.
                        self.store.mark_refused(row.id, error, now_ms(), 1).await.map(|_| ())
                    }
                    Err(status) if !is_transport(&status) => {
                        // wix-print answered: this row backs off alone, the next rows go on.
                        pace.succeeded();
                        let refusals = row.refusals.saturating_add(1);
                        let delay = self.backoff.delay(refusals);
                        let error = last_error(FailureClass::Transient, &status);
                        let next = now_ms() + delay.as_millis() as i64;
                        match self.store.mark_refused(row.id, error, next, self.dead_after).await {
                            Ok(crate::store::OutboxState::Dead) => {
                                tracing::error!(order_id = %row.order_id, version = row.version, refusals, %status,
                                    "wix-print keeps refusing the order version; it is a dead letter now (IngestAdmin/ListDeadLetters, RequeueOutbox)");
                                Ok(())
                            }
                            Ok(_) => {
                                tracing::warn!(order_id = %row.order_id, version = row.version, refusals,
                                    retry_in_ms = delay.as_millis() as u64, %status, "wix-print refused the order version; it backs off, later orders go on");
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(status) => {
                        let delay = pace.failed(&self.backoff);
                        if status.code() == tonic::Code::Unauthenticated {
                            // A configuration error the operator must fix; kept pending, retried.
                            tracing::error!(order_id = %row.order_id, version = row.version, attempts = row.attempts + 1,
                                retry_in_ms = delay.as_millis() as u64, error = %status.message(),
                                "wix-print refused the submit token (PRINT_SUBMIT_TOKEN_FILE); will retry");
                        } else {
                            tracing::warn!(order_id = %row.order_id, version = row.version, attempts = row.attempts + 1,
                                retry_in_ms = delay.as_millis() as u64, error = %status.message(), "wix-print unavailable; will retry");
                        }
                        let r = self
                            .store
                            .mark_failed(
                                row.id,
                                last_error(FailureClass::Waiting, &status),
                                now_ms() + delay.as_millis() as i64,
                            )
                            .await;
                        if let Err(e) = r {
                            tracing::error!(error = format!("{e:#}"), "recording the outbox failure failed");
                        }
                        // Keep order: do not try later rows while wix-print is unreachable. New
                        // webhooks do not cut this wait short, or a busy evening would
                        // hammer a wix-print that is down; wix-print arriving on the bus does.
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.flush.notified() => self.flush_now(&mut pace).await,
                            _ = shutdown.cancelled() => {}
                        }
                        break;
                    }
                };
                if let Err(e) = stored {
                    tracing::error!(error = format!("{e:#}"), "updating the outbox failed");
                }
            }
        }
    }

    async fn pause(&self, wait: Duration, shutdown: &CancellationToken, pace: &mut Pace) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.wake.notified() => {}
            _ = self.flush.notified() => self.flush_now(pace).await,
            _ = shutdown.cancelled() => {}
        }
    }

    /// wix-print is back: forget the backoff and retry every pending row now.
    async fn flush_now(&self, pace: &mut Pace) {
        pace.flushed();
        match self.store.make_pending_due().await {
            Ok(0) => tracing::debug!("outbox flush: nothing was waiting for a retry"),
            Ok(rows) => tracing::info!(rows, "wix-print is back: retrying the outbox now"),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "making the outbox due failed; rows retry on their backoff")
            }
        }
    }
}

/// A row's `last_error`: the class, then the status.
fn last_error(class: FailureClass, status: &tonic::Status) -> String {
    format!("{}: {}: {}", class.as_str(), status.code(), status.message())
}

/// wix-print was not reached or did not answer in time: the channel's own error (it carries a
/// transport source), a deadline, a cancellation. Every row would fail alike, so the whole
/// forwarder pauses and nothing counts towards a dead letter. A status wix-print sent back has
/// no source.
fn is_transport(status: &tonic::Status) -> bool {
    use std::error::Error;
    status.source().is_some() || matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
}

/// Errors that retrying cannot fix: wix-print looked at the request and refused it.
fn is_permanent(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_without_a_transport_source_is_a_refusal() {
        assert!(!is_transport(&tonic::Status::unavailable("database is locked")), "wix-print answered");
        assert!(!is_transport(&tonic::Status::internal("boom")));
        assert!(is_transport(&tonic::Status::deadline_exceeded("timeout")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(is_transport(&tonic::Status::from_error(Box::new(io))));
    }

    #[test]
    fn the_class_leads_the_last_error() {
        let e = last_error(FailureClass::Permanent, &tonic::Status::invalid_argument("order.items: empty"));
        assert!(e.starts_with("permanent: ") && e.ends_with(": order.items: empty"), "{e}");
        assert!(is_permanent(&tonic::Status::invalid_argument("x")));
        assert!(!is_permanent(&tonic::Status::unavailable("x")), "a busy wix-print is transient");
    }

    #[test]
    fn pace_backs_off_and_a_flush_resets_it_and_retries_quickly_for_a_while() {
        let backoff = Backoff::new(Duration::from_secs(20), Duration::from_secs(60), 0.0).unwrap();
        let mut pace = Pace::default();
        assert_eq!(pace.failed(&backoff), Duration::from_secs(20));
        assert_eq!(pace.failed(&backoff), Duration::from_secs(40));
        pace.flushed();
        for _ in 0..QUICK_RETRIES_AFTER_FLUSH {
            assert_eq!(pace.failed(&backoff), QUICK_RETRY_DELAY);
        }
        // Still failing after the quick retries: the backoff continues from where it got to.
        assert_eq!(pace.failed(&backoff), Duration::from_secs(60));
        pace.flushed();
        pace.succeeded();
        assert_eq!(pace.failed(&backoff), Duration::from_secs(20), "a success forgets the quick retries");
    }
}
