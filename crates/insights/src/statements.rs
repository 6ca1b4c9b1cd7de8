//! Query statistics from `pg_stat_statements`: the top queries since the statistics began, or
//! over a window by diffing against a snapshot we recorded (never by resetting the view, so
//! other readers of it lose nothing).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use diesel::{PgConnection, RunQueryDsl, connection::SimpleConnection as _};
use serde::{Deserialize, Serialize};

use pgops_pg::{
    quote_literal,
    rows::{row, rows},
};

use crate::{Error, Result, sql::server_version};

/// The tables that hold our snapshots, in the database we connect to: the headers, the
/// statements' counters, and the sizes of the largest tables at each snapshot.
pub const SNAPSHOT_TABLES: [&str; 3] = [
    "pgops_stat_snapshots",
    "pgops_stat_snapshot_entries",
    "pgops_stat_snapshot_tables",
];

/// How to order the top list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Total execution time: where the server spends its time.
    Total,
    /// Mean execution time: the slowest single calls.
    Mean,
    /// Number of calls: the chattiest queries (N+1 suspects).
    Calls,
    /// Rows returned or affected.
    Rows,
    /// Blocks that missed the buffer cache or went to temp files.
    Io,
}

/// One `pg_stat_statements` entry's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// Role that ran it.
    pub userid: u32,
    /// Database it ran in.
    pub dbid: u32,
    /// The normalized query's hash.
    pub queryid: i64,
    /// Run at top level (not from inside a function).
    pub toplevel: bool,
}

/// Cumulative counters of one entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Times executed.
    pub calls: i64,
    /// Total execution time in milliseconds.
    pub total_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
    /// Shared buffer hits.
    pub hit: i64,
    /// Shared blocks read (not in the buffer cache).
    pub read: i64,
    /// Blocks read or written outside shared buffers: shared and local reads, temp reads
    /// and writes.
    pub io: i64,
}

/// One entry as read from the view or a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Which entry.
    #[serde(flatten)]
    pub key: Key,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// A recorded snapshot's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its id.
    pub id: i64,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// `pg_stat_statements_info.stats_reset` at that time (PostgreSQL 14+).
    pub stats_reset: Option<DateTime<Utc>>,
    /// `pg_stat_statements_info.dealloc` at that time: entries evicted so far.
    pub dealloc: Option<i64>,
}

/// How an entry's window figures were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Counters now minus counters at the snapshot.
    Diff,
    /// The entry appeared after the snapshot: all its counters fall in the window.
    New,
    /// The entry was evicted and came back (its counters went down): the figures cover only
    /// the time since it came back, a lower bound.
    Readded,
    /// The view was reset after the snapshot: the figures cover the time since the reset.
    SinceReset,
}

/// The change of one entry over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// Which entry.
    pub key: Key,
    /// What happened in the window.
    pub counters: Counters,
    /// How it was computed.
    pub origin: Origin,
}

/// The change of the whole view between a snapshot and now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Entries with at least one call in the window.
    pub deltas: Vec<Delta>,
    /// The view was reset inside the window.
    pub reset: bool,
    /// Entries evicted inside the window (`pg_stat_statements.max` too small), when known.
    pub evictions: Option<i64>,
}

