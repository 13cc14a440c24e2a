//! The boot decision: pure functions of what was observed.
//!
//! [`inquiry`] says what to ask the peers (nothing, a grace period, or a wait
//! for a primary to clone from); [`decide`] turns the local data directory and
//! the peers' answers into one [`Action`] and the reason for it; a former
//! primary that would rejoin its peer is then weighed by [`follow_or_rejoin`]
//! (may it follow the peer as it is, without pg_rewind?). Nothing here
//! touches a disk or a network, so each row of the decision table is one unit
//! test below.

use std::fmt;
use std::time::Duration;

use pgcore::control::{ClusterState, ControlFile};
use pgcore::history::{Fit, History};
use pgcore::Endpoint;
use serde::Serialize;

/// What the data directory says about this node, before anything is changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Local {
    /// No data directory, or an empty one.
    Absent,
    /// A data directory without standby.signal: it last ran as a primary.
    Primary { system_identifier: u64 },
    /// A data directory with standby.signal: it last ran as a replica.
    Replica { system_identifier: u64 },
    /// A pg_rewind into it was interrupted; its files are not consistent. The
    /// system identifier, when pg_control is still readable, says which cluster
    /// it belonged to.
    Incomplete { system_identifier: Option<u64> },
    /// PostgreSQL is running on it.
    Running { pid: u32 },
    /// Not empty, but not a PostgreSQL data directory.
    Foreign { why: String },
}

/// The rules the decision follows, from the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub replication: bool,
    /// This node is BOSH's bootstrap node (`spec.bootstrap`).
    pub bootstrap: bool,
    /// How long [`Inquiry::Grace`] lasts.
    pub grace: Duration,
    /// How long [`Inquiry::WaitForPrimary`] lasts.
    pub clone_wait: Duration,
    /// Failover goes through a consensus store (pg-monitor consensus): only
    /// the member holding the leader key may be a primary, so a former
    /// primary that finds none starts as a standby and leaves the rest to
    /// the monitor.
    pub consensus: bool,
}

/// What to ask the peers before deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inquiry {
    /// Nothing: the decision does not depend on them.
    None,
    /// Ask each peer once a second, for up to `--grace`, whether it is primary.
    Grace,
    /// Ask each peer once a second, for up to `--clone-wait`, until one is
    /// primary: there is nothing local to start from.
    WaitForPrimary,
}

impl Inquiry {
    pub fn bound(self, policy: &Policy) -> Duration {
        match self {
            Inquiry::None => Duration::ZERO,
            Inquiry::Grace => policy.grace,
            Inquiry::WaitForPrimary => policy.clone_wait,
        }
    }
}

/// What to ask the peers, given the local data directory.
pub fn inquiry(local: &Local, policy: &Policy) -> Inquiry {
    if !policy.replication {
        return Inquiry::None;
    }
    match local {
        Local::Running { .. } | Local::Foreign { .. } => Inquiry::None,
        // The bootstrap node looks for a primary before it runs initdb: when
        // its disk was replaced after a failover, the peer holds the data and
        // a fresh empty primary would be a second, empty cluster.
        Local::Absent if policy.bootstrap => Inquiry::Grace,
        Local::Absent | Local::Incomplete { .. } => Inquiry::WaitForPrimary,
        Local::Primary { .. } | Local::Replica { .. } => Inquiry::Grace,
    }
}

/// What the peers answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    /// They were not asked ([`Inquiry::None`]).
    NotAsked,
    /// This peer answered as primary. Its system identifier tells whether it
    /// serves the same cluster as the local data; `None` when it could not be read.
    Primary {
        endpoint: Endpoint,
        system_identifier: Option<u64>,
    },
    /// None answered as primary for `waited`; `seen` says what each last
    /// answered. `answered`: some peer answered at all (as a replica, or
    /// starting), so it holds data of this deployment.
    NoPrimary {
        waited: Duration,
        seen: String,
        answered: bool,
    },
}

