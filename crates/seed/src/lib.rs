//! Deterministic, idempotent datasets of the sample schema for development, test and staging,
//! loaded with binary `COPY` in one transaction.
//!
//! ```no_run
//! use diesel::{Connection, PgConnection};
//! use pgops_seed::{Dataset, NoProgress, SeedOptions};
//!
//! let mut conn = PgConnection::establish("postgres://localhost/app_dev").unwrap();
//! let options = SeedOptions { dataset: Dataset::Development, seed: 1, scale: 1.0, reset: false };
//! let outcome = pgops_seed::seed(&mut conn, &options, &mut NoProgress).unwrap();
//! ```
//!
//! - Deterministic: the same dataset, seed and scale give the same bytes in every table.
//! - Idempotent: `pgops_seed_ledger` records what was loaded; the same run again does
//!   nothing, a different one is refused unless `reset` empties the sample tables first.
//! - All or nothing: one transaction per run.

mod copy;
mod error;
mod generate;
mod plan;

use std::{
    cell::RefCell,
    io::BufWriter,
    time::{Duration, Instant},
};

use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl,
    connection::SimpleConnection,
    dsl::sql,
    pg::CopyFormat,
    prelude::ExecuteCopyFromDsl as _,
    sql_types::{BigInt, Bool, Double, Integer, Text},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use error::{Error, Result};
pub use plan::{Dataset, PerParent, Plan};

use crate::{copy::CopyWriter, generate::World};

/// Bumped whenever generation changes what a (dataset, seed, scale) produces.
pub const DATASET_VERSION: i32 = 1;

/// The seeder's ledger table.
pub const LEDGER_TABLE: &str = "pgops_seed_ledger";

/// Transaction-level advisory lock key: one seed run per database at a time ("pgopssed").
const LOCK_KEY: i64 = 0x7067_6f70_7373_6564;

/// What to load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeedOptions {
    /// The dataset.
    pub dataset: Dataset,
    /// The random seed; the same seed gives the same data.
    pub seed: u64,
    /// Size relative to the dataset's documented size (the test dataset: 1.0 only).
    pub scale: f64,
    /// Empty the sample tables (and the ledger) first.
    pub reset: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The database already holds exactly this dataset; nothing was written.
    AlreadySeeded {
        /// The ledger's checksum of what is loaded.
        checksum: String,
    },
    /// The dataset was loaded.
    Seeded(SeedReport),
}

/// What a run loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedReport {
    /// Per table, in load order.
    pub tables: Vec<TableReport>,
    /// SHA-256 over every table's COPY stream.
    pub checksum: String,
    /// Building the keys, indexes and foreign keys again after the load (checks included).
    #[serde(skip)]
    pub keys_elapsed: Duration,
    /// The whole run, ANALYZE included.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// One table's load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableReport {
    /// The table.
    pub table: String,
    /// Rows loaded.
    pub rows: u64,
    /// Generation and COPY time.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// Receives progress; implemented by the command-line front ends (bars or plain lines).
pub trait Progress {
    /// A table starts; `expected` is the planned row count (an estimate for some tables).
    fn start(&mut self, table: &str, expected: u64);
    /// `rows` rows of the current table are written so far.
    fn advance(&mut self, rows: u64);
    /// The table is done.
    fn finish(&mut self, table: &TableReport);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: &TableReport) {}
}

impl TableReport {
    /// Rows per second of this table's load.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    environment: String,
    #[diesel(sql_type = Integer)]
    dataset_version: i32,
    #[diesel(sql_type = BigInt)]
    seed: i64,
    #[diesel(sql_type = Double)]
    scale: f64,
    #[diesel(sql_type = Text)]
    checksum: String,
}

/// Refuses to run when the process environment says production (`PGOPS_ENV`, then `APP_ENV`).
pub fn refuse_production(env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    for variable in ["PGOPS_ENV", "APP_ENV"] {
        if let Some(value) = env(variable).filter(|v| !v.trim().is_empty()) {
            if value.trim().eq_ignore_ascii_case("production") {
                return Err(Error::Production { variable });
            }
            // The first variable set decides, as for the pool configuration.
            return Ok(());
        }
    }
    Ok(())
}

