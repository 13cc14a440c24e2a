//! `pg-role-check` against real PostgreSQL servers: every role and exit code.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::{clean_command, wait_for, FaultProxy, Node, NodeOptions, ProxyMode};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {}", self.stdout))
    }
}

/// A command for the binary with no libpq variables inherited from the test's environment.
fn command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-role-check")), &[]);
    command.args(args);
    command
}

fn run_command(command: &mut Command) -> Run {
    let output = command.output().expect("cannot run pg-role-check");
    Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

fn role_check<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    run_command(&mut command(args))
}

/// The flags that probe the node on `port` as the kit's superuser over TCP,
/// then `extra`.
fn node_args(port: u16, extra: &[&str]) -> Vec<String> {
    let port = port.to_string();
    let target = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "postgres",
        "--dbname",
        "postgres",
    ];
    target
        .iter()
        .chain(extra)
        .map(|arg| arg.to_string())
        .collect()
}

/// Probes `node` as the kit's superuser over TCP with `extra` flags.
fn check_node(node_port: u16, extra: &[&str]) -> Run {
    role_check(&node_args(node_port, extra))
}

fn assert_exit(run: &Run, expected: i32, what: &str) {
    assert_eq!(
        run.code, expected,
        "{what}: expected exit {expected}, got {} (stdout: {:?}, stderr: {:?})",
        run.code, run.stdout, run.stderr
    );
}

#[test]
fn a_primary_passes_expect_primary_and_any_but_not_replica() {
    let primary = Node::primary();
    let run = check_node(primary.port(), &[]);
    assert_exit(&run, 0, "default expectation on a primary");
    assert!(
        run.stdout.starts_with("primary 127.0.0.1:"),
        "line: {}",
        run.stdout
    );
    assert_exit(
        &check_node(primary.port(), &["--expect", "any"]),
        0,
        "any on a primary",
    );
    assert_exit(
        &check_node(primary.port(), &["--expect", "replica"]),
        1,
        "replica on a primary",
    );
}

#[test]
fn a_primary_refusing_writes_fails_expect_primary_but_is_still_a_primary() {
    let primary = Node::primary();
    // What pg-monitor does when its lease lapses or it steps down.
    primary.execute("ALTER SYSTEM SET default_transaction_read_only = on");
    primary.execute("SELECT pg_reload_conf()");
    let run = check_node(primary.port(), &[]);
    assert_exit(&run, 1, "expect primary on a primary refusing writes");
    assert!(
        run.stdout.starts_with("primary 127.0.0.1:") && run.stdout.contains("refusing writes"),
        "line: {}",
        run.stdout
    );
    assert_exit(
        &check_node(primary.port(), &["--expect", "any"]),
        0,
        "any on a primary refusing writes",
    );
    let json = check_node(primary.port(), &["--expect", "any", "--json"]).json();
    assert_eq!(json["role"], "primary");
    assert_eq!(json["read_only"], true, "{json}");

    primary.execute("ALTER SYSTEM RESET default_transaction_read_only");
    primary.execute("SELECT pg_reload_conf()");
    assert_exit(&check_node(primary.port(), &[]), 0, "writes taken again");
}

#[test]
fn a_streaming_replica_passes_expect_replica_and_streaming() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();

    let run = check_node(replica.port(), &["--expect", "replica"]);
    assert_exit(&run, 0, "replica on a replica");
    assert!(run.stdout.starts_with("replica "), "line: {}", run.stdout);
    // The lean query does not ask about the WAL receiver: the line says nothing of it.
    assert!(!run.stdout.contains("streaming"), "line: {}", run.stdout);
    let run = check_node(replica.port(), &["--expect", "replica", "--streaming"]);
    assert_exit(&run, 0, "streaming replica");
    assert!(run.stdout.contains(", streaming"), "line: {}", run.stdout);
    assert_exit(&check_node(replica.port(), &[]), 1, "primary on a replica");
    assert_exit(
        &check_node(replica.port(), &["--expect", "any"]),
        0,
        "any on a replica",
    );
}

