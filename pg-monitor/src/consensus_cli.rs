//! `pg-monitor consensus`: the command-line contract of the N-node mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use pg_monitor::consensus::decide::Policy;
use pg_monitor::consensus::switchover::{self, Outcome};
use pg_monitor::consensus::{self, check_timings, ConsensusConfig};
use pg_monitor::effects::PgCtl;
use pgcore::duration::parse_positive_duration;
use pgcore::etcd::{Etcd, EtcdSettings};
use pgcore::{logln, ConnectOptions, Endpoint};

/// Automatic failover for N PostgreSQL nodes on etcd: one leader, elected
/// through the store, takes writes; the others stream from it.
///
/// Runs beside each node (under monit). Every --loop-wait it keeps its lease
/// in the store alive and reads the scope's keys (/postgres/<scope>/...),
/// all within --retry-timeout, asks the local node its status, and:
///
///   1. Holding the `leader` key: the local node is the primary. A replica
///      is promoted; a primary refusing writes takes them again; commits
///      wait for --synchronous-count standbys (fewer while fewer stream,
///      published in the `sync` key); a `switchover` key naming another
///      member hands the key over. A local server that is gone gives the
///      key up at once; one that does not answer for 3 checks is stopped
///      first.
///   2. Another member holds it: a local replica streams from it
///      (primary_conninfo, reloaded); a local primary refuses writes and
///      runs --rejoin-cmd, which restarts it as the leader's replica, as
///      does a replica that has not streamed for --rejoin-after.
///   3. Nobody holds it: the member takes it, and promotes, only if no
///      member's server takes writes, none is ahead of it (timeline, then
///      WAL), its replayed WAL is within --max-lag-bytes of the leader's
///      last position it saw, and with --synchronous-count k it compared
///      itself with at least N - k members. The store lets one create it.
///   4. The store unreachable for --retry-timeout: a primary refuses
///      writes. A watchdog does the same if a stuck check lets the last
///      renewal age past --loop-wait + 2 × --retry-timeout.
///
/// The rule: --loop-wait + 2 × --retry-timeout ≤ --ttl, so a leader cut off
/// from the store refuses writes before its key expires and another member
/// can take it (Patroni's loop_wait + 2 × retry_timeout ≤ ttl). A `pause`
/// key stops every promotion and demotion (maintenance); a --pause-file
/// does so for this member. A primary under another leader refuses writes
/// even then.
///
/// SIGTERM while leading: the node refuses writes first (its key outlives
/// the process by up to --ttl; the next monitor adopts it).
///
/// Exit codes:
///   0  stopped by SIGTERM / SIGINT
///   1  internal error (pidfile, another monitor running, certificates)
///   2  usage error
///
/// Environment: PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in libpq),
/// PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY (TLS to the members, as
/// libpq's), PGPASSWORD, PGPASSFILE. A password is never taken from a flag.
#[derive(Parser, Debug)]
#[command(name = "consensus", verbatim_doc_comment)]
pub struct Consensus {
    /// This member's name, as in --member and the store's keys.
    #[arg(long)]
    pub name: String,

    /// The local node, HOST:PORT; a host starting with / is a Unix socket directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub local: Endpoint,

    /// Every member of the cluster, this one included: NAME=HOST:PORT, where
    /// the others reach its PostgreSQL (repeatable).
    #[arg(long = "member", value_name = "NAME=HOST:PORT", value_parser = parse_member, required = true)]
    pub members: Vec<(String, Endpoint)>,

    #[command(flatten)]
    pub store: StoreFlags,

    /// How long the leader key outlives the leader's last renewal (whole seconds).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub ttl: Duration,

    /// Time between checks.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub loop_wait: Duration,

    /// Bound on each check's calls to the store (all members tried in turn).
    #[arg(long, default_value = "4s", value_parser = parse_positive_duration)]
    pub retry_timeout: Duration,

    /// User for the local node [default: the operating system user].
    #[arg(long, short = 'U', env = "PGUSER")]
    pub user: Option<String>,

    /// User for the other members' servers and for streaming from the
    /// leader, e.g. the replication role [default: --user].
    #[arg(long)]
    pub member_user: Option<String>,

    /// Database on every node [default: the user name].
    #[arg(long, short = 'd', env = "PGDATABASE")]
    pub dbname: Option<String>,

    /// libpq password file [default: PGPASSFILE, else ~/.pgpass]; also
    /// named in a primary_conninfo this program writes.
    #[arg(long)]
    pub passfile: Option<PathBuf>,

    /// Bound on each question to a node (connect, authenticate, query).
    #[arg(long, env = "PGCONNECT_TIMEOUT", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Never take the leader key with replayed WAL more than this many bytes
    /// behind the leader's last position this replica saw.
    #[arg(long, value_name = "BYTES")]
    pub max_lag_bytes: Option<u64>,

    /// Commits wait for this many standbys (synchronous_standby_names =
    /// 'ANY k (*)'), fewer while fewer stream; 0: asynchronous.
    #[arg(long, default_value_t = 0)]
    pub synchronous_count: u32,

