//! `pg-monitor`: automatic failover for a two-node PostgreSQL HA pair.
//!
//! Each node runs one monitor. Every interval it observes (the local node's
//! and the peer's full status through the `pgcore` library; witnesses when
//! they matter), decides with the pure [`decide::decide`], and acts through
//! the thin functions in [`effects`]. The loop runs on its own thread so that
//! SIGTERM ends the process at once even while a probe waits for a timeout,
//! and a watchdog thread enforces the primary's lease while a tick is stuck
//! on a probe (a hung local server, a peer behind a cut link).

pub mod consensus;
mod control;
pub mod decide;
pub mod effects;
pub mod haproxy;
mod pidfile;
mod state_file;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use pgcore::{logln, Client, ConnectOptions, Endpoint, HeldSession, Role};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use control::Control;
use decide::{
    after_promotion, after_step_down, decide, needs_witnesses, Action, FenceWhy, LeaseView,
    Observation, Policy, RefuseWhy, State, Wait,
};
use effects::PgCtl;
use haproxy::{HaproxyFlags, Side};
use pidfile::Pidfile;
use state_file::{Counts, StateFile};

/// Everything the monitor needs, parsed and checked.
#[derive(Debug)]
pub struct Config {
    pub policy: Policy,
    pub local: ConnectOptions,
    pub peer: ConnectOptions,
    pub interval: Duration,
    /// The pause while a replica counts failed peer checks (at most `interval`).
    pub retry_interval: Duration,
    pub witnesses: Vec<Endpoint>,
    pub pause_files: Vec<PathBuf>,
    pub fence_commands: Vec<String>,
    pub fence_timeout: Duration,
    /// Where the reason for fencing is written before the fence commands run.
    pub fence_record: Option<PathBuf>,
    /// Run (with /bin/sh -c) when this node is the stale half of a
    /// split-brain, to restart its postgres so that it rejoins the peer.
    pub rejoin_command: Option<String>,
    pub pg_ctl: Option<PgCtl>,
    pub promote_timeout: Duration,
    pub pidfile: Option<PathBuf>,
    /// Where the last decision and the counts of actions are written each
    /// tick, for the health endpoint's metrics.
    pub state_file: Option<PathBuf>,
    /// The local haproxy, told at once when this node is promoted.
    pub haproxy: HaproxyFlags,
}

/// How the monitor ended (both are exit 0 for monit).
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// A signal ended it.
    Stopped(&'static str),
    /// It ran the fence commands.
    Fenced,
}

/// The period after an undecidable split-brain before fencing, so that the
/// peer's monitor sees two primaries too and fences its side as well.
pub fn fence_delay(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(2))
}

/// What a watchdog gives a local server to refuse writes before it stops it:
/// one that cannot answer within this may be hung, and must not resume.
const WATCHDOG_REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the watchdog looks at the lease.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);

/// What the loop and the watchdog share.
#[derive(Default)]
struct Lease {
    view: Mutex<LeaseView>,
    /// Set by the watchdog when it made the local node refuse writes (or
    /// stopped it); the loop takes it into its state.
    refused: AtomicBool,
}

impl Lease {
    fn view(&self) -> std::sync::MutexGuard<'_, LeaseView> {
        self.view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the watchdog acted since the last call.
    fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::SeqCst)
    }
}

/// Runs until a signal, fencing, or an internal error.
pub fn run(config: Config) -> anyhow::Result<Exit> {
    // Handlers first: a SIGTERM right after the pidfile appears must not
    // kill us with the default action and leave the pidfile behind.
    let signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let pidfile = match &config.pidfile {
        Some(path) => Some(Pidfile::create(path)?),
        None => None,
    };
    let result = run_threads(config, signals);
    drop(pidfile);
    result
}

/// What the main thread waits for: a signal, or the loop's end.
enum Event<T> {
    Signal(i32),
    Ended(T),
}

/// A thread that forwards each SIGTERM / SIGINT to `events`.
fn forward_signals<T: Send + 'static>(
    mut signals: Signals,
    events: mpsc::Sender<Event<T>>,
) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn signal_name(signal: i32) -> &'static str {
    if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