/// What prepare does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// initdb (data checksums on); the node starts as primary.
    InitPrimary,
    /// A staged pg_basebackup from the peer; the node starts as its replica.
    CloneFrom(Endpoint),
    /// pg_rewind against the peer (a staged clone when that is impossible);
    /// the node starts as its replica.
    Rejoin(Endpoint),
    /// Only the standby configuration is written: a node stopped cleanly
    /// whose WAL the peer's history already holds (a former primary after a
    /// planned switchover, a replica after an update) starts as the peer's
    /// standby as it is.
    Follow(Endpoint),
    /// Nothing to change: the data dir was a primary and no peer is.
    ResumePrimary,
    /// Nothing to change: the data dir was a replica; promotion is pg-monitor's call.
    ResumeReplica,
    /// The data dir was a primary, but under consensus a node is a primary
    /// only once it holds the leader key: it starts as a standby
    /// (standby.signal), and pg-monitor consensus promotes it or points it
    /// at the leader.
    StandBy,
    /// Nothing to change: replication is off.
    StartStandalone,
    /// Nothing is changed and postgres must not start: no safe decision.
    Refuse,
}

impl Action {
    /// The first word of the decision line.
    pub fn name(&self) -> &'static str {
        match self {
            Action::InitPrimary => "init-primary",
            Action::CloneFrom(_) => "clone-from",
            Action::Rejoin(_) => "rejoin",
            Action::Follow(_) => "follow",
            Action::ResumePrimary => "resume-primary",
            Action::ResumeReplica => "resume-replica",
            Action::StandBy => "stand-by",
            Action::StartStandalone => "start-standalone",
            Action::Refuse => "refuse",
        }
    }

    pub fn peer(&self) -> Option<&Endpoint> {
        match self {
            Action::CloneFrom(peer) | Action::Rejoin(peer) | Action::Follow(peer) => Some(peer),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.peer() {
            Some(peer) => write!(f, "{} {peer}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// An action and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "decision: {} ({})", self.action, self.reason)
    }
}

fn decision(action: Action, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
    }
}

fn describe_identifier(identifier: Option<u64>) -> String {
    identifier.map_or("unreadable".to_string(), |id| id.to_string())
}

fn seconds(duration: Duration) -> String {
    format!("{:.0} s", duration.as_secs_f64())
}

/// The decision table (README, "How a node boots").
pub fn decide(local: &Local, peers: &Peers, policy: &Policy) -> Decision {
    use Action::*;
    match (local, peers) {
        (Local::Running { pid }, _) => decision(
            Refuse,
            format!("postgres is running on this data directory (pid {pid}); prepare runs before it starts"),
        ),
        (Local::Foreign { why }, _) => decision(Refuse, why.clone()),

        (Local::Absent, _) if !policy.replication => {
            decision(InitPrimary, "no data directory; standalone node")
        }
        (Local::Absent, Peers::Primary { endpoint, .. }) => decision(
            CloneFrom(endpoint.clone()),
            format!("no data directory; {endpoint} answers as primary"),
        ),
        (Local::Absent, Peers::NoPrimary { answered: true, waited, seen }) if policy.bootstrap => {
            decision(
                Refuse,
                format!(
                    "no data directory on the bootstrap node, and no peer answered as primary within {}, \
                     but peers do answer ({seen}): they hold this deployment's data, and an empty primary \
                     beside them would split it; once one of them is primary this node clones from it",
                    seconds(*waited)
                ),
            )
        }
        (Local::Absent, Peers::NoPrimary { .. } | Peers::NotAsked) if policy.bootstrap => {
            decision(
                InitPrimary,
                "no data directory on the bootstrap node, and no peer answers at all",
            )
        }
        (Local::Absent, Peers::NotAsked) => {
            decision(Refuse, "no data directory, and no peer was asked for a primary to clone from")
        }
        (Local::Absent, Peers::NoPrimary { waited, seen, .. }) => decision(
            Refuse,
            format!(
                "no data directory, and no peer answered as primary within {} to clone from ({seen})",
                seconds(*waited)
            ),
        ),

        (
            Local::Incomplete { system_identifier: Some(ours) },
            Peers::Primary { endpoint, system_identifier: Some(theirs) },
        ) if theirs == ours => decision(
            CloneFrom(endpoint.clone()),
            format!("an interrupted pg_rewind left this data directory incomplete; {endpoint} answers as primary"),
        ),
        (Local::Incomplete { system_identifier }, Peers::Primary { endpoint, system_identifier: theirs }) => {
            decision(
                Refuse,
                format!(
                    "an interrupted pg_rewind left this data directory incomplete, and {endpoint} answers as \
                     primary, but it cannot be confirmed to serve the same cluster (system identifier {}, ours {}): \
                     replacing this data directory with it could destroy what is left of this cluster",
                    describe_identifier(*theirs),
                    describe_identifier(*system_identifier)
                ),
            )
        }
        (Local::Incomplete { .. }, Peers::NoPrimary { waited, seen, .. }) => decision(
            Refuse,
            format!(
                "an interrupted pg_rewind left this data directory incomplete, and no peer answered as primary within {} to clone from ({seen})",
                seconds(*waited)
            ),
        ),
        (Local::Incomplete { .. }, _) => decision(
            Refuse,
            "an interrupted pg_rewind left this data directory incomplete, and without replication there is no primary to clone from",
        ),

        (Local::Primary { .. } | Local::Replica { .. }, _) if !policy.replication => {
            decision(StartStandalone, "data directory present; standalone node")
        }
        (
            Local::Primary { system_identifier: ours } | Local::Replica { system_identifier: ours },
            Peers::Primary { endpoint, system_identifier },
        ) => match system_identifier {
            Some(theirs) if theirs == ours => {
                let was = if matches!(local, Local::Primary { .. }) { "primary" } else { "replica" };
                decision(
                    Rejoin(endpoint.clone()),
                    format!("{endpoint} answers as primary; this data directory was a {was}"),
                )
            }
            Some(theirs) => decision(
                Refuse,
                format!(
                    "{endpoint} answers as primary of another cluster (system identifier {theirs}, ours {ours}); \
                     replacing this data directory with it could destroy the only copy of this cluster"
                ),
            ),
            None => decision(
                Refuse,
                format!("{endpoint} answers as primary, but its system identifier could not be read to confirm it serves this cluster"),
            ),
        },
        (Local::Primary { .. }, Peers::NoPrimary { waited, seen, .. }) if policy.consensus => decision(
            StandBy,
            format!(
                "no peer answered as primary within {} ({seen}); this data directory was a primary, \
                 but only the holder of the leader key may be one: it starts as a standby, and \
                 pg-monitor consensus promotes it if it takes the key",
                seconds(*waited)
            ),
        ),
        (Local::Primary { .. }, Peers::NoPrimary { waited, seen, .. }) => decision(
            ResumePrimary,
            format!("no peer answered as primary within {} ({seen}); this data directory was a primary", seconds(*waited)),
        ),
        (Local::Replica { .. }, Peers::NoPrimary { waited, seen, .. }) => decision(
            ResumeReplica,
            format!(
                "no peer answered as primary within {} ({seen}); this data directory was a replica, and promotion is left to pg-monitor",
                seconds(*waited)
            ),
        ),
        // Replication on, data present: the peers are always asked (see `inquiry`).
        (Local::Primary { .. }, Peers::NotAsked) => {
            decision(ResumePrimary, "this data directory was a primary")
        }
        (Local::Replica { .. }, Peers::NotAsked) => {
            decision(ResumeReplica, "this data directory was a replica")
        }
    }
}

/// A node about to rejoin its peer (pg_rewind, else a clone) may instead
/// follow it as it is when nothing it holds is missing from the peer's
/// history; PostgreSQL then streams the rest from the peer, and no rewind,
/// no clone and no checkpoint on the peer is needed. Two kinds qualify:
///
/// - A former primary shut down cleanly (its last record is the shutdown
///   checkpoint, `local`) whose checkpoint begins before the point where the
///   peer's timeline branched off this node's (`history`, the peer's): how a
///   planned switchover leaves the old primary.
/// - A standby shut down cleanly whose WAL ends, by pg_rewind's own measure
///   (its minimum recovery point, which its shutdown restartpoint moved past
///   its checkpoint), on the timeline the peer writes, or before that
///   timeline's branch point: how a rolling update leaves a replica. On the
///   peer's timeline pg_rewind itself finds "no rewind required".
///
/// Anything else, or anything unreadable, keeps the rejoin, whose reason
/// then says why.
pub fn follow_or_rejoin(
    rejoin: Decision,
    local: &Result<ControlFile, String>,
    history: &Result<History, String>,
) -> Decision {
    let Action::Rejoin(peer) = &rejoin.action else {
        return rejoin;
    };
    match follows(local, history) {
        Ok(why) => decision(
            Action::Follow(peer.clone()),
            format!("{peer} answers as primary; {why}"),
        ),
        Err(why_not) => Decision {
            reason: format!("{}; not followed as it is: {why_not}", rejoin.reason),
            ..rejoin
        },
    }
}

/// Why this node can follow the peer's history as it is, or why not.
fn follows(
    local: &Result<ControlFile, String>,
    history: &Result<History, String>,
) -> Result<String, String> {
    let local = local
        .as_ref()
        .map_err(|err| format!("its pg_control cannot be read ({err})"))?;
    let history = history
        .as_ref()
        .map_err(|err| format!("the peer's timeline history cannot be read ({err})"))?;
    match local.state {
        ClusterState::ShutDown => primary_follows(local, history),
        ClusterState::ShutDownInRecovery => standby_follows(local, history),
        state => Err(format!(
            "it was not shut down cleanly (pg_control: {state})"
        )),
    }
}

fn primary_follows(local: &ControlFile, history: &History) -> Result<String, String> {
    let (timeline, checkpoint) = (local.timeline, local.checkpoint);
    match history.fit(timeline, checkpoint) {
        Fit::Holds { switchpoint } => Ok(format!(
            "this data directory, a primary shut down cleanly on timeline {timeline} with its last \
             checkpoint at {checkpoint}, ends before timeline {timeline} ended at {switchpoint} in \
             the peer's history ({history}): it follows without pg_rewind"
        )),
        Fit::Diverged { switchpoint } => Err(format!(
            "its last checkpoint on timeline {timeline} is at {checkpoint}, not before \
             {switchpoint}, where the peer's timeline branched off: it wrote WAL the peer lacks"
        )),
        Fit::SameTimeline => Err(format!(
            "it is on timeline {timeline}, the one the peer writes: no promotion lies between them"
        )),
        Fit::Unrelated => Err(format!(
            "its timeline {timeline} is not in the peer's history ({history})"
        )),
    }
}

fn standby_follows(local: &ControlFile, history: &History) -> Result<String, String> {
    let (timeline, end) = (local.min_recovery_timeline, local.min_recovery_point);
    let what = format!(
        "this data directory, a standby shut down cleanly, holds WAL up to {end} on timeline {timeline}"
    );
    match history.fit_end(timeline, end) {
        Fit::SameTimeline => Ok(format!(
            "{what}, the timeline the peer writes: it follows without pg_rewind"
        )),
        Fit::Holds { switchpoint } => Ok(format!(
            "{what}, which ended at {switchpoint} in the peer's history ({history}): it follows \
             without pg_rewind"
        )),
        Fit::Diverged { switchpoint } => Err(format!(
            "as a standby it holds WAL up to {end} on timeline {timeline}, past {switchpoint}, \
             where the peer's timeline branched off: it holds WAL the peer lacks"
        )),
        Fit::Unrelated => Err(format!(
            "as a standby it holds WAL on timeline {timeline}, which is not in the peer's history \
             ({history})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u64 = 7_000_000_000_000_000_001;
    const OTHER: u64 = 7_000_000_000_000_000_002;

    fn policy(replication: bool, bootstrap: bool) -> Policy {
        Policy {
            replication,
            bootstrap,
            grace: Duration::from_secs(15),
            clone_wait: Duration::from_secs(300),
            consensus: false,
        }
    }

    #[test]
    fn under_consensus_a_former_primary_without_a_primary_peer_stands_by() {
        let local = Local::Primary {
            system_identifier: OURS,
        };
        let peers = Peers::NoPrimary {
            waited: Duration::from_secs(15),
            seen: "10.244.0.3:6432 replica".into(),
            answered: true,
        };
        let consensus = Policy {
            consensus: true,
            ..policy(true, false)
        };
        assert_eq!(decide(&local, &peers, &consensus).action, Action::StandBy);
        assert_eq!(
            decide(&local, &peers, &policy(true, false)).action,
            Action::ResumePrimary
        );
        // A primary found is rejoined as without consensus.
        assert_eq!(
            decide(&local, &primary_peer(Some(OURS)), &consensus).action,
            Action::Rejoin(peer())
        );
    }

    fn peer() -> Endpoint {
        "10.244.0.2:6432".parse().unwrap()
    }

    fn primary_peer(system_identifier: Option<u64>) -> Peers {
        Peers::Primary {
            endpoint: peer(),
            system_identifier,
        }
    }

    fn no_primary() -> Peers {
        Peers::NoPrimary {
            waited: Duration::from_secs(15),
            seen: "10.244.0.2:6432 unreachable".into(),
            answered: false,
        }
    }

    fn only_replicas() -> Peers {
        Peers::NoPrimary {
            waited: Duration::from_secs(15),
            seen: "10.244.0.3:6432 replica".into(),
            answered: true,
        }
    }

    const INCOMPLETE: Local = Local::Incomplete {
        system_identifier: Some(OURS),
    };

    const WAS_PRIMARY: Local = Local::Primary {
        system_identifier: OURS,
    };
    const WAS_REPLICA: Local = Local::Replica {
        system_identifier: OURS,
    };

    /// One row of the table: the local state, the policy, the peers' answer,
    /// the expected action, and a word the reason must contain.
    struct Row {
        local: Local,
        replication: bool,
        bootstrap: bool,
        peers: Peers,
        action: Action,
        reason_mentions: &'static str,
    }

    fn check(rows: &[Row]) {
        for (number, row) in rows.iter().enumerate() {
            let got = decide(
                &row.local,
                &row.peers,
                &policy(row.replication, row.bootstrap),
            );
            assert_eq!(
                got.action, row.action,
                "row {number}: {:?} / {:?}: expected {}, got {got}",
                row.local, row.peers, row.action
            );
            assert!(
                got.reason.contains(row.reason_mentions),
                "row {number}: reason {:?} should mention {:?}",
                got.reason,
                row.reason_mentions
            );
        }
    }

    #[test]
    fn no_data_directory_on_a_standalone_node_runs_initdb() {
        check(&[
            Row {
                local: Local::Absent,
                replication: false,
                bootstrap: false,
                peers: Peers::NotAsked,
                action: Action::InitPrimary,
                reason_mentions: "standalone",
            },
            Row {
                local: Local::Absent,
                replication: false,
                bootstrap: true,
                peers: Peers::NotAsked,
                action: Action::InitPrimary,
                reason_mentions: "standalone",
            },
        ]);
    }

    #[test]
    fn no_data_directory_on_the_bootstrap_node_runs_initdb_only_if_no_peer_answers() {
        check(&[Row {
            local: Local::Absent,
            replication: true,
            bootstrap: true,
            peers: only_replicas(),
            action: Action::Refuse,
            reason_mentions: "hold this deployment's data",
        }]);
    }

    #[test]
    fn no_data_directory_on_the_bootstrap_node_runs_initdb_unless_a_peer_is_primary() {
        check(&[
            Row {
                local: Local::Absent,
                replication: true,
                bootstrap: true,
                peers: no_primary(),
                action: Action::InitPrimary,
                reason_mentions: "bootstrap",
            },
            Row {
                local: Local::Absent,
                replication: true,
                bootstrap: true,
                peers: primary_peer(Some(OTHER)),
                action: Action::CloneFrom(peer()),
                reason_mentions: "answers as primary",
            },
        ]);
    }

    #[test]
    fn no_data_directory_on_another_node_clones_from_the_primary_or_refuses() {
        check(&[
            Row {
                local: Local::Absent,
                replication: true,
                bootstrap: false,
                peers: primary_peer(None),
                action: Action::CloneFrom(peer()),
                reason_mentions: "10.244.0.2:6432",
            },
            Row {
                local: Local::Absent,
                replication: true,
                bootstrap: false,
                peers: no_primary(),
                action: Action::Refuse,
                reason_mentions: "no peer answered as primary within 15 s",
            },
        ]);
    }

    #[test]
    fn data_present_and_a_primary_peer_of_the_same_cluster_means_rejoin() {
        check(&[
            Row {
                local: WAS_PRIMARY,
                replication: true,
                bootstrap: false,
                peers: primary_peer(Some(OURS)),
                action: Action::Rejoin(peer()),
                reason_mentions: "was a primary",
            },
            Row {
                local: WAS_REPLICA,
                replication: true,
                bootstrap: true,
                peers: primary_peer(Some(OURS)),
                action: Action::Rejoin(peer()),
                reason_mentions: "was a replica",
            },
        ]);
    }

    #[test]
    fn a_primary_peer_of_another_or_unknown_cluster_is_refused() {
        check(&[
            Row {
                local: WAS_PRIMARY,
                replication: true,
                bootstrap: false,
                peers: primary_peer(Some(OTHER)),
                action: Action::Refuse,
                reason_mentions: "another cluster",
            },
            Row {
                local: WAS_REPLICA,
                replication: true,
                bootstrap: false,
                peers: primary_peer(None),
                action: Action::Refuse,
                reason_mentions: "could not be read",
            },
        ]);
    }

    #[test]
    fn no_primary_peer_resumes_the_role_the_data_directory_last_had() {
        check(&[
            Row {
                local: WAS_PRIMARY,
                replication: true,
                bootstrap: false,
                peers: no_primary(),
                action: Action::ResumePrimary,
                reason_mentions: "was a primary",
            },
            Row {
                local: WAS_REPLICA,
                replication: true,
                bootstrap: true,
                peers: no_primary(),
                action: Action::ResumeReplica,
                reason_mentions: "pg-monitor",
            },
        ]);
    }

    #[test]
    fn data_present_on_a_standalone_node_starts_as_is() {
        check(&[
            Row {
                local: WAS_PRIMARY,
                replication: false,
                bootstrap: false,
                peers: Peers::NotAsked,
                action: Action::StartStandalone,
                reason_mentions: "standalone",
            },
            Row {
                local: WAS_REPLICA,
                replication: false,
                bootstrap: true,
                peers: Peers::NotAsked,
                action: Action::StartStandalone,
                reason_mentions: "standalone",
            },
        ]);
    }

    #[test]
    fn an_incomplete_rewind_is_never_replaced_by_another_clusters_data() {
        check(&[
            Row {
                local: INCOMPLETE,
                replication: true,
                bootstrap: false,
                peers: primary_peer(Some(OTHER)),
                action: Action::Refuse,
                reason_mentions: "cannot be confirmed to serve the same cluster",
            },
            Row {
                local: Local::Incomplete {
                    system_identifier: None,
                },
                replication: true,
                bootstrap: false,
                peers: primary_peer(Some(OURS)),
                action: Action::Refuse,
                reason_mentions: "ours unreadable",
            },
        ]);
    }

    #[test]
    fn an_incomplete_rewind_is_replaced_by_a_clone_or_refused() {
        check(&[
            Row {
                local: INCOMPLETE,
                replication: true,
                bootstrap: false,
                peers: primary_peer(Some(OURS)),
                action: Action::CloneFrom(peer()),
                reason_mentions: "interrupted pg_rewind",
            },
            Row {
                local: INCOMPLETE,
                replication: true,
                bootstrap: true,
                peers: no_primary(),
                action: Action::Refuse,
                reason_mentions: "incomplete",
            },
            Row {
                local: INCOMPLETE,
                replication: false,
                bootstrap: true,
                peers: Peers::NotAsked,
                action: Action::Refuse,
                reason_mentions: "without replication",
            },
        ]);
    }

    #[test]
    fn a_running_server_or_a_foreign_directory_is_refused() {
        check(&[
            Row {
                local: Local::Running { pid: 4121 },
                replication: true,
                bootstrap: false,
                peers: Peers::NotAsked,
                action: Action::Refuse,
                reason_mentions: "pid 4121",
            },
            Row {
                local: Local::Foreign {
                    why: "no PG_VERSION".into(),
                },
                replication: false,
                bootstrap: false,
                peers: Peers::NotAsked,
                action: Action::Refuse,
                reason_mentions: "PG_VERSION",
            },
        ]);
    }

    #[test]
    fn the_peers_are_asked_only_when_replication_is_on_and_the_answer_matters() {
        let rows = [
            (Local::Absent, false, false, Inquiry::None),
            (Local::Absent, true, true, Inquiry::Grace),
            (Local::Absent, true, false, Inquiry::WaitForPrimary),
            (INCOMPLETE, true, true, Inquiry::WaitForPrimary),
            (WAS_PRIMARY, true, false, Inquiry::Grace),
            (WAS_REPLICA, true, true, Inquiry::Grace),
            (WAS_PRIMARY, false, true, Inquiry::None),
            (Local::Running { pid: 1 }, true, false, Inquiry::None),
        ];
        for (local, replication, bootstrap, expected) in rows {
            let got = inquiry(&local, &policy(replication, bootstrap));
            assert_eq!(
                got, expected,
                "{local:?}, replication {replication}, bootstrap {bootstrap}"
            );
        }
    }

    #[test]
    fn the_decision_line_names_the_action_the_peer_and_the_reason() {
        let line = decide(
            &WAS_PRIMARY,
            &primary_peer(Some(OURS)),
            &policy(true, false),
        );
        assert_eq!(
            line.to_string(),
            "decision: rejoin 10.244.0.2:6432 (10.244.0.2:6432 answers as primary; this data directory was a primary)"
        );
    }

    /// The rejoin a former primary of the same cluster gets from the table.
    fn rejoin() -> Decision {
        decide(
            &WAS_PRIMARY,
            &primary_peer(Some(OURS)),
            &policy(true, false),
        )
    }

    fn lsn(text: &str) -> pgcore::Lsn {
        text.parse().unwrap()
    }

    /// pg_control of a former primary on `timeline` whose last checkpoint is at `checkpoint`.
    fn control(
        state: ClusterState,
        timeline: u32,
        checkpoint: &str,
    ) -> Result<ControlFile, String> {
        Ok(ControlFile {
            system_identifier: OURS,
            state,
            checkpoint: lsn(checkpoint),
            timeline,
            min_recovery_point: pgcore::Lsn(0),
            min_recovery_timeline: 0,
        })
    }

    /// pg_control of a standby stopped cleanly, its WAL ending at `end` on `timeline`.
    fn standby(timeline: u32, end: &str) -> Result<ControlFile, String> {
        Ok(ControlFile {
            system_identifier: OURS,
            state: ClusterState::ShutDownInRecovery,
            checkpoint: lsn("0/2000028"),
            timeline: 1,
            min_recovery_point: lsn(end),
            min_recovery_timeline: timeline,
        })
    }

    /// The peer writes timeline 2, which branched off timeline 1 at 0/3000148.
    fn promoted_peer() -> Result<History, String> {
        Ok(pgcore::history::parse(2, "1\t0/3000148\tno recovery target specified\n").unwrap())
    }

    #[test]
    fn a_former_primary_follows_its_peer_without_rewind_only_when_the_peer_holds_all_it_wrote() {
        use ClusterState::*;
        let rows = [
            // A planned switchover: shut down cleanly, the checkpoint replayed by the peer.
            (
                control(ShutDown, 1, "0/30000D8"),
                promoted_peer(),
                Action::Follow(peer()),
                "follows without pg_rewind",
            ),
            // A crash or an immediate stop: WAL after the last checkpoint may exist.
            (
                control(InProduction, 1, "0/30000D8"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "not shut down cleanly",
            ),
            (
                control(InCrashRecovery, 1, "0/30000D8"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "not shut down cleanly",
            ),
            // The peer promoted before it received the shutdown checkpoint.
            (
                control(ShutDown, 1, "0/3000148"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "it wrote WAL the peer lacks",
            ),
            (
                control(ShutDown, 1, "0/4000028"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "not before 0/3000148",
            ),
            // Two primaries on one timeline: the rejoin's own check clones.
            (
                control(ShutDown, 2, "0/2000028"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "no promotion lies between them",
            ),
            (
                control(ShutDown, 3, "0/2000028"),
                promoted_peer(),
                Action::Rejoin(peer()),
                "not in the peer's history",
            ),
            (
                Err("Permission denied".into()),
                promoted_peer(),
                Action::Rejoin(peer()),
                "pg_control cannot be read (Permission denied)",
            ),
            (
                control(ShutDown, 1, "0/30000D8"),
                Err("permission denied for function pg_read_binary_file".into()),
                Action::Rejoin(peer()),
                "history cannot be read",
            ),
        ];
        for (number, (local, history, action, reason)) in rows.into_iter().enumerate() {
            check_follow_row(number, &local, &history, action, reason);
        }
    }

    /// One row of a follow-or-rejoin table: the action, and a reason naming why.
    fn check_follow_row(
        number: usize,
        local: &Result<ControlFile, String>,
        history: &Result<History, String>,
        action: Action,
        reason: &str,
    ) {
        let got = follow_or_rejoin(rejoin(), local, history);
        assert_eq!(got.action, action, "row {number}: {got}");
        assert!(
            got.reason.contains(reason),
            "row {number}: {:?} should mention {reason:?}",
            got.reason
        );
    }

    #[test]
    fn a_standby_stopped_cleanly_follows_when_the_peer_holds_all_its_wal() {
        let rows = [
            // Streamed from the peer on its timeline (an update of the replica).
            (
                standby(2, "0/5000000"),
                Action::Follow(peer()),
                "the timeline the peer writes",
            ),
            // Stopped before the peer promoted, with nothing past its branch point.
            (
                standby(1, "0/3000148"),
                Action::Follow(peer()),
                "ended at 0/3000148",
            ),
            // Replayed WAL of timeline 1 the peer never had.
            (
                standby(1, "0/3000200"),
                Action::Rejoin(peer()),
                "holds WAL the peer lacks",
            ),
            (
                standby(3, "0/1000000"),
                Action::Rejoin(peer()),
                "not in the peer's history",
            ),
            (
                control(ClusterState::ShuttingDown, 2, "0/5000000"),
                Action::Rejoin(peer()),
                "not shut down cleanly",
            ),
        ];
        for (number, (local, action, reason)) in rows.into_iter().enumerate() {
            check_follow_row(number, &local, &promoted_peer(), action, reason);
        }
    }

    #[test]
    fn only_a_rejoin_is_weighed_for_following() {
        let resume = decide(&WAS_PRIMARY, &no_primary(), &policy(true, false));
        let weighed = follow_or_rejoin(
            resume.clone(),
            &control(ClusterState::ShutDown, 1, "0/30000D8"),
            &promoted_peer(),
        );
        assert_eq!(weighed, resume);
    }

    #[test]
    fn the_follow_line_names_the_peer_and_both_positions() {
        let line = follow_or_rejoin(
            rejoin(),
            &control(ClusterState::ShutDown, 1, "0/30000D8"),
            &promoted_peer(),
        );
        assert_eq!(
            line.to_string(),
            "decision: follow 10.244.0.2:6432 (10.244.0.2:6432 answers as primary; this data directory, \
             a primary shut down cleanly on timeline 1 with its last checkpoint at 0/30000D8, ends before \
             timeline 1 ended at 0/3000148 in the peer's history (timeline 2, timeline 1 ended at \
             0/3000148): it follows without pg_rewind)"
        );
    }
}
