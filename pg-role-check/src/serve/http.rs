//! The little HTTP/1.x a health endpoint needs: read one request head within
//! a bound, parse it, write one response and close. A health check is one
//! small request per connection, so there is no keep-alive, no body and no
//! chunking; what a client sends beyond its head is never read as a request.
//!
//! Every input is bounded (time and bytes) and every malformed one is a
//! response, never a panic: the endpoint listens where haproxy, monitoring
//! and anyone else on the network can reach it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The most a request line and its headers may take, blank line included.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The methods answered; anything else is 405.
pub const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// What arrived instead of a complete request head.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection closed, failed or timed out before a byte came: there
    /// is nobody to answer (a port scan, a TCP-only check).
    Nothing,
    /// Part of a head came, then the time ran out: 408.
    TimedOut,
    /// More than [`MAX_HEAD_BYTES`] without the end of the head: 431.
    TooLarge,
    /// Part of a head came, then the client closed its side: 400.
    Truncated,
}

/// Reads until the end of the request head (an empty line), at most
/// [`MAX_HEAD_BYTES`], by `deadline`. Bytes after the head are left unread
/// or ignored.
pub fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    let mut buffer = vec![0u8; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        let partial = |error| {
            if filled == 0 {
                ReadError::Nothing
            } else {
                error
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(partial(ReadError::TimedOut));
        }
        let read = match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err(partial(ReadError::Truncated)),
            Ok(read) => read,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            // Linux reports a socket's read timeout as WouldBlock.
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(partial(ReadError::TimedOut))
            }
            Err(_) => return Err(ReadError::Nothing),
        };
        // The end may straddle two reads: look back three bytes.
        let from = filled.saturating_sub(3);
        filled += read;
        if let Some(end) = head_end(&buffer[from..filled]) {
            buffer.truncate(from + end);
            return Ok(buffer);
        }
        if filled == MAX_HEAD_BYTES {
            return Err(ReadError::TooLarge);
        }
    }
}

/// Where the head ends in `bytes` (just after its empty line), if it does:
/// `\r\n\r\n`, or `\n\n` from a client that ends lines with LF alone.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().enumerate().find_map(|(at, &byte)| {
        let before = &bytes[..at];
        let empty_line = before.ends_with(b"\n") || before.ends_with(b"\n\r");
        (byte == b'\n' && at > 0 && empty_line).then_some(at + 1)
    })
}

/// The parts of a request line that matter; the headers are checked for
/// form and then ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    pub target: &'a str,
}

/// A method answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    /// As GET, without the body.
    Head,
    /// As GET, without the body: haproxy's default `option httpchk` method.
    Options,
}

impl Method {
    /// The method a request names, if it is one answered (case-sensitive, as
    /// HTTP methods are).
    pub fn named(name: &str) -> Option<Method> {
        match name {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            "OPTIONS" => Some(Method::Options),
            _ => None,
        }
    }

    pub fn sends_body(self) -> bool {
        self == Method::Get
    }
}

/// Parses a request head as [`read_head`] returns it: `METHOD SP TARGET SP
/// HTTP/1.0|1.1` and header lines `name: value`. The error is the one-line
/// reason of a 400.
pub fn parse_head(bytes: &[u8]) -> Result<Head<'_>, &'static str> {
    // A client may send empty lines before the request (RFC 9112, 2.2).
    let start = bytes
        .iter()
        .position(|&byte| byte != b'\r' && byte != b'\n')
        .ok_or("empty request")?;
    let mut lines = bytes[start..]
        .split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().ok_or("empty request")?;
    let head = parse_request_line(request_line)?;
    for line in lines.take_while(|line| !line.is_empty()) {
        check_header(line)?;
    }
    Ok(head)
}

fn parse_request_line(line: &[u8]) -> Result<Head<'_>, &'static str> {
    const MALFORMED: &str = "malformed request line: expected METHOD /path HTTP/1.1";
    let text = std::str::from_utf8(line).map_err(|_| MALFORMED)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MALFORMED);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(MALFORMED);
    }
    if target.is_empty() || !target.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("malformed request target");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version: HTTP/1.0 and HTTP/1.1 are answered");
    }
    Ok(Head { method, target })
}

