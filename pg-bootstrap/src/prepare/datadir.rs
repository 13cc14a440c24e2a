//! The data directory, the directories made beside it, and the files prepare
//! writes into it.
//!
//! A clone (or initdb) is made in `<data dir>.staging` beside the data
//! directory, on the same file system, and swapped in by renames only once it
//! is complete: the old directory is renamed to `<data dir>.previous`, the new
//! one into place, and only then is the old one removed. A crash at any point
//! leaves a state [`repairs`] recognises on the next boot, and none of them
//! loses the last complete data directory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pgcore::os::user::chown_to;
use pgcore::os::{sync_dir, write_atomically, User};
use pgcore::{control, logln};

use super::decide::Local;
use crate::quote;

/// The data directory and the paths prepare keeps beside it.
#[derive(Clone, Debug)]
pub struct Paths {
    pub data_dir: PathBuf,
    /// Where a clone or initdb is made before it is swapped in.
    pub staging: PathBuf,
    /// Where the old data directory waits while a new one is swapped in.
    pub previous: PathBuf,
    /// Present while a pg_rewind may have left the data directory half-rewound.
    pub rewind_marker: PathBuf,
    /// Locked while a prepare works on the data directory.
    pub lock: PathBuf,
}

impl Paths {
    /// `data_dir` must be absolute (see `PrepareConfig::validate`).
    pub fn new(data_dir: &Path) -> Paths {
        let sibling = |suffix: &str| {
            let mut name: OsString = data_dir.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            data_dir.with_file_name(name)
        };
        Paths {
            data_dir: data_dir.to_path_buf(),
            staging: sibling(".staging"),
            previous: sibling(".previous"),
            rewind_marker: sibling(".rewind-incomplete"),
            lock: sibling(".lock"),
        }
    }

    pub fn parent(&self) -> &Path {
        self.data_dir.parent().unwrap_or(Path::new("/"))
    }
}

/// The data directory's lock: an exclusive `flock` on `<data dir>.lock`,
/// held while this value lives (or until the process dies), so that two
/// prepares never clone into the same staging directory. It remembers what
/// taking it created, so that a run that changes nothing can leave the disk
/// as it found it ([`Lock::release_unchanged`]).
pub struct Lock {
    _file: File,
    path: PathBuf,
    created_file: bool,
    /// Directories made for the lock file, outermost first.
    created_dirs: Vec<PathBuf>,
}

impl Lock {
    /// Releases the lock and removes what taking it created: the lock file,
    /// then the directories made for it. The file goes while it is still
    /// locked; a prepare that opened it just before finds, once it holds the
    /// lock, that the path names another file, and opens that (see [`lock`]).
    pub fn release_unchanged(self) {
        if self.created_file {
            if let Err(err) = fs::remove_file(&self.path) {
                logln!(
                    "warning: cannot remove the lock file {}: {err}",
                    self.path.display()
                );
            }
        }
        remove_empty_dirs(&self.created_dirs);
    }
}

/// How often a lock file may turn out replaced before [`lock`] gives up.
const LOCK_ATTEMPTS: u32 = 10;

/// Takes the data directory's lock; `Ok(None)` when another process holds it.
/// Creates the data directory's parent (owned by `owner`) when missing.
pub fn lock(paths: &Paths, owner: Option<&User>) -> io::Result<Option<Lock>> {
    let created_dirs = create_parents(&paths.data_dir, owner)?;
    match lock_file(&paths.lock) {
        Ok(Some((file, created_file))) => Ok(Some(Lock {
            _file: file,
            path: paths.lock.clone(),
            created_file,
            created_dirs,
        })),
        other => {
            remove_empty_dirs(&created_dirs);
            other.map(|_| None)
        }
    }
}

