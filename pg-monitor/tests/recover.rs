//! `pg-monitor recover` against real PostgreSQL: a node fenced by a real
//! monitor is brought back with real start commands (pg_ctl as the server's
//! user); the refusals are checked against live processes, the peer's answer
//! against a real primary behind a password.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use testkit::{clean_command, command_as_user, Node, NodeOptions, LIBPQ_VARIABLES};

/// Generous bound on one run of recover or of a fencing monitor; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn pg_monitor() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pg-monitor"))
}

/// `command` as a shell line run as the user PostgreSQL runs as (tests run
/// as root; PostgreSQL refuses root).
fn as_server_user(command: &str) -> String {
    match testkit::run_as_user() {
        Some(user) => format!(
            "setpriv --reuid={} --regid={} --init-groups -- {command}",
            user.uid, user.gid
        ),
        None => command.to_string(),
    }
}

fn pg_ctl(node: &Node, args: &str) -> String {
    let pg_ctl = testkit::pg_bin().path("pg_ctl");
    as_server_user(&format!(
        "'{}' --pgdata '{}' {args}",
        pg_ctl.display(),
        node.data_dir.display()
    ))
}

/// Starts the stopped `node` without waiting, as `monit start postgres` returns
/// before postgres answers: recover's own wait is what is tested.
fn start_command(node: &Node) -> String {
    pg_ctl(
        node,
        &format!(
            "--log '{}' -o '-p {} -k {}' --no-wait start",
            node.log_file.display(),
            node.port(),
            node.socket_dir.display()
        ),
    )
}

/// The flags every run shares: the local node over its socket as the
/// superuser (vcap in the release), and how to start it.
fn recover_args(node: &Node, start: &str) -> Vec<String> {
    let local = format!("{}:{}", node.socket_dir.display(), node.port());
    [
        "--local",
        &local,
        "--user",
        testkit::SUPERUSER,
        "--dbname",
        "postgres",
        "--connect-timeout",
        "2",
        "--start-timeout",
        "60s",
        "--start-postgres-cmd",
        start,
    ]
    .map(String::from)
    .to_vec()
}

fn flag(args: &mut Vec<String>, name: &str, value: impl AsRef<Path>) {
    args.push(name.to_string());
    args.push(value.as_ref().display().to_string());
}

/// Runs `command` to its end within [`PATIENCE`], killing it (by pid) otherwise.
fn run_bounded(command: Command, what: &str) -> Output {
    testkit::output_within(command, PATIENCE, what)
}

