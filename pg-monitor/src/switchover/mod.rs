//! `pg-monitor switchover`: the operator's (and BOSH drain's) planned
//! hand-over of the primary role to the replica, with no acknowledged write
//! lost, the shortest write gap, and no pg_rewind or clone for the old primary.
//!
//! Whether it may go ahead, and whether the peer has everything this node
//! wrote, are pure functions ([`decide`]); the steps ([`steps`]) run in order
//! and the first that fails ends the switchover with a message that says what
//! state it left.

mod decide;
mod steps;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use pg_monitor::effects;
use pgcore::control::ControlFile;
use pgcore::duration::parse_positive_duration;
use pgcore::{Client, ConnectOptions, Endpoint};
use serde_json::{json, Value};

use self::decide::{Policy, Received, Verdict};
use crate::nodes::{self, Credentials, NodeFlags};
use pg_monitor::haproxy::{HaproxyFlags, Side};

/// Hand the primary role to the other node of the HA pair: a planned
/// switchover, with no acknowledged write lost and a write gap of about a
/// second.
///
/// Run it on the primary, as root (the release's bin/switchover does, and so
/// does the postgres job's drain before BOSH stops the node). In order, it
///
///   1. asks both nodes, and refuses (exit 1, nothing changed) unless this
///      node is a primary taking writes and the peer (--peer) a replica
///      streaming from it (pg_stat_replication here: state streaming, and
///      pg_current_wal_lsn() - flush_lsn under --max-lag bytes), with no
///      split-brain, and no --pause-file exists (see --force);
///   2. runs CHECKPOINT here, so that the shutdown checkpoint is quick;
///   3. stops the local postgres (--stop-cmd, e.g. 'monit stop postgres': a
///      fast shutdown, whose walsender sends every record to the connected
///      standby before the server exits) and waits until no postmaster runs
///      and pg_control says "shut down"; writes stop here;
///   4. waits, at most --catchup-timeout, until the peer has received this
///      node's last record, the shutdown checkpoint (its received WAL
///      position is past where the checkpoint begins);
///   5. promotes the peer (pg_promote() as --peer-user; the release grants
///      the replication role that function). The peer's own monitor sees
///      this node stop and may promote it first: that is accepted when the
///      peer's timeline history holds this node's last record (so nothing
///      was lost), and a pg_promote() that finds it promoted counts as done;
///   6. tells the local haproxy at once (--haproxy-socket, its admin socket):
///      the peer's server up and this node's down in the write backend, the
///      peer's down in the read-only one. The other node's haproxy learns it
///      from its own checks;
///   7. starts the local postgres again (--start-cmd, e.g. 'monit start
///      postgres'): its boot (pg-bootstrap prepare) finds the peer primary and
///      follows it as it is, without pg_rewind or a clone; waits, at most
///      --rejoin-timeout, until it streams from the peer. With
///      --leave-stopped (BOSH's drain, whose stop follows), it stays stopped.
///
/// A pause file (the monitor's --pause-file, e.g. postgres.replication.
/// pause_failover) means the roles stay where they are: the switchover
/// refuses while one exists here, unless --force.
///
/// --dry-run does step 1 and prints the plan; nothing is changed. --json
/// prints one object at the end (the decision, each step's duration, the
/// write gap, the new primary); the lines meant for people then go to stderr.
/// Durations are seconds (5, 1.5) or 2s / 250ms.
///
/// Exit codes:
///   0  done: the peer is primary and this node streams from it (with
///      --leave-stopped: this node is stopped; --dry-run: it would go ahead)
///   1  refused, or the CHECKPOINT before the stop failed: nothing was
///      changed (the reason is printed)
///   2  usage error
///   3  could not determine what a node is: nothing was changed
///   4  failed after the local server was stopped: the message says what
///      state it left and what to do
///
/// Environment: PGUSER, PGDATABASE, PGCONNECT_TIMEOUT (as in libpq),
/// PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY (TLS to the peer, as
/// libpq's), PGPASSWORD, PGPASSFILE. A password is never taken from a flag: the peer's
/// comes from --peer-password-file, else PGPASSWORD or the passfile.
#[derive(Parser, Debug)]
#[command(
    name = "switchover",
    bin_name = "pg-monitor switchover",
    version,
    verbatim_doc_comment
)]
pub struct Switchover {
    /// The local node, HOST:PORT; a host starting with / is a Unix socket directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub local: Endpoint,

