//! The effects: probe, check witnesses, promote, refuse or allow writes,
//! stop a hung server, step down, fence, set synchronous commits. Each does
//! one thing, is bounded in time, and logs what it did.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use pgcore::os::{self, process};
use pgcore::{logln, Client, ConnectOptions, Detail, Endpoint, Failure, HeldSession, Status};

use crate::decide::{Evidence, Witnesses};

/// One full status of a node (role, WAL positions, replication and
/// synchronous state) in one round trip over the connection `held` keeps
/// between checks (see [`HeldSession`]), bounded by the connect timeout.
pub fn probe_held(held: &mut HeldSession, options: &ConnectOptions) -> Result<Status, Failure> {
    held.status(options, Detail::Full, options.connect_timeout)
}

/// Plain TCP reachability of each witness, all at once, each bounded by `timeout`.
pub fn probe_witnesses(client: &Client, witnesses: &[Endpoint], timeout: Duration) -> Witnesses {
    Witnesses {
        reached: client.reachable(witnesses, timeout),
        total: witnesses.len(),
    }
}

/// How to promote with `pg_ctl` when `pg_promote()` cannot be used.
#[derive(Clone, Debug)]
pub struct PgCtl {
    pub path: PathBuf,
    pub data_dir: PathBuf,
}

/// Promotes the local replica: `SELECT pg_promote()`, falling
/// back to `pg_ctl promote` when configured. Returns how it was done.
///
/// A node someone else promoted meanwhile (an operator's `pg-monitor
/// switchover` promotes the replica while its own monitor may be about to)
/// makes pg_promote fail, as recovery is over: that is a promotion done, not
/// a failure, so neither side stops at it.
pub fn promote(
    client: &Client,
    local: &ConnectOptions,
    fallback: Option<&PgCtl>,
    timeout: Duration,
) -> anyhow::Result<&'static str> {
    let started = Instant::now();
    let first = match pg_promote(client, local, timeout) {
        Ok(true) => {
            logln!(
                "promoted with pg_promote() in {:.3} s",
                started.elapsed().as_secs_f64()
            );
            return Ok("pg_promote()");
        }
        Ok(false) => format!("pg_promote() did not finish within {} s", timeout.as_secs()),
        Err(failure) => format!("pg_promote() failed: {failure}"),
    };
    if in_recovery(client, local) == Some(false) {
        logln!("{first}, but the node is no longer in recovery: it was promoted meanwhile");
        return Ok("already promoted");
    }
    let Some(pg_ctl) = fallback else {
        bail!("{first}; no pg_ctl fallback configured (--pg-ctl, --data-dir)");
    };
    logln!("{first}; falling back to {} promote", pg_ctl.path.display());
    pg_ctl_promote(pg_ctl, timeout).with_context(|| first.clone())?;
    logln!(
        "promoted with pg_ctl in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok("pg_ctl promote")
}

/// Whether the node is in recovery, if it answers.
fn in_recovery(client: &Client, options: &ConnectOptions) -> Option<bool> {
    let status = client.probe_once(options, Detail::Role).ok()?;
    status.in_recovery
}

/// How often a promotion asked for is looked at until recovery has ended
/// (the monitor's of its own node, the switchover's of the peer).
pub const PROMOTION_POLL: Duration = Duration::from_millis(10);

/// `pg_promote(wait => false)`, then whether recovery ended within
/// `timeout`, asked every 10 ms: pg_promote's own wait looks only every
/// 100 ms, a tenth of a second added to every failover's write gap.
fn pg_promote(client: &Client, local: &ConnectOptions, timeout: Duration) -> Result<bool, Failure> {
    let deadline = Instant::now() + timeout;
    let session = client.connect_within(local, timeout + local.connect_timeout)?;
    let asked = session.text_rows("SELECT pg_promote(wait => false)")?;
    if asked
        .first()
        .and_then(|row| row.first())
        .cloned()
        .flatten()
        .as_deref()
        != Some("t")
    {
        return Ok(false);
    }
    loop {
        let rows = session.text_rows("SELECT pg_is_in_recovery()")?;
        if rows
            .first()
            .and_then(|row| row.first())
            .cloned()
            .flatten()
            .as_deref()
            == Some("f")
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(PROMOTION_POLL);
    }
}

