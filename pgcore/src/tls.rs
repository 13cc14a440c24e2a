//! TLS to PostgreSQL nodes, read and applied as libpq does it.
//!
//! The mode and the files come from libpq's variables, so that an operator's
//! `PGSSLMODE=verify-full PGSSLROOTCERT=ca.pem` means the same to psql,
//! pg_basebackup, the WAL receiver and the release's programs:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `PGSSLMODE` | disable, allow, prefer, require, verify-ca, verify-full | prefer |
//! | `PGSSLROOTCERT` | the CA file the server's certificate must chain to (`system`: the system's CAs) | `~/.postgresql/root.crt` |
//! | `PGSSLCERT`, `PGSSLKEY` | a client certificate and its key | `~/.postgresql/postgresql.{crt,key}` |
//!
//! As in libpq: a root certificate that exists makes even `prefer` and
//! `require` check the chain; only `verify-full` checks that the certificate
//! names the host connected to (its DNS name or IP address); `allow` is taken
//! as `prefer` (TLS first); a Unix socket never uses TLS.
//!
//! The stack is OpenSSL (the `openssl` crate, linked to the system's
//! library): the one PostgreSQL, libpq, pg_basebackup and pg_rewind use on
//! the same node. A certificate that one accepts the others accept, an error
//! reads the same ("certificate has expired"), and a stemcell's security
//! update reaches every one of them at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, allow, prefer, require, verify-ca, verify-full";

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The modes that fail rather than talk to a server they cannot verify.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(format!("sslmode '{text}' is not one of {}", SslMode::NAMES)),
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the server's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the system's trusted CAs.
    System,
}

/// The TLS settings of a connection, as libpq's variables give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Whether `root_cert` was named (by `PGSSLROOTCERT`) rather than libpq's
    /// default path: a named one that is missing is an error, the default
    /// one is simply not used.
    root_cert_named: bool,
}

impl Default for TlsSettings {
    /// libpq's defaults with no variable set and no `~/.postgresql`.
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
            root_cert_named: false,
        }
    }
}

impl TlsSettings {
    /// From `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` and, for
    /// the files not named, libpq's defaults under `~/.postgresql` where they
    /// exist.
    pub fn from_env() -> Result<TlsSettings, String> {
        Self::from_lookup(|name| std::env::var_os(name).filter(|value| !value.is_empty()))
    }

