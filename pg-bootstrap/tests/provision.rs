//! `pg-bootstrap provision` against real PostgreSQL servers: what it creates,
//! that a second run changes nothing, hostile names and passwords, replicas,
//! and bad specs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{pg_bootstrap, Run};
use postgres::NoTls;
use testkit::{free_port, Node, NodeOptions, SUPERUSER};

/// A primary where only the kit's superuser is trusted: every other role must
/// log in with its password over SCRAM. `password_encryption = md5` makes the
/// server hash any cleartext password it is sent as MD5, so a SCRAM verifier
/// in pg_authid proves the verifier was made client-side; `log_statement =
/// all` puts every statement a client sends in the log.
fn primary() -> Node {
    Node::primary_with(
        NodeOptions::new()
            .hba_line(&format!("host all {SUPERUSER} 127.0.0.1/32 trust"))
            .hba_line("host all all 127.0.0.1/32 scram-sha-256")
            .setting("password_encryption", "md5")
            .setting("log_statement", "'all'"),
    )
}

/// Writes the spec, mode 0600.
fn write_spec(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("provision.yml");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn provision(node_port: u16, spec: &Path, extra: &[&str]) -> Run {
    let port = node_port.to_string();
    let mut args = vec![
        "provision",
        "--spec",
        spec.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        SUPERUSER,
    ];
    args.extend_from_slice(extra);
    Run::of(&mut pg_bootstrap(&args))
}

/// The server log of a kit node (its temp dir holds `postgres.log`).
fn server_log(node: &Node) -> String {
    fs::read_to_string(node.root().join("postgres.log")).expect("cannot read the server log")
}

fn login(
    node: &Node,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(node.port())
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect(NoTls)
}

const SPEC: &str = r#"
users:
  - username: alice
    password: alice-secret-1
    admin: true
  - username: bob
    password: bob-secret-2
databases:
  - name: app
    users: [alice, bob]
    extensions: [pgcrypto, citext]
replication:
  username: replication
  password: replication-secret-3
"#;

#[test]
fn provisioning_creates_roles_databases_extensions_and_the_replication_role() {
    let node = primary();
    let spec = write_spec(node.root(), SPEC);
    let run = provision(node.port(), &spec, &[]);
    run.expect_code(0, "provisioning");
    assert!(run.stdout.starts_with("provision: made "), "{}", run.stdout);

    let q = |sql: &str| node.query_text(sql).unwrap_or_default();
    assert_eq!(
        q("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'"),
        "t"
    );
    assert_eq!(
        q("SELECT rolsuper::text || rolcanlogin::text || rolcreatedb::text FROM pg_roles WHERE rolname = 'bob'"),
        "falsetruefalse"
    );
    for role in ["alice", "bob", "replication"] {
        let stored = q(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
        ));
        assert!(
            stored.starts_with("SCRAM-SHA-256$"),
            "{role}: the server stored {stored:?}: it was sent a cleartext password (it hashes those as md5 here)"
        );
    }
    assert_eq!(
        q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'alice'"),
        "alice"
    );
    assert_eq!(
        q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'bob'"),
        "bob"
    );
    assert_eq!(
        q("SELECT has_database_privilege('bob', 'app', 'CREATE, CONNECT, TEMPORARY')"),
        "t"
    );

    let mut app = node_db(&node, "app");
    let extensions: Vec<String> = app
        .query(
            "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(extensions, ["citext", "pgcrypto"]);

    // The replication role: streams, reads replication state, rewinds.
    assert_eq!(q("SELECT rolreplication::text || rolsuper::text FROM pg_roles WHERE rolname = 'replication'"), "truefalse");
    assert_eq!(
        q("SELECT pg_has_role('replication', 'pg_monitor', 'MEMBER')"),
        "t"
    );
    assert_eq!(
        q("SELECT pg_has_role('replication', 'pg_checkpoint', 'MEMBER')"),
        "t"
    );
    for function in [
        "pg_ls_dir(text, boolean, boolean)",
        "pg_stat_file(text, boolean)",
        "pg_read_binary_file(text)",
        "pg_read_binary_file(text, bigint, bigint, boolean)",
    ] {
        assert_eq!(
            q(&format!(
                "SELECT has_function_privilege('replication', '{function}', 'EXECUTE')"
            )),
            "t",
            "pg_rewind needs EXECUTE on {function}"
        );
    }
    assert_eq!(
        q("SELECT has_function_privilege('replication', 'pg_promote(boolean, integer)', 'EXECUTE')"),
        "t",
        "pg-monitor switchover promotes the peer as the replication role"
    );

    // bob logs in with his password and may create tables in app (PostgreSQL 15
    // no longer lets everyone create in schema public).
    let mut bob =
        login(&node, "bob", "bob-secret-2", "app").expect("bob cannot log in with his password");
    bob.batch_execute("CREATE TABLE bobs (id int); INSERT INTO bobs VALUES (1)")
        .expect("bob cannot create a table in app");
    let mut replication = login(&node, "replication", "replication-secret-3", "postgres")
        .expect("the replication role cannot log in");
    replication
        .batch_execute("SELECT count(*) FROM pg_stat_replication; CHECKPOINT")
        .expect("the replication role cannot read replication state or request a checkpoint");
    // Allowed to promote: on a primary, PostgreSQL then says there is no
    // recovery to end (55000), not that permission is denied (42501).
    let promote = replication.batch_execute("SELECT pg_promote(false)");
    let code = promote
        .err()
        .and_then(|err| err.code().map(|c| c.code().to_string()));
    assert_eq!(
        code.as_deref(),
        Some("55000"),
        "pg_promote as the replication role"
    );

    let log = server_log(&node);
    for password in ["alice-secret-1", "bob-secret-2", "replication-secret-3"] {
        assert!(
            !log.contains(password),
            "the server log holds a cleartext password"
        );
        assert!(
            !run.stderr.contains(password),
            "our log holds a cleartext password"
        );
    }
    assert!(
        !log.contains("SCRAM-SHA-256$"),
        "the server log holds a password verifier"
    );
}

fn node_db(node: &Node, dbname: &str) -> postgres::Client {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(node.port())
        .user(SUPERUSER)
        .dbname(dbname)
        .connect(NoTls)
        .unwrap()
}

/// Row versions of everything provisioning touches: unchanged means untouched.
fn catalog_versions(node: &Node) -> String {
    node.query_text(
        "SELECT string_agg(x, ',' ORDER BY x) FROM ( \
           SELECT rolname || ':' || xmin::text AS x FROM pg_authid WHERE rolname IN ('alice', 'bob', 'replication') \
           UNION ALL SELECT datname || ':' || xmin::text FROM pg_database \
           UNION ALL SELECT 'members:' || count(*)::text FROM pg_auth_members) s",
    )
    .unwrap()
}

#[test]
fn a_second_run_changes_nothing_and_a_new_password_changes_only_that() {
    let node = primary();
    let spec = write_spec(node.root(), SPEC);
    provision(node.port(), &spec, &[]).expect_code(0, "first run");
    let before = catalog_versions(&node);
    let log_before = server_log(&node).len();

    let run = provision(node.port(), &spec, &[]);
    run.expect_code(0, "second run");
    assert_eq!(run.stdout, "provision: nothing to change");
    assert!(
        !run.stderr.contains("error") && !run.stderr.contains("already exists"),
        "{}",
        run.stderr
    );
    assert_eq!(
        catalog_versions(&node),
        before,
        "the second run changed the catalog"
    );
    let new_log = &server_log(&node)[log_before..];
    assert!(
        !new_log.contains("ERROR"),
        "the second run caused server errors:\n{new_log}"
    );

    let changed = write_spec(node.root(), &SPEC.replace("bob-secret-2", "bob-secret-new"));
    let run = provision(node.port(), &changed, &["--json"]);
    run.expect_code(0, "password change");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        json["changes"],
        serde_json::json!(["set the password of role \"bob\""]),
        "{json}"
    );
    assert!(
        login(&node, "bob", "bob-secret-new", "bob").is_ok(),
        "the new password does not work"
    );
    assert!(
        login(&node, "bob", "bob-secret-2", "bob").is_err(),
        "the old password still works"
    );
}

