//! `pg-bootstrap prepare` against real PostgreSQL servers: every row of the
//! decision table, the rewind and its clone fallback, a clone cut half-way,
//! and two nodes booting at once.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{finish, inode, pair, pg_bootstrap, tree_size, Run, Site};
use testkit::SERVER_TIMEOUT;
use testkit::{
    free_port, pg_bin, process_alive, run_as_user, wait_for, FaultProxy, Node, ProxyMode,
};

/// A loopback port nothing listens on.
fn closed_peer() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// What pg-monitor sets with ALTER SYSTEM on a primary (synchronous commits,
/// refusing writes), written to postgresql.auto.conf without a reload.
fn set_primary_only_settings(site: &Site) {
    site.execute("ALTER SYSTEM SET synchronous_standby_names = '*'");
    site.execute("ALTER SYSTEM SET default_transaction_read_only = on");
}

/// A clone or a rewind must not carry them: promoted, it would block commits or refuse writes.
fn assert_no_primary_only_settings(site: &Site) {
    let path = site.data_dir.join("postgresql.auto.conf");
    let auto_conf = std::fs::read_to_string(&path).expect("postgresql.auto.conf");
    for setting in ["synchronous_standby_names", "default_transaction_read_only"] {
        assert!(
            !auto_conf.contains(setting),
            "{} carries {setting} from the primary:\n{auto_conf}",
            path.display()
        );
    }
    assert!(auto_conf.contains("primary_conninfo"), "{auto_conf}");
}

fn rows(site: &Site) -> Vec<String> {
    site.column("SELECT v FROM t ORDER BY v")
}

#[test]
fn a_standalone_node_is_initialized_with_checksums_then_started_as_is() {
    let site = Site::new();
    let run = site.prepare(&[]);
    run.expect_code(0, "first boot")
        .expect_decision("init-primary (no data directory; standalone node)");
    let meta = fs::metadata(&site.data_dir).expect("no data directory was made");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "data directory mode"
    );
    if let Some(user) = run_as_user() {
        assert_eq!(
            meta.uid(),
            user.uid,
            "the data directory belongs to the run-as user"
        );
    }
    assert!(
        !site.staging().exists(),
        "the staging directory was left behind"
    );
    assert!(
        !site.passfile.exists(),
        "a standalone node needs no password file"
    );
    let before = inode(&site.data_dir);

    site.start();
    assert_eq!(
        site.value("SHOW data_checksums"),
        "on",
        "pg_rewind needs checksums later"
    );
    assert_eq!(site.value("SHOW server_encoding"), "UTF8");
    site.stop("fast");

    site.prepare(&[])
        .expect_code(0, "second boot")
        .expect_decision("start-standalone");
    assert_eq!(
        inode(&site.data_dir),
        before,
        "an existing data directory must be left as it is"
    );
}

#[test]
fn a_running_server_is_refused_and_left_alone() {
    let node = Node::primary();
    let data_dir = node.data_dir.display().to_string();
    let mut args = vec!["prepare", "--data-dir", &data_dir];
    let bin = pg_bin().dir.display().to_string();
    args.extend(["--pg-bin", &bin]);
    let user;
    if let Some(run_as) = run_as_user() {
        user = run_as.name.clone();
        args.extend(["--run-as", &user]);
    }
    let run = Run::of(&mut pg_bootstrap(&args));
    run.expect_code(3, "prepare on a running server")
        .expect_decision("refuse");
    let pid = node.postmaster_pid().expect("the server was stopped");
    assert!(run.stdout.contains(&format!("pid {pid}")), "{}", run.stdout);
    assert_eq!(
        node.query_text("SELECT 1").as_deref(),
        Some("1"),
        "the server was disturbed"
    );
}

