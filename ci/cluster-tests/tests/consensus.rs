//! The N-node mode on the local cluster (`ci/cluster up --consensus`): three
//! postgres + vip VMs and three etcd VMs, every job and package from the
//! compiled release. Each scenario runs while a client writes through the
//! VIP, every haproxy and every node sampled ten times a second, and must
//! hold: never two nodes taking writes at once, never two haproxies routing
//! writes to two nodes, and with synchronous commits (the default) no
//! acknowledged write lost. The scenarios share one cluster, in order.

use std::time::Duration;

use cluster_tests::{member, now_ms, outcome, report_line, wait_until, Cluster, Outcome};

/// Bound on every wait; never a speed assertion.
const STEP: Duration = Duration::from_secs(180);

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
        // before BOSH stops it.
        let output = cluster.deploy(&["postgres.config.work_mem=8MB".to_string()]);
        assert!(
            output.status.success(),
            "the rolling deploy failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Expect::Any
    });

    scenario(&cluster, "one etcd member down", |cluster, _| {
        cluster.check(&["stop-vm", "etcd1"]);
        std::thread::sleep(Duration::from_secs(5));
        cluster.check(&["start-vm", "etcd1"]);
        Expect::Same
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
