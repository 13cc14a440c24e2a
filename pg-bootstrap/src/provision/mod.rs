//! `pg-bootstrap provision`: users, databases, extensions and the replication
//! role on the primary, after postgres started.
//!
//! Read the spec (every mistake found before connecting), connect (waiting,
//! bounded, while the server starts), skip a replica, read the catalog, plan
//! the differences ([`plan`]), apply them one statement at a time. Every
//! statement goes through `pgcore`'s bounded session, so a hung server
//! cannot hang the node's start.

pub mod plan;
pub mod scram;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use pgcore::{logln, retry, Client, ConnectOptions, Endpoint, Failure, RetryPolicy, Session};
use serde::Serialize;

use self::plan::{replication_functions, Catalog, Change, DatabaseState, InDatabase, RoleState};
use self::spec::Spec;
use crate::stop::Stop;

/// Everything `provision` is told, as given on the command line.
#[derive(Clone, Debug)]
pub struct ProvisionConfig {
    pub spec: PathBuf,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub dbname: String,
    pub connect_timeout: Duration,
    pub passfile: Option<PathBuf>,
    /// How long to wait for the server to accept connections.
    pub wait: Duration,
    pub dry_run: bool,
}

/// What provisioning did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub server: String,
    /// The server is a replica: nothing to provision there.
    pub skipped: bool,
    pub dry_run: bool,
    /// Each change, described without secrets.
    pub changes: Vec<String>,
}

impl Summary {
    /// The line printed on stdout.
    pub fn line(&self) -> String {
        let count = self.changes.len();
        let changes = if count == 1 {
            "1 change".to_string()
        } else {
            format!("{count} changes")
        };
        match (self.skipped, self.dry_run, count) {
            (true, _, _) => format!(
                "provision: skipped: {} is a replica (in recovery)",
                self.server
            ),
            (false, _, 0) => "provision: nothing to change".to_string(),
            (false, true, _) => format!("provision: would make {changes}"),
            (false, false, _) => format!("provision: made {changes}"),
        }
    }
}

/// Loads the spec; a usage error when it is missing or wrong.
pub fn load_spec(config: &ProvisionConfig) -> Result<Spec, Stop> {
    warn_if_readable_by_others(&config.spec);
    spec::load(&config.spec).map_err(Stop::Usage)
}

/// The line `--check` prints for a valid spec: what it holds, no secret.
pub fn checked_line(path: &std::path::Path, spec: &Spec) -> String {
    let count = |n: usize, what: &str| match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    };
    let replication = match &spec.replication {
        Some(role) => format!(", replication role {}", role.username),
        None => String::new(),
    };
    format!(
        "provision: spec {} is valid ({}, {}{replication})",
        path.display(),
        count(spec.users.len(), "user"),
        count(spec.databases.len(), "database")
    )
}

/// Group access is how BOSH installs job files (root:vcap 0640); access for
/// every other local user is what the warning is for.
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o007 != 0 {
            logln!(
                "warning: spec {} holds passwords but other users can read it (mode {:o}); make it 0640 or 0600",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
}

/// The server's own bound on each statement (`statement_timeout`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Provisions `spec` on the server `config` names.
pub fn run(config: &ProvisionConfig, spec: &Spec) -> Result<Summary, Stop> {
    let options = connect_options(config);
    let server = options.endpoint.to_string();
    let client = Client::new()
        .map_err(|err| Stop::Failed(anyhow::anyhow!("cannot start the client runtime: {err}")))?;
    let session = connect_waiting(&client, &options, config.wait)?;
    let in_recovery: bool = session
        .query_one("SELECT pg_is_in_recovery()", &[])
        .context("cannot ask whether the server is in recovery")?
        .get(0);
    let mut summary = Summary {
        server,
        skipped: in_recovery,
        dry_run: config.dry_run,
        changes: Vec::new(),
    };
    if in_recovery {
        return Ok(summary);
    }
    prepare_session(&session, &options)?;
    let catalog = read_catalog(&session, spec).context("cannot read the catalog")?;
    let changes = plan::plan_cluster(spec, &catalog, &|password| scram::verifier(password));
    apply(&session, &changes, config.dry_run, &mut summary)?;
    for database in &spec.databases {
        if database.extensions.is_empty() && database.users.is_empty() {
            continue;
        }
        if config.dry_run && !catalog.databases.contains_key(&database.name) {
            // A dry run cannot look inside a database it has not created:
            // everything in it would be new.
            let inside = InDatabase {
                public_owner: Some(String::new()),
                ..InDatabase::default()
            };
            list(&plan::plan_database(database, &inside), &mut summary);
            continue;
        }
        let mut options = options.clone();
        options.dbname = database.name.clone();
        let session = connect_waiting(&client, &options, Duration::ZERO)?;
        prepare_session(&session, &options)?;
        let inside = read_database(&session)
            .with_context(|| format!("cannot read the catalog of database {}", database.name))?;
        let changes = plan::plan_database(database, &inside);
        apply(&session, &changes, config.dry_run, &mut summary)?;
    }
    Ok(summary)
}

fn connect_options(config: &ProvisionConfig) -> ConnectOptions {
    let endpoint = Endpoint {
        host: config.host.clone(),
        port: config.port,
    };
    let mut options = ConnectOptions::new(
        endpoint,
        config.user.clone(),
        Some(config.dbname.clone()),
        config.connect_timeout,
    )
    .with_application_name("pg-bootstrap");
    if let Some(warning) = options.resolve_password(config.passfile.clone()) {
        logln!("warning: {warning}; connecting without a password");
    }
    options
}

/// Connects, retrying once a second for up to `wait` while the server is not
/// up yet (refused, starting, timing out). A refused login is final. Each
/// statement of the session may then take as long as the server's own
/// statement timeout, plus the connect timeout for the answer to arrive.
fn connect_waiting<'c>(
    client: &'c Client,
    options: &ConnectOptions,
    wait: Duration,
) -> Result<Session<'c>, Stop> {
    let started = Instant::now();
    let mut logged: Option<Instant> = None;
    let log_wait = |failure: &Failure, pause: Duration| {
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            logln!(
                "waiting for {} to accept connections ({:.0} s left): {}",
                options.endpoint,
                wait.saturating_sub(started.elapsed()).as_secs_f64(),
                failure.cause
            );
            logged = Some(Instant::now());
        }
        std::thread::sleep(pause);
    };
    let policy = RetryPolicy::until_up(wait, Duration::from_secs(1));
    match retry(&policy, || client.connect(options), log_wait).result {
        Ok(session) => Ok(session.bounded_by(STATEMENT_TIMEOUT + options.connect_timeout)),
        Err(failure) => Err(Stop::Refused(format!(
            "cannot connect to {} as {} (database {}): {}; nothing was changed",
            options.endpoint, options.user, options.dbname, failure.cause
        ))),
    }
}