/// Diffs the view now against a snapshot. Pure: the rules for resets and evictions live here.
///
/// - Reset after the snapshot (`stats_reset` moved): every entry counts from the reset.
/// - An entry whose calls went down was evicted and re-added: it counts from its return.
/// - An entry missing from the snapshot is new: all of it falls in the window.
/// - Entries with no new calls are left out.
pub fn diff(
    before: &SnapshotInfo,
    before_entries: &[Entry],
    now_reset: Option<DateTime<Utc>>,
    now_dealloc: Option<i64>,
    now_entries: &[Entry],
) -> Window {
    let reset = match (before.stats_reset, now_reset) {
        (Some(then), Some(now)) => now > then,
        (None, Some(now)) => now > before.taken_at,
        _ => false,
    };
    let old: HashMap<&Key, &Counters> = before_entries
        .iter()
        .map(|e| (&e.key, &e.counters))
        .collect();
    let mut deltas = Vec::new();
    for entry in now_entries {
        let now = entry.counters;
        let (counters, origin) = if reset {
            (now, Origin::SinceReset)
        } else {
            match old.get(&entry.key) {
                None => (now, Origin::New),
                Some(then) if now.calls < then.calls || now.total_ms < then.total_ms => {
                    (now, Origin::Readded)
                }
                Some(then) => (
                    Counters {
                        calls: now.calls - then.calls,
                        total_ms: now.total_ms - then.total_ms,
                        rows: now.rows - then.rows,
                        hit: now.hit - then.hit,
                        read: now.read - then.read,
                        io: now.io - then.io,
                    },
                    Origin::Diff,
                ),
            }
        };
        if counters.calls > 0 {
            deltas.push(Delta {
                key: entry.key.clone(),
                counters,
                origin,
            });
        }
    }
    let evictions = match (before.dealloc, now_dealloc) {
        (Some(then), Some(now)) if !reset => Some((now - then).max(0)),
        (_, Some(now)) if reset => Some(now),
        _ => None,
    };
    Window {
        deltas,
        reset,
        evictions,
    }
}

/// Sorts deltas for the top list.
pub fn sort(deltas: &mut [Delta], order: Order) {
    let key = |d: &Delta| -> f64 {
        let c = &d.counters;
        match order {
            Order::Total => c.total_ms,
            Order::Mean => c.total_ms / c.calls.max(1) as f64,
            Order::Calls => c.calls as f64,
            Order::Rows => c.rows as f64,
            Order::Io => c.io as f64,
        }
    };
    deltas.sort_by(|a, b| key(b).total_cmp(&key(a)));
}

/// One line of the top list, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct TopQuery {
    /// The normalized query's hash.
    pub queryid: i64,
    /// The normalized query text (constants replaced by `$n`).
    pub query: String,
    /// The database it ran in.
    pub database: String,
    /// The role that ran it.
    pub user: String,
    /// Calls in the window.
    pub calls: i64,
    /// Total execution time in milliseconds.
    pub total_ms: f64,
    /// Mean execution time in milliseconds.
    pub mean_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
    /// Share of shared-buffer accesses served from cache (None when it touched no blocks).
    pub cache_hit_ratio: Option<f64>,
    /// Blocks read or written outside shared buffers.
    pub io_blocks: i64,
    /// How the figures were obtained.
    pub origin: Origin,
}

/// The top list with the window it covers.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// Start of the window (the snapshot's time, or the view's last reset).
    pub since: Option<DateTime<Utc>>,
    /// Window length in seconds, when known.
    pub seconds: Option<f64>,
    /// The view was reset inside the window.
    pub reset: bool,
    /// Entries evicted inside the window, when known.
    pub evictions: Option<i64>,
    /// The order used.
    pub order: Order,
    /// The queries.
    pub queries: Vec<TopQuery>,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The order.
    pub order: Order,
    /// How many queries.
    pub limit: usize,
    /// The window: diff against the newest snapshot at least this old. None: since the view's
    /// statistics began.
    pub since: Option<Duration>,
    /// Include other databases than the one we are connected to.
    pub all_databases: bool,
    /// Only this statement (its `queryid`, as `top` shows it).
    pub queryid: Option<i64>,
}

/// Checks that `pg_stat_statements` is loaded and created here; the error says what to change.
pub fn check_available(conn: &mut PgConnection) -> Result<()> {
    server_version(conn)?;
    #[derive(Deserialize)]
    struct State {
        preload: String,
        created: bool,
        database: String,
    }
    let state: State = row(
        conn,
        "SELECT current_setting('shared_preload_libraries') AS preload, \
                EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS created, \
                current_database() AS database",
        "checking pg_stat_statements",
    )?;
    let loaded = state
        .preload
        .split(',')
        .any(|l| l.trim().trim_matches('"') == "pg_stat_statements");
    if !loaded {
        let mut libraries: Vec<&str> = state
            .preload
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        libraries.push("pg_stat_statements");
        return Err(Error::NotPreloaded {
            current: state.preload.clone(),
            suggested: libraries.join(","),
        });
    }
    if !state.created {
        return Err(Error::ExtensionMissing {
            database: state.database,
        });
    }
    Ok(())
}

