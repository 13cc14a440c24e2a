//! What each worker thread does: accept a connection on the shared listener,
//! read one request, answer it, close, and count it.

use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use pgcore::Report;
use serde::Serialize;

use super::http::{self, Method, ReadError, Response};
use super::judge::{self, Refusal, Route};
use super::metrics::Metrics;
use super::monitor::MonitorFile;
use super::prober::{Checked, Prober};

/// How long a worker waits after a failed accept (out of file descriptors,
/// say) before the next: long enough for connections to close, short
/// enough that checks barely notice.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every worker shares.
pub struct Endpoint {
    pub prober: Prober,
    pub metrics: Arc<Metrics>,
    pub monitor: Option<MonitorFile>,
    pub fence_record: Option<PathBuf>,
    /// With the N-node mode: the monitor's leader lease file.
    pub leader_lease: Option<PathBuf>,
    pub request_timeout: Duration,
}

impl Endpoint {
    /// Answers connections from `listener`, one at a time, for as long as
    /// the process runs.
    pub fn work(&self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                // A bug met by one request must not take a worker away from
                // all the others.
                Ok((stream, _)) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| self.serve_connection(stream)));
                }
                Err(_) => thread::sleep(ACCEPT_BACKOFF),
            }
        }
    }

    fn serve_connection(&self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.request_timeout;
        let (path, response, with_body) = match http::read_head(&mut stream, deadline) {
            Ok(head) => self.answer(&head),
            Err(ReadError::Nothing) => return,
            Err(error) => ("other", self.unread(error), true),
        };
        http::send_and_close(stream, &response.to_bytes(with_body), self.request_timeout);
        self.metrics.count_request(path, response.code);
    }

    /// The response to a request head, the path label it is counted under,
    /// and whether the body is sent.
    fn answer(&self, head: &[u8]) -> (&'static str, Response, bool) {
        let arrived = Instant::now();
        let head = match http::parse_head(head) {
            Ok(head) => head,
            Err(reason) => return ("other", Response::error(400, reason), true),
        };
        let path = judge::path_label(head.target);
        let Some(method) = Method::named(head.method) else {
            let reason = format!("method not allowed: {}", http::ALLOWED);
            return (path, Response::error(405, &reason), true);
        };
        let response = match judge::route(head.target) {
            Ok(route) => self.check(&route, arrived),
            Err(Refusal::NotFound) => Response::error(
                404,
                "no such path: /primary, /replica, /read-only, /health or /metrics",
            ),
            Err(Refusal::BadParameter(reason)) => Response::error(400, &reason),
        };
        (path, response, method.sends_body())
    }

    /// Asks the node (a query that starts after `arrived`) and judges.
    fn check(&self, route: &Route, arrived: Instant) -> Response {
        let checked = self.prober.check(arrived, route.detail());
        if *route == Route::Metrics {
            let monitor = self.monitor.as_ref().and_then(MonitorFile::read);
            return Response {
                code: 200,
                content_type: http::METRICS,
                body: self.metrics.page(&checked.report, monitor.as_ref()),
            };
        }
        // Looked at after the answer: a record written meanwhile counts.
        let fenced = self.fence_record.as_deref().is_some_and(Path::exists);
        let lease = self
            .leader_lease
            .as_deref()
            .map(|path| pgcore::lease::valid_at(path, SystemTime::now()));
        // A primary without a valid lease must not get writes, as a fenced one.
        let barred = fenced || lease == Some(false);
        Response {
            code: judge::status_code(route, &checked.report.status, barred),
            content_type: http::JSON,
            body: body(&checked, fenced, lease),
        }
    }

    fn unread(&self, error: ReadError) -> Response {
        match error {
            ReadError::TooLarge => Response::error(
                431,
                &format!("request head larger than {} bytes", http::MAX_HEAD_BYTES),
            ),
            ReadError::TimedOut => Response::error(
                408,
                &format!(
                    "the request head did not arrive within {:.1} s",
                    self.request_timeout.as_secs_f64()
                ),
            ),
            ReadError::Truncated | ReadError::Nothing => {
                Response::error(400, "the connection closed before the request head ended")
            }
        }
    }
}

/// The JSON of a health path: `--json`'s report, how old it is, whether
/// the fence record exists, and (with --leader-lease) whether the lease is
/// valid.
fn body(checked: &Checked, fenced: bool, leader_lease: Option<bool>) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        report: &'a Report,
        /// Milliseconds since the query that answered started.
        age_ms: f64,
        fenced: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        leader_lease: Option<bool>,
    }
    let age_ms = (checked.started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let body = Body {
        report: &checked.report,
        age_ms,
        fenced,
        leader_lease,
    };
    // Cannot fail for these types; a response must not panic all the same.
    serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_string())
}
