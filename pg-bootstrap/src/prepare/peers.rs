//! Asking the peers: which one is primary, which cluster it serves, whether
//! its last checkpoint is on its current timeline, and its timeline history.
//!
//! Every question goes through `pgcore`'s bounded session, so a peer is
//! classified exactly as pg-role-check and pg-monitor classify it, and every
//! question is bounded by the connect timeout.

use std::time::{Duration, Instant};

use pgcore::history::History;
use pgcore::{
    logln, retry, Client, ConnectOptions, Detail, Endpoint, Failure, FailureKind, RetryPolicy, Role,
};

use super::decide::Peers;
use crate::cancel::Cancel;
use crate::stop::Stop;

/// How often a peer is asked during a wait, and how often a wait is logged.
const ROUND: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The peers and how to ask them.
pub struct Asker<'a> {
    pub client: &'a Client,
    /// One per peer: the replication user, database `postgres`, the password.
    pub peers: &'a [ConnectOptions],
    /// Attempts for one-off questions (timeouts and resets are retried).
    pub retries: u32,
    pub cancel: &'a Cancel,
}

impl Asker<'_> {
    /// Asks each peer once a second, for up to `bound`, whether it is primary.
    ///
    /// Returns the first primary whose system identifier could be read. A
    /// primary whose identifier could not be read is returned only when the
    /// time is up, with `system_identifier: None`.
    pub fn look_for_primary(&self, bound: Duration, purpose: &str) -> Result<Peers, Stop> {
        let started = Instant::now();
        if self.peers.is_empty() {
            return Ok(Peers::NoPrimary {
                waited: Duration::ZERO,
                seen: "no peers given".into(),
                answered: false,
            });
        }
        let mut unidentified: Option<Endpoint> = None;
        // Whether any peer answered at all (as a replica, or starting) during the wait.
        let mut answered = false;
        let mut last_logged: Option<(Instant, String)> = None;
        loop {
            let round_started = Instant::now();
            let mut seen = Vec::new();
            for options in self.peers {
                let left = bound.saturating_sub(started.elapsed());
                let mut options = options.clone();
                // Never let one question run past the end of the wait (but
                // give the last one a moment to be asked at all).
                options.connect_timeout = options
                    .connect_timeout
                    .min(left.max(Duration::from_millis(500)));
                let endpoint = options.endpoint.clone();
                match self.client.probe_once(&options, Detail::Role) {
                    // A primary refusing writes was stepped down by its monitor (its
                    // lease lapsed, or a split-brain): it is not one to follow.
                    Ok(status)
                        if status.role == Role::Primary && status.read_only == Some(true) =>
                    {
                        answered = true;
                        seen.push(format!("{endpoint} primary refusing writes (not followed)"))
                    }
                    Ok(status) if status.role == Role::Primary => {
                        match self.system_identifier(&options) {
                            Ok(id) => {
                                logln!("{endpoint} answers as primary (system identifier {id})");
                                return Ok(Peers::Primary {
                                    endpoint,
                                    system_identifier: Some(id),
                                });
                            }
                            Err(failure) => {
                                seen.push(format!(
                                    "{endpoint} primary, identity unreadable: {}",
                                    failure.cause
                                ));
                                unidentified = Some(endpoint);
                            }
                        }
                    }
                    Ok(status) => {
                        answered = true;
                        seen.push(format!("{endpoint} {}", status.role))
                    }
                    Err(failure) if failure.kind == FailureKind::Starting => {
                        answered = true;
                        seen.push(format!("{endpoint} starting"))
                    }
                    Err(failure) => seen.push(format!("{endpoint} unreachable: {}", failure.cause)),
                }
            }
            let summary = seen.join("; ");
            let waited = started.elapsed();
            if waited >= bound {
                return Ok(match unidentified {
                    Some(endpoint) => Peers::Primary {
                        endpoint,
                        system_identifier: None,
                    },
                    None => Peers::NoPrimary {
                        waited,
                        seen: summary,
                        answered,
                    },
                });
            }
            let due = match &last_logged {
                None => true,
                Some((at, text)) => *text != summary || at.elapsed() >= LOG_EVERY,
            };
            if due {
                logln!(
                    "waiting for a primary {purpose} ({:.0} s left): {summary}",
                    (bound - waited).as_secs_f64()
                );
                last_logged = Some((Instant::now(), summary));
            }
            let pause = ROUND
                .saturating_sub(round_started.elapsed())
                .min(bound.saturating_sub(started.elapsed()));
            self.cancel.sleep(pause);
            if self.cancel.is_set() {
                return Err(Stop::Refused(format!(
                    "interrupted by a signal while waiting for a primary {purpose}; nothing was changed"
                )));
            }
        }
    }

    /// The peer's system identifier: equal to ours when it serves the same cluster.
    pub fn system_identifier(&self, options: &ConnectOptions) -> Result<u64, Failure> {
        let row = self.query_row(options, "SELECT system_identifier FROM pg_control_system()")?;
        row.first()
            .cloned()
            .flatten()
            .and_then(|text| text.parse::<i64>().ok())
            // bigint on the server, uint64 in pg_control: the same 64 bits.
            .map(|id| id as u64)
            .ok_or_else(|| {
                Failure::transient("pg_control_system() returned no system identifier")
                    .at(&options.endpoint)
            })
    }

    /// The timeline of the peer's last checkpoint and the timeline it writes on.
    /// They differ right after a promotion until the next checkpoint ends, and
    /// pg_rewind before PostgreSQL 16 reads the first and so sees nothing to do.
    pub fn checkpoint_timelines(&self, options: &ConnectOptions) -> Result<(u32, u32), Failure> {
        let row = self.query_row(
            options,
            "SELECT c.timeline_id, \
               ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int \
             FROM pg_control_checkpoint() c",
        )?;
        let number = |i: usize| {
            row.get(i)
                .cloned()
                .flatten()
                .and_then(|text| text.parse::<u32>().ok())
        };
        match (number(0), number(1)) {
            (Some(checkpoint), Some(current)) => Ok((checkpoint, current)),
            _ => Err(
                Failure::transient("the timeline query returned no timelines")
                    .at(&options.endpoint),
            ),
        }
    }

    /// The history of the timeline the peer writes (see [`pgcore::history`]),
    /// retried as the other one-off questions are.
    pub fn timeline_history(&self, options: &ConnectOptions) -> Result<History, Failure> {
        let policy = RetryPolicy::attempts(self.retries, ROUND);
        let read = || {
            let session = self
                .client
                .connect_within(options, options.connect_timeout)?;
            pgcore::history::read(&session)
        };
        retry(&policy, read, |_, pause| self.cancel.sleep(pause)).result
    }

    /// Asks the peer for an immediate checkpoint (needs pg_checkpoint, PostgreSQL 15+).
    pub fn request_checkpoint(&self, options: &ConnectOptions) -> Result<(), Failure> {
        self.query_row(options, "CHECKPOINT").map(|_| ())
    }

    /// Runs one statement, retrying timeouts and resets up to `retries`
    /// attempts in all, and returns its first row as text (empty when none).
    fn query_row(
        &self,
        options: &ConnectOptions,
        sql: &'static str,
    ) -> Result<Vec<Option<String>>, Failure> {
        let policy = RetryPolicy::attempts(self.retries, ROUND);
        let first_row = || {
            let rows = self
                .client
                .connect_within(options, options.connect_timeout)?
                .text_rows(sql)?;
            Ok(rows.into_iter().next().unwrap_or_default())
        };
        retry(&policy, first_row, |_, pause| self.cancel.sleep(pause)).result
    }
}
