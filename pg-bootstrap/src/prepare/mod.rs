//! `pg-bootstrap prepare`: decide how this node boots and make its data
//! directory ready, before postgres starts.
//!
//! The steps read top to bottom: check the input, repair what a crash left
//! beside the data directory, observe the data directory, ask the peers what
//! the decision needs, [`decide`](decide::decide), announce the decision, act.

pub mod datadir;
pub mod decide;
pub mod effects;
pub mod leftovers;
pub mod peers;
pub mod sync;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgcore::os::{user, User};
use pgcore::target::parse_port;
use pgcore::{logln, Client, ConnectOptions, Endpoint, TlsSettings};
use serde::Serialize;

use self::datadir::{Paths, Repair};
use self::decide::{Action, Decision, Local, Peers, Policy};
use self::effects::{Effects, Method};
use self::peers::Asker;
use crate::cancel::Cancel;
use crate::programs::{Limits, Programs};
use crate::stop::{usage, Stop};

/// Everything `prepare` is told, as given on the command line.
#[derive(Clone, Debug)]
pub struct PrepareConfig {
    pub data_dir: PathBuf,
    pub pg_bin: PathBuf,
    pub run_as: Option<String>,
    pub index: Option<u32>,
    pub bootstrap: bool,
    /// `HOST:PORT`, or `HOST` (then `port` applies).
    pub peers: Vec<String>,
    pub port: u16,
    pub replication: bool,
    /// Failover through a consensus store: see [`Policy::consensus`].
    pub consensus: bool,
    pub grace: Duration,
    pub clone_wait: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub replication_user: String,
    pub replication_password_file: Option<PathBuf>,
    pub passfile: Option<PathBuf>,
    pub initdb_locale: String,
    pub clone_max_rate: Option<String>,
    pub stall_timeout: Duration,
    pub dry_run: bool,
}

/// What prepare decided and did, for `--json` and for callers.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub decision: &'static str,
    pub peer: Option<String>,
    pub reason: String,
    pub data_dir: PathBuf,
    pub index: Option<u32>,
    pub bootstrap: bool,
    pub replication: bool,
    pub dry_run: bool,
    /// The data directory as found (after crash repairs).
    pub observed: Local,
    /// How the data directory was made ready; absent on a dry run or a failure.
    pub method: Option<Method>,
    /// Seconds from start to finish.
    pub seconds: f64,
    pub error: Option<String>,
}

/// The outcome of a run: the report (once a decision was made) and whether it succeeded.
pub struct Outcome {
    pub report: Option<Report>,
    pub result: Result<(), Stop>,
}

/// Runs prepare. `announce` is called with the decision as soon as it is
/// made, before anything is changed, so the operator sees it during a long clone.
pub fn run(
    config: &PrepareConfig,
    cancel: &Cancel,
    announce: &mut dyn FnMut(&Decision),
) -> Outcome {
    let started = Instant::now();
    let undecided = |stop| Outcome {
        report: None,
        result: Err(stop),
    };
    let setup = match Setup::new(config) {
        Ok(setup) => setup,
        Err(stop) => return undecided(stop),
    };
    // A dry run changes nothing, so it takes no lock: not even a lock file
    // is created.
    let lock = if config.dry_run {
        None
    } else {
        match setup.lock() {
            Ok(lock) => Some(lock),
            Err(stop) => return undecided(stop),
        }
    };
    let (local, decision) = match setup.decide(cancel) {
        Ok(found) => found,
        Err(stop) => {
            release_unchanged(lock);
            return undecided(stop);
        }
    };
    announce(&decision);
    let mut report = Report {
        decision: decision.action.name(),
        peer: decision.action.peer().map(ToString::to_string),
        reason: decision.reason.clone(),
        data_dir: setup.paths.data_dir.clone(),
        index: config.index,
        bootstrap: config.bootstrap,
        replication: config.replication,
        dry_run: config.dry_run,
        observed: local.clone(),
        method: None,
        seconds: 0.0,
        error: None,
    };
    let result = if decision.action == Action::Refuse {
        release_unchanged(lock);
        Err(Stop::Refused(format!(
            "refused: {}; nothing was changed",
            decision.reason
        )))
    } else if config.dry_run {
        Ok(())
    } else {
        let result = setup.act(&decision, &local, cancel).map(|method| {
            report.method = Some(method);
        });
        drop(lock);
        result
    };
    report.seconds = started.elapsed().as_secs_f64();
    if let Err(stop) = &result {
        report.error = Some(stop.to_string());
    }
    Outcome {
        report: Some(report),
        result,
    }
}

