//! The command-line contract: where output goes, what is printed next, and
//! how overlays reach the manifest and the cloud-config.

mod common;

use common::{read, Scratch};
use serde_yaml::Value;

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|err| panic!("output does not parse: {err}\n{text}"))
}

#[test]
fn default_output_directory_is_manifests_out() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&["warden"]);
    assert!(scratch.path("manifests-out/manifest.yml").is_file());
    assert!(scratch.path("manifests-out/cloud-config.yml").is_file());
    assert!(
        stdout.starts_with("wrote manifests-out/manifest.yml and manifests-out/cloud-config.yml"),
        "{stdout}"
    );
}

#[test]
fn manifest_is_owner_only_because_overlays_may_carry_passwords() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    scratch.ok(&["warden", "-o", "out"]);
    let mode = std::fs::metadata(scratch.path("out/manifest.yml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "manifest.yml mode {mode:o} lets others read it"
    );
}

#[test]
fn next_commands_are_printed_in_order() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&["aws-ec2", "-o", "out"]);
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    assert_eq!(
        commands,
        [
            "bosh -n update-cloud-config out/cloud-config.yml -v az=<az> -v subnet_id=<subnet_id>",
            "bosh -n upload-stemcell https://bosh.io/d/stemcells/bosh-aws-xen-hvm-ubuntu-jammy-go_agent",
            "bosh -n create-release --dir release",
            "bosh -n upload-release --dir release",
            "bosh -n -d postgres deploy out/manifest.yml",
            "bosh -n -d postgres run-errand smoke-tests",
        ]
    );
    assert!(stdout.contains("note: update-cloud-config replaces the director's whole cloud-config"));
}

#[test]
fn commands_follow_the_flags() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&[
        "warden",
        "-d",
        "pg-test",
        "--stemcell-os",
        "ubuntu-noble",
        "--stemcell-version",
        "1.50",
        "--release-version",
        "4.0.1",
        "-o",
        "my out",
    ]);
    for expected in [
        "bosh -n update-cloud-config 'my out/cloud-config.yml'",
        "bosh -n upload-stemcell 'https://bosh.io/d/stemcells/bosh-warden-boshlite-ubuntu-noble-go_agent?v=1.50'",
        "bosh -n upload-release release/releases/postgres/postgres-4.0.1.yml",
        "bosh -n -d pg-test deploy 'my out/manifest.yml'",
    ] {
        assert!(stdout.contains(expected), "expected {expected:?} in:\n{stdout}");
    }
    let manifest = yaml(&read(&scratch.path("my out/manifest.yml")));
    assert_eq!(manifest["name"], Value::from("pg-test"));
    assert_eq!(
        manifest["stemcells"][0]["version"],
        Value::from("1.50"),
        "a version stays a string, not the number 1.5"
    );
}

#[test]
fn dash_writes_the_manifest_to_stdout_and_nothing_to_disk() {
    let scratch = Scratch::new();
    let out = scratch.run(&["openstack-nova", "--replication", "-o", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();

    scratch.ok(&["openstack-nova", "--replication", "-o", "files"]);
    assert_eq!(
        stdout,
        read(&scratch.path("files/manifest.yml")),
        "stdout is exactly the manifest"
    );
    assert!(stderr.contains("bosh -n -d postgres deploy -"), "{stderr}");
    assert!(stderr.contains("no cloud-config was written"), "{stderr}");
    let entries: Vec<_> = std::fs::read_dir(scratch.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["files"], "-o - writes no files");
}

#[test]
fn json_reports_files_commands_and_notes() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&[
        "aws-ec2",
        "--ha",
        "--vip",
        "10.0.16.100",
        "-o",
        "out",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["iaas"], "aws-ec2");
    assert_eq!(report["topology"], "ha");
    assert_eq!(report["deployment"], "postgres");
    assert_eq!(report["manifest"], "out/manifest.yml");
    assert_eq!(report["cloud_config"], "out/cloud-config.yml");
    assert!(report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "bosh -n -d postgres deploy out/manifest.yml"));
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("VRRP alone does not move it")),
        "aws-ec2 HA carries the VPC note: {report}"
    );
}

