//! The consensus mode's decision: a pure function of one tick's
//! observation (the local node, the store, and, when there is no leader, the
//! other members), in the shape of Patroni's HA loop.
//!
//! Safety rests on one rule: a node takes writes only while it holds the
//! store's `leader` key, whose lease it renewed less than `loop_wait + 2 ×
//! retry_timeout ≤ ttl` ago. A leader that cannot renew within its retry
//! budget refuses writes before the key can expire and another node take it.

use std::fmt;
use std::time::{Duration, Instant};

use pgcore::{Failure, Lsn, Role, Status};

/// What the store held at the tick's read (one linearizable range read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreView {
    pub leader: Option<LeaderKey>,
    /// A switchover asked for: the member to hand the leadership to.
    pub switchover_to: Option<String>,
    /// Failover paused (maintenance): no promotion, no demotion.
    pub paused: bool,
    /// How many standbys acknowledge each commit, as the leader last
    /// published it (`None`: never published).
    pub sync_count: Option<u32>,
    /// The cluster has had a leader (the `initialize` key exists).
    pub initialized: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: String,
    pub lease: i64,
}

/// Another member's PostgreSQL, asked directly (only when there is no leader).
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub status: Result<Status, Failure>,
}

#[derive(Debug)]
pub struct Observation {
    pub local: Result<Status, Failure>,
    /// `Err`: no member of the store answered within the retry budget.
    pub store: Result<StoreView, String>,
    /// This node's lease in the store (0 before one was granted).
    pub lease: i64,
    /// The other members, probed only when the store has no leader.
    pub members: Vec<Member>,
    /// A pause file of this node exists (the operator's, or the manifest's).
    pub paused_here: bool,
    /// This node is about to stop (its drain file exists): it neither takes
    /// the key nor restarts to rejoin (the stop under way would race that
    /// restart, and its next start rejoins anyway).
    pub draining: bool,
    pub now: Instant,
}

/// What the policy says, from the flags.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    /// Every member of the cluster, this one included.
    pub members: usize,
    pub max_lag_bytes: Option<u64>,
    /// Commits wait for this many standbys (synchronous_standby_names =
    /// 'ANY k (*)'); 0: asynchronous.
    pub sync_count: u32,
    /// A replica that has not streamed from the leader for this long asks
    /// for a rejoin (its WAL may have diverged: pg_rewind at its restart).
    pub rejoin_after: Duration,
}

/// What the loop remembers between ticks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// This node held the leader key at the last tick.
    pub leader: bool,
    /// The local primary refuses writes because this loop made it.
    pub refusing_writes: bool,
    /// The most WAL the leader was known to have while this replica
    /// followed it (what its WAL sender last reported): the lag guard's yardstick.
    pub leader_lsn: Option<Lsn>,
    /// The leader whose arrival made this node run its rejoin command.
    pub rejoined_for: Option<String>,
    /// How many standbys commits waited for, as this leader last set them.
    pub sync_set: Option<u32>,
    /// Failover was paused in the store at the last read.
    pub paused: bool,
    /// Consecutive ticks the leader's own server did not answer in time.
    pub local_failures: u32,
    /// Since when this replica has followed the leader without streaming.
    pub not_streaming_since: Option<Instant>,
    /// When this replica last asked for a rejoin.
    pub replica_rejoined_at: Option<Instant>,
}

