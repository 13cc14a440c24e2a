//! Operating-system pieces: where the PostgreSQL binaries are, which user runs
//! them, free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory with `initdb`, `pg_ctl`, `postgres`, `pg_basebackup`, ...
#[derive(Debug)]
pub struct PgBin {
    pub dir: PathBuf,
}

impl PgBin {
    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    /// Whether this PostgreSQL's initdb has `option` (its --help lists it):
    /// `--no-data-checksums` exists from 18 on, where checksums became the default.
    pub fn initdb_has(&self, option: &str) -> bool {
        let help = Command::new(self.path("initdb"))
            .arg("--help")
            .output()
            .expect("cannot run initdb --help");
        String::from_utf8_lossy(&help.stdout).contains(option)
    }
}

/// The initdb options of every test cluster: predictable encoding and
/// collation, and no fsync (throwaway data).
pub const INITDB_OPTIONS: [&str; 6] = [
    "--encoding",
    "UTF8",
    "--locale",
    "C",
    "--no-sync",
    "--no-instructions",
];

/// Found once per test process: `PG_BINDIR`, else `pg_config --bindir`
/// (Debian keeps the server binaries off PATH, under /usr/lib/postgresql/N/bin).
pub fn pg_bin() -> &'static PgBin {
    static BIN: OnceLock<PgBin> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = match std::env::var_os("PG_BINDIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let output = Command::new("pg_config")
                    .arg("--bindir")
                    .output()
                    .expect("cannot run pg_config: install PostgreSQL or set PG_BINDIR");
                assert!(output.status.success(), "pg_config --bindir failed");
                PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
            }
        };
        assert!(
            dir.join("initdb").exists(),
            "no initdb in {} (set PG_BINDIR to the PostgreSQL server binaries)",
            dir.display()
        );
        PgBin { dir }
    })
}

/// The unprivileged user PostgreSQL runs as when the tests run as root.
pub type RunAs = pgcore::os::User;

/// `Some(user)` when running as root (PostgreSQL refuses root), else `None`.
pub fn run_as_user() -> Option<&'static RunAs> {
    static USER: OnceLock<Option<RunAs>> = OnceLock::new();
    USER.get_or_init(|| {
        if !pgcore::os::running_as_root() {
            return None;
        }
        let name = std::env::var("PGTEST_USER").unwrap_or_else(|_| "vcap".to_string());
        Some(RunAs::lookup(&name).unwrap_or_else(|err| {
            panic!(
                "running as root, but {err}: create the user (useradd {name}) or set PGTEST_USER"
            )
        }))
    })
    .as_ref()
}

/// A command for `program` that runs as the unprivileged user when we are root,
/// with that user's HOME (pg_basebackup -R would otherwise record /root/.pgpass).
pub fn command_as_user(program: &Path) -> Command {
    match run_as_user() {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program)
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
            command
        }
        None => Command::new(program),
    }
}

/// Gives `path` to the unprivileged user, so PostgreSQL can write there.
pub fn chown_to_user(path: &Path) {
    if let Some(user) = run_as_user() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|err| panic!("cannot chown {}: {err}", path.display()));
    }
}

/// A loopback port that was free a moment ago. Callers retry on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// The libpq variables a program under test reads: removed from its
/// environment so the test machine's own settings cannot steer it.
pub const LIBPQ_VARIABLES: [&str; 12] = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGCONNECT_TIMEOUT",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
];

/// A command for `program` without the libpq variables or `extra` ones, and
/// with a HOME that holds no `.pgpass`.
pub fn clean_command(program: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(program);
    for variable in LIBPQ_VARIABLES.iter().chain(extra) {
        command.env_remove(variable);
    }
    command.env("HOME", "/nonexistent");
    command
}
