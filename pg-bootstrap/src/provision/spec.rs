//! The provisioning spec: users, databases, extensions and the replication
//! role, as the release renders them (YAML, mode 0600).
//!
//! Unknown keys are errors, so that a typo (`pasword:`) never silently
//! drops a user's password; every other mistake is found here, before any
//! connection is made, and named in one line.
//!
//! The file is read within the bounds of [`pgcore::input`], as make-manifest
//! reads its input: a regular file of at most [`MAX_SPEC_BYTES`], nested at
//! most [`MAX_NESTING`] levels deep.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use pgcore::input::{read_text, yaml_too_deep, MAX_FILE_BYTES, MAX_YAML_NESTING};
use serde::Deserialize;

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which would
/// break the name lookups that keep provisioning idempotent.
pub const MAX_NAME_BYTES: usize = 63;

/// The largest spec read: 1 MiB, thousands of users.
pub const MAX_SPEC_BYTES: u64 = MAX_FILE_BYTES;

/// The deepest nesting read; a valid spec has five levels.
pub const MAX_NESTING: usize = MAX_YAML_NESTING;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub databases: Vec<Database>,
    /// The role that streams, clones, rewinds and probes from the peers.
    #[serde(default)]
    pub replication: Option<ReplicationRole>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub password: Secret,
    /// A superuser; otherwise a login role without special rights.
    #[serde(default)]
    pub admin: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub name: String,
    /// Users (from `users`) granted ALL on the database and its public schema.
    #[serde(default)]
    pub users: Vec<String>,
    /// Created with `CREATE EXTENSION IF NOT EXISTS` in this database.
    #[serde(default)]
    pub extensions: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationRole {
    #[serde(default = "default_replication_name")]
    pub username: String,
    pub password: Secret,
}

fn default_replication_name() -> String {
    "replication".to_string()
}

/// A password: shown as `<hidden>` by Debug, so it never reaches a log by accident.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Reads and checks the spec at `path`. The error is one line naming the file.
pub fn load(path: &Path) -> Result<Spec, String> {
    let text =
        read_text(path).map_err(|err| format!("cannot read spec {}: {err}", path.display()))?;
    let spec = parse(&text).map_err(|err| format!("spec {}: {err}", path.display()))?;
    check(&spec).map_err(|err| format!("spec {}: {err}", path.display()))?;
    Ok(spec)
}

/// Parses YAML; errors say where (line and column) and what.
pub fn parse(text: &str) -> Result<Spec, String> {
    if text.trim().is_empty() {
        return Ok(Spec::default());
    }
    if let Some((line, column)) = yaml_too_deep(text, MAX_NESTING) {
        return Err(format!(
            "line {line} column {column}: nested more than {MAX_NESTING} levels deep, the most read"
        ));
    }
    serde_yaml::from_str(text).map_err(|err| {
        let message = err.to_string();
        match err.location() {
            // serde_yaml ends some messages with the location already.
            Some(at) if !message.contains(" at line ") => {
                format!("line {} column {}: {message}", at.line(), at.column())
            }
            _ => message,
        }
    })
}

