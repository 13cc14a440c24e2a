//! The fault scenarios, each run on a healthy cluster while clients write
//! through the VIP (and, for partitions, on both sides of it). Shared by the
//! tests (which assert on the outcome) and the benchmark (which reports the
//! write gaps). A scenario ends with the pair healed, one primary and the
//! other streaming from it, so several can run one after another on one cluster.

use std::time::Duration;

use crate::{now_ms, other, outcome, wait_until, Cluster, Outcome};

/// How long any step of a scenario may take before the scenario fails.
const STEP: Duration = Duration::from_secs(120);

/// How long a replica booted alone is watched for promoting itself: several
/// times what its monitor needs to give up on a peer.
const LONE_REPLICA_WATCH: Duration = Duration::from_secs(10);

/// The release's lease (postgres.replication.isolation_timeout's default):
/// an isolated primary acknowledges nothing later than this after its cut.
pub const LEASE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    KillPostmaster,
    MonitStopPostgres,
    KillHaproxyOnVipHolder,
    CutPrimaryLink,
    RestartReplicaJobs,
    RestartBothPrimaryFirst,
    RestartBothReplicaFirst,
    OperatorPromotesReplica,
    /// Every process of the primary's postgres stopped for this many seconds.
    HungPrimary(u64),
    /// Every process of the replica's postgres stopped for ten seconds.
    HungReplica,
    /// The primary's link cut for 30 s, a client writing on each side.
    PartitionPrimary,
    /// The primary's link down 7 s and up 3 s, three times.
    FlappingLink,
    /// The replica re-cloned while the primary's monitor manages synchronous
    /// commits, then promoted: its commits must not block.
    CloneThenFailover,
    /// The replica made a primary on the primary's own timeline (as a
    /// restored backup would be): nothing tells them apart, both fence, and
    /// an operator runs bin/recover on the node to keep, then the other.
    EqualTimelines,
}

impl Scenario {
    /// The fault matrix as the benchmark runs it (numbered from 1 in this order).
    pub const ALL: [Scenario; 16] = [
        Scenario::KillPostmaster,
        Scenario::MonitStopPostgres,
        Scenario::KillHaproxyOnVipHolder,
        Scenario::CutPrimaryLink,
        Scenario::RestartReplicaJobs,
        Scenario::RestartBothPrimaryFirst,
        Scenario::RestartBothReplicaFirst,
        Scenario::OperatorPromotesReplica,
        Scenario::HungPrimary(5),
        Scenario::HungPrimary(10),
        Scenario::HungPrimary(20),
        Scenario::HungReplica,
        Scenario::PartitionPrimary,
        Scenario::FlappingLink,
        Scenario::CloneThenFailover,
        Scenario::EqualTimelines,
    ];

    pub fn name(self) -> String {
        match self {
            Scenario::KillPostmaster => "kill -9 the primary's postmaster".into(),
            Scenario::MonitStopPostgres => "monit stop postgres on the primary".into(),
            Scenario::KillHaproxyOnVipHolder => "kill haproxy on the VIP holder".into(),
            Scenario::CutPrimaryLink => "cut the primary's link, then restore it".into(),
            Scenario::RestartReplicaJobs => "restart the replica VM's jobs".into(),
            Scenario::RestartBothPrimaryFirst => "stop both VMs, start the primary's first".into(),
            Scenario::RestartBothReplicaFirst => "stop both VMs, start the replica's first".into(),
            Scenario::OperatorPromotesReplica => {
                "an operator promotes the replica (split-brain)".into()
            }
            Scenario::HungPrimary(seconds) => {
                format!("the primary's postgres hung for {seconds} s")
            }
            Scenario::HungReplica => "the replica's postgres hung for 10 s".into(),
            Scenario::PartitionPrimary => {
                "the primary's link cut for 30 s, a writer on each side".into()
            }
            Scenario::FlappingLink => "the primary's link down 7 s, up 3 s, three times".into(),
            Scenario::CloneThenFailover => {
                "the replica re-cloned under synchronous mode, then the primary killed".into()
            }
            Scenario::EqualTimelines => {
                "two primaries on one timeline: both fence, bin/recover both".into()
            }
        }
    }

    /// Whether a client writes inside each VM too (both sides of a partition).
    fn local_writers(self) -> bool {
        matches!(self, Scenario::PartitionPrimary | Scenario::FlappingLink)
    }

    /// Whether the scenario itself makes two primaries take writes for a
    /// moment (an operator promoting the replica of a running primary).
    pub fn makes_two_writable_primaries(self) -> bool {
        matches!(
            self,
            Scenario::OperatorPromotesReplica | Scenario::EqualTimelines
        )
    }
}

/// What a scenario leaves for the tests to check beyond the outcome.
pub struct Run {
    pub outcome: Outcome,
    /// Each time the faulted primary's link was down, and what the writer
    /// inside it (on the isolated side) had acknowledged meanwhile.
    pub isolations: Vec<Isolation>,
}

/// One cut of the faulted primary's link.
pub struct Isolation {
    /// When the link was cut and restored (unix ms).
    pub from_ms: u128,
    pub until_ms: u128,
    /// The last write the writer inside the isolated VM had acknowledged
    /// while it was cut off, if any.
    pub last_ack_ms: Option<u128>,
}