/// `name: value`, the name a token and the value free of control bytes but
/// tabs; a line folded onto the previous one is refused (RFC 9112, 5.2).
fn check_header(line: &[u8]) -> Result<(), &'static str> {
    const MALFORMED: &str = "malformed header line";
    let colon = line
        .iter()
        .position(|&byte| byte == b':')
        .ok_or(MALFORMED)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let value_ok = value
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f));
    if name.is_empty() || !name.iter().copied().all(is_token_byte) || !value_ok {
        return Err(MALFORMED);
    }
    Ok(())
}

/// A `tchar` of RFC 9110, 5.6.2.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// One response, always closing the connection after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format.
pub const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Response {
    /// A refusal with a one-line reason: 400, 404, 405, 408, 431.
    pub fn error(code: u16, reason: &str) -> Response {
        Response {
            code,
            content_type: TEXT,
            body: format!("{reason}\n"),
        }
    }

    /// The response as sent: status line, headers, and the body unless
    /// `with_body` is false (HEAD and OPTIONS get the same headers, no body).
    pub fn to_bytes(&self, with_body: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Connection: close\r\nCache-Control: no-store\r\n",
            self.code,
            reason_phrase(self.code),
            self.content_type,
            self.body.len()
        );
        if self.code == 405 {
            head.push_str(&format!("Allow: {ALLOWED}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if with_body {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The most of what a client sent beyond its head that is read away before
/// closing: enough for a small body sent along with the head.
const MAX_DRAINED_BYTES: usize = 64 * 1024;

/// Sends `bytes` within `timeout` and closes the connection. What the client
/// sent and nobody read is read away first, as far as it has arrived:
/// closing a socket with unread data resets the connection, and the client
/// may lose the response.
pub fn send_and_close(mut stream: TcpStream, bytes: &[u8], timeout: Duration) {
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(bytes).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAINED_BYTES {
            match stream.read(&mut sink) {
                Ok(read) if read > 0 => drained += read,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\n"), Some(17));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn a_request_line_and_headers_parse() {
        let head =
            b"GET /replica?lag=16MB HTTP/1.1\r\nHost: 10.0.0.1:8008\r\nUser-Agent: x\r\n\r\n";
        assert_eq!(
            parse_head(head),
            Ok(Head {
                method: "GET",
                target: "/replica?lag=16MB"
            })
        );
        assert_eq!(
            parse_head(b"OPTIONS /primary HTTP/1.0\r\n\r\n").map(|h| h.method),
            Ok("OPTIONS")
        );
        // Empty lines before the request, and LF-only line ends, are taken.
        assert_eq!(
            parse_head(b"\r\nHEAD /health HTTP/1.0\nX-A:\n\n").map(|h| h.target),
            Ok("/health")
        );
        // Any token is a method here; which are answered is decided later.
        assert_eq!(
            parse_head(b"BREW /pot HTTP/1.1\r\n\r\n").map(|h| h.method),
            Ok("BREW")
        );
    }

    #[test]
    fn malformed_heads_are_refused_with_a_reason() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"G\xc3\xa9T / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET /a\tb HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: nul\0\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: bare\rcr\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            let reason = parse_head(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(!reason.is_empty() && !reason.contains('\n'));
        }
    }

    #[test]
    fn any_bytes_parse_or_are_refused_without_a_panic() {
        // A small deterministic generator: the same bytes on every run.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"GET /primary HTTP/1.1\r\n:?&=\0\xff\t ";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 3 {
                    0 => next() as u8,
                    _ => alphabet[(next() % alphabet.len() as u64) as usize],
                })
                .collect();
            let _ = head_end(&bytes);
            if let Ok(head) = parse_head(&bytes) {
                let _ = crate::serve::judge::route(head.target);
            }
        }
    }

    #[test]
    fn every_response_says_its_length_and_closes() {
        let response = Response {
            code: 503,
            content_type: JSON,
            body: "{\"role\":\"replica\"}".into(),
        };
        let with_body = String::from_utf8(response.to_bytes(true)).unwrap();
        assert_eq!(
            with_body,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
             Content-Length: 18\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n\
             {\"role\":\"replica\"}"
        );
        let without = String::from_utf8(response.to_bytes(false)).unwrap();
        assert!(without.ends_with(
            "Content-Length: 18\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        ));
        let refused =
            String::from_utf8(Response::error(405, "POST is not answered").to_bytes(true)).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(refused.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"));
        assert!(refused.ends_with("\r\n\r\nPOST is not answered\n"));
    }
}
