//! What `gatehouse run` tells the service manager (systemd's `Type=notify`): ready once
//! its listeners are bound and the decision log is open, reloading and ready again
//! around each `SIGHUP` (with the reload's result as the unit's status line), stopping
//! when shutdown starts, and alive at half the unit's `WatchdogSec` while the main loop
//! turns, so a wedged process is restarted.
//!
//! With no `NOTIFY_SOCKET` in the environment (run by hand, in a container, in tests that
//! do not ask) every call does nothing. A failed notification is logged once and never
//! stops the proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

static WARNED: AtomicBool = AtomicBool::new(false);

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

/// Listeners bound, log open: requests are served from now on.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has started. `MONOTONIC_USEC` lets a `Type=notify-reload` unit match it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Shutdown has started: no new connections.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing requests in flight"),
    ]);
}

/// Still alive.
pub fn alive() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to say [`alive`]: half the unit's `WatchdogSec`, or never.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
