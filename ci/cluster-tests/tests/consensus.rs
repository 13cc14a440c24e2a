//! The N-node mode on the local cluster (`ci/cluster up --consensus`): three
//! postgres + vip VMs and three etcd VMs, every job and package from the
//! compiled release. Each scenario runs while a client writes through the
//! VIP, every haproxy and every node sampled ten times a second, and must
//! hold: never two nodes taking writes at once, never two haproxies routing
//! writes to two nodes, and with synchronous commits (the default) no
//! acknowledged write lost. The scenarios share one cluster, in order.

use std::time::Duration;

use cluster_tests::{address, member, now_ms, outcome, report_line, wait_until, Cluster, Outcome};

/// Bound on every wait; never a speed assertion.
const STEP: Duration = Duration::from_secs(180);

/// The replicas' lag bound the rolling deploy sets: half a WAL segment, so
/// that two segment switches put a paused replica beyond it.
const MAX_LAG_BYTES: u64 = 8 * 1024 * 1024;

/// How long a partitioned replica stays away: longer than the lease (ttl 10 s).
const REPLICA_AWAY: Duration = Duration::from_secs(15);

/// Which member leads once a fault is over.
enum Expect {
    /// Another member than the one that led.
    Another,
    /// This one.
    Vm(&'static str),
    /// The same one (a fault the leader rides out).
    Same,
    /// Any member (a rolling deploy hands the leadership on as it goes).
    Any,
}

/// Runs one scenario: `inject` gets the leading VM and says who should lead after.
fn scenario(
    cluster: &Cluster,
    name: &str,
    inject: impl FnOnce(&Cluster, &str) -> Expect,
) -> Outcome {
    let leader = settled(cluster);
    cluster.setup_table();
    let clients = cluster.start_clients(false);
    clients.wait_for_acks_after(0, 20, STEP);
    let fault = now_ms();
    let expected = inject(cluster, &leader);
    let new_leader = settled(cluster);
    match expected {
        Expect::Another => assert_ne!(new_leader, leader, "{name}: the same member leads"),
        Expect::Vm(vm) => assert_eq!(new_leader, vm, "{name}: unexpected leader"),
        Expect::Same => assert_eq!(new_leader, leader, "{name}: the leadership moved"),
        Expect::Any => {}
    }
    let healed = now_ms();
    clients.wait_for_acks_after(healed, 20, STEP);
    let seen = clients.stop();
    let outcome = outcome(name, cluster, &seen, fault, &new_leader);
    report(&outcome);
    assert_eq!(
        outcome.split_rounds, 0,
        "{name}: haproxies routed writes to two nodes at the same moment"
    );
    assert_eq!(
        outcome.both_writable, 0,
        "{name}: two nodes took writes at the same moment"
    );
    assert!(outcome.acked > 0, "{name}: no write was acknowledged");
    assert!(
        outcome.lost.is_empty(),
        "{name}: with synchronous commits, acknowledged writes were lost: {:?}",
        outcome.lost
    );
    outcome
}

/// Waits until one VM is primary and the others stream from it (after a
/// fault, the old leader rejoins first); returns it.
fn settled(cluster: &Cluster) -> String {
    // A switchover returns once the key names the target, which then
    // promotes: one primary, and it takes writes.
    let mut leader = String::new();
    wait_until("one primary, taking writes", STEP, || {
        let primaries = cluster.primaries();
        let writable = cluster.writable_primaries();
        if primaries.len() == 1 && writable == primaries {
            leader = primaries[0].clone();
            return true;
        }
        false
    });
    for vm in cluster.vms() {
        if *vm != leader {
            cluster.wait_for_replica_of(vm, &leader, STEP);
        }
    }
    leader
}

/// The lines of `vm`'s monitor log that contain `needle`.
fn monitor_lines(cluster: &Cluster, vm: &str, needle: &str) -> usize {
    cluster
        .check(&["exec", vm, "cat", "/var/vcap/sys/log/postgres/monitor.log"])
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// Sends `signal` (STOP, CONT) to `vm`'s pg-monitor.
fn signal_monitor(cluster: &Cluster, vm: &str, signal: &str) {
    cluster.check(&[
        "exec",
        vm,
        "sh",
        "-c",
        &format!("kill -{signal} \"$(cat /var/vcap/sys/run/postgres/monitor.pid)\""),
    ]);
}

fn report(outcome: &Outcome) {
    report_line(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("3 nodes on etcd, synchronous: {outcome}"),
    );
}

#[test]
fn three_nodes_on_etcd_fail_over_switch_over_and_ride_out_store_faults_without_losing_a_write() {
    let cluster = Cluster::up_consensus(true);

    scenario(
        &cluster,
        "kill -9 of the leader's postmaster",
        |cluster, leader| {
            cluster.check(&["kill-postmaster", leader]);
            Expect::Another
        },
    );

    scenario(
        &cluster,
        "switchover to a named member",
        |cluster, leader| {
            let target = cluster
                .vms()
                .iter()
                .copied()
                .find(|vm| *vm != leader)
                .expect("another VM");
            cluster.check(&["switchover", leader, "--to", &member(target)]);
            Expect::Vm(target)
        },
    );

    scenario(&cluster, "a rolling deploy of every node", |cluster, _| {
        // Each node's drain hands the leadership on through the store
        // before BOSH stops it. The deploy also bounds the replicas' lag,
        // for the next scenario.
        let output = cluster.deploy(&[
            "postgres.config.work_mem=8MB".to_string(),
            format!("postgres.replication.max_lag_bytes={MAX_LAG_BYTES}"),
        ]);
        assert!(
            output.status.success(),
            "the rolling deploy failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Expect::Any
    });

    scenario(
        &cluster,
        "kill -9 of the leader, a replica lagging beyond the bound",
        |cluster, leader| {
            let mut replicas = cluster.vms().iter().copied().filter(|vm| *vm != leader);
            let (lagging, other) = (replicas.next().unwrap(), replicas.next().unwrap());
            // It still receives (and acknowledges) every commit, so it has as
            // much WAL as the other replica: only its replay falls behind.
            cluster.query(lagging, "SELECT pg_wal_replay_pause()");
            for _ in 0..2 {
                cluster.query(leader, "SELECT pg_switch_wal()");
                std::thread::sleep(Duration::from_millis(500));
            }
            let lag = format!(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) > {MAX_LAG_BYTES} \
                 FROM pg_stat_replication WHERE client_addr = '{}'",
                address(lagging)
            );
            wait_until(&format!("{lagging} to lag beyond the bound"), STEP, || {
                cluster.query(leader, &lag).trim() == "t"
            });
            // The monitor reads its replica's lag each second: let it see this one.
            std::thread::sleep(Duration::from_secs(3));
            let refusal = "bytes behind the last leader position seen";
            let refused_before = monitor_lines(cluster, lagging, refusal);
            // The other replica's monitor is held back, so that the lagging
            // one is alone to see the key free: it must not take it.
            signal_monitor(cluster, other, "STOP");
            cluster.check(&["kill-postmaster", leader]);
            wait_until(
                &format!("{lagging}'s monitor to say it lags too far to lead"),
                STEP,
                || monitor_lines(cluster, lagging, refusal) > refused_before,
            );
            signal_monitor(cluster, other, "CONT");
            wait_until(&format!("{other} to lead"), STEP, || {
                cluster.writable_primaries() == [other.to_string()]
            });
            cluster.query(lagging, "SELECT pg_wal_replay_resume()");
            Expect::Vm(other)
        },
    );

    scenario(
        &cluster,
        "a replica cut off (link down)",
        |cluster, leader| {
            let replica = cluster
                .vms()
                .iter()
                .copied()
                .find(|vm| *vm != leader)
                .expect("a replica");
            cluster.check(&["link", replica, "down"]);
            std::thread::sleep(REPLICA_AWAY);
            cluster.check(&["link", replica, "up"]);
            Expect::Same
        },
    );

    scenario(&cluster, "one etcd member down", |cluster, _| {
        cluster.check(&["stop-vm", "etcd1"]);
        std::thread::sleep(Duration::from_secs(5));
        cluster.check(&["start-vm", "etcd1"]);
        Expect::Same
    });

    scenario(&cluster, "etcd quorum lost", |cluster, _| {
        cluster.check(&["stop-vm", "etcd1"]);
        cluster.check(&["stop-vm", "etcd2"]);
        // The leader cannot renew its key: it refuses writes, and no
        // replica can take the key.
        wait_until("no node to take writes", STEP, || {
            cluster.writable_primaries().is_empty()
        });
        cluster.check(&["start-vm", "etcd1"]);
        cluster.check(&["start-vm", "etcd2"]);
        Expect::Any
    });

    scenario(
        &cluster,
        "the leader cut off (link down)",
        |cluster, leader| {
            cluster.check(&["link", leader, "down"]);
            let old = leader.to_string();
            wait_until("another member to lead", STEP, || {
                let writable = cluster.writable_primaries();
                writable.len() == 1 && writable[0] != old
            });
            cluster.check(&["link", leader, "up"]);
            Expect::Another
        },
    );

    scenario(&cluster, "the leader's VM crashed", |cluster, leader| {
        cluster.check(&["crash-vm", leader]);
        let old = leader.to_string();
        wait_until("another member to lead", STEP, || {
            let writable = cluster.writable_primaries();
            writable.len() == 1 && writable[0] != old
        });
        // The VM comes back, as BOSH's resurrector would bring it.
        cluster.check(&["link", leader, "up"]);
        cluster.check(&["start-vm", leader]);
        Expect::Another
    });
}
