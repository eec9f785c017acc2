//! Status bytes and printer states: the decoded `DLE EOT` 1, 2, 4 replies, the Automatic
//! Status Back block, and the state names operators see.

/// Decoded `DLE EOT` 1, 2 and 4 replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterStatus {
    pub printer: u8,
    pub offline_cause: u8,
    pub paper: u8,
}

impl PrinterStatus {
    pub fn offline(&self) -> bool {
        self.printer & 0x08 != 0
    }
    pub fn cover_open(&self) -> bool {
        self.offline_cause & 0x04 != 0
    }
    pub fn paper_out(&self) -> bool {
        self.paper & 0x60 == 0x60 || self.offline_cause & 0x20 != 0
    }
    pub fn paper_low(&self) -> bool {
        self.paper & 0x0C == 0x0C
    }
    pub fn error(&self) -> bool {
        self.offline_cause & 0x40 != 0
    }
    /// Ready to take a ticket.
    pub fn ready(&self) -> bool {
        !self.offline() && !self.cover_open() && !self.paper_out() && !self.error()
    }
    /// The state name operators see: online / paper_low / paper_out / cover_open / error / offline.
    pub fn state(&self) -> State {
        if self.cover_open() {
            State::CoverOpen
        } else if self.paper_out() {
            State::PaperOut
        } else if self.error() {
            State::Error
        } else if self.offline() {
            State::Offline
        } else if self.paper_low() {
            State::PaperLow
        } else {
            State::Online
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unknown,
    Online,
    PaperLow,
    PaperOut,
    CoverOpen,
    Error,
    Offline,
}

impl State {
    /// Every state, for the `wixprint.print.printer.state` gauge.
    pub const ALL: [State; 7] = [
        State::Unknown,
        State::Online,
        State::PaperLow,
        State::PaperOut,
        State::CoverOpen,
        State::Error,
        State::Offline,
    ];

    /// Ready to take a ticket: online, or online with the paper near its end (a warning).
    pub fn is_ready(self) -> bool {
        matches!(self, State::Online | State::PaperLow)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::PaperLow => "paper_low",
            State::PaperOut => "paper_out",
            State::CoverOpen => "cover_open",
            State::Error => "error",
            State::Offline => "offline",
        }
    }
}

/// `GS a n`: Automatic Status Back on for online/offline, errors and the paper sensor, so a
/// printer that stops while it holds a ticket says so at once (sent with each job).
pub const GS_A_ASB: [u8; 3] = [0x1D, 0x61, 0x0E];

/// The state an Automatic Status Back block reports (Epson: byte 1 offline 0x08, cover 0x20;
/// byte 2 errors 0x08 / 0x20 / 0x40; byte 3 paper end 0x0C, near end 0x03).
pub fn asb_state(a: [u8; 4]) -> State {
    if a[2] & 0x0C != 0 {
        State::PaperOut
    } else if a[0] & 0x20 != 0 {
        State::CoverOpen
    } else if a[1] & 0x68 != 0 {
        State::Error
    } else if a[0] & 0x08 != 0 {
        State::Offline
    } else if a[2] & 0x03 != 0 {
        State::PaperLow
    } else {
        State::Online
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_status_back_maps_to_states() {
        assert_eq!(asb_state([0x10, 0, 0, 0]), State::Online);
        assert_eq!(asb_state([0x18, 0, 0, 0]), State::Offline);
        assert_eq!(asb_state([0x18, 0, 0x0C, 0]), State::PaperOut);
        assert_eq!(asb_state([0x38, 0, 0, 0]), State::CoverOpen);
        assert_eq!(asb_state([0x10, 0x08, 0, 0]), State::Error);
        assert_eq!(asb_state([0x10, 0, 0x03, 0]), State::PaperLow);
    }

    #[test]
    fn status_bytes_map_to_states() {
        let s = |a, b, c| PrinterStatus { printer: a, offline_cause: b, paper: c }.state();
        assert_eq!(s(0x12, 0x12, 0x12), State::Online);
        assert_eq!(s(0x1A, 0x32, 0x7E), State::PaperOut);
        assert_eq!(s(0x1A, 0x16, 0x12), State::CoverOpen);
        assert_eq!(s(0x12, 0x12, 0x1E), State::PaperLow);
        assert!(!PrinterStatus { printer: 0x1A, offline_cause: 0x12, paper: 0x12 }.ready());
    }
}
