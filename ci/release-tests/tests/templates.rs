//! The release's job templates, rendered as the BOSH director would for the
//! example deployments (standalone, clustered, HA), and checked by the real
//! tools: haproxy, keepalived, bash and PostgreSQL itself.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use release_tests::vm::Vm;
use release_tests::{
    example, instances, interpolated, render, repo_root, set, try_render, yaml, Rendered,
};
use serde_yaml::Value;

const CTL: &str = "/var/vcap/jobs/postgres/bin/ctl";
const CTL_LOG: &str = "/var/vcap/sys/log/postgres/ctl.log";
const MONITOR: &str = "/var/vcap/jobs/postgres/bin/monitor";
const MONITOR_LOG: &str = "/var/vcap/sys/log/postgres/monitor_ctl.log";
const HEALTH: &str = "/var/vcap/jobs/postgres/bin/health";
const HEALTH_LOG: &str = "/var/vcap/sys/log/postgres/health_ctl.log";
const PG_BOOTSTRAP: &str = "/var/vcap/packages/pg-tools/bin/pg-bootstrap";
const PG_MONITOR: &str = "/var/vcap/packages/pg-tools/bin/pg-monitor";
const PG_CTL: &str = "/var/vcap/packages/postgres/bin/pg_ctl";
const PG_ROLE_CHECK: &str = "/var/vcap/packages/pg-tools/bin/pg-role-check";

/// The one call of `pg-bootstrap SUBCOMMAND` the VM's stub recorded.
fn bootstrap_call(vm: &Vm, subcommand: &str) -> String {
    let calls = vm.calls(PG_BOOTSTRAP);
    let mut matching = calls
        .iter()
        .filter(|call| call.starts_with(&format!("{subcommand} ")));
    let call = matching
        .next()
        .unwrap_or_else(|| panic!("no pg-bootstrap {subcommand} among {calls:?}"));
    assert!(
        matching.next().is_none(),
        "pg-bootstrap {subcommand} ran twice: {calls:?}"
    );
    call.clone()
}

/// The flags `bin/ctl start` gives `pg-bootstrap prepare` on this node.
fn prepare_flags(node: &Rendered) -> String {
    let vm = Vm::install(node);
    vm.start_postgres();
    bootstrap_call(&vm, "prepare")
}

/// The flags `bin/monitor start` gives `pg-monitor` on this node (the
/// monitor is stopped again).
fn monitor_flags(node: &Rendered) -> String {
    let vm = Vm::install(node);
    vm.run_ok(MONITOR, &["start"], MONITOR_LOG);
    vm.run_ok(MONITOR, &["stop"], MONITOR_LOG);
    let calls = vm.calls(PG_MONITOR);
    assert_eq!(calls.len(), 1, "pg-monitor ran once: {calls:?}");
    calls[0].clone()
}

fn job_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = fs::read_dir(repo_root().join("release/jobs"))
        .expect("release/jobs")
        .map(|entry| entry.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn spec_of(job_dir: &Path) -> Value {
    let text = fs::read_to_string(job_dir.join("spec")).expect("job spec");
    serde_yaml::from_str(&text).expect("job spec YAML")
}

/// The template sources of a job, plus its monit file (also ERB).
fn template_sources(job_dir: &Path) -> Vec<(String, String)> {
    let spec = spec_of(job_dir);
    let mut sources: Vec<(String, String)> = spec["templates"]
        .as_mapping()
        .expect("templates")
        .keys()
        .map(|key| {
            let name = key.as_str().unwrap().to_string();
            let text =
                fs::read_to_string(job_dir.join("templates").join(&name)).unwrap_or_default();
            (name, text)
        })
        .collect();
    if let Ok(monit) = fs::read_to_string(job_dir.join("monit")) {
        sources.push(("monit".into(), monit));
    }
    sources
}

#[test]
fn every_template_named_in_a_spec_exists() {
    for job_dir in job_dirs() {
        for (name, _) in template_sources(&job_dir) {
            let path = if name == "monit" {
                job_dir.join("monit")
            } else {
                job_dir.join("templates").join(&name)
            };
            assert!(
                path.is_file(),
                "{} names template {name}, which does not exist",
                job_dir.display()
            );
        }
    }
}

/// Property names read with `p(...)` / `if_p(...)` (own properties) or with
/// `<link>.p(...)` (a link's), as string literals.
fn property_reads(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut own = BTreeSet::new();
    let mut linked = BTreeSet::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices("p(") {
        let before = if at == 0 { b' ' } else { bytes[at - 1] };
        let is_if_p = text[..at].ends_with("if_");
        let start = if is_if_p { at - 3 } else { at };
        let prefix = if start == 0 { b' ' } else { bytes[start - 1] };
        if !is_if_p && (before.is_ascii_alphanumeric() || before == b'_') {
            continue;
        }
        let args = &text[at + 2..];
        let args = &args[..args.find(')').unwrap_or(args.len())];
        let names = string_literals(if is_if_p { args } else { first_argument(args) });
        if prefix == b'.' {
            linked.extend(names);
        } else {
            own.extend(names);
        }
    }
    (own, linked)
}

fn first_argument(args: &str) -> &str {
    args.split(',').next().unwrap_or("")
}

fn string_literals(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['"', '\'']) {
        let quote = rest.as_bytes()[open] as char;
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            break;
        };
        names.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    names
}

#[test]
fn every_property_a_template_reads_is_declared() {
    let mut provided = BTreeSet::new();
    for job_dir in job_dirs() {
        for link in spec_of(&job_dir)["provides"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
        {
            for name in link["properties"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
            {
                provided.insert(name.as_str().unwrap().to_string());
            }
        }
    }
    for job_dir in job_dirs() {
        let spec = spec_of(&job_dir);
        let declared: BTreeSet<String> = spec["properties"]
            .as_mapping()
            .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        for (template, text) in template_sources(&job_dir) {
            let (own, linked) = property_reads(&text);
            for name in own {
                assert!(
                    declared.contains(&name),
                    "{}/{template} reads p({name:?}), which the job's spec does not declare",
                    job_dir.display()
                );
            }
            for name in linked {
                assert!(
                    provided.contains(&name),
                    "{}/{template} reads link property {name:?}, which no job provides",
                    job_dir.display()
                );
            }
        }
    }
}

#[test]
fn the_property_scanner_finds_reads() {
    let (own, linked) = property_reads(r#"<%= p("a.b") %> if_p("c", 'd') db.p("e", 1) help("x")"#);
    assert_eq!(own, BTreeSet::from(["a.b".into(), "c".into(), "d".into()]));
    assert_eq!(linked, BTreeSet::from(["e".into()]));
}

fn render_all(name: &str) -> Vec<(String, Rendered)> {
    let manifest = example(name);
    instances(&manifest)
        .into_iter()
        .map(|instance| {
            let rendered = render(&manifest, &instance);
            (instance, rendered)
        })
        .collect()
}

/// Runs `command` and panics with `what` and its output unless it succeeds.
fn assert_succeeds(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run it: {err}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn syntax_check(shell: &str, path: &Path) {
    let what = format!("{shell} -n {}", path.display());
    assert_succeeds(Command::new(shell).arg("-n").arg(path), &what);
}

#[test]
fn every_rendered_script_parses() {
    let mut checked = 0;
    for deployment in ["standalone", "clustered", "ha"] {
        for (_, rendered) in render_all(deployment) {
            for job in fs::read_dir(rendered.root()).unwrap() {
                let bin = job.unwrap().path().join("bin");
                for script in fs::read_dir(&bin).into_iter().flatten() {
                    let script = script.unwrap().path();
                    let text = fs::read_to_string(&script).unwrap();
                    let shell = if text.starts_with("#!/bin/sh") {
                        "sh"
                    } else {
                        "bash"
                    };
                    syntax_check(shell, &script);
                    checked += 1;
                }
            }
        }
    }
    syntax_check(
        "bash",
        &repo_root().join("release/src/pg-tools/share/ctl-utils.sh"),
    );
    assert!(checked >= 20, "only {checked} scripts were rendered");
}

/// Every value of a key ending in "password" in a manifest.
fn passwords(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    (Some(key), Some(password)) if key.ends_with("password") => {
                        found.insert(password.to_string());
                    }
                    _ => passwords(value, found),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| passwords(item, found)),
        _ => {}
    }
}

/// Every rendered file of every instance of the example deployments, by path.
fn rendered_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for deployment in ["standalone", "clustered", "ha"] {
        for (instance, rendered) in render_all(deployment) {
            let mut dirs = vec![rendered.root()];
            while let Some(dir) = dirs.pop() {
                for entry in fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let relative = path.strip_prefix(rendered.root()).unwrap().display();
                        let text = fs::read_to_string(&path).unwrap();
                        files.push((format!("{instance} {relative}"), text));
                    }
                }
            }
        }
    }
    files
}

#[test]
fn no_rendered_script_holds_a_password() {
    let mut secrets = BTreeSet::new();
    for deployment in ["standalone", "clustered", "ha"] {
        passwords(&example(deployment), &mut secrets);
    }
    assert!(
        secrets.len() >= 4,
        "the example manifests hold too few passwords to prove anything: {}",
        secrets.len()
    );
    let files = rendered_files();
    let mut held = BTreeSet::new();
    for (path, text) in &files {
        // Quoting for a shell or a passfile adds backslashes.
        let unescaped = text.replace('\\', "");
        for secret in secrets
            .iter()
            .filter(|secret| unescaped.contains(secret.as_str()))
        {
            // Secrets belong in config/ files, which BOSH installs root:vcap 0640.
            assert!(
                path.split(' ')
                    .nth(1)
                    .is_some_and(|file| file.contains("/config/")),
                "{path} holds a password; scripts must read it from a config file"
            );
            held.insert(secret.clone());
        }
    }
    assert_eq!(held, secrets, "every password reaches some config file");
}

