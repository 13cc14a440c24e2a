//! The fault scenarios, each run on a freshly started cluster while the client
//! writes through the VIP. Shared by the tests (which assert on the outcome)
//! and the benchmark (which reports the write gaps).

use std::time::Duration;

use crate::{now_ms, other, outcome, wait_until, Cluster, Outcome};

/// How long any step of a scenario may take before the scenario fails.
const STEP: Duration = Duration::from_secs(120);

/// How long a replica booted alone is watched for promoting itself: several
/// times what its monitor needs to give up on a peer.
const LONE_REPLICA_WATCH: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    KillPostmaster,
    MonitStopPostgres,
    KillHaproxyOnVipHolder,
    CutPrimaryLink,
    RestartReplicaJobs,
    RestartBothPrimaryFirst,
    RestartBothReplicaFirst,
    SplitBrain,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::KillPostmaster,
        Scenario::MonitStopPostgres,
        Scenario::KillHaproxyOnVipHolder,
        Scenario::CutPrimaryLink,
        Scenario::RestartReplicaJobs,
        Scenario::RestartBothPrimaryFirst,
        Scenario::RestartBothReplicaFirst,
        Scenario::SplitBrain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillPostmaster => "kill -9 the primary's postmaster",
            Scenario::MonitStopPostgres => "monit stop postgres on the primary",
            Scenario::KillHaproxyOnVipHolder => "kill haproxy on the VIP holder",
            Scenario::CutPrimaryLink => "cut the primary's link, then restore it",
            Scenario::RestartReplicaJobs => "restart the replica VM's jobs",
            Scenario::RestartBothPrimaryFirst => "stop both VMs, start the primary's first",
            Scenario::RestartBothReplicaFirst => "stop both VMs, start the replica's first",
            Scenario::SplitBrain => "split-brain (promote the replica), then bin/recover",
        }
    }
}

/// Runs `scenario` on `cluster` (healthy, freshly up) and reports what the client saw.
pub fn run(scenario: Scenario, cluster: &Cluster) -> Outcome {
    let primary = cluster.wait_for_single_primary(STEP);
    let replica = other(&primary).to_string();
    cluster.setup_table();
    let clients = cluster.start_clients();
    clients.wait_for_acks_after(0, 20, STEP);
    let fault = now_ms();

    let expected_primary = match scenario {
        Scenario::KillPostmaster => {
            cluster.check(&["kill-postmaster", &primary]);
            // monit restarts it; pg-bootstrap finds the new primary and rejoins it.
            replica.clone()
        }
        Scenario::MonitStopPostgres => {
            cluster.check(&["monit", &primary, "stop", "postgres"]);
            wait_until("the replica to be promoted", STEP, || {
                cluster.primaries() == [replica.clone()]
            });
            cluster.check(&["monit", &primary, "start", "postgres"]);
            replica.clone()
        }
        Scenario::KillHaproxyOnVipHolder => {
            let holder = cluster.vip_holder().expect("a VM holds the VIP");
            cluster.check(&["kill-haproxy", &holder]);
            let moved_to = other(&holder).to_string();
            wait_until("the VIP to move", STEP, || {
                cluster.vip_holder().as_deref() == Some(moved_to.as_str())
            });
            primary.clone()
        }
        Scenario::CutPrimaryLink => {
            cluster.check(&["link", &primary, "down"]);
            // The isolated primary fences itself (it reaches neither its peer nor
            // the witness); the replica, which reaches the witness, promotes.
            wait_until(
                "the replica to be promoted and the isolated primary fenced",
                STEP,
                || cluster.primaries() == [replica.clone()] && cluster.fenced(&primary),
            );
            cluster.check(&["link", &primary, "up"]);
            cluster.check(&["recover", &primary]);
            replica.clone()
        }
        Scenario::RestartReplicaJobs => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["start-vm", &replica]);
            primary.clone()
        }
        Scenario::RestartBothPrimaryFirst => {
            cluster.check(&["stop-vm", &replica]);
            cluster.check(&["stop-vm", &primary]);
            cluster.check(&["start-vm", &primary]);
            cluster.check(&["start-vm", &replica]);
            primary.clone()
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
                primary.clone()
            } else {
                // Asynchronous: the lone replica promotes once its monitor gives
                // up on the peer; the old primary then rejoins as its replica.
                wait_until("the lone replica to be promoted", STEP, || {
                    cluster.primaries() == [replica.clone()]
                });
                cluster.check(&["start-vm", &primary]);
                replica.clone()
            }
        }
        Scenario::SplitBrain => {
            cluster.check(&["promote", &replica]);
            wait_until("both nodes to fence themselves", STEP, || {
                cluster.primaries().is_empty()
                    && cluster.fenced(&primary)
                    && cluster.fenced(&replica)
            });
            // README: recover the node whose data is the truth first, then the other.
            cluster.check(&["recover", &primary]);
            cluster.check(&["recover", &replica]);
            primary.clone()
        }
    };

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
    let (writes, observations) = clients.stop();
    outcome(
        scenario.name(),
        cluster,
        &writes,
        &observations,
        fault,
        &new_primary,
    )
}
