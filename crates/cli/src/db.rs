//! Connecting from the command line: the URL from `--database-url` or `DATABASE_URL`, errors
//! that name the redacted URL and say what to check.

use diesel::{Connection, PgConnection};
use pgops_pg::DatabaseUrl;

use crate::exit::Failure;

/// The database URL from `--database-url` or `DATABASE_URL`.
pub fn database_url(value: Option<&str>) -> Result<DatabaseUrl, Failure> {
    let raw = value.ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "DATABASE_URL is not set; export it or pass --database-url"
        ))
    })?;
    DatabaseUrl::parse(raw).map_err(Failure::usage)
}

/// The URL of a tool that needs the server's own sessions (migrations hold a session advisory
/// lock; `pg_dump` sets session settings before its snapshot; backups use the replication
/// protocol): `var` when set (a direct or session-pooled URL), else `given`
/// (`--database-url` / `DATABASE_URL`), which is refused when the service says it goes through
/// PgBouncer's transaction pooling (`PGOPS_POOL_POOLER=transaction`).
pub fn direct_url(given: Option<&str>, var: &str, what: &str) -> Result<Option<String>, Failure> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = env(var) {
        return Ok(Some(url));
    }
    let pooler = env("PGOPS_POOL_POOLER").map(|v| v.trim().to_ascii_lowercase());
    if given.is_some() && pooler.as_deref() == Some("transaction") {
        return Err(Failure::usage(anyhow::anyhow!(
            "PGOPS_POOL_POOLER=transaction: DATABASE_URL goes through PgBouncer's transaction \
             pooling, where {what} would run on server connections other clients share; set \
             {var} to the server itself or to a session-pooled PgBouncer database"
        )));
    }
    Ok(given.map(str::to_owned))
}

/// Connects, with an error that names the (redacted) URL and never the password.
pub fn connect(url: &DatabaseUrl) -> Result<PgConnection, Failure> {
    PgConnection::establish(url.expose()).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "cannot connect to {url}: {}; check that the server is up and DATABASE_URL is right",
            url.scrub(e.to_string().trim())
        ))
    })
}
