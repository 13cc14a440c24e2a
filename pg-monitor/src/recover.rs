//! `pg-monitor recover`: the operator's way back for a node its monitor
//! fenced. Fencing made the node refuse writes (`effects::refuse_writes`)
//! and stopped its services; recovery starts them again and lifts that mode
//! with the very function the monitor lifts it with (`effects::allow_writes`),
//! so the two can never disagree on what "refusing writes" means.
//!
//! The small decisions (refuse or go on, what the peer's answer means for
//! this node, whether to lift, how to name the end state) are pure functions
//! of what was observed; `recover` runs the steps in order and stops at the
//! first that fails.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use pg_monitor::effects;
use pgcore::duration::parse_positive_duration;
use pgcore::{Client, ConnectOptions, Detail, Endpoint, Failure, Role, Status};

use crate::nodes::{self, describe, Credentials, NodeFlags};

/// Bring this node back after its monitor fenced it: start its services
/// again and let it take writes.
///
/// A split-brain on equal timelines (two primaries, nothing to tell them
/// apart) makes both monitors refuse writes and stop postgres, haproxy and
/// themselves. Decide which node's data is the truth, run this as root on
/// that node, then on the other. In order, it
///
///   1. refuses unless run as root, and while postgres, the monitor or
///      haproxy still run here (a pid file naming a live process of that name);
///   2. shows the fence record (--fence-record), if there is one;
///   3. asks the peer (--peer) once whether it is primary and says what this
///      node will do: rejoin it as a replica, or resume as primary;
///   4. starts postgres (--start-postgres-cmd) and waits, at most
///      --start-timeout, until it answers as primary or replica;
///   5. if it answers as primary, lifts the read-only mode the monitor set
///      (ALTER SYSTEM RESET default_transaction_read_only, then a reload);
///   6. starts the monitor (--start-monitor-cmd) and haproxy
///      (--start-haproxy-cmd, only where --vip-job-dir exists), when given;
///   7. removes the fence record and prints the role this node ended in.
///
/// Whether the node rejoins or resumes is decided when postgres starts (in
/// the release, by pg-bootstrap); step 3 says what it will find. Commands run
/// with /bin/sh -c, each bounded by --command-timeout; their output goes to
/// stderr, with the log lines. Durations are seconds (5, 1.5) or 2s / 250ms.
///
/// Exit codes:
///   0  the node is back (its role is printed)
///   1  refused (not root, services still running), or a step failed: the
///      message says which; no later step was run, the fence record is kept
///   2  usage error
///
/// Environment: PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in libpq),
/// PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY (TLS to the peer, as
/// libpq's), PGPASSWORD, PGPASSFILE. A password is never taken from a flag: the peer's
/// comes from --peer-password-file, else PGPASSWORD or the passfile.
#[derive(Parser, Debug)]
#[command(
    name = "recover",
    bin_name = "pg-monitor recover",
    version,
    verbatim_doc_comment
)]
pub struct Recover {
    /// The local node, HOST:PORT; a host starting with / is a Unix socket directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub local: Endpoint,

    /// The other node of the pair, HOST:PORT. Without it no peer is asked.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<Endpoint>,

    #[command(flatten)]
    pub credentials: Credentials,

    /// Refuse while this file names a live process called `postgres`.
    #[arg(long, value_name = "PATH")]
    pub postgres_pidfile: Option<PathBuf>,

    /// Refuse while this file names a live process called `pg-monitor`.
    #[arg(long, value_name = "PATH")]
    pub monitor_pidfile: Option<PathBuf>,

    /// Refuse while this file names a live process called `haproxy`.
    #[arg(long, value_name = "PATH")]
    pub haproxy_pidfile: Option<PathBuf>,

    /// The monitor's --fence-record: shown first, removed once the node is back.
    #[arg(long, value_name = "PATH")]
    pub fence_record: Option<PathBuf>,

    /// Command run with /bin/sh -c to start postgres, e.g. 'monit start postgres'.
    #[arg(long = "start-postgres-cmd", value_name = "COMMAND", value_parser = parse_start_command)]
    pub start_postgres: String,

    /// How long postgres may take to answer after its start (a rewind or a
    /// fresh clone happens within it).
    #[arg(long, default_value = "300s", value_parser = parse_positive_duration)]
    pub start_timeout: Duration,

    /// Where postgres logs, named when it does not come up.
    #[arg(long, value_name = "PATH")]
    pub postgres_logs: Option<PathBuf>,

