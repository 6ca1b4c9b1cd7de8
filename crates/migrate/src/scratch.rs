//! A scratch database for the migration check and for drift: created empty on a server
//! (`CREATE DATABASE .. TEMPLATE template0`) and dropped again when done, even when the check
//! fails. The database named in the URL given is only used to connect; nothing is done to it.

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::{Connection, PgConnection, connection::SimpleConnection as _};
use pgops_pg::{DatabaseUrl, quote_ident};

use crate::{Error, Result};

/// A database this process created and drops on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    server: DatabaseUrl,
    name: String,
    url: DatabaseUrl,
}

impl ScratchDatabase {
    /// Creates an empty database on the server `server` points at (whose role needs
    /// `CREATEDB`), named `pgops_check_<pid>_<n>`.
    pub fn create(server: &DatabaseUrl) -> Result<ScratchDatabase> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgops_check_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = connect(server)?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&name)
            ))
            .map_err(Error::db(format!(
                "creating the scratch database {name} on {} (the role needs CREATEDB; or give \
                 an empty database with --scratch-url, or use --throwaway-cluster)",
                server.server()
            )))?;
        let url = server.with_database(&name)?;
        Ok(ScratchDatabase {
            server: server.clone(),
            name,
            url,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL that connects to it.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Connects to it.
    pub fn connect(&self) -> Result<PgConnection> {
        connect(&self.url)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let dropped = connect(&self.server).and_then(|mut admin| {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&self.name)
                ))
                .map_err(Error::db("dropping the scratch database"))
        });
        if let Err(e) = dropped {
            tracing::warn!(
                database = %self.name,
                error = %pgops_pg::report(&e),
                "the scratch database was not dropped; drop it by hand"
            );
        }
    }
}

/// Connects to `url`, naming it (without its password) on failure.
pub fn connect(url: &DatabaseUrl) -> Result<PgConnection> {
    PgConnection::establish(url.expose()).map_err(|source| Error::Connect {
        target: url.to_string(),
        source,
    })
}