/// Runs `scenario` on `cluster` (healthy) and reports what the clients saw.
pub fn run(scenario: Scenario, cluster: &Cluster) -> Outcome {
    run_detailed(scenario, cluster).outcome
}

/// [`run`], with what the partition checks need.
pub fn run_detailed(scenario: Scenario, cluster: &Cluster) -> Run {
    let primary = cluster.wait_for_single_primary(STEP);
    let replica = other(&primary).to_string();
    cluster.wait_for_replica_of(&replica, &primary, STEP);
    cluster.setup_table();
    let clients = cluster.start_clients(scenario.local_writers());
    clients.wait_for_acks_after(0, 20, STEP);
    let fault = now_ms();

    let mut cuts = Vec::new();
    let expected_primary = inject(scenario, cluster, &primary, &replica, &mut cuts);

    let new_primary = cluster.wait_for_single_primary(STEP);
    assert_eq!(
        new_primary,
        expected_primary,
        "{}: unexpected primary",
        scenario.name()
    );
    let old_side = other(&new_primary).to_string();
    cluster.wait_for_replica_of(&old_side, &new_primary, STEP);
    let healed = now_ms();
    clients.wait_for_acks_after(healed, 20, STEP);
    let seen = clients.stop();
    let isolations = cuts
        .into_iter()
        .map(|(from_ms, until_ms)| Isolation {
            from_ms,
            until_ms,
            last_ack_ms: seen.last_ack_between(&primary, from_ms, until_ms),
        })
        .collect();
    Run {
        outcome: outcome(&scenario.name(), cluster, &seen, fault, &new_primary),
        isolations,
    }
}

/// Cuts `vm`'s link for `length`, recording when (unix ms) in `cuts`.
fn cut_link(cluster: &Cluster, vm: &str, length: Duration, cuts: &mut Vec<(u128, u128)>) {
    let from = now_ms();
    cluster.check(&["link", vm, "down"]);
    std::thread::sleep(length);
    let until = now_ms();
    cluster.check(&["link", vm, "up"]);
    cuts.push((from, until));
}

