//! `pg-monitor` refuses flags that would make it fence a healthy primary, run
//! a fence that fences nothing, or quietly change what it was told: exit 2
//! with a message naming the flag, before it connects to anything. No
//! PostgreSQL is needed; a monitor that accepted the flags would wait for its
//! local node, so each run is bounded and killed (by pid) if it goes on.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use testkit::{clean_command, free_port};

/// Far longer than refusing bad flags takes; a monitor still running then accepted them.
const BOUND: Duration = Duration::from_secs(10);

/// Two loopback addresses nothing listens on.
fn closed_nodes() -> (String, String) {
    let node = || format!("127.0.0.1:{}", free_port());
    (node(), node())
}

/// Runs pg-monitor for `local` and `peer` with `extra` flags and returns its
/// output, or fails if it keeps running.
fn monitor((local, peer): (String, String), extra: &[&str]) -> Output {
    let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-monitor")), &[]);
    command
        .args(["--local", &local, "--peer", &peer, "--index", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("cannot start pg-monitor");
    let started = Instant::now();
    while child
        .try_wait()
        .expect("cannot wait for pg-monitor")
        .is_none()
    {
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let output = child.wait_with_output().expect("cannot reap pg-monitor");
            panic!(
                "pg-monitor {extra:?} still ran after {BOUND:?}: the flags were accepted; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("cannot reap pg-monitor")
}

/// Asserts exit 2 and that the error line holds each of `fragments`.
fn assert_refused(nodes: (String, String), extra: &[&str], fragments: &[&str]) {
    let output = monitor(nodes, extra);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "pg-monitor {extra:?}: expected exit 2; stderr:\n{stderr}"
    );
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("pg-monitor {extra:?}: no error line in:\n{stderr}"));
    for fragment in fragments {
        assert!(
            error.contains(fragment),
            "pg-monitor {extra:?}: expected {fragment:?} in the error line: {error}"
        );
    }
}

#[test]
fn a_peer_equal_to_the_local_node_is_refused() {
    let node = format!("127.0.0.1:{}", free_port());
    assert_refused(
        (node.clone(), node.clone()),
        &[],
        &["--local and --peer are both", &node],
    );
}

#[test]
fn an_empty_fence_command_is_refused() {
    for empty in ["", "   "] {
        assert_refused(
            closed_nodes(),
            &["--fence-cmd", "monit stop postgres", "--fence-cmd", empty],
            &["--fence-cmd", "the fence command is empty"],
        );
    }
}

#[test]
fn a_retry_interval_longer_than_the_interval_is_refused() {
    assert_refused(
        closed_nodes(),
        &["--interval", "1s", "--retry-interval", "2s"],
        &["--retry-interval 2s is longer than --interval 1s"],
    );
}

#[test]
fn durations_longer_than_a_day_are_refused_without_a_panic() {
    for flag in ["--interval", "--connect-timeout", "--fence-timeout"] {
        assert_refused(
            closed_nodes(),
            &[flag, "1e300"],
            &[flag, "1e300", "maximum of 86400 s"],
        );
    }
}
