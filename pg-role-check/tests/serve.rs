//! `pg-role-check serve` against real PostgreSQL servers and a real haproxy:
//! every path, the held connection through stops and hangs, freshness,
//! malformed and hostile requests, metrics, and haproxy's httpchk.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use testkit::{clean_command, free_port, wait_for, Haproxy, Node, Server};

/// How long a test waits for any one answer: far beyond every bound the
/// endpoint keeps, so that only a hang fails it.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// A running `pg-role-check serve` for one node; killed (by pid) when dropped.
struct Endpoint {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Endpoint {
    /// An endpoint on a free loopback port for the node on `node_port`, as
    /// the kit's superuser over TCP, with `extra` flags.
    fn start(node_port: u16, extra: &[&str]) -> Endpoint {
        // Another test may take the port between the probe and the bind.
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-role-check")), &[]);
            command
                .args(["serve", "--listen", &listen, "--host", "127.0.0.1"])
                .args(["--port", &node_port.to_string(), "--user", "postgres"])
                .args(["--dbname", "postgres"])
                .args(extra);
            let endpoint = Endpoint::spawn(command, port);
            if endpoint.wait_listening() {
                return endpoint;
            }
        }
        panic!("pg-role-check serve could not listen on any of five free ports");
    }

    fn spawn(mut command: Command, port: u16) -> Endpoint {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run pg-role-check serve");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&log);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read @ 1..) = stderr.read(&mut chunk) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        });
        Endpoint { child, port, log }
    }

