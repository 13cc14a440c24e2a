//! Every bad input: a one-line error naming the input, exit 2, nothing
//! written (the helper `bad_input` asserts all three for each case).

mod common;

use common::{read, Scratch};

fn assert_says(line: &str, fragments: &[&str]) {
    for fragment in fragments {
        assert!(
            line.contains(fragment),
            "error should mention {fragment:?}: {line}"
        );
    }
}

#[test]
fn unknown_iaas_lists_the_valid_ones() {
    let line = Scratch::new().bad_input(&["gce"]);
    assert_says(&line, &["gce", "warden", "aws-ec2", "openstack-nova"]);
}

#[test]
fn missing_iaas_is_a_usage_error() {
    let line = Scratch::new().bad_input(&[]);
    assert_says(&line, &["<IAAS>"]);
}

#[test]
fn missing_overlay_file() {
    let line = Scratch::new().bad_input(&["warden", "nope.yml"]);
    assert_says(&line, &["overlay nope.yml", "no such file"]);
}

#[test]
fn overlay_yaml_error_names_file_line_and_column() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "broken.yml",
        "networks:\n- name: postgres1\n  cloud_properties: {security_groups: [a\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert!(
        line.starts_with("make-manifest: error: broken.yml:4:1: "),
        "{line}"
    );
}

#[test]
fn overlay_with_a_tab_for_indentation_names_its_position() {
    let scratch = Scratch::new();
    let file = scratch.file("tab.yml", "networks:\n\t- name: x\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert!(
        line.starts_with("make-manifest: error: tab.yml:2:1: "),
        "{line}"
    );
}

#[test]
fn overlay_that_is_a_device_is_not_read() {
    // /dev/zero would be read until memory ran out; /dev/null shows the same
    // refusal without that risk.
    let line = Scratch::new().bad_input(&["warden", "/dev/null"]);
    assert_says(&line, &["overlay /dev/null", "not a regular file"]);
}

#[test]
fn overlay_larger_than_one_mebibyte() {
    let scratch = Scratch::new();
    let file = scratch.file("huge.yml", &format!("# {}\n", "x".repeat(1 << 20)));
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["overlay huge.yml", "larger than 1048576 bytes"]);
}

