//! Golden files: the exact manifest and cloud-config for each IaaS ×
//! topology, under tests/golden/<case>/. A change to a template shows up
//! here as a diff to review.
//!
//! After an intended change, regenerate them and review the diff:
//!
//!     UPDATE_GOLDEN=1 cargo test -p make-manifest --test golden

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{read, Scratch};
use serde_yaml::Value;

/// (case directory, make-manifest arguments); overlay paths are relative to
/// tests/fixtures.
const CASES: &[(&str, &[&str])] = &[
    ("warden-standalone", &["warden"]),
    (
        "warden-clustered",
        &["warden", "--replication", "--instances", "3"],
    ),
    ("warden-ha", &["warden", "--ha", "--vip", "10.244.232.100"]),
    ("aws-ec2-standalone", &["aws-ec2"]),
    (
        "aws-ec2-clustered",
        &["aws-ec2", "--replication", "--instances", "3"],
    ),
    ("aws-ec2-ha", &["aws-ec2", "--ha", "--vip", "10.0.16.100"]),
    ("openstack-nova-standalone", &["openstack-nova"]),
    (
        "openstack-nova-clustered",
        &["openstack-nova", "--replication", "--instances", "3"],
    ),
    (
        "openstack-nova-ha",
        &["openstack-nova", "--ha", "--vip", "10.0.16.100"],
    ),
    // Required TLS: the nodes' static IPs, the certificate naming them.
    (
        "warden-ha-tls",
        &["warden", "--ha", "--vip", "10.244.232.100", "--tls"],
    ),
    (
        "aws-ec2-ha-tls",
        &[
            "aws-ec2",
            "--ha",
            "--vip",
            "10.0.16.100",
            "--tls",
            "FIXTURES/static-ips.yml",
        ],
    ),
    // Three nodes: failover through an etcd store of three members, whose
    // certificates name their static IPs.
    (
        "warden-ha-etcd",
        &[
            "warden",
            "--ha",
            "--vip",
            "10.244.232.100",
            "--instances",
            "3",
        ],
    ),
    (
        "aws-ec2-ha-etcd-tls",
        &[
            "aws-ec2",
            "--ha",
            "--vip",
            "10.0.16.100",
            "--instances",
            "3",
            "--tls",
            "FIXTURES/etcd-static-ips.yml",
        ],
    ),
    // The seed's "Override security groups" example, as its README runs it.
    (
        "aws-ec2-standalone-seed-networking",
        &["aws-ec2", "FIXTURES/my-networking.yml"],
    ),
    (
        "openstack-nova-standalone-seed-networking",
        &["openstack-nova", "FIXTURES/my-networking.yml"],
    ),
];

