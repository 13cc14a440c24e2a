//! The consensus mode's own effects on PostgreSQL: re-pointing a replica at
//! the leader, the switchover's checks, the synchronous count. The pair's
//! effects (promote, refuse or allow writes, stop a server, run a command)
//! are shared from [`crate::effects`].

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use pgcore::quote::{conninfo, conninfo_pairs, literal};
use pgcore::{logln, Client, ConnectOptions, Detail, Endpoint, Failure, Lsn};

use super::ConsensusConfig;

/// Makes the local replica stream from `leader`: `primary_conninfo` with
/// the leader's host and port, everything else in it kept (ALTER SYSTEM and
/// a reload: PostgreSQL 13 and later restart the WAL receiver on it). A
/// replica already pointed there is left alone.
pub fn follow(client: &Client, config: &ConsensusConfig, leader: &Endpoint) -> anyhow::Result<()> {
    let local = &config.local;
    let session = client
        .connect_within(local, local.connect_timeout * 2)
        .map_err(|failure| anyhow!("{failure}"))?;
    let current = first_value(&session.text_rows("SHOW primary_conninfo"))?;
    let mut pairs = conninfo_pairs(&current).map_err(|err| anyhow!("primary_conninfo: {err}"))?;
    let value_of = |pairs: &[(String, String)], keyword: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == keyword)
            .map(|(_, value)| value.clone())
    };
    let port = leader.port.to_string();
    if value_of(&pairs, "host").as_deref() == Some(leader.host.as_str())
        && value_of(&pairs, "port").as_deref() == Some(port.as_str())
    {
        return Ok(());
    }
    if pairs.is_empty() {
        pairs = streaming_pairs(config);
    }
    pairs.retain(|(key, _)| key != "host" && key != "port" && key != "hostaddr");
    pairs.insert(0, ("port".into(), port));
    pairs.insert(0, ("host".into(), leader.host.clone()));
    for sql in [
        format!(
            "ALTER SYSTEM SET primary_conninfo = {}",
            literal(&conninfo(&pairs))
        ),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        session
            .execute(&sql)
            .map_err(|failure| anyhow!("{failure}"))
            .context("cannot change primary_conninfo")?;
    }
    logln!("primary_conninfo now points at {leader} (ALTER SYSTEM, configuration reloaded)");
    Ok(())
}

/// A primary_conninfo for a replica that has none: the replication user,
/// its passfile, this member's name, and TLS as the node's libpq variables say.
fn streaming_pairs(config: &ConsensusConfig) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("user".to_string(), config.replication_user.clone()),
        ("application_name".to_string(), config.policy.name.clone()),
    ];
    if let Some(passfile) = &config.passfile {
        pairs.push(("passfile".into(), passfile.display().to_string()));
    }
    if let Ok(tls) = config.local.tls() {
        pairs.extend(
            tls.conninfo_keywords()
                .into_iter()
                .map(|(key, value)| (key.to_string(), value)),
        );
    }
    pairs
}

fn first_value(rows: &Result<Vec<Vec<Option<String>>>, Failure>) -> anyhow::Result<String> {
    match rows {
        Ok(rows) => Ok(rows
            .first()
            .and_then(|row| row.first())
            .cloned()
            .flatten()
            .unwrap_or_default()),
        Err(failure) => Err(anyhow!("{failure}")),
    }
}

/// Among the other members, the replica streaming WAL now with the most of it.
pub fn best_streaming_replica(
    client: &Client,
    members: &std::collections::BTreeMap<String, ConnectOptions>,
) -> Option<String> {
    members
        .iter()
        .filter_map(|(name, options)| {
            let status = client.probe_once(options, Detail::Full).ok()?;
            let streams =
                status.in_recovery == Some(true) && status.wal_receiver_streaming == Some(true);
            streams.then(|| {
                (
                    status.received_wal_lsn.max(status.replayed_wal_lsn),
                    name.clone(),
                )
            })
        })
        .max()
        .map(|(_, name)| name)
}

/// A switchover's target must be a replica streaming WAL now.
pub fn ready_for_switchover(client: &Client, target: &ConnectOptions) -> Result<(), String> {
    let status = client
        .probe_once(target, Detail::Full)
        .map_err(|failure| format!("{} does not answer: {failure}", target.endpoint))?;
    if status.in_recovery != Some(true) {
        return Err(format!("{} is not a replica", target.endpoint));
    }
    if status.wal_receiver_streaming != Some(true) {
        return Err(format!("{} does not stream WAL", target.endpoint));
    }
    Ok(())
}

/// Waits, up to `timeout`, until the target has received all the WAL the
/// local primary (refusing writes by now) has written.
pub fn wait_caught_up(
    client: &Client,
    local: &ConnectOptions,
    target: &ConnectOptions,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let primary = client
        .probe_once(local, Detail::Full)
        .map_err(|failure| format!("the local node does not answer: {failure}"))?;
    let Some(written) = primary.current_wal_lsn else {
        return Err("the local node reports no WAL position".into());
    };
    loop {
        let received = client
            .probe_once(target, Detail::Full)
            .ok()
            .and_then(|status| status.received_wal_lsn.max(status.replayed_wal_lsn));
        if received.is_some_and(|received| received >= written) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} received {} of {written} within {} s",
                target.endpoint,
                received.map_or("nothing".into(), |lsn: Lsn| lsn.to_string()),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `synchronous_standby_names = 'ANY k (*)'` (empty for 0), with ALTER
/// SYSTEM and a reload.
pub fn set_synchronous_count(
    client: &Client,
    local: &ConnectOptions,
    count: u32,
) -> Result<(), Failure> {
    let value = if count == 0 {
        String::new()
    } else {
        format!("ANY {count} (*)")
    };
    let session = client.connect_within(local, local.connect_timeout * 2)?;
    session.execute(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = {}",
        literal(&value)
    ))?;
    session.execute("SELECT pg_reload_conf()")?;
    logln!("synchronous_standby_names = '{value}' (ALTER SYSTEM, configuration reloaded)");
    Ok(())
}