    /// Whether it listens; false when it ended (its port taken).
    fn wait_listening(&self) -> bool {
        let mut listening = false;
        wait_for("pg-role-check serve to listen", ANSWER_BOUND, || {
            listening = self.log().contains("listening on");
            listening || self.log().contains("cannot listen")
        });
        listening
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, target: &str) -> Answer {
        self.request(&format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    fn request(&self, raw: &str) -> Answer {
        Answer::parse(&exchange(self.port, raw.as_bytes()))
    }

    /// The status code of GET `target`.
    fn code(&self, target: &str) -> u16 {
        self.get(target).code
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().expect("cannot wait").is_none()
    }

    /// How many checks the node was asked, as /metrics counts them (the
    /// query answering this scrape included).
    fn checks_counted(&self) -> u64 {
        let page = self.get("/metrics").body;
        let line = page
            .lines()
            .find(|line| line.starts_with("pg_node_check_duration_seconds_count "))
            .unwrap_or_else(|| panic!("no check count in:\n{page}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `raw` on a new connection, closes the sending side, and reads the
/// whole answer (the endpoint closes after one response).
fn exchange(port: u16, raw: &[u8]) -> Vec<u8> {
    try_exchange(port, raw).expect("no complete answer within the bound")
}

/// Like [`exchange`], for bytes the endpoint may refuse before they are all
/// sent, when the connection may end in a reset.
fn try_exchange(port: u16, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("cannot connect");
    stream.set_read_timeout(Some(ANSWER_BOUND))?;
    let _ = stream.write_all(raw);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// One HTTP response.
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap();
        assert!(status.starts_with("HTTP/1.1 "), "status line {status:?}");
        let code = status[9..12].parse().unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect(line);
                (name.to_ascii_lowercase(), value.to_string())
            })
            .collect();
        Answer {
            code,
            headers,
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

/// Waits until GET `target` answers `code`.
fn wait_code(endpoint: &Endpoint, target: &str, code: u16) {
    wait_for(&format!("{target} to answer {code}"), ANSWER_BOUND, || {
        endpoint.code(target) == code
    });
}

fn assert_code(endpoint: &Endpoint, target: &str, code: u16, what: &str) {
    let answer = endpoint.get(target);
    assert_eq!(answer.code, code, "{what}: {target} answered {answer:?}");
}

/// Processes stopped with SIGSTOP, continued when dropped (a failed test
/// must not leave a server that cannot be shut down).
struct Stopped(Vec<u32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        Server::thaw(&self.0);
    }
}

fn held_backend(node: &Node) -> u32 {
    node.value("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-role-check serve'")
        .parse()
        .unwrap()
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[test]
fn each_path_answers_for_the_role_the_node_plays() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    let on_primary = Endpoint::start(primary.port(), &[]);
    let on_replica = Endpoint::start(replica.port(), &[]);

    for (target, on_primary_code, on_replica_code) in [
        ("/primary", 200, 503),
        ("/replica", 503, 200),
        ("/replica?streaming", 503, 200),
        ("/read-only", 200, 200),
        ("/read-only?streaming", 200, 200),
        ("/health", 200, 200),
        ("/metrics", 200, 200),
    ] {
        assert_code(&on_primary, target, on_primary_code, "on the primary");
        assert_code(&on_replica, target, on_replica_code, "on the replica");
    }

    let answer = on_primary.get("/primary");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(
        answer.header("content-length"),
        Some(answer.body.len().to_string().as_str())
    );
    let json = answer.json();
    assert_eq!(json["role"], "primary", "{json}");
    assert_eq!(json["read_only"], false, "{json}");
    assert_eq!(json["fenced"], false, "{json}");
    assert_eq!(json["error"], Value::Null, "{json}");
    // The role check asks only what it judges by.
    assert_eq!(json["streaming_replicas"], Value::Null, "{json}");
    assert!(
        json["age_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{json}"
    );

    let json = on_replica.get("/replica?streaming").json();
    assert_eq!(json["role"], "replica", "{json}");
    assert_eq!(json["wal_receiver_streaming"], true, "{json}");
    // A lag bound needs everything the full query reads.
    let json = on_replica.get("/replica?lag=1TB").json();
    assert_eq!(json["wal_receiver_source"], primary.endpoint(), "{json}");
    assert!(json["replayed_wal_lsn"].is_string(), "{json}");
    let json = on_primary.get("/read-only?lag=1TB").json();
    assert_eq!(json["streaming_replicas"], 1, "{json}");
    assert!(json["current_wal_lsn"].is_string(), "{json}");
}

/// How much the endpoint's held backend asked last: `role`, `streaming` or
/// `full`, by the statement of that level it executed (pgcore prepares each
/// once per held connection, as `pgcore_status_<level>`).
fn last_query_level(node: &Node) -> String {
    let query = node
        .value("SELECT query FROM pg_stat_activity WHERE application_name = 'pg-role-check serve'");
    let level = query.strip_prefix("EXECUTE pgcore_status_");
    level
        .unwrap_or_else(|| panic!("not a prepared status: {query}"))
        .to_string()
}

#[test]
fn each_check_asks_the_node_only_what_its_path_judges_by() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    for (target, level) in [
        ("/primary", "role"),
        ("/health", "role"),
        ("/replica", "role"),
        ("/replica?streaming", "streaming"),
        ("/read-only?streaming", "streaming"),
        ("/replica?lag=16MB", "full"),
        ("/metrics", "full"),
        ("/primary", "role"),
    ] {
        endpoint.get(target);
        assert_eq!(last_query_level(&primary), level, "{target}");
    }
}

#[test]
fn one_connection_is_held_and_only_changes_are_logged() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    assert_code(&endpoint, "/primary", 200, "first check");
    let backend = held_backend(&primary);
    for _ in 0..20 {
        assert_code(&endpoint, "/primary", 200, "a later check");
    }
    let held = primary
        .column("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-role-check serve'");
    assert_eq!(held, [backend.to_string()], "one connection, the same one");
    let log = endpoint.log();
    assert_eq!(
        log.lines().count(),
        3,
        "one line per change, none per request:\n{log}"
    );
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{}", endpoint.port)),
        "{log}"
    );
    assert!(
        log.contains(&format!("connected to {}", primary.endpoint())),
        "{log}"
    );
    assert!(
        log.contains(&format!("{} is primary", primary.endpoint())),
        "{log}"
    );
}

#[test]
fn a_replica_cut_off_from_its_primary_fails_streaming_and_lag_but_is_still_a_replica() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    let endpoint = Endpoint::start(replica.port(), &[]);
    assert_code(&endpoint, "/replica?streaming", 200, "streaming");
    primary.stop("fast");

    wait_code(&endpoint, "/replica?streaming", 503);
    assert_eq!(
        endpoint.get("/replica?streaming").json()["wal_receiver_streaming"],
        false
    );
    assert_code(
        &endpoint,
        "/replica",
        200,
        "a stale replica is still a replica",
    );
    assert_code(&endpoint, "/read-only?streaming", 503, "not streaming");
    assert_code(&endpoint, "/read-only", 200, "it still serves reads");
    // Without a WAL receiver its lag is not known, so below no bound.
    wait_code(&endpoint, "/replica?lag=1TB", 503);
    assert_eq!(
        endpoint.get("/replica?lag=1TB").json()["replication_lag_bytes"],
        Value::Null
    );
}

#[test]
fn a_lag_bound_holds_only_above_a_known_lag() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    primary.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x");
    replica.wait_caught_up(&primary);
    let endpoint = Endpoint::start(replica.port(), &[]);

    let json = endpoint.get("/replica?lag=1TB").json();
    assert!(
        json["replication_lag_bytes"]
            .as_i64()
            .is_some_and(|b| b >= 0),
        "{json}"
    );
    assert_code(
        &endpoint,
        "/replica?lag=1TB",
        200,
        "a known lag below a huge bound",
    );
    assert_code(
        &endpoint,
        "/replica?lag=1099511627776",
        200,
        "the same bound in bytes",
    );
    assert_code(&endpoint, "/replica?streaming&lag=1TB", 200, "both terms");
    assert_code(
        &endpoint,
        "/read-only?lag=1TB",
        200,
        "a replica serving reads",
    );
    // No lag is below zero bytes.
    assert_code(&endpoint, "/replica?lag=0", 503, "lag=0");
    assert_code(&endpoint, "/read-only?lag=0", 503, "lag=0");
    // On a primary the terms are a replica's: /replica fails, /read-only holds.
    let on_primary = Endpoint::start(primary.port(), &[]);
    assert_code(
        &on_primary,
        "/replica?lag=1TB",
        503,
        "a primary is no replica",
    );
    assert_code(
        &on_primary,
        "/read-only?lag=0",
        200,
        "a primary serves reads",
    );
}

#[test]
fn a_primary_refusing_writes_or_fenced_is_not_primary() {
    let primary = Node::primary();
    let dir = tempfile::tempdir().unwrap();
    let fence = dir.path().join("fenced");
    let fence_flag = fence.to_str().unwrap();
    let endpoint = Endpoint::start(primary.port(), &["--fence-record", fence_flag]);
    assert_code(&endpoint, "/primary", 200, "a primary taking writes");

    // What pg-monitor does when its lease lapses or it steps down.
    primary.execute("ALTER SYSTEM SET default_transaction_read_only = on");
    primary.execute("SELECT pg_reload_conf()");
    wait_code(&endpoint, "/primary", 503);
    assert_eq!(endpoint.get("/primary").json()["read_only"], true);
    assert_code(&endpoint, "/read-only", 200, "it still serves reads");
    assert_code(&endpoint, "/health", 200, "it still answers");
    primary.execute("ALTER SYSTEM RESET default_transaction_read_only");
    primary.execute("SELECT pg_reload_conf()");
    wait_code(&endpoint, "/primary", 200);

    std::fs::write(&fence, "fenced by pg-monitor\n").unwrap();
    let answer = endpoint.get("/primary");
    assert_eq!(answer.code, 503, "{answer:?}");
    assert_eq!(answer.json()["fenced"], true);
    assert_eq!(answer.json()["read_only"], false);
    assert_code(&endpoint, "/health", 200, "fenced, but answering");
    std::fs::remove_file(&fence).unwrap();
    assert_code(&endpoint, "/primary", 200, "the record removed");
}

#[test]
fn with_a_leader_lease_a_primary_is_primary_only_while_its_lease_lasts() {
    let primary = Node::primary();
    let dir = tempfile::tempdir().unwrap();
    let lease = dir.path().join("leader.lease");
    let lease_flag = lease.to_str().unwrap();
    let endpoint = Endpoint::start(primary.port(), &["--leader-lease", lease_flag]);
    let answer = endpoint.get("/primary");
    assert_eq!(answer.code, 503, "no lease file: {answer:?}");
    assert_eq!(answer.json()["leader_lease"], false);
    assert_eq!(answer.json()["read_only"], false, "it would take writes");
    assert_code(&endpoint, "/read-only", 200, "it serves reads all the same");

    // What pg-monitor consensus writes at each renewal.
    let until = SystemTime::now() + Duration::from_secs(60);
    pgcore::lease::write(&lease, until).unwrap();
    let answer = endpoint.get("/primary");
    assert_eq!(answer.code, 200, "{answer:?}");
    assert_eq!(answer.json()["leader_lease"], true);

    // A monitor killed after its last renewal: the time passes.
    pgcore::lease::write(&lease, SystemTime::now() - Duration::from_secs(1)).unwrap();
    assert_code(&endpoint, "/primary", 503, "an expired lease");
    std::fs::write(&lease, "not a time\n").unwrap();
    assert_code(&endpoint, "/primary", 503, "an unreadable lease");
    assert_code(&endpoint, "/health", 200, "it still answers");
}

#[test]
fn a_stopped_server_fails_at_once_and_the_connection_comes_back_with_it() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    assert_code(&endpoint, "/primary", 200, "running");
    primary.stop("fast");

