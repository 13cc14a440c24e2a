//! `probe`: ask a PostgreSQL node which role it plays.
//!
//! This library is the one place where the release decides whether a node is a
//! primary, a replica, still starting, or unreachable. haproxy's health check
//! (through the `pg-role-check` binary), `pg-bootstrap` and `pg-monitor` all use
//! it, so that every component classifies a node the same way.
//!
//! Classification is by error kind and SQLSTATE, never by message text: the
//! original bash release matched psql's messages and broke when they changed.

pub mod duration;
pub mod input;
pub mod log;
pub mod passfile;
pub mod role;
pub mod target;

pub use role::{Detail, Failure, FailureKind, Lsn, Prober, Report, RetryPolicy, Role, Status};
/// The JSON library of `--json` outputs, for the programs that write JSON too.
pub use serde_json;
pub use target::{ConnectOptions, Endpoint};
