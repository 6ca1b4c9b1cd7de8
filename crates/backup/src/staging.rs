//! Where a backup is put together before it is stored: a directory removed unless the
//! backup completes, the backup's id, and the connection it is taken through.

use std::{fs, os::unix::fs::DirBuilderExt, path::PathBuf};

use chrono::Utc;
use diesel::{Connection, PgConnection};
use pgops_pg::DatabaseUrl;

use crate::{Error, Result, repo::Store};

/// A new backup id: UTC time, sortable, and the database.
pub fn new_id(database: &str) -> String {
    let safe: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{safe}", Utc::now().format("%Y%m%dT%H%M%S%3fZ"))
}

/// Connects to the server a backup is taken from or restored to; a failure is a connection
/// error (exit 2), not a failed operation.
pub(crate) fn connect(url: &DatabaseUrl) -> Result<PgConnection> {
    PgConnection::establish(url.expose()).map_err(|e| Error::Connect {
        context: format!("connecting to {url}"),
        source: url.scrub(&e.to_string()).into(),
    })
}

/// A staging directory that is removed unless the backup completes.
pub(crate) struct Staging {
    pub(crate) path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Staging {
    pub(crate) fn new(store: &dyn Store, id: &str) -> Result<Self> {
        match store.staging_root() {
            Some(root) => {
                let path = root.join(id);
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)
                    .map_err(Error::io(format!("creating {}", path.display())))?;
                Ok(Staging { path, _temp: None })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("pgops-backup-")
                    .tempdir()
                    .map_err(Error::io("creating a staging directory"))?;
                Ok(Staging {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                })
            }
        }
    }

    pub(crate) fn finish(self) {}
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
