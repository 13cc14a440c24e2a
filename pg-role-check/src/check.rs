//! What makes the check pass: the expected role and the conditions on it,
//! judged from one probe's report and what the caller saw beside it (the
//! ready file, how long a primary has asked for no synchronous standby).
//! Pure, so that every row of the contract has a unit test.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pgcore::{Detail, Endpoint, Report, Role, Status};

use crate::cli::{Cli, Expect};

/// Exit code when the role could not be determined.
pub const UNDETERMINED: u8 = 3;

/// The role a node must play and what must hold for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub role: Expect,
    /// A replica counts only while its WAL receiver streams.
    pub streaming: bool,
    /// A primary counts only while it takes writes (always so for `Primary`).
    pub writable: bool,
    /// A primary counts only while a streaming standby is synchronous.
    pub synchronous: bool,
    /// With `synchronous`: a primary asking for no synchronous standby
    /// counts too, once it has asked for none through this long.
    pub accept_asynchronous_after: Option<Duration>,
    /// The node counts only once this file exists.
    pub ready_file: Option<PathBuf>,
}

/// What the caller saw beside a probe's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The ready file exists, or none was named.
    pub ready: bool,
    /// How long, over the probes of a wait, the primary has asked for no
    /// synchronous standby (zero when it asks for one, or on one probe).
    pub asynchronous_for: Duration,
}

/// Whether a primary asks for no synchronous standby: its commits wait for nobody.
pub fn asks_for_none(status: &Status) -> bool {
    status.role == Role::Primary
        && status
            .synchronous_standby_names
            .as_deref()
            .is_some_and(|names| names.trim().is_empty())
}

/// A primary refusing writes (its monitor's lease lapsed, a split-brain) is
/// not the primary haproxy may send writes to.
pub fn refuses_writes(status: &Status) -> bool {
    status.read_only == Some(true)
}

/// A replica whose WAL receiver streams from a primary; one cut off is stale.
pub fn streams(status: &Status) -> bool {
    status.wal_receiver_streaming == Some(true)
}

impl Expectation {
    /// The expectation the flags describe, or the usage error they make.
    pub fn from_cli(cli: &Cli) -> Result<Expectation, &'static str> {
        let expectation = Expectation {
            role: cli.expect,
            streaming: cli.streaming,
            writable: cli.writable || cli.expect == Expect::Primary,
            synchronous: cli.synchronous,
            accept_asynchronous_after: cli.accept_asynchronous_after,
            ready_file: cli.ready_file.clone(),
        };
        if cli.streaming && cli.expect == Expect::Primary {
            return Err(
                "--streaming applies to replicas: use it with --expect replica or --expect any",
            );
        }
        if cli.writable && cli.expect == Expect::Replica {
            return Err(
                "--writable applies to primaries: use it with --expect any (--expect primary implies it)",
            );
        }
        if cli.synchronous && cli.expect == Expect::Replica {
            return Err(
                "--synchronous applies to primaries: use it with --expect primary or --expect any",
            );
        }
        Ok(expectation)
    }

    /// The least the probe must ask: each level is one query, and haproxy's
    /// checks (no --json, --synchronous or --writable) stay on the lean ones.
    pub fn detail(&self, json: bool) -> Detail {
        // Only the full query reads both the WAL receiver and read-only mode.
        let writable_replica_or_primary =
            self.streaming && self.role == Expect::Any && self.writable;
        if json || self.synchronous || writable_replica_or_primary {
            Detail::Full
        } else if self.streaming {
            Detail::Streaming
        } else {
            Detail::Role
        }
    }

    /// 0 the expectation holds, 1 the node answered otherwise, 3 undetermined
    /// (see `--help`).
    pub fn exit_code(&self, report: &Report, seen: Seen) -> u8 {
        let status = &report.status;
        let holds = match status.role {
            Role::Unreachable => return UNDETERMINED,
            Role::Starting => false,
            Role::Primary => {
                self.role != Expect::Replica
                    && !(self.writable && refuses_writes(status))
                    && (!self.synchronous || self.synchronous_enough(status, seen))
            }
            Role::Replica => self.role != Expect::Primary && (!self.streaming || streams(status)),
        };
        u8::from(!(holds && seen.ready))
    }

    /// A synchronous standby streams, or the primary has asked for none
    /// for as long as `--accept-asynchronous-after` says.
    fn synchronous_enough(&self, status: &Status, seen: Seen) -> bool {
        let accepted = self
            .accept_asynchronous_after
            .is_some_and(|after| asks_for_none(status) && seen.asynchronous_for >= after);
        status.synchronous_replicas.unwrap_or(0) > 0 || accepted
    }

    /// What the node said, as the one line printed: its first word is the
    /// role. `ready`: the ready file exists, or none was named.
    pub fn line(&self, endpoint: &Endpoint, report: &Report, ready: bool) -> String {
        let state = self.state(endpoint, report, ready);
        match report.error {
            Some(_) => state,
            None => format!("{state} ({:.1} ms)", report.latency.as_secs_f64() * 1000.0),
        }
    }

    /// The line without the probe's latency: what changes when the node does.
    pub fn state(&self, endpoint: &Endpoint, report: &Report, ready: bool) -> String {
        let status = &report.status;
        if let Some(failure) = &report.error {
            let attempts = match report.attempts {
                1 => "1 attempt".to_string(),
                n => format!("{n} attempts"),
            };
            // The failure message already names the endpoint.
            return format!("{} after {attempts}: {failure}", status.role);
        }
        let mut line = format!("{} {endpoint}", status.role);
        match status.role {
            Role::Replica => match status.wal_receiver_streaming {
                Some(true) => line.push_str(", streaming"),
                Some(false) => line.push_str(", not streaming"),
                None => {}
            },
            Role::Primary => {
                if refuses_writes(status) {
                    line.push_str(", refusing writes");
                }
                if self.synchronous {
                    line.push_str(match status.synchronous_replicas {
                        Some(n) if n > 0 => ", a synchronous standby streaming",
                        _ if asks_for_none(status) => ", asks for no synchronous standby",
                        _ => ", no synchronous standby",
                    });
                }
            }
            Role::Starting | Role::Unreachable => {}
        }
        if let (false, Some(path)) = (ready, &self.ready_file) {
            line.push_str(&format!(", not ready: {} does not exist", path.display()));
        }
        line
    }
}

