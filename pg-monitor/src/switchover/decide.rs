//! The switchover's decisions, as pure functions of what was observed: may it
//! go ahead ([`verdict`]), and has the peer received everything this node
//! wrote ([`received`]). Each row has a unit test below.

use std::fmt;
use std::path::PathBuf;

use pgcore::control::{ClusterState, ControlFile};
use pgcore::history::{Fit, History};
use pgcore::{Failure, FailureKind, Lsn, Role, Status};

/// The peer's walsender on the local primary, as `pg_stat_replication` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    /// `state`: `streaming` once it has caught up.
    pub state: String,
    /// `pg_current_wal_lsn() - flush_lsn`; `None` before the standby first replied.
    pub lag_bytes: Option<u64>,
}

/// What the switchover looks at before it changes anything.
#[derive(Clone, Debug)]
pub struct Observed {
    pub local: Result<Status, Failure>,
    pub peer: Result<Status, Failure>,
    /// The peer's row on the local primary (`None`: no walsender serves it);
    /// asked only of a local primary.
    pub standby: Option<Result<Option<Standby>, Failure>>,
    /// Whether the peer user may run pg_promote(); asked only of a replica.
    pub may_promote: Option<Result<bool, Failure>>,
    /// The first pause file that exists.
    pub paused_by: Option<PathBuf>,
}

/// The flags the verdict weighs.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub max_lag_bytes: u64,
    /// Go ahead despite a pause file.
    pub force: bool,
}

/// Whether the switchover may go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything holds; how far behind the peer is.
    Go { lag_bytes: u64 },
    /// Something does not hold (exit 1); nothing was changed.
    Refuse(String),
    /// A node's state could not be told (exit 3); nothing was changed.
    Undetermined(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Go { .. } => "switchover",
            Verdict::Refuse(_) => "refused",
            Verdict::Undetermined(_) => "undetermined",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Verdict::Go { lag_bytes } => write!(
                f,
                "this node is a primary taking writes and the peer a replica streaming from it, \
                 {lag_bytes} bytes behind"
            ),
            Verdict::Refuse(why) | Verdict::Undetermined(why) => f.write_str(why),
        }
    }
}

/// May the switchover go ahead? Only from a primary taking writes to a
/// replica streaming from it and close behind, with no split-brain and, unless
/// forced, no pause file: anything else is refused before any change.
pub fn verdict(observed: &Observed, policy: &Policy) -> Verdict {
    if let Err(verdict) = local_is_writable_primary(&observed.local) {
        return verdict;
    }
    if let Err(verdict) = peer_is_streaming_replica(&observed.peer) {
        return verdict;
    }
    let reported_lag = reported_lag(&observed.local, &observed.peer);
    let standby = observed.standby.as_ref();
    let lag_bytes = match streams_from_here(standby, reported_lag, policy.max_lag_bytes) {
        Ok(lag_bytes) => lag_bytes,
        Err(verdict) => return verdict,
    };
    if let Err(verdict) = peer_may_promote(observed.may_promote.as_ref()) {
        return verdict;
    }
    if let (Some(path), false) = (&observed.paused_by, policy.force) {
        return Verdict::Refuse(format!(
            "failover is paused ({} exists): the roles stay where they are; --force hands \
             over anyway",
            path.display()
        ));
    }
    Verdict::Go { lag_bytes }
}

fn local_is_writable_primary(local: &Result<Status, Failure>) -> Result<(), Verdict> {
    let refuse = |why: &str| Err(Verdict::Refuse(format!("this node {why}")));
    match local {
        Ok(status) if status.role == Role::Primary && status.read_only == Some(true) => {
            refuse("is a primary refusing writes (its monitor's lease lapsed, or it was fenced)")
        }
        Ok(status) if status.role == Role::Primary => Ok(()),
        Ok(status) if status.role == Role::Replica => {
            refuse("is a replica: run the switchover on the primary")
        }
        Ok(status) => refuse(&format!("is {}, not a primary", status.role)),
        Err(failure) if failure.kind == FailureKind::Starting => {
            refuse(&format!("is starting or stopping: {failure}"))
        }
        Err(failure) if failure.kind == FailureKind::Refused => {
            refuse(&format!("runs no postgres: {failure}"))
        }
        Err(failure) => Err(Verdict::Undetermined(format!(
            "cannot tell what this node is: {failure}"
        ))),
    }
}