    /// Command run with /bin/sh -c when another member leads and this node
    /// is a primary, e.g. 'monit restart postgres'.
    #[arg(long = "rejoin-cmd", value_name = "COMMAND")]
    pub rejoin_command: Option<String>,

    /// A replica that has not streamed from the leader for this long runs
    /// --rejoin-cmd (at most that often): its WAL may have diverged from the
    /// leader's, which only a pg_rewind at its restart mends.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub rejoin_after: Duration,

    /// Command run with /bin/sh -c each time this member has become the
    /// primary, e.g. the provisioning of users and databases.
    #[arg(long = "on-leader-cmd", value_name = "COMMAND")]
    pub on_leader_command: Option<String>,

    /// While this file exists, this member neither promotes nor demotes
    /// (maintenance of this node); repeatable. A `pause` key in the store
    /// pauses every member.
    #[arg(long = "pause-file", value_name = "PATH")]
    pub pause_files: Vec<PathBuf>,

    /// While this file exists, this node is about to stop (BOSH's drain
    /// made it): it takes no leader key and runs no --rejoin-cmd, whose
    /// restart would race the stop; its next start rejoins anyway.
    #[arg(long, value_name = "PATH")]
    pub draining_file: Option<PathBuf>,

    /// While this member leads with a renewed key, this file holds the time
    /// (Unix milliseconds) until which its node may take writes: the
    /// renewal's deadline, rewritten at each renewal and removed when the
    /// member stops leading. `pg-role-check serve --leader-lease` answers
    /// /primary only while that time lies ahead, so that haproxy stops
    /// sending writes to a primary whose monitor was killed.
    #[arg(long, value_name = "PATH")]
    pub lease_file: Option<PathBuf>,

    /// Bound on the rejoin and on-leader commands.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub command_timeout: Duration,

    /// pg_ctl, for the fallback promotion (needs --data-dir).
    #[arg(long, value_name = "PATH", requires = "data_dir")]
    pub pg_ctl: Option<PathBuf>,

    /// The local data directory: for the pg_ctl fallback, and to stop a
    /// server too hung to refuse writes. Needs --pg-ctl.
    #[arg(long, value_name = "PATH", requires = "pg_ctl")]
    pub data_dir: Option<PathBuf>,

    /// Bound on a promotion, and on a switchover's wait for its target.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub promote_timeout: Duration,

    /// Written with our pid at start, removed on exit.
    #[arg(long)]
    pub pidfile: Option<PathBuf>,
}

/// Where the store is, and the cluster's keys in it.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreFlags {
    /// The cluster's name in the store: its keys are /postgres/<scope>/...
    #[arg(long)]
    pub scope: String,

    /// An etcd member's client endpoint, HOST:PORT (repeatable).
    #[arg(long = "store", value_name = "HOST:PORT", required = true)]
    pub endpoints: Vec<String>,

    /// The CA of the etcd members' certificates (the only one trusted).
    #[arg(long, value_name = "PATH")]
    pub store_ca: PathBuf,

    /// The client certificate and key for etcd.
    #[arg(long, value_name = "PATH")]
    pub store_cert: PathBuf,

    #[arg(long, value_name = "PATH")]
    pub store_key: PathBuf,
}

impl StoreFlags {
    fn settings(&self, timeout: Duration) -> EtcdSettings {
        EtcdSettings {
            endpoints: self.endpoints.clone(),
            ca: self.store_ca.clone(),
            certificate: self.store_cert.clone(),
            private_key: self.store_key.clone(),
            timeout,
        }
    }
}

fn parse_member(text: &str) -> Result<(String, Endpoint), String> {
    let (name, endpoint) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAME=HOST:PORT"))?;
    if name.is_empty() || name.contains('/') {
        return Err(format!("'{name}' is not a member name (not empty, no '/')"));
    }
    Ok((name.to_string(), endpoint.parse()?))
}

