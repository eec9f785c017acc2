//! wix-print's connectivity: every confirmed printer state change becomes a
//! `connectivity_events` row and is published on the ZeroMQ bus (the full state of every
//! printer, repeated as a heartbeat by the bus); old rows are pruned.
//!
//! Must never: decide whether a job prints (the dispatcher reads the printer itself) or wait
//! for the bus: printing never depends on an event arriving.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use wixprint_shared::bus::Bus;
use wixprint_shared::connectivity::KIND_PRINTER;
use wixprint_shared::proto::events::Component;
use wixprint_shared::time::{now_ms, timestamp_from_ms};

use crate::printer::Change;
use crate::printers::Printers;
use crate::store::Store;

/// Every printer's confirmed state as bus components.
pub fn components(printers: &Printers) -> Vec<Component> {
    printers
        .iter()
        .map(|h| {
            let o = h.monitor.get();
            Component {
                kind: KIND_PRINTER.into(),
                name: o.name,
                state: o.state.as_str().into(),
                since: Some(timestamp_from_ms(o.since_ms)),
                detail: o.detail,
            }
        })
        .collect()
}

/// Records and publishes changes until `shutdown`.
pub async fn run(
    store: Store,
    printers: Printers,
    bus: Bus,
    mut changes: broadcast::Receiver<Change>,
    retention: Duration,
    breakers: std::sync::Arc<wixprint_shared::breaker::Breakers>,
    shutdown: CancellationToken,
) {
    // Printers and their breakers: a breaker's state change is published like a printer's.
    let publish = || bus.publish(components(&printers).into_iter().chain(breakers.components()).collect());
    let breaker_changed = breakers.changed();
    publish();
    let mut prune = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = breaker_changed.notified() => publish(),
            _ = prune.tick() => {
                let cutoff = now_ms() - retention.as_millis() as i64;
                match store.prune_connectivity(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned old connectivity events"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning connectivity events failed"),
                }
            }
            change = changes.recv() => match change {
                Ok(c) => {
                    let printer = c.printer.clone();
                    if let Err(e) = store.record_printer_change(c).await {
                        tracing::error!(%printer, error = format!("{e:#}"), "could not record a printer state change");
                    }
                    publish();
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "printer state changes came faster than they were recorded");
                    publish();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