/// `pg_ctl promote --wait`, as the data directory's owner when we run as root
/// (PostgreSQL's files belong to it, and pg_ctl refuses root).
fn pg_ctl_promote(pg_ctl: &PgCtl, timeout: Duration) -> anyhow::Result<()> {
    let mut command = Command::new(&pg_ctl.path);
    command
        .arg("promote")
        .arg("--pgdata")
        .arg(&pg_ctl.data_dir)
        .args(["--wait", "--timeout", &timeout.as_secs().max(1).to_string()])
        .stdin(Stdio::null())
        .stdout(stderr_for_child());
    if os::running_as_root() {
        let owner = std::fs::metadata(&pg_ctl.data_dir).with_context(|| {
            format!(
                "cannot stat the data directory {}",
                pg_ctl.data_dir.display()
            )
        })?;
        // std drops supplementary groups when it changes the uid of a root child.
        command.uid(owner.uid()).gid(owner.gid());
    }
    let what = format!("{} promote", pg_ctl.path.display());
    match run_bounded(&mut command, timeout + Duration::from_secs(5))
        .with_context(|| format!("cannot run {what}"))?
    {
        Outcome::Exited(status) if status.success() => Ok(()),
        Outcome::Exited(status) => Err(anyhow!("{what} {}", describe_status(status))),
        Outcome::TimedOut => Err(anyhow!(
            "{what} did not finish within {} s and was killed",
            timeout.as_secs() + 5
        )),
    }
}

/// Sets `synchronous_standby_names` to `*` (any standby) or empty, with
/// ALTER SYSTEM (postgresql.auto.conf, so it survives restarts) and a reload.
pub fn set_synchronous(
    client: &Client,
    local: &ConnectOptions,
    synchronous: bool,
) -> Result<(), Failure> {
    let value = if synchronous { "*" } else { "" };
    run_statements(
        client,
        local,
        &[
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{value}'"),
            "SELECT pg_reload_conf()",
        ],
    )?;
    logln!("synchronous_standby_names = '{value}' (ALTER SYSTEM, configuration reloaded)");
    Ok(())
}

/// Makes the local primary stop taking writes at once:
/// `default_transaction_read_only` (persisted with ALTER SYSTEM, so a
/// restart does not undo it; [`allow_writes`] resets it, for the monitor and
/// for `pg-monitor recover`) and
/// the client sessions ended. A primary whose lease lapsed must acknowledge
/// nothing its promoted peer will not have; in a split-brain, the node that
/// steps down or is fenced must not acknowledge writes meanwhile.
///
/// A node in recovery is left alone: it takes no writes, and the setting
/// persisted on a replica would outlive a later promotion, leaving a primary
/// that refuses writes with nothing to lift it (the watchdog can act just as
/// a killed primary comes back as its peer's replica).
pub fn refuse_writes(client: &Client, local: &ConnectOptions) -> Result<(), Failure> {
    let session = client.connect_within(local, local.connect_timeout * 2)?;
    let in_recovery = session.text_rows("SELECT pg_is_in_recovery()")?;
    if in_recovery
        .first()
        .and_then(|row| row.first())
        .cloned()
        .flatten()
        == Some("t".into())
    {
        logln!("local node is a replica (in recovery): it takes no writes, nothing to refuse");
        return Ok(());
    }
    [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    ]
    .iter()
    .try_for_each(|sql| session.execute(sql))?;
    logln!(
        "local node now refuses writes (default_transaction_read_only = on, client sessions ended)"
    );
    Ok(())
}

/// Lifts [`refuse_writes`]: the lease is confirmed again and the node is
/// the only primary. ALTER SYSTEM RESET, so an operator's own setting in
/// postgresql.conf applies again.
pub fn allow_writes(client: &Client, local: &ConnectOptions) -> Result<(), Failure> {
    run_statements(
        client,
        local,
        &[
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ],
    )?;
    logln!("local node takes writes again (default_transaction_read_only reset)");
    Ok(())
}

