//! The manifests and the release must never drift: every job the generated
//! manifests run must exist in `release/jobs/`, and every property they set
//! must be declared in that job's spec (the director would silently ignore
//! an undeclared one).
//!
//! Until the release's job specs exist this test has nothing to check
//! against: it says so and passes.
//!
//! `--tls` sets `postgres.tls.certificate`, `postgres.tls.private_key`,
//! `postgres.tls.ca` and `postgres.tls.required` on the postgres job.

use std::path::PathBuf;

use make_manifest::{generate, spec, Iaas, Request, TopologyFlags};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn release_dir() -> PathBuf {
    crate_dir()
        .parent()
        .expect("the crate sits in the workspace")
        .join("release")
}

fn requests() -> Vec<(String, Request)> {
    let topologies = [
        ("standalone", TopologyFlags::default()),
        (
            "clustered",
            TopologyFlags {
                replication: true,
                instances: Some(4),
                ..TopologyFlags::default()
            },
        ),
        (
            "ha",
            TopologyFlags {
                ha: true,
                vip: Some("10.244.232.100".parse().unwrap()),
                ..TopologyFlags::default()
            },
        ),
    ];
    let mut requests = Vec::new();
    for iaas in Iaas::ALL {
        for (name, flags) in &topologies {
            let mut request = Request::new(iaas);
            request.topology = flags.clone();
            requests.push((format!("{iaas} {name}"), request.clone()));
            // Elsewhere than warden the nodes' static IPs come from an overlay.
            request.tls = true;
            if iaas != Iaas::Warden {
                request
                    .overlays
                    .push(crate_dir().join("tests/fixtures/static-ips.yml"));
                if *name == "ha" {
                    request.topology.vip = Some("10.0.16.100".parse().unwrap());
                }
                if *name != "standalone" {
                    // The fixture holds two addresses.
                    request.topology.instances = Some(2);
                }
            }
            if iaas == Iaas::Warden || *name != "standalone" {
                requests.push((format!("{iaas} {name} --tls"), request));
            }
        }
    }
    requests
}

#[test]
fn generated_manifests_use_only_jobs_and_properties_the_release_declares() {
    let jobs = release_dir().join("jobs");
    assert!(
        jobs.is_dir(),
        "{} is not a directory: the job specs to check the manifests against moved",
        jobs.display()
    );
    let specs =
        spec::load(&release_dir()).unwrap_or_else(|err| panic!("cannot load the job specs: {err}"));
    let mut problems = Vec::new();
    for (case, request) in requests() {
        let generated = generate(&request).unwrap_or_else(|err| panic!("{case}: {err}"));
        for problem in spec::check(&generated.manifest, &specs, &request.release_name) {
            problems.push(format!("{case}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "the manifests make-manifest writes disagree with release/jobs/*/spec:\n{}",
        problems.join("\n")
    );
}
