//! `/metrics`: the node's status, the endpoint's own counts and pg-monitor's
//! state, in the Prometheus text format 0.0.4. Names start with `pg_node_`
//! for the node, `pg_health_` for the endpoint, `pg_monitor_` for the
//! monitor. A value that is not known is left out, not made up.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pgcore::{Lsn, Report, Role};

use super::monitor::MonitorReading;

/// Upper bounds of the check-duration buckets, in seconds: from a query on
/// a held connection (under a millisecond) to a hung one (the timeout).
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How long the checks' queries took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket of [`BUCKETS`], not cumulative; longer ones only in `count`.
    in_bucket: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(at) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.in_bucket[at] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Requests answered, by path label and status code.
pub type Requests = BTreeMap<(&'static str, u16), u64>;

/// What the endpoint counts while it runs, shared by its threads.
#[derive(Default)]
pub struct Metrics {
    checks: Mutex<Histogram>,
    requests: Mutex<Requests>,
}

impl Metrics {
    pub fn observe_check(&self, took: Duration) {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(took);
    }

    /// Counts a request; `path` is a label of [`super::judge::PATHS`] or `other`.
    pub fn count_request(&self, path: &'static str, code: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((path, code))
            .or_default() += 1;
    }

    /// The page, with the node as `report` found it.
    pub fn page(&self, report: &Report, monitor: Option<&MonitorReading>) -> String {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        render(report, &checks, &requests, monitor)
    }
}

/// The page, from snapshots: pure, so its format has unit tests.
pub fn render(
    report: &Report,
    checks: &Histogram,
    requests: &Requests,
    monitor: Option<&MonitorReading>,
) -> String {
    let mut page = Page::default();
    node(&mut page, report);
    endpoint(&mut page, checks, requests);
    if let Some(reading) = monitor {
        monitor_state(&mut page, reading);
    }
    page.0
}

fn node(page: &mut Page, report: &Report) {
    let status = &report.status;
    page.gauge(
        "pg_node_up",
        "1 when the node answered the check's query.",
        Some(u8::from(report.error.is_none())),
    );
    page.family("pg_node_role", "gauge", "The node's role, one-hot.");
    for role in [
        Role::Primary,
        Role::Replica,
        Role::Starting,
        Role::Unreachable,
    ] {
        let role_name = role.to_string();
        page.sample(
            "pg_node_role",
            &[("role", &role_name)],
            u8::from(status.role == role),
        );
    }
    page.gauge(
        "pg_node_timeline",
        "The timeline of the WAL the node writes or receives.",
        status.timeline,
    );
    let positions = [
        ("current", status.current_wal_lsn),
        ("received", status.received_wal_lsn),
        ("replayed", status.replayed_wal_lsn),
    ];
    if positions.iter().any(|(_, lsn)| lsn.is_some()) {
        page.family(
            "pg_node_wal_lsn_bytes",
            "gauge",
            "WAL positions as bytes: current (primary), received and replayed (replica).",
        );
        for (position, lsn) in positions {
            if let Some(Lsn(bytes)) = lsn {
                page.sample("pg_node_wal_lsn_bytes", &[("position", position)], bytes);
            }
        }
    }
    page.gauge(
        "pg_node_replication_lag_bytes",
        "Replica: WAL its primary last reported not replayed yet. Primary: the most a streaming standby has to replay.",
        status.replication_lag_bytes,
    );
    page.gauge(
        "pg_node_replication_lag_seconds",
        "Replica: 0 once caught up, else seconds since the last replayed commit. Primary: the largest replay_lag of its streaming standbys.",
        status.replication_lag_seconds.map(Number),
    );
    page.gauge(
        "pg_node_streaming_replicas",
        "Primary: WAL senders streaming.",
        status.streaming_replicas,
    );
    page.gauge(
        "pg_node_synchronous_replicas",
        "Primary: streaming standbys whose commits are waited for.",
        status.synchronous_replicas,
    );
    page.gauge(
        "pg_node_wal_receiver_streaming",
        "Replica: 1 while its WAL receiver streams from a primary.",
        status.wal_receiver_streaming.map(u8::from),
    );
    page.gauge(
        "pg_node_read_only",
        "Primary: 1 while new transactions are read-only (refusing writes).",
        status.read_only.map(u8::from),
    );
}

fn endpoint(page: &mut Page, checks: &Histogram, requests: &Requests) {
    let name = "pg_node_check_duration_seconds";
    page.family(
        name,
        "histogram",
        "Time of each check's query, connecting included when it had to.",
    );
    let mut cumulative = 0;
    for (bound, in_bucket) in BUCKETS.iter().zip(checks.in_bucket) {
        cumulative += in_bucket;
        let le = Number(*bound).to_string();
        page.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    page.sample(&format!("{name}_bucket"), &[("le", "+Inf")], checks.count);
    page.sample(&format!("{name}_sum"), &[], Number(checks.sum));
    page.sample(&format!("{name}_count"), &[], checks.count);

    let name = "pg_health_requests_total";
    page.family(
        name,
        "counter",
        "Requests answered, by path and status code.",
    );
    for ((path, code), count) in requests {
        page.sample(name, &[("path", path), ("code", &code.to_string())], count);
    }
}

fn monitor_state(page: &mut Page, reading: &MonitorReading) {
    let valid = matches!(reading, MonitorReading::Valid { .. });
    page.gauge(
        "pg_monitor_state_valid",
        "1 when pg-monitor's state file could be read, 0 when it is too large or not a state.",
        Some(u8::from(valid)),
    );
    let MonitorReading::Valid { state, age } = reading else {
        return;
    };
    page.gauge(
        "pg_monitor_state_age_seconds",
        "Seconds since pg-monitor last wrote its state file.",
        Some(Number(age.as_secs_f64())),
    );
    page.family(
        "pg_monitor_decision",
        "gauge",
        "pg-monitor's last decision.",
    );
    page.sample("pg_monitor_decision", &[("decision", &state.decision)], 1);
    let counters = [
        (
            "pg_monitor_promotions_total",
            "Promotions of the local node by pg-monitor.",
            state.promotions,
        ),
        (
            "pg_monitor_fences_total",
            "Times pg-monitor fenced the local node.",
            state.fences,
        ),
        (
            "pg_monitor_write_refusals_total",
            "Times pg-monitor made the local primary refuse writes.",
            state.write_refusals,
        ),
        (
            "pg_monitor_step_downs_total",
            "Times pg-monitor stepped the local primary down.",
            state.step_downs,
        ),
    ];
    for (name, help, value) in counters {
        page.family(name, "counter", help);
        page.sample(name, &[], value);
    }
    page.gauge(
        "pg_monitor_paused",
        "1 while pg-monitor is paused.",
        Some(u8::from(state.paused)),
    );
}

/// A float as the exposition format writes one.
struct Number(f64);

impl Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 {
            value if value.is_nan() => f.write_str("NaN"),
            value if value == f64::INFINITY => f.write_str("+Inf"),
            value if value == f64::NEG_INFINITY => f.write_str("-Inf"),
            value => write!(f, "{value}"),
        }
    }
}