fn run_threads(config: Config, signals: Signals) -> anyhow::Result<Exit> {
    let (events, received) = mpsc::channel();
    forward_signals(signals, events.clone())?;

    let control = Arc::new(Control::default());
    let lease = Arc::new(Lease::default());
    let config = Arc::new(config);
    let (watchdog_config, watchdog_lease, watchdog_control) = (
        Arc::clone(&config),
        Arc::clone(&lease),
        Arc::clone(&control),
    );
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || guard_lease(&watchdog_config, &watchdog_lease, &watchdog_control))
        .context("cannot start the watchdog thread")?;
    let loop_control = Arc::clone(&control);
    thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                watch(&config, &loop_control, &lease)
            }))
            .unwrap_or_else(|_| Err(anyhow!("the monitor loop panicked")));
            let _ = events.send(Event::Ended(result));
        })
        .context("cannot start the monitor thread")?;

    loop {
        match received.recv() {
            Ok(Event::Signal(signal)) => {
                let name = signal_name(signal);
                if control.stop_unless_fencing() {
                    logln!("{name} received: stopping (nothing else is done)");
                    return Ok(Exit::Stopped(name));
                }
                logln!("{name} received while fencing: finishing the fence commands first");
            }
            Ok(Event::Ended(result)) => return result,
            Err(_) => return Err(anyhow!("the monitor thread vanished")),
        }
    }
}

/// The loop: observe, decide, act, sleep out the interval.
fn watch(config: &Config, control: &Control, lease: &Lease) -> anyhow::Result<Exit> {
    let client = Client::new().context("cannot start the probe runtime")?;
    log_start(config);
    let mut nodes = HeldNodes {
        local: HeldSession::new(&client),
        peer: HeldSession::new(&client),
    };
    let mut state = State::default();
    let mut lines = LogLines::default();
    let mut paused = false;
    let mut state_file = config.state_file.clone().map(StateFile::new);
    let mut counts = Counts::default();
    loop {
        let tick = Instant::now();
        let observation = observe(&mut nodes, &client, config);
        if observation.paused != paused {
            paused = observation.paused;
            log_pause_change(config, paused);
        }
        if lease.take_refused() {
            state.refusing_writes = true;
            counts.write_refusals += 1;
        }
        let (action, next) = decide(&observation, &state, &config.policy);
        state = next;
        lines.log(&action, tick);
        if control.stopping() {
            return Ok(Exit::Stopped("signal"));
        }
        match &action {
            Action::Wait(_) => {}
            Action::Promote(_) => {
                match effects::promote(
                    &client,
                    &config.local,
                    config.pg_ctl.as_ref(),
                    config.promote_timeout,
                ) {
                    Ok(_) => {
                        state = after_promotion(&state, &config.policy);
                        counts.promotions += 1;
                        if let Some(said) =
                            config.haproxy.tell(&config.haproxy.promoted(Side::Local))
                        {
                            logln!("{said}");
                        }
                    }
                    Err(err) => logln!(
                        "error: promotion failed: {err:#}; the local node may still be a replica; \
                         deciding again on the next check"
                    ),
                }
            }
            Action::RefuseWrites(why) => match effects::refuse_writes(&client, &config.local) {
                Ok(()) => {
                    state.refusing_writes = true;
                    counts.write_refusals += 1;
                }
                Err(failure) if matches!(why, RefuseWhy::LeaseLapsed { .. }) => {
                    logln!("error: cannot make the local node refuse writes: {failure}");
                    stop_server(config);
                    state.refusing_writes = true;
                    counts.write_refusals += 1;
                }
                Err(failure) => logln!(
                    "error: cannot make the local node refuse writes: {failure}; deciding again \
                     on the next check"
                ),
            },
            Action::AllowWrites => match effects::allow_writes(&client, &config.local) {
                Ok(()) => state.refusing_writes = false,
                Err(failure) => logln!(
                    "error: cannot let the local node take writes again: {failure}; retrying on \
                     the next check"
                ),
            },
            Action::StepDown(_) => {
                // Nothing more is acknowledged here: the peer holds the data now.
                if let Err(failure) = effects::refuse_writes(&client, &config.local) {
                    logln!("error: cannot make the local node refuse writes: {failure}; restarting it anyway");
                }
                match &config.rejoin_command {
                    Some(command) => {
                        effects::run_command("rejoin command", command, config.fence_timeout);
                    }
                    None => logln!(
                        "no --rejoin-cmd configured: the node keeps refusing writes until an \
                         operator restarts it"
                    ),
                }
                state = after_step_down(&state);
                counts.step_downs += 1;
            }
            Action::Fence(FenceWhy::SplitBrain(evidence)) => {
                if !control.begin_fencing() {
                    return Ok(Exit::Stopped("signal"));
                }
                counts.fences += 1;
                if let Some(file) = state_file.as_mut() {
                    file.write(&action, paused, counts);
                }
                // Writes stop now; the fence commands follow after the delay.
                if let Err(failure) = effects::refuse_writes(&client, &config.local) {
                    logln!("error: cannot make the local node refuse writes: {failure}; fencing anyway");
                }
                if let Some(path) = &config.fence_record {
                    let record = effects::fence_record(evidence, &action.to_string());
                    match pgcore::os::write_atomically(path, record.as_bytes(), 0o644, None) {
                        Ok(()) => logln!("wrote why this node fences to {}", path.display()),
                        Err(err) => logln!("error: cannot write {}: {err}", path.display()),
                    }
                }
                let delay = fence_delay(config.interval);
                logln!(
                    "waiting {:.1} s so the peer's monitor sees the split-brain too",
                    delay.as_secs_f64()
                );
                thread::sleep(delay);
                let succeeded = effects::fence(&config.fence_commands, config.fence_timeout);
                logln!(
                    "fencing done ({succeeded}/{} commands succeeded); exiting",
                    config.fence_commands.len()
                );
                return Ok(Exit::Fenced);
            }
            Action::SetSynchronous(synchronous, _) => {
                if let Err(failure) = effects::set_synchronous(&client, &config.local, *synchronous)
                {
                    logln!("error: cannot change synchronous_standby_names: {failure}; retrying on the next check");
                }
            }
        }
        if lease.take_refused() {
            state.refusing_writes = true;
            counts.write_refusals += 1;
        }
        {
            let mut view = lease.view();
            *view = LeaseView::after(&observation, &state, &view);
        }
        if let Some(file) = state_file.as_mut() {
            file.write(&action, paused, counts);
        }
        let pause = if state.peer_failures > 0 {
            config.retry_interval
        } else {
            config.interval
        };
        if let Some(rest) = pause.checked_sub(tick.elapsed()) {
            // A peer that exits or is stopped closes the held connection at
            // once: the next check comes then, not at the end of the pause.
            nodes.peer.wait_closed(rest);
        }
    }
}

