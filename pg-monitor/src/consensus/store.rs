//! The cluster's keys in etcd, and the few things the loop does with them.
//!
//! Under the scope's prefix (`/postgres/<scope>/`):
//!
//! | key | value | lease | written by |
//! | --- | --- | --- | --- |
//! | `leader` | the leader's member name | the leader's | the member that wins it (create if absent); the leader on a hand-over |
//! | `switchover` | the member to hand the leadership to, or `*` for the best streaming replica | none | the operator (`etcdctl put`, or `pg-monitor consensus-switchover`) |
//! | `pause` | anything | none | the operator: no promotion, no demotion while it exists |
//! | `sync` | how many standbys each commit waits for | none | the leader, before it lowers that count and after it raises it |
//! | `initialize` | the cluster's first leader | none | each member that takes the leader key: until it exists, only a primary may (the cluster's own, not a replica that could not reach it) |
//!
//! Every member holds one lease of `ttl` seconds and keeps it alive every
//! loop; the leader key lives on the leader's, so it vanishes `ttl` after
//! the leader's last renewal whatever happened to the leader.

use std::time::{Duration, Instant};

use pgcore::etcd::{Compare, Etcd, Op, StoreError};

use super::decide::{LeaderKey, StoreView};

/// The `switchover` key's value that lets the leader choose: the streaming
/// replica with the most WAL.
pub const ANY_MEMBER: &str = "*";

pub struct Store {
    etcd: Etcd,
    prefix: String,
    name: String,
    ttl: Duration,
    retry_timeout: Duration,
    lease: i64,
}

/// One tick's renewal: what the store held, and when the renewal was asked
/// (the lease lasts `ttl` from a moment no earlier than this).
pub struct Renewed {
    pub view: StoreView,
    pub asked_at: Instant,
}

impl Store {
    pub fn new(
        etcd: Etcd,
        scope: &str,
        name: &str,
        ttl: Duration,
        retry_timeout: Duration,
    ) -> Store {
        Store {
            etcd,
            prefix: format!("/postgres/{scope}/"),
            name: name.to_string(),
            ttl,
            retry_timeout,
            lease: 0,
        }
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout
    }

    /// Keeps this member's lease alive (granting a new one when it
    /// expired: the keys it held went with it) and reads every key of the
    /// scope, all within the retry budget.
    pub fn renew(&mut self) -> Result<Renewed, StoreError> {
        let deadline = self.deadline();
        let asked_at = Instant::now();
        let alive = match self.lease {
            0 => None,
            lease => self.etcd.keep_alive(lease, deadline)?,
        };
        if alive.is_none() {
            let granted = self.etcd.grant(self.ttl.as_secs().max(1), deadline)?;
            if self.lease != 0 {
                pgcore::logln!(
                    "the store's lease {:x} had expired (with any key on it); granted {:x} of {} s",
                    self.lease,
                    granted.id,
                    granted.ttl
                );
            }
            self.lease = granted.id;
        }
        let keys = self.etcd.get_prefix(&self.prefix, deadline)?;
        let mut view = StoreView::default();
        for kv in keys {
            match kv.key.strip_prefix(&self.prefix) {
                Some("leader") => {
                    view.leader = Some(LeaderKey {
                        name: kv.value,
                        lease: kv.lease,
                    })
                }
                Some("switchover") => view.switchover_to = Some(kv.value.trim().to_string()),
                Some("pause") => view.paused = true,
                Some("sync") => view.sync_count = kv.value.trim().parse().ok(),
                Some("initialize") => view.initialized = true,
                _ => {}
            }
        }
        Ok(Renewed { view, asked_at })
    }

    /// Creates the leader key on this member's lease, and records that the
    /// cluster has had a leader; `true`: this member leads.
    pub fn take_leadership(&mut self) -> Result<bool, StoreError> {
        let deadline = self.deadline();
        let (leader, initialize) = (self.key("leader"), self.key("initialize"));
        self.etcd.txn(
            &Compare::Absent(&leader),
            &[
                Op::Put(&leader, &self.name, self.lease),
                Op::Put(&initialize, &self.name, 0),
            ],
            deadline,
        )
    }

    /// Puts the leader key, which names this member, on this member's own
    /// lease (after a hand-over it lives on the previous leader's).
    pub fn adopt_leadership(&mut self) -> Result<bool, StoreError> {
        let deadline = self.deadline();
        let key = self.key("leader");
        self.etcd
            .swap(&key, &self.name, &self.name, self.lease, deadline)
    }

    /// Deletes the leader key while it names this member.
    pub fn release_leadership(&mut self) -> Result<bool, StoreError> {
        let deadline = self.deadline();
        self.etcd
            .delete_if(&self.key("leader"), &self.name, deadline)
    }

    /// Names `to` in the leader key, still on this member's lease (so the
    /// key expires if `to` never adopts it), and clears the switchover, in
    /// one transaction that holds only while this member leads.
    pub fn hand_over(&mut self, to: &str) -> Result<bool, StoreError> {
        let deadline = self.deadline();
        let (leader, switchover) = (self.key("leader"), self.key("switchover"));
        self.etcd.txn(
            &Compare::Holds(&leader, &self.name),
            &[Op::Put(&leader, to, self.lease), Op::Delete(&switchover)],
            deadline,
        )
    }

    /// Clears a switchover that cannot happen (to this member, or to no member).
    pub fn clear_switchover(&mut self) -> Result<(), StoreError> {
        let deadline = self.deadline();
        self.etcd.delete(&self.key("switchover"), deadline)
    }

    /// Publishes how many standbys commits wait for.
    pub fn publish_sync(&mut self, count: u32) -> Result<(), StoreError> {
        let deadline = self.deadline();
        self.etcd
            .put(&self.key("sync"), &count.to_string(), 0, deadline)
    }

    /// Ends this member's lease (a clean stop): its keys go at once.
    pub fn revoke(&mut self) {
        if self.lease != 0 {
            let deadline = self.deadline();
            let _ = self.etcd.revoke(self.lease, deadline);
        }
    }
}
