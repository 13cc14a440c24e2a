//! The bounded session to a node: connect, query, execute, every step bounded
//! in time, every failure classified and tied to the node's endpoint.
//!
//! A small single-threaded runtime drives tokio-postgres so that
//! authentication and every statement are bounded, not only the TCP connect
//! as with a blocking client: a stopped (SIGSTOP) or wedged server would
//! otherwise hang the caller.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, SimpleQueryMessage};

mod held;
pub use held::HeldSession;

/// A row of [`Session::query`]: typed columns with `row.get(i)`.
pub use tokio_postgres::Row;

use crate::failure::{classify_io, classify_sqlstate, Failure, FailureKind};
use crate::retry::{retry, RetryPolicy};
use crate::role::{Detail, Lsn, Report, Role, Status};
use crate::target::{ConnectOptions, Endpoint};
use crate::tls::SslMode;

/// Opens bounded sessions and probes nodes, on a runtime of its own.
pub struct Client {
    runtime: tokio::runtime::Runtime,
}

/// One connection to one node. Every statement is bounded; dropping the
/// session closes the connection.
pub struct Session<'c> {
    client: &'c Client,
    connection: tokio_postgres::Client,
    endpoint: Endpoint,
    limit: Limit,
    /// Resolves when the connection ends (the server closed it, or it
    /// broke); `None` once it has.
    ended: Option<oneshot::Receiver<()>>,
    /// With [`Session::preparing_statuses`], the status statements already
    /// prepared on the server for this connection.
    prepared: Option<RefCell<Vec<Detail>>>,
}

/// How long the steps of a session may take.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// Each step (connecting, each statement) gets this long.
    EachStep(Duration),
    /// Every step must be done by the instant; the duration is the whole
    /// allowance, which a timeout names.
    Deadline(Instant, Duration),
}

impl Limit {
    /// How long the next step may take, and the bound a timeout names.
    fn next(self) -> (Duration, Duration) {
        match self {
            Limit::EachStep(bound) => (bound, bound),
            Limit::Deadline(at, total) => (at.saturating_duration_since(Instant::now()), total),
        }
    }
}

impl Client {
    pub fn new() -> io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client { runtime })
    }

    /// Connects within `options.connect_timeout`; each statement of the
    /// session then gets as long (see [`Session::bounded_by`]).
    pub fn connect(&self, options: &ConnectOptions) -> Result<Session<'_>, Failure> {
        self.open(options, Limit::EachStep(options.connect_timeout))
    }

    /// Connects, leaving `total` for the whole session, connecting included.
    pub fn connect_within(
        &self,
        options: &ConnectOptions,
        total: Duration,
    ) -> Result<Session<'_>, Failure> {
        self.open(options, Limit::Deadline(Instant::now() + total, total))
    }

    /// One attempt: connect, one query, classify, all within the connect
    /// timeout. A timeout after the host accepted the connection is
    /// [`FailureKind::Hung`].
    pub fn probe_once(&self, options: &ConnectOptions, detail: Detail) -> Result<Status, Failure> {
        self.connect_within(options, options.connect_timeout)?
            .status(detail)
    }

    /// Probes until a role is known, a failure is definitive, or `policy`
    /// runs out.
    pub fn probe(&self, options: &ConnectOptions, detail: Detail, policy: &RetryPolicy) -> Report {
        let started = Instant::now();
        let retried = retry(
            policy,
            || self.probe_once(options, detail),
            |_, pause| std::thread::sleep(pause),
        );
        Report::new(retried, started.elapsed())
    }

    /// How many of `endpoints` accept a plain TCP connection within
    /// `timeout`, all tried at once (a witness offers nothing more).
    pub fn reachable(&self, endpoints: &[Endpoint], timeout: Duration) -> usize {
        let targets: Vec<(String, u16)> = endpoints
            .iter()
            .map(|endpoint| (endpoint.host.clone(), endpoint.port))
            .collect();
        let attempts = async move {
            let tasks: Vec<_> = targets
                .into_iter()
                .map(|target| {
                    tokio::spawn(async move {
                        let connect = TcpStream::connect(target);
                        matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
                    })
                })
                .collect();
            let mut reached = 0;
            for task in tasks {
                if task.await.unwrap_or(false) {
                    reached += 1;
                }
            }
            reached
        };
        self.within(timeout + Duration::from_secs(1), attempts)
            .unwrap_or(0)
    }

    fn open(&self, options: &ConnectOptions, limit: Limit) -> Result<Session<'_>, Failure> {
        let config = client_config(options);
        let connected = AtomicBool::new(false);
        let (left, named) = limit.next();
        let (connection, ended) = self
            .within(left, connect(&config, options, &connected))
            .unwrap_or_else(|| Err(timed_out(connected.load(Ordering::Relaxed), named)))
            .map_err(|failure| failure.at(&options.endpoint))?;
        Ok(Session {
            client: self,
            connection,
            endpoint: options.endpoint.clone(),
            limit,
            ended: Some(ended),
            prepared: None,
        })
    }

    /// Runs `work` on the runtime; `None` when it did not finish within `bound`.
    fn within<T>(&self, bound: Duration, work: impl Future<Output = T>) -> Option<T> {
        self.runtime
            .block_on(async { tokio::time::timeout(bound, work).await.ok() })
    }
}

