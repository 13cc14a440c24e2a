//! Probing one node: connect (bounded), ask, classify.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::target::ConnectOptions;

/// The role a node plays, as far as a probe could tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes: `pg_is_in_recovery()` is false.
    Primary,
    /// In recovery: a streaming or cut-off standby.
    Replica,
    /// Up, but refusing connections while it starts, shuts down or recovers
    /// from a crash (SQLSTATE 57P03). Never treated as a primary.
    Starting,
    /// The role could not be determined.
    #[default]
    Unreachable,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Starting => "starting",
            Role::Unreachable => "unreachable",
        })
    }
}

/// How much to ask. Each level is still one query, but more columns cost the
/// server more; haproxy's per-second checks use [`Detail::Role`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Only `pg_is_in_recovery()`.
    Role,
    /// Also whether the WAL receiver is streaming.
    Streaming,
    /// Everything [`Status`] can hold.
    Full,
}

/// A write-ahead-log position (`pg_lsn`), comparable and subtractable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl std::str::FromStr for Lsn {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (high, low) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not an LSN"))?;
        let parse = |part: &str| {
            u64::from_str_radix(part, 16).map_err(|_| format!("'{text}' is not an LSN"))
        };
        Ok(Lsn((parse(high)? << 32) | parse(low)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a node said about itself. Fields beyond `role` are filled only when
/// the [`Detail`] asked for them and they apply to the role; otherwise `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub role: Role,
    pub in_recovery: Option<bool>,
    pub server_version: Option<String>,
    pub timeline: Option<u32>,
    /// On a primary: `pg_current_wal_lsn()`.
    pub current_wal_lsn: Option<Lsn>,
    /// On a replica: `pg_last_wal_receive_lsn()`.
    pub received_wal_lsn: Option<Lsn>,
    /// On a replica: `pg_last_wal_replay_lsn()`.
    pub replayed_wal_lsn: Option<Lsn>,
    /// On a replica: whether its WAL receiver is streaming from a primary.
    pub wal_receiver_streaming: Option<bool>,
    /// On a streaming replica: the `host:port` it streams from.
    pub wal_receiver_source: Option<String>,
    /// On a primary: how many WAL senders are streaming.
    pub streaming_replicas: Option<i64>,
    /// On a primary: its `synchronous_standby_names` (empty: asynchronous).
    pub synchronous_standby_names: Option<String>,
    /// On a primary: how many streaming standbys are synchronous
    /// (`sync_state` `sync` or `quorum`), so a commit waits for them.
    pub synchronous_replicas: Option<i64>,
    /// On a primary: how long ago, in milliseconds, the streaming standby
    /// that replied least recently last replied (`pg_stat_replication.reply_time`),
    /// synchronous or not; a hung standby stays `streaming` until
    /// `wal_sender_timeout`, but stops replying.
    pub standby_reply_age_ms: Option<i64>,
    /// On a primary: whether new transactions are read-only
    /// (`default_transaction_read_only`), as a monitor sets it to refuse writes.
    pub read_only: Option<bool>,
}

/// Why an attempt got no role. The kind decides whether retrying can help.
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

/// One failed attempt: its kind, and a message for people (never parsed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How often to try before giving up.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (the original release's `psql_error_count`).
    pub attempts: u32,
    /// Pause between attempts.
    pub interval: Duration,
}

/// The outcome of a probe with retries.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub status: Status,
    pub attempts: u32,
    /// Wall time of the whole probe, retries included.
    #[serde(rename = "latency_ms", serialize_with = "as_millis")]
    pub latency: Duration,
    /// The last attempt's failure, when it failed.
    pub error: Option<Failure>,
}

fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    let millis = (duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    serializer.serialize_f64(millis)
}

impl Report {
    pub fn role(&self) -> Role {
        self.status.role
    }
}

/// Runs probes. Holds a small single-threaded runtime so that every attempt,
/// authentication and query included, is bounded by the connect timeout:
/// the blocking client only bounds the TCP connect, and a stopped (SIGSTOP)
/// or wedged server would otherwise hang the caller.
pub struct Prober {
    runtime: tokio::runtime::Runtime,
}