#[test]
fn a_replica_node_waits_for_the_primary_then_clones_it_and_streams_with_scram() {
    let (primary, replica) = (Site::new(), Site::new());
    primary
        .prepare(&[
            "--replication",
            "--bootstrap",
            "--peer",
            &replica.endpoint(),
            "--grace",
            "1",
        ])
        .expect_code(0, "preparing the bootstrap node")
        .expect_decision(
            "init-primary (no data directory on the bootstrap node, and no peer answers at all)",
        );

    // The replica boots first and waits; the primary starts two seconds later
    // and only then gets its replication role.
    let waiting = replica.spawn_prepare(&[
        "--replication",
        "--peer",
        &primary.endpoint(),
        "--clone-wait",
        "60",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !replica.data_dir.exists(),
        "the replica cloned before any primary answered"
    );
    primary.start();
    // What pg-monitor may have set on the primary by the time it is cloned
    // (the clone cannot start before the replication role exists).
    set_primary_only_settings(&primary);
    primary.provision_replication();
    primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('from the primary')");

    let run = finish(waiting);
    run.expect_code(0, "replica prepare")
        .expect_decision(&format!("clone-from {}", primary.endpoint()));
    assert!(
        run.stderr.contains("waiting for a primary to clone from"),
        "{}",
        run.stderr
    );

    assert_no_primary_only_settings(&replica);
    let auto_conf = fs::read_to_string(replica.data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!("passfile=''{}''", replica.passfile.display())),
        "primary_conninfo must name the passfile: {auto_conf}"
    );
    assert!(
        !auto_conf.contains("password="),
        "a password reached primary_conninfo: {auto_conf}"
    );
    assert!(replica.data_dir.join("standby.signal").exists());
    let passfile = fs::metadata(&replica.passfile).expect("prepare wrote no password file");
    assert_eq!(passfile.permissions().mode() & 0o777, 0o600);
    if let Some(user) = run_as_user() {
        assert_eq!(
            passfile.uid(),
            user.uid,
            "the WAL receiver must be able to read the passfile"
        );
    }

    replica.start();
    replica.wait_streaming();
    primary.execute("INSERT INTO t VALUES ('streamed')");
    replica.wait_caught_up(&primary);
    assert_eq!(rows(&replica), ["from the primary", "streamed"]);
    assert!(replica.in_recovery());
}

#[test]
fn a_node_without_data_refuses_when_no_primary_answers_within_clone_wait() {
    let site = Site::new();
    let run = site.prepare(&[
        "--replication",
        "--peer",
        &closed_peer(),
        "--clone-wait",
        "2",
    ]);
    run.expect_code(3, "no primary to clone from")
        .expect_decision("refuse (no data directory, and no peer answered as primary within 2 s");
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(
        !site.data_dir.exists() && !site.staging().exists(),
        "something was created"
    );
    assert!(
        !site.passfile.exists(),
        "a refusal must change nothing, the passfile included"
    );
}

#[test]
fn the_bootstrap_node_joins_an_existing_primary_instead_of_starting_a_second_cluster() {
    let primary = Site::new();
    primary.prepare(&[]).expect_code(0, "standalone init");
    primary.start();
    primary.provision_replication();
    let bootstrap = Site::new();
    let flags = [
        "--replication",
        "--bootstrap",
        "--peer",
        &primary.endpoint(),
        "--grace",
        "5",
    ];

    let mut dry = flags.to_vec();
    dry.extend(["--dry-run", "--json"]);
    let run = bootstrap.prepare(&dry);
    run.expect_code(0, "dry run");
    let json = run.json();
    assert_eq!(json["decision"], "clone-from", "{json}");
    assert_eq!(json["peer"], primary.endpoint().as_str(), "{json}");
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["observed"]["state"], "absent");
    assert!(json["method"].is_null(), "a dry run did something: {json}");
    assert!(
        !bootstrap.data_dir.exists() && !bootstrap.passfile.exists(),
        "the dry run touched the disk"
    );

    bootstrap
        .prepare(&flags)
        .expect_code(0, "bootstrap node with a primary peer")
        .expect_decision(&format!("clone-from {}", primary.endpoint()));
    let system_identifier = "SELECT system_identifier FROM pg_control_system()";
    bootstrap.start();
    assert_eq!(
        bootstrap.value(system_identifier),
        primary.value(system_identifier)
    );
    assert!(bootstrap.in_recovery());
}

