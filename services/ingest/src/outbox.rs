//! The outbox forwarder: hands every stored order version to wix-print with `SubmitOrder`,
//! in outbox order, until wix-print acknowledges it.
//!
//! Invariant: a row leaves `pending` only on wix-print's answer (delivered), or on a
//! permanent refusal (rejected, kept for the operator). Transport errors keep it pending and
//! back off; nothing is ever dropped. Delivery is at-least-once; wix-print makes it
//! exactly-once in effect with its UNIQUE (order id, version).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::proto::print::print_service_client::PrintServiceClient;
use wixprint_shared::time::now_ms;

use crate::store::Store;

pub struct Forwarder {
    pub store: Store,
    pub client: PrintServiceClient<Channel>,
    pub wake: Arc<Notify>,
    pub backoff: Backoff,
    pub batch: usize,
}

impl Forwarder {
    /// A lazily connecting client: creating it never waits for wix-print.
    pub fn client(url: &str, rpc_timeout: Duration) -> anyhow::Result<PrintServiceClient<Channel>> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(rpc_timeout)
            .connect_lazy();
        Ok(PrintServiceClient::new(channel))
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        // Consecutive failures across rows: the backoff belongs to wix-print's availability.
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            if let Err(e) = self.store.release_due_events().await {
                tracing::error!(error = format!("{e:#}"), "releasing held order events failed");
            }
            let rows = match self.store.due_outbox(self.batch).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "reading the outbox failed");
                    failures += 1;
                    self.pause(self.backoff.delay(failures), &shutdown).await;
                    continue;
                }
            };
            if rows.is_empty() {
                let next_due = match (self.store.next_outbox_due_ms().await, self.store.next_release_ms().await) {
                    (Ok(a), Ok(b)) => a.into_iter().chain(b).min(),
                    _ => None,
                };
                let wait = next_due
                    .map(|ms| Duration::from_millis((ms - now_ms()).clamp(1, 60_000) as u64))
                    .unwrap_or(Duration::from_secs(60));
                self.pause(wait, &shutdown).await;
                continue;
            }
            for row in rows {
                if shutdown.is_cancelled() {
                    return;
                }
                let result = self.client.submit_order(row.request).await;
                let stored = match result {
                    Ok(resp) => {
                        failures = 0;
                        tracing::info!(order_id = %row.order_id, version = row.version,
                            disposition = resp.get_ref().disposition, "delivered to wix-print");
                        self.store.mark_delivered(row.id).await
                    }
                    Err(status) if is_permanent(&status) => {
                        tracing::error!(order_id = %row.order_id, version = row.version, %status,
                            "wix-print rejected the order version; kept as rejected");
                        self.store.mark_rejected(row.id, status.to_string()).await
                    }
                    Err(status) => {
                        failures += 1;
                        let delay = self.backoff.delay(failures);
                        tracing::warn!(order_id = %row.order_id, version = row.version, attempts = row.attempts + 1,
                            retry_in_ms = delay.as_millis() as u64, error = %status.message(), "wix-print unavailable; will retry");
                        let r = self
                            .store
                            .mark_failed(
                                row.id,
                                format!("{}: {}", status.code(), status.message()),
                                now_ms() + delay.as_millis() as i64,
                            )
                            .await;
                        if let Err(e) = r {
                            tracing::error!(error = format!("{e:#}"), "recording the outbox failure failed");
                        }
                        // Keep order: do not try later rows while wix-print is down. New
                        // webhooks do not cut this wait short, or a busy evening would
                        // hammer a wix-print that is down.
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
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

    async fn pause(&self, wait: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// Errors that retrying cannot fix: wix-print looked at the request and refused it.
fn is_permanent(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::OutOfRange)
}