impl Prober {
    pub fn new() -> io::Result<Prober> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Prober { runtime })
    }

    /// Probes until a role is known, a failure is definitive, or attempts run out.
    pub fn probe(&self, options: &ConnectOptions, detail: Detail, retry: RetryPolicy) -> Report {
        let started = Instant::now();
        let attempts = retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            let outcome = self.probe_once(options, detail);
            let last_attempt = attempt >= attempts;
            match outcome {
                Ok(status) => return report(status, attempt, started, None),
                Err(failure) if failure.kind.is_definitive() || last_attempt => {
                    let role = if failure.kind == FailureKind::Starting {
                        Role::Starting
                    } else {
                        Role::Unreachable
                    };
                    let status = Status {
                        role,
                        ..Status::default()
                    };
                    return report(status, attempt, started, Some(failure));
                }
                Err(_) => {
                    std::thread::sleep(retry.interval);
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: connect, one query, classify. Bounded by the connect
    /// timeout; a timeout after the host accepted the connection is [`FailureKind::Hung`].
    pub fn probe_once(&self, options: &ConnectOptions, detail: Detail) -> Result<Status, Failure> {
        let timeout = options.connect_timeout;
        let connected = AtomicBool::new(false);
        self.run_bounded(timeout, ask(options.client_config(), detail, &connected))
            .map_err(|failure| match failure.kind {
                FailureKind::Timeout if connected.load(Ordering::Relaxed) => Failure {
                    kind: FailureKind::Hung,
                    message: format!(
                        "{}: connected, but the server did not answer within {:.1} s",
                        options.endpoint,
                        timeout.as_secs_f64()
                    ),
                },
                _ => Failure {
                    message: format!("{}: {}", options.endpoint, failure.message),
                    ..failure
                },
            })
    }

    /// Runs `work` on the prober's runtime, failing with `Timeout` after `timeout`.
    /// Public so that callers (pg-monitor) can bound their own statements alike.
    pub fn run_bounded<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        self.runtime.block_on(async {
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(Failure {
                    kind: FailureKind::Timeout,
                    message: format!("no answer within {:.1} s", timeout.as_secs_f64()),
                }),
            }
        })
    }
}

fn report(status: Status, attempts: u32, started: Instant, error: Option<Failure>) -> Report {
    Report {
        status,
        attempts,
        latency: started.elapsed(),
        error,
    }
}

/// Opens a connection with `config` and drives it in the background of the
/// current runtime. Dropping the client closes the connection.
pub async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, Failure> {
    start(config.connect(NoTls).await)
}

/// Opens a connection like [`connect`], first opening the transport itself
/// (TCP, or the Unix socket) and setting `connected` once the host accepted
/// it: when the attempt then times out, the server, not the network, is hung.
async fn connect_tracked(
    config: &tokio_postgres::Config,
    connected: &AtomicBool,
) -> Result<tokio_postgres::Client, Failure> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => {
            let stream = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .await
                .map_err(|err| io_failure(&err))?;
            connected.store(true, Ordering::Relaxed);
            start(config.connect_raw(stream, NoTls).await)
        }
        Some(Host::Tcp(host)) => {
            let stream = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|err| io_failure(&err))?;
            connected.store(true, Ordering::Relaxed);
            // As the client does on the connections it opens itself.
            let _ = stream.set_nodelay(true);
            start(config.connect_raw(stream, NoTls).await)
        }
        None => Err(transient("no host to connect to".to_string())),
    }
}

/// Drives a new connection in the background; the client is what callers use.
fn start<S, T>(
    connected: Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
) -> Result<tokio_postgres::Client, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = connected.map_err(|err| failure(&err))?;
    tokio::spawn(async move {
        // Errors here surface as errors of the client's next query.
        let _ = connection.await;
    });
    Ok(client)
}

fn io_failure(err: &io::Error) -> Failure {
    Failure {
        kind: classify_io(err.kind()),
        message: format!("error connecting to server: {err}"),
    }
}

