//! The release's job specs as the contract for manifests: every job an
//! instance group runs from this release must exist, and every property it
//! sets must be declared in that job's `spec`.
//!
//! The director does not complain about an unknown property; it silently
//! ignores it. A misspelt `postgres.replication.enabled` would deploy a
//! cluster without replication. Checking against the specs catches that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml::Value;

use crate::merge::scalar_text;
use crate::{input_error, InputError};

/// What a manifest may use of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub name: String,
    /// Declared property names, dotted (`postgres.replication.enabled`).
    pub properties: BTreeSet<String>,
}

/// Reads `DIR/jobs/*/spec`.
pub fn load(release_dir: &Path) -> Result<BTreeMap<String, JobSpec>, InputError> {
    let jobs_dir = release_dir.join("jobs");
    let entries = std::fs::read_dir(&jobs_dir)
        .map_err(|err| input_error!("--release-dir: cannot read {}: {err}", jobs_dir.display()))?;
    let mut specs = BTreeMap::new();
    for entry in entries {
        let dir = entry
            .map_err(|err| {
                input_error!("--release-dir: cannot list {}: {err}", jobs_dir.display())
            })?
            .path();
        let path = dir.join("spec");
        if !path.is_file() {
            continue;
        }
        let text = crate::input::read_text(&path)
            .map_err(|problem| input_error!("{}: {problem}", path.display()))?;
        let spec = parse(&text).map_err(|err| input_error!("{}: {err}", path.display()))?;
        specs.insert(spec.name.clone(), spec);
    }
    if specs.is_empty() {
        return Err(input_error!(
            "--release-dir: no job spec under {}",
            jobs_dir.display()
        ));
    }
    Ok(specs)
}

/// Parses one job spec.
pub fn parse(text: &str) -> Result<JobSpec, String> {
    let value = crate::input::parse_yaml(text).map_err(crate::overlay::describe_yaml_problem)?;
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the spec has no `name`")?
        .to_string();
    let properties = match value.get("properties") {
        None | Some(Value::Null) => BTreeSet::new(),
        Some(Value::Mapping(map)) => map.keys().map(scalar_text).collect(),
        Some(_) => return Err("`properties` is not a map".into()),
    };
    Ok(JobSpec { name, properties })
}

/// One problem per undeclared job or property, for jobs of `release`.
pub fn check(manifest: &Value, specs: &BTreeMap<String, JobSpec>, release: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let groups = manifest.get("instance_groups").and_then(Value::as_sequence);
    for group in groups.into_iter().flatten() {
        let group_name = group.get("name").map(scalar_text).unwrap_or_default();
        for job in group
            .get("jobs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if job.get("release").and_then(Value::as_str) != Some(release) {
                continue;
            }
            let job_name = job.get("name").map(scalar_text).unwrap_or_default();
            let at = format!("instance_groups[{group_name}].jobs[{job_name}]");
            let Some(spec) = specs.get(&job_name) else {
                problems.push(format!(
                    "{at}: release {release} has no job `{job_name}` (it has: {})",
                    specs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            if let Some(properties) = job.get("properties") {
                for property in undeclared(properties, "", &spec.properties) {
                    problems.push(format!(
                        "{at}.properties: `{property}` is not declared in the {job_name} job's spec"
                    ));
                }
            }
        }
    }
    problems
}

/// The first problem as an error, with how many more there are.
pub fn check_or_error(
    manifest: &Value,
    specs: &BTreeMap<String, JobSpec>,
    release: &str,
    release_dir: &Path,
) -> Result<(), InputError> {
    let problems = check(manifest, specs, release);
    match problems.split_first() {
        None => Ok(()),
        Some((first, rest)) => Err(input_error!(
            "manifest: {first} (checked against {}/jobs{})",
            release_dir.display(),
            match rest.len() {
                0 => String::new(),
                n => format!("; {n} more problem{}", if n == 1 { "" } else { "s" }),
            }
        )),
    }
}

/// Property paths under `value` that no declared name covers. A declared
/// name covers its whole subtree (`postgres.config` is a map of settings).
fn undeclared(value: &Value, prefix: &str, declared: &BTreeSet<String>) -> Vec<String> {
    if !prefix.is_empty() && declared.contains(prefix) {
        return Vec::new();
    }
    match value {
        Value::Mapping(map) if !map.is_empty() => map
            .iter()
            .flat_map(|(key, value)| {
                let key = scalar_text(key);
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                undeclared(value, &path, declared)
            })
            .collect(),
        // An empty map declares nothing, as long as properties live below it.
        Value::Mapping(_)
            if declared
                .iter()
                .any(|d| d.starts_with(&format!("{prefix}."))) =>
        {
            Vec::new()
        }
        _ if prefix.is_empty() => Vec::new(),
        _ => vec![prefix.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTGRES_SPEC: &str = r#"
name: postgres
templates: {}
properties:
  postgres.config:
    description: settings
  postgres.users:
    default: []
  postgres.replication.enabled:
    default: false
"#;

    fn specs() -> BTreeMap<String, JobSpec> {
        let spec = parse(POSTGRES_SPEC).unwrap();
        BTreeMap::from([(spec.name.clone(), spec)])
    }

    fn manifest(job: &str) -> Value {
        serde_yaml::from_str(&format!(
            "instance_groups:\n- name: pg\n  jobs:\n  - {job}\n  - {{name: node_exporter, release: other, properties: {{x: 1}}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn declared_properties_and_their_subtrees_pass() {
        let m = manifest(
            "{name: postgres, release: postgres, properties: {postgres: {config: {port: 6432, max_connections: 10}, users: [], replication: {enabled: true}}}}",
        );
        assert_eq!(check(&m, &specs(), "postgres"), Vec::<String>::new());
    }

    #[test]
    fn a_misspelt_property_is_reported() {
        let m = manifest("{name: postgres, release: postgres, properties: {postgres: {replication: {enable: true}}}}");
        let problems = check(&m, &specs(), "postgres");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`postgres.replication.enable`"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_job_is_reported_and_other_releases_are_ignored() {
        let m = manifest("{name: postgresql, release: postgres}");
        let problems = check(&m, &specs(), "postgres");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no job `postgresql`"), "{problems:?}");
    }

    #[test]
    fn an_empty_map_above_declared_properties_passes() {
        let m = manifest(
            "{name: postgres, release: postgres, properties: {postgres: {replication: {}}}}",
        );
        assert_eq!(check(&m, &specs(), "postgres"), Vec::<String>::new());
    }
}