// --- standalone ---------------------------------------------------------------

#[test]
fn a_standalone_node_listens_on_5432_without_replication_or_monitor() {
    let node = render(&example("standalone"), "postgres/0");
    let conf = node.file("postgres", "config/postgresql.conf");
    assert!(conf.contains("\nport = 5432\n"), "{conf}");
    assert!(
        !conf.contains("wal_level"),
        "standalone needs no replication settings: {conf}"
    );
    assert!(!node
        .file("postgres", "monit")
        .contains("check process monitor"));
    assert!(!node
        .file("postgres", "config/hba.conf")
        .contains("replication"));
    let prepare = prepare_flags(&node);
    assert!(
        !prepare.contains("--replication") && !prepare.contains("--peer"),
        "{prepare}"
    );
    assert!(
        prepare.contains("--bootstrap"),
        "the only node is the bootstrap node: {prepare}"
    );
}

#[test]
fn postgresql_conf_renders_values_faithfully() {
    let mut manifest = example("standalone");
    let config = [
        "instance_groups",
        "0",
        "jobs",
        "0",
        "properties",
        "postgres",
        "config",
    ];
    let mut with = |key: &str, value: &str| {
        let mut path = config.to_vec();
        path.push(key);
        set(&mut manifest, &path, yaml(value));
    };
    with("random_page_cost", "1.5");
    with("fsync", "false");
    with("archive_command", r#"'cp %p /backup/%f \\ ok'"#);
    let conf = render(&manifest, "postgres/0").file("postgres", "config/postgresql.conf");
    for line in [
        "max_connections = 200",
        "shared_buffers = '128MB'",
        "synchronous_commit = on",
        "fsync = off",
        "random_page_cost = 1.5",
        r#"application_name = 'it''s "quoted"'"#,
        r"archive_command = 'cp %p /backup/%f \\\\ ok'",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "expected line {line:?} in:\n{conf}"
        );
    }
}

/// A start after a crash or a pg_rewind flushes the data directory with one
/// syncfs; an operator's `postgres.config` still decides.
#[test]
fn a_restart_after_a_crash_flushes_with_syncfs_unless_the_operator_chose() {
    let default = render(&example("ha"), "postgres/0").file("postgres", "config/postgresql.conf");
    assert!(
        default
            .lines()
            .any(|l| l == "recovery_init_sync_method = 'syncfs'"),
        "{default}"
    );
    let mut manifest = example("ha");
    set(
        &mut manifest,
        &[
            "instance_groups",
            "0",
            "jobs",
            "0",
            "properties",
            "postgres",
            "config",
            "recovery_init_sync_method",
        ],
        yaml("fsync"),
    );
    let chosen = render(&manifest, "postgres/0").file("postgres", "config/postgresql.conf");
    assert!(
        chosen
            .lines()
            .any(|l| l == "recovery_init_sync_method = 'fsync'")
            && !chosen.contains("syncfs"),
        "{chosen}"
    );
}

/// Starts postgres (as the unprivileged user) on the rendered postgresql.conf,
/// hba.conf and ident.conf, with /var/vcap moved into a temp dir and the port
/// and listen address overridden to stay on loopback.
struct RenderedServer {
    root: tempfile::TempDir,
    port: u16,
}

impl RenderedServer {
    fn start(node: &Rendered) -> RenderedServer {
        let root = tempfile::Builder::new().prefix("vcap.").tempdir().unwrap();
        let vcap = root.path().join("var/vcap");
        let config_dir = vcap.join("jobs/postgres/config");
        fs::create_dir_all(&config_dir).unwrap();
        fs::create_dir_all(vcap.join("sys/run/postgres")).unwrap();
        for file in ["postgresql.conf", "hba.conf", "ident.conf"] {
            let text = node.file("postgres", &format!("config/{file}"));
            let moved = text.replace("/var/vcap/", &format!("{}/", vcap.display()));
            fs::write(config_dir.join(file), moved).unwrap();
        }
        chown_tree(root.path());
        let data = vcap.join("store/postgres/db");
        run_as_vcap("initdb", |c| {
            c.arg("--pgdata").arg(&data).args([
                "--username",
                "vcap",
                "--auth",
                "trust",
                "--no-sync",
            ]);
        });
        let port = testkit::free_port();
        let options = format!(
            "-c config_file={} -c port={port} -c listen_addresses=127.0.0.1",
            config_dir.join("postgresql.conf").display()
        );
        run_as_vcap("pg_ctl", |c| {
            c.arg("--pgdata")
                .arg(&data)
                .arg("--log")
                .arg(root.path().join("log"));
            c.args(["-o", &options, "--wait", "--timeout", "60", "start"]);
        });
        RenderedServer { root, port }
    }

    fn socket_dir(&self) -> std::path::PathBuf {
        self.root.path().join("var/vcap/sys/run/postgres")
    }

    fn connect(&self, host: &str, user: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host(host)
            .port(self.port)
            .user(user)
            .dbname("postgres")
            .connect(postgres::NoTls)
    }

    fn show(&self, setting: &str) -> String {
        let mut client = self
            .connect(self.socket_dir().to_str().unwrap(), "vcap")
            .unwrap();
        client
            .query_one(&format!("SHOW {setting}"), &[])
            .unwrap()
            .get(0)
    }
}

impl Drop for RenderedServer {
    fn drop(&mut self) {
        let data = self.root.path().join("var/vcap/store/postgres/db");
        let _ = testkit::command_as_user(&testkit::pg_bin().path("pg_ctl"))
            .arg("--pgdata")
            .arg(&data)
            .args(["--mode", "immediate", "--wait", "stop"])
            .output();
    }
}

fn chown_tree(path: &Path) {
    testkit::chown_to_user(path);
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path());
        }
    }
}

fn run_as_vcap(program: &str, configure: impl FnOnce(&mut Command)) {
    let mut command = testkit::command_as_user(&testkit::pg_bin().path(program));
    configure(&mut command);
    assert_succeeds(&mut command, program);
}

