//! Physical backups (`pg_basebackup`, tar, WAL streamed in, compressed with zstd on the
//! server) and point-in-time restore: pick the newest base backup before the target, lay it
//! out, and write the `restore_command`, the target and `recovery.signal`.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Read,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection as _;
use pgops_pg::{DatabaseUrl, Lsn, WalFile};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    fetch::fetch_verified,
    manifest::{self, DumpFormat, FileEntry, Kind, Manifest, WalRange},
    programs,
    progress::Progress,
    repo::Store,
    staging::{Staging, connect, new_id},
    timeline::{Archive, Plan, Until},
};

#[derive(Deserialize)]
struct Head {
    version: String,
    version_num: i32,
    in_recovery: bool,
}

/// The compression pg_basebackup asks of a PostgreSQL 15+ server: zstd level 3 on two
/// threads (the backup takes at most one more of the server's cores than a plain
/// `pg_basebackup`, as pgBackRest's `process-max=2` does). Compression is what a base backup
/// of a large database waits for; `docs/benchmarks.md` has the figures.
pub const SERVER_COMPRESSION: &str = "server-zstd:level=3,workers=2";

/// The same on one thread, for a server whose zstd library was built without threads.
const SERVER_COMPRESSION_SINGLE: &str = "server-zstd:level=3";

/// What to ask for instead when pg_basebackup failed at once because the server cannot
/// compress as asked: one thread when its zstd library was built without threads, no
/// compression when the server was built without zstd (PostgreSQL's messages for each).
fn fallback(compress: &str, stderr: &str) -> Option<&'static str> {
    if compress == SERVER_COMPRESSION && stderr.contains("could not set compression worker count") {
        Some(SERVER_COMPRESSION_SINGLE)
    } else if compress != "none" && stderr.contains("does not support compression with ZSTD") {
        Some("none")
    } else {
        None
    }
}

