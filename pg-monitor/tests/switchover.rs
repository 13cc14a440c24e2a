//! `pg-monitor switchover` against real PostgreSQL: a primary and a streaming
//! replica, real stop and start commands (pg_ctl as the server's user; the
//! start runs the real `pg-bootstrap prepare` first, as the release's ctl
//! does), a real haproxy told the new primary, real monitors on both nodes,
//! and a client writing through haproxy all along.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testkit::{clean_command, free_port, postgres, Haproxy, Node, SUPERUSER};

/// Generous bound on one switchover or one wait; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn pg_monitor() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pg-monitor"))
}

/// The pg-bootstrap binary beside pg-monitor's, built (once per run) when
/// only pg-monitor's tests were asked for.
fn pg_bootstrap() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = pg_monitor().parent().expect("pg-monitor is in a directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "pg-bootstrap",
            "--bin",
            "pg-bootstrap",
        ]);
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cannot run cargo build");
        assert!(status.success(), "cannot build pg-bootstrap");
        dir.join("pg-bootstrap")
    })
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
    as_server_user(&format!(
        "'{}' --pgdata '{}' {args}",
        testkit::pg_bin().path("pg_ctl").display(),
        node.data_dir.display()
    ))
}

/// A primary with the replication role provisioned by `pg-bootstrap
/// provision` (as the release's ctl does), and a replica streaming from it.
struct Pair {
    primary: Node,
    replica: Node,
    /// The replication password file, passfiles, markers.
    dir: TempDir,
}