#[test]
fn a_replica_cut_off_from_its_primary_fails_the_streaming_check() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.stop("fast");

    wait_for(
        "the WAL receiver to stop streaming",
        Duration::from_secs(30),
        || check_node(replica.port(), &["--expect", "replica", "--streaming"]).code == 1,
    );
    let run = check_node(replica.port(), &["--expect", "replica", "--streaming"]);
    assert!(run.stdout.contains("not streaming"), "line: {}", run.stdout);
    assert_exit(
        &check_node(replica.port(), &["--expect", "replica"]),
        0,
        "stale replica without --streaming",
    );
}

#[test]
fn a_stopped_server_is_unreachable_at_once_without_retries() {
    let node = Node::primary();
    node.stop("fast");
    let run = check_node(
        node.port(),
        &["--retries", "5", "--retry-interval", "30s", "--json"],
    );
    assert_exit(&run, 3, "stopped server");
    let json = run.json();
    assert_eq!(json["role"], "unreachable");
    assert_eq!(
        json["attempts"], 1,
        "a refused connection must not be retried"
    );
    assert_eq!(json["error"]["kind"], "refused");
}

#[test]
fn a_missing_unix_socket_is_unreachable() {
    let node = Node::primary();
    node.stop("fast");
    let port = node.port().to_string();
    let socket_dir = node.socket_dir.to_str().unwrap();
    let run = role_check(&[
        "--host",
        socket_dir,
        "--port",
        &port,
        "--user",
        "postgres",
        "--retries",
        "3",
        "--retry-interval",
        "30s",
    ]);
    assert_exit(&run, 3, "no socket file");
    assert!(
        run.stdout.starts_with("unreachable "),
        "line: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("after 1 attempt"),
        "line: {}",
        run.stdout
    );
}

#[test]
fn a_server_held_in_startup_is_starting_and_never_primary() {
    let primary = Node::primary();
    // Without hot standby a replica refuses connections with 57P03 for as long as it runs.
    let replica = Node::cloned_from(&primary);
    replica.append_settings(&[("hot_standby".into(), "off".into())]);
    replica.start_no_wait();
    let port = replica.port();

    wait_for(
        "the replica to answer 57P03",
        Duration::from_secs(30),
        || {
            check_node(port, &["--retries", "1", "--connect-timeout", "1"])
                .stdout
                .starts_with("starting")
        },
    );
    for expect in ["primary", "replica", "any"] {
        let run = check_node(
            port,
            &[
                "--expect",
                expect,
                "--retries",
                "3",
                "--retry-interval",
                "30s",
            ],
        );
        assert_exit(&run, 1, &format!("--expect {expect} on a starting server"));
    }
    let json = check_node(port, &["--json"]).json();
    assert_eq!(json["role"], "starting");
    assert_eq!(json["error"]["kind"], "starting");
    assert_eq!(json["attempts"], 1, "a starting answer must not be retried");
}

#[test]
fn a_server_shutting_down_is_starting() {
    let node = Node::primary();
    // A smart shutdown waits for this session and refuses new ones meanwhile.
    let mut session = node.connect();
    session.batch_execute("SELECT 1").unwrap();
    let stopper = std::thread::scope(|scope| {
        let stopping = scope.spawn(|| node.stop("smart"));
        wait_for(
            "the server to refuse new sessions",
            Duration::from_secs(30),
            || {
                check_node(node.port(), &["--retries", "1"])
                    .stdout
                    .starts_with("starting")
            },
        );
        assert_exit(
            &check_node(node.port(), &["--expect", "any"]),
            1,
            "a server shutting down",
        );
        drop(session);
        stopping.join()
    });
    assert!(stopper.is_ok(), "smart shutdown failed");
}

#[test]
fn a_server_that_accepts_but_never_answers_is_hung_after_every_retry() {
    let proxy = FaultProxy::new("127.0.0.1:9");
    proxy.set_mode(ProxyMode::Blackhole);
    let run = check_node(
        proxy.port(),
        &[
            "--connect-timeout",
            "300ms",
            "--retries",
            "2",
            "--retry-interval",
            "50ms",
            "--json",
        ],
    );
    assert_exit(&run, 3, "a server that never answers");
    let json = run.json();
    assert_eq!(json["attempts"], 2);
    // The host accepted the connection: the network works, the server is hung.
    assert_eq!(json["error"]["kind"], "hung", "{json}");
    assert_eq!(proxy.accepted(), 2, "each attempt opens one connection");
}

