//! A real etcd cluster for tests: N members on loopback, TLS between members
//! and to clients (client certificates required), as the release's etcd job
//! configures them, from the etcd the release packages.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::os::free_port;
use crate::tls::Certificates;

/// The etcd binary: `ETCD_BIN` (ci/test sets the release's compiled
/// package), else the package ci/build-release unpacked in this workspace,
/// else `etcd` on PATH.
pub fn etcd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bosh-release/packages/etcd/bin/etcd");
    if built.exists() {
        return built;
    }
    PathBuf::from("etcd")
}

/// How often [`EtcdCluster::start`] tries before it gives up.
const START_ATTEMPTS: usize = 3;

/// One member: its ports and, while it runs, its process.
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
    stopped: bool,
}

impl EtcdMember {
    /// `127.0.0.1:<client port>`: the endpoint clients use.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The cluster, in a temp dir; every member is killed (by pid) when dropped.
pub struct EtcdCluster {
    dir: TempDir,
    pub members: Vec<EtcdMember>,
    ca: PathBuf,
    certificate: PathBuf,
    private_key: PathBuf,
}

impl EtcdCluster {
    /// Starts `size` members with `certificates.server` (it names 127.0.0.1
    /// and serves both ends) and waits until the cluster has a leader.
    ///
    /// Free ports are found by binding and letting go, and another test may
    /// take one in between: a cluster that does not come up is stopped and
    /// started again, on new ports and empty data directories, up to three times.
    pub fn start(size: usize, certificates: &Certificates) -> EtcdCluster {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::on_free_ports(size, certificates);
            for index in 0..size {
                cluster.start_member(index);
            }
            match cluster.healthy_within(Duration::from_secs(20)) {
                Ok(()) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "etcd did not come up in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    fn on_free_ports(size: usize, certificates: &Certificates) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("etcd.")
            .tempdir()
            .expect("cannot create a temp dir");
        let members = (0..size)
            .map(|index| EtcdMember {
                name: format!("member-{index}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                child: None,
                stopped: false,
            })
            .collect();
        EtcdCluster {
            dir,
            members,
            ca: certificates.ca.clone(),
            certificate: certificates.server.certificate.clone(),
            private_key: certificates.server.private_key.clone(),
        }
    }

    /// Every member's client endpoint, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// The CA and the client certificate and key a test's client uses.
    pub fn client_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.ca.clone(),
            self.certificate.clone(),
            self.private_key.clone(),
        )
    }

    /// Starts (or restarts) member `index` on its data dir.
    pub fn start_member(&mut self, index: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=https://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[index];
        let data_dir = self.dir.path().join(&member.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("cannot open the member's log");
        let tls = |flag: &str, path: &PathBuf| format!("--{flag}={}", path.display());
        let child = Command::new(etcd_bin())
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!(
                "--listen-client-urls=https://127.0.0.1:{}",
                member.client_port
            ))
            .arg(format!(
                "--advertise-client-urls=https://127.0.0.1:{}",
                member.client_port
            ))
            .arg(format!(
                "--listen-peer-urls=https://127.0.0.1:{}",
                member.peer_port
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=https://127.0.0.1:{}",
                member.peer_port
            ))
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                member.metrics_port
            ))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=testkit")
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000")
            .arg("--client-cert-auth")
            .arg(tls("trusted-ca-file", &self.ca))
            .arg(tls("cert-file", &self.certificate))
            .arg(tls("key-file", &self.private_key))
            .arg("--peer-client-cert-auth")
            .arg(tls("peer-trusted-ca-file", &self.ca))
            .arg(tls("peer-cert-file", &self.certificate))
            .arg(tls("peer-key-file", &self.private_key))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start etcd ({}; set ETCD_BIN or run ci/build-release): {err}",
                    etcd_bin().display()
                )
            });
        let member = &mut self.members[index];
        member.child = Some(child);
        member.stopped = false;
    }

    /// SIGKILLs member `index` (a crash); its data stays for a restart.
    pub fn kill_member(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs member `index`: it holds its connections and answers nothing,
    /// as a partitioned or hung member does.
    pub fn freeze_member(&mut self, index: usize) {
        self.signal(index, "-STOP");
        self.members[index].stopped = true;
    }

    /// SIGCONTs what [`freeze_member`](Self::freeze_member) stopped.
    pub fn thaw_member(&mut self, index: usize) {
        self.signal(index, "-CONT");
        self.members[index].stopped = false;
    }

    fn signal(&self, index: usize, signal: &str) {
        let pid = self.members[index].pid().expect("the member does not run");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Whether member `index` answers /health with a leader (consensus).
    pub fn member_healthy(&self, index: usize) -> bool {
        let port = self.members[index].metrics_port;
        Command::new("curl")
            .args(["--silent", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}/health"))
            .output()
            .is_ok_and(|output| {
                String::from_utf8_lossy(&output.stdout).contains("\"health\":\"true\"")
            })
    }

    /// Waits until every running member reports a healthy cluster.
    pub fn wait_healthy(&self) {
        if let Err(failure) = self.healthy_within(Duration::from_secs(30)) {
            panic!("{failure}");
        }
    }

    /// Every running member healthy within `bound`, or which one is not and
    /// the end of its log.
    fn healthy_within(&self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        for index in 0..self.members.len() {
            if self.members[index].child.is_none() {
                continue;
            }
            while !self.member_healthy(index) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd {} not healthy after {bound:?}; its log ends:\n{}",
                        self.members[index].name,
                        self.log_tail(index)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The last lines of member `index`'s log, for failure messages.
    pub fn log_tail(&self, index: usize) -> String {
        let path = self
            .dir
            .path()
            .join(format!("{}.log", self.members[index].name));
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                if member.stopped {
                    let _ = Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