/// Ticks a leader's server may fail to answer (hung, overloaded) before the
/// leader stops it and gives the key up.
pub const LEADER_LOCAL_FAILURES: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing to do; why.
    Wait(Wait),
    /// No leader, and this node is the best placed: create the leader key,
    /// then promote (a replica) or take writes again (a refusing primary).
    TakeLeadership,
    /// This node leads: its local replica becomes the primary.
    Promote,
    /// This node leads, and its primary refuses writes: it takes them again.
    AllowWrites,
    /// This node must not take writes (why); it keeps refusing until it leads.
    RefuseWrites(RefuseWhy),
    /// The leader's local server is gone (or hung: `stop` it first): give
    /// the key up at once, so that another member need not wait for the
    /// lease to expire.
    Release { failure: Failure, stop: bool },
    /// Another member leads and this node is a primary: it rejoins as a
    /// replica of the leader (the rejoin command restarts it).
    Rejoin { leader: String },
    /// Another member leads: this replica streams from it.
    Follow { leader: String },
    /// A switchover to `to` was asked for: hand the leader key over.
    HandOver { to: String },
    /// Commits wait for `k` standbys (0: asynchronous), published first when
    /// lowering it, after when raising it.
    SetSync(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    Leading,
    Paused,
    LocalDown(String),
    /// The store did not answer (this node holds no key then).
    StoreDown(String),
    NotEligible(String),
    /// This node asked for its rejoin and waits for its restart.
    Rejoining(String),
    /// This node is about to stop.
    Draining,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefuseWhy {
    /// The store did not answer within the retry budget: the key may expire.
    StoreUnreachable(String),
    /// Another member holds the key.
    OtherLeader(String),
    /// A primary without the key that is not the best placed to take it.
    NotLeader(String),
}

/// What one tick decides, and the state the next one starts from.
pub fn decide(obs: &Observation, state: &State, policy: &Policy) -> (Action, State) {
    let mut next = state.clone();
    if let Ok(status) = &obs.local {
        remember_leader_position(status, &mut next);
    }
    let paused_store;
    let store = match &obs.store {
        Ok(store) if obs.paused_here && !store.paused => {
            paused_store = StoreView {
                paused: true,
                ..store.clone()
            };
            &paused_store
        }
        Ok(store) => store,
        Err(error) => {
            next.leader = false;
            let takes_writes = matches!(&obs.local, Ok(status) if takes_writes(status));
            // Paused (as last seen), the primary keeps taking writes:
            // maintenance on the store must not take the database down.
            if takes_writes && !state.paused {
                next.refusing_writes = true;
                return (
                    Action::RefuseWrites(RefuseWhy::StoreUnreachable(error.clone())),
                    next,
                );
            }
            return (Action::Wait(Wait::StoreDown(error.clone())), next);
        }
    };
    next.paused = store.paused;
    if !matches!(&obs.local, Ok(status) if status.in_recovery == Some(true))
        || !matches!(&store.leader, Some(leader) if leader.name != policy.name)
    {
        next.not_streaming_since = None;
    }
    let holds_key = store
        .leader
        .as_ref()
        .is_some_and(|leader| leader.name == policy.name);
    next.leader = holds_key;
    match &store.leader {
        Some(_) if holds_key => lead(obs, store, &next, policy),
        Some(leader) => follow(obs, store, &leader.name, next, policy),
        None => elect(obs, store, next, policy),
    }
}

/// This node holds the key.
fn lead(obs: &Observation, store: &StoreView, state: &State, policy: &Policy) -> (Action, State) {
    let mut next = state.clone();
    let status = match &obs.local {
        Ok(status) => {
            next.local_failures = 0;
            status
        }
        Err(failure) if store.paused => {
            return (Action::Wait(Wait::LocalDown(failure.to_string())), next)
        }
        // A server that is gone cannot lead: the key goes at once.
        Err(failure) if failure.kind.is_definitive() => {
            return (
                Action::Release {
                    failure: failure.clone(),
                    stop: false,
                },
                next,
            )
        }
        // One that does not answer may be only slow, for a while; past
        // that it is stopped (it could resume taking writes) and the key goes.
        Err(failure) => {
            next.local_failures += 1;
            if next.local_failures >= LEADER_LOCAL_FAILURES {
                return (
                    Action::Release {
                        failure: failure.clone(),
                        stop: true,
                    },
                    next,
                );
            }
            return (Action::Wait(Wait::LocalDown(failure.to_string())), next);
        }
    };
    if status.in_recovery == Some(true) {
        return (Action::Promote, next);
    }
    if status.role != Role::Primary {
        return (
            Action::Wait(Wait::LocalDown(format!("{:?}", status.role))),
            next,
        );
    }
    if status.read_only == Some(true) {
        return (Action::AllowWrites, next);
    }
    if let Some(to) = &store.switchover_to {
        if *to != policy.name && !store.paused {
            return (Action::HandOver { to: to.clone() }, next);
        }
    }
    let wanted = synchronous_count(status, policy);
    if state.sync_set != Some(wanted) || store.sync_count != Some(wanted) {
        return (Action::SetSync(wanted), next);
    }
    (Action::Wait(Wait::Leading), next)
}

/// How many standbys commits should wait for now: the policy's count, at
/// most as many as stream (a leader without enough standbys degrades rather
/// than stops taking writes, and publishes it, so that no replica promotes
/// over commits that waited for fewer standbys than it assumes).
fn synchronous_count(status: &Status, policy: &Policy) -> u32 {
    let streaming = status.streaming_replicas.unwrap_or(0).max(0) as u32;
    policy.sync_count.min(streaming)
}

/// Another member holds the key.
fn follow(
    obs: &Observation,
    store: &StoreView,
    leader: &str,
    mut next: State,
    policy: &Policy,
) -> (Action, State) {
    let status = match &obs.local {
        Ok(status) => status,
        Err(failure) => return (Action::Wait(Wait::LocalDown(failure.to_string())), next),
    };
    if status.in_recovery == Some(true) {
        next.rejoined_for = None;
        if status.wal_receiver_streaming == Some(true) {
            next.not_streaming_since = None;
        } else {
            let since = *next.not_streaming_since.get_or_insert(obs.now);
            let rejoined_long_ago = next
                .replica_rejoined_at
                .is_none_or(|at| obs.now.saturating_duration_since(at) >= policy.rejoin_after);
            if obs.now.saturating_duration_since(since) >= policy.rejoin_after
                && rejoined_long_ago
                && !store.paused
                && !obs.draining
            {
                next.replica_rejoined_at = Some(obs.now);
                next.not_streaming_since = None;
                return (
                    Action::Rejoin {
                        leader: leader.to_string(),
                    },
                    next,
                );
            }
        }
        return (
            Action::Follow {
                leader: leader.to_string(),
            },
            next,
        );
    }
    if takes_writes(status) {
        // Paused or not: two primaries taking writes is never maintenance.
        next.refusing_writes = true;
        return (
            Action::RefuseWrites(RefuseWhy::OtherLeader(leader.to_string())),
            next,
        );
    }
    if store.paused {
        return (Action::Wait(Wait::Paused), next);
    }
    if next.rejoined_for.as_deref() == Some(leader) {
        return (Action::Wait(Wait::Rejoining(leader.to_string())), next);
    }
    if obs.draining {
        return (Action::Wait(Wait::Draining), next);
    }
    next.rejoined_for = Some(leader.to_string());
    (
        Action::Rejoin {
            leader: leader.to_string(),
        },
        next,
    )
}

/// No member holds the key.
fn elect(obs: &Observation, store: &StoreView, next: State, policy: &Policy) -> (Action, State) {
    let status = match &obs.local {
        Ok(status) => status,
        Err(failure) => return (Action::Wait(Wait::LocalDown(failure.to_string())), next),
    };
    if store.paused {
        return (Action::Wait(Wait::Paused), next);
    }
    if obs.draining {
        return (Action::Wait(Wait::Draining), next);
    }
    // The first leader is the cluster's primary, and only it: a replica
    // that could not reach it in time must not promote beside it. After
    // that, a leader that lost its key has stopped taking writes (the lease
    // rule), and any member may succeed it.
    if !store.initialized && status.in_recovery == Some(true) {
        return (
            Action::Wait(Wait::NotEligible(
                "the cluster has had no leader yet: its primary takes the key first".into(),
            )),
            next,
        );
    }
    if let Some(to) = &store.switchover_to {
        // A hand-over under way: only its target takes the key, unless it
        // does not answer.
        let target_answers = obs
            .members
            .iter()
            .any(|member| member.name == *to && member.status.is_ok());
        if *to != policy.name && target_answers {
            return (
                Action::Wait(Wait::NotEligible(format!(
                    "a switchover to {to} is under way"
                ))),
                next,
            );
        }
    }
    match eligible(status, &obs.members, store, &next, policy) {
        Ok(()) => (Action::TakeLeadership, next),
        Err(why) if takes_writes(status) => {
            let mut next = next;
            next.refusing_writes = true;
            (Action::RefuseWrites(RefuseWhy::NotLeader(why)), next)
        }
        Err(why) => (Action::Wait(Wait::NotEligible(why)), next),
    }
}

/// Whether this node may take the key: no member takes writes, none is
/// ahead of it (timeline first, then WAL), it is within the lag bound, and,
/// with synchronous commits, it compared itself with enough members to be
/// sure it has every acknowledged commit.
pub fn eligible(
    local: &Status,
    members: &[Member],
    store: &StoreView,
    state: &State,
    policy: &Policy,
) -> Result<(), String> {
    let my_timeline = local.timeline.unwrap_or(0);
    let my_position = position(local);
    if let (Some(max), Some(leader), Some(replayed)) = (
        policy.max_lag_bytes,
        state.leader_lsn,
        local.replayed_wal_lsn,
    ) {
        if local.in_recovery == Some(true) {
            let lag = leader.0.saturating_sub(replayed.0);
            if lag > max {
                return Err(format!(
                    "replayed WAL is {lag} bytes behind the last leader position seen (max {max})"
                ));
            }
        }
    }
    let mut compared = 1;
    for member in members {
        let Ok(status) = &member.status else { continue };
        if takes_writes(status) {
            return Err(format!("{} is a primary taking writes", member.name));
        }
        compared += 1;
        let timeline = status.timeline.unwrap_or(0);
        if timeline > my_timeline {
            return Err(format!(
                "{} is on timeline {timeline}, this node on {my_timeline}",
                member.name
            ));
        }
        if timeline == my_timeline && position(status) > my_position {
            return Err(format!(
                "{} has more WAL ({} > {})",
                member.name,
                lsn_text(position(status)),
                lsn_text(my_position)
            ));
        }
    }
    // With commits on k of the N - 1 standbys, any N - k of the members
    // (this one included) hold at least one copy of each. A primary holds
    // its own commits; and before a leader published a count, none was
    // promised to a standby.
    let promised = match store.sync_count {
        Some(k) if policy.sync_count > 0 && local.in_recovery == Some(true) => Some(k),
        _ => None,
    };
    match promised {
        Some(0) => Err(
            "commits were not synchronous when the leader last said (no standby streamed): \
             a promotion could lose acknowledged writes"
                .into(),
        ),
        Some(k) if compared < policy.members.saturating_sub(k as usize) => Err(format!(
            "compared with {compared} member(s), this one included; {} are needed to be sure of \
             every commit acknowledged by {k} standby(s)",
            policy.members.saturating_sub(k as usize)
        )),
        _ => Ok(()),
    }
}

/// The WAL a node has: a primary's current position, a replica's received
/// (else replayed) position.
fn position(status: &Status) -> Option<Lsn> {
    if status.in_recovery == Some(true) {
        status.received_wal_lsn.max(status.replayed_wal_lsn)
    } else {
        status.current_wal_lsn
    }
}

fn lsn_text(lsn: Option<Lsn>) -> String {
    lsn.map_or("none".into(), |lsn| lsn.to_string())
}

/// A primary that is not refusing writes.
pub fn takes_writes(status: &Status) -> bool {
    status.role == Role::Primary
        && status.in_recovery != Some(true)
        && status.read_only != Some(true)
}

/// While following, what the leader had: the replica's replayed WAL plus
/// what it still has to replay of what the WAL sender reported.
fn remember_leader_position(status: &Status, state: &mut State) {
    if status.in_recovery != Some(true) || status.wal_receiver_streaming != Some(true) {
        return;
    }
    if let (Some(replayed), Some(lag)) = (status.replayed_wal_lsn, status.replication_lag_bytes) {
        let seen = Lsn(replayed.0.saturating_add(lag.max(0) as u64));
        state.leader_lsn = Some(state.leader_lsn.map_or(seen, |known| known.max(seen)));
    }
}

/// The leader's deadline: past `renewed + loop_wait + 2 × retry_timeout`
/// without a renewal, its key may be about to expire.
pub fn renewal_deadline(renewed: Instant, loop_wait: Duration, retry_timeout: Duration) -> Instant {
    renewed + loop_wait + retry_timeout * 2
}

impl Action {
    /// Whether `other` is the same decision, perhaps with another error or
    /// reason in it (a store error naming the endpoint tried last, a lag
    /// that grew); decisions naming members are the same only for the same
    /// members.
    pub fn same_kind(&self, other: &Action) -> bool {
        use Action::{RefuseWrites, Wait as W};
        matches!(
            (self, other),
            (W(Wait::StoreDown(_)), W(Wait::StoreDown(_)))
                | (W(Wait::LocalDown(_)), W(Wait::LocalDown(_)))
                | (W(Wait::NotEligible(_)), W(Wait::NotEligible(_)))
                | (
                    RefuseWrites(RefuseWhy::StoreUnreachable(_)),
                    RefuseWrites(RefuseWhy::StoreUnreachable(_))
                )
                | (
                    RefuseWrites(RefuseWhy::NotLeader(_)),
                    RefuseWrites(RefuseWhy::NotLeader(_))
                )
        ) || self == other
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Action::Wait(wait) => write!(f, "{wait}"),
            Action::TakeLeadership => write!(f, "no leader, and this node is the best placed: taking the leader key"),
            Action::Promote => write!(f, "this node holds the leader key: promoting the local replica"),
            Action::AllowWrites => write!(f, "this node holds the leader key: taking writes again"),
            Action::RefuseWrites(why) => write!(f, "refusing writes: {why}"),
            Action::Release { failure, stop: false } => write!(f, "the local server is gone ({failure}): giving the leader key up"),
            Action::Release { failure, stop: true } => write!(f, "the local server has not answered for {LEADER_LOCAL_FAILURES} checks ({failure}): stopping it and giving the leader key up"),
            Action::Rejoin { leader } => write!(f, "{leader} leads and the local node is a primary or does not stream from it: rejoining as its replica"),
            Action::Follow { leader } => write!(f, "following {leader}"),
            Action::HandOver { to } => write!(f, "switchover asked: handing the leadership to {to}"),
            Action::SetSync(0) => write!(f, "commits asynchronous (no standby streams)"),
            Action::SetSync(k) => write!(f, "commits wait for {k} standby(s)"),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Wait::Leading => write!(f, "leading"),
            Wait::Paused => write!(f, "failover paused in the store: nothing is done"),
            Wait::LocalDown(why) => write!(f, "waiting for the local server: {why}"),
            Wait::StoreDown(error) => write!(f, "the store does not answer: {error}"),
            Wait::NotEligible(why) => {
                write!(f, "no leader, but this node does not take the key: {why}")
            }
            Wait::Rejoining(leader) => write!(f, "waiting for the restart that rejoins {leader}"),
            Wait::Draining => write!(
                f,
                "this node is about to stop (draining): it neither leads nor rejoins"
            ),
        }
    }
}

