//! The configured printers at run time: each with its address, its paper layout, its status
//! monitor and the signal that wakes its dispatcher. Shared by the dispatchers (one per
//! printer) and the gRPC services.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::printer::{Monitor, PrinterUrl};
use crate::receipt::Layout;

pub struct PrinterHandle {
    pub name: String,
    pub url: PrinterUrl,
    /// How receipts look on this printer (width, font, code page, labels ...).
    pub layout: Arc<Layout>,
    pub monitor: Monitor,
    /// Wakes this printer's dispatcher when jobs were queued (or failed over) for it.
    pub wake: Arc<Notify>,
    /// Printer that takes this one's tickets when it has been not ready for too long.
    pub backup: Option<String>,
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