#[test]
fn overlays_apply_in_the_order_given() {
    let scratch = Scratch::new();
    scratch.file("one.yml", "update:\n  canaries: 2\n  max_in_flight: 3\n");
    scratch.file("two.yml", "update:\n  canaries: 5\n");
    scratch.ok(&["warden", "one.yml", "two.yml", "-o", "out"]);
    let update = yaml(&read(&scratch.path("out/manifest.yml")))["update"].clone();
    assert_eq!(update["canaries"], Value::from(5), "the later overlay wins");
    assert_eq!(
        update["max_in_flight"],
        Value::from(3),
        "the earlier overlay's other keys stay"
    );
}

#[test]
fn yaml_merge_keys_in_overlays_are_applied() {
    let scratch = Scratch::new();
    scratch.file(
        "merge.yml",
        "vm_types:\n- name: postgres\n  cloud_properties: &common\n    instance_type: r6i.large\n    ephemeral_disk: {size: 20000}\n- name: postgres-large\n  cloud_properties:\n    <<: *common\n    instance_type: r6i.xlarge\n",
    );
    scratch.ok(&["aws-ec2", "merge.yml", "-o", "out"]);
    let text = read(&scratch.path("out/cloud-config.yml"));
    assert!(
        !text.contains("<<"),
        "a merge key reached the cloud-config:\n{text}"
    );
    let cloud = yaml(&text);
    let large = cloud["vm_types"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|vm_type| vm_type["name"] == "postgres-large")
        .expect("the overlay's vm_type");
    assert_eq!(
        large["cloud_properties"]["instance_type"],
        Value::from("r6i.xlarge"),
        "the map's own key wins over the merged one"
    );
    assert_eq!(
        large["cloud_properties"]["ephemeral_disk"]["size"],
        Value::from(20000),
        "merged from the anchor"
    );
}