impl Session<'_> {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Gives each later statement `bound` (a long provisioning statement, say).
    pub fn bounded_by(mut self, bound: Duration) -> Self {
        self.limit = Limit::EachStep(bound);
        self
    }

    /// Runs `sql`, one or more statements, in one round trip (simple protocol).
    pub fn execute(&self, sql: &str) -> Result<(), Failure> {
        self.run(self.connection.batch_execute(sql))
    }

    /// Runs one statement with `params` and returns its rows.
    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Failure> {
        self.run(self.connection.query(sql, params))
    }

    /// Like [`Session::query`], for a statement that returns exactly one row.
    pub fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Failure> {
        self.run(self.connection.query_one(sql, params))
    }

    /// Like [`Session::query`], for a statement that returns one row or none.
    pub fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Failure> {
        self.run(self.connection.query_opt(sql, params))
    }

    /// Runs `sql` (simple protocol) and returns its rows as text, `None` for NULL.
    pub fn text_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, Failure> {
        let messages = self.run(self.connection.simple_query(sql))?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Whether the connection is gone (the server closed it, or it broke).
    pub fn is_closed(&self) -> bool {
        self.ended.is_none() || self.connection.is_closed()
    }

    /// Waits up to `bound` for the connection to end, and says whether it
    /// did: a server that exits or is stopped closes its connections at once,
    /// so a caller holding one learns of it without asking.
    pub fn wait_closed(&mut self, bound: Duration) -> bool {
        let Some(ended) = self.ended.as_mut() else {
            return true;
        };
        // Resolved (or its sender dropped): the connection task is over.
        let closed = self.client.within(bound, ended).is_some();
        if closed {
            self.ended = None;
        }
        closed
    }

    /// Prepares each status statement on the server the first time it is
    /// asked, and executes it from then on: a session held for many checks
    /// spares the server the planning, most of the full statement's cost
    /// (0.82 ms a query planned, 0.11 ms prepared, PostgreSQL 15).
    pub fn preparing_statuses(mut self) -> Self {
        self.prepared = Some(RefCell::new(Vec::new()));
        self
    }

    /// The node's status, one query at the given level of detail.
    pub fn status(&self, detail: Detail) -> Result<Status, Failure> {
        let messages = match &self.prepared {
            Some(prepared) => self.execute_prepared(prepared, detail)?,
            None => self.run(self.connection.simple_query(query_for(detail)))?,
        };
        read_status(&messages).map_err(|failure| failure.at(&self.endpoint))
    }

    /// `EXECUTE` of the statement for `detail`, prepared first if this
    /// connection has not yet. Simple protocol both, so the answer is the
    /// text a plain query gives, read the same way.
    fn execute_prepared(
        &self,
        prepared: &RefCell<Vec<Detail>>,
        detail: Detail,
    ) -> Result<Vec<SimpleQueryMessage>, Failure> {
        let name = statement_name(detail);
        if !prepared.borrow().contains(&detail) {
            let prepare = format!("PREPARE {name} AS {}", query_for(detail));
            self.run(self.connection.batch_execute(&prepare))?;
            prepared.borrow_mut().push(detail);
        }
        self.run(self.connection.simple_query(&format!("EXECUTE {name}")))
    }

    fn run<T>(
        &self,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Failure> {
        let (left, named) = self.limit.next();
        self.client
            .within(left, work)
            .map(|done| done.map_err(|err| classify(&err)))
            .unwrap_or_else(|| Err(timed_out(true, named)))
            .map_err(|failure| failure.at(&self.endpoint))
    }
}

/// The failure of a step that did not finish within `bound`: the server is
/// hung when the host had accepted the connection, else the host is unreachable.
fn timed_out(connected: bool, bound: Duration) -> Failure {
    let seconds = bound.as_secs_f64();
    if connected {
        Failure {
            kind: FailureKind::Hung,
            endpoint: None,
            cause: format!("connected, but the server did not answer within {seconds:.1} s"),
        }
    } else {
        Failure {
            kind: FailureKind::Timeout,
            endpoint: None,
            cause: format!("no answer within {seconds:.1} s"),
        }
    }
}

/// The client configuration. A host starting with `/` is a socket directory.
fn client_config(options: &ConnectOptions) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&options.endpoint.host)
        .port(options.endpoint.port)
        .user(&options.user)
        .dbname(&options.dbname)
        .application_name(&options.application_name)
        .connect_timeout(options.connect_timeout);
    if let Some(password) = options.password() {
        config.password(password);
    }
    // How the certificate is checked is the connector's business (tls.rs);
    // tokio-postgres only needs to know whether TLS may be left out.
    config.ssl_mode(match options.tls().map(|tls| tls.mode) {
        Ok(SslMode::Disable) => tokio_postgres::config::SslMode::Disable,
        Ok(SslMode::Allow | SslMode::Prefer) => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    config
}

/// The TLS connector for a TCP connection to `host`: none when TLS is off.
/// Settings that cannot work (a bad PGSSLMODE, a missing or unreadable root
/// certificate) are a rejection: no retry can mend them.
fn tls_for(options: &ConnectOptions, host: &str) -> Result<Option<crate::tls::Handshake>, Failure> {
    let rejected = |cause: String| Failure {
        kind: FailureKind::Rejected,
        endpoint: None,
        cause,
    };
    let settings = options.tls().map_err(|err| rejected(err.to_string()))?;
    if settings.mode == SslMode::Disable {
        return Ok(None);
    }
    options
        .connector
        .for_host(settings, host)
        .map(Some)
        .map_err(rejected)
}

/// Opens the transport itself (TCP, or the Unix socket), setting `connected`
/// once the host accepted it: when the attempt then times out, the server,
/// not the network, is hung. The connection is driven in the background of
/// the runtime; the client is what the session uses.
async fn connect(
    config: &tokio_postgres::Config,
    options: &ConnectOptions,
    connected: &AtomicBool,
) -> Result<(tokio_postgres::Client, oneshot::Receiver<()>), Failure> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => {
            let stream = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .await
                .map_err(|err| io_failure(&err))?;
            connected.store(true, Ordering::Relaxed);
            // PostgreSQL has no TLS on its socket, and libpq asks for none there.
            let mut config = config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            start(config.connect_raw(stream, NoTls).await)
        }
        Some(Host::Tcp(host)) => {
            let tls = tls_for(options, host)?;
            let stream = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|err| io_failure(&err))?;
            connected.store(true, Ordering::Relaxed);
            // As the client does on the connections it opens itself.
            let _ = stream.set_nodelay(true);
            match tls {
                Some(tls) => {
                    let handshake_started = tls.started();
                    let connected = config.connect_raw(stream, tls).await;
                    if let Err(err) = &connected {
                        let refused_tls = !handshake_started.load(Ordering::Relaxed)
                            && err.as_db_error().is_none()
                            && io_source(err).is_none();
                        if refused_tls {
                            return Err(tls_refused(options));
                        }
                    }
                    start(connected)
                }
                None => start(config.connect_raw(stream, NoTls).await),
            }
        }
        None => Err(Failure::transient("no host to connect to")),
    }
}

