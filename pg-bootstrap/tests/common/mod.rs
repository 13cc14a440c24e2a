//! Test support for pg-bootstrap: nodes whose data directory pg-bootstrap
//! itself makes, laid out as on a BOSH VM (config outside the data dir, a
//! password file beside it), and a way to run the binary with a clean
//! environment.

#![allow(dead_code)]

use std::fs;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;
use testkit::{
    chown_to_user, clean_command, command_as_user, free_port, pg_bin, run_as_user, Server,
    INITDB_OPTIONS,
};

/// The replication user's password in every test: it holds the characters a
/// passfile and a conninfo must escape.
pub const REPLICATION_PASSWORD: &str = r"r'e:p\l pw ü";

/// Variables the binary reads besides libpq's; cleared so the test's
/// environment cannot steer it.
const VARIABLES: [&str; 20] = [
    "PGDATA",
    "PG_BOOTSTRAP_PG_BIN",
    "PG_BOOTSTRAP_RUN_AS",
    "PG_BOOTSTRAP_INDEX",
    "PG_BOOTSTRAP_BOOTSTRAP",
    "PG_BOOTSTRAP_PEERS",
    "PG_BOOTSTRAP_REPLICATION",
    "PG_BOOTSTRAP_GRACE",
    "PG_BOOTSTRAP_CLONE_WAIT",
    "PG_BOOTSTRAP_RETRIES",
    "PG_BOOTSTRAP_REPLICATION_USER",
    "PG_BOOTSTRAP_REPLICATION_PASSWORD_FILE",
    "PG_BOOTSTRAP_PASSFILE",
    "PG_BOOTSTRAP_INITDB_LOCALE",
    "PG_BOOTSTRAP_CLONE_MAX_RATE",
    "PG_BOOTSTRAP_STALL_TIMEOUT",
    "PG_BOOTSTRAP_SPEC",
    "PG_BOOTSTRAP_WAIT",
    "LC_ALL",
    "LANG",
];

