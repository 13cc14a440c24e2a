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

mod haproxy;
mod node;
mod os;
mod proxy;
mod server;

pub use haproxy::{haproxy_bin, keepalived_bin, Haproxy};
pub use node::{Node, NodeOptions, SUPERUSER};
pub use os::{
    chown_to_user, clean_command, command_as_user, free_port, pg_bin, run_as_user, PgBin, RunAs,
    INITDB_OPTIONS, LIBPQ_VARIABLES,
};
pub use proxy::{FaultProxy, ProxyMode};
pub use server::{process_alive, Server, SERVER_TIMEOUT};

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