fn peer_is_streaming_replica(peer: &Result<Status, Failure>) -> Result<(), Verdict> {
    let refuse = |why: String| Err(Verdict::Refuse(why));
    match peer {
        Ok(status) if status.role == Role::Primary => refuse(
            "the peer answers as primary too (a split-brain, which the monitors settle): \
             there is no replica to hand over to"
                .to_string(),
        ),
        Ok(status) if status.role == Role::Replica => match status.wal_receiver_streaming {
            Some(true) => Ok(()),
            _ => refuse(
                "the peer is a replica but does not stream: it may lack what this node wrote"
                    .to_string(),
            ),
        },
        Ok(status) => refuse(format!("the peer is {}, not a replica", status.role)),
        Err(failure) => match failure.kind {
            FailureKind::Refused | FailureKind::Timeout => {
                refuse(format!("no peer to hand over to: {failure}"))
            }
            FailureKind::Starting => refuse(format!("the peer is starting or stopping: {failure}")),
            _ => Err(Verdict::Undetermined(format!(
                "cannot tell what the peer is: {failure}"
            ))),
        },
    }
}

/// The peer must be promotable by the user the switchover asks it as.
fn peer_may_promote(may_promote: Option<&Result<bool, Failure>>) -> Result<(), Verdict> {
    match may_promote {
        Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => Err(Verdict::Refuse(
            "the peer user may not run pg_promote() (GRANT EXECUTE ON FUNCTION \
             pg_promote(boolean, integer); the release's provisioning grants it to the \
             replication role)"
                .to_string(),
        )),
        Some(Err(failure)) => Err(Verdict::Undetermined(format!(
            "cannot tell whether the peer user may run pg_promote(): {failure}"
        ))),
        None => Err(Verdict::Undetermined(
            "the peer was not asked whether pg_promote() is allowed".to_string(),
        )),
    }
}

/// How far behind the peer is by its own word: this primary's WAL position
/// less what the peer says it received, for a standby that has not yet
/// replied to the walsender (it replies when it flushes, and every
/// wal_receiver_status_interval, 10 s by default).
fn reported_lag(local: &Result<Status, Failure>, peer: &Result<Status, Failure>) -> Option<u64> {
    let written = local.as_ref().ok()?.current_wal_lsn?;
    let received = peer.as_ref().ok()?.received_wal_lsn?;
    Some(written.0.saturating_sub(received.0))
}

/// The peer's lag, when this primary has a walsender streaming to it: the
/// walsender's (`pg_current_wal_lsn() - flush_lsn`), else `reported_lag`.
fn streams_from_here(
    standby: Option<&Result<Option<Standby>, Failure>>,
    reported_lag: Option<u64>,
    max_lag_bytes: u64,
) -> Result<u64, Verdict> {
    let standby = match standby {
        Some(Ok(Some(standby))) => standby,
        Some(Ok(None)) => {
            return Err(Verdict::Refuse(
                "the peer streams, but not from this node (pg_stat_replication has no row \
                 from its address)"
                    .to_string(),
            ))
        }
        Some(Err(failure)) => {
            return Err(Verdict::Undetermined(format!(
                "cannot read pg_stat_replication here: {failure}"
            )))
        }
        None => {
            return Err(Verdict::Undetermined(
                "pg_stat_replication was not read".to_string(),
            ))
        }
    };
    if standby.state != "streaming" {
        return Err(Verdict::Refuse(format!(
            "the peer's stream from this node is in state {}, not streaming",
            standby.state
        )));
    }
    match standby.lag_bytes.or(reported_lag) {
        Some(lag) if lag < max_lag_bytes => Ok(lag),
        Some(lag) => Err(Verdict::Refuse(format!(
            "the peer is {lag} bytes behind, not under --max-lag {max_lag_bytes}: let it catch up"
        ))),
        None => Err(Verdict::Refuse(
            "the peer's lag is unknown: neither the walsender nor the peer says what it received"
                .to_string(),
        )),
    }
}