    /// Command run with /bin/sh -c to start the monitor, e.g. 'monit start monitor'.
    #[arg(long = "start-monitor-cmd", value_name = "COMMAND", value_parser = parse_start_command)]
    pub start_monitor: Option<String>,

    /// Command run with /bin/sh -c to start haproxy, e.g. 'monit start haproxy'.
    #[arg(long = "start-haproxy-cmd", value_name = "COMMAND", value_parser = parse_start_command)]
    pub start_haproxy: Option<String>,

    /// Run --start-haproxy-cmd only if this directory exists (the vip job's,
    /// present only where haproxy is deployed).
    #[arg(long, value_name = "PATH")]
    pub vip_job_dir: Option<PathBuf>,

    /// Bound on each command; one still running then is killed.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub command_timeout: Duration,
}

/// A start command: an empty one would "succeed" without starting anything.
fn parse_start_command(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "the command is empty: give a command that starts the service, e.g. 'monit start postgres'"
                .to_string(),
        );
    }
    Ok(text.to_string())
}

/// Runs the subcommand and maps the outcome to its exit code.
pub fn main(args: Recover) -> ExitCode {
    match recover(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Usage(message)) => Recover::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit(),
        Err(Stop::Failed(message)) => {
            for line in message.lines() {
                complain(line);
            }
            ExitCode::FAILURE
        }
    }
}

/// Why recovery stopped: bad input (exit 2), or a refusal or a failed step
/// (exit 1), with the message for the operator (one or more lines).
enum Stop {
    Usage(String),
    Failed(String),
}

impl From<String> for Stop {
    fn from(message: String) -> Stop {
        Stop::Failed(message)
    }
}

/// One line for the operator on stdout. A closed stdout is no reason to
/// stop half-way through the steps.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "recover: {line}");
}

/// One line on stderr: a refusal or a failure.
fn complain(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "recover: {line}");
}

/// The local node's and the peer's connection options, passwords resolved.
fn connect_options(args: &Recover) -> Result<(ConnectOptions, Option<ConnectOptions>), String> {
    let flags = NodeFlags {
        local: &args.local,
        peer: args.peer.as_ref(),
        credentials: &args.credentials,
    };
    nodes::connect_options(&flags, "pg-monitor recover")
}

/// The steps, in order, up to the first that fails.
fn recover(args: &Recover) -> Result<(), Stop> {
    if let Some(refusal) = refusal(pgcore::os::user::running_as_root(), &still_running(args)) {
        return Err(Stop::Failed(refusal));
    }
    let (local, peer) = connect_options(args).map_err(Stop::Usage)?;
    let client = Client::new().map_err(|err| format!("cannot start the probe runtime: {err}"))?;
    if let Some(record) = &args.fence_record {
        show_fence_record(record);
    }
    if let Some(peer) = &peer {
        say(&Intent::of(&client.probe_once(peer, Detail::Role)).to_string());
    }
    let status = start_postgres(&client, &local, args)?;
    if takes_writes_again(&status) {
        lift_read_only(&client, &local)?;
    }
    start_monitor_and_haproxy(args)?;
    if let Some(record) = &args.fence_record {
        remove_fence_record(record)?;
    }
    let now = client.probe_once(&local, Detail::Full);
    say(&format!("done; this node is now {}", describe(&now)));
    Ok(())
}

/// Starts postgres and returns its first answer as primary or replica.
fn start_postgres(
    client: &Client,
    local: &ConnectOptions,
    args: &Recover,
) -> Result<Status, String> {
    say(&format!(
        "starting postgres (waiting up to {} s for it to answer)",
        args.start_timeout.as_secs()
    ));
    start("postgres", &args.start_postgres, args.command_timeout)?;
    wait_until_answering(client, local, args)
}

/// Undoes what fencing did to writes, with the monitor's own function.
fn lift_read_only(client: &Client, local: &ConnectOptions) -> Result<(), String> {
    effects::allow_writes(client, local).map_err(|failure| {
        format!(
            "cannot lift the read-only mode: {failure}\n\
             postgres runs but refuses writes; the monitor and haproxy were not started"
        )
    })?;
    say("this node takes writes again");
    Ok(())
}