impl fmt::Display for RefuseWhy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            RefuseWhy::StoreUnreachable(error) => {
                write!(
                    f,
                    "the store could not be reached to renew the lease ({error})"
                )
            }
            RefuseWhy::OtherLeader(leader) => write!(f, "{leader} holds the leader key"),
            RefuseWhy::NotLeader(why) => {
                write!(f, "this primary does not hold the leader key: {why}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_differing_only_in_an_error_are_the_same_kind_but_not_those_naming_other_members() {
        let store_down = |e: &str| Action::Wait(Wait::StoreDown(e.into()));
        assert!(store_down("127.0.0.1:1: timed out").same_kind(&store_down("127.0.0.1:2: refused")));
        let follow = |leader: &str| Action::Follow {
            leader: leader.into(),
        };
        assert!(follow("pg-1").same_kind(&follow("pg-1")));
        assert!(!follow("pg-1").same_kind(&follow("pg-2")));
        assert!(!store_down("x").same_kind(&Action::Wait(Wait::LocalDown("x".into()))));
        assert!(!Action::SetSync(0).same_kind(&Action::SetSync(1)));
    }
    use pgcore::FailureKind;

    fn policy(sync_count: u32) -> Policy {
        Policy {
            name: "pg-1".into(),
            members: 3,
            max_lag_bytes: Some(1000),
            sync_count,
            rejoin_after: Duration::from_secs(30),
        }
    }

    fn primary(lsn: u64, streaming: i64) -> Status {
        Status {
            role: Role::Primary,
            in_recovery: Some(false),
            timeline: Some(1),
            current_wal_lsn: Some(Lsn(lsn)),
            streaming_replicas: Some(streaming),
            read_only: Some(false),
            ..Status::default()
        }
    }

    fn refusing(lsn: u64) -> Status {
        Status {
            read_only: Some(true),
            ..primary(lsn, 0)
        }
    }

    fn replica(lsn: u64) -> Status {
        Status {
            role: Role::Replica,
            in_recovery: Some(true),
            timeline: Some(1),
            received_wal_lsn: Some(Lsn(lsn)),
            replayed_wal_lsn: Some(Lsn(lsn)),
            wal_receiver_streaming: Some(true),
            replication_lag_bytes: Some(0),
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

    fn led_by(name: &str) -> StoreView {
        StoreView {
            leader: Some(LeaderKey {
                name: name.into(),
                lease: 7,
            }),
            ..leaderless()
        }
    }

    /// A store whose cluster had a leader, none now.
    fn leaderless() -> StoreView {
        StoreView {
            sync_count: Some(0),
            initialized: true,
            ..StoreView::default()
        }
    }

    #[test]
    fn before_the_first_leader_only_a_primary_takes_the_key() {
        let fresh = StoreView::default();
        let obs = observe(Ok(replica(100)), fresh.clone(), vec![]);
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::NotEligible(why)) if why.contains("no leader yet")
        ));
        let obs = observe(Ok(primary(100, 2)), fresh, vec![]);
        assert_eq!(decided(&obs, &State::default(), 0), Action::TakeLeadership);
    }

    fn member(name: &str, status: Result<Status, Failure>) -> Member {
        Member {
            name: name.into(),
            status,
        }
    }

    fn observe(
        local: Result<Status, Failure>,
        store: StoreView,
        members: Vec<Member>,
    ) -> Observation {
        Observation {
            local,
            store: Ok(store),
            lease: 7,
            members,
            paused_here: false,
            draining: false,
            now: Instant::now(),
        }
    }

    fn decided(obs: &Observation, state: &State, sync_count: u32) -> Action {
        decide(obs, state, &policy(sync_count)).0
    }

    fn leading() -> State {
        State {
            leader: true,
            sync_set: Some(0),
            ..State::default()
        }
    }

    // 1. Holding the key.

    #[test]
    fn the_leader_with_its_primary_only_renews() {
        let obs = observe(Ok(primary(100, 0)), led_by("pg-1"), vec![]);
        assert_eq!(decided(&obs, &leading(), 0), Action::Wait(Wait::Leading));
    }

    #[test]
    fn the_leader_promotes_its_replica_and_lets_a_refusing_primary_write() {
        let obs = observe(Ok(replica(100)), led_by("pg-1"), vec![]);
        assert_eq!(decided(&obs, &leading(), 0), Action::Promote);
        let obs = observe(Ok(refusing(100)), led_by("pg-1"), vec![]);
        assert_eq!(decided(&obs, &leading(), 0), Action::AllowWrites);
    }

    #[test]
    fn the_leader_gives_the_key_up_at_once_when_its_server_is_gone() {
        let obs = observe(failed(FailureKind::Refused), led_by("pg-1"), vec![]);
        assert!(matches!(
            decided(&obs, &leading(), 0),
            Action::Release { stop: false, .. }
        ));
    }

    #[test]
    fn the_leader_stops_a_server_that_does_not_answer_three_times_then_gives_the_key_up() {
        let obs = observe(failed(FailureKind::Hung), led_by("pg-1"), vec![]);
        let mut state = leading();
        for _ in 1..LEADER_LOCAL_FAILURES {
            let (action, next) = decide(&obs, &state, &policy(0));
            assert_eq!(action, Action::Wait(Wait::LocalDown("Hung".into())));
            state = next;
        }
        assert!(matches!(
            decide(&obs, &state, &policy(0)).0,
            Action::Release { stop: true, .. }
        ));
    }

    #[test]
    fn the_leader_sets_and_publishes_the_synchronous_count_it_can_keep() {
        let obs = observe(Ok(primary(100, 2)), led_by("pg-1"), vec![]);
        assert_eq!(decided(&obs, &leading(), 1), Action::SetSync(1));
        let obs = observe(Ok(primary(100, 0)), led_by("pg-1"), vec![]);
        let state = State {
            sync_set: Some(1),
            ..leading()
        };
        assert_eq!(decided(&obs, &state, 1), Action::SetSync(0));
    }

    #[test]
    fn a_switchover_to_another_member_hands_the_key_over() {
        let mut store = led_by("pg-1");
        store.switchover_to = Some("pg-2".into());
        let obs = observe(Ok(primary(100, 0)), store, vec![]);
        assert_eq!(
            decided(&obs, &leading(), 0),
            Action::HandOver { to: "pg-2".into() }
        );
    }

    // 2. Another member holds it.

    #[test]
    fn a_replica_follows_the_leader() {
        let obs = observe(Ok(replica(100)), led_by("pg-2"), vec![]);
        assert_eq!(
            decided(&obs, &State::default(), 0),
            Action::Follow {
                leader: "pg-2".into()
            }
        );
    }

    #[test]
    fn a_primary_under_another_leader_refuses_writes_then_rejoins_once() {
        let obs = observe(Ok(primary(100, 0)), led_by("pg-2"), vec![]);
        let (action, state) = decide(&obs, &leading(), &policy(0));
        assert_eq!(
            action,
            Action::RefuseWrites(RefuseWhy::OtherLeader("pg-2".into()))
        );
        assert!(!state.leader);
        let obs = observe(Ok(refusing(100)), led_by("pg-2"), vec![]);
        let (action, state) = decide(&obs, &state, &policy(0));
        assert_eq!(
            action,
            Action::Rejoin {
                leader: "pg-2".into()
            }
        );
        assert_eq!(
            decide(&obs, &state, &policy(0)).0,
            Action::Wait(Wait::Rejoining("pg-2".into()))
        );
    }

    #[test]
    fn paused_a_primary_under_another_leader_still_refuses_writes() {
        let mut store = led_by("pg-2");
        store.paused = true;
        let obs = observe(Ok(primary(100, 0)), store, vec![]);
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::RefuseWrites(_)
        ));
    }

    #[test]
    fn a_replica_that_does_not_stream_from_the_leader_for_long_asks_to_rejoin_then_waits() {
        let mut stuck = replica(100);
        stuck.wal_receiver_streaming = Some(false);
        let mut obs = observe(Ok(stuck), led_by("pg-2"), vec![]);
        let (action, state) = decide(&obs, &State::default(), &policy(0));
        assert_eq!(
            action,
            Action::Follow {
                leader: "pg-2".into()
            }
        );
        obs.now += Duration::from_secs(31);
        let (action, state) = decide(&obs, &state, &policy(0));
        assert_eq!(
            action,
            Action::Rejoin {
                leader: "pg-2".into()
            }
        );
        obs.now += Duration::from_secs(1);
        assert_eq!(
            decide(&obs, &state, &policy(0)).0,
            Action::Follow {
                leader: "pg-2".into()
            }
        );
    }

    #[test]
    fn a_draining_node_neither_takes_the_key_nor_restarts_to_rejoin() {
        let mut obs = observe(Ok(replica(100)), leaderless(), vec![]);
        obs.draining = true;
        assert_eq!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::Draining)
        );
        let mut obs = observe(Ok(refusing(100)), led_by("pg-2"), vec![]);
        obs.draining = true;
        assert_eq!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::Draining)
        );
        // Taking writes under another leader is refused, draining or not.
        let mut obs = observe(Ok(primary(100, 0)), led_by("pg-2"), vec![]);
        obs.draining = true;
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::RefuseWrites(_)
        ));
    }

    #[test]
    fn a_pause_file_here_pauses_this_member_as_the_store_key_would() {
        let mut obs = observe(Ok(replica(100)), leaderless(), vec![]);
        obs.paused_here = true;
        assert_eq!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::Paused)
        );
    }

    // 3. Nobody holds it.

    #[test]
    fn the_most_advanced_replica_takes_the_key_the_others_wait() {
        let others = vec![
            member("pg-0", failed(FailureKind::Refused)),
            member("pg-2", Ok(replica(90))),
        ];
        let obs = observe(Ok(replica(100)), leaderless(), others);
        assert_eq!(decided(&obs, &State::default(), 0), Action::TakeLeadership);
        let others = vec![member("pg-2", Ok(replica(110)))];
        let obs = observe(Ok(replica(100)), leaderless(), others);
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::NotEligible(why)) if why.contains("pg-2 has more WAL")
        ));
    }

    #[test]
    fn a_later_timeline_wins_over_more_wal() {
        let mut ahead = replica(50);
        ahead.timeline = Some(2);
        let obs = observe(
            Ok(replica(100)),
            leaderless(),
            vec![member("pg-2", Ok(ahead))],
        );
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::NotEligible(why)) if why.contains("timeline 2")
        ));
    }

    #[test]
    fn no_member_takes_the_key_while_a_primary_still_takes_writes() {
        let obs = observe(
            Ok(replica(100)),
            leaderless(),
            vec![member("pg-0", Ok(primary(100, 1)))],
        );
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::NotEligible(why)) if why.contains("pg-0 is a primary taking writes")
        ));
        // One that refuses writes (its leader demoted it) does not block.
        let obs = observe(
            Ok(replica(100)),
            leaderless(),
            vec![member("pg-0", Ok(refusing(100)))],
        );
        assert_eq!(decided(&obs, &State::default(), 0), Action::TakeLeadership);
    }

    #[test]
    fn a_replica_lagging_beyond_the_bound_never_takes_the_key() {
        let state = State {
            leader_lsn: Some(Lsn(5000)),
            ..State::default()
        };
        let obs = observe(Ok(replica(3000)), leaderless(), vec![]);
        assert!(matches!(
            decided(&obs, &state, 0),
            Action::Wait(Wait::NotEligible(why)) if why.contains("2000 bytes behind")
        ));
        let obs = observe(Ok(replica(4500)), leaderless(), vec![]);
        assert_eq!(decided(&obs, &state, 0), Action::TakeLeadership);
    }

    #[test]
    fn a_replica_remembers_the_leader_position_while_it_streams() {
        let mut streaming = replica(3000);
        streaming.replication_lag_bytes = Some(2000);
        let obs = observe(Ok(streaming), led_by("pg-0"), vec![]);
        let (_, state) = decide(&obs, &State::default(), &policy(0));
        assert_eq!(state.leader_lsn, Some(Lsn(5000)));
    }

    #[test]
    fn synchronous_commits_need_enough_members_compared() {
        let store = StoreView {
            sync_count: Some(1),
            ..leaderless()
        };
        // N = 3, k = 1: this node and one more.
        let alone = observe(
            Ok(replica(100)),
            store.clone(),
            vec![member("pg-2", failed(FailureKind::Timeout))],
        );
        assert!(matches!(
            decided(&alone, &State::default(), 1),
            Action::Wait(Wait::NotEligible(why)) if why.contains("2 are needed")
        ));
        let with_one = observe(
            Ok(replica(100)),
            store,
            vec![
                member("pg-0", failed(FailureKind::Refused)),
                member("pg-2", Ok(replica(100))),
            ],
        );
        assert_eq!(
            decided(&with_one, &State::default(), 1),
            Action::TakeLeadership
        );
    }

    #[test]
    fn a_primary_or_a_cluster_without_a_published_count_needs_no_quorum_of_members() {
        // The cluster's first primary, alone: it holds its own commits.
        let obs = observe(Ok(primary(100, 0)), StoreView::default(), vec![]);
        assert_eq!(decided(&obs, &State::default(), 1), Action::TakeLeadership);
        let unpublished = StoreView {
            sync_count: None,
            ..leaderless()
        };
        let obs = observe(Ok(replica(100)), unpublished, vec![]);
        assert_eq!(decided(&obs, &State::default(), 1), Action::TakeLeadership);
    }

    #[test]
    fn after_asynchronous_commits_a_synchronous_cluster_does_not_fail_over() {
        let store = StoreView {
            sync_count: Some(0),
            ..leaderless()
        };
        let obs = observe(
            Ok(replica(100)),
            store,
            vec![member("pg-2", Ok(replica(100)))],
        );
        assert!(matches!(
            decided(&obs, &State::default(), 1),
            Action::Wait(Wait::NotEligible(why)) if why.contains("not synchronous")
        ));
    }

    #[test]
    fn a_primary_without_the_key_that_may_not_take_it_refuses_writes() {
        let obs = observe(
            Ok(primary(100, 0)),
            leaderless(),
            vec![member("pg-2", Ok(primary(50, 0)))],
        );
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::RefuseWrites(RefuseWhy::NotLeader(_))
        ));
    }

    #[test]
    fn paused_nobody_takes_the_key() {
        let store = StoreView {
            paused: true,
            ..leaderless()
        };
        let obs = observe(Ok(replica(100)), store, vec![]);
        assert_eq!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::Paused)
        );
    }

    #[test]
    fn during_a_hand_over_only_its_target_takes_the_key_while_it_answers() {
        let store = StoreView {
            switchover_to: Some("pg-2".into()),
            ..leaderless()
        };
        let obs = observe(
            Ok(replica(100)),
            store.clone(),
            vec![member("pg-2", Ok(replica(100)))],
        );
        assert!(matches!(
            decided(&obs, &State::default(), 0),
            Action::Wait(Wait::NotEligible(_))
        ));
        let obs = observe(
            Ok(replica(100)),
            store,
            vec![member("pg-2", failed(FailureKind::Refused))],
        );
        assert_eq!(decided(&obs, &State::default(), 0), Action::TakeLeadership);
    }

    // 4. The store unreachable.

    #[test]
    fn a_primary_that_cannot_reach_the_store_refuses_writes_unless_paused() {
        let obs = Observation {
            local: Ok(primary(100, 0)),
            store: Err("no member answered".into()),
            lease: 7,
            members: vec![],
            paused_here: false,
            draining: false,
            now: Instant::now(),
        };
        let (action, state) = decide(&obs, &leading(), &policy(0));
        assert!(matches!(
            action,
            Action::RefuseWrites(RefuseWhy::StoreUnreachable(_))
        ));
        assert!(!state.leader);
        let paused = State {
            paused: true,
            ..leading()
        };
        assert!(matches!(
            decide(&obs, &paused, &policy(0)).0,
            Action::Wait(Wait::StoreDown(_))
        ));
    }

    #[test]
    fn the_renewal_deadline_keeps_within_the_ttl_under_the_rule() {
        let now = Instant::now();
        let (loop_wait, retry) = (Duration::from_secs(1), Duration::from_millis(4500));
        assert_eq!(
            renewal_deadline(now, loop_wait, retry),
            now + Duration::from_secs(10)
        );
    }
}
