//! A flag that SIGTERM, SIGINT and SIGHUP raise, for long waits and running
//! children to check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set when SIGTERM, SIGINT or SIGHUP arrives, so long waits and children stop
/// cleanly (a half-made clone is removed) instead of dying mid-way.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag raised by SIGTERM, SIGINT and SIGHUP.
    pub fn on_signals() -> std::io::Result<Cancel> {
        let cancel = Cancel::default();
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(signal, Arc::clone(&cancel.0))?;
        }
        Ok(cancel)
    }

    /// Raises the flag as a signal would.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps up to `duration`, waking early when cancelled.
    pub fn sleep(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.is_set() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}