fn start_monitor_and_haproxy(args: &Recover) -> Result<(), String> {
    if let Some(command) = &args.start_monitor {
        start("the monitor", command, args.command_timeout)?;
    }
    if let Some(command) = &args.start_haproxy {
        if starts_haproxy(args.vip_job_dir.as_deref().map(Path::is_dir)) {
            start("haproxy", command, args.command_timeout)?;
        }
    }
    Ok(())
}

/// Why recovery must not run, if it must not: it is for a node that fenced
/// itself, and starting services a person stopped on purpose, or twice,
/// would be worse than doing nothing.
fn refusal(root: bool, running: &[&str]) -> Option<String> {
    if !root {
        return Some("run as root (with sudo)".to_string());
    }
    if running.is_empty() {
        return None;
    }
    Some(format!(
        "still running on this node: {}.\n\
         this is for a node that fenced itself; stop them first (monit stop ...) if you mean it.",
        running.join(" ")
    ))
}

/// The services whose pid file names a live process of theirs, by the
/// names operators know them by.
fn still_running(args: &Recover) -> Vec<&'static str> {
    let services = [
        ("postgres", "postgres", &args.postgres_pidfile),
        ("monitor", "pg-monitor", &args.monitor_pidfile),
        ("haproxy", "haproxy", &args.haproxy_pidfile),
    ];
    services
        .into_iter()
        .filter_map(|(service, process, pidfile)| {
            let pidfile = pidfile.as_deref()?;
            names_live_process(pidfile, process).then_some(service)
        })
        .collect()
}

/// Whether `pidfile`'s first line names a live (not zombie) process called
/// `name`: a stale file, or a pid reused by another program, does not count.
fn names_live_process(pidfile: &Path, name: &str) -> bool {
    let Ok(text) = fs::read_to_string(pidfile) else {
        return false;
    };
    let first_line = text.lines().next().unwrap_or_default().trim();
    first_line
        .parse::<u32>()
        .is_ok_and(|pid| pgcore::os::alive_named(pid, &[name]))
}

fn show_fence_record(path: &Path) {
    if !path.exists() {
        return;
    }
    match pgcore::input::read_text(path) {
        Ok(record) => say(&format!("this node fenced itself: {}", record.trim_end())),
        Err(why) => say(&format!(
            "this node fenced itself, but its record {} cannot be read: {why}",
            path.display()
        )),
    }
}

/// What this node will do once postgres starts, given the peer's answer: it
/// follows a primary that takes writes, and nothing else (pg-bootstrap's
/// rule; a primary refusing writes was stepped down or fenced by its monitor).
#[derive(Debug, PartialEq, Eq)]
enum Intent {
    Rejoin,
    Resume { peer: String },
}

impl Intent {
    fn of(peer: &Result<Status, Failure>) -> Intent {
        match peer {
            Ok(status) if status.role == Role::Primary && status.read_only != Some(true) => {
                Intent::Rejoin
            }
            other => Intent::Resume {
                peer: describe(other),
            },
        }
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Intent::Rejoin => {
                f.write_str("the other node is primary; this node will rejoin it as a replica.")
            }
            Intent::Resume { peer } => write!(
                f,
                "the other node is not primary ({peer}); this node will resume as primary."
            ),
        }
    }
}

/// The monitor refused writes on the primary it fenced; a node back as
/// primary takes them again. A replica follows its primary's settings.
fn takes_writes_again(local: &Status) -> bool {
    local.role == Role::Primary
}

/// haproxy starts only where the vip job is deployed; without
/// --vip-job-dir, wherever its command is given.
fn starts_haproxy(vip_job_present: Option<bool>) -> bool {
    vip_job_present != Some(false)
}

/// Runs one start command; its failure ends the recovery.
fn start(service: &str, command: &str, timeout: Duration) -> Result<(), String> {
    if effects::run_command(&format!("start {service}"), command, timeout) {
        return Ok(());
    }
    Err(format!(
        "cannot start {service}: `{command}` failed (logged above); the steps after it were not run"
    ))
}

/// How often the local node is asked while it starts, and the bound on each question.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a long wait says that it still waits, and for what.
const WAITING_REMINDER: Duration = Duration::from_secs(10);

