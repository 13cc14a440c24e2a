//! The leader lease file: while `pg-monitor consensus` leads with a renewed
//! key, it keeps in a file the time until which its node may take writes
//! (its renewal deadline, in Unix milliseconds, one line). The health
//! endpoint (`pg-role-check serve --leader-lease`) answers `/primary` only
//! while that time lies ahead, so haproxy stops sending writes to a primary
//! whose monitor died without refusing them (SIGKILL, OOM), by the time its
//! key may expire.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Writes `until` into `path`, whole or not at all (a temporary file beside
/// it, renamed over it), so that a reader never sees half a line.
pub fn write(path: &Path, until: SystemTime) -> io::Result<()> {
    let millis = until
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    let staged = path.with_extension("new");
    fs::write(&staged, format!("{millis}\n"))?;
    fs::rename(&staged, path)
}

/// Removes the file; one already gone is no error.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Whether the lease in `path` lasts past `now`: false when the file is
/// absent, unreadable or not one number.
pub fn valid_at(path: &Path, now: SystemTime) -> bool {
    read(path).is_some_and(|until| until > now)
}

/// The time the file holds, if it holds one.
pub fn read(path: &Path) -> Option<SystemTime> {
    let text = fs::read_to_string(path).ok()?;
    let millis: u64 = text.trim().parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test, removed at the end.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("pgcore-lease-{}-{test}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_lease_is_valid_until_the_time_written_and_gone_once_removed() {
        let dir = Scratch::new("valid");
        let path = dir.path().join("leader.lease");
        let now = SystemTime::now();
        assert!(!valid_at(&path, now), "no file, no lease");
        write(&path, now + Duration::from_secs(5)).unwrap();
        assert!(valid_at(&path, now));
        assert!(!valid_at(&path, now + Duration::from_secs(6)));
        assert!(
            !dir.path().join("leader.new").exists(),
            "renamed into place"
        );
        remove(&path).unwrap();
        assert!(!valid_at(&path, now));
        remove(&path).unwrap();
    }

    #[test]
    fn anything_but_one_number_is_no_lease() {
        let dir = Scratch::new("garbage");
        let path = dir.path().join("leader.lease");
        for text in ["", "soon\n", "12 13\n", "-5\n"] {
            fs::write(&path, text).unwrap();
            assert!(!valid_at(&path, UNIX_EPOCH), "{text:?}");
        }
    }
}
