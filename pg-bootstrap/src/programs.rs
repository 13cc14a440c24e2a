//! Running PostgreSQL's programs (initdb, pg_basebackup, pg_rewind) as the
//! data's owner, with every wait bounded and every child cleaned up.
//!
//! PostgreSQL refuses to run as root, and the BOSH ctl scripts run as root:
//! each program runs as the `--run-as` user (uid, gid, HOME of that user, no
//! supplementary groups of ours). A child gets a clean environment so that
//! nothing of the caller's (PGPASSWORD, PGHOST, a locale) changes what it does;
//! its password comes from the passfile named in `PGPASSFILE`, never argv.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use pgcore::logln;
use pgcore::os::{stop_group, User};

use crate::cancel::Cancel;

/// The PostgreSQL programs of one installation and how to run them.
#[derive(Clone, Debug)]
pub struct Programs {
    pub bin: PathBuf,
    /// The user to switch to; `None` runs them as ourselves.
    pub user: Option<User>,
    /// Named in `PGPASSFILE` for every child.
    pub passfile: Option<PathBuf>,
}

impl Programs {
    /// A command for `program` in a clean environment, as the data's owner,
    /// in a process group of its own so that it can be stopped with its children.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            // English messages, whatever the caller's locale: they end up in our errors.
            .env("LC_ALL", "C")
            // The caller's cwd (often /root) may be closed to the data's owner;
            // initdb fails when it cannot identify its current directory.
            .current_dir("/")
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(user) = &self.user {
            command
                .uid(user.uid)
                .gid(user.gid)
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        } else if let Some(home) = std::env::var_os("HOME") {
            command.env("HOME", home);
        }
        if let Some(passfile) = &self.passfile {
            command.env("PGPASSFILE", passfile);
        }
        die_with_parent(&mut command);
        command
    }
}

/// Makes the child die (SIGKILL) if we do: an orphaned pg_basebackup or
/// pg_rewind would go on writing into a directory the next prepare reuses.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec (after the
    // uid/gid change, which would otherwise clear the setting) and calls only
    // async-signal-safe functions.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
}

/// Bounds on a child's run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Stop the child when it has read and written nothing for this long
    /// (a frozen source server, a black-holed link).
    pub stall: Duration,
}

/// How many of a child's last stderr lines an error message quotes.
const TAIL_LINES: usize = 3;

/// How often a child's progress reports are logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs `command` to completion, logging each line it writes to stderr.
///
/// Fails with the program's last stderr lines when it exits non-zero, and stops
/// it (SIGTERM, then SIGKILL, to its whole process group) when it stalls for
/// `limits.stall` or when `cancel` is raised.
pub fn run(
    command: &mut Command,
    what: &str,
    limits: Limits,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let reader = child.stderr.take().map(|stderr| {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || forward_stderr(stderr, &tail))
    });
    let outcome = supervise(&mut child, what, limits, cancel);
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let status = outcome?;
    if status.success() {
        return Ok(());
    }
    let lines: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
    let code = match status.code() {
        Some(code) => format!("exited {code}"),
        None => "was killed by a signal".to_string(),
    };
    if lines.is_empty() {
        bail!("{what} {code}")
    }
    bail!("{what} {code}: {}", lines.join(" / "))
}

/// Logs what the child writes to stderr, line by line, as it comes. A line
/// ended by `\r` is a progress report the next one overwrites (pg_rewind
/// --progress): those are logged at most every [`PROGRESS_EVERY`].
fn forward_stderr(mut stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>) {
    let mut line = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut progress_logged: Option<Instant> = None;
    let mut emit = |bytes: &[u8], progress: bool| {
        let text = String::from_utf8_lossy(bytes).trim().to_string();
        if text.is_empty() {
            return;
        }
        if progress {
            if progress_logged.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return;
            }
            progress_logged = Some(Instant::now());
        }
        logln!("{text}");
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    };
    loop {
        let read = match stderr.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &buffer[..read] {
            if byte == b'\n' || byte == b'\r' {
                emit(&line, byte == b'\r');
                line.clear();
            } else {
                line.push(byte);
            }
        }
    }
    emit(&line, false);
}

