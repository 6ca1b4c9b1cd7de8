//! `pgops insights <slow-log|snapshot|top|explain|what-if|indexes|checks>`: what PgHero and
//! pg_stat_statements show, from the command line, with exit codes for cron and CI.

use std::{io::Write, time::Duration};

use pgops_insights::{
    CheckThresholds, Error as InsightsError, ExplainOptions, LogStatement, Order, SlowLog,
    TopOptions, advice, checks, explain, slowlog, statements,
};
use serde::Serialize;

use crate::{
    db::{connect, database_url},
    exit::{Exit, Failure},
};

/// Options of `pgops insights`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// Database to inspect (its password is never printed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs of `pgops insights`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Log slow statements (and optionally their plans) through ALTER SYSTEM + reload, then
    /// verify with SHOW. Needs superuser or ALTER SYSTEM privilege on each parameter.
    SlowLog {
        /// Log statements running at least this long (log_min_duration_statement).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        min_duration: Duration,
        /// Also log the plans of statements slower than this, through auto_explain.
        #[arg(long, value_parser = humantime::parse_duration)]
        auto_explain: Option<Duration>,
        /// Which statements to log whatever their duration (log_statement); `mod` is an audit
        /// trail of every data-modifying statement.
        #[arg(long, default_value = "mod", value_parser = ["none", "ddl", "mod", "all"])]
        log_statement: String,
        /// Bytes of each bound parameter that logged statements show
        /// (log_parameter_max_length and .._on_error). Parameters carry application data
        /// into the server log: 0 shows none, -1 shows them whole.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-1..=1_073_741_823))]
        log_parameter_max_length: i32,
        /// Print the SQL instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// Put every setting back to the configuration file's value.
        #[arg(long, conflicts_with_all = ["auto_explain", "dry_run", "log_statement", "log_parameter_max_length"])]
        reset: bool,
    },
    /// Record a snapshot of pg_stat_statements for `top --since` (run it from cron).
    Snapshot {
        /// Delete snapshots older than this.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        keep: Duration,
    },
    /// The top queries from pg_stat_statements, over a window with --since.
    Top {
        /// What to rank by.
        #[arg(long, value_enum, default_value = "total")]
        by: By,
        /// How many queries to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only what ran in this window: diffed against the newest snapshot at least this old.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Include queries of every database, not only the one connected to.
        #[arg(long)]
        all_databases: bool,
        /// Only the statement with this queryid (the first column).
        #[arg(long, allow_negative_numbers = true)]
        queryid: Option<i64>,
        /// Print each query's whole text, as pg_stat_statements keeps it, under its row
        /// (the list cuts it to one line of 100 characters).
        #[arg(long)]
        full: bool,
    },
    /// EXPLAIN one statement in a transaction that is always rolled back.
    ///
    /// Text from `insights top` has `$1`, `$2`, ... where constants were: give a value for
    /// each with --param (the server casts it to the type it infers), or ask for the generic
    /// plan with --generic (PostgreSQL 16+). --queryid takes the text from pg_stat_statements.
    Explain {
        /// The statement (`-` reads it from stdin).
        #[arg(required_unless_present = "queryid", conflicts_with = "queryid")]
        sql: Option<String>,
        /// Explain the statement pg_stat_statements keeps under this queryid (from
        /// `insights top`).
        #[arg(long, allow_negative_numbers = true)]
        queryid: Option<i64>,
        /// A value for the next parameter: the first --param is $1 (repeatable).
        #[arg(long = "param", value_name = "VALUE", allow_hyphen_values = true)]
        params: Vec<String>,
        /// The generic plan, with parameters left unknown (EXPLAIN (GENERIC_PLAN),
        /// PostgreSQL 16+).
        #[arg(long, conflicts_with_all = ["analyze", "params"])]
        generic: bool,
        /// Run it (EXPLAIN ANALYZE); its effects are rolled back.
        #[arg(long)]
        analyze: bool,
        /// Show buffer usage.
        #[arg(long)]
        buffers: bool,
        /// statement_timeout (and lock_timeout) for the statement.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Cost a statement with hypothetical indexes (HypoPG), without building them.
    WhatIf {
        /// The statement (`-` reads it from stdin).
        sql: String,
        /// A CREATE INDEX statement to try (repeatable) [default: indexes suggested from the
        /// statement's sequential scans].
        #[arg(long = "index")]
        indexes: Vec<String>,
        /// statement_timeout for planning.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Unused, duplicate, overlapping and invalid indexes, foreign keys without an index,
    /// tables read by sequential scans (exit 1 on invalid or duplicate indexes).
    Indexes {
        /// Tables with fewer live rows are not judged for sequential scans.
        #[arg(long, default_value_t = 10_000)]
        large_table_rows: i64,
    },
    /// Long-running queries, idle transactions, blocked queries, sequences near their maximum,
    /// wraparound age and cache hit ratio (exit 1 when any check fails).
    Checks {
        /// A query active longer than this fails `long_running_queries`.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        long_running: Duration,
        /// A session idle in a transaction longer than this fails `idle_in_transaction`.
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        idle_in_transaction: Duration,
        /// A query waiting on a lock longer than this fails `blocked_queries`.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        blocked: Duration,
        /// A sequence past this share of its range fails `sequences_near_max`.
        #[arg(long, default_value_t = 0.75, value_parser = share)]
        sequence_threshold: f64,
        /// Transaction ID age past this share of 2^31 fails `transaction_id_wraparound`.
        #[arg(long, default_value_t = 0.5, value_parser = share)]
        wraparound_threshold: f64,
        /// A cache hit ratio below this fails `cache_hit_ratio`.
        #[arg(long, default_value_t = 0.99, value_parser = share)]
        cache_hit: f64,
    },
}

/// What `top` ranks by.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum By {
    /// Total execution time.
    Total,
    /// Mean execution time.
    Mean,
    /// Calls.
    Calls,
    /// Rows.
    Rows,
    /// Blocks read from disk or temp files.
    Io,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{text} is not a share; use a number from 0 to 1 (0.75 is 75%)"
        )),
    }
}