#[test]
fn a_crashed_former_primary_rejoins_its_promoted_peer_with_pg_rewind() {
    let (old_primary, new_primary) = pair();
    old_primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    new_primary.wait_caught_up(&old_primary);
    new_primary.promote();
    // pg_rewind copies the source's configuration, these settings included.
    set_primary_only_settings(&new_primary);
    // Split brain for a moment: both accept writes; the old primary's are lost.
    old_primary.execute("INSERT INTO t VALUES ('diverged'); INSERT INTO t SELECT 'bulk' FROM generate_series(1, 20000)");
    new_primary.execute("INSERT INTO t VALUES ('after failover')");
    old_primary.kill9();
    let directory = inode(&old_primary.data_dir);

    let run = old_primary.prepare(&[
        "--replication",
        "--peer",
        &new_primary.endpoint(),
        "--grace",
        "5",
        "--json",
    ]);
    run.expect_code(0, "rejoin");
    let json = run.json();
    assert_eq!(json["decision"], "rejoin", "{json}");
    assert_eq!(json["observed"]["state"], "primary");
    assert_eq!(
        json["method"], "rewind",
        "expected a rewind, not a clone: {json}\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("finishing crash recovery"),
        "{}",
        run.stderr
    );
    assert_eq!(
        inode(&old_primary.data_dir),
        directory,
        "the data directory was replaced: a clone, not a rewind"
    );

    assert_no_primary_only_settings(&old_primary);
    old_primary.start();
    old_primary.wait_streaming();
    assert!(
        old_primary.in_recovery(),
        "the rejoined node must be a replica"
    );
    new_primary.execute("INSERT INTO t VALUES ('streamed')");
    old_primary.wait_caught_up(&new_primary);
    assert_eq!(
        old_primary.column("SELECT DISTINCT v FROM t ORDER BY v"),
        ["after failover", "before", "streamed"],
        "the rewound node must hold the new primary's history, without its own diverged rows"
    );
}

/// Processes that outlive a killed postmaster; SIGKILLed when dropped, so
/// that a failing test leaves no backend spinning.
struct Outliving(Vec<u32>);

impl Drop for Outliving {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if process_alive(pid) {
                signal(pid, "-KILL");
            }
        }
    }
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// After `kill -9` of a postmaster, a backend busy in a query that never
/// waits and a stopped walsender live on, attached to the dead server's
/// shared memory, and PostgreSQL refuses to start beside them. Prepare ends
/// exactly those (a dry run only says it would), before it touches the data
/// directory, and rewinds at once instead of waiting 30 s and then cloning.
#[test]
fn a_crashed_primary_whose_backends_outlive_its_postmaster_is_rewound_at_once() {
    let (old_primary, new_primary) = pair();
    old_primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    new_primary.wait_caught_up(&old_primary);
    let walsender: u32 = old_primary
        .value("SELECT pid FROM pg_stat_replication")
        .parse()
        .unwrap();
    let mut busy = old_primary.connect();
    let busy_pid: u32 = busy
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get::<_, i32>(0) as u32;
    let outliving = Outliving(vec![walsender, busy_pid]);
    // A loop that never waits never looks for its postmaster.
    let busy = std::thread::spawn(move || busy.batch_execute("DO $$ BEGIN LOOP END LOOP; END $$"));
    // Stopped, as a storage stall leaves a process.
    signal(walsender, "-STOP");
    new_primary.promote();
    new_primary.execute("INSERT INTO t VALUES ('after failover')");
    old_primary.kill9();
    std::thread::sleep(Duration::from_millis(500));
    for &pid in &outliving.0 {
        assert!(
            process_alive(pid),
            "process {pid} did not outlive its postmaster"
        );
    }
    let flags = [
        "--replication",
        "--peer",
        &new_primary.endpoint(),
        "--grace",
        "5",
        "--json",
    ];

    let dry = old_primary.prepare(&[&flags[..], &["--dry-run"]].concat());
    dry.expect_code(0, "dry run");
    for &pid in &outliving.0 {
        assert!(
            dry.stderr
                .contains(&format!("dry run: would end process {pid} ")),
            "{}",
            dry.stderr
        );
        assert!(process_alive(pid), "a dry run ended process {pid}");
    }

    let run = old_primary.prepare(&flags);
    run.expect_code(0, "rejoin");
    assert_eq!(
        run.json()["method"],
        "rewind",
        "expected a rewind, not a clone:\n{}",
        run.stderr
    );
    let recovery = run
        .stderr
        .find("finishing crash recovery")
        .unwrap_or_else(|| panic!("{}", run.stderr));
    for &pid in &outliving.0 {
        let ended = run
            .stderr
            .find(&format!("ending process {pid} of a crashed server"))
            .unwrap_or_else(|| panic!("process {pid} was not ended:\n{}", run.stderr));
        assert!(
            ended < recovery,
            "process {pid} was ended after the data directory was touched:\n{}",
            run.stderr
        );
        assert!(!process_alive(pid), "process {pid} is still alive");
    }
    assert!(
        !run.stderr.contains("still there after"),
        "prepare waited out its bound:\n{}",
        run.stderr
    );
    assert!(
        busy.join().unwrap().is_err(),
        "the busy backend's query ended normally"
    );

    old_primary.start();
    old_primary.wait_streaming();
    new_primary.execute("INSERT INTO t VALUES ('streamed')");
    old_primary.wait_caught_up(&new_primary);
    assert_eq!(rows(&old_primary), ["after failover", "before", "streamed"]);
}

