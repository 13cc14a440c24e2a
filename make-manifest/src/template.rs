//! The handlebars templates: one per IaaS (`warden.yml.hbs`, ...), each
//! including the shared `deployment.yml.hbs` as a partial. They are compiled
//! into the binary; `--templates DIR` reads the same layout from DIR instead,
//! where every `*.yml.hbs` file is a template (or partial) named after its
//! file.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;
use serde_yaml::Value;

use crate::{input_error, Iaas, InputError, Request, Topology, ETCD_MEMBERS};

/// The file name suffix of a template.
pub const SUFFIX: &str = ".yml.hbs";

const BUILTIN: [(&str, &str); 4] = [
    (
        "deployment",
        include_str!("../templates/deployment.yml.hbs"),
    ),
    ("warden", include_str!("../templates/warden.yml.hbs")),
    ("aws-ec2", include_str!("../templates/aws-ec2.yml.hbs")),
    (
        "openstack-nova",
        include_str!("../templates/openstack-nova.yml.hbs"),
    ),
];

/// What a template sees. Every field is always present (null when unset), so
/// strict mode catches a misspelt name in an operator's template.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub iaas: &'static str,
    /// `standalone`, `clustered`, `ha` or `ha-etcd`.
    pub topology: &'static str,
    pub deployment: String,
    pub release_name: String,
    pub release_version: String,
    pub stemcell_os: String,
    pub stemcell_version: String,
    /// Nodes in the `postgres` instance group.
    pub instances: u32,
    /// Streaming replication on (clustered and HA).
    pub replication: bool,
    /// The vip job on the postgres nodes (`ha` and `ha-etcd`).
    pub ha: bool,
    /// The virtual IP address (HA only).
    pub vip: Option<String>,
    /// An etcd instance group the postgres nodes elect their leader through
    /// (`ha-etcd`).
    pub etcd: bool,
    /// Members of the etcd instance group (with `etcd`).
    pub etcd_instances: u32,
    /// Where clients write: 5432 standalone and HA (haproxy), 6432 clustered.
    pub write_port: u16,
    /// Persistent disk size in MB.
    pub disk_size: u32,
    /// EC2 instance type or OpenStack flavor; null on warden.
    pub vm_type: Option<String>,
    /// `--tls`: the postgres job gets `postgres.tls`.
    pub tls: bool,
    /// The postgres nodes' static IP addresses: on warden with `--tls`, one
    /// per node; empty otherwise (an overlay gives them on other IaaSes).
    pub static_ips: Vec<String>,
    /// The etcd members' static IP addresses: on warden with `etcd`, one per
    /// member; empty otherwise (an overlay gives them on other IaaSes).
    pub etcd_static_ips: Vec<String>,
    /// Both lists above, for the subnet's `static` range.
    pub network_static_ips: Vec<String>,
}

impl Context {
    pub fn new(request: &Request, topology: Topology) -> Result<Context, InputError> {
        let WardenStaticIps { postgres, etcd } = warden_static_ips(request, topology)?;
        Ok(Context {
            iaas: request.iaas.name(),
            topology: topology.name(),
            deployment: request.deployment.clone(),
            release_name: request.release_name.clone(),
            release_version: request.release_version.clone(),
            stemcell_os: request.stemcell_os.clone(),
            stemcell_version: request.stemcell_version.clone(),
            instances: topology.instances(),
            replication: !matches!(topology, Topology::Standalone),
            ha: topology.vip().is_some(),
            vip: topology.vip().map(|vip| vip.to_string()),
            etcd: topology.etcd(),
            etcd_instances: if topology.etcd() { ETCD_MEMBERS } else { 0 },
            write_port: topology.write_port(),
            disk_size: request.disk_size_mb,
            vm_type: request
                .vm_type
                .clone()
                .or_else(|| request.iaas.default_vm_type().map(String::from)),
            tls: request.tls,
            network_static_ips: postgres.iter().chain(&etcd).cloned().collect(),
            static_ips: postgres,
            etcd_static_ips: etcd,
        })
    }
}

