//! The failure vocabulary both services classify every failure into (issue 11).
//!
//! - **Waiting**: the peer cannot take the call now (printer not ready or unreachable before a
//!   byte went out, peer service down, no internet). Waits; uses no attempt; opens no breaker.
//! - **Transient**: the call may have failed half-way (connection reset or timeout mid-ticket,
//!   HTTP 5xx, 429). Retried with backoff; counted by the circuit breaker.
//! - **Permanent**: retrying cannot help (refused by the protocol, HTTP 4xx other than 429,
//!   invalid data). Goes straight to the dead letters with its reason.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    Waiting,
    Transient,
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Waiting => "waiting",
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        [FailureClass::Waiting, FailureClass::Transient, FailureClass::Permanent].into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
