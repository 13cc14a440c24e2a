//! `pg-monitor consensus` against real PostgreSQL and a real three-member
//! etcd cluster over TLS: three nodes (a primary and two streaming
//! replicas), a monitor beside each, and real faults. A sampler asks every
//! node, all through each test, whether it takes writes: never two at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use pgcore::etcd::{Etcd, EtcdSettings};
use testkit::{
    clean_command, Certificates, EtcdCluster, FaultProxy, LoggedProcess, Node, ProxyMode, SUPERUSER,
};

/// Generous bound for anything a test waits for; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(90);

/// The lease timings: ttl 3 s, a check every 200 ms, a 1 s retry budget
/// (0.2 + 2 × 1 ≤ 3).
const TIMINGS: [(&str, &str); 3] = [
    ("--ttl", "3s"),
    ("--loop-wait", "200ms"),
    ("--retry-timeout", "1s"),
];

const SCOPE: &str = "test";

struct Cluster {
    /// Holds the files the members and monitors read, until the end.
    _certificates: Certificates,
    etcd: EtcdCluster,
    nodes: Vec<Node>,
    /// Each monitor reaches each etcd member through its own proxy, so one
    /// member can be cut off from the store.
    store_proxies: Vec<Vec<FaultProxy>>,
    monitors: Vec<Option<LoggedProcess>>,
}

fn name(index: usize) -> String {
    format!("pg-{index}")
}

impl Cluster {
    /// pg-0 a primary with the `replication` role, pg-1 and pg-2 its
    /// streaming replicas, a monitor beside each with `extra` flags.
    fn start(extra: &[&str]) -> Cluster {
        let certificates = Certificates::new();
        let etcd = EtcdCluster::start(3, &certificates);
        let primary = Node::primary();
        primary.execute("CREATE ROLE replication LOGIN REPLICATION IN ROLE pg_monitor");
        let replicas = [Node::replica_of(&primary), Node::replica_of(&primary)];
        for replica in &replicas {
            replica.wait_streaming();
        }
        let nodes: Vec<Node> = std::iter::once(primary).chain(replicas).collect();
        let store_proxies = (0..nodes.len())
            .map(|_| {
                etcd.endpoints()
                    .iter()
                    .map(|e| FaultProxy::new(e))
                    .collect()
            })
            .collect();
        let mut cluster = Cluster {
            _certificates: certificates,
            etcd,
            nodes,
            store_proxies,
            monitors: Vec::new(),
        };
        for index in 0..cluster.nodes.len() {
            let monitor = cluster.monitor(index, extra);
            cluster.monitors.push(Some(monitor));
        }
        cluster
    }

    fn monitor(&self, index: usize, extra: &[&str]) -> LoggedProcess {
        let node = &self.nodes[index];
        let (ca, certificate, key) = self.etcd.client_files();
        let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-monitor")), &[]);
        command
            .arg("consensus")
            .args(["--name", &name(index)])
            .args([
                "--local",
                &format!("{}:{}", node.socket_dir.display(), node.port()),
            ])
            .args([
                "--scope",
                SCOPE,
                "--user",
                SUPERUSER,
                "--member-user",
                "replication",
            ])
            .args(["--dbname", "postgres", "--connect-timeout", "2"])
            .arg("--store-ca")
            .arg(&ca)
            .arg("--store-cert")
            .arg(&certificate)
            .arg("--store-key")
            .arg(&key)
            .arg("--lease-file")
            .arg(self.lease_file(index))
            .args(extra);
        for (flag, value) in TIMINGS {
            command.args([flag, value]);
        }
        for (member, other) in self.nodes.iter().enumerate() {
            command.args([
                "--member",
                &format!("{}={}", name(member), other.endpoint()),
            ]);
        }
        for proxy in &self.store_proxies[index] {
            command.args(["--store", &proxy.endpoint()]);
        }
        LoggedProcess::start(&name(index), command)
    }

    fn lease_file(&self, index: usize) -> std::path::PathBuf {
        self.nodes[index].root().join("leader.lease")
    }

    /// Whether the member's lease file holds a time still ahead.
    fn lease_valid(&self, index: usize) -> bool {
        pgcore::lease::valid_at(&self.lease_file(index), SystemTime::now())
    }

    fn log(&self, index: usize) -> String {
        self.monitors[index]
            .as_ref()
            .map(LoggedProcess::log)
            .unwrap_or_default()
    }