/// Opens (creating it if needed) and locks the file at `path`; whether this
/// call created it. A run that changed nothing removes the file it created,
/// so the file locked may no longer be the one at `path`: then it starts over.
fn lock_file(path: &Path) -> io::Result<Option<(File, bool)>> {
    for _ in 0..LOCK_ATTEMPTS {
        let Some((file, created)) = open_lock_file(path)? else {
            continue;
        };
        // An exclusive lock that fails instead of waiting (flock on Linux,
        // so it is released when the process dies).
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(err)) => return Err(err),
        }
        if is_still_at(&file, path)? {
            return Ok(Some((file, created)));
        }
    }
    Err(io::Error::other(format!(
        "{} was replaced {LOCK_ATTEMPTS} times while it was being locked",
        path.display()
    )))
}

/// Whether `path` still names the open `file` (not a file made after it was removed).
fn is_still_at(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    Ok(
        fs::metadata(path)
            .is_ok_and(|named| named.dev() == held.dev() && named.ino() == held.ino()),
    )
}

/// The lock file at `path` and whether it was created here; `None` when it
/// vanished between finding it there and opening it.
fn open_lock_file(path: &Path) -> io::Result<Option<(File, bool)>> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    match options.clone().create_new(true).open(path) {
        Ok(file) => return Ok(Some((file, true))),
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
        Err(_) => {}
    }
    match options.open(path) {
        Ok(file) => Ok(Some((file, false))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Removes `dirs` (outermost first) from the innermost out, stopping at the
/// first that is no longer empty.
fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        if fs::remove_dir(dir).is_err() {
            return;
        }
    }
}

/// Reads what the directory at `dir` says about this node. `dir` is the data
/// directory, or the `.previous` one a dry run would restore.
pub fn observe(dir: &Path, rewind_marker: &Path) -> Local {
    let foreign = |why: String| Local::Foreign { why };
    match fs::symlink_metadata(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Local::Absent,
        Err(err) => return foreign(format!("cannot inspect {}: {err}", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            return foreign(format!("{} exists but is not a directory", dir.display()))
        }
        Ok(_) => {}
    }
    match is_empty_dir(dir) {
        Ok(true) => return Local::Absent,
        Ok(false) => {}
        Err(err) => return foreign(format!("cannot read {}: {err}", dir.display())),
    }
    if !dir.join("PG_VERSION").is_file() {
        return foreign(format!(
            "{} is not empty but has no PG_VERSION: not a PostgreSQL data directory, left alone",
            dir.display()
        ));
    }
    if let Some(pid) = running_postmaster(dir) {
        return Local::Running { pid };
    }
    if rewind_marker.exists() {
        return Local::Incomplete {
            system_identifier: system_identifier(dir).ok(),
        };
    }
    let system_identifier = match system_identifier(dir) {
        Ok(id) => id,
        Err(err) => {
            return foreign(format!(
                "cannot read the system identifier from {}/global/pg_control: {err}",
                dir.display()
            ))
        }
    };
    if dir.join("standby.signal").exists() {
        Local::Replica { system_identifier }
    } else {
        Local::Primary { system_identifier }
    }
}

fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// The cluster's system identifier, from pg_control (see [`pgcore::control`]).
pub fn system_identifier(data_dir: &Path) -> io::Result<u64> {
    control::read(data_dir).map(|control| control.system_identifier)
}

/// The timeline of the data directory's last checkpoint, from pg_control.
pub fn checkpoint_timeline(data_dir: &Path) -> io::Result<u32> {
    control::read(data_dir).map(|control| control.timeline)
}

/// The pid in postmaster.pid when that process is a postmaster of this data
/// directory: a postmaster's working directory is its data directory, which
/// tells a live server from a stale pid file whose pid was reused.
fn running_postmaster(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    works_in(pid, data_dir).then_some(pid)
}

/// Whether process `pid`'s working directory is `dir` itself: the same
/// directory by device and inode, not by path, as a process in another mount
/// namespace may work in a directory of the same name that is not ours.
pub fn works_in(pid: u32, dir: &Path) -> bool {
    let same =
        |cwd: fs::Metadata, ours: fs::Metadata| (cwd.dev(), cwd.ino()) == (ours.dev(), ours.ino());
    match (fs::metadata(format!("/proc/{pid}/cwd")), fs::metadata(dir)) {
        (Ok(cwd), Ok(ours)) => same(cwd, ours),
        _ => false,
    }
}

/// Every entry under a directory with its kind, size, inode and modification
/// time: equal fingerprints mean nothing was created, removed or written.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, (u32, u64, u64, i64, i64)>);

/// Takes the fingerprint of `dir`, following symbolic links.
pub fn fingerprint(dir: &Path) -> io::Result<Fingerprint> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            // Followed through links: pg_wal and pg_tblspc/* may live elsewhere,
            // and pg_rewind writes there too.
            let meta = fs::metadata(entry.path())?;
            if meta.is_dir() {
                pending.push(entry.path());
            }
            entries.insert(
                entry.path(),
                (
                    meta.mode(),
                    meta.len(),
                    meta.ino(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                ),
            );
        }
    }
    Ok(Fingerprint(entries))
}

