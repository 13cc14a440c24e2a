//! Drives the local HA cluster (`ci/cluster`) for the fault scenarios and the
//! failover benchmark: bring it up, inject a fault while a client writes
//! through the VIP, and read back what the client saw.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const VIP: &str = "10.244.0.10";
pub const WRITE_PORT: u16 = 5432;
pub const VMS: [&str; 2] = ["vm0", "vm1"];

/// The postgres VMs of the N-node topology (`ci/cluster up --consensus`).
pub const CONSENSUS_VMS: [&str; 3] = ["vm0", "vm1", "vm2"];

/// Its etcd VMs.
pub const ETCD_VMS: [&str; 3] = ["etcd0", "etcd1", "etcd2"];

/// The address of a VM on the cluster's bridge.
pub fn address(vm: &str) -> &'static str {
    match vm {
        "vm0" => "10.244.0.2",
        "vm1" => "10.244.0.3",
        "vm2" => "10.244.0.4",
        other => panic!("unknown VM {other}"),
    }
}

/// The postgres member name of a VM in the N-node topology (vmN is postgres/N).
pub fn member(vm: &str) -> String {
    format!("postgres-{}", vm.trim_start_matches("vm"))
}

/// The other VM of the pair.
pub fn other(vm: &str) -> &'static str {
    if vm == "vm0" {
        "vm1"
    } else {
        "vm0"
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Milliseconds since the epoch, the clock the client logs with.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// The cluster, brought up by `up` and taken down (always) when dropped.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    synchronous: bool,
    /// How many times clients were started: each start writes ids of its own
    /// (the `writes` table outlives a scenario when several share the cluster).
    client_starts: std::cell::Cell<u64>,
    /// The `--set`s of the last deploy that went through: what the VMs run.
    deployed: std::cell::RefCell<Vec<String>>,
    /// Deployed with `--tls` (postgres.tls): every later deploy keeps it,
    /// and the clients started from then on verify the server.
    tls: std::cell::Cell<bool>,
    /// The postgres VMs: the pair's two, or the N-node topology's three.
    vms: &'static [&'static str],
    /// Every VM, the etcd ones included.
    all_vms: Vec<&'static str>,
}

impl Cluster {
    /// `ci/cluster up` under its own name and directory, so that tests never touch
    /// a cluster an operator brought up by hand: `pghatest` in
    /// `$TMPDIR/pg-ha-cluster-test`, or PG_CLUSTER_NAME and PG_CLUSTER_DIR when
    /// set (two test runs on one machine, each with its own).
    pub fn up(synchronous: bool) -> Cluster {
        Self::bring_up(synchronous, false)
    }

    /// [`Cluster::up`] with `--tls`: postgres.tls required from the start, and
    /// [`Cluster::use_tls`].
    pub fn up_with_tls(synchronous: bool) -> Cluster {
        Self::bring_up(synchronous, true)
    }

    /// [`Cluster::up`] with `--consensus`: three postgres VMs whose failover
    /// goes through three etcd VMs.
    pub fn up_consensus(synchronous: bool) -> Cluster {
        let mut cluster = Self::new(synchronous, false);
        cluster.vms = &CONSENSUS_VMS;
        cluster.all_vms = CONSENSUS_VMS.iter().chain(&ETCD_VMS).copied().collect();
        let _ = cluster.run(&["down"]);
        let mode = if synchronous { "on" } else { "off" };
        cluster.check(&["up", "--consensus", "--synchronous", mode]);
        cluster
    }

