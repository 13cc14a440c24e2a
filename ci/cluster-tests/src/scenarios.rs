//! The fault scenarios, each run on a healthy cluster while clients write
//! through the VIP (and, for partitions, on both sides of it). Shared by the
//! tests (which assert on the outcome) and the benchmark (which reports the
//! write gaps). A scenario ends with the pair healed, one primary and the
//! other streaming from it, so several can run one after another on one cluster.

use std::time::Duration;

use crate::split::Split;
use crate::{now_ms, other, outcome, wait_until, Clients, Cluster, Outcome, VMS};

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
    /// `ci/cluster deploy` of a changed property: both VMs updated, the
    /// canary first, each drained by a planned switchover.
    RollingDeploy,
    /// This many planned switchovers (bin/switchover), back and forth.
    Switchovers(u32),
    /// A deploy whose canary's post-start fails (a library the server
    /// cannot load): it stops at the canary, the other node serves on; then
    /// the operator's fixed deploy.
    CanaryPostStartFails,
    /// postgres.tls turned on in a running pair as README says, in two
    /// rolling deploys: the certificates with the nodes preferring TLS
    /// (verify_peers false, not required), then verify-full and required.
    TurnTlsOn,
}

impl Scenario {
    /// The fault matrix as the benchmark runs it (numbered from 1 in this order).
    pub const ALL: [Scenario; 19] = [
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
        Scenario::RollingDeploy,
        Scenario::Switchovers(10),
        Scenario::CanaryPostStartFails,
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
            Scenario::RollingDeploy => "a rolling deploy of both VMs, canary first".into(),
            Scenario::Switchovers(count) => format!("{count} planned switchovers, back and forth"),
            Scenario::CanaryPostStartFails => {
                "a deploy whose canary post-start fails, then the fixed one".into()
            }
            Scenario::TurnTlsOn => "TLS turned on: two rolling deploys".into(),
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
    /// The write gap through the VIP of each planned switchover.
    pub switchover_gaps: Vec<Duration>,
    /// Every silence of the writer through the VIP longer than
    /// [`SILENCE`] while a deploy ran.
    pub deploy_silences: Vec<Duration>,
    /// The boot decisions the VMs logged during the scenario, as `vm:
    /// decision` (a rolling deploy must make neither a rejoin nor a clone).
    pub boot_decisions: Vec<String>,
    /// How the write gap of an unplanned failover splits (from the logs).
    pub split: Option<Split>,
}

/// A silence of the writer longer than this counts toward a deploy's write
/// gap: twice its period (one write every 50 ms).
pub const SILENCE: Duration = Duration::from_millis(100);

/// What the fault recorded while it ran, for [`Run`].
#[derive(Default)]
struct Record {
    /// The cuts of the primary's link, as (from, until) unix ms.
    cuts: Vec<(u128, u128)>,
    /// Each switchover's (start, end) in unix ms.
    switchovers: Vec<(u128, u128)>,
    /// Each deploy's (start, end) in unix ms.
    deploys: Vec<(u128, u128)>,
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
    let decisions_before = VMS.map(|vm| cluster.boot_decisions(vm).len());

