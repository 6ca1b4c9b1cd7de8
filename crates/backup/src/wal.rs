//! The WAL archive: `pgops wal push %p` as `archive_command` and `pgops wal fetch %f %p` as
//! `restore_command`. Segments are compressed and checksummed; a segment is archived only
//! once its checksum object is written (after its data); history is never overwritten.
//!
//! A file `NAME` is stored as its checksum object `wal/NAME.sha256.json` and the data object
//! that object names, `wal/NAME.<first 16 hex digits of the stored bytes' SHA-256>.zst`
//! (`.zst.age` when encrypted). Naming the data by its bytes means two pushes of one name
//! racing never write one object with different content: whichever checksum object wins, the
//! data it names is the data it was written for, and the loser removes its own.

use std::{
    fs::{self, File},
    path::Path,
};

use pgops_pg::{Segment, WalFile};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    files::{decompress, private_file, sha_of},
    repo::Store,
};

/// What `push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored now.
    Stored,
    /// Already in the archive with the same content (PostgreSQL retried after a crash).
    AlreadyArchived,
}

/// The checksum object of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSum {
    /// The file name (`000000010000000000000003`, `00000002.history`, ...).
    pub name: String,
    /// Size before compression.
    pub raw_bytes: u64,
    /// SHA-256 of the segment as PostgreSQL wrote it.
    pub raw_sha256: String,
    /// Size stored.
    pub bytes: u64,
    /// SHA-256 of the stored (compressed) bytes.
    pub sha256: String,
    /// When it was archived.
    #[serde(default)]
    pub archived_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The public keys the stored object was encrypted for (empty: plaintext); the object is
    /// then `wal/NAME.zst.age`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted_for: Vec<String>,
    /// SHA-256 of the compressed segment that was encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_sha256: Option<String>,
    /// The key of the data object (`wal/NAME.<hex>.zst`, `.zst.age` when encrypted). Absent:
    /// `wal/NAME.zst` (`.zst.age`), the one object per name of repositories written before
    /// data objects were named by their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl SegmentSum {
    /// Where its data object is.
    pub fn data_key(&self) -> String {
        match &self.object {
            Some(key) => key.clone(),
            None if self.encrypted_for.is_empty() => legacy_data_key(&self.name),
            None => format!("{}.age", legacy_data_key(&self.name)),
        }
    }
}

fn legacy_data_key(name: &str) -> String {
    format!("wal/{name}.zst")
}

/// The data object of `name` whose stored bytes have SHA-256 `sha256` (before `.age`).
fn data_key(name: &str, sha256: &str) -> String {
    format!("wal/{name}.{}.zst", &sha256[..sha256.len().min(16)])
}

/// The archived file an object under `wal/` belongs to: its checksum object, its data
/// object (named by its bytes, or the one object per name of older repositories). `None`
/// for anything else. Pure.
pub fn owner(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("wal/")?;
    if let Some(name) = rest.strip_suffix(".sha256.json") {
        return Some(name);
    }
    let rest = rest.strip_suffix(".age").unwrap_or(rest);
    let rest = rest.strip_suffix(".zst")?;
    match rest.rsplit_once('.') {
        Some((name, hex)) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(name)
        }
        _ => Some(rest),
    }
}

fn sum_key(name: &str) -> String {
    format!("wal/{name}.sha256.json")
}

/// `s` as one word for `sh`, which runs `archive_command` and `restore_command`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `archive_command` or `restore_command` runs first to load `env_file`, a file of
/// `VAR=value` lines (S3 credentials, key files) the server's own environment lacks:
/// `set -a && . 'FILE' && set +a && ` (`set -a` exports what the file sets). Its path goes
/// into the server's configuration, never its contents; it must be absolute, because the
/// server runs the command in its data directory.
pub fn env_file_prefix(env_file: &Path) -> Result<String> {
    if !env_file.is_absolute() {
        return Err(Error::Invalid(format!(
            "--env-file {}: give an absolute path; the server runs archive_command and \
             restore_command in its data directory",
            env_file.display()
        )));
    }
    Ok(format!(
        "set -a && . {} && set +a && ",
        shell_quote(&env_file.display().to_string())
    ))
}

