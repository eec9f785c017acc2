//! What wix-ingest does about connectivity: publishes its own components (the internet) on
//! the connectivity bus, runs the order sync at once when the internet comes back, and
//! flushes the outbox at once when wix-print arrives on the bus (started, restarted, or heard
//! again after a silence).
//!
//! These are accelerators only. Must never: be what correctness depends on (the sync runs on
//! its interval and the outbox retries on its backoff whether or not an event arrives), store
//! anything, or block on the bus.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use wixprint_shared::connectivity::{STATE_DEGRADED, STATE_OFFLINE, STATE_ONLINE};
use wixprint_shared::proto::events::Component;

use crate::sync::SyncHandle;

pub struct Reactions {
    /// The confirmed internet state (from the internet monitor).
    pub internet: watch::Receiver<Component>,
    /// Replaces what this service publishes on the bus.
    pub publish: Box<dyn Fn(Vec<Component>) + Send>,
    /// The bus's "wix-print arrived" signal (one consumer: this task).
    pub peer_arrived: Arc<Notify>,
    pub sync: SyncHandle,
    /// Ends the outbox forwarder's wait and backoff.
    pub outbox_flush: Arc<Notify>,
}

/// The internet came back: from offline or degraded to online. The first state after start
/// (from "unknown") is not a return: the sync runs at start-up anyway.
pub fn internet_returned(previous: &str, next: &str) -> bool {
    next == STATE_ONLINE && (previous == STATE_OFFLINE || previous == STATE_DEGRADED)
}

impl Reactions {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut previous = {
            let current = self.internet.borrow_and_update().clone();
            let state = current.state.clone();
            (self.publish)(vec![current]);
            state
        };
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = self.internet.changed() => {
                    if changed.is_err() {
                        // The monitor is gone (shutting down): nothing more to publish.
                        break;
                    }
                    let current = self.internet.borrow_and_update().clone();
                    if internet_returned(&previous, &current.state) {
                        if self.sync.trigger() {
                            tracing::info!(was = %previous, "internet is back: syncing orders now");
                        } else {
                            tracing::debug!("internet is back; the order sync is off");
                        }
                    }
                    previous.clone_from(&current.state);
                    (self.publish)(vec![current]);
                }
                _ = self.peer_arrived.notified() => {
                    tracing::info!("wix-print arrived on the connectivity bus: flushing the outbox now");
                    self.outbox_flush.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use wixprint_shared::connectivity::STATE_UNKNOWN;

    #[test]
    fn only_offline_or_degraded_to_online_is_a_return() {
        assert!(internet_returned(STATE_OFFLINE, STATE_ONLINE));
        assert!(internet_returned(STATE_DEGRADED, STATE_ONLINE));
        assert!(!internet_returned(STATE_UNKNOWN, STATE_ONLINE), "start-up is not a return");
        assert!(!internet_returned(STATE_ONLINE, STATE_ONLINE));
        assert!(!internet_returned(STATE_ONLINE, STATE_OFFLINE));
        assert!(!internet_returned(STATE_OFFLINE, STATE_DEGRADED));
    }

    fn internet(state: &str) -> Component {
        Component { kind: "internet".into(), name: "internet".into(), state: state.into(), ..Default::default() }
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(2), f).await.unwrap_or_else(|_| panic!("{what} took over 2 s"))
    }

    #[tokio::test]
    async fn publishes_every_internet_state_and_relays_peer_arrivals_to_the_outbox() {
        let (tx, rx) = watch::channel(internet(STATE_UNKNOWN));
        let published: Arc<Mutex<Vec<String>>> = Arc::default();
        let (peer_arrived, outbox_flush) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (seen, changed) = (published.clone(), Arc::new(Notify::new()));
        let on_publish = changed.clone();
        let reactions = Reactions {
            internet: rx,
            publish: Box::new(move |c| {
                seen.lock().unwrap().extend(c.into_iter().map(|c| c.state));
                on_publish.notify_one();
            }),
            peer_arrived: peer_arrived.clone(),
            sync: SyncHandle::off("test"),
            outbox_flush: outbox_flush.clone(),
        };
        let token = CancellationToken::new();
        let task = tokio::spawn(reactions.run(token.clone()));
        within("initial publish", changed.notified()).await;
        for state in [STATE_ONLINE, STATE_OFFLINE, STATE_ONLINE] {
            tx.send_replace(internet(state));
            within("publish", changed.notified()).await;
        }
        assert_eq!(*published.lock().unwrap(), [STATE_UNKNOWN, STATE_ONLINE, STATE_OFFLINE, STATE_ONLINE]);

        peer_arrived.notify_one();
        within("outbox flush", outbox_flush.notified()).await;
        token.cancel();
        within("stop", task).await.unwrap();
    }
}
