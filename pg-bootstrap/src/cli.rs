//! The command-line contract of `pg-bootstrap`.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use pgcore::duration::{parse_duration, parse_positive_duration};
use pgcore::target::{parse_host, parse_port};

use pg_bootstrap::prepare::PrepareConfig;
use pg_bootstrap::provision::ProvisionConfig;

/// Prepare a PostgreSQL node's data directory before postgres starts, and
/// provision the primary after it started.
///
///   pg-bootstrap prepare ...   decide init / clone / rejoin / resume, and do it
///   pg-bootstrap provision ... users, databases, extensions, replication role
///
/// Exit codes (both subcommands):
///   0  done (or, with --dry-run, decided / planned)
///   1  an action failed; the message says what was left in which state
///   2  usage error: a flag, a file or the spec is wrong; nothing was changed
///   3  refused: no safe decision, or a server it needed did not answer;
///      nothing was changed
///
/// Logs go to stderr, one line per event; nothing secret is ever logged or
/// put on a command line.
#[derive(Parser, Debug)]
#[command(name = "pg-bootstrap", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Prepare(PrepareArgs),
    Provision(ProvisionArgs),
}

/// Decide how this node boots and make its data directory ready (run before postgres starts).
///
/// Prints one line on stdout before acting,
///   decision: <init-primary | clone-from HOST:PORT | rejoin HOST:PORT |
///              resume-primary | resume-replica | stand-by | start-standalone |
///              refuse> (<reason>)
/// or, with --json, one JSON object when done.
///
/// Decision table:
///   no data dir, replication off                  -> init-primary (initdb, checksums on)
///   no data dir, bootstrap node                   -> ask peers for --grace: a primary
///                                                    -> clone-from it, none -> init-primary
///   no data dir, other node                       -> wait up to --clone-wait for a primary
///                                                    -> clone-from it, none -> refuse
///   data dir, replication on                      -> ask peers for --grace:
///       a primary of the same cluster             -> rejoin (pg_rewind; a clone if impossible)
///       a primary of another cluster              -> refuse
///       none, data dir was a primary              -> resume-primary; with --consensus,
///                                                    stand-by (standby.signal: the
///                                                    monitor promotes it or points it
///                                                    at the leader)
///       none, data dir was a replica              -> resume-replica (promotion is pg-monitor's)
///   data dir, replication off                     -> start-standalone
///   postgres running on the data dir              -> refuse
///
/// A clone is made in <data-dir>.staging and swapped in only when complete;
/// the old data dir is kept until then. A failure leaves it as it was.
///
/// Exit codes: 0 ready, 1 an action failed, 2 usage error, 3 refused.
///
/// Durations (SECONDS) take 5, 1.5, 2s or 250ms, at most 86400 (one day).
///
/// <data-dir>.lock is locked while prepare works. A run that stops before
/// changing anything (a refusal, an interruption) removes the lock file and
/// directories it created for it; a dry run takes no lock and creates nothing.
///
/// Environment: each flag also reads the variable named in its help. TLS to
/// the peers as libpq's: PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY. They
/// apply to the checks, to pg_basebackup and pg_rewind, and are written into
/// primary_conninfo, so that the WAL receiver streams the same way.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct PrepareArgs {
    /// The data directory (created or replaced only through a staged copy).
    #[arg(long, env = "PGDATA", value_name = "PATH")]
    pub data_dir: PathBuf,

    /// Directory with initdb, pg_basebackup, pg_rewind and postgres.
    #[arg(long, env = "PG_BOOTSTRAP_PG_BIN", value_name = "DIR")]
    pub pg_bin: PathBuf,

    /// Owner of the data; when run as root, every PostgreSQL program runs as this user (required as root).
    #[arg(long, env = "PG_BOOTSTRAP_RUN_AS", value_name = "USER")]
    pub run_as: Option<String>,

    /// This node's BOSH index (reported in logs and --json).
    #[arg(long, env = "PG_BOOTSTRAP_INDEX", value_name = "N")]
    pub index: Option<u32>,

    /// This node is BOSH's bootstrap node: without data, it may initialise a new cluster.
    #[arg(long, env = "PG_BOOTSTRAP_BOOTSTRAP", value_name = "BOOL", num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub bootstrap: bool,

    /// Another node, HOST:PORT or HOST (then --port), an IPv6 address as [ADDRESS]:PORT;
    /// repeatable, or comma-separated in the variable.
    #[arg(
        long = "peer",
        env = "PG_BOOTSTRAP_PEERS",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,

    /// The port every node's postgres listens on (the default for peers without one).
    #[arg(long, env = "PGPORT", default_value = "5432", value_parser = parse_port)]
    pub port: u16,

    /// Streaming replication is on: peers are asked before deciding.
    #[arg(long, env = "PG_BOOTSTRAP_REPLICATION", value_name = "BOOL", num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub replication: bool,

    /// Failover goes through a consensus store (pg-monitor consensus): a former
    /// primary that finds no primary peer starts as a standby (stand-by)
    /// instead of resuming as primary; only the leader key's holder is one.
    #[arg(long, env = "PG_BOOTSTRAP_CONSENSUS", value_name = "BOOL", num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub consensus: bool,

    /// How long to ask the peers (once a second) whether one is primary before resuming.
    #[arg(long, env = "PG_BOOTSTRAP_GRACE", value_name = "SECONDS", default_value = "15", value_parser = parse_duration)]
    pub grace: Duration,

    /// How long a node without data waits for a primary to clone from.
    #[arg(long, env = "PG_BOOTSTRAP_CLONE_WAIT", value_name = "SECONDS", default_value = "300", value_parser = parse_duration)]
    pub clone_wait: Duration,

    /// Bound on each question to a peer (connect, authenticate, answer).
    #[arg(long, env = "PGCONNECT_TIMEOUT", value_name = "SECONDS", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Attempts for one-off questions to a peer (its identity, its checkpoint); timeouts and resets are retried.
    #[arg(long, env = "PG_BOOTSTRAP_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,

    /// The replication user: streams, clones, rewinds and probes the peers.
    #[arg(
        long,
        env = "PG_BOOTSTRAP_REPLICATION_USER",
        value_name = "NAME",
        default_value = "replication"
    )]
    pub replication_user: String,

    /// File holding the replication user's password (never a flag). Required with --replication.
    #[arg(
        long,
        env = "PG_BOOTSTRAP_REPLICATION_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub replication_password_file: Option<PathBuf>,

    /// libpq password file prepare writes (0600, owned by --run-as) for the WAL receiver,
    /// pg_basebackup and pg_rewind [default: pgpass beside the data dir].
    #[arg(long, env = "PG_BOOTSTRAP_PASSFILE", value_name = "PATH")]
    pub passfile: Option<PathBuf>,

    /// Locale of a new cluster (encoding UTF8).
    #[arg(
        long,
        env = "PG_BOOTSTRAP_INITDB_LOCALE",
        value_name = "LOCALE",
        default_value = "C.UTF-8"
    )]
    pub initdb_locale: String,

    /// Limit a clone's transfer rate (pg_basebackup --max-rate: kB/s, or with k or M suffix).
    #[arg(long, env = "PG_BOOTSTRAP_CLONE_MAX_RATE", value_name = "RATE", value_parser = parse_rate)]
    pub clone_max_rate: Option<String>,

    /// Stop initdb, pg_basebackup or pg_rewind when it reads and writes nothing for this long.
    #[arg(long, env = "PG_BOOTSTRAP_STALL_TIMEOUT", value_name = "SECONDS", default_value = "300", value_parser = parse_positive_duration)]
    pub stall_timeout: Duration,

    /// Print one JSON object (decision, reason, observed state, method, error) instead of the line.
    #[arg(long)]
    pub json: bool,

    /// Decide and print, change nothing, take no lock (the peers are still asked).
    #[arg(long)]
    pub dry_run: bool,
}

