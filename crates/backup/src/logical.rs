//! Logical backups: `pg_dump` in a snapshot we hold open, compressed with zstd and hashed
//! while it streams, its row counts read from the archive as it passes (tables it does not
//! hold are counted in the same snapshot); restore and verify.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{BufWriter, Read, Write},
    os::unix::fs::DirBuilderExt,
    path::Path,
    process::Stdio,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    time::Instant,
};

use chrono::Utc;
use diesel::{PgConnection, RunQueryDsl, connection::SimpleConnection as _};
use pgops_pg::DatabaseUrl;
use serde::Deserialize;

use crate::{
    Error, Result,
    dump_rows::{self, Chunks, Counted, Unreadable},
    fetch::fetch_verified,
    files::{self, Hashing},
    manifest::{self, DumpFormat, FileEntry, Kind, Manifest, TableRows},
    programs,
    progress::Progress,
    repo::Store,
    staging::{Staging, connect, new_id},
};

/// How to take a logical backup.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `None`: one custom-format archive; `Some(n)`: directory format dumped by `n` jobs.
    pub jobs: Option<u32>,
    /// zstd level (1 fast .. 19 small).
    pub level: i32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            jobs: None,
            level: 3,
        }
    }
}

/// Bytes read from pg_dump at a time.
const CHUNK: usize = 1 << 20;

/// Compresses `input` into `out_path` (0600), returning (raw bytes, stored bytes, sha256).
/// Each chunk read, once compressed, goes to `tap`, which returns the buffer to read the next
/// one into.
fn compress(
    mut input: impl Read,
    out_path: &Path,
    level: i32,
    progress: &mut dyn Progress,
    done_before: (u64, u64),
    tap: &mut dyn FnMut(Vec<u8>) -> Vec<u8>,
) -> std::io::Result<(u64, u64, String)> {
    let file = files::private_file(out_path)?;
    let hashing = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let mut encoder = zstd::stream::write::Encoder::new(hashing, level)?;
    // zstd's own worker threads: compression keeps up with pg_dump on two cores.
    let _ = encoder.multithread(2);
    let mut buf = Vec::with_capacity(CHUNK);
    let mut raw = 0u64;
    let mut last = Instant::now();
    loop {
        buf.clear();
        let n = (&mut input).take(CHUNK as u64).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf)?;
        raw += n as u64;
        if last.elapsed().as_millis() >= 200 {
            progress.bytes(done_before.0 + raw, done_before.1 + encoder.get_ref().bytes);
            last = Instant::now();
        }
        buf = tap(buf);
    }
    let (file, bytes, sha256) = encoder.finish()?.finish()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    progress.bytes(done_before.0 + raw, done_before.1 + bytes);
    Ok((raw, bytes, sha256))
}

/// Counts the rows of a custom-format archive on a thread of its own, from the chunks
/// [`compress`] hands its tap; `finish` ends the input and gives the counts.
struct ArchiveCounter {
    chunks: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<std::result::Result<Counted, Unreadable>>,
}

impl ArchiveCounter {
    fn spawn() -> Self {
        let (chunks, received) = sync_channel(8);
        let (recycle, spare) = sync_channel(8);
        let thread = std::thread::spawn(move || {
            let mut input = Chunks::channel(received, recycle);
            let toc = dump_rows::read_toc(&mut input)?;
            dump_rows::count_data(&mut input, &toc)
        });
        ArchiveCounter {
            chunks: Some(chunks),
            spare,
            thread,
        }
    }

    /// Hands `chunk` over and returns a buffer for the next one. A counter that gave up has
    /// hung up: chunks are then kept here.
    fn tap(&mut self, chunk: Vec<u8>) -> Vec<u8> {
        let Some(chunks) = &self.chunks else {
            return chunk;
        };
        match chunks.send(chunk) {
            Ok(()) => self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
            Err(returned) => {
                self.chunks = None;
                returned.0
            }
        }
    }

    fn finish(mut self) -> std::result::Result<Counted, Unreadable> {
        self.chunks = None;
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the counting thread panicked".into()))
    }
}

#[derive(Deserialize)]
struct Head {
    database: String,
    version: String,
    snapshot: String,
}

