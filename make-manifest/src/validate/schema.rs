//! What BOSH itself requires, checked the way the director would: every key
//! a v2 manifest and cloud-config need, and every name an instance group uses
//! declared in the cloud-config. What these checks read (the cloud-config's
//! networks, the groups' jobs) is what the release's rules then work on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_yaml::{Mapping, Value};

use super::{fail, CLOUD, MANIFEST};
use crate::merge::scalar_text;
use crate::net::{Cidr, IpRange};
use crate::InputError;

/// What the manifest may refer to in the cloud-config.
#[derive(Debug, Default)]
pub(super) struct Cloud {
    pub(super) azs: BTreeSet<String>,
    pub(super) vm_types: BTreeSet<String>,
    pub(super) disk_types: BTreeSet<String>,
    pub(super) networks: BTreeMap<String, Network>,
}

#[derive(Debug)]
pub(super) struct Network {
    pub(super) kind: NetworkKind,
    /// The AZs its subnets are in; empty for a network without AZs.
    pub(super) azs: BTreeSet<String>,
    pub(super) subnets: Vec<Subnet>,
}

impl Network {
    /// The subnet whose range holds `address`, or else the ranges there are
    /// (comma-separated), for the message that says it is outside them all.
    pub(super) fn subnet_holding(&self, address: IpAddr) -> Result<&Subnet, String> {
        self.subnets
            .iter()
            .find(|s| s.range.contains(address))
            .ok_or_else(|| {
                let ranges: Vec<&str> = self.subnets.iter().map(|s| s.raw_range.as_str()).collect();
                ranges.join(", ")
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NetworkKind {
    Manual,
    Dynamic,
    Vip,
}

#[derive(Debug)]
pub(super) struct Subnet {
    pub(super) range: Cidr,
    pub(super) gateway: IpAddr,
    pub(super) reserved: Vec<IpRange>,
    /// The `static` ranges: where instance groups' `static_ips` may be.
    pub(super) statics: Vec<IpRange>,
    pub(super) raw_range: String,
}

/// An instance group as the later checks need it.
#[derive(Debug)]
pub(super) struct Group<'a> {
    pub(super) name: String,
    pub(super) instances: u64,
    pub(super) networks: Vec<String>,
    pub(super) jobs: Vec<&'a Mapping>,
}

pub(super) fn check_cloud_config(doc: &Value) -> Result<Cloud, InputError> {
    let root = as_map(doc, CLOUD, "(top level)")?;
    let mut cloud = Cloud {
        azs: names(root, "azs", CLOUD, false)?.into_keys().collect(),
        ..Cloud::default()
    };
    for (name, vm_type) in names(root, "vm_types", CLOUD, false)? {
        optional_map(
            vm_type,
            "cloud_properties",
            CLOUD,
            &format!("vm_types[{name}]"),
        )?;
        cloud.vm_types.insert(name);
    }
    for (name, disk) in names(root, "disk_types", CLOUD, false)? {
        let path = format!("disk_types[{name}]");
        positive_int(disk, "disk_size", CLOUD, &path)?;
        cloud.disk_types.insert(name);
    }
    let networks = names(root, "networks", CLOUD, true)?;
    if networks.is_empty() {
        return Err(fail(CLOUD, "networks", "declares no network"));
    }
    for (name, network) in networks {
        let path = format!("networks[{name}]");
        let parsed = check_network(network, &path, &cloud.azs)?;
        cloud.networks.insert(name, parsed);
    }
    check_compilation(root, &cloud)?;
    Ok(cloud)
}

fn check_network(
    network: &Mapping,
    path: &str,
    azs: &BTreeSet<String>,
) -> Result<Network, InputError> {
    let kind = match network.get("type") {
        None => NetworkKind::Manual,
        Some(Value::String(kind)) if kind == "manual" => NetworkKind::Manual,
        Some(Value::String(kind)) if kind == "dynamic" => NetworkKind::Dynamic,
        Some(Value::String(kind)) if kind == "vip" => NetworkKind::Vip,
        Some(other) => {
            return Err(fail(
                CLOUD,
                &format!("{path}.type"),
                format!(
                    "`{}` is not a network type (manual, dynamic or vip)",
                    scalar_text(other)
                ),
            ))
        }
    };
    let subnets = match network.get("subnets") {
        None if kind == NetworkKind::Manual => {
            return Err(fail(CLOUD, path, "a manual network needs `subnets`"))
        }
        None => Vec::new(),
        Some(Value::Sequence(subnets)) => subnets.iter().collect(),
        Some(_) => return Err(fail(CLOUD, &format!("{path}.subnets"), "must be a list")),
    };
    if kind == NetworkKind::Manual && subnets.is_empty() {
        return Err(fail(
            CLOUD,
            &format!("{path}.subnets"),
            "a manual network needs at least one subnet",
        ));
    }
    let mut parsed = Network {
        kind,
        azs: BTreeSet::new(),
        subnets: Vec::new(),
    };
    for (index, subnet) in subnets.into_iter().enumerate() {
        let subnet_path = format!("{path}.subnets[{index}]");
        let subnet = as_map(subnet, CLOUD, &subnet_path)?;
        parsed.azs.extend(subnet_azs(subnet, &subnet_path, azs)?);
        if kind == NetworkKind::Manual {
            parsed
                .subnets
                .push(check_manual_subnet(subnet, &subnet_path)?);
        }
    }
    Ok(parsed)
}

fn subnet_azs(
    subnet: &Mapping,
    path: &str,
    known: &BTreeSet<String>,
) -> Result<Vec<String>, InputError> {
    let listed: Vec<String> = match (subnet.get("az"), subnet.get("azs")) {
        (Some(_), Some(_)) => return Err(fail(CLOUD, path, "has both `az` and `azs`; choose one")),
        (Some(az), None) => vec![string(az, CLOUD, &format!("{path}.az"))?.to_string()],
        (None, Some(azs)) => {
            let azs = string_list(azs, CLOUD, &format!("{path}.azs"))?;
            if azs.is_empty() {
                return Err(fail(CLOUD, &format!("{path}.azs"), "is empty"));
            }
            azs
        }
        (None, None) => Vec::new(),
    };
    for az in &listed {
        if !known.contains(az) {
            return Err(fail(
                CLOUD,
                path,
                format!(
                    "names az `{az}`, which `azs` does not declare{}",
                    have(known)
                ),
            ));
        }
    }
    Ok(listed)
}

fn check_manual_subnet(subnet: &Mapping, path: &str) -> Result<Subnet, InputError> {
    let raw_range = required_string(subnet, "range", CLOUD, path)?;
    let range = Cidr::parse(raw_range).map_err(|err| fail(CLOUD, &format!("{path}.range"), err))?;
    let raw_gateway = required_string(subnet, "gateway", CLOUD, path)?;
    let gateway: IpAddr = raw_gateway.parse().map_err(|_| {
        fail(
            CLOUD,
            &format!("{path}.gateway"),
            format!("`{raw_gateway}` is not an IP address"),
        )
    })?;
    if !range.contains(gateway) {
        return Err(fail(
            CLOUD,
            &format!("{path}.gateway"),
            format!("{gateway} is outside the subnet's range {raw_range}"),
        ));
    }
    let (mut reserved, mut statics) = (Vec::new(), Vec::new());
    for key in ["reserved", "static"] {
        let Some(list) = subnet.get(key) else {
            continue;
        };
        for (index, entry) in string_list(list, CLOUD, &format!("{path}.{key}"))?
            .iter()
            .enumerate()
        {
            let parsed = IpRange::parse(entry)
                .map_err(|err| fail(CLOUD, &format!("{path}.{key}[{index}]"), err))?;
            if key == "reserved" {
                reserved.push(parsed);
            } else {
                statics.push(parsed);
            }
        }
    }
    Ok(Subnet {
        range,
        gateway,
        reserved,
        statics,
        raw_range: raw_range.to_string(),
    })
}

fn check_compilation(root: &Mapping, cloud: &Cloud) -> Result<(), InputError> {
    let compilation = root.get("compilation").ok_or_else(|| {
        fail(
            CLOUD,
            "compilation",
            "is missing (BOSH compiles packages on these VMs)",
        )
    })?;
    let compilation = as_map(compilation, CLOUD, "compilation")?;
    positive_int(compilation, "workers", CLOUD, "compilation")?;
    let network = required_string(compilation, "network", CLOUD, "compilation")?;
    let Some(declared) = cloud.networks.get(network) else {
        return Err(fail(
            CLOUD,
            "compilation.network",
            format!("no network `{network}`{}", have_keys(&cloud.networks)),
        ));
    };
    if let Some(az) = compilation.get("az") {
        let az = string(az, CLOUD, "compilation.az")?;
        if !cloud.azs.contains(az) {
            return Err(fail(
                CLOUD,
                "compilation.az",
                format!("no az `{az}`{}", have(&cloud.azs)),
            ));
        }
        if !declared.azs.is_empty() && !declared.azs.contains(az) {
            return Err(fail(
                CLOUD,
                "compilation.az",
                format!("network `{network}` has no subnet in az `{az}`"),
            ));
        }
    }
    match (
        compilation.get("vm_type"),
        compilation.get("vm_resources"),
        compilation.get("cloud_properties"),
    ) {
        (Some(vm_type), _, _) => {
            let vm_type = string(vm_type, CLOUD, "compilation.vm_type")?;
            if !cloud.vm_types.contains(vm_type) {
                return Err(fail(
                    CLOUD,
                    "compilation.vm_type",
                    format!("no vm_type `{vm_type}`{}", have(&cloud.vm_types)),
                ));
            }
            Ok(())
        }
        (None, Some(_), _) | (None, None, Some(_)) => Ok(()),
        (None, None, None) => Err(fail(
            CLOUD,
            "compilation",
            "needs `vm_type` (or vm_resources / cloud_properties)",
        )),
    }
}

pub(super) fn check_manifest<'a>(
    doc: &'a Value,
    cloud: &Cloud,
) -> Result<Vec<Group<'a>>, InputError> {
    let root = as_map(doc, MANIFEST, "(top level)")?;
    let name = required_string(root, "name", MANIFEST, "(top level)")?;
    if name.is_empty() {
        return Err(fail(MANIFEST, "name", "is empty"));
    }
    let releases = names(root, "releases", MANIFEST, true)?;
    if releases.is_empty() {
        return Err(fail(MANIFEST, "releases", "lists no release"));
    }
    for (release, spec) in &releases {
        required_scalar(spec, "version", MANIFEST, &format!("releases[{release}]"))?;
    }
    let stemcells = check_stemcells(root)?;
    check_update(root)?;
    let mut groups = Vec::new();
    for (group_name, group) in names(root, "instance_groups", MANIFEST, true)? {
        groups.push(check_group(
            group_name, group, &releases, &stemcells, cloud,
        )?);
    }
    if groups.is_empty() {
        return Err(fail(MANIFEST, "instance_groups", "lists no instance group"));
    }
    if let Some(variables) = root.get("variables") {
        let variables = list(variables, MANIFEST, "variables")?;
        let mut seen = BTreeSet::new();
        for (index, variable) in variables.iter().enumerate() {
            let path = format!("variables[{index}]");
            let variable = as_map(variable, MANIFEST, &path)?;
            let name = required_string(variable, "name", MANIFEST, &path)?;
            required_string(variable, "type", MANIFEST, &format!("variables[{name}]"))?;
            if !seen.insert(name) {
                return Err(fail(
                    MANIFEST,
                    "variables",
                    format!("declares `{name}` twice"),
                ));
            }
        }
    }
    Ok(groups)
}

fn check_stemcells(root: &Mapping) -> Result<BTreeSet<String>, InputError> {
    let stemcells = list(
        root.get("stemcells")
            .ok_or_else(|| fail(MANIFEST, "stemcells", "is missing"))?,
        MANIFEST,
        "stemcells",
    )?;
    if stemcells.is_empty() {
        return Err(fail(MANIFEST, "stemcells", "lists no stemcell"));
    }
    let mut aliases = BTreeSet::new();
    for (index, stemcell) in stemcells.iter().enumerate() {
        let path = format!("stemcells[{index}]");
        let stemcell = as_map(stemcell, MANIFEST, &path)?;
        let alias = required_string(stemcell, "alias", MANIFEST, &path)?;
        if !stemcell.contains_key("os") && !stemcell.contains_key("name") {
            return Err(fail(MANIFEST, &path, "needs `os` (or `name`)"));
        }
        required_scalar(stemcell, "version", MANIFEST, &path)?;
        if !aliases.insert(alias.to_string()) {
            return Err(fail(
                MANIFEST,
                "stemcells",
                format!("alias `{alias}` appears twice"),
            ));
        }
    }
    Ok(aliases)
}

fn check_update(root: &Mapping) -> Result<(), InputError> {
    let update = root
        .get("update")
        .ok_or_else(|| fail(MANIFEST, "update", "is missing"))?;
    let update = as_map(update, MANIFEST, "update")?;
    for key in [
        "canaries",
        "max_in_flight",
        "canary_watch_time",
        "update_watch_time",
    ] {
        required_scalar(update, key, MANIFEST, "update")?;
    }
    Ok(())
}

fn check_group<'a>(
    name: String,
    group: &'a Mapping,
    releases: &BTreeMap<String, &Mapping>,
    stemcells: &BTreeSet<String>,
    cloud: &Cloud,
) -> Result<Group<'a>, InputError> {
    let path = format!("instance_groups[{name}]");
    let instances = group
        .get("instances")
        .ok_or_else(|| fail(MANIFEST, &path, "needs `instances`"))?
        .as_u64()
        .ok_or_else(|| {
            fail(
                MANIFEST,
                &format!("{path}.instances"),
                "must be a whole number ≥ 0",
            )
        })?;
    if let Some(lifecycle) = group.get("lifecycle") {
        let lifecycle = string(lifecycle, MANIFEST, &format!("{path}.lifecycle"))?;
        if lifecycle != "service" && lifecycle != "errand" {
            return Err(fail(
                MANIFEST,
                &format!("{path}.lifecycle"),
                format!("`{lifecycle}` is neither service nor errand"),
            ));
        }
    }
    let azs = match group.get("azs") {
        Some(azs) => string_list(azs, MANIFEST, &format!("{path}.azs"))?,
        None => Vec::new(),
    };
    for az in &azs {
        if !cloud.azs.contains(az) {
            return Err(fail(
                MANIFEST,
                &format!("{path}.azs"),
                format!("the cloud-config declares no az `{az}`{}", have(&cloud.azs)),
            ));
        }
    }
    match (group.get("vm_type"), group.get("vm_resources")) {
        (Some(vm_type), _) => {
            let vm_type = string(vm_type, MANIFEST, &format!("{path}.vm_type"))?;
            if !cloud.vm_types.contains(vm_type) {
                return Err(fail(
                    MANIFEST,
                    &format!("{path}.vm_type"),
                    format!(
                        "the cloud-config declares no vm_type `{vm_type}`{}",
                        have(&cloud.vm_types)
                    ),
                ));
            }
        }
        (None, Some(_)) => {}
        (None, None) => return Err(fail(MANIFEST, &path, "needs `vm_type` (or vm_resources)")),
    }
    let stemcell = required_string(group, "stemcell", MANIFEST, &path)?;
    if !stemcells.contains(stemcell) {
        return Err(fail(
            MANIFEST,
            &format!("{path}.stemcell"),
            format!("no stemcell with alias `{stemcell}` in `stemcells`"),
        ));
    }
    if let Some(disk_type) = group.get("persistent_disk_type") {
        let disk_type = string(disk_type, MANIFEST, &format!("{path}.persistent_disk_type"))?;
        if !cloud.disk_types.contains(disk_type) {
            return Err(fail(
                MANIFEST,
                &format!("{path}.persistent_disk_type"),
                format!(
                    "the cloud-config declares no disk_type `{disk_type}`{}",
                    have(&cloud.disk_types)
                ),
            ));
        }
    }
    let networks = check_group_networks(group, &path, &azs, instances, cloud)?;
    let jobs = check_jobs(group, &path, releases)?;
    Ok(Group {
        name,
        instances,
        networks,
        jobs,
    })
}