/// Checks that `name` is a WAL file name PostgreSQL archives (segment, history, backup
/// label, partial), so a typo cannot write or read elsewhere in the repository.
pub fn check_name(name: &str) -> Result<WalFile> {
    Ok(name.parse::<WalFile>()?)
}

/// Archives the file at `path` (what PostgreSQL passes as `%p`).
pub fn push(store: &dyn Store, path: &Path) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?
        .to_owned();
    check_name(&name)?;
    let (raw_bytes, raw_sha256) = sha_of(path)?;
    if let Some(existing) = sum(store, &name)? {
        return settle(store, &name, &existing, &raw_sha256);
    }
    // Staged in the system's temporary directory: the server's user may not share the
    // repository's staging directory with the user who takes backups.
    let staging = tempfile::Builder::new()
        .prefix("pgops-wal-")
        .tempdir()
        .map_err(Error::io("creating a staging directory"))?;
    let compressed = staging.path().join(format!("{name}.zst"));
    {
        let input = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
        let out = private_file(&compressed)
            .map_err(Error::io(format!("creating {}", compressed.display())))?;
        let mut encoder =
            zstd::stream::write::Encoder::new(out, 3).map_err(Error::io("starting zstd"))?;
        std::io::copy(&mut { input }, &mut encoder)
            .map_err(Error::io(format!("compressing {name}")))?;
        let out = encoder
            .finish()
            .map_err(Error::io(format!("compressing {name}")))?;
        out.sync_all()
            .map_err(Error::io(format!("syncing {}", compressed.display())))?;
    }
    let input =
        File::open(&compressed).map_err(Error::io(format!("reading {}", compressed.display())))?;
    let sealed = crate::crypto::seal(store, &compressed, input)?;
    let key = data_key(&name, &sealed.stored().sha256);
    let stored = sealed.put(store, &key)?;
    let object = if stored.encrypted_for.is_empty() {
        key
    } else {
        format!("{key}.age")
    };
    let sum = SegmentSum {
        name: name.clone(),
        raw_bytes,
        raw_sha256,
        bytes: stored.bytes,
        sha256: stored.sha256,
        archived_at: Some(chrono::Utc::now()),
        encrypted_for: stored.encrypted_for,
        compressed_sha256: stored.plain_sha256,
        object: Some(object.clone()),
    };
    let json = serde_json::to_vec(&sum).map_err(|e| Error::Invalid(e.to_string()))?;
    // The checksum object makes the file archived; written only if no other server's push
    // got there first (two nodes archiving one name at once).
    if store.put_bytes_new(&sum_key(&name), &json)? {
        return Ok(Pushed::Stored);
    }
    let Some(existing) = self::sum(store, &name)? else {
        return Err(Error::Invalid(format!(
            "{name}: another push was writing it at the same time and its checksum object \
             cannot be read; PostgreSQL will retry"
        )));
    };
    // Another push won. Its data object is named by its own bytes: ours is another object,
    // unless the bytes are the same (then it is the winner's too, and stays). Left behind, ours
    // harms nothing, and pruning takes it with the name.
    if existing.data_key() != object
        && let Err(e) = store.delete(&object)
    {
        tracing::warn!(file = %name, object = %object, error = %pgops_pg::report(&e), "could not remove the data of a push that lost the race for its name");
    }
    settle(store, &name, &existing, &sum.raw_sha256)
}

