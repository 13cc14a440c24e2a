//! The node's answers: one connection held for every check, and one query
//! for every request waiting when it starts.
//!
//! Freshness without a cache: a request is answered only by a query that
//! started after it arrived, so an answer is never older than one query;
//! requests that arrive while a query runs wait for the next one, so
//! concurrent checks share a query instead of each opening a connection.
//! The request that finds no query running runs the next one itself, on
//! its own thread: a check costs no hand-over to another thread and back.
//!
//! Each request says how much it needs to know ([`Detail`]): a role check
//! asks the least the node can answer (`/primary`: one function call and a
//! setting), `/metrics` everything; a query asks what the most demanding
//! request waiting for it needs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pgcore::{
    logln, Client, ConnectOptions, Detail, Failure, FailureKind, HeldSession, Report, Retried,
    Role, Status,
};

use super::metrics::Metrics;

/// How much longer than the connect timeout a request waits for its answer
/// before answering itself: the query's own bound, plus time to hand over.
const PATIENCE_MARGIN: Duration = Duration::from_millis(250);

/// A node's answer to one query, shared by the requests it answers.
#[derive(Debug)]
pub struct Checked {
    /// The query's report: the status, or why there is none; its latency is
    /// the query's time (connecting included, when it had to).
    pub report: Report,
    /// When the query started: every request it answers arrived before.
    pub started: Instant,
    /// How much it asked: it answers requests that need as much or less.
    detail: Detail,
}

/// What the request threads share: the held connection while no query
/// runs, the last answer, and how much the requests waiting need.
pub struct Prober {
    shared: Mutex<Shared>,
    answered: Condvar,
    metrics: Arc<Metrics>,
    patience: Duration,
}

struct Shared {
    /// `None` while a request runs a query on it.
    held: Option<Held<'static>>,
    last: Option<Arc<Checked>>,
    /// The most any request waiting for the next query needs.
    wanted: Option<Detail>,
}

impl Prober {
    /// Connects at once, for nobody: the log says from the start whether
    /// the node can be reached, and the first check finds it connected.
    /// The client lives as long as the process (the held session borrows it).
    pub fn start(client: Client, options: ConnectOptions, metrics: Arc<Metrics>) -> Prober {
        let client: &'static Client = Box::leak(Box::new(client));
        let patience = options.connect_timeout + PATIENCE_MARGIN;
        let mut held = Held::new(client, options);
        held.check(Detail::Role);
        Prober {
            shared: Mutex::new(Shared {
                held: Some(held),
                last: None,
                wanted: None,
            }),
            answered: Condvar::new(),
            metrics,
            patience,
        }
    }

    /// The answer of a query that started after `arrived` and asked at
    /// least `detail`: run here when no query runs, else waited for. When
    /// none comes within the connect timeout and a margin, a failure saying
    /// so (the query still running, or the one before it, is hung).
    pub fn check(&self, arrived: Instant, detail: Detail) -> Arc<Checked> {
        let deadline = arrived + self.patience;
        let mut shared = self.lock();
        loop {
            if let Some(last) = &shared.last {
                if last.started >= arrived && last.detail >= detail {
                    return Arc::clone(last);
                }
            }
            if let Some(held) = shared.held.take() {
                let detail = shared
                    .wanted
                    .take()
                    .map_or(detail, |wanted| wanted.max(detail));
                drop(shared);
                return self.run(held, detail);
            }
            shared.wanted = Some(shared.wanted.map_or(detail, |wanted| wanted.max(detail)));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Arc::new(self.no_answer(arrived, detail));
            }
            shared = self
                .answered
                .wait_timeout(shared, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// One query on `held`, shared with every request waiting meanwhile.
    fn run(&self, mut held: Held<'static>, detail: Detail) -> Arc<Checked> {
        // Taken before the query: every request waiting now arrived before
        // it, and is answered by it.
        let started = Instant::now();
        let report = held.check(detail);
        self.metrics.observe_check(report.latency);
        let checked = Arc::new(Checked {
            report,
            started,
            detail,
        });
        let mut shared = self.lock();
        shared.held = Some(held);
        shared.last = Some(Arc::clone(&checked));
        drop(shared);
        self.answered.notify_all();
        checked
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A request that panicked while holding the lock left nothing half
        // done that matters: the next query starts afresh.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn no_answer(&self, arrived: Instant, detail: Detail) -> Checked {
        let failure = Failure {
            kind: FailureKind::Hung,
            endpoint: None,
            cause: format!(
                "no answer from the node within {:.1} s: the query before this request's \
                 is still running, or hung",
                self.patience.as_secs_f64()
            ),
        };
        let retried = Retried::<Status> {
            result: Err(failure),
            attempts: 1,
        };
        Checked {
            report: Report::new(retried, arrived.elapsed()),
            started: arrived,
            detail,
        }
    }
}

/// The held connection, and what was last logged about the node, so that
/// only changes are logged.
struct Held<'c> {
    session: HeldSession<'c>,
    options: ConnectOptions,
    connected: Option<bool>,
    role: Option<Role>,
}

impl<'c> Held<'c> {
    fn new(client: &'c Client, options: ConnectOptions) -> Held<'c> {
        Held {
            session: HeldSession::new(client),
            options,
            connected: None,
            role: None,
        }
    }

    /// One query at `detail` over the held connection (a new one when it is
    /// gone, failed or silent, within the same connect timeout), as a report.
    fn check(&mut self, detail: Detail) -> Report {
        let started = Instant::now();
        let result = self
            .session
            .status(&self.options, detail, self.options.connect_timeout);
        self.log_changes(&result);
        let retried = Retried {
            result,
            attempts: 1,
        };
        Report::new(retried, started.elapsed())
    }

    fn log_changes(&mut self, result: &Result<Status, Failure>) {
        let endpoint = &self.options.endpoint;
        match (result, self.connected) {
            (Ok(_), Some(false)) => logln!("connection to {endpoint} re-established"),
            (Ok(_), None) => logln!("connected to {endpoint}"),
            (Err(failure), Some(true)) => {
                logln!("connection to {endpoint} lost: {}", failure.cause)
            }
            (Err(failure), None) => logln!("cannot connect to {endpoint}: {}", failure.cause),
            _ => {}
        }
        self.connected = Some(result.is_ok());
        if let Ok(status) = result {
            match self.role.replace(status.role) {
                None => logln!("{endpoint} is {}", status.role),
                Some(was) if was != status.role => {
                    logln!("{endpoint} is now {} (was {was})", status.role)
                }
                Some(_) => {}
            }
        }
    }
}