/// The view as it is now.
#[derive(Debug, Clone)]
pub struct Current {
    /// `pg_stat_statements_info.stats_reset` (PostgreSQL 14+).
    pub stats_reset: Option<DateTime<Utc>>,
    /// `pg_stat_statements_info.dealloc` (PostgreSQL 14+).
    pub dealloc: Option<i64>,
    /// Every entry with a query id.
    pub entries: Vec<Entry>,
}

/// The view's entries now, with `stats_reset` and `dealloc` (PostgreSQL 14+).
pub fn current(conn: &mut PgConnection) -> Result<Current> {
    check_available(conn)?;
    let version = server_version(conn)?;
    let toplevel = if version >= 140_000 {
        "toplevel"
    } else {
        "true"
    };
    let entries: Vec<Entry> = rows(
        conn,
        &format!(
            "SELECT userid::int8 AS userid, dbid::int8 AS dbid, queryid, {toplevel} AS toplevel, \
                    calls, total_exec_time AS total_ms, rows, shared_blks_hit AS hit, \
                    shared_blks_read AS read, \
                    shared_blks_read + local_blks_read + temp_blks_read + temp_blks_written AS io \
             FROM pg_stat_statements WHERE queryid IS NOT NULL"
        ),
        "reading pg_stat_statements",
    )?;
    if version < 140_000 {
        return Ok(Current {
            stats_reset: None,
            dealloc: None,
            entries,
        });
    }
    #[derive(Deserialize)]
    struct Info {
        stats_reset: Option<DateTime<Utc>>,
        dealloc: Option<i64>,
    }
    let info: Info = row(
        conn,
        "SELECT stats_reset, dealloc FROM pg_stat_statements_info",
        "reading pg_stat_statements_info",
    )?;
    Ok(Current {
        stats_reset: info.stats_reset,
        dealloc: info.dealloc,
        entries,
    })
}

/// Records a snapshot of the whole view (all databases, server side, one statement), and
/// deletes snapshots older than `keep`. Returns the new snapshot's header.
pub fn record_snapshot(conn: &mut PgConnection, keep: Duration) -> Result<SnapshotInfo> {
    check_available(conn)?;
    let version = server_version(conn)?;
    ensure_tables(conn)?;
    let (info, toplevel) = if version >= 140_000 {
        (
            "(SELECT stats_reset FROM pg_stat_statements_info), (SELECT dealloc FROM pg_stat_statements_info)",
            "toplevel",
        )
    } else {
        ("NULL, NULL", "true")
    };
    let statement = format!(
        "WITH s AS (
             INSERT INTO pgops_stat_snapshots (stats_reset, dealloc) SELECT {info}
             RETURNING id, taken_at, stats_reset, dealloc
         ), e AS (
             INSERT INTO pgops_stat_snapshot_entries
             SELECT s.id, p.userid, p.dbid, p.queryid, {toplevel}, p.calls, p.total_exec_time, p.rows,
                    p.shared_blks_hit, p.shared_blks_read,
                    p.shared_blks_read + p.local_blks_read + p.temp_blks_read + p.temp_blks_written
             FROM s, pg_stat_statements p WHERE p.queryid IS NOT NULL
         ), t AS (
             INSERT INTO pgops_stat_snapshot_tables
             SELECT s.id, l.schema, l.table, l.bytes FROM s, ({largest}) l
         )
         SELECT row_to_json(s)::text AS rows FROM s",
        // The 100 largest tables' sizes, for their growth.
        largest = pgops_pg::catalog::largest_tables(100, 200)
    );
    let snapshot: SnapshotInfo =
        pgops_pg::rows::json_document(conn, &statement, "recording a pg_stat_statements snapshot")?;
    let keep_secs = keep.as_secs().max(60);
    diesel::sql_query(format!(
        "DELETE FROM pgops_stat_snapshots WHERE taken_at < now() - interval '{keep_secs} seconds'"
    ))
    .execute(conn)
    .map_err(Error::db("deleting old snapshots"))?;
    Ok(snapshot)
}