/// Takes a physical backup of the cluster `url` points at (a primary or a standby).
pub fn create(
    store: &dyn Store,
    url: &DatabaseUrl,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    let pg_basebackup = pgops_pg::find_program("pg_basebackup")?;
    let mut conn = connect(url)?;
    let head: Head = pgops_pg::rows::row(
        &mut conn,
        "SELECT current_setting('server_version') AS version,
                current_setting('server_version_num')::int4 AS version_num,
                pg_is_in_recovery() AS in_recovery",
        "reading the server version",
    )?;
    drop(conn);
    let started_at = Utc::now();
    let id = new_id("cluster");
    let staging = Staging::new(store, &id)?;
    let raw = staging.path.join("raw");
    // Server-side zstd (PostgreSQL 15+) sends a third of the bytes and spends the server's
    // spare cores; older servers send the tar as is and it is stored as is.
    let compress = if head.version_num >= 150_000 {
        SERVER_COMPRESSION
    } else {
        "none"
    };
    // Its version, for the manifest, asked while the backup runs rather than after.
    let mut asked_version = None;
    let mut run = |compress: &str| -> Result<_> {
        let child = programs::command(&pg_basebackup, url)
            .args([
                "--format=tar",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-password",
                // What is kept is synced as it is stored; pg_basebackup's own sync would also
                // write out the streamed WAL's tar (16 MB a segment), which is compressed and
                // deleted, and, into an encrypted repository, the plaintext base archive.
                "--no-sync",
            ])
            .arg(format!("--compress={compress}"))
            .arg("--pgdata")
            .arg(&raw)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("running {}", pg_basebackup.display())))?;
        if asked_version.is_none() {
            asked_version = Some(programs::Version::ask(&pg_basebackup));
        }
        // The base archive (nearly all of the backup) is hashed, and encrypted for an
        // encrypted repository, as pg_basebackup writes it, on this machine's other core,
        // rather than read again once it is complete.
        let finished = Arc::new(AtomicBool::new(false));
        Ok(std::thread::scope(|scope| {
            let follower = scope.spawn(|| seal_base_while_written(store, &raw, &finished));
            let output = child.wait_with_output();
            finished.store(true, Ordering::Release);
            (output, follower.join())
        }))
    };
    let (mut output, mut base) = run(compress)?;
    // A server whose zstd was built without threads, or that was built without zstd,
    // refuses at once: the backup runs again as it can be taken there.
    let mut compress = compress;
    while let Some(instead) = output.as_ref().ok().and_then(|o| {
        (!o.status.success())
            .then(|| fallback(compress, &String::from_utf8_lossy(&o.stderr)))
            .flatten()
    }) {
        tracing::info!(
            asked = compress,
            instead,
            "the server cannot compress as asked; backing up again"
        );
        // pg_basebackup removes the directory it made when it fails; whatever is left goes.
        match fs::remove_dir_all(&raw) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("clearing {}", raw.display()))(e));
            }
            _ => {}
        }
        compress = instead;
        (output, base) = run(compress)?;
    }
    let version = asked_version
        .map(programs::Version::answer)
        .unwrap_or_default();
    let output = output.map_err(Error::io(format!("running {}", pg_basebackup.display())))?;
    programs::check("pg_basebackup", url, &output)?;
    let mut base =
        base.map_err(|_| Error::Invalid("reading the base archive panicked".into()))??;
    if let Some((name, sealed)) = &base {
        let path = raw.join(name);
        let written = fs::metadata(&path)
            .map_err(Error::io(format!("reading {}", path.display())))?
            .len();
        if written != sealed.plain_bytes() {
            return Err(Error::Invalid(format!(
                "pg_basebackup's {name} changed while it was read ({} bytes read, {written} \
                 written); the backup was not stored",
                sealed.plain_bytes()
            )));
        }
    }

    #[derive(Deserialize)]
    struct BackupManifest {
        #[serde(rename = "Files")]
        files: Vec<ManifestFile>,
        #[serde(rename = "WAL-Ranges")]
        wal_ranges: Vec<Range>,
    }
    #[derive(Deserialize)]
    struct ManifestFile {
        #[serde(rename = "Size")]
        size: u64,
    }
    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: String,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    let label = fs::read(raw.join("backup_manifest"))
        .map_err(Error::io("reading pg_basebackup's backup_manifest"))?;
    let label: BackupManifest = serde_json::from_slice(&label)
        .map_err(|e| Error::Invalid(format!("pg_basebackup's backup_manifest: {e}")))?;
    let range = label
        .wal_ranges
        .first()
        .ok_or_else(|| Error::Invalid("backup_manifest has no WAL range".into()))?;
    let data_bytes: u64 = label.files.iter().map(|f| f.size).sum();

    let mut names: Vec<String> = fs::read_dir(&raw)
        .map_err(Error::io("reading pg_basebackup's output"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut stored_total = 0;
    for name in &names {
        let path = raw.join(name);
        let plain_bytes = fs::metadata(&path)
            .map_err(Error::io(format!("reading {}", path.display())))?
            .len();
        // pg_basebackup's WAL archive is a tar of whole segments, left uncompressed by
        // server-side compression: 16 MB per segment, mostly zeros after a quiet backup.
        // Compressed here (zstd level 1, faster than hashing it as it is), it is stored in a
        // few kilobytes, and encrypted in no time; restore decompresses by the name.
        let (name, path) = if name == "pg_wal.tar" {
            let compressed = raw.join("pg_wal.tar.zst");
            crate::files::compress(&path, &compressed, 1)?;
            ("pg_wal.tar.zst".to_owned(), compressed)
        } else {
            (name.clone(), path)
        };
        let name = &name;
        let key = format!("data/{name}");
        let stored_key = format!("{}{key}", manifest::prefix(&id));
        let stored = match base.take_if(|(followed, _)| followed == name) {
            Some((_, sealed)) => sealed.put(store, &stored_key)?,
            None => crate::crypto::store_file(store, &stored_key, &path)?,
        };
        stored_total += stored.bytes;
        progress.bytes(data_bytes, stored_total);
        let raw_bytes = if name.starts_with("base.tar") {
            data_bytes
        } else {
            plain_bytes
        };
        files.push(FileEntry {
            path: key,
            bytes: stored.bytes,
            raw_bytes,
            sha256: stored.sha256,
            encrypted_for: stored.encrypted_for,
            plain_sha256: stored.plain_sha256,
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        id: id.clone(),
        kind: Kind::Physical,
        database: String::new(),
        server: url.server(),
        server_version: head.version,
        tool_version: format!("pgops {}", env!("CARGO_PKG_VERSION")),
        client_version: version,
        dump_format: DumpFormat::Tar,
        started_at,
        finished_at: Utc::now(),
        files,
        tables: Vec::new(),
        wal: Some(WalRange {
            timeline: range.timeline,
            start_lsn: range.start.clone(),
            end_lsn: range.end.clone(),
        }),
        from_standby: head.in_recovery,
        tables_file: None,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_bytes(&manifest::manifest_key(&id), &json)?;
    staging.finish();
    Ok(manifest)
}

/// Waits for pg_basebackup's base archive (`base.tar`, `base.tar.zst`) to appear in `raw`
/// and seals it as it grows, until `finished`; `None` when none appeared.
fn seal_base_while_written(
    store: &dyn Store,
    raw: &Path,
    finished: &Arc<AtomicBool>,
) -> Result<Option<(String, crate::crypto::Sealed)>> {
    loop {
        let done = finished.load(Ordering::Acquire);
        let base = fs::read_dir(raw).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|name| name.starts_with("base.tar"))
        });
        if let Some(name) = base {
            let path = raw.join(&name);
            let file =
                File::open(&path).map_err(Error::io(format!("reading {}", path.display())))?;
            let sealed = crate::crypto::seal(
                store,
                &path,
                crate::files::Follow::new(file, finished.clone()),
            )?;
            return Ok(Some((name, sealed)));
        }
        if done {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Replay every archived segment.
    Latest,
    /// Stop before the first transaction committed after this time.
    Time(DateTime<Utc>),
    /// Stop at this WAL position.
    Lsn(String),
    /// Stop at a restore point created with `pgops backup restore-point NAME`.
    Name(String),
    /// Stop after this transaction id.
    Xid(String),
}

impl std::fmt::Display for Target {
    /// How an operator would say it: `restore point before_cleanup`, `2026-11-26 10:15:00 UTC`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => f.write_str("the end of the archived WAL"),
            Target::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.f UTC")),
            Target::Lsn(lsn) => write!(f, "WAL position {lsn}"),
            Target::Name(name) => write!(f, "restore point {name}"),
            Target::Xid(xid) => write!(f, "transaction {xid}"),
        }
    }
}

/// Reads a recovery target time in the forms operators copy from PostgreSQL: what `SELECT
/// now()` prints (`2026-11-30 04:37:31.546185+00`, any `+HH`, `+HH:MM` or `+HHMM` offset),
/// what server logs print (`2026-11-30 04:37:31.546 UTC`, also `GMT`), and RFC 3339
/// (`2026-11-30T04:37:31Z`). Seconds and their fraction may be left out. A time without a
/// zone is refused: which zone it meant cannot be known. Pure.
pub fn parse_target_time(text: &str) -> Result<DateTime<Utc>> {
    const FORMS: &str = "write it as PostgreSQL prints it (2026-11-30 04:37:31.546185+00, \
         2026-11-30 04:37:31 UTC) or as RFC 3339 (2026-11-30T04:37:31Z)";
    let invalid = |why: &str| Error::Invalid(format!("--target-time {text:?}: {why}; {FORMS}"));
    let (local, zone) = split_zone(text.trim());
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|form| chrono::NaiveDateTime::parse_from_str(local.trim_end(), form).ok())
    .ok_or_else(|| invalid("not a date and time"))?;
    let offset_seconds = match zone {
        Zone::Offset(seconds) => seconds,
        Zone::Unreadable(why) => return Err(invalid(&why)),
        Zone::Missing => {
            return Err(invalid(
                "it has no time zone, so the moment it names is unknown; add one (+00, UTC or Z)",
            ));
        }
    };
    chrono::FixedOffset::east_opt(offset_seconds)
        .and_then(|offset| naive.and_local_timezone(offset).single())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| invalid("the zone offset is out of range"))
}

