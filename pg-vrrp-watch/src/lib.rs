//! Checks behind `pg-vrrp-watch`: haproxy's process, and its write backend.
//!
//! The original release's keepalived check ran `killall -0 haproxy`, which
//! also succeeds for a haproxy of another node sharing the PID space, and for
//! a haproxy that runs but can route nowhere. We check the pid from haproxy's
//! own pidfile, its name, and optionally what haproxy itself reports.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use pgcore::os::process_info;

/// Why the node should not hold the VIP. Displayed as the reason on stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Unhealthy(pub String);

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The node is not being drained: `drain_file` does not exist (its
/// presence is the whole signal; what it holds does not matter).
pub fn check_not_draining(drain_file: &Path) -> Result<(), Unhealthy> {
    match fs::symlink_metadata(drain_file) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(_) => Err(Unhealthy(format!(
            "{} exists: this node is draining for a stop, and hands the VIP over",
            drain_file.display()
        ))),
        Err(err) => Err(Unhealthy(format!(
            "cannot tell whether {} exists: {err}",
            drain_file.display()
        ))),
    }
}

/// The most of a pidfile that is read: a pid and a line break need a few
/// bytes, and keepalived waits for this script.
const MAX_PIDFILE_BYTES: u64 = 4096;

/// The pid in `pidfile` is alive and its command name is `process_name`.
pub fn check_process(pidfile: &Path, process_name: &str) -> Result<u32, Unhealthy> {
    let text = read_pidfile(pidfile)
        .map_err(|err| Unhealthy(format!("cannot read pidfile {}: {err}", pidfile.display())))?;
    let pid: u32 = text
        .split_whitespace()
        .next()
        .and_then(|word| word.parse().ok())
        .ok_or_else(|| Unhealthy(format!("pidfile {} holds no pid", pidfile.display())))?;
    let not_running = |detail: &str| {
        Unhealthy(format!(
            "{process_name} (pid {pid} from {}) is not running{detail}",
            pidfile.display()
        ))
    };
    let process = process_info(pid).ok_or_else(|| not_running(""))?;
    if process.is_zombie() {
        return Err(not_running(" (exited, not yet reaped)"));
    }
    let name = process.name;
    if name != process_name {
        return Err(Unhealthy(format!(
            "pid {pid} from {} is {name:?}, not {process_name:?} (stale pidfile)",
            pidfile.display()
        )));
    }
    Ok(pid)
}

/// The start of a regular file: a device (`/dev/zero`) would be read
/// without end, and a FIFO would block keepalived's script on open.
fn read_pidfile(pidfile: &Path) -> std::io::Result<String> {
    if !fs::metadata(pidfile)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    fs::File::open(pidfile)?
        .take(MAX_PIDFILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Asks haproxy's stats socket for `show stat` and requires a server UP in `backend`.
pub fn check_backend(socket: &Path, backend: &str, timeout: Duration) -> Result<usize, Unhealthy> {
    let csv = show_stat(socket, timeout).map_err(|err| {
        Unhealthy(format!(
            "cannot query haproxy stats socket {}: {err}",
            socket.display()
        ))
    })?;
    let servers = servers_of(&csv, backend)
        .ok_or_else(|| Unhealthy(format!("haproxy has no backend {backend:?}")))?;
    let up = servers.iter().filter(|server| server.up).count();
    if up == 0 {
        let states: Vec<String> = servers
            .iter()
            .map(|server| format!("{} {}", server.name, server.status))
            .collect();
        return Err(Unhealthy(format!(
            "no server UP in backend {backend:?} ({})",
            if states.is_empty() {
                "no servers".to_string()
            } else {
                states.join(", ")
            }
        )));
    }
    Ok(up)
}

/// haproxy's `show stat`, all of it within `timeout` (keepalived waits for
/// this script, so a socket that answers a byte at a time must not hold it).
fn show_stat(socket: &Path, timeout: Duration) -> std::io::Result<String> {
    pgcore::haproxy::ask(socket, "show stat", timeout)
}

/// One server row of `show stat`.
#[derive(Debug, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub status: String,
    pub up: bool,
}

/// The servers of `backend` in `show stat` CSV; `None` if the backend is absent.
pub fn servers_of(csv: &str, backend: &str) -> Option<Vec<Server>> {
    let mut lines = csv.lines();
    let header = lines.next()?.trim_start_matches("# ");
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (pxname, svname, status) = (column("pxname")?, column("svname")?, column("status")?);

    let mut found = false;
    let mut servers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.get(pxname) != Some(&backend) {
            continue;
        }
        found = true;
        let name = fields.get(svname).copied().unwrap_or_default();
        if name == "FRONTEND" || name == "BACKEND" {
            continue;
        }
        let state = fields.get(status).copied().unwrap_or_default();
        servers.push(Server {
            name: name.to_string(),
            status: state.to_string(),
            // "UP", and "UP 1/2" while going down: it still routes.
            up: state.starts_with("UP"),
        });
    }
    found.then_some(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Write};

    #[test]
    fn a_stats_socket_that_answers_a_byte_at_a_time_is_given_up_within_the_timeout() {
        let socket = std::env::temp_dir().join(format!("vrrp-watch-drip-{}", std::process::id()));
        let _ = fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            for _ in 0..100 {
                if peer.write_all(b"#").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Each byte comes well within the timeout (the answer would take 5 s):
        // only a bound on the whole answer ends it.
        let answer = show_stat(&socket, Duration::from_millis(300));
        fs::remove_file(&socket).unwrap();
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::TimedOut);
    }

    const SHOW_STAT: &str = "# pxname,svname,qcur,status,weight\n\
        postgres,FRONTEND,,OPEN,\n\
        postgres,node0,0,UP,1\n\
        postgres,node1,0,DOWN,1\n\
        postgres,BACKEND,0,UP,1\n\
        readonly,node0,0,DOWN,1\n\
        readonly,node1,0,MAINT,1\n\
        \n";

    #[test]
    fn servers_are_read_by_column_name() {
        let servers = servers_of(SHOW_STAT, "postgres").unwrap();
        assert_eq!(servers.len(), 2);
        assert!(servers[0].up && servers[0].name == "node0");
        assert!(!servers[1].up);
    }

    #[test]
    fn a_backend_with_no_server_up_has_none_up() {
        let servers = servers_of(SHOW_STAT, "readonly").unwrap();
        assert!(servers.iter().all(|server| !server.up));
    }

    #[test]
    fn an_absent_backend_is_none() {
        assert_eq!(servers_of(SHOW_STAT, "nope"), None);
        assert_eq!(servers_of("", "postgres"), None);
    }

    #[test]
    fn going_down_still_counts_as_up() {
        let csv = "# pxname,svname,status\npostgres,node0,UP 1/2\n";
        assert!(servers_of(csv, "postgres").unwrap()[0].up);
    }
}
