//! What a stopped server's `global/pg_control` says: which cluster the data
//! directory belongs to, whether it was shut down cleanly, and where its last
//! checkpoint is.
//!
//! The fields are read from the file itself rather than from `pg_controldata`,
//! whose output is translated: the start of `ControlFileData` has kept the
//! same layout in every PostgreSQL version the release runs (13 to 18),
//! native-endian on the machine that wrote it.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use crate::role::Lsn;

/// The fields of pg_control the programs decide by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub state: ClusterState,
    /// `checkPoint`: where the last checkpoint record starts.
    pub checkpoint: Lsn,
    /// `checkPointCopy.ThisTimeLineID`: the timeline of that checkpoint.
    pub timeline: u32,
    /// `minRecoveryPoint`: how far a standby's data files reflect the WAL
    /// it replayed (0/0 on a primary). A standby's shutdown restartpoint
    /// moves it past its checkpoint record, so for a standby stopped
    /// cleanly it is where its WAL ends, as pg_rewind reckons.
    pub min_recovery_point: Lsn,
    /// `minRecoveryPointTLI`: the timeline of that position.
    pub min_recovery_timeline: u32,
}

/// `DBState`: what the server was doing when pg_control was last written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    StartingUp,
    /// A primary stopped cleanly: its last record is the shutdown checkpoint.
    ShutDown,
    /// A standby stopped cleanly.
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    /// Running (or crashed while running).
    InProduction,
    /// A value no known version writes.
    Unknown(i32),
}

impl ClusterState {
    fn from_raw(raw: i32) -> ClusterState {
        match raw {
            0 => ClusterState::StartingUp,
            1 => ClusterState::ShutDown,
            2 => ClusterState::ShutDownInRecovery,
            3 => ClusterState::ShuttingDown,
            4 => ClusterState::InCrashRecovery,
            5 => ClusterState::InArchiveRecovery,
            6 => ClusterState::InProduction,
            other => ClusterState::Unknown(other),
        }
    }

    /// Stopped cleanly, as a primary or as a standby.
    pub fn is_clean(self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

/// As `pg_controldata` words it.
impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ClusterState::StartingUp => f.write_str("starting up"),
            ClusterState::ShutDown => f.write_str("shut down"),
            ClusterState::ShutDownInRecovery => f.write_str("shut down in recovery"),
            ClusterState::ShuttingDown => f.write_str("shutting down"),
            ClusterState::InCrashRecovery => f.write_str("in crash recovery"),
            ClusterState::InArchiveRecovery => f.write_str("in archive recovery"),
            ClusterState::InProduction => f.write_str("in production"),
            ClusterState::Unknown(raw) => write!(f, "unknown state {raw}"),
        }
    }
}

/// Byte offsets in `ControlFileData`: the system identifier, two 32-bit
/// version numbers, the state (a 32-bit enum, then padding), the time, the
/// checkpoint's location, then the checkpoint itself (its redo location,
/// then its timeline; 88 bytes in all: PostgreSQL 17's `wal_level` took
/// padding after `fullPageWrites`), the unlogged LSN, then the minimum
/// recovery point and its timeline. Checked against pg_controldata on a
/// standby of PostgreSQL 15 (pg_control version 1300) and 18 (1800).
const SYSTEM_IDENTIFIER: usize = 0;
const STATE: usize = 16;
const CHECKPOINT: usize = 32;
const TIMELINE: usize = 48;
const MIN_RECOVERY_POINT: usize = 136;
const MIN_RECOVERY_TIMELINE: usize = 144;

/// Reads `data_dir/global/pg_control`.
pub fn read(data_dir: &Path) -> io::Result<ControlFile> {
    parse(&fs::read(data_dir.join("global").join("pg_control"))?)
}

/// The fields from the bytes of a pg_control file.
pub fn parse(bytes: &[u8]) -> io::Result<ControlFile> {
    fn field<const N: usize>(bytes: &[u8], at: usize) -> io::Result<[u8; N]> {
        bytes
            .get(at..at + N)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "pg_control is too short"))
    }
    Ok(ControlFile {
        system_identifier: u64::from_ne_bytes(field(bytes, SYSTEM_IDENTIFIER)?),
        state: ClusterState::from_raw(i32::from_ne_bytes(field(bytes, STATE)?)),
        checkpoint: Lsn(u64::from_ne_bytes(field(bytes, CHECKPOINT)?)),
        timeline: u32::from_ne_bytes(field(bytes, TIMELINE)?),
        min_recovery_point: Lsn(u64::from_ne_bytes(field(bytes, MIN_RECOVERY_POINT)?)),
        min_recovery_timeline: u32::from_ne_bytes(field(bytes, MIN_RECOVERY_TIMELINE)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control_bytes(state: i32, checkpoint: u64, timeline: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 296];
        bytes[0..8].copy_from_slice(&7_000_000_000_000_000_001u64.to_ne_bytes());
        bytes[16..20].copy_from_slice(&state.to_ne_bytes());
        bytes[32..40].copy_from_slice(&checkpoint.to_ne_bytes());
        bytes[48..52].copy_from_slice(&timeline.to_ne_bytes());
        bytes[136..144].copy_from_slice(&0x3_0000_00D0u64.to_ne_bytes());
        bytes[144..148].copy_from_slice(&(timeline + 1).to_ne_bytes());
        bytes
    }

    #[test]
    fn the_fields_are_read_at_their_offsets() {
        let control = parse(&control_bytes(1, 0x3_0000_0028, 2)).unwrap();
        assert_eq!(control.system_identifier, 7_000_000_000_000_000_001);
        assert_eq!(control.state, ClusterState::ShutDown);
        assert_eq!(control.checkpoint.to_string(), "3/28");
        assert_eq!(control.timeline, 2);
        assert_eq!(control.min_recovery_point.to_string(), "3/D0");
        assert_eq!(control.min_recovery_timeline, 3);
    }

    #[test]
    fn only_the_two_shut_down_states_are_clean() {
        let clean: Vec<i32> = (0..8)
            .filter(|&raw| ClusterState::from_raw(raw).is_clean())
            .collect();
        assert_eq!(clean, [1, 2]);
        assert_eq!(ClusterState::from_raw(6).to_string(), "in production");
        assert_eq!(ClusterState::from_raw(9), ClusterState::Unknown(9));
    }

    #[test]
    fn a_short_file_is_invalid_data() {
        let error = parse(&[0u8; 40]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