/// Runs `statements` on the local node, one round trip each (ALTER SYSTEM
/// refuses to run inside the implicit transaction of a multi-statement
/// query), all within twice the connect timeout.
fn run_statements(
    client: &Client,
    local: &ConnectOptions,
    statements: &[&str],
) -> Result<(), Failure> {
    let session = client.connect_within(local, local.connect_timeout * 2)?;
    statements.iter().try_for_each(|sql| session.execute(sql))
}

/// SIGKILL to the server of `data_dir` (the postmaster its postmaster.pid
/// names) and to every process it started, stopped ones included: a server
/// that cannot even be asked to refuse writes must not resume taking them.
/// Returns how many processes were signalled (0: none ran).
pub fn kill_server(data_dir: &Path) -> anyhow::Result<usize> {
    let pidfile = data_dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pidfile) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", pidfile.display())),
    };
    let postmaster: u32 = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("{} names no pid", pidfile.display()))?;
    if !process::alive_named(postmaster, &["postgres", "postmaster"]) {
        return Ok(0);
    }
    let mut pids = process::children_of(postmaster);
    pids.push(postmaster);
    for &pid in &pids {
        process::kill(pid);
    }
    Ok(pids.len())
}

/// The fence record (`--fence-record`): when and why this node fenced, and
/// the evidence it had, as one JSON object.
pub fn fence_record(evidence: &Evidence, message: &str) -> String {
    let record = serde_json::json!({
        "fenced_at": pgcore::log::rfc3339_now(),
        "why": "split-brain",
        "message": message,
        "local_timeline": evidence.local_timeline,
        "peer_timeline": evidence.peer_timeline,
        "local_refuses_writes": evidence.local_refuses,
        "peer_refuses_writes": evidence.peer_refuses,
    });
    format!("{record}\n")
}

/// Runs each fence command with `/bin/sh -c`, in order, each bounded by
/// `timeout`, logging each exit. Returns how many succeeded.
pub fn fence(commands: &[String], timeout: Duration) -> usize {
    if commands.is_empty() {
        logln!("no --fence-cmd configured: nothing to run; stopping the monitor");
        return 0;
    }
    let mut succeeded = 0;
    for (number, command_line) in commands.iter().enumerate() {
        let label = format!("fence command {}/{}", number + 1, commands.len());
        if run_command(&label, command_line, timeout) {
            succeeded += 1;
        }
    }
    succeeded
}

/// Runs `command_line` with `/bin/sh -c`, bounded by `timeout`, logging what
/// happened under `label`. Whether it exited 0.
pub fn run_command(label: &str, command_line: &str, timeout: Duration) -> bool {
    logln!("{label}: running `{command_line}`");
    let started = Instant::now();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(command_line)
        .stdin(Stdio::null())
        .stdout(stderr_for_child());
    let took = || started.elapsed().as_secs_f64();
    match run_bounded(&mut command, timeout) {
        Ok(Outcome::Exited(status)) => {
            logln!("{label} {} after {:.1} s", describe_status(status), took());
            status.success()
        }
        Ok(Outcome::TimedOut) => {
            logln!(
                "{label} did not finish within {:.1} s: killed it and its children",
                timeout.as_secs_f64()
            );
            false
        }
        Err(err) => {
            logln!("{label} could not be started: {err}");
            false
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

enum Outcome {
    Exited(ExitStatus),
    TimedOut,
}

/// Runs `command` in its own process group and kills the whole group if it
/// outlives `timeout`, so a hung `monit` or shell pipeline cannot hang us.
fn run_bounded(command: &mut Command, timeout: Duration) -> std::io::Result<Outcome> {
    let mut child = command.process_group(0).spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Outcome::Exited(status));
        }
        if Instant::now() >= deadline {
            process::kill_group(&mut child);
            return Ok(Outcome::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child's stdout goes to our stderr, so its output lands in the monitor's log.
fn stderr_for_child() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

/// Whether the pause file exists. An unreadable parent counts as present:
/// when in doubt, do not fail over.
pub fn pause_file_present(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(err) => err.kind() != std::io::ErrorKind::NotFound,
    }
}