/// Where static addresses come from on warden: the warden
/// template's subnet, 10.244.232.0/24, from .10 upward (clear of the gateway
/// and of the low addresses bosh-lite operators tend to use by hand) to the
/// last host address.
const WARDEN_STATIC_IPS: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(10, 244, 232, 10),
    Ipv4Addr::new(10, 244, 232, 254),
);

/// The static IPs the warden template writes, first the postgres nodes',
/// then the etcd members'.
struct WardenStaticIps {
    postgres: Vec<String>,
    etcd: Vec<String>,
}

/// A certificate must name each address its holders serve on, so they
/// cannot take whatever address is free: the postgres nodes with `--tls`,
/// the etcd members always. Only warden's subnet is known here; elsewhere
/// an overlay gives them. The VIP is skipped: it is reserved, and BOSH
/// refuses a static IP in a reserved range.
fn warden_static_ips(request: &Request, topology: Topology) -> Result<WardenStaticIps, InputError> {
    let none = WardenStaticIps {
        postgres: Vec::new(),
        etcd: Vec::new(),
    };
    if request.iaas != Iaas::Warden {
        return Ok(none);
    }
    let postgres = if request.tls { topology.instances() } else { 0 } as usize;
    let etcd = if topology.etcd() { ETCD_MEMBERS } else { 0 } as usize;
    let (first, last) = WARDEN_STATIC_IPS;
    let vip = topology.vip();
    let mut free = (u32::from(first)..=u32::from(last))
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .filter(|ip| Some(*ip) != vip)
        .map(|ip| ip.to_string());
    let ips = WardenStaticIps {
        postgres: free.by_ref().take(postgres).collect(),
        etcd: free.by_ref().take(etcd).collect(),
    };
    let have = ips.postgres.len() + ips.etcd.len();
    if have < postgres + etcd {
        let needs = [(postgres, "postgres nodes (--tls)"), (etcd, "etcd members")]
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect::<Vec<_>>()
            .join(" and ");
        return Err(input_error!(
            "on warden the static IPs come from {first} - {last}, which holds {have} of them: not enough for {needs}",
        ));
    }
    Ok(ips)
}

/// A set of registered templates and where they came from (for messages).
pub struct Templates {
    registry: Handlebars<'static>,
    /// The operator's directory; `None` for the compiled-in templates.
    dir: Option<PathBuf>,
}

impl Templates {
    /// The templates compiled into the binary.
    pub fn builtin() -> Templates {
        let mut registry = registry();
        for (name, text) in BUILTIN {
            registry
                .register_template_string(name, text)
                .unwrap_or_else(|err| panic!("built-in template {name} does not compile: {err}"));
        }
        Templates {
            registry,
            dir: None,
        }
    }

