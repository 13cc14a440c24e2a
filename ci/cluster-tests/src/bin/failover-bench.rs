//! Benchmark: the write gap through the VIP per fault scenario, median of
//! --runs runs (each on a fresh local cluster), next to the original
//! release's claim of under 5 s. For the planned operations it also prints
//! each switchover's write gap (median of all) and each deploy's total write
//! gap (every silence of the writer longer than 100 ms, summed), with the
//! rewinds and clones they made; for an unplanned failover, how its write gap
//! splits (detection, promotion, haproxy's switch; medians, from the VMs'
//! logs). Needs root, like ci/cluster.
//!
//! With --consensus it runs the N-node topology's scenarios instead (three
//! nodes on etcd), each --runs times in a row on one cluster, and prints the
//! median write gap, and the median of every silence over 100 ms summed (a
//! rolling deploy's total write gap), beside Patroni's defaults (ttl 30 s,
//! loop_wait 10 s).
//!
//!   cargo run --release -p cluster-tests --bin failover-bench -- [--runs 5] [--asynchronous] [--tls] [SCENARIO...]
//!   cargo run --release -p cluster-tests --bin failover-bench -- --consensus [--runs 5] [--asynchronous] [SCENARIO...]

use std::time::Duration;

use clap::Parser;
use cluster_tests::consensus::Fault;
use cluster_tests::scenarios::{run_detailed, Scenario};
use cluster_tests::split::Split;
use cluster_tests::Cluster;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Run the clusters with `synchronous: off` instead of the default `on`.
    #[arg(long)]
    asynchronous: bool,
    /// Run the clusters with TLS required (`ci/cluster up --tls`), the clients verifying.
    #[arg(long, conflicts_with = "consensus")]
    tls: bool,
    /// The N-node topology on etcd (`ci/cluster up --consensus`): its
    /// scenarios, each --runs times in a row on one cluster.
    #[arg(long)]
    consensus: bool,
    /// Scenario numbers, from 1 in the order of README's Failover figures
    /// (with --consensus: of its "N nodes on etcd" figures); all when omitted.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    scenarios: Vec<u64>,
}

