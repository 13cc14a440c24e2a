//! The consensus mode: automatic failover for N nodes on etcd, Patroni's
//! HA loop in short.
//!
//! Every `loop_wait` each member keeps its lease alive and reads the
//! store's keys in one budget of `retry_timeout`, probes its own server,
//! decides with the pure [`decide::decide`] and acts. The member holding the
//! `leader` key is the only one that takes writes; when the key is gone,
//! the members race for it, but only the best placed runs (no member ahead
//! of it, within the lag bound, enough members compared under synchronous
//! commits), and the store lets exactly one create it. A watchdog thread
//! makes the leader refuse writes if a stuck tick lets its renewal age past
//! `loop_wait + 2 × retry_timeout`, which the flags keep within `ttl`.

pub mod decide;
pub mod effects;
pub mod store;
pub mod switchover;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use pgcore::etcd::{Etcd, EtcdSettings};
use pgcore::{logln, Client, ConnectOptions, Detail, HeldSession};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::effects::{self as pair_effects, PgCtl};
use crate::pidfile::Pidfile;
use crate::{forward_signals, signal_name, Event};
use decide::{decide, renewal_deadline, Action, Member, Observation, Policy, State};
use store::Store;

/// Everything the consensus loop needs, parsed and checked.
#[derive(Debug)]
pub struct ConsensusConfig {
    pub policy: Policy,
    pub local: ConnectOptions,
    /// Every other member: its name and how to reach its server.
    pub members: BTreeMap<String, ConnectOptions>,
    pub store: EtcdSettings,
    pub scope: String,
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
    /// Run (/bin/sh -c) when another member leads and this node is a
    /// primary, to restart its postgres as the leader's replica.
    pub rejoin_command: Option<String>,
    pub command_timeout: Duration,
    pub pg_ctl: Option<PgCtl>,
    pub promote_timeout: Duration,
    pub pidfile: Option<PathBuf>,
    /// While one of these files exists, this member neither promotes nor
    /// demotes (maintenance of this node).
    pub pause_files: Vec<PathBuf>,
    /// While this file exists, the node is about to stop: it neither takes
    /// the leader key nor restarts to rejoin.
    pub draining_file: Option<PathBuf>,
    /// While this member leads with a renewed key, the time until which its
    /// node may take writes ([`pgcore::lease`]), for the health endpoint.
    pub lease_file: Option<PathBuf>,
    /// Run (/bin/sh -c) each time this member has become the primary, e.g.
    /// the provisioning of users and databases.
    pub on_leader_command: Option<String>,
    /// The replication user and passfile a replica streams with, for a
    /// primary_conninfo written from nothing.
    pub replication_user: String,
    pub passfile: Option<PathBuf>,
}

/// The lease rule, Patroni's (loop_wait + 2 × retry_timeout ≤ ttl), and
/// etcd's own: leases are whole seconds. The postgres job's template
/// applies the same rule when it renders (ci/release-tests holds them equal).
pub fn check_timings(
    ttl: Duration,
    loop_wait: Duration,
    retry_timeout: Duration,
) -> Result<(), String> {
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
        return Err(format!(
            "--ttl {ttl:?}: whole seconds, at least 2 (etcd's leases are)"
        ));
    }
    let budget = loop_wait + retry_timeout * 2;
    if budget > ttl {
        return Err(format!(
            "--loop-wait {loop_wait:?} + 2 × --retry-timeout {retry_timeout:?} = {budget:?} is \
             longer than --ttl {ttl:?}: a leader cut off from the store could still take writes \
             when its key expires"
        ));
    }
    Ok(())
}

/// How often a decision that stays the same in kind but not in detail (the
/// store down, each check naming the endpoint it tried last) is logged again.
const REPEAT_DETAIL_EVERY: Duration = Duration::from_secs(30);

/// Logs each decision when it changes: at once when its kind changes, at
/// most every [`REPEAT_DETAIL_EVERY`] when only its details do, so that an
/// outage reads as a few lines rather than one per check.
#[derive(Default)]
struct DecisionLog {
    last: Option<(Action, String, Instant)>,
}

impl DecisionLog {
    fn log(&mut self, action: &Action) {
        let line = action.to_string();
        let due = match &self.last {
            None => true,
            Some((last, last_line, at)) => {
                !last.same_kind(action)
                    || (line != *last_line && at.elapsed() >= REPEAT_DETAIL_EVERY)
            }
        };
        if due {
            logln!("{line}");
            self.last = Some((action.clone(), line, Instant::now()));
        }
    }
}