#[test]
fn hostile_names_and_passwords_are_quoted_and_the_password_logs_in() {
    let node = primary();
    let user = "o'brien \"the\" \\ ; DROP ROLE x; -- ü";
    let password = "p'a\"s\\s; w0rd -- ü $$ :";
    let database = "d'b \"x\"; DROP DATABASE postgres; --";
    let spec = format!(
        "users:\n  - username: {}\n    password: {}\ndatabases:\n  - name: {}\n    users: [{}]\n",
        serde_json::to_string(user).unwrap(),
        serde_json::to_string(password).unwrap(),
        serde_json::to_string(database).unwrap(),
        serde_json::to_string(user).unwrap(),
    );
    let spec = write_spec(node.root(), &spec);
    provision(node.port(), &spec, &[]).expect_code(0, "hostile names");

    let mut client = login(&node, user, password, user)
        .expect("the hostile user cannot log in with its password");
    let me: String = client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(me, user);
    let mut client =
        login(&node, user, password, database).expect("no access to the hostile database");
    client
        .batch_execute("CREATE TABLE t (id int)")
        .expect("the user cannot create in its database");
    assert_eq!(
        node.query_text("SELECT count(*) FROM pg_database WHERE datname = 'postgres'")
            .as_deref(),
        Some("1")
    );

    let again = provision(node.port(), &spec, &[]);
    again.expect_code(0, "second run with hostile names");
    assert_eq!(
        again.stdout, "provision: nothing to change",
        "{}",
        again.stderr
    );
}

