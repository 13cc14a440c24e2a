//! What a node is: its role and status, as one query per level of detail
//! reads them, and the report of a probe with retries. The I/O that asks
//! lives in the `session` module; this is the part every program reads the
//! same way.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::failure::{Failure, FailureKind};
use crate::retry::Retried;

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
/// server more; haproxy's per-second checks use [`Detail::Role`]. Ordered:
/// a level answers every question of the levels before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    /// On a replica: bytes of WAL its primary had when the WAL sender last
    /// reported (`pg_stat_wal_receiver.latest_end_lsn`) that are not replayed
    /// yet; `None` without a WAL receiver. On a primary: the most any
    /// streaming standby has still to replay; `None` without one.
    pub replication_lag_bytes: Option<i64>,
    /// On a replica: 0 once replay has reached what the primary last
    /// reported, else the seconds since the last replayed transaction
    /// committed. On a primary: the largest `replay_lag` of its streaming
    /// standbys, a standby that replayed everything counting 0 (PostgreSQL
    /// shows NULL once an idle standby caught up); `None` without one.
    pub replication_lag_seconds: Option<f64>,
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
    /// The report of a probe that ended with `retried`, `latency` after it
    /// started. A failure leaves the role `starting` (57P03) or `unreachable`.
    pub fn new(retried: Retried<Status>, latency: Duration) -> Report {
        let (status, error) = match retried.result {
            Ok(status) => (status, None),
            Err(failure) => {
                let role = match failure.kind {
                    FailureKind::Starting => Role::Starting,
                    _ => Role::Unreachable,
                };
                let status = Status {
                    role,
                    ..Status::default()
                };
                (status, Some(failure))
            }
        };
        Report {
            status,
            attempts: retried.attempts,
            latency,
            error,
        }
    }

    pub fn role(&self) -> Role {
        self.status.role
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
    fn a_failed_probe_reports_starting_or_unreachable_with_its_failure() {
        let failed = |kind| Retried::<Status> {
            result: Err(Failure {
                kind,
                endpoint: None,
                cause: "why".into(),
            }),
            attempts: 2,
        };
        let starting = Report::new(failed(FailureKind::Starting), Duration::ZERO);
        assert_eq!(starting.role(), Role::Starting);
        assert_eq!(starting.attempts, 2);
        let hung = Report::new(failed(FailureKind::Hung), Duration::ZERO);
        assert_eq!(hung.role(), Role::Unreachable);
        assert_eq!(
            hung.error.map(|failure| failure.kind),
            Some(FailureKind::Hung)
        );
    }
}
