//! The command-line contract of `pg-monitor`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pg_monitor::haproxy::HaproxyFlags;
use pgcore::duration::parse_positive_duration;
use pgcore::Endpoint;

/// Automatic failover for a two-node PostgreSQL HA pair: never two primaries
/// taking writes, split-brains settled by evidence.
///
/// Runs beside each node of the pair (under monit). Every --interval it asks
/// the local node and the peer which role they play:
///
///   1. Until the local postgres answers, it only waits (logging every ~10 s),
///      so a replica still being cloned is never promoted.
///   2. Local primary: it takes writes only while it holds its lease, that is
///      while it reached its peer's host (any answer) or a majority of
///      --witness within the last --isolation-timeout; when the lease lapses
///      the node refuses writes (read-only, client sessions ended), and a
///      watchdog stops a local server too hung to be asked (SIGKILL). If the
///      peer is a primary too (split-brain), the one on the older timeline
///      (the one its peer was promoted over) steps down and rejoins
///      (--rejoin-cmd); on equal timelines nothing tells them apart, and
///      both run every --fence-cmd in order and exit 0.
///   3. Local replica: a primary that is positively dead (its host refuses
///      the connection, or PostgreSQL is starting or stopping) is replaced
///      after --retries consecutive checks; one that does not answer at all
///      (a cut link, a hung server) only once it has been unseen for
///      --isolation-timeout plus the margin (--interval + 2 s), when it has
///      stopped taking writes. It promotes (pg_promote(), else pg_ctl
///      promote) and goes on as in 2.
///   4. Both replicas: the node with more replayed WAL promotes; a tie goes
///      to the lower BOSH index.
///
/// Guards: --pause-file, --max-lag-bytes, --witness, --synchronous (see
/// each). A peer that answers but rejects the login is never taken for
/// gone, and neither is a primary the local replica still streams from.
///
/// Durations are seconds (5, 1.5) or 2s / 250ms, at most 86400 s (one day).
///
/// `pg-monitor recover` brings a node that fenced itself back (see
/// pg-monitor recover --help); `pg-monitor switchover` hands the primary role
/// to the replica, as planned (see pg-monitor switchover --help).
///
/// Exit codes:
///   0  stopped by SIGTERM / SIGINT, or fenced
///   1  internal error (pidfile, another monitor running, runtime)
///   2  usage error
///
/// Environment: PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in libpq),
/// PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY (TLS to the peer, as
/// libpq's), PGPASSWORD, PGPASSFILE. A password is never taken from a flag.
#[derive(Parser, Debug)]
#[command(name = "pg-monitor", version, verbatim_doc_comment)]
pub struct Cli {
    /// The local node, HOST:PORT; a host starting with / is a Unix socket directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub local: Endpoint,

    /// The other node of the pair, HOST:PORT (not --local).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Endpoint,

    /// This node's BOSH index (a tie between two replicas goes to the lower index).
    #[arg(long)]
    pub index: u32,

    /// The peer's BOSH index [default: 1 when --index is 0, else 0].
    #[arg(long)]
    pub peer_index: Option<u32>,

    /// User for the local node [default: the operating system user].
    #[arg(long, short = 'U', env = "PGUSER")]
    pub user: Option<String>,

    /// User for the peer, e.g. the replication role [default: --user].
    #[arg(long)]
    pub peer_user: Option<String>,

    /// Database on both nodes [default: the user name].
    #[arg(long, short = 'd', env = "PGDATABASE")]
    pub dbname: Option<String>,

    /// libpq password file for both nodes [default: PGPASSFILE, else ~/.pgpass].
    #[arg(long)]
    pub passfile: Option<PathBuf>,

    /// Bound on each check (connect, authenticate, query): seconds, or 250ms / 2s.
    #[arg(long, env = "PGCONNECT_TIMEOUT", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Consecutive failed peer checks before a replica promotes (the original
    /// release's psql_error_count).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,

    /// Time between checks: seconds, or 250ms / 2s.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Time between checks while a replica counts failed checks of its peer
    /// (at most --interval; longer is refused): a dead primary is confirmed
    /// quickly, while a primary the replica still streams from is never
    /// counted as gone [default: 100ms, or --interval when that is shorter]
    #[arg(long, value_parser = parse_positive_duration)]
    pub retry_interval: Option<Duration>,

