//! pg-monitor benchmarks (run through `ci/bench/pg-monitor`; figures, never assertions).
//!
//! (a) Failover time: from `kill -9` of the primary's postmaster to the
//!     replica committing a write, median of `BENCH_RUNS` (default 5), with
//!     the defaults and with `--interval 250ms`.
//! (b) Steady-state CPU: CPU seconds per minute used by pg-monitor watching a
//!     healthy pair, beside the original method (a bash loop forking psql
//!     for the local node and the peer every second), over
//!     `BENCH_CPU_SECONDS` (default 60) of the same window.
//!
//! Both use throwaway loopback clusters from the test kit and trust auth, so
//! neither side pays for SCRAM. Server-side CPU (one backend per connection,
//! for both methods alike) is not counted.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Node;

fn main() {
    let runs = env_number("BENCH_RUNS", 5);
    let cpu_seconds = env_number("BENCH_CPU_SECONDS", 60);
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|only| name.contains(only));

    if wanted("failover") {
        println!("(a) kill -9 of the primary postmaster -> replica commits a write ({runs} runs)");
        for (label, extra, interval) in [
            ("defaults (--interval 1s)", &[][..], Duration::from_secs(1)),
            (
                "--interval 250ms",
                &["--interval", "250ms"][..],
                Duration::from_millis(250),
            ),
        ] {
            // A crash lands anywhere between two checks: spread the kills
            // evenly over one interval after a check (stratified, not random).
            let mut times: Vec<f64> = (0..runs)
                .map(|run| {
                    let offset = interval.mul_f64((run as f64 + 0.5) / runs as f64);
                    failover_seconds(extra, offset)
                })
                .collect();
            let shown: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
            println!(
                "    {label:<26} median {:.2} s   runs: {}",
                median(&mut times),
                shown.join(" ")
            );
        }
    }
    if wanted("cpu") {
        steady_state_cpu(Duration::from_secs(cpu_seconds));
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&value| value > 0)
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn pair() -> (Node, Node) {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    (primary, replica)
}

/// A monitor of `local` watching `peer` with the defaults plus `extra`.
fn monitor(local: &Node, peer: &Node, extra: &[&str], log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pg-monitor"))
        .arg("--local")
        .arg(format!("{}:{}", local.socket_dir.display(), local.port()))
        .args(["--peer", &peer.endpoint(), "--index", "1"])
        .args(["--user", testkit::SUPERUSER, "--dbname", "postgres"])
        .args(extra)
        .env_remove("PGCONNECT_TIMEOUT")
        .env_remove("PGPASSFILE")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("cannot create the monitor log"))
        .spawn()
        .expect("cannot start pg-monitor")
}

fn wait_for_log(log: &std::path::Path, needle: &str) {
    testkit::wait_for(needle, Duration::from_secs(60), || {
        fs::read_to_string(log).unwrap_or_default().contains(needle)
    });
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One failover, killing the primary `offset` after a check: seconds from
/// SIGKILL to the first committed write.
fn failover_seconds(extra: &[&str], offset: Duration) -> f64 {
    let (primary, replica) = pair();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("monitor.log");
    let child = monitor(&replica, &primary, extra, &log);
    let mut client = replica.connect();
    client
        .batch_execute("SET statement_timeout = '2s'")
        .expect("session setting");
    // The monitor logs this line right after its first check of the pair.
    wait_for_log(&log, "peer is primary; replication streams");
    std::thread::sleep(offset);

    let pid = primary.postmaster_pid().expect("primary runs") as libc::pid_t;
    let killed = Instant::now();
    // SAFETY: kill(2) on the postmaster pid this benchmark started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = killed + Duration::from_secs(120);
    let mut created = false;
    loop {
        assert!(Instant::now() < deadline, "no failover within 120 s");
        if !created {
            // Read-only until promoted: "cannot execute CREATE TABLE in a read-only transaction".
            created = client
                .batch_execute("CREATE TABLE IF NOT EXISTS bench_write (at timestamptz)")
                .is_ok();
        }
        if created
            && client
                .batch_execute("INSERT INTO bench_write VALUES (now())")
                .is_ok()
        {
            break;
        }
        if client.is_closed() {
            client = replica.connect();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = killed.elapsed().as_secs_f64();
    stop(child);
    seconds
}

/// CPU time of all threads of `pid` in seconds, to the nanosecond
/// (`/proc/PID/task/*/schedstat`, first field); None where schedstat is missing.
fn thread_cpu_seconds(pid: u32) -> Option<f64> {
    let mut nanos = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// utime + stime (+ the reaped children's, for the bash loop) in seconds,
/// in clock ticks (10 ms): enough for bash and its hundreds of children.
fn cpu_seconds(pid: u32, with_children: bool) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    let after_name = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14).
    let ticks = fields[11]
        + fields[12]
        + if with_children {
            fields[13] + fields[14]
        } else {
            0
        };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

fn steady_state_cpu(window: Duration) {
    let (primary, replica) = pair();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("monitor.log");
    let monitor = monitor(&replica, &primary, &[], &log);
    wait_for_log(&log, "peer is primary; replication streams");

    // The original method: psql for the local node and the peer, every second.
    let psql = |host: &str, port: u16| {
        format!(
            "psql -X -h {host} -p {port} -U {} -d postgres -Atc 'SELECT pg_is_in_recovery()' >/dev/null 2>&1",
            testkit::SUPERUSER
        )
    };
    let script = format!(
        "while :; do {}; {}; sleep 1; done",
        psql(&replica.socket_dir.display().to_string(), replica.port()),
        psql("127.0.0.1", primary.port())
    );
    let bash = Command::new("bash")
        .args(["-c", &script])
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start bash");
    // Let both settle past their start-up before measuring.
    std::thread::sleep(Duration::from_secs(3));

    // pg-monitor's threads live as long as it does, so schedstat sees all its time.
    let monitor_cpu = |pid| thread_cpu_seconds(pid).unwrap_or_else(|| cpu_seconds(pid, false));
    let monitor_before = monitor_cpu(monitor.id());
    let bash_before = cpu_seconds(bash.id(), true);
    std::thread::sleep(window);
    let monitor_used = monitor_cpu(monitor.id()) - monitor_before;
    let bash_used = cpu_seconds(bash.id(), true) - bash_before;

    let per_minute = |used: f64| used * 60.0 / window.as_secs_f64();
    println!(
        "(b) steady-state CPU, one check of the local node and one of the peer per second, \
         over a {} s window",
        window.as_secs()
    );
    println!(
        "    pg-monitor                 {:.3} CPU s/min",
        per_minute(monitor_used)
    );
    println!(
        "    bash loop forking psql     {:.3} CPU s/min",
        per_minute(bash_used)
    );
    if monitor_used > 0.0 {
        println!(
            "    ratio                      {:.1}x less CPU",
            bash_used / monitor_used
        );
    } else {
        println!("    ratio                      pg-monitor used less than one clock tick");
    }
    stop(monitor);
    stop(bash);
}
