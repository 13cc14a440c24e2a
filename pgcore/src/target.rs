//! Where and how to connect: host, port, user, database, timeout, password.
//!
//! Every binary of the release builds its connections here, so that they all
//! read the libpq variables the same way and none ever takes a password from
//! its command line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::passfile::{self, Lookup};
use crate::tls::TlsSettings;

/// `HOST:PORT`, as nodes are named on command lines (`--peer 10.244.0.2:6432`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl FromStr for Endpoint {
    type Err = String;

    /// Accepts `host:port`, `[v6addr]:port`, and `/socket/dir:port`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("'{text}' has an empty host"));
        }
        let port = parse_port(port).map_err(|err| format!("'{text}': {err}"))?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A TCP port, 1–65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("'{text}' is not a port number (1-65535)")),
    }
}

/// A host as `--host` or `PGHOST` give it: a name, an address, or (starting
/// with `/`) a Unix socket directory. An empty one is refused here: it would
/// only fail later, after every retry, as a host that cannot be looked up.
pub fn parse_host(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(
            "the host is empty: give a host name, an address or a socket directory".to_string(),
        );
    }
    Ok(text.to_string())
}

/// Everything needed to open a connection to one node.
#[derive(Clone)]
pub struct ConnectOptions {
    pub endpoint: Endpoint,
    pub user: String,
    pub dbname: String,
    /// Bounds each whole attempt: TCP connect, authentication and the query.
    pub connect_timeout: Duration,
    /// Shown in `pg_stat_activity`, so operators can tell probes apart.
    pub application_name: String,
    /// From `PGPASSWORD` or a passfile; never from a command line.
    password: Option<String>,
    /// From `PGSSLMODE` and its kin; an error when they are invalid, which
    /// every connection then fails with.
    tls: Result<TlsSettings, String>,
    #[cfg(feature = "session")]
    pub(crate) connector: crate::tls::Connector,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("connect_timeout", &self.connect_timeout)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// libpq's compiled-in socket directory for a from-source build, which is what
/// the release ships. Debian's libpq uses /var/run/postgresql instead: set
/// `PGHOST` there.
pub const DEFAULT_SOCKET_DIR: &str = "/tmp";

impl ConnectOptions {
    /// Options with libpq's fallbacks: user = OS user, dbname = user.
    /// The password is looked up with [`ConnectOptions::resolve_password`].
    pub fn new(
        endpoint: Endpoint,
        user: Option<String>,
        dbname: Option<String>,
        connect_timeout: Duration,
    ) -> Self {
        let user = user
            .filter(|u| !u.is_empty())
            .unwrap_or_else(crate::os::user::os_user_name);
        let dbname = dbname
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        ConnectOptions {
            endpoint,
            user,
            dbname,
            connect_timeout,
            application_name: "pg-role-check".to_string(),
            password: None,
            tls: TlsSettings::from_env(),
            #[cfg(feature = "session")]
            connector: Default::default(),
        }
    }

    /// TLS as `settings` say rather than as the libpq variables do.
    pub fn with_tls(mut self, settings: TlsSettings) -> Self {
        self.tls = Ok(settings);
        #[cfg(feature = "session")]
        {
            self.connector = Default::default();
        }
        self
    }

    /// The TLS settings, or why the libpq variables give none.
    pub fn tls(&self) -> Result<&TlsSettings, &str> {
        self.tls.as_ref().map_err(String::as_str)
    }

    /// The same user, database and password against another node.
    pub fn for_endpoint(&self, endpoint: Endpoint) -> Self {
        ConnectOptions {
            endpoint,
            ..self.clone()
        }
    }

    pub fn with_application_name(mut self, name: &str) -> Self {
        self.application_name = name.to_string();
        self
    }

    /// Takes the password from `PGPASSWORD`, else from the passfile
    /// (`passfile`, else `PGPASSFILE`, else `~/.pgpass`), as libpq does.
    ///
    /// Returns a warning to log when a passfile exists but cannot be used;
    /// the connection then goes on without a password, as libpq's would.
    pub fn resolve_password(&mut self, passfile: Option<PathBuf>) -> Option<String> {
        if let Some(password) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
            self.password = Some(password);
            return None;
        }
        let path = passfile
            .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
        let lookup = Lookup {
            host: &self.endpoint.host,
            port: self.endpoint.port,
            dbname: &self.dbname,
            user: &self.user,
        };
        match passfile::find_password(&path, &lookup) {
            Ok(found) => {
                self.password = found;
                None
            }
            Err(warning) => Some(warning),
        }
    }

    /// Sets the password directly, for callers that read it from their own 0600 file.
    pub fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// For the session's client configuration only.
    #[cfg_attr(not(feature = "session"), allow(dead_code))]
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let endpoint: Endpoint = "10.244.0.2:6432".parse().unwrap();
        assert_eq!(endpoint.host, "10.244.0.2");
        assert_eq!(endpoint.port, 6432);
        assert_eq!(endpoint.to_string(), "10.244.0.2:6432");

        let v6: Endpoint = "[::1]:5432".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:5432");

        let socket: Endpoint = "/var/vcap/sys/run/postgres:6432".parse().unwrap();
        assert_eq!(socket.host, "/var/vcap/sys/run/postgres");
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        assert!("10.0.0.1"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(":5432"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("empty host"));
        assert!("h:0".parse::<Endpoint>().unwrap_err().contains("port"));
        assert!("h:70000".parse::<Endpoint>().unwrap_err().contains("port"));
    }

    #[test]
    fn an_empty_host_is_refused() {
        assert_eq!(parse_host("10.0.0.2"), Ok("10.0.0.2".to_string()));
        assert_eq!(parse_host("/tmp"), Ok("/tmp".to_string()));
        for empty in ["", " ", "\t"] {
            assert!(
                parse_host(empty).unwrap_err().contains("empty"),
                "{empty:?}"
            );
        }
    }

    #[test]
    fn dbname_defaults_to_user() {
        let options = ConnectOptions::new(
            "h:1".parse().unwrap(),
            Some("alice".into()),
            None,
            Duration::from_secs(1),
        );
        assert_eq!(options.dbname, "alice");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut options = ConnectOptions::new(
            "h:1".parse().unwrap(),
            Some("u".into()),
            None,
            Duration::ZERO,
        );
        options.set_password(Some("hunter2".into()));
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
