//! `ha-client`: the local cluster's test client, run in the client namespace.
//!
//!   ha-client setup   --host H --port P              create the `writes` table
//!   ha-client write   --host H --port P --out FILE   insert numbered rows every --interval
//!   ha-client observe --host H ... --out FILE        which backend accepts writes through each target
//!   ha-client dump    --host H --port P              print the ids present, one per line
//!   ha-client listen  --address HOST:PORT            a TCP witness: accept and close, until killed
//!
//! `write` and `observe` run until SIGTERM/SIGINT and append one line per event
//! to FILE (flushed at once, so nothing is lost if they are killed):
//!   write:   `<id> ack|err|unknown <unix ms> [message]`
//!   observe: `<unix ms> <target host:port> primary|readonly|replica|down
//!            [<backend address> <sent ms> <answered ms>]` (`primary` takes writes;
//!            `readonly` is a primary refusing them; the state held at some moment
//!            between the query's connection and its answer)
//! The user, database and password come from PGUSER, PGDATABASE, PGPASSWORD.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use pgcore::duration::parse_positive_duration;
use pgcore::{Client, ConnectOptions, Endpoint, Failure, FailureKind, Session};

#[derive(Parser)]
#[command(name = "ha-client", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// haproxy (or the VIP) to connect through, HOST:PORT; repeatable for observe.
    #[arg(long = "target", required = true)]
    targets: Vec<Endpoint>,
    /// Bound on each connection and each statement.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
    Setup(Target),
    Write {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "50ms", value_parser = parse_positive_duration)]
        interval: Duration,
        /// The first id written: writers on different sides of a partition
        /// use ranges of their own.
        #[arg(long, default_value_t = 1)]
        first_id: u64,
        #[arg(long)]
        out: PathBuf,
    },
    Observe {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "100ms", value_parser = parse_positive_duration)]
        interval: Duration,
        #[arg(long)]
        out: PathBuf,
    },
    Dump(Target),
    Listen {
        #[arg(long)]
        address: std::net::SocketAddr,
    },
}

fn main() -> std::process::ExitCode {
    pgcore::log::init("ha-client");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(target) => setup(&target),
        Command::Write {
            target,
            interval,
            first_id,
            out,
        } => write(&target, interval, first_id, &out),
        Command::Observe {
            target,
            interval,
            out,
        } => observe(&target, interval, &out),
        Command::Dump(target) => dump(&target),
        Command::Listen { address } => listen(address),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            pgcore::logln!("error: {message}");
            std::process::ExitCode::from(1)
        }
    }
}

fn options(endpoint: &Endpoint, timeout: Duration) -> ConnectOptions {
    let mut options = ConnectOptions::new(
        endpoint.clone(),
        std::env::var("PGUSER").ok(),
        std::env::var("PGDATABASE").ok(),
        timeout,
    )
    .with_application_name("ha-client");
    options.set_password(std::env::var("PGPASSWORD").ok());
    options
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|err| err.to_string())?;
    }
    Ok(stop)
}

/// One statement over a new connection, all within twice the timeout; its rows as text.
fn run_sql(
    client: &Client,
    options: &ConnectOptions,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, Failure> {
    client
        .connect_within(options, options.connect_timeout * 2)?
        .text_rows(sql)
}

fn setup(target: &Target) -> Result<(), String> {
    let client = Client::new().map_err(|err| err.to_string())?;
    let options = options(&target.targets[0], target.timeout);
    run_sql(&client, &options, "CREATE TABLE IF NOT EXISTS writes (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .map(|_| ())
        .map_err(|failure| failure.to_string())
}

fn dump(target: &Target) -> Result<(), String> {
    let client = Client::new().map_err(|err| err.to_string())?;
    let options = options(&target.targets[0], target.timeout);
    let rows = run_sql(&client, &options, "SELECT id FROM writes ORDER BY id")
        .map_err(|f| f.to_string())?;
    let mut stdout = std::io::stdout().lock();
    for row in rows {
        writeln!(stdout, "{}", row[0].as_deref().unwrap_or("")).map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// Inserts ids 1, 2, 3, ... one per interval, over one connection re-established
/// whenever it breaks, and records each outcome. A statement whose answer never
/// came (timeout, connection lost) is `unknown`: it may or may not have committed.
fn write(target: &Target, interval: Duration, first_id: u64, out: &PathBuf) -> Result<(), String> {
    let stop = stop_flag()?;
    let client = Client::new().map_err(|err| err.to_string())?;
    let options = options(&target.targets[0], target.timeout);
    let mut log =
        LineWriter::new(File::create(out).map_err(|err| format!("{}: {err}", out.display()))?);
    let mut session: Option<Session> = None;
    let mut id = first_id.saturating_sub(1);
    while !stop.load(Ordering::SeqCst) {
        let started = std::time::Instant::now();
        id += 1;
        if session.as_ref().is_none_or(Session::is_closed) {
            session = client.connect(&options).ok();
        }
        let outcome = match &session {
            None => ("err", "cannot connect".to_string()),
            Some(connected) => {
                match connected.execute(&format!("INSERT INTO writes (id) VALUES ({id})")) {
                    Ok(()) => ("ack", String::new()),
                    Err(failure) => {
                        session = None;
                        (verdict(&failure), failure.cause)
                    }
                }
            }
        };
        let _ = writeln!(
            log,
            "{id} {} {} {}",
            outcome.0,
            now_ms(),
            outcome.1.replace('\n', " ")
        );
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

/// A failed insert whose answer never came (a timeout, a hung server, a lost
/// connection) may or may not have committed.
fn verdict(failure: &Failure) -> &'static str {
    match failure.kind {
        FailureKind::Timeout | FailureKind::Hung | FailureKind::Transient => "unknown",
        _ => "err",
    }
}

/// Asks each target which backend answers and whether it accepts writes, once
/// per interval, each over a fresh connection (as a new client would be routed).
fn observe(target: &Target, interval: Duration, out: &PathBuf) -> Result<(), String> {
    let stop = stop_flag()?;
    let client = Client::new().map_err(|err| err.to_string())?;
    let mut log =
        LineWriter::new(File::create(out).map_err(|err| format!("{}: {err}", out.display()))?);
    while !stop.load(Ordering::SeqCst) {
        let started = std::time::Instant::now();
        let round = now_ms();
        for endpoint in &target.targets {
            let options = options(endpoint, target.timeout);
            let sent = now_ms();
            // The server's clock says when it answered: the VMs of the
            // local cluster share the host's.
            let answer = run_sql(
                &client,
                &options,
                "SELECT pg_is_in_recovery(), inet_server_addr(), \
                   current_setting('default_transaction_read_only'), \
                   (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            );
            let line = match answer.as_ref().ok().and_then(|rows| rows.first()) {
                Some(row) => {
                    let role = match (row[0].as_deref(), row[2].as_deref()) {
                        (Some("f"), Some("on")) => "readonly",
                        (Some("f"), _) => "primary",
                        _ => "replica",
                    };
                    format!(
                        "{round} {endpoint} {role} {} {sent} {} {}",
                        row[1].as_deref().unwrap_or("?"),
                        now_ms(),
                        row[3].as_deref().unwrap_or("?")
                    )
                }
                None => format!("{round} {endpoint} down"),
            };
            let _ = writeln!(log, "{line}");
        }
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

/// A witness for pg-monitor: plain TCP reachability is all it offers.
fn listen(address: std::net::SocketAddr) -> Result<(), String> {
    let listener =
        std::net::TcpListener::bind(address).map_err(|err| format!("{address}: {err}"))?;
    for connection in listener.incoming() {
        drop(connection);
    }
    Ok(())
}
