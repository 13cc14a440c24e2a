//! The processes a crashed server of this data directory left behind, and
//! which of them prepare ends.
//!
//! When a postmaster dies (`kill -9`, the OOM killer) its children notice and
//! exit within moments, all but a backend busy in a long query (it checks for
//! its postmaster only when it waits) and a process the kernel has stopped.
//! PostgreSQL refuses to start, in single-user mode too, while any of them is
//! still attached to the dead server's shared memory, and its hint is to
//! terminate them. Prepare does exactly that for those processes, identified
//! by the segment that `postmaster.pid` names and by their working directory:
//! SIGKILL, which PostgreSQL's crash safety covers as it covered the
//! postmaster's own death. Anything else of the data directory it only waits
//! for, bounded, as before.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pgcore::logln;
use pgcore::os::process::{kill, process_info};

use super::datadir::works_in;
use crate::cancel::Cancel;

/// How long processes of a crashed server may take to disappear before
/// prepare goes on without them (PostgreSQL then refuses to start, and says why).
pub const BOUND: Duration = Duration::from_secs(30);

/// How often the processes are looked at again: an ended process is gone
/// within milliseconds.
const POLL: Duration = Duration::from_millis(50);

/// The shared memory segment of a server, as its `postmaster.pid` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub key: u32,
    pub id: u32,
}

/// What `postmaster.pid` says of the server that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockFile {
    pub pid: u32,
    /// Absent until the server had created its shared memory.
    pub segment: Option<Segment>,
}

/// `postmaster.pid`: the pid on line 1 and, on line 7, the shared memory
/// key and id (PostgreSQL 10 and later write both as `%9lu %9lu`).
pub fn parse_lock_file(text: &str) -> Option<LockFile> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let segment = lines.nth(5).and_then(|line| {
        let mut fields = line.split_whitespace().map(str::parse::<u32>);
        match (fields.next(), fields.next()) {
            (Some(Ok(key)), Some(Ok(id))) => Some(Segment { key, id }),
            _ => None,
        }
    });
    Some(LockFile { pid, segment })
}

/// What was seen of one process, for [`treatment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its working directory is the data directory (by device and inode).
    pub works_here: bool,
    /// It is the postmaster that `postmaster.pid` names.
    pub named_postmaster: bool,
    /// It has exited and waits for its parent to reap it.
    pub zombie: bool,
    /// It is attached to the shared memory segment `postmaster.pid` names.
    pub attached: bool,
}

/// What prepare does about a process of the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// The dead postmaster, not yet reaped: only its parent can reap it, and
    /// until then PostgreSQL counts it as alive. Waited for.
    AwaitReaping,
    /// A process of the dead server, still attached to its shared memory:
    /// ended with SIGKILL, then waited for.
    End,
    /// Something else working in the data directory, or any process while a
    /// server runs there: waited for, never signalled.
    Await,
}

/// The treatment of one process, `None` when it is none of this data
/// directory's business. `server_alive`: the postmaster `postmaster.pid`
/// names is a live process working in the data directory, and then nothing
/// is ended (its children are attached to its memory, and rightly so).
pub fn treatment(seen: Seen, server_alive: bool) -> Option<Treatment> {
    if seen.named_postmaster && seen.zombie {
        return Some(Treatment::AwaitReaping);
    }
    if !seen.works_here {
        return None;
    }
    if seen.attached && !seen.zombie && !server_alive {
        Some(Treatment::End)
    } else {
        Some(Treatment::Await)
    }
}

/// A process found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub pid: u32,
    pub treatment: Treatment,
    /// Its command line (a PostgreSQL process's title: `postgres: walsender ...`).
    pub title: String,
}

