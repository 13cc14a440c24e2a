//! A real haproxy for tests, from a config the test writes; where the
//! haproxy and keepalived binaries are.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    /// A haproxy in front of a pair on loopback, as the release's vip job
    /// names it: backends `postgres` (writes, to the first server UP) and
    /// `readonly`, servers `node0` (`primary`) and `node1` (`replica`),
    /// each checked only once an hour: only what a test (or a program
    /// under test) says on the admin socket `{dir}/haproxy.sock` moves
    /// them. It starts as checks would have left it: node1 down for
    /// writes, node0 down for reads. Returns it and its write port.
    pub fn for_pair(primary: u16, replica: u16) -> (Haproxy, u16) {
        let port = crate::free_port();
        let haproxy = Haproxy::start(&format!(
            "global\n\
             \x20   stats socket {{dir}}/haproxy.sock mode 600 level admin\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\
             \x20   option redispatch\n\
             \x20   retries 2\n\
             \x20   default-server inter 1h fastinter 1h downinter 1h fall 1 rise 1 on-marked-down shutdown-sessions\n\
             frontend postgres\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend postgres\n\
             backend postgres\n\
             \x20   balance first\n\
             \x20   server node0 127.0.0.1:{primary} check\n\
             \x20   server node1 127.0.0.1:{replica} check\n\
             backend readonly\n\
             \x20   server node0 127.0.0.1:{primary} check\n\
             \x20   server node1 127.0.0.1:{replica} check\n"
        ));
        for command in [
            "set server postgres/node1 health down",
            "set server readonly/node0 health down",
        ] {
            pgcore::haproxy::ask(&haproxy.socket(), command, Duration::from_secs(2)).unwrap();
        }
        (haproxy, port)
    }

    /// The admin socket of an instance started by [`Haproxy::for_pair`].
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("haproxy.sock")
    }

    /// Each server's status in each backend, as `show stat` has it:
    /// `backend/server STATUS`.
    pub fn view(&self) -> Vec<String> {
        let csv =
            pgcore::haproxy::ask(&self.socket(), "show stat", Duration::from_secs(2)).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
        let (backend, server, status) = (column("pxname"), column("svname"), column("status"));
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|fields| fields.len() > status && fields[server].starts_with("node"))
            .map(|fields| format!("{}/{} {}", fields[backend], fields[server], fields[status]))
            .collect()
    }

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
