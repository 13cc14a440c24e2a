//! `make-manifest`: BOSH v2 deployment manifests and cloud-configs for the
//! postgres release.
//!
//! [`generate`] decides everything without touching the disk (except to read
//! templates and overlays): it renders the IaaS template, merges the overlays,
//! splits the result into a manifest and a cloud-config, fills in generated
//! passwords (and, with `--tls`, the certificate) and checks the result the
//! way the director would. Only when all of that passed does the binary write
//! anything ([`output::write_atomically`]), so bad input leaves no file
//! behind.

pub mod complete;
pub mod etcd;
pub mod input;
pub mod merge;
pub mod net;
pub mod output;
pub mod overlay;
pub mod spec;
pub mod split;
pub mod template;
pub mod tls;
pub mod validate;
pub mod yaml_out;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_yaml::Value;

/// Bad input: a one-line message naming the input and what is wrong with it.
/// The binary exits 2 and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Shorthand for an [`InputError`] from a format string.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => { $crate::InputError(format!($($arg)*)) };
}

/// The infrastructures with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Iaas {
    /// bosh-lite (the warden / garden CPI)
    Warden,
    /// Amazon EC2 (the AWS CPI)
    #[value(name = "aws-ec2")]
    AwsEc2,
    /// OpenStack (the OpenStack CPI)
    #[value(name = "openstack-nova")]
    OpenstackNova,
}

impl Iaas {
    pub const ALL: [Iaas; 3] = [Iaas::Warden, Iaas::AwsEc2, Iaas::OpenstackNova];

    /// The name on the command line, of the template, and in output.
    pub fn name(self) -> &'static str {
        match self {
            Iaas::Warden => "warden",
            Iaas::AwsEc2 => "aws-ec2",
            Iaas::OpenstackNova => "openstack-nova",
        }
    }

    /// The machine type written into the `postgres` vm_type when --vm-type is
    /// not given: an EC2 instance type, an OpenStack flavor. Warden has none.
    pub fn default_vm_type(self) -> Option<&'static str> {
        match self {
            Iaas::Warden => None,
            Iaas::AwsEc2 => Some("m5.large"),
            Iaas::OpenstackNova => Some("m1.medium"),
        }
    }

    /// The stemcell name for this IaaS and an OS, as bosh.io publishes it.
    pub fn stemcell_name(self, os: &str) -> String {
        let infix = match self {
            Iaas::Warden => "warden-boshlite",
            Iaas::AwsEc2 => "aws-xen-hvm",
            Iaas::OpenstackNova => "openstack-kvm",
        };
        format!("bosh-{infix}-{os}-go_agent")
    }
}

impl fmt::Display for Iaas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the operator asked for on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyFlags {
    pub replication: bool,
    pub ha: bool,
    pub instances: Option<u32>,
    pub vip: Option<IpAddr>,
}

/// The shape of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One node, no replication.
    Standalone,
    /// N ≥ 2 nodes with streaming replication; node 0 starts as primary.
    Clustered { instances: u32 },
    /// Two nodes, automatic failover, haproxy and keepalived trading `vip`.
    Ha { vip: IpAddr },
    /// N ≥ 3 nodes with automatic failover through an etcd store of
    /// [`ETCD_MEMBERS`] VMs of its own, haproxy on every node, keepalived
    /// moving `vip` to one of them.
    HaOnEtcd { vip: IpAddr, instances: u32 },
}

