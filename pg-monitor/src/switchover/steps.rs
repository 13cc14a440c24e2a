//! The switchover's effects: observe both nodes, checkpoint, stop, wait for
//! the peer to have everything, promote, tell haproxy, wait for the old
//! primary to stream. Each does one thing, is bounded, and says what it did.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pg_monitor::effects;
use pgcore::control::{self, ControlFile};
use pgcore::history::History;
use pgcore::{Client, ConnectOptions, Detail, Endpoint, Failure, Role, Status};

use super::decide::{received, Observed, Received, Standby};

/// How often a step looks again at what it waits for (the write gap lasts
/// from the stop to the promotion), and the bound on each question.
const POLL: Duration = Duration::from_millis(20);
const QUESTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Both nodes' status, the peer's walsender on a local primary, and the
/// first pause file that exists.
pub fn observe(
    client: &Client,
    local: &ConnectOptions,
    peer: &ConnectOptions,
    pause_files: &[PathBuf],
) -> Observed {
    let local_status = client.probe_once(local, Detail::Full);
    let peer_status = client.probe_once(peer, Detail::Full);
    let may_promote = match &peer_status {
        Ok(status) if status.role == Role::Replica => Some(may_promote(client, peer)),
        _ => None,
    };
    let standby = match &local_status {
        Ok(status) if status.role == Role::Primary => {
            Some(standby_of(client, local, &peer.endpoint))
        }
        _ => None,
    };
    let paused_by = pause_files
        .iter()
        .find(|path| effects::pause_file_present(path))
        .cloned();
    Observed {
        local: local_status,
        peer: peer_status,
        standby,
        may_promote,
        paused_by,
    }
}

/// Whether the peer user may run pg_promote() (the release grants it to the
/// replication role), asked before anything is changed.
fn may_promote(client: &Client, peer: &ConnectOptions) -> Result<bool, Failure> {
    let rows = client.connect(peer)?.text_rows(
        "SELECT has_function_privilege('pg_catalog.pg_promote(boolean, integer)', 'EXECUTE')",
    )?;
    Ok(rows.first().and_then(|row| row.first()).cloned().flatten() == Some("t".to_string()))
}

/// The walsender serving `peer` on the local primary: the one connected from
/// the peer's address when `peer` is named by address (a pair's primary has
/// one standby, but a backup may stream too), the best streaming one when it
/// is named by host name.
fn standby_of(
    client: &Client,
    local: &ConnectOptions,
    peer: &Endpoint,
) -> Result<Option<Standby>, Failure> {
    // An address that parsed as one is safe to put in the statement as it is.
    let from_peer = match peer.host.parse::<IpAddr>() {
        Ok(address) => format!("WHERE client_addr = '{address}'::inet"),
        Err(_) => String::new(),
    };
    let sql = format!(
        "SELECT state, (pg_current_wal_lsn() - flush_lsn)::bigint FROM pg_stat_replication \
         {from_peer} ORDER BY state = 'streaming' DESC, 2 ASC NULLS LAST LIMIT 1"
    );
    let rows = client.connect(local)?.text_rows(&sql)?;
    Ok(rows.into_iter().next().map(|row| {
        let column = |i: usize| row.get(i).cloned().flatten();
        Standby {
            state: column(0).unwrap_or_default(),
            lag_bytes: column(1).and_then(|text| text.parse().ok()),
        }
    }))
}

/// CHECKPOINT on the local node: the shutdown checkpoint that follows then
/// has little left to write, so the server stops (and writes stop) sooner.
pub fn checkpoint(
    client: &Client,
    local: &ConnectOptions,
    timeout: Duration,
) -> Result<(), Failure> {
    client.connect_within(local, timeout)?.execute("CHECKPOINT")
}

