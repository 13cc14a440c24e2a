//! A program under test run as a real process, its stderr in a log file a
//! test reads and waits on; killed (by pid) when dropped, panics included.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct LoggedProcess {
    name: String,
    child: Child,
    dir: TempDir,
}

impl LoggedProcess {
    /// Starts `command` (its stdin empty, stdout discarded, stderr to the
    /// log); `name` labels failure messages.
    pub fn start(name: &str, mut command: Command) -> LoggedProcess {
        let dir = tempfile::Builder::new()
            .prefix("process.")
            .tempdir()
            .expect("cannot create a temp dir");
        let log = fs::File::create(dir.path().join("stderr.log")).expect("cannot create the log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        LoggedProcess {
            name: name.to_string(),
            child,
            dir,
        }
    }

    /// A path in the process's own temp dir (for markers and pidfiles).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Waits, up to `timeout`, until the log holds `needle`; panics with the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < timeout,
                "{}: expected {needle:?} in the log within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
    }

    /// Sends `signal` (e.g. "TERM") and waits, up to `timeout`, for the exit.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> std::process::ExitStatus {
        self.signal(signal);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} still runs {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
