//! Processes as /proc shows them, and process groups stopped whole.
//!
//! A pid read from a pidfile may be stale and reused by another program, so
//! every check of "is it still running" also checks the process's name, and
//! counts a zombie (exited, not yet reaped) as gone.

use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

/// What `/proc/PID/stat` says of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The command name (`comm`: at most 15 bytes of the program's name).
    pub name: String,
    /// The state letter: `R`, `S`, `D`, `T`, `Z`...
    pub state: char,
    pub parent: u32,
}

impl ProcessInfo {
    /// Exited but not yet reaped by its parent.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The process `pid`, or `None` when there is none.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is a live process (not a zombie) named one of `names`.
pub fn alive_named(pid: u32, names: &[&str]) -> bool {
    process_info(pid)
        .is_some_and(|process| !process.is_zombie() && names.contains(&process.name.as_str()))
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_info(pid).is_some_and(|process| process.parent == parent))
        .collect()
}

/// The fields of a `/proc/PID/stat` line that matter here. The name is in
/// parentheses and may itself hold spaces or parentheses.
fn parse_stat(stat: &str) -> Option<ProcessInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some(ProcessInfo {
        name: name.to_string(),
        state,
        parent,
    })
}

/// SIGKILL to one process (the postmaster of a data directory, say), checked
/// by the caller to be the one meant.
pub fn kill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions; which pid is
    // signalled is the caller's check.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// SIGKILL to `child`'s whole process group, then reaps it. The child must
/// lead its own group (`process_group(0)`): the shell of a pipeline, or a
/// program that forks helpers (pg_basebackup's WAL streamer), leaves no
/// orphan behind.
pub fn kill_group(child: &mut Child) {
    signal_group(child, libc::SIGKILL);
    let _ = child.wait();
}

/// SIGTERM to `child`'s process group, up to `grace` for it to end, then
/// [`kill_group`] for whatever is left.
pub fn stop_group(child: &mut Child, grace: Duration) {
    signal_group(child, libc::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Also reaches children that outlived the leader.
    kill_group(child);
}

fn signal_group(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on the process group of a child we spawned and have
    // not reaped, so its pid (the group's id) cannot have been reused; a
    // negative pid addresses the group.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let parsed = |stat| parse_stat(stat).map(|p| (p.name, p.state, p.parent));
        assert_eq!(
            parsed("42 (haproxy) S 1 2"),
            Some(("haproxy".to_string(), 'S', 1))
        );
        assert_eq!(
            parsed("42 (a (b) c) Z 7 1"),
            Some(("a (b) c".to_string(), 'Z', 7))
        );
        assert_eq!(parsed("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_under_its_own_name_only() {
        let me = std::process::id();
        let name = process_info(me).expect("this process is in /proc").name;
        assert!(alive_named(me, &[name.as_str()]));
        assert!(!alive_named(me, &["not-this-name"]));
        assert!(children_of(std::os::unix::process::parent_id()).contains(&me));
    }

    #[test]
    fn an_unreaped_child_is_a_zombie_and_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let until = Instant::now() + Duration::from_secs(10);
        while !process_info(pid).is_some_and(|p| p.is_zombie()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(process_info(pid).unwrap().is_zombie());
        assert!(!alive_named(pid, &["true"]));
        child.wait().unwrap();
    }

    #[test]
    fn stopping_a_group_ends_the_children_too() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        stop_group(&mut child, Duration::from_millis(200));
        let until = Instant::now() + Duration::from_secs(10);
        while alive_named(grandchild, &["sleep"]) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive_named(grandchild, &["sleep"]),
            "the grandchild outlived its group"
        );
    }
}
