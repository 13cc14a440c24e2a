//! `pg-role-check` over TLS, with certificates the bosh CLI generated: the
//! libpq variables decide, and a certificate that does not verify is refused
//! at once with an error that says why.

use std::path::Path;
use std::process::Command;

use testkit::{clean_command, CertFiles, Certificates, Node, NodeOptions};

/// A primary serving `server`'s certificate that refuses every TCP
/// connection without TLS (as the postgres job's hba does with
/// postgres.tls.required).
fn tls_only_primary(certs: &Certificates, server: &CertFiles) -> Node {
    Node::primary_with(
        NodeOptions::new()
            .tls(server, &certs.ca)
            .hba_line("hostnossl all all 127.0.0.1/32 reject"),
    )
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Probes `node` over TCP with the TLS variables given.
fn check(node: &Node, tls: &[(&str, &Path)]) -> Run {
    let mut command: Command = clean_command(Path::new(env!("CARGO_BIN_EXE_pg-role-check")), &[]);
    command.args([
        "--host",
        "127.0.0.1",
        "--port",
        &node.port().to_string(),
        "--user",
        "postgres",
        "--dbname",
        "postgres",
        "--retries",
        "3",
    ]);
    for (name, value) in tls {
        command.env(name, value);
    }
    let output = command.output().expect("cannot run pg-role-check");
    Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

fn verify_full(certs: &Certificates) -> Vec<(&'static str, &Path)> {
    vec![
        ("PGSSLMODE", Path::new("verify-full")),
        ("PGSSLROOTCERT", certs.ca.as_path()),
    ]
}

fn assert_refused_saying(run: &Run, words: &str, what: &str) {
    assert_eq!(run.code, 3, "{what}: {} / {}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(words) || run.stderr.contains(words),
        "{what}: the error should say '{words}': {} / {}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_verified_check_passes_and_a_check_without_tls_is_refused() {
    let certs = Certificates::new();
    let primary = tls_only_primary(&certs, &certs.server);

    let run = check(&primary, &verify_full(&certs));
    assert_eq!(run.code, 0, "verify-full: {} / {}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("primary "), "{}", run.stdout);

    // Without the variables pg-role-check prefers TLS, as libpq does.
    assert_eq!(check(&primary, &[]).code, 0);

    let plain = check(&primary, &[("PGSSLMODE", Path::new("disable"))]);
    assert_refused_saying(
        &plain,
        "no encryption",
        "sslmode=disable against hostnossl reject",
    );
}

#[test]
fn a_certificate_for_another_address_fails_verify_full_saying_so() {
    let certs = Certificates::new();
    let primary = tls_only_primary(&certs, &certs.wrong_name);

    let run = check(&primary, &verify_full(&certs));
    assert_refused_saying(&run, "IP address mismatch", "a certificate for 10.9.9.9");
    // The chain itself is good: verify-ca, which does not check the name, passes.
    let verify_ca = check(
        &primary,
        &[
            ("PGSSLMODE", Path::new("verify-ca")),
            ("PGSSLROOTCERT", certs.ca.as_path()),
        ],
    );
    assert_eq!(verify_ca.code, 0, "verify-ca: {}", verify_ca.stderr);
}

#[test]
fn an_expired_certificate_fails_saying_so() {
    let certs = Certificates::new();
    let primary = tls_only_primary(&certs, &certs.expired);
    let run = check(&primary, &verify_full(&certs));
    assert_refused_saying(&run, "certificate has expired", "an expired certificate");
}

#[test]
fn a_certificate_from_another_ca_fails_and_only_unverified_modes_accept_it() {
    let certs = Certificates::new();
    let primary = tls_only_primary(&certs, &certs.foreign);
    let run = check(&primary, &verify_full(&certs));
    assert_refused_saying(
        &run,
        "certificate verify failed",
        "another CA's certificate",
    );
    // require with no root certificate encrypts without authenticating, as libpq's.
    let require = check(&primary, &[("PGSSLMODE", Path::new("require"))]);
    assert_eq!(require.code, 0, "require: {}", require.stderr);
}

#[test]
fn settings_that_cannot_work_are_refused_naming_the_variable() {
    let certs = Certificates::new();
    let primary = tls_only_primary(&certs, &certs.server);

    let no_root = check(&primary, &[("PGSSLMODE", Path::new("verify-full"))]);
    assert_refused_saying(
        &no_root,
        "PGSSLROOTCERT",
        "verify-full without a root certificate",
    );

    let missing = check(
        &primary,
        &[
            ("PGSSLMODE", Path::new("verify-full")),
            ("PGSSLROOTCERT", Path::new("/nonexistent/ca.pem")),
        ],
    );
    assert_refused_saying(
        &missing,
        "/nonexistent/ca.pem",
        "a root certificate that is not there",
    );

    let bad_mode = check(&primary, &[("PGSSLMODE", Path::new("verify_full"))]);
    assert_refused_saying(&bad_mode, "PGSSLMODE", "a misspelt mode");
}

#[test]
fn a_server_without_tls_is_refused_when_the_mode_requires_it_and_used_when_it_prefers() {
    let plain = Node::primary();
    let required = check(&plain, &[("PGSSLMODE", Path::new("require"))]);
    assert_refused_saying(
        &required,
        "does not take TLS, which sslmode=require requires",
        "require against a server without TLS",
    );
    assert_eq!(check(&plain, &[("PGSSLMODE", Path::new("prefer"))]).code, 0);
}
