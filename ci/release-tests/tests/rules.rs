//! The rules the jobs' templates share with the programs, held equal: the
//! port PostgreSQL listens on and the port clients write to
//! (make-manifest's `postgres_port`, `write_port`), the shape of the
//! postgres group (make-manifest's `check_shape`), and the provisioning spec
//! (pg-bootstrap's check). Each template applies its rule when it renders;
//! these tests render every example deployment and its variants, run the
//! rendered scripts, and compare what they do with what the programs say.

use std::fs;

use make_manifest::{
    check_shape, decide_topology, postgres_port, Shape, ShapeError, TopologyFlags,
};
use pg_bootstrap::provision::spec;
use release_tests::vm::Vm;
use release_tests::{example, instances, render, set, try_render, yaml, Rendered};
use serde_yaml::Value;

const POSTGRES_PROPERTIES: [&str; 5] = ["instance_groups", "0", "jobs", "0", "properties"];

fn postgres_properties(manifest: &Value) -> &Value {
    &manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"]
}

fn has_vip(manifest: &Value) -> bool {
    manifest["instance_groups"][0]["jobs"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|job| job["name"] == "vip")
}

/// An example deployment with a smoke-tests errand beside it (the standalone
/// example has one already), so that every variant has a write port to check.
fn with_smoke_tests(name: &str) -> Value {
    let mut manifest = example(name);
    let groups = manifest["instance_groups"].as_sequence_mut().unwrap();
    if !groups.iter().any(|group| group["name"] == "smoke-tests") {
        let errand = example("standalone")["instance_groups"][1].clone();
        groups.push(errand);
    }
    manifest
}

/// The example deployments and their variants: replication on and off,
/// with and without the HA pair, with and without `postgres.config.port`.
fn port_variants() -> Vec<(String, Value)> {
    let mut variants = Vec::new();
    for name in ["standalone", "clustered", "ha"] {
        variants.push((name.to_string(), with_smoke_tests(name)));
    }
    // The standalone example made a replicated pair (without the vip job).
    let mut pair = with_smoke_tests("standalone");
    set(&mut pair, &["instance_groups", "0", "instances"], yaml("2"));
    set(
        &mut pair,
        &["instance_groups", "0", "networks", "0", "static_ips"],
        yaml("[10.244.0.2, 10.244.0.3]"),
    );
    let mut replication = POSTGRES_PROPERTIES.to_vec();
    replication.extend(["postgres", "replication"]);
    set(
        &mut pair,
        &replication,
        yaml("{enabled: true, password: replication-secret}"),
    );
    variants.push(("standalone made a pair".to_string(), pair));
    let mut port = POSTGRES_PROPERTIES.to_vec();
    port.extend(["postgres", "config", "port"]);
    for (name, manifest) in variants.clone() {
        let mut configured = manifest;
        set(&mut configured, &port, yaml("7000"));
        variants.push((format!("{name} with postgres.config.port 7000"), configured));
    }
    variants
}

/// The ports make-manifest's rules give a manifest: PostgreSQL's on the
/// nodes, and the one clients (the smoke tests) write to.
fn expected_ports(manifest: &Value) -> (u16, u16) {
    let properties = postgres_properties(manifest);
    let replication = properties["replication"]["enabled"]
        .as_bool()
        .unwrap_or(false);
    let configured = properties["config"]["port"].as_u64().map(|p| p as u16);
    let ha = has_vip(manifest);
    let group = &manifest["instance_groups"][0];
    let vip = group["jobs"][1]["properties"]["vip"]
        .as_str()
        .map(|vip| vip.parse().unwrap());
    let flags = TopologyFlags {
        replication,
        ha,
        instances: Some(group["instances"].as_u64().unwrap() as u32),
        vip,
    };
    let topology = decide_topology(&flags).expect("a topology make-manifest accepts");
    let postgres = postgres_port(replication, configured);
    let write = if ha {
        make_manifest::VIP_PORT
    } else {
        postgres
    };
    if configured.is_none() {
        assert_eq!(write, topology.write_port(), "{flags:?}");
    }
    (postgres, write)
}

/// The value of `port = N` in a rendered postgresql.conf.
fn conf_port(node: &Rendered) -> u16 {
    let conf = node.file("postgres", "config/postgresql.conf");
    let ports: Vec<&str> = conf
        .lines()
        .filter_map(|line| line.strip_prefix("port = "))
        .collect();
    assert_eq!(ports.len(), 1, "one port line in:\n{conf}");
    ports[0].parse().unwrap()
}

