//! `pg-monitor`: the failover loop, for monit.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Synchronous};
use pg_monitor::decide::{Config, SyncMode};
use pg_monitor::effects::PgCtl;
use pg_monitor::{Exit, Settings};
use probe::{logln, ConnectOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    probe::log::init("pg-monitor");
    let settings = settings(cli).unwrap_or_else(|message| usage_error(&message));
    match pg_monitor::run(settings) {
        Ok(Exit::Stopped(_)) | Ok(Exit::Fenced) => ExitCode::SUCCESS,
        Err(err) => {
            logln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns the flags into settings; an error names the flag at fault.
fn settings(cli: Cli) -> Result<Settings, String> {
    let peer_index = cli.peer_index.unwrap_or(if cli.index == 0 { 1 } else { 0 });
    if peer_index == cli.index {
        return Err(format!(
            "--index and --peer-index are both {peer_index}: the two nodes need different indexes"
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
    let config = Config {
        index: cli.index,
        peer_index,
        retries: cli.retries,
        gone_after: cli.interval * cli.retries,
        max_lag_bytes: cli.max_lag_bytes,
        witnesses: cli.witnesses.len(),
        isolation_timeout: cli.isolation_timeout,
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
    Ok(Settings {
        config,
        local,
        peer,
        interval: cli.interval,
        retry_interval: cli.retry_interval.min(cli.interval),
        witnesses: cli.witnesses,
        pause_files: cli.pause_files,
        fence_commands: cli.fence_commands,
        fence_timeout: cli.fence_timeout,
        pg_ctl,
        promote_timeout: cli.promote_timeout,
        pidfile: cli.pidfile,
    })
}

fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}