    fn from_lookup(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<TlsSettings, String> {
        let mode = match var("PGSSLMODE") {
            Some(mode) => mode
                .to_str()
                .unwrap_or("")
                .parse::<SslMode>()
                .map_err(|err| format!("PGSSLMODE: {err}"))?,
            None => SslMode::Prefer,
        };
        let home = var("HOME").map(|home| PathBuf::from(home).join(".postgresql"));
        let default_file = |name: &str| {
            home.as_ref()
                .map(|dir| dir.join(name))
                .filter(|path| path.exists())
        };
        let root_cert_named = var("PGSSLROOTCERT").is_some();
        let root_cert = match var("PGSSLROOTCERT") {
            Some(value) if value == "system" => Some(RootCert::System),
            Some(value) => Some(RootCert::File(PathBuf::from(value))),
            None => default_file("root.crt").map(RootCert::File),
        };
        let client_cert = var("PGSSLCERT")
            .map(PathBuf::from)
            .or_else(|| default_file("postgresql.crt"));
        let client_key = var("PGSSLKEY")
            .map(PathBuf::from)
            .or_else(|| default_file("postgresql.key"));
        Ok(TlsSettings {
            mode,
            root_cert,
            client_cert,
            client_key,
            root_cert_named,
        })
    }

    /// Settings that never use TLS (tests, and programs told to).
    pub fn disabled() -> TlsSettings {
        TlsSettings {
            mode: SslMode::Disable,
            ..TlsSettings::default()
        }
    }

    /// The same settings as a libpq connection string's keywords, for the
    /// connection strings handed to PostgreSQL's own programs and written
    /// into `primary_conninfo` (the WAL receiver reads no variables of ours).
    pub fn conninfo_keywords(&self) -> Vec<(&'static str, String)> {
        let mut keywords = vec![("sslmode", self.mode.to_string())];
        if self.mode == SslMode::Disable {
            return keywords;
        }
        match &self.root_cert {
            Some(RootCert::System) => keywords.push(("sslrootcert", "system".to_string())),
            Some(RootCert::File(path)) => keywords.push(("sslrootcert", display(path))),
            None => {}
        }
        if let Some(cert) = &self.client_cert {
            keywords.push(("sslcert", display(cert)));
        }
        if let Some(key) = &self.client_key {
            keywords.push(("sslkey", display(key)));
        }
        keywords
    }

    /// What is wrong with settings that can never connect, before trying:
    /// a verifying mode without a root certificate, a named file missing.
    pub fn problem(&self) -> Option<String> {
        if self.mode == SslMode::Disable {
            return None;
        }
        match &self.root_cert {
            None if self.mode.verifies() => Some(format!(
                "sslmode {} needs a root certificate: set PGSSLROOTCERT to the CA file \
                 (libpq's default ~/.postgresql/root.crt does not exist)",
                self.mode
            )),
            Some(RootCert::File(path)) if self.root_cert_named && !path.exists() => {
                Some(format!("PGSSLROOTCERT {} does not exist", path.display()))
            }
            _ => None,
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(feature = "session")]
pub(crate) use connector::{Connector, Handshake};

#[cfg(feature = "session")]
mod connector {
    //! OpenSSL under tokio-postgres, set up as libpq sets it up: only the
    //! root certificate named is trusted (never the system's CAs unless
    //! `system` is asked for), the name checked in verify-full only, and the
    //! channel bound to the server's certificate (SCRAM-SHA-256-PLUS).
    //! openssl's own `SslConnector` always loads the system's CA bundle: 20 ms
    //! of every one-off check, and CAs that no sslrootcert named.

    use std::error::Error;
    use std::fmt;
    use std::future::Future;
    use std::io;
    use std::net::IpAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::task::{Context, Poll};

    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::ssl::{self, Ssl, SslContext, SslFiletype, SslMethod, SslVerifyMode};
    use openssl::x509::verify::X509CheckFlags;
    use openssl::x509::X509VerifyResult;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio_openssl::SslStream;
    use tokio_postgres::tls::{ChannelBinding, TlsConnect};

    use super::{RootCert, SslMode, TlsSettings};

    /// The OpenSSL context for [`TlsSettings`], made on first use and shared
    /// by every connection of the options it belongs to: the files are read
    /// once per process (a new certificate arrives with a restart, as BOSH
    /// restarts jobs whose files changed).
    #[derive(Clone, Default)]
    pub(crate) struct Connector {
        context: Arc<OnceLock<Result<SslContext, String>>>,
    }

    impl Connector {
        /// A TLS session for one connection to `host`, checking the
        /// certificate as `settings.mode` says.
        pub(crate) fn for_host(
            &self,
            settings: &TlsSettings,
            host: &str,
        ) -> Result<Handshake, String> {
            let context = self
                .context
                .get_or_init(|| build(settings))
                .as_ref()
                .map_err(Clone::clone)?;
            let session = |err: openssl::error::ErrorStack| {
                format!("TLS: cannot set up a connection to {host}: {err}")
            };
            let mut ssl = Ssl::new(context).map_err(session)?;
            let address = host.parse::<IpAddr>();
            if settings.mode == SslMode::VerifyFull {
                let param = ssl.param_mut();
                param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                match address {
                    Ok(ip) => param.set_ip(ip),
                    Err(_) => param.set_host(host),
                }
                .map_err(session)?;
            }
            // SNI, for names only (RFC 6066), as libpq sends it.
            if address.is_err() {
                ssl.set_hostname(host).map_err(session)?;
            }
            Ok(Handshake {
                ssl,
                started: Arc::default(),
            })
        }
    }

    fn build(settings: &TlsSettings) -> Result<SslContext, String> {
        if let Some(problem) = settings.problem() {
            return Err(problem);
        }
        let mut builder = SslContext::builder(SslMethod::tls_client())
            .map_err(|err| format!("TLS: cannot set up OpenSSL: {err}"))?;
        match &settings.root_cert {
            Some(RootCert::File(path)) => {
                builder.set_ca_file(path).map_err(|err| {
                    format!("root certificate {}: cannot load: {err}", path.display())
                })?;
                builder.set_verify(SslVerifyMode::PEER);
            }
            Some(RootCert::System) => {
                builder
                    .set_default_verify_paths()
                    .map_err(|err| format!("the system's CA certificates: cannot load: {err}"))?;
                builder.set_verify(SslVerifyMode::PEER);
            }
            // libpq's prefer and require without a root certificate:
            // encrypted, but the server is not authenticated.
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        if let Some(cert) = &settings.client_cert {
            builder.set_certificate_chain_file(cert).map_err(|err| {
                format!("client certificate {}: cannot load: {err}", cert.display())
            })?;
            let key = settings.client_key.as_ref().ok_or_else(|| {
                format!(
                    "client certificate {} has no key: set PGSSLKEY",
                    cert.display()
                )
            })?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|err| format!("client key {}: cannot load: {err}", key.display()))?;
            builder.check_private_key().map_err(|err| {
                format!(
                    "client key {} does not match certificate {}: {err}",
                    key.display(),
                    cert.display()
                )
            })?;
        }
        Ok(builder.build())
    }

    /// The TLS handshake tokio-postgres runs once the server agreed to TLS.
    pub(crate) struct Handshake {
        ssl: Ssl,
        started: Arc<AtomicBool>,
    }

    impl Handshake {
        /// Set once the server agreed to TLS and the handshake began: a
        /// connection that required TLS and failed before it was refused TLS.
        pub(crate) fn started(&self) -> Arc<AtomicBool> {
            self.started.clone()
        }
    }

    impl TlsConnect<TcpStream> for Handshake {
        type Stream = TlsStream;
        type Error = Box<dyn Error + Send + Sync>;
        type Future = Pin<Box<dyn Future<Output = Result<TlsStream, Self::Error>> + Send>>;

        fn connect(self, stream: TcpStream) -> Self::Future {
            self.started.store(true, Ordering::Relaxed);
            Box::pin(async move {
                let mut stream = SslStream::new(self.ssl, stream)?;
                match Pin::new(&mut stream).connect().await {
                    Ok(()) => Ok(TlsStream(stream)),
                    Err(error) => Err(Box::new(HandshakeFailed {
                        verify_result: stream.ssl().verify_result(),
                        error,
                    }) as _),
                }
            })
        }
    }

    /// A failed handshake, with why the certificate did not verify when that
    /// was it ("certificate has expired", "IP address mismatch"): OpenSSL's
    /// own error says only "certificate verify failed".
    #[derive(Debug)]
    struct HandshakeFailed {
        error: ssl::Error,
        verify_result: X509VerifyResult,
    }

    impl fmt::Display for HandshakeFailed {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{}", self.error)?;
            if self.verify_result != X509VerifyResult::OK {
                write!(f, ": {}", self.verify_result)?;
            }
            Ok(())
        }
    }

    impl Error for HandshakeFailed {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.error)
        }
    }

