//! What the operator's subcommands (`recover`, `switchover`) share about the
//! two nodes: how they connect to them, and how they name what a node said.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcore::duration::parse_positive_duration;
use pgcore::{logln, ConnectOptions, Endpoint, Failure, FailureKind, Role, Status};

/// How an operator subcommand logs in to the two nodes: the local node over
/// its socket as a superuser, the peer over TCP as the replication role.
/// The flags are the same for `recover` and `switchover`.
#[derive(clap::Args, Debug)]
pub struct Credentials {
    /// User for the local node, a superuser [default: the operating system user].
    #[arg(long, short = 'U', env = "PGUSER")]
    pub user: Option<String>,

    /// User for the peer, e.g. the replication role (which may run
    /// pg_promote() for a switchover) [default: --user].
    #[arg(long)]
    pub peer_user: Option<String>,

    /// Database on both nodes [default: the user name].
    #[arg(long, short = 'd', env = "PGDATABASE")]
    pub dbname: Option<String>,

    /// File holding the peer user's password (one line), e.g. the release's
    /// config/replication.password [default: PGPASSWORD, else the passfile].
    #[arg(long, value_name = "PATH")]
    pub peer_password_file: Option<PathBuf>,

    /// libpq password file for both nodes [default: PGPASSFILE, else ~/.pgpass].
    #[arg(long, value_name = "PATH")]
    pub passfile: Option<PathBuf>,

    /// Bound on each question to a node (connect, authenticate, query).
    #[arg(long, env = "PGCONNECT_TIMEOUT", default_value = "5", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
}

/// The two nodes an operator subcommand works on, and how it logs in.
pub struct NodeFlags<'a> {
    pub local: &'a Endpoint,
    pub peer: Option<&'a Endpoint>,
    pub credentials: &'a Credentials,
}

/// The local node's and the peer's connection options, passwords resolved:
/// the peer's from its password file, else PGPASSWORD or the passfile.
/// The error names the password file that cannot be read.
pub fn connect_options(
    flags: &NodeFlags,
    application: &str,
) -> Result<(ConnectOptions, Option<ConnectOptions>), String> {
    let mut local = ConnectOptions::new(
        flags.local.clone(),
        flags.credentials.user.clone(),
        flags.credentials.dbname.clone(),
        flags.credentials.connect_timeout,
    )
    .with_application_name(application);
    if let Some(warning) = local.resolve_password(flags.credentials.passfile.clone()) {
        logln!("warning: {warning}; connecting to the local node without a password");
    }
    let Some(endpoint) = flags.peer.cloned() else {
        return Ok((local, None));
    };
    let peer_user = flags
        .credentials
        .peer_user
        .clone()
        .or_else(|| Some(local.user.clone()));
    let mut peer = ConnectOptions::new(
        endpoint,
        peer_user,
        flags.credentials.dbname.clone(),
        flags.credentials.connect_timeout,
    )
    .with_application_name(application);
    match flags.credentials.peer_password_file.as_deref() {
        Some(file) => peer.set_password(Some(read_password(file)?)),
        None => {
            if let Some(warning) = peer.resolve_password(flags.credentials.passfile.clone()) {
                logln!("warning: {warning}; connecting to the peer without a password");
            }
        }
    }
    Ok((local, Some(peer)))
}

/// The peer's password (see [`pgcore::input::read_password`]).
fn read_password(file: &Path) -> Result<String, String> {
    pgcore::input::read_password(file)
        .map_err(|why| format!("--peer-password-file {}: {why}", file.display()))
}

/// A node's answer in a few words, its role first.
pub fn describe(answer: &Result<Status, Failure>) -> String {
    match answer {
        Ok(status) if status.role == Role::Primary && status.read_only == Some(true) => {
            "primary, refusing writes".to_string()
        }
        Ok(status) if status.role == Role::Replica => {
            match (&status.wal_receiver_source, status.wal_receiver_streaming) {
                (Some(source), _) => format!("replica, streaming from {source}"),
                (None, Some(true)) => "replica, streaming".to_string(),
                (None, Some(false)) => "replica, not streaming".to_string(),
                (None, None) => "replica".to_string(),
            }
        }
        Ok(status) => status.role.to_string(),
        Err(failure) if failure.kind == FailureKind::Starting => format!("starting: {failure}"),
        Err(failure) => format!("unreachable: {failure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(role: Role, read_only: Option<bool>) -> Result<Status, Failure> {
        Ok(Status {
            role,
            read_only,
            ..Status::default()
        })
    }

    #[test]
    fn a_replica_is_described_with_its_stream() {
        let mut replica = answered(Role::Replica, None).unwrap();
        replica.wal_receiver_streaming = Some(true);
        assert_eq!(describe(&Ok(replica.clone())), "replica, streaming");
        replica.wal_receiver_source = Some("10.0.0.2:6432".into());
        assert_eq!(
            describe(&Ok(replica.clone())),
            "replica, streaming from 10.0.0.2:6432"
        );
        replica.wal_receiver_source = None;
        replica.wal_receiver_streaming = Some(false);
        assert_eq!(describe(&Ok(replica)), "replica, not streaming");
        assert_eq!(describe(&answered(Role::Primary, Some(false))), "primary");
        assert_eq!(
            describe(&answered(Role::Primary, Some(true))),
            "primary, refusing writes"
        );
    }
}