/// Checks for a superuser, and keeps statements (verifiers included) out of
/// the server log whatever log_statement says.
fn prepare_session(session: &Session, options: &ConnectOptions) -> Result<(), Stop> {
    let superuser: bool = session
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .context("cannot look up the connecting role")?
        .get(0);
    if !superuser {
        return Err(Stop::Refused(format!(
            "{} is not a superuser: provisioning creates superusers and reads password verifiers; nothing was changed",
            options.user
        )));
    }
    // synchronous_commit = local: a commit never waits for a replica that may
    // be down (pg-monitor's strict mode would otherwise hold the node's start
    // forever); statement_timeout bounds the rest.
    let settings = format!(
        "SET log_statement = 'none'; SET log_min_duration_statement = -1; \
         SET log_min_error_statement = 'panic'; SET lock_timeout = '60s'; \
         SET statement_timeout = '{}s'; SET synchronous_commit = 'local'",
        STATEMENT_TIMEOUT.as_secs()
    );
    session
        .execute(&settings)
        .context("cannot configure the session")?;
    Ok(())
}

/// Runs each change (or only lists it on a dry run), logging each.
fn apply(
    session: &Session,
    changes: &[Change],
    dry_run: bool,
    summary: &mut Summary,
) -> Result<(), Stop> {
    if dry_run {
        list(changes, summary);
        return Ok(());
    }
    for change in changes {
        if let Err(failure) = session.execute(&change.sql()) {
            return Err(Stop::Failed(anyhow::anyhow!(
                "cannot {}: {} ({} changes were made before this one; a new run picks up from here)",
                change.describe(),
                failure.cause,
                summary.changes.len()
            )));
        }
        logln!("done: {}", change.describe());
        summary.changes.push(change.describe());
    }
    Ok(())
}

fn list(changes: &[Change], summary: &mut Summary) {
    for change in changes {
        logln!("dry run, would: {}", change.describe());
        summary.changes.push(change.describe());
    }
}

fn read_catalog(session: &Session, spec: &Spec) -> Result<Catalog, Failure> {
    let mut catalog = Catalog::default();
    for row in session.query(
        "SELECT rolname, rolsuper, rolcanlogin, rolreplication, rolpassword FROM pg_authid",
        &[],
    )? {
        catalog.roles.insert(
            row.get(0),
            RoleState {
                superuser: row.get(1),
                login: row.get(2),
                replication: row.get(3),
                password: row.get(4),
            },
        );
    }
    for row in session.query(
        "SELECT m.rolname, r.rolname FROM pg_auth_members a \
           JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member",
        &[],
    )? {
        catalog
            .member_of
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1));
    }
    if let Some(replication) = &spec.replication {
        if catalog.roles.contains_key(&replication.username) {
            let functions: Vec<String> = replication_functions().map(str::to_string).collect();
            for row in session.query(
                "SELECT f FROM unnest($1::text[]) f WHERE has_function_privilege($2, f, 'EXECUTE')",
                &[&functions, &replication.username],
            )? {
                catalog.functions_granted.insert(row.get(0));
            }
        }
    }
    for row in session.query(
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database",
        &[],
    )? {
        catalog.databases.insert(
            row.get(0),
            DatabaseState {
                owner: row.get(1),
                grants: HashMap::new(),
            },
        );
    }
    for row in session.query(
        "SELECT d.datname, g.rolname, a.privilege_type \
           FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a \
           JOIN pg_roles g ON g.oid = a.grantee",
        &[],
    )? {
        let name: String = row.get(0);
        if let Some(database) = catalog.databases.get_mut(&name) {
            database
                .grants
                .entry(row.get(1))
                .or_default()
                .insert(row.get(2));
        }
    }
    Ok(catalog)
}

fn read_database(session: &Session) -> Result<InDatabase, Failure> {
    let extensions: HashSet<String> = session
        .query("SELECT extname FROM pg_extension", &[])?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let public_owner: Option<String> = session
        .query_opt(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
            &[],
        )?
        .map(|row| row.get(0));
    let mut public_grants: HashMap<String, HashSet<String>> = HashMap::new();
    for row in session.query(
        "SELECT g.rolname, a.privilege_type \
           FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a \
           JOIN pg_roles g ON g.oid = a.grantee WHERE n.nspname = 'public'",
        &[],
    )? {
        public_grants
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1));
    }
    Ok(InDatabase {
        extensions,
        public_owner,
        public_grants,
    })
}