/// Two pushes of one name: the same content is a retry (or a second node archiving what
/// it received), different content is a split brain, refused and recorded.
fn settle(
    store: &dyn Store,
    name: &str,
    existing: &SegmentSum,
    raw_sha256: &str,
) -> Result<Pushed> {
    if existing.raw_sha256 == raw_sha256 {
        return Ok(Pushed::AlreadyArchived);
    }
    let conflict = Conflict {
        name: name.to_owned(),
        archived_sha256: existing.raw_sha256.clone(),
        archived_at: existing.archived_at,
        refused_sha256: raw_sha256.to_owned(),
        refused_at: chrono::Utc::now(),
        host: hostname(),
    };
    let json = serde_json::to_vec_pretty(&conflict).map_err(|e| Error::Invalid(e.to_string()))?;
    // One record per (name, refused content): a server retrying every few seconds adds none.
    let _ = store.put_bytes_new(&conflict_key(name, raw_sha256), &json);
    Err(Error::Invalid(format!(
        "{name} is already archived with different content (SHA-256 {} there, {raw_sha256} \
         here); refusing to overwrite it. Two servers are archiving the same timeline into one \
         repository (a split brain: two primaries on one timeline, or a server restored from a \
         backup archiving into the repository it came from). Stop the server that should not \
         be a primary; `pgops wal check` lists every refused push",
        existing.raw_sha256
    )))
}

/// A push refused because the archive holds other content under the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The file name.
    pub name: String,
    /// SHA-256 of what the archive holds.
    pub archived_sha256: String,
    /// When that was archived.
    pub archived_at: Option<chrono::DateTime<chrono::Utc>>,
    /// SHA-256 of what was refused.
    pub refused_sha256: String,
    /// When it was refused.
    pub refused_at: chrono::DateTime<chrono::Utc>,
    /// The host that tried to push it.
    pub host: String,
}

fn conflict_key(name: &str, sha256: &str) -> String {
    format!(
        "conflicts/wal/{name}.{}.json",
        &sha256[..sha256.len().min(16)]
    )
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Every refused push on record, oldest first.
pub fn conflicts(store: &dyn Store) -> Result<Vec<Conflict>> {
    let mut out = Vec::new();
    for key in store.list("conflicts/wal/")? {
        if let Some(bytes) = store.get_bytes(&key)?
            && let Ok(conflict) = serde_json::from_slice::<Conflict>(&bytes)
        {
            out.push(conflict);
        }
    }
    out.sort_by_key(|c| c.refused_at);
    Ok(out)
}

/// Restores archived file `name` to `dest` (what PostgreSQL passes as `%f` and `%p`), after
/// checking both checksums. `Ok(false)` when the archive does not have it (PostgreSQL asks for
/// files that may not exist).
pub fn fetch(store: &dyn Store, name: &str, dest: &Path) -> Result<bool> {
    check_name(name)?;
    let Some(sum) = store.get_bytes(&sum_key(name))? else {
        return Ok(false);
    };
    let sum: SegmentSum = serde_json::from_slice(&sum).map_err(|e| Error::Corrupt {
        id: "wal".into(),
        file: sum_key(name),
        detail: e.to_string(),
    })?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".pgops-fetch-")
        .tempdir_in(dir)
        .map_err(Error::io(format!(
            "creating a work directory in {}",
            dir.display()
        )))?;
    let stored = work.path().join("segment.stored");
    store.get_to_file(&sum.data_key(), &stored)?;
    let (bytes, sha256) = sha_of(&stored)?;
    if bytes != sum.bytes || sha256 != sum.sha256 {
        return Err(Error::Corrupt {
            id: "wal".into(),
            file: sum.data_key(),
            detail: format!(
                "expected {} bytes with SHA-256 {}, found {bytes} with {sha256}",
                sum.bytes, sum.sha256
            ),
        });
    }
    let compressed = if sum.encrypted_for.is_empty() {
        stored
    } else {
        let keys = store.keys().ok_or_else(|| {
            Error::Invalid(format!(
                "{} is encrypted; set PGOPS_REPO_IDENTITIES_FILE to read it",
                sum.data_key()
            ))
        })?;
        let plain = work.path().join("segment.zst");
        let sha = keys.decrypt_file(&stored, &plain, &sum.data_key(), &sum.encrypted_for)?;
        if sum.compressed_sha256.as_deref() != Some(sha.as_str()) {
            return Err(Error::Corrupt {
                id: "wal".into(),
                file: sum.data_key(),
                detail: "it decrypts to other bytes than were archived".into(),
            });
        }
        plain
    };
    let raw = work.path().join("segment");
    let (raw_bytes, raw_sha256) = decompress(&compressed, &raw)?;
    if raw_bytes != sum.raw_bytes || raw_sha256 != sum.raw_sha256 {
        return Err(Error::Corrupt {
            id: "wal".into(),
            file: sum.data_key(),
            detail: format!(
                "decompressed to {raw_bytes} bytes with SHA-256 {raw_sha256}, expected {} with {}",
                sum.raw_bytes, sum.raw_sha256
            ),
        });
    }
    fs::rename(&raw, dest).map_err(Error::io(format!(
        "moving the segment to {}",
        dest.display()
    )))?;
    Ok(true)
}

