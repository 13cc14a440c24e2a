//! Which question a request asks and the status code a node's answer makes
//! for it: the paths, their parameters, and the rule of each. Pure, so that
//! every row of the contract has a unit test, as `check.rs`'s exit codes do.

use pgcore::{Detail, Role, Status};

use crate::check::{refuses_writes, streams};

/// What a request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A primary taking writes, not fenced.
    Primary,
    /// A replica meeting the terms.
    Replica(ReplicaTerms),
    /// A node serving reads: a primary, or a replica meeting the terms
    /// (as Patroni's `/read-only`).
    ReadOnly(ReplicaTerms),
    /// A primary or a replica: the server answers.
    Health,
    /// The Prometheus page.
    Metrics,
}

impl Route {
    /// The least the node must be asked to judge the route: each level is
    /// one query, and the checks haproxy makes several times a second stay
    /// on the cheap ones (the full one reads the replication views).
    pub fn detail(&self) -> Detail {
        match self {
            Route::Primary | Route::Health => Detail::Role,
            Route::Replica(terms) | Route::ReadOnly(terms) if terms.lag_below.is_some() => {
                Detail::Full
            }
            Route::Replica(terms) | Route::ReadOnly(terms) if terms.streaming => Detail::Streaming,
            Route::Replica(_) | Route::ReadOnly(_) => Detail::Role,
            Route::Metrics => Detail::Full,
        }
    }
}

/// What `/replica` and `/read-only` may also ask of a replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaTerms {
    /// `?streaming`: its WAL receiver streams.
    pub streaming: bool,
    /// `?lag=N`: its replication lag is known and below N bytes.
    pub lag_below: Option<u64>,
}

/// Why a request target is not answered with a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such path: 404.
    NotFound,
    /// A parameter that is unknown, repeated or malformed: 400, with why.
    BadParameter(String),
}

/// The paths served, as the `path` label of `pg_health_requests_total`
/// names them; anything else is counted as `other`, so labels stay few.
pub const PATHS: [&str; 5] = ["/primary", "/replica", "/read-only", "/health", "/metrics"];

/// The path label for a request target: one of [`PATHS`], else `other`.
pub fn path_label(target: &str) -> &'static str {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    PATHS
        .iter()
        .find(|&&known| known == path)
        .copied()
        .unwrap_or("other")
}

/// The route a request target (`/replica?lag=16MB`) names.
pub fn route(target: &str) -> Result<Route, Refusal> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    let without_parameters = |route: Route| match query.is_empty() {
        true => Ok(route),
        false => Err(Refusal::BadParameter(format!("{path} takes no parameters"))),
    };
    match path {
        "/primary" => without_parameters(Route::Primary),
        "/replica" => Ok(Route::Replica(replica_terms(query)?)),
        "/read-only" => Ok(Route::ReadOnly(replica_terms(query)?)),
        "/health" => without_parameters(Route::Health),
        "/metrics" => without_parameters(Route::Metrics),
        _ => Err(Refusal::NotFound),
    }
}

/// `streaming` and `lag=N`, each at most once, separated by `&`.
fn replica_terms(query: &str) -> Result<ReplicaTerms, Refusal> {
    let bad = |reason: String| Err(Refusal::BadParameter(reason));
    let mut terms = ReplicaTerms::default();
    for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
        match parameter.split_once('=') {
            None if parameter == "streaming" && !terms.streaming => terms.streaming = true,
            Some(("lag", value)) if terms.lag_below.is_none() => {
                terms.lag_below = Some(parse_lag(value).map_err(Refusal::BadParameter)?)
            }
            None if parameter == "streaming" => return bad("streaming given twice".into()),
            Some(("lag", _)) => return bad("lag given twice".into()),
            Some(("streaming", _)) => return bad("streaming takes no value".into()),
            None if parameter == "lag" => return bad("lag needs a value, e.g. lag=16MB".into()),
            _ => {
                return bad(format!(
                    "unknown parameter '{}' (known: streaming, lag)",
                    shown(parameter)
                ))
            }
        }
    }
    Ok(terms)
}

/// A lag bound as PostgreSQL writes memory sizes: bytes, or a number with
/// `kB`, `MB`, `GB` or `TB` (1024-based), as Patroni's `/replica?lag=` takes.
pub fn parse_lag(text: &str) -> Result<u64, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let not_a_size = || {
        format!(
            "lag '{}' is not a size: bytes, or with kB, MB, GB or TB, e.g. lag=16MB",
            shown(text)
        )
    };
    let scale: u64 = match unit {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return Err(not_a_size()),
    };
    let number: u64 = number.parse().map_err(|_| not_a_size())?;
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("lag '{}' is too large", shown(text)))
}

