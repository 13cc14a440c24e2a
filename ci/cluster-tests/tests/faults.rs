//! The fault matrix on the local HA cluster (ci/cluster): each scenario while
//! clients write through the VIP (and on both sides of a partition), every
//! node's role sampled ten times a second. Needs root (network and mount
//! namespaces). The scenarios share fixed namespaces and addresses, so they
//! run one at a time; the slow ones share a cluster.
//!
//! Every scenario must hold: never two primaries taking writes at once (no
//! sample, however brief), never the two haproxies routing writes to two
//! nodes, and with synchronous replication (the default) no acknowledged
//! write lost.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cluster_tests::scenarios::{run_detailed, Run, Scenario, LEASE, SILENCE};
use cluster_tests::{other, wait_until, Cluster, Outcome};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The turn of a test that brings a cluster up: one runs at a time.
fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `scenarios` one after another on one fresh cluster, checking each.
fn on_one_cluster(scenarios: &[Scenario], synchronous: bool) -> Vec<Run> {
    let _turn = one_cluster_at_a_time();
    let cluster = Cluster::up(synchronous);
    scenarios
        .iter()
        .map(|&scenario| {
            let run = run_detailed(scenario, &cluster);
            report(&run.outcome, synchronous);
            report_operations(&run);
            check(&run.outcome, scenario, synchronous);
            run
        })
        .collect()
}

fn scenario(scenario: Scenario, synchronous: bool) -> Outcome {
    on_one_cluster(&[scenario], synchronous)
        .pop()
        .expect("one run")
        .outcome
}

/// The invariants every scenario must hold.
fn check(outcome: &Outcome, scenario: Scenario, synchronous: bool) {
    assert_eq!(
        outcome.split_rounds, 0,
        "{}: the haproxies routed writes to both nodes at the same moment",
        outcome.scenario
    );
    if !scenario.makes_two_writable_primaries() {
        assert_eq!(
            outcome.both_writable, 0,
            "{}: both nodes took writes at the same moment",
            outcome.scenario
        );
    }
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
}

/// An isolated primary acknowledges nothing once its lease has lapsed (and
/// with synchronous replication nothing at all after the cut), in each cut.
fn check_isolated_side(run: &Run, synchronous: bool) {
    let bound = if synchronous {
        // A commit under way at the cut may still be acknowledged.
        Duration::from_millis(500)
    } else {
        // The lease, the watchdog's second, and the writer's timeout.
        LEASE + Duration::from_secs(2)
    };
    assert!(
        !run.isolations.is_empty(),
        "{}: no cut was recorded",
        run.outcome.scenario
    );
    for cut in &run.isolations {
        let Some(last_ack) = cut.last_ack_ms else {
            report_line(&format!(
                "{}: the isolated primary acknowledged nothing in a {:.0} s cut",
                run.outcome.scenario,
                (cut.until_ms - cut.from_ms) as f64 / 1000.0
            ));
            continue;
        };
        let after = (last_ack - cut.from_ms) as f64 / 1000.0;
        report_line(&format!(
            "{}: the isolated primary's last acknowledged write came {after:.2} s into a {:.0} s cut",
            run.outcome.scenario,
            (cut.until_ms - cut.from_ms) as f64 / 1000.0
        ));
        assert!(
            last_ack <= cut.from_ms + bound.as_millis(),
            "{}: the isolated primary acknowledged a write {after:.1} s after the cut (bound {:.1} s)",
            run.outcome.scenario,
            bound.as_secs_f64()
        );
    }
}

#[test]
fn a_killed_postmaster_fails_over_without_losing_acknowledged_writes() {
    scenario(Scenario::KillPostmaster, true);
}