#[test]
fn overlay_keys_are_routed_to_their_document() {
    let scratch = Scratch::new();
    scratch.file(
        "both.yml",
        "vm_types:\n- name: postgres\n  cloud_properties: {instance_type: r6i.large}\nfeatures:\n  randomize_az_placement: true\n",
    );
    scratch.ok(&["aws-ec2", "both.yml", "-o", "out"]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let cloud = yaml(&read(&scratch.path("out/cloud-config.yml")));
    assert_eq!(
        cloud["vm_types"][0]["cloud_properties"]["instance_type"],
        Value::from("r6i.large")
    );
    assert_eq!(
        cloud["vm_types"][0]["cloud_properties"]["ephemeral_disk"]["type"],
        Value::from("gp3"),
        "the template's other vm_type properties stay"
    );
    assert!(
        manifest.get("vm_types").is_none(),
        "cloud-config keys never reach the manifest"
    );
    assert_eq!(
        manifest["features"]["randomize_az_placement"],
        Value::from(true)
    );
    assert!(cloud.get("features").is_none());
}

#[test]
fn operator_users_get_generated_passwords_and_keep_given_ones() {
    let scratch = Scratch::new();
    scratch.file(
        "users.yml",
        r#"
instance_groups:
- name: postgres
  jobs:
  - name: postgres
    properties:
      postgres:
        users:
        - {username: hank, password: propane, admin: true}
        - {username: app.user}
        databases:
        - {name: app, users: [app.user], extensions: [citext]}
"#,
    );
    scratch.ok(&["warden", "users.yml", "-o", "out"]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let users = manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"]["users"]
        .as_sequence()
        .unwrap()
        .clone();
    let password_of = |name: &str| {
        users
            .iter()
            .find(|u| u["username"] == name)
            .map(|u| u["password"].clone())
    };
    assert_eq!(password_of("hank"), Some(Value::from("propane")));
    assert_eq!(
        password_of("app.user"),
        Some(Value::from("((user_app_user_password))"))
    );
    assert_eq!(
        password_of("smoke-tests"),
        Some(Value::from("((user_smoke_tests_password))")),
        "the errand's user is kept although the overlay replaced the list"
    );
    let variables: Vec<&str> = manifest["variables"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        variables.contains(&"user_app_user_password"),
        "{variables:?}"
    );
    assert!(
        !variables.iter().any(|v| v.contains("hank")),
        "a given password needs no variable: {variables:?}"
    );
}

#[test]
fn yaml_1_1_words_from_overlays_stay_strings() {
    let scratch = Scratch::new();
    scratch.file(
        "words.yml",
        "instance_groups:\n- name: postgres\n  jobs:\n  - name: postgres\n    properties:\n      postgres:\n        config: {synchronous_commit: 'on', application_name: 'no'}\n",
    );
    scratch.ok(&["warden", "words.yml", "-o", "out"]);
    let text = read(&scratch.path("out/manifest.yml"));
    assert!(text.contains("synchronous_commit: 'on'"), "{text}");
    assert!(text.contains("application_name: 'no'"), "{text}");
}

#[test]
fn overlay_can_delete_with_null_and_append_with_an_operator() {
    let scratch = Scratch::new();
    scratch.file(
        "ops.yml",
        "features: ~\ninstance_groups:\n- name: postgres\n  azs: ['(( append ))', z2]\nazs:\n- name: z2\nnetworks:\n- name: postgres1\n  subnets:\n  - '(( append ))'\n  - {range: 10.244.233.0/24, gateway: 10.244.233.1, azs: [z2], reserved: []}\n",
    );
    scratch.ok(&["warden", "ops.yml", "-o", "out"]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let cloud = yaml(&read(&scratch.path("out/cloud-config.yml")));
    assert!(
        manifest.get("features").is_none(),
        "`features: ~` deleted the key"
    );
    assert_eq!(manifest["instance_groups"][0]["azs"], yaml("[z1, z2]"));
    assert_eq!(
        cloud["networks"][0]["subnets"].as_sequence().unwrap().len(),
        2
    );
}

#[test]
fn custom_templates_replace_the_builtin_ones() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
    for name in ["deployment.yml.hbs", "warden.yml.hbs"] {
        std::fs::copy(
            format!("{builtin}/{name}"),
            scratch.path(&format!("tpl/{name}")),
        )
        .unwrap();
    }
    let partial = read(&scratch.path("tpl/deployment.yml.hbs"))
        .replace("max_in_flight: 1", "max_in_flight: 7");
    std::fs::write(scratch.path("tpl/deployment.yml.hbs"), partial).unwrap();
    scratch.ok(&["warden", "--templates", "tpl", "-o", "out"]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    assert_eq!(manifest["update"]["max_in_flight"], Value::from(7));
}

#[test]
fn release_dir_checks_properties_against_the_job_specs() {
    let scratch = Scratch::new();
    let specs = [
        ("postgres", "postgres.users: {}\n  postgres.replication.enabled: {}\n  postgres.replication.password: {}\n  postgres.config: {}\n"),
        ("vip", "vip: {}\n"),
        ("smoke-tests", "postgres.smoke-tests.target.port: {}\n  postgres.smoke-tests.target.username: {}\n  postgres.smoke-tests.target.password: {}\n"),
    ];
    for (job, properties) in specs {
        std::fs::create_dir_all(scratch.path(&format!("rel/jobs/{job}"))).unwrap();
        scratch.file(
            &format!("rel/jobs/{job}/spec"),
            &format!("name: {job}\nproperties:\n  {properties}"),
        );
    }
    scratch.ok(&[
        "warden",
        "--ha",
        "--vip",
        "10.244.232.100",
        "--release-dir",
        "rel",
        "-o",
        "good",
    ]);

    scratch.file(
        "typo.yml",
        "instance_groups:\n- name: postgres\n  jobs:\n  - name: postgres\n    properties:\n      postgres:\n        replication: {enable: true}\n",
    );
    let line = scratch.bad_input(&[
        "warden",
        "--replication",
        "--release-dir",
        "rel",
        "typo.yml",
    ]);
    assert!(
        line.contains("`postgres.replication.enable` is not declared in the postgres job's spec"),
        "{line}"
    );
}

#[test]
fn help_documents_the_contract() {
    let scratch = Scratch::new();
    let help = scratch.ok(&["--help"]);
    for fragment in [
        "manifests-out",
        "Exit codes",
        "--ha",
        "--vip",
        "--replication",
        "--templates",
        "(( append ))",
        "warden",
        "aws-ec2",
        "openstack-nova",
        "--tls",
        "postgres.tls",
        "sslmode=require",
        "bosh int creds.yml --path /postgres_tls/ca",
        "credhub get -n /DIRECTOR/DEPLOYMENT/postgres_tls",
        "*.postgres.NETWORK.DEPLOYMENT.bosh",
    ] {
        assert!(
            help.contains(fragment),
            "--help should mention {fragment:?}"
        );
    }
    let version = scratch.ok(&["--version"]);
    assert!(version.starts_with("make-manifest "), "{version}");
}

/// The overlay examples in README.md are these fixtures, verbatim, and they work.
#[test]
fn readme_overlay_examples_are_the_tested_fixtures() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let readme = read(std::path::Path::new(&format!("{crate_dir}/README.md")));
    for fixture in [
        "my-networking.yml",
        "users.yml",
        "second-az.yml",
        "static-ips.yml",
    ] {
        let text = read(std::path::Path::new(&format!(
            "{crate_dir}/tests/fixtures/{fixture}"
        )));
        assert!(
            readme.contains(&text),
            "README.md should show tests/fixtures/{fixture} verbatim"
        );
    }
    let scratch = Scratch::new();
    let fixture = |name: &str| format!("{crate_dir}/tests/fixtures/{name}");
    let (networking, users, second_az) = (
        fixture("my-networking.yml"),
        fixture("users.yml"),
        fixture("second-az.yml"),
    );
    scratch.ok(&[
        "aws-ec2",
        "--ha",
        "--vip",
        "10.0.16.5",
        &second_az,
        &users,
        &networking,
        "-o",
        "out",
    ]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let cloud = yaml(&read(&scratch.path("out/cloud-config.yml")));
    assert_eq!(manifest["instance_groups"][0]["azs"], yaml("[z1, z2]"));
    let subnets = cloud["networks"][0]["subnets"].as_sequence().unwrap();
    assert_eq!(subnets.len(), 2, "(( append )) added the second subnet");
    for subnet in subnets {
        assert_eq!(
            subnet["cloud_properties"]["security_groups"],
            yaml("[postgres]"),
            "the seed's overlay reaches every subnet"
        );
    }
    let postgres = &manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"];
    assert_eq!(postgres["config"]["max_connections"], Value::from(500));
    assert_eq!(
        postgres["users"][0]["password"],
        Value::from("((user_hank_password))")
    );
}

#[test]
fn variables_the_manifest_does_not_generate_are_pointed_out() {
    let scratch = Scratch::new();
    scratch.file(
        "ext.yml",
        "instance_groups:\n- name: postgres\n  jobs:\n  - name: postgres\n    properties:\n      postgres:\n        users:\n        - {username: hank, password: ((hank_pw))}\n",
    );
    let stdout = scratch.ok(&["warden", "ext.yml", "-o", "out"]);
    assert!(
        stdout.contains("note: the manifest uses ((hank_pw)) without generating it"),
        "{stdout}"
    );
}

// ---- --tls ----

fn names_of(list: &Value) -> Vec<&str> {
    list.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|item| item["name"].as_str())
        .collect()
}

fn variable<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["variables"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

#[test]
fn tls_on_warden_gives_each_node_a_static_ip_the_certificate_names() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&[
        "warden",
        "--replication",
        "--instances",
        "3",
        "--tls",
        "-d",
        "pg_Test",
        "-o",
        "out",
    ]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let cloud = yaml(&read(&scratch.path("out/cloud-config.yml")));
    let ips = yaml("[10.244.232.10, 10.244.232.11, 10.244.232.12]");
    let group = &manifest["instance_groups"][0];
    assert_eq!(group["networks"][0]["static_ips"], ips);
    assert_eq!(cloud["networks"][0]["subnets"][0]["static"], ips);
    assert_eq!(
        group["jobs"][0]["properties"]["postgres"]["tls"],
        yaml("{certificate: ((postgres_tls.certificate)), private_key: ((postgres_tls.private_key)), ca: ((postgres_tls.ca)), required: true}")
    );
    assert_eq!(
        variable(&manifest, "postgres_ca"),
        &yaml("{name: postgres_ca, type: certificate, options: {is_ca: true, common_name: postgres-ca}}")
    );
    let options = &variable(&manifest, "postgres_tls")["options"];
    assert_eq!(options["ca"], Value::from("postgres_ca"));
    assert_eq!(options["common_name"], Value::from("10.244.232.10"));
    assert_eq!(
        options["alternative_names"],
        yaml("[10.244.232.10, 10.244.232.11, 10.244.232.12, '*.postgres.postgres1.pg-test.bosh']"),
        "no VIP without --ha; the deployment name as BOSH DNS spells it"
    );
    assert_eq!(
        options["extended_key_usage"],
        yaml("[server_auth, client_auth]")
    );
    assert!(
        stdout.contains("note: TLS is required: clients connect with sslmode=require or better")
            && stdout.contains("credhub get -n /<director>/pg_Test/postgres_tls -k ca"),
        "{stdout}"
    );
}

#[test]
fn without_tls_nothing_of_it_is_written() {
    let scratch = Scratch::new();
    let stdout = scratch.ok(&["warden", "--replication", "-o", "out"]);
    let manifest = read(&scratch.path("out/manifest.yml"));
    let cloud = read(&scratch.path("out/cloud-config.yml"));
    for text in [&manifest, &cloud, &stdout] {
        assert!(!text.contains("tls") && !text.contains("TLS"), "{text}");
        assert!(!text.contains("static"), "{text}");
    }
}

#[test]
fn the_tls_certificate_follows_static_ips_an_overlay_sets() {
    let scratch = Scratch::new();
    // The overlay moves the nodes to other addresses and another network name.
    scratch.file(
        "moved.yml",
        r#"
networks:
- name: postgres1
  subnets:
  - range: 10.244.232.0/24
    gateway: 10.244.232.1
    azs: [z1]
    reserved: [10.244.232.100]
    static: [10.244.232.50 - 10.244.232.59]
instance_groups:
- name: postgres
  networks:
  - name: postgres1
    static_ips: [10.244.232.51, 10.244.232.50]
"#,
    );
    scratch.ok(&[
        "warden",
        "--ha",
        "--vip",
        "10.244.232.100",
        "--tls",
        "moved.yml",
        "-o",
        "out",
    ]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    assert_eq!(
        variable(&manifest, "postgres_tls")["options"]["alternative_names"],
        yaml(
            "[10.244.232.51, 10.244.232.50, 10.244.232.100, '*.postgres.postgres1.postgres.bosh']"
        )
    );
}

#[test]
fn an_overlays_own_tls_variables_are_kept() {
    let scratch = Scratch::new();
    scratch.file(
        "own-cert.yml",
        r#"
variables:
- name: postgres_tls
  type: certificate
  options:
    ca: corporate_ca
    common_name: db.example.com
    alternative_names: [db.example.com, 10.244.232.10, 10.244.232.11]
"#,
    );
    scratch.ok(&[
        "warden",
        "--replication",
        "--tls",
        "own-cert.yml",
        "-o",
        "out",
    ]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let names = names_of(&manifest["variables"]);
    assert_eq!(
        names.iter().filter(|n| **n == "postgres_tls").count(),
        1,
        "{names:?}"
    );
    let own = variable(&manifest, "postgres_tls");
    assert_eq!(own["options"]["ca"], Value::from("corporate_ca"));
    assert_eq!(own["options"]["common_name"], Value::from("db.example.com"));
    assert!(
        names.contains(&"postgres_ca"),
        "the CA the overlay did not declare is still generated: {names:?}"
    );
}

#[test]
fn tls_on_aws_ec2_with_the_readme_static_ips_overlay() {
    let scratch = Scratch::new();
    let overlay = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/static-ips.yml");
    scratch.ok(&["aws-ec2", "--replication", "--tls", overlay, "-o", "out"]);
    let manifest = yaml(&read(&scratch.path("out/manifest.yml")));
    let cloud = yaml(&read(&scratch.path("out/cloud-config.yml")));
    assert_eq!(cloud["networks"][0]["type"], Value::from("manual"));
    assert_eq!(
        variable(&manifest, "postgres_tls")["options"]["alternative_names"],
        yaml("[10.0.16.10, 10.0.16.11, '*.postgres.postgres1.postgres.bosh']")
    );
}
