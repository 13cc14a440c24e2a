//! The command-line contract of `make-manifest`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use make_manifest::{Iaas, Request, TopologyFlags};

/// The output directory when -o is not given.
pub const DEFAULT_OUTPUT: &str = "manifests-out";

/// Write a BOSH v2 deployment manifest and cloud-config for the postgres
/// release, for one IaaS, with your overlay files merged in.
///
/// Renders the IaaS's template, merges the OVERLAY files in the order given,
/// checks the result the way the BOSH director would, then writes
/// manifest.yml and cloud-config.yml into the output directory and prints the
/// bosh (v2 CLI) commands to run next. Nothing is written unless every check
/// passed.
///
///   make-manifest openstack-nova my-networking.yml
///   bosh -n update-cloud-config manifests-out/cloud-config.yml -v az=... -v net_id=...
///   bosh -n -d postgres deploy manifests-out/manifest.yml
///
/// Topologies:
///   (default)                       standalone: one node
///   --replication [--instances N]   clustered: N >= 2 nodes (default 2), streaming
///                                   replication, node 0 starts as primary
///   --ha --vip ADDRESS              HA: two nodes, automatic failover, haproxy on
///                                   both, keepalived moving ADDRESS to the primary
///   --ha --vip ADDRESS --instances N
///                                   HA on N >= 3 nodes: failover through an etcd
///                                   store of 3 members on VMs of their own (group
///                                   `etcd`, deployed first), haproxy on every node
///
/// etcd (--ha with 3 nodes or more):
///   `variables` gets the CA etcd_ca, the members' certificate etcd_member
///   (naming every member's static IP and *.etcd.NETWORK.DEPLOYMENT.bosh)
///   and the postgres nodes' client certificate etcd_client, each unless an
///   overlay declares it. The members need static IPs: on warden they are
///   given from 10.244.232.10 up (after the postgres nodes' with --tls); on
///   aws-ec2 and openstack-nova an overlay gives them (`static_ips` for the
///   etcd instance group).
///
/// Overlays are YAML maps, merged like spruce does: maps merge key by key;
/// lists of maps with a `name` merge item by item by name (new names are
/// appended); other lists are replaced; `key: ~` deletes a key. A list may
/// start with "(( append ))", "(( prepend ))", "(( replace ))" or
/// "(( merge on KEY ))". Top-level azs, vm_types, vm_extensions, disk_types,
/// networks and compilation go to the cloud-config, all else to the manifest.
/// YAML merge keys (`<<: *anchor`) are applied.
///
/// Every file read (overlays, templates, job specs) must be a regular file of
/// at most 1 MiB, and its YAML nested at most 64 levels deep.
///
/// PostgreSQL users without a password, the smoke-tests user included, get a
/// password the director generates (a `variables` entry).
///
/// TLS (--tls):
///   The postgres job gets postgres.tls: certificate, private_key and ca from
///   ((postgres_tls)), and required: true. Clients must connect with
///   sslmode=require or better; the nodes verify each other (verify-full).
///   `variables` gets the CA postgres_ca and the certificate postgres_tls
///   (each unless an overlay declares it), naming every static IP of the
///   postgres nodes, the VIP (with --ha) and
///   *.postgres.NETWORK.DEPLOYMENT.bosh (BOSH DNS, the group's first network).
///   The nodes need static IPs: on warden they are given from 10.244.232.10
///   up; on aws-ec2 and openstack-nova an overlay gives them (a manual network
///   with a `static` range, and `static_ips` for the postgres instance group).
///   To verify the server (sslmode=verify-full), get the CA once deployed:
///     credhub get -n /DIRECTOR/DEPLOYMENT/postgres_tls -k ca > postgres-ca.pem
///   or, with a vars store (bosh --vars-store creds.yml):
///     bosh int creds.yml --path /postgres_tls/ca > postgres-ca.pem
///
/// Exit codes:
///   0  written (or printed with -o -)
///   1  the files could not be written (the message says what was left)
///   2  bad input: unknown IaaS, unreadable, oversized or invalid overlay,
///      wrong flags, or a merged result BOSH would reject; nothing was written
///
/// Environment: MAKE_MANIFEST_OUTPUT, MAKE_MANIFEST_TEMPLATES and
/// MAKE_MANIFEST_RELEASE_DIR stand for -o, --templates and --release-dir.
#[derive(Parser, Debug)]
#[command(name = "make-manifest", version, verbatim_doc_comment)]
pub struct Cli {
    /// The infrastructure.
    #[arg(value_enum)]
    pub iaas: Iaas,

