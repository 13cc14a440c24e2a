//! One PostgreSQL server on a data directory, whoever made it (the kit's
//! [`Node`](crate::Node), or a program under test such as pg-bootstrap):
//! pg_ctl, crashes, queries as its superuser, and its log for failure messages.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use postgres::{Client, NoTls, SimpleQueryMessage};

use pgcore::os::children_of;

use crate::os::{command_as_user, pg_bin};
use crate::wait_for;

/// How long a server may take to start, stop or promote before a test fails.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// A server's data directory, socket directory, log and loopback port. Dropping
/// it stops the server (immediate shutdown), so no test leaves one running.
pub struct Server {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    port: AtomicU16,
    superuser: String,
}

impl Server {
    pub fn new(
        data_dir: PathBuf,
        socket_dir: PathBuf,
        log_file: PathBuf,
        port: u16,
        superuser: &str,
    ) -> Server {
        Server {
            data_dir,
            socket_dir,
            log_file,
            port: AtomicU16::new(port),
            superuser: superuser.to_string(),
        }
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// Moves the server to another port (before it starts, e.g. after a clash).
    pub fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::SeqCst);
    }

    /// `127.0.0.1:<port>`, as the release's tools take nodes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// Runs `pg_ctl --pgdata <data dir> ARGS` as the unprivileged user.
    pub fn pg_ctl(&self, args: &[&str]) -> Output {
        command_as_user(&pg_bin().path("pg_ctl"))
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("cannot run pg_ctl")
    }

    /// `pg_ctl start` on the server's port and socket dir with extra `postgres`
    /// options, logging to its log file; waits for connections when `wait`.
    pub fn pg_ctl_start(&self, extra_options: &str, wait: bool) -> Output {
        let options = format!(
            "-p {} -k {} {extra_options}",
            self.port(),
            self.socket_dir.display()
        );
        let log = self.log_file.display().to_string();
        self.pg_ctl(&[
            "--log",
            &log,
            "-o",
            &options,
            "--timeout",
            "60",
            if wait { "--wait" } else { "--no-wait" },
            "start",
        ])
    }

    /// Stops the server with the given shutdown mode (`smart`, `fast`, `immediate`).
    pub fn stop(&self, mode: &str) {
        let output = self.pg_ctl(&["--mode", mode, "--wait", "--timeout", "60", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed:\n{}",
            self.log_tail()
        );
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill9(&self) {
        let pid = self.postmaster_pid().expect("the server is not running");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -KILL {pid} failed");
        wait_for("the killed postmaster to vanish", SERVER_TIMEOUT, || {
            !process_alive(pid)
        });
    }

    /// Stops (SIGSTOP) the postmaster and every process it started, as a
    /// storage stall or a paused VM would: connections are accepted by the
    /// kernel, but nothing answers. Returns the stopped pids.
    pub fn freeze(&self) -> Vec<u32> {
        let postmaster = self.postmaster_pid().expect("the server is not running");
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        signal_each(&pids, "-STOP");
        pids
    }

    /// Resumes (SIGCONT) what [`Server::freeze`] stopped, those still alive.
    pub fn thaw(pids: &[u32]) {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&pid| process_alive(pid))
            .collect();
        signal_each(&alive, "-CONT");
    }

    /// Promotes a replica and waits until it accepts writes.
    pub fn promote(&self) {
        let output = self.pg_ctl(&["--wait", "--timeout", "60", "promote"]);
        assert!(
            output.status.success(),
            "pg_ctl promote failed:\n{}",
            self.log_tail()
        );
    }

    /// The postmaster's pid from postmaster.pid, if the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// A client connected as the superuser over TCP.
    pub fn connect(&self) -> Client {
        self.try_connect().unwrap_or_else(|err| {
            panic!(
                "cannot connect to {}: {err}\n{}",
                self.endpoint(),
                self.log_tail()
            )
        })
    }

    pub fn try_connect(&self) -> Result<Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port())
            .user(&self.superuser)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10))
            .connect(NoTls)
    }

    /// Runs SQL statements as the superuser, panicking on error.
    pub fn execute(&self, sql: &str) {
        self.connect()
            .batch_execute(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// The first column of every row of `sql`, as text (NULLs left out).
    pub fn column(&self, sql: &str) -> Vec<String> {
        self.connect()
            .simple_query(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    }

    /// The first column of the first row of `sql`, as text (NULL → None).
    pub fn query_text(&self, sql: &str) -> Option<String> {
        let rows = self
            .connect()
            .simple_query(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
        rows.iter().find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })?
    }

    /// The first column of the first row of `sql`, panicking if there is none.
    pub fn value(&self, sql: &str) -> String {
        self.column(sql)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{sql} returned no row"))
    }

    /// Waits until this replica has replayed everything `primary` wrote so far.
    pub fn wait_caught_up(&self, primary: &Server) {
        let lsn = primary.value("SELECT pg_current_wal_lsn()");
        let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        wait_for(
            &format!("{} to replay {lsn}", self.endpoint()),
            SERVER_TIMEOUT,
            || {
                self.try_connect()
                    .ok()
                    .and_then(|mut client| client.query_one(&caught_up, &[]).ok())
                    .map(|row| row.get::<_, bool>(0))
                    .unwrap_or(false)
            },
        );
    }

    /// Waits until this replica's WAL receiver streams.
    pub fn wait_streaming(&self) {
        wait_for(
            &format!("{} to stream", self.endpoint()),
            SERVER_TIMEOUT,
            || {
                self.try_connect()
                    .ok()
                    .and_then(|mut client| {
                        client
                            .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                            .ok()
                    })
                    .flatten()
                    .map(|row| row.get::<_, String>(0) == "streaming")
                    .unwrap_or(false)
            },
        );
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some() {
            let _ = self.pg_ctl(&["--mode", "immediate", "--wait", "--timeout", "30", "stop"]);
        }
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn signal_each(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill {signal} {pids:?} failed");
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn process_alive(pid: u32) -> bool {
    pgcore::os::process_info(pid).is_some_and(|process| !process.is_zombie())
}