fn recover(args: &[String]) -> Output {
    let mut command = clean_command(pg_monitor(), &[]);
    command.arg("recover").args(args);
    run_bounded(command, "pg-monitor recover")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `lines` appear in stdout in this order, each as the start of a line.
fn assert_says_in_order(output: &Output, lines: &[&str]) {
    let text = stdout(output);
    let mut rest = text.lines();
    for expected in lines {
        assert!(
            rest.any(|line| line.starts_with(expected)),
            "expected a line starting {expected:?} (after the ones before it); stdout:\n{text}\nstderr:\n{}",
            stderr(output)
        );
    }
}

fn read_only_setting(node: &Node) -> String {
    node.value("SHOW default_transaction_read_only")
}

/// A primary with the `replication` role the release provisions.
fn primary_with_replication_role() -> Node {
    let node = Node::primary();
    node.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
    node
}

/// Runs a monitor of `local` against `peer`, another primary on the same
/// timeline, until it has fenced `local`: refused writes, written `record`,
/// stopped its postgres.
fn fence_with_a_real_monitor(local: &Node, peer: &Node, record: &Path) {
    let socket = format!("{}:{}", local.socket_dir.display(), local.port());
    let mut command = clean_command(pg_monitor(), &[]);
    command
        .args([
            "--local",
            &socket,
            "--peer",
            &peer.endpoint(),
            "--index",
            "0",
        ])
        .args(["--user", testkit::SUPERUSER, "--peer-user", "replication"])
        .args(["--dbname", "postgres", "--interval", "200ms"])
        .args(["--connect-timeout", "2"])
        .arg("--fence-record")
        .arg(record)
        .arg("--fence-cmd")
        .arg(pg_ctl(local, "--mode fast --wait stop"));
    let output = run_bounded(command, "the fencing monitor");
    assert!(
        output.status.success() && local.postmaster_pid().is_none(),
        "expected the monitor to fence and stop its node; log:\n{}",
        stderr(&output)
    );
}

#[test]
fn a_fenced_primary_comes_back_taking_writes_and_its_fence_record_is_removed() {
    let fenced = primary_with_replication_role();
    let peer = primary_with_replication_role();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("fenced.json");
    fence_with_a_real_monitor(&fenced, &peer, &record);
    let auto_conf = fs::read_to_string(fenced.data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("default_transaction_read_only = 'on'"),
        "the monitor left no read-only mode to lift:\n{auto_conf}"
    );
    // The peer fenced itself too: it is down when this node is recovered.
    peer.stop("fast");

    // A monitor pid file naming a live process that is no pg-monitor (a
    // reused pid) does not hold recovery back.
    let monitor_pidfile = dir.path().join("monitor.pid");
    fs::write(&monitor_pidfile, format!("{}\n", std::process::id())).unwrap();
    let started = dir.path().join("started");
    let vip_job = dir.path().join("vip");
    fs::create_dir(&vip_job).unwrap();
    let mut args = recover_args(&fenced, &start_command(&fenced));
    args.extend(["--peer".into(), peer.endpoint()]);
    args.extend(["--peer-user".into(), "replication".into()]);
    flag(&mut args, "--fence-record", &record);
    flag(
        &mut args,
        "--postgres-pidfile",
        fenced.data_dir.join("postmaster.pid"),
    );
    flag(&mut args, "--monitor-pidfile", &monitor_pidfile);
    let marker = |service: &str| format!("echo {service} >> '{}'", started.display());
    args.extend(["--start-monitor-cmd".into(), marker("monitor")]);
    args.extend(["--start-haproxy-cmd".into(), marker("haproxy")]);
    flag(&mut args, "--vip-job-dir", &vip_job);
    let output = recover(&args);

    assert!(
        output.status.success(),
        "expected exit 0, got {:?}; stdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    assert_says_in_order(
        &output,
        &[
            "recover: this node fenced itself: {",
            "recover: the other node is not primary (unreachable: ",
            "recover: starting postgres (waiting up to 60 s for it to answer)",
            "recover: this node takes writes again",
            "recover: done; this node is now primary",
        ],
    );
    assert!(
        stdout(&output).contains("\"why\":\"split-brain\""),
        "the record is shown:\n{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("this node will resume as primary."));
    assert_eq!(read_only_setting(&fenced), "off");
    fenced.execute("CREATE TABLE written_after_recovery (id int)");
    assert!(!record.exists(), "the fence record is left behind");
    assert_eq!(
        fs::read_to_string(&started).unwrap_or_default(),
        "monitor\nhaproxy\n",
        "the monitor, then haproxy, are started"
    );
}

#[test]
fn recovery_is_refused_while_postgres_or_the_monitor_still_runs() {
    let node = Node::primary();
    let dir = tempfile::tempdir().unwrap();
    let monitor_pidfile = dir.path().join("monitor.pid");
    let mut monitor = start_monitor_loop(&node, &monitor_pidfile);
    let record = dir.path().join("fenced.json");
    fs::write(&record, "{\"why\":\"split-brain\"}\n").unwrap();
    let started = dir.path().join("started");
    let mut args = recover_args(&node, &format!("touch '{}'", started.display()));
    flag(
        &mut args,
        "--postgres-pidfile",
        node.data_dir.join("postmaster.pid"),
    );
    flag(&mut args, "--monitor-pidfile", &monitor_pidfile);
    flag(&mut args, "--fence-record", &record);

    let output = recover(&args);
    assert_refused(
        &output,
        "recover: still running on this node: postgres monitor.",
    );
    assert!(
        stderr(&output).contains("stop them first (monit stop ...) if you mean it."),
        "{}",
        stderr(&output)
    );
    assert!(!started.exists(), "postgres was started anyway");
    assert!(record.exists(), "the fence record was removed");
    assert_eq!(stdout(&output), "", "nothing is done or shown");

    // Killed, the monitor leaves its pid file naming a dead process.
    monitor.kill().unwrap();
    monitor.wait().unwrap();
    assert!(monitor_pidfile.exists());
    let output = recover(&args);
    assert_refused(&output, "recover: still running on this node: postgres.");
    assert!(!started.exists(), "postgres was started anyway");
}

/// Starts the monitor loop for `node` (its peer a closed port) and waits
/// until its pid file names it.
fn start_monitor_loop(node: &Node, pidfile: &Path) -> KillOnDrop {
    let local = format!("{}:{}", node.socket_dir.display(), node.port());
    let peer = format!("127.0.0.1:{}", testkit::free_port());
    let mut command = clean_command(pg_monitor(), &[]);
    command
        .args(["--local", &local, "--peer", &peer, "--index", "0"])
        .args(["--user", testkit::SUPERUSER, "--dbname", "postgres"])
        .arg("--pidfile")
        .arg(pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = KillOnDrop(command.spawn().expect("cannot start pg-monitor"));
    let pid = child.0.id().to_string();
    testkit::wait_for("the monitor's pid file", PATIENCE, || {
        fs::read_to_string(pidfile).is_ok_and(|text| text.trim() == pid)
    });
    child
}

/// A child process killed (by pid) if a test ends while it still runs.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn assert_refused(output: &Output, line: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1; stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    assert!(
        stderr(output).lines().any(|said| said == line),
        "expected the line {line:?}; stderr:\n{}",
        stderr(output)
    );
}

#[test]
fn with_a_primary_peer_the_node_says_it_rejoins_as_a_replica() {
    // The peer asks for the replication role's password, read from a file.
    let primary = Node::primary_with(
        NodeOptions::new().hba_line("host postgres replication 127.0.0.1/32 scram-sha-256"),
    );
    primary.execute("CREATE ROLE replication LOGIN PASSWORD 'rec0ver' IN ROLE pg_monitor");
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    replica.stop("fast");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("replication.password");
    fs::write(&password_file, "rec0ver\n").unwrap();
    let started = dir.path().join("started");

    let mut args = recover_args(&replica, &start_command(&replica));
    args.extend(["--peer".into(), primary.endpoint()]);
    args.extend(["--peer-user".into(), "replication".into()]);
    flag(&mut args, "--peer-password-file", &password_file);
    let haproxy = format!("echo haproxy >> '{}'", started.display());
    args.extend(["--start-haproxy-cmd".into(), haproxy]);
    flag(&mut args, "--vip-job-dir", dir.path().join("no-vip-job"));
    let output = recover(&args);

    assert!(
        output.status.success(),
        "expected exit 0; stdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert_says_in_order(
        &output,
        &[
            "recover: the other node is primary; this node will rejoin it as a replica.",
            "recover: starting postgres",
            "recover: done; this node is now replica",
        ],
    );
    assert!(
        !stdout(&output).contains("takes writes again"),
        "a replica's settings are its primary's:\n{}",
        stdout(&output)
    );
    assert_eq!(replica.value("SELECT pg_is_in_recovery()"), "t");
    assert!(
        !started.exists(),
        "haproxy was started where the vip job is not deployed"
    );
}

#[test]
fn recovery_is_refused_unless_run_as_root() {
    if testkit::run_as_user().is_none() {
        // Not root already: the refusal is what every run here would get.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut command = command_as_user(pg_monitor());
    for variable in LIBPQ_VARIABLES {
        command.env_remove(variable);
    }
    command.args([
        "recover",
        "--local",
        "/nonexistent:5432",
        "--start-postgres-cmd",
        &format!("touch '{}'", started.display()),
    ]);
    let output = run_bounded(command, "pg-monitor recover as another user");
    assert_refused(&output, "recover: run as root (with sudo)");
    assert!(!started.exists(), "postgres was started anyway");
}

#[test]
fn bad_flags_are_refused_before_anything_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let touch = format!("touch '{}'", started.display());
    let missing: PathBuf = dir.path().join("missing.password");
    let cases: [(Vec<String>, &str); 2] = [
        (
            vec!["--start-postgres-cmd".into(), " ".into()],
            "the command is empty",
        ),
        (
            vec![
                "--start-postgres-cmd".into(),
                touch,
                "--peer".into(),
                "127.0.0.1:1".into(),
                "--peer-password-file".into(),
                missing.display().to_string(),
            ],
            "--peer-password-file",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["--local".to_string(), "/nonexistent:5432".to_string()];
        args.extend(extra);
        let output = recover(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: expected exit 2; stderr:\n{}",
            stderr(&output)
        );
        let error = stderr(&output);
        assert!(
            error
                .lines()
                .any(|line| line.starts_with("error:") && line.contains(expected)),
            "{args:?}: expected {expected:?} in the error line:\n{error}"
        );
        assert!(!started.exists(), "{args:?}: postgres was started anyway");
    }
}

#[test]
fn help_explains_the_subcommand_and_the_monitor_names_it() {
    let help = |args: &[&str]| {
        let output = clean_command(pg_monitor(), &[])
            .args(args)
            .output()
            .expect("cannot run pg-monitor");
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let monitor = help(&["--help"]);
    assert!(
        monitor.contains("Commands:") && monitor.contains("  recover  "),
        "{monitor}"
    );
    let recover = help(&["recover", "--help"]);
    for needed in [
        "Exit codes:",
        "default_transaction_read_only",
        "PGPASSWORD",
        "--start-postgres-cmd",
        "--fence-record",
    ] {
        assert!(
            recover.contains(needed),
            "{needed:?} missing from:\n{recover}"
        );
    }
}