/// The content of a small archived file (a timeline history), checked like [`fetch`].
pub fn read_small(store: &dyn Store, name: &str) -> Result<Vec<u8>> {
    let work = tempfile::Builder::new()
        .prefix("pgops-wal-read-")
        .tempdir()
        .map_err(Error::io("creating a work directory"))?;
    let path = work.path().join("file");
    if !fetch(store, name, &path)? {
        return Err(Error::Invalid(format!("{name} is not in the archive")));
    }
    fs::read(&path).map_err(Error::io(format!("reading {name}")))
}

/// The checksum object of an archived file, when it exists.
pub fn sum(store: &dyn Store, name: &str) -> Result<Option<SegmentSum>> {
    match store.get_bytes(&sum_key(name))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                id: "wal".into(),
                file: sum_key(name),
                detail: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Names of every archived file (those whose checksum object exists), sorted.
pub fn archived(store: &dyn Store) -> Result<Vec<String>> {
    Ok(archived_in(&store.list("wal/")?))
}

/// Names of the archived files in `keys`, a sorted listing of `wal/`. Pure.
pub fn archived_in(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| {
            k.strip_prefix("wal/")
                .and_then(|k| k.strip_suffix(".sha256.json"))
                .map(str::to_owned)
        })
        .collect()
}

/// Splits archived names into WAL files and foreign objects (names PostgreSQL never
/// archives, which nothing here reads, prunes or counts). Pure.
pub fn classify(names: &[String]) -> (Vec<(String, WalFile)>, Vec<String>) {
    let mut files = Vec::new();
    let mut foreign = Vec::new();
    for name in names {
        match name.parse::<WalFile>() {
            Ok(file) => files.push((name.clone(), file)),
            Err(_) => foreign.push(name.clone()),
        }
    }
    (files, foreign)
}

/// Archived files no kept backup needs: segments (and `.backup`/`.partial` files) numbered
/// below `oldest_needed`, the oldest kept physical backup's first segment. History files and
/// foreign objects are always kept. Pure.
pub fn expendable(archived: &[String], oldest_needed: Segment) -> Vec<String> {
    classify(archived)
        .0
        .into_iter()
        .filter(|(_, file)| {
            file.segment()
                .is_some_and(|s| s.number < oldest_needed.number)
        })
        .map(|(name, _)| name)
        .collect()
}

/// Deletes an archived file: its checksum object first, so it stops counting as archived,
/// then every data object of the name among `keys` (a listing of `wal/`), which includes
/// those of pushes that never finished.
pub fn delete(store: &dyn Store, name: &str, keys: &[String]) -> Result<()> {
    store.delete(&sum_key(name))?;
    for key in keys {
        if owner(key) == Some(name) {
            store.delete(key)?;
        }
    }
    Ok(())
}

