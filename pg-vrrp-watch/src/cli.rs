//! The command-line contract of `pg-vrrp-watch`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pgcore::duration::{parse_duration, parse_positive_duration};

/// keepalived track script: is this node's haproxy alive and able to route?
///
/// Exits 0 only while the process named in --pidfile is alive and is haproxy
/// (a stale pidfile whose pid was reused by another program does not count),
/// with --stats-socket while the write backend has at least one server UP,
/// and with --drain-file while that file does not exist (the vip job's drain
/// makes it, so the VIP moves to the peer before haproxy stops). keepalived runs it every advert interval or two and lowers this node's
/// priority (or gives up the VIP) while it fails, so the VIP moves to the
/// node whose haproxy can still route writes.
///
/// Exit codes:
///   0  haproxy is alive (and the backend has a server UP)
///   1  it is not; the reason is logged on stderr
///   2  usage error
///
/// Nothing is printed on success, so keepalived's logs stay quiet.
///
/// With --wait (a post-start script's bound, not keepalived's use), it checks
/// again every 250 ms until the check passes or the wait is over, logging
/// each new reason once; the exit code is the last check's.
#[derive(Parser, Debug)]
#[command(name = "pg-vrrp-watch", version, verbatim_doc_comment)]
pub struct Cli {
    /// haproxy's pidfile.
    #[arg(long, default_value = "/var/vcap/sys/run/vip/haproxy.pid")]
    pub pidfile: PathBuf,

    /// The process name the pid must have (from /proc/PID/comm: not empty,
    /// at most 15 bytes, as the kernel keeps it).
    #[arg(long, default_value = "haproxy", value_parser = parse_process_name)]
    pub process_name: String,

    /// haproxy's stats socket (a `stats socket` in its global section); when
    /// given, the write backend must have a server UP.
    #[arg(long)]
    pub stats_socket: Option<PathBuf>,

    /// The write backend whose servers are counted.
    #[arg(long, default_value = "postgres", value_parser = parse_backend)]
    pub backend: String,

    /// Bound on the whole exchange with the stats socket: seconds, or 250ms / 2s; at most
    /// 86400 s (one day).
    #[arg(long, default_value = "1", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// While this file exists the check fails: the node is being drained
    /// for a stop, and gives up the VIP while its haproxy still serves.
    #[arg(long)]
    pub drain_file: Option<PathBuf>,

    /// Check again every 250 ms until the check passes or this long has
    /// passed: seconds, or 250ms / 2s; at most 86400 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

/// The longest command name the kernel keeps (TASK_COMM_LEN less its NUL):
/// a longer name could never match /proc/PID/comm.
const MAX_PROCESS_NAME_BYTES: usize = 15;

/// A process name that /proc/PID/comm can hold; an empty one would make every
/// check fail with a reason that hides the real mistake.
fn parse_process_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the process name is empty (haproxy's is `haproxy`)".to_string());
    }
    if text.len() > MAX_PROCESS_NAME_BYTES {
        return Err(format!(
            "'{text}' is {} bytes long; /proc/PID/comm holds at most {MAX_PROCESS_NAME_BYTES}, so it could never match",
            text.len()
        ));
    }
    Ok(text.to_string())
}

/// A backend name: haproxy has no backend without one.
fn parse_backend(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the backend name is empty (the write backend is `postgres`)".to_string());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn process_names_must_fit_proc_comm() {
        assert_eq!(parse_process_name("haproxy"), Ok("haproxy".to_string()));
        assert!(parse_process_name("").unwrap_err().contains("empty"));
        assert!(parse_process_name("  ").unwrap_err().contains("empty"));
        assert!(parse_process_name("haproxy-with-a-long-name")
            .unwrap_err()
            .contains("at most 15"));
    }
}