fn check_group_networks(
    group: &Mapping,
    path: &str,
    azs: &[String],
    instances: u64,
    cloud: &Cloud,
) -> Result<Vec<String>, InputError> {
    let networks = list(
        group
            .get("networks")
            .ok_or_else(|| fail(MANIFEST, path, "needs `networks`"))?,
        MANIFEST,
        &format!("{path}.networks"),
    )?;
    if networks.is_empty() {
        return Err(fail(
            MANIFEST,
            &format!("{path}.networks"),
            "lists no network",
        ));
    }
    let mut names = Vec::new();
    for (index, network) in networks.iter().enumerate() {
        let network_path = format!("{path}.networks[{index}]");
        let network = as_map(network, MANIFEST, &network_path)?;
        let name = required_string(network, "name", MANIFEST, &network_path)?;
        let Some(declared) = cloud.networks.get(name) else {
            return Err(fail(
                MANIFEST,
                &network_path,
                format!(
                    "the cloud-config declares no network `{name}`{}",
                    have_keys(&cloud.networks)
                ),
            ));
        };
        // The director's rule: a group without AZs needs a network without
        // AZs; a group with AZs needs a network with a subnet in each.
        let fits = if azs.is_empty() {
            declared.azs.is_empty() || declared.kind == NetworkKind::Vip
        } else {
            declared.kind == NetworkKind::Vip || azs.iter().all(|az| declared.azs.contains(az))
        };
        if !fits {
            return Err(fail(
                MANIFEST,
                &network_path,
                format!(
                    "the group's azs [{}] do not match network `{name}`'s subnets (azs [{}])",
                    azs.join(", "),
                    declared.azs.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some(static_ips) = network.get("static_ips") {
            let static_path = format!("{path}.networks[{name}].static_ips");
            check_static_ips(static_ips, &static_path, name, declared, instances)?;
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The director's rules for a group's `static_ips` on one network: on a
/// manual network (a dynamic one's addresses are the IaaS's to pick), one
/// address per instance, each once, each in a subnet's `static` range and
/// neither reserved nor the gateway. A vip network's static IPs are public
/// addresses outside any subnet: nothing to check them against.
fn check_static_ips(
    value: &Value,
    path: &str,
    name: &str,
    network: &Network,
    instances: u64,
) -> Result<(), InputError> {
    let entries = string_list(value, MANIFEST, path)?;
    match network.kind {
        NetworkKind::Vip => return Ok(()),
        NetworkKind::Dynamic => {
            return Err(fail(
                MANIFEST,
                path,
                format!("network `{name}` is dynamic, where the IaaS picks the addresses: static IPs need a manual network with a `static` range"),
            ))
        }
        NetworkKind::Manual => {}
    }
    let mut ranges = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let range = IpRange::parse(entry)
            .map_err(|err| fail(MANIFEST, &format!("{path}[{index}]"), err))?;
        ranges.push(range);
    }
    let count = ranges.iter().fold(0u128, |sum, range| {
        sum.saturating_add(range.address_count())
    });
    if count != u128::from(instances) {
        return Err(fail(
            MANIFEST,
            path,
            format!(
                "{count} addresses for {instances} instances: the director needs one per instance"
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for address in ranges.iter().flat_map(IpRange::addresses) {
        if !seen.insert(address) {
            return Err(fail(MANIFEST, path, format!("{address} is listed twice")));
        }
        check_static_ip(address, path, name, network)?;
    }
    Ok(())
}

fn check_static_ip(
    address: IpAddr,
    path: &str,
    name: &str,
    network: &Network,
) -> Result<(), InputError> {
    let subnet = network.subnet_holding(address).map_err(|ranges| {
        fail(
            MANIFEST,
            path,
            format!("{address} is outside network `{name}` ({ranges})"),
        )
    })?;
    let problem = if subnet.gateway == address {
        Some("is its gateway".to_string())
    } else if let Some(role) = subnet.range.unusable_role(address) {
        Some(format!("is its {role}"))
    } else if subnet.reserved.iter().any(|r| r.contains(address)) {
        Some("is in its `reserved`, which BOSH never gives to a VM".to_string())
    } else if !subnet.statics.iter().any(|r| r.contains(address)) {
        Some("is not in its `static` ranges, where BOSH takes static IPs from".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(fail(
            MANIFEST,
            path,
            format!(
                "{address}, in network `{name}` subnet {}, {problem}",
                subnet.raw_range
            ),
        )),
        None => Ok(()),
    }
}

fn check_jobs<'a>(
    group: &'a Mapping,
    path: &str,
    releases: &BTreeMap<String, &Mapping>,
) -> Result<Vec<&'a Mapping>, InputError> {
    let jobs = list(
        group
            .get("jobs")
            .ok_or_else(|| fail(MANIFEST, path, "needs `jobs`"))?,
        MANIFEST,
        &format!("{path}.jobs"),
    )?;
    if jobs.is_empty() {
        return Err(fail(MANIFEST, &format!("{path}.jobs"), "lists no job"));
    }
    let mut checked = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let job_path = format!("{path}.jobs[{index}]");
        let job = as_map(job, MANIFEST, &job_path)?;
        let name = required_string(job, "name", MANIFEST, &job_path)?;
        let job_path = format!("{path}.jobs[{name}]");
        let release = required_string(job, "release", MANIFEST, &job_path)?;
        if !releases.contains_key(release) {
            return Err(fail(
                MANIFEST,
                &format!("{job_path}.release"),
                format!("`{release}` is not in `releases`{}", have_keys(releases)),
            ));
        }
        if let Some(properties) = job.get("properties") {
            if !properties.is_mapping() {
                return Err(fail(
                    MANIFEST,
                    &format!("{job_path}.properties"),
                    "must be a map",
                ));
            }
        }
        checked.push(job);
    }
    Ok(checked)
}

// ---- small typed accessors; every error names doc and path ----

fn as_map<'a>(value: &'a Value, doc: &str, path: &str) -> Result<&'a Mapping, InputError> {
    value
        .as_mapping()
        .ok_or_else(|| fail(doc, path, "must be a map"))
}

fn list<'a>(value: &'a Value, doc: &str, path: &str) -> Result<&'a Vec<Value>, InputError> {
    value
        .as_sequence()
        .ok_or_else(|| fail(doc, path, "must be a list"))
}

pub(super) fn string<'a>(value: &'a Value, doc: &str, path: &str) -> Result<&'a str, InputError> {
    value
        .as_str()
        .ok_or_else(|| fail(doc, path, "must be a string"))
}

fn required_string<'a>(
    map: &'a Mapping,
    key: &str,
    doc: &str,
    path: &str,
) -> Result<&'a str, InputError> {
    let value = map
        .get(key)
        .ok_or_else(|| fail(doc, path, format!("needs `{key}`")))?;
    string(value, doc, &format!("{path}.{key}"))
}

