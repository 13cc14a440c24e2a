//! The decision table: what the monitor does on one tick, as a pure function
//! of what it observed and what it remembers from earlier ticks.
//!
//! Nothing here touches the network, the clock or a file, so every row of the
//! failover algorithm has a unit test below and the effects (probe, promote,
//! fence, set `synchronous_standby_names`) stay thin.

use std::fmt;
use std::time::{Duration, Instant};

use probe::{Failure, FailureKind, Lsn, Role, Status};

/// `--synchronous`: whether the primary's monitor manages `synchronous_standby_names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// The monitor leaves `synchronous_standby_names` alone.
    Off,
    /// Synchronous while the replica streams; asynchronous (logged) once it is gone.
    On,
    /// Always synchronous: writes wait for the replica, however long it is gone.
    Strict,
}

/// The settings the decisions depend on.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's BOSH index.
    pub index: u32,
    /// The peer's BOSH index; a tie between two replicas goes to the lower one.
    pub peer_index: u32,
    /// Consecutive failed peer checks before a replica promotes.
    pub retries: u32,
    /// Or: how long the peer may go unseen as primary (`--retries` x
    /// `--interval`), confirmed by at least one failed check, before a replica
    /// promotes. A peer behind a cut link makes every check wait out its
    /// connect timeout; counting such checks would take retries x timeout.
    pub gone_after: Duration,
    /// `--max-lag-bytes`: the most replayed WAL a promoted replica may lack.
    pub max_lag_bytes: Option<u64>,
    /// How many witnesses are configured (0: the witness rules are off).
    pub witnesses: usize,
    /// How long a primary may be cut off from its peer and most witnesses.
    pub isolation_timeout: Duration,
    pub synchronous: SyncMode,
}

/// How many witnesses a TCP connection reached on this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witnesses {
    pub reached: usize,
    pub total: usize,
}

impl Witnesses {
    /// More than half: of two witnesses both, of three two.
    pub fn majority(&self) -> bool {
        self.reached * 2 > self.total
    }
}

impl fmt::Display for Witnesses {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{} witnesses reached", self.reached, self.total)
    }
}

/// What one tick saw.
#[derive(Clone, Debug)]
pub struct Observation {
    pub now: Instant,
    /// Whether the pause file exists.
    pub paused: bool,
    /// The local node's answer (a full status) or why there was none.
    pub local: Result<Status, Failure>,
    /// The peer's answer; `None` when it was not asked (the local node is down).
    pub peer: Option<Result<Status, Failure>>,
    /// Witness reachability; `None` when none are configured or this tick did
    /// not need them (see [`needs_witnesses`]).
    pub witnesses: Option<Witnesses>,
}

/// What the monitor carries from one tick to the next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Consecutive checks, while the local node is a replica, in which the
    /// peer was not a primary (the original release's psql error count).
    pub peer_failures: u32,
    /// When the peer last answered as primary.
    pub primary_last_seen: Option<Instant>,
    /// The peer primary's `pg_current_wal_lsn()` at that moment (the lag guard's reference).
    pub primary_last_lsn: Option<Lsn>,
    /// Whether, at that moment, this replica streamed and the primary had a
    /// synchronous standby (in a pair, this replica).
    pub was_synchronous: bool,
    /// Since when this primary has reached neither its peer nor most witnesses.
    pub isolated_since: Option<Instant>,
    /// Consecutive ticks this primary had no streaming replica.
    pub replica_missing: u32,
}

/// What the peer looked like on one tick, for decisions and log lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Peer {
    Primary,
    Replica,
    /// Refusing connections while it starts, stops or recovers (57P03).
    Starting,
    /// No answer: refused, timed out, reset. The message says which.
    Unreachable(String),
    /// It answered but turned the monitor's login away (authentication, database).
    Rejected(String),
    /// Not asked on this tick.
    Unknown,
}

impl Peer {
    pub fn from_probe(peer: Option<&Result<Status, Failure>>) -> Peer {
        match peer {
            None => Peer::Unknown,
            Some(Ok(status)) => match status.role {
                Role::Primary => Peer::Primary,
                Role::Replica => Peer::Replica,
                Role::Starting => Peer::Starting,
                Role::Unreachable => Peer::Unreachable("no role".to_string()),
            },
            Some(Err(failure)) => match failure.kind {
                FailureKind::Starting => Peer::Starting,
                FailureKind::Rejected => Peer::Rejected(failure.message.clone()),
                _ => Peer::Unreachable(failure.message.clone()),
            },
        }
    }

    /// A short stable word for de-duplicating log lines.
    fn word(&self) -> &'static str {
        match self {
            Peer::Primary => "primary",
            Peer::Replica => "replica",
            Peer::Starting => "starting",
            Peer::Unreachable(_) => "unreachable",
            Peer::Rejected(_) => "rejected",
            Peer::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Peer::Primary => f.write_str("peer is primary"),
            Peer::Replica => f.write_str("peer is a replica"),
            Peer::Starting => f.write_str("peer is starting or stopping"),
            Peer::Unreachable(message) => write!(f, "peer unreachable: {message}"),
            Peer::Rejected(message) => write!(f, "peer refuses the monitor's login: {message}"),
            Peer::Unknown => f.write_str("peer not checked"),
        }
    }
}

/// Why a promotion is due.
#[derive(Clone, Debug, PartialEq)]
pub enum PromoteWhy {
    /// The peer was not a primary through `checks` checks and is not a replica now.
    PrimaryGone {
        checks: u32,
        peer: Peer,
        primary_gone: Option<Duration>,
    },
    /// Both nodes are replicas and this one leads (more replayed WAL, or the tie-break).
    BothReplicas { local: Lsn, peer: Lsn },
}

/// Why the fence commands run.
#[derive(Clone, Debug, PartialEq)]
pub enum FenceWhy {
    /// This node and its peer are both primaries.
    SplitBrain,
    /// This primary reached neither its peer nor most witnesses for the isolation timeout.
    Isolated {
        since: Duration,
        witnesses: Witnesses,
    },
}