/// Releases the lock of a run that stopped before acting, removing the lock
/// file (and directories) it created, so that "nothing was changed" holds.
fn release_unchanged(lock: Option<datadir::Lock>) {
    if let Some(lock) = lock {
        lock.release_unchanged();
    }
}

/// The checked input: resolved paths, user, peers and password.
struct Setup<'a> {
    config: &'a PrepareConfig,
    paths: Paths,
    owner: Option<User>,
    peers: Vec<ConnectOptions>,
    password: Option<String>,
    passfile: Option<PathBuf>,
    /// From the libpq variables: the checks use it, and so do the clone, the
    /// rewind and the WAL receiver (their connection strings carry it).
    tls: TlsSettings,
    programs: Programs,
    policy: Policy,
}

impl<'a> Setup<'a> {
    /// Checks every input before anything is read from the peers or written
    /// to disk; each problem is a one-line usage error.
    fn new(config: &'a PrepareConfig) -> Result<Setup<'a>, Stop> {
        let data_dir = absolute(&config.data_dir, "--data-dir")?;
        if data_dir.parent().is_none() || data_dir.file_name().is_none() {
            return Err(usage(format!(
                "--data-dir {} must name a directory below /",
                data_dir.display()
            )));
        }
        check_directory_path(&data_dir)?;
        if !config.peers.is_empty() && !config.replication {
            return Err(usage(format!(
                "--peer {} given without --replication: peers are only asked when replication is on",
                config.peers.join(",")
            )));
        }
        if config.replication && !config.bootstrap && config.peers.is_empty() {
            return Err(usage(
                "--replication on a node that is not the bootstrap node needs --peer: it clones from or rejoins a peer",
            ));
        }
        let endpoints = config
            .peers
            .iter()
            .map(|text| parse_peer(text, config.port))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Stop::Usage)?;
        for program in ["initdb", "pg_basebackup", "pg_rewind", "postgres"] {
            if !config.pg_bin.join(program).is_file() {
                return Err(usage(format!(
                    "--pg-bin {}: no {program} there (expected the PostgreSQL server binaries)",
                    config.pg_bin.display()
                )));
            }
        }
        let owner = run_as(config.run_as.as_deref())?;
        let password = match (&config.replication_password_file, config.replication) {
            (Some(file), true) => Some(read_password(file)?),
            (None, true) => {
                return Err(usage(
                    "--replication needs --replication-password-file: the replication user's password is read from a file, never a flag",
                ))
            }
            (_, false) => None,
        };
        let passfile = if config.replication {
            let path = match &config.passfile {
                Some(path) => absolute(path, "--passfile")?,
                None => data_dir.with_file_name("pgpass"),
            };
            if path.starts_with(&data_dir) {
                return Err(usage(format!(
                    "--passfile {} is inside the data directory, where a clone or rewind would replace it; put it beside",
                    path.display()
                )));
            }
            Some(path)
        } else {
            None
        };
        let tls = TlsSettings::from_env().map_err(usage)?;
        if let Some(problem) = tls.problem() {
            return Err(usage(problem));
        }
        let mut peers = Vec::new();
        for endpoint in endpoints {
            let mut options = ConnectOptions::new(
                endpoint,
                Some(config.replication_user.clone()),
                Some("postgres".into()),
                config.connect_timeout,
            )
            .with_application_name("pg-bootstrap")
            .with_tls(tls.clone());
            options.set_password(password.clone());
            peers.push(options);
        }
        let programs = Programs {
            bin: config.pg_bin.clone(),
            user: owner.clone(),
            passfile: passfile.clone(),
        };
        Ok(Setup {
            config,
            paths: Paths::new(&data_dir),
            owner,
            peers,
            password,
            passfile,
            tls,
            programs,
            policy: Policy {
                replication: config.replication,
                bootstrap: config.bootstrap,
                grace: config.grace,
                clone_wait: config.clone_wait,
                consensus: config.consensus,
            },
        })
    }