fn main() {
    let cli = Cli::parse();
    if cli.consensus {
        return consensus(&cli);
    }
    if let Some(n) = cli
        .scenarios
        .iter()
        .find(|&&n| n as usize > Scenario::ALL.len())
    {
        eprintln!(
            "failover-bench: no scenario {n}: there are {}",
            Scenario::ALL.len()
        );
        std::process::exit(2);
    }
    let chosen: Vec<Scenario> = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenarios
            .iter()
            .map(|&n| Scenario::ALL[n as usize - 1])
            .collect()
    };
    let mut rows = Vec::new();
    let mut operations = Vec::new();
    let mut failovers = Vec::new();
    for scenario in chosen {
        let mut gaps = Vec::new();
        let mut lost = 0;
        let mut switchover_gaps: Vec<Duration> = Vec::new();
        let mut deploy_gaps = Vec::new();
        let mut rebuilt = 0;
        let mut splits = Vec::new();
        for run_number in 1..=cli.runs {
            let cluster = if cli.tls {
                Cluster::up_with_tls(!cli.asynchronous)
            } else {
                Cluster::up(!cli.asynchronous)
            };
            let run = run_detailed(scenario, &cluster);
            let outcome = &run.outcome;
            eprintln!("run {run_number}: {outcome}");
            if let Some(split) = &run.split {
                eprintln!("run {run_number}: {split}");
                splits.push(split.clone());
            }
            gaps.extend(outcome.write_gap);
            lost += outcome.lost.len();
            switchover_gaps.extend(&run.switchover_gaps);
            if !run.deploy_silences.is_empty() || scenario == Scenario::RollingDeploy {
                deploy_gaps.push(run.deploy_silences.iter().sum::<Duration>());
            }
            rebuilt += run
                .boot_decisions
                .iter()
                .filter(|line| line.contains(": rejoin ") || line.contains(": clone-from "))
                .count();
        }
        if !switchover_gaps.is_empty() || !deploy_gaps.is_empty() {
            operations.push((scenario.name(), switchover_gaps, deploy_gaps, rebuilt, lost));
        }
        if !splits.is_empty() {
            failovers.push((scenario.name(), splits));
        }
        gaps.sort();
        let median = gaps.get(gaps.len() / 2).copied().unwrap_or(Duration::ZERO);
        rows.push((scenario.name(), median, gaps, lost));
    }
    println!(
        "{:<52} {:>10} {:>10} {:>6}  runs (s)",
        "scenario", "median", "original", "lost"
    );
    for (name, median, gaps, lost) in rows {
        let runs: Vec<String> = gaps
            .iter()
            .map(|g| format!("{:.2}", g.as_secs_f64()))
            .collect();
        println!(
            "{name:<52} {:>8.2} s {:>10} {lost:>6}  {}",
            median.as_secs_f64(),
            "< 5 s",
            runs.join(" ")
        );
    }
    for (name, splits) in failovers {
        let median = |part: fn(&Split) -> Duration| {
            let mut parts: Vec<Duration> = splits.iter().map(part).collect();
            parts.sort();
            parts[parts.len() / 2].as_secs_f64()
        };
        println!(
            "{name}: how the write gap splits, medians of {}: detection {:.3} s, promotion {:.3} s, \
             haproxy's switch {:.3} s",
            splits.len(),
            median(|split| split.detection),
            median(|split| split.promotion),
            median(|split| split.haproxy_switch),
        );
    }
    for (name, mut switchover_gaps, deploy_gaps, rebuilt, lost) in operations {
        println!("{name}:");
        if !switchover_gaps.is_empty() {
            switchover_gaps.sort();
            println!(
                "  write gap per switchover: median {:.2} s (target < 0.5 s) of {}: {}",
                switchover_gaps[switchover_gaps.len() / 2].as_secs_f64(),
                switchover_gaps.len(),
                seconds(&switchover_gaps)
            );
        }
        if !deploy_gaps.is_empty() {
            println!(
                "  total write gap per deploy (target < 1 s): {}",
                seconds(&deploy_gaps)
            );
        }
        println!("  acknowledged writes lost: {lost}; rewinds and clones: {rebuilt}");
    }
}

/// The N-node scenarios, each `--runs` times in a row on one cluster (each
/// run starts from a settled cluster, as the test's do).
fn consensus(cli: &Cli) {
    let chosen: Vec<Fault> = if cli.scenarios.is_empty() {
        Fault::ALL.to_vec()
    } else {
        cli.scenarios
            .iter()
            .map(|&n| {
                *Fault::ALL.get(n as usize - 1).unwrap_or_else(|| {
                    eprintln!(
                        "failover-bench: no N-node scenario {n}: there are {}",
                        Fault::ALL.len()
                    );
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let cluster = Cluster::up_consensus(!cli.asynchronous);
    let mut rows = Vec::new();
    for fault in chosen {
        let (mut gaps, mut silent) = (Vec::new(), Vec::new());
        let (mut acked, mut lost) = (0, 0);
        for run_number in 1..=cli.runs {
            let run = fault.run(&cluster);
            eprintln!("run {run_number}: {run}");
            gaps.extend(run.outcome.write_gap);
            silent.push(run.silent);
            acked += run.outcome.acked;
            lost += run.outcome.lost.len();
        }
        gaps.sort();
        silent.sort();
        rows.push((fault.name(), gaps, silent, acked, lost));
    }
    println!(
        "three nodes on etcd ({}), ttl 10 s, loop_wait 1 s; Patroni's defaults: ttl 30 s, loop_wait 10 s",
        if cli.asynchronous { "asynchronous" } else { "synchronous" }
    );
    println!(
        "{:<58} {:>10} {:>12} {:>8} {:>6}  runs (s)",
        "scenario", "median", "all silences", "acked", "lost"
    );
    let median = |durations: &[Duration]| {
        durations
            .get(durations.len() / 2)
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    };
    for (name, gaps, silent, acked, lost) in rows {
        println!(
            "{name:<58} {:>8.2} s {:>10.2} s {acked:>8} {lost:>6}  {}",
            median(&gaps),
            median(&silent),
            seconds(&gaps)
        );
    }
}

fn seconds(durations: &[Duration]) -> String {
    durations
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}