/// Why `synchronous_standby_names` changes.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncWhy {
    /// `--synchronous strict`: synchronous whatever happens.
    Strict,
    /// `--synchronous on` and the replica streams (again).
    ReplicaStreams,
    /// `--synchronous on` and no replica streamed for this many ticks.
    ReplicaGone { ticks: u32 },
}

/// Why the monitor does nothing this tick; each renders the log line for it.
#[derive(Clone, Debug, PartialEq)]
pub enum Wait {
    /// Step 1: the local node does not answer (down, starting, being cloned).
    LocalDown(Failure),
    /// Local replica, peer primary: all is well.
    Following { streaming: bool, synchronous: bool },
    /// Local replica, the peer is not a primary, but not yet `retries` times.
    PeerFailing {
        count: u32,
        retries: u32,
        peer: Peer,
    },
    /// Local replica; the peer answers but refuses our login, so it is not gone.
    PeerRejects(String),
    /// Local replica; the peer check failed, yet its WAL receiver still
    /// streams: the primary is alive and only our check failed.
    ReplicationStreams(Peer),
    /// Both replicas; the peer leads and will promote.
    PeerLeads { local: Lsn, peer: Lsn },
    /// The lag guard holds the promotion back.
    LagGuard { lag: Option<u64>, max: u64 },
    /// Synchronous mode: this replica was not synchronous when the primary was last seen.
    NotSynchronous,
    /// A replica that does not reach most witnesses may be the isolated one.
    WitnessMinority(Option<Witnesses>),
    /// The pause file exists; the action is withheld.
    Paused(Box<Action>),
    /// Local primary; what the peer looks like.
    Primary(Peer),
    /// Local primary cut off from its peer and most witnesses, not yet for the timeout.
    Isolated {
        since: Duration,
        timeout: Duration,
        witnesses: Witnesses,
    },
    /// `--synchronous on`: the replica is gone, but so are most witnesses,
    /// so this primary may be the isolated one and stays synchronous.
    DegradeWithheld(Option<Witnesses>),
}

/// What to do on this tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Wait(Wait),
    Promote(PromoteWhy),
    Fence(FenceWhy),
    /// Set `synchronous_standby_names` to `*` (true) or empty (false).
    SetSynchronous(bool, SyncWhy),
}