    /// For failure messages: the end of each monitor's log, then of its server's.
    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|index| {
                format!(
                    "--- {name} monitor ---\n{}\n--- {name} postgres ---\n{}",
                    last_lines(&self.log(index), 40),
                    self.nodes[index].log_tail(),
                    name = name(index),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn store(&self) -> Etcd {
        let (ca, certificate, private_key) = self.etcd.client_files();
        Etcd::new(EtcdSettings {
            endpoints: self.etcd.endpoints(),
            ca,
            certificate,
            private_key,
            timeout: Duration::from_secs(2),
        })
        .expect("a store client")
    }

    /// The member the leader key names, if any.
    fn leader(&self) -> Option<String> {
        self.store()
            .get(
                &format!("/postgres/{SCOPE}/leader"),
                Instant::now() + Duration::from_secs(5),
            )
            .ok()
            .flatten()
            .map(|kv| kv.value)
    }

    fn put(&self, key: &str, value: &str) {
        self.store()
            .put(
                &format!("/postgres/{SCOPE}/{key}"),
                value,
                0,
                Instant::now() + Duration::from_secs(5),
            )
            .expect("a put to the store");
    }

    /// Runs `pg-monitor consensus-switchover` with `args`: its exit code and output.
    fn switchover(&self, args: &[&str]) -> (i32, String) {
        let (ca, certificate, key) = self.etcd.client_files();
        let mut command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-monitor")), &[]);
        command
            .args(["consensus-switchover", "--scope", SCOPE, "--wait", "60s"])
            .arg("--store-ca")
            .arg(&ca)
            .arg("--store-cert")
            .arg(&certificate)
            .arg("--store-key")
            .arg(&key)
            .args(args);
        for endpoint in self.etcd.endpoints() {
            command.args(["--store", &endpoint]);
        }
        let output = testkit::output_within(command, PATIENCE, "pg-monitor consensus-switchover");
        (
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// Waits until the leader key names a member other than `not` whose
    /// server takes writes; returns its index.
    fn wait_new_leader(&self, not: Option<usize>) -> usize {
        let started = Instant::now();
        loop {
            if let Some(leader) = self.leader() {
                let index: usize = leader
                    .trim_start_matches("pg-")
                    .parse()
                    .expect("a pg-N name");
                if Some(index) != not && takes_writes(&self.nodes[index]) {
                    return index;
                }
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no new writable leader within {PATIENCE:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `follower` streams from `leader`.
    fn wait_follows(&self, follower: usize, leader: usize) {
        let port = self.nodes[leader].port().to_string();
        let started = Instant::now();
        loop {
            let source = self.nodes[follower].query_text(
                "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            );
            if source.as_deref() == Some(port.as_str()) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} does not stream from {} within {PATIENCE:?} (it streams from port {source:?}); logs:\n{}",
                name(follower),
                name(leader),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where a promoted node's timeline forked from the one before: the last
/// line of its timeline's history file (`1\t0/3000148\treason`).
fn fork_point(node: &Node) -> String {
    let history = node.value(
        "SELECT pg_read_file('pg_wal/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) || '.history')",
    );
    history
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .and_then(|line| line.split('\t').nth(1))
        .unwrap_or_else(|| panic!("no fork point in the timeline history {history:?}"))
        .to_string()
}

/// Whether the node is a primary taking writes (false when it does not answer).
fn takes_writes(node: &Node) -> bool {
    port_takes_writes(node.port())
}

/// Asks every node every 50 ms whether it takes writes, and remembers the
/// most that did at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(cluster: &Cluster) -> Sampler {
        let endpoints: Vec<u16> = cluster.nodes.iter().map(|node| node.port()).collect();
        let (stop, most) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (thread_stop, thread_most) = (Arc::clone(&stop), Arc::clone(&most));
        let thread = std::thread::spawn(move || {
            while !thread_stop.load(Ordering::SeqCst) {
                let writable = endpoints
                    .iter()
                    .filter(|port| port_takes_writes(**port))
                    .count();
                thread_most.fetch_max(writable, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            most,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the most nodes seen taking writes at once.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.most.load(Ordering::SeqCst)
    }
}

fn port_takes_writes(port: u16) -> bool {
    let config =
        format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres connect_timeout=1");
    testkit::postgres::Client::connect(&config, testkit::postgres::NoTls)
        .ok()
        .and_then(|mut client| {
            client
                .query_one(
                    "SELECT NOT pg_is_in_recovery() \
                     AND current_setting('default_transaction_read_only') = 'off'",
                    &[],
                )
                .ok()
        })
        .is_some_and(|row| row.get::<_, bool>(0))
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn rows(node: &Node) -> String {
    node.value("SELECT count(*) FROM written")
}

#[test]
fn the_primary_leads_then_after_a_kill_9_the_best_replica_leads_and_the_other_follows_it() {
    // Each member that becomes the primary runs the on-leader command once.
    let marks = tempfile::tempdir().expect("a temp dir");
    let mark = format!("mktemp -p {}", marks.path().display());
    let cluster = Cluster::start(&["--on-leader-cmd", &mark]);
    let sampler = Sampler::start(&cluster);
    assert_eq!(
        cluster.wait_new_leader(None),
        0,
        "the primary takes the key"
    );
    cluster.nodes[0].execute(
        "CREATE TABLE written (id int); INSERT INTO written SELECT generate_series(1, 100)",
    );
    cluster.nodes[1].wait_caught_up(&cluster.nodes[0]);
    cluster.nodes[2].wait_caught_up(&cluster.nodes[0]);

    cluster.nodes[0].kill9();
    let leader = cluster.wait_new_leader(Some(0));
    let follower = 3 - leader;
    cluster.wait_follows(follower, leader);
    cluster.nodes[leader].execute("INSERT INTO written VALUES (101)");
    cluster.nodes[follower].wait_caught_up(&cluster.nodes[leader]);
    assert_eq!(rows(&cluster.nodes[follower]), "101");
    assert_eq!(
        std::fs::read_dir(marks.path()).unwrap().count(),
        2,
        "the on-leader command runs once per leader; logs:\n{}",
        cluster.logs()
    );
    assert!(
        cluster.log(0).contains("giving the leader key up"),
        "the killed primary's monitor gives the key up at once:\n{}",
        cluster.log(0)
    );
    assert_eq!(
        sampler.finish(),
        1,
        "two nodes took writes at once; logs:\n{}",
        cluster.logs()
    );
}

/// A leader cut off from the store lives on, and its replicas still stream
/// from it: WAL it writes after another member promoted (here a checkpoint,
/// in production a background record) takes a replica whose monitor had
/// not yet turned it to the new leader past the new timeline's fork. That
/// replica must not stream on as if nothing happened: its monitor asks to
/// rejoin (pg_rewind, at the restart the rejoin command makes).
#[test]
fn a_leader_cut_off_from_the_store_refuses_writes_and_a_replica_takes_over() {
    let cluster = Cluster::start(&["--rejoin-cmd", "true", "--rejoin-after", "3s"]);
    assert_eq!(cluster.wait_new_leader(None), 0);
    testkit::wait_for("pg-0's lease file", PATIENCE, || cluster.lease_valid(0));
    // The lease lasts at most loop_wait + 2 × retry_timeout past a renewal's asking.
    let until = pgcore::lease::read(&cluster.lease_file(0)).expect("a lease time");
    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_millis(2200), "{left:?}");
    assert!(!cluster.lease_valid(1) && !cluster.lease_valid(2));
    let sampler = Sampler::start(&cluster);
    // pg-1's monitor is slow to act: pg-2 takes over, pg-1 streams on from pg-0.
    let slow = cluster.monitors[1].as_ref().unwrap();
    slow.signal("STOP");
    for proxy in &cluster.store_proxies[0] {
        proxy.set_mode(ProxyMode::Blackhole);
    }
    cluster.monitors[0]
        .as_ref()
        .unwrap()
        .wait_log("refusing writes: the store could not be reached", PATIENCE);
    let leader = cluster.wait_new_leader(Some(0));
    assert_eq!(leader, 2, "the member whose monitor runs takes over");
    assert!(
        !takes_writes(&cluster.nodes[0]),
        "the cut-off leader still takes writes"
    );
    assert!(!cluster.lease_valid(0), "the cut-off leader's lease lasts");
    testkit::wait_for("pg-2's lease file", PATIENCE, || cluster.lease_valid(2));
    cluster.nodes[0].execute("CHECKPOINT");
    let fork = fork_point(&cluster.nodes[2]);
    testkit::wait_for(
        "pg-1 to replay pg-0's WAL past pg-2's fork",
        PATIENCE,
        || {
            cluster.nodes[1].value(&format!(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{fork}') > 0"
            )) == "t"
        },
    );
    slow.signal("CONT");
    slow.wait_log(
        "pg-2 leads and the local node is a primary or does not stream from it: rejoining",
        PATIENCE,
    );
    assert_eq!(
        sampler.finish(),
        1,
        "two nodes took writes at once; logs:\n{}",
        cluster.logs()
    );

    // Back in touch, the old leader sees the new one and asks to rejoin.
    for proxy in &cluster.store_proxies[0] {
        proxy.set_mode(ProxyMode::Forward);
    }
    cluster.monitors[0].as_ref().unwrap().wait_log(
        &format!(
            "{} leads and the local node is a primary or does not stream from it: rejoining",
            name(leader)
        ),
        PATIENCE,
    );
}

#[test]
fn without_quorum_no_node_takes_writes_and_after_it_one_leader_does() {
    let mut cluster = Cluster::start(&[]);
    assert_eq!(cluster.wait_new_leader(None), 0);
    let sampler = Sampler::start(&cluster);
    cluster.etcd.kill_member(1);
    cluster.etcd.kill_member(2);
    cluster.monitors[0]
        .as_ref()
        .unwrap()
        .wait_log("refusing writes: the store could not be reached", PATIENCE);
    testkit::wait_for("no node to take writes", PATIENCE, || {
        cluster.nodes.iter().all(|node| !takes_writes(node))
    });
    cluster.etcd.start_member(1);
    cluster.etcd.start_member(2);
    cluster.etcd.wait_healthy();
    let leader = cluster.wait_new_leader(None);
    assert_eq!(
        sampler.finish(),
        1,
        "two nodes took writes at once; logs:\n{}",
        cluster.logs()
    );
    assert!(takes_writes(&cluster.nodes[leader]));
}

#[test]
fn a_switchover_in_the_store_hands_the_leadership_to_the_member_named() {
    let cluster = Cluster::start(&[]);
    assert_eq!(cluster.wait_new_leader(None), 0);
    cluster.nodes[0].execute("CREATE TABLE written (id int); INSERT INTO written VALUES (1)");
    let sampler = Sampler::start(&cluster);
    cluster.put("switchover", "pg-2");
    assert_eq!(cluster.wait_new_leader(Some(0)), 2);
    // Its lease file is written before it takes writes, so that the health
    // endpoint's /primary holds as soon as it does.
    assert!(
        cluster.lease_valid(2),
        "the new leader takes writes without its lease"
    );
    assert!(!cluster.lease_valid(0), "the old leader keeps its lease");
    cluster.wait_follows(1, 2);
    assert!(
        !takes_writes(&cluster.nodes[0]),
        "the old leader still takes writes"
    );
    assert_eq!(rows(&cluster.nodes[2]), "1", "the new leader has every row");

    // The operator's command: a member that does not lead has nothing to
    // hand over; `any` goes to the streaming replica (pg-1: pg-0, never
    // rejoined here, streams from nobody).
    let (code, said) = cluster.switchover(&["--if-leader", "pg-0"]);
    assert_eq!(
        (code, said.contains("nothing to do: pg-2 leads")),
        (0, true),
        "{said}"
    );
    let (code, said) = cluster.switchover(&["--to", "any"]);
    assert_eq!(code, 0, "{said}\n{}", cluster.logs());
    assert!(said.contains("pg-1 leads now (was pg-2)"), "{said}");
    assert_eq!(cluster.wait_new_leader(Some(2)), 1);
    assert_eq!(
        sampler.finish(),
        1,
        "two nodes took writes at once; logs:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_replica_lagging_beyond_the_bound_never_takes_the_key() {
    let mut cluster = Cluster::start(&["--max-lag-bytes", "100000"]);
    assert_eq!(cluster.wait_new_leader(None), 0);
    // pg-1 goes away; pg-2 receives but replays nothing of 1 MB of WAL.
    cluster.monitors[1] = None;
    cluster.nodes[1].stop("immediate");
    cluster.nodes[2].execute("SELECT pg_wal_replay_pause()");
    cluster.nodes[0].execute(
        "CREATE TABLE written (filler text); \
         INSERT INTO written SELECT repeat('x', 1000) FROM generate_series(1, 1000)",
    );
    testkit::wait_for("pg-2 to receive the WAL", PATIENCE, || {
        cluster.nodes[2]
            .query_text(
                "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) > 500000",
            )
            .as_deref()
            == Some("t")
    });
    // Let its monitor see the leader's position while it still streams.
    std::thread::sleep(Duration::from_secs(1));
    cluster.nodes[0].kill9();
    cluster.monitors[2]
        .as_ref()
        .unwrap()
        .wait_log("bytes behind the last leader position seen", PATIENCE);
    // Several lease lengths later, still no leader.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(cluster.leader(), None, "logs:\n{}", cluster.logs());
    assert_eq!(
        cluster.nodes[2]
            .query_text("SELECT pg_is_in_recovery()")
            .as_deref(),
        Some("t")
    );
}