#[test]
fn transient_resets_are_retried_until_the_node_answers() {
    let primary = Node::primary();
    let proxy = FaultProxy::new(&primary.endpoint());
    proxy.reset_next(2);
    let run = check_node(
        proxy.port(),
        &["--retries", "3", "--retry-interval", "50ms", "--json"],
    );
    assert_exit(&run, 0, "two resets then an answer");
    assert_eq!(run.json()["attempts"], 3);
    assert_eq!(proxy.accepted(), 3);
}

#[test]
fn resets_beyond_the_retry_budget_leave_the_role_undetermined() {
    let primary = Node::primary();
    let proxy = FaultProxy::new(&primary.endpoint());
    proxy.reset_next(3);
    let run = check_node(
        proxy.port(),
        &["--retries", "3", "--retry-interval", "50ms", "--json"],
    );
    assert_exit(&run, 3, "three resets and three attempts");
    let json = run.json();
    assert_eq!(json["attempts"], 3);
    assert_eq!(json["error"]["kind"], "transient");
}

#[test]
fn libpq_environment_variables_are_the_defaults() {
    let primary = Node::primary();
    let mut by_env = command::<&str>(&[]);
    by_env
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", primary.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGCONNECT_TIMEOUT", "2");
    assert_exit(
        &run_command(&mut by_env),
        0,
        "connection from PG* variables",
    );

    let mut socket = command(&["--user", "postgres"]);
    socket
        .env("PGHOST", &primary.socket_dir)
        .env("PGPORT", primary.port().to_string());
    let run = run_command(&mut socket);
    assert_exit(&run, 0, "PGHOST naming a socket directory");

    let mut wrong_user = command(&["--retries", "3", "--retry-interval", "30s", "--json"]);
    wrong_user
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", primary.port().to_string())
        .env("PGUSER", "nobody_here");
    let run = run_command(&mut wrong_user);
    assert_exit(&run, 3, "an unknown role is refused");
    assert_eq!(run.json()["error"]["kind"], "rejected");
    assert_eq!(
        run.json()["attempts"],
        1,
        "a refused login must not be retried"
    );

    let mut bad_timeout = command::<&str>(&[]);
    bad_timeout.env("PGCONNECT_TIMEOUT", "soon");
    let run = run_command(&mut bad_timeout);
    assert_exit(&run, 2, "a malformed PGCONNECT_TIMEOUT");
    assert!(run.stderr.contains("soon"), "stderr: {}", run.stderr);
}

/// A primary that demands a SCRAM password from `secret` over TCP.
fn primary_with_password(password: &str) -> Node {
    let options = NodeOptions::new().hba_line("host all secret 127.0.0.1/32 scram-sha-256");
    let primary = Node::primary_with(options);
    let literal = password.replace('\'', "''");
    primary.execute(&format!("CREATE ROLE secret LOGIN PASSWORD '{literal}'"));
    primary
}

