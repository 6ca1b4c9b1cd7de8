//! Row counts read from `pg_dump`'s own archive as it passes, so a logical backup does not scan
//! every table a second time to count it.
//!
//! An uncompressed custom-format archive is a header, the table of contents (TOC), then one
//! data block per TOC entry that has data. A `TABLE DATA` block holds the table's rows in
//! `COPY` text format, one line each: a newline inside a value is written as `\n`, so the
//! newline bytes of the block are its rows, less the end-of-data line (`\.`) and the blank
//! lines pg_dump writes after them. A directory-format archive has the same TOC in `toc.dat`
//! and each table's rows in a file of their own.
//!
//! The layout is pg_dump's (`pg_backup_archiver.c`): integers are a sign byte and then
//! `int_size` bytes, least significant first; strings are a length (-1 for none) and then
//! their bytes. Archive versions 1.12 (PostgreSQL 9.0) to 1.16 (PostgreSQL 17) are read;
//! anything else is refused, and the caller counts in the snapshot instead.

use std::{
    collections::HashMap,
    sync::mpsc::{Receiver, SyncSender},
};

/// The highest archive version whose TOC layout this reader knows.
const NEWEST: (u8, u8) = (1, 16);
/// The header's format byte: the custom format, whose TOC entries end in the data's offset,
/// and the directory format's `toc.dat` (the tar format's too), whose entries name a file.
const FORMAT_CUSTOM: u8 = 1;
const FORMAT_DIRECTORY: u8 = 3;
/// Block types of the custom format's data section.
const BLOCK_DATA: u8 = 1;
const BLOCK_BLOBS: u8 = 3;

/// Why an archive could not be read; the caller falls back to counting in the snapshot.
pub(crate) type Unreadable = String;

/// The tables whose rows an archive holds, by dump id.
#[derive(Debug, Default)]
pub(crate) struct Toc {
    /// Dump id of each `TABLE DATA` entry: (schema, table).
    pub(crate) tables: HashMap<i32, (String, String)>,
    int_size: usize,
}

/// Rows per (schema, table), as the archive holds them: each table's own rows, without those
/// of its partitions or inheritance children.
pub(crate) type Counted = HashMap<(String, String), i64>;

