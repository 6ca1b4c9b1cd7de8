//! The manifest: what a backup holds and how to check it. Written last; a backup without one
//! does not exist.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, repo::Store};

/// The manifest format version.
pub const FORMAT: u32 = 1;

/// What kind of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `pg_dump` of one database.
    Logical,
    /// `pg_basebackup` of the whole cluster, for point-in-time recovery with the WAL archive.
    Physical,
}

/// How pg_dump wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// One archive (`pg_dump -Fc`).
    Custom,
    /// A directory of files (`pg_dump -Fd -j N`), for parallel dumps.
    Directory,
    /// `pg_basebackup -Ft`: `base.tar.zst`, `pg_wal.tar.zst` and `backup_manifest`.
    Tar,
}

/// Where a physical backup starts and ends in the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    /// Timeline.
    pub timeline: u32,
    /// Start LSN (`0/2000028`).
    pub start_lsn: String,
    /// End LSN: the backup is consistent once replay reaches it.
    pub end_lsn: String,
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the backup (`data/dump.zst`).
    pub path: String,
    /// Bytes stored (compressed).
    pub bytes: u64,
    /// Bytes before compression.
    pub raw_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// The public keys the stored object was encrypted for (empty: plaintext); it is then
    /// stored as `PATH.age`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted_for: Vec<String>,
    /// SHA-256 of the file that was encrypted, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_sha256: Option<String>,
}

impl FileEntry {
    /// Its key under the backup's prefix.
    pub fn stored_path(&self) -> String {
        if self.encrypted_for.is_empty() {
            self.path.clone()
        } else {
            format!("{}.age", self.path)
        }
    }
}

/// Rows of one table at the backup's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Exact row count in the dump's snapshot.
    pub rows: i64,
}

/// A backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup id (sortable by time).
    pub id: String,
    /// Its kind.
    pub kind: Kind,
    /// The database dumped.
    pub database: String,
    /// `host:port` of the server.
    pub server: String,
    /// `server_version` of the server.
    pub server_version: String,
    /// pgops's version.
    pub tool_version: String,
    /// `pg_dump --version` or `pg_basebackup --version`.
    #[serde(alias = "pg_dump_version")]
    pub client_version: String,
    /// How pg_dump wrote it.
    pub dump_format: DumpFormat,
    /// When the snapshot was taken.
    pub started_at: DateTime<Utc>,
    /// When the last byte was stored.
    pub finished_at: DateTime<Utc>,
    /// The stored files.
    pub files: Vec<FileEntry>,
    /// Row counts per table in the dump's snapshot (logical backups).
    pub tables: Vec<TableRows>,
    /// The WAL the backup spans (physical backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,
    /// Taken from a standby.
    #[serde(default)]
    pub from_standby: bool,
    /// In an encrypted repository, the row counts (which describe the data) are not in the
    /// manifest but in this encrypted file of the backup (`tables.json.age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables_file: Option<FileEntry>,
}

impl Manifest {
    /// Bytes stored.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Bytes before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.raw_bytes).sum()
    }
}

/// A verification's record, stored beside the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The backup.
    pub id: String,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Every checksum matched.
    pub checksums_ok: bool,
    /// A restore was attempted.
    pub restored: bool,
    /// The restore and every row count matched.
    pub ok: bool,
    /// Seconds the restore took.
    pub restore_seconds: Option<f64>,
    /// What did not match.
    pub problems: Vec<String>,
    /// For a physical backup, every timeline that leads on from its start.
    #[serde(default)]
    pub timelines: Vec<TimelineReport>,
    /// WAL recovery would need and the archive lacks.
    #[serde(default)]
    pub gaps: Vec<GapReport>,
    /// What is worth knowing and breaks no restore (an abandoned branch, say).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One timeline a physical backup's WAL leads on to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// The timeline it branched off.
    pub parent: Option<u32>,
    /// Where it branched off.
    pub begins_at: Option<String>,
    /// Its `.history` file is archived (timeline 1 needs none).
    pub history_archived: bool,
    /// Archived segments of this timeline.
    pub segments: usize,
    /// How far recovery along its history reaches before the first gap.
    pub reaches: Option<String>,
}

/// A run of missing WAL: the positions that cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapReport {
    /// The timeline whose segments are missing.
    pub timeline: u32,
    /// The first position lost.
    pub from_lsn: String,
    /// Where WAL resumes.
    pub to_lsn: String,
    /// The missing files.
    pub segments: Vec<String>,
}

/// The row counts recorded at backup time: from the manifest, or decrypted from its
/// encrypted tables file.
pub fn tables(store: &dyn Store, manifest: &Manifest) -> Result<Vec<TableRows>> {
    let Some(entry) = &manifest.tables_file else {
        return Ok(manifest.tables.clone());
    };
    let dir = tempfile::Builder::new()
        .prefix("pgops-tables-")
        .tempdir()
        .map_err(Error::io("creating a work directory"))?;
    let one = Manifest {
        files: vec![entry.clone()],
        ..manifest.clone()
    };
    crate::fetch::fetch_verified(store, &one, dir.path())?;
    let bytes = std::fs::read(dir.path().join(&entry.path))
        .map_err(Error::io("reading the backup's table counts"))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        id: manifest.id.clone(),
        file: entry.stored_path(),
        detail: e.to_string(),
    })
}

/// Where a backup's objects live in the repository.
pub fn prefix(id: &str) -> String {
    format!("backups/{id}/")
}

/// The manifest's key.
pub fn manifest_key(id: &str) -> String {
    format!("backups/{id}/manifest.json")
}

/// Reads a backup's manifest.
pub fn read(store: &dyn Store, id: &str) -> Result<Manifest> {
    let bytes = store
        .get_bytes(&manifest_key(id))?
        .ok_or_else(|| Error::NotFound(id.to_owned()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        id: id.to_owned(),
        file: "manifest.json".into(),
        detail: e.to_string(),
    })
}