async fn ask(
    config: tokio_postgres::Config,
    detail: Detail,
    connected: &AtomicBool,
) -> Result<Status, Failure> {
    let client = connect_tracked(&config, connected).await?;
    let rows = client
        .simple_query(query_for(detail))
        .await
        .map_err(|err| failure(&err))?;
    let row = rows
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| transient("the role query returned no row".to_string()))?;
    let columns: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
    let mut status = parse_row(&columns)?;
    // By name: the levels of detail put it in different columns.
    let read_only = row
        .columns()
        .iter()
        .position(|column| column.name() == "read_only");
    status.read_only = read_only.and_then(|at| row.get(at)).map(|text| text == "t");
    Ok(status)
}

/// One statement per level, so every probe is one round trip after login.
fn query_for(detail: Detail) -> &'static str {
    match detail {
        Detail::Role => {
            "SELECT pg_is_in_recovery(), \
               current_setting('default_transaction_read_only') = 'on' AS read_only"
        }
        Detail::Streaming => {
            "SELECT pg_is_in_recovery(), (SELECT status = 'streaming' FROM pg_stat_wal_receiver)"
        }
        // CASE keeps functions that fail during recovery (or outside it) from running.
        Detail::Full => {
            "SELECT r.rec, \
               (SELECT status = 'streaming' FROM pg_stat_wal_receiver), \
               current_setting('server_version'), \
               CASE WHEN r.rec THEN coalesce( \
                   (SELECT received_tli FROM pg_stat_wal_receiver), \
                   (SELECT timeline_id FROM pg_control_checkpoint())) \
                 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
               CASE WHEN NOT r.rec THEN pg_current_wal_lsn() END, \
               CASE WHEN r.rec THEN pg_last_wal_receive_lsn() END, \
               CASE WHEN r.rec THEN pg_last_wal_replay_lsn() END, \
               (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver \
                 WHERE status = 'streaming'), \
               CASE WHEN NOT r.rec THEN \
                 (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') END, \
               CASE WHEN NOT r.rec THEN current_setting('synchronous_standby_names') END, \
               CASE WHEN NOT r.rec THEN \
                 (SELECT count(*) FROM pg_stat_replication \
                   WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum')) END, \
               CASE WHEN NOT r.rec THEN \
                 (SELECT (extract(epoch FROM clock_timestamp() - min(reply_time)) * 1000)::bigint \
                    FROM pg_stat_replication WHERE state = 'streaming') END, \
               CASE WHEN NOT r.rec THEN current_setting('default_transaction_read_only') = 'on' END \
                 AS read_only \
             FROM (SELECT pg_is_in_recovery() AS rec) r"
        }
    }
}

/// Turns the text columns of [`query_for`] into a [`Status`]; the first
/// column is always `pg_is_in_recovery()`.
fn parse_row(columns: &[Option<&str>]) -> Result<Status, Failure> {
    let column = |i: usize| columns.get(i).copied().flatten();
    let in_recovery = match column(0) {
        Some("t") => true,
        Some("f") => false,
        other => {
            return Err(transient(format!(
                "unexpected pg_is_in_recovery() value {other:?}"
            )))
        }
    };
    let lsn = |i: usize| column(i).and_then(|text| text.parse::<Lsn>().ok());
    Ok(Status {
        role: if in_recovery {
            Role::Replica
        } else {
            Role::Primary
        },
        in_recovery: Some(in_recovery),
        wal_receiver_streaming: if in_recovery {
            // No WAL receiver row at all (NULL) means it is not streaming.
            (columns.len() > 1).then(|| column(1) == Some("t"))
        } else {
            None
        },
        server_version: column(2).map(str::to_string),
        timeline: column(3).and_then(|text| text.parse().ok()),
        current_wal_lsn: lsn(4),
        received_wal_lsn: lsn(5),
        replayed_wal_lsn: lsn(6),
        wal_receiver_source: column(7).map(str::to_string),
        streaming_replicas: column(8).and_then(|text| text.parse().ok()),
        synchronous_standby_names: column(9).map(str::to_string),
        synchronous_replicas: column(10).and_then(|text| text.parse().ok()),
        standby_reply_age_ms: column(11).and_then(|text| text.parse().ok()),
        read_only: None,
    })
}

