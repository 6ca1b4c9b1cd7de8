//! The `workload` suite: the sample application's key queries on the staging dataset, each
//! under concurrent load with p50/p95/p99 latency and QPS; and one of them against the same
//! query run by `pgbench -f`, so the harness's own overhead is visible.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, PgConnection, QueryDsl, RunQueryDsl, connection::SimpleConnection,
};
use pgops_schema::schema::{audit_logs, notes, patients, sessions, users};
use pgops_seed::{Dataset, NoProgress, SeedOptions};
use pgops_testkit::{Cluster, ClusterOptions};

use crate::{
    pool::pgbench_tps,
    report::{Comparison, Measurement, Report, median},
    workload::pgbench,
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Staging scale (1.0: 100k patients, 1M audit log rows).
    pub scale: f64,
    /// Concurrent clients.
    pub clients: u32,
    /// Seconds per measurement.
    pub seconds: u64,
    /// Rounds (medians are reported).
    pub rounds: usize,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scale: 0.1,
                clients: 4,
                seconds: 2,
                rounds: 3,
            }
        } else {
            Plan {
                scale: 1.0,
                clients: 8,
                // 3 s, as in the pool suite: a window holds 6k to 160k queries, enough for
                // a p99, and the rounds, not their length, are what outlast a slow spell.
                seconds: 3,
                rounds: 5,
            }
        }
    }
}

/// Keys the queries draw from, read once after seeding.
#[derive(Debug, Clone)]
struct Keys {
    organizations: Vec<i64>,
    max_user: i64,
    max_note: i64,
    tokens: Vec<Vec<u8>>,
    audit_from: DateTime<Utc>,
    audit_to: DateTime<Utc>,
}

/// The audit-log query, as the pgbench script runs it too.
const AUDIT_SQL: &str = "SELECT id, action, entity_type, entity_id, created_at FROM audit_logs \
    WHERE user_id = :uid AND created_at >= :from AND created_at < :to \
    ORDER BY created_at DESC LIMIT 50";

/// Runs the suite on a fresh cluster.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let cluster = Cluster::start(ClusterOptions::default()).context("starting a cluster")?;
    cluster.create_database("bench")?;
    let mut conn = cluster.connect("bench")?;
    pgops_schema::migrate(&mut conn)?;
    eprintln!("seeding staging at scale {} ...", plan.scale);
    pgops_seed::seed(
        &mut conn,
        &SeedOptions {
            dataset: Dataset::Staging,
            seed: 1,
            scale: plan.scale,
            reset: false,
        },
        &mut NoProgress,
    )?;
    let keys = Arc::new(keys(&mut conn)?);
    let url = cluster.url("bench");

    let queries: [(&str, QueryFn); 5] = [
        ("active_patients_by_name", active_patients),
        ("notes_with_providers", notes_with_providers),
        (
            "notes_with_providers_n_plus_1",
            notes_with_providers_n_plus_1,
        ),
        ("user_audit_log_range", user_audit_log),
        ("session_lookup", session_lookup),
    ];
    let mut measurements = Vec::new();
    for (name, query) in queries {
        let mut rounds = Vec::new();
        for _ in 0..plan.rounds {
            rounds.push(load(&url, plan, keys.clone(), query)?);
        }
        let m = Measurement {
            name: name.to_owned(),
            qps: median(&rounds.iter().map(|r| r.qps).collect::<Vec<_>>()),
            p50_ms: median(&rounds.iter().map(|r| r.p50_ms).collect::<Vec<_>>()),
            p95_ms: median(&rounds.iter().map(|r| r.p95_ms).collect::<Vec<_>>()),
            p99_ms: median(&rounds.iter().map(|r| r.p99_ms).collect::<Vec<_>>()),
        };
        eprintln!(
            "{name}: {:.0} qps, p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
            m.qps, m.p50_ms, m.p95_ms, m.p99_ms
        );
        measurements.push(m);
    }

    // The same audit query through pgbench -f, interleaved with ours.
    let dir = std::env::temp_dir().join(format!("pgops-bench-workload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("user_audit_log_range.sql");
    // Every value a parameter, as diesel sends it: `:uid` from `\set`, `:from` and `:to`
    // from -D. (With the timestamps as literals pgbench ran about a third slower: the server
    // planned those statements differently.)
    std::fs::write(
        &script,
        format!("\\set uid random(1, {})\n{AUDIT_SQL};\n", keys.max_user),
    )?;
    let from = format!("from={}", keys.audit_from.to_rfc3339());
    let to = format!("to={}", keys.audit_to.to_rfc3339());
    let clients = plan.clients.to_string();
    let seconds = plan.seconds.to_string();
    let script_arg = script.display().to_string();
    let args = [
        "-n",
        "-M",
        "prepared",
        "-c",
        &clients,
        "-j",
        "2",
        "-T",
        &seconds,
        "-D",
        &from,
        "-D",
        &to,
        "-f",
        &script_arg,
    ];
    let anchor_tool = format!(
        "pgbench -n -M prepared -c {clients} -j 2 -T {seconds} -D from=.. -D to=.. -f user_audit_log_range.sql (\\set uid random(1, {}); the same SELECT with :uid, :from, :to)",
        keys.max_user
    );
    // Both sides must do the same work: the rows the harness gets per query match what the
    // script's query returns on average over its uniform user ids.
    #[derive(diesel::QueryableByName)]
    struct Expected {
        #[diesel(sql_type = diesel::sql_types::Double)]
        rows: f64,
    }
    let expected: Expected = diesel::sql_query(format!(
        "SELECT coalesce(sum(least(n, 50)), 0)::float8 / {} AS rows FROM (
           SELECT count(*) AS n FROM audit_logs WHERE created_at >= '{}' AND created_at < '{}'
           GROUP BY user_id) per_user",
        keys.max_user,
        keys.audit_from.to_rfc3339(),
        keys.audit_to.to_rfc3339()
    ))
    .get_result(&mut conn)?;
    let check = load(&url, plan, keys.clone(), user_audit_log)?;
    eprintln!(
        "user_audit_log_range returns {:.2} rows per query ({:.2} expected for the pgbench script)",
        check.rows_per_query, expected.rows
    );
    ensure!(
        (check.rows_per_query - expected.rows).abs() <= 0.1 * expected.rows.max(1.0),
        "the harness returns {:.2} rows per query, the pgbench script {:.2}: not the same work",
        check.rows_per_query,
        expected.rows
    );
    let (mut ours, mut anchor) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let pgops_first = round % 2 == 0;
        for side in [pgops_first, !pgops_first] {
            if side {
                ours.push(load(&url, plan, keys.clone(), user_audit_log)?.qps);
            } else {
                let out = pgbench(&cluster, "bench", &args)?;
                anchor.push(pgbench_tps(&out)?);
            }
        }
        eprintln!(
            "round {}: harness {:.0} qps, pgbench -f {:.0} qps",
            round + 1,
            ours[round],
            anchor[round]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        suite: "workload".into(),
        comparisons: vec![
            Comparison::from_rounds(
                "audit_range_qps",
                "queries/s",
                &ours,
                &anchor,
                &anchor_tool,
                true,
            )
            .target(0.9),
        ],
        measurements,
        machine: None,
        quick: false,
    })
}