impl Pair {
    fn new() -> Pair {
        let primary = Node::primary();
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("replication.password");
        // Every test node trusts loopback logins; the file is still read.
        fs::write(&password, "replication-secret\n").unwrap();
        let spec = dir.path().join("provision.yml");
        fs::write(
            &spec,
            "replication:\n  username: replication\n  password: replication-secret\n",
        )
        .unwrap();
        let port = primary.port().to_string();
        let provisioned = Command::new(pg_bootstrap())
            .args(["provision", "--spec", spec.to_str().unwrap(), "--host"])
            .arg(&primary.socket_dir)
            .args(["--port", &port, "--user", SUPERUSER, "--dbname", "postgres"])
            .output()
            .expect("cannot run pg-bootstrap provision");
        assert!(
            provisioned.status.success(),
            "provisioning failed: {}",
            String::from_utf8_lossy(&provisioned.stderr)
        );
        primary.execute("CREATE TABLE t (id bigint PRIMARY KEY)");
        let replica = Node::replica_of(&primary);
        replica.wait_streaming();
        Pair {
            primary,
            replica,
            dir,
        }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What the release's bin/ctl start does on `node`: pg-bootstrap
    /// prepare (which finds `peer` primary), then pg_ctl start.
    fn start_command(&self, node: &Node, peer: &Node) -> String {
        let mut prepare = format!(
            "'{}' prepare --data-dir '{}' --pg-bin '{}' --port {} --replication --peer {} \
             --replication-password-file '{}' --passfile '{}' --connect-timeout 2 --grace 5",
            pg_bootstrap().display(),
            node.data_dir.display(),
            testkit::pg_bin().dir.display(),
            node.port(),
            peer.endpoint(),
            self.marker("replication.password").display(),
            node.root().join("pgpass").display(),
        );
        if let Some(user) = testkit::run_as_user() {
            prepare.push_str(&format!(" --run-as {}", user.name));
        }
        let start = pg_ctl(
            node,
            &format!(
                "--log '{}' -o '-p {} -k {}' --wait --timeout 60 start",
                node.log_file.display(),
                node.port(),
                node.socket_dir.display()
            ),
        );
        format!("{prepare} && {start}")
    }

    /// The flags of a switchover from `local` to `peer`, with real commands.
    fn args(&self, local: &Node, peer: &Node) -> Vec<String> {
        let mut args = self.base_args(local, peer);
        args.extend([
            "--stop-cmd".into(),
            pg_ctl(local, "--mode fast --wait --timeout 60 stop"),
            "--start-cmd".into(),
            self.start_command(local, peer),
        ]);
        args
    }

    /// The flags of a switchover whose commands only leave a marker, for
    /// the runs that must change nothing.
    fn marker_args(&self, local: &Node, peer: &Node) -> Vec<String> {
        let mut args = self.base_args(local, peer);
        args.extend([
            "--stop-cmd".into(),
            format!("touch '{}'", self.marker("stopped").display()),
            "--start-cmd".into(),
            format!("touch '{}'", self.marker("started").display()),
        ]);
        args
    }

    fn base_args(&self, local: &Node, peer: &Node) -> Vec<String> {
        [
            "--local",
            &format!("{}:{}", local.socket_dir.display(), local.port()),
            "--peer",
            &peer.endpoint(),
            "--user",
            SUPERUSER,
            "--peer-user",
            "replication",
            "--dbname",
            "postgres",
            "--peer-password-file",
            self.marker("replication.password").to_str().unwrap(),
            "--data-dir",
            local.data_dir.to_str().unwrap(),
            "--connect-timeout",
            "2",
            "--rejoin-timeout",
            "60s",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Neither command ran, and each node is what it was.
    fn assert_nothing_changed(&self, primary_pid: u32, run: &Run) {
        for marker in ["stopped", "started"] {
            assert!(
                !self.marker(marker).exists(),
                "a command ran ({marker}); {run}"
            );
        }
        assert_eq!(
            self.primary.postmaster_pid(),
            Some(primary_pid),
            "the primary was restarted; {run}"
        );
        assert_eq!(self.primary.value("SELECT pg_is_in_recovery()"), "f");
        assert_eq!(self.replica.value("SELECT pg_is_in_recovery()"), "t");
    }
}

/// How a switchover ended, and what it printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|err| panic!("stdout is not one JSON object ({err}); {self}"))
    }

    fn expect(&self, code: i32, what: &str) -> &Run {
        assert_eq!(self.code, code, "{what}: expected exit {code}; {self}");
        self
    }

    fn expect_stderr(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "expected {needle:?}; {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `pg-monitor switchover ARGS` to its end within [`PATIENCE`].
fn switchover(args: &[String]) -> Run {
    let mut command = clean_command(pg_monitor(), &[]);
    command.arg("switchover").args(args);
    let output = testkit::output_within(command, PATIENCE, "pg-monitor switchover");
    Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A pg-monitor watching `local` and `peer` as the release runs it, its log
/// in a file; ended (SIGTERM, by pid) when dropped.
struct Monitor {
    child: Child,
    log: PathBuf,
}

impl Monitor {
    fn start(pair: &Pair, local: &Node, peer: &Node, index: u32) -> Monitor {
        let log = pair.marker(&format!("monitor-{index}.log"));
        let socket = format!("{}:{}", local.socket_dir.display(), local.port());
        let child = clean_command(pg_monitor(), &[])
            .args(["--local", &socket, "--peer", &peer.endpoint()])
            .args(["--index", &index.to_string()])
            .args(["--user", SUPERUSER, "--peer-user", "replication"])
            .args(["--dbname", "postgres", "--connect-timeout", "2"])
            .args(["--interval", "200ms", "--isolation-timeout", "1s"])
            .arg("--pg-ctl")
            .arg(testkit::pg_bin().path("pg_ctl"))
            .arg("--data-dir")
            .arg(&local.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start pg-monitor");
        Monitor { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        testkit::wait_for(&format!("{needle:?} in a monitor's log"), PATIENCE, || {
            self.log().contains(needle)
        });
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A haproxy routing writes to the first server UP, whose own checks are
/// an hour apart: only the switchover's word moves writes to the new primary.
fn haproxy(pair: &Pair) -> (Haproxy, u16) {
    Haproxy::for_pair(pair.primary.port(), pair.replica.port())
}

/// A client inserting numbered rows through `port` every few milliseconds,
/// reconnecting after any error, counting the rows acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(i64, Instant)>>>,
    acknowledged: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut client: Option<postgres::Client> = None;
            let mut id: i64 = 0;
            while !stop_flag.load(Ordering::SeqCst) {
                id += 1;
                let connected = client.take().or_else(|| {
                    postgres::Config::new()
                        .host("127.0.0.1")
                        .port(port)
                        .user(SUPERUSER)
                        .dbname("postgres")
                        .connect_timeout(Duration::from_secs(2))
                        .connect(postgres::NoTls)
                        .ok()
                });
                if let Some(mut session) = connected {
                    if session.execute("INSERT INTO t VALUES ($1)", &[&id]).is_ok() {
                        acked.push((id, Instant::now()));
                        count.fetch_add(1, Ordering::SeqCst);
                        client = Some(session);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        });
        Writer {
            stop,
            thread: Some(thread),
            acknowledged,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Stops the writer; the acknowledged rows and when each was acknowledged.
    fn finish(mut self) -> Vec<(i64, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the writer panicked")
    }
}

/// How many of `ids` the node holds.
fn held(node: &Node, ids: &[i64]) -> usize {
    let row = node
        .connect()
        .query_one("SELECT count(*) FROM t WHERE id = ANY($1)", &[&ids])
        .unwrap();
    row.get::<_, i64>(0) as usize
}

/// The longest time between two acknowledged writes.
fn longest_gap(acked: &[(i64, Instant)]) -> Duration {
    acked
        .windows(2)
        .map(|pair| pair[1].1.duration_since(pair[0].1))
        .max()
        .unwrap_or_default()
}

#[test]
fn a_switchover_under_writes_loses_no_acknowledged_write_and_the_old_primary_follows_without_rewind(
) {
    let pair = Pair::new();
    let (old, new) = (&pair.primary, &pair.replica);
    let (haproxy, port) = haproxy(&pair);
    let mut old_monitor = Monitor::start(&pair, old, new, 0);
    let mut new_monitor = Monitor::start(&pair, new, old, 1);
    old_monitor.wait_log("local node is primary; peer is a replica");
    new_monitor.wait_log("local node is a replica; peer is primary");
    let writer = Writer::start(port);
    testkit::wait_for("writes through haproxy", PATIENCE, || writer.count() > 50);

    let mut args = pair.args(old, new);
    let socket = haproxy.dir().join("haproxy.sock");
    args.extend(["--haproxy-socket".into(), socket.display().to_string()]);
    args.extend(["--haproxy-server".into(), "node0".into()]);
    args.extend([
        "--haproxy-peer-server".into(),
        "node1".into(),
        "--json".into(),
    ]);
    let run = switchover(&args);
    let view = haproxy.view();
    let after = writer.count();
    testkit::wait_for("writes through haproxy again", PATIENCE, || {
        writer.count() > after + 50
    });
    let acked = writer.finish();

    run.expect(0, "the switchover");
    let report = run.json();
    assert_eq!(report["decision"], "switchover", "{run}");
    assert_eq!(report["new_primary"], new.endpoint(), "{run}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "checkpoint",
            "stop",
            "confirm",
            "promote",
            "haproxy",
            "rejoin"
        ],
        "{run}"
    );

    // Nothing acknowledged is lost: on the new primary, and on the old one
    // once it has caught up as its replica.
    let ids: Vec<i64> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        held(new, &ids),
        ids.len(),
        "acknowledged writes lost; {run}"
    );
    assert_eq!(new.value("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(old.value("SELECT pg_is_in_recovery()"), "t");
    old.wait_caught_up(new);
    assert_eq!(held(old, &ids), ids.len());
    assert_eq!(
        old.value("SELECT received_tli FROM pg_stat_wal_receiver"),
        "2"
    );

    // The old primary followed as it was: no rewind, no clone.
    run.expect_stderr(&format!("decision: follow {}", new.endpoint()));
    for absent in ["rewinding", "cloning"] {
        assert!(!run.stderr.contains(absent), "{absent}; {run}");
    }

    // haproxy moved writes at once, long before its own checks would have.
    for expected in [
        "postgres/node0 DOWN",
        "postgres/node1 UP",
        "readonly/node1 DOWN",
    ] {
        assert!(
            view.iter().any(|line| line == expected),
            "haproxy: expected {expected} in {view:?}"
        );
    }

    // The monitors went along: neither fenced, stepped down, stopped a
    // server, nor failed to act.
    for (monitor, name) in [(&mut old_monitor, "old"), (&mut new_monitor, "new")] {
        assert!(monitor.running(), "the {name} primary's monitor ended");
        let log = monitor.log();
        for absent in [
            "error:",
            "SPLIT-BRAIN",
            "fencing",
            "stopped the local server",
        ] {
            assert!(
                !log.contains(absent),
                "the {name} primary's monitor logged {absent:?}:\n{log}"
            );
        }
    }
    old_monitor.wait_log("local node is a replica; peer is primary");

    println!("switchover: steps {}", report["steps"]);
    println!(
        "switchover: write gap through haproxy {:.3} s (the switchover's own: {} s, from the \
         stop to the promotion), {} writes acknowledged, none lost",
        longest_gap(&acked).as_secs_f64(),
        report["write_gap_seconds"],
        acked.len()
    );
}

#[test]
fn refusals_exit_1_and_change_nothing() {
    let pair = Pair::new();
    let (primary, replica) = (&pair.primary, &pair.replica);
    let primary_pid = primary.postmaster_pid().unwrap();

    // No peer answers.
    let mut nobody = pair.marker_args(primary, replica);
    let closed = format!("127.0.0.1:{}", free_port());
    let at = nobody.iter().position(|arg| arg == "--peer").unwrap();
    nobody[at + 1] = closed;
    let run = switchover(&nobody);
    run.expect(1, "no peer")
        .expect_stderr("switchover: refused: no peer to hand over to");
    pair.assert_nothing_changed(primary_pid, &run);

    // Run on the replica.
    let run = switchover(&pair.marker_args(replica, primary));
    run.expect(1, "on the replica")
        .expect_stderr("refused: this node is a replica");
    pair.assert_nothing_changed(primary_pid, &run);

    // A pause file: refused unless --force.
    let pause = pair.marker("failover.paused");
    fs::write(&pause, "").unwrap();
    let mut paused = pair.marker_args(primary, replica);
    paused.extend(["--pause-file".into(), pause.display().to_string()]);
    let run = switchover(&paused);
    run.expect(1, "paused").expect_stderr("failover is paused");
    pair.assert_nothing_changed(primary_pid, &run);
    paused.extend(["--force".into(), "--dry-run".into()]);
    switchover(&paused).expect(0, "paused, forced, dry run");
    pair.assert_nothing_changed(primary_pid, &run);

    // A lagging replica: its WAL receiver stopped (SIGSTOP), so it still
    // shows as streaming while the primary writes on.
    let receiver = replica.value("SELECT pid FROM pg_stat_wal_receiver");
    signal(&receiver, "-STOP");
    primary.execute("INSERT INTO t SELECT generate_series(1, 1000)");
    let mut tiny = pair.marker_args(primary, replica);
    tiny.extend(["--max-lag".into(), "1".into()]);
    let run = switchover(&tiny);
    signal(&receiver, "-CONT");
    run.expect(1, "a lagging replica")
        .expect_stderr("bytes behind, not under --max-lag 1");
    pair.assert_nothing_changed(primary_pid, &run);

    // The peer user may not promote.
    primary.execute("REVOKE EXECUTE ON FUNCTION pg_promote(boolean, integer) FROM replication");
    replica.wait_caught_up(primary);
    let run = switchover(&pair.marker_args(primary, replica));
    run.expect(1, "no pg_promote for the peer user")
        .expect_stderr("the peer user may not run pg_promote()");
    pair.assert_nothing_changed(primary_pid, &run);
    primary.execute("GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO replication");
    replica.wait_caught_up(primary);

    // The peer is a primary too.
    replica.promote();
    let run = switchover(&pair.marker_args(primary, replica));
    run.expect(1, "two primaries")
        .expect_stderr("the peer answers as primary too");
    for marker in ["stopped", "started"] {
        assert!(!pair.marker(marker).exists(), "a command ran; {run}");
    }
    assert_eq!(primary.postmaster_pid(), Some(primary_pid));
}

/// The flags of a switchover from the pair's primary whose stop command is `stop`.
fn with_stop(pair: &Pair, stop: String, start: String) -> Vec<String> {
    let mut args = pair.base_args(&pair.primary, &pair.replica);
    args.extend([
        "--stop-cmd".into(),
        stop,
        "--start-cmd".into(),
        start,
        "--json".into(),
    ]);
    args
}

/// The step named `name` in a --json report.
fn step<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

#[test]
fn a_peer_its_monitor_promoted_first_is_accepted_when_its_history_holds_every_record() {
    let pair = Pair::new();
    let (old, new) = (&pair.primary, &pair.replica);
    old.execute("INSERT INTO t VALUES (1)");
    // The peer's monitor wins the race: it promotes as soon as this node is down.
    let stop = format!(
        "{} && {}",
        pg_ctl(old, "--mode fast --wait --timeout 60 stop"),
        pg_ctl(new, "--wait --timeout 60 promote")
    );
    let run = switchover(&with_stop(&pair, stop, pair.start_command(old, new)));
    run.expect(0, "a switchover whose peer was promoted meanwhile");
    let report = run.json();
    let confirm = step(&report, "confirm")["detail"].as_str().unwrap();
    assert!(confirm.contains("already promoted"), "{run}");
    let promote = step(&report, "promote")["detail"].as_str().unwrap();
    assert!(
        promote.contains("promoted meanwhile, by its monitor"),
        "{run}"
    );
    run.expect_stderr(&format!("decision: follow {}", new.endpoint()));
    old.wait_caught_up(new);
    assert_eq!(old.column("SELECT id FROM t"), ["1"]);
}

/// BOSH's drain: the stop that follows would only stop it again.
#[test]
fn with_leave_stopped_the_old_primary_stays_down_and_its_next_start_follows() {
    let pair = Pair::new();
    let (old, new) = (&pair.primary, &pair.replica);
    old.execute("INSERT INTO t VALUES (1)");
    let mut args = with_stop(
        &pair,
        pg_ctl(old, "--mode fast --wait --timeout 60 stop"),
        format!("touch '{}'", pair.marker("started").display()),
    );
    args.push("--leave-stopped".into());
    let run = switchover(&args);
    run.expect(0, "a switchover that leaves the old primary stopped");
    assert!(
        !pair.marker("started").exists(),
        "the start command ran; {run}"
    );
    assert_eq!(old.postmaster_pid(), None, "{run}");
    assert!(run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|step| step["step"] != "rejoin"));
    new.execute("INSERT INTO t VALUES (2)");
    let start = std::process::Command::new("sh")
        .arg("-c")
        .arg(pair.start_command(old, new))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&start.stdout),
        String::from_utf8_lossy(&start.stderr)
    );
    assert!(start.status.success(), "{said}");
    assert!(said.contains("decision: follow"), "{said}");
    old.wait_caught_up(new);
    assert_eq!(old.column("SELECT id FROM t ORDER BY id"), ["1", "2"]);
}

#[test]
fn a_peer_promoted_before_it_received_everything_leaves_this_node_stopped_with_exit_4() {
    let pair = Pair::new();
    let (old, new) = (&pair.primary, &pair.replica);
    // The peer is promoted first; this node takes one more write, then stops.
    let psql = as_server_user(&format!(
        "'{}' -h '{}' -p {} -U {SUPERUSER} -d postgres -c 'INSERT INTO t VALUES (2)'",
        testkit::pg_bin().path("psql").display(),
        old.socket_dir.display(),
        old.port()
    ));
    let stop = format!(
        "{} && {psql} && {}",
        pg_ctl(new, "--wait --timeout 60 promote"),
        pg_ctl(old, "--mode fast --wait --timeout 60 stop")
    );
    let start = format!("touch '{}'", pair.marker("started").display());
    let run = switchover(&with_stop(&pair, stop, start));
    run.expect(4, "the peer lacks this node's last records")
        .expect_stderr("the peer was promoted before it received this node's last records")
        .expect_stderr("This node was left stopped");
    assert_eq!(run.json()["exit_code"], 4);
    assert!(run.json()["state"]
        .as_str()
        .unwrap()
        .contains("left stopped"));
    assert!(
        !pair.marker("started").exists(),
        "it must not rejoin; {run}"
    );
    assert_eq!(old.postmaster_pid(), None);
}

#[test]
fn an_unclean_stop_is_not_built_on_the_node_comes_back_and_the_exit_is_4() {
    let pair = Pair::new();
    let (old, new) = (&pair.primary, &pair.replica);
    let stop = pg_ctl(old, "--mode immediate --wait --timeout 60 stop");
    let run = switchover(&with_stop(&pair, stop, pair.start_command(old, new)));
    run.expect(4, "an immediate stop")
        .expect_stderr("did not shut down cleanly as a primary (pg_control: in production)")
        .expect_stderr("The switchover was abandoned");
    assert_eq!(run.json()["new_primary"], serde_json::Value::Null);
    // Without a primary peer, its boot resumed it as the primary it was.
    testkit::wait_for("the old primary to take writes again", PATIENCE, || {
        old.try_connect()
            .and_then(|mut client| client.batch_execute("INSERT INTO t VALUES (3)"))
            .is_ok()
    });
    assert_eq!(new.value("SELECT pg_is_in_recovery()"), "t");
}

fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing_and_json_reports_the_decision() {
    let pair = Pair::new();
    let (primary, replica) = (&pair.primary, &pair.replica);
    let primary_pid = primary.postmaster_pid().unwrap();

    let mut dry = pair.marker_args(primary, replica);
    dry.push("--dry-run".into());
    let run = switchover(&dry);
    run.expect(0, "a dry run");
    for line in [
        "switchover: dry run: this node is a primary taking writes",
        "switchover:   CHECKPOINT on this node",
        "switchover:   stop the local postgres: `touch",
        &format!("switchover:   promote {} (pg_promote)", replica.endpoint()),
    ] {
        assert!(run.stdout.contains(line), "expected {line:?}; {run}");
    }
    pair.assert_nothing_changed(primary_pid, &run);

    dry.push("--json".into());
    let run = switchover(&dry);
    run.expect(0, "a dry run with --json");
    let report = run.json();
    assert_eq!(report["decision"], "switchover");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["steps"], serde_json::json!([]));
    assert_eq!(report["new_primary"], serde_json::Value::Null);
    assert!(report["lag_bytes"].is_u64(), "{report}");
    assert_eq!(report["peer"], replica.endpoint());
    assert!(
        run.stderr.contains("switchover: dry run"),
        "with --json, the lines for people go to stderr; {run}"
    );
    pair.assert_nothing_changed(primary_pid, &run);

    let mut refused = pair.marker_args(replica, primary);
    refused.push("--json".into());
    let run = switchover(&refused);
    run.expect(1, "refused, with --json");
    let report = run.json();
    assert_eq!(report["decision"], "refused");
    assert_eq!(report["exit_code"], 1);
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.starts_with("this node is a replica"), "{report}");
    assert!(
        report["error"].as_str().unwrap().contains(reason),
        "{report}"
    );
    pair.assert_nothing_changed(primary_pid, &run);
}