/// At most 40 characters of what a client sent, for a one-line reason.
fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// 200 when the node's answer meets the route, else 503. `fenced`: the
/// fence record exists, or (with a leader lease) the lease is not valid.
pub fn status_code(route: &Route, status: &Status, fenced: bool) -> u16 {
    if holds(route, status, fenced) {
        200
    } else {
        503
    }
}

fn holds(route: &Route, status: &Status, fenced: bool) -> bool {
    match route {
        Route::Primary => status.role == Role::Primary && !refuses_writes(status) && !fenced,
        Route::Replica(terms) => replica_meets(terms, status),
        Route::ReadOnly(terms) => status.role == Role::Primary || replica_meets(terms, status),
        Route::Health => matches!(status.role, Role::Primary | Role::Replica),
        Route::Metrics => true,
    }
}

fn replica_meets(terms: &ReplicaTerms, status: &Status) -> bool {
    let lag_below = |bound: u64| {
        status
            .replication_lag_bytes
            .and_then(|lag| u64::try_from(lag).ok())
            .is_some_and(|lag| lag < bound)
    };
    status.role == Role::Replica
        && (!terms.streaming || streams(status))
        && terms.lag_below.is_none_or(lag_below)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(read_only: bool) -> Status {
        Status {
            role: Role::Primary,
            read_only: Some(read_only),
            replication_lag_bytes: Some(0),
            ..Status::default()
        }
    }

    fn replica(streaming: bool, lag: Option<i64>) -> Status {
        Status {
            role: Role::Replica,
            wal_receiver_streaming: Some(streaming),
            replication_lag_bytes: lag,
            ..Status::default()
        }
    }

    fn role(role: Role) -> Status {
        Status {
            role,
            ..Status::default()
        }
    }

    fn terms(streaming: bool, lag_below: Option<u64>) -> ReplicaTerms {
        ReplicaTerms {
            streaming,
            lag_below,
        }
    }

    /// The contract, a row per case: route, answer, fenced, status code.
    #[test]
    fn each_path_answers_200_exactly_for_the_nodes_it_names() {
        let any = terms(false, None);
        let streaming = terms(true, None);
        let lag_1k = terms(false, Some(1024));
        let rows: [(Route, Status, bool, u16); 33] = [
            (Route::Primary, primary(false), false, 200),
            (Route::Primary, primary(true), false, 503),
            (Route::Primary, primary(false), true, 503),
            (Route::Primary, replica(true, Some(0)), false, 503),
            (Route::Primary, role(Role::Starting), false, 503),
            (Route::Primary, role(Role::Unreachable), false, 503),
            (
                Route::Replica(any.clone()),
                replica(false, None),
                false,
                200,
            ),
            (Route::Replica(any.clone()), primary(false), false, 503),
            (
                Route::Replica(any.clone()),
                role(Role::Starting),
                false,
                503,
            ),
            (
                Route::Replica(any.clone()),
                role(Role::Unreachable),
                false,
                503,
            ),
            // The fence record is the primary's business only.
            (Route::Replica(any.clone()), replica(true, None), true, 200),
            (
                Route::Replica(streaming.clone()),
                replica(true, None),
                false,
                200,
            ),
            (
                Route::Replica(streaming.clone()),
                replica(false, None),
                false,
                503,
            ),
            (
                Route::Replica(lag_1k.clone()),
                replica(false, Some(1023)),
                false,
                200,
            ),
            (
                Route::Replica(lag_1k.clone()),
                replica(false, Some(1024)),
                false,
                503,
            ),
            // A lag not known is not a lag below anything.
            (
                Route::Replica(lag_1k.clone()),
                replica(true, None),
                false,
                503,
            ),
            (
                Route::Replica(terms(false, Some(0))),
                replica(true, Some(0)),
                false,
                503,
            ),
            (Route::Replica(lag_1k.clone()), primary(false), false, 503),
            (
                Route::Replica(terms(true, Some(1024))),
                replica(false, Some(0)),
                false,
                503,
            ),
            (
                Route::Replica(terms(true, Some(1024))),
                replica(true, Some(0)),
                false,
                200,
            ),
            // /read-only: a primary serves reads, refusing writes or fenced.
            (Route::ReadOnly(any.clone()), primary(false), false, 200),
            (Route::ReadOnly(any.clone()), primary(true), true, 200),
            (
                Route::ReadOnly(streaming.clone()),
                primary(false),
                false,
                200,
            ),
            (
                Route::ReadOnly(any.clone()),
                replica(false, None),
                false,
                200,
            ),
            (
                Route::ReadOnly(streaming.clone()),
                replica(false, None),
                false,
                503,
            ),
            (
                Route::ReadOnly(lag_1k.clone()),
                replica(true, Some(4096)),
                false,
                503,
            ),
            (
                Route::ReadOnly(any.clone()),
                role(Role::Starting),
                false,
                503,
            ),
            (Route::Health, primary(true), true, 200),
            (Route::Health, replica(false, None), false, 200),
            (Route::Health, role(Role::Starting), false, 503),
            (Route::Health, role(Role::Unreachable), false, 503),
            (Route::Metrics, role(Role::Unreachable), false, 200),
            (Route::Metrics, primary(false), false, 200),
        ];
        for (i, (route, status, fenced, code)) in rows.iter().enumerate() {
            assert_eq!(
                status_code(route, status, *fenced),
                *code,
                "row {i}: {route:?} given {status:?}, fenced {fenced}"
            );
        }
    }

    #[test]
    fn targets_name_routes_and_their_terms() {
        assert_eq!(route("/primary"), Ok(Route::Primary));
        assert_eq!(route("/primary?"), Ok(Route::Primary));
        assert_eq!(route("/health"), Ok(Route::Health));
        assert_eq!(route("/metrics"), Ok(Route::Metrics));
        assert_eq!(route("/replica"), Ok(Route::Replica(terms(false, None))));
        assert_eq!(
            route("/replica?streaming&lag=16MB"),
            Ok(Route::Replica(terms(true, Some(16 << 20))))
        );
        assert_eq!(
            route("/read-only?lag=100&streaming"),
            Ok(Route::ReadOnly(terms(true, Some(100))))
        );
        assert_eq!(
            route("/replica?&streaming&"),
            Ok(Route::Replica(terms(true, None)))
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for target in [
            "/",
            "*",
            "/primary/",
            "/Primary",
            "/replica/x",
            "http://h/primary",
            "",
        ] {
            assert_eq!(route(target), Err(Refusal::NotFound), "{target}");
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        let reason = |target: &str| match route(target) {
            Err(Refusal::BadParameter(reason)) => reason,
            other => panic!("{target}: {other:?}"),
        };
        assert_eq!(reason("/primary?streaming"), "/primary takes no parameters");
        assert_eq!(reason("/health?x=1"), "/health takes no parameters");
        assert_eq!(
            reason("/replica?lagg=1"),
            "unknown parameter 'lagg=1' (known: streaming, lag)"
        );
        assert_eq!(reason("/replica?lag"), "lag needs a value, e.g. lag=16MB");
        assert_eq!(reason("/replica?lag=1&lag=2"), "lag given twice");
        assert_eq!(
            reason("/replica?streaming&streaming"),
            "streaming given twice"
        );
        assert_eq!(reason("/replica?streaming=1"), "streaming takes no value");
        assert!(reason("/replica?lag=16mb").contains("is not a size"));
        let long = format!("/replica?{}", "x".repeat(5000));
        assert!(reason(&long).len() < 100, "a reason stays one short line");
    }

    #[test]
    fn lag_bounds_read_as_postgresql_sizes() {
        assert_eq!(parse_lag("0"), Ok(0));
        assert_eq!(parse_lag("1000"), Ok(1000));
        assert_eq!(parse_lag("1000B"), Ok(1000));
        assert_eq!(parse_lag("1kB"), Ok(1024));
        assert_eq!(parse_lag("16MB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_lag("2GB"), Ok(2 << 30));
        assert_eq!(parse_lag("1TB"), Ok(1 << 40));
        for bad in [
            "", "MB", "-1", "1.5MB", "16 MB", "16mb", "16KB", "16MiB", "0x10", "1e3",
        ] {
            assert!(parse_lag(bad).unwrap_err().contains("not a size"), "{bad}");
        }
        assert!(parse_lag("99999999999999999999").is_err());
        assert!(parse_lag("17179869184GB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn path_labels_stay_within_the_known_set() {
        assert_eq!(path_label("/replica?lag=1"), "/replica");
        assert_eq!(path_label("/read-only"), "/read-only");
        assert_eq!(path_label("/metrics"), "/metrics");
        assert_eq!(path_label("/etc/passwd"), "other");
        assert_eq!(path_label("*"), "other");
    }
}