fn keys(conn: &mut PgConnection) -> anyhow::Result<Keys> {
    let organizations: Vec<i64> = patients::table
        .select(patients::organization_id)
        .distinct()
        .load(conn)?;
    let max_user: i64 = users::table
        .select(diesel::dsl::max(users::id))
        .first::<Option<i64>>(conn)?
        .context("no users seeded")?;
    let max_note: i64 = notes::table
        .select(diesel::dsl::max(notes::id))
        .first::<Option<i64>>(conn)?
        .context("no notes seeded")?;
    let tokens: Vec<Vec<u8>> = sessions::table
        .select(sessions::token_hash)
        .limit(5000)
        .load(conn)?;
    let audit_to: DateTime<Utc> = audit_logs::table
        .select(diesel::dsl::max(audit_logs::created_at))
        .first::<Option<DateTime<Utc>>>(conn)?
        .context("no audit logs seeded")?;
    ensure!(
        !organizations.is_empty() && !tokens.is_empty(),
        "the staging seed is empty"
    );
    conn.batch_execute("VACUUM ANALYZE")?;
    Ok(Keys {
        organizations,
        max_user,
        max_note,
        tokens,
        audit_from: audit_to - chrono::Duration::days(30),
        audit_to,
    })
}

type QueryFn = fn(&mut PgConnection, &Keys, &mut u64) -> anyhow::Result<usize>;

/// The first page of an organization's active patients by last name.
fn active_patients(conn: &mut PgConnection, keys: &Keys, rng: &mut u64) -> anyhow::Result<usize> {
    let org = keys.organizations[pick(rng, keys.organizations.len() as u64) as usize];
    let rows: Vec<(i64, String, String)> = patients::table
        .select((patients::id, patients::first_name, patients::last_name))
        .filter(patients::organization_id.eq(org))
        .filter(patients::status.eq("active"))
        .order(patients::last_name)
        .limit(50)
        .load(conn)?;
    Ok(rows.len())
}

/// The ids of a page of twenty random notes.
fn note_page(keys: &Keys, rng: &mut u64) -> Vec<i64> {
    (0..20)
        .map(|_| 1 + pick(rng, keys.max_note as u64) as i64)
        .collect()
}