fn required_scalar(map: &Mapping, key: &str, doc: &str, path: &str) -> Result<(), InputError> {
    match map.get(key) {
        Some(Value::String(_) | Value::Number(_)) => Ok(()),
        Some(_) => Err(fail(
            doc,
            &format!("{path}.{key}"),
            "must be a string or a number",
        )),
        None => Err(fail(doc, path, format!("needs `{key}`"))),
    }
}

fn positive_int(map: &Mapping, key: &str, doc: &str, path: &str) -> Result<u64, InputError> {
    map.get(key)
        .ok_or_else(|| fail(doc, path, format!("needs `{key}`")))?
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| fail(doc, &format!("{path}.{key}"), "must be a whole number > 0"))
}

fn optional_map(map: &Mapping, key: &str, doc: &str, path: &str) -> Result<(), InputError> {
    match map.get(key) {
        None | Some(Value::Mapping(_)) => Ok(()),
        Some(_) => Err(fail(doc, &format!("{path}.{key}"), "must be a map")),
    }
}

fn string_list(value: &Value, doc: &str, path: &str) -> Result<Vec<String>, InputError> {
    list(value, doc, path)?
        .iter()
        .enumerate()
        .map(|(index, item)| string(item, doc, &format!("{path}[{index}]")).map(String::from))
        .collect()
}

/// The items of a list of named maps, by name, in order; names must be
/// strings and unique. `required` makes a missing key an error.
fn names<'a>(
    root: &'a Mapping,
    key: &str,
    doc: &str,
    required: bool,
) -> Result<BTreeMap<String, &'a Mapping>, InputError> {
    let Some(value) = root.get(key) else {
        return if required {
            Err(fail(doc, key, "is missing"))
        } else {
            Ok(BTreeMap::new())
        };
    };
    let mut named = BTreeMap::new();
    for (index, item) in list(value, doc, key)?.iter().enumerate() {
        let path = format!("{key}[{index}]");
        let item = as_map(item, doc, &path)?;
        let name = required_string(item, "name", doc, &path)?;
        if named.insert(name.to_string(), item).is_some() {
            return Err(fail(doc, key, format!("`{name}` appears twice")));
        }
    }
    Ok(named)
}

fn have(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        " (it declares none)".into()
    } else {
        format!(
            " (it has: {})",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn have_keys<V>(map: &BTreeMap<String, V>) -> String {
    have(&map.keys().cloned().collect())
}
