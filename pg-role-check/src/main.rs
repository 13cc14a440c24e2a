//! `pg-role-check`: the role probe, for haproxy, scripts and operators.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Expect};
use pgcore::{logln, Client, ConnectOptions, Detail, Endpoint, Report, RetryPolicy, Role};

/// Exit code when the role could not be determined.
const UNDETERMINED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcore::log::init("pg-role-check");
    let endpoint = match target_endpoint(&cli) {
        Ok(endpoint) => endpoint,
        Err(message) => usage_error(&message),
    };
    if cli.streaming && cli.expect == Expect::Primary {
        usage_error(
            "--streaming applies to replicas: use it with --expect replica or --expect any",
        );
    }

    let mut options = ConnectOptions::new(
        endpoint,
        cli.user.clone(),
        cli.dbname.clone(),
        cli.connect_timeout,
    );
    if let Some(warning) = options.resolve_password(cli.passfile.clone()) {
        logln!("warning: {warning}; connecting without a password");
    }
    let client = match Client::new() {
        Ok(client) => client,
        Err(err) => {
            logln!("error: cannot start the probe runtime: {err}");
            return ExitCode::from(UNDETERMINED);
        }
    };
    let detail = if cli.json {
        Detail::Full
    } else if cli.streaming {
        Detail::Streaming
    } else {
        Detail::Role
    };
    let retry = RetryPolicy::attempts(cli.retries, cli.retry_interval);
    let report = client.probe(&options, detail, &retry);

    if cli.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(err) => logln!("error: cannot encode the report as JSON: {err}"),
        }
    } else {
        println!("{}", summary_line(&options.endpoint, &report));
    }
    ExitCode::from(exit_code(cli.expect, cli.streaming, &report))
}

/// The node to probe: haproxy's `<server_addr> <server_port>` when given,
/// else --host / --port.
fn target_endpoint(cli: &Cli) -> Result<Endpoint, String> {
    match cli.haproxy_args.as_slice() {
        [] => Ok(Endpoint {
            host: cli.host.clone(),
            port: cli.port,
        }),
        [_proxy_addr, _proxy_port, server_addr, server_port] => Ok(Endpoint {
            host: pgcore::target::parse_host(server_addr)
                .map_err(|err| format!("haproxy server_addr: {err}"))?,
            port: pgcore::target::parse_port(server_port)
                .map_err(|err| format!("haproxy server_port {err}"))?,
        }),
        other => Err(format!(
            "expected no arguments or haproxy's four (<proxy_addr> <proxy_port> <server_addr> <server_port>), got {}",
            other.len()
        )),
    }
}

fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// 0 expected role, 1 another role, 3 undetermined (see `--help`).
fn exit_code(expect: Expect, streaming_required: bool, report: &Report) -> u8 {
    let status = &report.status;
    match status.role {
        Role::Unreachable => UNDETERMINED,
        Role::Starting => 1,
        // A primary refusing writes (its monitor's lease lapsed, a
        // split-brain) is not the primary haproxy may send writes to.
        Role::Primary => u8::from(
            expect == Expect::Replica
                || (expect == Expect::Primary && status.read_only == Some(true)),
        ),
        Role::Replica => {
            let stale = streaming_required && status.wal_receiver_streaming != Some(true);
            u8::from(expect == Expect::Primary || stale)
        }
    }
}

/// One human-readable line; its first word is the role.
fn summary_line(endpoint: &Endpoint, report: &Report) -> String {
    let millis = report.latency.as_secs_f64() * 1000.0;
    let status = &report.status;
    match (&report.error, status.role) {
        (Some(failure), role) => {
            let attempts = match report.attempts {
                1 => "1 attempt".to_string(),
                n => format!("{n} attempts"),
            };
            // The failure message already names the endpoint.
            format!("{role} after {attempts}: {failure}")
        }
        (None, Role::Replica) => {
            let streaming = match status.wal_receiver_streaming {
                Some(true) => ", streaming",
                Some(false) => ", not streaming",
                None => "",
            };
            format!("replica {endpoint}{streaming} ({millis:.1} ms)")
        }
        (None, Role::Primary) if status.read_only == Some(true) => {
            format!("primary {endpoint}, refusing writes ({millis:.1} ms)")
        }
        (None, role) => format!("{role} {endpoint} ({millis:.1} ms)"),
    }
}
