//! One throwaway PostgreSQL server: a primary, or a streaming replica of one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use postgres::{Client, NoTls};
use tempfile::TempDir;

use crate::os::{chown_to_user, command_as_user, free_port, pg_bin};
use crate::wait_for;

/// The superuser every test node is created with.
pub const SUPERUSER: &str = "postgres";

/// How long a server may take to start or stop before a test fails.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Extra settings and hba lines for a node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
}

impl NodeOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// A postgresql.conf line `name = value` (value written as given, so quote strings).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// A pg_hba.conf line placed before the kit's trust lines, so it wins.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_string());
        self
    }
}

/// A PostgreSQL server in a temp dir on a loopback port. Dropping it stops the
/// server (immediate shutdown) and deletes its files.
pub struct Node {
    root: TempDir,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    port: AtomicU16,
    log_file: PathBuf,
}

impl Node {
    /// A started primary with the kit's defaults.
    pub fn primary() -> Node {
        Self::primary_with(NodeOptions::new())
    }

    /// A started primary with extra settings or hba lines.
    pub fn primary_with(options: NodeOptions) -> Node {
        let node = Self::initialized(&options);
        node.start_on_a_free_port();
        node
    }

    /// A primary initialized (initdb, config written) but not started.
    pub fn initialized(options: &NodeOptions) -> Node {
        let node = Self::empty();
        node.run_checked(
            command_as_user(&pg_bin().path("initdb"))
                .arg("--pgdata")
                .arg(&node.data_dir)
                .args([
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--data-checksums",
                ])
                .args([
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                    "--no-instructions",
                ]),
            "initdb",
        );
        node.write_config(options);
        node
    }

    /// A started streaming replica cloned from `primary` with `pg_basebackup -R`.
    pub fn replica_of(primary: &Node) -> Node {
        Self::replica_of_with(primary, NodeOptions::new())
    }

    /// A replica with extra settings (appended after those it inherited).
    pub fn replica_of_with(primary: &Node, options: NodeOptions) -> Node {
        let node = Self::cloned_from(primary);
        node.append_settings(&options.settings);
        node.start_on_a_free_port();
        node
    }

    /// A replica cloned from `primary` but not started.
    pub fn cloned_from(primary: &Node) -> Node {
        let node = Self::empty();
        node.run_checked(
            command_as_user(&pg_bin().path("pg_basebackup"))
                .arg("--pgdata")
                .arg(&node.data_dir)
                .args(["--host", "127.0.0.1", "--port", &primary.port().to_string()])
                .args(["--username", SUPERUSER, "--wal-method", "stream"])
                .args(["--write-recovery-conf", "--checkpoint", "fast", "--no-sync"]),
            "pg_basebackup",
        );
        node
    }

    fn empty() -> Node {
        let root = tempfile::Builder::new()
            .prefix("pgtest.")
            .tempdir()
            .expect("cannot create a temp dir");
        chown_to_user(root.path());
        let socket_dir = root.path().join("socket");
        fs::create_dir(&socket_dir).expect("cannot create the socket dir");
        chown_to_user(&socket_dir);
        Node {
            data_dir: root.path().join("data"),
            log_file: root.path().join("postgres.log"),
            socket_dir,
            root,
            port: AtomicU16::new(free_port()),
        }
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:<port>`, as the release's tools take nodes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The temp dir holding this node's files; gone when the node is dropped.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    fn write_config(&self, options: &NodeOptions) {
        let socket_dir = self.socket_dir.display();
        let base = [
            ("listen_addresses", "'127.0.0.1'".to_string()),
            ("unix_socket_directories", format!("'{socket_dir}'")),
            ("wal_level", "replica".into()),
            ("max_wal_senders", "10".into()),
            ("wal_keep_size", "'64MB'".into()),
            ("hot_standby", "on".into()),
            ("wal_log_hints", "on".into()),
            // Throwaway data: speed matters more than surviving an OS crash.
            ("fsync", "off".into()),
            ("shared_buffers", "'16MB'".into()),
            ("max_connections", "40".into()),
        ];
        let base: Vec<(String, String)> = base
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        self.append_settings(&base);
        self.append_settings(&options.settings);

        let mut hba: Vec<String> = options.hba_lines.clone();
        hba.extend(
            [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ]
            .map(String::from),
        );
        fs::write(self.data_dir.join("pg_hba.conf"), hba.join("\n") + "\n")
            .expect("cannot write pg_hba.conf");
    }

    /// Appends `name = value` lines to postgresql.conf (later lines win).
    pub fn append_settings(&self, settings: &[(String, String)]) {
        let path = self.data_dir.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("cannot read postgresql.conf");
        for (name, value) in settings {
            text.push_str(&format!("{name} = {value}\n"));
        }
        fs::write(&path, text).expect("cannot write postgresql.conf");
    }

    fn start_on_a_free_port(&self) {
        // Another test may grab the port between our probe and the bind: retry.
        for _ in 0..5 {
            if self.try_start(true).status.success() {
                return;
            }
            self.port.store(free_port(), Ordering::SeqCst);
        }
        panic!(
            "cannot start postgres in {}:\n{}",
            self.data_dir.display(),
            self.log_tail()
        );
    }

    /// Starts the stopped server on its port and waits until it accepts connections.
    pub fn start(&self) {
        let output = self.try_start(true);
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
    }

    /// Starts the server without waiting for it to accept connections.
    pub fn start_no_wait(&self) {
        let output = self.try_start(false);
        assert!(
            output.status.success(),
            "pg_ctl start failed:\n{}",
            self.log_tail()
        );
    }

    fn try_start(&self, wait: bool) -> Output {
        let options = format!("-p {} -k {}", self.port(), self.socket_dir.display());
        let mut command = command_as_user(&pg_bin().path("pg_ctl"));
        command
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_file)
            .args(["-o", &options, "--timeout", "60"])
            .arg(if wait { "--wait" } else { "--no-wait" })
            .arg("start");
        command.output().expect("cannot run pg_ctl")
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
        self.try_connect()
            .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", self.endpoint()))
    }

    pub fn try_connect(&self) -> Result<Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port())
            .user(SUPERUSER)
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

    /// The first column of the first row of `sql`, as text (NULL → None).
    pub fn query_text(&self, sql: &str) -> Option<String> {
        let rows = self
            .connect()
            .simple_query(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
        rows.iter().find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })?
    }

    /// Waits until this replica's WAL receiver streams.
    pub fn wait_streaming(&self) {
        wait_for("the replica to stream", SERVER_TIMEOUT, || {
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
        });
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        command_as_user(&pg_bin().path("pg_ctl"))
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("cannot run pg_ctl")
    }

    fn run_checked(&self, command: &mut Command, what: &str) {
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
        assert!(
            output.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Node {
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

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
