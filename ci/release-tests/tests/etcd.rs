//! The etcd job: rendered by the director's library for a group of members
//! with certificates the bosh CLI generated, bad settings refused when it is
//! rendered, and a member run by the rendered scripts on the release's etcd.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use release_tests::vm::Vm;
use release_tests::{render, set, try_render, yaml, Rendered};
use serde_yaml::Value;
use testkit::{etcd_bin, free_port, Certificates};

const ETCD: [&str; 6] = ["instance_groups", "0", "jobs", "0", "properties", "etcd"];

/// A deployment of one etcd group of `ips.len()` members at those static IPs.
fn etcd_group(ips: &[&str], certificates: &Certificates) -> Value {
    let mut manifest = yaml(&format!(
        "
name: pg
instance_groups:
  - name: etcd
    instances: {}
    networks: [{{ name: default, static_ips: [{}] }}]
    jobs: [{{ name: etcd, properties: {{ etcd: {{}} }} }}]
",
        ips.len(),
        ips.join(", ")
    ));
    let mut tls = serde_yaml::Mapping::new();
    tls.insert("ca".into(), certificates.ca_pem.clone().into());
    tls.insert(
        "certificate".into(),
        certificates.server.certificate_pem.clone().into(),
    );
    tls.insert(
        "private_key".into(),
        certificates.server.private_key_pem.clone().into(),
    );
    set(&mut manifest, &property(&["tls"]), Value::Mapping(tls));
    manifest
}

fn property<'a>(tail: &[&'a str]) -> Vec<&'a str> {
    let mut full = ETCD.to_vec();
    full.extend_from_slice(tail);
    full
}

fn config(rendered: &Rendered) -> Value {
    serde_yaml::from_str(&rendered.file("etcd", "config/etcd.yml")).expect("etcd.yml is YAML")
}

fn assert_render_fails(manifest: &Value, expected: &str) {
    match try_render(manifest, "etcd/0") {
        Ok(_) => panic!("rendering succeeded; expected an error mentioning {expected:?}"),
        Err(message) => assert!(
            message.contains(expected),
            "expected {expected:?} in the error, got: {message}"
        ),
    }
}

#[test]
fn each_member_names_every_member_in_the_initial_cluster_and_serves_on_tls_only() {
    let certificates = Certificates::new();
    let manifest = etcd_group(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &certificates);
    let config = config(&render(&manifest, "etcd/1"));
    assert_eq!(config["name"], "etcd-1");
    assert_eq!(
        config["initial-cluster"],
        "etcd-0=https://10.0.0.1:2380,etcd-1=https://10.0.0.2:2380,etcd-2=https://10.0.0.3:2380"
    );
    assert_eq!(config["listen-client-urls"], "https://10.0.0.2:2379");
    assert_eq!(config["advertise-client-urls"], "https://10.0.0.2:2379");
    assert_eq!(config["listen-peer-urls"], "https://10.0.0.2:2380");
    assert_eq!(config["listen-metrics-urls"], "http://127.0.0.1:2381");
    assert_eq!(config["data-dir"], "/var/vcap/store/etcd");
    for side in ["client-transport-security", "peer-transport-security"] {
        assert_eq!(config[side]["client-cert-auth"], true, "{side}");
        assert_eq!(
            config[side]["trusted-ca-file"],
            "/var/vcap/jobs/etcd/config/tls/ca.pem"
        );
    }
}

#[test]
fn five_members_name_each_other() {
    let certificates = Certificates::new();
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    let manifest = etcd_group(&ips, &certificates);
    let config = config(&render(&manifest, "etcd/4"));
    assert_eq!(config["name"], "etcd-4");
    let expected: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(index, ip)| format!("etcd-{index}=https://{ip}:2380"))
        .collect();
    assert_eq!(config["initial-cluster"], expected.join(",").as_str());
}

#[test]
fn an_even_number_of_members_is_refused() {
    let certificates = Certificates::new();
    let manifest = etcd_group(&["10.0.0.1", "10.0.0.2"], &certificates);
    assert_render_fails(&manifest, "2 members: use an odd number");
}

#[test]
fn a_member_without_its_certificate_is_refused_naming_the_property() {
    let certificates = Certificates::new();
    let mut manifest = etcd_group(&["10.0.0.1"], &certificates);
    set(
        &mut manifest,
        &property(&["tls", "private_key"]),
        Value::Null,
    );
    assert_render_fails(&manifest, "etcd.tls.private_key is required");
}

