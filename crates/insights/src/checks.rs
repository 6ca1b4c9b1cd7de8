//! Health checks with thresholds, for cron and CI: long-running queries, sessions idle in a
//! transaction, blocked queries, sequences near their maximum, transaction ID wraparound and
//! the cache hit ratio.

use std::time::Duration;

use diesel::PgConnection;
use serde::{Deserialize, Serialize};

use pgops_pg::rows::rows;

use crate::Result;

/// The thresholds; a check fails when its value crosses one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckThresholds {
    /// A query active longer than this is long-running.
    pub long_running: Duration,
    /// A session idle in a transaction longer than this holds locks and snapshots too long.
    pub idle_in_transaction: Duration,
    /// A query waiting on another session's lock longer than this is blocked.
    pub blocked: Duration,
    /// A sequence (or the column it feeds) used beyond this share of its range.
    pub sequence_used: f64,
    /// Transaction ID age beyond this share of the 2^31 wraparound horizon.
    pub wraparound_used: f64,
    /// Cache hit ratio below this.
    pub min_cache_hit: f64,
}

impl Default for CheckThresholds {
    fn default() -> Self {
        CheckThresholds {
            long_running: Duration::from_secs(300),
            idle_in_transaction: Duration::from_secs(60),
            blocked: Duration::from_secs(30),
            sequence_used: 0.75,
            wraparound_used: 0.5,
            min_cache_hit: 0.99,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Its name (`long_running_queries`, ...).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// The measured value (count, ratio or age, per check).
    pub value: f64,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// One line per offender.
    pub details: Vec<String>,
    /// What to do when it fails.
    pub fix: &'static str,
}

/// Transaction IDs until wraparound shutdown: 2^31.
pub const XID_HORIZON: f64 = 2_147_483_648.0;

/// Runs every check.
pub fn run(conn: &mut PgConnection, t: &CheckThresholds) -> Result<Vec<Check>> {
    Ok(vec![
        long_running(conn, t.long_running)?,
        idle_in_transaction(conn, t.idle_in_transaction)?,
        blocked(conn, t.blocked)?,
        sequences(conn, t.sequence_used)?,
        wraparound(conn, t.wraparound_used)?,
        cache_hit(conn, t.min_cache_hit)?,
    ])
}

#[derive(Deserialize)]
struct Session {
    pid: i32,
    user: Option<String>,
    database: Option<String>,
    seconds: f64,
    query: Option<String>,
    blockers: Option<Vec<i32>>,
}

impl Session {
    fn line(&self) -> String {
        let query: String = self
            .query
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let query: String = query.chars().take(120).collect();
        let blockers = match &self.blockers {
            Some(b) if !b.is_empty() => format!(
                " blocked by pid {}",
                b.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        };
        format!(
            "pid {} {}@{} for {:.0}s{blockers}: {query}",
            self.pid,
            self.user.as_deref().unwrap_or("?"),
            self.database.as_deref().unwrap_or("?"),
            self.seconds
        )
    }
}

fn sessions(
    conn: &mut PgConnection,
    filter: &str,
    since: &str,
    limit: Duration,
) -> Result<Vec<Session>> {
    let mut sessions: Vec<Session> = rows(
        conn,
        &format!(
            "SELECT pid, usename::text AS user, datname::text AS database,
                    extract(epoch FROM now() - {since})::float8 AS seconds, query,
                    pg_blocking_pids(pid) AS blockers
             FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND {filter}
               AND now() - {since} > make_interval(secs => {})
             ORDER BY {since}",
            limit.as_secs_f64()
        ),
        "reading pg_stat_activity",
    )?;
    // A session may be running `ALTER ROLE .. PASSWORD '..'`: no password leaves here.
    for session in &mut sessions {
        if let Some(query) = &session.query {
            session.query = Some(pgops_pg::mask_secrets(query).into_owned());
        }
    }
    Ok(sessions)
}

fn count_check(
    name: &'static str,
    found: Vec<Session>,
    limit: Duration,
    fix: &'static str,
) -> Check {
    Check {
        name,
        ok: found.is_empty(),
        value: found.len() as f64,
        threshold: limit.as_secs_f64(),
        details: found.iter().map(Session::line).collect(),
        fix,
    }
}

/// Queries active for longer than `limit`.
pub fn long_running(conn: &mut PgConnection, limit: Duration) -> Result<Check> {
    let found = sessions(conn, "state = 'active'", "query_start", limit)?;
    Ok(count_check(
        "long_running_queries",
        found,
        limit,
        "look at the query with `pgops insights explain`; stop it with SELECT pg_cancel_backend(pid)",
    ))
}

/// Sessions idle inside a transaction for longer than `limit`.
pub fn idle_in_transaction(conn: &mut PgConnection, limit: Duration) -> Result<Check> {
    let found = sessions(
        conn,
        "state IN ('idle in transaction', 'idle in transaction (aborted)')",
        "state_change",
        limit,
    )?;
    Ok(count_check(
        "idle_in_transaction",
        found,
        limit,
        "fix the application's transaction handling; set idle_in_transaction_session_timeout; end one with SELECT pg_terminate_backend(pid)",
    ))
}

/// Queries waiting on another session's lock for longer than `limit`.
pub fn blocked(conn: &mut PgConnection, limit: Duration) -> Result<Check> {
    let found = sessions(
        conn,
        "cardinality(pg_blocking_pids(pid)) > 0",
        "coalesce(state_change, query_start)",
        limit,
    )?;
    Ok(count_check(
        "blocked_queries",
        found,
        limit,
        "find what the blocking pid is doing (often idle in transaction) and end it, or set lock_timeout in the application",
    ))
}

/// Sequences (or the integer columns they feed) beyond `limit` of their range.
pub fn sequences(conn: &mut PgConnection, limit: f64) -> Result<Check> {
    #[derive(Deserialize)]
    struct Seq {
        name: String,
        last_value: i64,
        max_value: f64,
        column: Option<String>,
        used: f64,
    }
    let found: Vec<Seq> = rows(
        conn,
        &format!(
            "SELECT * FROM (
               SELECT format('%I.%I', s.schemaname, s.sequencename) AS name, s.last_value,
                      least(s.max_value::float8, coalesce(CASE a.atttypid
                          WHEN 'int2'::regtype THEN 32767::float8
                          WHEN 'int4'::regtype THEN 2147483647::float8 END, s.max_value::float8)) AS max_value,
                      CASE WHEN a.attname IS NOT NULL
                           THEN format('%s.%I', d.refobjid::regclass, a.attname) END AS column,
                      s.last_value::float8 / least(s.max_value::float8, coalesce(CASE a.atttypid
                          WHEN 'int2'::regtype THEN 32767::float8
                          WHEN 'int4'::regtype THEN 2147483647::float8 END, s.max_value::float8)) AS used
               FROM pg_sequences s
               JOIN pg_class c ON c.relname = s.sequencename
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
               LEFT JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE s.last_value IS NOT NULL AND s.increment_by > 0
             ) q WHERE used > {limit} ORDER BY used DESC"
        ),
        "reading sequences",
    )?;
    Ok(Check {
        name: "sequences_near_max",
        ok: found.is_empty(),
        value: found.iter().map(|s| s.used).fold(0.0, f64::max),
        threshold: limit,
        details: found
            .iter()
            .map(|s| {
                format!(
                    "{} at {} of {:.0} ({:.1}%){}",
                    s.name,
                    s.last_value,
                    s.max_value,
                    s.used * 100.0,
                    s.column
                        .as_deref()
                        .map(|c| format!(", feeds {c}"))
                        .unwrap_or_default()
                )
            })
            .collect(),
        fix: "widen the column and sequence to bigint (ALTER TABLE .. ALTER COLUMN .. TYPE bigint; ALTER SEQUENCE .. AS bigint) before it runs out",
    })
}

/// Databases whose oldest unfrozen transaction ID is beyond `limit` of the wraparound horizon.
pub fn wraparound(conn: &mut PgConnection, limit: f64) -> Result<Check> {
    #[derive(Deserialize)]
    struct Age {
        database: String,
        xid_age: i64,
        mxid_age: i64,
    }
    let ages: Vec<Age> = rows(
        conn,
        "SELECT datname::text AS database, age(datfrozenxid)::int8 AS xid_age,
                mxid_age(datminmxid)::int8 AS mxid_age
         FROM pg_database WHERE datallowconn ORDER BY 2 DESC",
        "reading transaction ID ages",
    )?;
    let used = |a: &Age| a.xid_age.max(a.mxid_age) as f64 / XID_HORIZON;
    let worst = ages.iter().map(used).fold(0.0, f64::max);
    Ok(Check {
        name: "transaction_id_wraparound",
        ok: worst <= limit,
        value: worst,
        threshold: limit,
        details: ages
            .iter()
            .filter(|a| used(a) > limit)
            .map(|a| {
                format!(
                    "{}: xid age {}, multixact age {} ({:.1}% of the horizon)",
                    a.database,
                    a.xid_age,
                    a.mxid_age,
                    used(a) * 100.0
                )
            })
            .collect(),
        fix: "VACUUM (FREEZE, VERBOSE) the oldest tables of that database; look for long transactions, stale replication slots and prepared transactions holding the horizon back",
    })
}

/// The share of this database's table and index block reads served from shared buffers.
/// Passes while fewer than 10,000 blocks were read: there is nothing to judge yet.
pub fn cache_hit(conn: &mut PgConnection, limit: f64) -> Result<Check> {
    #[derive(Deserialize)]
    struct Ratio {
        hit: f64,
        read: f64,
    }
    let r: Vec<Ratio> = rows(
        conn,
        "SELECT coalesce(sum(heap_blks_hit + coalesce(idx_blks_hit, 0)), 0)::float8 AS hit,
                coalesce(sum(heap_blks_read + coalesce(idx_blks_read, 0)), 0)::float8 AS read
         FROM pg_statio_user_tables",
        "reading pg_statio_user_tables",
    )?;
    let (hit, read) = r.first().map_or((0.0, 0.0), |r| (r.hit, r.read));
    let total = hit + read;
    let ratio = if total > 0.0 { hit / total } else { 1.0 };
    let judged = total >= 10_000.0;
    Ok(Check {
        name: "cache_hit_ratio",
        ok: !judged || ratio >= limit,
        value: ratio,
        threshold: limit,
        details: if judged && ratio < limit {
            vec![format!(
                "{hit:.0} of {total:.0} block reads came from shared buffers"
            )]
        } else {
            Vec::new()
        },
        fix: "raise shared_buffers (and check effective_cache_size), or find the queries reading most with `pgops insights top --by io`",
    })
}
