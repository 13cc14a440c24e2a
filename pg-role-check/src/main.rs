//! `pg-role-check`: the role probe, for haproxy, scripts and operators.

mod check;
mod cli;
mod serve;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use check::{asks_for_none, Expectation, Seen, UNDETERMINED};
use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use pgcore::{logln, Client, ConnectOptions, Endpoint, FailureKind, Report, RetryPolicy};

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcore::log::init("pg-role-check");
    match &cli.command {
        Some(Command::Serve(args)) => serve::run(args),
        None => probe(&cli),
    }
}

/// The probe: one answer, or a bounded wait for one, as an exit code.
fn probe(cli: &Cli) -> ExitCode {
    let endpoint = match target_endpoint(cli) {
        Ok(endpoint) => endpoint,
        Err(message) => usage_error(&message),
    };
    let expectation = match Expectation::from_cli(cli) {
        Ok(expectation) => expectation,
        Err(message) => usage_error(message),
    };

    let options = cli.connection.options(endpoint);
    let client = match Client::new() {
        Ok(client) => client,
        Err(err) => {
            logln!("error: cannot start the probe runtime: {err}");
            return ExitCode::from(UNDETERMINED);
        }
    };
    let probe = Probe {
        client: &client,
        options: &options,
        expectation: &expectation,
        json: cli.json,
        retry: RetryPolicy::attempts(cli.retries, cli.retry_interval),
    };
    let outcome = match cli.wait {
        Some(wait) => probe.until_it_holds(wait, cli.retry_interval),
        None => probe.once(Duration::ZERO),
    };

    if cli.json {
        match serde_json::to_string(&outcome.report) {
            Ok(json) => println!("{json}"),
            Err(err) => logln!("error: cannot encode the report as JSON: {err}"),
        }
    } else {
        println!("{}", probe.line(&outcome));
    }
    ExitCode::from(outcome.code)
}

/// One probe of the node, judged against the expectation.
struct Probe<'a> {
    client: &'a Client,
    options: &'a ConnectOptions,
    expectation: &'a Expectation,
    json: bool,
    retry: RetryPolicy,
}

/// What a probe found and the exit code it makes.
struct Outcome {
    report: Report,
    seen: Seen,
    code: u8,
}

impl Probe<'_> {
    /// One probe; `asynchronous_for`: how long the primary had asked for no
    /// synchronous standby before it, should it still.
    fn once(&self, asynchronous_for: Duration) -> Outcome {
        let detail = self.expectation.detail(self.json);
        let report = self.client.probe(self.options, detail, &self.retry);
        // Looked at after the probe: a file written meanwhile counts at once.
        let ready = self
            .expectation
            .ready_file
            .as_deref()
            .is_none_or(Path::exists);
        let seen = Seen {
            ready,
            asynchronous_for: if asks_for_none(&report.status) {
                asynchronous_for
            } else {
                Duration::ZERO
            },
        };
        let code = self.expectation.exit_code(&report, seen);
        Outcome { report, seen, code }
    }

    fn line(&self, outcome: &Outcome) -> String {
        self.expectation
            .line(&self.options.endpoint, &outcome.report, outcome.seen.ready)
    }

    /// Probes `interval` apart until the expectation holds or `wait` has
    /// passed, logging each change of answer: what a post-start script waits
    /// for, bounded. A refused login ends it: waiting cannot change that.
    fn until_it_holds(&self, wait: Duration, interval: Duration) -> Outcome {
        let started = Instant::now();
        let mut last_state = None;
        // Since when the primary has asked for no synchronous standby, as
        // far as the probes saw.
        let mut asynchronous_since: Option<Instant> = None;
        loop {
            let asynchronous_for = asynchronous_since.map_or(Duration::ZERO, |at| at.elapsed());
            let outcome = self.once(asynchronous_for);
            asynchronous_since = if asks_for_none(&outcome.report.status) {
                asynchronous_since.or(Some(Instant::now()))
            } else {
                None
            };
            let waited = started.elapsed();
            let state =
                self.expectation
                    .state(&self.options.endpoint, &outcome.report, outcome.seen.ready);
            if outcome.code == 0 {
                if last_state.is_some() {
                    logln!("{state}: as expected after {:.1} s", waited.as_secs_f64());
                }
                return outcome;
            }
            let rejected = outcome
                .report
                .error
                .as_ref()
                .is_some_and(|failure| failure.kind == FailureKind::Rejected);
            if rejected || waited >= wait {
                logln!(
                    "gave up after {:.1} s waiting for {} to be {}: {state}",
                    waited.as_secs_f64(),
                    self.options.endpoint,
                    self.expectation
                );
                return outcome;
            }
            if last_state.as_ref() != Some(&state) {
                logln!(
                    "waiting up to {:.1} s for {} to be {}: {state}",
                    wait.saturating_sub(waited).as_secs_f64(),
                    self.options.endpoint,
                    self.expectation
                );
                last_state = Some(state);
            }
            std::thread::sleep(interval.min(wait - waited));
        }
    }
}

/// The node to probe: haproxy's `<server_addr> <server_port>` when given,
/// else --host / --port.
fn target_endpoint(cli: &Cli) -> Result<Endpoint, String> {
    match cli.haproxy_args.as_slice() {
        [] => Ok(cli.connection.endpoint()),
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