    /// Every `*.yml.hbs` file in `dir`, each named after its file.
    pub fn from_dir(dir: &Path) -> Result<Templates, InputError> {
        let entries = std::fs::read_dir(dir).map_err(|err| {
            input_error!(
                "--templates {}: cannot read the directory: {err}",
                dir.display()
            )
        })?;
        let mut registry = registry();
        for entry in entries {
            let path = entry
                .map_err(|err| {
                    input_error!(
                        "--templates {}: cannot list the directory: {err}",
                        dir.display()
                    )
                })?
                .path();
            let Some(name) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(SUFFIX))
            else {
                continue;
            };
            let text = crate::input::read_text(&path)
                .map_err(|problem| input_error!("{}: {problem}", path.display()))?;
            registry
                .register_template_string(name, text)
                .map_err(|err| {
                    let at = err
                        .pos()
                        .map(|(line, column)| format!(":{line}:{column}"))
                        .unwrap_or_default();
                    input_error!("{}{at}: {}", path.display(), err.reason())
                })?;
        }
        Ok(Templates {
            registry,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Renders the IaaS's template and parses the result as one YAML map.
    pub fn render(&self, iaas: Iaas, context: &Context) -> Result<Value, InputError> {
        let name = iaas.name();
        let file = self.label(name);
        if !self.registry.has_template(name) {
            return Err(input_error!(
                "{file}: no such template (a template directory needs one per IaaS)"
            ));
        }
        let text = self.registry.render(name, context).map_err(|err| {
            let template = err
                .template_name
                .clone()
                .unwrap_or_else(|| name.to_string());
            let at = match (err.line_no, err.column_no) {
                (Some(line), Some(column)) => format!(":{line}:{column}"),
                _ => String::new(),
            };
            input_error!("{}{at}: {}", self.label(&template), err.reason())
        })?;
        let document = crate::input::parse_yaml(&text).map_err(|problem| match problem {
            (Some((line, column)), message) => input_error!(
                "{file}: its output is not YAML: output line {line}, column {column}: {message}"
            ),
            (None, message) => input_error!("{file}: its output is not YAML: {message}"),
        })?;
        if let Some(path) = crate::yaml_out::find_tag(&document, "") {
            return Err(input_error!(
                "{file}: {path}: YAML tags mean nothing to BOSH"
            ));
        }
        match document {
            Value::Mapping(_) => Ok(document),
            _ => Err(input_error!(
                "{file} rendered something other than a YAML map"
            )),
        }
    }

    /// How messages name a template: its file, or the built-in one.
    fn label(&self, name: &str) -> String {
        match &self.dir {
            Some(dir) => dir.join(format!("{name}{SUFFIX}")).display().to_string(),
            None => format!("built-in template {name}{SUFFIX}"),
        }
    }
}

fn registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(escape_for_double_quotes);
    registry
}

/// Values land inside YAML double quotes in the templates; HTML escaping
/// (handlebars' default) would corrupt them.
fn escape_for_double_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(iaas: Iaas, topology: Topology) -> Value {
        let request = Request::new(iaas);
        let context = Context::new(&request, topology).unwrap();
        Templates::builtin()
            .render(iaas, &context)
            .unwrap_or_else(|err| panic!("{iaas} {topology:?}: {err}"))
    }

    fn tls_context(iaas: Iaas, topology: Topology) -> Result<Context, InputError> {
        let mut request = Request::new(iaas);
        request.tls = true;
        Context::new(&request, topology)
    }

    #[test]
    fn every_builtin_template_renders_every_topology_to_a_map() {
        let topologies = [
            Topology::Standalone,
            Topology::Clustered { instances: 3 },
            Topology::Ha {
                vip: "10.244.232.100".parse().unwrap(),
            },
        ];
        for iaas in Iaas::ALL {
            for topology in topologies {
                let document = render(iaas, topology);
                for key in ["name", "instance_groups", "networks", "compilation"] {
                    assert!(
                        document.get(key).is_some(),
                        "{iaas} {topology:?}: rendered document lacks `{key}`"
                    );
                }
            }
        }
    }

    #[test]
    fn ha_adds_the_vip_job_and_replication() {
        let document = render(
            Iaas::Warden,
            Topology::Ha {
                vip: "10.244.232.100".parse().unwrap(),
            },
        );
        let jobs = &document["instance_groups"][0]["jobs"];
        assert_eq!(jobs[1]["name"], Value::from("vip"));
        assert_eq!(jobs[1]["properties"]["vip"], Value::from("10.244.232.100"));
        assert_eq!(
            jobs[0]["properties"]["postgres"]["replication"]["enabled"],
            Value::from(true)
        );
        let standalone = render(Iaas::Warden, Topology::Standalone);
        let jobs = standalone["instance_groups"][0]["jobs"]
            .as_sequence()
            .unwrap();
        assert_eq!(jobs.len(), 1, "standalone has no vip job");
        assert!(jobs[0]["properties"]["postgres"]
            .get("replication")
            .is_none());
    }

