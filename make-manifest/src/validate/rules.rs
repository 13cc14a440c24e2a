//! The release's own rules, beyond what BOSH requires: its topologies (HA is
//! exactly two nodes, replication at least two, standalone one), a VIP that
//! BOSH can never hand to a VM, a smoke-tests errand that logs in with its
//! user's password, and no spruce operator left, which make-manifest does not
//! evaluate.

use std::net::IpAddr;

use serde_yaml::{Mapping, Value};

use super::schema::{string, Cloud, Group, NetworkKind};
use super::{fail, CLOUD, MANIFEST, VIP_PROPERTY};
use crate::merge::{scalar_text, spruce_operator};
use crate::{check_shape, unrelated_primaries, InputError, Shape, ShapeError};

fn job<'a>(group: &Group<'a>, name: &str) -> Option<&'a Mapping> {
    group
        .jobs
        .iter()
        .copied()
        .find(|job| job.get("name").and_then(Value::as_str) == Some(name))
}

/// Whether failover goes through an etcd store: the deployment runs the
/// etcd job (the postgres job's optional etcd link finds it), or the
/// postgres job names an external one.
pub(super) fn has_consensus_store(groups: &[Group]) -> bool {
    groups.iter().any(|group| {
        job(group, "etcd").is_some()
            || job(group, "postgres")
                .and_then(|postgres| postgres.get("properties"))
                .and_then(|p| p.get("postgres"))
                .and_then(|p| p.get("consensus"))
                .and_then(|c| c.get("etcd"))
                .and_then(|e| e.get("endpoints"))
                .is_some()
    })
}

