//! The decision table: what the monitor does on one tick, as a pure function
//! of what it observed and what it remembers from earlier ticks.
//!
//! Nothing here touches the network, the clock or a file, so every row of the
//! failover algorithm has a unit test below and the effects (probe, promote,
//! refuse writes, step down, fence, set `synchronous_standby_names`) stay thin.
//!
//! The rule that keeps the pair from ever having two writable primaries is a
//! lease (README, "The lease"): a primary takes writes only while it has
//! confirmed, within the last `lease`, that it reaches its peer's host or a
//! majority of witnesses; a replica that cannot see its primary promotes
//! only once the primary has been unseen for `lease + promote_margin`, so
//! the primary has stopped taking writes by then. A primary that is
//! positively dead (its host answers, PostgreSQL refuses or is starting) is
//! replaced after `retries` checks, without waiting for the lease.

use std::fmt;
use std::time::{Duration, Instant};

use pgcore::{Failure, FailureKind, Lsn, Role, Status};

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

/// The rules the decisions follow, from the flags: indexes, retries, the
/// lease, the guards.
#[derive(Clone, Debug)]
pub struct Policy {
    /// This node's BOSH index.
    pub index: u32,
    /// The peer's BOSH index; a tie between two replicas goes to the lower one.
    pub peer_index: u32,
    /// Consecutive checks that find the primary positively dead before a
    /// replica promotes (the original release's `psql_error_count`).
    pub retries: u32,
    /// How long a primary takes writes after it last confirmed that it
    /// reaches its peer's host or a majority of witnesses (`--isolation-timeout`).
    pub lease: Duration,
    /// How much longer than the lease a replica waits for a primary it
    /// cannot see before promoting: one monitor interval (the two monitors
    /// last saw each other up to one check apart) and two seconds (the
    /// primary's watchdog refusing writes or stopping its server).
    pub promote_margin: Duration,
    /// `--max-lag-bytes`: the most replayed WAL a promoted replica may lack.
    pub max_lag_bytes: Option<u64>,
    /// How many witnesses are configured (0: the witness rules are off).
    pub witnesses: usize,
    pub synchronous: SyncMode,
    /// `--replica-silence`: a synchronous standby that has not replied for
    /// this long counts as gone (it still shows as streaming until
    /// `wal_sender_timeout`); `None`: only whether it streams counts.
    pub replica_silence: Option<Duration>,
}

impl Policy {
    /// How long a replica waits for a primary it cannot see at all.
    pub fn promote_after(&self) -> Duration {
        self.lease + self.promote_margin
    }
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
    /// When the peer's check began: a primary that reached its peer's host or
    /// the witnesses confirms its lease as of then, not when a slow answer
    /// arrived (the link is only known to have worked since).
    pub checked_from: Instant,
    /// When the observation was complete: the lease and every wait are
    /// judged at this moment, the one the decision is acted on.
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
    /// Since when the monitor has watched with the local node up: a replica
    /// that never saw a primary counts the primary's absence from here, a
    /// primary that never confirmed its lease counts its lapse from here.
    pub watching_since: Option<Instant>,
    /// Consecutive checks, while the local node is a replica, in which the
    /// peer was not a primary.
    pub peer_failures: u32,
    /// Of those, the consecutive ones that found the primary positively dead.
    pub dead_checks: u32,
    /// When the peer last answered as primary.
    pub primary_last_seen: Option<Instant>,
    /// The peer primary's `pg_current_wal_lsn()` at that moment (the lag guard's reference).
    pub primary_last_lsn: Option<Lsn>,
    /// Whether, at that moment, this replica streamed and the primary had a
    /// synchronous standby (in a pair, this replica).
    pub was_synchronous: bool,
    /// While primary: when the lease was last confirmed.
    pub confirmed_at: Option<Instant>,
    /// While primary, after this node promoted itself: its predecessor had
    /// stopped taking writes, so the lease holds until the peer is reached
    /// again (then the usual renewals take over).
    pub holds_since_promotion: bool,
    /// This monitor made the local primary refuse writes (lapsed lease,
    /// split-brain); it lifts that once the node is confirmed and alone.
    pub refusing_writes: bool,
    /// This monitor asked the local node to step down; until it is seen
    /// down or a replica, it is not asked again.
    pub stepping_down: bool,
    /// Consecutive ticks this primary had no streaming (answering) replica.
    pub replica_missing: u32,
}

/// What the peer looked like on one tick, for decisions and log lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Peer {
    Primary,
    Replica,
    /// Refusing connections while it starts, stops or recovers (57P03).
    Starting,
    /// No answer: refused, timed out, reset, hung. The message says which.
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
                FailureKind::Rejected => Peer::Rejected(failure.to_string()),
                _ => Peer::Unreachable(failure.to_string()),
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
    /// The primary's host answers but PostgreSQL does not run there (refused,
    /// or starting / shutting down) through `checks` consecutive checks.
    PrimaryDead { checks: u32, peer: Peer },
    /// The primary has not been seen for `unseen`, at least the lease plus
    /// the margin: if it lives, it has stopped taking writes.
    PrimaryGone { unseen: Duration, peer: Peer },
    /// Both nodes are replicas and this one leads (more replayed WAL, or the tie-break).
    BothReplicas { local: Lsn, peer: Lsn },
}

/// What tells the two primaries of a split-brain apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// Whether this node's lease lapsed (it refuses writes, or is about to).
    pub local_refuses: bool,
    /// Whether the peer refuses writes (`default_transaction_read_only`).
    pub peer_refuses: bool,
    pub local_timeline: Option<u32>,
    pub peer_timeline: Option<u32>,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let writes = |refuses: bool| {
            if refuses {
                "refuses writes"
            } else {
                "takes writes"
            }
        };
        let timeline = |tl: Option<u32>| tl.map_or("unknown".to_string(), |tl| tl.to_string());
        write!(
            f,
            "this node {} on timeline {}, the peer {} on timeline {}",
            writes(self.local_refuses),
            timeline(self.local_timeline),
            writes(self.peer_refuses),
            timeline(self.peer_timeline)
        )
    }
}

/// Why the fence commands run: a split-brain the evidence cannot settle.
#[derive(Clone, Debug, PartialEq)]
pub enum FenceWhy {
    SplitBrain(Evidence),
}

/// Why this primary refuses writes.
#[derive(Clone, Debug, PartialEq)]
pub enum RefuseWhy {
    /// It has not confirmed its lease for `unconfirmed` (at least the lease).
    LeaseLapsed {
        unconfirmed: Duration,
        witnesses: Option<Witnesses>,
    },
}

/// Why `synchronous_standby_names` changes.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncWhy {
    /// `--synchronous strict`: synchronous whatever happens.
    Strict,
    /// `--synchronous on` and the replica streams (again).
    ReplicaStreams,
    /// `--synchronous on` and no replica streamed (or answered) for this many ticks.
    ReplicaGone { ticks: u32 },
}

