//! `pg-monitor consensus-switchover`: a planned hand-over of the leadership
//! through the store. It writes the `switchover` key and waits for the leader
//! key to name another member; the leader's own loop does the rest (refuse
//! writes, let the target catch up, name it in the key), so the hand-over
//! follows the same rules as the loop's, whoever asked for it.

use std::time::{Duration, Instant};

use pgcore::etcd::{Etcd, StoreError};

use super::store::ANY_MEMBER;

/// How a switchover asked for ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The leader key names this member now.
    Done { from: String, to: String },
    /// `--if-leader` named a member that does not lead: nothing to do.
    NotLeader { leader: Option<String> },
    /// No member leads: nothing to hand over.
    NoLeader,
    /// The leader did not hand over within the wait; the request was withdrawn.
    TimedOut { leader: String },
}

const POLL: Duration = Duration::from_millis(100);

/// Asks the leader of `scope` to hand over to `to` (a member, or `any`),
/// and waits up to `wait` for another member to lead.
pub fn run(
    etcd: &mut Etcd,
    scope: &str,
    to: &str,
    if_leader: Option<&str>,
    wait: Duration,
    call_timeout: Duration,
) -> Result<Outcome, StoreError> {
    let leader_key = format!("/postgres/{scope}/leader");
    let switchover_key = format!("/postgres/{scope}/switchover");
    let deadline = || Instant::now() + call_timeout;
    let leader = etcd.get(&leader_key, deadline())?.map(|kv| kv.value);
    let Some(from) = leader else {
        return Ok(match if_leader {
            Some(_) => Outcome::NotLeader { leader: None },
            None => Outcome::NoLeader,
        });
    };
    if if_leader.is_some_and(|name| name != from) {
        return Ok(Outcome::NotLeader { leader: Some(from) });
    }
    let target = if to == "any" { ANY_MEMBER } else { to };
    etcd.put(&switchover_key, target, 0, deadline())?;
    let started = Instant::now();
    while started.elapsed() < wait {
        std::thread::sleep(POLL);
        let now = etcd.get(&leader_key, deadline())?.map(|kv| kv.value);
        if let Some(now) = now.filter(|now| *now != from) {
            return Ok(Outcome::Done { from, to: now });
        }
    }
    // Withdrawn only while it still asks what this run asked.
    etcd.delete_if(&switchover_key, target, deadline())?;
    Ok(Outcome::TimedOut { leader: from })
}
