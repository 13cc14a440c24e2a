//! `pg-monitor`: the failover loop, for monit; `pg-monitor recover`, the
//! operator's way back for a node it fenced; `pg-monitor switchover`, the
//! planned hand-over of the primary role.

mod cli;
mod consensus_cli;
mod nodes;
mod recover;
mod switchover;

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cli::{Cli, Synchronous, DEFAULT_RETRY_INTERVAL};
use pg_monitor::decide::{Policy, SyncMode};
use pg_monitor::effects::PgCtl;
use pg_monitor::{Config, Exit};
use pgcore::{logln, ConnectOptions, Endpoint};

fn main() -> ExitCode {
    let matches = command().get_matches();
    pgcore::log::init("pg-monitor");
    match matches.subcommand() {
        Some(("recover", matches)) => return recover::main(from_matches(matches)),
        Some(("switchover", matches)) => return switchover::main(from_matches(matches)),
        Some(("consensus", matches)) => return consensus_cli::main(from_matches(matches)),
        Some(("consensus-switchover", matches)) => {
            return consensus_cli::switchover_main(from_matches(matches))
        }
        _ => {}
    }
    let cli: Cli = from_matches(&matches);
    let config = config(cli).unwrap_or_else(|message| usage_error(&message));
    match pg_monitor::run(config) {
        Ok(Exit::Stopped(_)) | Ok(Exit::Fenced) => ExitCode::SUCCESS,
        Err(err) => {
            logln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The monitor's flags, as always, with `recover` and `switchover` beside
/// them: subcommands that need none of the monitor's required flags.
fn command() -> clap::Command {
    Cli::command()
        .subcommand(recover::Recover::command())
        .subcommand(switchover::Switchover::command())
        .subcommand(consensus_cli::Consensus::command())
        .subcommand(consensus_cli::ConsensusSwitchover::command())
        .subcommand_negates_reqs(true)
        .args_conflicts_with_subcommands(true)
        .disable_help_subcommand(true)
}

fn from_matches<T: FromArgMatches>(matches: &ArgMatches) -> T {
    T::from_arg_matches(matches).unwrap_or_else(|err| err.exit())
}

/// Turns the flags into the configuration; an error names the flag at fault.
fn config(cli: Cli) -> Result<Config, String> {
    let peer_index = cli.peer_index.unwrap_or(if cli.index == 0 { 1 } else { 0 });
    if peer_index == cli.index {
        return Err(format!(
            "--index and --peer-index are both {peer_index}: the two nodes need different indexes"
        ));
    }
    check_nodes_differ(&cli.local, &cli.peer)?;
    let retry_interval = retry_interval(cli.retry_interval, cli.interval)?;
    let application = "pg-monitor";
    let mut local = ConnectOptions::new(
        cli.local.clone(),
        cli.user.clone(),
        cli.dbname.clone(),
        cli.connect_timeout,
    )
    .with_application_name(application);
    let peer_user = cli.peer_user.clone().or_else(|| Some(local.user.clone()));
    let mut peer = ConnectOptions::new(
        cli.peer.clone(),
        peer_user,
        cli.dbname.clone(),
        cli.connect_timeout,
    )
    .with_application_name(application);
    for (options, which) in [(&mut local, "local node"), (&mut peer, "peer")] {
        if let Some(warning) = options.resolve_password(cli.passfile.clone()) {
            logln!("warning: {warning}; connecting to the {which} without a password");
        }
    }
    let policy = Policy {
        index: cli.index,
        peer_index,
        retries: cli.retries,
        lease: cli.isolation_timeout,
        promote_margin: cli.interval + PROMOTE_MARGIN_BEYOND_INTERVAL,
        max_lag_bytes: cli.max_lag_bytes,
        witnesses: cli.witnesses.len(),
        replica_silence: cli.replica_silence,
        synchronous: match cli.synchronous {
            Synchronous::Off => SyncMode::Off,
            Synchronous::On => SyncMode::On,
            Synchronous::Strict => SyncMode::Strict,
        },
    };
    let pg_ctl = match (cli.pg_ctl, cli.data_dir) {
        (Some(path), Some(data_dir)) => Some(PgCtl { path, data_dir }),
        _ => None,
    };
    Ok(Config {
        policy,
        local,
        peer,
        interval: cli.interval,
        retry_interval,
        witnesses: cli.witnesses,
        pause_files: cli.pause_files,
        fence_commands: cli.fence_commands,
        rejoin_command: cli.rejoin_command,
        fence_timeout: cli.fence_timeout,
        fence_record: cli.fence_record,
        pg_ctl,
        promote_timeout: cli.promote_timeout,
        pidfile: cli.pidfile,
        state_file: cli.state_file,
        haproxy: cli.haproxy,
    })
}

/// The peer must be another node: asking the local node twice would find a
/// primary "on both nodes" and fence a healthy primary as a split-brain.
fn check_nodes_differ(local: &Endpoint, peer: &Endpoint) -> Result<(), String> {
    if local.host.eq_ignore_ascii_case(&peer.host) && local.port == peer.port {
        return Err(format!(
            "--local and --peer are both {local}: the peer must be the other node of the pair"
        ));
    }
    Ok(())
}

/// The pause between checks while failures are counted: it is meant to
/// confirm a dead primary sooner, so one longer than --interval is refused
/// rather than quietly shortened. Not given, it is the default or --interval,
/// whichever is shorter.
fn retry_interval(given: Option<Duration>, interval: Duration) -> Result<Duration, String> {
    match given {
        Some(retry_interval) if retry_interval > interval => Err(format!(
            "--retry-interval {retry_interval:?} is longer than --interval {interval:?}: it must be at most --interval"
        )),
        Some(retry_interval) => Ok(retry_interval),
        None => Ok(DEFAULT_RETRY_INTERVAL.min(interval)),
    }
}

/// The margin beyond one interval a replica adds to the lease before it
/// promotes over a primary it cannot see: the primary's watchdog needs up
/// to a second to refuse writes or stop its server; one more to spare.
const PROMOTE_MARGIN_BEYOND_INTERVAL: Duration = Duration::from_secs(2);

fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap()
    }

    #[test]
    fn the_peer_must_be_another_node() {
        let local = endpoint("10.0.0.2:6432");
        assert!(check_nodes_differ(&local, &endpoint("10.0.0.3:6432")).is_ok());
        assert!(check_nodes_differ(&local, &endpoint("10.0.0.2:5432")).is_ok());
        let error = check_nodes_differ(&local, &endpoint("10.0.0.2:6432")).unwrap_err();
        assert!(
            error.contains("--local and --peer are both 10.0.0.2:6432"),
            "{error}"
        );
        assert!(check_nodes_differ(&endpoint("DB-0:1"), &endpoint("db-0:1")).is_err());
    }

    #[test]
    fn a_retry_interval_longer_than_the_interval_is_refused_not_shortened() {
        let second = Duration::from_secs(1);
        assert_eq!(retry_interval(Some(second / 4), second), Ok(second / 4));
        assert_eq!(retry_interval(Some(second), second), Ok(second));
        let error = retry_interval(Some(second * 2), second).unwrap_err();
        assert!(
            error.contains("--retry-interval 2s is longer than --interval 1s"),
            "{error}"
        );
    }

    #[test]
    fn the_default_retry_interval_follows_a_shorter_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(retry_interval(None, second), Ok(DEFAULT_RETRY_INTERVAL));
        assert_eq!(retry_interval(None, second / 10), Ok(second / 10));
    }
}