/// The zone at the end of a timestamp.
enum Zone {
    /// Seconds east of UTC.
    Offset(i32),
    /// Something that is not a zone we can read, and why.
    Unreadable(String),
    /// No zone at all.
    Missing,
}

/// Splits a timestamp into its local part and its zone. Pure.
fn split_zone(text: &str) -> (&str, Zone) {
    for name in [" UTC", " GMT", " Z", "Z", "z"] {
        if let Some(local) = text.strip_suffix(name) {
            return (local, Zone::Offset(0));
        }
    }
    // What follows the time (which starts after the date's 10 characters): a numeric offset,
    // or a zone name we do not guess at.
    let Some(time) = text.get(11..) else {
        return (text, Zone::Missing);
    };
    if let Some(at) = time.rfind(['+', '-']) {
        let (local, zone) = text.split_at(11 + at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits = zone[1..].replace(':', "");
        let offset = match digits.len() {
            2 | 4 if digits.bytes().all(|b| b.is_ascii_digit()) => {
                let hours: i32 = digits[..2].parse().unwrap_or(99);
                let minutes: i32 = digits[2..].parse().unwrap_or(0);
                if hours <= 15 && minutes < 60 {
                    Zone::Offset(sign * (hours * 3600 + minutes * 60))
                } else {
                    Zone::Unreadable(format!("the zone offset {zone} is out of range"))
                }
            }
            _ => Zone::Unreadable(format!("cannot read the zone offset {zone:?}")),
        };
        return (local, offset);
    }
    match time.rsplit_once(' ') {
        Some((_, name)) if name.chars().any(|c| c.is_ascii_alphabetic()) => (
            &text[..text.len() - name.len()],
            Zone::Unreadable(format!(
                "the zone {name:?} is ambiguous or unknown here; use a numeric offset (+01) or UTC"
            )),
        ),
        _ => (text, Zone::Missing),
    }
}

/// Reads an LSN (`0/3000060`); anything malformed is an error, never a guess. Pure.
pub fn parse_lsn(text: &str) -> Result<Lsn> {
    text.parse::<Lsn>()
        .map_err(|_| Error::Invalid(format!("{text:?} is not an LSN; write it like 0/3000060")))
}

/// The WAL position where a segment ends. Pure.
fn segment_end(name: &str) -> Option<Lsn> {
    name.parse::<WalFile>()
        .ok()?
        .segment()
        .map(|s| s.next().start())
}

/// Chooses the base backup for `target` among physical backups (oldest first), given the
/// newest archived segment; the error says what is available. Pure.
pub fn choose<'a>(
    backups: &'a [Manifest],
    target: &Target,
    newest_segment: Option<(&str, Option<DateTime<Utc>>)>,
) -> Result<&'a Manifest> {
    let oldest = backups.first().ok_or_else(|| Error::Invalid("the repository has no physical backup; take one with `pgops backup create --kind physical`".into()))?;
    let available = format!(
        "backups finish from {} to {}; WAL is archived up to {}",
        oldest.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
        backups.last().map_or(String::new(), |b| b
            .finished_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()),
        newest_segment.map_or("nothing".to_owned(), |(name, at)| match at {
            Some(at) => format!("{name} (archived {})", at.format("%Y-%m-%d %H:%M:%S UTC")),
            None => name.to_owned(),
        })
    );
    match target {
        Target::Time(t) => {
            if let Some((_, Some(at))) = newest_segment
                && *t > at
            {
                return Err(Error::Invalid(format!(
                    "the target {} is after the newest archived WAL; {available}",
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
            backups
                .iter()
                .rev()
                .find(|b| b.finished_at < *t)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the target {} is older than the oldest backup; {available}",
                        t.format("%Y-%m-%d %H:%M:%S UTC")
                    ))
                })
        }
        Target::Lsn(lsn) => {
            let want = parse_lsn(lsn)?;
            if let Some(end) = newest_segment.and_then(|(name, _)| segment_end(name))
                && want > end
            {
                return Err(Error::Invalid(format!(
                    "the target LSN {lsn} is after the newest archived WAL; {available}"
                )));
            }
            backups
                .iter()
                .rev()
                .find(|b| {
                    b.wal
                        .as_ref()
                        .and_then(|w| parse_lsn(&w.end_lsn).ok())
                        .is_some_and(|end| end <= want)
                })
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the target LSN {lsn} is older than the oldest backup's end; {available}"
                    ))
                })
        }
        Target::Latest | Target::Name(_) | Target::Xid(_) => backups
            .last()
            .ok_or_else(|| Error::Invalid(available.clone())),
    }
}

