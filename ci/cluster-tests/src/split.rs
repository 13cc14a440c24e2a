//! How a failover's write gap splits, read from the VMs' own logs:
//! detection (the fault until the replica's monitor decides to promote),
//! promotion (until pg_promote() returned), and haproxy's switch (until the
//! VIP holder's haproxy put the new primary UP for writes). Both programs
//! log in UTC with milliseconds or finer, on the same clock as the fault's.

use std::time::Duration;

use crate::Cluster;

const MONITOR_LOG: &str = "/var/vcap/sys/log/postgres/monitor.log";
const HAPROXY_LOG: &str = "/var/vcap/sys/log/vip/haproxy.log";

/// The parts of one failover, each from the end of the one before.
#[derive(Clone, Debug)]
pub struct Split {
    pub detection: Duration,
    pub promotion: Duration,
    pub haproxy_switch: Duration,
    /// Whose haproxy held the VIP, and so whose switch counts.
    pub vip_holder: String,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "detection {:.3} s, promotion {:.3} s, haproxy's switch {:.3} s ({}'s haproxy)",
            self.detection.as_secs_f64(),
            self.promotion.as_secs_f64(),
            self.haproxy_switch.as_secs_f64(),
            self.vip_holder
        )
    }
}

/// The split of the failover to `new_primary` after `fault` (unix ms);
/// `None` when a log lacks one of the lines (no promotion happened).
pub fn failover_split(cluster: &Cluster, fault: u128, new_primary: &str) -> Option<Split> {
    let monitor = cluster.check(&["exec", new_primary, "cat", MONITOR_LOG]);
    let decided = first_after(&monitor, fault, "promoting the local replica")?;
    let promoted = first_after(&monitor, decided, "promoted with")?;
    let vip_holder = cluster.vip_holder()?;
    let haproxy = cluster.check(&["exec", &vip_holder, "cat", HAPROXY_LOG]);
    let node = new_primary.replace("vm", "node");
    let up = first_after(&haproxy, decided, &format!("Server postgres/{node} is UP"))?;
    let between = |from: u128, to: u128| Duration::from_millis(to.saturating_sub(from) as u64);
    Some(Split {
        detection: between(fault, decided),
        promotion: between(decided, promoted),
        haproxy_switch: between(promoted, up),
        vip_holder,
    })
}

/// The time of the first line of `log` stamped at or after `after` (unix
/// ms) that contains `needle`.
fn first_after(log: &str, after: u128, needle: &str) -> Option<u128> {
    log.lines()
        .filter(|line| line.contains(needle))
        .filter_map(unix_ms)
        .find(|&at| at >= after)
}

/// The unix time in ms of a line starting `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
fn unix_ms(line: &str) -> Option<u128> {
    let stamp = line.get(..23)?;
    let number = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, millis) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u128::try_from(seconds * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_stamps_read_as_unix_milliseconds() {
        // date -u -d 2026-11-30T20:25:30.597Z +%s%3N
        assert_eq!(
            unix_ms("2026-11-30T20:25:30.597936+00:00 Server postgres/node0 is DOWN"),
            Some(1_796_070_330_597)
        );
        assert_eq!(
            unix_ms("2026-11-30T20:25:48.362Z pg-monitor[7294]: watching"),
            Some(1_796_070_348_362)
        );
        assert_eq!(unix_ms("1970-01-01T00:00:00.001Z"), Some(1));
        assert_eq!(
            unix_ms("[WARNING]  (6707) : Server postgres/node0 is DOWN"),
            None
        );
    }

    #[test]
    fn the_first_matching_line_at_or_after_the_instant_is_taken() {
        let log = "1970-01-01T00:00:01.000Z promoting the local replica\n\
                   1970-01-01T00:00:02.000Z other\n\
                   1970-01-01T00:00:03.000Z promoting the local replica\n";
        assert_eq!(first_after(log, 1500, "promoting"), Some(3000));
        assert_eq!(first_after(log, 3001, "promoting"), None);
    }
}