/// A step that puts the directories back into a known state after a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// A staging directory never swapped in: a partial or abandoned copy.
    RemoveStaging,
    /// The old data directory was moved aside but the new one never moved in:
    /// undo the swap.
    RestorePrevious,
    /// The swap completed; the old data directory was not yet removed.
    RemovePrevious,
}

impl Repair {
    pub fn describe(&self, paths: &Paths) -> String {
        match self {
            Repair::RemoveStaging => format!("remove {}", paths.staging.display()),
            Repair::RestorePrevious => format!(
                "restore {} to {}",
                paths.previous.display(),
                paths.data_dir.display()
            ),
            Repair::RemovePrevious => format!("remove {}", paths.previous.display()),
        }
    }
}

/// What stands at the data directory's path when repairs are considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlace {
    /// Nothing, or an empty directory.
    Nothing,
    /// A PostgreSQL data directory (PG_VERSION and pg_control).
    DataDirectory,
    /// Something else, e.g. files an operator put there.
    SomethingElse,
}

/// The repairs for what a crash may have left beside the data directory.
/// `previous` (the data directory a swap moved aside) is removed only when a
/// real data directory replaced it: otherwise it may be the only copy.
pub fn repairs(in_place: InPlace, staging: bool, previous: bool) -> Vec<Repair> {
    let mut steps = Vec::new();
    if staging {
        steps.push(Repair::RemoveStaging);
    }
    match (previous, in_place) {
        (true, InPlace::DataDirectory) => steps.push(Repair::RemovePrevious),
        (true, InPlace::Nothing) => steps.push(Repair::RestorePrevious),
        // Neither copy is touched; the data directory is then refused as foreign.
        (true, InPlace::SomethingElse) | (false, _) => {}
    }
    steps
}

/// The repairs needed at `paths` right now.
pub fn pending_repairs(paths: &Paths) -> Vec<Repair> {
    let data_dir = &paths.data_dir;
    let in_place = match is_empty_dir(data_dir) {
        Ok(false)
            if data_dir.join("PG_VERSION").is_file()
                && data_dir.join("global/pg_control").is_file() =>
        {
            InPlace::DataDirectory
        }
        Ok(false) => InPlace::SomethingElse,
        _ => InPlace::Nothing,
    };
    repairs(
        in_place,
        fs::symlink_metadata(&paths.staging).is_ok(),
        fs::symlink_metadata(&paths.previous).is_ok(),
    )
}

