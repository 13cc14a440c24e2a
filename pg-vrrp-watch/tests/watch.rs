//! `pg-vrrp-watch` against a real haproxy.

use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use testkit::{free_port, wait_for, Haproxy};

struct Run {
    code: i32,
    stderr: String,
}

fn vrrp_watch(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_pg-vrrp-watch"))
        .args(args)
        .output()
        .expect("cannot run pg-vrrp-watch");
    Run {
        code: output.status.code().expect("killed by a signal"),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

fn assert_exit(run: &Run, expected: i32, what: &str) {
    assert_eq!(
        run.code, expected,
        "{what}: expected exit {expected}, got {} ({})",
        run.code, run.stderr
    );
}

/// haproxy with a stats socket, a `postgres` backend whose one server listens
/// on `live` (or not), and a `readonly` backend whose server never listens.
fn haproxy_with(live: u16) -> Haproxy {
    let closed = free_port();
    Haproxy::start(&format!(
        "global\n\
         \x20   stats socket {{dir}}/stats.sock mode 600 level admin\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 10s\n\
         \x20   timeout server 10s\n\
         backend postgres\n\
         \x20   server node0 127.0.0.1:{live} check inter 100ms fall 1 rise 1\n\
         backend readonly\n\
         \x20   server node1 127.0.0.1:{closed} check inter 100ms fall 1 rise 1\n"
    ))
}

#[test]
fn a_live_haproxy_passes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    let pidfile = haproxy.pidfile();
    let run = vrrp_watch(&["--pidfile", pidfile.to_str().unwrap()]);
    assert_exit(&run, 0, "haproxy running");
    assert!(
        run.stderr.is_empty(),
        "success must be quiet: {}",
        run.stderr
    );
}

#[test]
fn a_live_haproxy_fails_while_the_drain_file_exists() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    let pidfile = haproxy.pidfile();
    let dir = tempfile::tempdir().unwrap();
    let drain_file = dir.path().join("draining");
    let args = [
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--drain-file",
        drain_file.to_str().unwrap(),
    ];
    assert_exit(&vrrp_watch(&args), 0, "no drain file");
    fs::write(&drain_file, "").unwrap();
    let run = vrrp_watch(&args);
    assert_exit(&run, 1, "drain file present");
    assert!(run.stderr.contains("draining"), "stderr: {}", run.stderr);
    fs::remove_file(&drain_file).unwrap();
    assert_exit(&vrrp_watch(&args), 0, "drain file removed");
}

#[test]
fn a_stopped_haproxy_fails_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    haproxy.stop();
    let pidfile = haproxy.pidfile();
    let run = vrrp_watch(&["--pidfile", pidfile.to_str().unwrap()]);
    assert_exit(&run, 1, "haproxy stopped");
    assert!(run.stderr.contains("not running"), "stderr: {}", run.stderr);
}