    /// YAML files merged over the template, in this order.
    #[arg(value_name = "OVERLAY")]
    pub overlays: Vec<PathBuf>,

    /// Streaming replication across --instances nodes (clustered).
    #[arg(long)]
    pub replication: bool,

    /// Nodes in the postgres instance group [default: 1; 2 with --replication
    /// or --ha]. With --ha, 3 or more elect their leader through etcd
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,

    /// Automatic failover behind --vip (implies --replication): the pair on
    /// 2 nodes, through an etcd store on 3 or more.
    #[arg(long)]
    pub ha: bool,

    /// Require TLS of clients and between the nodes, with a certificate the
    /// director generates for the nodes' static IPs (see TLS in --help).
    #[arg(long)]
    pub tls: bool,

    /// The virtual IP address clients connect to (with --ha). On warden it
    /// must be inside 10.244.232.0/24, e.g. 10.244.232.100; never a subnet's
    /// gateway, network or broadcast address.
    #[arg(long, value_name = "ADDRESS")]
    pub vip: Option<IpAddr>,

    /// Deployment name (bosh -d NAME).
    #[arg(short = 'd', long, value_name = "NAME", default_value = "postgres")]
    pub deployment: String,

    /// Release name.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    pub release_name: String,

    /// Release version: `latest` is the newest release uploaded to the director.
    #[arg(long, value_name = "VERSION", default_value = "latest")]
    pub release_version: String,

    /// Stemcell operating system.
    #[arg(long, value_name = "OS", default_value = "ubuntu-jammy")]
    pub stemcell_os: String,

    /// Stemcell version: `latest` is the newest uploaded to the director.
    #[arg(long, value_name = "VERSION", default_value = "latest")]
    pub stemcell_version: String,

    /// Persistent disk of each postgres node, in MB.
    #[arg(long, value_name = "MB", default_value_t = 10240)]
    pub disk_size: u32,

    /// Machine type of the postgres VMs: an EC2 instance type (aws-ec2,
    /// default m5.large) or a flavor (openstack-nova, default m1.medium).
    /// Not for warden.
    #[arg(long, value_name = "TYPE")]
    pub vm_type: Option<String>,

    /// Output directory, created if needed; `-` writes the manifest to stdout
    /// (and no cloud-config).
    #[arg(short = 'o', long, value_name = "DIR", env = "MAKE_MANIFEST_OUTPUT", default_value = DEFAULT_OUTPUT)]
    pub output: String,

    /// Use the templates in DIR (one IAAS.yml.hbs per IaaS plus partials such
    /// as deployment.yml.hbs) instead of the compiled-in ones.
    #[arg(long, value_name = "DIR", env = "MAKE_MANIFEST_TEMPLATES")]
    pub templates: Option<PathBuf>,

    /// The release directory (as for bosh create-release --dir): every job and
    /// property the manifest sets is checked against DIR/jobs/*/spec, and the
    /// printed commands use DIR [default in commands: release]
    #[arg(long, value_name = "DIR", env = "MAKE_MANIFEST_RELEASE_DIR")]
    pub release_dir: Option<PathBuf>,

    /// Print one JSON object (files written, commands, notes) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    pub fn request(&self) -> Request {
        Request {
            iaas: self.iaas,
            topology: TopologyFlags {
                replication: self.replication,
                ha: self.ha,
                instances: self.instances,
                vip: self.vip,
            },
            deployment: self.deployment.clone(),
            release_name: self.release_name.clone(),
            release_version: self.release_version.clone(),
            stemcell_os: self.stemcell_os.clone(),
            stemcell_version: self.stemcell_version.clone(),
            disk_size_mb: self.disk_size,
            vm_type: self.vm_type.clone(),
            overlays: self.overlays.clone(),
            templates: self.templates.clone(),
            release_dir: self.release_dir.clone(),
            tls: self.tls,
        }
    }

    pub fn to_stdout(&self) -> bool {
        self.output == "-"
    }
}
