//! The monitor's state file: what it decided last and how often it acted,
//! for the health endpoint's `/metrics` (`pg-role-check serve
//! --monitor-state`). One JSON object, replaced atomically every tick, so
//! its age also tells whether the monitor still runs. Nothing secret in it.

use std::path::PathBuf;

use pgcore::logln;
use serde_json::json;

use crate::decide::Action;

/// How often the monitor acted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub promotions: u64,
    pub write_refusals: u64,
    pub step_downs: u64,
    pub fences: u64,
}

/// Where the state goes, and what the last write failed with (logged once).
pub struct StateFile {
    path: PathBuf,
    started_at: String,
    last_error: Option<String>,
}

/// The decision's name in the file: one word per kind of action, so that a
/// metric's label takes few values.
pub fn decision_name(action: &Action) -> &'static str {
    match action {
        Action::Wait(_) => "wait",
        Action::Promote(_) => "promote",
        Action::RefuseWrites(_) => "refuse_writes",
        Action::AllowWrites => "allow_writes",
        Action::StepDown(_) => "step_down",
        Action::Fence(_) => "fence",
        Action::SetSynchronous(true, _) => "set_synchronous",
        Action::SetSynchronous(false, _) => "set_asynchronous",
    }
}

/// The file's content for one tick.
pub fn render(started_at: &str, action: &Action, paused: bool, counts: Counts) -> String {
    json!({
        "pid": std::process::id(),
        "started_at": started_at,
        "updated_at": pgcore::log::rfc3339_now(),
        "decision": decision_name(action),
        "decision_detail": action.to_string(),
        "paused": paused,
        "promotions": counts.promotions,
        "write_refusals": counts.write_refusals,
        "step_downs": counts.step_downs,
        "fences": counts.fences,
    })
    .to_string()
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile {
            path,
            started_at: pgcore::log::rfc3339_now(),
            last_error: None,
        }
    }

    /// Replaces the file (0644: the endpoint runs as another user). A
    /// failure is logged when it first happens and when it clears, never
    /// fatal: failover does not depend on the file.
    pub fn write(&mut self, action: &Action, paused: bool, counts: Counts) {
        let content = render(&self.started_at, action, paused, counts);
        let result = pgcore::os::write_atomically(&self.path, content.as_bytes(), 0o644, None)
            .map_err(|err| err.to_string());
        match (result, &self.last_error) {
            (Ok(()), Some(_)) => {
                logln!("the state file {} is written again", self.path.display());
                self.last_error = None;
            }
            (Err(err), last) if last.as_ref() != Some(&err) => {
                logln!(
                    "error: cannot write the state file {}: {err}",
                    self.path.display()
                );
                self.last_error = Some(err);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{RefuseWhy, SyncWhy, Wait};
    use std::time::Duration;

    #[test]
    fn each_action_has_one_decision_name() {
        let rows = [
            (Action::Wait(Wait::DegradeDeferred), "wait"),
            (Action::AllowWrites, "allow_writes"),
            (
                Action::RefuseWrites(RefuseWhy::LeaseLapsed {
                    unconfirmed: Duration::from_secs(5),
                    witnesses: None,
                }),
                "refuse_writes",
            ),
            (
                Action::SetSynchronous(true, SyncWhy::Strict),
                "set_synchronous",
            ),
            (
                Action::SetSynchronous(false, SyncWhy::ReplicaGone { ticks: 3 }),
                "set_asynchronous",
            ),
        ];
        for (action, name) in rows {
            assert_eq!(decision_name(&action), name, "{action:?}");
        }
    }

    #[test]
    fn the_file_holds_the_decision_its_words_and_the_counts() {
        let counts = Counts {
            promotions: 2,
            write_refusals: 1,
            step_downs: 0,
            fences: 0,
        };
        let action = Action::AllowWrites;
        let content = render("2026-11-30T14:28:22.232Z", &action, true, counts);
        let value: serde_json::Value = serde_json::from_str(&content).unwrap();
        assert_eq!(value["decision"], "allow_writes");
        assert_eq!(value["decision_detail"], action.to_string());
        assert_eq!(value["paused"], true);
        assert_eq!(value["promotions"], 2);
        assert_eq!(value["write_refusals"], 1);
        assert_eq!(value["started_at"], "2026-11-30T14:28:22.232Z");
        assert_eq!(value["pid"], std::process::id());
    }

    #[test]
    fn a_write_lands_atomically_and_a_failing_one_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor-state.json");
        let mut file = StateFile::new(path.clone());
        file.write(&Action::AllowWrites, false, Counts::default());
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["decision"], "allow_writes");
        let mut nowhere = StateFile::new(dir.path().join("missing/dir/state.json"));
        nowhere.write(&Action::AllowWrites, false, Counts::default());
        assert!(nowhere.last_error.is_some());
    }
}
