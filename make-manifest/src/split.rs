//! One merged document becomes two: the cloud-config and the manifest.
//!
//! Templates and overlays are written as one document so that an overlay can
//! touch either, as the seed's `my-networking.yml` does; the keys a BOSH v2
//! cloud-config owns go there, everything else stays in the manifest.

use serde_yaml::{Mapping, Value};

use crate::{input_error, merge, InputError};

/// The top-level keys of a BOSH v2 cloud-config.
pub const CLOUD_CONFIG_KEYS: [&str; 6] = [
    "azs",
    "vm_types",
    "vm_extensions",
    "disk_types",
    "networks",
    "compilation",
];

/// Splits the merged document into (manifest, cloud-config), keeping key order.
pub fn split(document: Value) -> (Value, Value) {
    let mut manifest = Mapping::new();
    let mut cloud_config = Mapping::new();
    if let Value::Mapping(map) = document {
        for (key, value) in map {
            let is_cloud = key
                .as_str()
                .is_some_and(|key| CLOUD_CONFIG_KEYS.contains(&key));
            if is_cloud {
                cloud_config.insert(key, value);
            } else {
                manifest.insert(key, value);
            }
        }
    }
    (Value::Mapping(manifest), Value::Mapping(cloud_config))
}

/// Moves a network's top-level `cloud_properties` and `dns` into each of its
/// subnets.
///
/// The seed's overlay (and BOSH v1 manifests generally) put `cloud_properties`
/// on the network itself. A v2 network with `subnets` must not have them
/// there (the director rejects "must not specify 'cloud_properties' when also
/// specifying 'subnets'"), so they are merged into every subnet with the same
/// rules as an overlay: the seed's `security_groups: [postgres]` replaces the
/// template's `[default]` and keeps the subnet id.
pub fn fold_network_level_keys(cloud_config: &mut Value) -> Result<(), InputError> {
    let Some(networks) = cloud_config
        .get_mut("networks")
        .and_then(Value::as_sequence_mut)
    else {
        return Ok(());
    };
    for network in networks.iter_mut().filter_map(Value::as_mapping_mut) {
        let has_subnets = network
            .get("subnets")
            .and_then(Value::as_sequence)
            .is_some_and(|subnets| !subnets.is_empty());
        if !has_subnets {
            continue;
        }
        let name = network
            .get("name")
            .map(merge::scalar_text)
            .unwrap_or_default();
        let properties = network.remove("cloud_properties");
        let dns = network.remove("dns");
        let subnets = network
            .get_mut("subnets")
            .and_then(Value::as_sequence_mut)
            .expect("checked above");
        for (index, subnet) in subnets.iter_mut().enumerate() {
            let Some(subnet) = subnet.as_mapping_mut() else {
                continue;
            };
            if let Some(properties) = properties.clone() {
                let target = subnet
                    .entry(Value::from("cloud_properties"))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                merge::merge(target, properties).map_err(|err| {
                    input_error!(
                        "cloud-config: networks[{name}].cloud_properties into subnets[{index}]: {err}"
                    )
                })?;
            }
            if let Some(dns) = dns.clone() {
                subnet.insert(Value::from("dns"), dns);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn cloud_config_keys_go_to_the_cloud_config() {
        let (manifest, cloud) = split(yaml(
            "name: pg\nnetworks: []\ninstance_groups: []\nazs: []\nvm_types: []\nvm_extensions: []\ndisk_types: []\ncompilation: {}\nvariables: []\n",
        ));
        assert_eq!(
            manifest,
            yaml("name: pg\ninstance_groups: []\nvariables: []\n")
        );
        assert_eq!(
            cloud,
            yaml("networks: []\nazs: []\nvm_types: []\nvm_extensions: []\ndisk_types: []\ncompilation: {}\n")
        );
    }

    #[test]
    fn network_level_cloud_properties_fold_into_subnets() {
        let mut cloud = yaml(
            r#"
networks:
- name: postgres1
  type: dynamic
  subnets:
  - azs: [z1]
    cloud_properties: {subnet: s-1, security_groups: [default]}
  - azs: [z2]
  cloud_properties: {security_groups: [postgres]}
  dns: [10.0.0.2]
"#,
        );
        fold_network_level_keys(&mut cloud).unwrap();
        assert_eq!(
            cloud,
            yaml(
                r#"
networks:
- name: postgres1
  type: dynamic
  subnets:
  - azs: [z1]
    cloud_properties: {subnet: s-1, security_groups: [postgres]}
    dns: [10.0.0.2]
  - azs: [z2]
    cloud_properties: {security_groups: [postgres]}
    dns: [10.0.0.2]
"#
            )
        );
    }

    #[test]
    fn networks_without_subnets_keep_their_cloud_properties() {
        let text = "networks:\n- name: n\n  type: dynamic\n  cloud_properties: {a: 1}\n";
        let mut cloud = yaml(text);
        fold_network_level_keys(&mut cloud).unwrap();
        assert_eq!(cloud, yaml(text));
    }
}
