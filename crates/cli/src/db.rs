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

/// Connects, with an error that names the (redacted) URL and never the password.
pub fn connect(url: &DatabaseUrl) -> Result<PgConnection, Failure> {
    PgConnection::establish(url.expose()).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "cannot connect to {url}: {}; check that the server is up and DATABASE_URL is right",
            url.scrub(e.to_string().trim())
        ))
    })
}