/// How a restore recovers: the target, what the server does there, which timeline it
/// follows, and whether it becomes a standby instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where recovery stops.
    pub target: Target,
    /// Promote at the target (else pause there).
    pub promote: bool,
    /// The timeline to follow [default: the newest in the archive, as PostgreSQL's `latest`].
    pub timeline: Option<u32>,
    /// This base backup instead of the newest one that leads to the target.
    pub backup: Option<String>,
    /// A standby: `standby.signal`, no target, following every new timeline.
    pub standby: bool,
    /// For a standby, where it streams from (no password: the server's user reads it from its
    /// passfile); without it the standby follows the archive alone.
    pub primary_conninfo: Option<String>,
    /// A file of `VAR=value` lines `restore_command` reads before fetching (S3 credentials,
    /// the key file's variable): a server started by systemd or `pg_ctl` has none of the
    /// caller's environment. Its path goes into the configuration, never its contents.
    pub env_file: Option<PathBuf>,
}

impl Recovery {
    /// Recovery to `target`, promoting there, on the newest timeline.
    pub fn to(target: Target) -> Self {
        Recovery {
            target,
            promote: true,
            timeline: None,
            backup: None,
            standby: false,
            primary_conninfo: None,
            env_file: None,
        }
    }

    /// A standby that follows the archive (and `primary_conninfo`, when given).
    pub fn standby(primary_conninfo: Option<String>) -> Self {
        Recovery {
            standby: true,
            primary_conninfo,
            ..Recovery::to(Target::Latest)
        }
    }
}

/// What a point-in-time restore laid out.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The base backup used.
    pub backup: String,
    /// The recovery target.
    pub target: Target,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// Laid out as a standby.
    pub standby: bool,
    /// How far the archived WAL on that timeline reaches from the backup.
    pub archive_reaches: Option<String>,
    /// The data directory.
    pub dir: String,
}

/// The start of a physical backup's WAL: its timeline and position.
fn wal_start(m: &Manifest) -> Option<(u32, Lsn)> {
    let range = m.wal.as_ref()?;
    Some((range.timeline, range.start_lsn.parse().ok()?))
}