#[test]
fn postgres_starts_on_the_rendered_standalone_config() {
    // The default postgres.hba: password logins from anywhere.
    let manifest = with_postgres("standalone", &["postgres", "hba"], "null");
    let node = render(&manifest, "postgres/0");
    let server = RenderedServer::start(&node);
    assert_eq!(server.show("max_connections"), "200");
    assert_eq!(server.show("application_name"), r#"it's "quoted""#);
    assert_eq!(server.show("password_encryption"), "scram-sha-256");
    // hba.conf: over the network every login needs its password, vcap's included.
    let refused = postgres::Config::new()
        .host("127.0.0.1")
        .port(server.port)
        .user("vcap")
        .password("not-the-password")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .err()
        .expect("a TCP login with a wrong password");
    let code = refused.code().map(|c| c.code().to_string());
    assert_eq!(
        code.as_deref(),
        Some("28P01"),
        "expected a password failure, got {refused}"
    );
}

#[test]
fn postgres_starts_on_the_rendered_ha_config() {
    let node = render(&example("ha"), "postgres/1");
    let server = RenderedServer::start(&node);
    assert_eq!(server.show("wal_level"), "replica");
    assert_eq!(server.show("wal_log_hints"), "on");
    assert_eq!(server.show("hot_standby"), "on");
    assert_eq!(server.show("max_wal_senders"), "10");
}

#[test]
fn postgresql_conf_strings_are_quoted_as_pg_bootstrap_quotes_them_and_read_back_as_given() {
    let values = [
        "plain",
        "it's",
        r"back\slash",
        r"both \' and ''",
        "semi;colon # not a comment",
        "ünï cödé",
    ];
    let mut manifest = with_postgres("standalone", &["postgres", "hba"], "null");
    let name = |i: usize| format!("quoting.value{i}");
    for (i, value) in values.iter().enumerate() {
        let mut path = POSTGRES.to_vec();
        let key = name(i);
        path.extend(["postgres", "config", &key]);
        set(&mut manifest, &path, Value::String(value.to_string()));
    }
    let node = render(&manifest, "postgres/0");
    let conf = node.file("postgres", "config/postgresql.conf");
    for (i, value) in values.iter().enumerate() {
        let line = format!("{} = {}", name(i), pg_bootstrap::quote::conf_string(value));
        assert!(
            conf.lines().any(|l| l == line),
            "expected line {line:?} in:\n{conf}"
        );
    }
    let server = RenderedServer::start(&node);
    for (i, value) in values.iter().enumerate() {
        assert_eq!(server.show(&name(i)), *value);
    }
}

#[test]
fn the_provisioning_spec_holds_users_databases_and_the_replication_role() {
    let standalone = render(&example("standalone"), "postgres/0");
    let spec: Value =
        serde_yaml::from_str(&standalone.file("postgres", "config/provision.yml")).unwrap();
    assert_eq!(spec["users"][0]["username"], "admin");
    assert_eq!(spec["users"][0]["admin"], true);
    assert_eq!(spec["users"][1]["password"], "p@ss'w\"rd;");
    assert_eq!(
        spec["databases"][0]["extensions"],
        yaml("[citext, pgcrypto]")
    );
    assert!(
        spec.get("replication").is_none(),
        "standalone has no replication role"
    );

    let ha = render(&example("ha"), "postgres/0");
    let spec: Value = serde_yaml::from_str(&ha.file("postgres", "config/provision.yml")).unwrap();
    assert_eq!(spec["replication"]["username"], "replication");
    assert_eq!(spec["replication"]["password"], "replication-secret");
}

// --- clustered ----------------------------------------------------------------

#[test]
fn clustered_nodes_know_every_peer_and_run_no_monitor() {
    let manifest = example("clustered");
    let addresses = ["10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5"];
    for (index, instance) in instances(&manifest).iter().enumerate() {
        let node = render(&manifest, instance);
        let prepare = prepare_flags(&node);
        for (other, address) in addresses.iter().enumerate() {
            let flag = format!("--peer {address}:6432");
            assert_eq!(
                prepare.contains(&flag),
                other != index,
                "{instance}: {flag} in\n{prepare}"
            );
        }
        assert_eq!(
            prepare.contains("--bootstrap"),
            index == 0,
            "{instance}: only node 0 bootstraps"
        );
        // Promotion in a star of four is the operator's call: no monitor.
        assert!(!node
            .file("postgres", "monit")
            .contains("check process monitor"));
        let hba = node.file("postgres", "config/hba.conf");
        for address in addresses {
            let line = format!("host replication replication {address}/32 scram-sha-256");
            assert!(hba.contains(&line), "{instance}: missing {line:?}");
        }
        assert!(
            !hba.contains("trust"),
            "never trust over the network:\n{hba}"
        );
    }
}

// --- HA -----------------------------------------------------------------------

#[test]
fn haproxy_accepts_the_rendered_config() {
    let external = render(&with_vip(&["ha_proxy", "check"], "external"), "postgres/0");
    for (instance, node) in render_all("ha")
        .into_iter()
        .chain([("external".into(), external)])
    {
        let mut check = Command::new(testkit::haproxy_bin());
        check
            .arg("-c")
            .arg("-f")
            .arg(node.path("vip", "config/haproxy.cfg"));
        assert_succeeds(&mut check, &format!("{instance}: haproxy -c"));
    }
}

/// A backend's section of a rendered haproxy.cfg.
fn backend(cfg: &str, name: &str) -> String {
    let start = cfg.find(&format!("\nbackend {name}\n")).expect("backend");
    cfg[start + 1..].split("\n\n").next().unwrap().to_string()
}

#[test]
fn haproxy_checks_each_nodes_health_endpoint_over_http_by_default() {
    let node = render(&example("ha"), "postgres/0");
    let cfg = node.file("vip", "config/haproxy.cfg");
    let write = backend(&cfg, "postgres");
    assert!(write.contains("option httpchk"), "{write}");
    assert!(
        write.contains("http-check send meth GET uri /primary\n"),
        "{write}"
    );
    assert!(write.contains("http-check expect status 200"), "{write}");
    // A node down for writes is checked every 250 ms: it may be the new primary.
    assert!(
        write.contains(
            "server node0 10.244.0.2:6432 check port 8008 inter 1000 fastinter 250 downinter 250"
        ),
        "{write}"
    );
    assert!(
        write.contains("server node1 10.244.0.3:6432 check port 8008"),
        "{write}"
    );
    let read = backend(&cfg, "readonly");
    assert!(
        read.contains("http-check send meth GET uri /replica?streaming\n"),
        "{read}"
    );
    assert!(
        read.contains(
            "server node1 10.244.0.3:6432 check port 8008 inter 1000 fastinter 250 downinter 1000"
        ),
        "{read}"
    );
    // No fork per check, and haproxy is not allowed one.
    assert!(
        !cfg.contains("external-check") && !cfg.contains("insecure-fork-wanted"),
        "{cfg}"
    );
    assert!(cfg.contains("bind *:5432") && cfg.contains("bind *:7432"));
    assert!(cfg.contains("use_backend postgres if { nbsrv(readonly) eq 0 }"));
    assert!(cfg.contains("on-marked-down shutdown-sessions"));
    assert!(cfg.contains("stats auth admin:stats-secret"));

    // The endpoint the checks ask, on the port they ask.
    let monit = node.file("postgres", "monit");
    assert!(monit.contains("check process health"), "{monit}");
    let env = node.file("postgres", "config/node.env");
    assert!(env.contains("HEALTH_LISTEN=10.244.0.2:8008"), "{env}");
}

#[test]
fn the_health_endpoint_port_and_address_follow_the_properties() {
    let mut manifest = with_postgres("ha", &["postgres", "health", "port"], "9100");
    let mut bind = POSTGRES.to_vec();
    bind.extend_from_slice(&["postgres", "health", "bind"]);
    set(&mut manifest, &bind, yaml("0.0.0.0"));
    let node = render(&manifest, "postgres/1");
    assert!(node
        .file("postgres", "config/node.env")
        .contains("HEALTH_LISTEN=0.0.0.0:9100"));
    let cfg = node.file("vip", "config/haproxy.cfg");
    assert!(
        cfg.contains("server node0 10.244.0.2:6432 check port 9100"),
        "{cfg}"
    );
}

#[test]
fn bin_health_runs_the_endpoint_as_vcap_on_the_node_address() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    vm.run_ok(HEALTH, &["start"], HEALTH_LOG);
    testkit::wait_for(
        "the endpoint's stub to run",
        Duration::from_secs(10),
        || !vm.user_of(PG_ROLE_CHECK).is_empty(),
    );
    assert_eq!(vm.user_of(PG_ROLE_CHECK), "vcap");
    vm.run_ok(HEALTH, &["stop"], HEALTH_LOG);
    let calls = vm.calls(PG_ROLE_CHECK);
    assert_eq!(calls.len(), 1, "pg-role-check ran once: {calls:?}");
    assert_eq!(
        calls[0],
        "serve --listen 10.244.0.2:8008 --host /var/vcap/sys/run/postgres --port 6432 \
         --user vcap --dbname postgres --connect-timeout 2 \
         --monitor-state /var/vcap/sys/run/postgres/monitor-state.json \
         --fence-record /var/vcap/store/postgres/fenced.json"
    );
}

#[test]
fn ha_proxy_check_external_keeps_the_external_check_scripts() {
    let node = render(&with_vip(&["ha_proxy", "check"], "external"), "postgres/0");
    let cfg = node.file("vip", "config/haproxy.cfg");
    let write = backend(&cfg, "postgres");
    assert!(write.contains("external-check command /var/vcap/jobs/postgres/bin/check-primary"));
    assert!(
        write.contains("server node0 10.244.0.2:6432 check inter 1000"),
        "{write}"
    );
    assert!(
        !cfg.contains("httpchk") && !cfg.contains("check port"),
        "{cfg}"
    );
    let read = backend(&cfg, "readonly");
    assert!(read.contains("external-check command /var/vcap/jobs/postgres/bin/check-replica"));
    assert!(cfg.contains("insecure-fork-wanted") && cfg.contains("\n    external-check\n"));

    let primary_check = node.file("postgres", "bin/check-primary");
    assert!(primary_check.contains("pg-role-check --expect primary --retries 1 \"$@\""));
    let replica_check = node.file("postgres", "bin/check-replica");
    assert!(replica_check.contains("--expect replica --streaming"));
}

#[test]
fn a_check_mode_haproxy_cannot_use_is_refused_at_render_time() {
    assert_render_fails(
        &with_vip(&["ha_proxy", "check"], "tcp"),
        "postgres/0",
        "'ha_proxy.check' must be http or external, got \"tcp\"",
    );
    let without_endpoint = with_postgres("ha", &["postgres", "health", "enabled"], "false");
    assert_render_fails(
        &without_endpoint,
        "postgres/0",
        "ha_proxy.check http needs the postgres job's health endpoint",
    );
    assert_render_fails(
        &with_postgres("ha", &["postgres", "health", "port"], "70000"),
        "postgres/0",
        "postgres.health.port must be a port (1-65535), got 70000",
    );
}

#[test]
fn the_readonly_port_follows_the_postgres_property_else_port_plus_2000() {
    let mut manifest = example("ha");
    set(
        &mut manifest,
        &["instance_groups", "0", "jobs", "1", "properties", "port"],
        yaml("6000"),
    );
    let cfg = render(&manifest, "postgres/0").file("vip", "config/haproxy.cfg");
    assert!(cfg.contains("bind *:8000"), "{cfg}");
    let replication = [
        "instance_groups",
        "0",
        "jobs",
        "0",
        "properties",
        "postgres",
        "replication",
        "readonly_port",
    ];
    set(&mut manifest, &replication, yaml("7777"));
    let cfg = render(&manifest, "postgres/0").file("vip", "config/haproxy.cfg");
    assert!(cfg.contains("bind *:7777"), "{cfg}");
}

#[test]
fn keepalived_accepts_the_rendered_config() {
    for (instance, node) in render_all("ha") {
        let conf = node.file("vip", "config/keepalived.conf");
        assert!(
            conf.contains("interface auto"),
            "the ctl script resolves 'auto' at start"
        );
        // What keepalived_ctl does at start, in throwaway namespaces: an
        // interface of its own (keepalived refuses the loopback interface), and
        // a private /var holding an executable where the track script will be.
        let resolved = node.path("vip", "config/keepalived.resolved.conf");
        fs::write(&resolved, conf.replace("interface auto", "interface vip0")).unwrap();
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs tmpfs /var \
             && mkdir -p /var/vcap/packages/pg-tools/bin \
             && cp /bin/true /var/vcap/packages/pg-tools/bin/pg-vrrp-watch \
             && ip link add vip0 type veth peer name vip1 \
             && {} --config-test -f {}",
            testkit::keepalived_bin().display(),
            resolved.display()
        );
        let mut test = Command::new("unshare");
        test.args(["--mount", "--net", "sh", "-c", &script]);
        assert_succeeds(&mut test, &format!("{instance}: keepalived --config-test"));
    }
}

#[test]
fn the_bootstrap_node_wins_the_first_vip_election() {
    let manifest = example("ha");
    let first = render(&manifest, "postgres/0").file("vip", "config/keepalived.conf");
    let second = render(&manifest, "postgres/1").file("vip", "config/keepalived.conf");
    assert!(first.contains("priority 254") && second.contains("priority 253"));
    assert!(first.contains("unicast_src_ip 10.244.0.2") && first.contains("        10.244.0.3\n"));
    assert!(
        second.contains("unicast_src_ip 10.244.0.3") && second.contains("        10.244.0.2\n")
    );
    assert!(first.contains("script \"/var/vcap/packages/pg-tools/bin/pg-vrrp-watch --pidfile /var/vcap/sys/run/vip/haproxy.pid --drain-file /var/vcap/sys/run/vip/draining\""));
}