impl Action {
    /// Two consecutive actions with the same key are logged once.
    pub fn key(&self) -> String {
        match self {
            Action::Wait(wait) => match wait {
                Wait::LocalDown(failure) => format!("local-down:{:?}", failure.kind),
                Wait::Following {
                    streaming,
                    synchronous,
                } => format!("following:{streaming}:{synchronous}"),
                Wait::PeerFailing { count, peer, .. } => format!("failing:{count}:{}", peer.word()),
                Wait::PeerRejects(_) => "peer-rejects".into(),
                Wait::ReplicationStreams(_) => "replication-streams".into(),
                Wait::PeerLeads { .. } => "peer-leads".into(),
                Wait::LagGuard { .. } => "lag-guard".into(),
                Wait::NotSynchronous => "not-synchronous".into(),
                Wait::WitnessMinority(_) => "witness-minority".into(),
                Wait::Paused(action) => format!("paused:{}", action.key()),
                Wait::Primary(peer) => format!("primary:{}", peer.word()),
                Wait::Isolated { .. } => "isolated".into(),
                Wait::DegradeWithheld(_) => "degrade-withheld".into(),
            },
            Action::Promote(_) => "promote".into(),
            Action::Fence(_) => "fence".into(),
            Action::SetSynchronous(on, _) => format!("synchronous:{on}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Action::Wait(wait) => wait.fmt(f),
            Action::Promote(PromoteWhy::PrimaryGone {
                checks,
                peer,
                primary_gone,
            }) => {
                write!(
                    f,
                    "{peer} ({checks}/{checks}): promoting the local replica "
                )?;
                match primary_gone {
                    Some(gone) => write!(f, "(primary gone {:.1} s)", gone.as_secs_f64()),
                    None => f.write_str("(no primary seen since the monitor started)"),
                }
            }
            Action::Promote(PromoteWhy::BothReplicas { local, peer }) => write!(
                f,
                "promoting the local replica: both nodes are replicas and this one leads \
                 (replayed {local}, peer {peer})"
            ),
            Action::Fence(FenceWhy::SplitBrain) => {
                f.write_str("SPLIT-BRAIN: the peer is a primary too; fencing this node")
            }
            Action::Fence(FenceWhy::Isolated { since, witnesses }) => write!(
                f,
                "ISOLATED: this primary reached neither its peer nor a majority of witnesses \
                 ({witnesses}) for {:.1} s; fencing this node",
                since.as_secs_f64()
            ),
            Action::SetSynchronous(true, why) => match why {
                SyncWhy::Strict => f.write_str("making commits synchronous (--synchronous strict)"),
                _ => f.write_str("replica streams: making commits synchronous again"),
            },
            Action::SetSynchronous(false, why) => match why {
                SyncWhy::ReplicaGone { ticks } => write!(
                    f,
                    "no replica streamed for {ticks} checks: degrading to asynchronous commits \
                     so writes do not block"
                ),
                _ => f.write_str("degrading to asynchronous commits"),
            },
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Wait::LocalDown(failure) => write!(
                f,
                "waiting for the local postgres to answer before watching the peer: {failure}"
            ),
            Wait::Following {
                streaming,
                synchronous,
            } => write!(
                f,
                "local node is a replica; peer is primary; replication {}{}",
                if *streaming {
                    "streams"
                } else {
                    "does not stream"
                },
                if *synchronous { " (synchronous)" } else { "" }
            ),
            Wait::PeerFailing {
                count,
                retries,
                peer,
            } => write!(f, "{peer} ({count}/{retries})"),
            Wait::PeerRejects(message) => write!(
                f,
                "peer answers but refuses the monitor's login, so it is not gone; \
                 no failover is possible until the credentials are fixed: {message}"
            ),
            Wait::ReplicationStreams(peer) => write!(
                f,
                "{peer}; but the local replica still streams WAL from a primary, \
                 so the primary is alive: no promotion while it streams"
            ),
            Wait::PeerLeads { local, peer } => write!(
                f,
                "both nodes are replicas; the peer leads (replayed {peer}, local {local}, \
                 or the tie goes to the lower index): leaving the promotion to it"
            ),
            Wait::LagGuard { lag, max } => match lag {
                Some(lag) => write!(
                    f,
                    "not promoting: the local replica replayed {lag} bytes less than the last \
                     primary position seen (--max-lag-bytes {max}); waiting"
                ),
                None => write!(
                    f,
                    "not promoting: no primary position was seen since the monitor started, \
                     so the lag is unknown (--max-lag-bytes {max}); waiting"
                ),
            },
            Wait::NotSynchronous => f.write_str(
                "not promoting: this replica was not a synchronous standby when the primary \
                 was last seen, so acknowledged commits may be missing (--synchronous); waiting",
            ),
            Wait::WitnessMinority(witnesses) => match witnesses {
                Some(witnesses) => write!(
                    f,
                    "not promoting: only {witnesses}; this node may be the isolated one"
                ),
                None => f.write_str("not promoting: witnesses were not checked"),
            },
            Wait::Paused(action) => write!(
                f,
                "failover paused (pause file present); withheld: {action}"
            ),
            Wait::Primary(peer) => write!(f, "local node is primary; {peer}"),
            Wait::Isolated {
                since,
                timeout,
                witnesses,
            } => write!(
                f,
                "local primary reaches neither its peer nor a majority of witnesses ({witnesses}) \
                 for {:.1} s; fencing at {:.1} s",
                since.as_secs_f64(),
                timeout.as_secs_f64()
            ),
            Wait::DegradeWithheld(witnesses) => match witnesses {
                Some(witnesses) => write!(
                    f,
                    "no replica streams, but only {witnesses}: this primary may be isolated, \
                     staying synchronous"
                ),
                None => f.write_str(
                    "no replica streams and witnesses were not checked: staying synchronous",
                ),
            },
        }
    }
}

/// Whether this tick's decision depends on the witnesses, so the loop probes
/// them only then: a replica whose peer is not a primary, a primary whose
/// peer host gives no answer at all.
pub fn needs_witnesses(local: &Status, peer: &Result<Status, Failure>) -> bool {
    match local.role {
        Role::Replica => !matches!(peer, Ok(status) if status.role == Role::Primary),
        Role::Primary => !peer_reached(peer),
        _ => false,
    }
}

/// Whether the peer's host answered at all. A refused connection, a
/// "starting" or an authentication error all prove the network path works;
/// a timeout or a reset does not.
pub fn peer_reached(peer: &Result<Status, Failure>) -> bool {
    match peer {
        Ok(_) => true,
        Err(failure) => !matches!(failure.kind, FailureKind::Timeout | FailureKind::Transient),
    }
}

/// One tick: the action and the state for the next tick.
pub fn decide(obs: &Observation, state: &State, cfg: &Config) -> (Action, State) {
    let local = match &obs.local {
        Ok(status) if matches!(status.role, Role::Primary | Role::Replica) => status,
        Ok(status) => {
            let failure = Failure {
                kind: FailureKind::Starting,
                message: format!("local node is {}", status.role),
            };
            return local_down(failure, state);
        }
        Err(failure) => return local_down(failure.clone(), state),
    };
    let Some(peer) = &obs.peer else {
        let failure = Failure {
            kind: FailureKind::Transient,
            message: "the peer was not checked".to_string(),
        };
        return local_down(failure, state);
    };
    match local.role {
        Role::Primary => decide_primary(obs, local, peer, state, cfg),
        _ => decide_replica(obs, local, peer, state, cfg),
    }
}

/// The state right after this node was promoted: it now watches as a
/// primary, and with `--synchronous on` starts degraded, since the peer is
/// gone (that is why it promoted).
pub fn after_promotion(state: &State, cfg: &Config) -> State {
    State {
        peer_failures: 0,
        primary_last_seen: None,
        primary_last_lsn: None,
        was_synchronous: false,
        isolated_since: None,
        replica_missing: cfg.retries.max(state.replica_missing),
    }
}

/// Step 1: nothing is decided while the local node does not answer; a
/// promotion must be earned by fresh consecutive checks once it does.
fn local_down(failure: Failure, state: &State) -> (Action, State) {
    let next = State {
        peer_failures: 0,
        isolated_since: None,
        replica_missing: 0,
        ..state.clone()
    };
    (Action::Wait(Wait::LocalDown(failure)), next)
}

/// Steps 2 and 4: a primary watches for a second primary (split-brain), for
/// isolation (with witnesses), and manages synchronous commits.
fn decide_primary(
    obs: &Observation,
    local: &Status,
    peer: &Result<Status, Failure>,
    state: &State,
    cfg: &Config,
) -> (Action, State) {
    let mut next = State {
        peer_failures: 0,
        primary_last_seen: None,
        primary_last_lsn: None,
        was_synchronous: false,
        ..state.clone()
    };
    let peer_view = Peer::from_probe(Some(peer));
    if peer_view == Peer::Primary {
        next.isolated_since = None;
        return (
            unless_paused(obs, Action::Fence(FenceWhy::SplitBrain)),
            next,
        );
    }

    let witnesses = obs.witnesses.filter(|_| cfg.witnesses > 0);
    let isolated = match witnesses {
        Some(tally) if !peer_reached(peer) && !tally.majority() => Some(tally),
        _ => None,
    };
    next.isolated_since = isolated.map(|_| state.isolated_since.unwrap_or(obs.now));
    if let (Some(tally), Some(since)) = (isolated, next.isolated_since) {
        let since = obs.now.saturating_duration_since(since);
        if since >= cfg.isolation_timeout {
            let fence = Action::Fence(FenceWhy::Isolated {
                since,
                witnesses: tally,
            });
            return (unless_paused(obs, fence), next);
        }
    }

    if cfg.synchronous != SyncMode::Off {
        let streaming = local.streaming_replicas.unwrap_or(0) > 0;
        next.replica_missing = if streaming {
            0
        } else {
            state.replica_missing.saturating_add(1)
        };
        if let Some(action) = synchronous_action(obs, local, peer, &next, cfg) {
            return (action, next);
        }
    }

    let wait = match (isolated, next.isolated_since) {
        (Some(tally), Some(since)) => Wait::Isolated {
            since: obs.now.saturating_duration_since(since),
            timeout: cfg.isolation_timeout,
            witnesses: tally,
        },
        _ => Wait::Primary(peer_view),
    };
    (Action::Wait(wait), next)
}

/// `--synchronous`: the change to `synchronous_standby_names` this tick
/// needs, if any. `next.replica_missing` is already updated for this tick.
fn synchronous_action(
    obs: &Observation,
    local: &Status,
    peer: &Result<Status, Failure>,
    next: &State,
    cfg: &Config,
) -> Option<Action> {
    // Unknown (an older probe): never guess about a setting that can block writes.
    let names = local.synchronous_standby_names.as_deref()?;
    let synchronous = !names.trim().is_empty();
    let streaming = local.streaming_replicas.unwrap_or(0) > 0;
    match cfg.synchronous {
        SyncMode::Off => None,
        SyncMode::Strict => (!synchronous).then_some(Action::SetSynchronous(true, SyncWhy::Strict)),
        SyncMode::On if !synchronous && streaming => {
            Some(Action::SetSynchronous(true, SyncWhy::ReplicaStreams))
        }
        SyncMode::On if synchronous && next.replica_missing >= cfg.retries => {
            // An isolated primary must not start acknowledging commits the
            // replica (perhaps promoting right now) will never have.
            let witnesses = obs.witnesses.filter(|_| cfg.witnesses > 0);
            let may_degrade =
                cfg.witnesses == 0 || peer_reached(peer) || witnesses.is_some_and(|w| w.majority());
            Some(if may_degrade {
                Action::SetSynchronous(
                    false,
                    SyncWhy::ReplicaGone {
                        ticks: next.replica_missing,
                    },
                )
            } else {
                Action::Wait(Wait::DegradeWithheld(witnesses))
            })
        }
        SyncMode::On => None,
    }
}

/// Steps 3 and 5: a replica counts the checks in which the peer is not a
/// primary and promotes once there are `retries` of them and every guard agrees.
fn decide_replica(
    obs: &Observation,
    local: &Status,
    peer: &Result<Status, Failure>,
    state: &State,
    cfg: &Config,
) -> (Action, State) {
    let mut next = State {
        isolated_since: None,
        replica_missing: 0,
        ..state.clone()
    };
    let peer_view = Peer::from_probe(Some(peer));
    let streaming = local.wal_receiver_streaming == Some(true);
    match (&peer_view, peer) {
        (Peer::Primary, Ok(status)) => {
            next.peer_failures = 0;
            next.primary_last_seen = Some(obs.now);
            next.primary_last_lsn = status.current_wal_lsn.or(state.primary_last_lsn);
            next.was_synchronous = streaming && status.synchronous_replicas.unwrap_or(0) > 0;
            let following = Wait::Following {
                streaming,
                synchronous: next.was_synchronous,
            };
            return (Action::Wait(following), next);
        }
        (Peer::Rejected(message), _) => {
            next.peer_failures = 0;
            return (Action::Wait(Wait::PeerRejects(message.clone())), next);
        }
        // Two replicas may stream from each other (cascading), so streaming
        // proves a live primary only when the peer is not a replica.
        (Peer::Replica, _) => {}
        // The WAL still streams from a primary, so it is alive whatever the
        // checks say (a busy primary may refuse them): never promote now. The
        // failures still count, so that once the stream stops the promotion
        // does not wait for as many fresh checks.
        _ if streaming => {
            next.peer_failures = state.peer_failures.saturating_add(1);
            return (Action::Wait(Wait::ReplicationStreams(peer_view)), next);
        }
        _ => {}
    }

    let count = state.peer_failures.saturating_add(1);
    next.peer_failures = count;
    let unseen_long_enough = state
        .primary_last_seen
        .is_some_and(|seen| obs.now.saturating_duration_since(seen) >= cfg.gone_after);
    if count < cfg.retries && !unseen_long_enough {
        let failing = Wait::PeerFailing {
            count,
            retries: cfg.retries,
            peer: peer_view,
        };
        return (Action::Wait(failing), next);
    }

    let why = match peer {
        Ok(peer_status) if peer_status.role == Role::Replica => {
            let local_lsn = local.replayed_wal_lsn.unwrap_or(Lsn(0));
            let peer_lsn = peer_status.replayed_wal_lsn.unwrap_or(Lsn(0));
            let leads =
                local_lsn > peer_lsn || (local_lsn == peer_lsn && cfg.index < cfg.peer_index);
            if !leads {
                let wait = Wait::PeerLeads {
                    local: local_lsn,
                    peer: peer_lsn,
                };
                return (Action::Wait(wait), next);
            }
            PromoteWhy::BothReplicas {
                local: local_lsn,
                peer: peer_lsn,
            }
        }
        _ => {
            if let Err(wait) = data_guard(local, state, cfg) {
                return (Action::Wait(wait), next);
            }
            PromoteWhy::PrimaryGone {
                checks: count,
                peer: peer_view.clone(),
                primary_gone: state
                    .primary_last_seen
                    .map(|seen| obs.now.saturating_duration_since(seen)),
            }
        }
    };
    if cfg.witnesses > 0 && !obs.witnesses.is_some_and(|w| w.majority()) {
        return (Action::Wait(Wait::WitnessMinority(obs.witnesses)), next);
    }
    (unless_paused(obs, Action::Promote(why)), next)
}

/// The lag guard and the synchronous rule: may a replica whose primary is
/// gone promote without losing what the primary acknowledged?
fn data_guard(local: &Status, state: &State, cfg: &Config) -> Result<(), Wait> {
    let lag = match (state.primary_last_lsn, local.replayed_wal_lsn) {
        (Some(primary), Some(replayed)) => Some(primary.0.saturating_sub(replayed.0)),
        _ => None,
    };
    // None: no lag guard configured. An unknown lag never passes the guard.
    let lag_ok = cfg
        .max_lag_bytes
        .map(|max| lag.is_some_and(|lag| lag <= max));
    let lag_wait = |max| Wait::LagGuard { lag, max };
    match (cfg.synchronous, lag_ok, cfg.max_lag_bytes) {
        (SyncMode::Off, Some(false), Some(max)) => Err(lag_wait(max)),
        (SyncMode::Off, _, _) => Ok(()),
        _ if state.was_synchronous || lag_ok == Some(true) => Ok(()),
        (_, Some(false), Some(max)) => Err(lag_wait(max)),
        _ => Err(Wait::NotSynchronous),
    }
}

fn unless_paused(obs: &Observation, action: Action) -> Action {
    if obs.paused {
        Action::Wait(Wait::Paused(Box::new(action)))
    } else {
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config() -> Config {
        Config {
            index: 1,
            peer_index: 0,
            retries: 3,
            gone_after: Duration::from_secs(3),
            max_lag_bytes: None,
            witnesses: 0,
            isolation_timeout: Duration::from_secs(10),
            synchronous: SyncMode::Off,
        }
    }

    fn primary(lsn: u64) -> Status {
        Status {
            role: Role::Primary,
            in_recovery: Some(false),
            current_wal_lsn: Some(Lsn(lsn)),
            streaming_replicas: Some(1),
            synchronous_standby_names: Some(String::new()),
            synchronous_replicas: Some(0),
            ..Status::default()
        }
    }

    fn replica(replayed: u64, streaming: bool) -> Status {
        Status {
            role: Role::Replica,
            in_recovery: Some(true),
            received_wal_lsn: Some(Lsn(replayed)),
            replayed_wal_lsn: Some(Lsn(replayed)),
            wal_receiver_streaming: Some(streaming),
            ..Status::default()
        }
    }

    fn failure(kind: FailureKind) -> Failure {
        Failure {
            kind,
            message: format!("{kind:?}"),
        }
    }

    fn refused() -> Result<Status, Failure> {
        Err(failure(FailureKind::Refused))
    }

    fn observe(local: Result<Status, Failure>, peer: Result<Status, Failure>) -> Observation {
        Observation {
            now: Instant::now(),
            paused: false,
            local,
            peer: Some(peer),
            witnesses: None,
        }
    }

    impl Observation {
        fn at(mut self, now: Instant) -> Self {
            self.now = now;
            self
        }
        fn paused(mut self) -> Self {
            self.paused = true;
            self
        }
        fn witnesses(mut self, reached: usize, total: usize) -> Self {
            self.witnesses = Some(Witnesses { reached, total });
            self
        }
    }

    /// Runs `ticks` identical observations through decide, returning the last action.
    fn run(obs: &Observation, state: &State, cfg: &Config, ticks: u32) -> (Action, State) {
        let mut state = state.clone();
        let mut action = None;
        for _ in 0..ticks {
            let (next_action, next_state) = decide(obs, &state, cfg);
            action = Some(next_action);
            state = next_state;
        }
        (action.expect("at least one tick"), state)
    }

    fn is_promote(action: &Action) -> bool {
        matches!(action, Action::Promote(_))
    }

    // --- step 1: the local node ---

    #[test]
    fn nothing_happens_while_the_local_node_is_down() {
        for kind in [
            FailureKind::Refused,
            FailureKind::Starting,
            FailureKind::Timeout,
        ] {
            let obs = observe(Err(failure(kind)), refused());
            let (action, state) = run(&obs, &State::default(), &config(), 10);
            assert!(
                matches!(action, Action::Wait(Wait::LocalDown(_))),
                "{kind:?}: {action:?}"
            );
            assert_eq!(state.peer_failures, 0);
        }
    }

    #[test]
    fn failures_counted_before_the_local_node_went_down_do_not_carry_over() {
        let cfg = config();
        let gone = observe(Ok(replica(100, false)), refused());
        let (_, state) = run(&gone, &State::default(), &cfg, 2);
        assert_eq!(state.peer_failures, 2);
        let down = observe(Err(failure(FailureKind::Refused)), refused());
        let (_, state) = decide(&down, &state, &cfg);
        let (action, state) = decide(&gone, &state, &cfg);
        assert!(!is_promote(&action), "{action:?}");
        assert_eq!(state.peer_failures, 1);
    }

    // --- step 3: a replica watches its primary ---

    #[test]
    fn replica_follows_a_primary_peer_and_remembers_its_position() {
        let mut peer = primary(5000);
        peer.synchronous_replicas = Some(1);
        let obs = observe(Ok(replica(4000, true)), Ok(peer));
        let (action, state) = decide(&obs, &State::default(), &config());
        assert_eq!(
            action,
            Action::Wait(Wait::Following {
                streaming: true,
                synchronous: true
            })
        );
        assert_eq!(state.primary_last_lsn, Some(Lsn(5000)));
        assert_eq!(state.primary_last_seen, Some(obs.now));
        assert!(state.was_synchronous);
    }

    #[test]
    fn replica_promotes_after_retries_consecutive_failed_checks() {
        let cfg = config();
        for peer in [
            refused(),
            Err(failure(FailureKind::Timeout)),
            Err(failure(FailureKind::Transient)),
            Err(failure(FailureKind::Starting)),
        ] {
            let obs = observe(Ok(replica(100, false)), peer.clone());
            let (action, _) = run(&obs, &State::default(), &cfg, 2);
            assert!(
                matches!(action, Action::Wait(Wait::PeerFailing { count: 2, .. })),
                "{peer:?}: {action:?}"
            );
            let (action, _) = run(&obs, &State::default(), &cfg, 3);
            assert!(is_promote(&action), "{peer:?}: {action:?}");
        }
    }

    #[test]
    fn a_healthy_check_resets_the_count() {
        let cfg = config();
        let gone = observe(Ok(replica(100, false)), refused());
        let back = observe(Ok(replica(100, true)), Ok(primary(200)));
        let (_, state) = run(&gone, &State::default(), &cfg, 2);
        let (_, state) = decide(&back, &state, &cfg);
        assert_eq!(state.peer_failures, 0);
        let (action, _) = run(&gone, &state, &cfg, 2);
        assert!(!is_promote(&action), "{action:?}");
    }

    #[test]
    fn the_promotion_reports_how_long_the_primary_was_gone() {
        let cfg = config();
        let start = Instant::now();
        let healthy = observe(Ok(replica(100, true)), Ok(primary(100))).at(start);
        let (_, mut state) = decide(&healthy, &State::default(), &cfg);
        let mut action = None;
        for tick in 1..=3 {
            let gone = observe(Ok(replica(100, false)), refused()).at(start + SECOND * tick);
            let (next_action, next_state) = decide(&gone, &state, &cfg);
            action = Some(next_action);
            state = next_state;
        }
        assert_eq!(
            action,
            Some(Action::Promote(PromoteWhy::PrimaryGone {
                checks: 3,
                peer: Peer::Unreachable("Refused".into()),
                primary_gone: Some(SECOND * 3)
            }))
        );
    }

    #[test]
    fn a_peer_that_rejects_the_login_is_not_gone() {
        let obs = observe(Ok(replica(100, false)), Err(failure(FailureKind::Rejected)));
        let (action, state) = run(&obs, &State::default(), &config(), 10);
        assert!(
            matches!(action, Action::Wait(Wait::PeerRejects(_))),
            "{action:?}"
        );
        assert_eq!(state.peer_failures, 0);
    }

    #[test]
    fn a_replica_that_still_streams_never_promotes() {
        let obs = observe(Ok(replica(100, true)), Err(failure(FailureKind::Transient)));
        let (action, state) = run(&obs, &State::default(), &config(), 10);
        assert!(
            matches!(action, Action::Wait(Wait::ReplicationStreams(_))),
            "{action:?}"
        );
        assert_eq!(state.peer_failures, 10, "the failures still count");
    }

    #[test]
    fn once_the_stream_stops_failures_counted_while_it_streamed_promote_at_once() {
        let cfg = config();
        let streaming = observe(Ok(replica(100, true)), Err(failure(FailureKind::Timeout)));
        let (_, state) = run(&streaming, &State::default(), &cfg, 2);
        let stopped = observe(Ok(replica(100, false)), Err(failure(FailureKind::Timeout)));
        let (action, _) = decide(&stopped, &state, &cfg);
        assert!(is_promote(&action), "{action:?}");
    }

    #[test]
    fn a_peer_unseen_for_retries_intervals_is_gone_after_one_slow_failed_check() {
        let cfg = config();
        let start = Instant::now();
        let seen = observe(Ok(replica(100, true)), Ok(primary(100))).at(start);
        let (_, state) = decide(&seen, &State::default(), &cfg);
        // A cut link: the next check waits out its 5 s connect timeout.
        let timed_out = observe(Ok(replica(100, false)), Err(failure(FailureKind::Timeout)))
            .at(start + Duration::from_secs(5));
        let (action, _) = decide(&timed_out, &state, &cfg);
        assert!(is_promote(&action), "{action:?}");
        // But not a quick failure right after the primary was seen.
        let quick =
            observe(Ok(replica(100, false)), refused()).at(start + Duration::from_millis(300));
        let (action, state) = decide(&quick, &state, &cfg);
        assert!(!is_promote(&action), "{action:?}");
        assert_eq!(state.peer_failures, 1);
    }

    // --- step 5: both replicas ---

    #[test]
    fn of_two_replicas_the_more_advanced_promotes() {
        let cfg = config();
        let ahead = observe(Ok(replica(200, false)), Ok(replica(100, false)));
        let (action, _) = run(&ahead, &State::default(), &cfg, 3);
        assert_eq!(
            action,
            Action::Promote(PromoteWhy::BothReplicas {
                local: Lsn(200),
                peer: Lsn(100)
            })
        );
        let behind = observe(Ok(replica(100, false)), Ok(replica(200, false)));
        let (action, _) = run(&behind, &State::default(), &cfg, 10);
        assert!(
            matches!(action, Action::Wait(Wait::PeerLeads { .. })),
            "{action:?}"
        );
    }

    #[test]
    fn of_two_equal_replicas_the_lower_index_promotes() {
        let tie = observe(Ok(replica(100, false)), Ok(replica(100, false)));
        let lower = Config {
            index: 0,
            peer_index: 1,
            ..config()
        };
        let higher = Config {
            index: 1,
            peer_index: 0,
            ..config()
        };
        assert!(is_promote(&run(&tie, &State::default(), &lower, 3).0));
        assert!(!is_promote(&run(&tie, &State::default(), &higher, 10).0));
    }

    #[test]
    fn replicas_streaming_from_each_other_still_settle_who_promotes() {
        let cascade = observe(Ok(replica(200, true)), Ok(replica(100, true)));
        assert!(is_promote(
            &run(&cascade, &State::default(), &config(), 3).0
        ));
    }

    #[test]
    fn the_lag_guard_does_not_apply_between_two_visible_replicas() {
        let cfg = Config {
            max_lag_bytes: Some(10),
            ..config()
        };
        let state = State {
            primary_last_lsn: Some(Lsn(1_000_000)),
            ..State::default()
        };
        let obs = observe(Ok(replica(200, false)), Ok(replica(100, false)));
        assert!(is_promote(&run(&obs, &state, &cfg, 3).0));
    }

    // --- step 2: split-brain ---

    #[test]
    fn two_primaries_fence() {
        let obs = observe(Ok(primary(100)), Ok(primary(100)));
        let (action, _) = decide(&obs, &State::default(), &config());
        assert_eq!(action, Action::Fence(FenceWhy::SplitBrain));
    }

    #[test]
    fn a_primary_with_a_replica_or_no_peer_carries_on() {
        for peer in [
            Ok(replica(100, true)),
            refused(),
            Err(failure(FailureKind::Timeout)),
        ] {
            let obs = observe(Ok(primary(100)), peer.clone());
            let (action, _) = run(&obs, &State::default(), &config(), 20);
            assert!(
                matches!(action, Action::Wait(Wait::Primary(_))),
                "{peer:?}: {action:?}"
            );
        }
    }

    // --- pause file ---

    #[test]
    fn the_pause_file_withholds_promotion_and_fencing() {
        let cfg = config();
        let gone = observe(Ok(replica(100, false)), refused()).paused();
        let (action, _) = run(&gone, &State::default(), &cfg, 10);
        assert!(
            matches!(&action, Action::Wait(Wait::Paused(withheld)) if is_promote(withheld)),
            "{action:?}"
        );
        let split = observe(Ok(primary(1)), Ok(primary(1))).paused();
        let (action, _) = decide(&split, &State::default(), &cfg);
        assert_eq!(
            action,
            Action::Wait(Wait::Paused(Box::new(Action::Fence(FenceWhy::SplitBrain))))
        );
    }

    // --- lag guard ---

    fn lagging_state(primary_lsn: u64) -> State {
        State {
            primary_last_lsn: Some(Lsn(primary_lsn)),
            ..State::default()
        }
    }

    #[test]
    fn the_lag_guard_blocks_a_replica_too_far_behind() {
        let cfg = Config {
            max_lag_bytes: Some(1000),
            ..config()
        };
        let obs = observe(Ok(replica(5000, false)), refused());
        let (action, _) = run(&obs, &lagging_state(7000), &cfg, 10);
        assert_eq!(
            action,
            Action::Wait(Wait::LagGuard {
                lag: Some(2000),
                max: 1000
            })
        );
        let (action, _) = run(&obs, &lagging_state(6000), &cfg, 3);
        assert!(is_promote(&action), "lag 1000 <= 1000: {action:?}");
    }

    #[test]
    fn the_lag_guard_blocks_when_no_primary_position_was_ever_seen() {
        let cfg = Config {
            max_lag_bytes: Some(1000),
            ..config()
        };
        let obs = observe(Ok(replica(5000, false)), refused());
        let (action, _) = run(&obs, &State::default(), &cfg, 5);
        assert_eq!(
            action,
            Action::Wait(Wait::LagGuard {
                lag: None,
                max: 1000
            })
        );
    }

    #[test]
    fn without_the_lag_guard_lag_does_not_matter() {
        let obs = observe(Ok(replica(5000, false)), refused());
        assert!(is_promote(
            &run(&obs, &lagging_state(1 << 40), &config(), 3).0
        ));
    }

    // --- witnesses ---

    fn with_witnesses(count: usize) -> Config {
        Config {
            witnesses: count,
            ..config()
        }
    }

    #[test]
    fn a_replica_promotes_only_with_a_witness_majority() {
        let cfg = with_witnesses(3);
        let base = observe(Ok(replica(100, false)), refused());
        let minority = base.clone().witnesses(1, 3);
        let (action, _) = run(&minority, &State::default(), &cfg, 5);
        assert!(
            matches!(action, Action::Wait(Wait::WitnessMinority(Some(_)))),
            "{action:?}"
        );
        let unchecked = base.clone();
        let (action, _) = run(&unchecked, &State::default(), &cfg, 5);
        assert!(!is_promote(&action), "{action:?}");
        let majority = base.witnesses(2, 3);
        assert!(is_promote(&run(&majority, &State::default(), &cfg, 3).0));
    }

    #[test]
    fn an_isolated_primary_fences_after_the_isolation_timeout() {
        let cfg = with_witnesses(2);
        let start = Instant::now();
        let isolated = |at: Duration| {
            observe(Ok(primary(100)), Err(failure(FailureKind::Timeout)))
                .witnesses(1, 2)
                .at(start + at)
        };
        let (action, state) = decide(&isolated(Duration::ZERO), &State::default(), &cfg);
        assert!(
            matches!(action, Action::Wait(Wait::Isolated { .. })),
            "{action:?}"
        );
        assert_eq!(state.isolated_since, Some(start));
        let (action, state) = decide(&isolated(SECOND * 9), &state, &cfg);
        assert!(
            matches!(action, Action::Wait(Wait::Isolated { .. })),
            "{action:?}"
        );
        let (action, _) = decide(&isolated(SECOND * 10), &state, &cfg);
        assert!(
            matches!(action, Action::Fence(FenceWhy::Isolated { .. })),
            "{action:?}"
        );
    }

    #[test]
    fn a_primary_is_not_isolated_while_it_reaches_its_peer_or_most_witnesses() {
        let cfg = with_witnesses(2);
        let state = State {
            isolated_since: Some(Instant::now() - SECOND * 60),
            ..State::default()
        };
        let refused_but_reached = observe(Ok(primary(100)), refused()).witnesses(0, 2);
        let witnesses_reached =
            observe(Ok(primary(100)), Err(failure(FailureKind::Timeout))).witnesses(2, 2);
        for obs in [refused_but_reached, witnesses_reached] {
            let (action, next) = decide(&obs, &state, &cfg);
            assert!(
                matches!(action, Action::Wait(Wait::Primary(_))),
                "{action:?}"
            );
            assert_eq!(next.isolated_since, None);
        }
    }

    #[test]
    fn without_witnesses_a_primary_never_fences_for_isolation() {
        let obs = observe(Ok(primary(100)), Err(failure(FailureKind::Timeout)));
        let state = State {
            isolated_since: Some(Instant::now() - SECOND * 600),
            ..State::default()
        };
        let (action, _) = decide(&obs, &state, &config());
        assert!(
            matches!(action, Action::Wait(Wait::Primary(_))),
            "{action:?}"
        );
    }

    #[test]
    fn witnesses_are_probed_only_when_the_peer_looks_unhealthy() {
        assert!(!needs_witnesses(&replica(1, true), &Ok(primary(1))));
        assert!(needs_witnesses(&replica(1, false), &refused()));
        assert!(needs_witnesses(&replica(1, false), &Ok(replica(1, false))));
        assert!(!needs_witnesses(&primary(1), &refused()));
        assert!(!needs_witnesses(&primary(1), &Ok(replica(1, true))));
        assert!(needs_witnesses(
            &primary(1),
            &Err(failure(FailureKind::Timeout))
        ));
    }

    #[test]
    fn majority_means_more_than_half() {
        let w = |reached, total| Witnesses { reached, total }.majority();
        assert!(w(1, 1));
        assert!(!w(0, 1));
        assert!(!w(1, 2));
        assert!(w(2, 2));
        assert!(w(2, 3));
        assert!(!w(2, 4));
    }

    // --- synchronous mode ---

    fn sync(mode: SyncMode) -> Config {
        Config {
            synchronous: mode,
            ..config()
        }
    }

    fn primary_sync(names: &str, streaming: i64) -> Status {
        Status {
            streaming_replicas: Some(streaming),
            synchronous_standby_names: Some(names.to_string()),
            synchronous_replicas: Some(if names.is_empty() { 0 } else { streaming }),
            ..primary(100)
        }
    }

    #[test]
    fn synchronous_on_turns_on_while_the_replica_streams() {
        let obs = observe(Ok(primary_sync("", 1)), Ok(replica(100, true)));
        let (action, _) = decide(&obs, &State::default(), &sync(SyncMode::On));
        assert_eq!(
            action,
            Action::SetSynchronous(true, SyncWhy::ReplicaStreams)
        );
        let already = observe(Ok(primary_sync("*", 1)), Ok(replica(100, true)));
        let (action, _) = decide(&already, &State::default(), &sync(SyncMode::On));
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
    }

    #[test]
    fn synchronous_on_degrades_after_retries_ticks_without_a_replica() {
        let cfg = sync(SyncMode::On);
        let gone = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = run(&gone, &State::default(), &cfg, 2);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        let (action, _) = run(&gone, &State::default(), &cfg, 3);
        assert_eq!(
            action,
            Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 3 })
        );
    }