#[test]
fn a_replica_is_skipped_without_changes() {
    let primary = primary();
    let replica = Node::replica_of(&primary);
    replica.wait_streaming();
    let spec = write_spec(primary.root(), SPEC);
    let run = provision(replica.port(), &spec, &[]);
    run.expect_code(0, "provisioning a replica");
    assert_eq!(
        run.stdout,
        format!(
            "provision: skipped: 127.0.0.1:{} is a replica (in recovery)",
            replica.port()
        )
    );
    assert_eq!(
        primary
            .query_text("SELECT count(*) FROM pg_roles WHERE rolname = 'alice'")
            .as_deref(),
        Some("0")
    );
}

#[test]
fn a_dry_run_plans_without_changing_anything() {
    let node = primary();
    let spec = write_spec(node.root(), SPEC);
    let run = provision(node.port(), &spec, &["--dry-run", "--json"]);
    run.expect_code(0, "dry run");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let changes = json["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c == "create role \"alice\" (superuser)"),
        "{json}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c == "create extension \"pgcrypto\" in database \"app\""),
        "{json}"
    );
    assert_eq!(
        node.query_text("SELECT count(*) FROM pg_roles WHERE rolname = 'alice'")
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        node.query_text("SELECT count(*) FROM pg_database WHERE datname = 'app'")
            .as_deref(),
        Some("0")
    );
}

#[test]
fn a_spec_other_users_can_read_gets_a_warning_and_one_moded_as_bosh_does_none() {
    use std::os::unix::fs::PermissionsExt;
    let node = primary();
    let spec = write_spec(node.root(), SPEC);
    for (mode, warned) in [(0o600, false), (0o640, false), (0o644, true)] {
        fs::set_permissions(&spec, fs::Permissions::from_mode(mode)).unwrap();
        let run = provision(node.port(), &spec, &["--dry-run"]);
        run.expect_code(0, "dry run");
        assert_eq!(
            run.stderr.contains("other users can read it"),
            warned,
            "mode {mode:o}: {}",
            run.stderr
        );
    }
}

#[test]
fn bad_specs_are_refused_in_one_line_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: a run that got as far as connecting would exit 3, not 2.
    let port = free_port();
    let cases = [
        (None, "cannot read spec"),
        (
            Some("users:\n  - username: a\n    password: 'unterminated\n"),
            "line 4 column 1",
        ),
        (
            Some("users:\n  - username: a\n    pasword: x\n"),
            "unknown field `pasword`",
        ),
        (
            Some("users:\n  - username: a\n"),
            "missing field `password`",
        ),
        (
            Some("users:\n  - {username: a, password: x}\ndatabases:\n  - {name: d, users: [b]}\n"),
            "database 'd' lists user 'b', who is not defined under users",
        ),
    ];
    for (text, expected) in cases {
        let spec = match text {
            Some(text) => write_spec(dir.path(), text),
            None => dir.path().join("missing.yml"),
        };
        let run = provision(port, &spec, &[]);
        run.expect_code(2, expected);
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "not one line: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(expected),
            "expected {expected:?} in {:?}",
            run.stderr
        );
        assert!(
            run.stderr.contains(spec.to_str().unwrap()),
            "the error must name the file: {}",
            run.stderr
        );
    }
}

