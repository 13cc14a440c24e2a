//! A rendered instance installed as a BOSH VM's `/var/vcap` under a temp dir,
//! so that its scripts run as they would on the VM: what a test asserts is
//! what a script does (the flags a program gets, the files it touches), not
//! how its text reads.
//!
//! Every `/var/vcap/` path in the rendered files points into the temp dir,
//! the pg-tools package holds the release's `ctl-utils.sh`, and each program
//! the scripts call is a stub that records its arguments and succeeds.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::{repo_root, Rendered};

/// The programs the jobs' scripts run, as stubs: each appends its arguments
/// (one line per call) to `<stub>.calls`, the `PG*` variables it was given
/// to `<stub>.env` and the user it runs as to `<stub>.user`, then exits 0, or with the code in `<stub>.exit` when a
/// test wrote one ([`Vm::exit_with`]); [`Vm::stub`] makes one answer otherwise.
const STUBS: [&str; 10] = [
    "packages/pg-tools/bin/pg-bootstrap",
    "packages/pg-tools/bin/pg-role-check",
    "packages/pg-tools/bin/pg-vrrp-watch",
    "packages/postgres/bin/pg_ctl",
    "packages/postgres/bin/postgres",
    "packages/postgres/bin/psql",
    "packages/postgres/bin/pgbench",
    "packages/haproxy/bin/haproxy",
    "packages/keepalived/sbin/keepalived",
    "bosh/bin/monit",
];

/// What every stub does first: record its arguments, `PG*` variables and user.
const RECORD: &str = r#"#!/bin/bash
echo "$*" >>"$0.calls"
env | grep '^PG' | sort >"$0.env"
id -un >"$0.user"
"#;

/// What a stub does then, unless a test says otherwise ([`Vm::stub`]).
const EXIT_AS_TOLD: &str = r#"exit "$(cat "$0.exit" 2>/dev/null || echo 0)""#;

/// pg-monitor's stub also does what `bin/monitor` waits for: it writes the
/// pidfile it is given and keeps running under its name, until SIGTERM or
/// until the stub itself is removed with the temp dir. `pg-monitor recover`
/// (bin/recover) writes its arguments one a line to `<stub>.recover`, as
/// bash passed them, and exits. `pg-monitor switchover` (and
/// `consensus-switchover`) does the same in `<stub>.switchover`, says a line
/// on stdout as the real one does, and exits as `<stub>.exit` says (0
/// without it).
const MONITOR_STUB: &str = r#"#!/bin/bash
echo "$*" >>"$0.calls"
env | grep '^PG' | sort >"$0.env"
if [[ $1 == recover ]]; then printf '%s\n' "$@" >"$0.recover"; exit 0; fi
if [[ $1 == switchover || $1 == consensus-switchover ]]; then
  printf '%s\n' "$@" >"$0.switchover"
  echo "switchover: a line for the operator"
  exit "$(cat "$0.exit" 2>/dev/null || echo 0)"
