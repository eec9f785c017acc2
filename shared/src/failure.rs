//! The failure vocabulary both services use (issue 11): every failure is one of three classes,
//! and the class, not the error's type, decides what happens next.
//!
//! - **Waiting**: the peer is not ready or not reachable before anything was sent (a printer
//!   offline or out of paper, wix-print down, no internet). Waits; never uses an attempt or a
//!   try, never counts for a circuit breaker.
//! - **Transient**: something went wrong mid-call and may work next time (connection reset or
//!   timeout mid-request, 5xx, 429). Retried with backoff; counts for the breaker.
//! - **Permanent**: the peer looked at the request and refused it for good (4xx other than
//!   429, invalid data). Not retried: a dead letter or a visible error with its reason.

/// What a failure means for the caller.
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
}
