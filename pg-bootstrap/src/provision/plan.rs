//! What provisioning changes: a pure comparison of the spec with the catalog.
//!
//! Only differences become [`Change`]s, so a second run plans nothing and the
//! server logs no "already exists" errors. Each change renders its own SQL
//! with every name quoted and passwords only as SCRAM verifiers.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::scram;
use super::spec::{Database, Spec};
use crate::quote::{ident, literal};

/// The functions pg_rewind calls on its source as a non-superuser (pg_rewind docs).
pub const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// Lets the replication role promote a replica: `pg-monitor switchover` runs
/// on the primary and promotes its peer as that role, so that no superuser
/// password ever leaves a node.
pub const PROMOTE_FUNCTION: &str = "pg_catalog.pg_promote(boolean, integer)";

/// Every function the replication role is granted EXECUTE on, in the order
/// the grants are planned.
pub fn replication_functions() -> impl Iterator<Item = &'static str> {
    REWIND_FUNCTIONS.into_iter().chain([PROMOTE_FUNCTION])
}

/// Lets the replication role read replication state (pg_stat_replication,
/// pg_stat_wal_receiver) when it probes a peer.
pub const MONITOR_ROLE: &str = "pg_monitor";
/// Lets the replication role ask a just-promoted peer for a checkpoint before
/// pg_rewind (PostgreSQL 15+; granted only where it exists).
pub const CHECKPOINT_ROLE: &str = "pg_checkpoint";

/// Privileges `GRANT ALL` gives on a database and on a schema.
const DATABASE_ALL: [&str; 3] = ["CREATE", "CONNECT", "TEMPORARY"];
const SCHEMA_ALL: [&str; 2] = ["CREATE", "USAGE"];

/// A role as pg_authid has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleState {
    pub superuser: bool,
    pub login: bool,
    pub replication: bool,
    /// rolpassword: a SCRAM verifier, an MD5 hash, or none.
    pub password: Option<String>,
}

/// A database's owner and explicit grants (grantee → privilege types).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseState {
    pub owner: String,
    pub grants: HashMap<String, HashSet<String>>,
}

/// The cluster-wide catalog, as far as provisioning looks at it.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub roles: HashMap<String, RoleState>,
    /// member → the roles it is a member of.
    pub member_of: HashMap<String, HashSet<String>>,
    /// Of [`replication_functions`], those the replication role may execute already.
    pub functions_granted: HashSet<String>,
    pub databases: HashMap<String, DatabaseState>,
}

/// What one database holds, as far as provisioning looks at it.
#[derive(Clone, Debug, Default)]
pub struct InDatabase {
    pub extensions: HashSet<String>,
    /// Owner of schema `public`; `None` when the schema does not exist.
    pub public_owner: Option<String>,
    pub public_grants: HashMap<String, HashSet<String>>,
}

/// Role attributes provisioning manages; others are left as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub superuser: bool,
    pub replication: bool,
}

/// One change. [`Change::sql`] renders it; [`Change::describe`] says it without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    CreateRole {
        name: String,
        attributes: Attributes,
        verifier: String,
    },
    AlterRole {
        name: String,
        attributes: Attributes,
    },
    SetPassword {
        name: String,
        verifier: String,
    },
    GrantRole {
        role: String,
        member: String,
    },
    GrantExecute {
        function: &'static str,
        role: String,
    },
    /// Owned by `owner`, or by the provisioning user when `None`.
    CreateDatabase {
        name: String,
        owner: Option<String>,
    },
    GrantDatabase {
        database: String,
        role: String,
    },
    CreateExtension {
        database: String,
        name: String,
    },
    GrantSchema {
        database: String,
        role: String,
    },
}