/// Maps a library error to the exit code: what the operator must change is 2, a statement that
/// failed on the server is 1.
fn fail(error: InsightsError) -> Failure {
    match error {
        InsightsError::Database { .. } | InsightsError::Decode { .. } => Failure::problem(error),
        _ => Failure::usage(error),
    }
}

fn read_sql(sql: &str) -> Result<String, Failure> {
    if sql != "-" {
        return Ok(sql.to_owned());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| Failure::usage(anyhow::anyhow!("reading the statement from stdin: {e}")))?;
    Ok(text)
}

fn emit(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::problem(anyhow::anyhow!("writing output: {e}")))
}

fn json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::problem(anyhow::anyhow!("encoding JSON: {e}")))?;
    emit(out, &format!("{text}\n"))
}

/// Runs one `pgops insights` command.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    // Parse and validate everything before connecting.
    let sql = match &args.verb {
        Verb::Explain { sql: Some(sql), .. } | Verb::WhatIf { sql, .. } => {
            let sql = read_sql(sql)?;
            pgops_insights::sql::check_explainable(&sql).map_err(fail)?;
            Some(sql)
        }
        _ => None,
    };
    let url = database_url(args.database_url.as_deref())?;
    let mut conn = connect(&url)?;
    let sql = match (&args.verb, sql) {
        (
            Verb::Explain {
                queryid: Some(id), ..
            },
            None,
        ) => Some(pgops_insights::query_text(&mut conn, *id).map_err(fail)?),
        (_, sql) => sql,
    };
    match &args.verb {
        Verb::SlowLog {
            min_duration,
            auto_explain,
            log_statement,
            log_parameter_max_length,
            dry_run,
            reset,
        } => {
            let request = SlowLog {
                min_duration: *min_duration,
                auto_explain: *auto_explain,
                log_statement: match log_statement.as_str() {
                    "none" => LogStatement::None,
                    "ddl" => LogStatement::Ddl,
                    "all" => LogStatement::All,
                    _ => LogStatement::Mod,
                },
                parameter_max_length: *log_parameter_max_length,
            };
            if *reset {
                let statements = slowlog::reset(&mut conn).map_err(fail)?;
                return done(
                    out,
                    args.json,
                    &statements,
                    "reset; the configuration file's values apply again",
                );
            }
            if *dry_run {
                let preload = slowlog::session_preload(&mut conn).unwrap_or_default();
                let statements = slowlog::statements(&request.settings(&preload));
                if args.json {
                    json(out, &statements)?;
                } else {
                    emit(out, &format!("{};\n", statements.join(";\n")))?;
                }
                return Ok(Exit::Ok);
            }
            let applied = slowlog::apply(&mut conn, &request).map_err(fail)?;
            if args.json {
                json(out, &applied)?;
            } else {
                let mut text = String::new();
                for (setting, shown) in &applied.verified {
                    text.push_str(&format!("{:<32} {shown}\n", setting.name));
                }
                text.push_str("applied with ALTER SYSTEM and reloaded; SHOW confirms every value (no restart needed)\n");
                text.push_str(&parameters_note(request.parameter_max_length));
                emit(out, &text)?;
            }
            Ok(Exit::Ok)
        }
        Verb::Snapshot { keep } => {
            let snapshot = statements::record_snapshot(&mut conn, *keep).map_err(fail)?;
            if args.json {
                json(out, &snapshot)?;
            } else {
                emit(
                    out,
                    &format!(
                        "snapshot {} recorded at {}\n",
                        snapshot.id, snapshot.taken_at
                    ),
                )?;
            }
            Ok(Exit::Ok)
        }
        Verb::Top {
            by,
            limit,
            since,
            all_databases,
            queryid,
            full,
        } => {
            let options = TopOptions {
                order: match by {
                    By::Total => Order::Total,
                    By::Mean => Order::Mean,
                    By::Calls => Order::Calls,
                    By::Rows => Order::Rows,
                    By::Io => Order::Io,
                },
                limit: *limit as usize,
                since: *since,
                all_databases: *all_databases,
                queryid: *queryid,
            };
            let top = statements::top(&mut conn, &options).map_err(fail)?;
            if args.json {
                json(out, &top)?;
            } else {
                emit(out, &render_top(&top, *full))?;
            }
            Ok(Exit::Ok)
        }
        Verb::Explain {
            params,
            generic,
            analyze,
            buffers,
            timeout,
            ..
        } => {
            let options = ExplainOptions {
                analyze: *analyze,
                buffers: *buffers,
                statement_timeout: *timeout,
                params: params.clone(),
                generic_plan: *generic,
                ..ExplainOptions::default()
            };
            let explained =
                explain(&mut conn, sql.as_deref().unwrap_or_default(), &options).map_err(fail)?;
            if args.json {
                json(out, &explained)?;
            } else {
                let mut text = String::new();
                if explained.generic_plan {
                    text.push_str("generic plan: parameters unknown\n");
                }
                for p in &explained.parameters {
                    text.push_str(&format!(
                        "${} {} = {}\n",
                        p.position,
                        p.type_name,
                        pgops_pg::quote_literal(&p.value)
                    ));
                }
                text.push_str(&explain::render(&explained.plan));
                text.push_str(&format!("total cost {:.2}", explained.total_cost));
                if let (Some(p), Some(e)) = (explained.planning_ms, explained.execution_ms) {
                    text.push_str(&format!(", planning {p:.3} ms, execution {e:.3} ms"));
                }
                text.push_str(if *analyze { " (rolled back)\n" } else { "\n" });
                for finding in &explained.findings {
                    text.push_str(&format!("finding: {}\n", describe(finding)));
                }
                emit(out, &text)?;
            }
            Ok(Exit::Ok)
        }
        Verb::WhatIf {
            indexes, timeout, ..
        } => {
            let sql = sql.as_deref().unwrap_or_default();
            let indexes = if indexes.is_empty() {
                let suggested =
                    pgops_insights::suggest(&mut conn, sql, 10_000.0, *timeout).map_err(fail)?;
                if suggested.is_empty() {
                    return Err(Failure::problem(anyhow::anyhow!(
                        "no sequential scan with a filter on a large table in this plan, so nothing to suggest; pass --index \"CREATE INDEX ON table (columns)\" to try one"
                    )));
                }
                suggested
            } else {
                indexes.clone()
            };
            let result =
                pgops_insights::what_if(&mut conn, sql, &indexes, *timeout).map_err(fail)?;
            if args.json {
                json(out, &result)?;
            } else {
                let mut text = String::new();
                for c in &result.candidates {
                    text.push_str(&format!(
                        "{} ({}, ~{} kB)\n",
                        c.definition,
                        if c.used { "used" } else { "not used" },
                        c.estimated_bytes.unwrap_or(0) / 1024
                    ));
                }
                text.push_str(&format!(
                    "cost {:.2} -> {:.2} ({:.1}x)\n{}",
                    result.cost_before,
                    result.cost_after,
                    result.improvement,
                    explain::render(&result.plan_after)
                ));
                emit(out, &text)?;
            }
            Ok(Exit::Ok)
        }
        Verb::Indexes { large_table_rows } => {
            let thresholds = advice::Thresholds {
                large_table_rows: *large_table_rows,
                ..advice::Thresholds::default()
            };
            let found = advice::advise(&mut conn, thresholds).map_err(fail)?;
            if args.json {
                json(out, &found)?;
            } else {
                let mut text = format!(
                    "index scans counted since {} on this server\n",
                    found.stats_since.as_deref().unwrap_or("the server started")
                );
                if found.findings.is_empty() {
                    text.push_str("no findings\n");
                }
                for f in &found.findings {
                    text.push_str(&format!(
                        "{:<4} {:<17} {}{}\n     fix: {}\n",
                        match f.severity {
                            advice::Severity::Fail => "FAIL",
                            advice::Severity::Warn => "warn",
                        },
                        serde_json::to_value(f.issue)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        f.detail,
                        f.bytes
                            .map(|b| format!(" ({} kB)", b / 1024))
                            .unwrap_or_default(),
                        f.fix
                    ));
                }
                emit(out, &text)?;
            }
            let failed = found
                .findings
                .iter()
                .any(|f| f.severity == advice::Severity::Fail);
            Ok(if failed { Exit::Problem } else { Exit::Ok })
        }
        Verb::Checks {
            long_running,
            idle_in_transaction,
            blocked,
            sequence_threshold,
            wraparound_threshold,
            cache_hit,
        } => {
            let thresholds = CheckThresholds {
                long_running: *long_running,
                idle_in_transaction: *idle_in_transaction,
                blocked: *blocked,
                sequence_used: *sequence_threshold,
                wraparound_used: *wraparound_threshold,
                min_cache_hit: *cache_hit,
            };
            let results = checks::run(&mut conn, &thresholds).map_err(fail)?;
            if args.json {
                json(out, &results)?;
            } else {
                let mut text = String::new();
                for c in &results {
                    text.push_str(&format!(
                        "{:<4} {:<28} value {:.4} threshold {}\n",
                        if c.ok { "ok" } else { "FAIL" },
                        c.name,
                        c.value,
                        c.threshold
                    ));
                    for d in &c.details {
                        text.push_str(&format!("       {d}\n"));
                    }
                    if !c.ok {
                        text.push_str(&format!("       fix: {}\n", c.fix));
                    }
                }
                emit(out, &text)?;
            }
            Ok(if results.iter().all(|c| c.ok) {
                Exit::Ok
            } else {
                Exit::Problem
            })
        }
    }
}