    /// The postgres VMs.
    pub fn vms(&self) -> &'static [&'static str] {
        self.vms
    }

    fn new(synchronous: bool, tls: bool) -> Cluster {
        Cluster {
            name: std::env::var("PG_CLUSTER_NAME").unwrap_or_else(|_| "pghatest".to_string()),
            dir: std::env::var_os("PG_CLUSTER_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("pg-ha-cluster-test")),
            client_starts: std::cell::Cell::new(0),
            deployed: std::cell::RefCell::new(Vec::new()),
            synchronous,
            tls: std::cell::Cell::new(tls),
            vms: &VMS,
            all_vms: VMS.to_vec(),
        }
    }

    fn bring_up(synchronous: bool, tls: bool) -> Cluster {
        let cluster = Self::new(synchronous, tls);
        // A crashed earlier run may have left one behind.
        let _ = cluster.run(&["down"]);
        let mode = if synchronous { "on" } else { "off" };
        let mut args = vec!["up", "--synchronous", mode];
        if tls {
            args.push("--tls");
        }
        cluster.check(&args);
        cluster
    }

    /// Every deploy from now on with `--tls` (postgres.tls, certificates the
    /// bosh CLI generated), and every client started from now on verifying
    /// the server's certificate (it names the VIP and both VMs).
    pub fn use_tls(&self) {
        self.tls.set(true);
    }

    /// `ci/cluster ARGS` with `env` added; the output, whatever the exit status.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        command.output().expect("cannot run ci/cluster")
    }

    /// A query as vcap on `vm`'s own postgres, over its Unix socket: the
    /// rows, one a line, columns split by `|`.
    pub fn query(&self, vm: &str, sql: &str) -> String {
        self.check(&[
            "exec",
            vm,
            "env",
            "PGUSER=vcap",
            "PGDATABASE=postgres",
            "/var/vcap/packages/postgres/bin/psql",
            "-h",
            "/var/vcap/sys/run/postgres",
            "-p",
            "6432",
            "-XAtc",
            sql,
        ])
    }

    /// Whether the cluster runs with synchronous replication.
    pub fn synchronous(&self) -> bool {
        self.synchronous
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(repo_root().join("ci/cluster"));
        command
            .args(args)
            .env("PG_CLUSTER_NAME", &self.name)
            .env("PG_CLUSTER_DIR", &self.dir);
        command
    }

    /// Runs `ci/cluster ARGS`; the output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cannot run ci/cluster")
    }

    /// Runs `ci/cluster ARGS` and panics with its output unless it succeeds.
    pub fn check(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "ci/cluster {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// `ci/cluster deploy`, each of `sets` a `--set PROPERTY=VALUE` over the
    /// manifest `up` wrote; remembered as what the VMs run when it succeeds.
    pub fn deploy(&self, sets: &[String]) -> Output {
        let mut args = vec!["deploy"];
        if self.tls.get() {
            args.push("--tls");
        }
        for set in sets {
            args.extend(["--set", set.as_str()]);
        }
        let output = self.run(&args);
        if output.status.success() {
            *self.deployed.borrow_mut() = sets.to_vec();
        }
        output
    }

    /// The `--set`s of the last deploy that went through.
    pub fn deployed_sets(&self) -> Vec<String> {
        self.deployed.borrow().clone()
    }

    /// A command run in the client namespace.
    fn in_client(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &format!("{}-client", self.name)])
            .arg(program)
            .env("PGUSER", "app")
            .env("PGDATABASE", "app")
            .env("PGPASSWORD", "app-secret");
        if self.tls.get() {
            // The certificate names the VIP and both VMs' addresses.
            command
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", self.dir.join("ca.pem"));
        }
        command
    }

    /// Makes a client command built by [`Cluster::in_client`], about to
    /// reach its VM's postgres at 127.0.0.1 (which no certificate names),
    /// verify the chain only.
    fn on_loopback(&self, command: &mut Command) {
        if self.tls.get() {
            command.env("PGSSLMODE", "verify-ca");
        }
    }

    /// Each VM's status (`ci/cluster status --json`).
    pub fn status(&self) -> BTreeMap<String, Value> {
        self.check(&["status", "--json"])
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|status| (status["vm"].as_str().unwrap_or("?").to_string(), status))
            .collect()
    }

    /// The VMs whose postgres answers as primary.
    pub fn primaries(&self) -> Vec<String> {
        self.status()
            .into_iter()
            .filter(|(_, status)| status["postgres"]["role"] == "primary")
            .map(|(vm, _)| vm)
            .collect()
    }

    /// The VMs whose postgres is a primary taking writes.
    pub fn writable_primaries(&self) -> Vec<String> {
        self.status()
            .into_iter()
            .filter(|(_, status)| {
                status["postgres"]["role"] == "primary" && status["postgres"]["read_only"] != true
            })
            .map(|(vm, _)| vm)
            .collect()
    }

    /// The one primary, waiting (bounded) until there is exactly one.
    pub fn wait_for_single_primary(&self, timeout: Duration) -> String {
        let mut primaries = Vec::new();
        wait_until("exactly one primary", timeout, || {
            primaries = self.primaries();
            primaries.len() == 1
        });
        primaries.remove(0)
    }

    /// Waits until `vm`'s postgres answers in `role`.
    pub fn wait_for_local_role(&self, vm: &str, role: &str, timeout: Duration) {
        wait_until(&format!("{vm} to answer as {role}"), timeout, || {
            self.status()[vm]["postgres"]["role"] == role
        });
    }

    /// Waits until `vm` is a replica streaming from `primary`.
    pub fn wait_for_replica_of(&self, vm: &str, primary: &str, timeout: Duration) {
        let source = format!("{}:6432", address(primary));
        wait_until(&format!("{vm} to stream from {primary}"), timeout, || {
            let status = &self.status()[vm]["postgres"];
            status["role"] == "replica" && status["wal_receiver_source"] == source.as_str()
        });
    }

    /// Waits until `vm`'s monitor has seen its replica synchronous: a replica
    /// promotes only if it was synchronous when it last saw its primary, so
    /// a failover right after a clone would otherwise (rightly) not happen.
    /// Only the running monitor's lines count (those after its last
    /// `watching:`): one that ran before a restart may have seen it so too.
    pub fn wait_for_synchronous_replica(&self, vm: &str, timeout: Duration) {
        wait_until(
            &format!("{vm}'s monitor to see it synchronous"),
            timeout,
            || {
                let log =
                    self.check(&["exec", vm, "cat", "/var/vcap/sys/log/postgres/monitor.log"]);
                let lines: Vec<&str> = log.lines().collect();
                let Some(started) = lines.iter().rposition(|line| line.contains("watching:"))
                else {
                    return false;
                };
                lines[started..]
                    .iter()
                    .rev()
                    .find(|line| line.contains("local node is"))
                    .is_some_and(|line| {
                        line.contains("local node is a replica") && line.contains("(synchronous)")
                    })
            },
        );
    }

    /// The boot decisions `vm`'s pg-bootstrap logged so far (`decision: ...`
    /// lines of the postgres job's ctl.log), oldest first.
    pub fn boot_decisions(&self, vm: &str) -> Vec<String> {
        self.check(&["exec", vm, "cat", "/var/vcap/sys/log/postgres/ctl.log"])
            .lines()
            .filter_map(|line| line.split_once("decision: ").map(|(_, d)| d.to_string()))
            .collect()
    }

    /// Whether `vm` fenced itself: postgres, haproxy and the monitor all stopped.
    pub fn fenced(&self, vm: &str) -> bool {
        let status = &self.status()[vm];
        ["postgres", "haproxy", "monitor"]
            .iter()
            .all(|service| status["services"][service] == "Not monitored")
    }

    /// The VM holding the VIP, if one does.
    pub fn vip_holder(&self) -> Option<String> {
        self.status()
            .into_iter()
            .find(|(_, status)| status["holds_vip"] == true)
            .map(|(vm, _)| vm)
    }

    pub fn setup_table(&self) {
        let client = ha_client();
        let target = format!("{VIP}:{WRITE_PORT}");
        let output = self
            .in_client(&client)
            .args(["setup", "--target", &target, "--timeout", "5s"])
            .output()
            .expect("run ha-client setup");
        assert!(
            output.status.success(),
            "setup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The ids present in the `writes` table, read through the VIP.
    pub fn stored_ids(&self) -> BTreeSet<u64> {
        let target = format!("{VIP}:{WRITE_PORT}");
        let mut stored = None;
        wait_until("the VIP to answer a read", Duration::from_secs(60), || {
            let output = self
                .in_client(&ha_client())
                .args(["dump", "--target", &target, "--timeout", "5s"])
                .output()
                .expect("run ha-client dump");
            if output.status.success() {
                let text = String::from_utf8_lossy(&output.stdout).to_string();
                stored = Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect());
            }
            stored.is_some()
        });
        stored.unwrap()
    }

    /// Starts the clients: a writer through the VIP and an observer through
    /// both haproxies (from the client namespace), an observer of each VM's
    /// own postgres (inside the VM, so it sees both sides of a partition)
    /// and, with `local_writers`, a writer inside each VM through its own
    /// haproxy (a client on each side of a partition).
    pub fn start_clients(&self, local_writers: bool) -> Clients {
        let dir = tempfile::Builder::new()
            .prefix("ha-client.")
            .tempdir()
            .expect("temp dir");
        let logs = dir.path().to_path_buf();
        let log = |name: &str| logs.join(format!("{name}.log"));
        let mut clients = Clients {
            writers: Vec::new(),
            observations: log("observations"),
            node_observations: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        let start = self.client_starts.get();
        self.client_starts.set(start + 1);
        let ids = start * IDS_PER_START;
        let vip_writes = log("writes");
        let writer = self.client_command(
            "write",
            &format!("{VIP}:{WRITE_PORT}"),
            ids + 1,
            &vip_writes,
        );
        clients.spawn(writer, "the writer through the VIP");
        clients.writers.push(("vip".to_string(), vip_writes));
        if local_writers {
            for (number, vm) in self.vms.iter().enumerate() {
                let path = log(&format!("writes-{vm}"));
                let first_id = ids + (number as u64 + 1) * LOCAL_WRITER_IDS;
                let mut writer = self.client_command(
                    "write",
                    &format!("127.0.0.1:{WRITE_PORT}"),
                    first_id,
                    &path,
                );
                self.on_loopback(&mut writer);
                in_vm_namespace(&mut writer, &self.name, vm);
                clients.spawn(writer, &format!("the writer in {vm}"));
                clients.writers.push((vm.to_string(), path));
            }
        }
        let mut observe = self.in_client(&ha_client());
        observe.args([
            "observe",
            "--interval",
            "100ms",
            "--timeout",
            "500ms",
            "--out",
        ]);
        observe.arg(&clients.observations);
        for vm in self.vms {
            observe.args(["--target", &format!("{}:{WRITE_PORT}", address(vm))]);
        }
        clients.spawn(observe, "the observer of the haproxies");
        for vm in self.vms {
            let path = log(&format!("node-{vm}"));
            let mut observe = self.in_client(&ha_client());
            observe.args(["observe", "--interval", "100ms", "--timeout", "500ms"]);
            observe
                .args(["--target", "127.0.0.1:6432", "--out"])
                .arg(&path);
            self.on_loopback(&mut observe);
            in_vm_namespace(&mut observe, &self.name, vm);
            clients.spawn(observe, &format!("the observer of {vm}'s postgres"));
            clients.node_observations.push((vm.to_string(), path));
        }
        clients
    }

    fn client_command(&self, verb: &str, target: &str, first_id: u64, out: &Path) -> Command {
        let mut command = self.in_client(&ha_client());
        command
            .args([
                verb,
                "--target",
                target,
                "--interval",
                "50ms",
                "--timeout",
                "1s",
            ])
            .args(["--first-id", &first_id.to_string(), "--out"])
            .arg(out);
        command
    }
}

/// The ids of the writers inside the VMs start at one and two times this
/// past the ids of the writer through the VIP.
const LOCAL_WRITER_IDS: u64 = 1_000_000_000;

/// Each start of the clients writes ids from its own block of this many.
const IDS_PER_START: u64 = 10 * LOCAL_WRITER_IDS;

/// Makes `command` (an `ip netns exec <client namespace> ...`) run in `vm`'s
/// network namespace instead, with the same environment.
fn in_vm_namespace(command: &mut Command, cluster: &str, vm: &str) {
    let args: Vec<std::ffi::OsString> = command.get_args().map(|a| a.to_os_string()).collect();
    let client_namespace = format!("{cluster}-client");
    let at = args
        .iter()
        .position(|arg| arg.as_os_str() == client_namespace.as_str())
        .expect("a command built for the client namespace");
    let mut rebuilt = Command::new(command.get_program());
    rebuilt
        .args(&args[..at])
        .arg(format!("{cluster}-{vm}"))
        .args(&args[at + 1..]);
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            rebuilt.env(key, value);
        }
    }
    *command = rebuilt;
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.keep_logs();
        let _ = self.run(&["down"]);
    }
}