/// The watchdog: when the lease lapses while the loop is stuck on a probe,
/// it makes the local node refuse writes, and stops a server that does not
/// answer within a second (a hung one must not resume taking writes after
/// its peer promoted).
fn guard_lease(config: &Config, lease: &Lease, control: &Control) {
    let client = match Client::new() {
        Ok(client) => client,
        Err(err) => {
            logln!("error: the watchdog cannot start its probe runtime ({err}); the lease is enforced by the loop alone");
            return;
        }
    };
    let mut local = config.local.clone();
    local.connect_timeout = WATCHDOG_REFUSE_TIMEOUT;
    while !control.stopping() {
        thread::sleep(WATCHDOG_PERIOD);
        let view = lease.view().clone();
        if !view.lapsed(Instant::now(), config.policy.lease) {
            continue;
        }
        logln!(
            "LEASE LAPSED while a check was still under way: this primary confirmed neither its \
             peer's host nor a majority of witnesses for {:.1} s; refusing writes, as its peer \
             may promote",
            config.policy.lease.as_secs_f64()
        );
        if let Err(failure) = effects::refuse_writes(&client, &local) {
            logln!("the local node does not answer: {failure}");
            stop_server(config);
        }
        lease.view().takes_writes = false;
        lease.refused.store(true, Ordering::SeqCst);
    }
}

/// SIGKILL to the local server and every process it started: what is left
/// when it cannot be made to refuse writes. monit then restarts it, and its
/// boot finds the promoted peer to rejoin.
fn stop_server(config: &Config) {
    let Some(pg_ctl) = &config.pg_ctl else {
        logln!("error: no --data-dir, so the local server cannot be stopped; it may take writes if it resumes");
        return;
    };
    match effects::kill_server(&pg_ctl.data_dir) {
        Ok(killed) => logln!(
            "stopped the local server: SIGKILL to its {killed} process(es), so it cannot resume \
             taking writes"
        ),
        Err(err) => logln!("error: cannot stop the local server: {err:#}"),
    }
}

/// The connections the loop keeps to the two nodes between its checks.
struct HeldNodes<'c> {
    local: HeldSession<'c>,
    peer: HeldSession<'c>,
}

