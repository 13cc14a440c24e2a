//! A session held open across checks: a long-running program asks a node
//! every second or more often, and a new connection each time costs the
//! server a backend process and both sides an authentication exchange. Its
//! status statements are prepared on the server once per connection.

use std::time::{Duration, Instant};

use super::{Client, Session};
use crate::failure::Failure;
use crate::role::{Detail, Status};
use crate::target::ConnectOptions;

/// One node's status over a connection kept between calls.
///
/// A held connection that fails, or does not answer within half the bound,
/// is dropped and the question asked again over a new one within the rest:
/// the new connection classifies the failure exactly as a one-off probe does
/// (refused, hung once connected, unreachable). A silent held connection
/// alone cannot tell a hung server from a cut link, and callers decide
/// differently on the two.
pub struct HeldSession<'c> {
    client: &'c Client,
    session: Option<Session<'c>>,
}

impl<'c> HeldSession<'c> {
    pub fn new(client: &'c Client) -> HeldSession<'c> {
        HeldSession {
            client,
            session: None,
        }
    }

    /// The node's status at `detail`, everything within `bound`.
    pub fn status(
        &mut self,
        options: &ConnectOptions,
        detail: Detail,
        bound: Duration,
    ) -> Result<Status, Failure> {
        let started = Instant::now();
        if let Some(mut session) = self.session.take() {
            if !session.is_closed() {
                session.limit = super::Limit::EachStep(bound / 2);
                if let Ok(status) = session.status(detail) {
                    self.session = Some(session);
                    return Ok(status);
                }
            }
        }
        let left = bound.saturating_sub(started.elapsed());
        let session = self
            .client
            .connect_within(options, left)?
            .preparing_statuses();
        let status = session.status(detail)?;
        self.session = Some(session);
        Ok(status)
    }

    /// Waits up to `bound` for the held connection to end, and says whether
    /// it did; with none held, nothing can end, and it waits the whole bound.
    pub fn wait_closed(&mut self, bound: Duration) -> bool {
        match self.session.as_mut() {
            Some(session) => session.wait_closed(bound),
            None => {
                std::thread::sleep(bound);
                false
            }
        }
    }

    /// Whether a connection is held now.
    pub fn is_held(&self) -> bool {
        self.session.is_some()
    }

    /// Closes the held connection, if any.
    pub fn drop_connection(&mut self) {
        self.session = None;
    }
}
