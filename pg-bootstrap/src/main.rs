//! `pg-bootstrap`: prepare a node's data directory before postgres starts,
//! provision the primary after.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, PrepareArgs, ProvisionArgs};
use pg_bootstrap::cancel::Cancel;
use pg_bootstrap::stop::{Stop, EXIT_FAILED};
use pg_bootstrap::{prepare, provision};
use pgcore::logln;

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcore::log::init("pg-bootstrap");
    match cli.command {
        Command::Prepare(args) => run_prepare(&args),
        Command::Provision(args) => run_provision(&args),
    }
}

fn run_prepare(args: &PrepareArgs) -> ExitCode {
    let cancel = match Cancel::on_signals() {
        Ok(cancel) => cancel,
        Err(err) => {
            logln!("error: cannot install signal handlers: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let json = args.json;
    let outcome = prepare::run(&args.config(), &cancel, &mut |decision| {
        if !json {
            println!("{decision}");
            // Seen before a long clone starts, even when stdout is a pipe.
            let _ = std::io::stdout().flush();
        }
    });
    if let (true, Some(report)) = (json, &outcome.report) {
        print_json(report);
    }
    match (outcome.result, &outcome.report) {
        (Ok(()), Some(report)) => {
            match report.method {
                Some(method) => logln!(
                    "data directory ready ({}, {:.1} s)",
                    serde_json::to_value(method)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    report.seconds
                ),
                None => logln!("dry run: nothing was changed"),
            }
            ExitCode::SUCCESS
        }
        (Ok(()), None) => ExitCode::SUCCESS,
        (Err(stop), _) => fail(&stop),
    }
}

fn run_provision(args: &ProvisionArgs) -> ExitCode {
    let config = args.config();
    let spec = match provision::load_spec(&config) {
        Ok(spec) => spec,
        Err(stop) => return fail(&stop),
    };
    if args.check {
        println!("{}", provision::checked_line(&config.spec, &spec));
        return ExitCode::SUCCESS;
    }
    match provision::run(&config, &spec) {
        Ok(summary) => {
            if args.json {
                print_json(&summary);
            } else {
                println!("{}", summary.line());
            }
            ExitCode::SUCCESS
        }
        Err(stop) => fail(&stop),
    }
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => println!("{json}"),
        Err(err) => logln!("error: cannot encode the result as JSON: {err}"),
    }
}

fn fail(stop: &Stop) -> ExitCode {
    logln!("error: {stop}");
    ExitCode::from(stop.exit_code())
}