#[test]
fn an_election_timeout_under_five_heartbeats_is_refused() {
    let certificates = Certificates::new();
    let mut manifest = etcd_group(&["10.0.0.1"], &certificates);
    set(
        &mut manifest,
        &property(&["heartbeat_interval"]),
        300.into(),
    );
    assert_render_fails(
        &manifest,
        "must be at least 5 times etcd.heartbeat_interval",
    );
}

/// One member at 127.0.0.1 on free ports, installed as a VM with the
/// release's etcd, etcdctl and curl-able metrics port.
fn member_vm(certificates: &Certificates, certificate_pem: Option<&str>) -> (Vm, u16) {
    let mut manifest = etcd_group(&["127.0.0.1"], certificates);
    let metrics_port = free_port();
    for (name, port) in [
        ("client_port", free_port()),
        ("peer_port", free_port()),
        ("metrics_port", metrics_port),
    ] {
        set(&mut manifest, &property(&[name]), u64::from(port).into());
    }
    if let Some(pem) = certificate_pem {
        set(
            &mut manifest,
            &property(&["tls", "certificate"]),
            pem.into(),
        );
    }
    let vm = Vm::install(&render(&manifest, "etcd/0"));
    let bin = vm.path("/var/vcap/packages/etcd/bin");
    fs::create_dir_all(&bin).unwrap();
    let etcd = fs::canonicalize(etcd_bin())
        .expect("the release's etcd (set ETCD_BIN or run ci/build-release)");
    for program in ["etcd", "etcdctl"] {
        symlink(etcd.with_file_name(program), bin.join(program)).unwrap();
    }
    (vm, metrics_port)
}

#[test]
fn the_rendered_scripts_start_a_member_that_serves_clients_over_tls_then_stop_it() {
    let certificates = Certificates::new();
    let (vm, _) = member_vm(&certificates, None);

    vm.run_ok("/var/vcap/jobs/etcd/bin/pre-start", &[], "/dev/null");
    let data_dir = fs::metadata(vm.path("/var/vcap/store/etcd")).unwrap();
    assert_eq!(data_dir.permissions().mode() & 0o777, 0o700);
    let vcap = testkit::RunAs::lookup("vcap").expect("the vcap user (.ci/run creates it)");
    assert_eq!(data_dir.uid(), vcap.uid, "the data dir belongs to vcap");

    let stop = StopOnDrop(&vm);
    vm.run_ok(
        "/var/vcap/jobs/etcd/bin/ctl",
        &["start"],
        "/var/vcap/sys/log/etcd/ctl.log",
    );
    vm.run_ok(
        "/var/vcap/jobs/etcd/bin/post-start",
        &[],
        "/var/vcap/sys/log/etcd/etcd.log",
    );
    assert_eq!(
        vm.sh("ps -o user= -p \"$(cat /var/vcap/sys/run/etcd/etcd.pid)\""),
        "vcap",
        "etcd runs as vcap"
    );

    // An operator's etcdctl, as the job's etcdctl.env sets it up.
    let etcdctl = ". /var/vcap/jobs/etcd/config/etcdctl.env && etcdctl";
    vm.sh(&format!("{etcdctl} put /probe written"));
    assert_eq!(
        vm.sh(&format!("{etcdctl} get --print-value-only /probe")),
        "written"
    );
    // Without a client certificate the member refuses the client.
    let anonymous = vm.run_shell(
        ". /var/vcap/jobs/etcd/config/etcdctl.env && unset ETCDCTL_CERT ETCDCTL_KEY && \
         etcdctl --command-timeout=3s get /probe",
    );
    assert!(
        !anonymous.status.success(),
        "a client without a certificate was served"
    );

    drop(stop);
    assert!(
        !vm.path("/var/vcap/sys/run/etcd/etcd.pid").exists(),
        "ctl stop leaves no pidfile"
    );
}

#[test]
fn pre_start_refuses_a_certificate_the_ca_did_not_sign() {
    let certificates = Certificates::new();
    let (vm, _) = member_vm(&certificates, Some(&certificates.foreign.certificate_pem));
    let output = vm.run("/var/vcap/jobs/etcd/bin/pre-start", &[]);
    assert!(
        !output.status.success(),
        "pre-start passed a foreign certificate"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("etcd.tls.certificate does not verify against etcd.tls.ca"),
        "{stderr}"
    );
}

/// Runs `bin/ctl stop` when dropped, so no failed assertion leaves etcd running.
struct StopOnDrop<'a>(&'a Vm);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run("/var/vcap/jobs/etcd/bin/ctl", &["stop"]);
    }
}