/// The value `flag` has in a recorded command line.
fn flag_value(call: &str, flag: &str) -> String {
    let words: Vec<&str> = call.split(' ').collect();
    let at = words
        .iter()
        .position(|word| *word == flag)
        .unwrap_or_else(|| panic!("no {flag} in {call}"));
    words[at + 1].to_string()
}

/// What a postgres node's files and scripts say its port is: postgresql.conf
/// (what the server reads), node.env as the scripts and operators source it,
/// and the flags bin/ctl start gives pg-bootstrap.
fn postgres_ports(node: &Rendered) -> Vec<(&'static str, String)> {
    let vm = Vm::install(node);
    let sourced = vm.sh(". /var/vcap/jobs/postgres/config/node.env && echo \"$PGHOST:$PGPORT\"");
    vm.run_ok(
        "/var/vcap/jobs/postgres/bin/ctl",
        &["start"],
        "/var/vcap/sys/log/postgres/ctl.log",
    );
    let calls = vm.calls("/var/vcap/packages/pg-tools/bin/pg-bootstrap");
    let call = |subcommand: &str| {
        calls
            .iter()
            .find(|call| call.starts_with(subcommand))
            .unwrap_or_else(|| panic!("no pg-bootstrap {subcommand} in {calls:?}"))
            .clone()
    };
    let mut ports = vec![
        ("postgresql.conf", conf_port(node).to_string()),
        (
            "node.env",
            sourced.replace("/var/vcap/sys/run/postgres:", ""),
        ),
        (
            "ctl's prepare --port",
            flag_value(&call("prepare"), "--port"),
        ),
        (
            "ctl's provision --port",
            flag_value(&call("provision"), "--port"),
        ),
    ];
    for peer in call("prepare")
        .split(" --peer ")
        .skip(1)
        .map(|rest| rest.split(' ').next().unwrap().to_string())
    {
        let port = peer.rsplit_once(':').unwrap().1.to_string();
        ports.push(("ctl's prepare --peer", port));
    }
    ports
}

/// The backend port of every server line in a rendered haproxy.cfg.
fn haproxy_backend_ports(node: &Rendered) -> Vec<String> {
    node.file("vip", "config/haproxy.cfg")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("server "))
        .map(|server| {
            let address = server.split(' ').nth(1).unwrap();
            address.rsplit_once(':').unwrap().1.to_string()
        })
        .collect()
}

/// The port the smoke-tests errand writes to: its pgbench runs, with stand-ins.
fn smoke_test_write_port(errand: &Rendered) -> String {
    let vm = Vm::install(errand);
    let run = vm.run("/var/vcap/jobs/smoke-tests/bin/run", &[]);
    assert!(
        run.status.success(),
        "bin/run: {}",
        String::from_utf8_lossy(&run.stdout)
    );
    let pgbench = vm.calls("/var/vcap/packages/postgres/bin/pgbench");
    assert_eq!(pgbench.len(), 2, "pgbench -i, then the load: {pgbench:?}");
    let ports: Vec<String> = pgbench.iter().map(|call| flag_value(call, "-p")).collect();
    assert_eq!(ports[0], ports[1], "{pgbench:?}");
    ports[0].clone()
}

#[test]
fn every_job_renders_the_port_make_manifests_rule_gives() {
    for (variant, manifest) in port_variants() {
        let (postgres, write) = expected_ports(&manifest);
        for instance in instances(&manifest) {
            let node = render(&manifest, &instance);
            if node.has_job("postgres") {
                for (source, port) in postgres_ports(&node) {
                    assert_eq!(
                        port,
                        postgres.to_string(),
                        "{variant}, {instance}: {source}"
                    );
                }
            }
            if node.has_job("vip") {
                for port in haproxy_backend_ports(&node) {
                    assert_eq!(
                        port,
                        postgres.to_string(),
                        "{variant}, {instance}: haproxy's backend"
                    );
                }
            }
            if node.has_job("smoke-tests") {
                assert_eq!(
                    smoke_test_write_port(&node),
                    write.to_string(),
                    "{variant}, {instance}: the smoke tests' write port"
                );
            }
        }
    }
}

