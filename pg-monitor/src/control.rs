//! SIGTERM / SIGINT end the loop at once, except in the middle of fencing:
//! the loop and the thread that receives signals agree here on which comes first.

use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Watching,
    Fencing,
    Stopping,
}

/// Shared between the loop and the thread that receives signals, so that a
/// signal never interrupts fencing half-way and fencing never starts after a
/// signal was honoured.
pub struct Control {
    phase: Mutex<Phase>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            phase: Mutex::new(Phase::Watching),
        }
    }
}

impl Control {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The loop asks before fencing: false when a signal already stopped us.
    pub fn begin_fencing(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Stopping {
            return false;
        }
        *phase = Phase::Fencing;
        true
    }

    /// The signal thread asks: false while fencing is under way.
    pub fn stop_unless_fencing(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Fencing {
            return false;
        }
        *phase = Phase::Stopping;
        true
    }

    pub fn stopping(&self) -> bool {
        *self.phase() == Phase::Stopping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_during_fencing_waits_and_fencing_after_a_signal_is_refused() {
        let control = Control::default();
        assert!(control.begin_fencing());
        assert!(!control.stop_unless_fencing());
        let control = Control::default();
        assert!(control.stop_unless_fencing());
        assert!(control.stopping());
        assert!(!control.begin_fencing());
    }
}
