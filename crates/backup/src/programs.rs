//! Finding and running the PostgreSQL client programs, with the password in the environment
//! (never on a command line other users can read) and out of every message.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use pgops_pool::DatabaseUrl;

use crate::{Error, Result};

/// Finds `program`: only in `PGOPS_PG_BINDIR` when it is set; otherwise in `pg_config
/// --bindir`, the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
pub fn find(program: &'static str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PGOPS_PG_BINDIR") {
        let path = PathBuf::from(&dir).join(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingProgram {
                program,
                searched: format!("PGOPS_PG_BINDIR ({})", PathBuf::from(dir).display()),
            })
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        dirs.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingProgram {
            program,
            searched: "PGOPS_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin and PATH"
                .into(),
        })
}

/// A connection string without its password, for a program's command line; the password goes
/// to `PGPASSWORD`.
pub fn split_password(url: &DatabaseUrl) -> (String, Option<String>) {
    let raw = url.expose();
    if (raw.starts_with("postgres://") || raw.starts_with("postgresql://"))
        && let Ok(mut parsed) = url::Url::parse(raw)
    {
        let password = parsed.password().map(|p| {
            url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map_or_else(|| p.to_owned(), |(_, v)| v.into_owned())
        });
        let _ = parsed.set_password(None);
        return (parsed.to_string(), password);
    }
    let mut password = None;
    let kept: Vec<&str> = raw
        .split_whitespace()
        .filter(|token| match token.strip_prefix("password=") {
            Some(p) => {
                password = Some(p.trim_matches('\'').to_owned());
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), password)
}

/// The same server, another database.
pub fn with_database(url: &DatabaseUrl, database: &str) -> Result<DatabaseUrl> {
    let raw = url.expose();
    let replaced = if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        let mut parsed =
            url::Url::parse(raw).map_err(|e| Error::Invalid(format!("the database URL: {e}")))?;
        parsed.set_path(&format!("/{database}"));
        parsed.to_string()
    } else {
        let kept: Vec<&str> = raw
            .split_whitespace()
            .filter(|t| !t.starts_with("dbname="))
            .collect();
        format!("{} dbname={database}", kept.join(" "))
    };
    DatabaseUrl::parse(&replaced).map_err(|e| Error::Invalid(e.to_string()))
}

/// A command for `program` against `url`: conninfo as `-d`, password in `PGPASSWORD`.
pub fn command(program: &PathBuf, url: &DatabaseUrl) -> Command {
    let (conninfo, password) = split_password(url);
    let mut cmd = Command::new(program);
    cmd.arg("-d").arg(conninfo);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd
}

/// Turns a finished program into a result; stderr is scrubbed of the password.
pub fn check(program: &'static str, url: &DatabaseUrl, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Program {
        program,
        status: output.status.to_string(),
        stderr: url.scrub(&tail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_command_line() {
        let url =
            DatabaseUrl::parse("postgres://app:s%40cret@db:5432/app?sslmode=disable").unwrap();
        let (conninfo, password) = split_password(&url);
        assert_eq!(conninfo, "postgres://app@db:5432/app?sslmode=disable");
        assert_eq!(password.as_deref(), Some("s@cret"));
        let url = DatabaseUrl::parse("host=db user=app password=pw dbname=app").unwrap();
        let (conninfo, password) = split_password(&url);
        assert_eq!(conninfo, "host=db user=app dbname=app");
        assert_eq!(password.as_deref(), Some("pw"));
    }

    #[test]
    fn another_database_on_the_same_server() {
        let url = DatabaseUrl::parse("postgres://app:pw@db:5432/app").unwrap();
        assert_eq!(
            with_database(&url, "app_copy").unwrap().expose(),
            "postgres://app:pw@db:5432/app_copy"
        );
        let url = DatabaseUrl::parse("host=db dbname=app").unwrap();
        assert_eq!(
            with_database(&url, "x").unwrap().expose(),
            "host=db dbname=x"
        );
    }
}