/// Takes a logical backup of the database `url` names into `store`.
pub fn create(
    store: &dyn Store,
    url: &DatabaseUrl,
    options: &CreateOptions,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    if !(1..=19).contains(&options.level) {
        return Err(Error::Invalid(format!(
            "--level {} is out of range; use 1 (fast) to 19 (small)",
            options.level
        )));
    }
    if options.jobs == Some(0) {
        return Err(Error::Invalid("--jobs must be at least 1".into()));
    }
    let pg_dump = pgops_pg::find_program("pg_dump")?;
    let mut conn = connect(url)?;
    // Hold a snapshot for pg_dump and for the row counts.
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(Error::db("starting the snapshot transaction"))?;
    let head: Head = pgops_pg::rows::row(
        &mut conn,
        "SELECT current_database()::text AS database, current_setting('server_version') AS version,
                pg_export_snapshot() AS snapshot",
        "exporting a snapshot",
    )?;
    let started_at = Utc::now();
    let id = new_id(&head.database);
    let staging = Staging::new(store, &id)?;
    let data_dir = staging.path.join("data");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(Error::io("creating the staging directory"))?;

    // Its version, for the manifest, asked while the dump runs rather than before.
    let version = programs::Version::ask(&pg_dump);
    let mut files = Vec::new();
    // Each table's rows as the archive holds them, read while it streams past.
    let counted: std::result::Result<Counted, Unreadable>;
    let dump_format = match options.jobs {
        None => {
            let mut child = programs::command(&pg_dump, url)
                .args(["--format=custom", "--compress=0", "--no-password"])
                .arg(format!("--snapshot={}", head.snapshot))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(Error::io(format!("starting {}", pg_dump.display())))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| Error::Invalid("pg_dump has no stdout".into()))?;
            let stderr = child.stderr.take();
            let err_reader = std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut s) = stderr {
                    let _ = s.read_to_end(&mut text);
                }
                text
            });
            let out_path = data_dir.join("dump.zst");
            let mut counter = ArchiveCounter::spawn();
            let compressed = compress(
                stdout,
                &out_path,
                options.level,
                progress,
                (0, 0),
                &mut |chunk| counter.tap(chunk),
            );
            counted = counter.finish();
            if compressed.is_err() {
                let _ = child.kill();
            }
            let status = child.wait().map_err(Error::io("waiting for pg_dump"))?;
            let stderr = err_reader.join().unwrap_or_default();
            programs::check(
                "pg_dump",
                url,
                &std::process::Output {
                    status,
                    stdout: Vec::new(),
                    stderr,
                },
            )?;
            let (raw, bytes, sha256) =
                compressed.map_err(Error::io(format!("writing {}", out_path.display())))?;
            files.push(FileEntry {
                path: "data/dump.zst".into(),
                bytes,
                raw_bytes: raw,
                sha256,
                encrypted_for: Vec::new(),
                plain_sha256: None,
            });
            DumpFormat::Custom
        }
        Some(jobs) => {
            let raw_dir = staging.path.join("raw");
            let output = programs::command(&pg_dump, url)
                .args(["--format=directory", "--compress=0", "--no-password"])
                .arg(format!("--jobs={jobs}"))
                .arg(format!("--snapshot={}", head.snapshot))
                .arg("--file")
                .arg(&raw_dir)
                .output()
                .map_err(Error::io(format!("running {}", pg_dump.display())))?;
            programs::check("pg_dump", url, &output)?;
            let mut names: Vec<String> = fs::read_dir(&raw_dir)
                .map_err(Error::io("reading pg_dump's directory"))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let toc = fs::read(raw_dir.join("toc.dat"))
                .map_err(|e| format!("reading toc.dat: {e}"))
                .and_then(|bytes| dump_rows::read_toc(&mut Chunks::whole(bytes)));
            let mut from_files = Counted::new();
            let mut done = (0, 0);
            for name in names {
                let source = raw_dir.join(&name);
                let input = File::open(&source)
                    .map_err(Error::io(format!("reading {}", source.display())))?;
                let stored = format!("data/{name}.zst");
                let mut rows = dump_rows::Rows::default();
                let (raw, bytes, sha256) = compress(
                    input,
                    &staging.path.join(&stored),
                    options.level,
                    progress,
                    done,
                    &mut |chunk| {
                        rows.feed(&chunk);
                        chunk
                    },
                )
                .map_err(Error::io(format!("compressing {name}")))?;
                done = (done.0 + raw, done.1 + bytes);
                files.push(FileEntry {
                    path: stored,
                    bytes,
                    raw_bytes: raw,
                    sha256,
                    encrypted_for: Vec::new(),
                    plain_sha256: None,
                });
                let _ = fs::remove_file(&source);
                let table = toc.as_ref().ok().and_then(|toc| {
                    let id = name.strip_suffix(".dat")?.parse::<i32>().ok()?;
                    toc.tables.get(&id)
                });
                if let Some(table) = table {
                    from_files.insert(table.clone(), rows.rows());
                }
            }
            counted = toc.map(|_| from_files);
            DumpFormat::Directory
        }
    };
    let version = version.answer();
    if let Err(why) = &counted {
        tracing::info!(
            reason = %why,
            "counting rows in the snapshot: pg_dump's archive could not be read"
        );
    }
    let tables = count_rows(&mut conn, counted.as_ref().ok())?;
    let _ = conn.batch_execute("COMMIT");

    // Data first, the manifest last: until it is written the backup does not exist.
    for file in &mut files {
        let stored = crate::crypto::store_file(
            store,
            &format!("{}{}", manifest::prefix(&id), file.path),
            &staging.path.join(&file.path),
        )?;
        file.bytes = stored.bytes;
        file.sha256 = stored.sha256;
        file.encrypted_for = stored.encrypted_for;
        file.plain_sha256 = stored.plain_sha256;
    }
    // Row counts name the tables and say how much each holds: encrypted with the data.
    let (tables, tables_file) = if store.keys().is_some() {
        let local = staging.path.join("tables.json");
        let json = serde_json::to_vec_pretty(&tables).map_err(|e| Error::Invalid(e.to_string()))?;
        fs::write(&local, json).map_err(Error::io("writing the table counts"))?;
        let stored = crate::crypto::store_file(
            store,
            &format!("{}tables.json", manifest::prefix(&id)),
            &local,
        )?;
        let entry = FileEntry {
            path: "tables.json".into(),
            bytes: stored.bytes,
            raw_bytes: 0,
            sha256: stored.sha256,
            encrypted_for: stored.encrypted_for,
            plain_sha256: stored.plain_sha256,
        };
        (Vec::new(), Some(entry))
    } else {
        (tables, None)
    };
    let manifest = Manifest {
        format: manifest::FORMAT,
        id: id.clone(),
        kind: Kind::Logical,
        database: head.database,
        server: url.server(),
        server_version: head.version,
        tool_version: format!("pgops {}", env!("CARGO_PKG_VERSION")),
        client_version: version,
        dump_format,
        started_at,
        finished_at: Utc::now(),
        files,
        tables,
        wal: None,
        from_standby: false,
        tables_file,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_bytes(&manifest::manifest_key(&id), &json)?;
    staging.finish();
    tracing::info!(id = %manifest.id, bytes = manifest.bytes(), "backup stored");
    Ok(manifest)
}