/// Loads a dataset into the connected, migrated database: all of it, or (on any error)
/// nothing. Runs `ANALYZE` on the sample tables afterwards.
pub fn seed(
    conn: &mut PgConnection,
    options: &SeedOptions,
    progress: &mut dyn Progress,
) -> Result<Outcome> {
    let plan = Plan::new(options.dataset, options.scale)?;
    let started = Instant::now();
    let outcome = conn.transaction(|conn| load(conn, options, plan, progress))?;
    if let Outcome::Seeded(mut report) = outcome {
        let tables = pgops_schema::TABLES.join(", ");
        conn.batch_execute(&format!("ANALYZE {tables}"))
            .map_err(Error::db("analyzing the sample tables"))?;
        report.elapsed = started.elapsed();
        tracing::info!(
            dataset = options.dataset.name(),
            seed = options.seed,
            scale = options.scale,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "seeded"
        );
        return Ok(Outcome::Seeded(report));
    }
    Ok(outcome)
}

fn load(
    conn: &mut PgConnection,
    options: &SeedOptions,
    plan: Plan,
    progress: &mut dyn Progress,
) -> Result<Outcome> {
    conn.batch_execute(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"))
        .map_err(Error::db("taking the seed lock"))?;
    for table in pgops_schema::TABLES {
        let exists: bool = diesel::select(
            sql::<Bool>("to_regclass(")
                .bind::<Text, _>(*table)
                .sql(") IS NOT NULL"),
        )
        .get_result(conn)
        .map_err(Error::db(format!("looking for table {table}")))?;
        if !exists {
            return Err(Error::NotMigrated((*table).to_owned()));
        }
    }
    conn.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             environment text NOT NULL,
             dataset_version integer NOT NULL,
             seed bigint NOT NULL,
             scale double precision NOT NULL,
             checksum text NOT NULL,
             rows jsonb NOT NULL,
             seeded_at timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .map_err(Error::db(format!("creating {LEDGER_TABLE}")))?;

    let requested = describe(
        options.dataset.name(),
        DATASET_VERSION,
        options.seed,
        options.scale,
    );
    let previous: Option<LedgerRow> = diesel::sql_query(format!(
        "SELECT environment, dataset_version, seed, scale, checksum FROM {LEDGER_TABLE} ORDER BY id DESC LIMIT 1"
    ))
    .get_result(conn)
    .map(Some)
    .or_else(|e| if e == diesel::result::Error::NotFound { Ok(None) } else { Err(e) })
    .map_err(Error::db("reading the seed ledger"))?;
    if !options.reset {
        match previous {
            Some(p)
                if p.environment == options.dataset.name()
                    && p.dataset_version == DATASET_VERSION
                    && p.seed == options.seed as i64
                    && p.scale == options.scale =>
            {
                return Ok(Outcome::AlreadySeeded {
                    checksum: p.checksum,
                });
            }
            Some(p) => {
                return Err(Error::SeededDifferently {
                    previous: describe(&p.environment, p.dataset_version, p.seed as u64, p.scale),
                    requested,
                });
            }
            None => {
                for table in pgops_schema::TABLES {
                    let rows: i64 =
                        diesel::select(sql::<BigInt>(&format!("(SELECT count(*) FROM {table})")))
                            .get_result(conn)
                            .map_err(Error::db(format!("counting {table}")))?;
                    if rows > 0 {
                        return Err(Error::NotEmpty {
                            table: (*table).to_owned(),
                            rows,
                        });
                    }
                }
            }
        }
    }

    // Empty (or already empty) tables are truncated in this transaction, which lets COPY
    // FREEZE write rows already frozen: no hint-bit rewrite and no anti-wraparound vacuum later.
    conn.batch_execute(&format!(
        "TRUNCATE {} RESTART IDENTITY; DELETE FROM {LEDGER_TABLE}",
        pgops_schema::TABLES.join(", ")
    ))
    .map_err(Error::db("emptying the sample tables"))?;

    let mut world = World::new(plan, options.seed);
    let mut total = Sha256::new();
    let (tables, keys_elapsed) = without_keys(conn, pgops_schema::TABLES, |conn| {
        let mut tables = Vec::new();
        for &table in pgops_schema::TABLES {
            progress.start(table, world.expected_rows(table));
            let started = Instant::now();
            let (rows, digest) = copy_table(conn, &mut world, table, progress)?;
            total.update(digest);
            let report = TableReport {
                table: table.to_owned(),
                rows,
                elapsed: started.elapsed(),
            };
            progress.finish(&report);
            tables.push(report);
        }
        Ok(tables)
    })?;
    for table in pgops_schema::TABLES {
        conn.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
        ))
        .map_err(Error::db(format!("moving the id sequence of {table} past the seeded rows")))?;
    }
    let checksum = hex::encode(total.finalize());
    let rows: serde_json::Value = tables
        .iter()
        .map(|t| (t.table.clone(), serde_json::json!(t.rows)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    diesel::sql_query(format!(
        "INSERT INTO {LEDGER_TABLE} (environment, dataset_version, seed, scale, checksum, rows) VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
    ))
    .bind::<Text, _>(options.dataset.name())
    .bind::<Integer, _>(DATASET_VERSION)
    .bind::<BigInt, _>(options.seed as i64)
    .bind::<Double, _>(options.scale)
    .bind::<Text, _>(&checksum)
    .bind::<Text, _>(rows.to_string())
    .execute(conn)
    .map_err(Error::db("recording the run in the seed ledger"))?;
    Ok(Outcome::Seeded(SeedReport {
        tables,
        checksum,
        keys_elapsed,
        elapsed: Duration::ZERO,
    }))
}

/// Empties one table that no other table references (`audit_logs`) and loads it again exactly
/// as [`seed`] would, in one transaction; its parent tables must hold the same dataset. Used to
/// measure the bulk load alone.
pub fn reload_table(
    conn: &mut PgConnection,
    options: &SeedOptions,
    table: &str,
) -> Result<TableReport> {
    let plan = Plan::new(options.dataset, options.scale)?;
    let mut world = World::new(plan, options.seed);
    // Earlier tables are generated again (and thrown away) for what later ones refer to.
    for &earlier in pgops_schema::TABLES.iter().take_while(|t| **t != table) {
        let mut sink = CopyWriter::new(std::io::sink())?;
        world.write(earlier, &mut sink, &mut |_| {})?;
    }
    reload(conn, table, |conn| {
        copy_table(conn, &mut world, table, &mut NoProgress).map(|(rows, _)| rows)
    })
}

/// Empties `table` and loads it again from `server_file`, a binary `COPY` file on the
/// database server (`COPY .. TO 'file' (FORMAT binary)` writes one), with everything
/// [`reload_table`] does but generating the rows: one transaction, `TRUNCATE`, `COPY ..
/// FREEZE` with the keys and indexes dropped, and the same key and index builds after it.
/// It is the limit a generated load approaches. Reading a server file needs superuser or
/// `pg_read_server_files`.
pub fn reload_table_from_server_file(
    conn: &mut PgConnection,
    table: &str,
    server_file: &str,
) -> Result<TableReport> {
    reload(conn, table, |conn| {
        diesel::sql_query(format!(
            "COPY {table} FROM {} WITH (FORMAT binary, FREEZE)",
            pgops_pg::quote_literal(server_file)
        ))
        .execute(conn)
        .map(|rows| rows as u64)
        .map_err(Error::db(format!("loading {table} from {server_file}")))
    })
}

/// One transaction that empties `table`, runs `load` (which returns the rows it loaded)
/// with the table's keys and indexes dropped, and builds them again: what both reloads
/// share, timed from the `TRUNCATE`.
fn reload(
    conn: &mut PgConnection,
    table: &str,
    load: impl FnOnce(&mut PgConnection) -> Result<u64>,
) -> Result<TableReport> {
    conn.transaction(|conn| {
        let started = Instant::now();
        conn.batch_execute(&format!("TRUNCATE {table}"))
            .map_err(Error::db(format!("emptying {table}")))?;
        let (rows, _) = without_keys(conn, &[table], load)?;
        Ok(TableReport {
            table: table.to_owned(),
            rows,
            elapsed: started.elapsed(),
        })
    })
}

/// A key, constraint or index to put back after the load.
#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    drop_sql: String,
    #[diesel(sql_type = Text)]
    create_sql: String,
}