/// The base backup and the walk through the archive a restore will make. Reads the times of a
/// few segments for a time target; everything else comes from `archive`.
pub fn plan(
    store: &dyn Store,
    archive: &mut Archive,
    backups: &[Manifest],
    recovery: &Recovery,
) -> Result<(Manifest, Plan)> {
    let target = &recovery.target;
    let timeline = match recovery.timeline {
        Some(t) => {
            if !archive.timelines().contains(&t) && t != 1 {
                return Err(Error::Invalid(format!(
                    "--target-timeline {t}: the archive holds no WAL of timeline {t}; it holds {}",
                    archive.describe()
                )));
            }
            t
        }
        None => archive.newest_timeline().unwrap_or(1),
    };
    let path = archive.path(timeline)?;
    let on_path: Vec<Manifest> = backups
        .iter()
        .filter(|m| wal_start(m).is_some_and(|(tli, start)| Archive::on_path(&path, tli, start)))
        .cloned()
        .collect();
    if on_path.is_empty() && !backups.is_empty() {
        let starts: Vec<String> = backups
            .iter()
            .filter_map(|m| wal_start(m).map(|(t, s)| format!("{} (timeline {t} at {s})", m.id)))
            .collect();
        return Err(Error::Invalid(format!(
            "no physical backup lies on timeline {timeline}'s history: the backups start at {}; \
             the archive holds {}. Take a backup of the current primary (`pgops backup create \
             --kind physical`), or give --target-timeline",
            starts.join(", "),
            archive.describe()
        )));
    }
    // How far the archive reaches along the path, and when that was archived.
    let oldest_start = on_path
        .iter()
        .filter_map(wal_start)
        .map(|(_, s)| s)
        .min()
        .unwrap_or_default();
    let candidates = archive.candidates(&path, oldest_start);
    let newest = candidates
        .iter()
        .rev()
        .find(|s| archive.segments.contains(s))
        .copied();
    if let Some(newest) = newest {
        archive.load_times(store, &[newest])?;
    }
    let newest_at = newest.and_then(|s| archive.archived_at.get(&s).copied());
    let newest_name = newest.map(|s| s.name());
    let chosen = match &recovery.backup {
        Some(id) => {
            let m = on_path.iter().find(|m| &m.id == id).ok_or_else(|| {
                if backups.iter().any(|m| &m.id == id) {
                    Error::Invalid(format!(
                        "backup {id} does not lie on timeline {timeline}'s history (it was taken \
                         on a branch that timeline left); the archive holds {}",
                        archive.describe()
                    ))
                } else {
                    Error::NotFound(id.clone())
                }
            })?;
            // The target must still come after the backup.
            choose(
                std::slice::from_ref(m),
                target,
                newest_name.as_deref().map(|n| (n, newest_at)),
            )
        }
        None => choose(
            &on_path,
            target,
            newest_name.as_deref().map(|n| (n, newest_at)),
        ),
    };
    let chosen = match chosen {
        Ok(m) => m.clone(),
        Err(e) => {
            // Past the end of this history: say so if the target lies on an abandoned branch.
            if let Some(why) = abandoned_only(store, archive, &path, target, newest)? {
                return Err(Error::Invalid(why));
            }
            return Err(e);
        }
    };
    let (_, start) = wal_start(&chosen).ok_or_else(|| Error::Corrupt {
        id: chosen.id.clone(),
        file: "manifest.json".into(),
        detail: "its WAL start is missing or not an LSN".into(),
    })?;
    let until = match target {
        Target::Lsn(lsn) => Until::Lsn(parse_lsn(lsn)?),
        Target::Time(t) => {
            first_archived_after(store, archive, &path, start, *t)?;
            Until::Time(*t)
        }
        Target::Latest | Target::Name(_) | Target::Xid(_) => Until::End,
    };
    // The backup carries the WAL from its start to its end (pg_wal.tar): those segments need
    // no archive, so a backup restores to its own end even where nothing was archived.
    let mut with_backup = archive.clone();
    if let Some((tli, end)) = chosen
        .wal
        .as_ref()
        .and_then(|w| Some((w.timeline, w.end_lsn.parse::<Lsn>().ok()?)))
    {
        for number in start.segment(tli).number..=end.segment(tli).number {
            with_backup.segments.insert(pgops_pg::Segment {
                timeline: tli,
                number,
            });
        }
    }
    let plan = with_backup.plan(&path, start, until);
    if !plan.gaps.is_empty() {
        let gaps: Vec<String> = plan.gaps.iter().map(ToString::to_string).collect();
        let first = &plan.gaps[0];
        return Err(Error::Invalid(format!(
            "the restore to {target} on timeline {timeline} from backup {} would need WAL the \
             archive lacks: {}. Recovery would stop at {} and promote there, silently short of \
             the target; nothing was written. Recover to a point before the gap (--target-lsn {}), \
             or restore the missing files into the archive (`pgops wal push` from a server's \
             pg_wal that still has them)",
            chosen.id,
            gaps.join("; "),
            first.from,
            first.from
        )));
    }
    if let Some(keys) = store.keys() {
        // Every segment recovery reads must be readable with the keys given: a restore that
        // cannot read one would stop there and promote, short of the target.
        for name in &plan.segments {
            if let Some(sum) = crate::wal::sum(store, name)?
                && !sum.encrypted_for.is_empty()
                && !keys.can_read(&sum.encrypted_for)
            {
                return Err(Error::Invalid(format!(
                    "WAL segment {name} was encrypted for {}, and none of the secret keys given \
                     ({}) is that key; add it to PGOPS_REPO_IDENTITIES_FILE (rotation keeps the \
                     old keys listed); nothing was written",
                    sum.encrypted_for.join(", "),
                    keys.identity_names().join(", ")
                )));
            }
        }
    }
    Ok((chosen, plan))
}

