//! The one retry loop: probes, questions to peers and the wait for a server
//! to accept connections all retry the same way, deciding by failure kind.

use std::time::{Duration, Instant};

use crate::failure::{Failure, FailureKind};

/// How often to try before giving up.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1 (the original release's `psql_error_count`).
    pub attempts: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// No attempt starts once this long has passed since the first one.
    pub within: Option<Duration>,
    /// Wait for a server that is not up yet: a refused connection or a
    /// starting server is retried too, and only a rejected login is final.
    pub until_up: bool,
}

impl RetryPolicy {
    /// `attempts` in all, `interval` apart; definitive failures end it at once.
    pub fn attempts(attempts: u32, interval: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts,
            interval,
            within: None,
            until_up: false,
        }
    }

    /// Attempts `interval` apart for up to `within`, while the server starts.
    pub fn until_up(within: Duration, interval: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: u32::MAX,
            interval,
            within: Some(within),
            until_up: true,
        }
    }

    fn is_final(&self, failure: &Failure) -> bool {
        if self.until_up {
            failure.kind == FailureKind::Rejected
        } else {
            failure.kind.is_definitive()
        }
    }
}

/// What [`retry`] ended with, and after how many attempts.
#[derive(Debug)]
pub struct Retried<T> {
    pub result: Result<T, Failure>,
    pub attempts: u32,
}

/// Runs `attempt` until it succeeds, fails for good, or `policy` runs out.
/// Between attempts, `pause` is called with the failure and the interval to
/// wait: it sleeps (waking early on a signal, say) and may log the failure.
pub fn retry<T>(
    policy: &RetryPolicy,
    mut attempt: impl FnMut() -> Result<T, Failure>,
    mut pause: impl FnMut(&Failure, Duration),
) -> Retried<T> {
    let started = Instant::now();
    let attempts = policy.attempts.max(1);
    let mut made = 1;
    loop {
        let failure = match attempt() {
            Ok(value) => {
                return Retried {
                    result: Ok(value),
                    attempts: made,
                }
            }
            Err(failure) => failure,
        };
        let out_of_time = policy
            .within
            .is_some_and(|within| started.elapsed() >= within);
        if policy.is_final(&failure) || made >= attempts || out_of_time {
            return Retried {
                result: Err(failure),
                attempts: made,
            };
        }
        pause(&failure, policy.interval);
        made += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(kind: FailureKind) -> Failure {
        Failure {
            kind,
            endpoint: None,
            cause: format!("{kind:?}"),
        }
    }

    /// Runs `retry` over `outcomes` in turn; the pauses it asked for.
    fn run(policy: RetryPolicy, outcomes: &[Result<u32, FailureKind>]) -> (Retried<u32>, u32) {
        let mut next = outcomes.iter();
        let mut pauses = 0;
        let retried = retry(
            &policy,
            || {
                next.next()
                    .expect("no attempt past the outcomes")
                    .map_err(failing)
            },
            |_, _| pauses += 1,
        );
        (retried, pauses)
    }

    const NO_PAUSE: Duration = Duration::ZERO;

    #[test]
    fn transient_failures_are_retried_until_an_answer() {
        let policy = RetryPolicy::attempts(3, NO_PAUSE);
        let outcomes = [Err(FailureKind::Timeout), Err(FailureKind::Hung), Ok(7)];
        let (retried, pauses) = run(policy, &outcomes);
        assert_eq!(retried.result.unwrap(), 7);
        assert_eq!((retried.attempts, pauses), (3, 2));
    }

    #[test]
    fn attempts_run_out_with_the_last_failure() {
        let policy = RetryPolicy::attempts(2, NO_PAUSE);
        let outcomes = [Err(FailureKind::Timeout), Err(FailureKind::Transient)];
        let (retried, _) = run(policy, &outcomes);
        assert_eq!(retried.result.unwrap_err().kind, FailureKind::Transient);
        assert_eq!(retried.attempts, 2);
    }

    #[test]
    fn a_definitive_failure_ends_the_retries_at_once() {
        for kind in [
            FailureKind::Refused,
            FailureKind::Starting,
            FailureKind::Rejected,
        ] {
            let (retried, pauses) = run(RetryPolicy::attempts(5, NO_PAUSE), &[Err(kind)]);
            assert_eq!(retried.result.unwrap_err().kind, kind);
            assert_eq!((retried.attempts, pauses), (1, 0));
        }
    }

    #[test]
    fn waiting_until_up_retries_a_refusal_but_not_a_rejected_login() {
        let policy = RetryPolicy::until_up(Duration::from_secs(60), NO_PAUSE);
        let outcomes = [Err(FailureKind::Refused), Err(FailureKind::Starting), Ok(1)];
        assert_eq!(run(policy, &outcomes).0.result.unwrap(), 1);
        let (rejected, _) = run(policy, &[Err(FailureKind::Rejected)]);
        assert_eq!(rejected.attempts, 1);
    }

    #[test]
    fn no_attempt_starts_after_the_time_is_up() {
        let policy = RetryPolicy::until_up(Duration::ZERO, NO_PAUSE);
        let (retried, pauses) = run(policy, &[Err(FailureKind::Refused)]);
        assert_eq!((retried.attempts, pauses), (1, 0));
    }
}
