//! One log line per event on stderr: `<RFC 3339 UTC> <binary>[<pid>]: <message>`.
//!
//! Every binary of the release logs this way so that monit and operators read
//! one format. Callers are responsible for never passing secrets.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since_epoch.as_secs() as i64, since_epoch.subsec_millis())
}

fn rfc3339(unix_seconds: i64, millis: u32) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_930_272, 408), "2026-11-29T05:31:12.408Z");
        assert_eq!(rfc3339(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }
}