/// Why the local server's stop cannot be built on, if it cannot: only a
/// clean shutdown as a primary ends the WAL with the shutdown checkpoint, all
/// of it sent to the connected standby before the server exits.
pub fn clean_stop(control: &ControlFile) -> Result<(), String> {
    if control.state == ClusterState::ShutDown {
        return Ok(());
    }
    Err(format!(
        "the local server did not shut down cleanly as a primary (pg_control: {})",
        control.state
    ))
}

/// Whether the peer has everything this node wrote, up to and including its
/// last record (the shutdown checkpoint, at `last.checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Yes: the message says how it is known.
    All(String),
    /// Not yet, or the peer cannot be asked now: ask again.
    NotYet(String),
    /// Never: the peer was promoted without this node's last records.
    Missing(String),
}

/// A replica has everything once the WAL it received reaches past the start
/// of this node's last record (records end at or before the next one's
/// start, and nothing follows the shutdown checkpoint). A peer already
/// promoted (its monitor saw this primary stop) has everything only if its
/// timeline history holds that record ([`History::fit`]).
pub fn received(
    peer: &Result<Status, Failure>,
    history: Option<&History>,
    last: &ControlFile,
) -> Received {
    let checkpoint = last.checkpoint;
    match peer {
        Ok(status) if status.role == Role::Replica => match status.received_wal_lsn {
            Some(got) if got > checkpoint => Received::All(format!(
                "the peer received WAL up to {got}, past this node's last record at {checkpoint}"
            )),
            got => Received::NotYet(format!(
                "the peer received WAL up to {}, not yet past this node's last record at \
                 {checkpoint}",
                got.map_or("an unknown position".to_string(), |lsn: Lsn| lsn
                    .to_string())
            )),
        },
        Ok(status) if status.role == Role::Primary => match history {
            Some(history) => promoted_peer_holds(history, last),
            None => Received::NotYet("the peer's timeline history is not read yet".into()),
        },
        Ok(status) => Received::NotYet(format!("the peer is {}", status.role)),
        Err(failure) => Received::NotYet(format!("the peer does not answer: {failure}")),
    }
}