impl Change {
    pub fn sql(&self) -> String {
        let attributes = |a: &Attributes| {
            format!(
                "LOGIN {} {}",
                if a.superuser {
                    "SUPERUSER"
                } else {
                    "NOSUPERUSER"
                },
                if a.replication {
                    "REPLICATION"
                } else {
                    "NOREPLICATION"
                }
            )
        };
        match self {
            Change::CreateRole {
                name,
                attributes: a,
                verifier,
            } => format!(
                "CREATE ROLE {} WITH {} PASSWORD {}",
                ident(name),
                attributes(a),
                literal(verifier)
            ),
            Change::AlterRole {
                name,
                attributes: a,
            } => {
                format!("ALTER ROLE {} WITH {}", ident(name), attributes(a))
            }
            Change::SetPassword { name, verifier } => {
                format!(
                    "ALTER ROLE {} WITH PASSWORD {}",
                    ident(name),
                    literal(verifier)
                )
            }
            Change::GrantRole { role, member } => {
                format!("GRANT {} TO {}", ident(role), ident(member))
            }
            Change::GrantExecute { function, role } => {
                format!("GRANT EXECUTE ON FUNCTION {function} TO {}", ident(role))
            }
            Change::CreateDatabase {
                name,
                owner: Some(owner),
            } => {
                format!("CREATE DATABASE {} OWNER {}", ident(name), ident(owner))
            }
            Change::CreateDatabase { name, owner: None } => {
                format!("CREATE DATABASE {}", ident(name))
            }
            Change::GrantDatabase { database, role } => format!(
                "GRANT ALL PRIVILEGES ON DATABASE {} TO {}",
                ident(database),
                ident(role)
            ),
            Change::CreateExtension { name, .. } => {
                format!("CREATE EXTENSION IF NOT EXISTS {}", ident(name))
            }
            Change::GrantSchema { role, .. } => {
                format!("GRANT ALL ON SCHEMA public TO {}", ident(role))
            }
        }
    }

    /// The database the statement must run in; `None`: the provisioning connection's.
    pub fn database(&self) -> Option<&str> {
        match self {
            Change::CreateExtension { database, .. } | Change::GrantSchema { database, .. } => {
                Some(database)
            }
            _ => None,
        }
    }

    /// What the change does, in the imperative, for logs, errors and `--json`:
    /// never a password or verifier.
    pub fn describe(&self) -> String {
        let kind = |a: &Attributes| match (a.superuser, a.replication) {
            (true, _) => "superuser",
            (false, true) => "replication",
            (false, false) => "login",
        };
        match self {
            Change::CreateRole {
                name, attributes, ..
            } => {
                format!("create role {} ({})", ident(name), kind(attributes))
            }
            Change::AlterRole { name, attributes } => {
                format!("make role {} a {} role", ident(name), kind(attributes))
            }
            Change::SetPassword { name, .. } => format!("set the password of role {}", ident(name)),
            Change::GrantRole { role, member } => {
                format!("grant {} to {}", ident(role), ident(member))
            }
            Change::GrantExecute { function, role } => {
                format!("grant EXECUTE on {function} to {}", ident(role))
            }
            Change::CreateDatabase {
                name,
                owner: Some(owner),
            } => {
                format!("create database {} owned by {}", ident(name), ident(owner))
            }
            Change::CreateDatabase { name, owner: None } => {
                format!("create database {}", ident(name))
            }
            Change::GrantDatabase { database, role } => {
                format!(
                    "grant ALL on database {} to {}",
                    ident(database),
                    ident(role)
                )
            }
            Change::CreateExtension { database, name } => {
                format!(
                    "create extension {} in database {}",
                    ident(name),
                    ident(database)
                )
            }
            Change::GrantSchema { database, role } => format!(
                "grant ALL on schema public of database {} to {}",
                ident(database),
                ident(role)
            ),
        }
    }
}

