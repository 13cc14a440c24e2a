//! One throwaway PostgreSQL server: a primary, or a streaming replica of one.

use std::fs;
use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::os::{chown_to_user, command_as_user, free_port, pg_bin, INITDB_OPTIONS};
use crate::server::Server;

/// The superuser every test node is created with.
pub const SUPERUSER: &str = "postgres";

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

    /// `ssl = on` with `server`'s certificate and key, and `ca` as the CA
    /// that client certificates must chain to.
    pub fn tls(self, server: &crate::tls::CertFiles, ca: &Path) -> Self {
        let quoted = |path: &Path| format!("'{}'", path.display());
        self.setting("ssl", "on")
            .setting("ssl_cert_file", &quoted(&server.certificate))
            .setting("ssl_key_file", &quoted(&server.private_key))
            .setting("ssl_ca_file", &quoted(ca))
    }

    /// A pg_hba.conf line placed before the kit's trust lines, so it wins.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_string());
        self
    }
}

/// A PostgreSQL server in a temp dir on a loopback port. Dropping it stops the
/// server (immediate shutdown) and deletes its files. Everything a
/// [`Server`] does (stop, kill9, promote, connect, ...) works on a node.
pub struct Node {
    // Declared first so it is dropped first: the server stops before its files go.
    server: Server,
    root: TempDir,
}

impl Deref for Node {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
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
                .args(INITDB_OPTIONS),
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
        let server = Server::new(
            root.path().join("data"),
            socket_dir,
            root.path().join("postgres.log"),
            free_port(),
            SUPERUSER,
        );
        Node { server, root }
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
            self.set_port(free_port());
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
        self.pg_ctl_start("", wait)
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