/// Runs `load` with the primary keys, unique constraints, indexes and foreign keys of
/// `tables` (and foreign keys pointing at them) dropped, then creates them again exactly as
/// they were: PostgreSQL's advice for populating a database. Each index is then built in one
/// sort instead of row by row, and each foreign key is checked by one join instead of one
/// lookup and row lock per row; integrity is still fully checked. Must run inside the load's
/// transaction, so a failure leaves the schema as it was.
/// Returns `load`'s value and how long creating the keys again took.
fn without_keys<T>(
    conn: &mut PgConnection,
    tables: &[&str],
    load: impl FnOnce(&mut PgConnection) -> Result<T>,
) -> Result<(T, Duration)> {
    let list = tables
        .iter()
        .map(|t| format!("'{t}'::regclass"))
        .collect::<Vec<_>>()
        .join(", ");
    // Dropped in this order, created again in reverse: foreign keys, plain indexes, keys.
    let keys: Vec<Key> = diesel::sql_query(format!(
        "SELECT drop_sql, create_sql FROM (
             SELECT 1 AS step, format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_sql,
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) AS create_sql,
                    conname::text AS name
             FROM pg_constraint
             WHERE contype = 'f' AND (conrelid IN ({list}) OR confrelid IN ({list}))
             UNION ALL
             SELECT 2, format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid), i.indexrelid::regclass::text
             FROM pg_index i
             WHERE i.indrelid IN ({list})
               AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
             UNION ALL
             SELECT 3, format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)),
                    conname::text
             FROM pg_constraint
             WHERE contype IN ('p', 'u') AND conrelid IN ({list})
         ) k ORDER BY step, name"
    ))
    .load(conn)
    .map_err(Error::db("reading the keys and indexes of the sample tables"))?;
    let drops: Vec<&str> = keys.iter().map(|k| k.drop_sql.as_str()).collect();
    conn.batch_execute(&format!(
        "SET LOCAL maintenance_work_mem = '256MB'; {}",
        drops.join("; ")
    ))
    .map_err(Error::db("dropping keys and indexes for the load"))?;
    let value = load(conn)?;
    let started = Instant::now();
    for key in keys.iter().rev() {
        conn.batch_execute(&key.create_sql)
            .map_err(Error::db(format!("creating again: {}", key.create_sql)))?;
    }
    Ok((value, started.elapsed()))
}