impl fmt::Display for Expectation {
    /// What is waited for, as a log line says it.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let primary = format!(
            "a primary{}{}",
            if self.writable { " taking writes" } else { "" },
            if self.synchronous {
                " with a synchronous standby"
            } else {
                ""
            }
        );
        let replica = format!(
            "a replica{}",
            if self.streaming { " streaming" } else { "" }
        );
        match self.role {
            Expect::Primary => f.write_str(&primary)?,
            Expect::Replica => f.write_str(&replica)?,
            Expect::Any => write!(f, "{primary} or {replica}")?,
        }
        if let (true, Some(after)) = (self.synchronous, self.accept_asynchronous_after) {
            write!(f, " (or asking for none for {:.1} s)", after.as_secs_f64())?;
        }
        if let Some(path) = &self.ready_file {
            write!(f, ", once {} exists", path.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pgcore::{Failure, FailureKind};

    use super::*;

    fn expect(role: Expect) -> Expectation {
        Expectation {
            role,
            streaming: false,
            writable: role == Expect::Primary,
            synchronous: false,
            accept_asynchronous_after: None,
            ready_file: None,
        }
    }

    fn answered(status: Status) -> Report {
        Report {
            status,
            attempts: 1,
            latency: Duration::from_micros(1500),
            error: None,
        }
    }

    fn primary(read_only: bool, synchronous_replicas: Option<i64>) -> Report {
        answered(Status {
            role: Role::Primary,
            read_only: Some(read_only),
            synchronous_replicas,
            ..Status::default()
        })
    }

    /// A primary with a streaming standby that is not synchronous, and
    /// `synchronous_standby_names` as given.
    fn primary_asking(names: &str) -> Report {
        answered(Status {
            synchronous_standby_names: Some(names.to_string()),
            ..primary(false, Some(0)).status
        })
    }

    fn seen(ready: bool, asynchronous_for: u64) -> Seen {
        Seen {
            ready,
            asynchronous_for: Duration::from_secs(asynchronous_for),
        }
    }

    fn replica(streaming: bool) -> Report {
        answered(Status {
            role: Role::Replica,
            wal_receiver_streaming: Some(streaming),
            ..Status::default()
        })
    }

    fn failed(kind: FailureKind) -> Report {
        let role = if kind == FailureKind::Starting {
            Role::Starting
        } else {
            Role::Unreachable
        };
        Report {
            status: Status {
                role,
                ..Status::default()
            },
            attempts: 1,
            latency: Duration::ZERO,
            error: Some(Failure {
                kind,
                endpoint: None,
                cause: "why".into(),
            }),
        }
    }

    /// The contract, a row per case: expectation, answer, ready, exit code.
    #[test]
    fn each_expectation_holds_exactly_for_the_answers_it_names() {
        let any = expect(Expect::Any);
        let writable_any = Expectation {
            writable: true,
            ..any.clone()
        };
        let streaming_any = Expectation {
            streaming: true,
            ..writable_any.clone()
        };
        let synchronous_primary = Expectation {
            synchronous: true,
            ..expect(Expect::Primary)
        };
        let streaming_replica = Expectation {
            streaming: true,
            ..expect(Expect::Replica)
        };
        let post_start_peer = Expectation {
            accept_asynchronous_after: Some(Duration::from_secs(7)),
            ..synchronous_primary.clone()
        };
        let rows: [(&Expectation, Report, bool, u8); 28] = [
            (&expect(Expect::Primary), primary(false, None), true, 0),
            (&expect(Expect::Primary), primary(true, None), true, 1),
            (&expect(Expect::Primary), replica(true), true, 1),
            (
                &expect(Expect::Primary),
                failed(FailureKind::Starting),
                true,
                1,
            ),
            (
                &expect(Expect::Primary),
                failed(FailureKind::Refused),
                true,
                3,
            ),
            (&expect(Expect::Replica), replica(false), true, 0),
            (&expect(Expect::Replica), primary(false, None), true, 1),
            (&streaming_replica, replica(true), true, 0),
            (&streaming_replica, replica(false), true, 1),
            // --expect any takes a primary refusing writes, unless --writable.
            (&any, primary(true, None), true, 0),
            (&writable_any, primary(true, None), true, 1),
            (&writable_any, primary(false, None), true, 0),
            (&streaming_any, replica(true), true, 0),
            (&streaming_any, replica(false), true, 1),
            (&streaming_any, primary(false, None), true, 0),
            (&synchronous_primary, primary(false, Some(1)), true, 0),
            (&synchronous_primary, primary(false, Some(0)), true, 1),
            // A primary that did not say (an older probe) is not synchronous.
            (&synchronous_primary, primary(false, None), true, 1),
            (&synchronous_primary, primary(true, Some(1)), true, 1),
            // A missing ready file holds back any answer, and changes no
            // undetermined one.
            (&streaming_any, primary(false, None), false, 1),
            (&streaming_any, replica(true), false, 1),
            (&streaming_any, failed(FailureKind::Timeout), false, 3),
            // A primary asking for no synchronous standby: only after the
            // time given, and never when it asks for one or the flag is absent.
            (&post_start_peer, primary_asking(""), true, 1),
            (&post_start_peer, primary_asking("*"), true, 1),
            (&post_start_peer, primary(false, Some(1)), true, 0),
            (&synchronous_primary, primary_asking(""), true, 1),
            (&post_start_peer, primary_asking(""), false, 1),
            (&post_start_peer, primary_asking(" "), true, 1),
        ];
        for (i, (expectation, report, ready, code)) in rows.iter().enumerate() {
            assert_eq!(
                expectation.exit_code(report, seen(*ready, 0)),
                *code,
                "row {i}: {expectation} given {:?}, ready {ready}",
                report.status
            );
        }
    }

    #[test]
    fn a_primary_asking_for_no_synchronous_standby_counts_once_it_asked_for_none_long_enough() {
        let post_start_peer = Expectation {
            synchronous: true,
            accept_asynchronous_after: Some(Duration::from_secs(7)),
            ..expect(Expect::Primary)
        };
        let unasked = primary_asking("");
        assert_eq!(post_start_peer.exit_code(&unasked, seen(true, 6)), 1);
        assert_eq!(post_start_peer.exit_code(&unasked, seen(true, 7)), 0);
        assert_eq!(post_start_peer.exit_code(&unasked, seen(false, 7)), 1);
        // The time counts only while it asks for none.
        assert_eq!(
            post_start_peer.exit_code(&primary_asking("*"), seen(true, 60)),
            1
        );
        let strict = Expectation {
            accept_asynchronous_after: None,
            ..post_start_peer.clone()
        };
        assert_eq!(strict.exit_code(&unasked, seen(true, 60)), 1);
        assert!(!asks_for_none(&replica(true).status));
    }

    #[test]
    fn flags_that_cannot_apply_to_the_role_are_usage_errors() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["pg-role-check"];
            all.extend_from_slice(args);
            Expectation::from_cli(&Cli::parse_from(all))
        };
        assert!(parse(&["--streaming"]).is_err());
        assert!(parse(&["--expect", "replica", "--writable"]).is_err());
        assert!(parse(&["--expect", "replica", "--synchronous"]).is_err());
        let any = parse(&["--expect", "any", "--writable", "--streaming"]).unwrap();
        assert!(any.writable && any.streaming);
        assert!(parse(&[]).unwrap().writable, "--expect primary implies it");
        let bad = |args: &[&str]| {
            let mut all = vec!["pg-role-check"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).is_err()
        };
        assert!(bad(&["--accept-asynchronous-after", "7"]));
        assert!(bad(&["--synchronous", "--accept-asynchronous-after", "7"]));
        assert!(!bad(&[
            "--synchronous",
            "--wait",
            "60",
            "--accept-asynchronous-after",
            "7"
        ]));
    }

    #[test]
    fn haproxys_checks_stay_on_the_lean_queries() {
        assert_eq!(expect(Expect::Primary).detail(false), Detail::Role);
        let streaming_replica = Expectation {
            streaming: true,
            ..expect(Expect::Replica)
        };
        assert_eq!(streaming_replica.detail(false), Detail::Streaming);
        assert_eq!(streaming_replica.detail(true), Detail::Full);
        let synchronous = Expectation {
            synchronous: true,
            ..expect(Expect::Primary)
        };
        assert_eq!(synchronous.detail(false), Detail::Full);
        let post_start = Expectation {
            streaming: true,
            writable: true,
            ..expect(Expect::Any)
        };
        assert_eq!(post_start.detail(false), Detail::Full);
    }

    #[test]
    fn the_line_starts_with_the_role_and_says_what_does_not_hold() {
        let endpoint: Endpoint = "10.0.0.1:6432".parse().unwrap();
        let post_start = Expectation {
            streaming: true,
            writable: true,
            ready_file: Some("/run/provisioned".into()),
            ..expect(Expect::Any)
        };
        assert_eq!(
            post_start.line(&endpoint, &primary(false, None), false),
            "primary 10.0.0.1:6432, not ready: /run/provisioned does not exist (1.5 ms)"
        );
        assert_eq!(
            post_start.line(&endpoint, &replica(false), true),
            "replica 10.0.0.1:6432, not streaming (1.5 ms)"
        );
        let synchronous = Expectation {
            synchronous: true,
            ..expect(Expect::Primary)
        };
        assert_eq!(
            synchronous.line(&endpoint, &primary(false, Some(0)), true),
            "primary 10.0.0.1:6432, no synchronous standby (1.5 ms)"
        );
        assert_eq!(
            synchronous.state(&endpoint, &primary(false, Some(1)), true),
            "primary 10.0.0.1:6432, a synchronous standby streaming"
        );
        assert_eq!(
            synchronous.state(&endpoint, &primary_asking(""), true),
            "primary 10.0.0.1:6432, asks for no synchronous standby"
        );
        assert_eq!(
            expect(Expect::Primary).line(&endpoint, &primary(true, None), true),
            "primary 10.0.0.1:6432, refusing writes (1.5 ms)"
        );
        assert_eq!(
            expect(Expect::Primary).line(&endpoint, &failed(FailureKind::Refused), true),
            "unreachable after 1 attempt: why"
        );
    }

    #[test]
    fn the_expectation_reads_as_what_is_waited_for() {
        let post_start = Expectation {
            streaming: true,
            writable: true,
            ready_file: Some("/run/provisioned".into()),
            ..expect(Expect::Any)
        };
        assert_eq!(
            post_start.to_string(),
            "a primary taking writes or a replica streaming, once /run/provisioned exists"
        );
        let synchronous = Expectation {
            synchronous: true,
            ..expect(Expect::Primary)
        };
        assert_eq!(
            synchronous.to_string(),
            "a primary taking writes with a synchronous standby"
        );
        let post_start_peer = Expectation {
            accept_asynchronous_after: Some(Duration::from_secs(7)),
            ..synchronous
        };
        assert_eq!(
            post_start_peer.to_string(),
            "a primary taking writes with a synchronous standby (or asking for none for 7.0 s)"
        );
    }
}
