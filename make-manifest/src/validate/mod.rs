//! Checks the merged result the way the director would, before anything is
//! written: every key a v2 manifest and cloud-config require, every name an
//! instance group uses declared in the cloud-config, static IPs where the
//! director takes them, the topology rules of the release (HA is exactly two
//! nodes, replication at least two, standalone one), and a VIP that BOSH can
//! never hand to a VM.
//!
//! Errors name the document and the path in it, e.g.
//! `manifest: instance_groups[postgres].networks[0]: ...`.
//!
//! Three concerns, one module each: `schema` (what BOSH requires),
//! `rules` (what this release adds) and `variables` (the `((name))`
//! variables the documents use).

mod rules;
mod schema;
mod variables;

use serde_yaml::Value;

use crate::{input_error, InputError};

pub use variables::{bosh_variables, undeclared_variables};

/// The property of the `vip` job that holds the virtual IP address.
pub const VIP_PROPERTY: &str = "vip";

/// Checks both documents; the first problem found is the error.
pub fn validate(manifest: &Value, cloud_config: &Value) -> Result<(), InputError> {
    rules::no_spruce_operators(manifest, MANIFEST, "")?;
    rules::no_spruce_operators(cloud_config, CLOUD, "")?;
    let cloud = schema::check_cloud_config(cloud_config)?;
    let groups = schema::check_manifest(manifest, &cloud)?;
    let consensus = rules::has_consensus_store(&groups);
    for group in &groups {
        rules::check_topology(group, consensus)?;
        rules::check_vip(group, &cloud)?;
    }
    rules::check_errand_credentials(&groups)
}

const MANIFEST: &str = "manifest";
const CLOUD: &str = "cloud-config";

fn fail(doc: &str, path: &str, message: impl std::fmt::Display) -> InputError {
    input_error!("{doc}: {path}: {message}")
}

/// The manifest's `name`, if it is a string.
pub fn deployment_name(manifest: &Value) -> Option<&str> {
    manifest.get("name").and_then(Value::as_str)
}
