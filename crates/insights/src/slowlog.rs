//! Slow-query logging: the settings an operator wants while hunting slow queries, applied
//! with `ALTER SYSTEM` and `pg_reload_conf()` (no restart), then verified with `SHOW`.

use std::time::{Duration, Instant};

use diesel::{PgConnection, RunQueryDsl, connection::SimpleConnection as _};
use serde::{Deserialize, Serialize};

use pgops_pg::{
    quote_literal,
    rows::{row, rows},
};

use crate::{Error, Result, sql::server_version};

/// The log line prefix we set: time with milliseconds, pid, and (for sessions) user, database,
/// application and client, the form pgBadger reads.
pub const LOG_LINE_PREFIX: &str = "%m [%p] %q%u@%d app=%a client=%h ";

/// What to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowLog {
    /// Log every statement that runs at least this long (`log_min_duration_statement`).
    pub min_duration: Duration,
    /// Also log the plan of statements slower than this, through `auto_explain`.
    pub auto_explain: Option<Duration>,
    /// Which statements to log whatever their duration (`log_statement`): `mod` keeps an
    /// audit trail of every data-modifying statement.
    pub log_statement: LogStatement,
    /// How many bytes of each bound parameter logged statements show
    /// (`log_parameter_max_length` and `log_parameter_max_length_on_error`): 0 shows none,
    /// -1 shows them whole. Parameters carry the application's data (patient data here) into
    /// the server log, so the default is 0.
    pub parameter_max_length: i32,
}

/// The values of `log_statement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStatement {
    /// Only what other settings log.
    None,
    /// Data definition: `CREATE`, `ALTER`, `DROP`.
    Ddl,
    /// Data definition and data-modifying statements (`INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`,
    /// `COPY FROM`, ...).
    Mod,
    /// Every statement.
    All,
}

/// One setting we change, with the value we want.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The parameter.
    pub name: String,
    /// The value in `ALTER SYSTEM` form.
    pub value: String,
}

/// The outcome of applying: every setting with the value `SHOW` reports afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The statements run, in order.
    pub statements: Vec<String>,
    /// Each setting and what `SHOW` says now.
    pub verified: Vec<(Setting, String)>,
}

impl Default for SlowLog {
    /// Statements of a second or more, every data-modifying statement, no parameter values.
    fn default() -> Self {
        SlowLog {
            min_duration: Duration::from_secs(1),
            auto_explain: None,
            log_statement: LogStatement::Mod,
            parameter_max_length: 0,
        }
    }
}

impl LogStatement {
    /// The value as `log_statement` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatement::None => "none",
            LogStatement::Ddl => "ddl",
            LogStatement::Mod => "mod",
            LogStatement::All => "all",
        }
    }
}

impl SlowLog {
    /// The settings for this request, given the server's current `session_preload_libraries`
    /// (auto_explain is appended to it, never replacing what is there).
    pub fn settings(&self, session_preload: &str) -> Vec<Setting> {
        let set = |name: &str, value: String| Setting {
            name: name.to_owned(),
            value,
        };
        let mut out = vec![
            set(
                "log_min_duration_statement",
                format!("{}ms", self.min_duration.as_millis()),
            ),
            set("log_line_prefix", LOG_LINE_PREFIX.to_owned()),
            set("log_lock_waits", "on".to_owned()),
            set("log_temp_files", "0".to_owned()),
            set("log_statement", self.log_statement.as_str().to_owned()),
            set(
                "log_parameter_max_length",
                self.parameter_max_length.to_string(),
            ),
            set(
                "log_parameter_max_length_on_error",
                self.parameter_max_length.to_string(),
            ),
        ];
        if let Some(threshold) = self.auto_explain {
            let mut libraries: Vec<&str> = session_preload
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if !libraries.contains(&"auto_explain") {
                libraries.push("auto_explain");
            }
            out.extend([
                set("session_preload_libraries", libraries.join(",")),
                set(
                    "auto_explain.log_min_duration",
                    format!("{}ms", threshold.as_millis()),
                ),
                set("auto_explain.log_analyze", "on".to_owned()),
                set("auto_explain.log_buffers", "on".to_owned()),
                // Per-node timing is what makes auto_explain expensive; row counts are cheap.
                set("auto_explain.log_timing", "off".to_owned()),
            ]);
        }
        out
    }
}

/// The `ALTER SYSTEM` statements for `settings`, then the reload.
pub fn statements(settings: &[Setting]) -> Vec<String> {
    settings
        .iter()
        .map(|s| format!("ALTER SYSTEM SET {} = {}", s.name, quote_literal(&s.value)))
        .chain(std::iter::once("SELECT pg_reload_conf()".to_owned()))
        .collect()
}