/// Finds (reading times by bisection) the first segment on `path` after `start` archived at
/// or after `t`, so that the plan knows where a time target stops.
fn first_archived_after(
    store: &dyn Store,
    archive: &mut Archive,
    path: &[crate::timeline::Span],
    start: Lsn,
    t: DateTime<Utc>,
) -> Result<()> {
    let present: Vec<pgops_pg::Segment> = archive
        .candidates(path, start)
        .into_iter()
        .filter(|s| archive.segments.contains(s))
        .collect();
    let (mut lo, mut hi) = (0, present.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        archive.load_times(store, &present[mid..=mid])?;
        match archive.archived_at.get(&present[mid]) {
            Some(at) if *at >= t => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(())
}

/// When `target` is past the end of `path`'s WAL but inside WAL another timeline wrote after
/// the history left it (an old primary that went on writing after a promotion): why the
/// restore is refused, with what the repository holds.
fn abandoned_only(
    store: &dyn Store,
    archive: &mut Archive,
    path: &[crate::timeline::Span],
    target: &Target,
    newest: Option<pgops_pg::Segment>,
) -> Result<Option<String>> {
    let timeline = path.last().map_or(1, |s| s.timeline);
    let off_path: Vec<pgops_pg::Segment> = archive
        .segments
        .iter()
        .filter(|s| crate::timeline::provider(path, s.number) != s.timeline)
        .filter(|s| newest.is_none_or(|n| s.number >= n.number))
        .copied()
        .collect();
    let found = match target {
        Target::Lsn(lsn) => {
            let lsn = parse_lsn(lsn)?;
            off_path
                .iter()
                .find(|s| s.start() <= lsn && lsn < s.next().start())
                .copied()
        }
        Target::Time(t) => {
            let mut newest_per_timeline: BTreeMap<u32, pgops_pg::Segment> = BTreeMap::new();
            for s in &off_path {
                newest_per_timeline.insert(s.timeline, *s);
            }
            let last: Vec<_> = newest_per_timeline.into_values().collect();
            archive.load_times(store, &last)?;
            last.into_iter()
                .find(|s| archive.archived_at.get(s).is_some_and(|at| at >= t))
        }
        _ => None,
    };
    Ok(found.map(|s| {
        let left = path
            .iter()
            .find(|span| span.timeline == s.timeline)
            .and_then(|span| span.end)
            .map_or(String::new(), |e| {
                format!(", which timeline {timeline}'s history left at {e}")
            });
        format!(
            "the target {target} lies only on timeline {}{left}: WAL written there after another \
             server was promoted (an abandoned branch, in {}), not on timeline {timeline} that \
             the cluster went on with. The archive holds {}. To recover the abandoned branch \
             anyway, give --target-timeline {}",
            s.timeline,
            s.name(),
            archive.describe(),
            s.timeline
        )
    }))
}

/// Whether the primary `url` archives its WAL, and then waits up to `timeout` until the
/// segment holding the backup's end is archived (`pg_stat_archiver`): until then the backup
/// is whole (its WAL is inside it), but nothing after it can be recovered, and `wal check`
/// or `backup verify` would find the archive short. pg_basebackup streams the WAL it needs
/// and does not wait for the archive itself. `Ok(None)`: nothing to wait for (a standby, or
/// no archiving); `Ok(Some(false))`: not archived in time.
pub fn wait_until_archived(
    url: &DatabaseUrl,
    manifest: &Manifest,
    timeout: std::time::Duration,
) -> Result<Option<bool>> {
    let Some(range) = &manifest.wal else {
        return Ok(None);
    };
    let end = parse_lsn(&range.end_lsn)?;
    let needed = Lsn(end.0.saturating_sub(1)).segment(range.timeline);
    let mut conn = connect(url)?;
    #[derive(Deserialize)]
    struct Archiving {
        archives: bool,
        last: Option<String>,
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now: Archiving = pgops_pg::rows::row(
            &mut conn,
            "SELECT current_setting('archive_mode') IN ('on', 'always') AND NOT pg_is_in_recovery() AS archives,
                    (SELECT last_archived_wal FROM pg_stat_archiver) AS last",
            "reading pg_stat_archiver",
        )?;
        if !now.archives {
            return Ok(None);
        }
        // The last file may be a segment, or the backup's own history file
        // (`...07.00000028.backup`, archived after the segment it names).
        let archived = now
            .last
            .as_deref()
            .and_then(|name| name.parse::<WalFile>().ok())
            .and_then(WalFile::segment)
            .is_some_and(|last| {
                last.timeline > needed.timeline
                    || (last.timeline == needed.timeline && last.number >= needed.number)
            });
        if archived {
            return Ok(Some(true));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Some(false));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Lays out the base backup that leads to the recovery target in `dir` (which must be empty
/// or absent), with `restore_command` fetching from `repo_url`, the target and the timeline to
/// follow; start PostgreSQL on `dir` to recover. The timeline history is followed and every
/// checksum verified before anything is written to `dir`: a restore that would run into a gap
/// in the archive is refused.
pub fn restore_to_dir(
    store: &dyn Store,
    repo_url: &str,
    pgops: &Path,
    recovery: &Recovery,
    dir: &Path,
) -> Result<Restored> {
    let target = &recovery.target;
    let env_file = match &recovery.env_file {
        Some(path) => crate::wal::env_file_prefix(path)?,
        None => String::new(),
    };
    if recovery.standby && *target != Target::Latest {
        return Err(Error::Invalid(
            "a standby follows the primary and takes no recovery target; leave out --target-*"
                .into(),
        ));
    }
    if dir.exists()
        && fs::read_dir(dir)
            .map_err(Error::io(format!("reading {}", dir.display())))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} is not empty; give an empty or new directory",
            dir.display()
        )));
    }
    let backups: Vec<Manifest> = crate::list(store)?
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.kind == Kind::Physical)
        .collect();
    let mut archive = Archive::read(store)?;
    let (chosen, plan) = plan(store, &mut archive, &backups, recovery)?;
    let chosen = &chosen;
    let work = tempfile::Builder::new()
        .prefix("pgops-pitr-")
        .tempdir()
        .map_err(Error::io("creating a work directory"))?;
    fetch_verified(store, chosen, work.path())?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(format!("creating {}", dir.display())))?;
    let unpack = |name: &str, into: &Path| -> Result<()> {
        let path = work.path().join("data").join(name);
        if !path.exists() {
            return Ok(());
        }
        let file = File::open(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        let reader: Box<dyn Read> = if name.ends_with(".zst") {
            // Decompression on one core, unpacking into files on the other.
            Box::new(crate::files::ReadAhead::spawn(
                zstd::stream::read::Decoder::new(file).map_err(Error::io("starting zstd"))?,
            ))
        } else {
            Box::new(file)
        };
        crate::files::unpack(reader, into).map_err(Error::io(format!(
            "unpacking {name} into {}",
            into.display()
        )))
    };
    let base = chosen
        .files
        .iter()
        .find(|f| f.path.starts_with("data/base.tar"))
        .ok_or_else(|| Error::Corrupt {
            id: chosen.id.clone(),
            file: "data/base.tar*".into(),
            detail: "the manifest lists no base archive".into(),
        })?;
    unpack(base.path.trim_start_matches("data/"), dir)?;
    let wal_dir = dir.join("pg_wal");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&wal_dir)
        .map_err(Error::io("creating pg_wal"))?;
    if let Some(wal_tar) = chosen
        .files
        .iter()
        .find(|f| f.path.starts_with("data/pg_wal.tar"))
    {
        unpack(wal_tar.path.trim_start_matches("data/"), &wal_dir)?;
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // An encrypted repository: the restored server reads WAL with the same key file (its
    // path, never a key, on the command line; the server's user must be able to read it).
    let key_file = match store.keys() {
        Some(keys) => match keys.identities_file() {
            Some(path) => format!(
                "PGOPS_REPO_IDENTITIES_FILE={} ",
                crate::wal::shell_quote(&path.display().to_string())
            ),
            None => {
                return Err(Error::Invalid(
                    "the repository is encrypted: give the secret keys as a file \
                     (PGOPS_REPO_IDENTITIES_FILE, readable by the server's OS user), which the \
                     restored server's restore_command reads WAL with"
                        .into(),
                ));
            }
        },
        None => String::new(),
    };
    let restore_command = format!(
        "{env_file}{key_file}{} wal fetch --repo {} %f %p",
        pgops.display(),
        quote(repo_url)
    );
    // A backup taken from a standby carries its standby.signal; a Patroni node's, a
    // primary_conninfo. Only what is asked for here stays.
    let _ = fs::remove_file(dir.join("standby.signal"));
    let _ = fs::remove_file(dir.join("recovery.signal"));
    // A Patroni node's configuration also names its replication slot, and a primary's its
    // synchronous standbys, neither of which exists for the restored server.
    let mut settings = format!(
        "\n# written by pgops backup restore from {}\nrestore_command = {}\nprimary_slot_name = ''\n",
        chosen.id,
        quote(&restore_command)
    );
    if recovery.standby {
        // A standby follows every promotion; when it is promoted itself it archives again.
        settings.push_str("recovery_target_timeline = 'latest'\n");
        settings.push_str(&format!(
            "primary_conninfo = {}\n",
            quote(recovery.primary_conninfo.as_deref().unwrap_or(""))
        ));
    } else {
        settings.push_str(&format!(
            "recovery_target_timeline = '{}'\nprimary_conninfo = ''\n\
             # a restored copy must not archive into the repository it came from; turn archiving\n\
             # back on (archive_mode, a restart) once this server is to replace the primary\n\
             archive_mode = 'off'\nsynchronous_standby_names = ''\n",
            plan.timeline
        ));
    }
    match target {
        Target::Latest => {}
        Target::Time(t) => settings.push_str(&format!(
            "recovery_target_time = '{}'\n",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00")
        )),
        Target::Lsn(lsn) => settings.push_str(&format!("recovery_target_lsn = {}\n", quote(lsn))),
        Target::Name(name) => {
            settings.push_str(&format!("recovery_target_name = {}\n", quote(name)))
        }
        Target::Xid(xid) => settings.push_str(&format!("recovery_target_xid = {}\n", quote(xid))),
    }
    if *target != Target::Latest {
        settings.push_str(&format!(
            "recovery_target_action = '{}'\n",
            if recovery.promote { "promote" } else { "pause" }
        ));
    }
    let auto = dir.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&settings);
    fs::write(&auto, text).map_err(Error::io(format!("writing {}", auto.display())))?;
    let signal = if recovery.standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    fs::write(dir.join(signal), b"").map_err(Error::io(format!("writing {signal}")))?;
    Ok(Restored {
        backup: chosen.id.clone(),
        target: target.clone(),
        timeline: plan.timeline,
        standby: recovery.standby,
        archive_reaches: plan.reaches.map(|l| l.to_string()),
        dir: dir.display().to_string(),
    })
}

