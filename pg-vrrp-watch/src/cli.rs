//! The command-line contract of `pg-vrrp-watch`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use probe::duration::parse_positive_duration;

/// keepalived track script: is this node's haproxy alive and able to route?
///
/// Exits 0 only while the process named in --pidfile is alive and is haproxy
/// (a stale pidfile whose pid was reused by another program does not count),
/// and, with --stats-socket, while the write backend has at least one server
/// UP. keepalived runs it every advert interval or two and lowers this node's
/// priority (or gives up the VIP) while it fails, so the VIP moves to the
/// node whose haproxy can still route writes.
///
/// Exit codes:
///   0  haproxy is alive (and the backend has a server UP)
///   1  it is not; the reason is logged on stderr
///   2  usage error
///
/// Nothing is printed on success, so keepalived's logs stay quiet.
#[derive(Parser, Debug)]
#[command(name = "pg-vrrp-watch", version, verbatim_doc_comment)]
pub struct Cli {
    /// haproxy's pidfile.
    #[arg(long, default_value = "/var/vcap/sys/run/vip/haproxy.pid")]
    pub pidfile: PathBuf,

    /// The process name the pid must have (from /proc/PID/comm).
    #[arg(long, default_value = "haproxy")]
    pub process_name: String,

    /// haproxy's stats socket (a `stats socket` in its global section); when
    /// given, the write backend must have a server UP.
    #[arg(long)]
    pub stats_socket: Option<PathBuf>,

    /// The write backend whose servers are counted.
    #[arg(long, default_value = "postgres")]
    pub backend: String,

    /// Bound on talking to the stats socket: seconds, or 250ms / 2s.
    #[arg(long, default_value = "1", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}
