//! The cumulative statistics views: the WAL archiver, the background writer and
//! checkpoints, per-database activity and conflicts, and transaction-id age.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Context, Session, f, s};
use crate::{
    Result,
    text::{Family, Kind, sanitize},
};

pub(super) fn stat_archiver(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct A {
        archived: f64,
        failed: f64,
        last_archive_age: Option<f64>,
        last_failure_age: Option<f64>,
        failing: bool,
    }
    let found: Vec<A> = session.rows(
        "SELECT archived_count::float8 AS archived, failed_count::float8 AS failed,
                extract(epoch FROM now() - last_archived_time)::float8 AS last_archive_age,
                extract(epoch FROM now() - last_failed_time)::float8 AS last_failure_age,
                coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) AS failing
         FROM pg_stat_archiver",
        "reading pg_stat_archiver",
    )?;
    let Some(a) = found.first() else {
        return Ok(Vec::new());
    };
    let server = [("server", ctx.server.as_str())];
    Ok(vec![
        Family::single(
            "pg_stat_archiver_archived_count",
            "Number of WAL files that have been successfully archived",
            Kind::Counter,
            &server,
            a.archived,
        ),
        Family::single(
            "pg_stat_archiver_failed_count",
            "Number of failed attempts for archiving WAL files",
            Kind::Counter,
            &server,
            a.failed,
        ),
        Family::single(
            "pg_stat_archiver_last_archive_age",
            "Time in seconds since last WAL segment was successfully archived",
            Kind::Gauge,
            &server,
            a.last_archive_age.unwrap_or(f64::NAN),
        ),
        Family::single(
            "pgops_wal_archive_success_total",
            "WAL segments archived successfully since the statistics reset",
            Kind::Counter,
            &[],
            a.archived,
        ),
        Family::single(
            "pgops_wal_archive_failure_total",
            "Failed WAL archive attempts since the statistics reset",
            Kind::Counter,
            &[],
            a.failed,
        ),
        Family::single(
            "pgops_wal_archive_last_failure_age_seconds",
            "Seconds since the last failed archive attempt (NaN: none)",
            Kind::Gauge,
            &[],
            a.last_failure_age.unwrap_or(f64::NAN),
        ),
        Family::single(
            "pgops_wal_archive_failing",
            "1 when the last archive attempt failed (the newest failure is newer than the newest success)",
            Kind::Gauge,
            &[],
            f64::from(u8::from(a.failing)),
        ),
    ])
}

/// Columns of a one-row-per-object view, each as a family `prefix + column + suffix`.
pub(super) fn columns_as_families(
    objects: &[Map<String, Value>],
    view: &str,
    prefix: &str,
    suffix: &str,
    label_columns: &[&str],
    ctx: &Context,
    kind: impl Fn(&str) -> Kind,
) -> Vec<Family> {
    let Some(first) = objects.first() else {
        return Vec::new();
    };
    let mut fams = Vec::new();
    for column in first
        .keys()
        .filter(|k| !label_columns.contains(&k.as_str()))
    {
        let mut fam = Family::new(
            format!("{prefix}{}{suffix}", sanitize(column)),
            format!("{column} from {view}"),
            kind(column),
        );
        for object in objects {
            let mut labels: Vec<(&str, String)> = label_columns
                .iter()
                .map(|l| (*l, object.get(*l).map(s).unwrap_or_default()))
                .collect();
            labels.push(("server", ctx.server.clone()));
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            fam.push(&labels, object.get(column).map_or(f64::NAN, f));
        }
        fams.push(fam);
    }
    fams
}

