//! `pg-role-check serve`: the role check as a resident HTTP endpoint for
//! haproxy's `option httpchk`, answering from one held connection instead
//! of a process and a connection (with its authentication) per check.
//!
//! Threads: `--workers` threads each accept on the shared listener and
//! answer one request per connection ([`worker`]), sharing the held
//! connection and its queries ([`prober`]); the main thread waits
//! for SIGTERM or SIGINT. The parts that decide are pure: [`http`] parses,
//! [`judge`] maps a path and the node's status to a code, [`metrics`]
//! renders.

mod http;
mod judge;
mod metrics;
mod monitor;
mod prober;
mod worker;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use pgcore::{logln, Client};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::ServeArgs;
use metrics::Metrics;
use monitor::MonitorFile;
use prober::Prober;
use worker::Endpoint;

/// Shown in `pg_stat_activity`, so the held connection is told apart from
/// the probes'.
const APPLICATION_NAME: &str = "pg-role-check serve";

/// Runs until SIGTERM or SIGINT (exit 0); exit 1 when it cannot start.
pub fn run(args: &ServeArgs) -> ExitCode {
    match start(args) {
        Ok(signals) => wait_for_signal(signals),
        Err(message) => {
            logln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Binds, starts the prober and the workers, and logs that it listens.
fn start(args: &ServeArgs) -> Result<Signals, String> {
    // Before anything else: a SIGTERM right after the start must end it.
    let signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|err| format!("cannot install signal handlers: {err}"))?;
    let listener = TcpListener::bind(args.listen)
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let options = args
        .connection
        .options(args.connection.endpoint())
        .with_application_name(APPLICATION_NAME);
    let node = options.endpoint.clone();
    let client = Client::new().map_err(|err| format!("cannot start the query runtime: {err}"))?;
    let metrics = Arc::new(Metrics::default());
    let prober = Prober::start(client, options, Arc::clone(&metrics));
    let endpoint = Arc::new(Endpoint {
        prober,
        metrics,
        monitor: args.monitor_state.clone().map(MonitorFile::new),
        fence_record: args.fence_record.clone(),
        leader_lease: args.leader_lease.clone(),
        request_timeout: args.request_timeout,
    });
    let listener = Arc::new(listener);
    for number in 0..args.workers {
        let (endpoint, listener) = (Arc::clone(&endpoint), Arc::clone(&listener));
        thread::Builder::new()
            .name(format!("worker-{number}"))
            .spawn(move || endpoint.work(&listener))
            .map_err(|err| format!("cannot start worker threads: {err}"))?;
    }
    logln!(
        "listening on {} for {node} ({} workers)",
        args.listen,
        args.workers
    );
    Ok(signals)
}

fn wait_for_signal(mut signals: Signals) -> ExitCode {
    if let Some(signal) = signals.forever().next() {
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        logln!("stopping on {name}");
    }
    // Returning ends the workers and the prober with the process; the held
    // connection closes with it.
    ExitCode::SUCCESS
}