#[test]
fn overlay_nested_too_deeply_is_refused_before_parsing() {
    let scratch = Scratch::new();
    // 500 KB: parsing it took more than half a minute.
    let depth = 125_000;
    let file = scratch.file(
        "deep.yml",
        &format!("a: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["deep.yml:1:", "nested more than 64 levels deep"]);
}

#[test]
fn overlay_that_is_not_a_map() {
    let scratch = Scratch::new();
    let file = scratch.file("list.yml", "- name: postgres1\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["list.yml", "must be a YAML map", "a list"]);
}

#[test]
fn overlay_with_two_documents() {
    let scratch = Scratch::new();
    let file = scratch.file("two.yml", "a: 1\n---\nb: 2\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["two.yml", "more than one document"]);
}

#[test]
fn ha_without_vip() {
    let line = Scratch::new().bad_input(&["warden", "--ha"]);
    assert_says(&line, &["--ha needs --vip"]);
}

#[test]
fn vip_that_is_not_an_ip_address() {
    let line = Scratch::new().bad_input(&["warden", "--ha", "--vip", "10.244.232"]);
    assert_says(&line, &["10.244.232", "--vip"]);
    let line = Scratch::new().bad_input(&["warden", "--ha", "--vip", "db.example"]);
    assert_says(&line, &["db.example", "--vip"]);
}

#[test]
fn vip_that_no_node_can_hold() {
    let line = Scratch::new().bad_input(&["aws-ec2", "--ha", "--vip", "127.0.0.1"]);
    assert_says(&line, &["127.0.0.1", "not an address a node can hold"]);
}

#[test]
fn vip_without_ha() {
    let line = Scratch::new().bad_input(&["warden", "--vip", "10.244.232.100"]);
    assert_says(&line, &["--vip applies only with --ha"]);
}

#[test]
fn ha_on_one_instance() {
    let line = Scratch::new().bad_input(&[
        "warden",
        "--ha",
        "--vip",
        "10.244.232.100",
        "--instances",
        "1",
    ]);
    assert_says(
        &line,
        &["2 nodes (the pair) or 3 and more", "--instances 1"],
    );
}

#[test]
fn ha_on_etcd_without_the_members_static_ips() {
    let line = Scratch::new().bad_input(&[
        "aws-ec2",
        "--ha",
        "--vip",
        "10.0.16.100",
        "--instances",
        "3",
    ]);
    assert_says(
        &line,
        &[
            "the etcd store needs a static IP for each of the 3 members",
            "instance group `etcd`",
            "static_ips",
        ],
    );
}

#[test]
fn replication_with_one_instance() {
    let line = Scratch::new().bad_input(&["warden", "--replication", "--instances", "1"]);
    assert_says(&line, &["at least 2"]);
}

#[test]
fn several_instances_without_replication() {
    let line = Scratch::new().bad_input(&["warden", "--instances", "2"]);
    assert_says(&line, &["--instances 2 needs --replication"]);
}

#[test]
fn vm_type_on_warden() {
    let line = Scratch::new().bad_input(&["warden", "--vm-type", "m5.large"]);
    assert_says(&line, &["--vm-type", "warden"]);
}

#[test]
fn deployment_name_that_would_break_the_manifest() {
    let line = Scratch::new().bad_input(&["warden", "-d", "pg: x"]);
    assert_says(&line, &["--deployment", "pg: x"]);
}

#[test]
fn json_with_manifest_on_stdout() {
    let scratch = Scratch::new();
    let out = scratch.run(&["warden", "-o", "-", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no manifest when the flags conflict");
}

// ---- merged results BOSH would reject ----

#[test]
fn network_named_by_an_instance_group_but_missing_from_the_cloud_config() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "net.yml",
        "instance_groups:\n- name: postgres\n  networks:\n  - name: postgres2\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(
        &line,
        &[
            "instance_groups[postgres].networks[1]",
            "no network `postgres2`",
            "postgres1",
        ],
    );
}

#[test]
fn cloud_config_without_networks() {
    let scratch = Scratch::new();
    let file = scratch.file("nonet.yml", "networks: ~\n");
    let line = scratch.bad_input(&["aws-ec2", &file]);
    assert_says(&line, &["cloud-config: networks", "missing"]);
}

#[test]
fn vm_type_the_cloud_config_lacks() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "vm.yml",
        "instance_groups:\n- name: postgres\n  vm_type: large\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(
        &line,
        &["instance_groups[postgres].vm_type", "no vm_type `large`"],
    );
}

#[test]
fn az_the_network_has_no_subnet_in() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "az.yml",
        "azs:\n- name: z2\ninstance_groups:\n- name: postgres\n  azs: [z1, z2]\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(
        &line,
        &[
            "instance_groups[postgres].networks[0]",
            "azs [z1, z2]",
            "postgres1",
        ],
    );
}

#[test]
fn manifest_without_update() {
    let scratch = Scratch::new();
    let file = scratch.file("noupdate.yml", "update: ~\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["manifest: update", "missing"]);
}

#[test]
fn overlay_making_ha_three_nodes() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "three.yml",
        "instance_groups:\n- name: postgres\n  instances: 3\n",
    );
    let line = scratch.bad_input(&["warden", "--ha", "--vip", "10.244.232.100", &file]);
    assert_says(&line, &["HA runs exactly 2 postgres nodes, not 3"]);
}

#[test]
fn overlay_turning_replication_off_in_a_cluster() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "norepl.yml",
        "instance_groups:\n- name: postgres\n  jobs:\n  - name: postgres\n    properties:\n      postgres:\n        replication: ~\n",
    );
    let line = scratch.bad_input(&["warden", "--replication", &file]);
    assert_says(&line, &["2 nodes without postgres.replication.enabled"]);
}

#[test]
fn vip_outside_the_warden_subnet() {
    let line = Scratch::new().bad_input(&["warden", "--ha", "--vip", "10.0.0.5"]);
    assert_says(
        &line,
        &["10.0.0.5 is outside network `postgres1`", "10.244.232.0/24"],
    );
}

#[test]
fn vip_that_is_the_subnets_network_or_broadcast_address() {
    for (vip, role) in [
        ("10.244.232.0", "network address"),
        ("10.244.232.255", "broadcast address"),
    ] {
        let line = Scratch::new().bad_input(&["warden", "--ha", "--vip", vip]);
        assert_says(
            &line,
            &[
                "jobs[vip].properties.vip",
                &format!("{vip} is the {role} of network `postgres1` (10.244.232.0/24)"),
            ],
        );
    }
}