    /// Written with our pid at start, removed on exit.
    #[arg(long)]
    pub pidfile: Option<PathBuf>,

    /// Replaced every check (atomically, mode 0644) with one JSON object:
    /// the last decision and how many promotions, write refusals, step-downs
    /// and fences this monitor made, for the health endpoint's metrics
    /// (pg-role-check serve --monitor-state). Nothing secret is in it.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// The local haproxy, told at once when this node is promoted (its
    /// checks would find it a moment later).
    #[command(flatten)]
    pub haproxy: HaproxyFlags,

    /// Command run with /bin/sh -c to fence this node (repeatable, run in
    /// order; not empty), e.g. 'monit stop postgres'. Put a command that
    /// stops the monitor itself last.
    #[arg(long = "fence-cmd", value_name = "COMMAND", value_parser = parse_fence_command)]
    pub fence_commands: Vec<String>,

    /// Before the fence commands run, write why to this file (JSON, see
    /// README), so that an operator finds it on a fenced node; whoever
    /// recovers the node removes it.
    #[arg(long, value_name = "PATH")]
    pub fence_record: Option<PathBuf>,

    /// Bound on each fence command; one still running then is killed.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub fence_timeout: Duration,

    /// While this file exists, never promote or fence (maintenance mode).
    /// Repeatable: any one of the files pauses failover.
    #[arg(long = "pause-file", value_name = "PATH")]
    pub pause_files: Vec<PathBuf>,

    /// Do not promote a replica whose replayed WAL is more than this many
    /// bytes behind the last primary position it saw.
    #[arg(long, value_name = "BYTES")]
    pub max_lag_bytes: Option<u64>,

    /// HOST:PORT reachable by plain TCP, e.g. a gateway or a third VM
    /// (repeatable). A replica promotes only if it reaches a majority; a
    /// primary that reaches a majority keeps its lease even when its peer's
    /// host is gone (without witnesses, only the peer's host renews it).
    #[arg(long = "witness", value_name = "HOST:PORT")]
    pub witnesses: Vec<Endpoint>,

    /// The lease: how long a primary goes on taking writes after it last
    /// reached its peer's host or a majority of witnesses.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub isolation_timeout: Duration,

    /// Command run with /bin/sh -c when this primary is the stale half of a
    /// split-brain, to restart its postgres so that it rejoins the peer as a
    /// replica, e.g. 'monit restart postgres'. Without it, the node keeps
    /// refusing writes until an operator acts.
    #[arg(long = "rejoin-cmd", value_name = "COMMAND", value_parser = parse_fence_command)]
    pub rejoin_command: Option<String>,

    /// With --synchronous on: a synchronous standby that has not replied for
    /// this long counts as gone (a hung standby shows as streaming until
    /// wal_sender_timeout). Set it to at least twice the standby's
    /// wal_receiver_status_interval. Off when not given.
    #[arg(long, value_parser = parse_positive_duration)]
    pub replica_silence: Option<Duration>,

    /// Manage synchronous_standby_names on the primary: `on` keeps commits
    /// synchronous while the replica streams and degrades (logged) when it is
    /// gone; `strict` never degrades. A replica then promotes only if it was
    /// synchronous when last seen, or --max-lag-bytes allows it.
    #[arg(long, value_enum, default_value_t = Synchronous::Off)]
    pub synchronous: Synchronous,

    /// pg_ctl for the fallback promotion when pg_promote() fails (needs --data-dir).
    #[arg(long, value_name = "PATH", requires = "data_dir")]
    pub pg_ctl: Option<PathBuf>,

    /// The local data directory: for the pg_ctl fallback, and for the
    /// watchdog to find the server it must stop (its postmaster.pid).
    /// Needs --pg-ctl.
    #[arg(long, value_name = "PATH", requires = "pg_ctl")]
    pub data_dir: Option<PathBuf>,

    /// Bound on a promotion (pg_promote's wait, and pg_ctl's).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub promote_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    Off,
    On,
    Strict,
}

/// --retry-interval when it is not given (and --interval is not shorter).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A fence command: an empty one would "succeed" without fencing anything,
/// so a split-brain would leave both primaries taking writes.
fn parse_fence_command(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "the fence command is empty: give a command that stops this node, e.g. 'monit stop postgres'"
                .to_string(),
        );
    }
    Ok(text.to_string())
}
