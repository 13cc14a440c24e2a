//! The command-line contract of `pg-role-check`.

use std::path::PathBuf;
use std::time::Duration;

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pgcore::duration::{parse_duration, parse_positive_duration};
use pgcore::target::{parse_host, parse_port};
use pgcore::{logln, ConnectOptions, Endpoint};

/// Is this PostgreSQL node a primary, a replica, starting, or unreachable?
///
/// Connects once (each attempt bounded by --connect-timeout), asks
/// pg_is_in_recovery(), and exits with a code saying whether the node plays
/// the expected role. Prints one line (or one JSON object with --json) on
/// stdout; the first word of the line is the role.
///
/// Exit codes:
///   0  the node plays the expected role
///   1  the node answered in another role (a starting node is never primary,
///      nor is a primary refusing writes, default_transaction_read_only on;
///      with --streaming, a replica that is not streaming; with --writable,
///      --synchronous or --ready-file, a node those do not hold for)
///   2  usage error
///   3  the role could not be determined: nothing listens, authentication was
///      refused, the server's certificate did not verify, or no answer after
///      --retries attempts
///
/// A refused connection, a refused login, a certificate that does not
/// verify and a "starting" answer (SQLSTATE 57P03) are definitive at once;
/// timeouts, resets and failed queries are retried.
///
/// With --wait, the probe is repeated until the expectation holds or the
/// wait is over (a post-start script's bound); the line and the exit code
/// are the last probe's, and each change of answer is logged on stderr.
///
/// haproxy (option external-check) runs its check command as
///   <cmd> <proxy_addr> <proxy_port> <server_addr> <server_port>
/// When these four arguments are given, server_addr and server_port name the
/// node, overriding --host and --port.
///
/// `pg-role-check serve` answers the same question over HTTP from one held
/// connection, for haproxy's option httpchk (see `pg-role-check serve --help`).
///
/// Environment: PGHOST, PGPORT, PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in
/// libpq), PGPASSWORD, PGPASSFILE. A password is never taken from a flag.
/// TLS as libpq's: PGSSLMODE (disable, allow, prefer, require, verify-ca,
/// verify-full; default prefer), PGSSLROOTCERT (the CA file, or `system`),
/// PGSSLCERT and PGSSLKEY (a client certificate). A certificate that does not
/// verify is a refusal (exit 3, at once), and the message says why: "IP
/// address mismatch", "certificate has expired", ...
#[derive(Parser, Debug)]
#[command(
    name = "pg-role-check",
    version,
    verbatim_doc_comment,
    // haproxy's four arguments never name a subcommand: with them, or any
    // flag of the probe, the line is a probe as it always was.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The role that makes the check succeed.
    #[arg(long, value_enum, default_value_t = Expect::Primary)]
    pub expect: Expect,

    /// A replica counts only while its WAL receiver streams from a primary
    /// (a replica cut off from its primary is stale).
    #[arg(long)]
    pub streaming: bool,

    /// A primary counts only while it takes writes (default_transaction_read_only
    /// off), as --expect primary always requires; for --expect any.
    #[arg(long)]
    pub writable: bool,

    /// A primary counts only while a streaming standby is synchronous
    /// (pg_stat_replication sync_state sync or quorum: its commits wait for
    /// one). Needs a superuser or a member of pg_monitor; with --expect
    /// primary or any.
    #[arg(long)]
    pub synchronous: bool,

    /// With --synchronous and --wait: a primary that asks for no synchronous
    /// standby (synchronous_standby_names empty) counts too, once it has
    /// asked for none through this long: its commits wait for nobody (its
    /// monitor runs synchronous off, as while a rolling deploy turns it on).
    /// Long enough for a monitor to ask for the standby it just saw stream.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          requires_all = ["synchronous", "wait"])]
    pub accept_asynchronous_after: Option<Duration>,

    /// The node counts only once this file exists (the postgres job's bin/ctl
    /// writes it when a start has provisioned the node, and removes it when
    /// the next start begins).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Probe again, --retry-interval apart, until the node plays the expected
    /// role or this long has passed (no probe starts after it): seconds, or
    /// 250ms / 2s; at most 86400 s. A refused login ends the wait at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    #[command(flatten)]
    pub connection: Connection,

    /// Attempts in all before giving up (the original release's psql_error_count).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,

    /// Pause between attempts (and, with --wait, between probes): seconds, or
    /// 250ms / 2s; at most 86400 s (one day).
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub retry_interval: Duration,

    /// Print one JSON object with the role, WAL positions, timeline, streaming
    /// state and latency (one heavier query instead of the lean check).
    #[arg(long)]
    pub json: bool,

    /// haproxy's external-check arguments:
    /// <proxy_addr> <proxy_port> <server_addr> <server_port>.
    #[arg(value_name = "HAPROXY_ARGS", num_args = 0..=4, hide = false)]
    pub haproxy_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    Primary,
    Replica,
    /// Either primary or replica: the node is up and serving.
    Any,
}

