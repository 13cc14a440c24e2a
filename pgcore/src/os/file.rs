//! Files replaced whole, so that a reader (PostgreSQL, monit, an operator)
//! sees the old file or the new one, never a part.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::user::{chown_to, User};

/// Replaces `path` with `contents`: a temporary file beside it (mode `mode`,
/// owned by `owner`), flushed, then renamed over it, and the directory
/// flushed so the rename survives a crash.
pub fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<&User>,
) -> io::Result<()> {
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    // A leftover of an earlier process with our pid.
    let _ = fs::remove_file(&temp);
    let written = write_new(&temp, contents, mode)
        .and_then(|()| chown_to(&temp, owner))
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Flushes a directory's entries (renames, new files) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_whole_with_its_mode_and_no_temporary_is_left() {
        let dir = tempdir("replace");
        let path = dir.join("standby.signal");
        fs::write(&path, "old contents, longer than the new\n").unwrap();
        write_atomically(&path, b"new\n", 0o600, None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["standby.signal"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempdir("fail");
        // Renaming a file over a directory fails.
        let path = dir.join("taken");
        fs::create_dir(&path).unwrap();
        assert!(write_atomically(&path, b"x", 0o600, None).is_err());
        assert!(path.is_dir());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgcore-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