impl PrepareArgs {
    pub fn config(&self) -> PrepareConfig {
        PrepareConfig {
            data_dir: self.data_dir.clone(),
            pg_bin: self.pg_bin.clone(),
            run_as: self.run_as.clone(),
            index: self.index,
            bootstrap: self.bootstrap,
            peers: self
                .peers
                .iter()
                .filter(|p| !p.trim().is_empty())
                .cloned()
                .collect(),
            port: self.port,
            replication: self.replication,
            consensus: self.consensus,
            grace: self.grace,
            clone_wait: self.clone_wait,
            connect_timeout: self.connect_timeout,
            retries: self.retries,
            replication_user: self.replication_user.clone(),
            replication_password_file: self.replication_password_file.clone(),
            passfile: self.passfile.clone(),
            initdb_locale: self.initdb_locale.clone(),
            clone_max_rate: self.clone_max_rate.clone(),
            stall_timeout: self.stall_timeout,
            dry_run: self.dry_run,
        }
    }
}

/// pg_basebackup's rate: a number, optionally followed by k or M.
fn parse_rate(text: &str) -> Result<String, String> {
    let digits = text.strip_suffix(['k', 'M']).unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(text.to_string()),
        _ => Err(format!(
            "'{text}' is not a rate (examples: 32768, 512k, 20M)"
        )),
    }
}