/// The statements that undo [`SlowLog`]: every setting back to the configuration file's value.
pub fn reset_statements() -> Vec<String> {
    [
        "log_min_duration_statement",
        "log_line_prefix",
        "log_lock_waits",
        "log_temp_files",
        "log_statement",
        "log_parameter_max_length",
        "log_parameter_max_length_on_error",
        "auto_explain.log_min_duration",
        "auto_explain.log_analyze",
        "auto_explain.log_buffers",
        "auto_explain.log_timing",
    ]
    .iter()
    .map(|name| format!("ALTER SYSTEM RESET {name}"))
    .chain(std::iter::once("SELECT pg_reload_conf()".to_owned()))
    .collect()
}

/// Reads the server's `session_preload_libraries`, to extend rather than replace it.
pub fn session_preload(conn: &mut PgConnection) -> Result<String> {
    #[derive(Deserialize)]
    struct V {
        v: String,
    }
    let v: V = row(
        conn,
        "SELECT current_setting('session_preload_libraries') AS v",
        "reading session_preload_libraries",
    )?;
    Ok(v.v)
}

/// Checks that the current role may `ALTER SYSTEM` every parameter in `names`; the error names
/// the first one it may not, and the `GRANT` that would allow it.
pub fn check_privilege(conn: &mut PgConnection, names: &[&str]) -> Result<()> {
    #[derive(Deserialize)]
    struct Role {
        name: String,
        superuser: bool,
    }
    let role: Role = row(
        conn,
        "SELECT current_user AS name, rolsuper AS superuser FROM pg_roles WHERE rolname = current_user",
        "reading the current role",
    )?;
    if role.superuser {
        return Ok(());
    }
    let version = server_version(conn)?;
    if version < 150_000 {
        return Err(Error::Privilege(format!(
            "ALTER SYSTEM needs superuser on PostgreSQL {}; role {} is not one. Run this as a superuser",
            version / 10_000,
            role.name
        )));
    }
    #[derive(Deserialize)]
    struct Allowed {
        name: String,
        allowed: bool,
    }
    let list = names
        .iter()
        .map(|n| format!("({})", quote_literal(n)))
        .collect::<Vec<_>>()
        .join(",");
    let checked: Vec<Allowed> = rows(
        conn,
        &format!(
            "SELECT n AS name, has_parameter_privilege(n, 'ALTER SYSTEM') AS allowed FROM (VALUES {list}) AS v(n)"
        ),
        "checking ALTER SYSTEM privileges",
    )?;
    if let Some(denied) = checked.into_iter().find(|a| !a.allowed) {
        return Err(Error::Privilege(format!(
            "role {role} may not ALTER SYSTEM {param}: it needs superuser, or as a superuser run \
             GRANT ALTER SYSTEM ON PARAMETER {param} TO {role}",
            role = role.name,
            param = denied.name
        )));
    }
    Ok(())
}

