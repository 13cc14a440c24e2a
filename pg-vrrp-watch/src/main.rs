//! `pg-vrrp-watch`: keepalived's track script for this node's haproxy.

mod cli;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cli::Cli;
use pg_vrrp_watch::{check_backend, check_not_draining, check_process, Unhealthy};
use pgcore::logln;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcore::log::init("pg-vrrp-watch");
    let checked = match cli.wait {
        Some(wait) => check_until_it_passes(&cli, wait),
        None => check(&cli),
    };
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            logln!("{reason}");
            ExitCode::from(1)
        }
    }
}

/// How often `--wait` checks again: haproxy marks a server UP within its
/// own check interval, so a faster pace would only add load.
const WAIT_INTERVAL: Duration = Duration::from_millis(250);

/// Checks until the check passes or `wait` has passed, logging each new
/// reason once; the error is the last check's.
fn check_until_it_passes(cli: &Cli, wait: Duration) -> Result<(), Unhealthy> {
    let started = Instant::now();
    let mut last_reason = None;
    loop {
        let reason = match check(cli) {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        let waited = started.elapsed();
        if waited >= wait {
            return Err(Unhealthy(format!(
                "gave up after {:.1} s: {reason}",
                waited.as_secs_f64()
            )));
        }
        if last_reason.as_ref() != Some(&reason) {
            logln!(
                "waiting up to {:.1} s: {reason}",
                (wait - waited).as_secs_f64()
            );
            last_reason = Some(reason);
        }
        std::thread::sleep(WAIT_INTERVAL.min(wait - waited));
    }
}

fn check(cli: &Cli) -> Result<(), Unhealthy> {
    if let Some(drain_file) = &cli.drain_file {
        check_not_draining(drain_file)?;
    }
    check_process(&cli.pidfile, &cli.process_name)?;
    if let Some(socket) = &cli.stats_socket {
        check_backend(socket, &cli.backend, cli.timeout)?;
    }
    Ok(())
}
