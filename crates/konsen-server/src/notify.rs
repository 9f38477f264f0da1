//! Readiness for systemd (`Type=notify` in deploy/systemd/konsen.service):
//! tells the service manager the node is serving, or stopping.
//!
//! Without `NOTIFY_SOCKET` in the environment (started by hand, by a test,
//! by `cargo xtask local`) every function here does nothing. A failure to
//! notify is logged, not fatal: the node serves either way, and systemd
//! reports a unit that never became ready on its own.

use sd_notify::NotifyState;
use tracing::warn;

/// Says the node is ready: call once its listener is bound, so every
/// client and peer connecting from now on is accepted.
pub fn ready() {
    send(NotifyState::Ready);
}

/// Says the node is shutting down: call when shutdown starts.
pub fn stopping() {
    send(NotifyState::Stopping);
}

fn send(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        warn!(
            "cannot notify systemd ({}): {e}",
            std::env::var("NOTIFY_SOCKET").unwrap_or_default()
        );
    }
}