/// One tick's observation: the local node, the peer only when the local
/// node answers, the witnesses only when the decision depends on them.
fn observe(nodes: &mut HeldNodes, client: &Client, config: &Config) -> Observation {
    let paused = paused_by(config).is_some();
    let mut local = effects::probe_held(&mut nodes.local, &config.local);
    // When the peer's answer proves the link worked, at the latest: the
    // lease counts from here, not from when a slow answer arrived.
    let checked_from = Instant::now();
    // A primary checks within one interval, so its lease and the watchdog
    // keep up; a replica gives its primary the whole connect timeout.
    let bound = match &local {
        Ok(status) if status.role == Role::Primary => primary_check_bound(config),
        _ => config.peer.connect_timeout,
    };
    let mut peer_options = config.peer.clone();
    peer_options.connect_timeout = bound;
    let peer = local
        .is_ok()
        .then(|| effects::probe_held(&mut nodes.peer, &peer_options));
    // A failed peer check may have waited out its whole connect timeout:
    // whether the local replica still streams is asked again, so the decision
    // sees the stream as it is now, not as it was before the wait.
    if matches!(peer, Some(Err(_))) {
        local = effects::probe_held(&mut nodes.local, &config.local);
    }

    let witnesses = match (&local, &peer) {
        (Ok(local), Some(peer)) if !config.witnesses.is_empty() && needs_witnesses(local, peer) => {
            Some(effects::probe_witnesses(client, &config.witnesses, bound))
        }
        _ => None,
    };
    Observation {
        checked_from,
        now: Instant::now(),
        paused,
        local,
        peer,
        witnesses,
    }
}

/// How long a primary's checks of its peer and witnesses may take: one
/// interval (at least a second), at most the connect timeout. A hung peer
/// still shows as reached within it (its host accepted the connection).
fn primary_check_bound(config: &Config) -> Duration {
    config
        .interval
        .max(Duration::from_secs(1))
        .min(config.peer.connect_timeout)
}

/// Logs state changes only, plus a reminder every 10 s while waiting for
/// the local node (step 1), so a stuck clone shows in the log.
#[derive(Default)]
struct LogLines {
    last_key: String,
    last_logged: Option<Instant>,
}

const WAITING_REMINDER: Duration = Duration::from_secs(10);

impl LogLines {
    fn log(&mut self, action: &Action, now: Instant) {
        let key = action.key();
        let reminder_due = matches!(action, Action::Wait(Wait::LocalDown(_)))
            && self
                .last_logged
                .is_some_and(|at| now.saturating_duration_since(at) >= WAITING_REMINDER);
        if key != self.last_key || reminder_due {
            logln!("{action}");
            self.last_key = key;
            self.last_logged = Some(now);
        }
    }
}

fn log_start(config: &Config) {
    let policy = &config.policy;
    logln!(
        "watching: local {} as {}, peer {} as {}, index {} (peer {}), every {:.3} s; \
         {} failed checks {:.3} s apart, each bounded by {:.1} s, before promoting",
        config.local.endpoint,
        config.local.user,
        config.peer.endpoint,
        config.peer.user,
        policy.index,
        policy.peer_index,
        config.interval.as_secs_f64(),
        policy.retries,
        config.retry_interval.as_secs_f64(),
        config.local.connect_timeout.as_secs_f64()
    );
    logln!(
        "lease: a primary takes writes {:.1} s past its last sight of its peer's host or a \
         majority of witnesses; a replica promotes over a primary it cannot see after {:.1} s, \
         over one that is positively dead after {} checks",
        policy.lease.as_secs_f64(),
        policy.promote_after().as_secs_f64(),
        policy.retries
    );
    let witnesses: Vec<String> = config.witnesses.iter().map(|w| w.to_string()).collect();
    logln!(
        "guards: synchronous {:?}{}, max lag {}, witnesses [{}], pause file {}, {} fence command(s)",
        policy.synchronous,
        policy.replica_silence.map_or(String::new(), |silence| format!(
            " (a standby silent for {:.1} s counts as gone)",
            silence.as_secs_f64()
        )),
        policy.max_lag_bytes
            .map_or("unlimited".to_string(), |max| format!("{max} bytes")),
        witnesses.join(", "),
        if config.pause_files.is_empty() {
            "none".to_string()
        } else {
            list_paths(&config.pause_files)
        },
        config.fence_commands.len()
    );
    if config.fence_commands.is_empty() {
        logln!("warning: no --fence-cmd: on split-brain the monitor only logs and exits");
    }
}

/// The first pause file that exists, if any.
fn paused_by(config: &Config) -> Option<&Path> {
    config
        .pause_files
        .iter()
        .map(PathBuf::as_path)
        .find(|path| effects::pause_file_present(path))
}

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    names.join(", ")
}

fn log_pause_change(config: &Config, paused: bool) {
    match paused_by(config) {
        Some(path) if paused => logln!(
            "failover paused: {} exists; no promotion or fencing until it is removed",
            path.display()
        ),
        _ => logln!(
            "failover resumed: no pause file exists ({})",
            list_paths(&config.pause_files)
        ),
    }
}