/// The checks YAML types cannot express.
pub fn check(spec: &Spec) -> Result<(), String> {
    let mut names = HashSet::new();
    for user in &spec.users {
        check_role_name(&user.username, "users")?;
        if !names.insert(user.username.as_str()) {
            return Err(format!("user '{}' is defined twice", user.username));
        }
        check_password(&user.password, &format!("user '{}'", user.username))?;
    }
    if let Some(replication) = &spec.replication {
        check_role_name(&replication.username, "replication")?;
        if names.contains(replication.username.as_str()) {
            return Err(format!(
                "replication user '{}' is also listed under users; give it its own name",
                replication.username
            ));
        }
        check_password(&replication.password, "the replication user")?;
    }
    let mut databases = HashSet::new();
    for database in &spec.databases {
        check_name(&database.name, "database")?;
        if !databases.insert(database.name.as_str()) {
            return Err(format!("database '{}' is listed twice", database.name));
        }
        for user in &database.users {
            if !names.contains(user.as_str()) {
                return Err(format!(
                    "database '{}' lists user '{user}', who is not defined under users",
                    database.name
                ));
            }
        }
        for extension in &database.extensions {
            check_name(
                extension,
                &format!("extension of database '{}'", database.name),
            )?;
        }
    }
    Ok(())
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} with an empty name"));
    }
    if name.contains('\0') {
        return Err(format!(
            "{what} '{}' contains a NUL character",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} '{name}' is {} bytes long; PostgreSQL names hold at most {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(())
}

fn check_role_name(name: &str, section: &str) -> Result<(), String> {
    check_name(name, &format!("{section}: user"))?;
    if name.starts_with("pg_") || name == "public" || name == "none" {
        return Err(format!(
            "{section}: user '{name}' has a name PostgreSQL reserves (pg_*, public, none)"
        ));
    }
    Ok(())
}

fn check_password(password: &Secret, whose: &str) -> Result<(), String> {
    if password.0.is_empty() {
        return Err(format!("{whose} has an empty password"));
    }
    if password.0.contains('\0') {
        return Err(format!("{whose} has a password with a NUL character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
users:
  - username: alice
    password: "a'b\"c\\d;e f ü"
    admin: true
  - username: bob
    password: hunter2
databases:
  - name: app
    users: [alice, bob]
    extensions: [pgcrypto, citext]
replication:
  username: repl
  password: s3cret
"#;

    #[test]
    fn a_full_spec_parses() {
        let spec = parse(FULL).unwrap();
        check(&spec).unwrap();
        assert_eq!(spec.users.len(), 2);
        assert!(spec.users[0].admin);
        assert!(!spec.users[1].admin);
        assert_eq!(spec.users[0].password.0, "a'b\"c\\d;e f ü");
        assert_eq!(spec.databases[0].extensions, ["pgcrypto", "citext"]);
        assert_eq!(spec.replication.unwrap().username, "repl");
    }

    #[test]
    fn the_replication_role_is_named_replication_by_default() {
        let spec = parse("replication:\n  password: x\n").unwrap();
        assert_eq!(spec.replication.unwrap().username, "replication");
    }

    #[test]
    fn an_empty_spec_provisions_nothing() {
        assert_eq!(parse("").unwrap(), Spec::default());
        assert_eq!(parse("users: []\n").unwrap(), Spec::default());
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let spec = parse(FULL).unwrap();
        let debug = format!("{spec:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    /// Each bad spec and a piece of the one-line error it must give.
    #[test]
    fn bad_specs_are_refused_with_a_message_that_names_the_problem() {
        let cases = [
            ("users: [\n  - username: a\n", "line"),
            ("users:\n  - username: a\n    pasword: x\n", "unknown field `pasword`"),
            ("userz: []\n", "unknown field `userz`"),
            ("users:\n  - username: a\n", "missing field `password`"),
            ("users:\n  - username: a\n    password: ''\n", "user 'a' has an empty password"),
            (
                "users:\n  - username: a\n    password: x\ndatabases:\n  - name: d\n    users: [b]\n",
                "database 'd' lists user 'b', who is not defined under users",
            ),
            (
                "users:\n  - {username: a, password: x}\n  - {username: a, password: y}\n",
                "user 'a' is defined twice",
            ),
            ("users:\n  - {username: pg_x, password: x}\n", "reserves"),
            (
                "users:\n  - {username: a, password: x}\nreplication: {username: a, password: y}\n",
                "also listed under users",
            ),
            (
                &format!("databases:\n  - name: {}\n", "d".repeat(64)),
                "at most 63",
            ),
            ("users:\n  - {username: a, password: [x]}\n", "invalid type: sequence"),
        ];
        for (text, expected) in cases {
            let error = parse(text).and_then(|spec| check(&spec)).unwrap_err();
            assert!(
                error.contains(expected),
                "spec {text:?}: expected an error mentioning {expected:?}, got {error:?}"
            );
            assert!(
                !error.contains('\n'),
                "the error is not one line: {error:?}"
            );
        }
    }

    #[test]
    fn a_deeply_nested_spec_is_refused_before_parsing() {
        let nested = |depth: usize| format!("users: {}1{}\n", "[".repeat(depth), "]".repeat(depth));
        // Within the limit, serde_yaml has its say.
        assert!(parse(&nested(MAX_NESTING - 1))
            .unwrap_err()
            .contains("invalid type"));
        // 500 KB of nesting: parsing it took more than a minute of CPU.
        for depth in [MAX_NESTING, 500_000] {
            let error = parse(&nested(depth)).unwrap_err();
            assert!(
                error.starts_with("line 1 column ") && error.contains("nested more than 64 levels"),
                "{error}"
            );
        }
        // Brackets in passwords are text, not nesting.
        let deep = "{".repeat(MAX_NESTING + 1);
        let spec = format!("users:\n  - username: a\n    password: '{deep}'\n  - {{username: b, password: \"{deep}\"}}\n");
        assert_eq!(parse(&spec).unwrap().users[1].password.0, deep);
    }

    #[test]
    fn only_a_small_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spec.yml");
        std::fs::write(&file, "users: []\n").unwrap();
        assert_eq!(load(&file).unwrap(), Spec::default());
        std::fs::write(
            &file,
            format!("# {}\n", "x".repeat(MAX_SPEC_BYTES as usize)),
        )
        .unwrap();
        let error = load(&file).unwrap_err();
        assert!(error.contains("larger than 1048576 bytes"), "{error}");
        for not_a_file in [dir.path(), Path::new("/dev/zero")] {
            let error = load(not_a_file).unwrap_err();
            assert!(
                error.starts_with("cannot read spec ") && error.contains("not a regular file"),
                "{error}"
            );
        }
    }

    #[test]
    fn malformed_yaml_is_located_by_line_and_column() {
        let error = parse("users:\n  - username: a\n    password: 'unterminated\n").unwrap_err();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("column"), "{error}");
    }
}
