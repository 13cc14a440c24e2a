//! The N-node mode's fault scenarios on the local cluster (`ci/cluster up
//! --consensus`), shared by the test (each once, in order, on one cluster)
//! and by failover-bench (each several times in a row). Each runs while a
//! client writes through the VIP, every haproxy and every node sampled ten
//! times a second, and must hold: never two nodes taking writes at once,
//! never two haproxies routing writes to two nodes, and with synchronous
//! commits no acknowledged write lost.

use std::time::Duration;

use crate::scenarios::SILENCE;
use crate::{address, member, now_ms, outcome, wait_until, Cluster, Outcome};

/// Bound on every wait; never a speed assertion.
pub const STEP: Duration = Duration::from_secs(180);

/// The replicas' lag bound of the example deployment
/// (`postgres.replication.max_lag_bytes` in ci/deployments/consensus.yml):
/// two WAL segment switches put a replica whose replay is paused beyond it.
const MAX_LAG_BYTES: u64 = 8 * 1024 * 1024;

/// How long a partitioned replica stays away: longer than the lease (ttl 10 s).
const REPLICA_AWAY: Duration = Duration::from_secs(15);

/// The scenarios, in the order the test runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillLeader,
    Switchover,
    RollingDeploy,
    LaggingReplica,
    ReplicaCutOff,
    EtcdMemberDown,
    QuorumLost,
    LeaderCutOff,
    LeaderCrash,
}

/// What one run of a scenario measured.
pub struct FaultRun {
    pub outcome: Outcome,
    /// Every silence of the writer through the VIP longer than [`SILENCE`],
    /// from the fault until the cluster settled, summed: for a rolling
    /// deploy, its total write gap.
    pub silent: Duration,
}

