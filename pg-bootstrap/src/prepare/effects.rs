//! The effects of a decision: initdb, a staged clone, a rewind. Each is a
//! small function that logs what it does and, when it fails, says what state
//! it left the data directory in.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use pgcore::os::User;
use pgcore::{logln, ConnectOptions, Endpoint, TlsSettings};
use serde::Serialize;

use super::datadir::{self, Paths};
use super::peers::Asker;
use super::sync::Flush;
use crate::cancel::Cancel;
use crate::programs::{self, Limits, Programs};
use crate::quote;

/// How the data directory was made ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// initdb made a new cluster.
    Initdb,
    /// pg_basebackup copied the peer.
    Clone,
    /// pg_rewind resynchronised the data directory with the peer.
    Rewind,
    /// Only the standby configuration was written: a replica that could not
    /// be checked by pg_rewind (it follows the peer's timeline when it can),
    /// or a node stopped cleanly whose WAL the peer's history holds.
    Reconfigure,
    /// Nothing needed doing.
    None,
}

/// What the effects need to know.
pub struct Effects<'a> {
    pub paths: &'a Paths,
    pub programs: &'a Programs,
    pub owner: Option<&'a User>,
    pub cancel: &'a Cancel,
    pub limits: Limits,
    /// `--initdb-locale`.
    pub locale: &'a str,
    /// `--clone-max-rate`, handed to pg_basebackup.
    pub max_rate: Option<&'a str>,
    pub replication_user: &'a str,
    /// The passfile named in primary_conninfo.
    pub passfile: Option<&'a Path>,
    /// TLS to the peer, for every connection string made here.
    pub tls: &'a TlsSettings,
    pub connect_timeout: Duration,
    /// How long to wait for a just-promoted peer's checkpoint (`--grace`).
    pub checkpoint_wait: Duration,
}

/// The coarsest granularity of file modification times on Linux (one jiffy at HZ=100).
pub const TIMESTAMP_TICK: Duration = Duration::from_millis(10);

