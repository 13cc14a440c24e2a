//! What the manifest needs and the operator need not write: a password for
//! every PostgreSQL user (a BOSH-generated variable when none is given), and
//! the smoke-tests errand's user among `postgres.users` with the same password
//! the errand uses.
//!
//! Overlays replace `postgres.users` (its items have no `name`), so an
//! overlay that lists its own users would otherwise drop the errand's user
//! and leave the errand unable to log in.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

/// The errand's user when its properties do not name one.
pub const DEFAULT_ERRAND_USER: &str = "smoke-tests";

/// Completes the manifest in place; leaves alone anything not shaped as
/// expected (validation reports that).
pub fn complete(manifest: &mut Value) {
    let errand_users = errand_users(manifest);
    let missing_lists_too = !errand_users.is_empty();
    for users in postgres_user_lists(manifest, missing_lists_too) {
        for (username, password) in &errand_users {
            let existing = users
                .iter_mut()
                .filter_map(Value::as_mapping_mut)
                .find(|user| user.get("username").and_then(Value::as_str) == Some(username));
            let user = match existing {
                Some(user) => user,
                None => {
                    let mut user = Mapping::new();
                    user.insert("username".into(), username.clone().into());
                    users.push(Value::Mapping(user));
                    users
                        .last_mut()
                        .and_then(Value::as_mapping_mut)
                        .expect("just pushed")
                }
            };
            // A password given to the errand is its user's password too.
            if let (Some(password), false) = (password, user.contains_key("password")) {
                user.insert("password".into(), password.clone());
            }
        }
    }

    let mut assigned: BTreeMap<String, String> = BTreeMap::new();
    let mut passwords: BTreeMap<String, Value> = BTreeMap::new();
    for users in postgres_user_lists(manifest, false) {
        for user in users.iter_mut().filter_map(Value::as_mapping_mut) {
            let Some(username) = user
                .get("username")
                .and_then(Value::as_str)
                .map(String::from)
            else {
                continue;
            };
            if !user.contains_key("password") {
                let variable = variable_for(&username, &mut assigned);
                user.insert("password".into(), format!("(({variable}))").into());
            }
            passwords
                .entry(username)
                .or_insert_with(|| user.get("password").cloned().unwrap_or(Value::Null));
        }
    }

    for target in errand_targets(manifest) {
        if !target.contains_key("password") {
            let username = target
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_ERRAND_USER);
            if let Some(password) = passwords.get(username) {
                target.insert("password".into(), password.clone());
            }
        }
    }

    declare_passwords(manifest, assigned.values());
}

/// The BOSH variable for a user's generated password: `user_<name>_password`,
/// with anything but letters, digits and `_` turned into `_`, made unique.
fn variable_for(username: &str, assigned: &mut BTreeMap<String, String>) -> String {
    if let Some(variable) = assigned.get(username) {
        return variable.clone();
    }
    let stem: String = username
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = format!("user_{stem}_password");
    let taken = |name: &str| assigned.values().any(|v| v == name);
    let variable = (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            }
        })
        .find(|name| !taken(name))
        .expect("an unused name exists");
    assigned.insert(username.to_string(), variable.clone());
    variable
}

fn declare_passwords<'a>(manifest: &mut Value, names: impl Iterator<Item = &'a String>) {
    let Some(variables) = variables_mut(manifest) else {
        return;
    };
    for name in names {
        let mut variable = Mapping::new();
        variable.insert("name".into(), name.clone().into());
        variable.insert("type".into(), "password".into());
        declare(variables, variable);
    }
}

/// Appends `variable` to the manifest's `variables`, unless a variable of
/// its name is declared already (the operator's own declaration wins).
pub(crate) fn declare_variable(manifest: &mut Value, variable: Mapping) {
    if let Some(variables) = variables_mut(manifest) {
        declare(variables, variable);
    }
}

/// The manifest's `variables` list, made where missing; `None` when it is
/// something else than a list (validation reports that).
fn variables_mut(manifest: &mut Value) -> Option<&mut Vec<Value>> {
    let variables = manifest
        .as_mapping_mut()?
        .entry("variables".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    // A template's `variables:` with nothing under it.
    if variables.is_null() {
        *variables = Value::Sequence(Vec::new());
    }
    variables.as_sequence_mut()
}

fn declare(variables: &mut Vec<Value>, variable: Mapping) {
    let name = variable.get("name").and_then(Value::as_str);
    let declared = variables
        .iter()
        .any(|declared| name.is_some() && declared.get("name").and_then(Value::as_str) == name);
    if !declared {
        variables.push(Value::Mapping(variable));
    }
}

/// The user each smoke-tests errand logs in as, with the password the
/// errand was given, if any.
fn errand_users(manifest: &Value) -> Vec<(String, Option<Value>)> {
    let mut users: Vec<(String, Option<Value>)> = Vec::new();
    for job in jobs(manifest, "smoke-tests") {
        let target = job
            .get("properties")
            .and_then(|p| p.get("postgres"))
            .and_then(|p| p.get("smoke-tests"))
            .and_then(|p| p.get("target"));
        let username = target
            .and_then(|t| t.get("username"))
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_ERRAND_USER)
            .to_string();
        let password = target.and_then(|t| t.get("password")).cloned();
        if !users.iter().any(|(name, _)| *name == username) {
            users.push((username, password));
        }
    }
    users
}

