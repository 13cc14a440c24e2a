//! Writing the results and saying what to run next.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_yaml::Value;

use crate::{yaml_out, Generated, Iaas, Topology};

pub const MANIFEST_FILE: &str = "manifest.yml";
pub const CLOUD_CONFIG_FILE: &str = "cloud-config.yml";

/// The manifest may carry passwords an overlay gave: owner-only.
pub const MANIFEST_MODE: u32 = 0o600;
pub const CLOUD_CONFIG_MODE: u32 = 0o644;

pub fn manifest_header(deployment: &str, iaas: Iaas, topology: Topology) -> String {
    format!(
        "# BOSH deployment manifest for deployment `{deployment}`: {iaas}, {}.\n\
         # Written by make-manifest. Change it with overlay files and run make-manifest\n\
         # again rather than editing it here.\n",
        topology.name()
    )
}

pub fn cloud_config_header(deployment: &str, iaas: Iaas) -> String {
    format!(
        "# BOSH cloud-config for deployment `{deployment}` on {iaas}.\n\
         # Written by make-manifest. Change it with overlay files and run make-manifest\n\
         # again rather than editing it here.\n"
    )
}

/// A document as written: header comment, `---`, the YAML.
pub fn with_header(header: &str, document: &Value) -> String {
    format!("{header}---\n{}", yaml_out::to_string(document))
}