    fn lock(&self) -> Result<datadir::Lock, Stop> {
        match datadir::lock(&self.paths, self.owner.as_ref()) {
            Ok(Some(file)) => Ok(file),
            Ok(None) => Err(Stop::Refused(format!(
                "another pg-bootstrap prepare is working on {} (it holds {}); nothing was changed",
                self.paths.data_dir.display(),
                self.paths.lock.display()
            ))),
            Err(err) => Err(Stop::Failed(anyhow::anyhow!(
                "cannot lock {}: {err} (nothing was changed)",
                self.paths.lock.display()
            ))),
        }
    }

    /// Repairs, observes, asks the peers and decides.
    fn decide(&self, cancel: &Cancel) -> Result<(Local, Decision), Stop> {
        let repairs = datadir::pending_repairs(&self.paths);
        let observed_dir = if self.config.dry_run {
            for repair in &repairs {
                logln!("dry run: would {}", repair.describe(&self.paths));
            }
            if repairs.contains(&Repair::RestorePrevious) {
                self.paths.previous.clone()
            } else {
                self.paths.data_dir.clone()
            }
        } else {
            datadir::apply_repairs(&self.paths, &repairs).map_err(|err| {
                Stop::Failed(anyhow::anyhow!(
                    "cannot repair what an interrupted run left beside {}: {err}",
                    self.paths.data_dir.display()
                ))
            })?;
            self.paths.data_dir.clone()
        };
        let local = datadir::observe(&observed_dir, &self.paths.rewind_marker);
        logln!(
            "data directory {}: {}",
            self.paths.data_dir.display(),
            describe(&local)
        );
        if matches!(
            local,
            Local::Primary { .. } | Local::Replica { .. } | Local::Incomplete { .. }
        ) {
            leftovers::clear(&observed_dir, self.config.dry_run, cancel);
        }
        let inquiry = decide::inquiry(&local, &self.policy);
        let peers = match inquiry {
            decide::Inquiry::None => Peers::NotAsked,
            _ => {
                let client = client()?;
                let purpose = match inquiry {
                    decide::Inquiry::WaitForPrimary => "to clone from",
                    _ => "to rejoin",
                };
                self.asker(&client, cancel)
                    .look_for_primary(inquiry.bound(&self.policy), purpose)?
            }
        };
        let decision = decide::decide(&local, &peers, &self.policy);
        let decision = match (&local, &decision.action) {
            (Local::Primary { .. } | Local::Replica { .. }, Action::Rejoin(peer)) => {
                self.follow_or_rejoin(decision.clone(), &observed_dir, peer, cancel)?
            }
            _ => decision,
        };
        Ok((local, decision))
    }

    /// Reads what [`decide::follow_or_rejoin`] weighs: this data directory's
    /// pg_control and the peer's timeline history.
    fn follow_or_rejoin(
        &self,
        rejoin: Decision,
        dir: &Path,
        peer: &Endpoint,
        cancel: &Cancel,
    ) -> Result<Decision, Stop> {
        let control = pgcore::control::read(dir).map_err(|err| err.to_string());
        let client = client()?;
        let history = self
            .asker(&client, cancel)
            .timeline_history(&self.options_for(peer))
            .map_err(|failure| failure.cause);
        Ok(decide::follow_or_rejoin(rejoin, &control, &history))
    }