impl std::fmt::Display for FaultRun {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}; silences over {} ms summed {:.2} s",
            self.outcome,
            SILENCE.as_millis(),
            self.silent.as_secs_f64()
        )
    }
}

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

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::KillLeader,
        Fault::Switchover,
        Fault::RollingDeploy,
        Fault::LaggingReplica,
        Fault::ReplicaCutOff,
        Fault::EtcdMemberDown,
        Fault::QuorumLost,
        Fault::LeaderCutOff,
        Fault::LeaderCrash,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill -9 of the leader's postmaster",
            Fault::Switchover => "switchover to a named member",
            Fault::RollingDeploy => "a rolling deploy of every node",
            Fault::LaggingReplica => "kill -9 of the leader, a replica lagging beyond the bound",
            Fault::ReplicaCutOff => "a replica cut off (link down)",
            Fault::EtcdMemberDown => "one etcd member down",
            Fault::QuorumLost => "etcd quorum lost",
            Fault::LeaderCutOff => "the leader cut off (link down)",
            Fault::LeaderCrash => "the leader's VM crashed",
        }
    }

    /// Runs the scenario on a settled cluster and checks what must hold.
    pub fn run(self, cluster: &Cluster) -> FaultRun {
        let name = self.name();
        let leader = settled(cluster);
        cluster.setup_table();
        let clients = cluster.start_clients(false);
        clients.wait_for_acks_after(0, 20, STEP);
        let fault = now_ms();
        let expected = self.inject(cluster, &leader);
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
        let silent = seen.writes[0]
            .1
            .silences(fault, healed, SILENCE)
            .iter()
            .sum();
        let outcome = outcome(name, cluster, &seen, fault, &new_leader);
        assert_eq!(
            outcome.split_rounds, 0,
            "{name}: haproxies routed writes to two nodes at the same moment"
        );
        assert_eq!(
            outcome.both_writable, 0,
            "{name}: two nodes took writes at the same moment"
        );
        assert!(outcome.acked > 0, "{name}: no write was acknowledged");
        if cluster.synchronous() {
            assert!(
                outcome.lost.is_empty(),
                "{name}: with synchronous commits, acknowledged writes were lost: {:?}",
                outcome.lost
            );
        }
        FaultRun { outcome, silent }
    }

    /// Makes the fault, waits for what it must cause, and ends it.
    fn inject(self, cluster: &Cluster, leader: &str) -> Expect {
        match self {
            Fault::KillLeader => {
                cluster.check(&["kill-postmaster", leader]);
                Expect::Another
            }
            Fault::Switchover => {
                let target = replicas(cluster, leader)[0];
                cluster.check(&["switchover", leader, "--to", &member(target)]);
                Expect::Vm(target)
            }
            Fault::RollingDeploy => {
                // Each node's drain hands the leadership on through the
                // store before BOSH stops it.
                let output = cluster.deploy(&["postgres.config.work_mem=8MB".to_string()]);
                assert!(
                    output.status.success(),
                    "the rolling deploy failed:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                Expect::Any
            }
            Fault::LaggingReplica => kill_leader_with_a_lagging_replica(cluster, leader),
            Fault::ReplicaCutOff => {
                // One that does not hold the VIP: the scenario is the
                // replica's absence, not keepalived moving the VIP.
                let holder = cluster.vip_holder();
                let replica = replicas(cluster, leader)
                    .into_iter()
                    .find(|vm| holder.as_deref() != Some(*vm))
                    .expect("a replica without the VIP");
                cluster.check(&["link", replica, "down"]);
                std::thread::sleep(REPLICA_AWAY);
                cluster.check(&["link", replica, "up"]);
                Expect::Same
            }
            Fault::EtcdMemberDown => {
                cluster.check(&["stop-vm", "etcd1"]);
                std::thread::sleep(Duration::from_secs(5));
                cluster.check(&["start-vm", "etcd1"]);
                Expect::Same
            }
            Fault::QuorumLost => {
                cluster.check(&["stop-vm", "etcd1"]);
                cluster.check(&["stop-vm", "etcd2"]);
                // The leader cannot renew its key: it refuses writes, and
                // no replica can take the key.
                wait_until("no node to take writes", STEP, || {
                    cluster.writable_primaries().is_empty()
                });
                cluster.check(&["start-vm", "etcd1"]);
                cluster.check(&["start-vm", "etcd2"]);
                Expect::Any
            }
            Fault::LeaderCutOff => {
                cluster.check(&["link", leader, "down"]);
                wait_for_another_leader(cluster, leader);
                cluster.check(&["link", leader, "up"]);
                Expect::Another
            }
            Fault::LeaderCrash => {
                cluster.check(&["crash-vm", leader]);
                wait_for_another_leader(cluster, leader);
                // The VM comes back, as BOSH's resurrector would bring it.
                cluster.check(&["link", leader, "up"]);
                cluster.check(&["start-vm", leader]);
                Expect::Another
            }
        }
    }
}

/// One replica's replay is paused, the leader's WAL runs beyond the bound
/// ahead of it, the other replica's monitor is held back, and the leader's
/// postmaster is killed: the lagging replica, alone to see the key free,
/// must say why it does not take it, and the other one then leads.
fn kill_leader_with_a_lagging_replica(cluster: &Cluster, leader: &str) -> Expect {
    let [lagging, other] = replicas(cluster, leader)[..] else {
        panic!("three nodes expected")
    };
    // It still receives (and acknowledges) every commit, so it has as much
    // WAL as the other replica: only its replay falls behind.
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
}

fn replicas(cluster: &Cluster, leader: &str) -> Vec<&'static str> {
    cluster
        .vms()
        .iter()
        .copied()
        .filter(|vm| *vm != leader)
        .collect()
}

fn wait_for_another_leader(cluster: &Cluster, old: &str) {
    wait_until("another member to lead", STEP, || {
        let writable = cluster.writable_primaries();
        writable.len() == 1 && writable[0] != old
    });
}

/// Waits until one VM is primary and the others stream from it (after a
/// fault, the old leader rejoins first); returns it.
pub fn settled(cluster: &Cluster) -> String {
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
