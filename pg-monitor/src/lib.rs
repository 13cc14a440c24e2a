//! `pg-monitor`: automatic failover for a two-node PostgreSQL HA pair.
//!
//! Each node runs one monitor. Every interval it observes (the local node's
//! and the peer's full status through the `probe` library; witnesses when
//! they matter), decides with the pure [`decide::decide`], and acts through
//! the thin functions in [`effects`]. The loop runs on its own thread so that
//! SIGTERM ends the process at once even while a probe waits for a timeout.

pub mod decide;
pub mod effects;
mod process;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use probe::{logln, ConnectOptions, Endpoint, Prober};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use decide::{after_promotion, decide, needs_witnesses, Action, Config, Observation, State, Wait};
use effects::PgCtl;
use process::{Control, Pidfile};

/// Everything the monitor needs, parsed and checked.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub local: ConnectOptions,
    pub peer: ConnectOptions,
    pub interval: Duration,
    /// The pause while a replica counts failed peer checks (at most `interval`).
    pub retry_interval: Duration,
    pub witnesses: Vec<Endpoint>,
    pub pause_files: Vec<PathBuf>,
    pub fence_commands: Vec<String>,
    pub fence_timeout: Duration,
    pub pg_ctl: Option<PgCtl>,
    pub promote_timeout: Duration,
    pub pidfile: Option<PathBuf>,
}

/// How the monitor ended (both are exit 0 for monit).
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// A signal ended it.
    Stopped(&'static str),
    /// It ran the fence commands.
    Fenced,
}

/// The period after detecting split-brain before fencing, so that the peer's
/// monitor sees two primaries too and fences its side as well.
pub fn fence_delay(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(2))
}

/// Runs until a signal, fencing, or an internal error.
pub fn run(settings: Settings) -> anyhow::Result<Exit> {
    // Handlers first: a SIGTERM right after the pidfile appears must not
    // kill us with the default action and leave the pidfile behind.
    let signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let pidfile = match &settings.pidfile {
        Some(path) => Some(Pidfile::create(path)?),
        None => None,
    };
    let result = run_threads(settings, signals);
    drop(pidfile);
    result
}

enum Event {
    Signal(i32),
    Ended(anyhow::Result<Exit>),
}