    let answer = endpoint.get("/primary");
    assert_eq!(answer.code, 503, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["role"], "unreachable", "{json}");
    assert_eq!(json["error"]["kind"], "refused", "{json}");
    assert_code(&endpoint, "/health", 503, "nothing answers");
    assert_code(&endpoint, "/read-only", 503, "nothing answers");

    primary.start();
    wait_code(&endpoint, "/primary", 200);
    assert_eq!(
        primary
            .column("SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg-role-check serve'")
            .len(),
        1
    );
    let log = endpoint.log();
    assert!(
        log.contains(&format!("connection to {} lost", primary.endpoint())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "connection to {} re-established",
            primary.endpoint()
        )),
        "{log}"
    );
}

#[test]
fn a_hung_server_fails_the_check_within_the_connect_timeout() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &["--connect-timeout", "1"]);
    assert_code(&endpoint, "/primary", 200, "running");
    // The postmaster and every backend, the held one included.
    let frozen = Stopped(primary.freeze());

    let answer = endpoint.get("/primary");
    assert_eq!(answer.code, 503, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["role"], "unreachable", "{json}");
    assert_eq!(json["error"]["kind"], "hung", "{json}");
    // Reconnecting meets the same hang, bounded the same way.
    assert_eq!(endpoint.get("/health").json()["error"]["kind"], "hung");

    drop(frozen);
    wait_code(&endpoint, "/primary", 200);
}