#[test]
fn vip_not_reserved() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "unreserve.yml",
        "networks:\n- name: postgres1\n  subnets:\n  - range: 10.244.232.0/24\n    gateway: 10.244.232.1\n    azs: [z1]\n",
    );
    let line = scratch.bad_input(&["warden", "--ha", "--vip", "10.244.232.100", &file]);
    assert_says(&line, &["10.244.232.100 must be in `reserved`"]);
}

#[test]
fn vip_property_that_is_not_an_address() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "badvip.yml",
        "instance_groups:\n- name: postgres\n  jobs:\n  - name: vip\n    properties:\n      vip: my-db\n",
    );
    let line = scratch.bad_input(&["aws-ec2", "--ha", "--vip", "10.0.16.100", &file]);
    assert_says(
        &line,
        &["jobs[vip].properties.vip", "`my-db` is not an IP address"],
    );
}

#[test]
fn spruce_operator_left_in_the_result() {
    let scratch = Scratch::new();
    let file = scratch.file("grab.yml", "meta:\n  x: 1\nname: (( grab meta.x ))\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(
        &line,
        &["manifest: name", "(( grab meta.x ))", "spruce operator"],
    );
}

#[test]
fn unsupported_list_operator() {
    let scratch = Scratch::new();
    let file = scratch.file("inline.yml", "azs:\n- (( inline ))\n- name: z9\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["inline.yml", "azs", "(( inline ))"]);
}

#[test]
fn yaml_tags() {
    let scratch = Scratch::new();
    let file = scratch.file("tag.yml", "name: !secret pg\n");
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["tag.yml: name: YAML tags"]);
}

#[test]
fn bad_subnet_range() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "range.yml",
        "networks:\n- name: postgres1\n  subnets:\n  - range: 10.244.232.0\n    gateway: 10.244.232.1\n    azs: [z1]\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(&line, &["networks[postgres1].subnets[0].range", "CIDR"]);
}

// ---- templates ----

#[test]
fn template_directory_without_the_iaas_template() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    scratch.file("tpl/warden.yml.hbs", "name: x\n");
    let line = scratch.bad_input(&["aws-ec2", "--templates", "tpl"]);
    assert_says(&line, &["aws-ec2.yml.hbs", "no such template"]);
}

#[test]
fn template_that_is_not_a_regular_file_is_not_read() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    std::os::unix::fs::symlink("/dev/null", scratch.path("tpl/warden.yml.hbs")).unwrap();
    let line = scratch.bad_input(&["warden", "--templates", "tpl"]);
    assert_says(&line, &["tpl/warden.yml.hbs", "not a regular file"]);
}

#[test]
fn template_syntax_error_names_the_template() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    scratch.file("tpl/warden.yml.hbs", "name: x\n{{#if ha}}\n");
    let line = scratch.bad_input(&["warden", "--templates", "tpl"]);
    assert_says(&line, &["warden.yml.hbs"]);
}

#[test]
fn template_naming_an_unknown_value_fails_in_strict_mode() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    scratch.file("tpl/warden.yml.hbs", "name: \"{{deploymnet}}\"\n");
    let line = scratch.bad_input(&["warden", "--templates", "tpl"]);
    assert_says(&line, &["warden.yml.hbs", "deploymnet"]);
}

// ---- an existing output directory is left alone on bad input ----

#[test]
fn bad_input_leaves_earlier_output_untouched() {
    let scratch = Scratch::new();
    scratch.ok(&["warden", "-o", "kept"]);
    let before = read(&scratch.path("kept/manifest.yml"));
    let out = scratch.run(&["warden", "-o", "kept", "missing.yml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        read(&scratch.path("kept/manifest.yml")),
        before,
        "the old manifest must survive bad input"
    );
    let names: Vec<String> = std::fs::read_dir(scratch.path("kept"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only the two earlier files: {names:?}");
}

#[test]
fn unwritable_output_exits_1_and_says_what_was_left() {
    let scratch = Scratch::new();
    scratch.file("afile", "not a directory\n");
    let out = scratch.run(&["warden", "-o", "afile/sub"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a write failure is not bad input: {stderr}"
    );
    assert!(
        stderr.contains("cannot create the output directory afile/sub"),
        "{stderr}"
    );
}

#[test]
fn template_rendering_something_that_is_not_yaml() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("tpl")).unwrap();
    scratch.file("tpl/warden.yml.hbs", "name: x\n  bad: [\n");
    let line = scratch.bad_input(&["warden", "--templates", "tpl"]);
    assert_says(
        &line,
        &["tpl/warden.yml.hbs: its output is not YAML: output line"],
    );
}

#[test]
fn errand_password_that_differs_from_its_users() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "pw.yml",
        "instance_groups:\n- name: smoke-tests\n  jobs:\n  - name: smoke-tests\n    properties:\n      postgres:\n        smoke-tests:\n          target: {password: other}\n- name: postgres\n  jobs:\n  - name: postgres\n    properties:\n      postgres:\n        users: [{username: smoke-tests, password: mine}]\n",
    );
    let line = scratch.bad_input(&["warden", &file]);
    assert_says(
        &line,
        &[
            "target.password",
            "differs from the password of postgres user `smoke-tests`",
        ],
    );
}

