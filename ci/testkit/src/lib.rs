//! Test kit: throwaway PostgreSQL clusters and network faults for real tests.
//!
//! ```no_run
//! let primary = testkit::Node::primary();
//! let replica = testkit::Node::replica_of(&primary);
//! replica.wait_streaming();
//! primary.execute("CREATE TABLE t (id int)");
//! ```
//!
//! Every node lives in its own temp dir on a free loopback port and is stopped
//! (immediate shutdown) and deleted when dropped, panics included. When the
//! tests run as root, PostgreSQL runs as an unprivileged user (`PGTEST_USER`,
//! default `vcap`), because it refuses to run as root.

mod etcd;
mod haproxy;
mod node;
mod os;
mod process;
mod proxy;
mod server;
mod tls;

pub use etcd::{etcd_bin, EtcdCluster, EtcdMember};
pub use haproxy::{haproxy_bin, keepalived_bin, Haproxy};
pub use node::{Node, NodeOptions, SUPERUSER};
pub use os::{
    chown_to_user, clean_command, command_as_user, free_port, pg_bin, run_as_user, PgBin, RunAs,
    INITDB_OPTIONS, LIBPQ_VARIABLES,
};
pub use process::LoggedProcess;
pub use proxy::{FaultProxy, ProxyMode};
pub use server::{process_alive, Server, SERVER_TIMEOUT};
pub use tls::{bosh_bin, CertFiles, Certificates};

/// The client the kit's servers hand out ([`Server::connect`]), for a test
/// that connects elsewhere, e.g. through a haproxy in front of its nodes.
pub use postgres;

use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it holds, panicking with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` to its end, its stdin empty and its output captured,
/// within `bound`; past it, kills it (by pid) and panics naming `what`.
pub fn output_within(
    mut command: std::process::Command,
    bound: Duration,
    what: &str,
) -> std::process::Output {
    use std::process::Stdio;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    let pid = child.id();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match received.recv_timeout(bound) {
        Ok(output) => output.unwrap_or_else(|err| panic!("cannot wait for {what}: {err}")),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} still ran after {bound:?}");
        }
    }
}