#[test]
fn a_cleanly_stopped_former_primary_follows_its_promoted_peer_without_pg_rewind() {
    let (old_primary, new_primary) = pair();
    old_primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    // Its monitor's settings, which a replica must not keep.
    set_primary_only_settings(&old_primary);
    // What a planned switchover does: a clean (fast) shutdown sends every
    // record, the shutdown checkpoint included, to the streaming replica
    // before the primary exits; then the replica is promoted.
    old_primary.stop("fast");
    let control = pgcore::control::read(&old_primary.data_dir).unwrap();
    let received = format!(
        "SELECT pg_last_wal_receive_lsn() > '{}'::pg_lsn",
        control.checkpoint
    );
    assert_eq!(
        new_primary.value(&received),
        "t",
        "the replica lacks the shutdown checkpoint"
    );
    new_primary.promote();
    new_primary.execute("INSERT INTO t VALUES ('after switchover')");
    let directory = inode(&old_primary.data_dir);

    let run = old_primary.prepare(&[
        "--replication",
        "--peer",
        &new_primary.endpoint(),
        "--grace",
        "5",
        "--json",
    ]);
    run.expect_code(0, "follow");
    let json = run.json();
    assert_eq!(json["decision"], "follow", "{json}\n{}", run.stderr);
    assert_eq!(json["observed"]["state"], "primary");
    assert_eq!(json["method"], "reconfigure", "{json}");
    assert!(
        json["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("last checkpoint at {}", control.checkpoint)),
        "{json}"
    );
    assert!(
        !run.stderr.contains("rewinding") && !run.stderr.contains("cloning"),
        "neither pg_rewind nor a clone may run: {}",
        run.stderr
    );
    assert_eq!(inode(&old_primary.data_dir), directory);
    assert_no_primary_only_settings(&old_primary);

    old_primary.start();
    old_primary.wait_streaming();
    assert!(old_primary.in_recovery(), "it must follow as a replica");
    new_primary.execute("INSERT INTO t VALUES ('streamed')");
    old_primary.wait_caught_up(&new_primary);
    assert_eq!(
        rows(&old_primary),
        ["after switchover", "before", "streamed"]
    );
    assert_eq!(
        old_primary.value("SELECT received_tli FROM pg_stat_wal_receiver"),
        "2"
    );
}

#[test]
fn a_former_primary_on_the_timeline_its_peer_writes_is_cloned_not_rewound() {
    let (primary, second) = pair();
    primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    second.wait_caught_up(&primary);
    // A second primary on timeline 1, without a promotion (as a restored
    // backup would be): the replica started without its standby.signal.
    second.stop("fast");
    fs::remove_file(second.data_dir.join("standby.signal")).unwrap();
    second.start();
    assert!(!second.in_recovery());
    second.execute("INSERT INTO t VALUES ('diverged')");
    primary.execute("INSERT INTO t VALUES ('after')");
    second.stop("fast");

    let run = second.prepare(&[
        "--replication",
        "--peer",
        &primary.endpoint(),
        "--grace",
        "5",
        "--json",
    ]);
    run.expect_code(0, "rejoin");
    assert_eq!(run.json()["decision"], "rejoin", "{}", run.stderr);
    // pg_rewind would find "no rewind required", and the node could not stream.
    assert_eq!(run.json()["method"], "clone", "{}", run.stderr);
    assert!(
        run.stderr.contains("two primaries on one timeline"),
        "{}",
        run.stderr
    );
    second.start();
    second.wait_streaming();
    primary.execute("INSERT INTO t VALUES ('streamed')");
    second.wait_caught_up(&primary);
    assert_eq!(rows(&second), ["after", "before", "streamed"]);
}

#[test]
fn a_replica_rebooting_while_its_primary_runs_rejoins_without_a_clone() {
    let (primary, replica) = pair();
    primary.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    replica.wait_caught_up(&primary);
    let directory = inode(&replica.data_dir);
    let rejoin = [
        "--replication",
        "--peer",
        &primary.endpoint(),
        "--grace",
        "5",
        "--json",
    ];

    // A clean reboot: its WAL ends on the primary's timeline, so it follows
    // the primary as it is, without running pg_rewind.
    replica.stop("fast");
    primary.execute("INSERT INTO t VALUES ('while rebooting')");
    let run = replica.prepare(&rejoin);
    run.expect_code(0, "clean replica reboot");
    assert_eq!(run.json()["decision"], "follow", "{}", run.stderr);
    assert_eq!(run.json()["method"], "reconfigure", "{}", run.stderr);
    assert!(
        !run.stderr.contains("rewinding"),
        "pg_rewind ran:\n{}",
        run.stderr
    );
    replica.start();
    replica.wait_caught_up(&primary);

    // A crash: a standby cannot finish crash recovery in single-user mode, so
    // pg_rewind cannot check it; it is pointed at the primary as it is.
    replica.kill9();
    primary.execute("INSERT INTO t VALUES ('while crashed')");
    let run = replica.prepare(&rejoin);
    run.expect_code(0, "crashed replica");
    assert_eq!(run.json()["method"], "reconfigure", "{}", run.stderr);
    assert_eq!(
        inode(&replica.data_dir),
        directory,
        "the replica was cloned afresh"
    );
    replica.start();
    replica.wait_streaming();
    replica.wait_caught_up(&primary);
    assert_eq!(
        rows(&replica),
        ["before", "while crashed", "while rebooting"]
    );
}

/// Makes `old` (initialised without data checksums, as the original release
/// did) a former primary whose replica `new` was promoted, with a diverged write.
fn former_primary_without_checksums() -> (Site, Site) {
    let (old, new) = (Site::new(), Site::new());
    old.initdb_without_checksums();
    old.start();
    old.provision_replication();
    old.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')");
    new.prepare(&["--replication", "--peer", &old.endpoint()])
        .expect_code(0, "cloning the replica");
    new.start();
    new.wait_caught_up(&old);
    new.promote();
    old.execute("INSERT INTO t VALUES ('diverged')");
    new.execute("INSERT INTO t VALUES ('after failover')");
    old.stop("fast");
    (old, new)
}

#[test]
fn a_fallback_clone_cut_half_way_keeps_the_old_data_dir_and_a_retry_completes_it() {
    let (old, new) = former_primary_without_checksums();
    let proxy = FaultProxy::new(&new.endpoint());
    let directory = inode(&old.data_dir);

    // Rewind is impossible (no checksums, no wal_log_hints): prepare falls back
    // to a clone, slowed down so that the link can be cut half-way.
    let rejoin = old.spawn_prepare(&[
        "--replication",
        "--peer",
        &proxy.endpoint(),
        "--grace",
        "5",
        "--clone-max-rate",
        "1M",
    ]);
    let staging = old.staging();
    wait_for(
        "the fallback clone to copy a few megabytes",
        SERVER_TIMEOUT,
        || tree_size(&staging.join("base")) > 2 << 20,
    );
    proxy.set_mode(ProxyMode::Reset);
    proxy.cut_open_connections();
    let run = finish(rejoin);
    run.expect_code(1, "a clone cut half-way")
        .expect_decision("rejoin");
    assert!(
        run.stderr.contains("cannot rewind"),
        "the fallback was not logged: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "the data directory {} was left as it was",
            old.data_dir.display()
        )),
        "the error must say what was left: {}",
        run.stderr
    );
    assert!(!staging.exists(), "the partial clone was left behind");
    assert_eq!(
        inode(&old.data_dir),
        directory,
        "the old data directory was replaced"
    );

    old.start();
    assert!(
        !old.in_recovery(),
        "the untouched data directory starts as the primary it was"
    );
    assert_eq!(rows(&old), ["before", "diverged"]);
    old.stop("fast");

    proxy.set_mode(ProxyMode::Forward);
    let run = old.prepare(&[
        "--replication",
        "--peer",
        &proxy.endpoint(),
        "--grace",
        "5",
        "--json",
    ]);
    run.expect_code(0, "the retried rejoin");
    assert_eq!(run.json()["method"], "clone", "{}", run.stderr);
    assert_ne!(
        inode(&old.data_dir),
        directory,
        "a clone swaps in a new directory"
    );
    old.start();
    old.wait_streaming();
    assert!(old.in_recovery());
    assert_eq!(rows(&old), ["after failover", "before"]);
}

