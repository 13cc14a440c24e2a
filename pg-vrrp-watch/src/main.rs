//! `pg-vrrp-watch`: keepalived's track script for this node's haproxy.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::Cli;
use pg_vrrp_watch::{check_backend, check_process, Unhealthy};
use pgcore::logln;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcore::log::init("pg-vrrp-watch");
    match check(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            logln!("{reason}");
            ExitCode::from(1)
        }
    }
}

fn check(cli: &Cli) -> Result<(), Unhealthy> {
    check_process(&cli.pidfile, &cli.process_name)?;
    if let Some(socket) = &cli.stats_socket {
        check_backend(socket, &cli.backend, cli.timeout)?;
    }
    Ok(())
}
