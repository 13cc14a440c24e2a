//! Why an attempt to reach a node failed, classified so that callers decide
//! by kind (retry, wait, give up) and never by message text.

use std::fmt;
use std::io;

use serde::Serialize;

use crate::target::Endpoint;

/// Why an attempt got no answer. The kind decides whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Nothing listens (TCP refused, or no Unix socket): definitive.
    Refused,
    /// The server answered 57P03 cannot_connect_now: definitive, role `starting`.
    Starting,
    /// The server turned us away for good (authentication, unknown database).
    Rejected,
    /// No answer within the connect timeout: the host did not even accept the
    /// connection (a cut link, a host that is down).
    Timeout,
    /// The host accepted the connection but the server did not answer within
    /// the timeout: the network path works and the server is hung (stopped,
    /// stalled on storage) or overloaded.
    Hung,
    /// Anything else: reset, unexpected EOF, a failed query, too many clients.
    Transient,
}

impl FailureKind {
    /// Retrying a definitive failure cannot change the answer; it only delays it.
    pub fn is_definitive(self) -> bool {
        matches!(
            self,
            FailureKind::Refused | FailureKind::Starting | FailureKind::Rejected
        )
    }
}

/// One failed attempt: its kind, the node it was made against (when known)
/// and the cause, for people. Displayed as `host:port: cause`.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The node asked; `None` for a failure not tied to one.
    pub endpoint: Option<Endpoint>,
    /// What went wrong, without the endpoint (never parsed).
    pub cause: String,
}

impl Failure {
    /// A failure that a later attempt may not meet: a reset, an odd answer.
    pub fn transient(cause: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Transient,
            endpoint: None,
            cause: cause.into(),
        }
    }

    /// The same failure, tied to `endpoint`.
    pub fn at(self, endpoint: &Endpoint) -> Failure {
        Failure {
            endpoint: Some(endpoint.clone()),
            ..self
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.endpoint {
            Some(endpoint) => write!(f, "{endpoint}: {}", self.cause),
            None => f.write_str(&self.cause),
        }
    }
}

impl std::error::Error for Failure {}

/// `{"kind": ..., "message": "host:port: cause"}`, as `--json` has always shown it.
impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut shown = serializer.serialize_struct("Failure", 2)?;
        shown.serialize_field("kind", &self.kind)?;
        shown.serialize_field("message", &self.to_string())?;
        shown.end()
    }
}

/// Classifies a server's error by its SQLSTATE (five characters).
pub fn classify_sqlstate(code: &str) -> FailureKind {
    match code {
        // cannot_connect_now: starting up, shutting down, or in crash recovery.
        "57P03" => FailureKind::Starting,
        // 28xxx: authentication; 3D000: no such database. Retrying cannot help.
        "3D000" => FailureKind::Rejected,
        _ if code.starts_with("28") => FailureKind::Rejected,
        // 53300 too_many_connections, 57P01 admin_shutdown, query errors...
        _ => FailureKind::Transient,
    }
}

/// Classifies a transport error by its kind.
pub fn classify_io(kind: io::ErrorKind) -> FailureKind {
    match kind {
        // NotFound: the Unix socket file does not exist, so no server runs there.
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => FailureKind::Refused,
        io::ErrorKind::TimedOut => FailureKind::Timeout,
        _ => FailureKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_code() {
        // cannot_connect_now, invalid_password, invalid_authorization_specification,
        // invalid_catalog_name, too_many_connections, admin_shutdown.
        assert_eq!(classify_sqlstate("57P03"), FailureKind::Starting);
        assert_eq!(classify_sqlstate("28P01"), FailureKind::Rejected);
        assert_eq!(classify_sqlstate("28000"), FailureKind::Rejected);
        assert_eq!(classify_sqlstate("3D000"), FailureKind::Rejected);
        assert_eq!(classify_sqlstate("53300"), FailureKind::Transient);
        assert_eq!(classify_sqlstate("57P01"), FailureKind::Transient);
    }

    #[test]
    fn io_errors_are_classified_by_kind() {
        assert_eq!(
            classify_io(io::ErrorKind::ConnectionRefused),
            FailureKind::Refused
        );
        assert_eq!(classify_io(io::ErrorKind::NotFound), FailureKind::Refused);
        assert_eq!(classify_io(io::ErrorKind::TimedOut), FailureKind::Timeout);
        assert_eq!(
            classify_io(io::ErrorKind::ConnectionReset),
            FailureKind::Transient
        );
        assert_eq!(
            classify_io(io::ErrorKind::UnexpectedEof),
            FailureKind::Transient
        );
    }

    #[test]
    fn only_refused_starting_and_rejected_are_definitive() {
        assert!(FailureKind::Refused.is_definitive());
        assert!(FailureKind::Starting.is_definitive());
        assert!(FailureKind::Rejected.is_definitive());
        assert!(!FailureKind::Timeout.is_definitive());
        assert!(!FailureKind::Hung.is_definitive());
        assert!(!FailureKind::Transient.is_definitive());
    }

    #[test]
    fn the_endpoint_is_a_field_shown_before_the_cause() {
        let endpoint: Endpoint = "10.0.0.2:6432".parse().unwrap();
        let failure = Failure::transient("connection reset").at(&endpoint);
        assert_eq!(failure.endpoint.as_ref(), Some(&endpoint));
        assert_eq!(failure.cause, "connection reset");
        assert_eq!(failure.to_string(), "10.0.0.2:6432: connection reset");
        assert_eq!(Failure::transient("no row").to_string(), "no row");
    }
}