#[test]
fn the_ha_pair_runs_the_monitor_with_the_seeds_fence_commands() {
    let manifest = example("ha");
    for (instance, peer) in [("postgres/0", "10.244.0.3"), ("postgres/1", "10.244.0.2")] {
        let node = render(&manifest, instance);
        assert!(node
            .file("postgres", "monit")
            .contains("check process monitor"));
        let flags = monitor_flags(&node);
        assert!(flags.contains(&format!("--peer {peer}:6432")), "{flags}");
        assert!(flags.contains("--synchronous on"), "{flags}");
        let monitor = node.file("postgres", "bin/monitor");
        for service in ["postgres", "haproxy", "monitor"] {
            let fence = format!("--fence-cmd '/var/vcap/bosh/bin/monit stop {service}'");
            assert!(monitor.contains(&fence), "missing {fence}");
        }
        let vip_monit = node.file("vip", "monit");
        assert!(
            vip_monit.contains("check process haproxy")
                && vip_monit.contains("check process keepalived")
        );
    }
}

#[test]
fn keepalived_can_be_disabled() {
    let mut manifest = example("ha");
    let path = [
        "instance_groups",
        "0",
        "jobs",
        "1",
        "properties",
        "keepalived",
        "enabled",
    ];
    set(&mut manifest, &path, yaml("false"));
    let monit = render(&manifest, "postgres/0").file("vip", "monit");
    assert!(monit.contains("check process haproxy") && !monit.contains("keepalived"));
}

// --- the scripts, run on a VM with stand-ins for the programs ----------------

#[test]
fn ctl_start_prepares_starts_and_provisions_the_node_it_runs_on() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    vm.start_postgres();
    let prepare = bootstrap_call(&vm, "prepare");
    for flag in [
        "--data-dir /var/vcap/store/postgres/db",
        "--pg-bin /var/vcap/packages/postgres/bin",
        "--run-as vcap",
        "--index 1",
        "--port 6432",
        "--grace 15",
        "--connect-timeout 5",
        "--retries 3",
        "--replication --replication-user replication",
        "--replication-password-file /var/vcap/jobs/postgres/config/replication.password",
        "--peer 10.244.0.2:6432",
    ] {
        assert!(prepare.contains(flag), "missing {flag} in {prepare}");
    }
    assert!(!prepare.contains("--bootstrap"), "{prepare}");
    assert_eq!(
        vm.calls(PG_CTL),
        [
            "--pgdata /var/vcap/store/postgres/db start --wait --timeout 3600 \
          --log /var/vcap/sys/log/postgres/postgresql.log \
          -o -c config_file=/var/vcap/jobs/postgres/config/postgresql.conf",
            "--pgdata /var/vcap/store/postgres/db status",
        ]
    );
    assert_eq!(
        bootstrap_call(&vm, "provision"),
        "provision --spec /var/vcap/jobs/postgres/config/provision.yml \
         --host /var/vcap/sys/run/postgres --port 6432 --user vcap --dbname postgres"
    );
}

/// monit waits, after a start program, for the process its pidfile names,
/// and does nothing else meanwhile: ctl start returns with its background
/// start named there, and a stop ends that start before it starts postgres.
#[test]
fn ctl_start_leaves_a_start_monit_can_stop_in_the_pidfile() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    // A preparation that takes long, as a clone does.
    vm.stub(
        PG_BOOTSTRAP,
        "if [[ $1 == prepare ]]; then exec sleep 30; fi",
    );
    vm.run_ok(CTL, &["start"], CTL_LOG);
    let pidfile = fs::read_to_string(vm.path(POSTGRES_PIDFILE)).unwrap();
    let starter = pidfile.trim();
    let command = fs::read_to_string(format!("/proc/{starter}/cmdline")).unwrap_or_default();
    assert!(
        command.contains("bin/ctl\0starting"),
        "the pidfile names {starter}: {command:?}"
    );
    assert_eq!(vm.calls(PG_CTL), Vec::<String>::new(), "started too soon");
    // The postmaster runs as vcap, and writes its own pid over the starter's.
    let owner =
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(vm.path(POSTGRES_PIDFILE)).unwrap());
    let vcap = Command::new("id").args(["-u", "vcap"]).output().unwrap();
    assert_eq!(
        owner.to_string(),
        String::from_utf8_lossy(&vcap.stdout).trim()
    );

    vm.run_ok(CTL, &["stop"], CTL_LOG);
    // Ended, or a zombie nobody reaps (its parent, ctl start, is gone).
    let state = fs::read_to_string(format!("/proc/{starter}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or("").chars().next();
    assert!(
        matches!(state, None | Some('Z')),
        "the start under way outlived the stop (state {state:?})"
    );
    assert!(
        !vm.calls(PG_CTL).iter().any(|call| call.contains(" start ")),
        "postgres started after the stop: {:?}",
        vm.calls(PG_CTL)
    );
}

/// pg_ctl --wait exits 0 when a standby's server ends during its start: the
/// start still fails, with the server's own reason, and provisions nothing.
#[test]
fn ctl_start_fails_when_the_server_ends_during_its_start() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    vm.stub(PG_CTL, r#"if [[ $3 == status ]]; then exit 3; fi"#);
    let log = vm.path("/var/vcap/sys/log/postgres/postgresql.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(
        &log,
        "2026-11-30 19:06:45.404 GMT [15352] FATAL:  could not access file \"no_such_library\"\n\
         2026-11-30 19:06:45.405 GMT [15352] LOG:  database system is shut down\n",
    )
    .unwrap();
    vm.start_postgres();
    let ctl_log = fs::read_to_string(vm.path(CTL_LOG)).unwrap();
    assert!(
        ctl_log.contains(
            "postgres exited during its start: 2026-11-30 19:06:45.404 GMT [15352] FATAL:  \
             could not access file \"no_such_library\""
        ),
        "{ctl_log}"
    );
    assert!(
        !vm.calls(PG_BOOTSTRAP)
            .iter()
            .any(|call| call.starts_with("provision ")),
        "{ctl_log}"
    );
    assert!(!vm.path(PROVISIONED).exists());
}

#[test]
fn ctl_stop_shuts_postgres_down_fast() {
    let vm = Vm::install(&render(&example("standalone"), "postgres/0"));
    vm.run_ok(CTL, &["stop"], CTL_LOG);
    assert_eq!(
        vm.calls(PG_CTL),
        [
            "--pgdata /var/vcap/store/postgres/db status",
            "--pgdata /var/vcap/store/postgres/db stop --mode fast --wait --timeout 90",
        ]
    );
}

#[test]
fn the_monitor_watches_the_peer_with_the_jobs_settings() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    vm.run_ok(MONITOR, &["start"], MONITOR_LOG);
    let flags = &vm.calls(PG_MONITOR)[0];
    for flag in [
        "--local /var/vcap/sys/run/postgres:6432",
        "--peer 10.244.0.3:6432",
        "--index 0",
        "--peer-index 1",
        "--user vcap --dbname postgres",
        "--peer-user replication",
        "--connect-timeout 5",
        "--retries 3",
        "--interval 1",
        "--pidfile /var/vcap/sys/run/postgres/monitor.pid",
        "--pg-ctl /var/vcap/packages/postgres/bin/pg_ctl",
        "--data-dir /var/vcap/store/postgres/db",
        "--isolation-timeout 5",
        "--replica-silence 2s",
        "--rejoin-cmd /var/vcap/bosh/bin/monit restart postgres",
        "--fence-record /var/vcap/store/postgres/fenced.json",
    ] {
        assert!(flags.contains(flag), "missing {flag} in {flags}");
    }
    assert!(
        !flags.contains("--witness") && !flags.contains("--max-lag-bytes"),
        "{flags}"
    );
    assert!(
        vm.env(PG_MONITOR)
            .contains(&"PGPASSWORD=replication-secret".to_string()),
        "the password reaches pg-monitor in its environment"
    );
    vm.run_ok(MONITOR, &["stop"], MONITOR_LOG);
}

#[test]
fn the_monitor_stops_when_monit_stops_it() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    vm.run_ok(MONITOR, &["start"], MONITOR_LOG);
    let pidfile = vm.path("/var/vcap/sys/run/postgres/monitor.pid");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    vm.run_ok(MONITOR, &["stop"], MONITOR_LOG);
    assert!(!pidfile.exists(), "the stop removes the pidfile");
    testkit::wait_for(
        "the stopped pg-monitor to exit",
        std::time::Duration::from_secs(5),
        || {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z"))
        },
    );
}

#[test]
fn witnesses_and_the_lag_guard_reach_the_monitor() {
    let mut manifest = with_postgres(
        "ha",
        &["postgres", "replication", "witnesses"],
        "['10.244.0.20:22', '[fd00::1]:80']",
    );
    let mut lag = POSTGRES.to_vec();
    lag.extend(["postgres", "replication", "max_lag_bytes"]);
    set(&mut manifest, &lag, yaml("1048576"));
    let flags = monitor_flags(&render(&manifest, "postgres/0"));
    assert!(
        flags.contains("--witness 10.244.0.20:22 --witness [fd00::1]:80"),
        "{flags}"
    );
    assert!(flags.contains("--max-lag-bytes 1048576"), "{flags}");
}

#[test]
fn asynchronous_replication_watches_no_replica_silence() {
    let manifest = with_postgres("ha", &["postgres", "replication", "synchronous"], "off");
    let flags = monitor_flags(&render(&manifest, "postgres/0"));
    assert!(flags.contains("--synchronous off"), "{flags}");
    assert!(!flags.contains("--replica-silence"), "{flags}");
}