/// Snapshot headers, oldest first.
pub fn snapshots(conn: &mut PgConnection) -> Result<Vec<SnapshotInfo>> {
    if !tables_exist(conn)? {
        return Ok(Vec::new());
    }
    Ok(rows(
        conn,
        "SELECT id, taken_at, stats_reset, dealloc FROM pgops_stat_snapshots ORDER BY taken_at",
        "listing snapshots",
    )?)
}

/// The top queries, over a window when `options.since` is set.
pub fn top(conn: &mut PgConnection, options: &TopOptions) -> Result<Top> {
    let now = current(conn)?;
    top_of(conn, options, now)
}

/// [`top`] against the view as `now` holds it (read once with [`current`] for several
/// windows).
pub fn top_of(conn: &mut PgConnection, options: &TopOptions, now: Current) -> Result<Top> {
    if options.limit == 0 {
        return Err(Error::Invalid("--limit must be at least 1".into()));
    }
    let Current {
        stats_reset: now_reset,
        dealloc: now_dealloc,
        entries: now_entries,
    } = now;
    let (window, since, seconds) = match options.since {
        None => (
            Window {
                deltas: now_entries
                    .into_iter()
                    .filter(|e| e.counters.calls > 0)
                    .map(|e| Delta {
                        key: e.key,
                        counters: e.counters,
                        origin: Origin::SinceReset,
                    })
                    .collect(),
                reset: false,
                evictions: now_dealloc,
            },
            now_reset,
            now_reset.map(|r| (Utc::now() - r).as_seconds_f64()),
        ),
        Some(age) => {
            let before = snapshot_at_least(conn, age)?;
            let before_entries: Vec<Entry> = rows(
                conn,
                &format!(
                    "SELECT userid::int8 AS userid, dbid::int8 AS dbid, queryid, toplevel, calls, total_ms, rows, hit, read, io \
                     FROM pgops_stat_snapshot_entries WHERE snapshot_id = {}",
                    before.id
                ),
                "reading the snapshot",
            )?;
            let window = diff(
                &before,
                &before_entries,
                now_reset,
                now_dealloc,
                &now_entries,
            );
            let since = if window.reset {
                now_reset
            } else {
                Some(before.taken_at)
            };
            let seconds = since.map(|s| (Utc::now() - s).as_seconds_f64());
            (window, since, seconds)
        }
    };
    let mut deltas = window.deltas;
    if !options.all_databases {
        #[derive(Deserialize)]
        struct Db {
            oid: u32,
        }
        let db: Db = row(
            conn,
            "SELECT oid::int8 AS oid FROM pg_database WHERE datname = current_database()",
            "reading the current database",
        )?;
        deltas.retain(|d| d.key.dbid == db.oid);
    }
    if let Some(queryid) = options.queryid {
        deltas.retain(|d| d.key.queryid == queryid);
    }
    sort(&mut deltas, options.order);
    deltas.truncate(options.limit);
    let queries = describe(conn, &deltas)?;
    Ok(Top {
        since,
        seconds,
        reset: window.reset,
        evictions: window.evictions,
        order: options.order,
        queries,
    })
}

/// The text `pg_stat_statements` keeps for `queryid` in the database we are connected to,
/// with `$1`, `$2`, ... where constants were: what `explain` takes with its parameters.
pub fn query_text(conn: &mut PgConnection, queryid: i64) -> Result<String> {
    check_available(conn)?;
    #[derive(Deserialize)]
    struct Text {
        query: Option<String>,
    }
    let found: Vec<Text> = rows(
        conn,
        &format!(
            "SELECT query FROM pg_stat_statements \
             WHERE queryid = {queryid} AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query IS NOT NULL LIMIT 1"
        ),
        "reading the query text",
    )?;
    found.into_iter().find_map(|t| t.query).ok_or_else(|| {
        Error::Invalid(format!(
            "pg_stat_statements has no statement with queryid {queryid} in this database \
             (or this role may not read its text: grant pg_read_all_stats); \
             `pgops insights top` lists the queryids"
        ))
    })
}

/// One interval between two snapshots (or the newest snapshot and now) of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Its start.
    pub start: DateTime<Utc>,
    /// Its end.
    pub end: DateTime<Utc>,
    /// Calls in it.
    pub calls: i64,
    /// Execution time in it, in milliseconds.
    pub total_ms: f64,
}