fn write_passfile(dir: &std::path::Path, line: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("pgpass");
    fs::write(&path, format!("{line}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn passwords_come_from_a_passfile_or_pgpassword() {
    let password = "p:w\\d";
    let primary = primary_with_password(password);
    let port = primary.port().to_string();
    let secret_args = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "secret",
        "--dbname",
        "postgres",
        "--retries",
        "1",
    ];
    let passfile = write_passfile(
        primary.root(),
        &format!("127.0.0.1:{port}:*:secret:p\\:w\\\\d"),
        0o600,
    );

    assert_exit(&role_check(&secret_args), 3, "no password at all");

    let mut with_flag = command(&secret_args);
    with_flag.arg("--passfile").arg(&passfile);
    assert_exit(&run_command(&mut with_flag), 0, "--passfile");

    let mut with_env = command(&secret_args);
    with_env.env("PGPASSFILE", &passfile);
    assert_exit(&run_command(&mut with_env), 0, "PGPASSFILE");

    let mut with_password = command(&secret_args);
    with_password.env("PGPASSWORD", password);
    assert_exit(&run_command(&mut with_password), 0, "PGPASSWORD");

    let mut wrong = command(&secret_args);
    wrong.env("PGPASSWORD", "wrong").arg("--json");
    let run = run_command(&mut wrong);
    assert_exit(&run, 3, "a wrong password");
    assert_eq!(run.json()["error"]["kind"], "rejected");
}

#[test]
fn a_passfile_readable_by_others_is_ignored_with_a_warning() {
    let primary = primary_with_password("pw");
    let port = primary.port().to_string();
    let passfile = write_passfile(primary.root(), "*:*:*:secret:pw", 0o644);
    let mut open_file = command(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "secret",
        "--dbname",
        "postgres",
        "--retries",
        "1",
    ]);
    open_file.arg("--passfile").arg(&passfile);
    let run = run_command(&mut open_file);
    assert_exit(&run, 3, "a group-readable passfile");
    assert!(
        run.stderr.contains("group or world access"),
        "stderr: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("pw\n") && !run.stdout.contains(":pw"),
        "the password leaked"
    );
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let cases: [&[&str]; 7] = [
        &["--expect", "leader"],
        &["--port", "0"],
        &["--port", "http"],
        &["--retries", "0"],
        &["--connect-timeout", "0"],
        &["--streaming"],
        &["127.0.0.1", "5432"],
    ];
    for args in cases {
        let run = role_check(args);
        assert_exit(&run, 2, &format!("{args:?}"));
        assert!(!run.stderr.is_empty(), "{args:?} printed no error");
    }
    let run = role_check(&["--password", "hunter2"]);
    assert_exit(&run, 2, "a password flag must not exist");
}

#[test]
fn an_empty_host_is_a_usage_error_not_an_unreachable_node() {
    let run = role_check(&["--host", "", "--retries", "1"]);
    assert_exit(&run, 2, "--host ''");
    assert!(
        run.stderr.contains("--host") && run.stderr.contains("the host is empty"),
        "stderr: {}",
        run.stderr
    );
    let mut from_env = command(&["--retries", "1"]);
    from_env.env("PGHOST", " ");
    let run = run_command(&mut from_env);
    assert_exit(&run, 2, "PGHOST=' '");
    assert!(
        run.stderr.contains("the host is empty"),
        "stderr: {}",
        run.stderr
    );
    let run = role_check(&["0.0.0.0", "5432", "", "5432"]);
    assert_exit(&run, 2, "haproxy passing an empty server_addr");
    assert!(run.stderr.contains("server_addr"), "stderr: {}", run.stderr);
}

#[test]
fn durations_longer_than_a_day_are_usage_errors_not_panics() {
    for (flag, value) in [
        ("--connect-timeout", "1e300"),
        ("--connect-timeout", "1e10"),
        ("--retry-interval", "86401"),
    ] {
        let run = role_check(&["--host", "127.0.0.1", "--port", "1", flag, value]);
        assert_exit(&run, 2, &format!("{flag} {value}"));
        assert!(
            run.stderr.contains(value) && run.stderr.contains("maximum of 86400 s"),
            "{flag} {value}: stderr: {}",
            run.stderr
        );
    }
    let mut from_env = command(&["--host", "127.0.0.1", "--port", "1"]);
    from_env.env("PGCONNECT_TIMEOUT", "1e300");
    let run = run_command(&mut from_env);
    assert_exit(&run, 2, "PGCONNECT_TIMEOUT=1e300");
    assert!(run.stderr.contains("maximum"), "stderr: {}", run.stderr);
}

#[test]
fn haproxy_external_check_arguments_name_the_server() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    let primary_port = primary.port().to_string();
    let replica_port = replica.port().to_string();
    let check = |server_port: &str| {
        // haproxy runs the check with an empty PATH and its own variables.
        let mut as_haproxy =
            command(&["--user", "postgres", "--dbname", "postgres", "--port", "1"]);
        as_haproxy
            .env_clear()
            .env("PATH", "")
            .env("HAPROXY_PROXY_NAME", "postgres")
            .env("HAPROXY_SERVER_ADDR", "127.0.0.1")
            .env("HAPROXY_SERVER_PORT", server_port)
            .args(["0.0.0.0", "5432", "127.0.0.1", server_port]);
        run_command(&mut as_haproxy)
    };
    assert_exit(&check(&primary_port), 0, "haproxy checking the primary");
    assert_exit(&check(&replica_port), 1, "haproxy checking the replica");
    assert_exit(&check("notaport"), 2, "haproxy passing a bad port");
}

