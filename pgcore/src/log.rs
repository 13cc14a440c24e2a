//! One log line per event on stderr: `<RFC 3339 UTC> <binary>[<pid>]: <message>`.
//!
//! Every binary of the release logs this way so that monit and operators read
//! one format. Callers are responsible for never passing secrets.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

static PROGRAM: OnceLock<String> = OnceLock::new();

/// Names the binary in every later log line; call once at the start of `main`.
pub fn init(program: &str) {
    let _ = PROGRAM.set(program.to_string());
}

/// Writes one line to stderr. Prefer the [`logln!`](crate::logln) macro.
pub fn emit(message: fmt::Arguments) {
    let program = PROGRAM
        .get()
        .map(String::as_str)
        .unwrap_or("postgres-release");
    let line = format!(
        "{} {}[{}]: {}\n",
        rfc3339_now(),
        program,
        std::process::id(),
        message
    );
    // A closed stderr must not turn a log line into a crash of the monitor.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs one event: `logln!("peer {} unreachable", peer)`.
#[macro_export]
macro_rules! logln {
    ($($arg:tt)*) => { $crate::log::emit(format_args!($($arg)*)) };
}

/// The current time as `2026-11-29T05:31:12.408Z`.
pub fn rfc3339_now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// RFC 3339 in UTC with milliseconds, as every log line and record starts.
fn rfc3339(at: OffsetDateTime) -> String {
    const FORMAT: &[BorrowedFormatItem] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // Cannot fail for an OffsetDateTime; a log line must not panic all the same.
    at.to_offset(UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_seconds: i64, nanos: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(unix_seconds) * 1_000_000_000 + i128::from(nanos),
        )
        .unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(at(951_782_400, 5_000_000)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            rfc3339(at(1_795_930_272, 408_000_000)),
            "2026-11-29T05:31:12.408Z"
        );
        assert_eq!(
            rfc3339(at(4_102_444_799, 999_000_000)),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn milliseconds_are_truncated_and_any_offset_is_shown_in_utc() {
        // 12.4089 s is still .408: a line is never stamped later than it was written.
        assert_eq!(
            rfc3339(at(1_795_930_272, 408_900_000)),
            "2026-11-29T05:31:12.408Z"
        );
        let paris = at(1_795_930_272, 0).to_offset(time::macros::offset!(+1));
        assert_eq!(rfc3339(paris), "2026-11-29T05:31:12.000Z");
    }
}