/// The etcd members make-manifest writes for the N-node mode: three keep
/// quorum through the loss of any one (an update, a crash); five, set in an
/// overlay, through two.
pub const ETCD_MEMBERS: u32 = 3;

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Clustered { .. } => "clustered",
            Topology::Ha { .. } => "ha",
            Topology::HaOnEtcd { .. } => "ha-etcd",
        }
    }

    pub fn instances(self) -> u32 {
        match self {
            Topology::Standalone => 1,
            Topology::Clustered { instances } => instances,
            Topology::Ha { .. } => 2,
            Topology::HaOnEtcd { instances, .. } => instances,
        }
    }

    /// The virtual IP address clients connect to (the HA topologies).
    pub fn vip(self) -> Option<IpAddr> {
        match self {
            Topology::Ha { vip } | Topology::HaOnEtcd { vip, .. } => Some(vip),
            Topology::Standalone | Topology::Clustered { .. } => None,
        }
    }

    /// Whether the deployment gets an etcd store (its own instance group).
    pub fn etcd(self) -> bool {
        matches!(self, Topology::HaOnEtcd { .. })
    }

    /// Where clients (and the smoke-tests errand) write: haproxy's port in
    /// HA, PostgreSQL itself otherwise.
    pub fn write_port(self) -> u16 {
        match self {
            Topology::Standalone => postgres_port(false, None),
            Topology::Clustered { .. } => postgres_port(true, None),
            Topology::Ha { .. } | Topology::HaOnEtcd { .. } => VIP_PORT,
        }
    }
}

/// The vip job's default write port (`port`): haproxy's frontend, routed to
/// the primary.
pub const VIP_PORT: u16 = 5432;

/// PostgreSQL's port on the nodes, the release's rule: `postgres.config.port`
/// when the manifest sets it, else 5432 alone and 6432 with replication
/// (haproxy takes 5432 on the HA pair). The jobs' templates apply the same
/// rule when they render; ci/release-tests holds them equal.
pub fn postgres_port(replication: bool, configured: Option<u16>) -> u16 {
    configured.unwrap_or(if replication { 6432 } else { 5432 })
}

/// The postgres instance group, as far as its shape goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub instances: u64,
    /// `postgres.replication.enabled`.
    pub replication: bool,
    /// The vip job beside postgres.
    pub ha: bool,
    /// Failover through an etcd store (the deployment has the etcd job, or
    /// `postgres.consensus.etcd.endpoints` names one).
    pub consensus: bool,
}

/// Why the release refuses the shape of the postgres instance group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeError {
    /// The vip job (the HA pair) without `postgres.replication.enabled`.
    HaWithoutReplication,
    /// An etcd store without `postgres.replication.enabled`.
    ConsensusWithoutReplication,
    /// The HA pair, without a consensus store, with other than two nodes.
    HaNotTwoNodes(u64),
    /// Replication with fewer than two nodes (no replica).
    ReplicationAlone(u64),
}

/// The release's rule for the postgres instance group: HA (the vip job
/// beside postgres) needs replication, and without a consensus store it is
/// exactly two nodes (the pair); with one, any number from two (the N-node
/// mode). A consensus store needs replication; replication needs at least
/// two nodes. The postgres job's templates refuse the same shapes when they
/// render; ci/release-tests holds them equal.
pub fn check_shape(shape: Shape) -> Result<(), ShapeError> {
    let Shape {
        instances,
        replication,
        ha,
        consensus,
    } = shape;
    match (ha, consensus, replication) {
        (true, _, false) => Err(ShapeError::HaWithoutReplication),
        (_, true, false) => Err(ShapeError::ConsensusWithoutReplication),
        (true, false, true) if instances != 2 => Err(ShapeError::HaNotTwoNodes(instances)),
        (_, _, true) if instances < 2 => Err(ShapeError::ReplicationAlone(instances)),
        _ => Ok(()),
    }
}

/// make-manifest's own policy beyond the release's rule: it neither writes
/// nor accepts several nodes without replication, which would be as many
/// unrelated databases behind one name. The release itself still runs such
/// a group, each node standalone, as the original release did.
pub fn unrelated_primaries(instances: u64, replication: bool, ha: bool) -> bool {
    !ha && !replication && instances > 1
}

