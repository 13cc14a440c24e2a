//! Rejoining a former primary with pg_rewind versus a fresh clone.
//!
//! A primary with at least BENCH_DATA_MB of data (default 1100) and its
//! streaming replica, both fsync on. Each rewind run promotes the replica,
//! writes BENCH_DIVERGE_MB (default 4) of diverging rows on the old primary,
//! stops it, and times `pg-bootstrap prepare` rejoining it (which must use
//! pg_rewind); the roles then swap for the next run. Each clone run times
//! `pg-bootstrap prepare` cloning the current primary into an empty data
//! directory (what the original release did on every rejoin: rm -rf, then
//! pg_basebackup). Prints every run, the medians and the ratio.
//!
//! Run it with `ci/bench/rewind-vs-clone`; BENCH_RUNS (default 5) sets the
//! number of runs of each kind, BENCH_VERBOSE=1 shows what each prepare logged.
//! BENCH_LINK_MB_S puts a link of that many MB/s between the rejoining or
//! cloning node and its peer (a forwarder that paces what the peer sends), as
//! between two VMs; without it, the nodes talk over loopback.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tree_size, Run, Site};

/// Realistic durability (the servers and the tools sync to disk), and the WAL
/// a replica may need kept for it (as a release's HA configuration would).
const SETTINGS: [&str; 2] = ["fsync=on", "wal_keep_size=128MB"];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A TCP forwarder in front of a node that passes what the node sends at no
/// more than `bytes_per_second`, shared by all its connections, as one network
/// link would. Its threads end with the benchmark.
struct Link {
    port: u16,
}