impl Cluster {
    /// Before the cluster goes: with PG_CLUSTER_LOGS=DIR, every VM's job logs
    /// are copied to DIR/<vm>; after a failed assertion, the end of each
    /// monitor's log is printed, so a CI log says what the monitors decided.
    fn keep_logs(&self) {
        for vm in &self.all_vms {
            let logs = self.dir.join(vm).join("vcap/sys/log");
            if let Some(keep) = std::env::var_os("PG_CLUSTER_LOGS") {
                let into = PathBuf::from(keep).join(vm);
                let _ = fs::create_dir_all(&into);
                let _ = Command::new("cp")
                    .arg("-a")
                    .arg(logs.join("."))
                    .arg(&into)
                    .status();
            }
            if let Some(keep) = std::env::var_os("PG_CLUSTER_LOGS") {
                let _ = fs::copy(
                    self.dir.join(vm).join("vcap/monit/monit.log"),
                    PathBuf::from(keep).join(vm).join("monit.log"),
                );
            }
            if std::thread::panicking() {
                let monitor =
                    fs::read_to_string(logs.join("postgres/monitor.log")).unwrap_or_default();
                let lines: Vec<&str> = monitor.lines().collect();
                eprintln!("--- {vm}: the end of postgres/monitor.log ---");
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The `ha-client` binary, which `ci/cluster up` builds with the release's programs.
fn ha_client() -> PathBuf {
    repo_root().join("target/release/ha-client")
}

/// Prints `line` and appends it to `dir`/fault-matrix.txt (a test's
/// CARGO_TARGET_TMPDIR), which ci/test shows at the end.
pub fn report_line(dir: &Path, line: &str) {
    use std::io::Write;
    println!("{line}");
    if let Ok(mut file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fault-matrix.txt"))
    {
        let _ = writeln!(file, "{line}");
    }
}

/// Polls `condition` every 250 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The writers and observers of a scenario, and their logs.
pub struct Clients {
    /// (where it writes from, its log); the first writes through the VIP.
    writers: Vec<(String, PathBuf)>,
    /// The observer through both haproxies.
    observations: PathBuf,
    /// Each VM's observer of its own postgres.
    node_observations: Vec<(String, PathBuf)>,
    children: Vec<Child>,
    /// Holds the logs; removed when the clients are dropped.
    _dir: tempfile::TempDir,
}

impl Clients {
    fn spawn(&mut self, mut command: Command, what: &str) {
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
        self.children.push(child);
    }

    /// Waits until the writer through the VIP has had `count` acknowledgements after `since_ms`.
    pub fn wait_for_acks_after(&self, since_ms: u128, count: usize, timeout: Duration) {
        wait_until(&format!("{count} acknowledged writes"), timeout, || {
            self.writes().acked_after(since_ms).len() >= count
        });
    }

    /// What the writer through the VIP saw.
    pub fn writes(&self) -> WriteLog {
        read_writes(&self.writers[0].1)
    }

    /// Stops them all (SIGTERM: they finish their current round) and returns what they saw.
    pub fn stop(mut self) -> Seen {
        for child in &mut self.children {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        Seen {
            writes: self
                .writers
                .iter()
                .map(|(side, path)| (side.clone(), read_writes(path)))
                .collect(),
            haproxies: read_observations(&self.observations),
            nodes: self
                .node_observations
                .iter()
                .map(|(vm, path)| (vm.clone(), read_observations(path)))
                .collect(),
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn read_writes(path: &Path) -> WriteLog {
    WriteLog::parse(&fs::read_to_string(path).unwrap_or_default())
}

fn read_observations(path: &Path) -> Observations {
    Observations::parse(&fs::read_to_string(path).unwrap_or_default())
}

/// Everything the clients saw in one scenario.
pub struct Seen {
    /// Each writer's log, the one through the VIP first.
    pub writes: Vec<(String, WriteLog)>,
    pub haproxies: Observations,
    /// What each VM's own postgres said it was, sample by sample.
    pub nodes: Vec<(String, Observations)>,
}

impl Seen {
    /// The writes any writer had acknowledged.
    pub fn acked(&self) -> BTreeSet<u64> {
        self.writes
            .iter()
            .flat_map(|(_, log)| log.acked())
            .collect()
    }

    /// When both nodes may have taken writes at once: the start of each
    /// overlap between a window in which one node answered as a primary
    /// taking writes and a window in which the other did. Never, if the pair
    /// keeps its promise. Windows, not time slots: a planned switchover hands
    /// writes over within a tenth of a second, in order, and two answers that
    /// far apart in the same slot would read as both at once.
    pub fn both_writable(&self) -> Vec<u128> {
        let mut overlaps: Vec<u128> = Vec::new();
        for (at, (_, first)) in self.nodes.iter().enumerate() {
            for (_, second) in &self.nodes[at + 1..] {
                overlaps.extend(first.writable_windows.iter().flat_map(|&(from, until)| {
                    second
                        .writable_windows
                        .iter()
                        .filter(move |&&(other_from, other_until)| {
                            from <= other_until && other_from <= until
                        })
                        .map(move |&(other_from, _)| from.max(other_from))
                }));
            }
        }
        overlaps.sort();
        overlaps.dedup();
        overlaps
    }

    /// When `side`'s writer last had a write acknowledged in [from_ms, until_ms).
    pub fn last_ack_between(&self, side: &str, from_ms: u128, until_ms: u128) -> Option<u128> {
        self.writes
            .iter()
            .find(|(name, _)| name == side)
            .and_then(|(_, log)| {
                log.outcomes
                    .iter()
                    .filter(|(_, v, at)| v == "ack" && (from_ms..until_ms).contains(at))
                    .map(|(_, _, at)| *at)
                    .max()
            })
    }
}

/// What the writer saw: for each id, ack / err / unknown, and when.
#[derive(Debug, Default)]
pub struct WriteLog {
    pub outcomes: Vec<(u64, String, u128)>,
}

impl WriteLog {
    pub fn parse(text: &str) -> WriteLog {
        let outcomes = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let id = fields.next()?.parse().ok()?;
                let verdict = fields.next()?.to_string();
                let at = fields.next()?.parse().ok()?;
                Some((id, verdict, at))
            })
            .collect();
        WriteLog { outcomes }
    }

    pub fn acked(&self) -> BTreeSet<u64> {
        self.outcomes
            .iter()
            .filter(|(_, v, _)| v == "ack")
            .map(|(id, _, _)| *id)
            .collect()
    }

    pub fn acked_after(&self, since_ms: u128) -> Vec<u64> {
        self.outcomes
            .iter()
            .filter(|(_, v, at)| v == "ack" && *at > since_ms)
            .map(|(id, _, _)| *id)
            .collect()
    }

    /// The times of the acknowledged writes, in order.
    fn ack_times(&self) -> Vec<u128> {
        let mut acks: Vec<u128> = self
            .outcomes
            .iter()
            .filter(|(_, v, _)| v == "ack")
            .map(|(_, _, at)| *at)
            .collect();
        acks.sort();
        acks
    }

    /// The silences between consecutive acknowledged writes longer than
    /// `longer_than`, from the last acknowledgement before `from_ms` to the
    /// first after `until_ms`.
    pub fn silences(&self, from_ms: u128, until_ms: u128, longer_than: Duration) -> Vec<Duration> {
        let acks = self.ack_times();
        let start = acks.iter().rposition(|at| *at <= from_ms).unwrap_or(0);
        let end = acks
            .iter()
            .position(|at| *at >= until_ms)
            .unwrap_or(acks.len().saturating_sub(1));
        acks.get(start..=end)
            .unwrap_or_default()
            .windows(2)
            .map(|pair| Duration::from_millis((pair[1] - pair[0]) as u64))
            .filter(|gap| *gap > longer_than)
            .collect()
    }

    /// The write gap the fault caused: the longest time between two consecutive
    /// acknowledged writes, from the last one before `fault_ms` on. (A dying
    /// primary may still acknowledge a write or two after the fault, so the
    /// first acknowledgement after it does not mean the outage is over.)
    pub fn gap_around(&self, fault_ms: u128) -> Option<Duration> {
        let acks = self.ack_times();
        let start = acks.iter().rposition(|at| *at <= fault_ms)?;
        acks[start..]
            .windows(2)
            .map(|pair| Duration::from_millis((pair[1] - pair[0]) as u64))
            .max()
    }
}

/// What an observer saw through each of its targets.
#[derive(Debug, Default)]
pub struct Observations {
    /// Each answer `primary` (taking writes): from when the observer began
    /// to connect to when the answer came (ms). The state held at some
    /// moment in between.
    pub writable_windows: Vec<(u128, u128)>,
    /// Each answer `primary`: through which target, from which backend, and
    /// when the server answered (its clock, ms; else the observer's).
    pub primary_answers: Vec<(String, String, u128)>,
    pub rounds: usize,
}

/// Two answers closer than this (ms) were given at the same moment: an
/// observer asks its targets back to back, a few ms apart, ten times a
/// second, so a split lasting a round shows as answers this close; a
/// handover, whose old primary stops taking writes before the new one
/// starts, as answers further apart.
const SAME_MOMENT_MS: u128 = 20;

impl Observations {
    pub fn parse(text: &str) -> Observations {
        let mut observations = Observations::default();
        let mut rounds = BTreeSet::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(round) = fields.first().and_then(|f| f.parse::<u128>().ok()) else {
                continue;
            };
            rounds.insert(round);
            if fields.get(2) == Some(&"primary") {
                let backend = fields.get(3).unwrap_or(&"?").to_string();
                let at = |index: usize| fields.get(index).and_then(|f| f.parse::<u128>().ok());
                // A line of an older client has no window: its round, and the
                // sampling interval after it.
                let window = (at(4).unwrap_or(round), at(5).unwrap_or(round + 100));
                observations.writable_windows.push(window);
                let answered = at(6).or(at(5)).unwrap_or(round);
                observations
                    .primary_answers
                    .push((fields[1].to_string(), backend, answered));
            }
        }
        observations.rounds = rounds.len();
        observations
    }

    /// Moments at which two haproxies routed writes to two different
    /// backends, each answering as a primary taking writes: answers through
    /// two targets from two backends given within [`SAME_MOMENT_MS`] of each
    /// other by the servers' clocks. Not rounds: a round whose connection
    /// through one haproxy waited out a failover would pair the old
    /// primary's answer before it with the new one's after it.
    pub fn split_rounds(&self) -> Vec<(u128, BTreeMap<String, String>)> {
        let mut answers: Vec<&(String, String, u128)> = self.primary_answers.iter().collect();
        answers.sort_by_key(|(_, _, at)| *at);
        let mut splits: BTreeMap<u128, BTreeMap<String, String>> = BTreeMap::new();
        for (index, (target, backend, at)) in answers.iter().copied().enumerate() {
            let same_moment = answers[index + 1..]
                .iter()
                .take_while(|(_, _, other_at)| other_at - at < SAME_MOMENT_MS);
            for (other_target, other_backend, _) in same_moment.copied() {
                if target != other_target && backend != other_backend {
                    let moment = splits.entry(*at).or_default();
                    moment.insert(target.clone(), backend.clone());
                    moment.insert(other_target.clone(), other_backend.clone());
                }
            }
        }
        splits.into_iter().collect()
    }
}

/// The verdict of one scenario, printed by the tests and the benchmark.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    /// The longest silence of the writer through the VIP from the fault on.
    pub write_gap: Option<Duration>,
    /// Writes acknowledged, by every writer.
    pub acked: usize,
    /// Acknowledged writes missing at the end.
    pub lost: Vec<u64>,
    /// Rounds in which the two haproxies routed writes to two different nodes.
    pub split_rounds: usize,
    /// Moments both nodes may have taken writes at once.
    pub both_writable: usize,
    pub new_primary: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let gap = self
            .write_gap
            .map(|g| format!("{:.2} s", g.as_secs_f64()))
            .unwrap_or("-".into());
        write!(
            f,
            "{}: write gap {gap}, {} acknowledged, {} acknowledged-but-lost, {} split rounds, \
             {} both-writable moments, primary now {}",
            self.scenario,
            self.acked,
            self.lost.len(),
            self.split_rounds,
            self.both_writable,
            self.new_primary
        )
    }
}

/// Compares what was acknowledged with what is stored, after the clients stopped.
pub fn outcome(
    scenario: &str,
    cluster: &Cluster,
    seen: &Seen,
    fault_ms: u128,
    new_primary: &str,
) -> Outcome {
    let stored = cluster.stored_ids();
    let acked = seen.acked();
    Outcome {
        scenario: scenario.to_string(),
        write_gap: seen.writes[0].1.gap_around(fault_ms),
        acked: acked.len(),
        lost: acked.difference(&stored).copied().collect(),
        split_rounds: seen.haproxies.split_rounds().len(),
        both_writable: seen.both_writable().len(),
        new_primary: new_primary.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_gap_spans_the_fault() {
        let log = WriteLog::parse(
            "1 ack 1000 \n2 ack 1050 \n3 unknown 2050 x\n4 err 2100 y\n5 ack 3050 \n6 ack 3100 \n",
        );
        assert_eq!(log.gap_around(1060), Some(Duration::from_millis(2000)));
        // A write acknowledged just after the fault does not end the gap.
        assert_eq!(log.gap_around(1020), Some(Duration::from_millis(2000)));
        assert_eq!(log.acked(), BTreeSet::from([1, 2, 5, 6]));
        assert_eq!(log.gap_around(5000), None);
    }

    #[test]
    fn silences_are_counted_between_the_acknowledgements_around_a_window() {
        let log = WriteLog::parse(
            "1 ack 1000 \n2 ack 1050 \n3 ack 1400 \n4 ack 1450 \n5 ack 2450 \n6 ack 2500 \n7 ack 3500 \n",
        );
        let ms = Duration::from_millis;
        assert_eq!(log.silences(1060, 1500, ms(100)), [ms(350), ms(1000)]);
        assert_eq!(log.silences(1000, 1050, ms(100)), Vec::<Duration>::new());
        assert_eq!(log.silences(2460, 9000, ms(100)), [ms(1000)]);
    }

    #[test]
    fn both_nodes_writable_only_when_their_answers_overlap_in_time() {
        let seen = |first: &str, second: &str| Seen {
            writes: Vec::new(),
            haproxies: Observations::default(),
            nodes: vec![
                ("vm0".into(), Observations::parse(first)),
                ("vm1".into(), Observations::parse(second)),
            ],
        };
        // A handover: vm0 last answered as primary by 1010, vm1 first from 1130.
        let handover = seen(
            "1000 127.0.0.1:6432 primary 10.244.0.2 1002 1010\n1100 127.0.0.1:6432 readonly 10.244.0.2 1101 1105\n",
            "1000 127.0.0.1:6432 replica 10.244.0.3 1001 1004\n1100 127.0.0.1:6432 primary 10.244.0.3 1130 1140\n",
        );
        assert_eq!(handover.both_writable(), Vec::<u128>::new());
        let overlap = seen(
            "1000 127.0.0.1:6432 primary 10.244.0.2 1002 1010\n1100 127.0.0.1:6432 primary 10.244.0.2 1101 1150\n",
            "1100 127.0.0.1:6432 primary 10.244.0.3 1130 1140\n",
        );
        assert_eq!(overlap.both_writable(), [1130]);
    }

    #[test]
    fn two_backends_writable_in_one_round_is_a_split() {
        let observations = Observations::parse(
            "100 10.244.0.2:5432 primary 10.244.0.2\n100 10.244.0.3:5432 primary 10.244.0.2\n\
             200 10.244.0.2:5432 primary 10.244.0.2\n200 10.244.0.3:5432 primary 10.244.0.3\n\
             300 10.244.0.2:5432 down\n300 10.244.0.3:5432 replica 10.244.0.3\n",
        );
        assert_eq!(observations.rounds, 3);
        let splits = observations.split_rounds();
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0].0, 200);
    }

    #[test]
    fn a_round_that_waited_out_a_failover_or_a_handover_is_no_split_but_answers_at_one_moment_are()
    {
        // Through the first haproxy the old primary answered at 1002; the
        // connection through the second waited until the new one answered
        // at 1890.
        let failover = Observations::parse(
            "1000 10.244.0.2:5432 primary 10.244.0.2 1000 1003 1002\n\
             1000 10.244.0.3:5432 primary 10.244.0.3 1003 1895 1890\n",
        );
        assert_eq!(failover.split_rounds(), Vec::new());
        // A handover: the old primary's last answer, the new one's first 60 ms on.
        let handover = Observations::parse(
            "1000 10.244.0.2:5432 primary 10.244.0.2 1000 1003 1002\n\
             1000 10.244.0.3:5432 primary 10.244.0.3 1003 1065 1062\n",
        );
        assert_eq!(handover.split_rounds(), Vec::new());
        let split = Observations::parse(
            "1000 10.244.0.2:5432 primary 10.244.0.2 1000 1003 1002\n\
             1000 10.244.0.3:5432 primary 10.244.0.3 1003 1008 1006\n",
        );
        let splits = split.split_rounds();
        assert_eq!(splits.len(), 1, "{splits:?}");
        assert_eq!(splits[0].0, 1002);
        assert_eq!(splits[0].1.len(), 2);
    }
}

pub mod consensus;
pub mod scenarios;
pub mod split;
