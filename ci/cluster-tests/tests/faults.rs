//! The fault matrix on the local HA cluster (ci/cluster): each scenario on a
//! fresh cluster while a client writes through the VIP. Needs root (network
//! and mount namespaces). The scenarios share fixed namespaces and addresses,
//! so they run one at a time.

use std::sync::Mutex;

use cluster_tests::scenarios::{run, Scenario};
use cluster_tests::{Cluster, Outcome};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario(scenario: Scenario, synchronous: bool) -> Outcome {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = Cluster::up(synchronous);
    let outcome = run(scenario, &cluster);
    println!("{outcome}");
    report(&outcome, synchronous);

    assert_eq!(
        outcome.split_rounds, 0,
        "{}: both nodes accepted writes through the haproxies at the same moment",
        outcome.scenario
    );
    assert!(
        outcome.acked > 0,
        "{}: no write was acknowledged",
        outcome.scenario
    );
    if synchronous {
        assert!(
            outcome.lost.is_empty(),
            "{}: with synchronous replication, acknowledged writes were lost: {:?}",
            outcome.scenario,
            outcome.lost
        );
    }
    outcome
}

#[test]
fn a_killed_postmaster_fails_over_without_losing_acknowledged_writes() {
    scenario(Scenario::KillPostmaster, true);
}

#[test]
fn a_killed_postmaster_with_asynchronous_replication_reports_lost_writes() {
    let outcome = scenario(Scenario::KillPostmaster, false);
    println!(
        "asynchronous replication: {} of {} acknowledged writes lost",
        outcome.lost.len(),
        outcome.acked
    );
}

#[test]
fn monit_stop_postgres_on_the_primary_fails_over() {
    scenario(Scenario::MonitStopPostgres, true);
}

#[test]
fn killing_haproxy_on_the_vip_holder_moves_the_vip() {
    scenario(Scenario::KillHaproxyOnVipHolder, true);
}

#[test]
fn a_cut_link_isolates_and_fences_the_primary_and_it_rejoins_after() {
    scenario(Scenario::CutPrimaryLink, true);
}

#[test]
fn restarting_the_replica_vm_keeps_the_primary() {
    scenario(Scenario::RestartReplicaJobs, true);
}

#[test]
fn both_vms_restarted_primary_first_keep_their_roles() {
    scenario(Scenario::RestartBothPrimaryFirst, true);
}

#[test]
fn both_vms_restarted_replica_first_end_with_one_primary() {
    scenario(Scenario::RestartBothReplicaFirst, true);
}

#[test]
fn a_split_brain_fences_both_nodes_and_bin_recover_restores_the_pair() {
    scenario(Scenario::SplitBrain, true);
}

#[test]
fn the_smoke_tests_errand_passes_against_the_pair() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = Cluster::up(true);
    let output = cluster.check(&["smoke-tests"]);
    assert!(
        output.contains("smoke tests passed"),
        "errand output:\n{output}"
    );
}

/// Appends the outcome to `fault-matrix.txt` in cargo's test temp dir, which
/// ci/test prints after the tests: the lost-write counts are reported, not
/// buried in captured test output.
fn report(outcome: &Outcome, synchronous: bool) {
    use std::io::Write;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix.txt");
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{mode}: {outcome}");
    }
}