/// A server that answered the TLS request with "no" when the mode requires
/// TLS: as definitive as a refused login (and, like one, never a sign that
/// the node is gone).
fn tls_refused(options: &ConnectOptions) -> Failure {
    let mode = options.tls().map(|tls| tls.mode.as_str()).unwrap_or("?");
    Failure {
        kind: FailureKind::Rejected,
        endpoint: None,
        cause: format!("the server does not take TLS, which sslmode={mode} requires"),
    }
}

/// Drives a new connection in the background; the client is what callers
/// use, and the receiver resolves when the connection ends.
fn start<S, T>(
    connected: Result<
        (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
        tokio_postgres::Error,
    >,
) -> Result<(tokio_postgres::Client, oneshot::Receiver<()>), Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = connected.map_err(|err| classify(&err))?;
    let (ended, on_end) = oneshot::channel();
    tokio::spawn(async move {
        // Errors here surface as errors of the client's next statement.
        let _ = connection.await;
        let _ = ended.send(());
    });
    Ok((client, on_end))
}

fn io_failure(err: &io::Error) -> Failure {
    Failure {
        kind: classify_io(err.kind()),
        endpoint: None,
        cause: format!("error connecting to server: {err}"),
    }
}

/// Classifies a client error by SQLSTATE or I/O error kind.
fn classify(err: &tokio_postgres::Error) -> Failure {
    let kind = if let Some(db_error) = err.as_db_error() {
        classify_sqlstate(db_error.code().code())
    } else if let Some(io_error) = io_source(err) {
        classify_io(io_error.kind())
    } else if is_tls_failure(err) {
        // A certificate that does not verify, or no common protocol: the
        // same answer until someone changes a certificate.
        FailureKind::Rejected
    } else {
        FailureKind::Transient
    };
    let cause = match err.as_db_error() {
        Some(db_error) => format!(
            "{} {}: {}",
            db_error.severity(),
            db_error.code().code(),
            db_error.message()
        ),
        None => with_causes(err),
    };
    Failure {
        kind,
        endpoint: None,
        cause,
    }
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

/// Whether OpenSSL refused the handshake (the certificate, the protocol).
fn is_tls_failure(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<openssl::ssl::Error>() || cause.is::<openssl::error::ErrorStack>() {
            return true;
        }
        source = cause.source();
    }
    false
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

/// The [`Status`] in the answer to [`query_for`].
fn read_status(messages: &[SimpleQueryMessage]) -> Result<Status, Failure> {
    let row = messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| Failure::transient("the role query returned no row"))?;
    // By name: the levels of detail put it in different columns. Left out
    // of the positional ones, or the lean query's second column would read
    // as the WAL receiver's state (a streaming replica "not streaming").
    let read_only = row
        .columns()
        .iter()
        .position(|column| column.name() == "read_only");
    let columns: Vec<Option<&str>> = (0..row.len())
        .filter(|&i| Some(i) != read_only)
        .map(|i| row.get(i))
        .collect();
    let mut status = parse_row(&columns)?;
    status.read_only = read_only.and_then(|at| row.get(at)).map(|text| text == "t");
    Ok(status)
}

