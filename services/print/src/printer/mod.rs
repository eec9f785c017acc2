//! The printer driver for ESC/POS printers (Epson TM-m30III class and clones), split along
//! its seams:
//!
//! - [`url`]: where the printer is (`tcp://host:port`, `file:///dev/usb/lp0`);
//! - [`status`]: `DLE EOT` and Automatic Status Back bytes → [`State`];
//! - [`reply`]: telling the printer's replies apart on the stream; `GS ( H` / `GS r` requests;
//! - [`device`]: the USB device-file transport;
//! - [`connection`]: one connection (status reads, sending, waiting for the printer's own word
//!   that the ticket is on paper) and the persistent, shared [`Link`] per printer;
//! - [`monitor`]: the debounced printer state and its confirmed changes.
//!
//! Must never: decide job states (the dispatcher does), or report success because a socket
//! write returned: a TCP ACK only means the printer's network board buffered the bytes.

pub mod connection;
pub mod device;
pub mod monitor;
pub mod reply;
pub mod status;
pub mod url;

pub use connection::{Confirmation, Connection, DLE_DC4_CLEAR, Link, PrintError, Session, Timeouts, describe, probe};
pub use monitor::{Change, Monitor, Observed};
pub use reply::{GS_R_PAPER, process_id, process_id_request};
pub use status::{GS_A_ASB, PrinterStatus, State};
pub use url::PrinterUrl;