/// Bytes arriving in chunks: from a channel while pg_dump streams, or one whole file.
pub(crate) struct Chunks {
    source: Box<dyn Iterator<Item = Vec<u8>> + Send>,
    recycle: Option<SyncSender<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Chunks {
    /// Chunks received from `source`; each, once read, is offered back through `recycle`
    /// for the sender to fill again.
    pub(crate) fn channel(source: Receiver<Vec<u8>>, recycle: SyncSender<Vec<u8>>) -> Self {
        Chunks {
            source: Box::new(source.into_iter()),
            recycle: Some(recycle),
            current: Vec::new(),
            at: 0,
        }
    }

    /// One chunk holding everything.
    pub(crate) fn whole(bytes: Vec<u8>) -> Self {
        Chunks {
            source: Box::new(std::iter::once(bytes)),
            recycle: None,
            current: Vec::new(),
            at: 0,
        }
    }

    /// Makes sure unread bytes are at hand; false at the end of the input.
    fn fill(&mut self) -> bool {
        while self.at == self.current.len() {
            let Some(next) = self.source.next() else {
                return false;
            };
            let done = std::mem::replace(&mut self.current, next);
            self.at = 0;
            if let Some(recycle) = &self.recycle {
                let _ = recycle.try_send(done);
            }
        }
        true
    }

    fn byte(&mut self) -> Result<u8, Unreadable> {
        if !self.fill() {
            return Err("the archive ends early".into());
        }
        self.at += 1;
        Ok(self.current[self.at - 1])
    }

    /// Passes over the next `n` bytes, handing each run of them to `each`.
    fn pass(&mut self, mut n: u64, mut each: impl FnMut(&[u8])) -> Result<(), Unreadable> {
        while n > 0 {
            if !self.fill() {
                return Err("the archive ends early".into());
            }
            let take = (self.current.len() - self.at).min(usize::try_from(n).unwrap_or(usize::MAX));
            each(&self.current[self.at..self.at + take]);
            self.at += take;
            n -= take as u64;
        }
        Ok(())
    }

    fn int(&mut self, size: usize) -> Result<i64, Unreadable> {
        // Most integers lie within the current chunk: read them in place.
        if let Some(bytes) = self.current.get(self.at..self.at + 1 + size) {
            self.at += 1 + size;
            return Ok(decode_int(bytes));
        }
        let mut bytes = [0u8; 9];
        for b in bytes.iter_mut().take(1 + size) {
            *b = self.byte()?;
        }
        Ok(decode_int(&bytes[..1 + size]))
    }

    fn string(&mut self, size: usize) -> Result<Option<String>, Unreadable> {
        let len = self.int(size)?;
        if len < 0 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(len.min(1 << 20) as usize);
        self.pass(len as u64, |run| bytes.extend_from_slice(run))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// An integer as pg_dump writes it: a sign byte, then the value, least significant byte
/// first.
fn decode_int(bytes: &[u8]) -> i64 {
    let value = bytes[1..]
        .iter()
        .take(8)
        .enumerate()
        .fold(0i64, |v, (i, &b)| v | i64::from(b) << (8 * i));
    if bytes[0] != 0 { -value } else { value }
}

/// Reads the header and the TOC of an uncompressed custom-format archive, or of a directory
/// archive's `toc.dat`.
pub(crate) fn read_toc(input: &mut Chunks) -> Result<Toc, Unreadable> {
    let mut magic = Vec::new();
    input.pass(5, |run| magic.extend_from_slice(run))?;
    if magic != b"PGDMP" {
        return Err("no PGDMP header".into());
    }
    let version = (input.byte()?, input.byte()?);
    let _revision = input.byte()?;
    if version < (1, 12) || version > NEWEST {
        return Err(format!("archive version {}.{}", version.0, version.1));
    }
    let int_size = usize::from(input.byte()?);
    let off_size = usize::from(input.byte()?);
    if !(1..=8).contains(&int_size) || !(1..=16).contains(&off_size) {
        return Err(format!("integer sizes {int_size} and {off_size}"));
    }
    let format = input.byte()?;
    if format != FORMAT_CUSTOM && format != FORMAT_DIRECTORY {
        return Err(format!("archive format {format}"));
    }
    let compressed = if version >= (1, 15) {
        input.byte()? != 0
    } else {
        input.int(int_size)? != 0
    };
    if compressed {
        return Err("the archive is compressed".into());
    }
    for _ in 0..7 {
        input.int(int_size)?; // the creation time
    }
    for _ in 0..3 {
        input.string(int_size)?; // database, server and pg_dump versions
    }
    let count = input.int(int_size)?;
    let mut toc = Toc {
        tables: HashMap::new(),
        int_size,
    };
    for _ in 0..count {
        let dump_id = input.int(int_size)?;
        let had_dumper = input.int(int_size)? != 0;
        input.string(int_size)?; // table oid
        input.string(int_size)?; // oid
        let tag = input.string(int_size)?;
        let desc = input.string(int_size)?;
        input.int(int_size)?; // section
        for _ in 0..3 {
            input.string(int_size)?; // definition, drop and copy statements
        }
        let namespace = input.string(int_size)?;
        input.string(int_size)?; // tablespace
        if version >= (1, 14) {
            input.string(int_size)?; // table access method
        }
        if version >= (1, 16) {
            input.int(int_size)?; // relkind
        }
        input.string(int_size)?; // owner
        input.string(int_size)?; // "false": WITH OIDS, long gone
        while input.string(int_size)?.is_some() {} // dependencies
        if format == FORMAT_CUSTOM {
            input.byte()?; // whether the data offset is known
            input.pass(off_size as u64, |_| {})?;
        } else {
            input.string(int_size)?; // the data file's name
        }
        if had_dumper && desc.as_deref() == Some("TABLE DATA") {
            let (Some(schema), Some(table)) = (namespace, tag) else {
                return Err(format!("TABLE DATA entry {dump_id} without a name"));
            };
            let id = i32::try_from(dump_id).map_err(|_| format!("dump id {dump_id}"))?;
            toc.tables.insert(id, (schema, table));
        }
    }
    Ok(toc)
}

/// Reads the data section of an uncompressed custom-format archive after [`read_toc`],
/// counting the rows of every table it holds.
pub(crate) fn count_data(input: &mut Chunks, toc: &Toc) -> Result<Counted, Unreadable> {
    let size = toc.int_size;
    let mut counted = Counted::new();
    while input.fill() {
        let kind = input.byte()?;
        let id = input.int(size)?;
        match kind {
            BLOCK_DATA => {
                let table = i32::try_from(id).ok().and_then(|id| toc.tables.get(&id));
                let mut rows = Rows::default();
                loop {
                    let len = input.int(size)?;
                    if len == 0 {
                        break;
                    }
                    if len < 0 {
                        return Err(format!("a data chunk of {len} bytes"));
                    }
                    input.pass(len.unsigned_abs(), |run| {
                        if table.is_some() {
                            rows.feed(run);
                        }
                    })?;
                }
                if let Some(name) = table {
                    counted.insert(name.clone(), rows.rows());
                }
            }
            BLOCK_BLOBS => {
                // Large objects: an oid, its chunks; an oid of 0 ends the block.
                while input.int(size)? != 0 {
                    loop {
                        let len = input.int(size)?;
                        if len == 0 {
                            break;
                        }
                        input.pass(len.unsigned_abs(), |_| {})?;
                    }
                }
            }
            other => return Err(format!("a data block of type {other}")),
        }
    }
    Ok(counted)
}

/// Counts the rows of one table's data as it passes: its newline bytes, less those of the
/// end-of-data line (`\.`) and the blank lines pg_dump writes after it.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    newlines: usize,
    /// The last bytes seen (up to [`Rows::TAIL`], at the end), for the end-of-data line.
    tail: [u8; Rows::TAIL],
    tail_len: usize,
}

impl Rows {
    const TAIL: usize = 16;

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.newlines += bytecount::count(bytes, b'\n');
        let n = bytes.len();
        if n >= Self::TAIL {
            self.tail.copy_from_slice(&bytes[n - Self::TAIL..]);
            self.tail_len = Self::TAIL;
        } else {
            self.tail.copy_within(n.., 0);
            self.tail[Self::TAIL - n..].copy_from_slice(bytes);
            self.tail_len = (self.tail_len + n).min(Self::TAIL);
        }
    }

    pub(crate) fn rows(&self) -> i64 {
        let tail = &self.tail[Self::TAIL - self.tail_len..];
        let trailing = tail.iter().rev().take_while(|&&b| b == b'\n').count();
        let body = &tail[..tail.len() - trailing];
        // A value's backslash is written doubled: `\.` ends the data only at a line's start.
        let ends_data = trailing > 0
            && body.ends_with(b"\\.")
            && (body.len() < 3 || body[body.len() - 3] == b'\n');
        let rows = if ends_data {
            self.newlines - trailing
        } else {
            self.newlines
        };
        rows as i64
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use pgops_pg::DatabaseUrl;
    use pgops_testkit::{Cluster, ClusterOptions};

    use super::*;
    use crate::{logical::count_rows, staging::connect};

    /// Tables whose rows are hard to count by lines: values holding newlines, tabs, carriage
    /// returns and backslashes, a `\.` line, an empty table, a name with a newline in it,
    /// partitions, inheritance, and a large object of many lines in the data section too.
    const TABLES: &str = r#"
        CREATE TABLE plain (id int, note text);
        INSERT INTO plain SELECT g, CASE g % 3 WHEN 0 THEN E'two\nlines'
            WHEN 1 THEN E'tab\there \\ back\r\n' END FROM generate_series(1, 5000) g;
        CREATE TABLE empty (id int);
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."odd
name" (v text);
        INSERT INTO "Odd Schema"."odd
name" VALUES (E'\\.'), (E'\n'), ('');
        CREATE TABLE events (at date, n int) PARTITION BY RANGE (at);
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO events SELECT date '2025-06-01' + g % 400, g FROM generate_series(1, 3000) g;
        CREATE TABLE parent (id int);
        CREATE TABLE child (extra int) INHERITS (parent);
        INSERT INTO parent VALUES (1), (2);
        INSERT INTO child VALUES (3, 3);
        SELECT lo_from_bytea(0, convert_to(repeat(E'line\n', 50000), 'UTF8'));
    "#;

    /// Every table's own rows (`count(*) FROM ONLY`), by (schema, table).
    fn own_rows(cluster: &Cluster) -> Counted {
        let text = cluster
            .query_text(
                "app",
                "(SELECT string_agg(format('%s|%s|%s', n.nspname, c.relname,
                    (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %I.%I',
                        n.nspname, c.relname), false, true, '')))[1]::text), '|' ORDER BY 1)
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg\\_%')",
            )
            .unwrap()
            .unwrap();
        let fields: Vec<&str> = text.split('|').collect();
        fields
            .chunks(3)
            .map(|f| ((f[0].to_owned(), f[1].to_owned()), f[2].parse().unwrap()))
            .collect()
    }

    #[test]
    fn counts_every_table_of_a_real_archive_as_count_does() {
        let cluster = Cluster::start(ClusterOptions::default()).unwrap();
        cluster.create_database("app").unwrap();
        cluster.execute("app", TABLES).unwrap();
        let want = own_rows(&cluster);
        assert_eq!(want.len(), 7, "{want:?}");
        let pg_dump = cluster.binaries().program("pg_dump");
        let dump = |cmd: &mut Command| -> Vec<u8> {
            let out = cmd
                .arg("--dbname")
                .arg(cluster.url("app"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            out.stdout
        };

        // The custom format, read in 7-byte chunks so every field straddles a boundary.
        let archive = dump(Command::new(&pg_dump).args(["--format=custom", "--compress=0"]));
        let pieces: Vec<Vec<u8>> = archive.chunks(7).map(<[u8]>::to_vec).collect();
        let mut input = Chunks {
            source: Box::new(pieces.into_iter()),
            recycle: None,
            current: Vec::new(),
            at: 0,
        };
        let toc = read_toc(&mut input).unwrap();
        let counted = count_data(&mut input, &toc).unwrap();
        assert_eq!(counted, want);

        // The directory format: toc.dat names the tables, each file holds one table's rows.
        let dir = tempfile::tempdir().unwrap();
        dump(
            Command::new(&pg_dump)
                .args(["--format=directory", "--compress=0", "--jobs=2", "--file"])
                .arg(dir.path().join("d")),
        );
        let toc_bytes = std::fs::read(dir.path().join("d/toc.dat")).unwrap();
        let toc = read_toc(&mut Chunks::whole(toc_bytes)).unwrap();
        let from_files: Counted = toc
            .tables
            .iter()
            .map(|(id, table)| {
                let bytes = std::fs::read(dir.path().join(format!("d/{id}.dat"))).unwrap();
                let mut rows = Rows::default();
                rows.feed(&bytes);
                (table.clone(), rows.rows())
            })
            .collect();
        assert_eq!(from_files, want);

        // count(*) of a parent counts its partitions or children: so does the manifest, and
        // takes them from the archive, which a count that was not there would change.
        let url = DatabaseUrl::parse(&cluster.url("app")).unwrap();
        let mut conn = connect(&url).unwrap();
        let counted_in_snapshot = count_rows(&mut conn, None).unwrap();
        assert_eq!(
            count_rows(&mut conn, Some(&counted)).unwrap(),
            counted_in_snapshot
        );
        let rows = |tables: &[crate::manifest::TableRows], name: &str| {
            tables.iter().find(|t| t.table == name).unwrap().rows
        };
        assert_eq!(rows(&counted_in_snapshot, "events"), 3000);
        assert_eq!(rows(&counted_in_snapshot, "parent"), 3);
        let mut altered = counted.clone();
        *altered
            .get_mut(&("public".to_owned(), "events_2026".to_owned()))
            .unwrap() += 1000;
        let from_altered = count_rows(&mut conn, Some(&altered)).unwrap();
        assert_eq!(rows(&from_altered, "events"), 4000);
        assert_eq!(
            rows(&from_altered, "events_2025"),
            rows(&counted_in_snapshot, "events_2025")
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let head = |version: (u8, u8), format: u8, compression: u8| {
            let mut bytes = b"PGDMP".to_vec();
            bytes.extend([version.0, version.1, 0, 4, 8, format, compression]);
            read_toc(&mut Chunks::whole(bytes)).unwrap_err()
        };
        assert_eq!(head((1, 17), FORMAT_CUSTOM, 0), "archive version 1.17");
        assert_eq!(head((1, 16), 4, 0), "archive format 4");
        assert_eq!(head((1, 16), FORMAT_CUSTOM, 1), "the archive is compressed");
        assert_eq!(head((1, 16), FORMAT_CUSTOM, 0), "the archive ends early");
        let err = read_toc(&mut Chunks::whole(b"-- plain SQL".to_vec())).unwrap_err();
        assert_eq!(err, "no PGDMP header");
    }
}