/// Applies `request`: checks privileges, loads auto_explain when asked (so a missing library
/// fails before anything changes), runs the statements and waits until `SHOW` reports every
/// new value.
pub fn apply(conn: &mut PgConnection, request: &SlowLog) -> Result<Applied> {
    // The names do not depend on the current value, and reading it may itself need privileges.
    let names: Vec<String> = request.settings("").into_iter().map(|s| s.name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    check_privilege(conn, &names)?;
    let settings = request.settings(&session_preload(conn)?);
    if request.auto_explain.is_some() {
        conn.batch_execute("LOAD 'auto_explain'")
            .map_err(|source| match source {
                diesel::result::Error::DatabaseError(_, ref info)
                    if info.message().contains("could not access file") =>
                {
                    Error::NotInstalled {
                        extension: "auto_explain",
                        package: "the server's contrib modules (Debian: postgresql-contrib)".into(),
                    }
                }
                source => Error::Database {
                    context: "loading auto_explain".into(),
                    source,
                },
            })?;
    }
    let statements = statements(&settings);
    for statement in &statements {
        diesel::sql_query(statement)
            .execute(conn)
            .map_err(Error::db(format!("running `{statement}`")))?;
    }
    let verified = verify(conn, &settings)?;
    Ok(Applied {
        statements,
        verified,
    })
}

/// Undoes [`apply`] and reloads.
pub fn reset(conn: &mut PgConnection) -> Result<Vec<String>> {
    let statements = reset_statements();
    let names: Vec<&str> = statements
        .iter()
        .filter_map(|s| s.strip_prefix("ALTER SYSTEM RESET "))
        .filter(|n| !n.starts_with("auto_explain."))
        .collect();
    check_privilege(conn, &names)?;
    for statement in &statements {
        diesel::sql_query(statement)
            .execute(conn)
            .map_err(Error::db(format!("running `{statement}`")))?;
    }
    Ok(statements)
}

/// Waits (up to 5 s) until this session's `SHOW` reports each setting's new value: a reload
/// reaches a backend between statements, a moment after `pg_reload_conf()` returns.
fn verify(conn: &mut PgConnection, settings: &[Setting]) -> Result<Vec<(Setting, String)>> {
    #[derive(Deserialize)]
    struct Shown {
        value: String,
    }
    #[derive(Deserialize)]
    struct FileError {
        name: Option<String>,
        error: String,
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut out = Vec::new();
        let mut pending = None;
        for setting in settings {
            let shown: Shown = row(
                conn,
                &format!(
                    "SELECT current_setting({}) AS value",
                    quote_literal(&setting.name)
                ),
                "reading the new setting",
            )?;
            if !same_value(&setting.name, &setting.value, &shown.value) {
                pending = Some((setting.clone(), shown.value.clone()));
            }
            out.push((setting.clone(), shown.value));
        }
        let Some((setting, shown)) = pending else {
            return Ok(out);
        };
        if Instant::now() >= deadline {
            let errors: Vec<FileError> = rows(
                conn,
                "SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL",
                "reading pg_file_settings",
            )?;
            let detail = errors
                .iter()
                .map(|e| format!("{}: {}", e.name.as_deref().unwrap_or("?"), e.error))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Invalid(format!(
                "after the reload {} is still '{shown}', not '{}'{}",
                setting.name,
                setting.value,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" (pg_file_settings: {detail})")
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `SHOW` output means the value we set: durations come back in the server's units
/// (`1s` for `1000ms`), booleans as on/off.
fn same_value(name: &str, wanted: &str, shown: &str) -> bool {
    if wanted == shown {
        return true;
    }
    let units = if name.ends_with("min_duration_statement") || name.ends_with("log_min_duration") {
        MILLISECONDS
    } else if name.starts_with("log_parameter_max_length") {
        BYTES
    } else {
        return false;
    };
    in_units(wanted, units).is_some() && in_units(wanted, units) == in_units(shown, units)
}

/// `SHOW`'s duration units, in milliseconds.
const MILLISECONDS: &[(&str, i64)] = &[
    ("", 1),
    ("ms", 1),
    ("s", 1_000),
    ("min", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// `SHOW`'s size units, in bytes.
const BYTES: &[(&str, i64)] = &[("", 1), ("B", 1), ("kB", 1024), ("MB", 1024 * 1024)];

/// A number with one of `units` as `SHOW` prints it (`1s`, `250ms`, `-1`, `1kB`), in the
/// smallest unit.
fn in_units(value: &str, units: &[(&str, i64)]) -> Option<i64> {
    let split = value
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(value.len(), |(i, _)| i);
    let (number, unit) = value.split_at(split);
    let n: i64 = number.parse().ok()?;
    let (_, factor) = units.iter().find(|(u, _)| *u == unit.trim())?;
    n.checked_mul(*factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_extend_session_preload_instead_of_replacing_it() {
        let request = SlowLog {
            auto_explain: Some(Duration::from_secs(5)),
            ..SlowLog::default()
        };
        let settings = request.settings("pg_hint_plan");
        let preload = settings
            .iter()
            .find(|s| s.name == "session_preload_libraries")
            .unwrap();
        assert_eq!(preload.value, "pg_hint_plan,auto_explain");
        let again = request.settings("auto_explain");
        assert!(
            again
                .iter()
                .any(|s| s.name == "session_preload_libraries" && s.value == "auto_explain")
        );
        let sql = statements(&settings);
        assert_eq!(
            sql[0],
            "ALTER SYSTEM SET log_min_duration_statement = '1000ms'"
        );
        assert_eq!(sql.last().unwrap(), "SELECT pg_reload_conf()");
        assert!(sql.contains(&"ALTER SYSTEM SET auto_explain.log_min_duration = '5000ms'".into()));
        // By default every data-modifying statement is logged, without its parameters.
        assert!(sql.contains(&"ALTER SYSTEM SET log_statement = 'mod'".into()));
        assert!(sql.contains(&"ALTER SYSTEM SET log_parameter_max_length = '0'".into()));
        assert!(sql.contains(&"ALTER SYSTEM SET log_parameter_max_length_on_error = '0'".into()));
    }

    #[test]
    fn without_auto_explain_nothing_is_preloaded() {
        let request = SlowLog {
            min_duration: Duration::from_millis(250),
            ..SlowLog::default()
        };
        assert!(
            request
                .settings("")
                .iter()
                .all(|s| !s.name.contains("preload") && !s.name.starts_with("auto_explain"))
        );
    }

    #[test]
    fn shown_durations_match_in_any_unit() {
        assert!(same_value("log_min_duration_statement", "1000ms", "1s"));
        assert!(same_value("log_min_duration_statement", "60000ms", "1min"));
        assert!(same_value(
            "auto_explain.log_min_duration",
            "250ms",
            "250ms"
        ));
        assert!(!same_value("log_min_duration_statement", "1000ms", "-1"));
        assert!(!same_value("log_lock_waits", "on", "off"));
        assert!(same_value("log_parameter_max_length", "1024", "1kB"));
        assert!(same_value("log_parameter_max_length", "0", "0"));
        assert!(!same_value("log_parameter_max_length", "0", "-1"));
    }
}
