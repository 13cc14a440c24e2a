//! `pg-monitor` against real PostgreSQL: the monitor runs as a real process
//! (two of them where the behaviour is about both nodes), faults are real
//! (kill -9, clean stops, TCP resets through a proxy), and every assertion is
//! on an observable outcome: a node's role, a write, a marker file, an exit.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::{clean_command, FaultProxy, Haproxy, Node, ProxyMode};

/// Generous bound for anything a test waits for; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(90);

/// A running `pg-monitor` with its own temp dir (log, pidfile, markers);
/// killed (by pid) if a test ends while it still runs.
struct Monitor {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Monitor {
    fn start(name: &str, args: &Args) -> Monitor {
        let dir = tempfile::Builder::new()
            .prefix("pgmonitor.")
            .tempdir()
            .expect("cannot create a temp dir");
        Self::start_in(name, args, dir)
    }

    fn start_in(name: &str, args: &Args, dir: tempfile::TempDir) -> Monitor {
        Self::start_with_env(name, args, dir, &[])
    }

    /// A monitor with `env` set (the TLS variables).
    fn start_with_env(
        name: &str,
        args: &Args,
        dir: tempfile::TempDir,
        env: &[(&str, &Path)],
    ) -> Monitor {
        let log = fs::File::create(dir.path().join("monitor.log")).expect("cannot create the log");
        let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-monitor")), &[]);
        command
            .envs(env.iter().copied())
            .args(&args.0)
            .arg("--pidfile")
            .arg(dir.path().join("monitor.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("cannot start pg-monitor");
        Monitor {
            name: name.to_string(),
            child,
            dir,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("monitor.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing with the log.
    fn wait_log(&self, needle: &str) {
        self.wait_log_count(needle, 1);
    }

    /// Waits until `needle` appears `count` times in the log.
    fn wait_log_count(&self, needle: &str, count: usize) {
        let started = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                started.elapsed() < PATIENCE,
                "{}: expected {needle:?} {count} time(s) in the log within {PATIENCE:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_log_lacks(&self, needle: &str) {
        let log = self.log();
        assert!(
            !log.contains(needle),
            "{}: did not expect {needle:?} in the log:\n{log}",
            self.name
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(
            status.success(),
            "kill -{signal} {} failed",
            self.child.id()
        );
    }

    /// Waits for the monitor to exit by itself within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait for pg-monitor") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{}: expected the monitor to exit within {timeout:?}; it still runs; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Command-line flags; single-valued flags are replaced, repeatable ones appended.
#[derive(Clone)]
struct Args(Vec<String>);

impl Args {
    /// The monitor of `local` (over its Unix socket, as the superuser, like
    /// vcap in production) watching `peer` as the non-superuser `replication`
    /// role, with quick checks.
    fn new(local: &Node, peer: &str, index: u32) -> Args {
        let local = format!("{}:{}", local.socket_dir.display(), local.port());
        let mut args = Args(Vec::new());
        args.set("--local", &local)
            .set("--peer", peer)
            .set("--index", &index.to_string())
            .set("--user", testkit::SUPERUSER)
            .set("--peer-user", "replication")
            .set("--dbname", "postgres")
            .set("--interval", "200ms")
            .set("--connect-timeout", "2")
            .set("--retries", "3");
        args
    }

    fn set(&mut self, flag: &str, value: &str) -> &mut Args {
        let repeatable = matches!(flag, "--fence-cmd" | "--witness");
        if !repeatable {
            if let Some(at) = self.0.iter().position(|arg| arg == flag) {
                self.0[at + 1] = value.to_string();
                return self;
            }
        }
        self.0.push(flag.to_string());
        self.0.push(value.to_string());
        self
    }
}

/// A primary with the `replication` role the release provisions (member of
/// pg_monitor), and a streaming replica cloned from it.
fn pair() -> (Node, Node) {
    let primary = Node::primary();
    primary.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    (primary, replica)
}

fn in_recovery(node: &Node) -> bool {
    node.query_text("SELECT pg_is_in_recovery()").as_deref() == Some("t")
}

fn wait_promoted(node: &Node, monitor: &Monitor) {
    let started = Instant::now();
    while in_recovery(node) {
        assert!(
            started.elapsed() < PATIENCE,
            "expected {} to be promoted within {PATIENCE:?}; monitor log:\n{}",
            node.endpoint(),
            monitor.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_writable(node: &Node) {
    node.execute("CREATE TABLE written_after_failover (id int); INSERT INTO written_after_failover VALUES (1)");
    assert_eq!(
        node.query_text("SELECT count(*) FROM written_after_failover")
            .as_deref(),
        Some("1")
    );
}

fn assert_still_replica(node: &Node, monitor: &Monitor) {
    assert!(
        in_recovery(node),
        "expected {} to stay a replica; monitor log:\n{}",
        node.endpoint(),
        monitor.log()
    );
    monitor.assert_log_lacks("promoted with");
}

/// Stops the replica's WAL receiver from reaching any primary, so that only
/// the monitor's own checks tell it whether the primary lives.
fn cut_replication(replica: &Node) {
    replica.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 user=postgres'");
    replica.execute("SELECT pg_reload_conf()");
    testkit::wait_for(
        "the replica's WAL receiver to stop streaming",
        PATIENCE,
        || {
            replica
                .query_text("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
                .as_deref()
                == Some("0")
        },
    );
}

/// Waits until the monitor's held connection to `node` has run `count` more
/// checks (its query's start time moved on that often).
fn wait_checked(node: &Node, count: u32, monitor: &Monitor) {
    let last_check = || {
        node.query_text(
            "SELECT query_start FROM pg_stat_activity WHERE application_name = 'pg-monitor'",
        )
    };
    let mut seen = last_check();
    for _ in 0..count {
        let started = Instant::now();
        loop {
            let now = last_check();
            if now.is_some() && now != seen {
                seen = now;
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "expected the monitor to check {} again; log:\n{}",
                node.endpoint(),
                monitor.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_accepted(proxy: &FaultProxy, count: u32, monitor: &Monitor) {
    let started = Instant::now();
    while proxy.accepted() < count {
        assert!(
            started.elapsed() < PATIENCE,
            "expected {count} monitor connections through the proxy, saw {}; log:\n{}",
            proxy.accepted(),
            monitor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failover_after(fault: impl FnOnce(&Node)) {
    let (primary, replica) = pair();
    let monitor = Monitor::start(
        "replica monitor",
        &Args::new(&replica, &primary.endpoint(), 1),
    );
    monitor.wait_log("local node is a replica; peer is primary; replication streams");

    fault(&primary);

    wait_promoted(&replica, &monitor);
    assert_writable(&replica);
    monitor.wait_log("(3/3): the primary's host answers but PostgreSQL does not run there");
    monitor.wait_log("promoted with pg_promote()");
    monitor.wait_log("local node is primary");
}

#[test]
fn replica_is_promoted_and_writable_after_the_primary_is_killed() {
    failover_after(|primary| primary.kill9());
}

/// The backend of the monitor's connection to `node`: when it started, and
/// how many the monitor has.
fn monitor_backends(node: &Node) -> Option<String> {
    node.query_text(
        "SELECT count(*) || ' since ' || min(backend_start) FROM pg_stat_activity \
         WHERE application_name = 'pg-monitor'",
    )
}

#[test]
fn the_monitor_holds_one_connection_to_its_peer_across_checks() {
    let (primary, replica) = pair();
    let monitor = Monitor::start(
        "replica monitor",
        &Args::new(&replica, &primary.endpoint(), 1),
    );
    monitor.wait_log("peer is primary; replication streams");
    let before = monitor_backends(&primary);
    wait_checked(&primary, 5, &monitor);
    // Five checks later: the same single backend, not one per check.
    assert_eq!(monitor_backends(&primary), before);
    assert!(
        before.as_deref().unwrap_or("").starts_with("1 since"),
        "{before:?}"
    );
}

#[test]
fn a_replica_promotes_as_soon_as_its_primary_dies_tells_haproxy_and_records_it() {
    let (primary, replica) = pair();
    let (haproxy, _port) = Haproxy::for_pair(primary.port(), replica.port());
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("monitor-state.json");
    let mut args = Args::new(&replica, &primary.endpoint(), 1);
    // Checks half a minute apart: only the held connection's end, which a
    // dying server causes at once, can bring the promotion sooner.
    args.set("--interval", "30s")
        .set("--retry-interval", "100ms")
        .set("--state-file", state_file.to_str().unwrap())
        .set("--haproxy-socket", haproxy.socket().to_str().unwrap())
        .set("--haproxy-server", "node1")
        .set("--haproxy-peer-server", "node0");
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("peer is primary; replication streams");
    let state = || -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(&state_file).unwrap_or_default())
            .unwrap_or_default()
    };
    assert_eq!(state()["decision"], "wait");
    assert_eq!(state()["promotions"], 0);

    primary.kill9();
    let killed = Instant::now();
    wait_promoted(&replica, &monitor);
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "promoted only at the next interval; log:\n{}",
        monitor.log()
    );
    monitor.wait_log("haproxy: postgres/node1 up, postgres/node0 down, readonly/node1 down");
    let view = haproxy.view();
    for expected in [
        "postgres/node1 UP",
        "postgres/node0 DOWN",
        "readonly/node1 DOWN",
    ] {
        assert!(
            view.iter().any(|line| line == expected),
            "{expected} in {view:?}"
        );
    }
    testkit::wait_for("the state file to count the promotion", PATIENCE, || {
        state()["promotions"] == 1
    });
}

#[test]
fn replica_is_promoted_after_the_primary_is_stopped_cleanly() {
    failover_after(|primary| primary.stop("fast"));
}

#[test]
fn a_primary_that_stops_answering_is_waited_out_for_the_lease_and_margin() {
    let (primary, replica) = pair();
    cut_replication(&replica);
    let proxy = FaultProxy::new(&primary.endpoint());
    let mut args = Args::new(&replica, &proxy.endpoint(), 1);
    // Promotes after 1 s + (200 ms + 2 s).
    args.set("--isolation-timeout", "1s");
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("peer is primary; replication does not stream");

    // The primary's host accepts the connection, then nothing answers: it
    // may be hung, or slow, and still take writes.
    proxy.set_mode(ProxyMode::Blackhole);
    let cut = Instant::now();
    monitor.wait_log("promoting only after 3.2 s");
    // Never before its lease (1 s) plus the margin could have run out.
    while cut.elapsed() < Duration::from_secs(2) {
        assert_still_replica(&replica, &monitor);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_promoted(&replica, &monitor);
    monitor.wait_log("longer than its lease plus the margin, so it no longer takes writes");
    monitor.assert_log_lacks("(3/3)");
}

#[test]
fn a_replica_still_streaming_from_its_primary_is_not_promoted_when_only_checks_fail() {
    let (primary, replica) = pair();
    let proxy = FaultProxy::new(&primary.endpoint());
    let monitor = Monitor::start(
        "replica monitor",
        &Args::new(&replica, &proxy.endpoint(), 1),
    );
    monitor.wait_log("peer is primary; replication streams");

    proxy.set_mode(ProxyMode::Reset);
    monitor.wait_log("still streams WAL from a primary");
    let seen = proxy.accepted();
    wait_accepted(&proxy, seen + 6, &monitor);
    assert_still_replica(&replica, &monitor);
    monitor.assert_log_lacks("(1/3)");
}

/// The monitor verifies its peer over TLS as libpq does, and a peer whose
/// certificate does not verify refuses it: never a peer that is gone, so no
/// TLS mistake can promote a replica while its primary lives.
#[test]
fn a_peer_whose_certificate_does_not_verify_is_refused_never_taken_for_gone() {
    let certs = testkit::Certificates::new();
    let tls_env = |certs: &testkit::Certificates| -> Vec<(&'static str, PathBuf)> {
        vec![
            ("PGSSLMODE", PathBuf::from("verify-full")),
            ("PGSSLROOTCERT", certs.ca.clone()),
        ]
    };
    for (server, verifies) in [(&certs.server, true), (&certs.wrong_name, false)] {
        let primary = Node::primary_with(
            testkit::NodeOptions::new()
                .tls(server, &certs.ca)
                .hba_line("hostnossl all replication 127.0.0.1/32 reject"),
        );
        primary.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
        let replica = Node::replica_of(&primary);
        replica.wait_streaming();
        cut_replication(&replica);
        let env = tls_env(&certs);
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let dir = tempfile::Builder::new()
            .prefix("pgmonitor.")
            .tempdir()
            .unwrap();
        let monitor = Monitor::start_with_env(
            "replica monitor",
            &Args::new(&replica, &primary.endpoint(), 1),
            dir,
            &env,
        );
        if verifies {
            monitor.wait_log("peer is primary");
        } else {
            monitor.wait_log("refuses the monitor's login, so it is not gone");
            monitor.wait_log("IP address mismatch");
            // Far more than three intervals: a refused peer is never counted.
            std::thread::sleep(Duration::from_secs(3));
            assert_still_replica(&replica, &monitor);
        }
    }
}

#[test]
fn split_brain_runs_the_fence_commands_on_both_monitors_in_order() {
    let a = Node::primary();
    a.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
    let b = Node::primary();
    b.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");

    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let fenced_a = dir_a.path().join("fenced");
    let fenced_b = dir_b.path().join("fenced");
    let records = [
        dir_a.path().join("fenced.json"),
        dir_b.path().join("fenced.json"),
    ];
    let mut args_a = Args::new(&a, &b.endpoint(), 0);
    args_a
        .set("--fence-record", records[0].to_str().unwrap())
        .set(
            "--fence-cmd",
            &format!("echo first >> {}", fenced_a.display()),
        )
        .set("--fence-cmd", "exit 3")
        .set(
            "--fence-cmd",
            &format!("echo third >> {}", fenced_a.display()),
        );
    let mut args_b = Args::new(&b, &a.endpoint(), 1);
    args_b
        .set("--fence-record", records[1].to_str().unwrap())
        .set(
            "--fence-cmd",
            &format!("echo fenced >> {}", fenced_b.display()),
        );
    let mut monitor_a = Monitor::start_in("monitor a", &args_a, dir_a);
    let mut monitor_b = Monitor::start_in("monitor b", &args_b, dir_b);

    for monitor in [&mut monitor_a, &mut monitor_b] {
        let status = monitor.wait_exit(PATIENCE);
        assert_eq!(
            status.code(),
            Some(0),
            "{}: expected exit 0 after fencing; log:\n{}",
            monitor.name,
            monitor.log()
        );
        monitor.wait_log("SPLIT-BRAIN");
        assert!(
            !monitor.path("monitor.pid").exists(),
            "{}: the pidfile should be removed on exit",
            monitor.name
        );
    }
    assert_eq!(
        fs::read_to_string(&fenced_a).unwrap_or_default(),
        "first\nthird\n",
        "monitor a: every fence command runs, in order, even after one fails; log:\n{}",
        monitor_a.log()
    );
    monitor_a.wait_log("fence command 2/3 exited 3");
    monitor_a.wait_log("fence command 3/3 exited 0");
    assert_eq!(
        fs::read_to_string(&fenced_b).unwrap_or_default(),
        "fenced\n",
        "monitor b: log:\n{}",
        monitor_b.log()
    );
    // Each left why it fenced: two primaries on the same timeline.
    for record in &records {
        let text = fs::read_to_string(record).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{}: {err}: {text:?}", record.display()));
        assert_eq!(json["why"], "split-brain", "{json}");
        assert_eq!(json["local_timeline"], 1, "{json}");
        assert_eq!(json["peer_timeline"], 1, "{json}");
        assert!(
            json["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot tell"),
            "{json}"
        );
    }
    // Before fencing, both stopped taking writes: neither may acknowledge one
    // that the operator's recovery would then discard.
    for node in [&a, &b] {
        let refused = node
            .connect()
            .batch_execute("CREATE TABLE after_split (x int)");
        let code = refused.err().and_then(|err| err.code().cloned());
        assert_eq!(
            code.as_ref().map(|c| c.code()),
            Some("25006"),
            "a write after the split-brain was not refused as read-only"
        );
    }
}

#[test]
fn the_pause_file_withholds_promotion_until_it_is_removed() {
    let (primary, replica) = pair();
    let pause_dir = tempfile::tempdir().unwrap();
    let pause_file = pause_dir.path().join("pause");
    fs::write(&pause_file, "").unwrap();
    let mut args = Args::new(&replica, &primary.endpoint(), 1);
    args.set("--pause-file", pause_file.to_str().unwrap());
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("failover paused:");
    monitor.wait_log("peer is primary");

    primary.kill9();
    monitor.wait_log("failover paused (pause file present); withheld: peer unreachable");
    monitor.wait_log("promoting the local replica");
    assert_still_replica(&replica, &monitor);

    fs::remove_file(&pause_file).unwrap();
    wait_promoted(&replica, &monitor);
    monitor.wait_log("failover resumed");
}

#[test]
fn the_lag_guard_holds_back_a_replica_until_it_has_replayed_enough() {
    let (primary, replica) = pair();
    let proxy = FaultProxy::new(&primary.endpoint());
    let mut args = Args::new(&replica, &proxy.endpoint(), 1);
    args.set("--max-lag-bytes", "8192");
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("peer is primary; replication streams");

    replica.execute("SELECT pg_wal_replay_pause()");
    primary.execute("CREATE TABLE filler AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 20000) g");
    let target = primary
        .query_text("SELECT pg_current_wal_lsn()")
        .expect("primary position");
    testkit::wait_for("the replica to receive the new WAL", PATIENCE, || {
        replica
            .query_text(&format!("SELECT pg_last_wal_receive_lsn() >= '{target}'"))
            .as_deref()
            == Some("t")
    });
    // Two more checks of the primary: the monitor has seen the new position.
    wait_checked(&primary, 2, &monitor);

    primary.kill9();
    monitor.wait_log("not promoting: the local replica replayed");
    assert_still_replica(&replica, &monitor);

    replica.execute("SELECT pg_wal_replay_resume()");
    wait_promoted(&replica, &monitor);
    assert_writable(&replica);
}

#[test]
fn a_replica_without_a_witness_majority_does_not_promote() {
    let (primary, replica) = pair();
    let witness_port = testkit::free_port();
    let mut args = Args::new(&replica, &primary.endpoint(), 1);
    args.set("--witness", &format!("127.0.0.1:{witness_port}"));
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("peer is primary");

    primary.kill9();
    monitor.wait_log("not promoting: only 0/1 witnesses reached");
    assert_still_replica(&replica, &monitor);

    // The witness comes back: now this replica is not the isolated one.
    let _witness = TcpListener::bind(("127.0.0.1", witness_port))
        .expect("the witness port was taken meanwhile");
    wait_promoted(&replica, &monitor);
}

/// A write on `node` fails as read-only (SQLSTATE 25006).
fn assert_refuses_writes(node: &Node, monitor: &Monitor) {
    let refused = node.connect().batch_execute("CREATE TABLE refused (x int)");
    let code = refused.err().and_then(|err| err.code().cloned());
    assert_eq!(
        code.as_ref().map(|c| c.code()),
        Some("25006"),
        "{} took a write; monitor log:\n{}",
        node.endpoint(),
        monitor.log()
    );
}

#[test]
fn a_primary_cut_off_from_its_peer_and_witnesses_refuses_writes_until_its_peer_answers_as_a_replica(
) {
    let (primary, replica) = pair();
    // The peer's checks are reset, as behind a broken link.
    let peer = FaultProxy::new(&replica.endpoint());
    peer.set_mode(ProxyMode::Reset);
    let witness_port = testkit::free_port();
    let witness = TcpListener::bind(("127.0.0.1", witness_port)).unwrap();

    let mut args = Args::new(&primary, &peer.endpoint(), 0);
    args.set("--witness", &format!("127.0.0.1:{witness_port}"))
        .set("--isolation-timeout", "1s");
    let mut monitor = Monitor::start("primary monitor", &args);
    monitor.wait_log("local node is primary; peer unreachable");

    // Peer gone but the witness reached: the lease holds, however long.
    let seen = peer.accepted();
    wait_accepted(&peer, seen + 10, &monitor);
    monitor.assert_log_lacks("LEASE LAPSED");
    assert_writable(&primary);

    drop(witness);
    monitor.wait_log("LEASE LAPSED");
    monitor.wait_log("local node now refuses writes");
    assert_refuses_writes(&primary, &monitor);
    assert!(
        monitor.running(),
        "it refuses writes, it does not fence; log:\n{}",
        monitor.log()
    );

    // The witness answers again, but the peer, still out of sight, may have
    // promoted meanwhile: writes stay refused.
    let _witness = TcpListener::bind(("127.0.0.1", witness_port))
        .expect("the witness port was taken meanwhile");
    let seen = peer.accepted();
    wait_accepted(&peer, seen + 10, &monitor);
    monitor.assert_log_lacks("taking writes again");
    assert_refuses_writes(&primary, &monitor);

    // The peer answers as a replica: it did not promote, writes resume.
    peer.set_mode(ProxyMode::Forward);
    monitor.wait_log("taking writes again");
    testkit::wait_for("the primary to take writes again", PATIENCE, || {
        primary
            .connect()
            .batch_execute("CREATE TABLE IF NOT EXISTS resumed (x int)")
            .is_ok()
    });
}

#[test]
fn a_hung_primary_server_is_stopped_when_its_lease_lapses() {
    let (primary, replica) = pair();
    let mut args = Args::new(&primary, &replica.endpoint(), 0);
    args.set("--isolation-timeout", "1s")
        .set(
            "--pg-ctl",
            &testkit::pg_bin().path("pg_ctl").display().to_string(),
        )
        .set("--data-dir", &primary.data_dir.display().to_string());
    let monitor = Monitor::start("primary monitor", &args);
    monitor.wait_log("local node is primary; peer is a replica");

    // Every process of the server stops, as in a storage stall: it could
    // resume and acknowledge writes after its peer promoted.
    let stopped = primary.freeze();
    monitor.wait_log("LEASE LAPSED while a check was still under way");
    monitor.wait_log("stopped the local server: SIGKILL to its");
    testkit::wait_for(
        "every process of the hung server to be gone",
        PATIENCE,
        || stopped.iter().all(|&pid| !testkit::process_alive(pid)),
    );
    testkit::Server::thaw(&stopped);
}

#[test]
fn a_primary_whose_lease_lapsed_steps_down_when_it_meets_its_promoted_peer() {
    let (old, new) = pair();
    let link = FaultProxy::new(&new.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let rejoined = dir.path().join("rejoined");
    let mut args = Args::new(&old, &link.endpoint(), 0);
    args.set("--isolation-timeout", "1s")
        .set("--rejoin-cmd", &format!("touch {}", rejoined.display()));
    let monitor = Monitor::start_in("old primary's monitor", &args, dir);
    monitor.wait_log("local node is primary; peer is a replica");

    // Cut off long enough for its lease to lapse; meanwhile the peer is promoted.
    link.set_mode(ProxyMode::Reset);
    monitor.wait_log("local node now refuses writes");
    new.promote();
    link.set_mode(ProxyMode::Forward);

    monitor.wait_log("this node is the stale one (this node refuses writes on timeline 1, the peer takes writes on timeline 2)");
    testkit::wait_for("the rejoin command to run", PATIENCE, || rejoined.exists());
    assert_refuses_writes(&old, &monitor);
    monitor.assert_log_lacks("fencing");
}

#[test]
fn of_two_primaries_taking_writes_the_older_timeline_steps_down_and_the_newer_goes_on() {
    let (old, new) = pair();
    let dir_old = tempfile::tempdir().unwrap();
    let rejoined = dir_old.path().join("rejoined");
    let mut args_old = Args::new(&old, &new.endpoint(), 0);
    args_old.set("--rejoin-cmd", &format!("touch {}", rejoined.display()));
    let monitor_old = Monitor::start_in("old primary's monitor", &args_old, dir_old);
    let mut args_new = Args::new(&new, &old.endpoint(), 1);
    args_new.set("--fence-cmd", "exit 0");
    let monitor_new = Monitor::start("new primary's monitor", &args_new);
    monitor_old.wait_log("local node is primary; peer is a replica");
    monitor_new.wait_log("local node is a replica; peer is primary");

    // An operator promotes the replica while the primary still runs.
    new.promote();

    testkit::wait_for("the old primary's rejoin command to run", PATIENCE, || {
        rejoined.exists()
    });
    monitor_old.wait_log("this node is the stale one");
    monitor_new.wait_log("waiting for it to step down");
    assert_refuses_writes(&old, &monitor_old);
    assert_writable(&new);
    monitor_new.assert_log_lacks("fencing");
}

#[test]
fn synchronous_on_degrades_when_the_replica_stops_and_restores_when_it_returns() {
    let (primary, replica) = pair();
    let mut args = Args::new(&primary, &replica.endpoint(), 0);
    args.set("--synchronous", "on");
    let monitor = Monitor::start("primary monitor", &args);
    let sync_state = || {
        primary
            .query_text("SELECT string_agg(sync_state, ',') FROM pg_stat_replication")
            .unwrap_or_default()
    };
    testkit::wait_for("the replica to become synchronous", PATIENCE, || {
        sync_state() == "sync"
    });
    monitor.wait_log("making commits synchronous again");

    replica.stop("fast");
    // This commit waits for the replica until the monitor degrades.
    let mut client = primary.connect();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let result = client.batch_execute(
            "CREATE TABLE during_outage (id int); INSERT INTO during_outage VALUES (1)",
        );
        let _ = done.send(result.map_err(|err| err.to_string()));
    });
    let result = finished.recv_timeout(PATIENCE).unwrap_or_else(|_| {
        panic!(
            "expected the write to commit once the monitor degraded; it still waits; log:\n{}",
            monitor.log()
        )
    });
    assert_eq!(result, Ok(()));
    monitor.wait_log("degrading to asynchronous commits");
    assert_eq!(
        primary
            .query_text("SHOW synchronous_standby_names")
            .as_deref(),
        Some("")
    );

    replica.start();
    testkit::wait_for(
        "the returning replica to be synchronous again",
        PATIENCE,
        || sync_state() == "sync",
    );
    monitor.wait_log_count("making commits synchronous again", 2);
}

#[test]
fn sigterm_ends_the_monitor_during_a_slow_check_and_removes_the_pidfile() {
    let primary = Node::primary();
    let peer = FaultProxy::new("127.0.0.1:1");
    peer.set_mode(ProxyMode::Blackhole);
    let mut args = Args::new(&primary, &peer.endpoint(), 0);
    args.set("--connect-timeout", "60");
    let mut monitor = Monitor::start("monitor", &args);
    // The peer check now hangs until its 60 s timeout.
    wait_accepted(&peer, 1, &monitor);
    let pid = fs::read_to_string(monitor.path("monitor.pid")).expect("a pidfile while running");
    assert_eq!(pid.trim(), monitor.child.id().to_string());

    monitor.signal("TERM");
    // Well under the 60 s the check would take: the signal does not wait for it.
    let status = monitor.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", monitor.log());
    assert!(
        !monitor.path("monitor.pid").exists(),
        "the pidfile should be removed"
    );
    monitor.wait_log("SIGTERM received: stopping");
}

#[test]
fn a_monitor_waits_for_its_local_postgres_and_acts_only_once_it_answers() {
    let primary = Node::primary();
    primary.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
    // A replica whose clone is done but which has not started yet.
    let replica = Node::cloned_from(&primary);
    primary.stop("fast");
    let monitor = Monitor::start(
        "replica monitor",
        &Args::new(&replica, &primary.endpoint(), 1),
    );

    // Two lines ~10 s apart: the monitor keeps waiting and says so.
    monitor.wait_log_count("waiting for the local postgres to answer", 2);
    monitor.assert_log_lacks("promoting the local replica");
    assert!(
        replica.data_dir.join("standby.signal").exists(),
        "the local node was promoted while down"
    );

    replica.start();
    wait_promoted(&replica, &monitor);
    monitor.wait_log("the primary's host answers but PostgreSQL does not run there");
}

#[test]
fn of_two_replicas_exactly_one_promotes_the_more_advanced_or_lower_index() {
    let primary = Node::primary();
    primary.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
    let one = Node::replica_of(&primary);
    let zero = Node::replica_of(&primary);
    one.wait_streaming();
    zero.wait_streaming();
    primary.stop("fast");
    let replayed = |node: &Node| {
        node.query_text("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")
            .and_then(|text| text.parse::<u64>().ok())
            .expect("replayed position")
    };
    // The shutdown checkpoint reaches both; let them settle before comparing.
    testkit::wait_for("both replicas to stop streaming", PATIENCE, || {
        [&one, &zero].iter().all(|node| {
            node.query_text("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
                .as_deref()
                == Some("0")
        })
    });
    let (lsn_one, lsn_zero) = (replayed(&one), replayed(&zero));

    let monitor_one = Monitor::start("index 1", &Args::new(&one, &zero.endpoint(), 1));
    let monitor_zero = Monitor::start("index 0", &Args::new(&zero, &one.endpoint(), 0));
    let started = Instant::now();
    while in_recovery(&one) && in_recovery(&zero) {
        assert!(
            started.elapsed() < PATIENCE,
            "expected one replica to promote; logs:\n{}\n{}",
            monitor_one.log(),
            monitor_zero.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (winner, loser, loser_monitor) = if in_recovery(&one) {
        (&zero, &one, &monitor_one)
    } else {
        (&one, &zero, &monitor_zero)
    };
    // The loser sees the winner as primary and stays a replica.
    loser_monitor.wait_log("local node is a replica; peer is primary");
    assert!(in_recovery(loser), "both replicas promoted");
    assert!(!in_recovery(winner));
    let expected_winner = if lsn_one > lsn_zero { &one } else { &zero };
    assert_eq!(
        winner.port(),
        expected_winner.port(),
        "replayed: index 1 at {lsn_one}, index 0 at {lsn_zero}; the wrong node promoted"
    );
}

#[test]
fn synchronous_strict_keeps_commits_waiting_for_the_replica_until_it_returns() {
    let (primary, replica) = pair();
    let peer = FaultProxy::new(&replica.endpoint());
    let mut args = Args::new(&primary, &peer.endpoint(), 0);
    args.set("--synchronous", "strict");
    let monitor = Monitor::start("primary monitor", &args);
    testkit::wait_for("the replica to become synchronous", PATIENCE, || {
        primary
            .query_text("SELECT string_agg(sync_state, ',') FROM pg_stat_replication")
            .as_deref()
            == Some("sync")
    });

    replica.stop("fast");
    let mut client = primary.connect();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let result = client.batch_execute("CREATE TABLE during_outage (id int)");
        let _ = done.send(result.map_err(|err| err.to_string()));
    });
    testkit::wait_for("the commit to wait for the replica", PATIENCE, || {
        primary
            .query_text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            .as_deref()
            == Some("1")
    });
    // Twice --retries checks with the replica gone: `on` would have degraded by now.
    let seen = peer.accepted();
    wait_accepted(&peer, seen + 6, &monitor);
    assert!(
        finished.try_recv().is_err(),
        "the commit went through without the replica; log:\n{}",
        monitor.log()
    );
    assert_eq!(
        primary
            .query_text("SHOW synchronous_standby_names")
            .as_deref(),
        Some("*")
    );
    monitor.assert_log_lacks("asynchronous");

    replica.start();
    let result = finished
        .recv_timeout(PATIENCE)
        .expect("the commit should finish once the replica is back");
    assert_eq!(result, Ok(()));
}

#[test]
fn promotion_falls_back_to_pg_ctl_as_the_data_directory_owner() {
    let (primary, replica) = pair();
    // A local user that may watch but not call pg_promote(): the fallback must do it.
    primary.execute("CREATE ROLE watcher LOGIN IN ROLE pg_monitor");
    testkit::wait_for("the role to reach the replica", PATIENCE, || {
        replica
            .query_text("SELECT count(*) FROM pg_roles WHERE rolname = 'watcher'")
            .as_deref()
            == Some("1")
    });
    let mut args = Args::new(&replica, &primary.endpoint(), 1);
    args.set("--user", "watcher")
        .set(
            "--pg-ctl",
            testkit::pg_bin().path("pg_ctl").to_str().unwrap(),
        )
        .set("--data-dir", replica.data_dir.to_str().unwrap());
    let monitor = Monitor::start("replica monitor", &args);
    monitor.wait_log("peer is primary; replication streams");

    primary.kill9();
    wait_promoted(&replica, &monitor);
    monitor.wait_log("pg_promote() failed");
    monitor.wait_log("promoted with pg_ctl");
    assert_writable(&replica);
}

/// The options that reach `node` over TCP as its superuser.
fn options_for(node: &Node) -> pgcore::ConnectOptions {
    pgcore::ConnectOptions::new(
        pgcore::Endpoint {
            host: "127.0.0.1".to_string(),
            port: node.port(),
        },
        Some(node.superuser().to_string()),
        Some("postgres".to_string()),
        Duration::from_secs(5),
    )
}

/// The watchdog may act just as a killed primary comes back as its peer's
/// replica. Refusing writes there must change nothing: a read-only setting
/// persisted on a replica would outlive its next promotion, a primary that
/// refuses writes with nothing to lift it.
#[test]
fn refusing_writes_makes_a_primary_read_only_and_leaves_a_replica_as_it_is() {
    let (primary, replica) = pair();
    let client = pgcore::Client::new().expect("a probe runtime");

    pg_monitor::effects::refuse_writes(&client, &options_for(&replica))
        .expect("the replica answers");
    replica.promote();
    assert_writable(&replica);

    pg_monitor::effects::refuse_writes(&client, &options_for(&primary))
        .expect("the primary answers");
    assert_eq!(
        primary
            .query_text("SHOW default_transaction_read_only")
            .as_deref(),
        Some("on"),
        "a primary refuses writes"
    );
}