/// Roles, role memberships, function grants, databases and database grants.
/// `verifier` makes a SCRAM verifier for a password (random salt in real runs).
pub fn plan_cluster(
    spec: &Spec,
    catalog: &Catalog,
    verifier: &dyn Fn(&str) -> String,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for user in &spec.users {
        let wanted = Attributes {
            superuser: user.admin,
            replication: false,
        };
        changes.extend(role_changes(
            &user.username,
            wanted,
            &user.password.0,
            catalog,
            verifier,
        ));
    }
    if let Some(replication) = &spec.replication {
        let name = &replication.username;
        let wanted = Attributes {
            superuser: false,
            replication: true,
        };
        changes.extend(role_changes(
            name,
            wanted,
            &replication.password.0,
            catalog,
            verifier,
        ));
        let member_of = catalog.member_of.get(name);
        for role in [MONITOR_ROLE, CHECKPOINT_ROLE] {
            let exists = catalog.roles.contains_key(role);
            let member = member_of.is_some_and(|roles| roles.contains(role));
            if exists && !member {
                changes.push(Change::GrantRole {
                    role: role.to_string(),
                    member: name.clone(),
                });
            }
        }
        for function in replication_functions() {
            if !catalog.functions_granted.contains(function) {
                changes.push(Change::GrantExecute {
                    function,
                    role: name.clone(),
                });
            }
        }
    }
    let owners = wanted_databases(spec);
    for (name, owner) in &owners {
        if !catalog.databases.contains_key(*name) {
            changes.push(Change::CreateDatabase {
                name: name.to_string(),
                owner: owner.map(str::to_string),
            });
        }
    }
    for database in &spec.databases {
        let state = catalog.databases.get(&database.name);
        let owner = state
            .map(|state| state.owner.as_str())
            .or_else(|| owners.get(database.name.as_str()).copied().flatten());
        for user in &database.users {
            let granted = state
                .and_then(|state| state.grants.get(user))
                .is_some_and(|privileges| DATABASE_ALL.iter().all(|p| privileges.contains(*p)));
            if owner != Some(user.as_str()) && !granted {
                changes.push(Change::GrantDatabase {
                    database: database.name.clone(),
                    role: user.clone(),
                });
            }
        }
    }
    changes
}

/// Extensions and schema grants inside one listed database.
pub fn plan_database(database: &Database, inside: &InDatabase) -> Vec<Change> {
    let mut changes = Vec::new();
    for extension in &database.extensions {
        if !inside.extensions.contains(extension) {
            changes.push(Change::CreateExtension {
                database: database.name.clone(),
                name: extension.clone(),
            });
        }
    }
    // Since PostgreSQL 15 only the database owner may create in schema
    // public; the users of a shared database need it granted.
    if let Some(schema_owner) = &inside.public_owner {
        for user in &database.users {
            let granted = inside
                .public_grants
                .get(user)
                .is_some_and(|privileges| SCHEMA_ALL.iter().all(|p| privileges.contains(*p)));
            if schema_owner != user && !granted {
                changes.push(Change::GrantSchema {
                    database: database.name.clone(),
                    role: user.clone(),
                });
            }
        }
    }
    changes
}

/// Every database provisioning makes, with its owner: one per user, named
/// after and owned by it (as the original release did), and each listed one.
fn wanted_databases(spec: &Spec) -> BTreeMap<&str, Option<&str>> {
    let mut databases: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for user in &spec.users {
        databases.insert(&user.username, Some(&user.username));
    }
    for database in &spec.databases {
        databases.entry(&database.name).or_insert(None);
    }
    databases
}