#[test]
fn a_peer_primary_refusing_writes_is_not_rejoined() {
    let (old_primary, new_primary) = pair();
    new_primary.wait_caught_up(&old_primary);
    new_primary.promote();
    // The promoted node's monitor made it refuse writes (it is the stale
    // half of a split-brain about to step down): following it would rewind
    // this node's data onto a node on its way out.
    new_primary.execute("ALTER SYSTEM SET default_transaction_read_only = on");
    new_primary.execute("SELECT pg_reload_conf()");
    old_primary.stop("fast");
    let run = old_primary.prepare(&[
        "--replication",
        "--peer",
        &new_primary.endpoint(),
        "--grace",
        "2",
    ]);
    run.expect_code(0, "a read-only peer primary")
        .expect_decision("resume-primary");
    assert!(
        run.stderr.contains("refusing writes (not followed)")
            || run.stdout.contains("refusing writes (not followed)"),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn without_a_primary_peer_each_node_resumes_its_last_role() {
    let (primary, replica) = pair();
    let other_replica = Site::new();
    other_replica
        .prepare(&["--replication", "--peer", &primary.endpoint()])
        .expect_code(0, "a second replica")
        .expect_decision("clone-from");
    primary.stop("fast");
    // `replica` runs on, answering as a replica of a primary that is gone.

    let started = Instant::now();
    let peer_gone =
        primary.spawn_prepare(&["--replication", "--peer", &closed_peer(), "--grace", "2"]);
    let was_replica = other_replica.prepare(&[
        "--replication",
        "--peer",
        &replica.endpoint(),
        "--grace",
        "2",
    ]);
    let peer_gone = finish(peer_gone);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the grace period was cut short"
    );
    // The same data directory once more: prepares on it never overlap.
    let was_primary = primary.prepare(&[
        "--replication",
        "--peer",
        &replica.endpoint(),
        "--grace",
        "2",
    ]);

    peer_gone
        .expect_code(0, "peer unreachable for the whole grace")
        .expect_decision("resume-primary (no peer answered as primary within 2 s");
    assert!(
        peer_gone.stdout.contains("unreachable"),
        "{}",
        peer_gone.stdout
    );
    was_primary
        .expect_code(0, "peer answering as replica, data dir was a primary")
        .expect_decision("resume-primary");
    assert!(
        was_primary
            .stdout
            .contains(&format!("{} replica", replica.endpoint())),
        "{}",
        was_primary.stdout
    );
    was_replica
        .expect_code(0, "peer answering as replica, data dir was a replica")
        .expect_decision("resume-replica");
    assert!(
        was_replica.stdout.contains("pg-monitor"),
        "{}",
        was_replica.stdout
    );
    assert!(other_replica.data_dir.join("standby.signal").exists());
}

#[test]
fn under_consensus_a_former_primary_without_a_primary_peer_starts_as_a_standby() {
    let (primary, replica) = pair();
    set_primary_only_settings(&primary);
    primary.stop("fast");
    let run = primary.prepare(&[
        "--replication",
        "--consensus",
        "--peer",
        &replica.endpoint(),
        "--grace",
        "1",
    ]);
    run.expect_code(0, "a former primary, its peer a replica")
        .expect_decision("stand-by");
    assert!(primary.data_dir.join("standby.signal").exists());
    assert_no_primary_only_settings(&primary);
    primary.start();
    assert!(
        primary.in_recovery(),
        "the former primary must start in recovery, waiting for the monitor"
    );
}

#[test]
fn two_prepares_never_work_on_one_data_directory_at_once() {
    let site = Site::new();
    let peer = closed_peer();
    let flags = [
        "--replication",
        "--bootstrap",
        "--peer",
        &peer,
        "--grace",
        "3",
    ];
    let first = site.spawn_prepare(&flags);
    wait_for("the first prepare to take the lock", SERVER_TIMEOUT, || {
        site.root().join("db.lock").exists()
    });
    let second = site.prepare(&flags);
    second.expect_code(3, "a second prepare at the same time");
    assert!(
        second
            .stderr
            .contains("another pg-bootstrap prepare is working on"),
        "{}",
        second.stderr
    );
    finish(first)
        .expect_code(0, "the first prepare")
        .expect_decision("init-primary");
}

#[test]
fn both_nodes_booting_at_once_end_with_exactly_one_primary() {
    let (a, b) = pair();
    a.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before the reboot')");
    b.wait_caught_up(&a);
    b.stop("fast");
    a.stop("fast");

    // Each asks the other, which is not started either.
    let a_boot = a.spawn_prepare(&[
        "--replication",
        "--index",
        "0",
        "--bootstrap",
        "--peer",
        &b.endpoint(),
        "--grace",
        "3",
    ]);
    let b_boot = b.spawn_prepare(&[
        "--replication",
        "--index",
        "1",
        "--peer",
        &a.endpoint(),
        "--grace",
        "3",
    ]);
    let (a_run, b_run) = (finish(a_boot), finish(b_boot));
    a_run
        .expect_code(0, "node a")
        .expect_decision("resume-primary");
    b_run
        .expect_code(0, "node b")
        .expect_decision("resume-replica");

    let b_start = std::thread::spawn(move || {
        b.start();
        b
    });
    a.start();
    let b = b_start.join().expect("starting node b panicked");
    b.wait_streaming();
    let primaries = [&a, &b].iter().filter(|site| !site.in_recovery()).count();
    assert_eq!(primaries, 1, "exactly one node must be primary");
    a.execute("INSERT INTO t VALUES ('after the reboot')");
    b.wait_caught_up(&a);
    assert_eq!(rows(&b), ["after the reboot", "before the reboot"]);
}

#[test]
fn a_primary_of_another_cluster_is_refused_and_nothing_changes() {
    let ours = Site::new();
    ours.prepare(&[]).expect_code(0, "our cluster");
    let theirs = Site::new();
    theirs.prepare(&[]).expect_code(0, "their cluster");
    theirs.start();
    theirs.provision_replication();
    let directory = inode(&ours.data_dir);

    let run = ours.prepare(&[
        "--replication",
        "--peer",
        &theirs.endpoint(),
        "--grace",
        "3",
    ]);
    run.expect_code(3, "peer of another cluster")
        .expect_decision("refuse");
    assert!(run.stdout.contains("another cluster"), "{}", run.stdout);
    assert_eq!(inode(&ours.data_dir), directory);
    assert!(!ours.passfile.exists(), "a refusal must change nothing");
    ours.start();
    assert!(!ours.in_recovery());
}

#[test]
fn bad_input_is_refused_in_one_line_and_changes_nothing() {
    let site = Site::new();
    let data_dir = site.data_dir.display().to_string();
    let password_file = site.password_file.display().to_string();
    let bin = pg_bin().dir.display().to_string();
    let run_as = run_as_user().map(|user| user.name.clone());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--peer", "127.0.0.1:5432"],
            "given without --replication",
        ),
        (
            vec!["--replication", "--peer", "127.0.0.1:5432"],
            "needs --replication-password-file",
        ),
        (
            vec![
                "--replication",
                "--peer",
                "127.0.0.1:5432",
                "--replication-password-file",
                "/nonexistent/pw",
            ],
            "/nonexistent/pw",
        ),
        (
            vec![
                "--replication",
                "--peer",
                "127.0.0.1:5432",
                "--replication-password-file",
                "/dev/zero",
            ],
            "/dev/zero: not a regular file",
        ),
        (
            vec![
                "--replication",
                "--peer",
                "not a peer",
                "--replication-password-file",
                &password_file,
            ],
            "--peer 'not a peer'",
        ),
        (
            vec![
                "--replication",
                "--replication-password-file",
                &password_file,
            ],
            "needs --peer",
        ),
        (vec!["--pg-bin", "/nonexistent"], "no initdb"),
        (
            vec![
                "--replication",
                "--peer",
                "a:b:c",
                "--replication-password-file",
                &password_file,
                "--clone-wait",
                "1",
            ],
            "--peer 'a:b:c' is not HOST or HOST:PORT",
        ),
        (vec!["--clone-max-rate", "fast"], "is not a rate"),
        (vec!["--grace", "soon"], "soon"),
        (vec!["--grace", "1e300"], "maximum of 86400 s"),
        (vec!["--connect-timeout", "1e10"], "maximum of 86400 s"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["prepare", "--data-dir", &data_dir];
        if let Some(user) = &run_as {
            args.extend(["--run-as", user]);
        }
        if !extra.contains(&"--pg-bin") {
            args.extend(["--pg-bin", &bin]);
        }
        args.extend(&extra);
        let run = Run::of(&mut pg_bootstrap(&args));
        run.expect_code(2, &format!("{extra:?}"));
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(expected),
            "{extra:?}: expected {expected:?} in the first line, got {:?}",
            run.stderr
        );
        assert!(
            run.stdout.is_empty(),
            "{extra:?}: a decision was printed: {}",
            run.stdout
        );
    }
    if run_as.is_some() {
        let run = Run::of(&mut pg_bootstrap(&[
            "prepare",
            "--data-dir",
            &data_dir,
            "--pg-bin",
            &bin,
        ]));
        run.expect_code(2, "root without --run-as");
        assert!(run.stderr.contains("--run-as"), "{}", run.stderr);
    }
    for leftover in ["db", "db.staging", "db.lock", "pgpass"] {
        assert!(
            !site.root().join(leftover).exists(),
            "bad input created {leftover}"
        );
    }
}

