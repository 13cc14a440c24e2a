//! A primary's timeline history, and whether a stopped node's last record is
//! part of it.
//!
//! Every promotion starts a new timeline and writes a history file naming,
//! for each earlier timeline, the WAL position where it ended (the switch
//! point). A node stopped cleanly on an earlier timeline, whose last record
//! begins before that timeline's switch point, holds nothing the primary's
//! history lacks: it can start as the primary's standby as it is, without
//! pg_rewind. pg-bootstrap decides so at boot, and `pg-monitor switchover`
//! checks with the same rule that a peer promoted during a switchover
//! received all of this node's WAL.

use std::fmt;

use crate::role::Lsn;

/// The history of the timeline a primary writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The timeline the primary writes now.
    pub timeline: u32,
    /// Each earlier timeline and where it ended, oldest first.
    pub switches: Vec<Switch>,
}

/// One earlier timeline and the position where its successor branched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub timeline: u32,
    pub switchpoint: Lsn,
}

/// Where a record of a cleanly stopped node stands in a primary's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// The record is on the timeline the primary writes now: no promotion
    /// lies between them, and the history cannot tell whether they diverged.
    SameTimeline,
    /// The record's timeline is an ancestor and the record begins before its
    /// switch point: the primary's history holds it, and everything before it.
    Holds { switchpoint: Lsn },
    /// The record's timeline is an ancestor but the record begins at or
    /// after its switch point: the node wrote WAL after the primary's
    /// timeline branched off, which the primary does not have.
    Diverged { switchpoint: Lsn },
    /// The record's timeline is not in the history at all.
    Unrelated,
}

impl History {
    /// Where a record beginning at `record` on `timeline` stands: the last
    /// record of a cleanly stopped primary is its shutdown checkpoint, so a
    /// node whose checkpoint the history [`Fit::Holds`] has nothing more.
    ///
    /// The switch point is the end of the last record the promoted node
    /// replayed, and records never straddle it, so a record beginning before
    /// it also ends at or before it.
    pub fn fit(&self, timeline: u32, record: Lsn) -> Fit {
        self.fit_by(timeline, |switchpoint| record < switchpoint)
    }

    /// Where WAL ending at `end` on `timeline` stands: the history holds it
    /// when it ends at or before the switch point (a standby's minimum
    /// recovery point is such an end).
    pub fn fit_end(&self, timeline: u32, end: Lsn) -> Fit {
        self.fit_by(timeline, |switchpoint| end <= switchpoint)
    }

    fn fit_by(&self, timeline: u32, before: impl Fn(Lsn) -> bool) -> Fit {
        if timeline == self.timeline {
            return Fit::SameTimeline;
        }
        match self.switches.iter().find(|s| s.timeline == timeline) {
            Some(switch) if before(switch.switchpoint) => Fit::Holds {
                switchpoint: switch.switchpoint,
            },
            Some(switch) => Fit::Diverged {
                switchpoint: switch.switchpoint,
            },
            None => Fit::Unrelated,
        }
    }
}

/// Parses the history file of `timeline` (empty for timeline 1, which has
/// none): one `parent-timeline<TAB>switch-point<TAB>reason` line per earlier
/// timeline; `#` comments and blank lines are skipped.
pub fn parse(timeline: u32, text: &str) -> Result<History, String> {
    let mut switches = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(parent), Some(switchpoint)) = (fields.next(), fields.next()) else {
            return Err(format!("history line {line:?} has no switch point"));
        };
        let parent: u32 = parent
            .parse()
            .map_err(|_| format!("history line {line:?} names no timeline"))?;
        let switchpoint: Lsn = switchpoint.parse()?;
        if parent >= timeline {
            return Err(format!(
                "history of timeline {timeline} names timeline {parent}, not an earlier one"
            ));
        }
        switches.push(Switch {
            timeline: parent,
            switchpoint,
        });
    }
    Ok(History { timeline, switches })
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "timeline {}", self.timeline)?;
        for switch in &self.switches {
            write!(
                f,
                ", timeline {} ended at {}",
                switch.timeline, switch.switchpoint
            )?;
        }
        Ok(())
    }
}

