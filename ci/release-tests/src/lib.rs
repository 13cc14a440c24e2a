//! Renders the release's job templates with `ci/render/render.rb` (the
//! director's own template library) for the tests, and reads the results;
//! [`vm::Vm`] runs the rendered scripts.

pub mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use tempfile::TempDir;

/// The repository root (this crate lives in `ci/release-tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// One of the example deployments under `ci/deployments/`, as YAML to edit.
pub fn example(name: &str) -> Value {
    let path = repo_root()
        .join("ci/deployments")
        .join(format!("{name}.yml"));
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `manifest` with its `((variables))` generated as the director generates
/// them: by the bosh CLI's generator, from the manifest's `variables:`.
pub fn interpolated(manifest: &Path) -> Value {
    let store = tempfile::Builder::new().prefix("creds.").tempdir().unwrap();
    let output = Command::new(testkit::bosh_bin())
        .arg("interpolate")
        .arg(manifest)
        .arg("--vars-store")
        .arg(store.path().join("creds.yml"))
        .output()
        .expect("cannot run the bosh CLI (set BOSH_BIN or PATH)");
    assert!(
        output.status.success(),
        "bosh interpolate {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::from_slice(&output.stdout).unwrap()
}

/// One of the example deployments, its `((variables))` generated.
pub fn example_interpolated(name: &str) -> Value {
    interpolated(
        &repo_root()
            .join("ci/deployments")
            .join(format!("{name}.yml")),
    )
}

/// The rendered jobs of one instance: `<root>/<job>/<destination>`.
pub struct Rendered {
    /// Holds the manifest given to the renderer and, under `jobs/`, its output.
    dir: TempDir,
}

impl Rendered {
    /// Where the jobs are, laid out like `/var/vcap/jobs`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }

    pub fn path(&self, job: &str, file: &str) -> PathBuf {
        self.root().join(job).join(file)
    }

    /// The text of a rendered file, panicking with the path if it is missing.
    pub fn file(&self, job: &str, file: &str) -> String {
        let path = self.path(job, file);
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    pub fn has_job(&self, job: &str) -> bool {
        self.root().join(job).is_dir()
    }
}

/// Renders `instance` ("group/index") of `manifest`; `Err` is the renderer's message.
pub fn try_render(manifest: &Value, instance: &str) -> Result<Rendered, String> {
    let dir = tempfile::Builder::new()
        .prefix("rendered.")
        .tempdir()
        .expect("temp dir");
    let manifest_path = dir.path().join("manifest.yml");
    let text = serde_yaml::to_string(manifest).expect("manifest YAML");
    fs::write(&manifest_path, text).expect("write manifest");
    let root = repo_root();
    let output = Command::new("ruby")
        .arg(root.join("ci/render/render.rb"))
        .arg("--release")
        .arg(root.join("release"))
        .arg("--manifest")
        .arg(&manifest_path)
        .args(["--instance", instance])
        .arg("--out")
        .arg(dir.path().join("jobs"))
        .output()
        .expect("cannot run ruby (install Debian's ruby package)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(Rendered { dir })
}

/// Renders and panics with the renderer's message on failure.
pub fn render(manifest: &Value, instance: &str) -> Rendered {
    try_render(manifest, instance)
        .unwrap_or_else(|err| panic!("rendering {instance} failed: {err}"))
}

/// The instance names of a manifest, as the renderer lists them.
pub fn instances(manifest: &Value) -> Vec<String> {
    let groups = manifest["instance_groups"]
        .as_sequence()
        .expect("instance_groups");
    groups
        .iter()
        .flat_map(|group| {
            let name = group["name"].as_str().expect("group name").to_string();
            let count = group["instances"].as_u64().expect("instances");
            (0..count).map(move |i| format!("{name}/{i}"))
        })
        .collect()
}

/// Sets `value` at a path of map keys and sequence indices, e.g.
/// `set(&mut m, &["instance_groups", "0", "jobs", "0", "properties", "postgres", "config"], v)`.
/// Missing map keys are created.
pub fn set(manifest: &mut Value, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut node = manifest;
    for key in parents {
        node = step(node, key);
    }
    match node {
        Value::Sequence(items) => items[last.parse::<usize>().expect("index")] = value,
        Value::Mapping(map) => {
            map.insert(Value::String(last.to_string()), value);
        }
        other => panic!("cannot set {last} in {other:?}"),
    }
}

fn step<'a>(node: &'a mut Value, key: &str) -> &'a mut Value {
    match node {
        Value::Sequence(items) => &mut items[key.parse::<usize>().expect("index")],
        Value::Mapping(map) => map
            .entry(Value::String(key.to_string()))
            .or_insert_with(|| Value::Mapping(Default::default())),
        other => panic!("cannot descend into {key} of {other:?}"),
    }
}

/// Parses YAML for a value in a test (`yaml("[1, 2]")`).
pub fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("test YAML")
}