/// One statement's cumulative counters at one point in time (`None`: not in the view then).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When.
    pub at: DateTime<Utc>,
    /// `pg_stat_statements_info.stats_reset` then (14+).
    pub stats_reset: Option<DateTime<Utc>>,
    /// Calls and total milliseconds so far.
    pub counters: Option<(i64, f64)>,
}

/// Intervals between consecutive points, by [`diff`]'s rules: after a reset, or when the
/// counters went down (evicted and re-added), the later counters are the interval's (a lower
/// bound); a statement absent before counts in full; absent after, nothing.
pub fn intervals(points: &[Point]) -> Vec<Interval> {
    points
        .windows(2)
        .map(|pair| {
            let (before, after) = (&pair[0], &pair[1]);
            let reset = match (before.stats_reset, after.stats_reset) {
                (Some(then), Some(now)) => now > then,
                (None, Some(now)) => now > before.at,
                _ => false,
            };
            let (calls, total_ms) = match (before.counters, after.counters) {
                (_, None) => (0, 0.0),
                (None, Some(now)) => now,
                (Some(then), Some(now)) if reset || now.0 < then.0 || now.1 < then.1 => now,
                (Some(then), Some(now)) => (now.0 - then.0, now.1 - then.1),
            };
            Interval {
                start: before.at,
                end: after.at,
                calls,
                total_ms,
            }
        })
        .collect()
}

/// Each statement's intervals over the last `window`, from the snapshots taken in it and the
/// view `now` (as [`current`] read it), in the database we are connected to (summed over
/// roles and nesting levels). Statements are those of `queryids`; one read of the snapshots
/// for all of them.
pub fn history(
    conn: &mut PgConnection,
    window: Duration,
    queryids: &[i64],
    now: &Current,
) -> Result<HashMap<i64, Vec<Interval>>> {
    // The window's start by this clock, now: the server's `now()` is read a round trip or more
    // later (seconds on a loaded machine), and a window a caller measured from a snapshot's
    // time would lose that snapshot.
    let cutoff = chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| Utc::now().checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if queryids.is_empty() || !tables_exist(conn)? {
        return Ok(HashMap::new());
    }
    #[derive(Deserialize)]
    struct Row {
        id: i64,
        taken_at: DateTime<Utc>,
        stats_reset: Option<DateTime<Utc>>,
        queryid: Option<i64>,
        calls: Option<i64>,
        total_ms: Option<f64>,
    }
    let ids = queryids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let found: Vec<Row> = rows(
        conn,
        &format!(
            "SELECT s.id, s.taken_at, s.stats_reset, e.queryid, e.calls::int8 AS calls, e.total_ms
             FROM pgops_stat_snapshots s
             LEFT JOIN (SELECT snapshot_id, queryid, sum(calls) AS calls, sum(total_ms) AS total_ms
                        FROM pgops_stat_snapshot_entries
                        WHERE queryid IN ({ids})
                          AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                        GROUP BY 1, 2) e ON e.snapshot_id = s.id
             WHERE s.taken_at > '{}'::timestamptz
             ORDER BY s.taken_at, s.id",
            cutoff.to_rfc3339()
        ),
        "reading the snapshots' history",
    )?;
    let dbid: u32 = {
        #[derive(Deserialize)]
        struct Db {
            oid: u32,
        }
        row::<Db>(
            conn,
            "SELECT oid::int8 AS oid FROM pg_database WHERE datname = current_database()",
            "reading the current database",
        )?
        .oid
    };
    // The snapshots in order, each with the counters of the statements it held.
    struct Held {
        at: DateTime<Utc>,
        stats_reset: Option<DateTime<Utc>>,
        counters: HashMap<i64, (i64, f64)>,
    }
    let mut snapshots: Vec<Held> = Vec::new();
    let mut last_id = None;
    for r in found {
        if last_id != Some(r.id) {
            snapshots.push(Held {
                at: r.taken_at,
                stats_reset: r.stats_reset,
                counters: HashMap::new(),
            });
            last_id = Some(r.id);
        }
        if let (Some(q), Some(calls), Some(ms), Some(last)) =
            (r.queryid, r.calls, r.total_ms, snapshots.last_mut())
        {
            last.counters.insert(q, (calls, ms));
        }
    }
    let mut current_counters: HashMap<i64, (i64, f64)> = HashMap::new();
    for e in now.entries.iter().filter(|e| e.key.dbid == dbid) {
        let c = current_counters.entry(e.key.queryid).or_default();
        c.0 += e.counters.calls;
        c.1 += e.counters.total_ms;
    }
    let taken_now = Utc::now();
    Ok(queryids
        .iter()
        .map(|q| {
            let mut points: Vec<Point> = snapshots
                .iter()
                .map(|held| Point {
                    at: held.at,
                    stats_reset: held.stats_reset,
                    counters: held.counters.get(q).copied(),
                })
                .collect();
            points.push(Point {
                at: taken_now,
                stats_reset: now.stats_reset,
                counters: current_counters.get(q).copied(),
            });
            (*q, intervals(&points))
        })
        .collect())
}