#[test]
fn json_describes_a_primary_and_its_streaming_replica() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.execute("CREATE TABLE t AS SELECT 1 AS x");

    let run = check_node(primary.port(), &["--json"]);
    assert_exit(&run, 0, "json on a primary");
    let json = run.json();
    assert_eq!(json["role"], "primary");
    assert_eq!(json["in_recovery"], false);
    assert!(json["server_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(json["timeline"], 1);
    assert!(json["current_wal_lsn"]
        .as_str()
        .is_some_and(|lsn| lsn.contains('/')));
    assert_eq!(json["received_wal_lsn"], Value::Null);
    assert_eq!(json["streaming_replicas"], 1);
    assert_eq!(json["synchronous_standby_names"], "");
    assert_eq!(json["synchronous_replicas"], 0);
    assert!(json["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert_eq!(json["error"], Value::Null);
    // With a streaming standby, its lag is known on the primary.
    assert_lag_known(&json);

    // Once it replayed WAL its primary sent, a replica knows its lag.
    replica.wait_caught_up(&primary);
    let run = check_node(replica.port(), &["--json", "--expect", "replica"]);
    assert_exit(&run, 0, "json on a replica");
    let json = run.json();
    assert_eq!(json["role"], "replica");
    assert_eq!(json["in_recovery"], true);
    assert_eq!(json["timeline"], 1);
    assert_eq!(json["current_wal_lsn"], Value::Null);
    assert!(json["received_wal_lsn"].as_str().is_some());
    assert!(json["replayed_wal_lsn"].as_str().is_some());
    assert_eq!(json["wal_receiver_streaming"], true);
    assert_eq!(json["wal_receiver_source"], primary.endpoint());
    assert_eq!(json["streaming_replicas"], Value::Null);
    assert_eq!(json["synchronous_replicas"], Value::Null);
    assert_lag_known(&json);

    // ALTER SYSTEM cannot share a (transaction-wrapped) multi-statement query.
    primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.execute("SELECT pg_reload_conf()");
    wait_for(
        "the replica to become synchronous",
        Duration::from_secs(30),
        || check_node(primary.port(), &["--json"]).json()["synchronous_replicas"] == 1,
    );
    let json = check_node(primary.port(), &["--json"]).json();
    assert_eq!(json["synchronous_standby_names"], "*");
}

/// A hung standby stays `streaming` until the WAL sender times out, but
/// stops replying: the primary's status says how long ago it last replied,
/// synchronous or not.
#[test]
fn json_shows_how_long_ago_a_streaming_standby_last_replied() {
    let primary = Node::primary();
    let replica = Node::replica_of_with(
        &primary,
        NodeOptions::new().setting("wal_receiver_status_interval", "'1s'"),
    );
    replica.wait_streaming();
    let age = || check_node(primary.port(), &["--json"]).json()["standby_reply_age_ms"].as_i64();
    wait_for("a recent reply", Duration::from_secs(30), || {
        age().is_some_and(|ms| ms < 1500)
    });

    let frozen = replica.freeze();
    std::thread::sleep(Duration::from_secs(3));
    let silent_for = age();
    testkit::Server::thaw(&frozen);
    assert!(
        silent_for.is_some_and(|ms| ms >= 2500),
        "a standby frozen for 3 s replied {silent_for:?} ms ago"
    );
    assert_eq!(
        check_node(replica.port(), &["--json"]).json()["standby_reply_age_ms"],
        Value::Null
    );
}

#[test]
fn json_shows_the_new_timeline_after_a_promotion() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.stop("fast");
    replica.promote();
    let json = check_node(replica.port(), &["--json"]).json();
    assert_eq!(json["role"], "primary");
    assert_eq!(json["timeline"], 2);
    // A primary without standbys has no replication lag to speak of.
    assert_eq!(json["replication_lag_bytes"], Value::Null, "{json}");
    assert_eq!(json["replication_lag_seconds"], Value::Null, "{json}");
}

/// Starts pg-role-check in the background (its output piped) against `port`.
fn spawn_check(port: u16, extra: &[&str]) -> std::process::Child {
    command(&node_args(port, extra))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run pg-role-check")
}

fn finish(child: std::process::Child) -> Run {
    let output = child
        .wait_with_output()
        .expect("cannot wait for pg-role-check");
    Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

#[test]
fn wait_probes_until_a_replica_starts_and_streams() {
    let primary = Node::primary();
    let replica = Node::cloned_from(&primary);
    let waiting = spawn_check(
        replica.port(),
        &[
            "--expect",
            "replica",
            "--streaming",
            "--wait",
            "60",
            "--retry-interval",
            "100ms",
            "--retries",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    replica.start();
    let run = finish(waiting);
    assert_exit(&run, 0, "a replica that came up during the wait");
    assert!(
        run.stdout
            .starts_with(&format!("replica 127.0.0.1:{}, streaming", replica.port())),
        "line: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("waiting up to")
            && run
                .stderr
                .contains("to be a replica streaming: unreachable after 1 attempt")
            && run.stderr.contains("as expected after"),
        "the wait is logged, once per answer: {}",
        run.stderr
    );
}

#[test]
fn wait_gives_up_after_its_bound_with_the_last_answer() {
    let primary = Node::primary();
    let started = std::time::Instant::now();
    let run = check_node(
        primary.port(),
        &[
            "--expect",
            "replica",
            "--wait",
            "1.5",
            "--retry-interval",
            "200ms",
        ],
    );
    let took = started.elapsed();
    assert_exit(&run, 1, "a primary never becomes a replica");
    assert!(run.stdout.starts_with("primary "), "line: {}", run.stdout);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "the wait took {took:?}"
    );
    assert!(
        run.stderr.contains("gave up after") && run.stderr.contains("to be a replica: primary"),
        "stderr: {}",
        run.stderr
    );
    // Without --wait: one probe, as before.
    let run = check_node(primary.port(), &["--expect", "replica"]);
    assert_exit(&run, 1, "one probe");
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
}

#[test]
fn a_refused_login_ends_the_wait_at_once() {
    let primary = Node::primary();
    let port = primary.port().to_string();
    let started = std::time::Instant::now();
    let run = role_check(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "nobody_here",
        "--wait",
        "60",
    ]);
    assert_exit(&run, 3, "an unknown role");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?} for a login that cannot succeed",
        started.elapsed()
    );
}

#[test]
fn writable_makes_any_refuse_a_primary_refusing_writes() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.execute("ALTER SYSTEM SET default_transaction_read_only = on");
    primary.execute("SELECT pg_reload_conf()");
    let post_start = ["--expect", "any", "--writable", "--streaming"];
    let run = check_node(primary.port(), &post_start);
    assert_exit(&run, 1, "a primary refusing writes");
    assert!(run.stdout.contains(", refusing writes"), "{}", run.stdout);
    assert_exit(
        &check_node(primary.port(), &["--expect", "any"]),
        0,
        "--expect any alone takes it",
    );
    assert_exit(
        &check_node(replica.port(), &post_start),
        0,
        "a streaming replica",
    );
    primary.execute("ALTER SYSTEM RESET default_transaction_read_only");
    primary.execute("SELECT pg_reload_conf()");
    assert_exit(
        &check_node(primary.port(), &post_start),
        0,
        "writes taken again",
    );
}

