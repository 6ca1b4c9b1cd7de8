//! One cluster per test binary, and fresh databases cloned from a template in milliseconds.
//!
//! The shared cluster lives in a `static` and is never dropped; its watchdog stops and removes
//! it when the test process exits, however it exits. The suite is built for `cargo test`, which
//! runs all tests of a binary in one process and so starts the shared cluster once per binary;
//! `cargo nextest` works too, but starts one per test.

use std::{
    error::Error as StdError,
    fmt,
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use diesel::PgConnection;

use pgops_pg::quote_ident;

use crate::{Cluster, ClusterOptions, Error, Result};

/// What a template's initialisation function returns.
pub type InitResult = std::result::Result<(), Box<dyn StdError + Send + Sync>>;

/// The shared cluster of this process, started on first use with `pg_stat_statements`
/// preloaded when the server has it.
pub fn shared() -> Result<&'static Cluster> {
    static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut options = ClusterOptions::default();
            if crate::PgBinaries::discover().is_ok_and(|b| b.has_library("pg_stat_statements")) {
                options = options.preload("pg_stat_statements");
            }
            Cluster::start(options).map_err(|e| pgops_pg::report(&e))
        })
        .as_ref()
        .map_err(|message| Error::SharedUnavailable(message.clone()))
}

/// A database on the shared cluster that is prepared once (migrated, say) and then cloned
/// for each test with `CREATE DATABASE .. TEMPLATE`.
///
/// ```no_run
/// use pgops_testkit::{InitResult, Template};
///
/// fn migrate(url: &str) -> InitResult {
///     // connect to `url` and apply the schema
///     Ok(())
/// }
/// static SCHEMA: Template = Template::new("app_template", migrate);
///
/// let db = SCHEMA.database().unwrap(); // a private copy, dropped with `db`
/// let conn = db.connect().unwrap();
/// ```
pub struct Template {
    name: &'static str,
    init: fn(&str) -> InitResult,
    ready: OnceLock<std::result::Result<(), String>>,
}

/// A database of one test, dropped (`DROP DATABASE .. WITH (FORCE)`) with this value.
#[derive(Debug)]
pub struct TestDatabase {
    cluster: &'static Cluster,
    name: String,
}

impl Template {
    /// A template called `name`, prepared by `init(url)` on first use.
    pub const fn new(name: &'static str, init: fn(&str) -> InitResult) -> Self {
        Template {
            name,
            init,
            ready: OnceLock::new(),
        }
    }

    /// A fresh copy of the template for one test.
    pub fn database(&'static self) -> Result<TestDatabase> {
        let cluster = shared()?;
        self.ready
            .get_or_init(|| self.prepare(cluster).map_err(|e| pgops_pg::report(&e)))
            .as_ref()
            .map_err(|message| Error::TemplateInit {
                template: self.name.to_owned(),
                message: message.clone(),
            })?;
        TestDatabase::create(cluster, self.name)
    }

    fn prepare(&self, cluster: &Cluster) -> Result<()> {
        let name = quote_ident(self.name);
        admin(
            cluster,
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        )?;
        (self.init)(&cluster.url(self.name)).map_err(|e| Error::TemplateInit {
            template: self.name.to_owned(),
            message: pgops_pg::report(&*e),
        })?;
        // Nobody may connect to it from now on: CREATE DATABASE .. TEMPLATE needs it idle.
        admin(
            cluster,
            &format!(
                "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ),
        )
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A fresh, empty database on the shared cluster (for tests that build a schema themselves).
    pub fn empty() -> Result<Self> {
        Self::create(shared()?, "template0")
    }

    fn create(cluster: &'static Cluster, template: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // FILE_COPY (PostgreSQL 15's option; before it, the only way) copies the template's
        // files instead of WAL-logging every block: about half the time.
        admin(
            cluster,
            &format!(
                "CREATE DATABASE {} TEMPLATE {}{}",
                quote_ident(&name),
                quote_ident(template),
                if cluster.major_version() >= 15 {
                    " STRATEGY FILE_COPY"
                } else {
                    ""
                }
            ),
        )?;
        Ok(TestDatabase { cluster, name })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection URL.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// A new connection to it.
    pub fn connect(&self) -> Result<PgConnection> {
        self.cluster.connect(&self.name)
    }

    /// The cluster it lives on.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        if let Err(e) = admin(self.cluster, &sql) {
            tracing::warn!(database = %self.name, error = %pgops_pg::report(&e), "could not drop test database");
        }
    }
}

/// Runs maintenance statements over one kept connection to `postgres`, one at a time
/// (CREATE DATABASE from a template must not race another session on that template).
fn admin(cluster: &Cluster, statements: &str) -> Result<()> {
    static CONN: Mutex<Option<PgConnection>> = Mutex::new(None);
    let mut guard = CONN.lock().unwrap_or_else(PoisonError::into_inner);
    let conn = match guard.as_mut() {
        Some(conn) => conn,
        None => guard.insert(cluster.connect("postgres")?),
    };
    let result = crate::cluster::batch(conn, statements);
    if result.is_err() {
        // A broken connection must not poison every later test.
        *guard = None;
    }
    result
}
