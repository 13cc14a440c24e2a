//! The command-line contract of `pg-monitor`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use probe::duration::parse_positive_duration;
use probe::Endpoint;

/// Automatic failover for a two-node PostgreSQL HA pair, with split-brain fencing.
///
/// Runs beside each node of the pair (under monit). Every --interval it asks
/// the local node and the peer which role they play:
///
///   1. Until the local postgres answers, it only waits (logging every ~10 s),
///      so a replica still being cloned is never promoted.
///   2. Local primary: if the peer is a primary too (split-brain), it logs,
///      waits ~2 s so the peer's monitor sees it too, runs every --fence-cmd
///      in order and exits 0.
///   3. Local replica: once the peer has not been a primary through --retries
///      consecutive checks, it promotes the local node (pg_promote(), else
///      pg_ctl promote) and goes on as in 2.
///   4. Both replicas: the node with more replayed WAL promotes; a tie goes
///      to the lower BOSH index.
///
/// Guards: --pause-file, --max-lag-bytes, --witness, --synchronous (see
/// each). A peer that answers but rejects the login is never taken for
/// gone, and neither is a primary the local replica still streams from.
///
/// Exit codes:
///   0  stopped by SIGTERM / SIGINT, or fenced
///   1  internal error (pidfile, another monitor running, runtime)
///   2  usage error
///
/// Environment: PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in libpq),
/// PGPASSWORD, PGPASSFILE. A password is never taken from a flag.
#[derive(Parser, Debug)]
#[command(name = "pg-monitor", version, verbatim_doc_comment)]
pub struct Cli {
    /// The local node, HOST:PORT; a host starting with / is a Unix socket directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub local: Endpoint,

    /// The other node of the pair, HOST:PORT.
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
    /// (at most --interval): a dead primary is confirmed quickly, while a
    /// primary the replica still streams from is never counted as gone.
    #[arg(long, default_value = "250ms", value_parser = parse_positive_duration)]
    pub retry_interval: Duration,

    /// Written with our pid at start, removed on exit.
    #[arg(long)]
    pub pidfile: Option<PathBuf>,

    /// Command run with /bin/sh -c to fence this node (repeatable, run in
    /// order), e.g. 'monit stop postgres'. Put a command that stops the
    /// monitor itself last.
    #[arg(long = "fence-cmd", value_name = "COMMAND")]
    pub fence_commands: Vec<String>,

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
    /// primary reaching neither its peer nor a majority for
    /// --isolation-timeout fences itself.
    #[arg(long = "witness", value_name = "HOST:PORT")]
    pub witnesses: Vec<Endpoint>,

    /// How long a primary may be cut off from its peer and most witnesses
    /// before it fences itself.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, requires = "witnesses")]
    pub isolation_timeout: Duration,

    /// Manage synchronous_standby_names on the primary: `on` keeps commits
    /// synchronous while the replica streams and degrades (logged) when it is
    /// gone; `strict` never degrades. A replica then promotes only if it was
    /// synchronous when last seen, or --max-lag-bytes allows it.
    #[arg(long, value_enum, default_value_t = Synchronous::Off)]
    pub synchronous: Synchronous,

    /// pg_ctl for the fallback promotion when pg_promote() fails (needs --data-dir).
    #[arg(long, value_name = "PATH", requires = "data_dir")]
    pub pg_ctl: Option<PathBuf>,

    /// The local data directory, for the pg_ctl fallback (needs --pg-ctl).
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