/// Carries out `steps`, logging each.
pub fn apply_repairs(paths: &Paths, steps: &[Repair]) -> io::Result<()> {
    for step in steps {
        match step {
            Repair::RemoveStaging => {
                logln!(
                    "removing {}, left by an earlier clone that did not complete",
                    paths.staging.display()
                );
                remove_tree(&paths.staging)?;
            }
            Repair::RestorePrevious => {
                logln!(
                    "restoring {} to {}: an earlier swap was interrupted before the new copy moved in",
                    paths.previous.display(),
                    paths.data_dir.display()
                );
                fs::rename(&paths.previous, &paths.data_dir)?;
                sync_dir(paths.parent())?;
            }
            Repair::RemovePrevious => {
                logln!(
                    "removing {}, the data directory a completed swap replaced",
                    paths.previous.display()
                );
                remove_tree(&paths.previous)?;
            }
        }
    }
    Ok(())
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates the directory `path` is in (and its parents) when missing, owned by `owner`.
pub fn ensure_parent(path: &Path, owner: Option<&User>) -> io::Result<()> {
    create_parents(path, owner).map(drop)
}

/// [`ensure_parent`], returning the directories it created, outermost first.
fn create_parents(path: &Path, owner: Option<&User>) -> io::Result<Vec<PathBuf>> {
    let Some(parent) = path.parent() else {
        return Ok(Vec::new());
    };
    if parent.is_dir() {
        return Ok(Vec::new());
    }
    let mut created = create_parents(parent, owner)?;
    DirBuilder::new().mode(0o700).create(parent)?;
    chown_to(parent, owner)?;
    created.push(parent.to_path_buf());
    Ok(created)
}

/// An empty staging directory (0700, owned by `owner`), replacing any leftover.
pub fn fresh_staging(paths: &Paths, owner: Option<&User>) -> io::Result<()> {
    remove_tree(&paths.staging)?;
    DirBuilder::new().mode(0o700).create(&paths.staging)?;
    chown_to(&paths.staging, owner)
}

/// Removes a staging directory after a failed attempt. Failure is only logged:
/// the next boot removes it (see [`Repair::RemoveStaging`]).
pub fn discard_staging(paths: &Paths) {
    if let Err(err) = remove_tree(&paths.staging) {
        logln!(
            "warning: cannot remove {}: {err}; the next prepare removes it",
            paths.staging.display()
        );
    }
}

/// Moves the complete staging directory into place: old aside, new in, old
/// removed. On error the old data directory is back in place (or, if even
/// that rename failed, at `.previous`, where the next boot restores it).
pub fn swap_in(paths: &Paths) -> io::Result<()> {
    let had_old = fs::symlink_metadata(&paths.data_dir).is_ok();
    if had_old {
        fs::rename(&paths.data_dir, &paths.previous)?;
        sync_dir(paths.parent())?;
    }
    if let Err(err) = fs::rename(&paths.staging, &paths.data_dir) {
        if had_old {
            let _ = fs::rename(&paths.previous, &paths.data_dir);
            let _ = sync_dir(paths.parent());
        }
        return Err(err);
    }
    sync_dir(paths.parent())?;
    if had_old {
        if let Err(err) = remove_tree(&paths.previous) {
            logln!(
                "warning: cannot remove the replaced data directory {}: {err}; the next prepare removes it",
                paths.previous.display()
            );
        }
    }
    Ok(())
}

/// Makes `data_dir` start as a replica streaming with `conninfo`:
/// `standby.signal`, and `primary_conninfo` in postgresql.auto.conf in place
/// of any earlier one (pg_basebackup -R's, or the one pg_rewind copied from
/// the source). The settings a primary's monitor sets on its own node
/// ([`PRIMARY_ONLY_SETTINGS`]) go too; other settings are kept.
pub fn write_standby_config(
    data_dir: &Path,
    conninfo: &str,
    owner: Option<&User>,
) -> io::Result<()> {
    let auto_conf = data_dir.join("postgresql.auto.conf");
    let old = match fs::read_to_string(&auto_conf) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let new = standby_auto_conf(&old, conninfo);
    write_atomically(&auto_conf, new.as_bytes(), 0o600, owner)?;
    write_atomically(&data_dir.join("standby.signal"), b"", 0o600, owner)
}

/// What pg-monitor sets with ALTER SYSTEM on the primary it runs beside, and
/// a clone or a rewind copies from there: a replica must not carry them, or
/// once promoted it would block every commit until a replica streams
/// (`synchronous_standby_names`) or refuse writes (`default_transaction_read_only`).
pub const PRIMARY_ONLY_SETTINGS: [&str; 2] =
    ["synchronous_standby_names", "default_transaction_read_only"];

/// `auto_conf` without its `primary_conninfo` lines and the
/// [`PRIMARY_ONLY_SETTINGS`], plus a `primary_conninfo` for `conninfo`.
pub fn standby_auto_conf(auto_conf: &str, conninfo: &str) -> String {
    let mut text: String = auto_conf
        .lines()
        .filter(|line| {
            !sets(line, "primary_conninfo")
                && !PRIMARY_ONLY_SETTINGS.iter().any(|name| sets(line, name))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if text.is_empty() {
        text.push_str("# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n");
    }
    text.push_str(&format!(
        "primary_conninfo = {}\n",
        quote::conf_string(conninfo)
    ));
    text
}

/// Whether a configuration line sets `name` (names are case-insensitive).
fn sets(line: &str, name: &str) -> bool {
    let line = line.trim_start();
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..].starts_with(|c: char| c == '=' || c.is_whitespace())
}

/// Writes the libpq password file the replica's WAL receiver, pg_basebackup
/// and pg_rewind read (0600, owned by the data's owner). One line matching any
/// host, port and database, so a failover to another peer needs no rewrite.
pub fn write_passfile(
    path: &Path,
    user: &str,
    password: &str,
    owner: Option<&User>,
) -> io::Result<()> {
    let line = format!(
        "*:*:*:{}:{}\n",
        quote::passfile_field(user),
        quote::passfile_field(password)
    );
    write_atomically(path, line.as_bytes(), 0o600, owner)
}

/// Records that a pg_rewind is about to modify the data directory in place.
pub fn mark_rewind_started(paths: &Paths) -> io::Result<()> {
    let note = format!(
        "pg_rewind into {} started; if this file is still here, it did not complete and the data directory must be cloned afresh\n",
        paths.data_dir.display()
    );
    write_atomically(&paths.rewind_marker, note.as_bytes(), 0o600, None)
}

/// Clears the mark once the data directory is consistent again.
pub fn clear_rewind_mark(paths: &Paths) -> io::Result<()> {
    remove_tree(&paths.rewind_marker)?;
    sync_dir(paths.parent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_data_dir(dir: &Path, label: &str) {
        fs::create_dir_all(dir.join("global")).unwrap();
        fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        // As PostgreSQL writes it: 8 kB, the system identifier first.
        let mut control = 42u64.to_ne_bytes().to_vec();
        control.resize(8192, 0);
        fs::write(dir.join("global/pg_control"), control).unwrap();
        fs::write(dir.join("label"), label).unwrap();
    }

    fn label(dir: &Path) -> String {
        fs::read_to_string(dir.join("label")).unwrap()
    }

    fn paths_in(root: &Path) -> Paths {
        Paths::new(&root.join("db"))
    }

    #[test]
    fn sibling_paths_sit_beside_the_data_directory() {
        let paths = Paths::new(Path::new("/var/vcap/store/postgres/db"));
        assert_eq!(
            paths.staging,
            Path::new("/var/vcap/store/postgres/db.staging")
        );
        assert_eq!(
            paths.previous,
            Path::new("/var/vcap/store/postgres/db.previous")
        );
        assert_eq!(
            paths.rewind_marker,
            Path::new("/var/vcap/store/postgres/db.rewind-incomplete")
        );
    }

    #[test]
    fn observation_tells_absent_primary_replica_incomplete_and_foreign_apart() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        assert_eq!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Absent
        );
        fs::create_dir(&paths.data_dir).unwrap();
        assert_eq!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Absent
        );
        fs::write(paths.data_dir.join("notes.txt"), "x").unwrap();
        assert!(matches!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Foreign { why } if why.contains("PG_VERSION")
        ));
        fake_data_dir(&paths.data_dir, "old");
        assert_eq!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Primary {
                system_identifier: 42
            }
        );
        fs::write(paths.data_dir.join("standby.signal"), "").unwrap();
        assert_eq!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Replica {
                system_identifier: 42
            }
        );
        fs::write(&paths.rewind_marker, "").unwrap();
        assert_eq!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Incomplete {
                system_identifier: Some(42)
            }
        );
    }

    #[test]
    fn a_stale_postmaster_pid_does_not_count_as_running() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        fake_data_dir(&paths.data_dir, "old");
        // Our own pid is alive, but its working directory is not this data directory.
        fs::write(
            paths.data_dir.join("postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(matches!(
            observe(&paths.data_dir, &paths.rewind_marker),
            Local::Primary { .. }
        ));
    }

    #[test]
    fn a_fingerprint_changes_with_any_write_creation_or_removal() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        fake_data_dir(&dir, "old");
        let before = fingerprint(&dir).unwrap();
        assert_eq!(fingerprint(&dir).unwrap(), before, "nothing changed");
        std::thread::sleep(crate::prepare::effects::TIMESTAMP_TICK * 2);
        // Same size, so only the modification time can tell.
        fs::write(dir.join("global/pg_control"), [1u8; 8192]).unwrap();
        let written = fingerprint(&dir).unwrap();
        assert_ne!(written, before, "a write went unnoticed");
        fs::write(dir.join("global/new"), "").unwrap();
        let created = fingerprint(&dir).unwrap();
        assert_ne!(created, written, "a new file went unnoticed");
        fs::remove_file(dir.join("label")).unwrap();
        assert_ne!(
            fingerprint(&dir).unwrap(),
            created,
            "a removal went unnoticed"
        );
    }

    #[test]
    fn only_one_prepare_holds_the_lock() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        let held = lock(&paths, None)
            .unwrap()
            .expect("a free lock was not taken");
        assert!(
            lock(&paths, None).unwrap().is_none(),
            "the lock was taken twice"
        );
        drop(held);
        assert!(
            lock(&paths, None).unwrap().is_some(),
            "a released lock stayed held"
        );
    }

    #[test]
    fn a_lock_released_unchanged_leaves_no_file_or_directory_it_made() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(&root.path().join("store/postgres/db"));
        let held = lock(&paths, None)
            .unwrap()
            .expect("a free lock was not taken");
        assert!(paths.lock.exists());
        held.release_unchanged();
        assert!(
            !root.path().join("store").exists(),
            "the lock file or the directories made for it were left"
        );

        // A lock file that was there before stays, and so does its directory.
        let paths = paths_in(root.path());
        fs::write(&paths.lock, "").unwrap();
        lock(&paths, None).unwrap().unwrap().release_unchanged();
        assert!(
            paths.lock.exists(),
            "a lock file this run did not create was removed"
        );
    }

    #[test]
    fn a_lock_file_opened_before_it_was_removed_is_told_from_its_successor() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        let first = lock(&paths, None).unwrap().unwrap();
        // Another prepare opened the file just before the first removed it.
        let (stale, created) = open_lock_file(&paths.lock).unwrap().unwrap();
        assert!(!created);
        assert!(is_still_at(&stale, &paths.lock).unwrap());
        first.release_unchanged();
        assert!(
            !is_still_at(&stale, &paths.lock).unwrap(),
            "the file is gone"
        );
        let _next = lock(&paths, None).unwrap().expect("the lock was not free");
        assert!(
            !is_still_at(&stale, &paths.lock).unwrap(),
            "a new lock file at the same path is another file"
        );
    }

    #[test]
    fn repairs_follow_the_state_a_crash_left() {
        use InPlace::*;
        use Repair::*;
        assert_eq!(repairs(DataDirectory, false, false), vec![]);
        assert_eq!(repairs(DataDirectory, true, false), vec![RemoveStaging]);
        assert_eq!(
            repairs(Nothing, true, true),
            vec![RemoveStaging, RestorePrevious]
        );
        assert_eq!(repairs(DataDirectory, false, true), vec![RemovePrevious]);
        // Stray files where the data directory should be: the moved-aside copy may be the only one.
        assert_eq!(repairs(SomethingElse, false, true), vec![]);
    }

    #[test]
    fn an_interrupted_swap_is_undone_on_the_next_boot() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        // Crash after "old aside", before "new in".
        fake_data_dir(&paths.previous, "old");
        fake_data_dir(&paths.staging, "new");
        let steps = pending_repairs(&paths);
        apply_repairs(&paths, &steps).unwrap();
        assert_eq!(label(&paths.data_dir), "old");
        assert!(!paths.staging.exists() && !paths.previous.exists());
    }

    #[test]
    fn a_completed_swap_finishes_on_the_next_boot() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        // Crash after "new in", before "old removed".
        fake_data_dir(&paths.data_dir, "new");
        fake_data_dir(&paths.previous, "old");
        apply_repairs(&paths, &pending_repairs(&paths)).unwrap();
        assert_eq!(label(&paths.data_dir), "new");
        assert!(!paths.previous.exists());
    }

    #[test]
    fn swapping_in_replaces_the_old_directory_only_at_the_end() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        fake_data_dir(&paths.data_dir, "old");
        fake_data_dir(&paths.staging, "new");
        swap_in(&paths).unwrap();
        assert_eq!(label(&paths.data_dir), "new");
        assert!(!paths.staging.exists() && !paths.previous.exists());
    }

    #[test]
    fn a_failed_swap_leaves_the_old_directory_in_place() {
        let root = tempfile::tempdir().unwrap();
        let paths = paths_in(root.path());
        fake_data_dir(&paths.data_dir, "old");
        // No staging directory: the second rename fails.
        assert!(swap_in(&paths).is_err());
        assert_eq!(label(&paths.data_dir), "old");
        assert!(!paths.previous.exists());
    }

    #[test]
    fn primary_conninfo_replaces_earlier_ones_and_keeps_other_settings() {
        let old = "# Do not edit this file manually!\n\
                   work_mem = '8MB'\n\
                   primary_conninfo = 'user=x password=secret host=old'\n\
                   PRIMARY_CONNINFO='host=older'\n\
                   primary_conninfo_extra = 1\n";
        let new = standby_auto_conf(old, "host='10.0.0.2' passfile='/p'");
        assert_eq!(
            new,
            "# Do not edit this file manually!\n\
             work_mem = '8MB'\n\
             primary_conninfo_extra = 1\n\
             primary_conninfo = 'host=''10.0.0.2'' passfile=''/p'''\n"
        );
        assert!(!new.contains("password"));
    }

    #[test]
    fn a_standby_never_keeps_the_primarys_synchronous_or_read_only_settings() {
        let old = "synchronous_standby_names = '*'\n\
                   default_transaction_read_only = 'on'\n\
                   Synchronous_Standby_Names='x'\n\
                   synchronous_commit = 'local'\n";
        let new = standby_auto_conf(old, "host=a");
        assert_eq!(
            new,
            "synchronous_commit = 'local'\nprimary_conninfo = 'host=a'\n"
        );
    }

    #[test]
    fn files_are_written_with_the_mode_asked() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("pgpass");
        write_passfile(&path, "replication", "pa:ss", None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "*:*:*:replication:pa\\:ss\n"
        );
    }
}