/// Asks the local node until it answers as primary or replica, within
/// --start-timeout; the answer decides whether writes are lifted.
fn wait_until_answering(
    client: &Client,
    local: &ConnectOptions,
    args: &Recover,
) -> Result<Status, String> {
    let mut options = local.clone();
    options.connect_timeout = local.connect_timeout.min(POLL_TIMEOUT);
    let started = Instant::now();
    let mut reminded = started;
    loop {
        let failure = match client.probe_once(&options, Detail::Role) {
            Ok(status) => return Ok(status),
            Err(failure) => failure,
        };
        let waited = started.elapsed();
        if waited >= args.start_timeout {
            let logs = args
                .postgres_logs
                .as_ref()
                .map_or("its log".to_string(), |path| path.display().to_string());
            return Err(format!(
                "postgres did not come up within {} s (last answer: {failure}); see {logs}",
                args.start_timeout.as_secs()
            ));
        }
        if reminded.elapsed() >= WAITING_REMINDER {
            say(&format!(
                "still waiting for the local postgres to answer ({} s of {} s): {failure}",
                waited.as_secs(),
                args.start_timeout.as_secs()
            ));
            reminded = Instant::now();
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn remove_fence_record(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!(
            "cannot remove the fence record {}: {err}; the node is back otherwise",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcore::FailureKind;

    fn answered(role: Role, read_only: Option<bool>) -> Result<Status, Failure> {
        Ok(Status {
            role,
            read_only,
            ..Status::default()
        })
    }

    fn failed(kind: FailureKind, message: &str) -> Result<Status, Failure> {
        Err(Failure {
            kind,
            endpoint: None,
            cause: message.to_string(),
        })
    }

    #[test]
    fn only_root_may_recover_and_only_with_every_service_stopped() {
        assert_eq!(refusal(true, &[]), None);
        assert!(refusal(false, &[]).unwrap().contains("run as root"));
        let refused = refusal(true, &["postgres", "haproxy"]).unwrap();
        assert!(
            refused.starts_with("still running on this node: postgres haproxy.\n"),
            "{refused}"
        );
        assert!(refused.contains("stop them first"), "{refused}");
    }

    #[test]
    fn a_primary_taking_writes_is_rejoined_anything_else_is_not() {
        assert_eq!(
            Intent::of(&answered(Role::Primary, Some(false))),
            Intent::Rejoin
        );
        assert_eq!(Intent::of(&answered(Role::Primary, None)), Intent::Rejoin);
        let cases = [
            (
                answered(Role::Primary, Some(true)),
                "primary, refusing writes",
            ),
            (answered(Role::Replica, None), "replica"),
            (
                failed(FailureKind::Starting, "h:1: starting up"),
                "starting: h:1: starting up",
            ),
            (
                failed(FailureKind::Refused, "h:1: refused"),
                "unreachable: h:1: refused",
            ),
            (
                failed(FailureKind::Rejected, "h:1: password"),
                "unreachable: h:1: password",
            ),
        ];
        for (answer, peer) in cases {
            assert_eq!(
                Intent::of(&answer),
                Intent::Resume {
                    peer: peer.to_string()
                }
            );
        }
    }

    #[test]
    fn the_intent_reads_as_the_operator_knows_it() {
        assert_eq!(
            Intent::Rejoin.to_string(),
            "the other node is primary; this node will rejoin it as a replica."
        );
        let resume = Intent::Resume {
            peer: "unreachable: h:1: refused".into(),
        };
        assert_eq!(
            resume.to_string(),
            "the other node is not primary (unreachable: h:1: refused); this node will resume as primary."
        );
    }

    #[test]
    fn only_a_primary_has_its_writes_lifted() {
        for read_only in [Some(true), Some(false), None] {
            let primary = answered(Role::Primary, read_only).unwrap();
            assert!(takes_writes_again(&primary));
        }
        assert!(!takes_writes_again(&answered(Role::Replica, None).unwrap()));
    }

    #[test]
    fn haproxy_starts_unless_its_job_is_missing() {
        assert!(starts_haproxy(None));
        assert!(starts_haproxy(Some(true)));
        assert!(!starts_haproxy(Some(false)));
    }

    #[test]
    fn a_pidfile_counts_only_for_a_live_process_of_that_name() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("service.pid");
        assert!(!names_live_process(&pidfile, "anything"), "no file");
        let me = std::process::id();
        let my_name = fs::read_to_string("/proc/self/comm").unwrap();
        fs::write(&pidfile, format!("{me}\n")).unwrap();
        assert!(names_live_process(&pidfile, my_name.trim_end()));
        assert!(!names_live_process(&pidfile, "haproxy"), "another name");
        fs::write(&pidfile, "not a pid\n").unwrap();
        assert!(!names_live_process(&pidfile, my_name.trim_end()));
    }
}
