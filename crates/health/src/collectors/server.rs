//! The server as a whole: version and uptime, database sizes, locks, sessions by state, and
//! the settings (as postgres_exporter names them).

use serde::Deserialize;

use super::{Context, Session};
use crate::{
    Result,
    text::{Family, Kind, sanitize},
};

pub(super) fn static_info(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct V {
        version: String,
        short: String,
        start: f64,
    }
    let v: Vec<V> = session.rows(
        "SELECT version() AS version, current_setting('server_version') AS short,
                extract(epoch FROM pg_postmaster_start_time())::float8 AS start",
        "reading the server version",
    )?;
    let mut fams = Vec::new();
    if let Some(v) = v.first() {
        let short = v.short.split_whitespace().next().unwrap_or("");
        let short = if short.matches('.').count() == 1 {
            format!("{short}.0")
        } else {
            short.to_owned()
        };
        fams.push(Family::single(
            "pg_static",
            "Version string as reported by postgres",
            Kind::Untyped,
            &[
                ("server", &ctx.server),
                ("short_version", &short),
                ("version", &v.version),
            ],
            1.0,
        ));
        fams.push(Family::single(
            "pg_postmaster_start_time_seconds",
            "Time at which postmaster started",
            Kind::Gauge,
            &[("server", &ctx.server)],
            v.start,
        ));
    }
    Ok(fams)
}

pub(super) fn database_size(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct Db {
        datname: String,
        bytes: Option<f64>,
    }
    let dbs: Vec<Db> = session.rows(
        "SELECT datname::text AS datname,
                CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid)::float8 END AS bytes
         FROM pg_database ORDER BY datname",
        "reading database sizes",
    )?;
    let mut fam = Family::new(
        "pg_database_size_bytes",
        "Disk space used by the database",
        Kind::Gauge,
    );
    for db in &dbs {
        fam.push(
            &[("datname", &db.datname), ("server", &ctx.server)],
            db.bytes.unwrap_or(f64::NAN),
        );
    }
    Ok(vec![fam])
}

pub(super) fn locks(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct L {
        datname: String,
        mode: String,
        count: f64,
    }
    let found: Vec<L> = session.rows(
        "SELECT d.datname::text AS datname, m.mode, coalesce(l.count, 0)::float8 AS count
         FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'),
                      ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'),
                      ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS m(mode)
         CROSS JOIN pg_database d
         LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count FROM pg_locks
                    WHERE database IS NOT NULL GROUP BY 1, 2) l
           ON l.mode = m.mode AND l.database = d.oid
         ORDER BY 1, 2",
        "reading pg_locks",
    )?;
    let mut fam = Family::new("pg_locks_count", "Number of locks", Kind::Gauge);
    for l in &found {
        fam.push(
            &[
                ("datname", &l.datname),
                ("mode", &l.mode),
                ("server", &ctx.server),
            ],
            l.count,
        );
    }
    Ok(vec![fam])
}

pub(super) fn stat_activity(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct A {
        datname: String,
        state: String,
        count: f64,
        max_tx_duration: f64,
    }
    let found: Vec<A> = session.rows(
        "SELECT d.datname::text AS datname, s.state, coalesce(a.count, 0)::float8 AS count,
                coalesce(a.max_tx_duration, 0)::float8 AS max_tx_duration
         FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
                      ('fastpath function call'), ('disabled')) AS s(state)
         CROSS JOIN pg_database d
         LEFT JOIN (SELECT datname, state, count(*) AS count,
                           max(extract(epoch FROM now() - xact_start))::float8 AS max_tx_duration
                    FROM pg_stat_activity GROUP BY 1, 2) a
           ON a.state = s.state AND a.datname = d.datname
         ORDER BY 1, 2",
        "reading pg_stat_activity",
    )?;
    let mut count = Family::new(
        "pg_stat_activity_count",
        "number of connections in this state",
        Kind::Gauge,
    );
    let mut max = Family::new(
        "pg_stat_activity_max_tx_duration",
        "max duration in seconds any active transaction has been running",
        Kind::Gauge,
    );
    for a in &found {
        let labels = [
            ("datname", a.datname.as_str()),
            ("server", &ctx.server),
            ("state", &a.state),
        ];
        count.push(&labels, a.count);
        max.push(&labels, a.max_tx_duration);
    }
    Ok(vec![count, max])
}

/// postgres_exporter's name and value for one `pg_settings` row: units converted to seconds
/// or bytes (with the suffix), booleans as 1/0, -1 kept as is. None for a unit it does not
/// know. Pure.
pub fn setting_metric(
    name: &str,
    setting: &str,
    unit: &str,
    vartype: &str,
) -> Option<(String, f64)> {
    let mut value = if vartype == "bool" {
        if setting == "on" { 1.0 } else { 0.0 }
    } else if name == "archive_mode" {
        // An enum postgres_exporter leaves out, which the archive alert needs: 1 when the
        // server archives (`on`, or `always` on a standby too), 0 when it does not.
        if setting == "off" { 0.0 } else { 1.0 }
    } else {
        setting.parse::<f64>().ok()?
    };
    let suffix = match unit {
        "" => "",
        "ms" | "s" | "min" | "h" | "d" => "_seconds",
        "B" | "kB" | "MB" | "GB" | "TB" | "1kB" | "2kB" | "4kB" | "8kB" | "16kB" | "32kB"
        | "64kB" | "16MB" | "32MB" | "64MB" => "_bytes",
        _ => return None,
    };
    if value != -1.0 {
        let factor = match unit {
            "ms" => 0.001,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "kB" | "1kB" => 1024.0,
            "2kB" => 2048.0,
            "4kB" => 4096.0,
            "8kB" => 8192.0,
            "16kB" => 16_384.0,
            "32kB" => 32_768.0,
            "64kB" => 65_536.0,
            "MB" => 1_048_576.0,
            "16MB" => 16_777_216.0,
            "32MB" => 33_554_432.0,
            "64MB" => 67_108_864.0,
            "GB" => 1_073_741_824.0,
            "TB" => 1_099_511_627_776.0,
            _ => 1.0,
        };
        value *= factor;
    }
    Some((format!("pg_settings_{}{suffix}", sanitize(name)), value))
}

pub(super) fn settings(session: &mut Session<'_>, ctx: &Context) -> Result<Vec<Family>> {
    #[derive(Deserialize)]
    struct S {
        name: String,
        setting: String,
        unit: String,
        short_desc: String,
        vartype: String,
    }
    let found: Vec<S> = session.rows(
        "SELECT name, setting, coalesce(unit, '') AS unit, short_desc, vartype FROM pg_settings
         WHERE (vartype IN ('bool', 'integer', 'real') OR name = 'archive_mode')
           AND name <> 'sync_commit_cancel_wait'",
        "reading pg_settings",
    )?;
    Ok(found
        .iter()
        .filter_map(|s| {
            let (name, value) = setting_metric(&s.name, &s.setting, &s.unit, &s.vartype)?;
            let help = if name.ends_with("_seconds") && !s.unit.is_empty() {
                format!("{} [Units converted to seconds.]", s.short_desc)
            } else if name.ends_with("_bytes") && !s.unit.is_empty() {
                format!("{} [Units converted to bytes.]", s.short_desc)
            } else {
                s.short_desc.clone()
            };
            Some(Family::single(
                name,
                help,
                Kind::Gauge,
                &[("server", &ctx.server)],
                value,
            ))
        })
        .collect())
}