#[test]
fn haproxys_checks_ask_pg_role_check_as_the_replication_user() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    let haproxy_args = ["10.244.0.10", "5432", "10.244.0.3", "6432"];
    for (script, expect) in [
        ("check-primary", "--expect primary --retries 1"),
        ("check-replica", "--expect replica --streaming --retries 1"),
    ] {
        let output = vm.run(
            &format!("/var/vcap/jobs/postgres/bin/{script}"),
            &haproxy_args,
        );
        assert!(output.status.success(), "{script}: {output:?}");
        let calls = vm.calls(PG_ROLE_CHECK);
        assert_eq!(
            calls.last().unwrap(),
            &format!("{expect} {}", haproxy_args.join(" "))
        );
        let env = vm.env(PG_ROLE_CHECK);
        for variable in [
            "PGUSER=replication",
            "PGDATABASE=postgres",
            "PGCONNECT_TIMEOUT=2",
            "PGPASSWORD=replication-secret",
        ] {
            assert!(
                env.contains(&variable.to_string()),
                "{script}: {variable} not in {env:?}"
            );
        }
    }
}

#[test]
fn an_operator_who_sources_node_env_reaches_the_local_postgres() {
    let vm = Vm::install(&render(&example("clustered"), "postgres/2"));
    let env =
        vm.sh(". /var/vcap/jobs/postgres/config/node.env && sh -c 'echo \"$PGHOST $PGPORT\"'");
    assert_eq!(env, "/var/vcap/sys/run/postgres 6432");
}

// --- bad input ----------------------------------------------------------------

fn assert_render_fails(manifest: &Value, instance: &str, expected: &str) {
    match try_render(manifest, instance) {
        Ok(_) => {
            panic!("rendering {instance} succeeded; expected an error mentioning {expected:?}")
        }
        Err(message) => assert!(
            message.contains(expected),
            "expected an error mentioning {expected:?}, got: {message}"
        ),
    }
}

const POSTGRES: [&str; 5] = ["instance_groups", "0", "jobs", "0", "properties"];

fn with_postgres(name: &str, path: &[&str], value: &str) -> Value {
    let mut manifest = example(name);
    let mut full = POSTGRES.to_vec();
    full.extend_from_slice(path);
    set(&mut manifest, &full, yaml(value));
    manifest
}

#[test]
fn an_invalid_port_is_refused() {
    let manifest = with_postgres("standalone", &["postgres", "config", "port"], "'abc'");
    assert_render_fails(&manifest, "postgres/0", "postgres.config.port");
    let mut manifest = example("ha");
    set(
        &mut manifest,
        &["instance_groups", "0", "jobs", "1", "properties", "port"],
        yaml("70000"),
    );
    assert_render_fails(&manifest, "postgres/0", "'port'");
}

#[test]
fn a_grace_of_zero_or_less_is_refused() {
    let manifest = with_postgres("ha", &["postgres", "replication", "grace"], "0");
    assert_render_fails(&manifest, "postgres/0", "postgres.replication.grace");
    let manifest = with_postgres("ha", &["postgres", "replication", "grace"], "-5");
    assert_render_fails(&manifest, "postgres/0", "postgres.replication.grace");
}

#[test]
fn a_monitor_timing_of_zero_or_a_word_is_refused() {
    for name in ["isolation_timeout", "monitor_interval"] {
        for value in ["0", "soon"] {
            let manifest = with_postgres("ha", &["postgres", "replication", name], value);
            assert_render_fails(
                &manifest,
                "postgres/0",
                &format!("postgres.replication.{name}"),
            );
        }
    }
}

#[test]
fn a_monitor_interval_longer_than_a_day_is_refused() {
    let manifest = with_postgres(
        "ha",
        &["postgres", "replication", "monitor_interval"],
        "86401",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.monitor_interval must be a number of seconds from 0.001 to 86400, got 86401",
    );
}

#[test]
fn an_isolation_timeout_longer_than_a_day_is_refused() {
    let manifest = with_postgres(
        "ha",
        &["postgres", "replication", "isolation_timeout"],
        "1e6",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.isolation_timeout must be a number of seconds from 0.001 to 86400, got 1000000.0",
    );
}

#[test]
fn witnesses_that_are_not_a_list_are_refused() {
    let manifest = with_postgres(
        "ha",
        &["postgres", "replication", "witnesses"],
        "10.244.0.20:22",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.witnesses must be a list of HOST:PORT, got \"10.244.0.20:22\"",
    );
}

#[test]
fn a_witness_without_a_port_is_refused() {
    let manifest = with_postgres(
        "ha",
        &["postgres", "replication", "witnesses"],
        "['10.244.0.20']",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.witnesses: \"10.244.0.20\" is not HOST:PORT (port 1-65535)",
    );
}

#[test]
fn a_witness_port_out_of_range_is_refused() {
    let manifest = with_postgres(
        "ha",
        &["postgres", "replication", "witnesses"],
        "['10.244.0.20:22', '10.244.0.21:65536']",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.witnesses: \"10.244.0.21:65536\" is not HOST:PORT (port 1-65535)",
    );
}

#[test]
fn a_psql_error_count_of_zero_is_refused() {
    let manifest = with_postgres("ha", &["postgres", "replication", "psql_error_count"], "0");
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.replication.psql_error_count must be a whole number of at least 1, got 0",
    );
}

/// As in the original release, each node of an unreplicated group is a
/// standalone primary of its own (make-manifest refuses to write such a
/// deployment; the release still runs one).
#[test]
fn two_nodes_without_replication_are_each_standalone() {
    let mut manifest = example("standalone");
    set(
        &mut manifest,
        &["instance_groups", "0", "instances"],
        yaml("2"),
    );
    set(
        &mut manifest,
        &["instance_groups", "0", "networks", "0", "static_ips"],
        yaml("[10.244.0.2, 10.244.0.3]"),
    );
    for instance in ["postgres/0", "postgres/1"] {
        let node = render(&manifest, instance);
        let vm = Vm::install(&node);
        assert_eq!(
            vm.sh(". /var/vcap/jobs/postgres/config/node.env && echo $REPLICATION:$PGPORT"),
            "false:5432",
            "{instance}"
        );
    }
}

#[test]
fn a_config_value_of_unsupported_type_is_refused() {
    let manifest = with_postgres(
        "standalone",
        &["postgres", "config", "shared_preload_libraries"],
        "[a, b]",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.config.shared_preload_libraries",
    );
}

#[test]
fn a_user_without_password_is_refused() {
    let manifest = with_postgres("standalone", &["postgres", "users"], "[{username: nopass}]");
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.users[0] (nopass) has no password",
    );
}

#[test]
fn a_database_naming_an_unknown_user_is_refused() {
    let manifest = with_postgres(
        "standalone",
        &["postgres", "databases"],
        "[{name: d, users: [ghost]}]",
    );
    assert_render_fails(
        &manifest,
        "postgres/0",
        "postgres.databases[0] (d) names user \"ghost\"",
    );
}

#[test]
fn replication_without_a_password_is_refused() {
    let mut manifest = example("clustered");
    let path = [
        "instance_groups",
        "0",
        "jobs",
        "0",
        "properties",
        "postgres",
        "replication",
        "password",
    ];
    set(&mut manifest, &path, Value::Null);
    assert_render_fails(&manifest, "postgres/1", "postgres.replication.password");
}

#[test]
fn the_ha_pair_needs_exactly_two_instances() {
    for count in ["1", "3"] {
        let mut manifest = example("ha");
        set(
            &mut manifest,
            &["instance_groups", "0", "instances"],
            yaml(count),
        );
        let ips = "[10.244.0.2, 10.244.0.3, 10.244.0.4]";
        set(
            &mut manifest,
            &["instance_groups", "0", "networks", "0", "static_ips"],
            yaml(ips),
        );
        assert_render_fails(&manifest, "postgres/0", "exactly 2");
    }
}

#[test]
fn a_vip_that_is_not_an_ip_address_is_refused() {
    let mut manifest = example("ha");
    set(
        &mut manifest,
        &["instance_groups", "0", "jobs", "1", "properties", "vip"],
        yaml("db.example.com"),
    );
    assert_render_fails(&manifest, "postgres/0", "'vip' must be an IP address");
}

// --- make-manifest's output ---------------------------------------------------------

#[test]
fn every_manifest_make_manifest_writes_renders() {
    let golden = repo_root().join("make-manifest/tests/golden");
    let mut rendered = 0;
    for case in fs::read_dir(&golden).expect("make-manifest golden files") {
        let path = case.unwrap().path().join("manifest.yml");
        let manifest = interpolated(&path);
        for instance in instances(&manifest) {
            if let Err(message) = try_render(&manifest, &instance) {
                panic!("{}: {instance}: {message}", path.display());
            }
            rendered += 1;
        }
    }
    assert!(rendered >= 20, "only {rendered} instances rendered");
}

#[test]
fn the_readme_documents_every_property_of_every_job() {
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    for job_dir in job_dirs() {
        let spec = spec_of(&job_dir);
        for name in spec["properties"]
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let name = name.as_str().unwrap();
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md does not document property `{name}` of {}",
                job_dir.display()
            );
        }
    }
}

#[test]
fn the_manifests_failover_pause_is_set_and_lifted_at_each_monitor_start() {
    let paused = with_postgres("ha", &["postgres", "replication", "pause_failover"], "true");
    let monitor = render(&paused, "postgres/0").file("postgres", "bin/monitor");
    assert!(
        monitor.contains("touch \"$RUN_DIR/failover.paused-by-manifest\""),
        "{monitor}"
    );
    let running = render(&example("ha"), "postgres/0").file("postgres", "bin/monitor");
    assert!(
        running.contains("rm -f \"$RUN_DIR/failover.paused-by-manifest\""),
        "{running}"
    );
    for manifest in [paused, example("ha")] {
        let flags = monitor_flags(&render(&manifest, "postgres/0"));
        assert!(
            flags.contains("--pause-file /var/vcap/store/postgres/failover.paused"),
            "{flags}"
        );
        assert!(
            flags.contains("--pause-file /var/vcap/sys/run/postgres/failover.paused-by-manifest"),
            "{flags}"
        );
    }
}

