//! Operating-system users: PostgreSQL runs as an unprivileged user (`vcap`),
//! the ctl scripts run as root, and libpq's default user is the one running.

use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// An operating-system user, as the user database (NSS) has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    /// Looks `name` up in the user database (NSS, so not only /etc/passwd).
    pub fn lookup(name: &str) -> Result<User, String> {
        let c_name = CString::new(name).map_err(|_| format!("user name {name:?} contains NUL"))?;
        let found = read_passwd(|entry, buffer, found| {
            // SAFETY: every pointer is valid for the call (see read_passwd).
            unsafe {
                libc::getpwnam_r(
                    c_name.as_ptr(),
                    entry,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    found,
                )
            }
        })
        .map_err(|err| format!("cannot look up user {name:?}: {err}"))?;
        found.ok_or_else(|| format!("user {name:?} does not exist"))
    }

    /// The user with id `uid`, if the user database has one.
    pub fn by_uid(uid: u32) -> Result<Option<User>, String> {
        read_passwd(|entry, buffer, found| {
            // SAFETY: every pointer is valid for the call (see read_passwd).
            unsafe { libc::getpwuid_r(uid, entry, buffer.as_mut_ptr().cast(), buffer.len(), found) }
        })
        .map_err(|err| format!("cannot look up uid {uid}: {err}"))
    }
}

/// Runs one of the `getpw*_r` calls with a buffer for its strings and copies
/// the entry it found out of that buffer.
fn read_passwd(
    call: impl FnOnce(&mut libc::passwd, &mut [u8], &mut *mut libc::passwd) -> libc::c_int,
) -> std::io::Result<Option<User>> {
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: all-zero bytes are a valid `passwd` (null pointers, zero ids).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut entry, &mut buffer, &mut found);
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        return Ok(None);
    }
    // SAFETY: the call succeeded, so pw_name and pw_dir point to
    // NUL-terminated strings in `buffer`, which is still alive here.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(entry.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(entry.pw_dir).to_bytes().to_vec(),
        )
    };
    Ok(Some(User {
        name,
        uid: entry.pw_uid,
        gid: entry.pw_gid,
        home: PathBuf::from(OsString::from_vec(home)),
    }))
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (and so must not run PostgreSQL itself).
pub fn running_as_root() -> bool {
    effective_uid() == 0
}

/// The user libpq would default to: the operating system user running us.
pub fn os_user_name() -> String {
    let from_env = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    from_env
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            User::by_uid(effective_uid())
                .ok()
                .flatten()
                .map(|user| user.name)
        })
        .unwrap_or_else(|| "postgres".to_string())
}

/// Gives `path` to `owner` (when we run as root and there is an owner).
pub fn chown_to(path: &Path, owner: Option<&User>) -> std::io::Result<()> {
    match owner {
        Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_id() {
        let root = User::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(User::by_uid(0).unwrap(), Some(root));
    }

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        let error = User::lookup("no-such-user-pgb").unwrap_err();
        assert!(error.contains("no-such-user-pgb"), "{error}");
        assert_eq!(User::by_uid(4_000_000_000).unwrap(), None);
    }
}