/// Waits for `child`, watching for stalls and cancellation.
fn supervise(
    child: &mut Child,
    what: &str,
    limits: Limits,
    cancel: &Cancel,
) -> anyhow::Result<std::process::ExitStatus> {
    let pid = child.id();
    let mut last_progress = io_counter(pid);
    let mut progressed_at = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for a child")? {
            return Ok(status);
        }
        if cancel.is_set() {
            stop_group(child, STOP_GRACE);
            bail!("{what} was stopped: interrupted by a signal");
        }
        let progress = io_counter(pid);
        if progress != last_progress || progress.is_none() {
            last_progress = progress;
            progressed_at = Instant::now();
        } else if progressed_at.elapsed() >= limits.stall {
            stop_group(child, STOP_GRACE);
            return Err(anyhow!(
                "{what} was stopped: it read and wrote nothing for {:.0} s (is the source server frozen or cut off?)",
                limits.stall.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes the process has read and written so far (sockets included), from
/// /proc/PID/io; `None` where the kernel does not let us read it.
fn io_counter(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some(field("rchar:")? + field("wchar:")?)
}

/// How long a stopped child's process group gets to end after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> Programs {
        Programs {
            bin: PathBuf::from("/bin"),
            user: None,
            passfile: None,
        }
    }

    fn limits(stall_ms: u64) -> Limits {
        Limits {
            stall: Duration::from_millis(stall_ms),
        }
    }

    #[test]
    fn a_failing_program_is_reported_with_its_last_stderr_lines() {
        let mut command = shell().command("sh");
        command.args(["-c", "echo first >&2; echo second >&2; exit 3"]);
        let error = run(&mut command, "sh", limits(10_000), &Cancel::default()).unwrap_err();
        assert_eq!(error.to_string(), "sh exited 3: first / second");
    }

    #[test]
    fn progress_reports_are_logged_sparingly() {
        let mut command = shell().command("sh");
        command.args(["-c", r"printf '1%%\r2%%\r3%%\rdone\n' >&2; exit 1"]);
        let error = run(&mut command, "sh", limits(10_000), &Cancel::default()).unwrap_err();
        // 2% and 3% came within PROGRESS_EVERY of 1%: they are not logged.
        assert_eq!(error.to_string(), "sh exited 1: 1% / done");
    }

    #[test]
    fn a_last_line_without_a_line_break_is_kept() {
        let mut command = shell().command("sh");
        command.args(["-c", "printf 'first\\nlast' >&2; exit 1"]);
        let error = run(&mut command, "sh", limits(10_000), &Cancel::default()).unwrap_err();
        assert_eq!(error.to_string(), "sh exited 1: first / last");
    }

    #[test]
    fn the_child_environment_is_clean() {
        // cargo sets it for the test process (no set_var: other tests run
        // on other threads of this process).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let mut command = shell().command("sh");
        command.args([
            "-c",
            "test -z \"$CARGO_MANIFEST_DIR\" && test \"$LC_ALL\" = C",
        ]);
        run(&mut command, "sh", limits(10_000), &Cancel::default())
            .expect("the child saw the caller's environment");
    }

    #[test]
    fn a_stalled_program_is_stopped_with_its_children() {
        let mut command = shell().command("sh");
        // The grandchild would outlive a kill of the shell alone.
        command.args(["-c", "sleep 30 & sleep 30"]);
        let started = Instant::now();
        let error = run(&mut command, "sleeper", limits(500), &Cancel::default()).unwrap_err();
        assert!(
            error.to_string().contains("read and wrote nothing"),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stalled child was not stopped"
        );
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        // PR_SET_PDEATHSIG fires when the spawning thread ends; in prepare
        // that is the main thread, so the child dies with the process.
        let pid = std::thread::spawn(|| {
            let mut command = shell().command("sleep");
            command.arg("30");
            command.spawn().expect("cannot start sleep").id()
        })
        .join()
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let gone = || pgcore::os::process_info(pid).is_none_or(|process| process.is_zombie());
        while !gone() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            gone(),
            "the child {pid} outlived the thread that started it"
        );
    }

    #[test]
    fn a_cancelled_run_stops_the_child() {
        let cancel = Cancel::default();
        cancel.raise();
        let mut command = shell().command("sh");
        command.args(["-c", "sleep 30"]);
        let error = run(&mut command, "sleeper", limits(60_000), &cancel).unwrap_err();
        assert!(error.to_string().contains("interrupted"), "{error}");
    }
}
