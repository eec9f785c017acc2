//! The configured printers at run time: each with its address, its paper layout, its status
//! monitor and the signal that wakes its dispatcher. Shared by the dispatchers (one per
//! printer) and the gRPC services.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::printer::{Link, Monitor, PrinterUrl};
use crate::receipt::Layout;

pub struct PrinterHandle {
    pub name: String,
    pub url: PrinterUrl,
    /// How receipts look on this printer (width, font, code page, labels ...).
    pub layout: Arc<Layout>,
    pub monitor: Monitor,
    /// The printer's one connection, shared by its dispatcher's status polls and jobs and by
    /// the admin API's checks; also how it confirms tickets.
    pub link: Link,
    /// Wakes this printer's dispatcher when jobs were queued (or failed over) for it.
    pub wake: Arc<Notify>,
    /// Printer that takes this one's tickets when it has been not ready for too long.
    pub backup: Option<String>,
    /// Lets the recovery manager pause this printer's queue or slow it down.
    pub gate: Gate,
}

/// What the dispatcher asks before it takes the next job: may it print, and how fast.
#[derive(Clone)]
pub struct Gate {
    paused: watch::Sender<bool>,
    /// Least time between two tickets (a rate-limited recovery); `None` = as fast as it goes.
    min_interval: watch::Sender<Option<Duration>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { paused: watch::Sender::new(false), min_interval: watch::Sender::new(None) }
    }
}

impl Gate {
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub fn set_min_interval(&self, interval: Option<Duration>) {
        self.min_interval.send_replace(interval);
    }

    pub fn min_interval(&self) -> Option<Duration> {
        *self.min_interval.borrow()
    }

    /// Returns once the queue is not paused.
    pub async fn open(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives in `self`, so `wait_for` only ends when the value is false.
        let _ = rx.wait_for(|paused| !*paused).await;
    }
}

/// All printers, in configuration order (the first is the default route). Cheap to clone.
#[derive(Clone)]
pub struct Printers(Arc<Vec<PrinterHandle>>);

impl Printers {
    /// `handles` must not be empty and names must be unique (the config guarantees both).
    pub fn new(handles: Vec<PrinterHandle>) -> Printers {
        assert!(!handles.is_empty(), "at least one printer");
        Printers(Arc::new(handles))
    }

    pub fn get(&self, name: &str) -> Option<&PrinterHandle> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PrinterHandle> {
        self.0.iter()
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.name.as_str()).collect()
    }

    /// Wakes every dispatcher (jobs were queued; which printers they are for does not matter:
    /// a dispatcher with nothing to do goes back to sleep).
    pub fn wake_all(&self) {
        for p in self.0.iter() {
            p.wake.notify_one();
        }
    }
}