    /// The other node of the pair, HOST:PORT: the replica that becomes primary.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Endpoint,

    #[command(flatten)]
    pub credentials: Credentials,

    /// The local data directory: its pg_control says whether the server
    /// shut down cleanly and where its last record is.
    #[arg(long, value_name = "PATH")]
    pub data_dir: PathBuf,

    /// Command run with /bin/sh -c to stop the local postgres with a fast
    /// shutdown, e.g. 'monit stop postgres'.
    #[arg(long = "stop-cmd", value_name = "COMMAND", value_parser = parse_stop_command)]
    pub stop_command: String,

    /// Command run with /bin/sh -c to start the local postgres again, e.g.
    /// 'monit start postgres' (whose boot must follow a primary peer).
    #[arg(long = "start-cmd", value_name = "COMMAND", value_parser = parse_start_command)]
    pub start_command: String,

    /// Refuse unless the peer is less than this many bytes of WAL behind:
    /// one WAL segment (16 MiB) by default, which a streaming replica
    /// receives in well under a second, so that the shutdown (and the write
    /// gap) is not spent catching up; a replica further behind is catching up
    /// after an outage, not streaming along.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LAG)]
    pub max_lag: u64,

    /// While this file exists, refuse (unless --force): the monitor's pause
    /// (repeatable; any one of the files pauses).
    #[arg(long = "pause-file", value_name = "PATH")]
    pub pause_files: Vec<PathBuf>,

    /// Hand over even while a pause file exists. Every other check still holds.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub haproxy: HaproxyFlags,

    /// Bound on the CHECKPOINT before the stop.
    #[arg(long, default_value = "300s", value_parser = parse_positive_duration)]
    pub checkpoint_timeout: Duration,

    /// Bound on the stop: the command, and until no postmaster runs.
    #[arg(long, default_value = "150s", value_parser = parse_positive_duration)]
    pub stop_timeout: Duration,

    /// How long the peer may take to confirm it received this node's last record.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub catchup_timeout: Duration,

    /// Bound on the promotion (pg_promote's wait).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub promote_timeout: Duration,

    /// Bound on the restart: the start command, and until this node streams from the peer.
    #[arg(long, default_value = "300s", value_parser = parse_positive_duration)]
    pub rejoin_timeout: Duration,

    /// Leave the local postgres stopped once the peer is primary, instead
    /// of starting it again as its replica: for BOSH's drain, whose stop
    /// follows at once (a standby started only to be stopped would, with
    /// synchronous commits, hold the new primary's commits until its monitor
    /// gave up on it). Started later, its boot follows the new primary.
    #[arg(long)]
    pub leave_stopped: bool,

    /// Decide and print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print one JSON object on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

/// --max-lag when not given: one default WAL segment.
const DEFAULT_MAX_LAG: u64 = 16 << 20;

fn parse_stop_command(text: &str) -> Result<String, String> {
    non_empty(text, "stops the local postgres, e.g. 'monit stop postgres'")
}

fn parse_start_command(text: &str) -> Result<String, String> {
    non_empty(
        text,
        "starts the local postgres, e.g. 'monit start postgres'",
    )
}

/// An empty command would "succeed" without doing anything.
fn non_empty(text: &str, what: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!("the command is empty: give a command that {what}"));
    }
    Ok(text.to_string())
}

/// Runs the subcommand and maps the outcome to its exit code.
pub fn main(args: Switchover) -> ExitCode {
    let mut run = Run::new(&args);
    let end = switchover(&args, &mut run);
    run.finish(end)
}

/// How the switchover ended, and its exit code.
enum End {
    Done,
    Refused(String),
    Usage(String),
    Undetermined(String),
    /// After the local server was stopped: what failed, and the state left.
    Failed {
        what: String,
        state: String,
    },
}

