//! haproxy's runtime API: one command over its stats socket (a Unix socket
//! on the node itself, never a network listener), and its whole answer,
//! bounded in time and size. pg-vrrp-watch reads `show stat` through it;
//! `pg-monitor switchover` tells haproxy which node is primary now.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The most of an answer that is read: a few hundred bytes per server, and
/// a pair has a handful.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Sends `command` (one line) and returns haproxy's answer, all of it within
/// `timeout`: a socket that answers a byte at a time must not hold a caller
/// that others wait for (keepalived waits for its track script).
pub fn ask(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    // haproxy answers and closes the connection (non-interactive mode).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    let no_full_answer = || std::io::Error::new(ErrorKind::TimedOut, "no full answer in time");
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(no_full_answer)?;
        stream.set_read_timeout(Some(left))?;
        let read = match stream.read(&mut chunk) {
            // The deadline passed during the read (Linux reports a socket's
            // read timeout as EAGAIN, WouldBlock).
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(no_full_answer())
            }
            read => read?,
        };
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
        if answer.len() > MAX_ANSWER_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