/// The name a held session prepares the statement of `detail` under.
pub(crate) fn statement_name(detail: Detail) -> &'static str {
    match detail {
        Detail::Role => "pgcore_status_role",
        Detail::Streaming => "pgcore_status_streaming",
        Detail::Full => "pgcore_status_full",
    }
}

/// One statement per level, so every probe is one round trip after login.
pub(crate) fn query_for(detail: Detail) -> &'static str {
    match detail {
        Detail::Role => {
            "SELECT pg_is_in_recovery(), \
               current_setting('default_transaction_read_only') = 'on' AS read_only"
        }
        Detail::Streaming => {
            "SELECT pg_is_in_recovery(), (SELECT status = 'streaming' FROM pg_stat_wal_receiver)"
        }
        // CASE (and the WHERE of the senders' subquery) keeps functions that
        // fail during recovery, or outside it, from running. Each view is
        // read once, in a lateral subquery: pg_stat_replication costs a scan
        // of every backend's status, and this query runs on every check.
        // A WAL receiver that has not heard from its primary yet has no
        // latest_end_lsn: its lag is unknown, not zero (greatest() would
        // skip the NULL). A replica without one falls to the time since its
        // last replayed commit, which grows while it is cut off.
        Detail::Full => {
            "SELECT r.rec, \
               w.streaming, \
               current_setting('server_version'), \
               CASE WHEN r.rec THEN coalesce(w.received_tli, \
                   (SELECT timeline_id FROM pg_control_checkpoint())) \
                 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
               CASE WHEN NOT r.rec THEN pg_current_wal_lsn() END, \
               CASE WHEN r.rec THEN pg_last_wal_receive_lsn() END, \
               CASE WHEN r.rec THEN pg_last_wal_replay_lsn() END, \
               w.source, \
               CASE WHEN NOT r.rec THEN s.streaming END, \
               CASE WHEN NOT r.rec THEN current_setting('synchronous_standby_names') END, \
               CASE WHEN NOT r.rec THEN s.synchronous END, \
               s.reply_age_ms, \
               CASE WHEN NOT r.rec THEN s.lag_bytes \
                 WHEN w.latest_end_lsn IS NOT NULL THEN \
                   greatest(0, w.latest_end_lsn - pg_last_wal_replay_lsn())::bigint END, \
               CASE WHEN NOT r.rec THEN s.lag_seconds \
                 WHEN pg_last_wal_replay_lsn() >= w.latest_end_lsn THEN 0 \
                 ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END, \
               CASE WHEN NOT r.rec THEN current_setting('default_transaction_read_only') = 'on' END \
                 AS read_only \
             FROM (SELECT pg_is_in_recovery() AS rec) r \
             LEFT JOIN LATERAL ( \
               SELECT status = 'streaming' AS streaming, received_tli, latest_end_lsn, \
                      CASE WHEN status = 'streaming' THEN sender_host || ':' || sender_port END \
                        AS source \
                 FROM pg_stat_wal_receiver) w ON true \
             CROSS JOIN LATERAL ( \
               SELECT count(*) AS streaming, \
                      count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')) AS synchronous, \
                      (extract(epoch FROM clock_timestamp() - min(reply_time)) * 1000)::bigint \
                        AS reply_age_ms, \
                      max(pg_current_wal_lsn() - replay_lsn)::bigint AS lag_bytes, \
                      max(CASE WHEN replay_lsn >= pg_current_wal_lsn() THEN 0 \
                            ELSE extract(epoch FROM replay_lag) END) AS lag_seconds \
                 FROM pg_stat_replication WHERE state = 'streaming' AND NOT r.rec) s"
        }
    }
}