/// The check the postgres job's post-start makes of a replica's peer, as the
/// replication role (a member of pg_monitor, as provisioning makes it).
#[test]
fn synchronous_holds_once_the_primary_has_a_synchronous_standby() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.execute("CREATE ROLE watcher LOGIN IN ROLE pg_monitor");
    primary.execute("CREATE ROLE outsider LOGIN");
    let port = primary.port().to_string();
    let as_user = |user: &str, extra: &[&str]| {
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            user,
            "--dbname",
            "postgres",
            "--expect",
            "primary",
            "--synchronous",
        ];
        args.extend_from_slice(extra);
        role_check(&args)
    };

    let run = as_user("watcher", &[]);
    assert_exit(&run, 1, "an asynchronous standby");
    assert!(
        run.stdout.contains("no synchronous standby"),
        "{}",
        run.stdout
    );

    // What the primary's monitor does once its replica answers.
    let waiting = std::thread::scope(|scope| {
        let waiting =
            scope.spawn(|| as_user("watcher", &["--wait", "60", "--retry-interval", "100ms"]));
        std::thread::sleep(Duration::from_millis(500));
        primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'");
        primary.execute("SELECT pg_reload_conf()");
        waiting.join().unwrap()
    });
    assert_exit(
        &waiting,
        0,
        "the standby became synchronous during the wait",
    );
    assert!(
        waiting.stdout.contains("a synchronous standby streaming"),
        "{}",
        waiting.stdout
    );

    // PostgreSQL hides pg_stat_replication's details from other roles.
    let run = as_user("outsider", &[]);
    assert_exit(&run, 1, "a role outside pg_monitor cannot see the standby");

    replica.stop("fast");
    wait_for(
        "the primary to lose its synchronous standby",
        Duration::from_secs(30),
        || as_user("watcher", &[]).code == 1,
    );
}