/// The largest tables' sizes (bytes by schema and table) recorded with one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSizes {
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// Bytes, with indexes and TOAST, by (schema, table).
    pub sizes: HashMap<(String, String), i64>,
}

/// The sizes of the largest tables at the newest snapshot taken at least `age` ago (or the
/// oldest snapshot, if none is that old); `None` without snapshots.
pub fn table_sizes_at(conn: &mut PgConnection, age: Duration) -> Result<Option<RecordedSizes>> {
    // Snapshots recorded before sizes were kept have none.
    if !table_exists(conn, SNAPSHOT_TABLES[2])? {
        return Ok(None);
    }
    let all = snapshots(conn)?;
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let Some(chosen) = all
        .iter()
        .rev()
        .find(|s| s.taken_at <= cutoff)
        .or(all.first())
    else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Size {
        schema: String,
        table: String,
        bytes: i64,
    }
    let sizes: Vec<Size> = rows(
        conn,
        &format!(
            "SELECT schema, \"table\", bytes FROM pgops_stat_snapshot_tables WHERE snapshot_id = {}",
            chosen.id
        ),
        "reading the recorded table sizes",
    )?;
    Ok(Some(RecordedSizes {
        taken_at: chosen.taken_at,
        sizes: sizes
            .into_iter()
            .map(|s| ((s.schema, s.table), s.bytes))
            .collect(),
    }))
}

/// The newest snapshot taken at least `age` ago; the error says what exists and what to run.
fn snapshot_at_least(conn: &mut PgConnection, age: Duration) -> Result<SnapshotInfo> {
    let all = snapshots(conn)?;
    let cutoff = Utc::now()
        - chrono::Duration::from_std(age)
            .map_err(|_| Error::Invalid(format!("--since {age:?} is too long")))?;
    if let Some(found) = all.iter().rev().find(|s| s.taken_at <= cutoff) {
        return Ok(found.clone());
    }
    let hint = "record snapshots regularly, e.g. from cron: `*/5 * * * * pgops insights snapshot`";
    Err(Error::NoSnapshot(match all.first() {
        None => format!("no pg_stat_statements snapshot is recorded yet; {hint}"),
        Some(oldest) => format!(
            "no snapshot is {} old: the oldest was taken {} ago; use a shorter --since or {hint}",
            humantime::format_duration(age),
            humantime::format_duration(Duration::from_secs(
                (Utc::now() - oldest.taken_at).num_seconds().max(0) as u64
            ))
        ),
    }))
}