impl End {
    fn code(&self) -> u8 {
        match self {
            End::Done => 0,
            End::Refused(_) => 1,
            End::Usage(_) => 2,
            End::Undetermined(_) => 3,
            End::Failed { .. } => 4,
        }
    }
}

/// What the run says as it goes, and what `--json` prints at the end.
struct Run {
    json: bool,
    started: Instant,
    report: serde_json::Map<String, Value>,
    steps: Vec<Value>,
}

impl Run {
    fn new(args: &Switchover) -> Run {
        let mut report = serde_json::Map::new();
        report.insert("dry_run".into(), json!(args.dry_run));
        report.insert("forced".into(), json!(args.force));
        report.insert("local".into(), json!(args.local.to_string()));
        report.insert("peer".into(), json!(args.peer.to_string()));
        for key in ["decision", "reason", "lag_bytes", "write_gap_seconds"] {
            report.insert(key.into(), Value::Null);
        }
        report.insert("new_primary".into(), Value::Null);
        Run {
            json: args.json,
            started: Instant::now(),
            report,
            steps: Vec::new(),
        }
    }

    /// One line for people: stdout, or stderr when stdout carries the JSON.
    fn say(&self, line: &str) {
        let line = format!("switchover: {line}\n");
        let _ = if self.json {
            std::io::stderr().lock().write_all(line.as_bytes())
        } else {
            std::io::stdout().lock().write_all(line.as_bytes())
        };
    }

    fn set(&mut self, key: &str, value: Value) {
        self.report.insert(key.into(), value);
    }

    /// Records a step that began at `began` and says what it did.
    fn step(&mut self, name: &str, began: Instant, detail: &str) {
        let seconds = began.elapsed().as_secs_f64();
        self.say(&format!("{detail} ({seconds:.2} s)"));
        self.steps.push(json!({
            "step": name,
            "seconds": round(seconds),
            "detail": detail,
        }));
    }

    fn finish(mut self, end: End) -> ExitCode {
        let code = end.code();
        let (error, state) = match &end {
            End::Done => (None, None),
            End::Usage(message) => Switchover::command()
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit(),
            End::Refused(why) => (Some(format!("refused: {why}; nothing was changed")), None),
            End::Undetermined(why) => (
                Some(format!("cannot go ahead: {why}; nothing was changed")),
                None,
            ),
            End::Failed { what, state } => (Some(format!("failed: {what}")), Some(state.clone())),
        };
        for line in error.iter().chain(state.iter()) {
            let _ = writeln!(std::io::stderr().lock(), "switchover: {line}");
        }
        if self.json {
            let steps = std::mem::take(&mut self.steps);
            self.set("steps", Value::Array(steps));
            self.set(
                "seconds",
                json!(round(self.started.elapsed().as_secs_f64())),
            );
            self.set("exit_code", json!(code));
            self.set("error", json!(error));
            self.set("state", json!(state));
            let _ = writeln!(std::io::stdout().lock(), "{}", Value::Object(self.report));
        }
        ExitCode::from(code)
    }
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The local node's and the peer's connection options, passwords resolved.
fn connect_options(args: &Switchover) -> Result<(ConnectOptions, ConnectOptions), String> {
    let flags = NodeFlags {
        local: &args.local,
        peer: Some(&args.peer),
        credentials: &args.credentials,
    };
    let (local, peer) = nodes::connect_options(&flags, "pg-monitor switchover")?;
    Ok((local, peer.expect("the peer is always given")))
}

/// Decides, then (unless a dry run) hands over.
fn switchover(args: &Switchover, run: &mut Run) -> End {
    let (local, peer) = match connect_options(args) {
        Ok(options) => options,
        Err(message) => return End::Usage(message),
    };
    let client = match Client::new() {
        Ok(client) => client,
        Err(err) => return End::Undetermined(format!("cannot start the probe runtime: {err}")),
    };
    let observed = steps::observe(&client, &local, &peer, &args.pause_files);
    let policy = Policy {
        max_lag_bytes: args.max_lag,
        force: args.force,
    };
    let verdict = decide::verdict(&observed, &policy);
    run.set("decision", json!(verdict.word()));
    run.set("reason", json!(verdict.to_string()));
    let Verdict::Go { lag_bytes } = verdict else {
        return match verdict {
            Verdict::Undetermined(why) => End::Undetermined(why),
            other => End::Refused(other.to_string()),
        };
    };
    run.set("lag_bytes", json!(lag_bytes));
    if let (Some(path), true) = (&observed.paused_by, args.force) {
        run.say(&format!(
            "failover is paused ({} exists), going ahead as --force says",
            path.display()
        ));
    }
    if args.dry_run {
        run.say(&format!("dry run: {verdict}; it would go ahead:"));
        for line in plan(args) {
            run.say(&format!("  {line}"));
        }
        return End::Done;
    }
    run.say(&format!(
        "{verdict}; handing the primary role to {}",
        args.peer
    ));
    Handover {
        args,
        client,
        local,
        peer,
    }
    .go(run)
}

/// What the switchover would do, step by step, for --dry-run.
fn plan(args: &Switchover) -> Vec<String> {
    let mut lines = vec![
        "CHECKPOINT on this node".to_string(),
        format!("stop the local postgres: `{}`", args.stop_command),
        format!(
            "wait up to {} s for {} to receive this node's shutdown checkpoint",
            args.catchup_timeout.as_secs(),
            args.peer
        ),
        format!("promote {} (pg_promote)", args.peer),
    ];
    if let Some(socket) = &args.haproxy.haproxy_socket {
        lines.push(format!(
            "tell haproxy ({}) the new primary",
            socket.display()
        ));
    }
    if args.leave_stopped {
        lines.push("leave the local postgres stopped (--leave-stopped)".to_string());
    } else {
        lines.push(format!(
            "start the local postgres again: `{}`, and wait up to {} s until it streams from {}",
            args.start_command,
            args.rejoin_timeout.as_secs(),
            args.peer
        ));
    }
    lines
}

/// The steps after the verdict, each bounded.
struct Handover<'a> {
    args: &'a Switchover,
    client: Client,
    local: ConnectOptions,
    peer: ConnectOptions,
}