const FILES: [&str; 2] = ["manifest.yml", "cloud-config.yml"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    crate_dir().join("tests/golden")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Runs one case into a scratch directory; returns the output directory.
fn render(scratch: &Scratch, args: &[&str]) -> PathBuf {
    let fixtures = crate_dir().join("tests/fixtures");
    let fixtures = fixtures.to_str().expect("UTF-8 path");
    let mut all: Vec<String> = args
        .iter()
        .map(|a| a.replace("FIXTURES", fixtures))
        .collect();
    all.extend(["-o".into(), "out".into()]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    scratch.ok(&all);
    scratch.path("out")
}

#[test]
fn output_matches_the_golden_files() {
    let mut mismatches = Vec::new();
    for (case, args) in CASES {
        let scratch = Scratch::new();
        let out = render(&scratch, args);
        for file in FILES {
            let got = read(&out.join(file));
            let golden = golden_dir().join(case).join(file);
            if updating() {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if got != want {
                mismatches.push(format!(
                    "{case}/{file} differs from {}:\n{}",
                    golden.display(),
                    first_difference(&want, &got)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n\nIf the change is intended: UPDATE_GOLDEN=1 cargo test -p make-manifest --test golden, then review the diff.",
        mismatches.join("\n\n")
    );
}

fn first_difference(want: &str, got: &str) -> String {
    let (want_lines, got_lines): (Vec<&str>, Vec<&str>) =
        (want.lines().collect(), got.lines().collect());
    let index = (0..want_lines.len().max(got_lines.len()))
        .find(|&i| want_lines.get(i) != got_lines.get(i))
        .unwrap_or(0);
    format!(
        "  line {}: golden {:?}\n  line {}: output {:?}",
        index + 1,
        want_lines.get(index).copied().unwrap_or("<end of file>"),
        index + 1,
        got_lines.get(index).copied().unwrap_or("<end of file>")
    )
}

#[test]
fn every_golden_directory_belongs_to_a_case() {
    let cases: BTreeSet<&str> = CASES.iter().map(|(case, _)| *case).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let stale: Vec<&String> = on_disk
        .iter()
        .filter(|d| !cases.contains(d.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "golden directories without a case (remove them): {stale:?}"
    );
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&read(path))
        .unwrap_or_else(|err| panic!("{} does not parse: {err}", path.display()))
}

fn missing_keys(map: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|k| map.get(**k).is_none())
        .map(|k| k.to_string())
        .collect()
}

/// Independently of make-manifest's own checks: what the BOSH v2 docs say a
/// manifest and a cloud-config must have, and that names resolve.
#[test]
fn every_output_has_what_bosh_v2_requires() {
    for (case, args) in CASES {
        let scratch = Scratch::new();
        let out = render(&scratch, args);
        let manifest = load(&out.join("manifest.yml"));
        let cloud = load(&out.join("cloud-config.yml"));
        let mut problems = Vec::new();
        for key in missing_keys(
            &manifest,
            &[
                "name",
                "releases",
                "stemcells",
                "update",
                "instance_groups",
                "variables",
            ],
        ) {
            problems.push(format!("manifest lacks {key}"));
        }
        for key in missing_keys(
            &cloud,
            &["azs", "vm_types", "disk_types", "networks", "compilation"],
        ) {
            problems.push(format!("cloud-config lacks {key}"));
        }
        for key in missing_keys(
            &manifest["update"],
            &[
                "canaries",
                "max_in_flight",
                "canary_watch_time",
                "update_watch_time",
            ],
        ) {
            problems.push(format!("update lacks {key}"));
        }
        let names = |list: &Value| -> BTreeSet<String> {
            list.as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str().map(String::from))
                .collect()
        };
        let (azs, vm_types, disk_types, networks) = (
            names(&cloud["azs"]),
            names(&cloud["vm_types"]),
            names(&cloud["disk_types"]),
            names(&cloud["networks"]),
        );
        let aliases: BTreeSet<String> = manifest["stemcells"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| s["alias"].as_str().unwrap().to_string())
            .collect();
        let releases = names(&manifest["releases"]);
        for group in manifest["instance_groups"].as_sequence().unwrap() {
            let name = group["name"].as_str().unwrap();
            for key in missing_keys(
                group,
                &[
                    "name",
                    "azs",
                    "instances",
                    "jobs",
                    "vm_type",
                    "stemcell",
                    "networks",
                ],
            ) {
                problems.push(format!("instance group {name} lacks {key}"));
            }
            if !vm_types.contains(group["vm_type"].as_str().unwrap_or_default()) {
                problems.push(format!("{name}: vm_type not in cloud-config"));
            }
            if !aliases.contains(group["stemcell"].as_str().unwrap_or_default()) {
                problems.push(format!("{name}: stemcell alias not in stemcells"));
            }
            if let Some(disk) = group.get("persistent_disk_type") {
                if !disk_types.contains(disk.as_str().unwrap()) {
                    problems.push(format!("{name}: disk type not in cloud-config"));
                }
            }
            for az in group["azs"].as_sequence().into_iter().flatten() {
                if !azs.contains(az.as_str().unwrap()) {
                    problems.push(format!("{name}: az {az:?} not in cloud-config"));
                }
            }
            for network in names(&group["networks"]) {
                if !networks.contains(&network) {
                    problems.push(format!("{name}: network {network} not in cloud-config"));
                }
            }
            for job in group["jobs"].as_sequence().unwrap() {
                if !releases.contains(job["release"].as_str().unwrap_or_default()) {
                    problems.push(format!(
                        "{name}: job {:?} from an undeclared release",
                        job["name"]
                    ));
                }
            }
        }
        for key in missing_keys(
            &cloud["compilation"],
            &["workers", "az", "vm_type", "network"],
        ) {
            problems.push(format!("compilation lacks {key}"));
        }
        // Every ((variable)) the manifest uses is generated by `variables`
        // (((cert.ca)) is a field of the variable `cert`).
        let declared = names(&manifest["variables"]);
        let text = read(&out.join("manifest.yml"));
        for used in text
            .split("((")
            .skip(1)
            .filter_map(|rest| rest.split("))").next())
            .filter_map(|used| used.split('.').next())
        {
            if !declared.contains(used) {
                problems.push(format!("(({used})) is used but not declared in variables"));
            }
        }
        assert!(problems.is_empty(), "{case}: {problems:#?}");
    }
}

#[test]
fn topologies_differ_as_documented() {
    let scratch = Scratch::new();
    let group = |case: &str, args: &[&str]| {
        let out = render(&scratch, args);
        let manifest = load(&out.join("manifest.yml"));
        std::fs::remove_dir_all(&out).unwrap();
        (
            case.to_string(),
            manifest["instance_groups"][0].clone(),
            manifest,
        )
    };
    let (_, standalone, _) = group("standalone", &["warden"]);
    assert_eq!(standalone["instances"], Value::from(1));
    assert!(standalone["jobs"][0]["properties"]["postgres"]
        .get("replication")
        .is_none());

    let (_, clustered, manifest) = group(
        "clustered",
        &["warden", "--replication", "--instances", "4"],
    );
    assert_eq!(clustered["instances"], Value::from(4));
    let replication = &clustered["jobs"][0]["properties"]["postgres"]["replication"];
    assert_eq!(replication["enabled"], Value::from(true));
    assert_eq!(
        replication["password"],
        Value::from("((replication_password))")
    );
    assert!(
        manifest["variables"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "replication_password" && v["type"] == "password"),
        "the replication password is generated by the director"
    );
    assert_eq!(
        manifest["instance_groups"][1]["jobs"][0]["properties"]["postgres"]["smoke-tests"]
            ["target"]["port"],
        Value::from(6432),
        "clustered nodes listen on 6432 and there is no haproxy"
    );

    let (_, ha, manifest) = group("ha", &["warden", "--ha", "--vip", "10.244.232.100"]);
    assert_eq!(ha["instances"], Value::from(2));
    assert_eq!(ha["jobs"][1]["name"], Value::from("vip"));
    assert_eq!(
        ha["jobs"][1]["properties"]["vip"],
        Value::from("10.244.232.100")
    );
    assert_eq!(
        manifest["instance_groups"][1]["jobs"][0]["properties"]["postgres"]["smoke-tests"]
            ["target"]["port"],
        Value::from(5432),
        "in HA the errand writes through haproxy"
    );
}