/// The timeline a primary writes and its history file, read through SQL as
/// pg_rewind reads it: `pg_read_binary_file` on a relative path in the data
/// directory, which the release grants the replication role.
#[cfg(feature = "session")]
pub const QUERY: &str = "SELECT t.tl, CASE WHEN t.tl > 1 THEN convert_from(pg_read_binary_file( \
       'pg_wal/' || lpad(upper(to_hex(t.tl)), 8, '0') || '.history'), 'UTF8') END \
     FROM (SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int \
       AS tl) t";

/// Reads the history of the primary `session` is connected to.
#[cfg(feature = "session")]
pub fn read(session: &crate::Session) -> Result<History, crate::Failure> {
    let rows = session.text_rows(QUERY)?;
    let row = rows.first().cloned().unwrap_or_default();
    let timeline = row
        .first()
        .cloned()
        .flatten()
        .and_then(|text| text.parse::<u32>().ok());
    let failure = |why: String| crate::Failure::transient(why).at(session.endpoint());
    let timeline =
        timeline.ok_or_else(|| failure("the timeline query returned no timeline".into()))?;
    let text = row.get(1).cloned().flatten().unwrap_or_default();
    parse(timeline, &text).map_err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    /// Timeline 3: timeline 1 ended at 0/3000148, timeline 2 at 0/5000000.
    fn history() -> History {
        parse(
            3,
            "1\t0/3000148\tno recovery target specified\n\
             \n\
             2\t0/5000000\tno recovery target specified\n",
        )
        .unwrap()
    }

    #[test]
    fn a_history_file_lists_each_earlier_timeline_and_its_switch_point() {
        let history = history();
        assert_eq!(history.timeline, 3);
        assert_eq!(
            history.switches,
            [
                Switch {
                    timeline: 1,
                    switchpoint: lsn("0/3000148")
                },
                Switch {
                    timeline: 2,
                    switchpoint: lsn("0/5000000")
                },
            ]
        );
        assert_eq!(parse(1, "").unwrap().switches, []);
        assert_eq!(
            history.to_string(),
            "timeline 3, timeline 1 ended at 0/3000148, timeline 2 ended at 0/5000000"
        );
    }

    #[test]
    fn a_record_before_its_timelines_switch_point_is_held() {
        let history = history();
        let cases = [
            (
                1,
                "0/30000D8",
                Fit::Holds {
                    switchpoint: lsn("0/3000148"),
                },
            ),
            (
                2,
                "0/4FFFF00",
                Fit::Holds {
                    switchpoint: lsn("0/5000000"),
                },
            ),
            (
                1,
                "0/3000148",
                Fit::Diverged {
                    switchpoint: lsn("0/3000148"),
                },
            ),
            (
                1,
                "0/3000200",
                Fit::Diverged {
                    switchpoint: lsn("0/3000148"),
                },
            ),
            (3, "0/9000000", Fit::SameTimeline),
            (4, "0/1000000", Fit::Unrelated),
        ];
        for (timeline, record, expected) in cases {
            assert_eq!(
                history.fit(timeline, lsn(record)),
                expected,
                "timeline {timeline}, record at {record}"
            );
        }
    }

    #[test]
    fn wal_ending_at_the_switch_point_is_held_a_record_beginning_there_is_not() {
        let history = history();
        let at = lsn("0/3000148");
        assert_eq!(history.fit_end(1, at), Fit::Holds { switchpoint: at });
        assert_eq!(history.fit(1, at), Fit::Diverged { switchpoint: at });
        assert_eq!(
            history.fit_end(1, lsn("0/3000149")),
            Fit::Diverged { switchpoint: at }
        );
        assert_eq!(history.fit_end(3, lsn("0/9000000")), Fit::SameTimeline);
        assert_eq!(history.fit_end(4, lsn("0/1000000")), Fit::Unrelated);
    }

    #[test]
    fn a_malformed_history_is_an_error_naming_the_line() {
        for (text, expected) in [
            ("1\n", "has no switch point"),
            ("x\t0/1\treason\n", "names no timeline"),
            ("1\tnope\treason\n", "is not an LSN"),
            ("3\t0/1\treason\n", "not an earlier one"),
        ] {
            let error = parse(3, text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
