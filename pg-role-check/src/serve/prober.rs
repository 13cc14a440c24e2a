//! The one thread that talks to the node: it holds one connection, and runs
//! one query for every request waiting when the query starts.
//!
//! Freshness without a cache: a request is answered only by a query that
//! started after it arrived, so an answer is never older than one query;
//! requests that arrive while a query runs wait for the next one, so
//! concurrent checks share a query instead of each opening a connection.
//!
//! Each request says how much it needs to know ([`Detail`]): a role check
//! asks the least the node can answer (`/primary`: one function call and a
//! setting), `/metrics` everything; a query asks what the most demanding
//! request waiting for it needs.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pgcore::{
    logln, Client, ConnectOptions, Detail, Failure, FailureKind, HeldSession, Report, Retried,
    Role, Status,
};

use super::metrics::Metrics;

/// How much longer than the connect timeout a request waits for its answer
/// before answering itself: the prober's own bound, plus time to hand over.
const PATIENCE_MARGIN: Duration = Duration::from_millis(250);

/// A node's answer to one query, shared by the requests it answers.
#[derive(Debug)]
pub struct Checked {
    /// The query's report: the status, or why there is none; its latency is
    /// the query's time (connecting included, when it had to).
    pub report: Report,
    /// When the query started: every request it answers arrived before.
    pub started: Instant,
}

/// The request threads' side: ask, and wait (bounded) for the answer.
pub struct Prober {
    requests: Sender<Waiting>,
    patience: Duration,
}

/// A request waiting for a query that starts after it arrived and asks at
/// least `detail`.
struct Waiting {
    arrived: Instant,
    detail: Detail,
    reply: Sender<Arc<Checked>>,
}

impl Prober {
    /// Starts the prober thread, which connects on the first request.
    pub fn start(
        client: Client,
        options: ConnectOptions,
        metrics: Arc<Metrics>,
    ) -> io::Result<Prober> {
        let (requests, queue) = mpsc::channel();
        let patience = options.connect_timeout + PATIENCE_MARGIN;
        thread::Builder::new()
            .name("prober".into())
            .spawn(move || Held::new(&client, options).answer_all(&queue, &metrics))?;
        Ok(Prober { requests, patience })
    }

    /// The answer of a query that started after `arrived` and asked at
    /// least `detail`; when none comes within the connect timeout and a
    /// margin, a failure saying so (the query still running, or the one
    /// before it, is hung).
    pub fn check(&self, arrived: Instant, detail: Detail) -> Arc<Checked> {
        let (reply, answer) = mpsc::channel();
        let waiting = Waiting {
            arrived,
            detail,
            reply,
        };
        if self.requests.send(waiting).is_ok() {
            if let Ok(checked) = answer.recv_timeout(self.patience) {
                return checked;
            }
        }
        Arc::new(self.no_answer(arrived))
    }

    fn no_answer(&self, arrived: Instant) -> Checked {
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

    /// Answers requests until every request thread is gone: one query for
    /// all those waiting when it starts.
    fn answer_all(mut self, queue: &Receiver<Waiting>, metrics: &Metrics) {
        // Connects at once, for nobody: the log says from the start whether
        // the node can be reached, and the first check finds it connected.
        self.check(Detail::Role);
        let mut waiting = Vec::new();
        while let Ok(first) = queue.recv() {
            waiting.push(first);
            waiting.extend(queue.try_iter());
            // Taken after the queue was emptied: everyone in `waiting` arrived
            // before it, and whoever comes now waits for the next query.
            let started = Instant::now();
            let detail = waiting.iter().map(|request| request.detail).max();
            let detail = detail.unwrap_or(Detail::Role);
            let report = self.check(detail);
            metrics.observe_check(report.latency);
            let checked = Arc::new(Checked { report, started });
            for request in waiting.drain(..) {
                debug_assert!(request.arrived <= started);
                // A request that stopped waiting has hung up: nothing to do.
                let _ = request.reply.send(Arc::clone(&checked));
            }
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