    #[test]
    fn warden_nodes_get_static_ips_with_tls_only() {
        let ha = Topology::Ha {
            vip: "10.244.232.11".parse().unwrap(),
        };
        assert_eq!(
            tls_context(Iaas::Warden, ha).unwrap().static_ips,
            ["10.244.232.10", "10.244.232.12"],
            "the VIP is skipped"
        );
        let clustered = Topology::Clustered { instances: 3 };
        assert_eq!(
            tls_context(Iaas::Warden, clustered).unwrap().static_ips,
            ["10.244.232.10", "10.244.232.11", "10.244.232.12"]
        );
        let request = Request::new(Iaas::Warden);
        assert!(Context::new(&request, clustered)
            .unwrap()
            .static_ips
            .is_empty());
        assert!(
            tls_context(Iaas::AwsEc2, clustered)
                .unwrap()
                .static_ips
                .is_empty(),
            "other IaaSes take them from an overlay"
        );
    }

    #[test]
    fn warden_etcd_members_get_static_ips_after_the_nodes() {
        let on_etcd = Topology::HaOnEtcd {
            vip: "10.244.232.13".parse().unwrap(),
            instances: 3,
        };
        let context = tls_context(Iaas::Warden, on_etcd).unwrap();
        assert_eq!(
            context.static_ips,
            ["10.244.232.10", "10.244.232.11", "10.244.232.12"]
        );
        assert_eq!(
            context.etcd_static_ips,
            ["10.244.232.14", "10.244.232.15", "10.244.232.16"],
            "the VIP is skipped"
        );
        assert_eq!(context.network_static_ips.len(), 6);
        let plain = Context::new(&Request::new(Iaas::Warden), on_etcd).unwrap();
        assert!(plain.static_ips.is_empty());
        assert_eq!(
            plain.etcd_static_ips,
            ["10.244.232.10", "10.244.232.11", "10.244.232.12"]
        );
    }

    #[test]
    fn more_warden_nodes_than_static_ips_are_refused() {
        assert!(tls_context(Iaas::Warden, Topology::Clustered { instances: 245 }).is_ok());
        let err = tls_context(Iaas::Warden, Topology::Clustered { instances: 246 }).unwrap_err();
        assert!(
            err.0
                .contains("holds 245 of them: not enough for 246 postgres nodes"),
            "{err}"
        );
    }

    #[test]
    fn tls_puts_the_certificate_and_the_static_ips_in_the_warden_documents() {
        let ha = Topology::Ha {
            vip: "10.244.232.100".parse().unwrap(),
        };
        let context = tls_context(Iaas::Warden, ha).unwrap();
        let document = Templates::builtin().render(Iaas::Warden, &context).unwrap();
        let group = &document["instance_groups"][0];
        assert_eq!(
            group["networks"][0]["static_ips"],
            serde_yaml::from_str::<Value>("[10.244.232.10, 10.244.232.11]").unwrap()
        );
        let subnet = &document["networks"][0]["subnets"][0];
        assert_eq!(subnet["static"], group["networks"][0]["static_ips"]);
        let tls = &group["jobs"][0]["properties"]["postgres"]["tls"];
        assert_eq!(
            tls["certificate"],
            Value::from("((postgres_tls.certificate))")
        );
        assert_eq!(tls["required"], Value::from(true));
        let plain = render(Iaas::Warden, ha);
        assert!(plain["instance_groups"][0]["networks"][0]
            .get("static_ips")
            .is_none());
        assert!(plain["networks"][0]["subnets"][0].get("static").is_none());
        assert!(
            plain["instance_groups"][0]["jobs"][0]["properties"]["postgres"]
                .get("tls")
                .is_none()
        );
    }

    #[test]
    fn escaping_keeps_values_inside_their_quotes() {
        assert_eq!(escape_for_double_quotes(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_for_double_quotes("<&>"), "<&>", "no HTML escaping");
    }
}