fn jobs<'a>(manifest: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    manifest
        .get("instance_groups")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|group| group.get("jobs").and_then(Value::as_sequence))
        .flatten()
        .filter(move |job| job.get("name").and_then(Value::as_str) == Some(name))
}

fn jobs_mut<'a>(
    manifest: &'a mut Value,
    name: &'a str,
) -> impl Iterator<Item = &'a mut Mapping> + 'a {
    manifest
        .get_mut("instance_groups")
        .and_then(Value::as_sequence_mut)
        .into_iter()
        .flatten()
        .filter_map(|group| group.get_mut("jobs").and_then(Value::as_sequence_mut))
        .flatten()
        .filter_map(Value::as_mapping_mut)
        .filter(move |job| job.get("name").and_then(Value::as_str) == Some(name))
}

/// `properties.postgres.users` of every postgres job; with `create`, an empty
/// list is made where a postgres job has none.
fn postgres_user_lists(manifest: &mut Value, create: bool) -> Vec<&mut Vec<Value>> {
    jobs_mut(manifest, "postgres")
        .filter_map(|job| {
            let mut node = job;
            for key in ["properties", "postgres"] {
                if !create && !node.contains_key(key) {
                    return None;
                }
                node = node
                    .entry(key.into())
                    .or_insert_with(|| Value::Mapping(Mapping::new()))
                    .as_mapping_mut()?;
            }
            if !create && !node.contains_key("users") {
                return None;
            }
            node.entry("users".into())
                .or_insert_with(|| Value::Sequence(Vec::new()))
                .as_sequence_mut()
        })
        .collect()
}

/// `properties.postgres.smoke-tests.target` of every smoke-tests job.
fn errand_targets(manifest: &mut Value) -> Vec<&mut Mapping> {
    jobs_mut(manifest, "smoke-tests")
        .filter_map(|job| {
            let mut node = job;
            for key in ["properties", "postgres", "smoke-tests", "target"] {
                node = node
                    .entry(key.into())
                    .or_insert_with(|| Value::Mapping(Mapping::new()))
                    .as_mapping_mut()?;
            }
            Some(node)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn completed(text: &str) -> Value {
        let mut manifest = yaml(text);
        complete(&mut manifest);
        manifest
    }

    const BASE: &str = r#"
instance_groups:
- name: postgres
  jobs:
  - name: postgres
    properties:
      postgres:
        users:
        - username: smoke-tests
        - {username: hank, password: propane, admin: true}
- name: smoke-tests
  jobs:
  - name: smoke-tests
    properties:
      postgres:
        smoke-tests:
          target: {port: 5432}
variables:
- {name: replication_password, type: password}
"#;

    #[test]
    fn users_without_password_get_a_generated_variable() {
        let manifest = completed(BASE);
        let users = &manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"]["users"];
        assert_eq!(
            users[0]["password"],
            Value::from("((user_smoke_tests_password))")
        );
        assert_eq!(
            users[1]["password"],
            Value::from("propane"),
            "a given password is kept"
        );
        assert_eq!(
            manifest["variables"],
            yaml("[{name: replication_password, type: password}, {name: user_smoke_tests_password, type: password}]")
        );
    }

    #[test]
    fn errand_gets_its_users_password() {
        let manifest = completed(BASE);
        let target = &manifest["instance_groups"][1]["jobs"][0]["properties"]["postgres"]
            ["smoke-tests"]["target"];
        assert_eq!(
            target["username"],
            Value::Null,
            "the errand's default user is not written"
        );
        assert_eq!(
            target["password"],
            Value::from("((user_smoke_tests_password))")
        );
    }

    #[test]
    fn errand_user_is_added_back_when_an_overlay_replaced_the_users() {
        let manifest = completed(&BASE.replace("        - username: smoke-tests\n", ""));
        let users = manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"]["users"]
            .as_sequence()
            .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1]["username"], Value::from("smoke-tests"));
        assert_eq!(
            users[1]["password"],
            Value::from("((user_smoke_tests_password))")
        );
    }

    #[test]
    fn errand_logging_in_as_an_operator_user_uses_that_users_password() {
        let text = BASE.replace(
            "target: {port: 5432}",
            "target: {port: 5432, username: hank}",
        );
        let manifest = completed(&text);
        let target = &manifest["instance_groups"][1]["jobs"][0]["properties"]["postgres"]
            ["smoke-tests"]["target"];
        assert_eq!(target["password"], Value::from("propane"));
    }

    #[test]
    fn errand_password_given_in_an_overlay_becomes_its_users_password() {
        let text = BASE
            .replace("        - username: smoke-tests\n", "")
            .replace(
                "target: {port: 5432}",
                "target: {port: 5432, password: s3cret}",
            );
        let manifest = completed(&text);
        let users = &manifest["instance_groups"][0]["jobs"][0]["properties"]["postgres"]["users"];
        assert_eq!(users[1]["username"], Value::from("smoke-tests"));
        assert_eq!(users[1]["password"], Value::from("s3cret"));
    }

    #[test]
    fn completing_twice_changes_nothing() {
        let once = completed(BASE);
        let mut twice = once.clone();
        complete(&mut twice);
        assert_eq!(once, twice);
    }

    #[test]
    fn variable_names_are_sanitized_and_unique() {
        let mut assigned = BTreeMap::new();
        assert_eq!(variable_for("a-b", &mut assigned), "user_a_b_password");
        assert_eq!(variable_for("a.b", &mut assigned), "user_a_b_password_2");
        assert_eq!(variable_for("a-b", &mut assigned), "user_a_b_password");
    }
}