/// The background writer and checkpoints. PostgreSQL 17 moved the checkpoint counters to
/// `pg_stat_checkpointer` (and dropped `buffers_backend*`, counted in `pg_stat_io`): there each
/// view is read once, and the checkpoint counters are exported under both postgres_exporter's
/// current `pg_stat_checkpointer_*` names and the 0.11 `pg_stat_bgwriter_*` names dashboards
/// use (the mixin's "Buffers" panel included).
pub(super) fn stat_bgwriter(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    /// 0.11 `pg_stat_bgwriter` column, and the `pg_stat_checkpointer` column it became.
    const RENAMED: &[(&str, &str)] = &[
        ("checkpoints_timed", "num_timed"),
        ("checkpoints_req", "num_requested"),
        ("checkpoint_write_time", "write_time"),
        ("checkpoint_sync_time", "sync_time"),
        ("buffers_checkpoint", "buffers_written"),
    ];
    let counter = |_: &str| Kind::Counter;
    if session.version < 170_000 {
        let found: Vec<Map<String, Value>> = session.rows(
            "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time,
                    checkpoint_sync_time, buffers_checkpoint, buffers_clean, maxwritten_clean,
                    buffers_backend, buffers_backend_fsync, buffers_alloc,
                    extract(epoch FROM stats_reset)::float8 AS stats_reset
             FROM pg_stat_bgwriter",
            "reading pg_stat_bgwriter",
        )?;
        return Ok(columns_as_families(
            &found,
            "pg_stat_bgwriter",
            "pg_stat_bgwriter_",
            "_total",
            &[],
            ctx,
            counter,
        ));
    }
    // What backends wrote and synced themselves (`buffers_backend*` before 17) is counted
    // per backend type in pg_stat_io since 16: the writes and fsyncs of relation blocks by
    // everything but the background writer and the checkpointer.
    let mut bgwriter: Vec<Map<String, Value>> = session.rows(
        "SELECT b.buffers_clean, b.maxwritten_clean, io.buffers_backend, io.buffers_backend_fsync,
                b.buffers_alloc, extract(epoch FROM b.stats_reset)::float8 AS stats_reset
         FROM pg_stat_bgwriter b,
              (SELECT coalesce(sum(writes), 0) AS buffers_backend,
                      coalesce(sum(fsyncs), 0) AS buffers_backend_fsync
               FROM pg_stat_io
               WHERE object = 'relation'
                 AND backend_type NOT IN ('background writer', 'checkpointer')) io",
        "reading pg_stat_bgwriter",
    )?;
    let checkpointer: Vec<Map<String, Value>> = session.rows(
        "SELECT num_timed, num_requested, restartpoints_timed, restartpoints_req,
                restartpoints_done, write_time, sync_time, buffers_written,
                extract(epoch FROM stats_reset)::float8 AS stats_reset
         FROM pg_stat_checkpointer",
        "reading pg_stat_checkpointer",
    )?;
    if let (Some(row), Some(from)) = (bgwriter.first_mut(), checkpointer.first()) {
        for (old, new) in RENAMED {
            row.insert(
                (*old).to_owned(),
                from.get(*new).cloned().unwrap_or(Value::Null),
            );
        }
    }
    let mut families = columns_as_families(
        &bgwriter,
        "pg_stat_bgwriter",
        "pg_stat_bgwriter_",
        "_total",
        &[],
        ctx,
        counter,
    );
    families.extend(columns_as_families(
        &checkpointer,
        "pg_stat_checkpointer",
        "pg_stat_checkpointer_",
        "_total",
        &[],
        ctx,
        counter,
    ));
    Ok(families)
}

/// WAL generation (`pg_stat_wal`, PostgreSQL 14 and later): records, full-page images, bytes,
/// and how often full WAL buffers forced a write, as `pg_stat_wal_<column>_total`. PostgreSQL
/// 18 moved the write and sync counters and times to `pg_stat_io` (object `wal`, context
/// `normal`); there they are read from it under the same names, so a dashboard's panel does not
/// go dark on upgrade. Times are in milliseconds, as the server counts them (`track_wal_io_timing`).
pub(super) fn stat_wal(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    let query = match session.version {
        ..140_000 => return Ok(Vec::new()),
        140_000..180_000 => {
            "SELECT wal_records, wal_fpi, wal_bytes::float8 AS wal_bytes, wal_buffers_full,
                    wal_write, wal_sync, wal_write_time, wal_sync_time,
                    extract(epoch FROM stats_reset)::float8 AS stats_reset
             FROM pg_stat_wal"
        }
        _ => {
            "SELECT w.wal_records, w.wal_fpi, w.wal_bytes::float8 AS wal_bytes,
                    w.wal_buffers_full, io.wal_write, io.wal_sync, io.wal_write_time,
                    io.wal_sync_time, extract(epoch FROM w.stats_reset)::float8 AS stats_reset
             FROM pg_stat_wal w,
                  (SELECT coalesce(sum(writes), 0) AS wal_write,
                          coalesce(sum(fsyncs), 0) AS wal_sync,
                          coalesce(sum(write_time), 0) AS wal_write_time,
                          coalesce(sum(fsync_time), 0) AS wal_sync_time
                   FROM pg_stat_io WHERE object = 'wal' AND context = 'normal') io"
        }
    };
    let found: Vec<Map<String, Value>> = session.rows(query, "reading pg_stat_wal")?;
    Ok(columns_as_families(
        &found,
        "pg_stat_wal",
        "pg_stat_wal_",
        "_total",
        &[],
        ctx,
        |_| Kind::Counter,
    ))
}

/// I/O by backend type, object and context (`pg_stat_io`, PostgreSQL 16 and later), as
/// `pg_stat_io_<column>_total`: reads, writes, writebacks, extends, hits, evictions, reuses,
/// fsyncs, their times in milliseconds (with `track_io_timing`), and on 18 the bytes read,
/// written and extended. The view leaves a column NULL where the operation cannot happen (a
/// checkpointer does not read); those series are left out rather than exported as NaN.
pub(super) fn stat_io(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    let query = match session.version {
        ..160_000 => return Ok(Vec::new()),
        160_000..180_000 => {
            "SELECT backend_type, object, context, reads, read_time, writes, write_time,
                    writebacks, writeback_time, extends, extend_time, hits, evictions, reuses,
                    fsyncs, fsync_time
             FROM pg_stat_io ORDER BY 1, 2, 3"
        }
        _ => {
            "SELECT backend_type, object, context, reads, read_bytes::float8 AS read_bytes,
                    read_time, writes, write_bytes::float8 AS write_bytes, write_time,
                    writebacks, writeback_time, extends, extend_bytes::float8 AS extend_bytes,
                    extend_time, hits, evictions, reuses, fsyncs, fsync_time
             FROM pg_stat_io ORDER BY 1, 2, 3"
        }
    };
    let found: Vec<Map<String, Value>> = session.rows(query, "reading pg_stat_io")?;
    let mut families = columns_as_families(
        &found,
        "pg_stat_io",
        "pg_stat_io_",
        "_total",
        &["backend_type", "object", "context"],
        ctx,
        |_| Kind::Counter,
    );
    // NULL (the operation cannot happen there) is no series, not NaN.
    for family in &mut families {
        family.samples.retain(|s| !s.value.is_nan());
    }
    families.retain(|f| !f.samples.is_empty());
    Ok(families)
}

