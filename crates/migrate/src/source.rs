//! Migrations as data: read from a diesel migrations directory or embedded at build time,
//! each with the SHA-256 of its `up.sql` and `down.sql`.

use std::{fmt, path::Path};

use diesel::{
    connection::BoxableConnection,
    migration::{
        self, Migration, MigrationMetadata, MigrationName, MigrationSource, MigrationVersion,
    },
    pg::Pg,
};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A migration compiled into a binary (see `pgops-schema`'s build script).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    /// The directory name, `2026-11-26-000100_create_organizations`.
    pub name: &'static str,
    /// The contents of `up.sql`.
    pub up_sql: &'static str,
    /// The contents of `down.sql`.
    pub down_sql: &'static str,
    /// The contents of `metadata.toml`, if the migration has one.
    pub metadata_toml: Option<&'static str>,
}

/// One migration: a directory with `up.sql`, `down.sql` and optionally `metadata.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMigration {
    name: String,
    version: String,
    up_sql: String,
    down_sql: String,
    run_in_transaction: bool,
    up_sha256: String,
    down_sha256: String,
    has_down: bool,
}

/// An ordered set of migrations with unique versions.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    migrations: Vec<SqlMigration>,
    origin: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default = "yes")]
    run_in_transaction: bool,
}

impl MigrationSet {
    /// Reads every migration directory under `dir` (diesel's layout).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Read { path, source }
        };
        let mut migrations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let entry = entry.map_err(read_err(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // diesel skips hidden directories and its own initial-setup directory never
            // needs special treatment here: it is a migration like any other.
            if !path.is_dir() || name.starts_with('.') {
                continue;
            }
            let read = |file: &str| -> Result<Option<String>> {
                let file_path = path.join(file);
                match std::fs::read_to_string(&file_path) {
                    Ok(text) => Ok(Some(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::Read {
                        path: file_path,
                        source: e,
                    }),
                }
            };
            let up = read("up.sql")?.ok_or_else(|| Error::InvalidMigration {
                name: name.clone(),
                reason: format!("{} has no up.sql", path.display()),
            })?;
            // diesel allows a migration without down.sql (`--no-down`); it runs, and only
            // reverting it fails.
            let down = read("down.sql")?;
            let metadata = read("metadata.toml")?;
            let has_down = down.is_some();
            let mut migration =
                SqlMigration::new(&name, up, down.unwrap_or_default(), metadata.as_deref())?;
            migration.has_down = has_down;
            migrations.push(migration);
        }
        Self::new(migrations, dir.display().to_string())
    }

    /// Builds the set from migrations compiled into the binary.
    pub fn from_embedded(embedded: &[EmbeddedMigration]) -> Result<Self> {
        let migrations = embedded
            .iter()
            .map(|m| {
                SqlMigration::new(
                    m.name,
                    m.up_sql.to_owned(),
                    m.down_sql.to_owned(),
                    m.metadata_toml,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(migrations, "migrations embedded in this binary".to_owned())
    }

    /// Builds a set from migrations made in code, sorted by version.
    pub fn new(mut migrations: Vec<SqlMigration>, origin: String) -> Result<Self> {
        migrations.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| a.name.cmp(&b.name)));
        for pair in migrations.windows(2) {
            if pair[0].version == pair[1].version {
                return Err(Error::DuplicateVersion {
                    version: pair[0].version.clone(),
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        Ok(MigrationSet { migrations, origin })
    }

    /// The migrations, oldest first.
    pub fn migrations(&self) -> &[SqlMigration] {
        &self.migrations
    }

    /// The migration with this version.
    pub fn get(&self, version: &str) -> Option<&SqlMigration> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// Where the set came from (a directory, or the binary).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl SqlMigration {
    /// A migration from its directory name and file contents.
    pub fn new(
        name: &str,
        up_sql: String,
        down_sql: String,
        metadata_toml: Option<&str>,
    ) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidMigration {
            name: name.to_owned(),
            reason,
        };
        let version = version_of(name).ok_or_else(|| {
            invalid("the directory name must be <version>_<name>, the version made of digits and dashes (2026-11-26-000100_create_users)".into())
        })?;
        if crate::text::is_blank(&up_sql) {
            return Err(invalid("up.sql has no statement".into()));
        }
        let run_in_transaction = match metadata_toml {
            None => true,
            Some(text) => {
                toml::from_str::<Metadata>(text)
                    .map_err(|e| invalid(format!("metadata.toml: {}", e.message())))?
                    .run_in_transaction
            }
        };
        Ok(SqlMigration {
            name: name.to_owned(),
            version,
            up_sha256: sha256_hex(&up_sql),
            down_sha256: sha256_hex(&down_sql),
            up_sql,
            down_sql,
            run_in_transaction,
            has_down: true,
        })
    }

    /// The directory name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version diesel records: the name up to the first `_`, dashes removed.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The SQL that applies it.
    pub fn up_sql(&self) -> &str {
        &self.up_sql
    }

    /// The SQL that reverts it.
    pub fn down_sql(&self) -> &str {
        &self.down_sql
    }

    /// Whether it has a `down.sql` (a directory may leave it out; reverting then fails).
    pub fn has_down(&self) -> bool {
        self.has_down
    }

    /// Whether diesel wraps it in a transaction (`metadata.toml`: `run_in_transaction`).
    pub fn run_in_transaction(&self) -> bool {
        self.run_in_transaction
    }

    /// SHA-256 of `up.sql`, hex.
    pub fn up_sha256(&self) -> &str {
        &self.up_sha256
    }

    /// SHA-256 of `down.sql`, hex.
    pub fn down_sha256(&self) -> &str {
        &self.down_sha256
    }
}

impl fmt::Display for SqlMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl SqlMigration {
    /// Sends one file's SQL as one batch (as diesel does), naming the migration on failure.
    fn execute(
        &self,
        conn: &mut dyn BoxableConnection<Pg>,
        sql: &str,
        file: &'static str,
    ) -> migration::Result<()> {
        conn.batch_execute(sql).map_err(|e| {
            Box::new(Error::MigrationFailed {
                name: self.name.clone(),
                direction: file,
                message: e.to_string(),
            }) as _
        })
    }
}

impl MigrationName for SqlMigration {
    fn version(&self) -> MigrationVersion<'_> {
        MigrationVersion::from(self.version.as_str())
    }
}

impl MigrationMetadata for SqlMigration {
    fn run_in_transaction(&self) -> bool {
        self.run_in_transaction
    }
}

impl Migration<Pg> for SqlMigration {
    fn run(&self, conn: &mut dyn BoxableConnection<Pg>) -> migration::Result<()> {
        self.execute(conn, &self.up_sql, "up.sql")
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<Pg>) -> migration::Result<()> {
        if !self.has_down {
            return Err(Box::new(Error::MigrationFailed {
                name: self.name.clone(),
                direction: "down.sql",
                message:
                    "there is no down.sql, so it cannot be reverted; add one that undoes up.sql"
                        .into(),
            }));
        }
        self.execute(conn, &self.down_sql, "down.sql")
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        self
    }

    fn name(&self) -> &dyn MigrationName {
        self
    }
}

impl MigrationSource<Pg> for MigrationSet {
    fn migrations(&self) -> migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        Ok(self
            .migrations
            .iter()
            .cloned()
            .map(|m| Box::new(m) as Box<dyn Migration<Pg>>)
            .collect())
    }
}

fn yes() -> bool {
    true
}

/// Hex SHA-256 of a text.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The version diesel derives from a migration directory name.
fn version_of(name: &str) -> Option<String> {
    let (version, rest) = name.split_once('_')?;
    let digits: String = version.chars().filter(|c| *c != '-').collect();
    let valid = !digits.is_empty()
        && !rest.is_empty()
        && version.chars().all(|c| c.is_ascii_digit() || c == '-');
    valid.then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_follows_diesel() {
        assert_eq!(
            version_of("2026-11-26-000100_create_users").as_deref(),
            Some("20261126000100")
        );
        assert_eq!(
            version_of("00000000000000_diesel_initial_setup").as_deref(),
            Some("00000000000000")
        );
        assert_eq!(version_of("create_users"), None);
        assert_eq!(version_of("2026_"), None);
        assert_eq!(version_of("v1_x"), None);
    }

    #[test]
    fn metadata_controls_the_transaction() {
        let m = SqlMigration::new(
            "1_a",
            "SELECT 1;".into(),
            "".into(),
            Some("run_in_transaction = false"),
        )
        .unwrap();
        assert!(!m.run_in_transaction());
        let m = SqlMigration::new("1_a", "SELECT 1;".into(), "".into(), None).unwrap();
        assert!(m.run_in_transaction());
        let err = SqlMigration::new(
            "1_a",
            "SELECT 1;".into(),
            "".into(),
            Some("run_in_transacton = false"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("metadata.toml"), "{err}");
    }

    #[test]
    fn empty_up_is_refused() {
        let err = SqlMigration::new("1_a", "-- nothing\n/* here */\n".into(), "".into(), None)
            .unwrap_err();
        assert!(err.to_string().contains("up.sql has no statement"), "{err}");
        assert!(!crate::text::is_blank("-- c\nSELECT 1"));
    }

    #[test]
    fn duplicate_versions_are_refused() {
        let a = SqlMigration::new("1_a", "SELECT 1".into(), "".into(), None).unwrap();
        let b = SqlMigration::new("1_b", "SELECT 1".into(), "".into(), None).unwrap();
        let err = MigrationSet::new(vec![a, b], "test".into()).unwrap_err();
        assert!(matches!(err, Error::DuplicateVersion { .. }), "{err}");
    }

    #[test]
    fn reads_a_directory_in_version_order() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, meta) in [
            ("2_second", Some("run_in_transaction = false")),
            ("1_first", None),
        ] {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("up.sql"), format!("SELECT '{name}'")).unwrap();
            std::fs::write(dir.join("down.sql"), "SELECT 1").unwrap();
            if let Some(meta) = meta {
                std::fs::write(dir.join("metadata.toml"), meta).unwrap();
            }
        }
        std::fs::write(tmp.path().join(".keep"), "").unwrap();
        let set = MigrationSet::from_dir(tmp.path()).unwrap();
        let names: Vec<_> = set.migrations().iter().map(SqlMigration::name).collect();
        assert_eq!(names, ["1_first", "2_second"]);
        assert!(!set.migrations()[1].run_in_transaction());
        assert_eq!(
            set.migrations()[0].up_sha256(),
            sha256_hex("SELECT '1_first'")
        );

        std::fs::remove_file(tmp.path().join("1_first/down.sql")).unwrap();
        let set = MigrationSet::from_dir(tmp.path()).unwrap();
        assert!(!set.migrations()[0].has_down() && set.migrations()[1].has_down());
    }
}