/// The fault itself; returns which VM should be primary once it is over.
/// Cuts of the primary's link are recorded in `cuts`.
fn inject(
    scenario: Scenario,
    cluster: &Cluster,
    primary: &str,
    replica: &str,
    cuts: &mut Vec<(u128, u128)>,
) -> String {
    let (primary, replica) = (primary.to_string(), replica.to_string());
    match scenario {
        Scenario::KillPostmaster => {
            cluster.check(&["kill-postmaster", &primary]);
            // monit restarts it; pg-bootstrap finds the new primary and rejoins it.
            replica
        }
        Scenario::MonitStopPostgres => {
            cluster.check(&["monit", &primary, "stop", "postgres"]);
            wait_until("the replica to be promoted", STEP, || {
                cluster.primaries() == [replica.clone()]
            });
            cluster.check(&["monit", &primary, "start", "postgres"]);
            replica
        }
        Scenario::KillHaproxyOnVipHolder => {
            let holder = cluster.vip_holder().expect("a VM holds the VIP");
            cluster.check(&["kill-haproxy", &holder]);
            let moved_to = other(&holder).to_string();
            wait_until("the VIP to move", STEP, || {
                cluster.vip_holder().as_deref() == Some(moved_to.as_str())
            });
            primary
        }
        Scenario::CutPrimaryLink => {
            cluster.check(&["link", &primary, "down"]);
            // The isolated primary's lease lapses (it reaches neither its peer
            // nor the witness): it refuses writes; the replica, which reaches
            // the witness, promotes once the lease and the margin are over.
            wait_until("the replica to be promoted", STEP, || {
                cluster.writable_primaries() == [replica.clone()]
            });
            cluster.check(&["link", &primary, "up"]);
            // The old primary, on the older timeline, steps down and rejoins by itself.
            replica
        }
        Scenario::RestartReplicaJobs => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["start-vm", &replica]);
            primary
        }
        Scenario::RestartBothPrimaryFirst => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["stop-vm", &primary]);
            cluster.check(&["start-vm", &primary]);
            cluster.check(&["start-vm", &replica]);
            primary
        }
        Scenario::RestartBothReplicaFirst => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["stop-vm", &primary]);
            cluster.check(&["start-vm", &replica]);
            if cluster.synchronous() {
                // A replica that boots alone cannot know whether it holds every
                // acknowledged commit, so it never promotes itself: the old
                // primary, started after, resumes and the replica follows it.
                cluster.wait_for_local_role(&replica, "replica", STEP);
                std::thread::sleep(LONE_REPLICA_WATCH);
                assert!(
                    cluster.primaries().is_empty(),
                    "the lone replica promoted itself"
                );
                cluster.check(&["start-vm", &primary]);
                primary
            } else {
                // Asynchronous: the lone replica promotes once its monitor gives
                // up on the peer; the old primary then rejoins as its replica.
                wait_until("the lone replica to be promoted", STEP, || {
                    cluster.primaries() == [replica.clone()]
                });
                cluster.check(&["start-vm", &primary]);
                replica
            }
        }
        Scenario::OperatorPromotesReplica => {
            // Two primaries; the old one is on the older timeline: it steps
            // down and rejoins, without an operator.
            cluster.check(&["promote", &replica]);
            replica
        }
        Scenario::HungPrimary(seconds) => {
            cluster.check(&["freeze", &primary]);
            std::thread::sleep(Duration::from_secs(seconds));
            cluster.check(&["thaw", &primary]);
            // A stall well past the lease makes the primary's monitor stop
            // its server, and the replica promote; one about as long as the
            // lease may end either way. Whichever: the other follows it.
            if seconds > 2 * LEASE.as_secs() {
                replica
            } else {
                cluster.wait_for_single_primary(STEP)
            }
        }
        Scenario::HungReplica => {
            cluster.check(&["freeze", &replica]);
            std::thread::sleep(Duration::from_secs(10));
            cluster.check(&["thaw", &replica]);
            primary
        }
        Scenario::PartitionPrimary => {
            cut_link(cluster, &primary, Duration::from_secs(30), cuts);
            replica
        }
        Scenario::FlappingLink => {
            for _ in 0..3 {
                cut_link(cluster, &primary, Duration::from_secs(7), cuts);
                std::thread::sleep(Duration::from_secs(3));
            }
            // Each cut is longer than the replica's wait (the lease and the
            // margin, 8 s) only by its own measure; whichever node ends up
            // primary, the other follows it.
            cluster.wait_for_single_primary(STEP)
        }
        Scenario::CloneThenFailover => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["exec", &replica, "rm", "-rf", "/var/vcap/store/postgres/db"]);
            cluster.check(&["start-vm", &replica]);
            cluster.wait_for_replica_of(&replica, &primary, STEP);
            let auto_conf = cluster.check(&[
                "exec",
                &replica,
                "cat",
                "/var/vcap/store/postgres/db/postgresql.auto.conf",
            ]);
            assert!(
                !auto_conf.contains("synchronous_standby_names"),
                "the clone carries the primary's synchronous setting:\n{auto_conf}"
            );
            cluster.wait_for_synchronous_replica(&replica, STEP);
            cluster.check(&["kill-postmaster", &primary]);
            replica
        }
        Scenario::EqualTimelines => {
            make_a_primary_on_the_same_timeline(cluster, &primary, &replica);
            wait_until("both nodes to fence themselves", STEP, || {
                cluster.fenced(&primary) && cluster.fenced(&replica)
            });
            for vm in [&primary, &replica] {
                let record = &cluster.status()[vm.as_str()]["fenced"];
                assert!(
                    record["why"] == "split-brain"
                        && record["local_timeline"] == record["peer_timeline"],
                    "{vm}: the fence record does not say why: {record}"
                );
            }
            // README: recover the node whose data is the truth first, then the other.
            cluster.check(&["recover", &primary]);
            cluster.check(&["recover", &replica]);
            for vm in [&primary, &replica] {
                assert!(
                    cluster.status()[vm.as_str()]["fenced"].is_null(),
                    "{vm}: bin/recover left the fence record"
                );
            }
            primary
        }
    }
}

/// Turns `replica` into a second primary on `primary`'s timeline, as a
/// restored backup would be, with failover paused meanwhile: it stops, loses
/// its standby.signal and starts cut off from its peer, so it resumes as a
/// primary without a promotion. Failover resumes once the link is back.
/// Its haproxy and keepalived are stopped first: no client is sent to the
/// second primary (cut off, its haproxy would route to itself, and its
/// keepalived claim the VIP), so no write is lost to the operator's choice.
fn make_a_primary_on_the_same_timeline(cluster: &Cluster, primary: &str, replica: &str) {
    const PAUSE_FILE: &str = "/var/vcap/store/postgres/failover.paused";
    for vm in [primary, replica] {
        cluster.check(&["exec", vm, "touch", PAUSE_FILE]);
    }
    for service in ["haproxy", "keepalived", "postgres"] {
        cluster.check(&["monit", replica, "stop", service]);
    }
    wait_until(
        "the replica's postgres, haproxy and keepalived to stop",
        STEP,
        || {
            let status = &cluster.status()[replica];
            status["postgres"]["role"] == "unreachable"
                && ["haproxy", "keepalived", "postgres"]
                    .iter()
                    .all(|service| status["services"][service] == "Not monitored")
        },
    );
    cluster.check(&[
        "exec",
        replica,
        "rm",
        "/var/vcap/store/postgres/db/standby.signal",
    ]);
    cluster.check(&["link", replica, "down"]);
    cluster.check(&["monit", replica, "start", "postgres"]);
    cluster.wait_for_local_role(replica, "primary", STEP);
    cluster.check(&["link", replica, "up"]);
    // The fence stops postgres, haproxy and the monitor, not keepalived.
    cluster.check(&["monit", replica, "start", "keepalived"]);
    for vm in [primary, replica] {
        cluster.check(&["exec", vm, "rm", PAUSE_FILE]);
    }
}