    fn asker<'p>(&'p self, client: &'p Client, cancel: &'p Cancel) -> Asker<'p> {
        Asker {
            client,
            peers: &self.peers,
            retries: self.config.retries,
            cancel,
        }
    }

    /// Carries out `decision`.
    fn act(&self, decision: &Decision, local: &Local, cancel: &Cancel) -> Result<Method, Stop> {
        if let (Some(passfile), Some(password)) = (&self.passfile, &self.password) {
            datadir::ensure_parent(passfile, self.owner.as_ref())
                .and_then(|()| {
                    datadir::write_passfile(passfile, &self.config.replication_user, password, self.owner.as_ref())
                })
                .map_err(|err| {
                    Stop::Failed(anyhow::anyhow!(
                        "cannot write the password file {}: {err} (the data directory was not touched)",
                        passfile.display()
                    ))
                })?;
        }
        let effects = Effects {
            paths: &self.paths,
            programs: &self.programs,
            owner: self.owner.as_ref(),
            cancel,
            limits: Limits {
                stall: self.config.stall_timeout,
            },
            locale: &self.config.initdb_locale,
            max_rate: self.config.clone_max_rate.as_deref(),
            replication_user: &self.config.replication_user,
            passfile: self.passfile.as_deref(),
            tls: &self.tls,
            connect_timeout: self.config.connect_timeout,
            checkpoint_wait: self.config.grace,
        };
        let method = match &decision.action {
            Action::InitPrimary => effects.init_primary()?,
            Action::CloneFrom(peer) => effects.clone_from(peer)?,
            Action::Rejoin(peer) => {
                let client = client()?;
                let asker = self.asker(&client, cancel);
                let options = self.options_for(peer);
                let was_primary = matches!(local, Local::Primary { .. });
                effects.rejoin(peer, &options, &asker, was_primary)?
            }
            Action::Follow(peer) => effects.follow(peer)?,
            Action::StandBy => effects.stand_by()?,
            Action::ResumePrimary | Action::ResumeReplica | Action::StartStandalone => Method::None,
            Action::Refuse => unreachable!("a refusal is not acted on"),
        };
        Ok(method)
    }

    fn options_for(&self, peer: &Endpoint) -> ConnectOptions {
        self.peers
            .iter()
            .find(|options| &options.endpoint == peer)
            .cloned()
            .expect("a decision names one of the peers")
    }
}

fn client() -> Result<Client, Stop> {
    Client::new()
        .map_err(|err| Stop::Failed(anyhow::anyhow!("cannot start the probe runtime: {err}")))
}

fn describe(local: &Local) -> String {
    match local {
        Local::Absent => "absent or empty".into(),
        Local::Primary { system_identifier } => {
            format!("last ran as a primary (system identifier {system_identifier})")
        }
        Local::Replica { system_identifier } => {
            format!("last ran as a replica (system identifier {system_identifier})")
        }
        Local::Incomplete { .. } => "left incomplete by an interrupted pg_rewind".into(),

        Local::Running { pid } => format!("in use by a running postgres (pid {pid})"),
        Local::Foreign { why } => why.clone(),
    }
}

fn absolute(path: &Path, flag: &str) -> Result<PathBuf, Stop> {
    if path.as_os_str().is_empty() {
        return Err(usage(format!("{flag} is empty")));
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|err| {
            usage(format!(
                "{flag} {}: cannot resolve a relative path: {err}",
                path.display()
            ))
        })
}

/// The data directory, if it exists, must be a directory, and so must the
/// nearest of its ancestors that exists: anything else is a wrong path to be
/// fixed by whoever wrote it, not a state for the decision table.
fn check_directory_path(data_dir: &Path) -> Result<(), Stop> {
    let Some((existing, meta)) = data_dir
        .ancestors()
        .find_map(|path| std::fs::metadata(path).ok().map(|meta| (path, meta)))
    else {
        return Ok(());
    };
    if meta.is_dir() {
        return Ok(());
    }
    let kind = if meta.is_file() {
        "a regular file"
    } else {
        "a device, socket or pipe"
    };
    Err(usage(if existing == data_dir {
        format!(
            "--data-dir {} is {kind}, not a directory",
            data_dir.display()
        )
    } else {
        format!(
            "--data-dir {}: {} is {kind}, not a directory",
            data_dir.display(),
            existing.display()
        )
    }))
}