// --- bin/recover ----------------------------------------------------------------

#[test]
fn bin_recover_hands_pg_monitor_recover_the_nodes_paths_peer_and_start_commands() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    vm.run_ok(
        "/var/vcap/jobs/postgres/bin/recover",
        &[],
        "/var/vcap/sys/log/postgres/ctl.log",
    );
    let arguments = vm.recover_arguments();
    assert_eq!(arguments.first().map(String::as_str), Some("recover"));
    let value = |flag: &str| {
        arguments
            .windows(2)
            .find(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
    };
    let monit = "/var/vcap/bosh/bin/monit";
    for (flag, expected) in [
        ("--local", "/var/vcap/sys/run/postgres:6432".to_string()),
        ("--user", "vcap".into()),
        ("--peer", "10.244.0.3:6432".into()),
        ("--peer-user", "replication".into()),
        (
            "--peer-password-file",
            "/var/vcap/jobs/postgres/config/replication.password".into(),
        ),
        (
            "--postgres-pidfile",
            "/var/vcap/sys/run/postgres/postgres.pid".into(),
        ),
        (
            "--monitor-pidfile",
            "/var/vcap/sys/run/postgres/monitor.pid".into(),
        ),
        (
            "--haproxy-pidfile",
            "/var/vcap/sys/run/vip/haproxy.pid".into(),
        ),
        (
            "--fence-record",
            "/var/vcap/store/postgres/fenced.json".into(),
        ),
        ("--start-postgres-cmd", format!("{monit} start postgres")),
        // postgres.replication.grace (15) + 300 s for a rewind or a clone.
        ("--start-timeout", "315".into()),
        ("--start-monitor-cmd", format!("{monit} start monitor")),
        ("--start-haproxy-cmd", format!("{monit} start haproxy")),
        ("--vip-job-dir", "/var/vcap/jobs/vip".into()),
    ] {
        assert_eq!(
            value(flag),
            Some(expected.as_str()),
            "{flag} in {arguments:?}"
        );
    }
}

// --- the lifecycle: pre-start, post-start, bin/tune ------------------------------

const PRE_START: &str = "/var/vcap/jobs/postgres/bin/pre-start";
const POST_START: &str = "/var/vcap/jobs/postgres/bin/post-start";
const VIP_PRE_START: &str = "/var/vcap/jobs/vip/bin/pre-start";
const VIP_POST_START: &str = "/var/vcap/jobs/vip/bin/post-start";
const PG_VRRP_WATCH: &str = "/var/vcap/packages/pg-tools/bin/pg-vrrp-watch";
const DATA_DIR: &str = "/var/vcap/store/postgres/db";
const PROVISIONED: &str = "/var/vcap/sys/run/postgres/provisioned";
const POSTGRES_PIDFILE: &str = "/var/vcap/sys/run/postgres/postgres.pid";

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `script` on the VM, panicking unless it fails; its stderr.
fn run_fails(vm: &Vm, script: &str) -> String {
    let output = vm.run(script, &[]);
    assert!(
        !output.status.success(),
        "{script} succeeded: {}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    stderr_of(&output)
}

/// The reason a failed lifecycle script gave: its last line on stderr, with
/// the VM's paths as on a VM.
fn last_line(vm: &Vm, stderr: &str) -> String {
    let line = stderr.trim().lines().last().unwrap_or_default();
    line.replace(&format!("{}/", vm.var_vcap().display()), "/var/vcap/")
}

fn vcap() -> &'static testkit::RunAs {
    testkit::run_as_user().expect("the template tests run as root, PostgreSQL's files as vcap")
}

#[test]
fn pre_start_makes_the_jobs_directories_and_has_pg_bootstrap_check_the_spec() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for (deployment, instance) in [("standalone", "postgres/0"), ("ha", "postgres/1")] {
        let vm = Vm::install(&render(&example(deployment), instance));
        vm.run_ok(PRE_START, &[], CTL_LOG);
        for dir in [
            "/var/vcap/store/postgres",
            "/var/vcap/sys/log/postgres",
            "/var/vcap/sys/run/postgres",
        ] {
            let meta = fs::metadata(vm.path(dir)).unwrap();
            assert!(meta.is_dir(), "{deployment}: {dir}");
            assert_eq!(
                meta.uid(),
                vcap().uid,
                "{deployment}: {dir} belongs to vcap"
            );
        }
        let run_dir = fs::metadata(vm.path("/var/vcap/sys/run/postgres")).unwrap();
        assert_eq!(run_dir.permissions().mode() & 0o777, 0o750);
        assert_eq!(
            vm.calls(PG_BOOTSTRAP),
            ["provision --spec /var/vcap/jobs/postgres/config/provision.yml --check"],
            "{deployment}: the spec is checked, and nothing else is run"
        );
        assert!(vm.calls(PG_CTL).is_empty(), "pre-start starts nothing");
    }
}

#[test]
fn pre_start_fails_with_the_mistake_pg_bootstrap_finds_in_the_spec() {
    let vm = Vm::install(&render(&example("standalone"), "postgres/0"));
    vm.stub(
        PG_BOOTSTRAP,
        "echo \"2026-01-01T00:00:00.000Z pg-bootstrap[7]: error: spec $3: user 'a' has an empty password\" >&2; exit 2",
    );
    let stderr = run_fails(&vm, PRE_START);
    assert_eq!(
        last_line(&vm, &stderr),
        "pre-start: pg-bootstrap refuses the provisioning spec: \
         spec /var/vcap/jobs/postgres/config/provision.yml: user 'a' has an empty password"
    );
}

#[test]
fn pre_start_fails_when_the_replication_password_cannot_be_read_or_is_empty() {
    use std::os::unix::fs::PermissionsExt;
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    let file = vm.path("/var/vcap/jobs/postgres/config/replication.password");
    // root's alone: haproxy's checks, run as vcap, could not read it.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        last_line(&vm, &run_fails(&vm, PRE_START)),
        "pre-start: /var/vcap/jobs/postgres/config/replication.password is not readable by vcap \
         (BOSH installs it root:vcap 0640)"
    );
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&file, "").unwrap();
    assert_eq!(
        last_line(&vm, &run_fails(&vm, PRE_START)),
        "pre-start: /var/vcap/jobs/postgres/config/replication.password is empty \
         (postgres.replication.password)"
    );
}

#[test]
fn pre_start_refuses_a_data_directory_postgresql_could_not_start_on() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let vm = Vm::install(&render(&example("standalone"), "postgres/0"));
    vm.stub(
        "/var/vcap/packages/postgres/bin/postgres",
        "echo 'postgres (PostgreSQL) 18.6'",
    );
    let data = vm.path(DATA_DIR);
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    let reason = |vm: &Vm| last_line(vm, &run_fails(vm, PRE_START));

    fs::write(&data, "").unwrap();
    assert_eq!(
        reason(&vm),
        format!("pre-start: the data directory {DATA_DIR} is not a directory; move it away to start afresh")
    );
    fs::remove_file(&data).unwrap();

    fs::create_dir(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        reason(&vm),
        format!(
            "pre-start: the data directory {DATA_DIR} belongs to root, not vcap \
             (PostgreSQL runs as vcap): chown -R vcap:vcap {DATA_DIR}"
        )
    );
    chown(&data, Some(vcap().uid), Some(vcap().gid)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        reason(&vm),
        format!("pre-start: the data directory {DATA_DIR} has mode 755; PostgreSQL starts only on 0700 or 0750")
    );
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    assert_eq!(
        reason(&vm),
        format!(
            "pre-start: the data directory {DATA_DIR} holds PostgreSQL 15 data; this release runs \
             PostgreSQL 18.6, which cannot start on it (upgrade the data with pg_upgrade first)"
        )
    );
    fs::write(data.join("PG_VERSION"), "18\n").unwrap();
    vm.run_ok(PRE_START, &[], CTL_LOG);
}

/// Runs `script` (a path as on the VM) in an IPC namespace of its own, where
/// the kernel's IPC settings are private, and then prints `keys` with sysctl.
fn in_ipc_namespace(vm: &Vm, script: &str, args: &str, keys: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["--ipc", "sh", "-c"])
        .arg(format!(
            "{} {args} && sysctl -n {keys}",
            vm.path(script).display()
        ))
        .output()
        .expect("cannot run unshare")
}

fn with_tuning(tuning: &str) -> Value {
    with_postgres("standalone", &["postgres", "tuning"], tuning)
}

#[test]
fn pre_start_and_every_start_apply_postgres_tuning_to_the_kernel() {
    let vm = Vm::install(&render(
        &with_tuning("{enable: true, ipc: {shmmni: 8192}}"),
        "postgres/0",
    ));
    let output = in_ipc_namespace(&vm, PRE_START, "", "kernel.shmmni");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().last(),
        Some("8192")
    );
    assert!(
        stderr_of(&output).contains("tuning: kernel.shmmni 4096 -> 8192"),
        "{}",
        stderr_of(&output)
    );
    // A reboot forgets it, and monit starts ctl without pre-start.
    let output = in_ipc_namespace(&vm, CTL, "start", "kernel.shmmni");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "8192");
}

