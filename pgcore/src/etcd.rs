//! A client of etcd v3, through its JSON gateway (`POST /v3/...`), as
//! Patroni's etcd3 client talks to it: the few calls a leader lease needs
//! (leases, reads, puts, compare-and-swap transactions, deletes), over TLS
//! with a client certificate, each bounded by a deadline.
//!
//! Why the gateway and not gRPC: every call of the HA loop is one small
//! request and one small answer; the gateway is part of every etcd 3.x
//! server, and speaking HTTP/1.1 over the OpenSSL the programs already link
//! needs no protobuf compiler, no HTTP/2 stack and no second TLS library.
//!
//! Sync and blocking, on purpose: a caller (the HA loop) asks one thing at a
//! time and must know, within its retry budget, whether it was done. The
//! connection is held between calls (one per client) and moves to the next
//! endpoint when the one in use fails.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use openssl::ssl::{
    HandshakeError, Ssl, SslContext, SslFiletype, SslMethod, SslStream, SslVerifyMode,
};
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::X509VerifyResult;
use serde_json::{json, Value};

/// Where the store is and how to prove who we are to it.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// `host:port` of each member; tried in turn.
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates: the only one trusted.
    pub ca: PathBuf,
    /// This client's certificate and key (etcd requires client certificates).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Connecting to one member, and each read or write on its connection.
    pub timeout: Duration,
}

/// Why a call did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No member answered within the deadline (down, partitioned, or
    /// without quorum: a member that lost its leader holds requests).
    Unreachable,
    /// A member answered with an error (no leader, a lease not found, a
    /// request it refuses).
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    fn unreachable(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Unreachable,
            message: message.into(),
        }
    }

    fn refused(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Refused,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// One key as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// The store's revision at which the key was created; it changes when
    /// the key is deleted and made again (a new leader, even of the same name).
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key lives on, 0 for none.
    pub lease: i64,
}

/// The condition of a transaction.
#[derive(Clone, Copy, Debug)]
pub enum Compare<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key exists and holds this value.
    Holds(&'a str, &'a str),
}

/// One operation of a transaction.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// key, value, lease (0 for none)
    Put(&'a str, &'a str, i64),
    Delete(&'a str),
}

/// A lease the store granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds the store gives it, counted from the grant or the last keep-alive.
    pub ttl: i64,
}

/// A client of one etcd cluster. Not shared between threads: a loop holds one.
pub struct Etcd {
    settings: EtcdSettings,
    /// Trusts only the CA named (never the system's), as libpq does.
    context: SslContext,
    /// The endpoint in use (an index into settings.endpoints) and its connection.
    current: usize,
    connection: Option<BufReader<SslStream<TcpStream>>>,
}

impl Etcd {
    /// Reads the certificates; reaches no member yet.
    pub fn new(settings: EtcdSettings) -> Result<Etcd, String> {
        if settings.endpoints.is_empty() {
            return Err("etcd: no endpoints".into());
        }
        let mut builder = SslContext::builder(SslMethod::tls_client())
            .map_err(|err| format!("etcd: cannot set up OpenSSL: {err}"))?;
        builder
            .set_ca_file(&settings.ca)
            .map_err(|err| format!("etcd CA {}: cannot load: {err}", settings.ca.display()))?;
        builder.set_verify(SslVerifyMode::PEER);
        builder
            .set_certificate_chain_file(&settings.certificate)
            .map_err(|err| {
                format!(
                    "etcd client certificate {}: cannot load: {err}",
                    settings.certificate.display()
                )
            })?;
        builder
            .set_private_key_file(&settings.private_key, SslFiletype::PEM)
            .map_err(|err| {
                format!(
                    "etcd client key {}: cannot load: {err}",
                    settings.private_key.display()
                )
            })?;
        builder.check_private_key().map_err(|err| {
            format!(
                "etcd client key {} is not the key of {}: {err}",
                settings.private_key.display(),
                settings.certificate.display()
            )
        })?;
        Ok(Etcd {
            settings,
            context: builder.build(),
            current: 0,
            connection: None,
        })
    }

    /// The endpoint the last call used (or the next will).
    pub fn endpoint(&self) -> &str {
        &self.settings.endpoints[self.current]
    }