    #[test]
    fn synchronous_on_does_not_degrade_a_primary_that_may_be_isolated() {
        let cfg = Config {
            witnesses: 2,
            ..sync(SyncMode::On)
        };
        let cut_off =
            observe(Ok(primary_sync("*", 0)), Err(failure(FailureKind::Timeout))).witnesses(0, 2);
        let (action, _) = run(&cut_off, &State::default(), &cfg, 5);
        assert!(
            matches!(action, Action::Wait(Wait::DegradeWithheld(_))),
            "{action:?}"
        );
        let replica_died = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = run(&replica_died, &State::default(), &cfg, 3);
        assert!(
            matches!(action, Action::SetSynchronous(false, _)),
            "{action:?}"
        );
    }

    #[test]
    fn synchronous_strict_never_degrades_and_restores_at_once() {
        let cfg = sync(SyncMode::Strict);
        let gone = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = run(&gone, &State::default(), &cfg, 50);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        let cleared = observe(Ok(primary_sync("", 0)), refused());
        let (action, _) = decide(&cleared, &State::default(), &cfg);
        assert_eq!(action, Action::SetSynchronous(true, SyncWhy::Strict));
    }

    #[test]
    fn synchronous_off_leaves_the_setting_alone() {
        for status in [primary_sync("", 1), primary_sync("*", 0)] {
            let obs = observe(Ok(status), refused());
            let (action, _) = run(&obs, &State::default(), &config(), 10);
            assert!(matches!(action, Action::Wait(_)), "{action:?}");
        }
    }

