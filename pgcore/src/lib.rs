//! `pgcore`: what every program of the release shares.
//!
//! The binaries stay thin on top of it: the bounded session to a node
//! (`session`, behind the feature of that name, on by default), the role
//! classification ([`role`], [`failure`]), connection options, passfiles and TLS
//! ([`target`], [`passfile`], [`tls`]), durations, bounded operator input, logging,
//! retries, quoting for SQL, libpq and postgresql.conf ([`quote`]), what a
//! stopped server's pg_control says ([`control`]), a primary's
//! timeline history ([`history`]), haproxy's runtime API ([`haproxy`]), and
//! the few operating-system helpers several programs need ([`os`]).
//!
//! Classification is by error kind and SQLSTATE, never by message text: the
//! original bash release matched psql's messages and broke when they changed.
//! pg-role-check (haproxy's check), pg-bootstrap and pg-monitor all classify
//! a node here, so they never disagree about what a node is.

pub mod control;
pub mod duration;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failure;
pub mod haproxy;
pub mod history;
pub mod input;
pub mod lease;
pub mod log;
pub mod os;
pub mod passfile;
pub mod quote;
pub mod retry;
pub mod role;
#[cfg(feature = "session")]
pub mod session;
pub mod target;
pub mod tls;

pub use failure::{Failure, FailureKind};
pub use retry::{retry, Retried, RetryPolicy};
pub use role::{Detail, Lsn, Report, Role, Status};
#[cfg(feature = "session")]
pub use session::{Client, HeldSession, Session};
pub use target::{ConnectOptions, Endpoint};
pub use tls::{SslMode, TlsSettings};