/// What the slow-log settings do with bound parameters, said after applying them.
fn parameters_note(max_length: i32) -> String {
    match max_length {
        0 => "bound parameters are not logged (log_parameter_max_length = 0): they may hold \
              application data; --log-parameter-max-length -1 logs them whole\n"
            .to_owned(),
        -1 => "bound parameters are logged whole: the server log now holds application data\n"
            .to_owned(),
        n => format!("bound parameters are logged up to {n} bytes each\n"),
    }
}

fn done(
    out: &mut dyn Write,
    as_json: bool,
    statements: &[String],
    message: &str,
) -> Result<Exit, Failure> {
    if as_json {
        json(out, &statements)?;
    } else {
        emit(out, &format!("{};\n{message}\n", statements.join(";\n")))?;
    }
    Ok(Exit::Ok)
}

fn describe(finding: &pgops_insights::Finding) -> String {
    use pgops_insights::Finding;
    match finding {
        Finding::Misestimate {
            node,
            estimated,
            actual,
            factor,
        } => format!(
            "{node}: estimated {estimated:.0} rows, got {actual:.0} ({factor:.0}x off); ANALYZE the table or add extended statistics"
        ),
        Finding::SeqScanOnLargeTable {
            table,
            table_rows,
            filter,
        } => format!(
            "sequential scan of {table} ({table_rows:.0} rows){}; try `pgops insights what-if`",
            filter
                .as_deref()
                .map(|f| format!(" filtering {f}"))
                .unwrap_or_default()
        ),
        Finding::Spill { node, detail } => {
            format!("{node}: {detail}; raise work_mem for this query or shrink its input")
        }
        _ => format!("{finding:?}"),
    }
}