fn promoted_peer_holds(history: &History, last: &ControlFile) -> Received {
    let (timeline, checkpoint) = (last.timeline, last.checkpoint);
    match history.fit(timeline, checkpoint) {
        Fit::Holds { switchpoint } => Received::All(format!(
            "the peer was already promoted (by its monitor), and timeline {timeline} ends at \
             {switchpoint} in its history, past this node's last record at {checkpoint}"
        )),
        Fit::Diverged { switchpoint } => Received::Missing(format!(
            "the peer was promoted before it received this node's last records: timeline \
             {timeline} ends at {switchpoint} in its history, this node wrote up to its \
             shutdown checkpoint at {checkpoint}"
        )),
        Fit::SameTimeline => Received::Missing(format!(
            "the peer is a primary on this node's own timeline {timeline}: a split-brain"
        )),
        Fit::Unrelated => Received::Missing(format!(
            "the peer is a primary whose history ({history}) does not hold this node's \
             timeline {timeline}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> Status {
        Status {
            role: Role::Primary,
            in_recovery: Some(false),
            read_only: Some(false),
            ..Status::default()
        }
    }

    fn replica(streaming: bool) -> Status {
        Status {
            role: Role::Replica,
            in_recovery: Some(true),
            wal_receiver_streaming: Some(streaming),
            ..Status::default()
        }
    }

    fn failed(kind: FailureKind) -> Result<Status, Failure> {
        Err(Failure {
            kind,
            endpoint: None,
            cause: format!("{kind:?}"),
        })
    }

    fn standby(state: &str, lag_bytes: Option<u64>) -> Option<Result<Option<Standby>, Failure>> {
        Some(Ok(Some(Standby {
            state: state.into(),
            lag_bytes,
        })))
    }

    fn healthy() -> Observed {
        Observed {
            local: Ok(primary()),
            peer: Ok(replica(true)),
            standby: standby("streaming", Some(120)),
            may_promote: Some(Ok(true)),
            paused_by: None,
        }
    }

    const POLICY: Policy = Policy {
        max_lag_bytes: 16 << 20,
        force: false,
    };

    /// Asserts the verdict's kind and that its message holds `mentions`.
    fn check(observed: Observed, policy: Policy, expected: &str, mentions: &str) {
        let got = verdict(&observed, &policy);
        assert_eq!(got.word(), expected, "{got:?}");
        assert!(
            got.to_string().contains(mentions),
            "{got} should mention {mentions:?}"
        );
    }

    #[test]
    fn a_writable_primary_with_a_streaming_replica_close_behind_goes_ahead() {
        assert_eq!(verdict(&healthy(), &POLICY), Verdict::Go { lag_bytes: 120 });
    }

    #[test]
    fn anything_but_a_writable_primary_here_is_refused_or_undetermined() {
        let mut read_only = primary();
        read_only.read_only = Some(true);
        let rows = [
            (Ok(read_only), "refused", "refusing writes"),
            (Ok(replica(true)), "refused", "is a replica"),
            (
                failed(FailureKind::Starting),
                "refused",
                "starting or stopping",
            ),
            (failed(FailureKind::Refused), "refused", "runs no postgres"),
            (
                failed(FailureKind::Hung),
                "undetermined",
                "cannot tell what this node is",
            ),
            (failed(FailureKind::Rejected), "undetermined", "cannot tell"),
        ];
        for (local, expected, mentions) in rows {
            let observed = Observed { local, ..healthy() };
            check(observed, POLICY, expected, mentions);
        }
    }

    #[test]
    fn a_peer_that_is_not_a_streaming_replica_is_refused_or_undetermined() {
        let rows = [
            (Ok(primary()), "refused", "split-brain"),
            (Ok(replica(false)), "refused", "does not stream"),
            (
                failed(FailureKind::Refused),
                "refused",
                "no peer to hand over to",
            ),
            (
                failed(FailureKind::Timeout),
                "refused",
                "no peer to hand over to",
            ),
            (
                failed(FailureKind::Starting),
                "refused",
                "starting or stopping",
            ),
            (
                failed(FailureKind::Rejected),
                "undetermined",
                "cannot tell what the peer is",
            ),
            (
                failed(FailureKind::Hung),
                "undetermined",
                "cannot tell what the peer is",
            ),
        ];
        for (peer, expected, mentions) in rows {
            let observed = Observed { peer, ..healthy() };
            check(observed, POLICY, expected, mentions);
        }
    }

    #[test]
    fn the_peer_must_stream_from_this_node_and_be_under_the_lag_bound() {
        let rows = [
            (Some(Ok(None)), "refused", "not from this node"),
            (standby("catchup", Some(0)), "refused", "state catchup"),
            (
                standby("streaming", Some(16 << 20)),
                "refused",
                "16777216 bytes behind, not under --max-lag 16777216",
            ),
            (standby("streaming", None), "refused", "lag is unknown"),
            (
                Some(Err(Failure::transient("reset"))),
                "undetermined",
                "pg_stat_replication",
            ),
        ];
        for (standby, expected, mentions) in rows {
            let observed = Observed {
                standby,
                ..healthy()
            };
            check(observed, POLICY, expected, mentions);
        }
    }

    #[test]
    fn a_standby_that_has_not_replied_yet_is_judged_by_what_it_says_it_received() {
        let mut local = primary();
        local.current_wal_lsn = Some(lsn("0/3000200"));
        let mut peer = replica(true);
        peer.received_wal_lsn = Some(lsn("0/3000100"));
        let silent = Observed {
            local: Ok(local),
            peer: Ok(peer),
            standby: standby("streaming", None),
            may_promote: Some(Ok(true)),
            paused_by: None,
        };
        assert_eq!(verdict(&silent, &POLICY), Verdict::Go { lag_bytes: 0x100 });
        let tiny = Policy {
            max_lag_bytes: 0x100,
            ..POLICY
        };
        check(silent, tiny, "refused", "256 bytes behind");
    }

    #[test]
    fn a_peer_user_that_may_not_promote_is_refused_before_any_change() {
        let rows = [
            (Some(Ok(false)), "refused", "may not run pg_promote()"),
            (
                Some(Err(Failure::transient("reset"))),
                "undetermined",
                "cannot tell whether the peer user may run pg_promote()",
            ),
        ];
        for (may_promote, expected, mentions) in rows {
            let observed = Observed {
                may_promote,
                ..healthy()
            };
            check(observed, POLICY, expected, mentions);
        }
    }

    #[test]
    fn a_pause_file_refuses_unless_forced() {
        let paused = Observed {
            paused_by: Some(PathBuf::from("/var/vcap/store/postgres/failover.paused")),
            ..healthy()
        };
        check(
            paused.clone(),
            POLICY,
            "refused",
            "failover is paused (/var/vcap/store/postgres/failover.paused exists)",
        );
        let forced = Policy {
            force: true,
            ..POLICY
        };
        assert_eq!(verdict(&paused, &forced), Verdict::Go { lag_bytes: 120 });
        // Forcing lifts the pause only, never a check of the nodes.
        let paused_without_peer = Observed {
            peer: failed(FailureKind::Refused),
            ..paused
        };
        check(paused_without_peer, forced, "refused", "no peer");
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    fn stopped(state: ClusterState, checkpoint: &str) -> ControlFile {
        ControlFile {
            system_identifier: 1,
            state,
            checkpoint: lsn(checkpoint),
            timeline: 1,
            min_recovery_point: Lsn(0),
            min_recovery_timeline: 0,
        }
    }

    #[test]
    fn only_a_clean_shutdown_as_a_primary_is_built_on() {
        assert!(clean_stop(&stopped(ClusterState::ShutDown, "0/30000D8")).is_ok());
        for state in [ClusterState::InProduction, ClusterState::ShutDownInRecovery] {
            let error = clean_stop(&stopped(state, "0/30000D8")).unwrap_err();
            assert!(error.contains(&format!("pg_control: {state}")), "{error}");
        }
    }

    #[test]
    fn the_peer_has_everything_once_it_received_past_the_last_record() {
        let last = stopped(ClusterState::ShutDown, "0/30000D8");
        let with_received = |at: Option<&str>| {
            let mut peer = replica(false);
            peer.received_wal_lsn = at.map(lsn);
            Ok(peer)
        };
        let history = pgcore::history::parse(2, "1\t0/3000148\treason\n").unwrap();
        let diverged = pgcore::history::parse(2, "1\t0/30000D8\treason\n").unwrap();
        let same = pgcore::history::parse(1, "").unwrap();
        let rows: [(Result<Status, Failure>, Option<&History>, &str); 8] = [
            (with_received(Some("0/3000148")), None, "all"),
            (with_received(Some("0/30000D8")), None, "not yet"),
            (with_received(None), None, "not yet"),
            (failed(FailureKind::Refused), None, "not yet"),
            (Ok(primary()), None, "not yet"),
            (Ok(primary()), Some(&history), "all"),
            (Ok(primary()), Some(&diverged), "missing"),
            (Ok(primary()), Some(&same), "missing"),
        ];
        for (number, (peer, history, expected)) in rows.into_iter().enumerate() {
            let got = received(&peer, history, &last);
            let word = match got {
                Received::All(_) => "all",
                Received::NotYet(_) => "not yet",
                Received::Missing(_) => "missing",
            };
            assert_eq!(word, expected, "row {number}: {got:?}");
        }
    }
}