/// The binary with none of its variables inherited.
pub fn pg_bootstrap(args: &[&str]) -> Command {
    let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-bootstrap")), &VARIABLES);
    command.args(args);
    command
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(output: Output) -> Run {
        Run {
            code: output
                .status
                .code()
                .expect("pg-bootstrap was killed by a signal"),
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }
    }

    pub fn of(command: &mut Command) -> Run {
        Run::from_output(command.output().expect("cannot run pg-bootstrap"))
    }

    /// Panics unless the run exited with `code`, showing everything it printed.
    pub fn expect_code(&self, code: i32, what: &str) -> &Run {
        assert_eq!(
            self.code, code,
            "{what}: expected exit {code}, got {}\nstdout: {}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless stdout's decision line starts with `prefix`.
    pub fn expect_decision(&self, prefix: &str) -> &Run {
        assert!(
            self.stdout.starts_with(&format!("decision: {prefix}")),
            "expected the decision {prefix:?}, got stdout {:?}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}): {}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// The superuser of clusters pg-bootstrap initialises: the user initdb runs as.
pub fn superuser() -> String {
    match run_as_user() {
        Some(user) => user.name.clone(),
        None => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
    }
}

/// `--run-as USER` when the tests run as root.
fn run_as_args() -> Vec<String> {
    match run_as_user() {
        Some(user) => vec!["--run-as".into(), user.name.clone()],
        None => vec![],
    }
}

/// A node as on a BOSH VM: `db` (the data dir, made by pg-bootstrap),
/// `pgpass` beside it, the replication password in a 0600 file, and the
/// server's config (hba, settings) outside the data dir.
pub struct Site {
    // Declared first so it is dropped first: the server stops before its files go.
    server: Server,
    root: TempDir,
    pub password_file: PathBuf,
    pub passfile: PathBuf,
    hba_file: PathBuf,
    /// `name=value` settings added to every start (they override the site's).
    settings: Vec<String>,
    /// Variables every prepare of this site runs with (TLS's).
    env: Vec<(String, PathBuf)>,
}

/// Stop, kill9, promote, connect, query... as for any test server.
impl Deref for Site {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Site {
    pub fn new() -> Site {
        Site::with_settings(&[])
    }

    /// A site whose server always starts with these extra `name=value` settings.
    pub fn with_settings(settings: &[&str]) -> Site {
        let root = tempfile::Builder::new()
            .prefix("pgboot.")
            .tempdir()
            .expect("cannot create a temp dir");
        chown_to_user(root.path());
        let socket_dir = root.path().join("run");
        fs::create_dir(&socket_dir).unwrap();
        chown_to_user(&socket_dir);
        let password_file = root.path().join("replication.password");
        fs::write(&password_file, format!("{REPLICATION_PASSWORD}\n")).unwrap();
        let hba_file = root.path().join("pg_hba.conf");
        // Only the superuser is trusted; the replication user proves its
        // password with SCRAM for everything, as between BOSH VMs.
        let hba = format!(
            "local all all trust\n\
             host all {su} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host replication all 127.0.0.1/32 scram-sha-256\n",
            su = superuser()
        );
        fs::write(&hba_file, hba).unwrap();
        let server = Server::new(
            root.path().join("db"),
            socket_dir,
            root.path().join("postgres.log"),
            free_port(),
            &superuser(),
        );
        Site {
            server,
            passfile: root.path().join("pgpass"),
            password_file,
            hba_file,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            root,
        }
    }

    /// A site that serves `server`'s certificate and takes the replication
    /// user over TLS only (the superuser, the test's own, stays plain), and
    /// whose prepare verifies its peers with verify-full against `ca`, as
    /// the postgres job does with postgres.tls.required.
    pub fn with_tls(server: &testkit::CertFiles, ca: &Path) -> Site {
        let settings = [
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", server.certificate.display()),
            format!("ssl_key_file={}", server.private_key.display()),
            format!("ssl_ca_file={}", ca.display()),
        ];
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        let mut site = Site::with_settings(&settings);
        let hba = format!(
            "local all all trust\n\
             host all {su} 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n\
             hostnossl replication all 127.0.0.1/32 reject\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl replication all 127.0.0.1/32 scram-sha-256\n",
            su = superuser()
        );
        fs::write(&site.hba_file, hba).unwrap();
        site.env = vec![
            ("PGSSLMODE".into(), PathBuf::from("verify-full")),
            ("PGSSLROOTCERT".into(), ca.to_path_buf()),
        ];
        site
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn staging(&self) -> PathBuf {
        self.root.path().join("db.staging")
    }

    /// `pg-bootstrap prepare` for this site with `extra` flags.
    pub fn prepare_command(&self, extra: &[&str]) -> Command {
        let port = self.port().to_string();
        let mut args: Vec<String> = vec![
            "prepare".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--pg-bin".into(),
            pg_bin().dir.display().to_string(),
            "--port".into(),
            port,
            "--replication-password-file".into(),
            self.password_file.display().to_string(),
            "--passfile".into(),
            self.passfile.display().to_string(),
            "--connect-timeout".into(),
            "2".into(),
        ];
        args.extend(run_as_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = pg_bootstrap(&refs);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }

    pub fn prepare(&self, extra: &[&str]) -> Run {
        Run::of(&mut self.prepare_command(extra))
    }

    /// Starts prepare in the background (its output is collected at the end).
    pub fn spawn_prepare(&self, extra: &[&str]) -> Child {
        self.prepare_command(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start pg-bootstrap")
    }

    /// Starts postgres on the data dir with the site's settings and waits until it accepts connections.
    pub fn start(&self) {
        let output = self.pg_ctl_start();
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
    }

    fn pg_ctl_start(&self) -> Output {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c hba_file={} \
             -c wal_level=replica -c max_wal_senders=10 -c wal_keep_size=256MB \
             -c hot_standby=on -c fsync=off -c shared_buffers=16MB -c max_connections=30",
            self.hba_file.display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        self.server.pg_ctl_start(&options, true)
    }

    pub fn in_recovery(&self) -> bool {
        self.value("SELECT pg_is_in_recovery()") == "t"
    }

    /// Creates the replication role with `pg-bootstrap provision`, as the ctl script does.
    pub fn provision_replication(&self) {
        let spec = self.root.path().join("provision.yml");
        fs::write(
            &spec,
            format!(
                "replication:\n  username: replication\n  password: {}\n",
                serde_json::to_string(REPLICATION_PASSWORD).unwrap()
            ),
        )
        .unwrap();
        let port = self.port().to_string();
        let su = superuser();
        Run::of(&mut pg_bootstrap(&[
            "provision",
            "--spec",
            spec.to_str().unwrap(),
            "--host",
            self.socket_dir.to_str().unwrap(),
            "--port",
            &port,
            "--user",
            &su,
        ]))
        .expect_code(0, "provisioning the replication role");
    }

    /// Initialises the data dir with initdb directly, without data checksums,
    /// as the original release did: pg_rewind cannot work on it.
    pub fn initdb_without_checksums(&self) {
        let mut initdb = command_as_user(&pg_bin().path("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(INITDB_OPTIONS);
        // From PostgreSQL 18 on, initdb turns checksums on unless told not to.
        if pg_bin().initdb_has("--no-data-checksums") {
            initdb.arg("--no-data-checksums");
        }
        let output = initdb.output().expect("cannot run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The inode of `path`: the same inode means the same directory, not a replacement.
pub fn inode(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("cannot stat {}: {err}", path.display()))
        .ino()
}

/// A primary made by `prepare` (bootstrap node, no primary among its peers)
/// and a replica cloned from it by `prepare`, both started, the replica streaming.
pub fn pair() -> (Site, Site) {
    pair_with(&[])
}

/// [`pair`] with extra settings for both servers.
pub fn pair_with(settings: &[&str]) -> (Site, Site) {
    let (primary, replica) = (Site::with_settings(settings), Site::with_settings(settings));
    start_bootstrap_node(&primary, &replica);
    replica
        .prepare(&[
            "--replication",
            "--peer",
            &primary.endpoint(),
            "--clone-wait",
            "30",
        ])
        .expect_code(0, "preparing the replica")
        .expect_decision(&format!("clone-from {}", primary.endpoint()));
    replica.start();
    replica.wait_streaming();
    (primary, replica)
}

/// `primary` made by `prepare` as the bootstrap node (no primary among its
/// peers, `replica` the only one), started, with its replication role.
pub fn start_bootstrap_node(primary: &Site, replica: &Site) {
    primary
        .prepare(&[
            "--replication",
            "--bootstrap",
            "--peer",
            &replica.endpoint(),
            "--grace",
            "0",
        ])
        .expect_code(0, "preparing the bootstrap node")
        .expect_decision("init-primary");
    primary.start();
    primary.provision_replication();
}

/// Waits for a background prepare and collects what it printed.
pub fn finish(child: Child) -> Run {
    Run::from_output(
        child
            .wait_with_output()
            .expect("cannot wait for pg-bootstrap"),
    )
}

/// Total size in bytes of the files under `dir` (0 when it does not exist).
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