impl Link {
    fn new(target: String, bytes_per_second: f64) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the link");
        let port = listener.local_addr().unwrap().port();
        // The instant the link is free again (a leaky bucket).
        let free_at = Arc::new(Mutex::new(Instant::now()));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pace(client_in, server_out, None));
                let free_at = Arc::clone(&free_at);
                std::thread::spawn(move || pace(server, client, Some((bytes_per_second, free_at))));
            }
        });
        Link { port }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn pace(mut from: TcpStream, mut to: TcpStream, limit: Option<(f64, Arc<Mutex<Instant>>)>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((rate, free_at)) = &limit {
            let wait = {
                let mut free_at = free_at.lock().unwrap();
                let now = Instant::now();
                *free_at = (*free_at).max(now) + Duration::from_secs_f64(n as f64 / rate);
                free_at.saturating_duration_since(now)
            };
            std::thread::sleep(wait);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// How the rejoining or cloning node reaches `node`: directly, or over a
/// paced link (kept open for the rest of the benchmark, as replicas stream
/// through it).
fn reach(node: &Site, link_rate: Option<f64>, links: &mut Vec<Link>) -> String {
    match link_rate {
        None => node.endpoint(),
        Some(rate) => {
            links.push(Link::new(node.endpoint(), rate));
            links.last().unwrap().endpoint()
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// Times one `prepare`, checks it was carried out with `method`, and returns
/// the seconds and what it logged.
fn timed_prepare(site: &Site, flags: &[&str], method: &str) -> (f64, String) {
    let mut args = flags.to_vec();
    args.push("--json");
    let started = Instant::now();
    let run: Run = site.prepare(&args);
    let seconds = started.elapsed().as_secs_f64();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("{}", run.stderr);
    }
    run.expect_code(0, method);
    assert_eq!(
        run.json()["method"],
        method,
        "expected a {method}, got {}\n{}",
        run.stdout,
        run.stderr
    );
    (seconds, run.stderr)
}

/// The megabytes pg_rewind said it had to copy (from its `--progress` line,
/// which `prepare` logs during the dry run).
fn rewind_megabytes(log: &str) -> f64 {
    log.lines()
        .find_map(|line| {
            let rest = line.split("need to copy ").nth(1)?;
            rest.split(' ').next()?.parse::<f64>().ok()
        })
        .unwrap_or(f64::NAN)
}

fn megabytes(site: &Site, sql: &str) -> f64 {
    site.value(sql).parse::<f64>().unwrap() / (1024.0 * 1024.0)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let data_mb = env_number("BENCH_DATA_MB", 1100);
    let diverge_mb = env_number("BENCH_DIVERGE_MB", 4);
    let runs = env_number("BENCH_RUNS", 5).max(1) as usize;
    let link_rate = std::env::var("BENCH_LINK_MB_S")
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|&rate| rate > 0.0)
        .map(|rate| rate * 1024.0 * 1024.0);
    let mut links = Vec::new();

    eprintln!("loading {data_mb} MB into a primary, then cloning its replica ...");
    let (first, second) = (
        Site::with_settings(&SETTINGS),
        Site::with_settings(&SETTINGS),
    );
    first
        .prepare(&[
            "--replication",
            "--bootstrap",
            "--peer",
            &second.endpoint(),
            "--grace",
            "0",
        ])
        .expect_code(0, "initializing the primary");
    first.start();
    first.provision_replication();
    // About 1 kB a row, in batches of ~100 MB so no one transaction is huge.
    first.execute("CREATE TABLE big (id bigint PRIMARY KEY, pad text)");
    let rows = data_mb * 1000;
    let batch = 100_000;
    for start in (0..rows).step_by(batch as usize) {
        first.execute(&format!(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 30) FROM generate_series({}, {}) g",
            start + 1,
            (start + batch).min(rows)
        ));
    }
    // Steady state: hint bits set and the visibility map built, as on a
    // database in use (the first reader of freshly loaded rows would
    // otherwise log every page, and pg_rewind would copy them all).
    first.execute("VACUUM ANALYZE big");
    first.execute("CHECKPOINT");
    // The replica is cloned from the loaded primary, as when a node is
    // replaced: its pg_wal holds only what was written since.
    second
        .prepare(&["--replication", "--peer", &first.endpoint()])
        .expect_code(0, "cloning the replica");
    second.start();
    second.wait_streaming();
    let size = megabytes(&first, "SELECT pg_database_size('postgres')");
    let cluster = megabytes(
        &first,
        "SELECT sum(pg_database_size(datname)) FROM pg_database",
    );
    eprintln!("data: {size:.0} MB in database postgres, {cluster:.0} MB in all databases");
    assert!(
        size >= 1024.0 || data_mb < 1100,
        "the benchmark needs at least 1 GiB of data, got {size:.0} MB"
    );

    let mut rewinds = Vec::new();
    let mut diverged_wal = Vec::new();
    let mut source_wal = Vec::new();
    let mut rewind_copied = Vec::new();
    let (mut primary, mut replica) = (first, second);
    let diverge_rows = diverge_mb * 1000;
    for run in 0..runs {
        replica.promote();
        let before = primary.value("SELECT pg_current_wal_lsn()");
        // Half new rows, half updates of rows scattered over the whole table.
        let half = diverge_rows / 2;
        let first_new = 10_000_000 + run as u64 * diverge_rows;
        primary.execute(&format!(
            "INSERT INTO big SELECT g, repeat('x', 960) FROM generate_series({first_new}, {}) g; \
             UPDATE big SET pad = reverse(pad) \
               WHERE id IN (SELECT g * {} + {run} + 1 FROM generate_series(0, {}) g)",
            first_new + half - 1,
            (rows / half).max(1),
            half - 1,
        ));
        diverged_wal.push(megabytes(
            &primary,
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{before}')"),
        ));
        replica
            .execute("INSERT INTO big VALUES (-1 - random() * 1e9, 'written on the new primary')");
        primary.stop("fast");
        source_wal.push(tree_size(&replica.data_dir.join("pg_wal")) as f64 / (1024.0 * 1024.0));
        let peer = reach(&replica, link_rate, &mut links);
        let (seconds, log) = timed_prepare(
            &primary,
            &["--replication", "--peer", &peer, "--grace", "5"],
            "rewind",
        );
        let copied = rewind_megabytes(&log);
        eprintln!("rewind {}: {seconds:.2} s, {copied:.0} MB copied", run + 1);
        rewinds.push(seconds);
        rewind_copied.push(copied);
        primary.start();
        primary.wait_streaming();
        primary.wait_caught_up(&replica);
        std::mem::swap(&mut primary, &mut replica);
    }

    let mut clones = Vec::new();
    let mut clone_copied = Vec::new();
    for run in 0..runs {
        let fresh = Site::with_settings(&SETTINGS);
        let peer = reach(&primary, link_rate, &mut links);
        let (seconds, _) = timed_prepare(
            &fresh,
            &["--replication", "--peer", &peer, "--clone-wait", "10"],
            "clone",
        );
        let copied = tree_size(&fresh.data_dir) as f64 / (1024.0 * 1024.0);
        eprintln!("clone {}: {seconds:.2} s, {copied:.0} MB copied", run + 1);
        clones.push(seconds);
        clone_copied.push(copied);
    }

    let (rewind, clone) = (median(&rewinds), median(&clones));
    let link = match link_rate {
        Some(rate) => format!("over a {:.0} MB/s link", rate / (1024.0 * 1024.0)),
        None => "over loopback".to_string(),
    };
    println!(
        "rewind-vs-clone ({link}): {size:.0} MB of data; per rewind run (median): {diverge_mb} MB of rows written \
         on the old primary after the failover ({:.1} MB of WAL), {:.0} MB in the new primary's pg_wal; {runs} runs each",
        median(&diverged_wal),
        median(&source_wal)
    );
    let (rewind_mb, clone_mb) = (median(&rewind_copied), median(&clone_copied));
    println!(
        "  rejoin with pg_rewind: median {rewind:.2} s, {rewind_mb:.0} MB copied  (runs: {})",
        list(&rewinds)
    );
    println!(
        "  fresh clone:           median {clone:.2} s, {clone_mb:.0} MB copied  (runs: {})",
        list(&clones)
    );
    println!(
        "  clone / rewind:        {:.1}x the time, {:.1}x the bytes",
        clone / rewind,
        clone_mb / rewind_mb
    );
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
