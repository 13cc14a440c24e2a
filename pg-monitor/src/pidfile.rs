//! The process contract monit relies on: a pidfile while we run, and
//! SIGTERM / SIGINT ending the loop at once, except in the middle of fencing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The pid file: written when the monitor starts, removed when it ends.
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

impl Pidfile {
    /// Writes our pid (atomically: temp file, then rename). Refuses when the
    /// file names another live pg-monitor: two monitors on one node would
    /// both promote and fence.
    pub fn create(path: &Path) -> anyhow::Result<Pidfile> {
        let pid = std::process::id();
        if let Some(other) = read_pid(path).filter(|&other| other != pid) {
            if is_monitor(other) {
                bail!(
                    "pidfile {} names pid {other}, a running pg-monitor: refusing to start a \
                     second monitor for this node (nothing was changed)",
                    path.display()
                );
            }
        }
        write_atomically(path, format!("{pid}\n").as_bytes())
            .with_context(|| format!("cannot write the pidfile {}", path.display()))?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only our own: a successor may already have written its pid.
        if read_pid(&self.path) == Some(self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_monitor(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim() == "pg-monitor")
        .unwrap_or(false)
}

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

/// Writes `contents` to `path` through a temporary file renamed over it, so
/// a reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp.{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = fs::File::create(&temp)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
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

    #[test]
    fn the_pidfile_holds_our_pid_and_is_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("pg-monitor-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("monitor.pid");
        let pidfile = Pidfile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(pidfile);
        assert!(!path.exists(), "the pidfile should be gone");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_pidfile_is_replaced() {
        let dir = std::env::temp_dir().join(format!("pg-monitor-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("monitor.pid");
        // Pid 1 is alive but is not a pg-monitor.
        fs::write(&path, "1\n").unwrap();
        let pidfile = Pidfile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(pidfile);
        fs::remove_dir_all(&dir).unwrap();
    }
}