pub fn main(cli: Consensus) -> ExitCode {
    let config = config(cli).unwrap_or_else(|message| {
        Consensus::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit()
    });
    match consensus::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            logln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The flags, checked; an error names the flag at fault.
fn config(cli: Consensus) -> Result<ConsensusConfig, String> {
    check_timings(cli.ttl, cli.loop_wait, cli.retry_timeout)?;
    let mut names = BTreeMap::new();
    for (name, endpoint) in &cli.members {
        if names.insert(name.clone(), endpoint.clone()).is_some() {
            return Err(format!("--member {name} is given twice"));
        }
    }
    if !names.contains_key(&cli.name) {
        return Err(format!(
            "--name {} is not among the --member names: list every member, this one included",
            cli.name
        ));
    }
    let size = names.len();
    if cli.synchronous_count as usize >= size {
        return Err(format!(
            "--synchronous-count {} needs more standbys than the {} other member(s)",
            cli.synchronous_count,
            size - 1
        ));
    }
    let application = "pg-monitor";
    let mut local = ConnectOptions::new(
        cli.local.clone(),
        cli.user.clone(),
        cli.dbname.clone(),
        cli.connect_timeout,
    )
    .with_application_name(application);
    if let Some(warning) = local.resolve_password(cli.passfile.clone()) {
        logln!("warning: {warning}; connecting to the local node without a password");
    }
    let member_user = cli
        .member_user
        .clone()
        .unwrap_or_else(|| local.user.clone());
    let mut members = BTreeMap::new();
    for (name, endpoint) in names.into_iter().filter(|(name, _)| *name != cli.name) {
        let mut options = ConnectOptions::new(
            endpoint,
            Some(member_user.clone()),
            cli.dbname.clone(),
            cli.connect_timeout,
        )
        .with_application_name(application);
        if let Some(warning) = options.resolve_password(cli.passfile.clone()) {
            logln!("warning: {warning}; connecting to {name} without a password");
        }
        members.insert(name, options);
    }
    let pg_ctl = match (cli.pg_ctl, cli.data_dir) {
        (Some(path), Some(data_dir)) => Some(PgCtl { path, data_dir }),
        _ => None,
    };
    Ok(ConsensusConfig {
        policy: Policy {
            name: cli.name,
            members: size,
            max_lag_bytes: cli.max_lag_bytes,
            sync_count: cli.synchronous_count,
            rejoin_after: cli.rejoin_after,
        },
        local,
        members,
        store: cli
            .store
            .settings(cli.retry_timeout.min(cli.connect_timeout)),
        scope: cli.store.scope,
        ttl: cli.ttl,
        loop_wait: cli.loop_wait,
        retry_timeout: cli.retry_timeout,
        rejoin_command: cli.rejoin_command,
        command_timeout: cli.command_timeout,
        pg_ctl,
        promote_timeout: cli.promote_timeout,
        pidfile: cli.pidfile,
        pause_files: cli.pause_files,
        draining_file: cli.draining_file,
        lease_file: cli.lease_file,
        on_leader_command: cli.on_leader_command,
        replication_user: member_user,
        passfile: cli.passfile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_name_equals_address() {
        let (name, endpoint) = parse_member("postgres-1=10.0.0.3:6432").unwrap();
        assert_eq!(
            (name.as_str(), endpoint.to_string().as_str()),
            ("postgres-1", "10.0.0.3:6432")
        );
        assert!(parse_member("10.0.0.3:6432").is_err());
        assert!(parse_member("=10.0.0.3:6432").is_err());
    }
}

/// Hand the leadership of an N-node cluster (pg-monitor consensus) to
/// another member, through the store: a planned switchover.
///
/// Writes the scope's `switchover` key and waits, up to --wait, for the
/// leader key to name another member. The leader's monitor does the rest:
/// it checks that the target streams, refuses writes, waits until the target
/// has received all its WAL, and names it in the leader key; the target
/// promotes, the old leader rejoins as its replica. Past --wait the request
/// is withdrawn and the leader takes writes again.
///
/// Exit codes:
///   0  another member leads now (printed), or --if-leader named a member
///      that does not lead (nothing to do)
///   1  no member leads, or the leader did not hand over within --wait
///   2  usage error
///   3  the store could not be reached
#[derive(Parser, Debug)]
#[command(name = "consensus-switchover", verbatim_doc_comment)]
pub struct ConsensusSwitchover {
    #[command(flatten)]
    pub store: StoreFlags,

    /// The member to hand over to, or `any`: the streaming replica with the most WAL.
    #[arg(long, default_value = "any")]
    pub to: String,

    /// Only if this member leads; otherwise exit 0 with nothing done (a
    /// drain script's way: every node asks, only the leader hands over).
    #[arg(long, value_name = "NAME")]
    pub if_leader: Option<String>,

    /// How long to wait for another member to lead.
    #[arg(long, default_value = "120s", value_parser = parse_positive_duration)]
    pub wait: Duration,

    /// Bound on each call to the store.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

pub fn switchover_main(cli: ConsensusSwitchover) -> ExitCode {
    let mut etcd = match Etcd::new(cli.store.settings(cli.timeout)) {
        Ok(etcd) => etcd,
        Err(err) => {
            logln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let outcome = switchover::run(
        &mut etcd,
        &cli.store.scope,
        &cli.to,
        cli.if_leader.as_deref(),
        cli.wait,
        cli.timeout,
    );
    match outcome {
        Ok(Outcome::Done { from, to }) => {
            println!("switchover: {to} leads now (was {from})");
            ExitCode::SUCCESS
        }
        Ok(Outcome::NotLeader { leader }) => {
            println!(
                "switchover: nothing to do: {} leads, not {}",
                leader.as_deref().unwrap_or("no member"),
                cli.if_leader.as_deref().unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::NoLeader) => {
            println!("switchover: no member leads: nothing to hand over");
            ExitCode::FAILURE
        }
        Ok(Outcome::TimedOut { leader }) => {
            println!(
                "switchover: {leader} did not hand over within {} s (its monitor's log says why); the request was withdrawn",
                cli.wait.as_secs()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("switchover: the store could not be reached: {err}");
            ExitCode::from(3)
        }
    }
}