#[test]
fn oversized_deeply_nested_or_non_regular_specs_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there, and --wait 0: a run that got as far as
    // connecting would exit 3 at once, not 2.
    let port = free_port();
    let huge = write_spec(dir.path(), &format!("# {}\n", "x".repeat(1 << 20)));
    let huge_run = provision(port, &huge, &["--wait", "0"]);
    // 500 KB of nesting: parsing it took more than a minute of CPU.
    let depth = 125_000;
    let deep_dir = tempfile::tempdir().unwrap();
    let deep = write_spec(
        deep_dir.path(),
        &format!("users: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
    );
    let deep_run = provision(port, &deep, &["--wait", "0"]);
    // /dev/zero would be read until memory ran out; /dev/null is refused the
    // same way without that risk.
    let device = Path::new("/dev/null");
    let device_run = provision(port, device, &["--wait", "0"]);
    for (run, spec, expected) in [
        (&huge_run, huge.as_path(), "larger than 1048576 bytes"),
        (&deep_run, deep.as_path(), "nested more than 64 levels deep"),
        (&device_run, device, "not a regular file"),
    ] {
        run.expect_code(2, expected);
        // /dev/null, mode 0666, also gets the warning about a readable spec.
        let errors = run.stderr.lines().filter(|line| !line.contains("warning:"));
        assert_eq!(errors.count(), 1, "not one line: {}", run.stderr);
        assert!(
            run.stderr.contains(expected) && run.stderr.contains(spec.to_str().unwrap()),
            "expected {expected:?} and the file in {:?}",
            run.stderr
        );
    }
}

#[test]
fn an_empty_host_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "users: []\n");
    let run = Run::of(&mut pg_bootstrap(&[
        "provision",
        "--spec",
        spec.to_str().unwrap(),
        "--host",
        "",
        "--wait",
        "0",
    ]));
    run.expect_code(2, "--host ''");
    assert!(run.stderr.contains("the host is empty"), "{}", run.stderr);
}

#[test]
fn a_failing_statement_is_named_and_a_fixed_spec_picks_up_from_there() {
    let node = primary();
    let broken = SPEC.replace("[pgcrypto, citext]", "[pgcrypto, no_such_extension]");
    let spec = write_spec(node.root(), &broken);
    let run = provision(node.port(), &spec, &[]);
    run.expect_code(1, "an extension that does not exist");
    let error = run.stderr.lines().last().unwrap_or_default();
    assert!(
        error.contains("cannot create extension \"no_such_extension\" in database \"app\"")
            && error.contains("0A000")
            && error.contains("changes were made before this one"),
        "the error must name the change, the SQLSTATE and what was done: {error}"
    );
    let fixed = write_spec(node.root(), SPEC);
    let run = provision(node.port(), &fixed, &["--json"]);
    run.expect_code(0, "the fixed spec");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        json["changes"],
        serde_json::json!([
            "create extension \"citext\" in database \"app\"",
            "grant ALL on schema public of database \"app\" to \"alice\"",
            "grant ALL on schema public of database \"app\" to \"bob\"",
        ]),
        "only what the failed run left undone: {json}"
    );
}

#[test]
fn a_server_that_never_answers_is_reported_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), SPEC);
    let run = provision(free_port(), &spec, &["--wait", "1"]);
    run.expect_code(3, "no server");
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
}

/// `--check` is what a BOSH pre-start runs: the spec read and checked by the
/// code that applies it, with no server needed. A live primary sits behind
/// a proxy that counts connections, so that "connected to nothing" is seen.
#[test]
fn check_mode_reads_the_spec_and_connects_to_nothing() {
    let node = primary();
    let proxy = testkit::FaultProxy::new(&node.endpoint());
    let spec = write_spec(node.root(), SPEC);
    let run = provision(proxy.port(), &spec, &["--check"]);
    run.expect_code(0, "a valid spec");
    assert_eq!(
        run.stdout,
        format!(
            "provision: spec {} is valid (2 users, 1 database, replication role replication)",
            spec.display()
        )
    );
    assert!(
        !run.stdout.contains("secret") && !run.stderr.contains("secret"),
        "a password leaked: {run:?}"
    );

    let bad = write_spec(node.root(), "users:\n  - username: a\n    password: ''\n");
    let run = provision(proxy.port(), &bad, &["--check"]);
    run.expect_code(2, "an empty password");
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "not one line: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "error: spec {}: user 'a' has an empty password",
            bad.display()
        )),
        "stderr: {}",
        run.stderr
    );

    assert_eq!(proxy.accepted(), 0, "--check connected to the server");
    assert_eq!(
        node.query_text("SELECT count(*) FROM pg_roles WHERE rolname IN ('alice', 'bob', 'a')"),
        Some("0".to_string()),
        "--check changed the server"
    );
}

#[test]
fn check_mode_cannot_be_combined_with_a_dry_run_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "users: []\n");
    for other in ["--dry-run", "--json"] {
        let run = provision(free_port(), &spec, &["--check", other]);
        run.expect_code(2, other);
        assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    }
}