/// Writes each `(file name, text, mode)` into `dir`: all to temporary files
/// first, then renamed into place, so a reader never sees half a file and a
/// failure before the renames leaves the old files as they were.
pub fn write_atomically(dir: &Path, files: &[(&str, &str, u32)]) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    let staged: Vec<(PathBuf, PathBuf)> = files
        .iter()
        .map(|(name, _, _)| {
            let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            (temp, dir.join(name))
        })
        .collect();
    let mut renamed = 0;
    let result = (|| -> Result<()> {
        for ((temp, _), (_, text, mode)) in staged.iter().zip(files) {
            write_file(temp, text, *mode)?;
        }
        for (temp, target) in &staged {
            fs::rename(temp, target).with_context(|| {
                format!(
                    "cannot move {} into place as {}",
                    temp.display(),
                    target.display()
                )
            })?;
            renamed += 1;
        }
        Ok(())
    })();
    if let Err(err) = result {
        for (temp, _) in &staged {
            let _ = fs::remove_file(temp);
        }
        let (done, kept) = staged.split_at(renamed);
        let list = |part: &[(PathBuf, PathBuf)]| {
            part.iter()
                .map(|(_, t)| t.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let state = if done.is_empty() {
            format!("nothing in {} was changed", dir.display())
        } else {
            format!(
                "{} already replaced, {} left as before",
                list(done),
                list(kept)
            )
        };
        return Err(err.context(state));
    }
    // The renames are durable once the directory is synced; failing that is
    // not worth failing the run over.
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(staged.into_iter().map(|(_, target)| target).collect())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    // A leftover from a crashed run could carry another mode: start afresh.
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Where the documents went, for the commands that use them.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Both files were written; the paths as the operator should type them.
    Files {
        manifest: String,
        cloud_config: String,
    },
    /// The manifest went to stdout; no cloud-config was written.
    Stdout,
}

/// The `bosh` commands to run next, in order, for the v2 CLI.
pub fn next_commands(
    generated: &Generated,
    destination: &Destination,
    release_dir: &str,
) -> Vec<String> {
    let mut commands = Vec::new();
    if let Destination::Files { cloud_config, .. } = destination {
        let vars: String = generated
            .cloud_config_vars
            .iter()
            .map(|var| format!(" -v {var}=<{var}>"))
            .collect();
        commands.push(format!(
            "bosh -n update-cloud-config {}{vars}",
            shell_quote(cloud_config)
        ));
    }
    commands.push(format!(
        "bosh -n upload-stemcell {}",
        shell_quote(&stemcell_url(generated))
    ));
    commands.extend(release_commands(&generated.manifest, release_dir));
    let manifest = match destination {
        Destination::Files { manifest, .. } => shell_quote(manifest),
        Destination::Stdout => "-".to_string(),
    };
    let deployment = shell_quote(&generated.deployment);
    commands.push(format!("bosh -n -d {deployment} deploy {manifest}"));
    if has_errand(&generated.manifest, "smoke-tests") {
        commands.push(format!("bosh -n -d {deployment} run-errand smoke-tests"));
    }
    commands
}

/// Notes that hold for every run, after the generated ones.
pub fn standing_notes(destination: &Destination) -> Vec<String> {
    match destination {
        Destination::Files { .. } => vec![
            "update-cloud-config replaces the director's whole cloud-config: on a director other deployments share, merge these entries into its cloud-config instead".into(),
        ],
        Destination::Stdout => vec![
            "the manifest went to stdout and no cloud-config was written: run with -o DIR to get both files".into(),
        ],
    }
}

fn stemcell_url(generated: &Generated) -> String {
    let stemcell = generated
        .manifest
        .get("stemcells")
        .and_then(|s| s.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let os = stemcell
        .get("os")
        .and_then(Value::as_str)
        .unwrap_or("ubuntu-jammy");
    let version = stemcell.get("version").map(crate::merge::scalar_text);
    let name = generated.iaas.stemcell_name(os);
    match version.as_deref() {
        None | Some("latest") => format!("https://bosh.io/d/stemcells/{name}"),
        Some(version) => format!("https://bosh.io/d/stemcells/{name}?v={version}"),
    }
}

/// Build and upload the release from a clone of this repository, or, for a
/// named version, upload that final (or dev) release's manifest.
fn release_commands(manifest: &Value, release_dir: &str) -> Vec<String> {
    let release = manifest.get("releases").and_then(|r| r.get(0));
    let name = release
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("postgres");
    let version = release
        .and_then(|r| r.get("version"))
        .map(crate::merge::scalar_text);
    let dir = shell_quote(release_dir);
    match version.as_deref() {
        None | Some("latest") => vec![
            format!("bosh -n create-release --dir {dir}"),
            format!("bosh -n upload-release --dir {dir}"),
        ],
        Some(version) => {
            let kind = if version.contains("dev") {
                "dev_releases"
            } else {
                "releases"
            };
            vec![format!(
                "bosh -n upload-release {}",
                shell_quote(&format!("{release_dir}/{kind}/{name}/{name}-{version}.yml"))
            )]
        }
    }
}

fn has_errand(manifest: &Value, name: &str) -> bool {
    manifest
        .get("instance_groups")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .any(|group| {
            group.get("name").and_then(Value::as_str) == Some(name)
                && group.get("lifecycle").and_then(Value::as_str) == Some("errand")
        })
}

/// Quotes for a POSIX shell only when needed.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=+@%,".contains(c));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The `--json` report.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub iaas: &'static str,
    pub topology: &'static str,
    pub deployment: &'a str,
    pub manifest: Option<&'a str>,
    pub cloud_config: Option<&'a str>,
    pub commands: &'a [String],
    pub notes: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_quote("manifests-out/manifest.yml"),
            "manifests-out/manifest.yml"
        );
        assert_eq!(shell_quote("my dir/m.yml"), "'my dir/m.yml'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn release_commands_follow_the_version() {
        let manifest: Value =
            serde_yaml::from_str("releases: [{name: postgres, version: latest}]").unwrap();
        assert_eq!(
            release_commands(&manifest, "release"),
            [
                "bosh -n create-release --dir release",
                "bosh -n upload-release --dir release"
            ]
        );
        let manifest: Value =
            serde_yaml::from_str("releases: [{name: postgres, version: '3'}]").unwrap();
        assert_eq!(
            release_commands(&manifest, "release"),
            ["bosh -n upload-release release/releases/postgres/postgres-3.yml"]
        );
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the second file should go makes its rename fail.
        fs::create_dir(dir.path().join("b.yml")).unwrap();
        fs::write(dir.path().join("b.yml").join("keep"), "x").unwrap();
        let err = write_atomically(
            dir.path(),
            &[("a.yml", "a: 1\n", 0o644), ("b.yml", "b: 1\n", 0o644)],
        );
        assert!(
            err.is_err(),
            "renaming onto a non-empty directory must fail"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn files_get_their_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        let written = write_atomically(
            &out,
            &[("m.yml", "a: 1\n", 0o600), ("c.yml", "b: 1\n", 0o644)],
        )
        .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&written[0]), 0o600);
        assert_eq!(mode(&written[1]) & 0o600, 0o600);
        assert_eq!(fs::read_to_string(&written[0]).unwrap(), "a: 1\n");
    }
}