/// Runs the stop command, then waits (within `timeout` in all) until no
/// postmaster runs on `data_dir`: its walsenders have then sent every record
/// to the connected standby. Returns what pg_control says then.
pub fn stop(command: &str, data_dir: &Path, timeout: Duration) -> Result<ControlFile, String> {
    let started = Instant::now();
    let succeeded = effects::run_command("stop command", command, timeout);
    loop {
        if !postmaster_runs(data_dir) {
            return control::read(data_dir).map_err(|err| {
                format!(
                    "the local server stopped, but {}/global/pg_control cannot be read: {err}",
                    data_dir.display()
                )
            });
        }
        if started.elapsed() >= timeout {
            let command_said = if succeeded {
                "it exited 0"
            } else {
                "it failed (logged above)"
            };
            return Err(format!(
                "the local server still runs {} s after the stop command `{command}` ({command_said})",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Whether postmaster.pid names a live postgres process.
fn postmaster_runs(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    text.lines()
        .next()
        .and_then(|line| line.trim().parse::<u32>().ok())
        .is_some_and(|pid| pgcore::os::alive_named(pid, &["postgres", "postmaster"]))
}

/// Asks the peer until it has received everything this node wrote, was found
/// promoted without it, or `timeout` passed (the last answer then).
pub fn wait_received(
    client: &Client,
    peer: &ConnectOptions,
    last: &ControlFile,
    timeout: Duration,
) -> Received {
    let started = Instant::now();
    let options = bounded(peer);
    loop {
        let status = client.probe_once(&options, Detail::Full);
        let history = match &status {
            Ok(status) if status.role == Role::Primary => history_of(client, &options),
            _ => None,
        };
        let answer = received(&status, history.as_ref(), last);
        if !matches!(answer, Received::NotYet(_)) || started.elapsed() >= timeout {
            return answer;
        }
        std::thread::sleep(POLL);
    }
}

fn history_of(client: &Client, peer: &ConnectOptions) -> Option<History> {
    let session = client.connect(peer).ok()?;
    pgcore::history::read(&session).ok()
}

/// Promotes the peer: pg_promote() as the peer user, without its own wait,
/// then asks every 10 ms until the peer takes writes, within `timeout`. A
/// peer its monitor promoted meanwhile makes pg_promote() fail (recovery is
/// over): it counts as promoted.
pub fn promote(
    client: &Client,
    peer: &ConnectOptions,
    timeout: Duration,
) -> Result<&'static str, String> {
    let deadline = Instant::now() + timeout;
    let options = bounded(peer);
    let asked = client
        .connect(&options)
        .and_then(|session| session.text_rows("SELECT pg_promote(wait => false)"));
    loop {
        let answer = client.probe_once(&options, Detail::Role);
        match (&answer, &asked) {
            (Ok(status), _) if status.role == Role::Primary && status.read_only != Some(true) => {
                return Ok(if asked.is_ok() {
                    "pg_promote()"
                } else {
                    "promoted meanwhile, by its monitor"
                });
            }
            (Ok(status), Err(failure)) if status.role == Role::Replica => {
                return Err(format!("pg_promote() failed: {failure}"));
            }
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "the peer does not take writes {} s after pg_promote(): {}",
                    timeout.as_secs(),
                    crate::nodes::describe(&answer)
                ));
            }
            _ => std::thread::sleep(effects::PROMOTION_POLL),
        }
    }
}

/// Asks the local node until it answers as a replica whose WAL receiver
/// streams, until `deadline`; otherwise its last answer, described.
pub fn wait_streaming(
    client: &Client,
    local: &ConnectOptions,
    deadline: Instant,
) -> Result<Status, String> {
    let options = bounded(local);
    loop {
        let answer = client.probe_once(&options, Detail::Full);
        if let Ok(status) = &answer {
            if status.role == Role::Replica && status.wal_receiver_streaming == Some(true) {
                return Ok(status.clone());
            }
        }
        if Instant::now() >= deadline {
            return Err(crate::nodes::describe(&answer));
        }
        std::thread::sleep(POLL);
    }
}

/// Both nodes as they answer now, for a message that says what was left.
pub fn state_now(client: &Client, local: &ConnectOptions, peer: &ConnectOptions) -> String {
    let describe = |options: &ConnectOptions| {
        crate::nodes::describe(&client.probe_once(&bounded(options), Detail::Full))
    };
    format!(
        "now this node is {}, the peer {}",
        describe(local),
        describe(peer)
    )
}

/// `options` with each question bounded for a poll.
fn bounded(options: &ConnectOptions) -> ConnectOptions {
    let mut options = options.clone();
    options.connect_timeout = options.connect_timeout.min(QUESTION_TIMEOUT);
    options
}