/// Every process of a crashed server of `data_dir`, with what to do about it.
pub fn scan(data_dir: &Path) -> Vec<Leftover> {
    let lock = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| parse_lock_file(&text));
    let lock_pid = lock.map(|lock| lock.pid);
    let segment = lock.and_then(|lock| lock.segment);
    let server_alive = lock_pid.is_some_and(|pid| {
        process_info(pid).is_some_and(|process| !process.is_zombie()) && works_in(pid, data_dir)
    });
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let works_here = works_in(pid, data_dir);
            let named_postmaster = lock_pid == Some(pid);
            if !works_here && !named_postmaster {
                return None;
            }
            let seen = Seen {
                works_here,
                named_postmaster,
                zombie: process_info(pid).is_some_and(|process| process.is_zombie()),
                attached: segment.is_some_and(|segment| attached_to(pid, segment)),
            };
            treatment(seen, server_alive).map(|treatment| Leftover {
                pid,
                treatment,
                title: title(pid),
            })
        })
        .collect()
}

/// Whether `maps` (a `/proc/PID/maps`) holds the System V segment: its
/// mapping names the segment's key (`/SYSV%08x`) and has its id as inode.
pub fn maps_attach(maps: &str, segment: Segment) -> bool {
    let name = format!("/SYSV{:08x}", segment.key);
    maps.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 6
            && fields[4].parse::<u32>() == Ok(segment.id)
            && fields[5] == name.as_str()
    })
}

fn attached_to(pid: u32, segment: Segment) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps_attach(&maps, segment))
}

/// A process's command line, arguments joined by spaces, at most 80 characters.
fn title(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.trim().chars().take(80).collect()
}

/// Ends the processes of a crashed server that PostgreSQL would refuse to
/// start beside, and waits (up to [`BOUND`]) until every process of the
/// data directory is gone. A dry run ends nothing: it says what it would end.
pub fn clear(data_dir: &Path, dry_run: bool, cancel: &Cancel) {
    let started = Instant::now();
    let mut ended = BTreeSet::new();
    let mut announced = false;
    loop {
        let left = end_attached(scan(data_dir), &mut ended, dry_run);
        let Some(first) = left.first() else {
            return;
        };
        let bound = BOUND.as_secs_f64();
        if started.elapsed() >= BOUND || cancel.is_set() {
            let pid = first.pid;
            logln!("process {pid} of a crashed server is still there after {bound:.0} s; going on");
            return;
        }
        let awaited = left
            .iter()
            .find(|leftover| leftover.treatment != Treatment::End);
        if let (false, Some(Leftover { pid, .. })) = (announced, awaited) {
            logln!("waiting up to {bound:.0} s for process {pid} of a crashed server to go away");
            announced = true;
        }
        cancel.sleep(POLL);
    }
}