    let mut record = Record::default();
    let expected_primary = inject(scenario, cluster, &clients, &primary, &replica, &mut record);

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
    let isolations = record
        .cuts
        .iter()
        .map(|&(from_ms, until_ms)| Isolation {
            from_ms,
            until_ms,
            last_ack_ms: seen.last_ack_between(&primary, from_ms, until_ms),
        })
        .collect();
    let vip_writes = &seen.writes[0].1;
    let switchover_gaps = record
        .switchovers
        .iter()
        .map(|&(from, until)| {
            let longest = vip_writes.silences(from, until, Duration::ZERO);
            longest.into_iter().max().unwrap_or_default()
        })
        .collect();
    let deploy_silences = record
        .deploys
        .iter()
        .flat_map(|&(from, until)| vip_writes.silences(from, until, SILENCE))
        .collect();
    let boot_decisions = VMS
        .iter()
        .zip(decisions_before)
        .flat_map(|(vm, before)| {
            cluster.boot_decisions(vm)[before..]
                .iter()
                .map(|decision| format!("{vm}: {decision}"))
                .collect::<Vec<_>>()
        })
        .collect();
    let split = (new_primary != primary)
        .then(|| crate::split::failover_split(cluster, fault, &new_primary))
        .flatten();
    Run {
        outcome: outcome(&scenario.name(), cluster, &seen, fault, &new_primary),
        isolations,
        switchover_gaps,
        deploy_silences,
        boot_decisions,
        split,
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
/// Cuts of the primary's link, switchovers and deploys are recorded in `record`.
fn inject(
    scenario: Scenario,
    cluster: &Cluster,
    clients: &Clients,
    primary: &str,
    replica: &str,
    record: &mut Record,
) -> String {
    let cuts = &mut record.cuts;
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
        Scenario::RollingDeploy => {
            // A value no earlier deploy on this cluster set, so both VMs change.
            let work_mem = format!("postgres.config.work_mem={}kB", 4096 + now_ms() % 1_000_000);
            let output = deploy(cluster, &[work_mem], record);
            for vm in VMS {
                assert!(
                    output.contains(&format!("{vm}: updating"))
                        || output.contains(&format!("{vm} (canary): updating")),
                    "the deploy did not update {vm}:\n{output}"
                );
            }
            // The canary's drain hands the role over, if it held it; the last
            // VM's drain hands it back to the canary.
            VMS[0].to_string()
        }
        Scenario::TurnTlsOn => {
            cluster.use_tls();
            let preferring = [
                "postgres.tls.verify_peers=false".to_string(),
                "postgres.tls.required=false".to_string(),
            ];
            deploy(cluster, &preferring, record);
            // Every node serves TLS now: each may verify the other, and refuse
            // clients without it.
            deploy(cluster, &[], record);
            VMS[0].to_string()
        }
        Scenario::Switchovers(count) => {
            let mut current = primary.clone();
            for _ in 0..count {
                let next = other(&current).to_string();
                let started = now_ms();
                cluster.check(&["switchover", &current]);
                record.switchovers.push((started, now_ms()));
                wait_until("the switchover's new primary", STEP, || {
                    cluster.writable_primaries() == [next.clone()]
                });
                cluster.wait_for_replica_of(&current, &next, STEP);
                if cluster.synchronous() {
                    cluster.wait_for_synchronous_replica(&current, STEP);
                }
                current = next;
            }
            current
        }
        Scenario::CanaryPostStartFails => {
            // What the VMs run, and a library the server cannot load.
            let running = cluster.deployed_sets();
            let mut bad = running.clone();
            bad.push("postgres.config.shared_preload_libraries=no_such_library".into());
            bad.push("postgres.post_start_timeout=20".into());
            let started = now_ms();
            let failed = cluster.deploy(&bad);
            record.deploys.push((started, now_ms()));
            let said = String::from_utf8_lossy(&failed.stderr).to_string();
            assert!(
                !failed.status.success() && said.contains("deploy stopped: vm0: post-start failed"),
                "the deploy did not stop at the canary's post-start:\n{said}"
            );
            assert!(
                !said.contains("vm1: updating"),
                "the deploy went on past the failed canary:\n{said}"
            );
            // The canary handed the role over in its drain, if it held it.
            wait_until("vm1 alone to take writes", STEP, || {
                cluster.writable_primaries() == ["vm1"]
            });
            clients.wait_for_acks_after(now_ms(), 20, STEP);
            // The operator's fix: the manifest as it was. Only the canary
            // changes; vm1, never updated, is left alone and stays primary.
            let output = deploy(cluster, &running, record);
            assert!(
                output.contains("vm1: no changes"),
                "the fixed deploy touched vm1:\n{output}"
            );
            "vm1".to_string()
        }
    }
}

/// A deploy with each of `sets` (`--set PROPERTY=VALUE`) that must go
/// through, recorded; its progress (stderr).
fn deploy(cluster: &Cluster, sets: &[String], record: &mut Record) -> String {
    let started = now_ms();
    let output = cluster.deploy(sets);
    record.deploys.push((started, now_ms()));
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "ci/cluster deploy {sets:?}:\n{said}"
    );
    said
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