/// The HA example reshaped: `instances` nodes, replication on or off, the
/// vip job kept or removed, an etcd group beside it or not.
fn shaped(shape: Shape) -> Value {
    let Shape {
        instances,
        replication,
        ha,
        consensus,
    } = shape;
    let mut manifest = example("ha");
    set(
        &mut manifest,
        &["instance_groups", "0", "instances"],
        yaml(&instances.to_string()),
    );
    set(
        &mut manifest,
        &["instance_groups", "0", "networks", "0", "static_ips"],
        yaml("[10.244.0.2, 10.244.0.3, 10.244.0.4]"),
    );
    let mut enabled = POSTGRES_PROPERTIES.to_vec();
    enabled.extend(["postgres", "replication", "enabled"]);
    set(&mut manifest, &enabled, Value::Bool(replication));
    if !ha {
        manifest["instance_groups"][0]["jobs"]
            .as_sequence_mut()
            .unwrap()
            .retain(|job| job["name"] != "vip");
    }
    if consensus {
        add_etcd_group(&mut manifest);
    }
    manifest
}

/// An etcd group of three beside the postgres group, and the postgres
/// job's client certificate for it (the templates only check it is there).
fn add_etcd_group(manifest: &mut Value) {
    let group = yaml(
        "
name: etcd
instances: 3
networks: [{ name: postgres1 }]
jobs:
  - name: etcd
    properties: { etcd: { tls: { ca: a-ca, certificate: a-certificate, private_key: a-key } } }
",
    );
    manifest["instance_groups"]
        .as_sequence_mut()
        .unwrap()
        .push(group);
    let mut etcd = POSTGRES_PROPERTIES.to_vec();
    etcd.extend(["postgres", "consensus", "etcd"]);
    set(
        manifest,
        &etcd,
        yaml("{certificate: a-certificate, private_key: a-key}"),
    );
}

/// What the templates' message says for each of make-manifest's reasons.
fn shape_message(error: ShapeError) -> &'static str {
    match error {
        ShapeError::HaWithoutReplication => "needs postgres.replication.enabled: true",
        ShapeError::ConsensusWithoutReplication => {
            "failover through the etcd store needs postgres.replication.enabled: true"
        }
        ShapeError::HaNotTwoNodes(_) => "needs exactly 2 instances",
        ShapeError::ReplicationAlone(_) => "needs at least 2 instances",
    }
}

#[test]
fn the_templates_refuse_the_shapes_make_manifest_refuses() {
    for instances in 1..=3 {
        for replication in [false, true] {
            for (ha, consensus) in [(false, false), (true, false), (false, true), (true, true)] {
                let given = Shape {
                    instances,
                    replication,
                    ha,
                    consensus,
                };
                let shape = format!("{given:?}");
                let rendered = try_render(&shaped(given), "postgres/0");
                match (check_shape(given), rendered) {
                    (Ok(()), Ok(_)) => {}
                    (Err(error), Err(message)) => assert!(
                        message.contains(shape_message(error)),
                        "{shape}: make-manifest says {error:?}, the templates: {message}"
                    ),
                    (Ok(()), Err(message)) => {
                        panic!("{shape}: make-manifest accepts it, the templates refuse: {message}")
                    }
                    (Err(error), Ok(_)) => {
                        panic!("{shape}: make-manifest refuses it ({error:?}), the templates render it")
                    }
                }
            }
        }
    }
}

/// pg-bootstrap's verdict on a provisioning spec.
fn bootstrap_accepts(text: &str) -> Result<(), String> {
    spec::parse(text).and_then(|parsed| spec::check(&parsed))
}

#[test]
fn every_spec_the_template_renders_is_one_pg_bootstrap_accepts() {
    for name in ["standalone", "clustered", "ha"] {
        let manifest = example(name);
        for instance in instances(&manifest) {
            let node = render(&manifest, &instance);
            if node.has_job("postgres") {
                let text = node.file("postgres", "config/provision.yml");
                if let Err(error) = bootstrap_accepts(&text) {
                    panic!("{name}, {instance}: pg-bootstrap refuses the rendered spec: {error}");
                }
            }
        }
    }
}

/// A manifest mistake: the users and databases, the replication role (None:
/// replication off), and what the template's render-time error says.
struct Mistake {
    users: &'static str,
    databases: &'static str,
    replication_user: Option<&'static str>,
    refused_with: &'static str,
}

const fn mistake(
    users: &'static str,
    databases: &'static str,
    refused_with: &'static str,
) -> Mistake {
    Mistake {
        users,
        databases,
        replication_user: None,
        refused_with,
    }
}