/// The release's rule for the group's shape ([`check_shape`]), and
/// make-manifest's own refusal of several unrelated primaries
/// ([`unrelated_primaries`]).
pub(super) fn check_topology(group: &Group, consensus: bool) -> Result<(), InputError> {
    let Some(postgres) = job(group, "postgres") else {
        return Ok(());
    };
    let replication = postgres
        .get("properties")
        .and_then(|p| p.get("postgres"))
        .and_then(|p| p.get("replication"))
        .and_then(|r| r.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ha = job(group, "vip").is_some();
    let path = format!("instance_groups[{}]", group.name);
    let count_path = format!("{path}.instances");
    let n = group.instances;
    let shape = Shape {
        instances: n,
        replication,
        ha,
        consensus,
    };
    match check_shape(shape) {
        Err(ShapeError::HaWithoutReplication) => Err(fail(MANIFEST, &path, "runs the vip job without postgres.replication.enabled: true; HA needs replication")),
        Err(ShapeError::ConsensusWithoutReplication) => Err(fail(MANIFEST, &path, "has an etcd store without postgres.replication.enabled: true; failover through it needs replication")),
        Err(ShapeError::HaNotTwoNodes(_)) => Err(fail(MANIFEST, &count_path, format!("HA runs exactly 2 postgres nodes, not {n}"))),
        Err(ShapeError::ReplicationAlone(_)) => Err(fail(MANIFEST, &count_path, format!("replication needs at least 2 nodes, not {n}"))),
        Ok(()) if unrelated_primaries(n, replication, ha) => Err(fail(
            MANIFEST,
            &count_path,
            format!("{n} nodes without postgres.replication.enabled would be {n} unrelated primaries; use 1, or enable replication"),
        )),
        Ok(()) => Ok(()),
    }
}

/// The VIP must be an address, and on a manual network it must sit inside a
/// subnet (keepalived puts it on the interface of that subnet) and be
/// reserved there (or BOSH may give it to a VM).
pub(super) fn check_vip(group: &Group, cloud: &Cloud) -> Result<(), InputError> {
    let Some(vip_job) = job(group, "vip") else {
        return Ok(());
    };
    let path = format!(
        "instance_groups[{}].jobs[vip].properties.{VIP_PROPERTY}",
        group.name
    );
    let raw = vip_job
        .get("properties")
        .and_then(|p| p.get(VIP_PROPERTY))
        .ok_or_else(|| {
            fail(
                MANIFEST,
                &path,
                "is missing: the vip job needs the virtual IP address",
            )
        })?;
    let raw = string(raw, MANIFEST, &path)?;
    let vip: IpAddr = raw
        .parse()
        .map_err(|_| fail(MANIFEST, &path, format!("`{raw}` is not an IP address")))?;
    for name in &group.networks {
        let network = &cloud.networks[name];
        if network.kind != NetworkKind::Manual {
            continue;
        }
        let subnet = network.subnet_holding(vip).map_err(|ranges| {
            fail(
                MANIFEST,
                &path,
                format!("{vip} is outside network `{name}` ({ranges}): keepalived can only raise it on a subnet the nodes are on"),
            )
        })?;
        if let Some(role) = subnet.range.unusable_role(vip) {
            return Err(fail(
                MANIFEST,
                &path,
                format!(
                    "{vip} is the {role} of network `{name}` ({}): no node can hold it",
                    subnet.raw_range
                ),
            ));
        }
        if subnet.gateway == vip {
            return Err(fail(
                MANIFEST,
                &path,
                format!("{vip} is the gateway of network `{name}`"),
            ));
        }
        if !subnet.reserved.iter().any(|r| r.contains(vip)) {
            return Err(fail(
                CLOUD,
                &format!("networks[{name}] subnet {}", subnet.raw_range),
                format!("the VIP {vip} must be in `reserved`, or BOSH may give it to a VM"),
            ));
        }
    }
    Ok(())
}

/// The smoke-tests errand must log in with the password its user has.
pub(super) fn check_errand_credentials(groups: &[Group]) -> Result<(), InputError> {
    let users: Vec<&Value> = groups
        .iter()
        .filter_map(|group| job(group, "postgres"))
        .filter_map(|job| {
            job.get("properties")?
                .get("postgres")?
                .get("users")?
                .as_sequence()
        })
        .flatten()
        .collect();
    for group in groups {
        let Some(errand) = job(group, "smoke-tests") else {
            continue;
        };
        let target = errand
            .get("properties")
            .and_then(|p| p.get("postgres"))
            .and_then(|p| p.get("smoke-tests"))
            .and_then(|p| p.get("target"));
        let username = target
            .and_then(|t| t.get("username"))
            .and_then(Value::as_str)
            .unwrap_or(crate::complete::DEFAULT_ERRAND_USER);
        let Some(password) = target.and_then(|t| t.get("password")) else {
            continue;
        };
        let user_password = users
            .iter()
            .find(|user| user.get("username").and_then(Value::as_str) == Some(username))
            .and_then(|user| user.get("password"));
        if user_password.is_some_and(|p| p != password) {
            return Err(fail(
                MANIFEST,
                &format!("instance_groups[{}].jobs[smoke-tests].properties.postgres.smoke-tests.target.password", group.name),
                format!("differs from the password of postgres user `{username}`; leave it out and make-manifest uses the user's"),
            ));
        }
    }
    Ok(())
}

pub(super) fn no_spruce_operators(value: &Value, doc: &str, path: &str) -> Result<(), InputError> {
    match value {
        Value::String(text) => match spruce_operator(text) {
            Some(_) => Err(fail(
                doc,
                if path.is_empty() { "(top level)" } else { path },
                format!("`{}` is a spruce operator, which make-manifest does not evaluate; write the value itself", text.trim()),
            )),
            None => Ok(()),
        },
        Value::Mapping(map) => map.iter().try_for_each(|(key, value)| {
            let key = scalar_text(key);
            no_spruce_operators(value, doc, &if path.is_empty() { key } else { format!("{path}.{key}") })
        }),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| no_spruce_operators(item, doc, &format!("{path}[{index}]"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn topology_rules_follow_the_release() {
        let jobs_for = |replication: bool, vip: bool| {
            let mut jobs = format!("- {{name: postgres, properties: {{postgres: {{replication: {{enabled: {replication}}}}}}}}}\n");
            if vip {
                jobs.push_str("- {name: vip}\n");
            }
            yaml(&jobs)
                .as_sequence()
                .unwrap()
                .clone()
                .into_iter()
                .map(|j| j.as_mapping().unwrap().clone())
                .collect::<Vec<_>>()
        };
        let rows: &[(u64, bool, bool, Option<&str>)] = &[
            (1, false, false, None),
            (0, false, false, None),
            (2, false, false, Some("unrelated primaries")),
            (2, true, false, None),
            (5, true, false, None),
            (1, true, false, Some("at least 2")),
            (2, true, true, None),
            (3, true, true, Some("exactly 2")),
            (1, true, true, Some("exactly 2")),
            (2, false, true, Some("needs replication")),
        ];
        for &(instances, replication, vip, expected) in rows {
            let jobs = jobs_for(replication, vip);
            let checked = Group {
                name: "postgres".into(),
                instances,
                networks: Vec::new(),
                jobs: jobs.iter().collect(),
            };
            let got = check_topology(&checked, false);
            match (expected, got) {
                (None, Ok(())) => {}
                (Some(want), Err(err)) => assert!(err.0.contains(want), "{instances}/{replication}/{vip}: {err}"),
                (want, got) => panic!("{instances} nodes, replication {replication}, vip {vip}: expected {want:?}, got {got:?}"),
            }
        }
    }
}