/// Turns the text columns of [`query_for`] into a [`Status`]; the first
/// column is always `pg_is_in_recovery()`.
pub(crate) fn parse_row(columns: &[Option<&str>]) -> Result<Status, Failure> {
    let column = |i: usize| columns.get(i).copied().flatten();
    let in_recovery = match column(0) {
        Some("t") => true,
        Some("f") => false,
        other => {
            return Err(Failure::transient(format!(
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
        replication_lag_bytes: column(12).and_then(|text| text.parse().ok()),
        replication_lag_seconds: column(13).and_then(|text| text.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(failure.kind, crate::FailureKind::Transient);
    }

    /// A replica's answer to the full query, as text columns.
    fn full_replica_row<'a>(
        lag_bytes: Option<&'a str>,
        lag_seconds: Option<&'a str>,
    ) -> Vec<Option<&'a str>> {
        vec![
            Some("t"),
            Some("t"),
            Some("15.8"),
            Some("2"),
            None,
            Some("0/3000148"),
            Some("0/3000060"),
            Some("10.0.0.1:5432"),
            None,
            None,
            None,
            None,
            lag_bytes,
            lag_seconds,
            None,
        ]
    }

    #[test]
    fn the_full_row_carries_the_replication_lag() {
        let lagging = parse_row(&full_replica_row(Some("232"), Some("0.25"))).unwrap();
        assert_eq!(lagging.role, Role::Replica);
        assert_eq!(lagging.replayed_wal_lsn, Some(Lsn(0x3000060)));
        assert_eq!(lagging.replication_lag_bytes, Some(232));
        assert_eq!(lagging.replication_lag_seconds, Some(0.25));
        let caught_up = parse_row(&full_replica_row(Some("0"), Some("0"))).unwrap();
        assert_eq!(caught_up.replication_lag_bytes, Some(0));
        assert_eq!(caught_up.replication_lag_seconds, Some(0.0));
        // No WAL receiver, nothing replayed yet: unknown, not zero.
        let unknown = parse_row(&full_replica_row(None, None)).unwrap();
        assert_eq!(unknown.replication_lag_bytes, None);
        assert_eq!(unknown.replication_lag_seconds, None);
    }

    #[test]
    fn every_level_is_one_statement_and_the_full_one_reads_the_lag() {
        for detail in [Detail::Role, Detail::Streaming, Detail::Full] {
            assert!(!query_for(detail).contains(';'), "{detail:?}");
        }
        let full = query_for(Detail::Full);
        assert!(full.contains("latest_end_lsn - pg_last_wal_replay_lsn()"));
        assert!(full.contains("pg_current_wal_lsn() - replay_lsn"));
        assert!(full.contains("replay_lag"));
        // read_only is read by name, wherever the level puts it.
        assert!(full.contains("AS read_only"));
    }

    fn options(endpoint: &str, timeout: Duration) -> ConnectOptions {
        ConnectOptions::new(
            endpoint.parse().unwrap(),
            Some("nobody".into()),
            None,
            timeout,
        )
    }

    #[test]
    fn a_refused_connection_is_definitive_and_names_the_endpoint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = options(&format!("127.0.0.1:{port}"), Duration::from_secs(5));
        let failure = Client::new()
            .unwrap()
            .probe_once(&options, Detail::Role)
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Refused, "{failure}");
        assert_eq!(failure.endpoint, Some(options.endpoint.clone()));
        assert!(
            failure
                .to_string()
                .starts_with(&format!("127.0.0.1:{port}: ")),
            "{failure}"
        );
    }

    #[test]
    fn a_missing_socket_is_refused() {
        let options = options("/nonexistent-socket-dir:5432", Duration::from_secs(5));
        let failure = Client::new().unwrap().connect(&options).err().unwrap();
        assert_eq!(failure.kind, FailureKind::Refused, "{failure}");
    }

    #[test]
    fn a_host_that_accepts_but_never_answers_is_hung_within_the_bound() {
        // The kernel completes the handshake into the backlog; nobody answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let options = options(&endpoint, Duration::from_secs(10));
        let started = Instant::now();
        let failure = Client::new()
            .unwrap()
            .connect_within(&options, Duration::from_millis(300))
            .err()
            .unwrap();
        assert_eq!(failure.kind, FailureKind::Hung, "{failure}");
        assert_eq!(
            failure.cause,
            "connected, but the server did not answer within 0.3 s"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "not bounded");
    }

    #[test]
    fn witnesses_that_accept_are_counted_and_others_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open: Endpoint = listener.local_addr().unwrap().to_string().parse().unwrap();
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let closed: Endpoint = format!("127.0.0.1:{closed_port}").parse().unwrap();
        let client = Client::new().unwrap();
        let reached = client.reachable(&[open, closed], Duration::from_secs(2));
        assert_eq!(reached, 1);
    }
}