const MISTAKES: &[Mistake] = &[
    mistake("[{username: nopass}]", "[]", "postgres.users[0] (nopass) has no password"),
    mistake("[{username: a, password: ''}]", "[]", "postgres.users[0] (a) has no password"),
    mistake("[{password: x}]", "[]", "postgres.users[0] has no username"),
    mistake(
        "[{username: a, password: x, pasword: y}]",
        "[]",
        "postgres.users[0] (a) has unknown keys: pasword",
    ),
    mistake("[{username: pg_a, password: x}]", "[]", "postgres.users[0] (pg_a) has a name PostgreSQL reserves"),
    mistake("[{username: public, password: x}]", "[]", "postgres.users[0] (public) has a name PostgreSQL reserves"),
    mistake(
        "[{username: a, password: x}, {username: a, password: y}]",
        "[]",
        "postgres.users[1] (a) is defined twice",
    ),
    mistake(
        "[{username: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, password: x}]",
        "[]",
        "has a name of 64 bytes; PostgreSQL names hold at most 63",
    ),
    mistake("[{username: \"a\\0b\", password: x}]", "[]", r#"postgres.users[0] ("a\u0000b") has a name with a NUL character"#),
    mistake("[{username: a, password: \"x\\0y\"}]", "[]", "postgres.users[0] (a) has a password with a NUL character"),
    mistake("[]", "[{users: []}]", "postgres.databases[0] has no name"),
    mistake(
        "[{username: a, password: x}]",
        "[{name: d, users: [ghost]}]",
        "postgres.databases[0] (d) names user \"ghost\"",
    ),
    mistake("[]", "[{name: d}, {name: d}]", "postgres.databases[1] (d) is listed twice"),
    mistake("[]", "[{name: d, owner: x}]", "postgres.databases[0] (d) has unknown keys: owner"),
    mistake(
        "[]",
        "[{name: d, extensions: ['']}]",
        "postgres.databases[0] (d) names an extension with an empty name",
    ),
    Mistake {
        users: "[{username: app, password: x}]",
        databases: "[]",
        replication_user: Some("app"),
        refused_with: "postgres.replication.user (app) is also listed in postgres.users",
    },
    Mistake {
        users: "[]",
        databases: "[]",
        replication_user: Some("pg_replication"),
        refused_with: "postgres.replication.user (pg_replication) has a name PostgreSQL reserves",
    },
];

/// The clustered example (replication on) or the standalone one, with the
/// mistake's users, databases and replication role.
fn manifest_with(mistake: &Mistake) -> Value {
    let mut manifest = example(if mistake.replication_user.is_some() {
        "clustered"
    } else {
        "standalone"
    });
    let mut at = |key: &str, value: Value| {
        let mut path = POSTGRES_PROPERTIES.to_vec();
        path.extend(["postgres", key]);
        set(&mut manifest, &path, value);
    };
    at("users", yaml(mistake.users));
    at("databases", yaml(mistake.databases));
    if let Some(user) = mistake.replication_user {
        at(
            "replication",
            yaml(&format!(
                "{{enabled: true, password: replication-secret, user: {user}}}"
            )),
        );
    }
    manifest
}

/// The spec pg-bootstrap would read for the mistake, had the template passed
/// the properties through.
fn spec_with(mistake: &Mistake) -> String {
    let mut spec = format!(
        "users: {}\ndatabases: {}\n",
        mistake.users, mistake.databases
    );
    if let Some(user) = mistake.replication_user {
        spec.push_str(&format!(
            "replication: {{username: {user}, password: replication-secret}}\n"
        ));
    }
    spec
}

#[test]
fn the_template_refuses_at_render_time_every_spec_pg_bootstrap_refuses() {
    for mistake in MISTAKES {
        let spec = spec_with(mistake);
        assert!(
            bootstrap_accepts(&spec).is_err(),
            "pg-bootstrap accepts {spec:?}: not a mistake"
        );
        match try_render(&manifest_with(mistake), "postgres/0") {
            Ok(node) => panic!(
                "{spec:?} renders, so pg-bootstrap would only refuse it when postgres starts:\n{}",
                fs::read_to_string(node.path("postgres", "config/provision.yml")).unwrap()
            ),
            Err(message) => assert!(
                message.contains(mistake.refused_with),
                "{spec:?}: expected an error mentioning {:?}, got: {message}",
                mistake.refused_with
            ),
        }
    }
}