/// Where and as whom to connect: the probe's and the endpoint's flags alike.
#[derive(Args, Debug)]
pub struct Connection {
    /// Host name or address; a value starting with / is a Unix socket directory.
    #[arg(long, env = "PGHOST", default_value = pgcore::target::DEFAULT_SOCKET_DIR, value_parser = parse_host)]
    pub host: String,

    /// Port.
    #[arg(long, short = 'p', env = "PGPORT", default_value = "5432", value_parser = parse_port)]
    pub port: u16,

    /// User to connect as [default: the operating system user]
    #[arg(long, short = 'U', env = "PGUSER")]
    pub user: Option<String>,

    /// Database to connect to [default: the user name]
    #[arg(long, short = 'd', env = "PGDATABASE")]
    pub dbname: Option<String>,

    /// Bound on each attempt (connect, authenticate, query): seconds, or 250ms / 2s;
    /// at most 86400 s (one day).
    #[arg(long, env = "PGCONNECT_TIMEOUT", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// libpq password file [default: PGPASSFILE, else ~/.pgpass].
    #[arg(long)]
    pub passfile: Option<PathBuf>,
}

impl Connection {
    /// The node --host and --port name.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// Options for `endpoint` with the password from PGPASSWORD or the
    /// passfile; a passfile that cannot be used is logged and skipped, as
    /// libpq does.
    pub fn options(&self, endpoint: Endpoint) -> ConnectOptions {
        let mut options = ConnectOptions::new(
            endpoint,
            self.user.clone(),
            self.dbname.clone(),
            self.connect_timeout,
        );
        if let Some(warning) = options.resolve_password(self.passfile.clone()) {
            logln!("warning: {warning}; connecting without a password");
        }
        options
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Answer haproxy's HTTP health checks (option httpchk) for one node from
    /// one held connection, instead of a process and a connection per check.
    ///
    /// Each request is answered by a query that started after it arrived: the
    /// endpoint queries on each request over the held connection; concurrent
    /// requests share one query; there is no cache, so no stale answer (the
    /// JSON's age_ms is the time since the answering query started). The
    /// connection is opened again when it closes or a query fails; a connect
    /// or query that takes longer than --connect-timeout fails the check
    /// (503, role unreachable), and a request never waits much longer.
    ///
    /// Paths (GET, HEAD or OPTIONS; 200 when it holds, else 503):
    ///   /primary    a primary taking writes (default_transaction_read_only
    ///               off), and no --fence-record file
    ///   /replica    a replica; ?streaming: its WAL receiver streams;
    ///               ?lag=N: its replication lag is known and below N bytes
    ///               (or 16MB, 1GB: kB, MB, GB, TB, 1024-based)
    ///   /read-only  a primary or a replica (?streaming and ?lag apply to a
    ///               replica): the node serves reads
    ///   /health     a primary or a replica: the server answers
    ///   /metrics    Prometheus text format 0.0.4, always 200
    /// The health paths answer one JSON object: the fields of --json, age_ms
    /// and fenced. Other methods: 405; unknown paths: 404; unknown or bad
    /// parameters: 400; a request head over 8 KiB: 431; a request not in by
    /// --request-timeout: 408. One response per connection.
    ///
    /// Exit codes:
    ///   0  stopped by SIGTERM or SIGINT
    ///   1  cannot listen on --listen, or cannot start
    ///   2  usage error
    ///
    /// Logs on stderr only changes: listening, the connection to the node lost
    /// or re-established, the node's role changing.
    ///
    /// On a node: --host /var/vcap/sys/run/postgres -U vcap -d postgres (peer
    /// authentication over the Unix socket, no password).
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to answer on: 127.0.0.1:8008, [::1]:8008, 0.0.0.0:8008.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub connection: Connection,

    /// pg-monitor's state file (its --state-file), shown in /metrics; its
    /// absence is no error.
    #[arg(long, value_name = "PATH")]
    pub monitor_state: Option<PathBuf>,

    /// While this file exists, /primary answers 503: the node's monitor
    /// fenced it.
    #[arg(long, value_name = "PATH")]
    pub fence_record: Option<PathBuf>,

    /// The N-node mode's leader lease (pg-monitor consensus --lease-file):
    /// /primary answers 503 unless this file holds a time still ahead, the
    /// deadline of the leader key's last renewal. A primary whose monitor
    /// died thus stops getting writes through haproxy by the time its key
    /// may expire.
    #[arg(long, value_name = "PATH")]
    pub leader_lease: Option<PathBuf>,

    /// Threads answering requests, each accepting connections in turn: at
    /// most this many requests are read or answered at once.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// A whole request head must arrive within this long, else the
    /// connection is closed (with 408 when part of it came): seconds, or
    /// 250ms / 2s.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
}

/// An IPv4 or IPv6 address and a port other than 0.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    match text.trim().parse::<SocketAddr>() {
        Ok(address) if address.port() != 0 => Ok(address),
        _ => Err(format!(
            "'{text}' is not ADDR:PORT: an IPv4 or IPv6 address and a port (1-65535), \
             e.g. 127.0.0.1:8008 or [::1]:8008"
        )),
    }
}