fi
while (($#)); do
  if [[ $1 == --pidfile ]]; then echo $$ >"$2"; fi
  shift
done
while [[ -e $0 ]]; do sleep 0.2; done
"#;

pub struct Vm {
    dir: TempDir,
}

impl Vm {
    /// Installs the rendered jobs of one instance, with stub programs.
    pub fn install(rendered: &Rendered) -> Vm {
        let dir = tempfile::Builder::new().prefix("vm.").tempdir().unwrap();
        let vm = Vm { dir };
        // The stubs pg_ctl runs as vcap must be reachable by vcap.
        fs::set_permissions(vm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        vm.copy_rewritten(&rendered.root(), &vm.var_vcap().join("jobs"));
        let share = vm.var_vcap().join("packages/pg-tools/share");
        fs::create_dir_all(&share).unwrap();
        fs::copy(
            repo_root().join("release/src/pg-tools/share/ctl-utils.sh"),
            share.join("ctl-utils.sh"),
        )
        .unwrap();
        for stub in STUBS {
            vm.write_stub(stub, &format!("{RECORD}{EXIT_AS_TOLD}\n"));
        }
        vm.write_stub("packages/pg-tools/bin/pg-monitor", MONITOR_STUB);
        vm
    }

    /// Makes the stub `program` (a path as on the VM) run `then` (bash) after
    /// recording its call: to print an answer, or to fail on demand.
    pub fn stub(&self, program: &str, then: &str) {
        fs::write(self.path(program), format!("{RECORD}{then}\n")).unwrap();
    }

    /// The VM's `/var/vcap`.
    pub fn var_vcap(&self) -> PathBuf {
        self.dir.path().join("var/vcap")
    }

    /// A path of the VM, given as on the VM (`/var/vcap/...`).
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(self.rewrite(path))
    }

    /// Runs `script` (a path as on the VM) with `args`, as root.
    pub fn run(&self, script: &str, args: &[&str]) -> Output {
        Command::new(self.path(script))
            .args(args)
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .output()
            .unwrap_or_else(|err| panic!("cannot run {script}: {err}"))
    }

    /// Runs `script` and panics, with its output and `log` (a path as on the
    /// VM, where the script sends its own), unless it succeeds.
    pub fn run_ok(&self, script: &str, args: &[&str], log: &str) {
        let output = self.run(script, args);
        assert!(
            output.status.success(),
            "{script} {}: {}\n{}{}\n{log}:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            fs::read_to_string(self.path(log)).unwrap_or_default()
        );
    }

    /// Runs `bin/ctl start` as monit does, and waits (up to 30 s) until the
    /// start it leaves in the background (`ctl starting`) has ended: the
    /// node then is prepared, started and provisioned, or ctl.log says why not.
    pub fn start_postgres(&self) {
        self.run_ok(
            "/var/vcap/jobs/postgres/bin/ctl",
            &["start"],
            "/var/vcap/sys/log/postgres/ctl.log",
        );
        let starting = self.path("/var/vcap/sys/run/postgres/ctl-start.pid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while starting.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "bin/ctl's background start still runs after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs a POSIX sh script on the VM, paths as on the VM, and returns
    /// how it ended.
    pub fn run_shell(&self, script: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(self.rewrite(script))
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .output()
            .unwrap()
    }

    /// Runs a POSIX sh script on the VM and returns its stdout, paths as on
    /// the VM; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let output = self.run_shell(script);
        assert!(
            output.status.success(),
            "sh -c {script:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.unrewrite(String::from_utf8_lossy(&output.stdout).trim())
    }

    /// The arguments of each call of the stub `program` (a path as on the
    /// VM), with paths as on the VM.
    /// The user the stub `program` last ran as (empty if it never ran).
    pub fn user_of(&self, program: &str) -> String {
        let path = format!("{}.user", self.rewrite(program));
        fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    pub fn calls(&self, program: &str) -> Vec<String> {
        let path = format!("{}.calls", self.rewrite(program));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| self.unrewrite(line))
            .collect()
    }

    /// The arguments of the last `pg-monitor recover`, one an item, with
    /// paths as on the VM.
    pub fn recover_arguments(&self) -> Vec<String> {
        let path = self.rewrite("/var/vcap/packages/pg-tools/bin/pg-monitor.recover");
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| self.unrewrite(line))
            .collect()
    }

    /// The arguments of the last `pg-monitor switchover`, one an item, with
    /// paths as on the VM; empty when it did not run.
    pub fn switchover_arguments(&self) -> Vec<String> {
        let path = self.rewrite("/var/vcap/packages/pg-tools/bin/pg-monitor.switchover");
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| self.unrewrite(line))
            .collect()
    }

    /// Makes the stub `program` (a path as on the VM) exit with `code`.
    pub fn exit_with(&self, program: &str, code: i32) {
        fs::write(format!("{}.exit", self.rewrite(program)), code.to_string()).unwrap();
    }

    /// The `PG*` variables of the last call of the stub `program`.
    pub fn env(&self, program: &str) -> Vec<String> {
        let path = format!("{}.env", self.rewrite(program));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| self.unrewrite(line))
            .collect()
    }

    fn rewrite(&self, text: &str) -> String {
        text.replace("/var/vcap/", &format!("{}/", self.var_vcap().display()))
    }

    fn unrewrite(&self, text: &str) -> String {
        text.replace(&format!("{}/", self.var_vcap().display()), "/var/vcap/")
    }

    fn copy_rewritten(&self, from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                self.copy_rewritten(&entry.path(), &target);
            } else {
                let text = fs::read_to_string(entry.path()).unwrap();
                fs::write(&target, self.rewrite(&text)).unwrap();
                fs::set_permissions(&target, entry.metadata().unwrap().permissions()).unwrap();
            }
        }
    }

    fn write_stub(&self, path: &str, text: &str) {
        let path = self.var_vcap().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        // Written by whichever user the script runs the stub as.
        for suffix in ["calls", "env", "user"] {
            let record = PathBuf::from(format!("{}.{suffix}", path.display()));
            fs::write(&record, "").unwrap();
            fs::set_permissions(&record, fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
}