/// The leader's renewal, shared with the watchdog, and kept in the lease
/// file for the health endpoint.
struct Renewal {
    /// While this node leads: when its key may be about to expire.
    deadline: Mutex<Option<Instant>>,
    /// Set by the watchdog when it made the node refuse writes.
    refused: AtomicBool,
    lease_file: Option<PathBuf>,
}

impl Renewal {
    fn new(lease_file: Option<PathBuf>) -> Renewal {
        let renewal = Renewal {
            deadline: Mutex::new(None),
            refused: AtomicBool::new(false),
            lease_file,
        };
        // One left by a monitor that was killed is no lease of this one's.
        renewal.publish(None);
        renewal
    }

    fn set(&self, deadline: Option<Instant>) {
        let mut held = self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *held = deadline;
        self.publish(deadline);
    }

    fn take_expired(&self, now: Instant) -> bool {
        let mut deadline = self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if deadline.is_some_and(|at| now >= at) {
            *deadline = None;
            self.publish(None);
            return true;
        }
        false
    }

    /// Writes the deadline into the lease file (as wall-clock time), or
    /// removes the file when there is none. Called with the lock held, so
    /// that the file never outlives a deadline cleared meanwhile.
    fn publish(&self, deadline: Option<Instant>) {
        let Some(path) = &self.lease_file else { return };
        let result = match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                pgcore::lease::write(path, SystemTime::now() + left)
            }
            None => pgcore::lease::remove(path),
        };
        if let Err(err) = result {
            logln!(
                "error: cannot update the lease file {}: {err}",
                path.display()
            );
        }
    }
}

/// Runs until SIGTERM / SIGINT or an internal error.
pub fn run(config: ConsensusConfig) -> anyhow::Result<()> {
    let signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let _pidfile = match &config.pidfile {
        Some(path) => Some(Pidfile::create(path)?),
        None => None,
    };
    let etcd = Etcd::new(config.store.clone()).map_err(|err| anyhow!(err))?;
    let (events, received) = mpsc::channel();
    forward_signals(signals, events.clone())?;
    let config = Arc::new(config);
    let renewal = Arc::new(Renewal::new(config.lease_file.clone()));
    let leading = Arc::new(AtomicBool::new(false));
    {
        let (config, renewal) = (Arc::clone(&config), Arc::clone(&renewal));
        thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || guard_renewal(&config, &renewal))
            .context("cannot start the watchdog thread")?;
    }
    {
        let (config, renewal, leading) = (
            Arc::clone(&config),
            Arc::clone(&renewal),
            Arc::clone(&leading),
        );
        thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    watch(&config, etcd, &renewal, &leading)
                }))
                .unwrap_or_else(|_| Err(anyhow!("the consensus loop panicked")));
                let _ = events.send(Event::Ended(result));
            })
            .context("cannot start the consensus thread")?;
    }
    match received.recv() {
        Ok(Event::Signal(signal)) => {
            let name = signal_name(signal);
            if leading.load(Ordering::SeqCst) {
                // Its key outlives this process by up to ttl: the node takes
                // no writes without a loop to renew it. A new monitor adopts
                // the key and lets writes in again.
                logln!("{name} received while leading: refusing writes, then stopping");
                renewal.set(None);
                refuse_or_stop(&config);
            } else {
                logln!("{name} received: stopping (nothing else is done)");
            }
            Ok(())
        }
        Ok(Event::Ended(result)) => result,
        Err(_) => Err(anyhow!("the consensus thread vanished")),
    }
}