/// Turns the topology flags into a topology, or says which flag is wrong
/// (the shape itself by [`check_shape`]).
pub fn decide_topology(flags: &TopologyFlags) -> Result<Topology, InputError> {
    if flags.ha {
        let vip = flags.vip.ok_or_else(|| {
            input_error!("--ha needs --vip ADDRESS: the virtual IP address clients connect to")
        })?;
        check_vip(vip)?;
        let n = flags.instances.unwrap_or(2);
        // Two nodes are the pair; more elect their leader through etcd.
        let consensus = n > 2;
        let shape = Shape {
            instances: n.into(),
            replication: true,
            ha: true,
            consensus,
        };
        return match (check_shape(shape), consensus) {
            (Ok(()), false) => Ok(Topology::Ha { vip }),
            (Ok(()), true) => Ok(Topology::HaOnEtcd { vip, instances: n }),
            (Err(_), _) => Err(input_error!(
                "--ha runs 2 nodes (the pair) or 3 and more (failover through etcd), not --instances {n}"
            )),
        };
    }
    if flags.vip.is_some() {
        return Err(input_error!("--vip applies only with --ha"));
    }
    let n = flags
        .instances
        .unwrap_or(if flags.replication { 2 } else { 1 });
    let shape = Shape {
        instances: n.into(),
        replication: flags.replication,
        ha: false,
        consensus: false,
    };
    match (flags.replication, check_shape(shape)) {
        (true, Ok(())) => Ok(Topology::Clustered { instances: n }),
        (true, Err(_)) => Err(input_error!(
            "--replication needs at least 2 instances (a primary and a replica), not --instances {n}"
        )),
        // An instance group of none is a valid manifest, but no deployment to ask for.
        (false, Ok(())) if n == 1 => Ok(Topology::Standalone),
        (false, _) => Err(input_error!(
            "--instances {n} needs --replication (or --ha): standalone is one node, and {n} unreplicated nodes would be {n} separate databases"
        )),
    }
}

/// A VIP must be an address a host can own and clients can reach.
fn check_vip(vip: IpAddr) -> Result<(), InputError> {
    let unusable = match vip {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_multicast(),
    };
    if unusable {
        return Err(input_error!(
            "--vip {vip} is not an address a node can hold (unspecified, loopback, broadcast or multicast)"
        ));
    }
    Ok(())
}

/// Everything [`generate`] needs.
#[derive(Debug, Clone)]
pub struct Request {
    pub iaas: Iaas,
    pub topology: TopologyFlags,
    pub deployment: String,
    pub release_name: String,
    pub release_version: String,
    pub stemcell_os: String,
    pub stemcell_version: String,
    /// Persistent disk of each postgres node, in MB (BOSH's unit).
    pub disk_size_mb: u32,
    /// EC2 instance type or OpenStack flavor; `None` for the IaaS default.
    pub vm_type: Option<String>,
    pub overlays: Vec<PathBuf>,
    /// The operator's template directory instead of the compiled-in one.
    pub templates: Option<PathBuf>,
    /// A release directory whose `jobs/*/spec` the result is checked against.
    pub release_dir: Option<PathBuf>,
    /// Required TLS with a director-generated certificate ([`tls`]).
    pub tls: bool,
}

impl Request {
    /// The defaults `--help` documents, for one IaaS.
    pub fn new(iaas: Iaas) -> Request {
        Request {
            iaas,
            topology: TopologyFlags::default(),
            deployment: "postgres".into(),
            release_name: "postgres".into(),
            release_version: "latest".into(),
            stemcell_os: "ubuntu-jammy".into(),
            stemcell_version: "latest".into(),
            disk_size_mb: 10240,
            vm_type: None,
            overlays: Vec::new(),
            templates: None,
            release_dir: None,
            tls: false,
        }
    }
}

/// The smallest persistent disk worth deploying PostgreSQL on.
pub const MIN_DISK_MB: u32 = 1024;