/// Twenty notes by id with the name of the provider who wrote each: one JOIN, not 21 queries.
fn notes_with_providers(
    conn: &mut PgConnection,
    keys: &Keys,
    rng: &mut u64,
) -> anyhow::Result<usize> {
    let ids = note_page(keys, rng);
    let rows: Vec<(i64, String, DateTime<Utc>, String)> = notes::table
        .inner_join(users::table)
        .select((notes::id, notes::kind, notes::created_at, users::full_name))
        .filter(notes::id.eq_any(ids))
        .load(conn)?;
    Ok(rows.len())
}

/// The same page the N+1 way: the notes, then one query per note for its provider. Measured
/// beside the JOIN for docs/database/query-optimization.md.
fn notes_with_providers_n_plus_1(
    conn: &mut PgConnection,
    keys: &Keys,
    rng: &mut u64,
) -> anyhow::Result<usize> {
    let ids = note_page(keys, rng);
    let found: Vec<(i64, String, DateTime<Utc>, i64)> = notes::table
        .select((
            notes::id,
            notes::kind,
            notes::created_at,
            notes::provider_id,
        ))
        .filter(notes::id.eq_any(ids))
        .load(conn)?;
    let mut rows = 0;
    for (_, _, _, provider) in &found {
        let _name: String = users::table
            .select(users::full_name)
            .find(provider)
            .first(conn)?;
        rows += 1;
    }
    Ok(rows)
}

/// A user's audit log over the last 30 days of data, newest first.
fn user_audit_log(conn: &mut PgConnection, keys: &Keys, rng: &mut u64) -> anyhow::Result<usize> {
    let user = 1 + pick(rng, keys.max_user as u64) as i64;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, String, Option<String>, Option<i64>, DateTime<Utc>)> = audit_logs::table
        .select((
            audit_logs::id,
            audit_logs::action,
            audit_logs::entity_type,
            audit_logs::entity_id,
            audit_logs::created_at,
        ))
        .filter(audit_logs::user_id.eq(user))
        .filter(audit_logs::created_at.ge(keys.audit_from))
        .filter(audit_logs::created_at.lt(keys.audit_to))
        .order(audit_logs::created_at.desc())
        .limit(50)
        .load(conn)?;
    Ok(rows.len())
}

/// A live session by its token hash, as every authenticated request does (the caller checks
/// `expires_at` against its own clock: the seeded data uses a fixed one).
fn session_lookup(conn: &mut PgConnection, keys: &Keys, rng: &mut u64) -> anyhow::Result<usize> {
    let token = &keys.tokens[pick(rng, keys.tokens.len() as u64) as usize];
    let rows: Vec<(i64, i64)> = sessions::table
        .select((sessions::id, sessions::user_id))
        .filter(sessions::token_hash.eq(token))
        .filter(sessions::revoked_at.is_null())
        .load(conn)?;
    Ok(rows.len())
}

struct Round {
    qps: f64,
    rows_per_query: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

/// Runs `query` from `plan.clients` threads, each with its own connection, for
/// `plan.seconds`; records every call's latency.
fn load(url: &str, plan: Plan, keys: Arc<Keys>, query: QueryFn) -> anyhow::Result<Round> {
    let barrier = Arc::new(Barrier::new(plan.clients as usize));
    let threads: Vec<_> = (0..plan.clients)
        .map(|client| {
            let (barrier, keys, url) = (barrier.clone(), keys.clone(), url.to_owned());
            std::thread::spawn(move || -> anyhow::Result<(Vec<u32>, usize, Duration)> {
                use diesel::Connection;
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ ((u64::from(client) + 1) * 0x2545_F491);
                let conn = PgConnection::establish(&url);
                barrier.wait();
                let mut conn = conn?;
                let mut latencies = Vec::with_capacity(100_000);
                let mut rows = 0;
                let started = Instant::now();
                let deadline = started + Duration::from_secs(plan.seconds);
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    rows += query(&mut conn, &keys, &mut rng)?;
                    latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                Ok((latencies, rows, started.elapsed()))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut rows = 0;
    let mut longest = Duration::ZERO;
    for thread in threads {
        let (latencies, returned, elapsed) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        all.extend(latencies);
        rows += returned;
        longest = longest.max(elapsed);
    }
    ensure!(!all.is_empty(), "no query completed");
    all.sort_unstable();
    let at = |q: f64| f64::from(all[((all.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    Ok(Round {
        qps: all.len() as f64 / longest.as_secs_f64(),
        rows_per_query: rows as f64 / all.len() as f64,
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
    })
}

fn pick(state: &mut u64, n: u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x % n.max(1)
}