fn render_top(top: &pgops_insights::Top, full: bool) -> String {
    let mut text = match (top.since, top.seconds) {
        (Some(since), Some(seconds)) => format!(
            "window: since {} ({}){}\n",
            since.format("%Y-%m-%d %H:%M:%S UTC"),
            humantime::format_duration(Duration::from_secs(seconds.max(0.0) as u64)),
            if top.reset {
                "; pg_stat_statements was reset inside it, figures start at the reset"
            } else {
                ""
            }
        ),
        _ => "window: since pg_stat_statements began counting\n".to_owned(),
    };
    if let Some(evicted) = top.evictions.filter(|e| *e > 0) {
        text.push_str(&format!(
            "note: {evicted} entries were evicted (pg_stat_statements.max is too small); some figures are lower bounds\n"
        ));
    }
    text.push_str(&format!(
        "{:>20} {:>12} {:>10} {:>10} {:>10} {:>7}  query\n",
        "queryid", "total ms", "calls", "mean ms", "rows", "hit %"
    ));
    for q in &top.queries {
        let query: String = q.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let query: String = query.chars().take(100).collect();
        text.push_str(&format!(
            "{:>20} {:>12.1} {:>10} {:>10.3} {:>10} {:>7}  {query}\n",
            q.queryid,
            q.total_ms,
            q.calls,
            q.mean_ms,
            q.rows,
            q.cache_hit_ratio
                .map(|r| format!("{:.1}", r * 100.0))
                .unwrap_or_else(|| "-".into()),
        ));
        if full {
            text.push_str(q.query.trim_end());
            text.push_str("\n\n");
        }
    }
    text
}