    /// Grants a lease of `ttl` seconds.
    pub fn grant(&mut self, ttl: u64, deadline: Instant) -> Result<Lease, StoreError> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl }), deadline)?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            if !error.is_empty() {
                return Err(StoreError::refused(format!("lease grant: {error}")));
            }
        }
        Ok(Lease {
            id: int(&answer, "ID")
                .ok_or_else(|| StoreError::refused("lease grant: no ID in the answer"))?,
            ttl: int(&answer, "TTL").unwrap_or(ttl as i64),
        })
    }

    /// Renews `lease` for its full TTL. `Ok(None)`: the lease is gone
    /// (expired or revoked); its keys are gone with it.
    pub fn keep_alive(&mut self, lease: i64, deadline: Instant) -> Result<Option<i64>, StoreError> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease }), deadline)?;
        // A stream: each message is {"result": {...}}; one request, one result.
        let result = answer.get("result").unwrap_or(&answer);
        match int(result, "TTL") {
            Some(ttl) if ttl > 0 => Ok(Some(ttl)),
            _ => Ok(None),
        }
    }

    /// Ends `lease` at once, deleting its keys.
    pub fn revoke(&mut self, lease: i64, deadline: Instant) -> Result<(), StoreError> {
        match self.call("/v3/lease/revoke", &json!({ "ID": lease }), deadline) {
            // Revoking a lease already gone is what was wanted.
            Err(err) if err.message.contains("lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The key, if it exists (a linearizable read: the store's latest).
    pub fn get(&mut self, key: &str, deadline: Instant) -> Result<Option<KeyValue>, StoreError> {
        let answer = self.call("/v3/kv/range", &json!({ "key": b64(key) }), deadline)?;
        Ok(key_values(&answer).into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub fn get_prefix(
        &mut self,
        prefix: &str,
        deadline: Instant,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let body = json!({ "key": b64(prefix), "range_end": b64_bytes(&prefix_end(prefix)) });
        let answer = self.call("/v3/kv/range", &body, deadline)?;
        Ok(key_values(&answer))
    }

    /// Sets the key, on `lease` (0 for none).
    pub fn put(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.call("/v3/kv/put", &put_body(key, value, lease), deadline)
            .map(|_| ())
    }

    /// Creates the key on `lease` only if it does not exist. `true`: created.
    pub fn create(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.txn(
            &Compare::Absent(key),
            &[Op::Put(key, value, lease)],
            deadline,
        )
    }

    /// Sets the key to `value` on `lease` only while it still holds
    /// `expected`. `true`: set; `false`: it holds something else, or is gone.
    pub fn swap(
        &mut self,
        key: &str,
        expected: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.txn(
            &Compare::Holds(key, expected),
            &[Op::Put(key, value, lease)],
            deadline,
        )
    }

    /// Deletes the key only while it holds `expected`. `true`: deleted.
    pub fn delete_if(
        &mut self,
        key: &str,
        expected: &str,
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        self.txn(&Compare::Holds(key, expected), &[Op::Delete(key)], deadline)
    }

    /// Deletes the key, whatever it holds.
    pub fn delete(&mut self, key: &str, deadline: Instant) -> Result<(), StoreError> {
        self.call("/v3/kv/deleterange", &json!({ "key": b64(key) }), deadline)
            .map(|_| ())
    }

    /// `operations`, all or none, only if `compare` holds; `true` when it did.
    pub fn txn(
        &mut self,
        compare: &Compare,
        operations: &[Op],
        deadline: Instant,
    ) -> Result<bool, StoreError> {
        let compare = match compare {
            Compare::Absent(key) => {
                json!({ "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0 })
            }
            Compare::Holds(key, value) => {
                json!({ "key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value) })
            }
        };
        let success: Vec<Value> = operations
            .iter()
            .map(|operation| match operation {
                Op::Put(key, value, lease) => {
                    json!({ "request_put": put_body(key, value, *lease) })
                }
                Op::Delete(key) => json!({ "request_delete_range": { "key": b64(key) } }),
            })
            .collect();
        let answer = self.call(
            "/v3/kv/txn",
            &json!({ "compare": [compare], "success": success }),
            deadline,
        )?;
        Ok(answer.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// POSTs `body` to `path` on the endpoint in use, moving to the next one
    /// when it does not answer, until one answers or `deadline` passes. A
    /// member that answers with an error is not asked again elsewhere: the
    /// store's answer is the same from every member.
    fn call(&mut self, path: &str, body: &Value, deadline: Instant) -> Result<Value, StoreError> {
        let body = body.to_string();
        let mut failures = Vec::new();
        let count = self.settings.endpoints.len();
        for attempt in 0..count {
            if attempt > 0 {
                self.current = (self.current + 1) % count;
            }
            if Instant::now() >= deadline {
                break;
            }
            match self.exchange(path, &body, deadline) {
                Ok(answer) => return answer,
                Err(err) => {
                    self.connection = None;
                    failures.push(format!("{}: {err}", self.endpoint()));
                }
            }
        }
        if failures.is_empty() {
            failures.push("deadline passed before any member was asked".into());
        }
        Err(StoreError::unreachable(format!(
            "etcd {path}: no member answered: {}",
            failures.join("; ")
        )))
    }

    /// One request and its answer on the held connection (made first if
    /// need be). The outer error: no answer (try another member); the inner
    /// one: the member's own refusal.
    fn exchange(
        &mut self,
        path: &str,
        body: &str,
        deadline: Instant,
    ) -> io::Result<Result<Value, StoreError>> {
        if self.connection.is_none() {
            self.connection = Some(self.connect(deadline)?);
        }
        let endpoint = self.endpoint().to_string();
        let connection = self.connection.as_mut().expect("connected above");
        let socket = connection.get_ref().get_ref();
        let left = remaining(deadline)?.min(self.settings.timeout);
        socket.set_read_timeout(Some(left))?;
        socket.set_write_timeout(Some(left))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        connection.get_mut().write_all(request.as_bytes())?;
        let response = read_response(connection)?;
        if response.close {
            self.connection = None;
        }
        let parsed: Value =
            serde_json::from_slice(first_message(&response.body)).map_err(|err| {
                io::Error::new(io::ErrorKind::InvalidData, format!("not JSON: {err}"))
            })?;
        if response.status == 200 {
            return Ok(Ok(parsed));
        }
        let message = parsed
            .get("message")
            .or_else(|| parsed.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string();
        // 503 with "no leader", "leader changed" or a timeout: the member is
        // there but cannot answer for the store; another member may.
        if response.status == 503 || message.contains("timed out") {
            return Err(io::Error::other(format!(
                "HTTP {}: {message}",
                response.status
            )));
        }
        Ok(Err(StoreError::refused(format!(
            "etcd {path}: {endpoint}: HTTP {}: {message}",
            response.status
        ))))
    }

    fn connect(&self, deadline: Instant) -> io::Result<BufReader<SslStream<TcpStream>>> {
        let endpoint = self.endpoint();
        let timeout = remaining(deadline)?.min(self.settings.timeout);
        let address = endpoint
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let socket = TcpStream::connect_timeout(&address, timeout)?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        let tls = |err: openssl::error::ErrorStack| io::Error::other(format!("TLS: {err}"));
        let mut ssl = Ssl::new(&self.context).map_err(tls)?;
        // The member's certificate must name the address reached (verify-full).
        let host = host_of(endpoint);
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match host.parse() {
            Ok(ip) => param.set_ip(ip).map_err(tls)?,
            Err(_) => {
                param.set_host(host).map_err(tls)?;
                ssl.set_hostname(host).map_err(tls)?;
            }
        }
        let stream = ssl.connect(socket).map_err(|err| match err {
            // Why the certificate did not verify, when that was it
            // ("IP address mismatch"): OpenSSL's error says only that it did not.
            HandshakeError::Failure(failed) => {
                let result = failed.ssl().verify_result();
                let reason = if result == X509VerifyResult::OK {
                    String::new()
                } else {
                    format!(": {result}")
                };
                io::Error::other(format!("TLS: {}{reason}", failed.error()))
            }
            other => io::Error::other(format!("TLS: {other}")),
        })?;
        Ok(BufReader::new(stream))
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    Ok(left)
}

struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

/// An HTTP/1.1 response: its status line, headers, and a body framed by
/// Content-Length or chunked (the gateway streams the lease keep-alive).
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let status_line = read_line(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("not an HTTP status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("a header line without ':'"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse().map_err(|_| invalid("Content-Length"))?)
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(reader)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
        close = true;
    }
    Ok(Response {
        status,
        close,
        body,
    })
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed mid-answer",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The first JSON message of a body: a stream's messages follow one another.
fn first_message(body: &[u8]) -> &[u8] {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    for (i, &byte) in body.iter().enumerate().skip(start) {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &body[start..=i];
                }
            }
            _ => {}
        }
    }
    &body[start..]
}

fn b64(text: &str) -> String {
    BASE64.encode(text.as_bytes())
}

fn b64_bytes(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn unb64(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .and_then(|text| BASE64.decode(text).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The gateway writes int64 as strings ("7587..."), and leaves zeros out.
fn int(value: &Value, field: &str) -> Option<i64> {
    match value.get(field)? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

fn put_body(key: &str, value: &str, lease: i64) -> Value {
    json!({ "key": b64(key), "value": b64(value), "lease": lease })
}

fn key_values(answer: &Value) -> Vec<KeyValue> {
    answer
        .get("kvs")
        .and_then(Value::as_array)
        .map(|kvs| {
            kvs.iter()
                .map(|kv| KeyValue {
                    key: unb64(kv.get("key")),
                    value: unb64(kv.get("value")),
                    create_revision: int(kv, "create_revision").unwrap_or(0),
                    mod_revision: int(kv, "mod_revision").unwrap_or(0),
                    lease: int(kv, "lease").unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The end of the range of every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented (etcd's own rule).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_its_last_byte_is_incremented() {
        assert_eq!(prefix_end("/postgres/"), b"/postgres0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn a_chunked_stream_gives_its_first_message() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f\r\n{\"result\":{\"TTL\":\"10\",\"x\":\"}\"}}\r\n1\r\n\n\r\n0\r\n\r\n";
        let response = read_response(&mut &raw[..]).unwrap();
        assert_eq!(response.status, 200);
        let message: Value = serde_json::from_slice(first_message(&response.body)).unwrap();
        assert_eq!(int(&message["result"], "TTL"), Some(10));
    }

    #[test]
    fn a_sized_body_is_read_to_its_length_and_the_connection_kept() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}next";
        let mut reader = &raw[..];
        let response = read_response(&mut reader).unwrap();
        assert_eq!((response.status, response.close), (503, false));
        assert_eq!(response.body, b"{}");
        assert_eq!(reader, b"next");
    }

    #[test]
    fn hosts_come_out_of_endpoints_with_or_without_brackets() {
        assert_eq!(host_of("10.0.0.1:2379"), "10.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("etcd.example:2379"), "etcd.example");
    }
}
