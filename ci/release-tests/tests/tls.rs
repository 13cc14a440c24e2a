//! postgres.tls.*: the postgres job rendered with certificates the bosh CLI
//! generated, its files installed by bin/ctl, and real PostgreSQL serving
//! them; bad certificates refused when the job is rendered, naming the
//! property.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use release_tests::vm::Vm;
use release_tests::{example, render, set, try_render, yaml, Rendered};
use serde_yaml::Value;
use testkit::{command_as_user, free_port, pg_bin, run_as_user, CertFiles, Certificates};

const TLS: [&str; 6] = [
    "instance_groups",
    "0",
    "jobs",
    "0",
    "properties",
    "postgres",
];

/// The HA example with postgres.tls set from `server`'s files and `ca`,
/// `required` as given, and postgres.hba letting the test's own TCP
/// connections from loopback in without a password.
fn with_tls(server: &CertFiles, ca: &str, required: bool) -> Value {
    let mut manifest = example("ha");
    let mut tls = serde_yaml::Mapping::new();
    tls.insert("certificate".into(), server.certificate_pem.clone().into());
    tls.insert("private_key".into(), server.private_key_pem.clone().into());
    tls.insert("ca".into(), ca.into());
    tls.insert("required".into(), required.into());
    set(&mut manifest, &path(&["tls"]), Value::Mapping(tls));
    set(
        &mut manifest,
        &path(&["hba"]),
        yaml("[host all all 127.0.0.1/32 trust, host replication all 127.0.0.1/32 trust]"),
    );
    manifest
}

fn path<'a>(tail: &[&'a str]) -> Vec<&'a str> {
    let mut full = TLS.to_vec();
    full.extend_from_slice(tail);
    full
}

fn assert_render_fails(manifest: &Value, expected: &[&str]) {
    match try_render(manifest, "postgres/0") {
        Ok(_) => panic!("rendering succeeded; expected an error mentioning {expected:?}"),
        Err(message) => {
            for words in expected {
                assert!(
                    message.contains(words),
                    "expected {words:?} in the error, got: {message}"
                );
            }
        }
    }
}

#[test]
fn tls_turns_ssl_on_puts_the_nodes_on_hostssl_and_verifies_them_with_verify_full() {
    let certs = Certificates::new();
    let node = render(&with_tls(&certs.server, &certs.ca_pem, false), "postgres/0");
    let conf = node.file("postgres", "config/postgresql.conf");
    for line in [
        "ssl = on",
        "ssl_cert_file = '/var/vcap/sys/run/postgres/tls/server.crt'",
        "ssl_key_file = '/var/vcap/sys/run/postgres/tls/server.key'",
        "ssl_ca_file = '/var/vcap/sys/run/postgres/tls/ca.pem'",
    ] {
        assert!(conf.lines().any(|l| l == line), "missing {line:?}:\n{conf}");
    }
    let hba = node.file("postgres", "config/hba.conf");
    for node_address in ["10.244.0.2/32", "10.244.0.3/32"] {
        for database in ["replication", "postgres"] {
            let line = format!("hostssl {database} replication {node_address} scram-sha-256");
            assert!(hba.contains(&line), "missing {line:?}:\n{hba}");
        }
    }
    assert!(!hba.contains("hostnossl"), "TLS not required:\n{hba}");
    assert_eq!(
        node.file("postgres", "config/tls/certificate.pem").trim(),
        certs.server.certificate_pem.trim()
    );

    let required = render(&with_tls(&certs.server, &certs.ca_pem, true), "postgres/0");
    let hba = required.file("postgres", "config/hba.conf");
    let first_network_line = hba
        .lines()
        .find(|line| line.starts_with("host"))
        .expect("a host line");
    assert_eq!(
        first_network_line, "hostnossl all all all reject",
        "the refusal must come before every other line:\n{hba}"
    );
    assert!(
        hba.contains("hostnossl replication all all reject"),
        "{hba}"
    );

    let env = node.file("postgres", "config/node.env");
    assert!(env.contains("  PGSSLMODE=verify-full\n"), "{env}");
    // The first of the two deploys that turn TLS on in a running pair.
    let mut preferring = with_tls(&certs.server, &certs.ca_pem, false);
    set(
        &mut preferring,
        &path(&["tls", "verify_peers"]),
        false.into(),
    );
    let env = render(&preferring, "postgres/0").file("postgres", "config/node.env");
    assert!(env.contains("  PGSSLMODE=prefer\n"), "{env}");

    let plain = render(&example("ha"), "postgres/0");
    let conf = plain.file("postgres", "config/postgresql.conf");
    assert!(!conf.contains("ssl"), "{conf}");
    assert!(!plain
        .file("postgres", "config/hba.conf")
        .contains("hostssl"));
}