/// Exact row counts of every user table in the transaction's snapshot, as `count(*)` gives
/// them: a table's own rows and those of its partitions or inheritance children. Where the
/// archive holds the rows of a table and of everything below it, they are taken from
/// `dumped`; the other tables are counted.
pub(crate) fn count_rows(
    conn: &mut PgConnection,
    dumped: Option<&Counted>,
) -> Result<Vec<TableRows>> {
    #[derive(Deserialize)]
    struct T {
        oid: i64,
        schema: String,
        table: String,
        partitioned: bool,
        children: Vec<i64>,
    }
    let tables: Vec<T> = pgops_pg::rows::rows(
        conn,
        "SELECT c.oid::int8 AS oid, n.nspname::text AS schema, c.relname::text AS table,
                c.relkind = 'p' AS partitioned,
                ARRAY(SELECT i.inhrelid::int8 FROM pg_inherits i WHERE i.inhparent = c.oid)
                  AS children
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 2, 3",
        "listing tables",
    )?;
    let by_oid: HashMap<i64, &T> = tables.iter().map(|t| (t.oid, t)).collect();
    // A table's rows from the archive, its children's included; None if any is not there.
    fn from_archive(t: &T, by_oid: &HashMap<i64, &T>, dumped: &Counted) -> Option<i64> {
        let own = if t.partitioned {
            0
        } else {
            *dumped.get(&(t.schema.clone(), t.table.clone()))?
        };
        t.children.iter().try_fold(own, |sum, child| {
            Some(sum + from_archive(by_oid.get(child)?, by_oid, dumped)?)
        })
    }
    let mut out = Vec::new();
    for t in &tables {
        let rows = match dumped.and_then(|dumped| from_archive(t, &by_oid, dumped)) {
            Some(rows) => rows,
            None => {
                #[derive(diesel::QueryableByName)]
                struct Count {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let count: Count = diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM {}.{}",
                    pgops_pg::quote_ident(&t.schema),
                    pgops_pg::quote_ident(&t.table)
                ))
                .get_result(conn)
                .map_err(Error::db(format!("counting {}.{}", t.schema, t.table)))?;
                count.n
            }
        };
        out.push(TableRows {
            schema: t.schema.clone(),
            table: t.table.clone(),
            rows,
        });
    }
    Ok(out)
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Parallel `pg_restore` jobs.
    pub jobs: Option<u32>,
    /// Drop the target database first when it exists.
    pub replace: bool,
}

