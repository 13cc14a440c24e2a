//! The real bosh CLI generates the `--tls` and etcd variables: `bosh int --vars-store`
//! runs the same certificate generator as the director's config server, so
//! it proves the `variables` entries are ones BOSH accepts, and that the
//! certificate it makes names the nodes' static IPs and the VIP.
//!
//! The bosh CLI is `BOSH_BIN` (as for ci/testkit), else `bosh` on PATH
//! (.ci/run puts BOSH's own tools there); openssl reads the certificate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;

fn bosh() -> PathBuf {
    std::env::var_os("BOSH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bosh"))
}

/// Runs a tool in `dir`; its stdout, or a panic that shows its stderr.
fn run(tool: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} exited {:?}: {}{}",
        tool.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn bosh_generates_a_certificate_naming_the_static_ips_and_the_vip() {
    let (bosh, openssl) = (bosh(), PathBuf::from("openssl"));
    let overlay = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/static-ips.yml");
    let cases: [(&[&str], [&str; 3]); 2] = [
        (
            &["warden", "--ha", "--vip", "10.244.232.100", "--tls"],
            ["10.244.232.10", "10.244.232.11", "10.244.232.100"],
        ),
        (
            &["aws-ec2", "--ha", "--vip", "10.0.16.100", "--tls", overlay],
            ["10.0.16.10", "10.0.16.11", "10.0.16.100"],
        ),
    ];
    for (args, addresses) in cases {
        let scratch = Scratch::new();
        let dir = scratch.dir.path();
        scratch.ok(&[args, &["-o", "out"]].concat());
        run(
            &bosh,
            &["int", "--vars-store", "creds.yml", "out/manifest.yml"],
            dir,
        );
        // What an operator runs for the CA (make-manifest --help, README).
        let ca = run(
            &bosh,
            &["int", "creds.yml", "--path", "/postgres_tls/ca"],
            dir,
        );
        let certificate = run(
            &bosh,
            &["int", "creds.yml", "--path", "/postgres_tls/certificate"],
            dir,
        );
        scratch.file("ca.pem", &ca);
        scratch.file("certificate.pem", &certificate);

        let text = extension(dir, "subjectAltName", "certificate.pem");
        let names = subject_alternative_names(&text);
        for address in addresses {
            assert!(
                names.contains(&format!("IP Address:{address}")),
                "{args:?}: the certificate should name {address}: {names:?}"
            );
        }
        assert!(
            names.contains(&"DNS:*.postgres.postgres1.postgres.bosh".to_string()),
            "{args:?}: {names:?}"
        );
        let usage = extension(dir, "extendedKeyUsage", "certificate.pem");
        assert!(
            usage.contains("TLS Web Server Authentication")
                && usage.contains("TLS Web Client Authentication"),
            "{args:?}: {usage}"
        );
        run(
            &openssl,
            &["verify", "-CAfile", "ca.pem", "certificate.pem"],
            dir,
        );
    }
}

/// openssl's text of the X.509 extension `name` of the certificate `file` in `dir`.
fn extension(dir: &Path, name: &str, file: &str) -> String {
    run(
        Path::new("openssl"),
        &["x509", "-noout", "-ext", name, "-in", file],
        dir,
    )
}

/// `DNS:a, IP Address:10.0.0.1` under openssl's "X509v3 Subject Alternative
/// Name:" line, one name each.
fn subject_alternative_names(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|line| !line.contains("Subject Alternative Name"))
        .skip(1)
        .flat_map(|line| line.split(','))
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn bosh_generates_the_etcd_certificates_naming_the_members_static_ips() {
    let (bosh, openssl) = (bosh(), PathBuf::from("openssl"));
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    scratch.ok(&[
        "warden",
        "--ha",
        "--vip",
        "10.244.232.100",
        "--instances",
        "3",
        "-o",
        "out",
    ]);
    run(
        &bosh,
        &["int", "--vars-store", "creds.yml", "out/manifest.yml"],
        dir,
    );
    for (file, path) in [
        ("ca.pem", "/etcd_ca/certificate"),
        ("member.pem", "/etcd_member/certificate"),
        ("client.pem", "/etcd_client/certificate"),
    ] {
        scratch.file(
            file,
            &run(&bosh, &["int", "creds.yml", "--path", path], dir),
        );
    }
    let member = extension(dir, "subjectAltName", "member.pem");
    let mut names = subject_alternative_names(&member);
    names.sort();
    assert_eq!(
        names,
        [
            "DNS:*.etcd.postgres1.postgres.bosh",
            "IP Address:10.244.232.10",
            "IP Address:10.244.232.11",
            "IP Address:10.244.232.12",
        ]
    );
    let usage = |file: &str| extension(dir, "extendedKeyUsage", file);
    let (member_usage, client_usage) = (usage("member.pem"), usage("client.pem"));
    assert!(
        member_usage.contains("TLS Web Server Authentication")
            && member_usage.contains("TLS Web Client Authentication"),
        "members serve clients and each other: {member_usage}"
    );
    assert!(
        client_usage.contains("TLS Web Client Authentication")
            && !client_usage.contains("TLS Web Server Authentication"),
        "the postgres nodes' certificate is a client's only: {client_usage}"
    );
    for file in ["member.pem", "client.pem"] {
        run(&openssl, &["verify", "-CAfile", "ca.pem", file], dir);
    }
}