fn role_changes(
    name: &str,
    wanted: Attributes,
    password: &str,
    catalog: &Catalog,
    verifier: &dyn Fn(&str) -> String,
) -> Vec<Change> {
    let Some(state) = catalog.roles.get(name) else {
        return vec![Change::CreateRole {
            name: name.to_string(),
            attributes: wanted,
            verifier: verifier(password),
        }];
    };
    let mut changes = Vec::new();
    if !state.login
        || state.superuser != wanted.superuser
        || state.replication != wanted.replication
    {
        changes.push(Change::AlterRole {
            name: name.to_string(),
            attributes: wanted,
        });
    }
    let current = state
        .password
        .as_deref()
        .is_some_and(|stored| scram::matches(stored, password));
    if !current {
        changes.push(Change::SetPassword {
            name: name.to_string(),
            verifier: verifier(password),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::spec::{ReplicationRole, Secret, User};

    fn fake_verifier(password: &str) -> String {
        format!("verifier-of-{}", password.len())
    }

    fn spec() -> Spec {
        Spec {
            users: vec![
                User {
                    username: "alice".into(),
                    password: Secret("a-pw".into()),
                    admin: true,
                },
                User {
                    username: "bob".into(),
                    password: Secret("b-pw".into()),
                    admin: false,
                },
            ],
            databases: vec![Database {
                name: "app".into(),
                users: vec!["alice".into(), "bob".into()],
                extensions: vec!["pgcrypto".into()],
            }],
            replication: Some(ReplicationRole {
                username: "replication".into(),
                password: Secret("r-pw".into()),
            }),
        }
    }

    fn role(superuser: bool, replication: bool, password: &str) -> RoleState {
        RoleState {
            superuser,
            login: true,
            replication,
            password: Some(scram::verifier(password)),
        }
    }

    /// The catalog after a complete first run of `spec()`.
    fn provisioned() -> Catalog {
        let mut catalog = Catalog::default();
        catalog
            .roles
            .insert("alice".into(), role(true, false, "a-pw"));
        catalog
            .roles
            .insert("bob".into(), role(false, false, "b-pw"));
        catalog
            .roles
            .insert("replication".into(), role(false, true, "r-pw"));
        catalog
            .roles
            .insert(MONITOR_ROLE.into(), RoleState::default());
        catalog
            .roles
            .insert(CHECKPOINT_ROLE.into(), RoleState::default());
        catalog.member_of.insert(
            "replication".into(),
            [MONITOR_ROLE.to_string(), CHECKPOINT_ROLE.to_string()].into(),
        );
        catalog.functions_granted = replication_functions().map(str::to_string).collect();
        for (name, owner) in [("alice", "alice"), ("bob", "bob"), ("app", "vcap")] {
            catalog.databases.insert(
                name.into(),
                DatabaseState {
                    owner: owner.into(),
                    grants: HashMap::new(),
                },
            );
        }
        let all: HashSet<String> = DATABASE_ALL.iter().map(|p| p.to_string()).collect();
        let app = catalog.databases.get_mut("app").unwrap();
        app.grants.insert("alice".into(), all.clone());
        app.grants.insert("bob".into(), all);
        catalog
    }

    fn empty_cluster() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.roles.insert("vcap".into(), role(true, false, "x"));
        catalog
            .roles
            .insert(MONITOR_ROLE.into(), RoleState::default());
        catalog
            .databases
            .insert("postgres".into(), DatabaseState::default());
        catalog
    }

    #[test]
    fn a_first_run_creates_everything_in_dependency_order() {
        let changes = plan_cluster(&spec(), &empty_cluster(), &fake_verifier);
        let described: Vec<String> = changes.iter().map(Change::describe).collect();
        assert_eq!(
            described,
            [
                "create role \"alice\" (superuser)",
                "create role \"bob\" (login)",
                "create role \"replication\" (replication)",
                "grant \"pg_monitor\" to \"replication\"",
                "grant EXECUTE on pg_catalog.pg_ls_dir(text, boolean, boolean) to \"replication\"",
                "grant EXECUTE on pg_catalog.pg_stat_file(text, boolean) to \"replication\"",
                "grant EXECUTE on pg_catalog.pg_read_binary_file(text) to \"replication\"",
                "grant EXECUTE on pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) to \"replication\"",
                "grant EXECUTE on pg_catalog.pg_promote(boolean, integer) to \"replication\"",
                "create database \"alice\" owned by \"alice\"",
                "create database \"app\"",
                "create database \"bob\" owned by \"bob\"",
                "grant ALL on database \"app\" to \"alice\"",
                "grant ALL on database \"app\" to \"bob\"",
            ]
        );
    }

    #[test]
    fn a_provisioned_cluster_plans_nothing() {
        let changes = plan_cluster(&spec(), &provisioned(), &fake_verifier);
        assert_eq!(changes, vec![], "a second run must change nothing");
    }

    #[test]
    fn only_what_differs_is_changed() {
        let mut catalog = provisioned();
        catalog
            .roles
            .insert("alice".into(), role(false, false, "a-pw"));
        catalog
            .roles
            .insert("bob".into(), role(false, false, "old-pw"));
        let md5 = postgres_protocol::password::md5(b"r-pw", "replication");
        catalog.roles.get_mut("replication").unwrap().password = Some(md5);
        catalog
            .member_of
            .get_mut("replication")
            .unwrap()
            .remove(MONITOR_ROLE);
        catalog
            .databases
            .get_mut("app")
            .unwrap()
            .grants
            .remove("bob");
        let changes = plan_cluster(&spec(), &catalog, &fake_verifier);
        let described: Vec<String> = changes.iter().map(Change::describe).collect();
        assert_eq!(
            described,
            [
                "make role \"alice\" a superuser role",
                "set the password of role \"bob\"",
                "set the password of role \"replication\"",
                "grant \"pg_monitor\" to \"replication\"",
                "grant ALL on database \"app\" to \"bob\"",
            ]
        );
    }

    #[test]
    fn a_replication_role_provisioned_before_switchovers_is_granted_pg_promote_alone() {
        let mut catalog = provisioned();
        catalog.functions_granted.remove(PROMOTE_FUNCTION);
        let changes = plan_cluster(&spec(), &catalog, &fake_verifier);
        assert_eq!(
            changes,
            [Change::GrantExecute {
                function: PROMOTE_FUNCTION,
                role: "replication".into()
            }]
        );
        assert_eq!(
            changes[0].sql(),
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO \"replication\""
        );
    }

    #[test]
    fn the_owner_of_a_database_needs_no_grant() {
        let mut spec = spec();
        spec.databases[0].name = "bob".into();
        let changes = plan_cluster(&spec, &empty_cluster(), &fake_verifier);
        assert!(changes.contains(&Change::GrantDatabase {
            database: "bob".into(),
            role: "alice".into()
        }));
        assert!(!changes.contains(&Change::GrantDatabase {
            database: "bob".into(),
            role: "bob".into()
        }));
    }

    #[test]
    fn pg_checkpoint_is_granted_only_where_it_exists() {
        let mut catalog = empty_cluster();
        let without: Vec<Change> = plan_cluster(&spec(), &catalog, &fake_verifier);
        assert!(!without
            .iter()
            .any(|c| c.describe().contains("pg_checkpoint")));
        catalog
            .roles
            .insert(CHECKPOINT_ROLE.into(), RoleState::default());
        let with = plan_cluster(&spec(), &catalog, &fake_verifier);
        assert!(with.iter().any(|c| c.describe().contains("pg_checkpoint")));
    }

    #[test]
    fn extensions_and_schema_grants_are_planned_inside_the_database() {
        let database = &spec().databases[0];
        let mut inside = InDatabase {
            extensions: HashSet::new(),
            public_owner: Some("pg_database_owner".into()),
            public_grants: HashMap::new(),
        };
        let changes = plan_database(database, &inside);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(
            changes[0].sql(),
            "CREATE EXTENSION IF NOT EXISTS \"pgcrypto\""
        );
        assert_eq!(changes[0].database(), Some("app"));
        assert_eq!(changes[1].sql(), "GRANT ALL ON SCHEMA public TO \"alice\"");
        inside.extensions.insert("pgcrypto".into());
        let all: HashSet<String> = SCHEMA_ALL.iter().map(|p| p.to_string()).collect();
        inside.public_grants.insert("alice".into(), all.clone());
        inside.public_grants.insert("bob".into(), all);
        assert_eq!(plan_database(database, &inside), vec![]);
        inside.public_owner = None;
        inside.public_grants.clear();
        assert!(plan_database(database, &inside).is_empty());
    }

    #[test]
    fn hostile_names_are_quoted_in_every_statement() {
        let name = "o'brien \"the\" \\; DROP ROLE x; -- ü";
        let quoted = "\"o'brien \"\"the\"\" \\; DROP ROLE x; -- ü\"";
        let changes = [
            Change::CreateRole {
                name: name.into(),
                attributes: Attributes {
                    superuser: false,
                    replication: false,
                },
                verifier: "SCRAM-SHA-256$4096:abc=$def=:ghi=".into(),
            },
            Change::CreateDatabase {
                name: name.into(),
                owner: Some(name.into()),
            },
            Change::GrantDatabase {
                database: name.into(),
                role: name.into(),
            },
        ];
        assert_eq!(
            changes[0].sql(),
            format!("CREATE ROLE {quoted} WITH LOGIN NOSUPERUSER NOREPLICATION PASSWORD 'SCRAM-SHA-256$4096:abc=$def=:ghi='")
        );
        assert_eq!(
            changes[1].sql(),
            format!("CREATE DATABASE {quoted} OWNER {quoted}")
        );
        assert_eq!(
            changes[2].sql(),
            format!("GRANT ALL PRIVILEGES ON DATABASE {quoted} TO {quoted}")
        );
    }

    #[test]
    fn descriptions_never_hold_a_verifier() {
        let change = Change::SetPassword {
            name: "alice".into(),
            verifier: "SCRAM-SHA-256$4096:secret".into(),
        };
        assert!(!change.describe().contains("SCRAM"));
        assert!(change.sql().contains("SCRAM"));
    }
}