/// Generates one table straight into a binary `COPY .. FREEZE`.
fn copy_table(
    conn: &mut PgConnection,
    world: &mut World,
    table: &str,
    progress: &mut dyn Progress,
) -> Result<(u64, [u8; 32])> {
    use pgops_schema::schema::*;
    let result = RefCell::new(None);
    let state = RefCell::new((world, progress));
    let write = |out: &mut dyn std::io::Write| -> Result<()> {
        let mut guard = state.borrow_mut();
        let (world, progress) = &mut *guard;
        let mut writer = CopyWriter::new(BufWriter::with_capacity(1 << 16, out))?;
        world.write(table, &mut writer, &mut |rows| progress.advance(rows))?;
        *result.borrow_mut() = Some(writer.finish()?);
        Ok(())
    };
    let context = || format!("loading {table}");
    macro_rules! copy {
        ($table:ident) => {
            diesel::copy_from($table::table)
                .from_raw_data($table::table, write)
                .with_format(CopyFormat::Binary)
                .with_freeze(true)
                .execute(conn)
        };
    }
    let copied = match table {
        "organizations" => copy!(organizations),
        "users" => copy!(users),
        "sessions" => copy!(sessions),
        "patients" => copy!(patients),
        "encounters" => copy!(encounters),
        "notes" => copy!(notes),
        _ => copy!(audit_logs),
    };
    copied.map_err(|e| match e {
        Error::Database { source, .. } => Error::Database {
            context: context(),
            source,
        },
        other => other,
    })?;
    result.into_inner().ok_or_else(|| {
        Error::Io(std::io::Error::other(format!(
            "the COPY of {table} ended before its data was written"
        )))
    })
}

fn describe(dataset: &str, version: i32, seed: u64, scale: f64) -> String {
    format!("the {dataset} dataset (version {version}, seed {seed}, scale {scale})")
}