    #[test]
    fn a_new_primary_with_synchronous_on_degrades_on_its_first_tick() {
        let cfg = sync(SyncMode::On);
        let state = after_promotion(&State::default(), &cfg);
        let obs = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = decide(&obs, &state, &cfg);
        assert!(
            matches!(action, Action::SetSynchronous(false, _)),
            "{action:?}"
        );
    }

    #[test]
    fn in_synchronous_mode_a_replica_promotes_only_if_it_was_synchronous() {
        for mode in [SyncMode::On, SyncMode::Strict] {
            let cfg = sync(mode);
            let gone = observe(Ok(replica(100, false)), refused());
            let was_sync = State {
                was_synchronous: true,
                ..State::default()
            };
            assert!(is_promote(&run(&gone, &was_sync, &cfg, 3).0), "{mode:?}");
            let (action, _) = run(&gone, &State::default(), &cfg, 10);
            assert_eq!(action, Action::Wait(Wait::NotSynchronous), "{mode:?}");
        }
    }

    #[test]
    fn in_synchronous_mode_the_lag_guard_may_allow_an_asynchronous_replica() {
        let cfg = Config {
            max_lag_bytes: Some(1000),
            ..sync(SyncMode::On)
        };
        let gone = observe(Ok(replica(5000, false)), refused());
        assert!(is_promote(&run(&gone, &lagging_state(5500), &cfg, 3).0));
        let (action, _) = run(&gone, &lagging_state(9000), &cfg, 5);
        assert!(
            matches!(action, Action::Wait(Wait::LagGuard { .. })),
            "{action:?}"
        );
    }

