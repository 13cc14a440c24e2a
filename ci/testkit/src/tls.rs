//! Certificates for TLS tests, made at test time the way a BOSH director makes
//! them: `bosh int --vars-store` over a `variables:` block of certificates.
//! What the director will not make (an expired certificate) is signed here
//! with the same CA's key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};
use tempfile::TempDir;

use crate::os::chown_to_user;

/// One certificate and its key, as files PostgreSQL and clients can read:
/// owned by the test user (PostgreSQL's user), the key 0600.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The PEM texts, for tests that render them into a job's properties.
    pub certificate_pem: String,
    pub private_key_pem: String,
}

/// A CA and certificates it signed, in a temp dir removed on drop.
pub struct Certificates {
    dir: TempDir,
    /// The CA's certificate, for PGSSLROOTCERT and ssl_ca_file.
    pub ca: PathBuf,
    pub ca_pem: String,
    /// Names 127.0.0.1 and localhost: the address the kit's servers listen on.
    pub server: CertFiles,
    /// Signed by the CA, but for 10.9.9.9 and other.example only.
    pub wrong_name: CertFiles,
    /// For 127.0.0.1, valid from two days ago until yesterday.
    pub expired: CertFiles,
    /// From another CA altogether, for 127.0.0.1.
    pub foreign: CertFiles,
}

const VARIABLES: &str = "\
variables:
- name: ca
  type: certificate
  options: { is_ca: true, common_name: testkit-ca }
- name: other_ca
  type: certificate
  options: { is_ca: true, common_name: testkit-other-ca }
- name: server
  type: certificate
  options:
    ca: ca
    common_name: 127.0.0.1
    alternative_names: [127.0.0.1, localhost]
    extended_key_usage: [server_auth, client_auth]
- name: wrong_name
  type: certificate
  options:
    ca: ca
    common_name: other.example
    alternative_names: [10.9.9.9, other.example]
    extended_key_usage: [server_auth, client_auth]
- name: foreign
  type: certificate
  options:
    ca: other_ca
    common_name: 127.0.0.1
    alternative_names: [127.0.0.1]
    extended_key_usage: [server_auth, client_auth]
";

/// The bosh CLI: `BOSH_BIN`, else `bosh` on PATH (.ci/run puts BOSH's own
/// tools there).
pub fn bosh_bin() -> PathBuf {
    std::env::var_os("BOSH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bosh"))
}

impl Certificates {
    pub fn new() -> Certificates {
        let dir = tempfile::Builder::new()
            .prefix("pgtls.")
            .tempdir()
            .expect("cannot create a temp dir");
        chown_to_user(dir.path());
        let store = generate(dir.path());
        let ca_pem = field(&store, "ca", "certificate");
        let ca = write_file(dir.path(), "ca.pem", &ca_pem, 0o644);
        let issued = |name: &str| {
            cert_files(
                dir.path(),
                name,
                &field(&store, name, "certificate"),
                &field(&store, name, "private_key"),
            )
        };
        let server = issued("server");
        let wrong_name = issued("wrong_name");
        let foreign = issued("foreign");
        let (expired_cert, expired_key) = expired_certificate(
            &field(&store, "ca", "certificate"),
            &field(&store, "ca", "private_key"),
        );
        let expired = cert_files(dir.path(), "expired", &expired_cert, &expired_key);
        Certificates {
            dir,
            ca,
            ca_pem,
            server,
            wrong_name,
            expired,
            foreign,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Certificates {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `bosh int --vars-store` and returns the store it wrote.
fn generate(dir: &Path) -> serde_yaml::Value {
    let manifest = dir.join("variables.yml");
    let store = dir.join("creds.yml");
    fs::write(&manifest, VARIABLES).expect("cannot write the variables");
    let output = Command::new(bosh_bin())
        .arg("interpolate")
        .arg(&manifest)
        .arg("--vars-store")
        .arg(&store)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {} (the bosh CLI; set BOSH_BIN or PATH): {err}",
                bosh_bin().display()
            )
        });
    assert!(
        output.status.success(),
        "bosh interpolate --vars-store failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = fs::read_to_string(&store).expect("bosh wrote no vars store");
    serde_yaml::from_str(&text).expect("the vars store is not YAML")
}

fn field(store: &serde_yaml::Value, name: &str, key: &str) -> String {
    store[name][key]
        .as_str()
        .unwrap_or_else(|| panic!("the vars store has no {name}.{key}"))
        .to_string()
}

fn cert_files(dir: &Path, name: &str, certificate: &str, private_key: &str) -> CertFiles {
    CertFiles {
        certificate: write_file(dir, &format!("{name}.crt"), certificate, 0o644),
        private_key: write_file(dir, &format!("{name}.key"), private_key, 0o600),
        certificate_pem: certificate.to_string(),
        private_key_pem: private_key.to_string(),
    }
}

fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|err| panic!("cannot write {name}: {err}"));
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("cannot chmod");
    chown_to_user(&path);
    path
}

/// A certificate for 127.0.0.1 signed by the CA, whose validity ended yesterday.
fn expired_certificate(ca_cert: &str, ca_key: &str) -> (String, String) {
    let ca_cert = X509::from_pem(ca_cert.as_bytes()).expect("the CA certificate");
    let ca_key = PKey::private_key_from_pem(ca_key.as_bytes()).expect("the CA key");
    let key = PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "127.0.0.1").expect("CN");
    let name = name.build();
    let mut serial = BigNum::new().expect("serial");
    serial
        .rand(64, MsbOption::MAYBE_ZERO, false)
        .expect("serial");
    let day = 24 * 60 * 60;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("version");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder
        .set_issuer_name(ca_cert.subject_name())
        .expect("issuer");
    builder.set_pubkey(&key).expect("key");
    builder
        .set_not_before(&Asn1Time::from_unix(now - 2 * day).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::from_unix(now - day).expect("time"))
        .expect("not after");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(Some(&ca_cert), None))
        .expect("SAN");
    builder.append_extension(san).expect("SAN");
    builder
        .sign(&ca_key, MessageDigest::sha256())
        .expect("signing");
    let cert = builder.build().to_pem().expect("PEM");
    let key = key.private_key_to_pem_pkcs8().expect("PEM");
    (
        String::from_utf8(cert).expect("PEM is text"),
        String::from_utf8(key).expect("PEM is text"),
    )
}
