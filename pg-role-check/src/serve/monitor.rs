//! pg-monitor's state file, as `/metrics` shows it: the monitor's last
//! decision and its counters, and how long ago it wrote them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use pgcore::logln;
use serde::Deserialize;

/// The most of the file that is read: it holds a few hundred bytes.
pub const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What pg-monitor writes (`--state-file`), about once a second; other
/// fields are ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct MonitorState {
    /// `wait`, `promote`, `refuse_writes`, `allow_writes`, `step_down`,
    /// `fence`, `set_synchronous`, `set_asynchronous`.
    pub decision: String,
    pub paused: bool,
    pub promotions: u64,
    pub write_refusals: u64,
    pub step_downs: u64,
    pub fences: u64,
}

/// What reading the file found.
#[derive(Clone, Debug, PartialEq)]
pub enum MonitorReading {
    /// The state, and the time since the file was written.
    Valid { state: MonitorState, age: Duration },
    /// Too large, not JSON of that shape, not a regular file, unreadable.
    Invalid,
}

/// The state file, and whether its being invalid was logged already.
pub struct MonitorFile {
    path: PathBuf,
    invalid_logged: AtomicBool,
}

impl MonitorFile {
    pub fn new(path: PathBuf) -> MonitorFile {
        MonitorFile {
            path,
            invalid_logged: AtomicBool::new(false),
        }
    }

    /// The file as it is now; `None` when it does not exist (no monitor
    /// runs, or it has not written one yet). An invalid file is logged once,
    /// until it is valid again.
    pub fn read(&self) -> Option<MonitorReading> {
        let written = match std::fs::metadata(&self.path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            metadata => metadata.and_then(|metadata| metadata.modified()),
        };
        match written
            .map_err(|err| err.to_string())
            .and_then(|at| read_state(&self.path, at))
        {
            Ok(reading) => {
                self.invalid_logged.store(false, Ordering::Relaxed);
                Some(reading)
            }
            Err(reason) => {
                if !self.invalid_logged.swap(true, Ordering::Relaxed) {
                    logln!(
                        "monitor state file {} is not valid, shown as pg_monitor_state_valid 0: {reason}",
                        self.path.display()
                    );
                }
                Some(MonitorReading::Invalid)
            }
        }
    }
}

fn read_state(path: &Path, written: SystemTime) -> Result<MonitorReading, String> {
    let text = pgcore::input::read_text_at_most(path, MAX_STATE_BYTES)?;
    let state = parse_state(&text)?;
    // A clock stepped back leaves an mtime in the future: no age, not an error.
    let age = SystemTime::now()
        .duration_since(written)
        .unwrap_or(Duration::ZERO);
    Ok(MonitorReading::Valid { state, age })
}

pub fn parse_state(text: &str) -> Result<MonitorState, String> {
    serde_json::from_str(text).map_err(|err| format!("not a monitor state: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = r#"{"pid":1234,"started_at":"2026-11-30T14:28:22.232Z","updated_at":"2026-11-30T14:28:23.232Z","decision":"wait","decision_detail":"local node is primary; peer is replica","paused":false,"promotions":1,"write_refusals":2,"step_downs":3,"fences":4}"#;

    #[test]
    fn the_state_pg_monitor_writes_is_read_and_unknown_fields_ignored() {
        let state = parse_state(WRITTEN).unwrap();
        assert_eq!(
            state,
            MonitorState {
                decision: "wait".into(),
                paused: false,
                promotions: 1,
                write_refusals: 2,
                step_downs: 3,
                fences: 4,
            }
        );
    }

    #[test]
    fn a_state_missing_a_field_or_not_json_is_invalid() {
        assert!(parse_state(&WRITTEN.replace("\"fences\":4", "\"x\":4")).is_err());
        assert!(parse_state("").is_err());
        assert!(parse_state("[]").is_err());
        assert!(parse_state(&WRITTEN.replace("\"paused\":false", "\"paused\":\"no\"")).is_err());
    }

    #[test]
    fn a_missing_file_is_none_and_a_large_one_invalid() {
        let dir =
            std::env::temp_dir().join(format!("pg-role-check-monitor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = MonitorFile::new(dir.join("state.json"));
        assert_eq!(file.read(), None);
        std::fs::write(dir.join("state.json"), WRITTEN).unwrap();
        assert!(matches!(file.read(), Some(MonitorReading::Valid { .. })));
        let padded = format!("{}{}", " ".repeat(MAX_STATE_BYTES as usize), WRITTEN);
        std::fs::write(dir.join("state.json"), padded).unwrap();
        assert_eq!(file.read(), Some(MonitorReading::Invalid));
        assert_eq!(
            MonitorFile::new(dir.clone()).read(),
            Some(MonitorReading::Invalid)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