/// What [`generate`] decided: both documents, rendered, plus what the
/// operator must still supply.
#[derive(Debug, Clone)]
pub struct Generated {
    pub iaas: Iaas,
    pub topology: Topology,
    pub deployment: String,
    pub manifest: Value,
    pub cloud_config: Value,
    /// The manifest as written, header comment included.
    pub manifest_text: String,
    /// The cloud-config as written, header comment included.
    pub cloud_config_text: String,
    /// `((name))` placeholders in the cloud-config: `-v` for update-cloud-config.
    pub cloud_config_vars: Vec<String>,
    /// `((name))` in the manifest that `variables` does not generate: they
    /// must come from `-v` or the director's config server.
    pub undeclared_vars: Vec<String>,
    /// Things the operator should know before deploying.
    pub notes: Vec<String>,
}

/// Renders, merges, completes and checks; writes nothing.
pub fn generate(request: &Request) -> Result<Generated, InputError> {
    let topology = decide_topology(&request.topology)?;
    check_request(request)?;
    let context = template::Context::new(request, topology)?;
    let templates = match &request.templates {
        Some(dir) => template::Templates::from_dir(dir)?,
        None => template::Templates::builtin(),
    };
    let mut document = templates.render(request.iaas, &context)?;
    for path in &request.overlays {
        let overlay = overlay::load(path)?;
        merge::merge(&mut document, overlay)
            .map_err(|err| input_error!("{}: {err}", path.display()))?;
    }

    let (mut manifest, mut cloud_config) = split::split(document);
    split::fold_network_level_keys(&mut cloud_config)?;
    complete::complete(&mut manifest);
    // Before validation, so that missing static IPs get the message that
    // says what --tls needs them for.
    if request.tls {
        tls::complete(&mut manifest)?;
    }
    // The etcd group `--ha` writes for three nodes or more gets its
    // certificates the same way.
    if topology.etcd() {
        etcd::complete(&mut manifest)?;
    }
    validate::validate(&manifest, &cloud_config)?;
    if let Some(dir) = &request.release_dir {
        let specs = spec::load(dir)?;
        spec::check_or_error(&manifest, &specs, &request.release_name, dir)?;
    }

    let cloud_config_vars = validate::bosh_variables(&cloud_config);
    let undeclared_vars = validate::undeclared_variables(&manifest);
    let deployment = validate::deployment_name(&manifest)
        .unwrap_or(&request.deployment)
        .to_string();
    let mut notes = notes(request.iaas, topology, &undeclared_vars);
    if request.tls {
        notes.push(tls::note(&deployment));
    }
    let manifest_text = output::with_header(
        &output::manifest_header(&deployment, request.iaas, topology),
        &manifest,
    );
    let cloud_config_text = output::with_header(
        &output::cloud_config_header(&deployment, request.iaas),
        &cloud_config,
    );
    Ok(Generated {
        iaas: request.iaas,
        topology,
        deployment,
        manifest,
        cloud_config,
        manifest_text,
        cloud_config_text,
        cloud_config_vars,
        undeclared_vars,
        notes,
    })
}

/// Flag values that end up in names and versions: BOSH accepts little
/// punctuation there, and nothing of it may break the YAML.
fn check_request(request: &Request) -> Result<(), InputError> {
    // (flag, value, whether `+` is allowed: versions like 1.2+dev.3)
    let fields = [
        ("--deployment", &request.deployment, false),
        ("--release-name", &request.release_name, false),
        ("--release-version", &request.release_version, true),
        ("--stemcell-os", &request.stemcell_os, false),
        ("--stemcell-version", &request.stemcell_version, true),
    ];
    for (flag, value, plus) in fields {
        if !is_bosh_name(value, plus) {
            return Err(input_error!(
                "{flag} `{value}`: use letters, digits, `-`, `_` and `.`{}",
                if plus { " (and `+`)" } else { "" }
            ));
        }
    }
    if request.disk_size_mb < MIN_DISK_MB {
        return Err(input_error!(
            "--disk-size {} MB is too small: at least {MIN_DISK_MB} MB",
            request.disk_size_mb
        ));
    }
    match (&request.vm_type, request.iaas.default_vm_type()) {
        (Some(_), None) => Err(input_error!(
            "--vm-type: {} has no machine types (bosh-lite runs containers)",
            request.iaas
        )),
        (Some(vm_type), Some(_)) if !is_bosh_name(vm_type, true) => Err(input_error!(
            "--vm-type `{vm_type}`: use letters, digits, `-`, `_`, `.` and `+`"
        )),
        _ => Ok(()),
    }
}