/// `HOST:PORT`, `[IPV6]:PORT`, or `HOST`, `IPV6`, `[IPV6]` on `default_port`
/// (every node listens on the same port). Anything else is refused here: a
/// peer that cannot exist would only be waited for until --grace or
/// --clone-wait ran out.
pub fn parse_peer(text: &str, default_port: u16) -> Result<Endpoint, String> {
    let text = text.trim();
    let bad = |why: &str| format!("--peer '{text}' is not HOST or HOST:PORT: {why}");
    let (host, port) = split_peer(text).map_err(bad)?;
    let port = match port {
        Some(port) => parse_port(port).map_err(|err| bad(&err))?,
        None => default_port,
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// A peer's host and, if it names one, its port; the error says what is wrong.
fn split_peer(text: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or("'[' without ']'")?;
        if !is_ipv6(address) {
            return Err("only an IPv6 address goes in brackets");
        }
        return match after {
            "" => Ok((address, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (address, Some(port)))
                .ok_or("expected :PORT after ']'"),
        };
    }
    if text.matches(':').count() > 1 {
        // Several colons and no brackets: a bare IPv6 address, naming no port.
        if !is_ipv6(text) {
            return Err("a host has no colon; write an IPv6 address with a port as [ADDRESS]:PORT");
        }
        return Ok((text, None));
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("a host is a name or an address (letters, digits, '.', '-', '_')");
    }
    Ok((host, port))
}

/// An IPv6 address, with or without a zone (`fe80::1%eth0`).
fn is_ipv6(text: &str) -> bool {
    let address = text.split_once('%').map_or(text, |(address, _)| address);
    address.parse::<std::net::Ipv6Addr>().is_ok()
}

fn run_as(name: Option<&str>) -> Result<Option<User>, Stop> {
    let root = user::running_as_root();
    match name {
        None if root => Err(usage(
            "running as root needs --run-as USER: PostgreSQL refuses to run as root",
        )),
        None => Ok(None),
        Some(name) => {
            let user = User::lookup(name).map_err(|err| usage(format!("--run-as: {err}")))?;
            if user.uid == 0 {
                Err(usage(format!(
                    "--run-as {name}: PostgreSQL refuses to run as root"
                )))
            } else if root {
                Ok(Some(user))
            } else if user.uid == user::effective_uid() {
                // Already this user: nothing to switch.
                Ok(None)
            } else {
                Err(usage(format!(
                    "--run-as {name}: only root can run programs as another user"
                )))
            }
        }
    }
}

/// The replication password (see [`pgcore::input::read_password`]).
fn read_password(file: &Path) -> Result<String, Stop> {
    pgcore::input::read_password(file).map_err(|why| {
        usage(format!(
            "--replication-password-file {}: {why}",
            file.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_take_the_default_port_when_they_name_none() {
        assert_eq!(
            parse_peer("10.0.0.2", 6432).unwrap().to_string(),
            "10.0.0.2:6432"
        );
        assert_eq!(
            parse_peer("10.0.0.2:7000", 6432).unwrap().to_string(),
            "10.0.0.2:7000"
        );
        assert_eq!(
            parse_peer("db-1.example", 5432).unwrap().to_string(),
            "db-1.example:5432"
        );
        assert_eq!(
            parse_peer("[::1]:7000", 6432).unwrap().to_string(),
            "[::1]:7000"
        );
        assert_eq!(
            parse_peer("fe80::1", 6432).unwrap().to_string(),
            "[fe80::1]:6432"
        );
    }

    #[test]
    fn malformed_peers_are_named_in_the_error() {
        for bad in [
            "",
            "10.0.0.2:",
            "10.0.0.2:99999",
            "a b",
            "a b:5432",
            ":5432",
            "a:b:c",
            "a:b:5432",
            "[db-1]:5432",
            "[::1",
            "[::1]5432",
            "/tmp:5432",
        ] {
            let error = parse_peer(bad, 6432).unwrap_err();
            assert!(
                error.contains(&format!("--peer '{bad}'")),
                "{bad:?}: {error}"
            );
        }
        assert!(parse_peer("a:b:c", 6432)
            .unwrap_err()
            .contains("[ADDRESS]:PORT"));
    }

    #[test]
    fn ipv6_peers_take_brackets_for_a_port() {
        assert_eq!(
            parse_peer("[fe80::1%eth0]:7000", 6432).unwrap().to_string(),
            "[fe80::1%eth0]:7000"
        );
        assert_eq!(parse_peer("[::1]", 6432).unwrap().to_string(), "[::1]:6432");
    }

    #[test]
    fn a_data_directory_path_through_a_file_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        std::fs::write(&file, "").unwrap();
        for (path, expected) in [
            (
                file.clone(),
                format!(
                    "--data-dir {} is a regular file, not a directory",
                    file.display()
                ),
            ),
            (
                file.join("sub"),
                format!("{} is a regular file", file.display()),
            ),
            (
                Path::new("/dev/null").to_path_buf(),
                "is a device, socket or pipe".to_string(),
            ),
        ] {
            let stop = check_directory_path(&path).unwrap_err();
            assert_eq!(stop.exit_code(), crate::stop::EXIT_USAGE);
            assert!(stop.to_string().contains(&expected), "{stop}");
        }
        assert!(check_directory_path(&dir.path().join("absent/db")).is_ok());
        assert!(check_directory_path(dir.path()).is_ok());
    }
}