/// Creates a named restore point on the server; returns its LSN.
pub fn restore_point(url: &DatabaseUrl, name: &str) -> Result<String> {
    if name.is_empty() || name.len() > 63 {
        return Err(Error::Invalid(
            "give a restore point name of 1 to 63 characters".into(),
        ));
    }
    let mut conn = connect(url)?;
    #[derive(Deserialize)]
    struct Point {
        lsn: String,
    }
    let point: Point = pgops_pg::rows::row(
        &mut conn,
        &format!(
            "SELECT pg_create_restore_point({})::text AS lsn",
            pgops_pg::quote_literal(name)
        ),
        "creating the restore point",
    )?;
    // Make the restore point's segment archivable now.
    let _ = conn.batch_execute("SELECT pg_switch_wal()");
    Ok(point.lsn)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_server_that_cannot_compress_as_asked_is_told_apart_from_other_failures() {
        use super::{SERVER_COMPRESSION, SERVER_COMPRESSION_SINGLE, fallback};
        // pg_basebackup's reports (basebackup_zstd.c; the second as a server built without
        // zstd answers).
        let no_threads = "pg_basebackup: error: could not initiate base backup: ERROR:  could \
                          not set compression worker count to 2: Unsupported parameter";
        let no_zstd = "pg_basebackup: error: could not initiate base backup: ERROR:  invalid \
                       compression specification: this build does not support compression \
                       with ZSTD";
        assert_eq!(
            fallback(SERVER_COMPRESSION, no_threads),
            Some(SERVER_COMPRESSION_SINGLE)
        );
        assert_eq!(fallback(SERVER_COMPRESSION, no_zstd), Some("none"));
        assert_eq!(fallback(SERVER_COMPRESSION_SINGLE, no_zstd), Some("none"));
        // Each fallback is tried once: no loop.
        assert_eq!(fallback(SERVER_COMPRESSION_SINGLE, no_threads), None);
        assert_eq!(fallback("none", no_zstd), None);
        assert_eq!(
            fallback(
                SERVER_COMPRESSION,
                "pg_basebackup: error: connection to server failed: FATAL:  no pg_hba.conf entry"
            ),
            None
        );
    }

    #[test]
    fn targets_read_as_an_operator_says_them() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Target::Time(t).to_string(), "2026-11-26 10:15:00 UTC");
        assert_eq!(
            Target::Name("before_cleanup".into()).to_string(),
            "restore point before_cleanup"
        );
        assert_eq!(
            Target::Lsn("0/3000060".into()).to_string(),
            "WAL position 0/3000060"
        );
        assert_eq!(Target::Xid("742".into()).to_string(), "transaction 742");
        assert_eq!(Target::Latest.to_string(), "the end of the archived WAL");
    }

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn target_times_are_read_in_the_forms_postgresql_prints_and_rfc_3339() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        for (text, expected) in [
            (
                "2026-11-30 04:37:31.546185+00",
                "2026-11-30T04:37:31.546185Z",
            ),
            (
                "2026-11-30 05:37:31.546185+01",
                "2026-11-30T04:37:31.546185Z",
            ),
            ("2026-11-30 10:07:31+05:30", "2026-11-30T04:37:31Z"),
            ("2026-11-29 20:37:31-0800", "2026-11-30T04:37:31Z"),
            ("2026-11-30 04:37:31 UTC", "2026-11-30T04:37:31Z"),
            ("2026-11-30 04:37:31.546 UTC", "2026-11-30T04:37:31.546Z"),
            ("2026-11-30 04:37:31 GMT", "2026-11-30T04:37:31Z"),
            ("2026-11-30T04:37:31Z", "2026-11-30T04:37:31Z"),
            ("2026-11-30T04:37:31.5+00:00", "2026-11-30T04:37:31.5Z"),
            (" 2026-11-30 04:37Z ", "2026-11-30T04:37:00Z"),
        ] {
            assert_eq!(parse_target_time(text).unwrap(), utc(expected), "{text:?}");
        }
    }

    #[test]
    fn target_times_without_a_readable_zone_are_refused_with_what_to_add() {
        for (text, says) in [
            ("2026-11-30 04:37:31", "has no time zone"),
            ("2026-11-30T04:37:31.5", "has no time zone"),
            ("2026-11-30 04:37:31 CET", "use a numeric offset"),
            ("2026-11-30 04:37:31+25", "out of range"),
            ("2026-11-30 04:37:31+1", "cannot read the zone offset"),
            ("yesterday", "not a date and time"),
            ("2026-13-30 04:37:31+00", "not a date and time"),
        ] {
            let message = parse_target_time(text).unwrap_err().to_string();
            assert!(message.contains(says), "{text:?}: {message}");
            assert!(message.contains("2026-11-30T04:37:31Z"), "{message}");
        }
    }

    fn backup(id: &str, minute: u32, end_lsn: &str) -> Manifest {
        Manifest {
            format: 1,
            id: id.into(),
            kind: Kind::Physical,
            database: String::new(),
            server: "db:5432".into(),
            server_version: "15".into(),
            tool_version: "pgops".into(),
            client_version: String::new(),
            dump_format: DumpFormat::Tar,
            started_at: Utc.with_ymd_and_hms(2026, 11, 26, 10, minute, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 26, 10, minute, 30).unwrap(),
            files: Vec::new(),
            tables: Vec::new(),
            wal: Some(WalRange {
                timeline: 1,
                start_lsn: "0/1000000".into(),
                end_lsn: end_lsn.into(),
            }),
            from_standby: false,
            tables_file: None,
        }
    }

    #[test]
    fn the_newest_backup_before_the_target_is_chosen() {
        let backups = [backup("a", 0, "0/2000100"), backup("b", 20, "0/5000100")];
        let at = |m, s| Utc.with_ymd_and_hms(2026, 11, 26, 10, m, s).unwrap();
        let newest = Some(("000000010000000000000009", Some(at(50, 0))));
        assert_eq!(
            choose(&backups, &Target::Time(at(10, 0)), newest)
                .unwrap()
                .id,
            "a"
        );
        assert_eq!(
            choose(&backups, &Target::Time(at(30, 0)), newest)
                .unwrap()
                .id,
            "b"
        );
        let err = choose(&backups, &Target::Time(at(0, 10)), newest)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("older than the oldest backup")
                && err.contains("WAL is archived up to 000000010000000000000009"),
            "{err}"
        );
        let err = choose(&backups, &Target::Time(at(55, 0)), newest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("after the newest archived WAL"), "{err}");
        assert_eq!(
            choose(&backups, &Target::Lsn("0/3000000".into()), newest)
                .unwrap()
                .id,
            "a"
        );
        assert_eq!(
            choose(&backups, &Target::Lsn("0/6000000".into()), newest)
                .unwrap()
                .id,
            "b"
        );
        assert!(choose(&backups, &Target::Lsn("0/FF000000".into()), newest).is_err());
        assert_eq!(choose(&backups, &Target::Latest, newest).unwrap().id, "b");
        assert!(
            choose(&[], &Target::Latest, None)
                .unwrap_err()
                .to_string()
                .contains("no physical backup")
        );
    }

    #[test]
    fn lsns_and_segments() {
        assert_eq!(parse_lsn("0/3000060").unwrap(), Lsn(0x3000060));
        assert_eq!(parse_lsn("1/0").unwrap(), Lsn(1 << 32));
        assert!(parse_lsn("nope").is_err());
        // Once, the high bits of an overlong half were silently dropped.
        assert!(parse_lsn("1FFFFFFFFF/0").is_err());
        assert_eq!(
            segment_end("000000010000000000000003"),
            Some(Lsn(0x4000000))
        );
    }
}