/// Restores backup `id` into a new database `target` on the server `url` names. Checksums
/// are verified before anything is written; a failed restore drops the database it created.
pub fn restore(
    store: &dyn Store,
    id: &str,
    url: &DatabaseUrl,
    target: &str,
    options: &RestoreOptions,
) -> Result<f64> {
    if target.is_empty() || target.len() > 63 {
        return Err(Error::Invalid(format!(
            "--database {target:?}: give a database name of 1 to 63 characters"
        )));
    }
    let pg_restore = pgops_pg::find_program("pg_restore")?;
    let manifest = manifest::read(store, id)?;
    let work = tempfile::Builder::new()
        .prefix("pgops-restore-")
        .tempdir()
        .map_err(Error::io("creating a work directory"))?;
    fetch_verified(store, &manifest, work.path())?;
    let started = Instant::now();
    let mut admin = connect(url)?;
    let quoted = pgops_pg::quote_ident(target);
    #[derive(Deserialize)]
    struct Exists {
        exists: bool,
    }
    let exists: Exists = pgops_pg::rows::row(
        &mut admin,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = {}) AS exists",
            pgops_pg::quote_literal(target)
        ),
        "looking for the target database",
    )?;
    if exists.exists {
        if !options.replace {
            return Err(Error::TargetExists(target.to_owned()));
        }
        admin
            .batch_execute(&format!("DROP DATABASE {quoted} WITH (FORCE)"))
            .map_err(Error::db(format!("dropping {target}")))?;
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {quoted} TEMPLATE template0"))
        .map_err(Error::db(format!("creating {target}")))?;
    let result = (|| {
        let source = match manifest.dump_format {
            DumpFormat::Custom => {
                let out = work.path().join("dump");
                files::decompress(&work.path().join("data/dump.zst"), &out)?;
                out
            }
            DumpFormat::Tar => {
                return Err(Error::Invalid(format!(
                    "{id} is a physical backup; restore it with `pgops backup restore {id} --to-dir DIR`"
                )));
            }
            DumpFormat::Directory => {
                let out = work.path().join("dir");
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&out)
                    .map_err(Error::io("creating the dump directory"))?;
                for file in &manifest.files {
                    let name = file
                        .path
                        .trim_start_matches("data/")
                        .trim_end_matches(".zst");
                    files::decompress(&work.path().join(&file.path), &out.join(name))?;
                }
                out
            }
        };
        let target_url = url.with_database(target)?;
        let mut cmd = programs::command(&pg_restore, &target_url);
        cmd.args(["--exit-on-error", "--no-password"]);
        if let Some(jobs) = options.jobs {
            cmd.arg(format!("--jobs={jobs}"));
        }
        let output = cmd
            .arg(&source)
            .output()
            .map_err(Error::io(format!("running {}", pg_restore.display())))?;
        programs::check("pg_restore", &target_url, &output)
    })();
    if let Err(e) = result {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"));
        return Err(e);
    }
    Ok(started.elapsed().as_secs_f64())
}