#[test]
fn a_data_directory_that_is_a_file_is_a_usage_error_and_left_alone() {
    let site = Site::new();
    fs::write(&site.data_dir, "not a data directory\n").unwrap();
    let run = site.prepare(&[]);
    run.expect_code(2, "a regular file as the data directory");
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "not one line: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "--data-dir {} is a regular file, not a directory",
            site.data_dir.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "a decision was printed: {}",
        run.stdout
    );
    assert_eq!(
        fs::read_to_string(&site.data_dir).unwrap(),
        "not a data directory\n"
    );
    assert!(
        !site.root().join("db.lock").exists(),
        "a lock file was created"
    );
}

#[test]
fn a_dry_run_creates_nothing_not_even_the_lock_file() {
    let site = Site::new();
    site.prepare(&["--dry-run"])
        .expect_code(0, "dry run")
        .expect_decision("init-primary");
    for path in ["db", "db.staging", "db.lock"] {
        assert!(
            !site.root().join(path).exists(),
            "the dry run created {path}"
        );
    }
}

#[test]
fn a_refusal_removes_the_lock_file_and_the_directories_it_made() {
    let site = Site::new();
    let store = site.root().join("store");
    let data_dir = store.join("postgres/db").display().to_string();
    let password_file = site.password_file.display().to_string();
    let bin = pg_bin().dir.display().to_string();
    let peer = closed_peer();
    let mut args = vec![
        "prepare",
        "--data-dir",
        &data_dir,
        "--pg-bin",
        &bin,
        "--replication",
        "--replication-password-file",
        &password_file,
        "--peer",
        &peer,
        "--clone-wait",
        "1",
    ];
    let user;
    if let Some(run_as) = run_as_user() {
        user = run_as.name.clone();
        args.extend(["--run-as", &user]);
    }
    let run = Run::of(&mut pg_bootstrap(&args));
    run.expect_code(3, "no primary to clone from")
        .expect_decision("refuse");
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    assert!(
        !store.exists(),
        "the refusal left the lock file or the directories made for it under {}",
        store.display()
    );
}

#[test]
fn the_bootstrap_node_without_data_refuses_while_its_peers_answer_as_replicas() {
    let (primary, replica) = pair();
    primary.stop("fast");
    // The bootstrap node lost its disk; its replica still holds the data.
    let replacement = Site::new();
    let run = replacement.prepare(&[
        "--replication",
        "--bootstrap",
        "--peer",
        &replica.endpoint(),
        "--grace",
        "2",
    ]);
    run.expect_code(3, "an empty bootstrap node beside a replica")
        .expect_decision("refuse (no data directory on the bootstrap node");
    assert!(
        !replacement.data_dir.exists() && !replacement.staging().exists(),
        "an empty cluster was created beside the replica"
    );
}
