//! A real haproxy for tests, from a config the test writes; where the
//! haproxy and keepalived binaries are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::server::process_alive;

/// The haproxy binary: `HAPROXY_BIN` (ci/test sets the release's package), else
/// Debian's /usr/sbin/haproxy.
pub fn haproxy_bin() -> PathBuf {
    std::env::var_os("HAPROXY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"))
}

/// The keepalived binary: `KEEPALIVED_BIN` (ci/test sets the release's
/// package), else Debian's /usr/sbin/keepalived.
pub fn keepalived_bin() -> PathBuf {
    std::env::var_os("KEEPALIVED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/keepalived"))
}

/// A daemonized haproxy running `config`; killed (SIGTERM, by pid) when dropped.
///
/// The config may use `{dir}`, replaced by the instance's temp dir, for
/// sockets and files.
pub struct Haproxy {
    dir: TempDir,
    pid: u32,
}

impl Haproxy {
    pub fn start(config: &str) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("haproxy.")
            .tempdir()
            .expect("cannot create a temp dir");
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("haproxy.cfg");
        fs::write(&config_path, config).expect("cannot write haproxy.cfg");
        let pidfile = dir.path().join("haproxy.pid");
        let output = Command::new(haproxy_bin())
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .arg("-p")
            .arg(&pidfile)
            .output()
            .expect("cannot run haproxy (install it or set HAPROXY_BIN)");
        assert!(
            output.status.success(),
            "haproxy failed to start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .expect("haproxy wrote no pidfile");
        Haproxy { dir, pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn pidfile(&self) -> PathBuf {
        self.dir.path().join("haproxy.pid")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops haproxy (SIGTERM) and waits until it is gone.
    pub fn stop(&self) {
        if process_alive(self.pid) {
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
            crate::wait_for(
                "haproxy to exit",
                std::time::Duration::from_secs(10),
                || !process_alive(self.pid),
            );
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if process_alive(self.pid) {
            let _ = Command::new("kill").arg(self.pid.to_string()).status();
        }
    }
}