fn transient(message: String) -> Failure {
    Failure {
        kind: FailureKind::Transient,
        message,
    }
}

/// Classifies a client error by SQLSTATE or I/O error kind.
pub fn failure(err: &tokio_postgres::Error) -> Failure {
    let kind = if let Some(db_error) = err.as_db_error() {
        classify_sqlstate(db_error.code())
    } else if let Some(io_error) = io_source(err) {
        classify_io(io_error.kind())
    } else {
        FailureKind::Transient
    };
    let message = match err.as_db_error() {
        Some(db_error) => format!(
            "{} {}: {}",
            db_error.severity(),
            db_error.code().code(),
            db_error.message()
        ),
        None => with_causes(err),
    };
    Failure { kind, message }
}

/// The error and its causes: tokio-postgres's own text ("error connecting to
/// server") leaves out the part a person can act on ("Connection refused").
fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn io_source(err: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            return Some(io_error);
        }
        source = cause.source();
    }
    None
}

fn classify_sqlstate(code: &SqlState) -> FailureKind {
    let class = &code.code()[..2];
    if *code == SqlState::CANNOT_CONNECT_NOW {
        FailureKind::Starting
    } else if class == "28" || *code == SqlState::INVALID_CATALOG_NAME {
        // 28xxx: authentication; 3D000: no such database. Retrying cannot help.
        FailureKind::Rejected
    } else {
        // 53300 too_many_connections, 57P01 admin_shutdown, query errors...
        FailureKind::Transient
    }
}

fn classify_io(kind: io::ErrorKind) -> FailureKind {
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
    fn lsns_parse_compare_and_print() {
        let a: Lsn = "0/3000060".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert_eq!(a.0, 0x3000060);
        assert_eq!(b.0, 1 << 32);
        assert!(a < b);
        assert_eq!(b.to_string(), "1/0");
        assert_eq!(
            "16/B374D848".parse::<Lsn>().unwrap().to_string(),
            "16/B374D848"
        );
        assert!("nonsense".parse::<Lsn>().is_err());
    }

    #[test]
    fn sqlstates_are_classified_by_code() {
        assert_eq!(
            classify_sqlstate(&SqlState::CANNOT_CONNECT_NOW),
            FailureKind::Starting
        );
        assert_eq!(
            classify_sqlstate(&SqlState::INVALID_PASSWORD),
            FailureKind::Rejected
        );
        assert_eq!(
            classify_sqlstate(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            FailureKind::Rejected
        );
        assert_eq!(
            classify_sqlstate(&SqlState::INVALID_CATALOG_NAME),
            FailureKind::Rejected
        );
        assert_eq!(
            classify_sqlstate(&SqlState::TOO_MANY_CONNECTIONS),
            FailureKind::Transient
        );
        assert_eq!(
            classify_sqlstate(&SqlState::ADMIN_SHUTDOWN),
            FailureKind::Transient
        );
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
        assert!(!FailureKind::Transient.is_definitive());
    }

    #[test]
    fn a_role_row_parses_to_a_role() {
        let primary = parse_row(&[Some("f")]).unwrap();
        assert_eq!(primary.role, Role::Primary);
        assert_eq!(primary.wal_receiver_streaming, None);
        let replica = parse_row(&[Some("t")]).unwrap();
        assert_eq!(replica.role, Role::Replica);
        assert_eq!(replica.wal_receiver_streaming, None);
    }

    #[test]
    fn a_replica_without_a_wal_receiver_is_not_streaming() {
        let cut_off = parse_row(&[Some("t"), None]).unwrap();
        assert_eq!(cut_off.wal_receiver_streaming, Some(false));
        let streaming = parse_row(&[Some("t"), Some("t")]).unwrap();
        assert_eq!(streaming.wal_receiver_streaming, Some(true));
    }

    #[test]
    fn an_unexpected_recovery_value_is_a_transient_failure() {
        let failure = parse_row(&[None]).unwrap_err();
        assert_eq!(failure.kind, FailureKind::Transient);
    }
}