#[test]
fn every_answer_comes_from_a_query_that_started_after_the_request() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    let before = endpoint.checks_counted();
    for _ in 0..3 {
        let sent = Instant::now();
        let json = endpoint.get("/primary").json();
        let round_trip_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let age_ms = json["age_ms"].as_f64().unwrap();
        // The query started after the request was sent and the answer was
        // made before it was read: a cached answer would be older.
        assert!(
            age_ms <= round_trip_ms + 0.1,
            "an answer {age_ms} ms old to a request {round_trip_ms:.1} ms ago"
        );
        assert!(
            json["latency_ms"].as_f64().unwrap() <= age_ms + 0.1,
            "{json}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    // One query each (and one for each scrape).
    assert_eq!(endpoint.checks_counted(), before + 4);
}

#[test]
fn requests_arriving_during_a_query_share_the_next_one() {
    let primary = Node::primary();
    let endpoint = Arc::new(Endpoint::start(
        primary.port(),
        &["--connect-timeout", "30"],
    ));
    let before = endpoint.checks_counted();
    // With the held backend stopped, the first request's query waits...
    let stopped = Stopped(vec![held_backend(&primary)]);
    signal(stopped.0[0], "-STOP");
    let ask = |endpoint: &Arc<Endpoint>| {
        let endpoint = Arc::clone(endpoint);
        thread::spawn(move || endpoint.code("/primary"))
    };
    let first = ask(&endpoint);
    thread::sleep(Duration::from_millis(500));
    // ...and these arrive while it runs.
    let later: Vec<_> = (0..5).map(|_| ask(&endpoint)).collect();
    thread::sleep(Duration::from_millis(1000));
    drop(stopped);

    assert_eq!(first.join().unwrap(), 200);
    for request in later {
        assert_eq!(request.join().unwrap(), 200);
    }
    // The first request's query, one for the five, and this scrape's.
    assert_eq!(endpoint.checks_counted(), before + 3);
}

#[test]
fn head_and_options_answer_the_status_without_a_body() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    let get = endpoint.get("/primary");
    for method in ["HEAD", "OPTIONS"] {
        for (target, code) in [("/primary", 200), ("/replica", 503), ("/metrics", 200)] {
            let answer = endpoint.request(&format!("{method} {target} HTTP/1.0\r\n\r\n"));
            assert_eq!(answer.code, code, "{method} {target}");
            assert_eq!(answer.body, "", "{method} {target} sent a body");
            let length: usize = answer.header("content-length").unwrap().parse().unwrap();
            assert!(length > 0, "{method} {target}: the length of GET's body");
        }
    }
    let head = endpoint.request("HEAD /primary HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.header("content-type"), get.header("content-type"));
}

#[test]
fn malformed_or_unknown_requests_are_refused_with_the_right_code() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    let rows: [(&str, u16); 10] = [
        ("GET /nowhere HTTP/1.1\r\n\r\n", 404),
        ("GET / HTTP/1.0\r\n\r\n", 404),
        ("GET /replica?bogus HTTP/1.1\r\n\r\n", 400),
        ("GET /replica?lag=lots HTTP/1.1\r\n\r\n", 400),
        ("GET /primary?streaming HTTP/1.1\r\n\r\n", 400),
        ("GET /primary HTTP/2.0\r\n\r\n", 400),
        ("GET /primary\r\n\r\n", 400),
        ("GET /primary HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ("GET /primary HTTP/1.1\r\nHost: x\r\n", 400),
        ("POST /primary HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 405),
    ];
    for (raw, code) in rows {
        let answer = endpoint.request(raw);
        assert_eq!(answer.code, code, "{raw:?}: {answer:?}");
        assert_eq!(answer.body.lines().count(), 1, "{raw:?}: a one-line reason");
    }
    let refused = endpoint.request("DELETE /primary HTTP/1.1\r\n\r\n");
    assert_eq!(refused.header("allow"), Some("GET, HEAD, OPTIONS"));
    let big = format!(
        "GET /primary HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "x".repeat(9000)
    );
    assert_eq!(endpoint.request(&big).code, 431);
    // A body sent along with a GET is not read as a request.
    let with_body =
        "GET /primary HTTP/1.1\r\nContent-Length: 25\r\n\r\nGET /replica HTTP/1.1\r\n\r\n";
    assert_eq!(endpoint.request(with_body).code, 200);
    // The codes are counted under the known paths, else under "other".
    let page = endpoint.get("/metrics").body;
    assert!(
        page.contains("pg_health_requests_total{path=\"other\",code=\"404\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("pg_health_requests_total{path=\"/primary\",code=\"405\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("pg_health_requests_total{path=\"other\",code=\"431\"} 1"),
        "{page}"
    );
}

#[test]
fn garbage_and_slow_clients_leave_the_endpoint_answering() {
    let primary = Node::primary();
    let mut endpoint = Endpoint::start(
        primary.port(),
        &["--workers", "2", "--request-timeout", "10s"],
    );
    // A client that starts a request and never finishes it holds one worker...
    let mut slow = TcpStream::connect(("127.0.0.1", endpoint.port)).unwrap();
    slow.write_all(b"GET /prim").unwrap();
    // ...while the other answers everyone else meanwhile.
    for _ in 0..5 {
        assert_code(&endpoint, "/health", 200, "beside a slow client");
    }
    slow.set_nonblocking(true).unwrap();
    let waiting = slow.read(&mut [0u8; 1]);
    assert!(
        waiting
            .as_ref()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock),
        "the slow client was answered before the others: {waiting:?}"
    );
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(ANSWER_BOUND)).unwrap();

    // Deterministic garbage: the same bytes on every run.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 8] = [
        b"GET ",
        b"/primary",
        b" HTTP/1.1",
        b"\r\n",
        b"\n",
        b":",
        b"\0\xff",
        b"?lag=",
    ];
    for round in 0..200 {
        let length = (next() % if round % 10 == 0 { 12_000 } else { 200 }) as usize;
        let mut bytes = Vec::with_capacity(length);
        while bytes.len() < length {
            match next() % 3 {
                0 => bytes.push(next() as u8),
                _ => bytes.extend_from_slice(pieces[(next() % 8) as usize]),
            }
        }
        // Refused before it was all sent, a client may see a reset instead.
        if let Ok(answer) = try_exchange(endpoint.port, &bytes) {
            if !answer.is_empty() {
                let answer = Answer::parse(&answer);
                assert!(
                    [200, 400, 404, 405, 431, 503].contains(&answer.code),
                    "round {round}: {answer:?}"
                );
            }
        }
    }

    assert_code(&endpoint, "/health", 200, "after the garbage");
    assert!(
        endpoint.still_running(),
        "the endpoint ended:\n{}",
        endpoint.log()
    );
    // The slow client is told, once its time is up.
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).unwrap();
    assert_eq!(Answer::parse(&answer).code, 408);
}