#[test]
fn a_ready_file_holds_the_node_back_until_it_exists() {
    let primary = Node::primary();
    let ready = primary.root().join("provisioned");
    let ready_path = ready.to_str().unwrap();
    let run = check_node(primary.port(), &["--ready-file", ready_path]);
    assert_exit(&run, 1, "no ready file yet");
    assert!(
        run.stdout
            .contains(&format!("not ready: {ready_path} does not exist")),
        "{}",
        run.stdout
    );
    let waiting = spawn_check(
        primary.port(),
        &[
            "--ready-file",
            ready_path,
            "--wait",
            "60",
            "--retry-interval",
            "100ms",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&ready, "").unwrap();
    let run = finish(waiting);
    assert_exit(&run, 0, "the file appeared during the wait");
    assert!(!run.stdout.contains("not ready"), "{}", run.stdout);
}

#[test]
fn flags_for_the_other_role_are_usage_errors() {
    for args in [
        &["--expect", "replica", "--writable"][..],
        &["--expect", "replica", "--synchronous"],
        &["--wait", "5", "--accept-asynchronous-after", "1"],
        &["--synchronous", "--accept-asynchronous-after", "1"],
        &["--wait", "soon"],
        &["--wait", "86401"],
    ] {
        let run = role_check(args);
        assert_exit(&run, 2, &format!("{args:?}"));
    }
}

/// A primary whose monitor runs asynchronous (synchronous_standby_names
/// empty) passes --synchronous only with --accept-asynchronous-after, and
/// only once it has asked for no synchronous standby that long; one that
/// asks for a standby it does not have never does.
#[test]
fn a_primary_asking_for_no_synchronous_standby_is_accepted_only_after_the_time_given() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    let peer_check = [
        "--expect",
        "primary",
        "--synchronous",
        "--retry-interval",
        "200ms",
    ];

    let started = std::time::Instant::now();
    let mut args = peer_check.to_vec();
    args.extend(["--wait", "30", "--accept-asynchronous-after", "1.5"]);
    let run = check_node(primary.port(), &args);
    assert_exit(&run, 0, "an asynchronous primary, after 1.5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "accepted after {:?}",
        started.elapsed()
    );
    assert!(
        run.stdout.contains("asks for no synchronous standby"),
        "{}",
        run.stdout
    );
    let mut args = peer_check.to_vec();
    args.extend(["--wait", "1"]);
    assert_exit(
        &check_node(primary.port(), &args),
        1,
        "without --accept-asynchronous-after",
    );

    // Asking for a standby that is gone: commits wait, and the check fails.
    replica.stop("fast");
    primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.execute("SELECT pg_reload_conf()");
    let mut args = peer_check.to_vec();
    args.extend(["--wait", "2", "--accept-asynchronous-after", "0"]);
    let run = check_node(primary.port(), &args);
    assert_exit(&run, 1, "a primary waiting for a standby it does not have");
    assert!(
        run.stdout.contains(", no synchronous standby"),
        "{}",
        run.stdout
    );
}

/// Both lag fields of a `--json` report are known (and not negative).
fn assert_lag_known(json: &Value) {
    assert!(
        json["replication_lag_bytes"]
            .as_i64()
            .is_some_and(|b| b >= 0),
        "{json}"
    );
    assert!(
        json["replication_lag_seconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.0),
        "{json}"
    );
}