/// The loop: renew and read the store, probe, decide, act, sleep out `loop_wait`.
fn watch(
    config: &ConsensusConfig,
    etcd: Etcd,
    renewal: &Renewal,
    leading: &AtomicBool,
) -> anyhow::Result<()> {
    let client = Client::new().context("cannot start the probe runtime")?;
    let mut store = Store::new(
        etcd,
        &config.scope,
        &config.policy.name,
        config.ttl,
        config.retry_timeout,
    );
    log_start(config);
    let mut local_session = HeldSession::new(&client);
    let mut state = State::default();
    let mut decisions = DecisionLog::default();
    loop {
        let tick = Instant::now();
        let renewed = store.renew();
        let local = local_session.status(&config.local, Detail::Full, config.local.connect_timeout);
        if renewal.refused.swap(false, Ordering::SeqCst) {
            state.refusing_writes = true;
        }
        let (store_view, asked_at) = match renewed {
            Ok(renewed) => (Ok(renewed.view), Some(renewed.asked_at)),
            Err(err) => (Err(err.to_string()), None),
        };
        let members = match &store_view {
            Ok(view) if view.leader.is_none() && local.is_ok() => probe_members(config),
            _ => Vec::new(),
        };
        let observation = Observation {
            local,
            store: store_view,
            lease: store.lease(),
            members,
            paused_here: config
                .pause_files
                .iter()
                .any(|path| pair_effects::pause_file_present(path)),
            draining: config
                .draining_file
                .as_deref()
                .is_some_and(pair_effects::pause_file_present),
            now: Instant::now(),
        };
        let (action, next) = decide(&observation, &state, &config.policy);
        state = next;
        // The lease counts from the renewal's asking, and only while the key
        // is on this member's own lease (after a hand-over to it, adopting
        // it comes first).
        let on_own_lease = matches!(&observation.store, Ok(view)
            if view.leader.as_ref().is_some_and(|leader| leader.lease == store.lease()));
        if state.leader && on_own_lease {
            renewal.set(
                asked_at.map(|at| renewal_deadline(at, config.loop_wait, config.retry_timeout)),
            );
        } else if !state.leader {
            renewal.set(None);
        }
        decisions.log(&action);
        let in_recovery = observation
            .local
            .as_ref()
            .is_ok_and(|status| status.in_recovery == Some(true));
        let mut effects = Effects {
            config,
            client: &client,
            store: &mut store,
            renewal,
            asked_at,
        };
        effects.act(&action, &mut state, on_own_lease, in_recovery);
        leading.store(state.leader, Ordering::SeqCst);
        if let Some(rest) = config.loop_wait.checked_sub(tick.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// What acting needs: the configuration, the probe client, the store, the
/// watchdog's renewal, and when this tick's lease renewal was asked.
struct Effects<'a, 'c> {
    config: &'a ConsensusConfig,
    client: &'c Client,
    store: &'a mut Store,
    renewal: &'a Renewal,
    asked_at: Option<Instant>,
}

impl Effects<'_, '_> {
    fn act(&mut self, action: &Action, state: &mut State, on_own_lease: bool, in_recovery: bool) {
        let (config, client) = (self.config, self.client);
        if state.leader && !on_own_lease && !self.adopt(state) {
            return;
        }
        match action {
            Action::Wait(_) => {}
            Action::TakeLeadership => match self.store.take_leadership() {
                Ok(true) => {
                    logln!("this member leads now");
                    state.leader = true;
                    self.key_on_own_lease();
                    self.become_primary(state, in_recovery);
                }
                Ok(false) => logln!("another member took the leader key first"),
                Err(err) => logln!("error: cannot take the leader key: {err}"),
            },
            Action::Promote => self.become_primary(state, true),
            Action::AllowWrites => self.become_primary(state, false),
            Action::RefuseWrites(_) => {
                refuse_or_stop(config);
                state.refusing_writes = true;
                self.renewal.set(None);
            }
            Action::Release { stop, .. } => {
                if *stop {
                    refuse_or_stop(config);
                }
                self.renewal.set(None);
                match self.store.release_leadership() {
                    Ok(_) => {
                        logln!("gave the leader key up");
                        state.leader = false;
                    }
                    Err(err) => logln!(
                        "error: cannot give the leader key up ({err}); it expires with the lease"
                    ),
                }
            }
            Action::Rejoin { .. } => {
                refuse_or_stop(config);
                match &config.rejoin_command {
                    Some(command) => {
                        pair_effects::run_command("rejoin command", command, config.command_timeout);
                    }
                    None => logln!(
                        "no --rejoin-cmd: the node keeps refusing writes until an operator restarts it"
                    ),
                }
            }
            Action::Follow { leader } => {
                let Some(leader_options) = config.members.get(leader) else {
                    logln!("error: the leader key names {leader}, which is not a --member");
                    return;
                };
                if let Err(err) = effects::follow(client, config, &leader_options.endpoint) {
                    logln!("error: cannot point the local replica at {leader}: {err:#}");
                }
            }
            Action::HandOver { to } => self.hand_over(to, state),
            Action::SetSync(count) => self.set_sync(*count, state),
        }
    }

    /// The key was just put on this member's lease: it lasts from the
    /// lease's renewal of this tick, and the node may take writes (the
    /// lease file says so at once, not a tick later).
    fn key_on_own_lease(&self) {
        let renewed = self.asked_at.unwrap_or_else(Instant::now);
        self.renewal.set(Some(renewal_deadline(
            renewed,
            self.config.loop_wait,
            self.config.retry_timeout,
        )));
    }

    /// The key names this member but lives on another lease (a hand-over
    /// to it, or an earlier run of this monitor): moved onto its own.
    fn adopt(&mut self, state: &mut State) -> bool {
        let why_not = match self.store.adopt_leadership() {
            Ok(true) => {
                logln!("the leader key is on this member's lease now");
                self.key_on_own_lease();
                return true;
            }
            Ok(false) => "the leader key changed first".to_string(),
            Err(err) => err.to_string(),
        };
        logln!("error: cannot adopt the leader key: {why_not}");
        state.leader = false;
        false
    }

    /// Once this member leads: its replica is promoted; its primary takes
    /// writes (again).
    fn become_primary(&mut self, state: &mut State, in_recovery: bool) {
        let (config, client) = (self.config, self.client);
        // Until it sets synchronous_standby_names, a new primary's commits
        // wait for no standby: the store says so first.
        if config.policy.sync_count > 0 {
            if let Err(err) = self.store.publish_sync(0) {
                logln!("error: cannot publish the synchronous count: {err}; not taking writes yet");
                return;
            }
        }
        if in_recovery {
            if let Err(err) = pair_effects::promote(
                client,
                &config.local,
                config.pg_ctl.as_ref(),
                config.promote_timeout,
            ) {
                logln!("error: promotion failed: {err:#}; deciding again on the next check");
                return;
            }
        } else if let Err(failure) = pair_effects::allow_writes(client, &config.local) {
            logln!("error: cannot let the local node take writes: {failure}");
            return;
        }
        state.refusing_writes = false;
        state.sync_set = None;
        if let Some(command) = &config.on_leader_command {
            pair_effects::run_command("on-leader command", command, config.command_timeout);
        }
    }

    /// A switchover: refuse writes, let the target catch up, name it in the
    /// key; it adopts the key and promotes, this node rejoins as its replica.
    fn hand_over(&mut self, to: &str, state: &mut State) {
        let (config, client) = (self.config, self.client);
        let chosen;
        let to = if to == store::ANY_MEMBER {
            match effects::best_streaming_replica(client, &config.members) {
                Some(best) => {
                    chosen = best;
                    chosen.as_str()
                }
                None => {
                    logln!("switchover to any member not yet: no replica streams");
                    return;
                }
            }
        } else {
            to
        };
        let Some(target) = config.members.get(to) else {
            logln!("switchover to {to} refused: not a member; clearing it");
            let _ = self.store.clear_switchover();
            return;
        };
        if let Err(why) = effects::ready_for_switchover(client, target) {
            logln!("switchover to {to} not yet: {why}");
            return;
        }
        refuse_or_stop(config);
        state.refusing_writes = true;
        if let Err(why) =
            effects::wait_caught_up(client, &config.local, target, config.promote_timeout)
        {
            logln!("switchover to {to} abandoned: {why}; taking writes again");
            let _ = self.store.clear_switchover();
            if pair_effects::allow_writes(client, &config.local).is_ok() {
                state.refusing_writes = false;
            }
            return;
        }
        match self.store.hand_over(to) {
            Ok(true) => {
                logln!("the leader key names {to} now; rejoining as its replica");
                state.leader = false;
                self.renewal.set(None);
            }
            Ok(false) => logln!("switchover: this member no longer held the leader key"),
            Err(err) => logln!("error: switchover: cannot hand the key over: {err}"),
        }
    }

    /// Commits wait for `count` standbys: published before a lower count
    /// takes effect, after a higher one does.
    fn set_sync(&mut self, count: u32, state: &mut State) {
        let lowering = state.sync_set.is_none_or(|set| count < set);
        if lowering {
            if let Err(err) = self.store.publish_sync(count) {
                logln!("error: cannot publish the synchronous count: {err}");
                return;
            }
        }
        if let Err(failure) = effects::set_synchronous_count(self.client, &self.config.local, count)
        {
            logln!("error: cannot set synchronous_standby_names: {failure}");
            return;
        }
        if !lowering {
            if let Err(err) = self.store.publish_sync(count) {
                logln!("error: cannot publish the synchronous count: {err}");
                return;
            }
        }
        state.sync_set = Some(count);
    }
}

/// The other members' servers, each asked once, all at once, each within
/// [`MEMBER_PROBE_BOUND`] (or the connect timeout, when shorter): an
/// election waits for the slowest answer, and a member behind a cut link
/// would otherwise hold every election up by a whole connect timeout.
fn probe_members(config: &ConsensusConfig) -> Vec<Member> {
    std::thread::scope(|scope| {
        let asked: Vec<_> = config
            .members
            .iter()
            .map(|(name, options)| {
                let mut options = options.clone();
                options.connect_timeout = options.connect_timeout.min(MEMBER_PROBE_BOUND);
                let probe = scope.spawn(move || {
                    Client::new()
                        .map_err(|err| pgcore::Failure::transient(err.to_string()))
                        .and_then(|client| client.probe_once(&options, Detail::Full))
                });
                (name.clone(), probe)
            })
            .collect();
        asked
            .into_iter()
            .map(|(name, probe)| Member {
                name,
                status: probe
                    .join()
                    .unwrap_or_else(|_| Err(pgcore::Failure::transient("the probe panicked"))),
            })
            .collect()
    })
}

/// How long an election waits for a member's answer.
const MEMBER_PROBE_BOUND: Duration = Duration::from_secs(2);

/// The watchdog: when a stuck tick lets the leader's renewal age past its
/// deadline, the node refuses writes (or is stopped).
fn guard_renewal(config: &ConsensusConfig, renewal: &Renewal) {
    loop {
        thread::sleep(WATCHDOG_PERIOD);
        if renewal.take_expired(Instant::now()) {
            logln!(
                "LEASE NOT RENEWED for {:.1} s (loop_wait + 2 × retry_timeout): refusing writes, \
                 as the leader key may expire",
                (config.loop_wait + config.retry_timeout * 2).as_secs_f64()
            );
            refuse_or_stop(config);
            renewal.refused.store(true, Ordering::SeqCst);
        }
    }
}

const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);

/// What the watchdog gives the local server to refuse writes before it is stopped.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes the local primary refuse writes; a server that cannot even be
/// asked within a second is stopped (SIGKILL), so it cannot resume taking them.
fn refuse_or_stop(config: &ConsensusConfig) {
    let client = match Client::new() {
        Ok(client) => client,
        Err(err) => {
            logln!("error: cannot start a probe runtime to refuse writes: {err}");
            return;
        }
    };
    let mut local = config.local.clone();
    local.connect_timeout = REFUSE_TIMEOUT;
    if let Err(failure) = pair_effects::refuse_writes(&client, &local) {
        if failure.kind.is_definitive() {
            return;
        }
        logln!("the local node does not answer: {failure}");
        match &config.pg_ctl {
            Some(pg_ctl) => match pair_effects::kill_server(&pg_ctl.data_dir) {
                Ok(killed) => logln!("stopped the local server: SIGKILL to {killed} process(es)"),
                Err(err) => logln!("error: cannot stop the local server: {err:#}"),
            },
            None => logln!("error: no --data-dir: the local server cannot be stopped"),
        }
    }
}

fn log_start(config: &ConsensusConfig) {
    let others: Vec<String> = config
        .members
        .iter()
        .map(|(name, options)| format!("{name}={}", options.endpoint))
        .collect();
    logln!(
        "consensus: member {} of scope {} (local {}), with {}; store {}",
        config.policy.name,
        config.scope,
        config.local.endpoint,
        others.join(", "),
        config.store.endpoints.join(", ")
    );
    logln!(
        "lease: ttl {:.1} s, loop every {:.1} s, retry budget {:.1} s: a leader that cannot renew \
         refuses writes within {:.1} s; synchronous standbys {}, max lag {}",
        config.ttl.as_secs_f64(),
        config.loop_wait.as_secs_f64(),
        config.retry_timeout.as_secs_f64(),
        (config.loop_wait + config.retry_timeout * 2).as_secs_f64(),
        config.policy.sync_count,
        config
            .policy
            .max_lag_bytes
            .map_or("unlimited".to_string(), |max| format!("{max} bytes"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_break_the_lease_rule_are_refused() {
        let s = Duration::from_secs;
        assert!(check_timings(s(10), s(1), s(4)).is_ok());
        assert!(check_timings(s(30), s(10), s(10)).is_ok());
        let error = check_timings(s(10), s(3), s(4)).unwrap_err();
        assert!(error.contains("= 11s is longer than --ttl 10s"), "{error}");
        assert!(check_timings(Duration::from_millis(9500), s(1), s(1)).is_err());
    }
}