impl Handover<'_> {
    fn go(&self, run: &mut Run) -> End {
        let began = Instant::now();
        if let Err(failure) =
            steps::checkpoint(&self.client, &self.local, self.args.checkpoint_timeout)
        {
            return End::Refused(format!("CHECKPOINT failed: {failure}"));
        }
        run.step("checkpoint", began, "CHECKPOINT done on this node");

        let writes_stopped = Instant::now();
        let last = match self.stop(run) {
            Ok(last) => last,
            Err(end) => return end,
        };
        run.step(
            "stop",
            writes_stopped,
            &format!(
                "the local postgres shut down cleanly; its last record, the shutdown checkpoint, \
                 is at {} on timeline {}",
                last.checkpoint, last.timeline
            ),
        );

        let began = Instant::now();
        let timeout = self.args.catchup_timeout;
        match steps::wait_received(&self.client, &self.peer, &last, timeout) {
            Received::All(how) => run.step("confirm", began, &how),
            Received::NotYet(why) => {
                return self.abandon(format!(
                    "the peer did not confirm within {} s that it received this node's last \
                     record: {why}",
                    timeout.as_secs()
                ))
            }
            Received::Missing(why) => return self.left_stopped(why),
        }

        let began = Instant::now();
        match steps::promote(&self.client, &self.peer, self.args.promote_timeout) {
            Ok(how) => run.step(
                "promote",
                began,
                &format!("{} promoted ({how})", self.args.peer),
            ),
            Err(why) => return self.abandon(format!("cannot promote the peer: {why}")),
        }
        let gap = writes_stopped.elapsed().as_secs_f64();
        run.set("write_gap_seconds", json!(round(gap)));
        run.set("new_primary", json!(self.args.peer.to_string()));
        run.say(&format!(
            "{} takes writes; this node stopped taking them {gap:.2} s before",
            self.args.peer
        ));

        let began = Instant::now();
        if let Some(said) = self
            .args
            .haproxy
            .tell(&self.args.haproxy.promoted(Side::Peer))
        {
            run.step("haproxy", began, &said);
        }
        if self.args.leave_stopped {
            run.say(&format!(
                "done: {} is primary; this node stays stopped (--leave-stopped), and its next \
                 start follows it",
                self.args.peer
            ));
            return End::Done;
        }
        self.rejoin(run)
    }

    /// Step 3: the stop command, and pg_control once no postmaster runs.
    fn stop(&self, run: &Run) -> Result<ControlFile, End> {
        if let Some(said) = self
            .args
            .haproxy
            .tell(&self.args.haproxy.stopping(Side::Local))
        {
            run.say(&said);
        }
        run.say(&format!(
            "stopping the local postgres: `{}`",
            self.args.stop_command
        ));
        let stopped = steps::stop(
            &self.args.stop_command,
            &self.args.data_dir,
            self.args.stop_timeout,
        );
        let last = stopped.map_err(|why| End::Failed {
            what: why,
            state: format!(
                "{}. Nothing was promoted; see the local postgres's log and the stop command.",
                self.state_now()
            ),
        })?;
        decide::clean_stop(&last).map_err(|why| self.abandon(why))?;
        Ok(last)
    }

    /// Step 7: the old primary starts again and follows the new one.
    fn rejoin(&self, run: &mut Run) -> End {
        let began = Instant::now();
        let deadline = began + self.args.rejoin_timeout;
        run.say(&format!(
            "starting the local postgres again: `{}`",
            self.args.start_command
        ));
        let started = effects::run_command(
            "start command",
            &self.args.start_command,
            self.args.rejoin_timeout,
        );
        let advice = format!(
            "{} is the primary and takes writes. See this node's postgres logs; `{}` starts it again.",
            self.args.peer, self.args.start_command
        );
        if !started {
            return End::Failed {
                what: format!("`{}` failed (logged above)", self.args.start_command),
                state: format!("{}. {advice}", self.state_now()),
            };
        }
        match steps::wait_streaming(&self.client, &self.local, deadline) {
            Ok(_) => {
                run.step(
                    "rejoin",
                    began,
                    &format!("this node streams from {} as its replica", self.args.peer),
                );
                run.say(&format!(
                    "done: {} is primary, this node its replica",
                    self.args.peer
                ));
                End::Done
            }
            Err(last) => End::Failed {
                what: format!(
                    "this node did not stream from {} within {} s (last: {last})",
                    self.args.peer,
                    self.args.rejoin_timeout.as_secs()
                ),
                state: format!("{}. {advice}", self.state_now()),
            },
        }
    }

    /// The local server was stopped but the peer was not promoted: start the
    /// local one again, as monit would have, so the pair is not left without
    /// a primary. Its boot resumes it as primary when the peer is not one.
    fn abandon(&self, why: String) -> End {
        let started = effects::run_command(
            "start command",
            &self.args.start_command,
            self.args.rejoin_timeout,
        );
        let restart = if started {
            "the local postgres was started again and resumes as primary once its boot finds no \
             primary peer (within postgres.replication.grace), or rejoins the peer if its monitor \
             promoted it meanwhile"
        } else {
            "starting the local postgres again failed too (logged above): start it by hand"
        };
        End::Failed {
            what: why,
            state: format!(
                "The switchover was abandoned; {restart}; {}.",
                self.state_now()
            ),
        }
    }

    /// The peer was promoted without this node's last records: this node is
    /// left stopped, as starting it would rewind them away.
    fn left_stopped(&self, why: String) -> End {
        End::Failed {
            what: why,
            state: format!(
                "{}. This node was left stopped: its data directory {} holds writes the new \
                 primary lacks (they were acknowledged here only if replication was \
                 asynchronous). Save what you need from it (start it alone, without its peer); \
                 `{}` then makes it rejoin the new primary, discarding them.",
                self.state_now(),
                self.args.data_dir.display(),
                self.args.start_command
            ),
        }
    }

    fn state_now(&self) -> String {
        let now = steps::state_now(&self.client, &self.local, &self.peer);
        let mut chars = now.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }
}