/// A name BOSH and YAML both take as it is: letters, digits, `-`, `_`, `.`
/// (and `+` when `plus`), not starting with `-` or `.`.
fn is_bosh_name(value: &str, plus: bool) -> bool {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (plus && c == '+');
    !value.is_empty() && value.chars().all(allowed) && !value.starts_with(['-', '.'])
}

fn notes(iaas: Iaas, topology: Topology, undeclared: &[String]) -> Vec<String> {
    let mut notes = Vec::new();
    if let (Iaas::AwsEc2, Some(vip)) = (iaas, topology.vip()) {
        notes.push(format!(
            "on aws-ec2 a VPC delivers {vip} only to the instance the address is assigned to: keepalived's VRRP alone does not move it (see make-manifest/README.md, \"HA on AWS\")"
        ));
    }
    if !undeclared.is_empty() {
        notes.push(format!(
            "the manifest uses {} without generating {}: store {} in the director's config server or pass -v to bosh deploy",
            undeclared.iter().map(|v| format!("(({v}))")).collect::<Vec<_>>().join(", "),
            if undeclared.len() == 1 { "it" } else { "them" },
            if undeclared.len() == 1 { "it" } else { "them" },
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(
        replication: bool,
        ha: bool,
        instances: Option<u32>,
        vip: Option<&str>,
    ) -> TopologyFlags {
        TopologyFlags {
            replication,
            ha,
            instances,
            vip: vip.map(|v| v.parse().unwrap()),
        }
    }

    #[test]
    fn topology_decisions() {
        let vip: IpAddr = "10.244.232.100".parse().unwrap();
        let rows: &[(TopologyFlags, Result<Topology, &str>)] = &[
            (flags(false, false, None, None), Ok(Topology::Standalone)),
            (flags(false, false, Some(1), None), Ok(Topology::Standalone)),
            (
                flags(false, false, Some(3), None),
                Err("--instances 3 needs --replication"),
            ),
            (
                flags(true, false, None, None),
                Ok(Topology::Clustered { instances: 2 }),
            ),
            (
                flags(true, false, Some(4), None),
                Ok(Topology::Clustered { instances: 4 }),
            ),
            (
                flags(true, false, Some(1), None),
                Err("at least 2 instances"),
            ),
            (
                flags(false, true, None, Some("10.244.232.100")),
                Ok(Topology::Ha { vip }),
            ),
            (
                flags(true, true, Some(2), Some("10.244.232.100")),
                Ok(Topology::Ha { vip }),
            ),
            (flags(false, true, None, None), Err("--ha needs --vip")),
            (
                flags(false, true, Some(3), Some("10.244.232.100")),
                Ok(Topology::HaOnEtcd { vip, instances: 3 }),
            ),
            (
                flags(true, true, Some(5), Some("10.244.232.100")),
                Ok(Topology::HaOnEtcd { vip, instances: 5 }),
            ),
            (
                flags(false, true, Some(1), Some("10.244.232.100")),
                Err("2 nodes (the pair) or 3 and more"),
            ),
            (
                flags(false, false, None, Some("10.244.232.100")),
                Err("--vip applies only with --ha"),
            ),
            (
                flags(false, true, None, Some("127.0.0.1")),
                Err("not an address a node can hold"),
            ),
            (
                flags(false, true, None, Some("0.0.0.0")),
                Err("not an address a node can hold"),
            ),
            (
                flags(false, true, None, Some("224.0.0.18")),
                Err("not an address a node can hold"),
            ),
        ];
        for (input, expected) in rows {
            match (decide_topology(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(err), Err(want)) => {
                    assert!(err.0.contains(want), "{input:?}: {err} should say {want:?}")
                }
                (got, want) => panic!("{input:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn write_port_follows_the_release_rule() {
        assert_eq!(Topology::Standalone.write_port(), 5432);
        assert_eq!(Topology::Clustered { instances: 3 }.write_port(), 6432);
        assert_eq!(
            Topology::Ha {
                vip: "10.0.0.5".parse().unwrap()
            }
            .write_port(),
            5432
        );
    }

    #[test]
    fn the_postgres_port_is_the_configured_one_else_the_release_default() {
        assert_eq!(postgres_port(false, None), 5432);
        assert_eq!(postgres_port(true, None), 6432);
        assert_eq!(postgres_port(true, Some(7000)), 7000);
        assert_eq!(postgres_port(false, Some(6432)), 6432);
    }

    #[test]
    fn shapes_of_the_postgres_group() {
        use ShapeError::*;
        let shape = |instances, replication, ha, consensus| Shape {
            instances,
            replication,
            ha,
            consensus,
        };
        let rows = [
            (shape(1, false, false, false), Ok(())),
            (shape(0, false, false, false), Ok(())),
            (shape(2, false, false, false), Ok(())),
            (shape(2, true, false, false), Ok(())),
            (shape(5, true, false, false), Ok(())),
            (shape(1, true, false, false), Err(ReplicationAlone(1))),
            (shape(2, true, true, false), Ok(())),
            (shape(3, true, true, false), Err(HaNotTwoNodes(3))),
            (shape(1, true, true, false), Err(HaNotTwoNodes(1))),
            (shape(2, false, true, false), Err(HaWithoutReplication)),
            (shape(3, true, true, true), Ok(())),
            (shape(5, true, false, true), Ok(())),
            (shape(2, true, true, true), Ok(())),
            (shape(1, true, true, true), Err(ReplicationAlone(1))),
            (
                shape(3, false, false, true),
                Err(ConsensusWithoutReplication),
            ),
        ];
        for (given, expected) in rows {
            assert_eq!(check_shape(given), expected, "{given:?}");
        }
        assert!(unrelated_primaries(2, false, false));
        assert!(!unrelated_primaries(1, false, false));
        assert!(!unrelated_primaries(2, true, false));
        assert!(
            !unrelated_primaries(2, false, true),
            "refused as HA without replication"
        );
    }

    #[test]
    fn flag_values_that_would_break_names_are_refused() {
        let mut request = Request::new(Iaas::Warden);
        request.deployment = "pg: {x}".into();
        assert!(check_request(&request)
            .unwrap_err()
            .0
            .starts_with("--deployment"));
        let mut request = Request::new(Iaas::Warden);
        request.stemcell_version = "621.5\"".into();
        assert!(check_request(&request)
            .unwrap_err()
            .0
            .starts_with("--stemcell-version"));
        let mut request = Request::new(Iaas::Warden);
        request.disk_size_mb = 100;
        assert!(check_request(&request).unwrap_err().0.contains("too small"));
        let mut request = Request::new(Iaas::Warden);
        request.vm_type = Some("m5.large".into());
        assert!(check_request(&request)
            .unwrap_err()
            .0
            .contains("no machine types"));
        let mut request = Request::new(Iaas::AwsEc2);
        request.vm_type = Some("m5.xlarge".into());
        request.release_version = "1.2.3+dev.4".into();
        assert_eq!(check_request(&request), Ok(()));
    }
}