/// Gaps in a list of segment names, per timeline: the segments missing between the first
/// and the last of each timeline. Other files are ignored. Pure.
pub fn gaps(names: &[String]) -> Vec<String> {
    let mut segments: Vec<Segment> = names
        .iter()
        .filter_map(|n| match n.parse::<WalFile>() {
            Ok(WalFile::Segment(segment)) => Some(segment),
            _ => None,
        })
        .collect();
    segments.sort_unstable();
    let mut missing = Vec::new();
    for pair in segments.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.timeline == b.timeline {
            let mut next = a.next();
            while next < b {
                missing.push(next.name());
                next = next.next();
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `file://` repository in a directory removed when the first value is dropped.
    fn local_store() -> (tempfile::TempDir, Box<dyn Store>) {
        let repo = tempfile::tempdir().unwrap();
        let store = crate::repo::open(
            &format!("file://{}", repo.path().display()),
            crate::repo::Access::Create,
        )
        .unwrap();
        (repo, store)
    }

    #[test]
    fn names_postgres_archives() {
        for ok in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "00000001000000000000000",
            "00000001000000000000000G",
            "x.history",
            "aÄÄÄÄÄÄÄÄÄÄÄÄ.backup",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expendable_wal_is_below_the_oldest_needed_segment_and_never_history() {
        let archived: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "000000020000000000000003",
            "000000020000000000000004",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let oldest = pgops_pg::Lsn(0x3000028).segment(2);
        assert_eq!(
            expendable(&archived, oldest),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup"
            ]
        );
        // A foreign object in the archive is neither pruned nor a panic.
        let with_foreign = [archived.clone(), vec!["aÄÄÄÄÄÄÄÄÄÄÄÄ.backup".to_owned()]].concat();
        assert_eq!(expendable(&with_foreign, oldest).len(), 3);
        assert_eq!(classify(&with_foreign).1, ["aÄÄÄÄÄÄÄÄÄÄÄÄ.backup"]);
    }

    #[test]
    fn other_content_under_an_archived_name_is_refused_recorded_once_and_never_stored() {
        let (_repo, store) = local_store();
        let name = "000000040000000000000009";
        let [a, b] = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        fs::write(a.path().join(name), b"written by one primary").unwrap();
        fs::write(b.path().join(name), b"written by the other").unwrap();
        assert_eq!(push(&*store, &a.path().join(name)).unwrap(), Pushed::Stored);
        assert_eq!(
            push(&*store, &a.path().join(name)).unwrap(),
            Pushed::AlreadyArchived
        );
        for _ in 0..3 {
            let err = push(&*store, &b.path().join(name)).unwrap_err().to_string();
            assert!(err.contains("split brain"), "{err}");
        }
        let conflicts = conflicts(&*store).unwrap();
        assert_eq!(conflicts.len(), 1, "a retrying server adds no record");
        assert_eq!(conflicts[0].name, name);
        let back = a.path().join("back");
        assert!(fetch(&*store, name, &back).unwrap());
        assert_eq!(fs::read(&back).unwrap(), b"written by one primary");
        // The checksum object is created exclusively: a racing second writer loses.
        assert!(store.put_bytes_new("wal/x.json", b"1").unwrap());
        assert!(!store.put_bytes_new("wal/x.json", b"2").unwrap());
        assert_eq!(store.get_bytes("wal/x.json").unwrap().unwrap(), b"1");
    }

    #[test]
    fn two_pushes_of_one_name_racing_leave_the_winners_data_readable() {
        let (_repo, store) = local_store();
        let sides = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let rounds = 24;
        for round in 0..rounds {
            // Two primaries of one timeline archive one name with different content, at once.
            let name = format!("0000000500000000000000{round:02X}");
            let contents: Vec<Vec<u8>> = (0..2u8)
                .map(|side| {
                    (0..256 * 1024u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) >> (8 + side)) as u8)
                        .collect()
                })
                .collect();
            for (dir, content) in sides.iter().zip(&contents) {
                fs::write(dir.path().join(&name), content).unwrap();
            }
            let start = std::sync::Barrier::new(2);
            let results: Vec<Result<Pushed>> = std::thread::scope(|scope| {
                let pushes: Vec<_> = sides
                    .iter()
                    .map(|dir| {
                        let (store, start, path) = (&store, &start, dir.path().join(&name));
                        scope.spawn(move || {
                            start.wait();
                            push(&**store, &path)
                        })
                    })
                    .collect();
                pushes.into_iter().map(|p| p.join().unwrap()).collect()
            });
            let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {results:?}");
            let back = sides[0].path().join("back");
            assert!(fetch(&*store, &name, &back).unwrap(), "round {round}");
            assert_eq!(
                fs::read(&back).unwrap(),
                contents[won[0]],
                "round {round}: the archive serves the winner's content"
            );
        }
        // The losers removed their data objects: one per name remains.
        let keys = store.list("wal/").unwrap();
        let data = keys.iter().filter(|k| k.ends_with(".zst")).count();
        assert_eq!(data, rounds, "{keys:?}");
    }

    #[test]
    fn one_object_per_name_is_still_read_and_deleting_a_name_takes_all_of_its_objects() {
        let (_repo, store) = local_store();
        let dir = tempfile::tempdir().unwrap();
        let [old, label] = [
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
        ];
        for name in [old, label] {
            fs::write(dir.path().join(name), name.repeat(100)).unwrap();
            assert_eq!(
                push(&*store, &dir.path().join(name)).unwrap(),
                Pushed::Stored
            );
        }
        // The layout of one data object per name: the checksum object names none.
        let mut sum = sum(&*store, old).unwrap().unwrap();
        let object = sum.object.take().unwrap();
        let bytes = store.get_bytes(&object).unwrap().unwrap();
        store.put_bytes(&legacy_data_key(old), &bytes).unwrap();
        store.delete(&object).unwrap();
        store
            .put_bytes(&sum_key(old), &serde_json::to_vec(&sum).unwrap())
            .unwrap();
        let back = dir.path().join("back");
        assert!(fetch(&*store, old, &back).unwrap());
        assert_eq!(fs::read(&back).unwrap(), old.repeat(100).as_bytes());
        // A push that stopped before its checksum object left data of its own.
        let orphan = data_key(old, "0123456789abcdef0123");
        store.put_bytes(&orphan, b"unfinished").unwrap();

        delete(&*store, old, &store.list("wal/").unwrap()).unwrap();
        let left = store.list("wal/").unwrap();
        assert!(left.iter().all(|k| owner(k) == Some(label)), "{left:?}");
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn objects_belong_to_the_file_they_are_named_for() {
        let name = "000000010000000000000003";
        for key in [
            "wal/000000010000000000000003.sha256.json",
            "wal/000000010000000000000003.zst",
            "wal/000000010000000000000003.zst.age",
            "wal/000000010000000000000003.0123456789abcdef.zst",
            "wal/000000010000000000000003.0123456789abcdef.zst.age",
        ] {
            assert_eq!(owner(key), Some(name), "{key}");
        }
        assert_eq!(
            owner("wal/000000010000000000000003.00000028.backup.0123456789abcdef.zst"),
            Some("000000010000000000000003.00000028.backup")
        );
        assert_eq!(
            owner("wal/00000002.history.fedcba9876543210.zst"),
            Some("00000002.history")
        );
        for other in [
            "backups/x.zst",
            "wal/notes.txt",
            "wal/000000010000000000000003",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn gaps_are_named_within_a_timeline() {
        let names: Vec<String> = [
            "0000000100000000000000FE",
            "000000010000000100000001",
            "000000020000000100000005",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            gaps(&names),
            ["0000000100000000000000FF", "000000010000000100000000"]
        );
        assert!(gaps(&names[..1]).is_empty());
    }
}
