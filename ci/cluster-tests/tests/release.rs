//! The local cluster runs what BOSH would install: the packages of the
//! compiled release (ci/build-release), not this machine's programs. Needs
//! root, as the fault matrix does.

use cluster_tests::Cluster;

/// Run inside a VM: `ldd` of every ELF file in every installed package, one
/// line each: `ok PATH` or `missing PATH: LIBRARY`; and `libpq PATH => WHERE`
/// (the real path of the libpq it loads).
const LDD_EVERY_PACKAGE: &str = r#"
for file in $(find -L /var/vcap/packages/ -type f); do
  [ "$(head -c 4 "$file" | tail -c 3)" = ELF ] || continue
  libraries=$(ldd "$file" 2>&1) || { echo "ok $file (static)"; continue; }
  if echo "$libraries" | grep -q "not found"; then
    echo "$libraries" | grep "not found" | sed "s|^|missing $file: |"
  else
    echo "ok $file"
  fi
  for library in $(echo "$libraries" | sed -n "s|.*libpq.so[^ ]* => \([^ ]*\) .*|\1|p"); do
    echo "libpq $file => $(readlink -f "$library")"
  done
done
"#;

/// Run inside a VM: `MODE:OWNER:GROUP PATH` of every file of every job.
const JOB_FILE_MODES: &str = "find -L /var/vcap/jobs/ -type f -exec stat -c '%a:%U:%G %n' {} +";

#[test]
fn the_vms_run_the_packages_the_bosh_agent_compiled() {
    let cluster = Cluster::up(true);

    let version = cluster.check(&[
        "exec",
        "vm0",
        "/var/vcap/packages/postgres/bin/postgres",
        "--version",
    ]);
    assert!(
        version.contains("(PostgreSQL) 18."),
        "expected the packaged PostgreSQL 18, got {version:?}"
    );
    let installed = cluster.check(&[
        "exec",
        "vm0",
        "readlink",
        "-f",
        "/var/vcap/packages/postgres",
    ]);
    assert!(
        installed.starts_with("/var/vcap/data/packages/postgres/"),
        "the package is installed as the agent installs it, got {installed:?}"
    );

    let haproxy = cluster.check(&[
        "exec",
        "vm0",
        "/var/vcap/packages/haproxy/bin/haproxy",
        "-vv",
    ]);
    for feature in [
        "HAProxy version 3.0.",
        "Built with OpenSSL",
        "Built with PCRE2",
        "Built with the Prometheus exporter",
    ] {
        assert!(
            haproxy.contains(feature),
            "haproxy -vv lacks {feature:?}:\n{haproxy}"
        );
    }
    let keepalived = cluster.run(&[
        "exec",
        "vm0",
        "/var/vcap/packages/keepalived/sbin/keepalived",
        "--version",
    ]);
    let keepalived = String::from_utf8_lossy(&keepalived.stderr).to_string()
        + &String::from_utf8_lossy(&keepalived.stdout);
    assert!(keepalived.contains("Keepalived v2.3."), "{keepalived}");

    for vm in ["vm0", "vm1"] {
        // Job files as the agent installs them: root:vcap, bin/ 0750, the rest
        // 0640, secrets included (haproxy's stats password, the passwords).
        let modes = cluster.check(&["exec", vm, "sh", "-c", JOB_FILE_MODES]);
        let files: Vec<&str> = modes.lines().collect();
        assert!(
            files.len() >= 15,
            "{vm}: only {} job files:\n{modes}",
            files.len()
        );
        for line in &files {
            let (mode, path) = line.split_once(' ').expect("mode and path");
            let expected = if path.contains("/bin/") { "750" } else { "640" };
            assert_eq!(mode, format!("{expected}:root:vcap"), "{vm}: {path}");
        }
        assert!(
            modes.contains("/vip/config/haproxy.cfg")
                && modes.contains("/config/replication.password"),
            "{vm}: the secret files were not listed:\n{modes}"
        );

        let report = cluster.check(&["exec", vm, "sh", "-c", LDD_EVERY_PACKAGE]);
        let missing: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("missing "))
            .collect();
        assert!(
            missing.is_empty(),
            "{vm}: unresolved libraries:\n{}",
            missing.join("\n")
        );
        let checked = report.lines().filter(|l| l.starts_with("ok ")).count();
        // postgres alone has some forty programs and libraries.
        assert!(
            checked >= 40,
            "{vm}: only {checked} ELF files checked:\n{report}"
        );
        for program in [
            "pg-role-check",
            "pg-bootstrap",
            "pg-monitor",
            "pg-vrrp-watch",
        ] {
            assert!(
                report.contains(&format!("ok /var/vcap/packages/pg-tools/bin/{program}")),
                "{vm}: {program} is not in the pg-tools package:\n{report}"
            );
        }
        // The programs link the package's own libpq, not the host's.
        let libpq: Vec<&str> = report.lines().filter(|l| l.starts_with("libpq ")).collect();
        assert!(!libpq.is_empty(), "{vm}: nothing links libpq:\n{report}");
        for line in libpq {
            assert!(
                line.contains("=> /var/vcap/data/packages/postgres/"),
                "{vm}: libpq from outside the package: {line}"
            );
        }
    }
}