    pub(crate) struct TlsStream(SslStream<TcpStream>);

    impl AsyncRead for TlsStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for TlsStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl tokio_postgres::tls::TlsStream for TlsStream {
        /// tls-server-end-point (RFC 5929): the digest of the server's
        /// certificate, with the hash of its signature (SHA-256 for MD5 and
        /// SHA-1), so that SCRAM proves the password to the holder of that
        /// very certificate.
        fn channel_binding(&self) -> ChannelBinding {
            let digest = self.0.ssl().peer_certificate().and_then(|cert| {
                let algorithms = cert
                    .signature_algorithm()
                    .object()
                    .nid()
                    .signature_algorithms()?;
                let hash = match algorithms.digest {
                    Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
                    nid => MessageDigest::from_nid(nid)?,
                };
                cert.digest(hash).ok().map(|bytes| bytes.to_vec())
            });
            match digest {
                Some(digest) => ChannelBinding::tls_server_end_point(digest),
                None => ChannelBinding::none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<TlsSettings, String> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), OsString::from(value)))
            .collect();
        TlsSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn every_libpq_mode_parses_and_others_are_refused_by_name() {
        for name in SslMode::NAMES.split(", ") {
            assert_eq!(name.parse::<SslMode>().unwrap().as_str(), name);
        }
        let err = settings(&[("PGSSLMODE", "verify_full")]).unwrap_err();
        assert!(
            err.contains("PGSSLMODE") && err.contains("verify_full"),
            "{err}"
        );
    }

    #[test]
    fn the_defaults_are_libpqs() {
        let defaults = settings(&[("HOME", "/nonexistent")]).unwrap();
        assert_eq!(defaults, TlsSettings::default());
        assert_eq!(defaults.problem(), None);
    }

    #[test]
    fn verifying_needs_a_root_certificate_and_a_named_one_must_exist() {
        let bare = settings(&[("PGSSLMODE", "verify-full"), ("HOME", "/nonexistent")]).unwrap();
        assert!(bare.problem().unwrap().contains("PGSSLROOTCERT"));
        let missing = settings(&[
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "/nonexistent/ca.pem"),
        ])
        .unwrap();
        assert!(missing.problem().unwrap().contains("/nonexistent/ca.pem"));
        let system = settings(&[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", "system")]);
        assert_eq!(system.unwrap().problem(), None);
    }

    #[test]
    fn the_settings_become_conninfo_keywords_for_libpq() {
        let full = settings(&[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/ca.pem"),
            ("PGSSLCERT", "/c.pem"),
            ("PGSSLKEY", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(
            full.conninfo_keywords(),
            vec![
                ("sslmode", "verify-full".to_string()),
                ("sslrootcert", "/ca.pem".to_string()),
                ("sslcert", "/c.pem".to_string()),
                ("sslkey", "/k.pem".to_string()),
            ]
        );
        assert_eq!(
            TlsSettings::disabled().conninfo_keywords(),
            vec![("sslmode", "disable".to_string())]
        );
    }
}