// ---- --tls ----

#[test]
fn tls_where_the_nodes_have_no_static_ips() {
    for iaas in ["aws-ec2", "openstack-nova"] {
        let line = Scratch::new().bad_input(&[iaas, "--replication", "--tls"]);
        assert_says(
            &line,
            &[
                "--tls needs a static IP for each of the 2 nodes of instance group `postgres` (it has none)",
                "a manual network with a `static` range, and `static_ips` for the postgres instance group",
            ],
        );
    }
}

#[test]
fn tls_with_fewer_static_ips_than_nodes() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "one.yml",
        "instance_groups:\n- name: postgres\n  networks:\n  - name: postgres1\n    static_ips: [10.0.16.10]\n",
    );
    let line = scratch.bad_input(&["aws-ec2", "--ha", "--vip", "10.0.16.100", "--tls", &file]);
    assert_says(&line, &["--tls needs a static IP", "(it has only 1)"]);
}

#[test]
fn tls_on_warden_with_more_nodes_than_static_ips() {
    let line =
        Scratch::new().bad_input(&["warden", "--replication", "--instances", "300", "--tls"]);
    assert_says(
        &line,
        &[
            "on warden the static IPs",
            "10.244.232.10 - 10.244.232.254",
            "not enough for 300 postgres nodes (--tls)",
        ],
    );
}

#[test]
fn static_ips_on_a_dynamic_network() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "dyn.yml",
        "instance_groups:\n- name: postgres\n  networks:\n  - name: postgres1\n    static_ips: [10.0.16.10, 10.0.16.11]\n",
    );
    let line = scratch.bad_input(&["aws-ec2", "--replication", "--tls", &file]);
    assert_says(
        &line,
        &[
            "instance_groups[postgres].networks[postgres1].static_ips",
            "network `postgres1` is dynamic",
        ],
    );
}

#[test]
fn static_ip_in_the_reserved_list() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "reserved.yml",
        "networks:\n- name: postgres1\n  subnets:\n  - {range: 10.244.232.0/24, gateway: 10.244.232.1, azs: [z1], reserved: [10.244.232.10], static: [10.244.232.10 - 10.244.232.11]}\n",
    );
    let line = scratch.bad_input(&["warden", "--replication", "--tls", &file]);
    assert_says(
        &line,
        &[
            "static_ips: 10.244.232.10, in network `postgres1` subnet 10.244.232.0/24, is in its `reserved`",
        ],
    );
}

#[test]
fn static_ip_outside_the_static_range() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "outside.yml",
        "instance_groups:\n- name: postgres\n  networks:\n  - name: postgres1\n    static_ips: [10.244.232.10, 10.244.232.99]\n",
    );
    let line = scratch.bad_input(&["warden", "--replication", "--tls", &file]);
    assert_says(&line, &["10.244.232.99", "is not in its `static` ranges"]);
}

#[test]
fn static_ips_that_do_not_match_the_instance_count() {
    let scratch = Scratch::new();
    let file = scratch.file(
        "three.yml",
        "instance_groups:\n- name: postgres\n  networks:\n  - name: postgres1\n    static_ips: [10.244.232.10, 10.244.232.11, 10.244.232.12]\n",
    );
    let line = scratch.bad_input(&["warden", "--replication", "--tls", &file]);
    assert_says(
        &line,
        &["static_ips: 3 addresses for 2 instances: the director needs one per instance"],
    );
}