#[test]
fn a_tuning_value_the_kernel_refuses_fails_pre_start_naming_the_property() {
    // Above IPCMNI, the most the kernel takes.
    let vm = Vm::install(&render(
        &with_tuning("{enable: true, ipc: {shmmni: 100000}}"),
        "postgres/0",
    ));
    let output = in_ipc_namespace(&vm, PRE_START, "", "kernel.shmmni");
    assert!(!output.status.success());
    assert_eq!(
        last_line(&vm, &stderr_of(&output)),
        "pre-start: cannot apply postgres.tuning: \
         the kernel refused kernel.shmmni = 100000 (postgres.tuning.ipc.shmmni)"
    );

    let vm = Vm::install(&render(
        &with_tuning("{limits: {fds: 999999999}}"),
        "postgres/0",
    ));
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
    assert_eq!(
        last_line(&vm, &run_fails(&vm, PRE_START)),
        format!(
            "pre-start: cannot apply postgres.tuning: the open-file limit cannot be 999999999 \
             (postgres.tuning.limits.fds): the kernel allows at most {}",
            nr_open.trim()
        )
    );
    assert_render_fails(
        &with_tuning("{enable: true, ipc: {shmmax: lots}}"),
        "postgres/0",
        "postgres.tuning.ipc.shmmax must be a whole number or 'auto', got \"lots\"",
    );
}

#[test]
fn ctl_marks_the_node_provisioned_only_once_provisioning_succeeded() {
    let vm = Vm::install(&render(&example("standalone"), "postgres/0"));
    let marker = vm.path(PROVISIONED);
    vm.start_postgres();
    assert!(marker.exists(), "a start that provisioned the node");

    // A new start removes it first; a failed provisioning leaves none.
    vm.stub(PG_BOOTSTRAP, "if [[ $1 == provision ]]; then exit 1; fi");
    vm.start_postgres();
    assert!(
        !marker.exists(),
        "provisioning failed, yet the node is marked provisioned"
    );
    let log = fs::read_to_string(vm.path(CTL_LOG)).unwrap();
    assert!(log.contains("pg-bootstrap provision failed"), "{log}");

    fs::write(&marker, "").unwrap();
    vm.run_ok(CTL, &["stop"], CTL_LOG);
    assert!(!marker.exists(), "a stopped node is not provisioned");
}

/// The calls post-start makes of pg-role-check when the local node answers
/// `local` and the peer `peer` (each a line, as pg-role-check prints it;
/// the exit code follows its first word).
fn post_start_calls(node: &Rendered, local: &str, peer: &str) -> (Vm, std::process::Output) {
    let vm = Vm::install(node);
    vm.stub(
        PG_ROLE_CHECK,
        &format!(
            "if [[ $* == *--synchronous* ]]; then echo '{peer}'; [[ '{peer}' == *'a synchronous standby'* ]]; \
             else echo '{local}'; fi"
        ),
    );
    let output = vm.run(POST_START, &[]);
    (vm, output)
}

const LOCAL_FLAGS: &str = "--ready-file /var/vcap/sys/run/postgres/provisioned --wait 60 \
    --connect-timeout 5 --retries 1 --retry-interval 1 \
    --host /var/vcap/sys/run/postgres";

#[test]
fn post_start_waits_for_a_provisioned_primary_on_a_standalone_node() {
    let node = render(&example("standalone"), "postgres/0");
    let (vm, output) = post_start_calls(
        &node,
        "primary /var/vcap/sys/run/postgres:5432 (1.0 ms)",
        "",
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(
        vm.calls(PG_ROLE_CHECK),
        [format!(
            "--expect primary {LOCAL_FLAGS} --port 5432 --user vcap --dbname postgres"
        )]
    );
}

#[test]
fn post_start_on_a_replicated_primary_asks_nothing_of_its_peers() {
    for deployment in ["ha", "clustered"] {
        let node = render(&example(deployment), "postgres/0");
        let (vm, output) = post_start_calls(
            &node,
            "primary /var/vcap/sys/run/postgres:6432 (1.0 ms)",
            "",
        );
        assert!(output.status.success(), "{}", stderr_of(&output));
        assert_eq!(
            vm.calls(PG_ROLE_CHECK),
            [format!(
                "--expect any --writable --streaming {LOCAL_FLAGS} --port 6432 --user vcap --dbname postgres"
            )],
            "{deployment}"
        );
    }
}

const STREAMING: &str = "replica /var/vcap/sys/run/postgres:6432, streaming (1.0 ms)";

#[test]
fn post_start_on_the_ha_replica_waits_until_the_primary_has_it_as_synchronous_standby() {
    for (synchronous, instance, peer) in [
        ("on", "postgres/0", "10.244.0.3"),
        ("strict", "postgres/1", "10.244.0.2"),
    ] {
        let manifest = with_postgres(
            "ha",
            &["postgres", "replication", "synchronous"],
            synchronous,
        );
        let (vm, output) = post_start_calls(
            &render(&manifest, instance),
            STREAMING,
            &format!("primary {peer}:6432, a synchronous standby streaming (1.0 ms)"),
        );
        assert!(output.status.success(), "{}", stderr_of(&output));
        let calls = vm.calls(PG_ROLE_CHECK);
        assert_eq!(calls.len(), 2, "{calls:?}");
        let peer_call = &calls[1];
        let (before, after) = peer_call
            .split_once(" --connect-timeout")
            .unwrap_or_else(|| panic!("{peer_call}"));
        // What is left of the bound: 60 s, less the first wait. A peer asking
        // for no synchronous standby is accepted after two of its monitor's
        // intervals (1 s), the connect timeout (5 s) and 2 s.
        let left: u32 = before
            .strip_prefix("--expect primary --synchronous --accept-asynchronous-after 9 --wait ")
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or_else(|| panic!("{peer_call}"));
        assert!((50..=60).contains(&left), "{peer_call}");
        assert_eq!(
            after,
            format!(
                " 5 --retries 1 --retry-interval 1 --host {peer} --port 6432 \
                 --user replication --dbname postgres"
            )
        );
        assert!(
            vm.env(PG_ROLE_CHECK)
                .contains(&"PGPASSWORD=replication-secret".to_string()),
            "the password reaches pg-role-check in its environment"
        );
    }
}

#[test]
fn post_start_asks_no_synchronous_standby_when_nothing_makes_one() {
    let asynchronous = with_postgres("ha", &["postgres", "replication", "synchronous"], "off");
    for (manifest, instance) in [
        (asynchronous, "postgres/1"),
        // A star of replicas runs no monitor: nothing sets synchronous_standby_names.
        (example("clustered"), "postgres/2"),
    ] {
        let (vm, output) = post_start_calls(&render(&manifest, instance), STREAMING, "");
        assert!(output.status.success(), "{}", stderr_of(&output));
        assert_eq!(vm.calls(PG_ROLE_CHECK).len(), 1, "{instance}");
    }
}

#[test]
fn post_start_fails_with_what_the_node_is_instead() {
    let node = render(&example("standalone"), "postgres/0");
    let not_ready = format!(
        "primary /var/vcap/sys/run/postgres:5432, not ready: {PROVISIONED} does not exist (1.0 ms)"
    );
    let vm = Vm::install(&node);
    vm.stub(PG_ROLE_CHECK, &format!("echo '{not_ready}'; exit 1"));
    let ctl_log = vm.path("/var/vcap/sys/log/postgres/ctl.log");
    fs::create_dir_all(ctl_log.parent().unwrap()).unwrap();
    fs::write(
        &ctl_log,
        "started\npostgres exited during its start: FATAL:  could not access file \"x\"\n",
    )
    .unwrap();
    assert_eq!(
        last_line(&vm, &run_fails(&vm, POST_START)),
        format!(
            "post-start: postgres is not a provisioned primary taking writes after 60 s: {not_ready}; \
             bin/ctl's last word: postgres exited during its start: FATAL:  could not access file \"x\" \
             (all of it: /var/vcap/sys/log/postgres/ctl.log)"
        )
    );

    let node = render(&example("ha"), "postgres/0");
    let not_synchronous = "primary 10.244.0.3:6432, no synchronous standby (1.0 ms)";
    let (vm, output) = post_start_calls(&node, STREAMING, not_synchronous);
    assert!(!output.status.success());
    assert_eq!(
        last_line(&vm, &stderr_of(&output)),
        format!(
            "post-start: this replica streams, but the primary 10.244.0.3:6432 does not have it \
             as its synchronous standby (postgres.replication.synchronous is on): {not_synchronous}"
        )
    );
}

#[test]
fn post_start_waits_as_long_as_postgres_post_start_timeout_says() {
    let manifest = with_postgres("standalone", &["postgres", "post_start_timeout"], "300");
    let (vm, _) = post_start_calls(&render(&manifest, "postgres/0"), "primary x (1.0 ms)", "");
    assert!(vm.calls(PG_ROLE_CHECK)[0].contains(" --wait 300 "));
    for bad in ["0", "soon"] {
        let manifest = with_postgres("standalone", &["postgres", "post_start_timeout"], bad);
        assert_render_fails(
            &manifest,
            "postgres/0",
            "postgres.post_start_timeout must be a number of seconds from 0.001 to 86400",
        );
    }
}

fn with_vip(path: &[&str], value: &str) -> Value {
    let mut manifest = example("ha");
    let mut full = vec!["instance_groups", "0", "jobs", "1", "properties"];
    full.extend_from_slice(path);
    set(&mut manifest, &full, yaml(value));
    manifest
}

#[test]
fn vip_pre_start_has_haproxy_and_keepalived_check_their_configs() {
    // An interface by name: "auto" would ask this machine's routes.
    let manifest = with_vip(&["keepalived", "interface"], "eth0");
    let vm = Vm::install(&render(&manifest, "postgres/0"));
    vm.run_ok(
        VIP_PRE_START,
        &[],
        "/var/vcap/sys/log/vip/keepalived_ctl.log",
    );
    assert_eq!(
        vm.calls("/var/vcap/packages/haproxy/bin/haproxy"),
        ["-c -f /var/vcap/jobs/vip/config/haproxy.cfg"]
    );
    let tested = vm.calls("/var/vcap/packages/keepalived/sbin/keepalived");
    assert_eq!(tested.len(), 1, "{tested:?}");
    assert!(tested[0].starts_with("--config-test -f "), "{tested:?}");
    assert!(
        vm.calls("/var/vcap/packages/pg-tools/bin/pg-vrrp-watch")
            .is_empty()
            && !vm.path("/var/vcap/sys/run/vip/keepalived.pid").exists(),
        "pre-start starts nothing"
    );

    vm.stub(
        "/var/vcap/packages/haproxy/bin/haproxy",
        "echo \"[ALERT] config : parsing [$3:12] : unknown keyword 'bogus'\" >&2; exit 1",
    );
    let stderr = run_fails(&vm, VIP_PRE_START);
    assert!(stderr.contains("unknown keyword 'bogus'"), "{stderr}");
    assert_eq!(
        last_line(&vm, &stderr),
        "pre-start: haproxy refuses /var/vcap/jobs/vip/config/haproxy.cfg (its reason is above)"
    );

    let without = with_vip(&["keepalived", "enabled"], "false");
    let vm = Vm::install(&render(&without, "postgres/0"));
    vm.run_ok(
        VIP_PRE_START,
        &[],
        "/var/vcap/sys/log/vip/keepalived_ctl.log",
    );
    assert!(vm
        .calls("/var/vcap/packages/keepalived/sbin/keepalived")
        .is_empty());
}

const VIP_DRAIN: &str = "/var/vcap/jobs/vip/bin/drain";
const VIP_DRAIN_FILE: &str = "/var/vcap/sys/run/vip/draining";

/// The vip job's drain on a node that does not hold the VIP: it still makes
/// the drain file (so the node does not take the VIP while it stops) and
/// tells BOSH to go on; without keepalived it does nothing.
#[test]
fn vip_drain_marks_the_node_draining_and_prints_only_0() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    let output = vm.run(VIP_DRAIN, &["job_changed", "hash_changed"]);
    let log = fs::read_to_string(vm.path("/var/vcap/sys/log/vip/drain.log")).unwrap_or_default();
    assert!(output.status.success(), "{}: {log}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n", "{log}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{log}");
    assert!(vm.path(VIP_DRAIN_FILE).exists(), "{log}");
    assert!(log.contains("does not hold 10.244.0.10"), "{log}");

    let without = with_vip(&["keepalived", "enabled"], "false");
    let vm = Vm::install(&render(&without, "postgres/0"));
    let output = vm.run(VIP_DRAIN, &["job_changed", "hash_changed"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "0\n");
    assert!(!vm.path(VIP_DRAIN_FILE).exists());
}

#[test]
fn vip_post_start_waits_until_haproxy_routes_and_keepalived_runs() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    vm.run_ok(
        VIP_POST_START,
        &[],
        "/var/vcap/sys/log/vip/keepalived_ctl.log",
    );
    assert_eq!(
        vm.calls(PG_VRRP_WATCH),
        [
            "--wait 60 --pidfile /var/vcap/sys/run/vip/haproxy.pid \
             --stats-socket /var/vcap/sys/run/vip/haproxy.sock",
            "--wait 60 --pidfile /var/vcap/sys/run/vip/keepalived.pid --process-name keepalived",
        ]
    );
    vm.stub(
        PG_VRRP_WATCH,
        "echo 'pg-vrrp-watch[9]: gave up after 60.0 s: no server UP in backend \"postgres\"' >&2; exit 1",
    );
    assert_eq!(
        last_line(&vm, &run_fails(&vm, VIP_POST_START)),
        "post-start: haproxy does not route writes after 60 s (the reason is above)"
    );
}