/// Sends SIGKILL to each process to [`Treatment::End`] not yet sent one
/// (`ended` remembers them) and returns what is left to wait for. A dry run
/// only says what it would end, and does not wait for it.
fn end_attached(found: Vec<Leftover>, ended: &mut BTreeSet<u32>, dry_run: bool) -> Vec<Leftover> {
    let mut left = Vec::new();
    for leftover in found {
        let Leftover { pid, title, .. } = &leftover;
        if leftover.treatment == Treatment::End && ended.insert(*pid) {
            if dry_run {
                logln!("dry run: would end process {pid} of a crashed server ({title}): it is still attached to the server's shared memory");
            } else {
                logln!("ending process {pid} of a crashed server ({title}) with SIGKILL: it is still attached to the server's shared memory");
                kill(*pid);
            }
        }
        if !(dry_run && leftover.treatment == Treatment::End) {
            left.push(leftover);
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: Segment = Segment {
        key: 10103043,
        id: 7110787,
    };

    #[test]
    fn the_lock_file_names_the_postmaster_and_its_shared_memory() {
        let written = "4121\n/var/vcap/store/postgres/db\n1764500000\n6432\n/var/vcap/sys/run/postgres\n*\n 10103043   7110787\nready   \n";
        assert_eq!(
            parse_lock_file(written),
            Some(LockFile {
                pid: 4121,
                segment: Some(SEGMENT)
            })
        );
        // A server that died before it created its shared memory.
        assert_eq!(
            parse_lock_file("4121\n/db\n1764500000\n6432\n"),
            Some(LockFile {
                pid: 4121,
                segment: None
            })
        );
        assert_eq!(parse_lock_file(""), None);
        assert_eq!(parse_lock_file("not a pid\n"), None);
    }

    #[test]
    fn a_process_is_attached_by_the_segments_name_and_id_both() {
        let maps = |line: &str| {
            format!("55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1311 /usr/lib/postgresql/15/bin/postgres\n{line}\n")
        };
        let ours = "7fdb7f823000-7fdb7f824000 rw-s 00000000 00:01 7110787                    /SYSV009a2903 (deleted)";
        assert!(maps_attach(&maps(ours), SEGMENT));
        // Another server's segment: another key, or the same id reused under another key.
        let other_id =
            "7fdb7f823000-7fdb7f824000 rw-s 00000000 00:01 7110788 /SYSV009a2903 (deleted)";
        let other_key =
            "7fdb7f823000-7fdb7f824000 rw-s 00000000 00:01 7110787 /SYSV009a2904 (deleted)";
        assert!(!maps_attach(&maps(other_id), SEGMENT));
        assert!(!maps_attach(&maps(other_key), SEGMENT));
        assert!(!maps_attach("", SEGMENT));
    }

    /// Each row: what was seen, whether the named postmaster is a live server
    /// here, and the treatment.
    #[test]
    fn only_processes_of_a_dead_server_attached_to_its_memory_are_ended() {
        use Treatment::*;
        let seen = |works_here, named_postmaster, zombie, attached| Seen {
            works_here,
            named_postmaster,
            zombie,
            attached,
        };
        let rows = [
            // A backend busy in a long query, a stopped walsender: ended.
            (seen(true, false, false, true), false, Some(End)),
            // The dead postmaster, not yet reaped by its parent.
            (seen(false, true, true, false), false, Some(AwaitReaping)),
            // A live server (started by hand meanwhile): neither it nor its children.
            (seen(true, true, false, true), true, Some(Await)),
            (seen(true, false, false, true), true, Some(Await)),
            // A shell or a copy working in the directory, not attached: waited for only.
            (seen(true, false, false, false), false, Some(Await)),
            // The pid in a stale postmaster.pid, now another program elsewhere.
            (seen(false, true, false, false), false, None),
            // A process elsewhere (the same path in another mount namespace).
            (seen(false, false, false, false), false, None),
            (seen(false, false, false, true), false, None),
        ];
        for (seen, server_alive, expected) in rows {
            assert_eq!(
                treatment(seen, server_alive),
                expected,
                "{seen:?}, server alive: {server_alive}"
            );
        }
    }

    /// A process working in a directory of the same path in another mount
    /// namespace (another VM of the local cluster, a container) is not a
    /// process of this data directory; one working in it is waited for, and,
    /// attached to no server's memory, never ended.
    #[test]
    fn a_leftover_process_is_one_working_in_this_very_directory() {
        use std::io;
        use std::process::{Command, Stdio};
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("db");
        fs::create_dir(&data_dir).unwrap();
        let mut elsewhere = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && cd "$1" && echo ready && exec sleep 60"#)
            .args(["sh", &data_dir.to_string_lossy()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        io::BufRead::read_line(
            &mut io::BufReader::new(elsewhere.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        if ready.trim() != "ready" {
            let _ = elsewhere.wait();
            eprintln!("skipped: cannot mount in a new mount namespace (needs root)");
            return;
        }
        let found = scan(&data_dir);
        let mut here = Command::new("sleep")
            .arg("60")
            .current_dir(&data_dir)
            .spawn()
            .unwrap();
        // spawn returns once exec has begun: the new command line is set a
        // moment later.
        for _ in 0..100 {
            if !title(here.id()).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let found_here = scan(&data_dir);
        for child in [&mut elsewhere, &mut here] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(
            found,
            [],
            "a process in another mount namespace was taken for ours"
        );
        assert_eq!(
            found_here,
            [Leftover {
                pid: here.id(),
                treatment: Treatment::Await,
                title: "sleep 60".into()
            }]
        );
    }
}
