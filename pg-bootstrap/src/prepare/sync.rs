//! How the programs of a rejoin flush the data directory to disk.
//!
//! A crashed primary's rejoin flushes the whole data directory twice:
//! PostgreSQL before its crash recovery (`recovery_init_sync_method`), and
//! pg_rewind once it has written. By default each opens and fsyncs every file
//! in turn, seconds on a busy disk and most of a rejoin. `syncfs` flushes the
//! file systems holding them in one call, just as durable; PostgreSQL offers
//! it from 14 on, pg_rewind from 17 on. Before Linux 5.8 syncfs may not report
//! a write error, so there the files are still flushed one by one.

use std::fs;
use std::path::Path;

/// How a program makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Each file, one by one: PostgreSQL's default.
    Fsync,
    /// Each file system holding the data directory, once.
    Syncfs,
}

/// The oldest Linux whose syncfs reports write errors to the caller.
const SYNCFS_REPORTS_ERRORS: (u32, u32) = (5, 8);

/// The first PostgreSQL with `recovery_init_sync_method`.
const SERVER_SYNCFS: u32 = 14;

/// The first pg_rewind with `--sync-method`.
const REWIND_SYNCFS: u32 = 17;

/// syncfs where the kernel reports its errors; fsync elsewhere, or when the
/// kernel's version is unknown.
pub fn method(kernel: Option<(u32, u32)>) -> Method {
    match kernel {
        Some(version) if version >= SYNCFS_REPORTS_ERRORS => Method::Syncfs,
        _ => Method::Fsync,
    }
}

/// The flush of one rejoin: the method, and the PostgreSQL major version of
/// the data directory (which every program that can run on it shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    pub method: Method,
    pub major: Option<u32>,
}

impl Flush {
    /// The flush for `data_dir` on this machine.
    pub fn for_data_dir(data_dir: &Path) -> Flush {
        Flush {
            method: method(kernel_version()),
            major: major_version(data_dir),
        }
    }

    /// Settings for `postgres --single` finishing a crash recovery.
    pub fn server_settings(&self) -> Vec<String> {
        self.when(SERVER_SYNCFS, &["-c", "recovery_init_sync_method=syncfs"])
    }

    /// Options for pg_rewind.
    pub fn rewind_options(&self) -> Vec<String> {
        self.when(REWIND_SYNCFS, &["--sync-method=syncfs"])
    }

    /// `args` when syncfs is chosen and PostgreSQL is `since` or later.
    fn when(&self, since: u32, args: &[&str]) -> Vec<String> {
        match (self.method, self.major) {
            (Method::Syncfs, Some(major)) if major >= since => {
                args.iter().map(ToString::to_string).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The running kernel's major and minor version.
fn kernel_version() -> Option<(u32, u32)> {
    parse_kernel_release(&fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

/// `6.8.0-45-generic` -> (6, 8).
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The major version in the data directory's PG_VERSION (`15`, or `9.6`'s 9).
fn major_version(data_dir: &Path) -> Option<u32> {
    parse_pg_version(&fs::read_to_string(data_dir.join("PG_VERSION")).ok()?)
}

pub fn parse_pg_version(text: &str) -> Option<u32> {
    text.trim().split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_and_pg_versions_parse() {
        assert_eq!(parse_kernel_release("6.8.0-45-generic\n"), Some((6, 8)));
        assert_eq!(parse_kernel_release("5.15.0-1071-aws"), Some((5, 15)));
        assert_eq!(parse_kernel_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.8-rc1"), Some((5, 8)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert_eq!(parse_pg_version("18\n"), Some(18));
        assert_eq!(parse_pg_version("9.6\n"), Some(9));
        assert_eq!(parse_pg_version(""), None);
    }

    /// Each row: the kernel, the data directory's PostgreSQL, and whether
    /// single-user crash recovery and pg_rewind are asked for syncfs.
    #[test]
    fn syncfs_only_where_the_kernel_reports_its_errors_and_postgresql_offers_it() {
        let rows = [
            (Some((6, 8)), Some(18), true, true),
            (Some((5, 8)), Some(17), true, true),
            // pg_rewind has no --sync-method before 17.
            (Some((6, 8)), Some(16), true, false),
            (Some((6, 8)), Some(14), true, false),
            // No recovery_init_sync_method before 14.
            (Some((6, 8)), Some(13), false, false),
            // syncfs does not report write errors before Linux 5.8.
            (Some((5, 7)), Some(18), false, false),
            (Some((4, 19)), Some(18), false, false),
            // Whatever is not known keeps PostgreSQL's default.
            (None, Some(18), false, false),
            (Some((6, 8)), None, false, false),
        ];
        for (kernel, major, server, rewind) in rows {
            let flush = Flush {
                method: method(kernel),
                major,
            };
            let expected = |syncfs: bool, args: &[&str]| -> Vec<String> {
                if syncfs {
                    args.iter().map(ToString::to_string).collect()
                } else {
                    Vec::new()
                }
            };
            assert_eq!(
                flush.server_settings(),
                expected(server, &["-c", "recovery_init_sync_method=syncfs"]),
                "{kernel:?}, {major:?}"
            );
            assert_eq!(
                flush.rewind_options(),
                expected(rewind, &["--sync-method=syncfs"]),
                "{kernel:?}, {major:?}"
            );
        }
    }
}