/// The page being written.
#[derive(Default)]
struct Page(String);

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(label, text)| format!("{label}=\"{}\"", escape(text)))
                .collect();
            let _ = write!(self.0, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A gauge of one sample, left out whole when its value is not known.
    fn gauge(&mut self, name: &str, help: &str, value: Option<impl Display>) {
        if let Some(value) = value {
            self.family(name, "gauge", help);
            self.sample(name, &[], value);
        }
    }
}

/// A label value as the exposition format quotes it.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use pgcore::{Failure, Status};

    use super::super::monitor::MonitorState;
    use super::*;

    fn replica() -> Report {
        Report {
            status: Status {
                role: Role::Replica,
                in_recovery: Some(true),
                timeline: Some(3),
                received_wal_lsn: Some(Lsn(0x3000148)),
                replayed_wal_lsn: Some(Lsn(0x3000060)),
                wal_receiver_streaming: Some(true),
                replication_lag_bytes: Some(232),
                replication_lag_seconds: Some(0.25),
                ..Status::default()
            },
            attempts: 1,
            latency: Duration::from_micros(800),
            error: None,
        }
    }

    fn unreachable() -> Report {
        Report {
            status: Status::default(),
            attempts: 1,
            latency: Duration::from_millis(2),
            error: Some(Failure::transient("refused")),
        }
    }

    fn state() -> MonitorReading {
        MonitorReading::Valid {
            state: MonitorState {
                decision: "wait".into(),
                paused: true,
                promotions: 1,
                write_refusals: 2,
                step_downs: 3,
                fences: 4,
            },
            age: Duration::from_millis(1500),
        }
    }

    /// Every line a comment or `name{labels} value`, every sample's family
    /// announced before it with HELP and TYPE.
    fn assert_well_formed(page: &str) {
        let mut typed = Vec::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{line}"
            );
            let family = typed.last().expect(line);
            assert!(
                name.starts_with(family.as_str()),
                "{line} after TYPE {family}"
            );
        }
    }

    #[test]
    fn a_replica_shows_its_role_positions_and_lag() {
        let mut checks = Histogram::default();
        checks.observe(Duration::from_millis(250));
        checks.observe(Duration::from_secs(7));
        let mut requests = Requests::new();
        requests.insert(("/replica", 200), 5);
        requests.insert(("other", 404), 1);
        let page = render(&replica(), &checks, &requests, None);
        assert_well_formed(&page);
        for line in [
            "pg_node_up 1",
            "pg_node_role{role=\"primary\"} 0",
            "pg_node_role{role=\"replica\"} 1",
            "pg_node_role{role=\"unreachable\"} 0",
            "pg_node_timeline 3",
            "pg_node_wal_lsn_bytes{position=\"received\"} 50331976",
            "pg_node_wal_lsn_bytes{position=\"replayed\"} 50331744",
            "pg_node_replication_lag_bytes 232",
            "pg_node_replication_lag_seconds 0.25",
            "pg_node_wal_receiver_streaming 1",
            "pg_node_check_duration_seconds_bucket{le=\"0.0005\"} 0",
            "pg_node_check_duration_seconds_bucket{le=\"0.1\"} 0",
            "pg_node_check_duration_seconds_bucket{le=\"0.25\"} 1",
            "pg_node_check_duration_seconds_bucket{le=\"5\"} 1",
            "pg_node_check_duration_seconds_bucket{le=\"+Inf\"} 2",
            "pg_node_check_duration_seconds_count 2",
            "pg_node_check_duration_seconds_sum 7.25",
            "pg_health_requests_total{path=\"/replica\",code=\"200\"} 5",
            "pg_health_requests_total{path=\"other\",code=\"404\"} 1",
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "{line} missing from:\n{page}"
            );
        }
        // Not known on a replica: left out, not zero.
        for absent in [
            "position=\"current\"",
            "pg_node_streaming_replicas",
            "pg_node_read_only",
            "pg_monitor_",
        ] {
            assert!(!page.contains(absent), "{absent} in:\n{page}");
        }
    }

    #[test]
    fn an_unreachable_node_is_down_with_only_its_role() {
        let page = render(
            &unreachable(),
            &Histogram::default(),
            &Requests::new(),
            None,
        );
        assert_well_formed(&page);
        assert!(page.contains("\npg_node_up 0\n"));
        assert!(page.contains("pg_node_role{role=\"unreachable\"} 1"));
        assert!(!page.contains("pg_node_timeline"));
        assert!(!page.contains("pg_node_wal_lsn_bytes"));
        assert!(page.contains("pg_node_check_duration_seconds_count 0"));
    }

    #[test]
    fn the_monitor_state_shows_its_decision_and_counters_or_that_it_is_invalid() {
        let page = render(
            &replica(),
            &Histogram::default(),
            &Requests::new(),
            Some(&state()),
        );
        assert_well_formed(&page);
        for line in [
            "pg_monitor_state_valid 1",
            "pg_monitor_state_age_seconds 1.5",
            "pg_monitor_decision{decision=\"wait\"} 1",
            "pg_monitor_promotions_total 1",
            "pg_monitor_write_refusals_total 2",
            "pg_monitor_step_downs_total 3",
            "pg_monitor_fences_total 4",
            "pg_monitor_paused 1",
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "{line} missing from:\n{page}"
            );
        }
        let page = render(
            &replica(),
            &Histogram::default(),
            &Requests::new(),
            Some(&MonitorReading::Invalid),
        );
        assert_well_formed(&page);
        assert!(page.contains("\npg_monitor_state_valid 0\n"));
        assert!(!page.contains("pg_monitor_decision"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("two\nlines"), "two\\nlines");
        let odd = MonitorReading::Valid {
            state: MonitorState {
                decision: "x\"}\n1 2".into(),
                ..match state() {
                    MonitorReading::Valid { state, .. } => state,
                    MonitorReading::Invalid => unreachable!(),
                }
            },
            age: Duration::ZERO,
        };
        let page = render(
            &replica(),
            &Histogram::default(),
            &Requests::new(),
            Some(&odd),
        );
        assert!(
            page.contains("pg_monitor_decision{decision=\"x\\\"}\\n1 2\"} 1"),
            "{page}"
        );
    }
}
