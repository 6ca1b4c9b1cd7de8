//! The page's HTML. Every text that comes from the database (names, query text, errors) goes
//! through [`esc`]; the page has no script and no form, so nothing on it can change anything.

use std::{collections::BTreeMap, fmt::Write as _};

use chrono::{DateTime, Utc};
use pgops_insights::{IndexIssue, statements::Interval};

use super::{View, WindowView, exposition::Samples};

/// Checks whose offenders are sessions: their lines carry `pg_stat_activity`'s text with its
/// values, so the page shows the count and points at the connections section instead.
const SESSION_CHECKS: &[&str] = &[
    "long_running_queries",
    "idle_in_transaction",
    "blocked_queries",
];

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans',sans-serif;margin:0;color:#1d2330;background:#f4f5f7}
header{background:#1d2330;color:#fff;padding:12px 24px}
header h1{font-size:18px;margin:0}
header p{margin:4px 0 0;color:#c9cfdb;font-size:12px}
nav a{color:#9cc3ff;margin-right:14px;font-size:13px}
main{padding:8px 24px 32px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:16px 0;padding:4px 16px 12px}
h2{font-size:16px;margin:12px 0 4px}
h3{font-size:14px;margin:12px 0 4px;color:#4a5468}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{font-weight:600;color:#4a5468;font-size:12px}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font:12px/1.4 ui-monospace,'DejaVu Sans Mono',monospace}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f7f8fa;padding:6px}
details summary{cursor:pointer}
.ok{color:#0b7a3e}.fail,.failing,.down{color:#b3261e;font-weight:600}.warn,.lagging{color:#a35b00;font-weight:600}
.muted,.unavailable{color:#6b7385}
.verdict{font-size:15px;font-weight:600}
li.check{color:inherit;font-weight:normal;margin:4px 0}
li.check strong{color:#b3261e}
svg.history{display:block}
svg.history rect{fill:#4a7fd4}
";

/// The whole page.
pub(super) fn page(v: &View) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let refresh = v.options.refresh.as_secs().max(1);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>pgops: {}</title><style>{STYLE}</style></head><body>\
         <header><h1>pgops: {}</h1>\
         <p>As of {}; reloads every {refresh} s. Checks, slow queries and advice as of {} \
         (read at most once per cache interval). Read-only.</p>\
         <nav><a href=\"#up\">Is it up</a><a href=\"#slow\">What is slow</a>\
         <a href=\"#fix\">What to fix</a><a href=\"#connections\">Connections</a>\
         <a href=\"#backups\">Backups</a></nav></header><main>",
        esc(&v.primary),
        esc(&v.primary),
        when(v.now),
        when(v.slow.taken),
    );
    up(&mut out, v);
    slow(&mut out, v);
    fix(&mut out, v);
    connections(&mut out, v);
    backups(&mut out, v);
    out.push_str("</main></body></html>\n");
    out
}

fn up(out: &mut String, v: &View) {
    let r = &v.readiness;
    let all_healthy = r.primary.healthy && r.replicas.iter().all(|s| s.healthy);
    let _ = write!(
        out,
        "<section id=\"up\"><h2>Is it up</h2><p class=\"verdict {}\">{}</p>\
         <table><thead><tr><th>server</th><th>role</th><th>state</th><th>timeline</th>\
         <th>replay lag</th></tr></thead><tbody>",
        if all_healthy { "ok" } else { "fail" },
        if all_healthy {
            "Every server is up and in its role; every replica within its lag limit."
        } else if !r.primary.up {
            "The primary does not answer."
        } else {
            "Something needs attention: see the servers below."
        }
    );
    let limit = v.options.max_replica_lag.as_secs_f64();
    let rows = std::iter::once((true, &r.primary)).chain(r.replicas.iter().map(|s| (false, s)));
    for (is_primary, s) in rows {
        // An HA member's role is what it answered; one that did not, the role configured.
        let role = if s.in_recovery.map_or(is_primary, |r| !r) {
            "primary"
        } else {
            "replica"
        };
        let lagging = s.up && s.lag_seconds.is_some_and(|l| l > limit);
        let (class, state) = if !s.up {
            (
                "down",
                format!("down: {}", s.error.as_deref().unwrap_or("no answer")),
            )
        } else if lagging {
            (
                "lagging",
                format!(
                    "lagging: {} behind (limit {})",
                    secs(s.lag_seconds.unwrap_or_default()),
                    secs(limit)
                ),
            )
        } else if !s.healthy {
            (
                "fail",
                s.error.clone().unwrap_or_else(|| "unhealthy".into()),
            )
        } else {
            ("ok", "up".into())
        };
        let timeline = v
            .metrics
            .get("pgops_server_timeline", &[("server", &s.server)])
            .map_or("–".into(), |t| format!("{t:.0}"));
        let lag = s.lag_seconds.map_or("–".into(), secs);
        let _ = write!(
            out,
            "<tr class=\"server {class}\" data-server=\"{}\"><td>{}</td><td>{role}</td>\
             <td class=\"{class}\">{}</td><td class=\"n\">{timeline}</td><td class=\"n\">{lag}</td></tr>",
            esc(&s.server),
            esc(&s.server),
            esc(&state),
        );
    }
    out.push_str("</tbody></table><h3>Checks</h3>");
    match &v.slow.checks {
        Err(e) => unavailable(out, e),
        Ok(checks) => {
            let failing: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
            if failing.is_empty() {
                let _ = write!(
                    out,
                    "<p class=\"checks ok\">All {} checks pass (long-running queries, idle in \
                     transaction, blocked queries, sequences, wraparound, cache hit ratio).</p>",
                    checks.len()
                );
            } else {
                out.push_str("<ul class=\"checks\">");
                for c in failing {
                    let _ = write!(
                        out,
                        "<li class=\"check failing\" data-check=\"{}\"><strong>{}</strong>: {} \
                         (threshold {}). <span class=\"muted\">Fix: {}</span>",
                        esc(c.name),
                        esc(c.name),
                        fmt_value(c.value),
                        fmt_value(c.threshold),
                        esc(c.fix)
                    );
                    if SESSION_CHECKS.contains(&c.name) {
                        out.push_str(
                            " The sessions are under <a href=\"#connections\">Connections</a>.",
                        );
                    } else if !c.details.is_empty() {
                        out.push_str("<ul>");
                        for d in &c.details {
                            let _ = write!(out, "<li>{}</li>", esc(d));
                        }
                        out.push_str("</ul>");
                    }
                    out.push_str("</li>");
                }
                out.push_str("</ul>");
            }
        }
    }
    out.push_str("</section>");
}

fn slow(out: &mut String, v: &View) {
    out.push_str(
        "<section id=\"slow\"><h2>What is slow</h2><p class=\"muted\">The statements that took \
         the most time, from the recorded <code>pg_stat_statements</code> snapshots, as \
         PostgreSQL normalized them (values replaced by <code>$n</code>). The chart shows \
         execution time per interval between snapshots.</p>",
    );
    for window in &v.slow.windows {
        top_window(out, v, window);
    }
    out.push_str("</section>");
}

fn top_window(out: &mut String, v: &View, window: &WindowView) {
    let _ = write!(
        out,
        "<div class=\"window\" data-window=\"{}\"><h3>The {}</h3>",
        esc(window.label),
        esc(window.label)
    );
    let top = match &window.top {
        Ok(top) => top,
        Err(e) => {
            unavailable(out, e);
            out.push_str("</div>");
            return;
        }
    };
    if let Some(since) = top.since {
        let _ = write!(out, "<p class=\"muted\">Since {}.", when(since));
        if let Some(note) = &top.note {
            let _ = write!(out, " {}.", esc(note));
        }
        out.push_str("</p>");
    }
    if top.queries.is_empty() {
        out.push_str("<p class=\"muted\">No statement ran in this window.</p></div>");
        return;
    }
    out.push_str(
        "<table class=\"queries\"><thead><tr><th>statement</th><th>calls</th><th>mean</th>\
         <th>total</th><th>rows</th><th>time per interval</th></tr></thead><tbody>",
    );
    let start = top.since.unwrap_or(v.now);
    for q in &top.queries {
        let _ = write!(
            out,
            "<tr class=\"query\" data-queryid=\"{}\"><td>{}<div class=\"muted\">{} as {} · \
             queryid {}</div></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            q.queryid,
            query_html(&q.query),
            esc(&q.database),
            esc(&q.user),
            q.queryid,
            q.calls,
            ms(q.mean_ms),
            ms(q.total_ms),
            q.rows,
            chart(
                top.history.get(&q.queryid).map_or(&[][..], Vec::as_slice),
                start,
                v.now
            ),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn fix(out: &mut String, v: &View) {
    out.push_str("<section id=\"fix\"><h2>What to fix</h2><h3>Indexes</h3>");
    match &v.slow.advice {
        Err(e) => unavailable(out, e),
        Ok(advice) => {
            let (scans, indexes): (Vec<_>, Vec<_>) = advice
                .findings
                .iter()
                .partition(|f| f.issue == IndexIssue::SeqScanHeavy);
            if indexes.is_empty() {
                out.push_str(
                    "<p class=\"ok\">No missing foreign-key index, no unused, duplicate or \
                     invalid index.</p>",
                );
            } else {
                out.push_str(
                    "<table class=\"advice\"><thead><tr><th>issue</th><th>table</th>\
                     <th>index</th><th>why</th><th>fix</th></tr></thead><tbody>",
                );
                for f in indexes {
                    let _ = write!(
                        out,
                        "<tr class=\"finding\" data-issue=\"{}\"><td>{}</td><td>{}</td>\
                         <td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        issue_name(f.issue),
                        issue_text(f.issue),
                        esc(&f.table),
                        esc(f.index.as_deref().unwrap_or("–")),
                        esc(&f.detail),
                        esc(&f.fix)
                    );
                }
                out.push_str("</tbody></table>");
            }
            out.push_str("<h3>Tables read mostly by sequential scans</h3>");
            if scans.is_empty() {
                out.push_str("<p class=\"ok\">None among the large tables.</p>");
            } else {
                out.push_str(
                    "<table class=\"scans\"><thead><tr><th>table</th><th>why</th><th>what to do</th>\
                     </tr></thead><tbody>",
                );
                for f in scans {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&f.table),
                        esc(&f.detail),
                        esc(&f.fix)
                    );
                }
                out.push_str("</tbody></table>");
            }
            if let Some(since) = &advice.stats_since {
                let _ = write!(
                    out,
                    "<p class=\"muted\">Scan counts since {}.</p>",
                    esc(since)
                );
            }
        }
    }
    out.push_str("<h3>Largest tables</h3>");
    let mut tables: Vec<_> = v
        .metrics
        .all("pgops_table_size_bytes")
        .map(|s| {
            (
                s.label("schema").unwrap_or("").to_owned(),
                s.label("table").unwrap_or("").to_owned(),
                s.value,
            )
        })
        .collect();
    tables.sort_by(|a, b| b.2.total_cmp(&a.2));
    if tables.is_empty() {
        out.push_str("<p class=\"muted\">No table sizes in the last scrape.</p>");
    } else {
        let (before_at, before) = match &v.slow.sizes_before {
            Ok(Some(recorded)) => (Some(recorded.taken_at), Some(&recorded.sizes)),
            _ => (None, None),
        };
        let _ = write!(
            out,
            "<table class=\"tables\"><thead><tr><th>table</th><th>size</th><th>growth{}</th>\
             </tr></thead><tbody>",
            before_at.map_or(String::new(), |at| format!(" since {}", when(at)))
        );
        for (schema, table, size) in &tables {
            let growth = match before.map(|b| b.get(&(schema.clone(), table.clone()))) {
                None => "– (no snapshot with sizes yet)".to_owned(),
                Some(None) => "not among the largest then".to_owned(),
                Some(Some(then)) => {
                    let delta = size - *then as f64;
                    format!(
                        "{}{}",
                        if delta >= 0.0 { "+" } else { "−" },
                        bytes(delta.abs())
                    )
                }
            };
            let _ = write!(
                out,
                "<tr class=\"table\"><td>{}.{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(schema),
                esc(table),
                bytes(*size),
                esc(&growth)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn connections(out: &mut String, v: &View) {
    out.push_str("<section id=\"connections\"><h2>Connections</h2>");
    let mut by_state: BTreeMap<String, f64> = BTreeMap::new();
    for s in v.metrics.all("pg_stat_activity_count") {
        *by_state
            .entry(s.label("state").unwrap_or("").to_owned())
            .or_default() += s.value;
    }
    let total: f64 = by_state.values().sum();
    let max = v.metrics.get("pg_settings_max_connections", &[]);
    let _ = write!(
        out,
        "<p>{total:.0} sessions{}; {} waiting for a lock held by another session.</p>",
        max.map_or(String::new(), |m| format!(" of max_connections {m:.0}")),
        v.metrics.get("pgops_blocked_queries", &[]).unwrap_or(0.0)
    );
    out.push_str(
        "<table class=\"states\"><thead><tr><th>state</th><th>sessions</th></tr></thead><tbody>",
    );
    for (state, count) in by_state.iter().filter(|(_, c)| **c > 0.0) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{count:.0}</td></tr>",
            esc(state)
        );
    }
    out.push_str("</tbody></table><h3>Waiting and blocking</h3>");
    match &v.waiting {
        Err(e) => unavailable(out, e),
        Ok(list) if list.is_empty() => {
            out.push_str("<p class=\"ok\">No session waits for a lock.</p>");
        }
        Ok(list) => {
            out.push_str(
                "<table class=\"waiting\"><thead><tr><th>pid</th><th>who</th><th>state</th>\
                 <th>waits for</th><th>for</th><th>blocked by</th><th>statement</th></tr>\
                 </thead><tbody>",
            );
            for w in list {
                let blocked = !w.blocked_by.is_empty();
                let _ = write!(
                    out,
                    "<tr class=\"session {}\" data-pid=\"{}\"><td class=\"n\">{}</td>\
                     <td>{}@{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                     <td class=\"blockers\">{}</td><td>{}</td></tr>",
                    if blocked { "blocked" } else { "blocking" },
                    w.pid,
                    w.pid,
                    esc(w.user.as_deref().unwrap_or("?")),
                    esc(w.database.as_deref().unwrap_or("?")),
                    esc(w.state.as_deref().unwrap_or("")),
                    esc(&match (&w.wait_event_type, &w.wait_event) {
                        (Some(t), Some(e)) => format!("{t}: {e}"),
                        _ => String::new(),
                    }),
                    w.seconds.map_or("–".into(), secs),
                    if blocked {
                        w.blocked_by
                            .iter()
                            .map(|p| format!("pid {p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        "holds what others wait for".into()
                    },
                    w.query.as_deref().map_or(
                        "<span class=\"muted\">(no normalized text in pg_stat_statements)</span>"
                            .into(),
                        query_html
                    ),
                );
            }
            out.push_str("</tbody></table>");
        }
    }
    out.push_str("<h3>pgops pools in this process</h3>");
    pools(out, &v.pools);
    out.push_str("</section>");
}

fn pools(out: &mut String, pools: &Samples) {
    let names: Vec<String> = pools
        .all("pgops_pool_connections_max")
        .filter_map(|s| s.label("pool").map(str::to_owned))
        .collect();
    if names.is_empty() {
        out.push_str(
            "<p class=\"muted\">No pgops pool reports here. A service that mounts the page's \
             router beside its pools shows them.</p>",
        );
        return;
    }
    out.push_str(
        "<table class=\"pools\"><thead><tr><th>pool</th><th>in use</th><th>idle</th><th>max</th>\
         <th>waiting</th><th>checkout timeouts</th></tr></thead><tbody>",
    );
    for name in names {
        let get = |metric: &str| {
            pools
                .get(metric, &[("pool", &name)])
                .map_or("–".into(), |x| format!("{x:.0}"))
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&name),
            get("pgops_pool_connections_in_use"),
            get("pgops_pool_connections_idle"),
            get("pgops_pool_connections_max"),
            get("pgops_pool_waiting"),
            get("pgops_pool_checkout_timeouts_total"),
        );
    }
    out.push_str("</tbody></table>");
}

fn backups(out: &mut String, v: &View) {
    let m = &v.metrics;
    out.push_str("<section id=\"backups\"><h2>Backups</h2><h3>WAL archive</h3>");
    let mode = m.get("pg_settings_archive_mode", &[]);
    let failing = m.get("pgops_wal_archive_failing", &[]) == Some(1.0);
    let archived = m.get("pg_stat_archiver_archived_count", &[]);
    let failed = m.get("pg_stat_archiver_failed_count", &[]);
    let last_age = m
        .get("pg_stat_archiver_last_archive_age", &[])
        .filter(|a| a.is_finite());
    let failure_age = m
        .get("pgops_wal_archive_last_failure_age_seconds", &[])
        .filter(|a| a.is_finite());
    let (class, verdict) = match (mode, failing) {
        (Some(0.0), _) => (
            "archive off warn",
            "archiving is off (archive_mode = off)".to_owned(),
        ),
        (_, true) => (
            "archive failing",
            format!(
                "failing: the last attempt failed{}; {} failed attempts so far",
                failure_age.map_or(String::new(), |a| format!(" {} ago", secs(a))),
                failed.unwrap_or(0.0)
            ),
        ),
        (None, _) => (
            "archive unavailable",
            "unknown: the primary did not answer".to_owned(),
        ),
        _ => ("archive ok", "archiving".to_owned()),
    };
    let _ = write!(
        out,
        "<p class=\"{class}\">WAL archive: {}.</p><p>{} segments archived{}.</p>",
        esc(&verdict),
        archived.map_or("–".into(), |a| format!("{a:.0}")),
        last_age.map_or(", none yet".into(), |a| format!(
            ", the newest {} ago",
            secs(a)
        ))
    );
    if !v.options.repository {
        out.push_str(
            "<p class=\"muted\">No backup repository reports here: start <code>pgops health \
             serve --repo URL</code> (or set <code>PGOPS_REPO</code>) to see its backups and \
             drills.</p></section>",
        );
        return;
    }
    out.push_str(
        "<h3>Repository</h3><table class=\"repository\"><thead><tr><th>what</th><th>when</th>\
         <th>detail</th></tr></thead><tbody>",
    );
    let mut newest_backup: Option<f64> = None;
    for kind in ["physical", "logical"] {
        let at = m.get(
            "pgops_backup_last_success_timestamp_seconds",
            &[("kind", kind)],
        );
        newest_backup = match (newest_backup, at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let _ = write!(
            out,
            "<tr class=\"backup\" data-kind=\"{kind}\"><td>last {kind} backup</td><td>{}</td><td></td></tr>",
            at.map_or("none".into(), |t| epoch_with_age(t, v.now))
        );
    }
    let drill_at = m.get("pgops_backup_last_drill_timestamp_seconds", &[]);
    let drill = match drill_at {
        None => "none yet: <code>pgops backup drill</code>".to_owned(),
        Some(_) => format!(
            "{}, RTO {}",
            if m.get("pgops_backup_last_drill_success", &[]) == Some(1.0) {
                "<span class=\"ok\">succeeded</span>"
            } else {
                "<span class=\"fail\">failed</span>"
            },
            m.get("pgops_backup_last_drill_duration_seconds", &[])
                .map_or("–".into(), secs)
        ),
    };
    let _ = write!(
        out,
        "<tr class=\"drill\"><td>last restore drill</td><td>{}</td><td>{drill}</td></tr>",
        drill_at.map_or("–".into(), |t| epoch_with_age(t, v.now)),
    );
    let continuous = m.get("pgops_backup_archive_continuous", &[]);
    let missing = m
        .get("pgops_backup_archive_missing_segments", &[])
        .unwrap_or(0.0);
    let (reach_at, reach_how) = match (continuous, last_age) {
        (Some(1.0), Some(age)) => (
            Some(v.now.timestamp() as f64 - age),
            "the last archived WAL segment, replayed from the newest physical backup".to_owned(),
        ),
        (Some(_), _) => (
            newest_backup,
            format!(
                "the newest backup only: the archive is not continuous from it ({missing:.0} \
                 segments missing)"
            ),
        ),
        (None, _) => (newest_backup, "the newest backup".to_owned()),
    };
    let _ = write!(
        out,
        "<tr class=\"reach\"><td>newest point a restore can reach</td><td>{}</td><td>{}</td></tr>\
         <tr><td>WAL archive timeline</td><td>{}</td><td>{} refused pushes (two servers on one \
         timeline)</td></tr></tbody></table>",
        reach_at.map_or("nothing: no backup yet".into(), |t| format!(
            "about {}",
            epoch_with_age(t, v.now)
        )),
        esc(&reach_how),
        m.get("pgops_backup_archive_timeline", &[])
            .map_or("–".into(), |t| format!("{t:.0}")),
        m.get("pgops_backup_archive_conflicts", &[])
            .map_or("–".into(), |t| format!("{t:.0}")),
    );
    out.push_str("</section>");
}

/// Bars of execution time per interval over `[start, end]`, each with its figures as a title.
fn chart(intervals: &[Interval], start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    const W: f64 = 240.0;
    const H: f64 = 36.0;
    let span = (end - start).as_seconds_f64().max(1.0);
    let max = intervals
        .iter()
        .map(|i| i.total_ms / (i.end - i.start).as_seconds_f64().max(1.0))
        .fold(0.0, f64::max);
    let mut svg = format!(
        "<svg class=\"history\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"execution time per interval\"><line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" \
         stroke=\"#c9cfdb\"/>"
    );
    for i in intervals.iter().filter(|i| i.end > start) {
        let from = (i.start.max(start) - start).as_seconds_f64() / span * W;
        let to = (i.end - start).as_seconds_f64() / span * W;
        let rate = i.total_ms / (i.end - i.start).as_seconds_f64().max(1.0);
        let h = if max > 0.0 {
            rate / max * (H - 2.0)
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<rect x=\"{from:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{} to {}: \
             {} calls, {}</title></rect>",
            H - h,
            (to - from - 0.5).max(0.5),
            i.start.format("%H:%M"),
            i.end.format("%H:%M"),
            i.calls,
            ms(i.total_ms)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A statement's text, folded when long.
fn query_html(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= 100 {
        return format!("<code>{}</code>", esc(&one_line));
    }
    let head: String = one_line.chars().take(100).collect();
    format!(
        "<details><summary><code>{}…</code></summary><pre>{}</pre></details>",
        esc(&head),
        esc(text)
    )
}

fn unavailable(out: &mut String, why: &str) {
    let _ = write!(
        out,
        "<p class=\"unavailable\">Unavailable: {}</p>",
        esc(why)
    );
}

fn issue_name(issue: IndexIssue) -> &'static str {
    match issue {
        IndexIssue::Unused => "unused",
        IndexIssue::Duplicate => "duplicate",
        IndexIssue::Overlapping => "overlapping",
        IndexIssue::Invalid => "invalid",
        IndexIssue::MissingFkIndex => "missing_fk_index",
        IndexIssue::SeqScanHeavy => "seq_scan_heavy",
    }
}

fn issue_text(issue: IndexIssue) -> &'static str {
    match issue {
        IndexIssue::Unused => "unused index",
        IndexIssue::Duplicate => "duplicate index",
        IndexIssue::Overlapping => "overlapping index",
        IndexIssue::Invalid => "invalid index",
        IndexIssue::MissingFkIndex => "foreign key without an index",
        IndexIssue::SeqScanHeavy => "sequential scans",
    }
}

/// HTML-escapes text for element content and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn epoch_with_age(epoch: f64, now: DateTime<Utc>) -> String {
    let Some(t) = DateTime::from_timestamp(epoch.floor() as i64, 0) else {
        return "–".into();
    };
    format!(
        "{} ({} ago)",
        when(t),
        secs((now - t).as_seconds_f64().max(0.0))
    )
}

/// A duration in seconds, in the largest unit that keeps it readable.
fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "–".into();
    }
    match s {
        s if s < 10.0 => format!("{s:.1} s"),
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{:.2} s", v / 1000.0)
    }
}

fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        let folded = query_html(&format!(
            "SELECT '<b>' FROM t WHERE {}",
            "x = $1 AND ".repeat(20)
        ));
        assert!(folded.starts_with("<details><summary><code>SELECT &#39;&lt;b&gt;&#39;"));
        assert!(!folded.contains("<b>"));
        assert_eq!(query_html("SELECT  1\n"), "<code>SELECT 1</code>");
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(secs(3.25), "3.2 s");
        assert_eq!(secs(90.0), "90 s");
        assert_eq!(secs(600.0), "10 min");
        assert_eq!(secs(36_000.0), "10.0 h");
        assert_eq!(secs(f64::NAN), "–");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0), "8.0 MB");
        assert_eq!(ms(0.25), "0.250 ms");
        assert_eq!(ms(2500.0), "2.50 s");
    }

    #[test]
    fn the_chart_places_each_interval_by_time_and_scales_by_rate() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let intervals = [
            Interval {
                start: t(0),
                end: t(300),
                calls: 10,
                total_ms: 300.0,
            },
            Interval {
                start: t(300),
                end: t(600),
                calls: 5,
                total_ms: 150.0,
            },
        ];
        let svg = chart(&intervals, t(0), t(600));
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        // The first bar is full height (34), the second half; they sit side by side.
        assert!(svg.contains("x=\"0.0\" y=\"2.0\""), "{svg}");
        assert!(svg.contains("x=\"120.0\" y=\"19.0\""), "{svg}");
        assert!(svg.contains("10 calls, 300.0 ms"), "{svg}");
        // Nothing recorded: an empty axis, not an error.
        assert_eq!(chart(&[], t(0), t(600)).matches("<rect").count(), 0);
    }
}