/// Asynchronous replication may lose what the replica had not received: the
/// count is reported, not asserted; the invariants of [`check`] still hold.
#[test]
fn a_killed_postmaster_with_asynchronous_replication_fails_over_to_one_writable_primary() {
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
fn a_cut_link_makes_the_primary_refuse_writes_and_it_rejoins_by_itself_after() {
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
fn a_replica_promoted_by_an_operator_wins_and_the_old_primary_rejoins_it() {
    scenario(Scenario::OperatorPromotesReplica, true);
}

#[test]
fn two_primaries_on_one_timeline_both_fence_say_why_and_bin_recover_restores_the_pair() {
    scenario(Scenario::EqualTimelines, true);
}

const HUNG: [Scenario; 4] = [
    Scenario::HungPrimary(5),
    Scenario::HungPrimary(10),
    Scenario::HungPrimary(20),
    Scenario::HungReplica,
];

#[test]
fn hung_primaries_and_replicas_never_leave_two_writable_primaries_synchronous() {
    on_one_cluster(&HUNG, true);
}

#[test]
fn hung_primaries_and_replicas_never_leave_two_writable_primaries_asynchronous() {
    on_one_cluster(&HUNG, false);
}

const PARTITIONS: [Scenario; 2] = [Scenario::PartitionPrimary, Scenario::FlappingLink];

#[test]
fn a_partitioned_primary_stops_acknowledging_writes_synchronous() {
    for run in on_one_cluster(&PARTITIONS, true) {
        check_isolated_side(&run, true);
    }
}

#[test]
fn a_partitioned_primary_stops_acknowledging_writes_within_its_lease_asynchronous() {
    for run in on_one_cluster(&PARTITIONS, false) {
        check_isolated_side(&run, false);
    }
}

#[test]
fn a_clone_made_under_synchronous_mode_does_not_block_commits_once_promoted() {
    on_one_cluster(&[Scenario::CloneThenFailover], true);
}

const OPERATIONS: [Scenario; 3] = [
    Scenario::RollingDeploy,
    Scenario::Switchovers(10),
    Scenario::CanaryPostStartFails,
];

/// Issue-free operations lose no acknowledged write (see [`check`]), and
/// bring every restarted node back by following its peer as it is: no
/// pg_rewind, no clone.
#[test]
fn rolling_deploys_and_switchovers_lose_nothing_and_rewind_nothing() {
    let runs = on_one_cluster(&OPERATIONS, true);
    for (scenario, run) in OPERATIONS.iter().zip(&runs) {
        let name = &run.outcome.scenario;
        if *scenario == Scenario::CanaryPostStartFails {
            continue;
        }
        assert!(!run.boot_decisions.is_empty(), "{name}: no node restarted");
        let rewound: Vec<&String> = run
            .boot_decisions
            .iter()
            .filter(|line| !line.contains(": follow ") && !line.contains(": resume-"))
            .collect();
        assert!(
            rewound.is_empty(),
            "{name}: a node came back other than by following its peer: {rewound:?}"
        );
    }
}

/// `ha_proxy.check: external` keeps haproxy's external checks working: a
/// rolling deploy into that mode, then a failover routed by them, holding
/// every invariant the endpoint's checks hold.
#[test]
fn with_external_checks_the_pair_deploys_and_fails_over_as_with_the_endpoint() {
    let _turn = one_cluster_at_a_time();
    let cluster = Cluster::up(true);
    let output = cluster.deploy(&["vip:ha_proxy.check=external".to_string()]);
    assert!(
        output.status.success(),
        "the deploy to external checks failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for vm in ["vm0", "vm1"] {
        let cfg = cluster.check(&["exec", vm, "cat", "/var/vcap/jobs/vip/config/haproxy.cfg"]);
        assert!(
            cfg.contains("external-check command /var/vcap/jobs/postgres/bin/check-primary")
                && !cfg.contains("httpchk"),
            "{vm} does not check by script:\n{cfg}"
        );
    }
    let run = run_detailed(Scenario::KillPostmaster, &cluster);
    report(&run.outcome, true);
    check(&run.outcome, Scenario::KillPostmaster, true);
}

/// TLS turned on in the running pair as README says (two rolling deploys,
/// certificates from the bosh CLI's generator) under writes, losing nothing;
/// then the nodes stream to each other over verified TLS, a client without
/// TLS is refused through the VIP, and `kill -9` of the primary fails over
/// as without TLS, losing nothing, the old primary streaming over TLS again.
#[test]
fn tls_turned_on_in_rolling_deploys_then_kill_9_fails_over_as_without() {
    let _turn = one_cluster_at_a_time();
    let cluster = Cluster::up(true);
    let rollout = run_detailed(Scenario::TurnTlsOn, &cluster);
    report(&rollout.outcome, true);
    report_operations(&rollout);
    check(&rollout.outcome, Scenario::TurnTlsOn, true);

    let streams_over_tls = |primary: &str| {
        cluster
            .query(
                primary,
                "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
            )
            .trim()
            == "t"
    };
    let primary = cluster.wait_for_single_primary(Duration::from_secs(30));
    wait_until(
        "the WAL to stream over TLS",
        Duration::from_secs(30),
        || streams_over_tls(&primary),
    );
    let plain = cluster.run_with_env(&["psql", "-c", "SELECT 1"], &[("PGSSLMODE", "disable")]);
    let refusal = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && refusal.contains("no encryption"),
        "a client without TLS must be refused: {refusal}"
    );

    let run = run_detailed(Scenario::KillPostmaster, &cluster);
    report(&run.outcome, true);
    check(&run.outcome, Scenario::KillPostmaster, true);
    let primary = cluster.wait_for_single_primary(Duration::from_secs(30));
    cluster.wait_for_replica_of(other(&primary), &primary, Duration::from_secs(60));
    wait_until(
        "the old primary to stream over TLS again",
        Duration::from_secs(30),
        || streams_over_tls(&primary),
    );
}

#[test]
fn the_smoke_tests_errand_passes_against_the_pair() {
    let _turn = one_cluster_at_a_time();
    let cluster = Cluster::up(true);
    let output = cluster.check(&["smoke-tests"]);
    assert!(
        output.contains("smoke tests passed"),
        "errand output:\n{output}"
    );
}

/// The planned operations' own figures: each switchover's write gap, the
/// writer's silences while deploying, the nodes' boot decisions.
fn report_operations(run: &Run) {
    let name = &run.outcome.scenario;
    if !run.switchover_gaps.is_empty() {
        let mut gaps = run.switchover_gaps.clone();
        gaps.sort();
        let all: Vec<String> = gaps
            .iter()
            .map(|gap| format!("{:.2}", gap.as_secs_f64()))
            .collect();
        report_line(&format!(
            "{name}: write gap per switchover: median {:.2} s ({} s)",
            gaps[gaps.len() / 2].as_secs_f64(),
            all.join(" ")
        ));
    }
    if !run.deploy_silences.is_empty() {
        let total: Duration = run.deploy_silences.iter().sum();
        report_line(&format!(
            "{name}: the writer's silences longer than {} ms while deploying: {:?}, {:.2} s in all",
            SILENCE.as_millis(),
            run.deploy_silences,
            total.as_secs_f64()
        ));
    }
    if !run.boot_decisions.is_empty() {
        // The decision and its peer, without the reason.
        let decisions: Vec<&str> = run
            .boot_decisions
            .iter()
            .map(|line| line.split(" (").next().unwrap_or(line))
            .collect();
        report_line(&format!("{name}: boot decisions {decisions:?}"));
    }
}

/// Appends the outcome to `fault-matrix.txt` in cargo's test temp dir, which
/// ci/test prints after the tests: the lost-write counts are reported, not
/// buried in captured test output.
fn report(outcome: &Outcome, synchronous: bool) {
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    report_line(&format!("{mode}: {outcome}"));
}

/// Prints `line` and adds it to the fault matrix ci/test shows at the end.
fn report_line(line: &str) {
    cluster_tests::report_line(Path::new(env!("CARGO_TARGET_TMPDIR")), line);
}