fn run_threads(settings: Settings, mut signals: Signals) -> anyhow::Result<Exit> {
    let (events, received) = mpsc::channel();
    let signal_events = events.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the signal thread")?;

    let control = Arc::new(Control::default());
    let loop_control = Arc::clone(&control);
    thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                watch(&settings, &loop_control)
            }))
            .unwrap_or_else(|_| Err(anyhow!("the monitor loop panicked")));
            let _ = events.send(Event::Ended(result));
        })
        .context("cannot start the monitor thread")?;

    loop {
        match received.recv() {
            Ok(Event::Signal(signal)) => {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
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
fn watch(settings: &Settings, control: &Control) -> anyhow::Result<Exit> {
    let prober = Prober::new().context("cannot start the probe runtime")?;
    log_start(settings);
    let mut state = State::default();
    let mut lines = LogLines::default();
    let mut paused = false;
    loop {
        let tick = Instant::now();
        let observation = observe(&prober, settings);
        if observation.paused != paused {
            paused = observation.paused;
            log_pause_change(settings, paused);
        }
        let (action, next) = decide(&observation, &state, &settings.config);
        state = next;
        lines.log(&action, tick);
        if control.stopping() {
            return Ok(Exit::Stopped("signal"));
        }
        match &action {
            Action::Wait(_) => {}
            Action::Promote(_) => {
                match effects::promote(
                    &prober,
                    &settings.local,
                    settings.pg_ctl.as_ref(),
                    settings.promote_timeout,
                ) {
                    Ok(_) => state = after_promotion(&state, &settings.config),
                    Err(err) => logln!(
                        "error: promotion failed: {err:#}; the local node may still be a replica; \
                         deciding again on the next check"
                    ),
                }
            }
            Action::Fence(why) => {
                if !control.begin_fencing() {
                    return Ok(Exit::Stopped("signal"));
                }
                if *why == decide::FenceWhy::SplitBrain {
                    // Writes stop now; the fence commands follow after the delay.
                    if let Err(failure) = effects::refuse_writes(&prober, &settings.local) {
                        logln!("error: cannot make the local node refuse writes: {failure}; fencing anyway");
                    }
                    let delay = fence_delay(settings.interval);

                    logln!(
                        "waiting {:.1} s so the peer's monitor sees the split-brain too",
                        delay.as_secs_f64()
                    );
                    thread::sleep(delay);
                }
                let succeeded = effects::fence(&settings.fence_commands, settings.fence_timeout);
                logln!(
                    "fencing done ({succeeded}/{} commands succeeded); exiting",
                    settings.fence_commands.len()
                );
                return Ok(Exit::Fenced);
            }
            Action::SetSynchronous(synchronous, _) => {
                if let Err(failure) =
                    effects::set_synchronous(&prober, &settings.local, *synchronous)
                {
                    logln!("error: cannot change synchronous_standby_names: {failure}; retrying on the next check");
                }
            }
        }
        let pause = if state.peer_failures > 0 {
            settings.retry_interval
        } else {
            settings.interval
        };
        if let Some(rest) = pause.checked_sub(tick.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// One tick's observation: the local node, the peer only when the local
/// node answers, the witnesses only when the decision depends on them.
fn observe(prober: &Prober, settings: &Settings) -> Observation {
    let paused = paused_by(settings).is_some();
    let mut local = effects::probe_node(prober, &settings.local);
    let peer = local
        .is_ok()
        .then(|| effects::probe_node(prober, &settings.peer));
    // A failed peer check may have waited out its whole connect timeout:
    // whether the local replica still streams is asked again, so the decision
    // sees the stream as it is now, not as it was before the wait.
    if matches!(peer, Some(Err(_))) {
        local = effects::probe_node(prober, &settings.local);
    }
    // The moment of the answers, not of the questions.
    let now = Instant::now();

    let witnesses = match (&local, &peer) {
        (Ok(local), Some(peer))
            if !settings.witnesses.is_empty() && needs_witnesses(local, peer) =>
        {
            Some(effects::probe_witnesses(
                prober,
                &settings.witnesses,
                settings.local.connect_timeout,
            ))
        }
        _ => None,
    };
    Observation {
        now,
        paused,
        local,
        peer,
        witnesses,
    }
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

fn log_start(settings: &Settings) {
    let cfg = &settings.config;
    logln!(
        "watching: local {} as {}, peer {} as {}, index {} (peer {}), every {:.3} s; \
         {} failed checks {:.3} s apart, each bounded by {:.1} s, before promoting",
        settings.local.endpoint,
        settings.local.user,
        settings.peer.endpoint,
        settings.peer.user,
        cfg.index,
        cfg.peer_index,
        settings.interval.as_secs_f64(),
        cfg.retries,
        settings.retry_interval.as_secs_f64(),
        settings.local.connect_timeout.as_secs_f64()
    );
    let witnesses: Vec<String> = settings.witnesses.iter().map(|w| w.to_string()).collect();
    logln!(
        "guards: synchronous {:?}, max lag {}, witnesses [{}]{}, pause file {}, {} fence command(s)",
        cfg.synchronous,
        cfg.max_lag_bytes
            .map_or("unlimited".to_string(), |max| format!("{max} bytes")),
        witnesses.join(", "),
        if witnesses.is_empty() {
            String::new()
        } else {
            format!(
                " (isolation timeout {:.1} s)",
                cfg.isolation_timeout.as_secs_f64()
            )
        },
        if settings.pause_files.is_empty() {
            "none".to_string()
        } else {
            list_paths(&settings.pause_files)
        },
        settings.fence_commands.len()
    );
    if settings.fence_commands.is_empty() {
        logln!("warning: no --fence-cmd: on split-brain the monitor only logs and exits");
    }
}

/// The first pause file that exists, if any.
fn paused_by(settings: &Settings) -> Option<&Path> {
    settings
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

fn log_pause_change(settings: &Settings, paused: bool) {
    match paused_by(settings) {
        Some(path) if paused => logln!(
            "failover paused: {} exists; no promotion or fencing until it is removed",
            path.display()
        ),
        _ => logln!(
            "failover resumed: no pause file exists ({})",
            list_paths(&settings.pause_files)
        ),
    }
}