/// Why the monitor does nothing this tick; each renders the log line for it.
#[derive(Clone, Debug, PartialEq)]
pub enum Wait {
    /// Step 1: the local node does not answer (down, starting, being cloned).
    LocalDown(Failure),
    /// Local replica, peer primary: all is well.
    Following { streaming: bool, synchronous: bool },
    /// Local replica; the primary is positively dead, not yet `retries` times.
    PeerFailing {
        count: u32,
        retries: u32,
        peer: Peer,
    },
    /// Local replica; the primary does not answer, and has not been unseen
    /// for the lease plus the margin yet.
    PrimaryUnseen {
        unseen: Duration,
        needed: Duration,
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
    /// Local primary, lease confirmed on this tick; what the peer looks like.
    Primary(Peer),
    /// Local primary that did not confirm its lease on this tick; it still
    /// holds (confirmed `since` ago, or held since its promotion).
    Unconfirmed {
        since: Duration,
        lease: Duration,
        witnesses: Option<Witnesses>,
        peer: Peer,
    },
    /// Local primary refusing writes until it confirms its lease again.
    Refusing(Peer),
    /// Two primaries, and the peer is the stale one: it steps down.
    PeerStale(Evidence),
    /// This node was asked to step down; waiting for it to go.
    SteppingDown,
    /// `--synchronous on`: the replica is gone, but this primary cannot tell
    /// a dead replica from its own isolation (neither the peer's host nor
    /// most witnesses answer), so it stays synchronous.
    DegradeWithheld(Option<Witnesses>),
    /// `--synchronous on`: no replica streams, yet the peer answers as a
    /// replica, which is what a replica being promoted looks like for a
    /// moment; the degrade waits a tick for the promotion to show.
    DegradeDeferred,
}

/// What to do on this tick.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Wait(Wait),
    Promote(PromoteWhy),
    /// Make the local primary refuse writes (read-only, client sessions ended).
    RefuseWrites(RefuseWhy),
    /// Lift this monitor's own refusal: the lease is confirmed and the node alone.
    AllowWrites,
    /// This primary is the stale half of a split-brain: refuse writes at
    /// once, then restart it so that it rejoins its peer as a replica (pg_rewind).
    StepDown(Evidence),
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
                Wait::PrimaryUnseen { peer, .. } => format!("unseen:{}", peer.word()),
                Wait::PeerRejects(_) => "peer-rejects".into(),
                Wait::ReplicationStreams(_) => "replication-streams".into(),
                Wait::PeerLeads { .. } => "peer-leads".into(),
                Wait::LagGuard { .. } => "lag-guard".into(),
                Wait::NotSynchronous => "not-synchronous".into(),
                Wait::WitnessMinority(_) => "witness-minority".into(),
                Wait::Paused(action) => format!("paused:{}", action.key()),
                Wait::Primary(peer) => format!("primary:{}", peer.word()),
                Wait::Unconfirmed { peer, .. } => format!("unconfirmed:{}", peer.word()),
                Wait::Refusing(peer) => format!("refusing:{}", peer.word()),
                Wait::PeerStale(_) => "peer-stale".into(),
                Wait::SteppingDown => "stepping-down".into(),
                Wait::DegradeWithheld(_) => "degrade-withheld".into(),
                Wait::DegradeDeferred => "degrade-deferred".into(),
            },
            Action::Promote(_) => "promote".into(),
            Action::RefuseWrites(_) => "refuse-writes".into(),
            Action::AllowWrites => "allow-writes".into(),
            Action::StepDown(_) => "step-down".into(),
            Action::Fence(_) => "fence".into(),
            Action::SetSynchronous(on, _) => format!("synchronous:{on}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Action::Wait(wait) => wait.fmt(f),
            Action::Promote(PromoteWhy::PrimaryDead { checks, peer }) => write!(
                f,
                "{peer} ({checks}/{checks}): the primary's host answers but PostgreSQL does not \
                 run there; promoting the local replica"
            ),
            Action::Promote(PromoteWhy::PrimaryGone { unseen, peer }) => write!(
                f,
                "{peer}: no primary seen for {:.1} s, longer than its lease plus the margin, so \
                 it no longer takes writes; promoting the local replica",
                unseen.as_secs_f64()
            ),
            Action::Promote(PromoteWhy::BothReplicas { local, peer }) => write!(
                f,
                "promoting the local replica: both nodes are replicas and this one leads \
                 (replayed {local}, peer {peer})"
            ),
            Action::RefuseWrites(RefuseWhy::LeaseLapsed {
                unconfirmed,
                witnesses,
            }) => {
                write!(
                    f,
                    "LEASE LAPSED: this primary reached neither its peer's host nor a majority of \
                     witnesses for {:.1} s",
                    unconfirmed.as_secs_f64()
                )?;
                if let Some(witnesses) = witnesses {
                    write!(f, " ({witnesses})")?;
                }
                f.write_str("; refusing writes, as its peer may promote")
            }
            Action::AllowWrites => {
                f.write_str("lease confirmed again and no other primary: taking writes again")
            }
            Action::StepDown(evidence) => write!(
                f,
                "SPLIT-BRAIN: the peer is a primary too and this node is the stale one \
                 ({evidence}); stepping down to rejoin it as a replica"
            ),
            Action::Fence(FenceWhy::SplitBrain(evidence)) => write!(
                f,
                "SPLIT-BRAIN: the peer is a primary too and the evidence cannot tell which is \
                 stale ({evidence}); fencing this node"
            ),
            Action::SetSynchronous(true, why) => match why {
                SyncWhy::Strict => f.write_str("making commits synchronous (--synchronous strict)"),
                _ => f.write_str("replica streams: making commits synchronous again"),
            },
            Action::SetSynchronous(false, why) => match why {
                SyncWhy::ReplicaGone { ticks } => write!(
                    f,
                    "no replica streamed or answered for {ticks} check(s), and the network \
                     works: degrading to asynchronous commits so writes do not block"
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
            Wait::PrimaryUnseen {
                unseen,
                needed,
                peer,
            } => write!(
                f,
                "{peer}; no primary seen for {:.1} s: promoting only after {:.1} s (the lease \
                 plus the margin), when a primary that lives has stopped taking writes",
                unseen.as_secs_f64(),
                needed.as_secs_f64()
            ),
            Wait::PeerRejects(message) => write!(
                f,
                "peer answers but refuses the monitor's login, so it is not gone; \
                 no failover is possible until the credentials (or certificates) are fixed: {message}"
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
            Wait::Unconfirmed {
                since,
                lease,
                witnesses,
                peer,
            } => {
                write!(f, "local primary, {peer}")?;
                if let Some(witnesses) = witnesses {
                    write!(f, ", {witnesses}")?;
                }
                write!(
                    f,
                    ": lease last confirmed {:.1} s ago; it lapses at {:.1} s",
                    since.as_secs_f64(),
                    lease.as_secs_f64()
                )
            }
            Wait::Refusing(peer) => write!(
                f,
                "local primary refuses writes until its peer answers as a replica (it may have \
                 promoted while this node's lease was lapsed); {peer}"
            ),
            Wait::PeerStale(evidence) => write!(
                f,
                "the peer is a primary too, and the stale one ({evidence}): waiting for it to \
                 step down"
            ),
            Wait::SteppingDown => {
                f.write_str("stepping down: waiting for the local node to restart as a replica")
            }
            Wait::DegradeWithheld(witnesses) => match witnesses {
                Some(witnesses) => write!(
                    f,
                    "no replica streams, but only {witnesses} and the peer's host does not \
                     answer: this primary may be isolated, staying synchronous"
                ),
                None => f.write_str(
                    "no replica streams and the peer's host does not answer: this primary may \
                     be isolated, staying synchronous",
                ),
            },
            Wait::DegradeDeferred => f.write_str(
                "no replica streams, yet the peer answers as a replica: it may be promoting, \
                 staying synchronous for one more check",
            ),
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
/// "starting", an authentication error or a server that accepted the
/// connection and then hung all prove the network path works; a timeout of
/// the connection itself or a reset does not.
pub fn peer_reached(peer: &Result<Status, Failure>) -> bool {
    match peer {
        Ok(_) => true,
        Err(failure) => !matches!(failure.kind, FailureKind::Timeout | FailureKind::Transient),
    }
}

/// Whether the peer is positively not running PostgreSQL: its host refuses
/// the connection, or PostgreSQL answers that it is starting or stopping.
/// Such a primary accepts no writes, so it need not be waited out.
pub fn positively_dead(peer: &Result<Status, Failure>) -> bool {
    match peer {
        Ok(status) => status.role == Role::Starting,
        Err(failure) => matches!(failure.kind, FailureKind::Refused | FailureKind::Starting),
    }
}

/// The lease: whether a primary confirmed at `confirmed_at` (or watching
/// since `watching_since`, when it never confirmed) may still take writes
/// at `now`. Shared by the tick's decision and the watchdog thread, which
/// enforces it while a tick is stuck waiting on a probe.
pub fn lease_holds(
    confirmed_at: Option<Instant>,
    watching_since: Option<Instant>,
    holds_since_promotion: bool,
    now: Instant,
    lease: Duration,
) -> bool {
    if holds_since_promotion {
        return true;
    }
    match confirmed_at.or(watching_since) {
        Some(at) => now.saturating_duration_since(at) < lease,
        None => true,
    }
}

/// What the loop publishes after each tick for the watchdog thread, which
/// enforces the lease while a tick is stuck waiting on a probe (a hung local
/// server, a peer behind a cut link).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaseView {
    /// The local node is a primary taking writes, as the last tick saw it.
    pub takes_writes: bool,
    pub confirmed_at: Option<Instant>,
    pub watching_since: Option<Instant>,
    pub holds_since_promotion: bool,
    /// A pause file exists: no automatic action, this one included.
    pub paused: bool,
}

impl LeaseView {
    /// What the last tick left for the watchdog. A local node that did not
    /// answer keeps what it was: a hung primary may resume taking writes. One
    /// positively not running (nothing listens, or PostgreSQL says it is
    /// starting or shutting down) takes none: a server started since is the
    /// next tick's to judge, and is not killed for a lease that lapsed while
    /// it was down (a planned switchover restarts the old primary as a
    /// standby within seconds).
    pub fn after(obs: &Observation, state: &State, previous: &LeaseView) -> LeaseView {
        let taking = match &obs.local {
            Ok(local) => local.role == Role::Primary && local.read_only != Some(true),
            down if positively_dead(down) => false,
            Err(_) => previous.takes_writes,
        };
        let takes_writes = taking && !state.refusing_writes && !state.stepping_down;
        LeaseView {
            takes_writes,
            confirmed_at: state.confirmed_at,
            watching_since: state.watching_since,
            holds_since_promotion: state.holds_since_promotion,
            paused: obs.paused,
        }
    }

    /// Whether the local primary must stop taking writes now.
    pub fn lapsed(&self, now: Instant, lease: Duration) -> bool {
        self.takes_writes
            && !self.paused
            && !lease_holds(
                self.confirmed_at,
                self.watching_since,
                self.holds_since_promotion,
                now,
                lease,
            )
    }
}

/// One tick: the action and the state for the next tick.
pub fn decide(obs: &Observation, state: &State, policy: &Policy) -> (Action, State) {
    let local = match &obs.local {
        Ok(status) if matches!(status.role, Role::Primary | Role::Replica) => status,
        Ok(status) => {
            let failure = Failure {
                kind: FailureKind::Starting,
                endpoint: None,
                cause: format!("local node is {}", status.role),
            };
            return local_down(failure, state);
        }
        Err(failure) => return local_down(failure.clone(), state),
    };
    let Some(peer) = &obs.peer else {
        let failure = Failure {
            kind: FailureKind::Transient,
            endpoint: None,
            cause: "the peer was not checked".to_string(),
        };
        return local_down(failure, state);
    };
    let state = &State {
        watching_since: state.watching_since.or(Some(obs.now)),
        ..state.clone()
    };
    match local.role {
        Role::Primary => decide_primary(obs, local, peer, state, policy),
        _ => decide_replica(obs, local, peer, state, policy),
    }
}

/// The state right after this node was promoted: it now watches as a
/// primary whose lease holds until it reaches its peer again, and with
/// `--synchronous on` starts degraded, since the peer is gone (that is why
/// it promoted).
pub fn after_promotion(state: &State, policy: &Policy) -> State {
    State {
        watching_since: state.watching_since,
        holds_since_promotion: true,
        replica_missing: policy.retries.max(state.replica_missing),
        ..State::default()
    }
}

/// The state right after this node was asked to step down.
pub fn after_step_down(state: &State) -> State {
    State {
        watching_since: state.watching_since,
        stepping_down: true,
        ..State::default()
    }
}

/// Step 1: nothing is decided while the local node does not answer; a
/// promotion must be earned by fresh checks once it does.
fn local_down(failure: Failure, state: &State) -> (Action, State) {
    let next = State {
        peer_failures: 0,
        dead_checks: 0,
        replica_missing: 0,
        stepping_down: false,
        ..state.clone()
    };
    (Action::Wait(Wait::LocalDown(failure)), next)
}

/// Steps 2 and 4: a primary renews its lease, refuses writes when it
/// lapses, settles a split-brain by evidence, and manages synchronous commits.
fn decide_primary(
    obs: &Observation,
    local: &Status,
    peer: &Result<Status, Failure>,
    state: &State,
    policy: &Policy,
) -> (Action, State) {
    let witnesses = obs.witnesses.filter(|_| policy.witnesses > 0);
    let confirmed = peer_reached(peer) || witnesses.is_some_and(|w| w.majority());
    let mut next = State {
        peer_failures: 0,
        dead_checks: 0,
        primary_last_seen: None,
        primary_last_lsn: None,
        was_synchronous: false,
        confirmed_at: if confirmed {
            Some(obs.checked_from)
        } else {
            state.confirmed_at
        },
        holds_since_promotion: state.holds_since_promotion && !confirmed,
        // A read-only node this monitor did not make so (an operator's
        // maintenance) is left alone, but never counts as taking writes.
        refusing_writes: state.refusing_writes,
        ..state.clone()
    };
    if state.stepping_down {
        return (Action::Wait(Wait::SteppingDown), next);
    }
    let holds = lease_holds(
        next.confirmed_at,
        next.watching_since,
        next.holds_since_promotion,
        obs.now,
        policy.lease,
    );
    let peer_view = Peer::from_probe(Some(peer));

    if let Ok(peer_status) = peer {
        if peer_status.role == Role::Primary {
            let evidence = Evidence {
                local_refuses: !holds || state.refusing_writes,
                peer_refuses: peer_status.read_only == Some(true),
                local_timeline: local.timeline,
                peer_timeline: peer_status.timeline,
            };
            return (unless_paused(obs, split_brain(evidence)), next);
        }
    }

    let unconfirmed = || {
        obs.now
            .saturating_duration_since(next.confirmed_at.or(next.watching_since).unwrap_or(obs.now))
    };
    if !holds {
        if state.refusing_writes || local.read_only == Some(true) {
            next.refusing_writes = state.refusing_writes;
            return (Action::Wait(Wait::Refusing(peer_view)), next);
        }
        let refuse = Action::RefuseWrites(RefuseWhy::LeaseLapsed {
            unconfirmed: unconfirmed(),
            witnesses,
        });
        return (unless_paused(obs, refuse), next);
    }
    if state.refusing_writes {
        // Once the lease lapsed, the peer may have promoted (and died since,
        // or be out of sight): only the peer itself answering as a replica
        // shows it did not, and lifts the refusal. Witnesses, or a lease
        // confirmed before the refusal, do not.
        let peer_is_replica = matches!(peer, Ok(status) if status.role == Role::Replica);
        if !peer_is_replica {
            return (Action::Wait(Wait::Refusing(peer_view)), next);
        }
        return (Action::AllowWrites, next);
    }

    if policy.synchronous != SyncMode::Off {
        let answering = replica_answers(local, policy);
        next.replica_missing = if answering {
            0
        } else {
            state.replica_missing.saturating_add(1)
        };
        if let Some(action) = synchronous_action(local, peer, confirmed, witnesses, &next, policy) {
            return (action, next);
        }
    }

    let wait = if confirmed {
        Wait::Primary(peer_view)
    } else {
        Wait::Unconfirmed {
            since: unconfirmed(),
            lease: policy.lease,
            witnesses,
            peer: peer_view,
        }
    };
    (Action::Wait(wait), next)
}

/// Two primaries. The stale one steps down and rejoins; when the evidence
/// cannot tell which is stale, both fence (downtime rather than diverging
/// data). Both monitors weigh the same evidence, so exactly one steps down
/// while the other goes on, or both fence.
///
/// Every promotion starts a new timeline, so the node on the older timeline
/// is the one its peer was promoted over (by its monitor, after its lease
/// lapsed or it died; or by an operator): it steps down, and the newer one
/// goes on (taking writes again once the other is no longer a primary, if
/// it had refused them). Equal or unknown timelines mean no promotion
/// happened between them (two clusters, a restored backup): both fence.
/// Whether each refuses writes is logged with the verdict, as it tells an
/// operator which one stopped acknowledging writes first.
pub fn split_brain(evidence: Evidence) -> Action {
    match (evidence.local_timeline, evidence.peer_timeline) {
        (Some(local), Some(peer)) if local < peer => Action::StepDown(evidence),
        (Some(local), Some(peer)) if local > peer => Action::Wait(Wait::PeerStale(evidence)),
        _ => Action::Fence(FenceWhy::SplitBrain(evidence)),
    }
}

/// Whether a replica streams and, with `--replica-silence`, has replied
/// recently enough: a hung standby still shows as streaming until
/// `wal_sender_timeout`, but its replies stop at once.
fn replica_answers(local: &Status, policy: &Policy) -> bool {
    let streaming = local.streaming_replicas.unwrap_or(0) > 0;
    let silent = match (policy.replica_silence, local.standby_reply_age_ms) {
        (Some(limit), Some(age)) => age.max(0) as u128 > limit.as_millis(),
        _ => false,
    };
    streaming && !silent
}

/// `--synchronous`: the change to `synchronous_standby_names` this tick
/// needs, if any. `next.replica_missing` is already updated for this tick.
fn synchronous_action(
    local: &Status,
    peer: &Result<Status, Failure>,
    confirmed: bool,
    witnesses: Option<Witnesses>,
    next: &State,
    policy: &Policy,
) -> Option<Action> {
    // Unknown (an older probe): never guess about a setting that can block writes.
    let names = local.synchronous_standby_names.as_deref()?;
    let synchronous = !names.trim().is_empty();
    let answering = next.replica_missing == 0;
    match policy.synchronous {
        SyncMode::Off => None,
        SyncMode::Strict => (!synchronous).then_some(Action::SetSynchronous(true, SyncWhy::Strict)),
        SyncMode::On if !synchronous && answering => {
            Some(Action::SetSynchronous(true, SyncWhy::ReplicaStreams))
        }
        // An isolated primary must not start acknowledging commits the
        // replica (perhaps promoting right now) will never have: degrade only
        // when this tick proved the network works (the peer's host answered,
        // or a majority of witnesses), so the replica is dead or hung, not
        // cut off.
        // A replica being promoted ends its WAL receiver first and leaves
        // recovery a few milliseconds later; a tick can catch it in between,
        // or probe it just before while this node has already lost its
        // standby. Degrading then would acknowledge commits the new primary
        // never receives. So while the peer answers as a replica, the
        // degrade waits one tick: by then a promotion shows as a second
        // primary (the split-brain rule steps the stale one down), and a
        // replica still in recovery is really not streaming.
        SyncMode::On
            if synchronous
                && !answering
                && next.replica_missing < 2
                && matches!(peer, Ok(status) if status.role == Role::Replica) =>
        {
            Some(Action::Wait(Wait::DegradeDeferred))
        }
        SyncMode::On if synchronous && !answering => Some(if confirmed {
            Action::SetSynchronous(
                false,
                SyncWhy::ReplicaGone {
                    ticks: next.replica_missing,
                },
            )
        } else {
            Action::Wait(Wait::DegradeWithheld(witnesses))
        }),
        SyncMode::On => None,
    }
}

/// Steps 3 and 5: a replica promotes over a primary that is positively dead
/// after `retries` checks, over one it cannot see at all only once it has
/// been unseen for the lease plus the margin, and every guard agrees.
fn decide_replica(
    obs: &Observation,
    local: &Status,
    peer: &Result<Status, Failure>,
    state: &State,
    policy: &Policy,
) -> (Action, State) {
    let mut next = State {
        confirmed_at: None,
        holds_since_promotion: false,
        refusing_writes: false,
        stepping_down: false,
        replica_missing: 0,
        ..state.clone()
    };
    let peer_view = Peer::from_probe(Some(peer));
    let streaming = local.wal_receiver_streaming == Some(true);
    match (&peer_view, peer) {
        (Peer::Primary, Ok(status)) => {
            next.peer_failures = 0;
            next.dead_checks = 0;
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
            next.dead_checks = 0;
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
            next.dead_checks = if positively_dead(peer) {
                state.dead_checks.saturating_add(1)
            } else {
                0
            };
            return (Action::Wait(Wait::ReplicationStreams(peer_view)), next);
        }
        _ => {}
    }

    let count = state.peer_failures.saturating_add(1);
    next.peer_failures = count;
    next.dead_checks = if positively_dead(peer) {
        state.dead_checks.saturating_add(1)
    } else {
        0
    };
    let why = match peer {
        Ok(peer_status) if peer_status.role == Role::Replica => {
            if count < policy.retries {
                let failing = Wait::PeerFailing {
                    count,
                    retries: policy.retries,
                    peer: peer_view,
                };
                return (Action::Wait(failing), next);
            }
            let local_lsn = local.replayed_wal_lsn.unwrap_or(Lsn(0));
            let peer_lsn = peer_status.replayed_wal_lsn.unwrap_or(Lsn(0));
            let leads =
                local_lsn > peer_lsn || (local_lsn == peer_lsn && policy.index < policy.peer_index);
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
            let unseen = obs.now.saturating_duration_since(
                state
                    .primary_last_seen
                    .or(next.watching_since)
                    .unwrap_or(obs.now),
            );
            let why = if next.dead_checks >= policy.retries {
                PromoteWhy::PrimaryDead {
                    checks: next.dead_checks,
                    peer: peer_view.clone(),
                }
            } else if unseen >= policy.promote_after() {
                PromoteWhy::PrimaryGone {
                    unseen,
                    peer: peer_view.clone(),
                }
            } else if positively_dead(peer) {
                let failing = Wait::PeerFailing {
                    count: next.dead_checks,
                    retries: policy.retries,
                    peer: peer_view,
                };
                return (Action::Wait(failing), next);
            } else {
                let unseen = Wait::PrimaryUnseen {
                    unseen,
                    needed: policy.promote_after(),
                    peer: peer_view,
                };
                return (Action::Wait(unseen), next);
            };
            if let Err(wait) = data_guard(local, state, policy) {
                return (Action::Wait(wait), next);
            }
            why
        }
    };
    if policy.witnesses > 0 && !obs.witnesses.is_some_and(|w| w.majority()) {
        return (Action::Wait(Wait::WitnessMinority(obs.witnesses)), next);
    }
    (unless_paused(obs, Action::Promote(why)), next)
}

/// The lag guard and the synchronous rule: may a replica whose primary is
/// gone promote without losing what the primary acknowledged?
fn data_guard(local: &Status, state: &State, policy: &Policy) -> Result<(), Wait> {
    let lag = match (state.primary_last_lsn, local.replayed_wal_lsn) {
        (Some(primary), Some(replayed)) => Some(primary.0.saturating_sub(replayed.0)),
        _ => None,
    };
    // None: no lag guard configured. An unknown lag never passes the guard.
    let lag_ok = policy
        .max_lag_bytes
        .map(|max| lag.is_some_and(|lag| lag <= max));
    let lag_wait = |max| Wait::LagGuard { lag, max };
    match (policy.synchronous, lag_ok, policy.max_lag_bytes) {
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

    fn policy() -> Policy {
        Policy {
            index: 1,
            peer_index: 0,
            retries: 3,
            lease: SECOND * 5,
            promote_margin: SECOND * 3,
            max_lag_bytes: None,
            witnesses: 0,
            synchronous: SyncMode::Off,
            replica_silence: None,
        }
    }

    fn primary(lsn: u64) -> Status {
        Status {
            role: Role::Primary,
            in_recovery: Some(false),
            timeline: Some(1),
            current_wal_lsn: Some(Lsn(lsn)),
            streaming_replicas: Some(1),
            synchronous_standby_names: Some(String::new()),
            synchronous_replicas: Some(0),
            read_only: Some(false),
            ..Status::default()
        }
    }

    fn replica(replayed: u64, streaming: bool) -> Status {
        Status {
            role: Role::Replica,
            in_recovery: Some(true),
            timeline: Some(1),
            received_wal_lsn: Some(Lsn(replayed)),
            replayed_wal_lsn: Some(Lsn(replayed)),
            wal_receiver_streaming: Some(streaming),
            ..Status::default()
        }
    }

    fn failure(kind: FailureKind) -> Failure {
        Failure {
            kind,
            endpoint: None,
            cause: format!("{kind:?}"),
        }
    }

    fn refused() -> Result<Status, Failure> {
        Err(failure(FailureKind::Refused))
    }

    fn timed_out() -> Result<Status, Failure> {
        Err(failure(FailureKind::Timeout))
    }

    fn observe(local: Result<Status, Failure>, peer: Result<Status, Failure>) -> Observation {
        let now = Instant::now();
        Observation {
            checked_from: now,
            now,
            paused: false,
            local,
            peer: Some(peer),
            witnesses: None,
        }
    }

    impl Observation {
        fn at(mut self, now: Instant) -> Self {
            self.checked_from = now;
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
    fn run(obs: &Observation, state: &State, policy: &Policy, ticks: u32) -> (Action, State) {
        let mut state = state.clone();
        let mut action = None;
        for _ in 0..ticks {
            let (next_action, next_state) = decide(obs, &state, policy);
            action = Some(next_action);
            state = next_state;
        }
        (action.expect("at least one tick"), state)
    }

    /// Decides `obs` at each of `times` after `start`, returning the last action.
    fn run_at(
        obs: &Observation,
        state: &State,
        policy: &Policy,
        start: Instant,
        times: &[Duration],
    ) -> (Action, State) {
        let mut state = state.clone();
        let mut action = None;
        for &at in times {
            let (next_action, next_state) = decide(&obs.clone().at(start + at), &state, policy);
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
            FailureKind::Hung,
        ] {
            let obs = observe(Err(failure(kind)), refused());
            let (action, state) = run(&obs, &State::default(), &policy(), 10);
            assert!(
                matches!(action, Action::Wait(Wait::LocalDown(_))),
                "{kind:?}: {action:?}"
            );
            assert_eq!(state.peer_failures, 0);
        }
    }

    #[test]
    fn failures_counted_before_the_local_node_went_down_do_not_carry_over() {
        let policy = policy();
        let gone = observe(Ok(replica(100, false)), refused());
        let (_, state) = run(&gone, &State::default(), &policy, 2);
        assert_eq!(state.dead_checks, 2);
        let down = observe(Err(failure(FailureKind::Refused)), refused());
        let (_, state) = decide(&down, &state, &policy);
        let (action, state) = decide(&gone, &state, &policy);
        assert!(!is_promote(&action), "{action:?}");
        assert_eq!(state.dead_checks, 1);
    }

    // --- step 3: a replica watches its primary ---

    #[test]
    fn replica_follows_a_primary_peer_and_remembers_its_position() {
        let mut peer = primary(5000);
        peer.synchronous_replicas = Some(1);
        let obs = observe(Ok(replica(4000, true)), Ok(peer));
        let (action, state) = decide(&obs, &State::default(), &policy());
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
    fn a_positively_dead_primary_is_replaced_after_retries_checks() {
        let policy = policy();
        for peer in [
            refused(),
            Err(failure(FailureKind::Starting)),
            Ok(Status {
                role: Role::Starting,
                ..Status::default()
            }),
        ] {
            let obs = observe(Ok(replica(100, false)), peer.clone());
            let (action, _) = run(&obs, &State::default(), &policy, 2);
            assert!(
                matches!(action, Action::Wait(Wait::PeerFailing { count: 2, .. })),
                "{peer:?}: {action:?}"
            );
            let (action, _) = run(&obs, &State::default(), &policy, 3);
            assert!(
                matches!(
                    action,
                    Action::Promote(PromoteWhy::PrimaryDead { checks: 3, .. })
                ),
                "{peer:?}: {action:?}"
            );
        }
    }

    #[test]
    fn a_primary_that_does_not_answer_is_waited_out_for_the_lease_and_margin() {
        let policy = policy();
        let start = Instant::now();
        let seen = observe(Ok(replica(100, true)), Ok(primary(100))).at(start);
        let (_, state) = decide(&seen, &State::default(), &policy);
        // A cut link (the connection times out), a hung server (it connects,
        // then does not answer), a reset: the primary may live and take writes.
        for peer in [
            timed_out(),
            Err(failure(FailureKind::Hung)),
            Err(failure(FailureKind::Transient)),
        ] {
            let gone = observe(Ok(replica(100, false)), peer.clone());
            let ticks: Vec<Duration> = (1..=7).map(|s| SECOND * s).collect();
            let (action, _) = run_at(&gone, &state, &policy, start, &ticks);
            assert!(
                matches!(action, Action::Wait(Wait::PrimaryUnseen { .. })),
                "{peer:?} after 7 s: {action:?}"
            );
            let (action, _) = run_at(&gone, &state, &policy, start, &[SECOND * 8]);
            assert_eq!(
                action,
                Action::Promote(PromoteWhy::PrimaryGone {
                    unseen: SECOND * 8,
                    peer: Peer::from_probe(Some(&peer)),
                }),
                "{peer:?} after 8 s"
            );
        }
    }

    #[test]
    fn a_primary_never_seen_is_waited_out_from_the_monitors_start() {
        let policy = policy();
        let start = Instant::now();
        let gone = observe(Ok(replica(100, false)), timed_out());
        let (action, _) = run_at(
            &gone,
            &State::default(),
            &policy,
            start,
            &[Duration::ZERO, SECOND * 7],
        );
        assert!(!is_promote(&action), "{action:?}");
        let (action, _) = run_at(
            &gone,
            &State::default(),
            &policy,
            start,
            &[Duration::ZERO, SECOND * 8],
        );
        assert!(is_promote(&action), "{action:?}");
    }

    #[test]
    fn the_replica_waits_longer_than_the_primary_may_go_on_taking_writes() {
        // The primary renews its lease on every check that reaches the peer;
        // the replica counts from its own last sight of the primary, which is
        // at most one interval (1 s here) older. The primary's watchdog then
        // needs at most one second to refuse writes or stop its server.
        let policy = policy();
        let interval = SECOND;
        let primary_stops_by = policy.lease + interval + SECOND;
        assert!(policy.promote_after() > primary_stops_by);
    }

    #[test]
    fn a_healthy_check_resets_the_counts() {
        let policy = policy();
        let gone = observe(Ok(replica(100, false)), refused());
        let back = observe(Ok(replica(100, true)), Ok(primary(200)));
        let (_, state) = run(&gone, &State::default(), &policy, 2);
        let (_, state) = decide(&back, &state, &policy);
        assert_eq!((state.peer_failures, state.dead_checks), (0, 0));
        let (action, _) = run(&gone, &state, &policy, 2);
        assert!(!is_promote(&action), "{action:?}");
    }

    #[test]
    fn a_dead_streak_broken_by_a_timeout_starts_again() {
        let policy = policy();
        let dead = observe(Ok(replica(100, false)), refused());
        let silent = observe(Ok(replica(100, false)), timed_out());
        let (_, state) = run(&dead, &State::default(), &policy, 2);
        let (_, state) = decide(&silent, &state, &policy);
        let (action, state) = decide(&dead, &state, &policy);
        assert!(!is_promote(&action), "{action:?}");
        assert_eq!(state.dead_checks, 1);
    }

    #[test]
    fn a_peer_that_rejects_the_login_is_not_gone() {
        let obs = observe(Ok(replica(100, false)), Err(failure(FailureKind::Rejected)));
        let (action, state) = run(&obs, &State::default(), &policy(), 10);
        assert!(
            matches!(action, Action::Wait(Wait::PeerRejects(_))),
            "{action:?}"
        );
        assert_eq!(state.peer_failures, 0);
    }

    #[test]
    fn a_replica_that_still_streams_never_promotes() {
        let obs = observe(Ok(replica(100, true)), refused());
        let (action, state) = run(&obs, &State::default(), &policy(), 10);
        assert!(
            matches!(action, Action::Wait(Wait::ReplicationStreams(_))),
            "{action:?}"
        );
        assert_eq!(state.peer_failures, 10, "the failures still count");
    }

    #[test]
    fn once_the_stream_stops_dead_checks_counted_while_it_streamed_promote_at_once() {
        let policy = policy();
        let streaming = observe(Ok(replica(100, true)), refused());
        let (_, state) = run(&streaming, &State::default(), &policy, 2);
        let stopped = observe(Ok(replica(100, false)), refused());
        let (action, _) = decide(&stopped, &state, &policy);
        assert!(is_promote(&action), "{action:?}");
    }

    #[test]
    fn hung_and_timed_out_peers_differ_in_what_they_prove() {
        let hung = Err(failure(FailureKind::Hung));
        assert!(peer_reached(&hung), "a hung server's host answered");
        assert!(!positively_dead(&hung), "a hung server may resume");
        assert!(!peer_reached(&timed_out()));
        assert!(!positively_dead(&timed_out()));
        assert!(peer_reached(&refused()) && positively_dead(&refused()));
    }

    // --- step 5: both replicas ---

    #[test]
    fn of_two_replicas_the_more_advanced_promotes() {
        let policy = policy();
        let ahead = observe(Ok(replica(200, false)), Ok(replica(100, false)));
        let (action, _) = run(&ahead, &State::default(), &policy, 3);
        assert_eq!(
            action,
            Action::Promote(PromoteWhy::BothReplicas {
                local: Lsn(200),
                peer: Lsn(100)
            })
        );
        let behind = observe(Ok(replica(100, false)), Ok(replica(200, false)));
        let (action, _) = run(&behind, &State::default(), &policy, 10);
        assert!(
            matches!(action, Action::Wait(Wait::PeerLeads { .. })),
            "{action:?}"
        );
    }

    #[test]
    fn of_two_equal_replicas_the_lower_index_promotes() {
        let tie = observe(Ok(replica(100, false)), Ok(replica(100, false)));
        let lower = Policy {
            index: 0,
            peer_index: 1,
            ..policy()
        };
        let higher = Policy {
            index: 1,
            peer_index: 0,
            ..policy()
        };
        assert!(is_promote(&run(&tie, &State::default(), &lower, 3).0));
        assert!(!is_promote(&run(&tie, &State::default(), &higher, 10).0));
    }

    #[test]
    fn replicas_streaming_from_each_other_still_settle_who_promotes() {
        let cascade = observe(Ok(replica(200, true)), Ok(replica(100, true)));
        assert!(is_promote(
            &run(&cascade, &State::default(), &policy(), 3).0
        ));
    }

    #[test]
    fn the_lag_guard_does_not_apply_between_two_visible_replicas() {
        let policy = Policy {
            max_lag_bytes: Some(10),
            ..policy()
        };
        let state = State {
            primary_last_lsn: Some(Lsn(1_000_000)),
            ..State::default()
        };
        let obs = observe(Ok(replica(200, false)), Ok(replica(100, false)));
        assert!(is_promote(&run(&obs, &state, &policy, 3).0));
    }

    // --- step 2: the lease ---

    #[test]
    fn a_primary_that_reaches_its_peers_host_keeps_taking_writes() {
        for peer in [
            Ok(replica(100, true)),
            refused(),
            Err(failure(FailureKind::Hung)),
            Err(failure(FailureKind::Rejected)),
        ] {
            let obs = observe(Ok(primary(100)), peer.clone());
            let ticks: Vec<Duration> = (0..=60).map(|s| SECOND * s).collect();
            let (action, _) = run_at(&obs, &State::default(), &policy(), Instant::now(), &ticks);
            assert!(
                matches!(action, Action::Wait(Wait::Primary(_))),
                "{peer:?}: {action:?}"
            );
        }
    }

    #[test]
    fn a_primary_that_cannot_confirm_its_lease_refuses_writes_when_it_lapses() {
        let policy = policy();
        let start = Instant::now();
        let healthy = observe(Ok(primary(100)), Ok(replica(100, true))).at(start);
        let (_, state) = decide(&healthy, &State::default(), &policy);
        assert_eq!(state.confirmed_at, Some(start));
        let cut = observe(Ok(primary(100)), timed_out());
        let (action, state) = run_at(&cut, &state, &policy, start, &[SECOND * 4]);
        assert!(
            matches!(action, Action::Wait(Wait::Unconfirmed { .. })),
            "{action:?}"
        );
        let (action, _) = run_at(&cut, &state, &policy, start, &[SECOND * 5]);
        assert_eq!(
            action,
            Action::RefuseWrites(RefuseWhy::LeaseLapsed {
                unconfirmed: SECOND * 5,
                witnesses: None
            })
        );
    }

    /// A tick whose checks took long is judged when they ended: the lease
    /// confirmed before the cut may have lapsed meanwhile (the watchdog
    /// refused writes while the tick waited), and it is not lifted on it.
    #[test]
    fn a_slow_tick_judges_the_lease_when_its_checks_ended() {
        let policy = policy();
        let start = Instant::now();
        let healthy = observe(Ok(primary(100)), Ok(replica(100, true))).at(start);
        let (_, state) = decide(&healthy, &State::default(), &policy);
        let mut slow_cut = observe(Ok(primary(100)), timed_out()).at(start + SECOND * 3);
        slow_cut.now = start + SECOND * 6;
        let (action, _) = decide(&slow_cut, &state, &policy);
        assert!(
            matches!(action, Action::RefuseWrites(RefuseWhy::LeaseLapsed { .. })),
            "{action:?}"
        );
        let refusing = State {
            refusing_writes: true,
            ..state
        };
        let mut read_only = primary(100);
        read_only.read_only = Some(true);
        let within_old_lease = observe(Ok(read_only), timed_out()).at(start + SECOND * 4);
        let (action, _) = decide(&within_old_lease, &refusing, &policy);
        assert!(
            matches!(action, Action::Wait(Wait::Refusing(_))),
            "{action:?}"
        );
    }

    /// After a lapse the peer may have promoted: witnesses renew the lease
    /// but do not lift the refusal; the peer answering as a replica does.
    #[test]
    fn a_refusal_is_lifted_only_by_the_peer_answering_as_a_replica() {
        let policy = Policy {
            witnesses: 1,
            ..policy()
        };
        let refusing = State {
            refusing_writes: true,
            ..State::default()
        };
        let mut read_only = primary(100);
        read_only.read_only = Some(true);
        for peer in [timed_out(), refused()] {
            let witnessed = observe(Ok(read_only.clone()), peer).witnesses(1, 1);
            let (action, _) = decide(&witnessed, &refusing, &policy);
            assert!(
                matches!(action, Action::Wait(Wait::Refusing(_))),
                "{action:?}"
            );
        }
        let back = observe(Ok(read_only), Ok(replica(100, false))).witnesses(1, 1);
        assert_eq!(decide(&back, &refusing, &policy).0, Action::AllowWrites);
    }

    #[test]
    fn a_majority_of_witnesses_renews_the_lease_a_minority_does_not() {
        let policy = Policy {
            witnesses: 2,
            ..policy()
        };
        let start = Instant::now();
        let ticks: Vec<Duration> = (0..=10).map(|s| SECOND * s).collect();
        let majority = observe(Ok(primary(100)), timed_out()).witnesses(2, 2);
        let (action, _) = run_at(&majority, &State::default(), &policy, start, &ticks);
        assert!(
            matches!(action, Action::Wait(Wait::Primary(_))),
            "{action:?}"
        );
        let minority = observe(Ok(primary(100)), timed_out()).witnesses(1, 2);
        let (action, _) = run_at(&minority, &State::default(), &policy, start, &ticks);
        assert!(
            matches!(action, Action::RefuseWrites(RefuseWhy::LeaseLapsed { .. })),
            "{action:?}"
        );
    }

    #[test]
    fn a_primary_that_never_confirms_refuses_writes_a_lease_after_its_monitor_started() {
        let cut = observe(Ok(primary(100)), timed_out());
        let start = Instant::now();
        let (action, _) = run_at(
            &cut,
            &State::default(),
            &policy(),
            start,
            &[Duration::ZERO, SECOND * 4],
        );
        assert!(!matches!(action, Action::RefuseWrites(_)), "{action:?}");
        let (action, _) = run_at(
            &cut,
            &State::default(),
            &policy(),
            start,
            &[Duration::ZERO, SECOND * 5],
        );
        assert!(matches!(action, Action::RefuseWrites(_)), "{action:?}");
    }

    #[test]
    fn a_new_primary_holds_its_lease_until_it_reaches_its_peer_again() {
        let policy = policy();
        let start = Instant::now();
        let state = after_promotion(
            &State {
                watching_since: Some(start),
                ..State::default()
            },
            &policy,
        );
        // Its predecessor stopped taking writes before it promoted.
        let cut = observe(Ok(primary(100)), timed_out());
        let (action, state) = run_at(&cut, &state, &policy, start, &[SECOND * 60]);
        assert!(!matches!(action, Action::RefuseWrites(_)), "{action:?}");
        // Once the peer is reached, the usual renewals take over.
        let reached = observe(Ok(primary(100)), refused());
        let (_, state) = run_at(&reached, &state, &policy, start, &[SECOND * 61]);
        assert!(!state.holds_since_promotion);
        let (action, _) = run_at(&cut, &state, &policy, start, &[SECOND * 66]);
        assert!(matches!(action, Action::RefuseWrites(_)), "{action:?}");
    }

    #[test]
    fn a_refusing_primary_takes_writes_again_once_confirmed_and_alone() {
        let policy = policy();
        let refusing = State {
            refusing_writes: true,
            ..State::default()
        };
        let mut read_only = primary(100);
        read_only.read_only = Some(true);
        let still_cut = observe(Ok(read_only.clone()), timed_out());
        let start = Instant::now();
        let (action, _) = run_at(
            &still_cut,
            &refusing,
            &policy,
            start,
            &[Duration::ZERO, SECOND * 9],
        );
        assert!(
            matches!(action, Action::Wait(Wait::Refusing(_))),
            "{action:?}"
        );
        let back = observe(Ok(read_only), Ok(replica(100, false)));
        let (action, state) = decide(&back, &refusing, &policy);
        assert_eq!(action, Action::AllowWrites);
        assert!(state.refusing_writes, "cleared once the loop has acted");
    }

    #[test]
    fn a_node_read_only_by_an_operator_is_never_counted_as_taking_writes() {
        let mut read_only = primary(100);
        read_only.read_only = Some(true);
        let obs = observe(Ok(read_only), timed_out());
        let (action, state) = run(&obs, &State::default(), &policy(), 1);
        let taking = LeaseView {
            takes_writes: true,
            ..LeaseView::default()
        };
        assert!(
            !LeaseView::after(&obs, &state, &taking).takes_writes,
            "{action:?}"
        );
    }

    #[test]
    fn a_primary_that_stops_answering_stays_watched_by_the_watchdog() {
        let healthy = observe(Ok(primary(100)), Ok(replica(100, true)));
        let (_, state) = decide(&healthy, &State::default(), &policy());
        let view = LeaseView::after(&healthy, &state, &LeaseView::default());
        assert!(view.takes_writes);
        let hung = observe(Err(failure(FailureKind::Hung)), Ok(replica(100, true)));
        let (_, state) = decide(&hung, &state, &policy());
        let view = LeaseView::after(&hung, &state, &view);
        assert!(view.takes_writes, "it may resume taking writes");
        assert_eq!(
            view.confirmed_at,
            Some(healthy.now),
            "the lease is not renewed"
        );
    }

    #[test]
    fn a_primary_whose_server_stopped_is_left_to_the_loop_not_the_watchdog() {
        let healthy = observe(Ok(primary(100)), Ok(replica(100, true)));
        let (_, state) = decide(&healthy, &State::default(), &policy());
        let view = LeaseView::after(&healthy, &state, &LeaseView::default());
        for down in [FailureKind::Refused, FailureKind::Starting] {
            let stopped = observe(Err(failure(down)), Ok(replica(100, true)));
            let (_, next) = decide(&stopped, &state, &policy());
            let after = LeaseView::after(&stopped, &next, &view);
            assert!(!after.takes_writes, "{down:?}: no server takes writes");
            assert!(!after.lapsed(healthy.now + SECOND * 60, SECOND * 5));
        }
    }

    #[test]
    fn the_watchdog_enforces_the_same_lease() {
        let start = Instant::now();
        let view = LeaseView {
            takes_writes: true,
            confirmed_at: Some(start),
            watching_since: Some(start),
            ..LeaseView::default()
        };
        let lease = SECOND * 5;
        assert!(!view.lapsed(start + SECOND * 4, lease));
        assert!(view.lapsed(start + SECOND * 5, lease));
        let refusing = LeaseView {
            takes_writes: false,
            ..view.clone()
        };
        assert!(!refusing.lapsed(start + SECOND * 60, lease));
        let paused = LeaseView {
            paused: true,
            ..view.clone()
        };
        assert!(!paused.lapsed(start + SECOND * 60, lease));
        let promoted = LeaseView {
            holds_since_promotion: true,
            ..view
        };
        assert!(!promoted.lapsed(start + SECOND * 60, lease));
    }

    // --- split-brain, settled by evidence ---

    fn evidence(local: (bool, u32), peer: (bool, u32)) -> Evidence {
        Evidence {
            local_refuses: local.0,
            peer_refuses: peer.0,
            local_timeline: Some(local.1),
            peer_timeline: Some(peer.1),
        }
    }

    #[test]
    fn split_brain_rows() {
        use Action::*;
        let rows = [
            // A resumed or reconnected old primary whose lease lapsed, against its promoted peer.
            ((true, 1), (false, 2), "step-down"),
            // The other side of it.
            ((false, 2), (true, 1), "peer-stale"),
            // Both take writes (an operator promoted the replica): the older steps down.
            ((false, 1), (false, 2), "step-down"),
            ((false, 2), (false, 1), "peer-stale"),
            // Whoever refuses writes, the timelines decide.
            ((true, 2), (false, 1), "peer-stale"),
            ((true, 1), (true, 2), "step-down"),
            // Nothing tells them apart: downtime rather than diverging data,
            // even once one of them refuses writes (it may be fencing).
            ((false, 2), (false, 2), "fence"),
            ((false, 1), (true, 1), "fence"),
            ((true, 1), (true, 1), "fence"),
        ];
        for (local, peer, expected) in rows {
            let action = split_brain(evidence(local, peer));
            let key = match &action {
                Wait(w) => Wait(w.clone()).key(),
                other => other.key(),
            };
            assert_eq!(key, expected, "local {local:?}, peer {peer:?}: {action}");
        }
    }

    #[test]
    fn both_monitors_reach_the_same_verdict() {
        let sides = [(true, 1), (false, 1), (false, 2), (true, 2)];
        for local in sides {
            for peer in sides {
                let mine = split_brain(evidence(local, peer));
                let theirs = split_brain(evidence(peer, local));
                let steps_down = |a: &Action| matches!(a, Action::StepDown(_));
                assert!(
                    !(steps_down(&mine) && steps_down(&theirs)),
                    "{local:?} vs {peer:?}: both step down"
                );
                let goes_on = |a: &Action| matches!(a, Action::Wait(_));
                assert!(
                    !(goes_on(&mine) && goes_on(&theirs)),
                    "{local:?} vs {peer:?}: both go on taking writes"
                );
            }
        }
    }

    #[test]
    fn unknown_timelines_never_decide_a_split_brain() {
        let unknown = Evidence {
            local_timeline: None,
            ..evidence((false, 1), (false, 2))
        };
        assert!(matches!(split_brain(unknown), Action::Fence(_)));
    }

    #[test]
    fn a_primary_whose_lease_lapsed_is_the_stale_one_when_it_meets_its_successor() {
        let policy = policy();
        let start = Instant::now();
        let mut old = primary(100);
        old.read_only = Some(true);
        let mut new = primary(500);
        new.timeline = Some(2);
        let obs = observe(Ok(old), Ok(new)).at(start + SECOND * 30);
        let state = State {
            confirmed_at: Some(start),
            watching_since: Some(start),
            refusing_writes: true,
            ..State::default()
        };
        let (action, _) = decide(&obs, &state, &policy);
        assert!(matches!(action, Action::StepDown(_)), "{action:?}");
        let stepping = after_step_down(&state);
        let (action, _) = decide(&obs, &stepping, &policy);
        assert_eq!(action, Action::Wait(Wait::SteppingDown), "asked once");
    }

    #[test]
    fn two_primaries_on_one_timeline_fence() {
        let obs = observe(Ok(primary(100)), Ok(primary(100)));
        let (action, _) = decide(&obs, &State::default(), &policy());
        assert!(matches!(action, Action::Fence(_)), "{action:?}");
    }

    // --- pause file ---

    #[test]
    fn the_pause_file_withholds_promotion_refusal_and_fencing() {
        let policy = policy();
        let gone = observe(Ok(replica(100, false)), refused()).paused();
        let (action, _) = run(&gone, &State::default(), &policy, 10);
        assert!(
            matches!(&action, Action::Wait(Wait::Paused(withheld)) if is_promote(withheld)),
            "{action:?}"
        );
        let split = observe(Ok(primary(1)), Ok(primary(1))).paused();
        let (action, _) = decide(&split, &State::default(), &policy);
        assert!(
            matches!(&action, Action::Wait(Wait::Paused(withheld)) if matches!(**withheld, Action::Fence(_))),
            "{action:?}"
        );
        let start = Instant::now();
        let cut = observe(Ok(primary(1)), timed_out()).paused();
        let (action, _) = run_at(
            &cut,
            &State::default(),
            &policy,
            start,
            &[Duration::ZERO, SECOND * 30],
        );
        assert!(
            matches!(&action, Action::Wait(Wait::Paused(_))),
            "{action:?}"
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
        let policy = Policy {
            max_lag_bytes: Some(1000),
            ..policy()
        };
        let obs = observe(Ok(replica(5000, false)), refused());
        let (action, _) = run(&obs, &lagging_state(7000), &policy, 10);
        assert_eq!(
            action,
            Action::Wait(Wait::LagGuard {
                lag: Some(2000),
                max: 1000
            })
        );
        let (action, _) = run(&obs, &lagging_state(6000), &policy, 3);
        assert!(is_promote(&action), "lag 1000 <= 1000: {action:?}");
    }

    #[test]
    fn the_lag_guard_blocks_when_no_primary_position_was_ever_seen() {
        let policy = Policy {
            max_lag_bytes: Some(1000),
            ..policy()
        };
        let obs = observe(Ok(replica(5000, false)), refused());
        let (action, _) = run(&obs, &State::default(), &policy, 5);
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
            &run(&obs, &lagging_state(1 << 40), &policy(), 3).0
        ));
    }

    // --- witnesses ---

    fn with_witnesses(count: usize) -> Policy {
        Policy {
            witnesses: count,
            ..policy()
        }
    }

    #[test]
    fn a_replica_promotes_only_with_a_witness_majority() {
        let policy = with_witnesses(3);
        let base = observe(Ok(replica(100, false)), refused());
        let minority = base.clone().witnesses(1, 3);
        let (action, _) = run(&minority, &State::default(), &policy, 5);
        assert!(
            matches!(action, Action::Wait(Wait::WitnessMinority(Some(_)))),
            "{action:?}"
        );
        let unchecked = base.clone();
        let (action, _) = run(&unchecked, &State::default(), &policy, 5);
        assert!(!is_promote(&action), "{action:?}");
        let majority = base.witnesses(2, 3);
        assert!(is_promote(&run(&majority, &State::default(), &policy, 3).0));
    }

    #[test]
    fn witnesses_are_probed_only_when_the_peer_looks_unhealthy() {
        assert!(!needs_witnesses(&replica(1, true), &Ok(primary(1))));
        assert!(needs_witnesses(&replica(1, false), &refused()));
        assert!(needs_witnesses(&replica(1, false), &Ok(replica(1, false))));
        assert!(!needs_witnesses(&primary(1), &refused()));
        assert!(!needs_witnesses(&primary(1), &Ok(replica(1, true))));
        assert!(!needs_witnesses(
            &primary(1),
            &Err(failure(FailureKind::Hung))
        ));
        assert!(needs_witnesses(&primary(1), &timed_out()));
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

    fn sync(mode: SyncMode) -> Policy {
        Policy {
            synchronous: mode,
            ..policy()
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
    fn synchronous_on_degrades_as_soon_as_a_gone_replica_is_known_not_cut_off() {
        let policy = sync(SyncMode::On);
        for peer in [refused(), Err(failure(FailureKind::Hung))] {
            let gone = observe(Ok(primary_sync("*", 0)), peer.clone());
            let (action, _) = decide(&gone, &State::default(), &policy);
            assert_eq!(
                action,
                Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 1 }),
                "{peer:?}"
            );
        }
    }

    #[test]
    fn synchronous_on_waits_a_tick_before_degrading_under_a_peer_that_may_be_promoting() {
        let policy = sync(SyncMode::On);
        let lost_standby = primary_sync("*", 0);
        for peer in [replica(100, false), replica(100, true)] {
            let obs = observe(Ok(lost_standby.clone()), Ok(peer.clone()));
            let (action, state) = decide(&obs, &State::default(), &policy);
            assert_eq!(action, Action::Wait(Wait::DegradeDeferred), "{peer:?}");
            // Promoted by the next tick: the split-brain rule, never a degrade.
            let mut promoted = primary(200);
            promoted.timeline = Some(2);
            let obs = observe(Ok(lost_standby.clone()), Ok(promoted));
            let (action, _) = decide(&obs, &state, &policy);
            assert!(matches!(action, Action::StepDown(_)), "{action:?}");
            // Still a replica, still not streaming: it is gone for replication.
            let obs = observe(Ok(lost_standby.clone()), Ok(peer.clone()));
            let (action, _) = decide(&obs, &state, &policy);
            assert_eq!(
                action,
                Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 2 }),
                "{peer:?}"
            );
        }
    }

    #[test]
    fn synchronous_on_never_degrades_a_primary_that_may_be_isolated() {
        let without_witnesses = sync(SyncMode::On);
        let cut_off = observe(Ok(primary_sync("*", 0)), timed_out());
        let (action, _) = run(&cut_off, &State::default(), &without_witnesses, 5);
        assert!(
            matches!(action, Action::Wait(Wait::DegradeWithheld(None))),
            "{action:?}"
        );
        let with_witnesses = Policy {
            witnesses: 2,
            ..sync(SyncMode::On)
        };
        let minority = cut_off.clone().witnesses(1, 2);
        let (action, _) = run(&minority, &State::default(), &with_witnesses, 5);
        assert!(
            matches!(action, Action::Wait(Wait::DegradeWithheld(Some(_)))),
            "{action:?}"
        );
        let majority = cut_off.witnesses(2, 2);
        let (action, _) = decide(&majority, &State::default(), &with_witnesses);
        assert!(
            matches!(action, Action::SetSynchronous(false, _)),
            "the replica is cut off, not this primary: {action:?}"
        );
    }

    #[test]
    fn a_silent_standby_counts_as_gone_with_replica_silence() {
        let policy = Policy {
            replica_silence: Some(SECOND * 2),
            ..sync(SyncMode::On)
        };
        let mut hung = primary_sync("*", 1);
        hung.standby_reply_age_ms = Some(2500);
        let obs = observe(Ok(hung.clone()), Err(failure(FailureKind::Hung)));
        let (action, _) = decide(&obs, &State::default(), &policy);
        assert!(
            matches!(action, Action::SetSynchronous(false, _)),
            "{action:?}"
        );
        hung.standby_reply_age_ms = Some(800);
        let answering = observe(Ok(hung.clone()), Ok(replica(100, true)));
        let (action, _) = decide(&answering, &State::default(), &policy);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        // Once degraded, a standby still `streaming` but silent does not
        // make commits synchronous again (they would block at once).
        let mut degraded = primary_sync("", 0);
        degraded.streaming_replicas = Some(1);
        degraded.standby_reply_age_ms = Some(2500);
        let obs = observe(Ok(degraded.clone()), Err(failure(FailureKind::Hung)));
        let (action, _) = decide(&obs, &State::default(), &policy);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        degraded.standby_reply_age_ms = Some(300);
        let obs = observe(Ok(degraded), Ok(replica(100, true)));
        let (action, _) = decide(&obs, &State::default(), &policy);
        assert!(
            matches!(action, Action::SetSynchronous(true, _)),
            "{action:?}"
        );
        // Without --replica-silence, a stale reply alone does not count.
        hung.standby_reply_age_ms = Some(60_000);
        let obs = observe(Ok(hung), Err(failure(FailureKind::Hung)));
        let (action, _) = decide(&obs, &State::default(), &sync(SyncMode::On));
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
    }

    #[test]
    fn synchronous_strict_never_degrades_and_restores_at_once() {
        let policy = sync(SyncMode::Strict);
        let gone = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = run(&gone, &State::default(), &policy, 50);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        let cleared = observe(Ok(primary_sync("", 0)), refused());
        let (action, _) = decide(&cleared, &State::default(), &policy);
        assert_eq!(action, Action::SetSynchronous(true, SyncWhy::Strict));
    }

    #[test]
    fn synchronous_off_leaves_the_setting_alone() {
        for status in [primary_sync("", 1), primary_sync("*", 0)] {
            let obs = observe(Ok(status), refused());
            let (action, _) = run(&obs, &State::default(), &policy(), 10);
            assert!(matches!(action, Action::Wait(_)), "{action:?}");
        }
    }

    #[test]
    fn a_new_primary_with_synchronous_on_degrades_on_its_first_tick() {
        let policy = sync(SyncMode::On);
        let state = after_promotion(&State::default(), &policy);
        let obs = observe(Ok(primary_sync("*", 0)), refused());
        let (action, _) = decide(&obs, &state, &policy);
        assert!(
            matches!(action, Action::SetSynchronous(false, _)),
            "{action:?}"
        );
    }

    #[test]
    fn in_synchronous_mode_a_replica_promotes_only_if_it_was_synchronous() {
        for mode in [SyncMode::On, SyncMode::Strict] {
            let policy = sync(mode);
            let gone = observe(Ok(replica(100, false)), refused());
            let was_sync = State {
                was_synchronous: true,
                ..State::default()
            };
            assert!(is_promote(&run(&gone, &was_sync, &policy, 3).0), "{mode:?}");
            let (action, _) = run(&gone, &State::default(), &policy, 10);
            assert_eq!(action, Action::Wait(Wait::NotSynchronous), "{mode:?}");
        }
    }

    #[test]
    fn in_synchronous_mode_the_lag_guard_may_allow_an_asynchronous_replica() {
        let policy = Policy {
            max_lag_bytes: Some(1000),
            ..sync(SyncMode::On)
        };
        let gone = observe(Ok(replica(5000, false)), refused());
        assert!(is_promote(&run(&gone, &lagging_state(5500), &policy, 3).0));
        let (action, _) = run(&gone, &lagging_state(9000), &policy, 5);
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
            !decide(&not_streaming, &State::default(), &policy())
                .1
                .was_synchronous
        );
        let async_primary = observe(Ok(replica(100, true)), Ok(primary(100)));
        assert!(
            !decide(&async_primary, &State::default(), &policy())
                .1
                .was_synchronous
        );
        let streaming = observe(Ok(replica(100, true)), Ok(peer));
        assert!(
            decide(&streaming, &State::default(), &policy())
                .1
                .was_synchronous
        );
    }

    #[test]
    fn every_action_renders_a_log_line() {
        let peer = || Peer::Unreachable("10.0.0.2:6432: connection refused".into());
        let actions = [
            Action::Promote(PromoteWhy::PrimaryDead {
                checks: 3,
                peer: peer(),
            }),
            Action::StepDown(evidence((true, 1), (false, 2))),
            Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 1 }),
            Action::Wait(Wait::PeerFailing {
                count: 3,
                retries: 3,
                peer: peer(),
            }),
            Action::RefuseWrites(RefuseWhy::LeaseLapsed {
                unconfirmed: SECOND * 5,
                witnesses: Some(Witnesses {
                    reached: 0,
                    total: 1,
                }),
            }),
            Action::Fence(FenceWhy::SplitBrain(evidence((true, 2), (true, 2)))),
        ];
        let lines: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            lines[0],
            "peer unreachable: 10.0.0.2:6432: connection refused (3/3): the primary's host \
             answers but PostgreSQL does not run there; promoting the local replica"
        );
        assert_eq!(
            lines[1],
            "SPLIT-BRAIN: the peer is a primary too and this node is the stale one (this node \
             refuses writes on timeline 1, the peer takes writes on timeline 2); stepping down \
             to rejoin it as a replica"
        );
        assert!(lines[2].contains("asynchronous"));
        assert_eq!(
            lines[3],
            "peer unreachable: 10.0.0.2:6432: connection refused (3/3)"
        );
        assert!(lines[4].starts_with("LEASE LAPSED") && lines[4].contains("0/1 witnesses"));
        assert!(lines[5].contains("cannot tell which is stale"));
    }
}
