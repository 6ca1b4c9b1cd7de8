//! A streaming replica of a test cluster: replay pause/resume, wait for a WAL position, promote.

use std::{ops::Deref, time::Duration};

use crate::{
    Cluster, Error, Lsn, Result,
    cluster::{query_text, wait_for},
};

/// A streaming replica created by [`Cluster::create_replica`]. It is a [`Cluster`] too
/// (stop, start again, crash, connect), with the standby's own controls.
#[derive(Debug)]
pub struct Replica {
    cluster: Cluster,
}

impl Replica {
    pub(crate) fn new(cluster: Cluster) -> Self {
        Replica { cluster }
    }

    /// Asks the startup process to stop applying WAL (`pg_wal_replay_pause()`). WAL keeps
    /// arriving, so the replica falls behind until [`Replica::resume_replay`].
    pub fn pause_replay(&self) -> Result<()> {
        self.execute("postgres", "SELECT pg_wal_replay_pause()")
    }

    /// Applies WAL again (`pg_wal_replay_resume()`).
    pub fn resume_replay(&self) -> Result<()> {
        self.execute("postgres", "SELECT pg_wal_replay_resume()")
    }

    /// The last WAL position applied (`pg_last_wal_replay_lsn()`).
    pub fn replay_lsn(&self) -> Result<Lsn> {
        self.lsn_of("pg_last_wal_replay_lsn()")
    }

    /// Waits until the replica has applied WAL up to `lsn`.
    pub fn wait_for_lsn(&self, lsn: Lsn, timeout: Duration) -> Result<()> {
        let mut conn = self.connect("postgres")?;
        wait_for(&format!("replay to reach {lsn}"), timeout, || {
            let text = query_text(&mut conn, "pg_last_wal_replay_lsn()")?
                .ok_or_else(|| Error::Pg(pgops_pg::Error::InvalidLsn("NULL".into())))?;
            Ok(text.parse::<Lsn>()? >= lsn)
        })
    }

    /// Waits until the replica has applied everything `primary` had written when called.
    pub fn catch_up(&self, primary: &Cluster, timeout: Duration) -> Result<()> {
        let target = primary.current_wal_lsn()?;
        self.wait_for_lsn(target, timeout)
    }

    /// Whether the server is still a standby (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> Result<bool> {
        Ok(self
            .query_text("postgres", "pg_is_in_recovery()")?
            .as_deref()
            == Some("true"))
    }

    /// Promotes the replica to a primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<()> {
        let promoted = self.query_text("postgres", "pg_promote(true, 60)")?;
        if promoted.as_deref() != Some("true") {
            return Err(Error::Timeout {
                what: "promotion".into(),
                waited: Duration::from_secs(60),
            });
        }
        Ok(())
    }
}

impl Deref for Replica {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}