#[test]
fn bad_certificates_are_refused_at_render_time_naming_the_property() {
    let certs = Certificates::new();
    let good = || with_tls(&certs.server, &certs.ca_pem, true);

    let mut manifest = good();
    set(&mut manifest, &path(&["tls", "private_key"]), Value::Null);
    assert_render_fails(&manifest, &["postgres.tls.private_key is missing"]);

    let mut manifest = good();
    set(
        &mut manifest,
        &path(&["tls", "private_key"]),
        certs.wrong_name.private_key_pem.clone().into(),
    );
    assert_render_fails(
        &manifest,
        &["postgres.tls.private_key is not the key of postgres.tls.certificate"],
    );

    let mut manifest = good();
    let truncated = &certs.server.certificate_pem[..certs.server.certificate_pem.len() / 2];
    set(
        &mut manifest,
        &path(&["tls", "certificate"]),
        format!("{truncated}\n-----END CERTIFICATE-----\n").into(),
    );
    assert_render_fails(
        &manifest,
        &["postgres.tls.certificate is not a valid PEM certificate"],
    );

    let mut manifest = good();
    set(
        &mut manifest,
        &path(&["tls", "ca"]),
        "not a certificate".into(),
    );
    assert_render_fails(&manifest, &["postgres.tls.ca holds no PEM certificate"]);

    let mut manifest = good();
    set(
        &mut manifest,
        &path(&["tls", "private_key"]),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".into(),
    );
    assert_render_fails(
        &manifest,
        &["postgres.tls.private_key is not a valid PEM private key"],
    );

    // Signed by another CA, and expired: what the nodes would refuse each
    // other with after the deploy.
    let foreign = with_tls(&certs.foreign, &certs.ca_pem, true);
    assert_render_fails(
        &foreign,
        &["postgres.tls.certificate does not verify against postgres.tls.ca"],
    );
    let expired = with_tls(&certs.expired, &certs.ca_pem, true);
    assert_render_fails(&expired, &["certificate has expired"]);

    let mut manifest = example("ha");
    set(&mut manifest, &path(&["tls", "required"]), true.into());
    assert_render_fails(
        &manifest,
        &["postgres.tls.required needs postgres.tls.certificate"],
    );

    let mut manifest = good();
    set(
        &mut manifest,
        &path(&["tls", "verify_peers"]),
        "sometimes".into(),
    );
    assert_render_fails(
        &manifest,
        &["postgres.tls.verify_peers must be true or false"],
    );
}

#[test]
fn no_error_names_any_part_of_the_key() {
    let certs = Certificates::new();
    let mut manifest = with_tls(&certs.server, &certs.ca_pem, true);
    let key = certs.wrong_name.private_key_pem.clone();
    set(
        &mut manifest,
        &path(&["tls", "private_key"]),
        key.clone().into(),
    );
    let message = try_render(&manifest, "postgres/0")
        .err()
        .expect("a mismatched key");
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        assert!(
            !message.contains(line),
            "the error holds the key: {message}"
        );
    }
}

/// Runs a PostgreSQL program of the host as the test user.
fn as_user(program: &str, configure: impl FnOnce(&mut Command)) -> Output {
    let mut command = command_as_user(&pg_bin().path(program));
    configure(&mut command);
    command.output().expect("cannot run a PostgreSQL program")
}