/// Adds query text, database and role names to deltas.
fn describe(conn: &mut PgConnection, deltas: &[Delta]) -> Result<Vec<TopQuery>> {
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Text {
        userid: u32,
        dbid: u32,
        queryid: i64,
        query: Option<String>,
        database: Option<String>,
        user: Option<String>,
    }
    let ids = deltas
        .iter()
        .map(|d| d.key.queryid.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let texts: Vec<Text> = rows(
        conn,
        &format!(
            "SELECT DISTINCT ON (p.userid, p.dbid, p.queryid) p.userid::int8 AS userid, \
                    p.dbid::int8 AS dbid, p.queryid, p.query, d.datname AS database, r.rolname AS user \
             FROM pg_stat_statements p \
             LEFT JOIN pg_database d ON d.oid = p.dbid LEFT JOIN pg_roles r ON r.oid = p.userid \
             WHERE p.queryid IN ({ids})"
        ),
        "reading query texts",
    )?;
    let by_key: HashMap<(u32, u32, i64), &Text> = texts
        .iter()
        .map(|t| ((t.userid, t.dbid, t.queryid), t))
        .collect();
    Ok(deltas
        .iter()
        .map(|d| {
            let text = by_key.get(&(d.key.userid, d.key.dbid, d.key.queryid));
            let c = d.counters;
            let touched = c.hit + c.read;
            TopQuery {
                queryid: d.key.queryid,
                // Utility statements keep their literals: no password leaves this function.
                query: text
                    .and_then(|t| t.query.as_deref())
                    .map(|q| pgops_pg::mask_secrets(q).into_owned())
                    .unwrap_or_else(|| "<query text no longer in pg_stat_statements>".into()),
                database: text
                    .and_then(|t| t.database.clone())
                    .unwrap_or_else(|| d.key.dbid.to_string()),
                user: text
                    .and_then(|t| t.user.clone())
                    .unwrap_or_else(|| d.key.userid.to_string()),
                calls: c.calls,
                total_ms: c.total_ms,
                mean_ms: c.total_ms / c.calls.max(1) as f64,
                rows: c.rows,
                cache_hit_ratio: (touched > 0).then(|| c.hit as f64 / touched as f64),
                io_blocks: c.io,
                origin: d.origin,
            }
        })
        .collect())
}

fn tables_exist(conn: &mut PgConnection) -> Result<bool> {
    table_exists(conn, SNAPSHOT_TABLES[0])
}

fn table_exists(conn: &mut PgConnection, name: &str) -> Result<bool> {
    #[derive(Deserialize)]
    struct E {
        e: bool,
    }
    let e: E = row(
        conn,
        &format!(
            "SELECT to_regclass({}) IS NOT NULL AS e",
            quote_literal(name)
        ),
        "looking for the snapshot tables",
    )?;
    Ok(e.e)
}

fn ensure_tables(conn: &mut PgConnection) -> Result<()> {
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS pgops_stat_snapshots (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             taken_at timestamptz NOT NULL DEFAULT now(),
             stats_reset timestamptz,
             dealloc bigint
         );
         CREATE INDEX IF NOT EXISTS pgops_stat_snapshots_taken_at ON pgops_stat_snapshots (taken_at);
         CREATE TABLE IF NOT EXISTS pgops_stat_snapshot_entries (
             snapshot_id bigint NOT NULL REFERENCES pgops_stat_snapshots ON DELETE CASCADE,
             userid oid NOT NULL,
             dbid oid NOT NULL,
             queryid bigint NOT NULL,
             toplevel boolean NOT NULL,
             calls bigint NOT NULL,
             total_ms double precision NOT NULL,
             rows bigint NOT NULL,
             hit bigint NOT NULL,
             read bigint NOT NULL,
             io bigint NOT NULL,
             PRIMARY KEY (snapshot_id, userid, dbid, queryid, toplevel)
         );
         CREATE TABLE IF NOT EXISTS pgops_stat_snapshot_tables (
             snapshot_id bigint NOT NULL REFERENCES pgops_stat_snapshots ON DELETE CASCADE,
             schema text NOT NULL,
             \"table\" text NOT NULL,
             bytes bigint NOT NULL,
             PRIMARY KEY (snapshot_id, schema, \"table\")
         );",
    )
    .map_err(Error::db(
        "creating the snapshot tables (the role needs CREATE on the database's public schema)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(queryid: i64, calls: i64, total_ms: f64) -> Entry {
        Entry {
            key: Key {
                userid: 10,
                dbid: 5,
                queryid,
                toplevel: true,
            },
            counters: Counters {
                calls,
                total_ms,
                rows: calls,
                hit: calls * 3,
                read: calls,
                io: calls,
            },
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn info(reset: Option<DateTime<Utc>>, dealloc: Option<i64>) -> SnapshotInfo {
        SnapshotInfo {
            id: 1,
            taken_at: at(0),
            stats_reset: reset,
            dealloc,
        }
    }

    #[test]
    fn subtracts_counters_and_drops_idle_entries() {
        let before = [entry(1, 10, 100.0), entry(2, 5, 50.0)];
        let now = [entry(1, 15, 130.0), entry(2, 5, 50.0), entry(3, 2, 8.0)];
        let w = diff(
            &info(Some(at(-100)), Some(0)),
            &before,
            Some(at(-100)),
            Some(0),
            &now,
        );
        assert!(!w.reset);
        assert_eq!(w.evictions, Some(0));
        assert_eq!(w.deltas.len(), 2, "{w:?}");
        let one = &w.deltas[0];
        assert_eq!((one.counters.calls, one.origin), (5, Origin::Diff));
        assert!((one.counters.total_ms - 30.0).abs() < 1e-9);
        assert_eq!(one.counters.hit, 15);
        assert_eq!(
            (w.deltas[1].counters.calls, w.deltas[1].origin),
            (2, Origin::New)
        );
    }

    #[test]
    fn a_reset_after_the_snapshot_counts_everything_from_the_reset() {
        let before = [entry(1, 100, 1000.0)];
        let now = [entry(1, 4, 9.0)];
        let w = diff(
            &info(Some(at(-100)), Some(7)),
            &before,
            Some(at(30)),
            Some(0),
            &now,
        );
        assert!(w.reset);
        assert_eq!(w.deltas[0].counters.calls, 4);
        assert_eq!(w.deltas[0].origin, Origin::SinceReset);
        assert_eq!(w.evictions, Some(0));
    }

    #[test]
    fn an_evicted_and_readded_entry_is_a_lower_bound_not_a_negative_number() {
        let before = [entry(1, 100, 1000.0)];
        let now = [entry(1, 3, 12.0)];
        let w = diff(
            &info(Some(at(-100)), Some(2)),
            &before,
            Some(at(-100)),
            Some(9),
            &now,
        );
        assert!(!w.reset);
        assert_eq!(w.deltas[0].origin, Origin::Readded);
        assert_eq!(w.deltas[0].counters.calls, 3);
        assert_eq!(w.evictions, Some(7));
    }

    #[test]
    fn intervals_follow_the_diff_rules() {
        let point = |secs, reset, counters| Point {
            at: at(secs),
            stats_reset: reset,
            counters,
        };
        let reset = Some(at(-1000));
        let points = [
            point(0, reset, None),
            point(300, reset, Some((10, 100.0))),
            point(600, reset, Some((25, 160.0))),
            // Evicted and re-added: the newer counters are a lower bound, never negative.
            point(900, reset, Some((4, 9.0))),
            // Reset after the previous point: everything since the reset.
            point(1200, Some(at(1000)), Some((7, 70.0))),
            point(1500, Some(at(1000)), None),
        ];
        let got: Vec<(i64, i64)> = intervals(&points)
            .iter()
            .map(|i| ((i.end - i.start).num_seconds(), i.calls))
            .collect();
        assert_eq!(got, [(300, 10), (300, 15), (300, 4), (300, 7), (300, 0)]);
        let ms: Vec<f64> = intervals(&points).iter().map(|i| i.total_ms).collect();
        assert_eq!(ms, [100.0, 60.0, 9.0, 70.0, 0.0]);
        assert!(intervals(&points[..1]).is_empty());
    }

    #[test]
    fn sorting_by_each_order() {
        let mut deltas: Vec<Delta> = [entry(1, 100, 100.0), entry(2, 2, 500.0), entry(3, 50, 75.0)]
            .into_iter()
            .map(|e| Delta {
                key: e.key,
                counters: e.counters,
                origin: Origin::Diff,
            })
            .collect();
        sort(&mut deltas, Order::Total);
        assert_eq!(deltas[0].key.queryid, 2);
        sort(&mut deltas, Order::Calls);
        assert_eq!(deltas[0].key.queryid, 1);
        sort(&mut deltas, Order::Mean);
        assert_eq!(deltas[0].key.queryid, 2);
        assert_eq!(deltas[2].key.queryid, 1);
    }
}
