//! systemd notifications (`Type=notify`). Without `NOTIFY_SOCKET` (docker, a shell) every call
//! is a no-op. Tests set `NOTIFY_SOCKET` to their own socket and use READY=1 as the readiness
//! signal, so this is the one place readiness is announced.

use sd_notify::NotifyState;

/// Announces that listeners are bound and the service is serving.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Announces a drain in progress.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}
