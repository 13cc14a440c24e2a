//! The pidfile monit watches: written while the monitor runs, and never
//! taken over from another live monitor of the same node.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use pgcore::os::{alive_named, write_atomically};

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
            if alive_named(other, &["pg-monitor"]) {
                bail!(
                    "pidfile {} names pid {other}, a running pg-monitor: refusing to start a \
                     second monitor for this node (nothing was changed)",
                    path.display()
                );
            }
        }
        write_atomically(path, format!("{pid}\n").as_bytes(), 0o644, None)
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

#[cfg(test)]
mod tests {
    use super::*;

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