    #[test]
    fn a_replica_is_synchronous_only_while_it_streams_to_a_synchronous_primary() {
        let mut peer = primary(100);
        peer.synchronous_replicas = Some(1);
        let not_streaming = observe(Ok(replica(100, false)), Ok(peer.clone()));
        assert!(
            !decide(&not_streaming, &State::default(), &config())
                .1
                .was_synchronous
        );
        let async_primary = observe(Ok(replica(100, true)), Ok(primary(100)));
        assert!(
            !decide(&async_primary, &State::default(), &config())
                .1
                .was_synchronous
        );
        let streaming = observe(Ok(replica(100, true)), Ok(peer));
        assert!(
            decide(&streaming, &State::default(), &config())
                .1
                .was_synchronous
        );
    }

    #[test]
    fn every_action_renders_a_log_line() {
        let actions = [
            Action::Promote(PromoteWhy::PrimaryGone {
                checks: 3,
                peer: Peer::Unreachable("10.0.0.2:6432: connection refused".into()),
                primary_gone: Some(SECOND * 3),
            }),
            Action::Fence(FenceWhy::SplitBrain),
            Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 3 }),
            Action::Wait(Wait::PeerFailing {
                count: 3,
                retries: 3,
                peer: Peer::Unreachable("10.0.0.2:6432: connection refused".into()),
            }),
        ];
        let lines: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            lines[0],
            "peer unreachable: 10.0.0.2:6432: connection refused (3/3): \
             promoting the local replica (primary gone 3.0 s)"
        );
        assert!(lines[1].starts_with("SPLIT-BRAIN"));
        assert!(lines[2].contains("asynchronous"));
        assert_eq!(
            lines[3],
            "peer unreachable: 10.0.0.2:6432: connection refused (3/3)"
        );
    }
}