pub(super) fn stat_database(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    // Every numeric column the server has (they differ between versions), timestamps as
    // epoch seconds.
    let found: Vec<Map<String, Value>> = session.rows(
        "SELECT d.datid::int8::text AS datid, coalesce(d.datname::text, '') AS datname,
                to_jsonb(d) - 'datid' - 'datname' AS columns
         FROM pg_stat_database d ORDER BY d.datid",
        "reading pg_stat_database",
    )?;
    let flat: Vec<Map<String, Value>> = found
        .into_iter()
        .map(|mut row| {
            let columns = row.remove("columns");
            if let Some(Value::Object(columns)) = columns {
                row.extend(columns);
            }
            row
        })
        .collect();
    Ok(columns_as_families(
        &flat,
        "pg_stat_database",
        "pg_stat_database_",
        "",
        &["datid", "datname"],
        ctx,
        |c| match c {
            "numbackends" => Kind::Gauge,
            "checksum_last_failure"
            | "session_time"
            | "active_time"
            | "idle_in_transaction_time"
            | "sessions"
            | "sessions_abandoned"
            | "sessions_fatal"
            | "sessions_killed" => Kind::Untyped,
            _ => Kind::Counter,
        },
    ))
}

pub(super) fn stat_database_conflicts(
    session: &mut Session<'_>,
    ctx: &Context,
) -> Result<Vec<Family>> {
    let found: Vec<Map<String, Value>> = session.rows(
        "SELECT datid::int8::text AS datid, datname::text AS datname, confl_tablespace,
                confl_lock, confl_snapshot, confl_bufferpin, confl_deadlock
         FROM pg_stat_database_conflicts ORDER BY datid",
        "reading pg_stat_database_conflicts",
    )?;
    Ok(columns_as_families(
        &found,
        "pg_stat_database_conflicts",
        "pg_stat_database_conflicts_",
        "",
        &["datid", "datname"],
        ctx,
        |_| Kind::Counter,
    ))
}

pub(super) fn transactions(session: &mut Session<'_>, _ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct T {
        oldest: f64,
        blocked: f64,
    }
    #[derive(Deserialize)]
    struct Db {
        datname: String,
        xid_age: f64,
        hit: f64,
        read: f64,
    }
    let t: Vec<T> = session.rows(
        "SELECT greatest(coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0), 0)::float8 AS oldest,
                count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0)::float8 AS blocked
         FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        "reading transaction ages",
    )?;
    let dbs: Vec<Db> = session.rows(
        "SELECT d.datname::text AS datname, age(d.datfrozenxid)::float8 AS xid_age,
                coalesce(s.blks_hit, 0)::float8 AS hit, coalesce(s.blks_read, 0)::float8 AS read
         FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
         WHERE d.datallowconn ORDER BY 1",
        "reading database ages",
    )?;
    let mut fams = Vec::new();
    if let Some(t) = t.first() {
        fams.push(Family::single(
            "pgops_oldest_transaction_age_seconds",
            "Age of the oldest open transaction of a client session",
            Kind::Gauge,
            &[],
            t.oldest,
        ));
        fams.push(Family::single(
            "pgops_blocked_queries",
            "Sessions waiting for a lock another session holds",
            Kind::Gauge,
            &[],
            t.blocked,
        ));
    }
    let mut age = Family::new(
        "pgops_xid_wraparound_age",
        "Transactions since the database's oldest unfrozen XID (wraparound at 2^31)",
        Kind::Gauge,
    );
    let mut hit = Family::new(
        "pgops_cache_hit_ratio",
        "Share of block reads served from shared buffers since the statistics reset",
        Kind::Gauge,
    );
    for db in &dbs {
        age.push(&[("datname", &db.datname)], db.xid_age);
        let total = db.hit + db.read;
        hit.push(
            &[("datname", &db.datname)],
            if total > 0.0 {
                db.hit / total
            } else {
                f64::NAN
            },
        );
    }
    let worst = dbs.iter().map(|d| d.xid_age).fold(0.0, f64::max);
    fams.push(Family::single(
        "pgops_xid_wraparound_ratio",
        "Oldest XID age of any database as a share of 2^31",
        Kind::Gauge,
        &[],
        worst / 2_147_483_648.0,
    ));
    fams.push(age);
    fams.push(hit);
    Ok(fams)
}