/// A psql query over TCP on `port` with `conninfo`'s TLS keywords.
fn psql(port: u16, conninfo: &str, sql: &str) -> Output {
    Command::new(pg_bin().path("psql"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg(format!(
            "host=127.0.0.1 port={port} user=vcap dbname=postgres connect_timeout=5 {conninfo}"
        ))
        .args(["-XAtc", sql])
        .output()
        .expect("cannot run psql")
}

/// The real PostgreSQL on the rendered config, the TLS files where bin/ctl
/// put them; stopped when dropped.
struct Served<'a> {
    vm: &'a Vm,
    port: u16,
}

impl Served<'_> {
    fn start(vm: &Vm) -> Served<'_> {
        let data = vm.path("/var/vcap/store/postgres/db");
        let initdb = as_user("initdb", |c| {
            c.arg("--pgdata").arg(&data).args([
                "--username",
                "vcap",
                "--auth",
                "trust",
                "--no-sync",
            ]);
        });
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        let port = free_port();
        let options = format!(
            "-c config_file={} -c port={port} -c listen_addresses=127.0.0.1",
            vm.path("/var/vcap/jobs/postgres/config/postgresql.conf")
                .display()
        );
        let log = vm.path("/var/vcap/sys/log/postgres/postgresql.log");
        let start = as_user("pg_ctl", |c| {
            c.arg("--pgdata").arg(&data).arg("--log").arg(&log);
            c.args(["-o", &options, "--wait", "--timeout", "60", "start"]);
        });
        assert!(
            start.status.success(),
            "postgres did not start on the rendered TLS config: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        Served { vm, port }
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        let data = self.vm.path("/var/vcap/store/postgres/db");
        let _ = as_user("pg_ctl", |c| {
            c.arg("--pgdata")
                .arg(&data)
                .args(["--mode", "immediate", "--wait", "stop"]);
        });
    }
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    let metadata = fs::metadata(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    (metadata.permissions().mode() & 0o777, metadata.uid())
}

#[test]
fn ctl_installs_the_key_for_postgres_alone_and_postgres_serves_tls_only() {
    let certs = Certificates::new();
    let rendered: Rendered = render(&with_tls(&certs.server, &certs.ca_pem, true), "postgres/1");
    let vm = Vm::install(&rendered);
    vm.start_postgres();

    let vcap = run_as_user()
        .expect("the tests run as root with a vcap user")
        .uid;
    let tls = "/var/vcap/sys/run/postgres/tls";
    assert_eq!(
        mode_and_owner(&vm.path(&format!("{tls}/server.key"))),
        (0o600, vcap)
    );
    assert_eq!(
        mode_and_owner(&vm.path(&format!("{tls}/server.crt"))),
        (0o600, vcap)
    );
    assert_eq!(
        mode_and_owner(&vm.path(&format!("{tls}/ca.pem"))),
        (0o644, vcap)
    );
    // pg-bootstrap (its clone, its rewind, primary_conninfo) verifies the peer.
    let env = vm.env("/var/vcap/packages/pg-tools/bin/pg-bootstrap");
    assert!(
        env.contains(&"PGSSLMODE=verify-full".to_string()),
        "{env:?}"
    );
    assert!(
        env.contains(&format!("PGSSLROOTCERT={tls}/ca.pem")),
        "{env:?}"
    );

    let served = Served::start(&vm);
    let ca = vm.path(&format!("{tls}/ca.pem"));
    let verified = psql(
        served.port,
        &format!("sslmode=verify-full sslrootcert={}", ca.display()),
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(
        String::from_utf8_lossy(&verified.stdout).trim(),
        "t",
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let plain = psql(served.port, "sslmode=disable", "SELECT 1");
    assert!(!plain.status.success());
    let refusal = String::from_utf8_lossy(&plain.stderr);
    assert!(refusal.contains("no encryption"), "{refusal}");

    // A deploy without TLS leaves no key behind.
    drop(served);
    let plain_vm = Vm::install(&render(&example("ha"), "postgres/1"));
    fs::create_dir_all(plain_vm.path(tls)).unwrap();
    fs::write(plain_vm.path(&format!("{tls}/server.key")), "old").unwrap();
    plain_vm.start_postgres();
    assert!(
        !plain_vm.path(tls).exists(),
        "an earlier deploy's key was left"
    );
    let env = plain_vm.env("/var/vcap/packages/pg-tools/bin/pg-bootstrap");
    assert!(!env.iter().any(|v| v.starts_with("PGSSL")), "{env:?}");
}