// --- bin/switchover and bin/drain ---------------------------------------------

const DRAIN: &str = "/var/vcap/jobs/postgres/bin/drain";
const DRAIN_LOG: &str = "/var/vcap/sys/log/postgres/drain.log";

/// Runs bin/drain as BOSH's agent does before an update; its stdout, and the
/// log it keeps.
fn drain(vm: &Vm) -> (String, String) {
    let output = vm.run(DRAIN, &["job_changed", "hash_changed", "pg-tools"]);
    assert!(
        output.status.success(),
        "bin/drain {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "bin/drain says nothing outside its log"
    );
    let log = fs::read_to_string(vm.path(DRAIN_LOG)).unwrap_or_default();
    (String::from_utf8_lossy(&output.stdout).into_owned(), log)
}

#[test]
fn bin_drain_on_the_ha_primary_hands_over_first_and_prints_only_0() {
    let vm = Vm::install(&render(&example("ha"), "postgres/0"));
    let (stdout, log) = drain(&vm);
    assert_eq!(stdout, "0\n", "BOSH reads one integer; log:\n{log}");
    let arguments = vm.switchover_arguments();
    assert_eq!(
        arguments.first().map(String::as_str),
        Some("switchover"),
        "no switchover ran; log:\n{log}"
    );
    // The stop follows: the old primary is not started again only to be stopped.
    assert!(
        arguments
            .iter()
            .any(|argument| argument == "--leave-stopped"),
        "{arguments:?}"
    );
    assert!(
        log.contains("switchover: a line for the operator") && log.contains("switchover done"),
        "{log}"
    );
    // The primary check asks the local node, as vcap over its socket.
    let checks = vm.calls(PG_ROLE_CHECK);
    assert_eq!(checks, ["--expect primary --retries 1"], "{log}");
    let env = vm.env(PG_ROLE_CHECK);
    for variable in [
        "PGHOST=/var/vcap/sys/run/postgres",
        "PGPORT=6432",
        "PGUSER=vcap",
    ] {
        assert!(
            env.iter().any(|line| line == variable),
            "{variable} in {env:?}"
        );
    }
}

#[test]
fn bin_drain_on_a_replica_prints_0_and_hands_nothing_over() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    vm.exit_with(PG_ROLE_CHECK, 1);
    let (stdout, log) = drain(&vm);
    assert_eq!(stdout, "0\n", "{log}");
    assert_eq!(vm.switchover_arguments(), Vec::<String>::new(), "{log}");
    assert!(log.contains("not a primary taking writes"), "{log}");
}

#[test]
fn bin_drain_lets_the_stop_go_ahead_when_the_switchover_refuses_or_fails() {
    for (code, said) in [
        (1, "switchover refused"),
        (3, "could not tell"),
        (4, "failed part-way"),
    ] {
        let vm = Vm::install(&render(&example("ha"), "postgres/0"));
        vm.exit_with(PG_MONITOR, code);
        let (stdout, log) = drain(&vm);
        assert_eq!(stdout, "0\n", "exit {code}; log:\n{log}");
        assert!(log.contains(said), "exit {code}: {said:?} in\n{log}");
    }
}

#[test]
fn bin_drain_outside_an_ha_pair_prints_0_and_asks_nothing() {
    for (deployment, instance) in [("standalone", "postgres/0"), ("clustered", "postgres/0")] {
        let vm = Vm::install(&render(&example(deployment), instance));
        let (stdout, log) = drain(&vm);
        assert_eq!(stdout, "0\n", "{deployment}; log:\n{log}");
        assert_eq!(
            vm.calls(PG_ROLE_CHECK),
            Vec::<String>::new(),
            "{deployment}"
        );
        assert_eq!(
            vm.switchover_arguments(),
            Vec::<String>::new(),
            "{deployment}"
        );
        assert!(log.contains("not an HA pair"), "{deployment}: {log}");
    }
}

#[test]
fn bin_switchover_hands_pg_monitor_switchover_the_nodes_paths_peer_and_monit_commands() {
    let vm = Vm::install(&render(&example("ha"), "postgres/1"));
    vm.run_ok(
        "/var/vcap/jobs/postgres/bin/switchover",
        &["--dry-run"],
        "/var/vcap/sys/log/postgres/ctl.log",
    );
    let arguments = vm.switchover_arguments();
    assert_eq!(arguments.first().map(String::as_str), Some("switchover"));
    assert_eq!(
        arguments.last().map(String::as_str),
        Some("--dry-run"),
        "the operator's flags go through: {arguments:?}"
    );
    let values = |flag: &str| -> Vec<&str> {
        arguments
            .windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
            .collect()
    };
    let monit = "/var/vcap/bosh/bin/monit";
    for (flag, expected) in [
        ("--local", "/var/vcap/sys/run/postgres:6432".to_string()),
        ("--user", "vcap".into()),
        ("--dbname", "postgres".into()),
        ("--peer", "10.244.0.2:6432".into()),
        ("--peer-user", "replication".into()),
        (
            "--peer-password-file",
            "/var/vcap/jobs/postgres/config/replication.password".into(),
        ),
        ("--data-dir", "/var/vcap/store/postgres/db".into()),
        ("--stop-cmd", format!("{monit} stop postgres")),
        ("--start-cmd", format!("{monit} start postgres")),
        // postgres.replication.grace (15) + 300 s for a rewind or a clone.
        ("--rejoin-timeout", "315".into()),
        (
            "--haproxy-socket",
            "/var/vcap/sys/run/vip/haproxy.sock".into(),
        ),
        ("--haproxy-server", "node1".into()),
        ("--haproxy-peer-server", "node0".into()),
    ] {
        assert_eq!(values(flag), [expected.as_str()], "{flag} in {arguments:?}");
    }
    assert_eq!(
        values("--pause-file"),
        [
            "/var/vcap/store/postgres/failover.paused",
            "/var/vcap/sys/run/postgres/failover.paused-by-manifest"
        ]
    );
    // The password comes from its file, never a command line.
    let password =
        fs::read_to_string(vm.path("/var/vcap/jobs/postgres/config/replication.password")).unwrap();
    assert!(
        !arguments.iter().any(|arg| arg.contains(password.trim())),
        "{arguments:?}"
    );
}

#[test]
fn bin_switchover_outside_an_ha_pair_refuses_without_running_pg_monitor() {
    let vm = Vm::install(&render(&example("clustered"), "postgres/0"));
    let output = vm.run("/var/vcap/jobs/postgres/bin/switchover", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not an HA pair"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(vm.switchover_arguments(), Vec::<String>::new());
}