/// Create or update roles, databases and extensions on the primary (run after postgres started).
///
/// The spec (YAML, keep it 0600):
///   users:                      # each gets a database of its own name, owned by it
///     - username: alice
///       password: "..."
///       admin: true             # SUPERUSER; otherwise LOGIN without special rights
///   databases:
///     - name: app
///       users: [alice]          # granted ALL on the database and its public schema
///       extensions: [pgcrypto]  # CREATE EXTENSION IF NOT EXISTS
///   replication:                # REPLICATION LOGIN, pg_monitor, pg_rewind's functions
///     username: replication
///     password: "..."
///
/// Unknown keys are errors. Passwords are sent as SCRAM-SHA-256 verifiers made
/// here, never in cleartext. Changes only what differs: a second run changes
/// nothing. On a replica it prints that it skips, and exits 0.
///
/// Prints one line on stdout (or one JSON object with --json).
///
/// With --check it only reads and checks the spec, connecting to nothing:
/// what a BOSH pre-start runs, so that a mistake fails the deploy before
/// the node stops serving.
///
/// Exit codes: 0 done or skipped (with --check: the spec is valid), 1 a
/// statement failed, 2 usage or spec error (nothing changed), 3 the server
/// did not accept us within --wait.
///
/// The spec must be a regular file of at most 1 MiB, nested at most 64 levels.
/// Durations (SECONDS) take 5, 1.5, 2s or 250ms, at most 86400 (one day).
///
/// Environment: PGHOST, PGPORT, PGUSER, PGDATABASE, PGCONNECT_TIMEOUT,
/// PGPASSWORD, PGPASSFILE (as in libpq), PG_BOOTSTRAP_SPEC, PG_BOOTSTRAP_WAIT.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ProvisionArgs {
    /// The provisioning spec (YAML).
    #[arg(long, env = "PG_BOOTSTRAP_SPEC", value_name = "FILE")]
    pub spec: PathBuf,

    /// Host name or address; a value starting with / is a Unix socket directory.
    #[arg(long, env = "PGHOST", default_value = pgcore::target::DEFAULT_SOCKET_DIR, value_parser = parse_host)]
    pub host: String,

    /// Port.
    #[arg(long, short = 'p', env = "PGPORT", default_value = "5432", value_parser = parse_port)]
    pub port: u16,

    /// Superuser to connect as [default: the operating system user].
    #[arg(long, short = 'U', env = "PGUSER")]
    pub user: Option<String>,

    /// Database to connect to.
    #[arg(long, short = 'd', env = "PGDATABASE", default_value = "postgres")]
    pub dbname: String,

    /// Bound on each connection attempt.
    #[arg(long, env = "PGCONNECT_TIMEOUT", value_name = "SECONDS", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// libpq password file [default: PGPASSFILE, else ~/.pgpass].
    #[arg(long, value_name = "PATH")]
    pub passfile: Option<PathBuf>,

    /// How long to wait for the server to accept connections (it may still be starting).
    #[arg(long, env = "PG_BOOTSTRAP_WAIT", value_name = "SECONDS", default_value = "30", value_parser = parse_duration)]
    pub wait: Duration,

    /// Print one JSON object (server, skipped, changes) instead of the line.
    #[arg(long)]
    pub json: bool,

    /// Plan and print, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Read and check the spec only: connect to nothing, change nothing.
    #[arg(long, conflicts_with_all = ["dry_run", "json"])]
    pub check: bool,
}

impl ProvisionArgs {
    pub fn config(&self) -> ProvisionConfig {
        ProvisionConfig {
            spec: self.spec.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            dbname: self.dbname.clone(),
            connect_timeout: self.connect_timeout,
            passfile: self.passfile.clone(),
            wait: self.wait,
            dry_run: self.dry_run,
        }
    }
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
    fn boolean_flags_take_an_optional_value_for_templates() {
        let parse = |args: &[&str]| {
            let mut all = vec![
                "pg-bootstrap",
                "prepare",
                "--data-dir",
                "/d",
                "--pg-bin",
                "/b",
            ];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).unwrap().command {
                Command::Prepare(args) => (args.bootstrap, args.replication),
                _ => unreachable!(),
            }
        };
        assert_eq!(parse(&[]), (false, false));
        assert_eq!(parse(&["--bootstrap", "--replication"]), (true, true));
        assert_eq!(
            parse(&["--bootstrap=false", "--replication=true"]),
            (false, true)
        );
    }

    #[test]
    fn rates_are_checked() {
        assert!(parse_rate("512k").is_ok());
        assert!(parse_rate("20M").is_ok());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
    }
}