impl Effects<'_> {
    /// initdb into the staging directory, then swapped into place.
    pub fn init_primary(&self) -> anyhow::Result<Method> {
        let data_dir = self.paths.data_dir.display();
        self.init_staging()
            .and_then(|()| {
                let mut initdb = self.programs.command("initdb");
                initdb
                    .arg("--pgdata")
                    .arg(&self.paths.staging)
                    // pg_rewind needs checksums (or wal_log_hints) to rejoin this node later.
                    .arg("--data-checksums")
                    .arg("--encoding=UTF8")
                    .arg(format!("--locale={}", self.locale))
                    .args(["--auth-local=peer", "--auth-host=scram-sha-256"])
                    .arg("--no-instructions");
                logln!("running initdb into {}", self.paths.staging.display());
                programs::run(&mut initdb, "initdb", self.limits, self.cancel)
            })
            .and_then(|()| self.swap_in())
            .map_err(|err| {
                datadir::discard_staging(self.paths);
                anyhow!("cannot initialize {data_dir}: {err:#} (nothing was created at {data_dir})")
            })?;
        Ok(Method::Initdb)
    }

    /// A staged clone of `peer`; an existing data directory is kept until the
    /// clone is complete and swapped in.
    pub fn clone_from(&self, peer: &Endpoint) -> anyhow::Result<Method> {
        let had_data = has_data(&self.paths.data_dir);
        self.staged_clone(peer).map_err(|err| {
            let left = if had_data {
                format!(
                    "the data directory {} was left as it was",
                    self.paths.data_dir.display()
                )
            } else {
                "no data directory was created".to_string()
            };
            anyhow!("cannot clone from {peer}: {err:#} ({left})")
        })?;
        // An interrupted rewind's mark is obsolete once a clone is in place.
        datadir::clear_rewind_mark(self.paths).context("cannot remove the rewind mark")?;
        Ok(Method::Clone)
    }

    /// A node stopped cleanly whose WAL the peer's history holds
    /// ([`super::decide::follow_or_rejoin`]): standby.signal and
    /// primary_conninfo, nothing else. PostgreSQL streams the rest of the old
    /// timeline and the new one from the peer.
    pub fn follow(&self, peer: &Endpoint) -> anyhow::Result<Method> {
        let data_dir = &self.paths.data_dir;
        self.point_at(data_dir, peer)
            .with_context(|| format!("cannot point {} at {peer}", data_dir.display()))?;
        logln!(
            "{} starts as the standby of {peer} as it is, without pg_rewind",
            data_dir.display()
        );
        Ok(Method::Reconfigure)
    }

    /// Makes a former primary start as a standby of nobody yet: standby.signal,
    /// an empty primary_conninfo, none of a primary's own settings.
    /// pg-monitor consensus points it at the leader, or promotes it.
    pub fn stand_by(&self) -> anyhow::Result<Method> {
        let data_dir = &self.paths.data_dir;
        datadir::write_standby_config(data_dir, "", self.owner)
            .with_context(|| format!("cannot make {} a standby", data_dir.display()))?;
        logln!(
            "{} starts as a standby; pg-monitor consensus promotes it or points it at the leader",
            data_dir.display()
        );
        Ok(Method::Reconfigure)
    }

    /// pg_rewind against `peer` (`options` reach it as the replication user),
    /// falling back to a staged clone when rewinding is impossible or fails.
    pub fn rejoin(
        &self,
        peer: &Endpoint,
        options: &ConnectOptions,
        asker: &Asker,
        was_primary: bool,
    ) -> anyhow::Result<Method> {
        let clean = cleanly_stopped(&self.paths.data_dir);
        if !was_primary && !clean {
            // PostgreSQL cannot finish a standby's crash recovery in single-user
            // mode, so pg_rewind cannot check it; a replica does not diverge
            // unless it followed another primary, and if it did, PostgreSQL
            // refuses to follow this one and says so in its log.
            logln!(
                "this replica was not shut down cleanly: pointing it at {peer} without pg_rewind"
            );
            self.point_at(&self.paths.data_dir, peer).with_context(|| {
                format!("cannot point {} at {peer}", self.paths.data_dir.display())
            })?;
            return Ok(Method::Reconfigure);
        }
        let (why, rewind_started) = match self.rewind(peer, options, asker, clean, was_primary) {
            Ok(()) => return Ok(Method::Rewind),
            Err(Rewind::Impossible(why)) => (why, false),
            Err(Rewind::Failed(why)) => (why, true),
        };
        let left = if rewind_started {
            format!(
                "pg_rewind had already changed {} and it is marked incomplete by {}: the next prepare clones afresh",
                self.paths.data_dir.display(),
                self.paths.rewind_marker.display()
            )
        } else {
            format!(
                "the data directory {} was left as it was",
                self.paths.data_dir.display()
            )
        };
        if self.cancel.is_set() {
            return Err(anyhow!("cannot rejoin {peer}: {why:#} ({left})"));
        }
        if rewind_started {
            logln!(
                "pg_rewind failed part-way: {why:#}; cloning instead ({left} if the clone fails)"
            );
        } else {
            logln!("cannot rewind to rejoin {peer}: {why:#}; cloning instead (the data directory is kept until the clone is complete)");
        }
        self.staged_clone(peer).map_err(|err| {
            anyhow!("cannot rejoin {peer}: the fallback clone failed: {err:#} ({left})")
        })?;
        datadir::clear_rewind_mark(self.paths).context("cannot remove the rewind mark")?;
        Ok(Method::Clone)
    }

    fn rewind(
        &self,
        peer: &Endpoint,
        options: &ConnectOptions,
        asker: &Asker,
        clean: bool,
        was_primary: bool,
    ) -> Result<(), Rewind> {
        let data_dir = &self.paths.data_dir;
        let flush = Flush::for_data_dir(data_dir);
        if !clean {
            // What pg_rewind would do itself, done first so that the
            // fingerprint below is taken of the recovered directory.
            logln!(
                "finishing crash recovery of {} in single-user mode",
                data_dir.display()
            );
            let mut single = self.programs.command("postgres");
            // Its checkpoints must not recycle the WAL pg_rewind reads back
            // to the last checkpoint before the divergence (with the data
            // dir's own postgresql.conf, wal_keep_size is often 0).
            single
                .arg("--single")
                .arg("-D")
                .arg(data_dir)
                .args(["-c", "wal_keep_size=1TB"])
                .args(flush.server_settings())
                .arg("template1");
            programs::run(&mut single, "postgres --single", self.limits, self.cancel)
                .map_err(|err| Rewind::Impossible(err.context("crash recovery failed")))?;
        }
        if was_primary {
            self.refuse_same_timeline(peer, options, asker)
                .map_err(Rewind::Impossible)?;
        }
        self.wait_for_source_checkpoint(peer, options, asker)
            .map_err(Rewind::Impossible)?;
        // pg_rewind makes all its checks (checksums or wal_log_hints, same
        // cluster, timelines, the target's WAL) before it writes anything. A
        // fingerprint of the directory tells afterwards whether a failure
        // came before any write: then the data directory is as it was.
        // (Its --dry-run would tell too, but fetches everything it would copy.)
        let before = datadir::fingerprint(data_dir)
            .context("cannot read the data directory")
            .map_err(Rewind::Impossible)?;
        // File times advance in ticks of up to 10 ms: after this pause, any
        // write gets a time the fingerprint has not seen.
        std::thread::sleep(TIMESTAMP_TICK * 2);
        datadir::mark_rewind_started(self.paths)
            .context("cannot write the rewind mark")
            .map_err(Rewind::Impossible)?;
        logln!("rewinding {} to rejoin {peer}", data_dir.display());
        let started = Instant::now();
        let mut rewind = self.programs.command("pg_rewind");
        rewind
            .arg("--target-pgdata")
            .arg(data_dir)
            .arg(format!(
                "--source-server={}",
                self.conninfo(peer, Some("postgres"))
            ))
            .arg("--progress")
            .args(flush.rewind_options());
        if let Err(err) = programs::run(&mut rewind, "pg_rewind", self.limits, self.cancel) {
            let untouched = datadir::fingerprint(data_dir).is_ok_and(|after| after == before);
            if untouched && datadir::clear_rewind_mark(self.paths).is_ok() {
                return Err(Rewind::Impossible(err));
            }
            return Err(Rewind::Failed(err));
        }
        self.point_at(data_dir, peer)
            .context("cannot write the standby configuration")
            .map_err(Rewind::Failed)?;
        datadir::clear_rewind_mark(self.paths)
            .context("cannot remove the rewind mark")
            .map_err(Rewind::Failed)?;
        logln!(
            "rewound {} in {:.1} s",
            data_dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A former primary on the timeline its peer writes was a primary beside
    /// it, not before it (a promotion would have begun a new timeline): two
    /// primaries on one timeline, as after a restored backup. Their histories
    /// differ, yet pg_rewind compares timelines only, finds "no rewind
    /// required", and the node then cannot stream; only a clone rejoins it.
    fn refuse_same_timeline(
        &self,
        peer: &Endpoint,
        options: &ConnectOptions,
        asker: &Asker,
    ) -> anyhow::Result<()> {
        let local = datadir::checkpoint_timeline(&self.paths.data_dir)
            .context("cannot read the data directory's timeline")?;
        let (_, current) = asker
            .checkpoint_timelines(options)
            .map_err(|failure| anyhow!("cannot read the timelines of {peer}: {}", failure.cause))?;
        if local == current {
            bail!(
                "this data directory was a primary on timeline {local}, the timeline {peer} writes: \
                 two primaries on one timeline have diverged in a way pg_rewind cannot see"
            );
        }
        Ok(())
    }

    /// Makes sure the source's last checkpoint is on its current timeline:
    /// asks for a checkpoint, else waits for the one a promotion requests.
    fn wait_for_source_checkpoint(
        &self,
        peer: &Endpoint,
        options: &ConnectOptions,
        asker: &Asker,
    ) -> anyhow::Result<()> {
        let (checkpoint, current) = asker
            .checkpoint_timelines(options)
            .map_err(|failure| anyhow!("cannot read the timelines of {peer}: {}", failure.cause))?;
        if checkpoint == current {
            return Ok(());
        }
        logln!(
            "{peer} was just promoted (last checkpoint on timeline {checkpoint}, writing timeline {current}); asking it for a checkpoint so pg_rewind sees the new timeline"
        );
        if let Err(failure) = asker.request_checkpoint(options) {
            logln!(
                "cannot request a checkpoint on {peer} ({}); waiting up to {:.0} s for its own",
                failure.cause,
                self.checkpoint_wait.as_secs_f64()
            );
        }
        let started = Instant::now();
        loop {
            let (checkpoint, current) = asker.checkpoint_timelines(options).map_err(|failure| {
                anyhow!("cannot read the timelines of {peer}: {}", failure.cause)
            })?;
            if checkpoint == current {
                return Ok(());
            }
            if started.elapsed() >= self.checkpoint_wait || self.cancel.is_set() {
                return Err(anyhow!(
                    "{peer}'s last checkpoint is still on timeline {checkpoint} (it writes timeline {current}); pg_rewind would find nothing to rewind"
                ));
            }
            self.cancel.sleep(Duration::from_secs(1));
        }
    }

    fn staged_clone(&self, peer: &Endpoint) -> anyhow::Result<()> {
        self.init_staging()?;
        let result = self.basebackup(peer).and_then(|()| {
            self.point_at(&self.paths.staging, peer)
                .context("cannot write the standby configuration")
        });
        let result = result.and_then(|()| self.swap_in());
        if result.is_err() {
            datadir::discard_staging(self.paths);
        }
        result
    }

    fn basebackup(&self, peer: &Endpoint) -> anyhow::Result<()> {
        let mut command = self.programs.command("pg_basebackup");
        command
            .arg("--pgdata")
            .arg(&self.paths.staging)
            .arg(format!("--dbname={}", self.conninfo(peer, None)))
            .args([
                "--wal-method=stream",
                "--write-recovery-conf",
                "--checkpoint=fast",
            ])
            .args(["--no-password", "--verbose"]);
        if let Some(rate) = self.max_rate {
            command.arg(format!("--max-rate={rate}"));
        }
        logln!("cloning {peer} into {}", self.paths.staging.display());
        let started = Instant::now();
        programs::run(&mut command, "pg_basebackup", self.limits, self.cancel)?;
        logln!("cloned {peer} in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    fn init_staging(&self) -> anyhow::Result<()> {
        datadir::ensure_parent(&self.paths.data_dir, self.owner).with_context(|| {
            format!(
                "cannot create the directory of {}",
                self.paths.data_dir.display()
            )
        })?;
        datadir::fresh_staging(self.paths, self.owner)
            .with_context(|| format!("cannot create {}", self.paths.staging.display()))
    }

    fn swap_in(&self) -> anyhow::Result<()> {
        datadir::swap_in(self.paths).with_context(|| {
            format!(
                "cannot move {} into place at {}",
                self.paths.staging.display(),
                self.paths.data_dir.display()
            )
        })?;
        logln!(
            "moved the new data directory into place at {}",
            self.paths.data_dir.display()
        );
        Ok(())
    }

    /// standby.signal and a primary_conninfo for `peer` in `dir`.
    fn point_at(&self, dir: &Path, peer: &Endpoint) -> anyhow::Result<()> {
        datadir::write_standby_config(dir, &self.conninfo(peer, None), self.owner)?;
        Ok(())
    }

    /// A connection string for `peer` as the replication user. The password
    /// comes from the passfile (`PGPASSFILE` for our children, `passfile=` for
    /// the WAL receiver), so the string never holds it. TLS is spelt out: the
    /// WAL receiver reads none of our variables.
    pub fn conninfo(&self, peer: &Endpoint, dbname: Option<&str>) -> String {
        let timeout = self.connect_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut parts = vec![
            ("host", peer.host.clone()),
            ("port", peer.port.to_string()),
            ("user", self.replication_user.to_string()),
        ];
        if let Some(dbname) = dbname {
            parts.push(("dbname", dbname.to_string()));
        }
        if let Some(passfile) = self.passfile {
            parts.push(("passfile", passfile.display().to_string()));
        }
        parts.push(("connect_timeout", timeout.to_string()));
        parts.extend(self.tls.conninfo_keywords());
        parts
            .iter()
            .map(|(key, value)| format!("{key}={}", quote::conninfo_value(value)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a rewind did not happen: before it touched anything, or part-way.
enum Rewind {
    /// Nothing was changed (a check refused, or pg_rewind failed before writing).
    Impossible(anyhow::Error),
    /// pg_rewind may have changed the data directory.
    Failed(anyhow::Error),
}

fn has_data(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

/// Whether pg_control says the server was stopped cleanly.
fn cleanly_stopped(data_dir: &Path) -> bool {
    pgcore::control::read(data_dir).is_ok_and(|control| control.state.is_clean())
}
