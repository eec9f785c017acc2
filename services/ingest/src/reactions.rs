//! What wix-ingest does about connectivity: publishes its own components (the internet and
//! its circuit breakers, republished on every breaker change) on the connectivity bus, runs
//! the order sync at once when the internet comes back, and
//! flushes the outbox at once when wix-print arrives on the bus (started, restarted, or heard
//! again after a silence).
//!
//! Both reactions are rate-limited ([`MIN_FLUSH_INTERVAL`], [`MIN_SYNC_INTERVAL`]): arrivals
//! or returns in between are merged into one reaction at the end of the interval, so a peer
//! that announces itself in a loop cannot turn into a storm of flushes, syncs or log lines.
//!
//! These are accelerators only. Must never: be what correctness depends on (the sync runs on
//! its interval and the outbox retries on its backoff whether or not an event arrives), store
//! anything, or block on the bus.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use wixprint_shared::breaker::Breakers;
use wixprint_shared::connectivity::{STATE_DEGRADED, STATE_OFFLINE, STATE_ONLINE};
use wixprint_shared::proto::events::Component;

use crate::sync::SyncHandle;

/// The outbox is flushed for a peer arrival at most this often.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The sync is started for an internet return at most this often.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// A reaction that runs at once, then at most once per `every`; requests in between are
/// merged into one run when the interval has passed.
struct Limited {
    every: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Limited {
    fn new(every: Duration) -> Self {
        Limited { every, last: None, pending: false }
    }

    /// When a pending request may run.
    fn due(&self) -> Option<Instant> {
        self.pending.then(|| self.last.map_or_else(Instant::now, |t| t + self.every))
    }

    /// Whether a pending request runs now (and records it).
    fn take(&mut self, now: Instant) -> bool {
        if self.pending && self.last.is_none_or(|t| now.duration_since(t) >= self.every) {
            self.pending = false;
            self.last = Some(now);
            return true;
        }
        false
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub struct Reactions {
    /// The confirmed internet state (from the internet monitor).
    pub internet: watch::Receiver<Component>,
    /// Replaces what this service publishes on the bus.
    pub publish: Box<dyn Fn(Vec<Component>) + Send>,
    /// The service's circuit breakers: published after the internet, again on every change.
    pub breakers: Arc<Breakers>,
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
    /// The internet, then every breaker.
    fn publish_all(&self, internet: Component) {
        let mut components = vec![internet];
        components.extend(self.breakers.components());
        (self.publish)(components);
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        // `notify_waiters` wakes only futures that exist: keep one armed across iterations.
        let breaker_notify = self.breakers.changed();
        let mut breaker_changed = std::pin::pin!(breaker_notify.notified());
        breaker_changed.as_mut().enable();
        let mut previous = {
            let current = self.internet.borrow_and_update().clone();
            let state = current.state.clone();
            self.publish_all(current);
            state
        };
        let mut flush = Limited::new(MIN_FLUSH_INTERVAL);
        let mut sync = Limited::new(MIN_SYNC_INTERVAL);
        let mut was_for_sync = String::new();
        loop {
            let due = [flush.due(), sync.due()].into_iter().flatten().min();
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
                        sync.pending = true;
                        was_for_sync.clone_from(&previous);
                    }
                    previous.clone_from(&current.state);
                    self.publish_all(current);
                }
                _ = breaker_changed.as_mut() => {
                    breaker_changed.set(breaker_notify.notified());
                    breaker_changed.as_mut().enable();
                    let current = self.internet.borrow().clone();
                    self.publish_all(current);
                }
                _ = self.peer_arrived.notified() => flush.pending = true,
                _ = sleep_until_opt(due) => {}
            }
            let now = Instant::now();
            if sync.take(now) {
                if self.sync.trigger() {
                    tracing::info!(was = %was_for_sync, "internet is back: syncing orders now");
                } else {
                    tracing::debug!("internet is back; the order sync is off");
                }
            }
            if flush.take(now) {
                tracing::info!("wix-print arrived on the connectivity bus: flushing the outbox now");
                self.outbox_flush.notify_one();
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
        let breakers = Breakers::new();
        let breaker = breakers.add("wix-api", wixprint_shared::breaker::BreakerConfig::WIX_API);
        let (peer_arrived, outbox_flush) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (seen, changed) = (published.clone(), Arc::new(Notify::new()));
        let on_publish = changed.clone();
        let reactions = Reactions {
            internet: rx,
            publish: Box::new(move |c| {
                seen.lock().unwrap().extend(c.into_iter().map(|c| format!("{}:{}", c.kind, c.state)));
                on_publish.notify_one();
            }),
            breakers: breakers.clone(),
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
        let pairs = |states: &[&str]| -> Vec<String> {
            states.iter().flat_map(|s| [format!("internet:{s}"), "breaker:closed".to_owned()]).collect()
        };
        assert_eq!(*published.lock().unwrap(), pairs(&[STATE_UNKNOWN, STATE_ONLINE, STATE_OFFLINE, STATE_ONLINE]));
        // A breaker change is republished at once, with the internet state.
        published.lock().unwrap().clear();
        for _ in 0..3 {
            breaker.failure("HTTP 503");
        }
        within("publish of the opened breaker", changed.notified()).await;
        assert_eq!(*published.lock().unwrap(), [format!("internet:{STATE_ONLINE}"), "breaker:open".to_owned()]);

        peer_arrived.notify_one();
        within("outbox flush", outbox_flush.notified()).await;
        token.cancel();
        within("stop", task).await.unwrap();
    }

    #[tokio::test]
    async fn a_flood_of_arrivals_flushes_the_outbox_at_most_once_per_interval() {
        let (_tx, rx) = watch::channel(internet(STATE_UNKNOWN));
        let (peer_arrived, outbox_flush) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let reactions = Reactions {
            internet: rx,
            publish: Box::new(|_| {}),
            breakers: Breakers::new(),
            peer_arrived: peer_arrived.clone(),
            sync: SyncHandle::off("test"),
            outbox_flush: outbox_flush.clone(),
        };
        let token = CancellationToken::new();
        let task = tokio::spawn(reactions.run(token.clone()));
        let flushes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = {
            let (flushes, outbox_flush) = (flushes.clone(), outbox_flush.clone());
            tokio::spawn(async move {
                loop {
                    outbox_flush.notified().await;
                    flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let start = Instant::now();
        // 2.5 s of arrivals every millisecond.
        while start.elapsed() < Duration::from_millis(2500) {
            peer_arrived.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The last merged arrival runs at the end of its interval.
        tokio::time::sleep(MIN_FLUSH_INTERVAL + Duration::from_millis(200)).await;
        let n = flushes.load(std::sync::atomic::Ordering::Relaxed);
        assert!((3..=4).contains(&n), "{n} flushes for ~2500 arrivals in 2.5 s");
        token.cancel();
        within("stop", task).await.unwrap();
        counter.abort();
    }
}