/// One line of a metrics page: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A sample line: `name{label="value",...} value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    let first = name.chars().next()?;
    let valid_name = (first.is_ascii_alphabetic() || first == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    valid_name.then(|| (name.to_string(), labels, value))
}

fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        text = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    Some(labels)
}

fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect()
}

fn value_of(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(page)
        .into_iter()
        .find_map(|(sample, sample_labels, value)| {
            let same = sample == name
                && sample_labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(l, v)| sample_labels.iter().any(|(sl, sv)| sl == l && sv == v));
            same.then_some(value)
        })
}

const MONITOR_STATE: &str = r#"{"pid":1234,"started_at":"2026-11-30T14:28:22.232Z","updated_at":"2026-11-30T14:28:23.232Z","decision":"refuse_writes","decision_detail":"local node is primary; peer is unreachable","paused":false,"promotions":2,"write_refusals":3,"step_downs":1,"fences":0}"#;

#[test]
fn metrics_show_the_node_and_the_monitors_state() {
    let primary = Node::primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("monitor.json");
    std::fs::write(&state, MONITOR_STATE).unwrap();
    let state_flag = state.to_str().unwrap();
    let endpoint = Endpoint::start(primary.port(), &["--monitor-state", state_flag]);
    assert_code(&endpoint, "/primary", 200, "a primary");

    let answer = endpoint.get("/metrics");
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let page = answer.body;
    let all = samples(&page);
    for (name, _, _) in &all {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            page.contains(&format!("# HELP {family} ")),
            "{name} without HELP"
        );
        assert!(
            page.contains(&format!("# TYPE {family} ")),
            "{name} without TYPE"
        );
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        value_of(&page, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{page}"))
    };
    assert_eq!(value("pg_node_up", &[]), 1.0);
    assert_eq!(value("pg_node_role", &[("role", "primary")]), 1.0);
    assert_eq!(value("pg_node_role", &[("role", "replica")]), 0.0);
    assert_eq!(value("pg_node_role", &[("role", "unreachable")]), 0.0);
    assert_eq!(value("pg_node_timeline", &[]), 1.0);
    assert!(value("pg_node_wal_lsn_bytes", &[("position", "current")]) > 0.0);
    assert_eq!(value("pg_node_streaming_replicas", &[]), 1.0);
    assert_eq!(value("pg_node_synchronous_replicas", &[]), 0.0);
    assert!(value("pg_node_replication_lag_bytes", &[]) >= 0.0);
    assert_eq!(value("pg_node_read_only", &[]), 0.0);
    assert!(value("pg_node_check_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(
        value("pg_node_check_duration_seconds_bucket", &[("le", "+Inf")]),
        value("pg_node_check_duration_seconds_count", &[])
    );
    assert_eq!(
        value(
            "pg_health_requests_total",
            &[("path", "/primary"), ("code", "200")]
        ),
        1.0
    );
    assert_eq!(value("pg_monitor_state_valid", &[]), 1.0);
    assert!(value("pg_monitor_state_age_seconds", &[]) >= 0.0);
    assert_eq!(
        value("pg_monitor_decision", &[("decision", "refuse_writes")]),
        1.0
    );
    assert_eq!(value("pg_monitor_promotions_total", &[]), 2.0);
    assert_eq!(value("pg_monitor_write_refusals_total", &[]), 3.0);
    assert_eq!(value("pg_monitor_step_downs_total", &[]), 1.0);
    assert_eq!(value("pg_monitor_fences_total", &[]), 0.0);
    assert_eq!(value("pg_monitor_paused", &[]), 0.0);

    // Invalid, then too large: reported, logged once, never an error page.
    std::fs::write(&state, "{\"decision\": ").unwrap();
    let page = endpoint.get("/metrics").body;
    assert_eq!(value_of(&page, "pg_monitor_state_valid", &[]), Some(0.0));
    assert_eq!(
        value_of(
            &page,
            "pg_monitor_decision",
            &[("decision", "refuse_writes")]
        ),
        None
    );
    let padded = format!("{}{MONITOR_STATE}", " ".repeat(64 * 1024));
    std::fs::write(&state, padded).unwrap();
    let page = endpoint.get("/metrics").body;
    assert_eq!(value_of(&page, "pg_monitor_state_valid", &[]), Some(0.0));
    assert_eq!(
        endpoint.log().matches("monitor state file").count(),
        1,
        "{}",
        endpoint.log()
    );
    // Absent: no monitor runs here, and that is no error.
    std::fs::remove_file(&state).unwrap();
    let page = endpoint.get("/metrics").body;
    assert!(!page.contains("pg_monitor_"), "{page}");

    // The replica's side.
    let on_replica = Endpoint::start(replica.port(), &[]);
    let page = on_replica.get("/metrics").body;
    assert_eq!(
        value_of(&page, "pg_node_role", &[("role", "replica")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&page, "pg_node_wal_receiver_streaming", &[]),
        Some(1.0)
    );
    assert!(value_of(&page, "pg_node_wal_lsn_bytes", &[("position", "replayed")]).is_some());
    assert_eq!(value_of(&page, "pg_node_read_only", &[]), None);
}

#[test]
fn a_stopped_node_shows_in_metrics_as_down_and_unreachable() {
    let primary = Node::primary();
    let endpoint = Endpoint::start(primary.port(), &[]);
    primary.stop("fast");
    let page = endpoint.get("/metrics").body;
    assert_eq!(value_of(&page, "pg_node_up", &[]), Some(0.0), "{page}");
    assert_eq!(
        value_of(&page, "pg_node_role", &[("role", "unreachable")]),
        Some(1.0)
    );
    assert_eq!(value_of(&page, "pg_node_timeline", &[]), None);
}

#[test]
fn bad_flags_are_usage_errors_and_a_taken_port_ends_it() {
    let run = |args: &[&str]| {
        clean_command(Path::new(env!("CARGO_BIN_EXE_pg-role-check")), &[])
            .args(args)
            .output()
            .expect("cannot run pg-role-check")
    };
    for args in [
        &["serve", "--listen", "nonsense"][..],
        &["serve", "--listen", "localhost:8008"],
        &["serve", "--listen", "127.0.0.1:0"],
        &["serve", "--listen", "127.0.0.1:8008", "--workers", "0"],
        &[
            "serve",
            "--listen",
            "127.0.0.1:8008",
            "--request-timeout",
            "0",
        ],
        &["serve"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let flag = args
            .get(3)
            .filter(|a| a.starts_with("--"))
            .unwrap_or(&"--listen");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = run(&["serve", "--listen", &listen, "--port", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {listen}: ")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn an_ipv6_endpoint_answers_and_sigterm_ends_it_with_exit_0() {
    let primary = Node::primary();
    let port = free_port();
    let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-role-check")), &[]);
    command.args([
        "serve",
        "--listen",
        &format!("[::1]:{port}"),
        "--host",
        "127.0.0.1",
    ]);
    command.args([
        "--port",
        &primary.port().to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
    ]);
    let mut endpoint = Endpoint::spawn(command, port);
    if !endpoint.wait_listening() {
        // No IPv6 loopback on this machine: nothing to check.
        assert!(
            endpoint.log().contains("cannot listen on [::1]"),
            "{}",
            endpoint.log()
        );
        return;
    }
    let mut stream = TcpStream::connect(("::1", port)).unwrap();
    stream.write_all(b"GET /primary HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.set_read_timeout(Some(ANSWER_BOUND)).unwrap();
    stream.read_to_end(&mut answer).unwrap();
    assert_eq!(Answer::parse(&answer).code, 200);

    signal(endpoint.child.id(), "-TERM");
    let mut status = None;
    wait_for("the endpoint to end on SIGTERM", ANSWER_BOUND, || {
        status = endpoint.child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(
        endpoint.log().contains("stopping on SIGTERM"),
        "{}",
        endpoint.log()
    );
}

/// The status haproxy's `show stat` gives each server of `backend`.
fn server_states(haproxy: &Haproxy, backend: &str) -> Vec<(String, String)> {
    let socket = haproxy.dir().join("stats.sock");
    let stat =
        pgcore::haproxy::ask(&socket, "show stat", Duration::from_secs(5)).unwrap_or_default();
    let mut lines = stat.lines();
    let Some(header) = lines.next().and_then(|line| line.strip_prefix("# ")) else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let (proxy, server, status) = (at("pxname"), at("svname"), at("status"));
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| fields.len() > status && fields[proxy] == backend)
        .filter(|fields| fields[server].starts_with("node"))
        .map(|fields| (fields[server].to_string(), fields[status].to_string()))
        .collect()
}

fn wait_states(haproxy: &Haproxy, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(server, status)| (server.to_string(), status.to_string()))
        .collect();
    let mut seen = Vec::new();
    let what = format!("haproxy to see {expected:?}");
    wait_for(&what, ANSWER_BOUND, || {
        seen = server_states(haproxy, "postgres");
        seen == expected
    });
}

/// The port of the server haproxy's `port` leads to, asked through it,
/// and whether that server is in recovery.
fn through(port: u16) -> (i32, bool) {
    let mut client = testkit::postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10))
        .connect(testkit::postgres::NoTls)
        .expect("cannot connect through haproxy");
    let row = client
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn haproxy_httpchk_sends_clients_to_the_primary_only() {
    let old_primary = Node::primary();
    let old_replica = Node::replica_of(&old_primary);
    old_replica.wait_streaming();
    let node0 = Endpoint::start(old_primary.port(), &[]);
    let node1 = Endpoint::start(old_replica.port(), &[]);
    let front = free_port();
    let config = format!(
        "global\n\
         \x20   stats socket {{dir}}/stats.sock mode 600 level admin\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         listen postgres\n\
         \x20   bind 127.0.0.1:{front}\n\
         \x20   option httpchk\n\
         \x20   http-check send meth GET uri /primary\n\
         \x20   http-check expect status 200\n\
         \x20   default-server inter 200 fall 1 rise 1\n\
         \x20   server node0 127.0.0.1:{} check port {}\n\
         \x20   server node1 127.0.0.1:{} check port {}\n",
        old_primary.port(),
        node0.port,
        old_replica.port(),
        node1.port,
    );
    let haproxy = Haproxy::start(&config);

    wait_states(&haproxy, &[("node0", "UP"), ("node1", "DOWN")]);
    assert_eq!(through(front), (i32::from(old_primary.port()), false));

    // A switchover: the old primary refuses writes, the replica is promoted.
    old_primary.execute("ALTER SYSTEM SET default_transaction_read_only = on");
    old_primary.execute("SELECT pg_reload_conf()");
    wait_states(&haproxy, &[("node0", "DOWN"), ("node1", "DOWN")]);
    old_replica.promote();
    wait_states(&haproxy, &[("node0", "DOWN"), ("node1", "UP")]);
    assert_eq!(through(front), (i32::from(old_replica.port()), false));
}