#[test]
fn a_missing_or_empty_pidfile_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("haproxy.pid");
    let run = vrrp_watch(&["--pidfile", missing.to_str().unwrap()]);
    assert_exit(&run, 1, "no pidfile");
    assert!(
        run.stderr.contains("cannot read pidfile"),
        "stderr: {}",
        run.stderr
    );

    fs::write(&missing, "\n").unwrap();
    let run = vrrp_watch(&["--pidfile", missing.to_str().unwrap()]);
    assert_exit(&run, 1, "empty pidfile");
    assert!(
        run.stderr.contains("holds no pid"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn a_pid_reused_by_another_program_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("haproxy.pid");
    // Our own pid: alive, but not haproxy.
    fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    let run = vrrp_watch(&["--pidfile", pidfile.to_str().unwrap()]);
    assert_exit(&run, 1, "a live pid that is not haproxy");
    assert!(
        run.stderr.contains("stale pidfile"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn the_stats_socket_requires_a_server_up_in_the_write_backend() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    let pidfile = haproxy.pidfile();
    let socket = haproxy.dir().join("stats.sock");
    let args = |backend: &'static str| {
        vec![
            "--pidfile".to_string(),
            pidfile.display().to_string(),
            "--stats-socket".to_string(),
            socket.display().to_string(),
            "--backend".to_string(),
            backend.to_string(),
        ]
    };
    let run_with = |backend| {
        let args = args(backend);
        vrrp_watch(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    wait_for("the live server to be UP", Duration::from_secs(10), || {
        run_with("postgres").code == 0
    });
    wait_for(
        "the dead server to be DOWN",
        Duration::from_secs(10),
        || run_with("readonly").code == 1,
    );
    let run = run_with("readonly");
    assert!(
        run.stderr.contains("no server UP in backend \"readonly\""),
        "stderr: {}",
        run.stderr
    );
    assert!(run.stderr.contains("node1 DOWN"), "stderr: {}", run.stderr);

    let run = run_with("elsewhere");
    assert_exit(&run, 1, "an unknown backend");
    assert!(run.stderr.contains("no backend"), "stderr: {}", run.stderr);

    // The write backend's only server goes away: the node must give up the VIP.
    drop(listener);
    wait_for(
        "the write backend to lose its server",
        Duration::from_secs(10),
        || run_with("postgres").code == 1,
    );
}

#[test]
fn a_missing_stats_socket_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    let pidfile = haproxy.pidfile();
    let run = vrrp_watch(&[
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--stats-socket",
        "/nonexistent/stats.sock",
    ]);
    assert_exit(&run, 1, "no stats socket");
    assert!(
        run.stderr.contains("cannot query haproxy stats socket"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn an_empty_or_impossible_process_name_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("haproxy.pid");
    fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    let pidfile = pidfile.to_str().unwrap();
    for (name, expected) in [
        ("", "the process name is empty"),
        (" ", "the process name is empty"),
        ("a-sixteen-bytes!", "at most 15"),
    ] {
        let run = vrrp_watch(&["--pidfile", pidfile, "--process-name", name]);
        assert_exit(&run, 2, &format!("--process-name {name:?}"));
        assert!(
            run.stderr.contains("--process-name") && run.stderr.contains(expected),
            "--process-name {name:?}: stderr: {}",
            run.stderr
        );
    }
    let run = vrrp_watch(&["--pidfile", pidfile, "--backend", ""]);
    assert_exit(&run, 2, "--backend ''");
    assert!(
        run.stderr.contains("backend name is empty"),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn a_pidfile_that_is_not_a_regular_file_fails_at_once() {
    // A FIFO without a writer blocks whoever opens it for reading, as a
    // device like /dev/zero would keep a reader busy without end.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("haproxy.pid");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-vrrp-watch"))
        .arg("--pidfile")
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run pg-vrrp-watch");
    let finished = wait_for_exit(&mut child, Duration::from_secs(10));
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pg-vrrp-watch with a FIFO as its pidfile still ran after 10 s");
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("not a regular file"), "stderr: {stderr}");
}

/// Whether `child` exits within `bound`.
fn wait_for_exit(child: &mut std::process::Child, bound: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        if child
            .try_wait()
            .expect("cannot wait for pg-vrrp-watch")
            .is_some()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn bad_usage_exits_2() {
    assert_exit(&vrrp_watch(&["--timeout", "0"]), 2, "zero timeout");
    assert_exit(
        &vrrp_watch(&["--timeout", "1e300"]),
        2,
        "a timeout beyond one day",
    );
    assert_exit(&vrrp_watch(&["--bogus"]), 2, "unknown flag");
    assert_exit(&vrrp_watch(&["extra"]), 2, "a stray argument");
}

#[test]
fn wait_checks_again_until_haproxy_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("haproxy.pid");
    let waiting = Command::new(env!("CARGO_BIN_EXE_pg-vrrp-watch"))
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--wait", "30"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run pg-vrrp-watch");
    std::thread::sleep(Duration::from_millis(800));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let haproxy = haproxy_with(listener.local_addr().unwrap().port());
    // Whole at once: a half-written pidfile would be a reason of its own.
    let written = dir.path().join("haproxy.pid.new");
    fs::write(&written, format!("{}\n", haproxy.pid())).unwrap();
    fs::rename(&written, &pidfile).unwrap();
    let output = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        stderr.matches("waiting up to").count(),
        1,
        "each reason is logged once: {stderr}"
    );
    assert!(stderr.contains("cannot read pidfile"), "stderr: {stderr}");
}

#[test]
fn wait_gives_up_after_its_bound_with_the_last_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("haproxy.pid");
    let started = std::time::Instant::now();
    let run = vrrp_watch(&["--pidfile", missing.to_str().unwrap(), "--wait", "1"]);
    let took = started.elapsed();
    assert_exit(&run, 1, "no haproxy within the wait");
    assert!(
        run.stderr.contains("gave up after") && run.stderr.contains("cannot read pidfile"),
        "stderr: {}",
        run.stderr
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "the wait took {took:?}"
    );
}
