//! Pool configuration: a profile per environment, overridden by `pgops.toml`, overridden by
//! environment variables. Validated once, at start, with errors that name the key, the value
//! and the allowed range. Every effective value remembers where it came from.

use std::{collections::BTreeMap, fmt, path::Path, path::PathBuf, str::FromStr, time::Duration};

use serde::Serialize;

use crate::{DatabaseUrl, Error, Result};

/// Where a service runs; chooses the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// A developer's machine: a few connections, generous timeouts.
    Development,
    /// Automated tests: few connections, short timeouts, nothing kept idle.
    Test,
    /// Production-like volume, slightly looser than production.
    Staging,
    /// Many connections, strict timeouts, `statement_timeout` on.
    Production,
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Source {
    /// The environment's profile default.
    Profile,
    /// `pgops.toml` (the path).
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
}

/// What sits between the pool and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooler {
    /// The server itself.
    None,
    /// PgBouncer in session pooling: a server connection per client session, as if direct.
    Session,
    /// PgBouncer in transaction pooling: clients share server connections between
    /// transactions, so nothing may outlive a transaction (named prepared statements,
    /// session `SET`s, session advisory locks).
    Transaction,
}

/// The pool settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_size: u32,
    /// Idle connections kept open.
    pub min_idle: u32,
    /// Close a connection idle longer than this (`None`: never).
    #[serde(with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// How long a checkout waits for a connection before failing.
    #[serde(with = "duration")]
    pub connection_timeout: Duration,
    /// Close a connection older than this (`None`: never).
    #[serde(with = "opt_duration")]
    pub max_lifetime: Option<Duration>,
    /// Server-side `statement_timeout` per session (`None`: off).
    #[serde(with = "opt_duration")]
    pub statement_timeout: Option<Duration>,
    /// Server-side `lock_timeout` per session (`None`: off).
    #[serde(with = "opt_duration")]
    pub lock_timeout: Option<Duration>,
    /// Server-side `idle_in_transaction_session_timeout` per session (`None`: off).
    #[serde(with = "opt_duration")]
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// `application_name` of every session, as seen in `pg_stat_activity`.
    pub application_name: String,
    /// Report a connection held longer than this, with where it was checked out (`None`: off).
    #[serde(with = "opt_duration")]
    pub leak_threshold: Option<Duration>,
    /// A connection idle longer than this is checked with a round trip before it is handed
    /// out; one used more recently is trusted (a connection found broken by a query is
    /// discarded on return either way). `0s` checks every checkout.
    #[serde(with = "duration")]
    pub validate_after_idle: Duration,
    /// What sits in front of the server. Behind transaction pooling the pool disables diesel's
    /// prepared-statement cache and sends no session `SET` (`application_name` goes as a
    /// startup parameter, which PgBouncer keeps per client).
    pub pooler: Pooler,
}

/// How reads go to replicas (`[router]` in `pgops.toml`, `PGOPS_ROUTER_*`), and how big each
/// replica's pool is: the router shares the service's primary pool and opens one pool per
/// replica, sized here rather than like the primary's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterSettings {
    /// Most connections of each replica's pool.
    pub replica_max_size: u32,
    /// Idle connections kept in each replica's pool.
    pub replica_min_idle: u32,
    /// Close a replica connection idle longer than this (`None`: never).
    #[serde(with = "opt_duration")]
    pub replica_idle_timeout: Option<Duration>,
    /// Reads without a token avoid replicas more than this far behind in time.
    #[serde(with = "duration")]
    pub max_lag: Duration,
    /// ... or more than this many bytes of WAL behind.
    pub max_lag_bytes: u64,
    /// How long a read after a write waits for a replica to replay it before using the
    /// primary (`0s`: use the primary at once).
    #[serde(with = "duration")]
    pub token_wait: Duration,
    /// How often the router checks every replica (and, in an HA cluster, which member is
    /// the primary).
    #[serde(with = "duration")]
    pub monitor_interval: Duration,
    /// Patroni REST API base URLs (`http://host:8008`, comma-separated in the environment):
    /// the router finds the cluster's members from `/cluster` at start and reports Patroni's
    /// view (no leader, DCS lost) in its errors and metrics.
    pub patroni_urls: Vec<String>,
}

/// The router keys, as named in `pgops.toml`'s `[router]` table; the environment variable is
/// `PGOPS_ROUTER_` + the key in upper case.
pub const ROUTER_KEYS: [&str; 8] = [
    "replica_max_size",
    "replica_min_idle",
    "replica_idle_timeout",
    "max_lag",
    "max_lag_bytes",
    "token_wait",
    "monitor_interval",
    "patroni_urls",
];

impl Default for RouterSettings {
    /// Replica pools of 20 with 5 idle, closed after 30 s idle; 5 s or 16 MiB of lag.
    fn default() -> Self {
        RouterSettings {
            replica_max_size: 20,
            replica_min_idle: 5,
            replica_idle_timeout: Some(Duration::from_secs(30)),
            max_lag: Duration::from_secs(5),
            max_lag_bytes: 16 * 1024 * 1024,
            token_wait: Duration::ZERO,
            monitor_interval: Duration::from_secs(1),
            patroni_urls: Vec::new(),
        }
    }
}

/// Everything a pool needs, with the source of every value.
#[derive(Debug, Clone)]
pub struct Config {
    /// The environment whose profile was used.
    pub environment: Environment,
    /// The database (primary).
    pub database_url: Option<DatabaseUrl>,
    /// Read replicas (`DATABASE_REPLICA_URLS`, comma-separated, or `DATABASE_READ_REPLICA_URL`).
    pub replica_urls: Vec<DatabaseUrl>,
    /// The settings.
    pub pool: PoolSettings,
    /// How reads go to replicas, and the replicas' pools.
    pub router: RouterSettings,
    /// Where each key's value came from (`environment`, `database_url` and every pool key).
    pub sources: BTreeMap<&'static str, Source>,
}

/// The pool keys, as named in `pgops.toml`'s `[pool]` table; the environment variable is
/// `PGOPS_POOL_` + the key in upper case.
pub const KEYS: &[&str] = &[
    "max_size",
    "min_idle",
    "idle_timeout",
    "connection_timeout",
    "max_lifetime",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "application_name",
    "leak_threshold",
    "validate_after_idle",
    "pooler",
];

/// What each `[pool]` and `[router]` key sets, in a sentence: the configuration reference
/// (`docs/reference.md`) is generated from this and [`KEYS`] / [`ROUTER_KEYS`].
pub fn describe(key: &str) -> Option<&'static str> {
    Some(match key {
        "max_size" => "Most connections the pool opens.",
        "min_idle" => "Idle connections kept open.",
        "idle_timeout" => "Close a connection idle longer than this (`off`: never).",
        "connection_timeout" => "How long a checkout waits for a connection before failing.",
        "max_lifetime" => "Close a connection older than this (`off`: never).",
        "statement_timeout" => "Server-side `statement_timeout` of every session (`off`: none).",
        "lock_timeout" => "Server-side `lock_timeout` of every session (`off`: none).",
        "idle_in_transaction_session_timeout" => {
            "Server-side `idle_in_transaction_session_timeout` of every session (`off`: none)."
        }
        "application_name" => {
            "`application_name` of every session, as `pg_stat_activity` shows it."
        }
        "leak_threshold" => {
            "Report a connection held longer than this, with where it was checked out (`off`: never)."
        }
        "validate_after_idle" => {
            "A connection idle longer than this is checked with a round trip before it is handed out (`0s`: every checkout)."
        }
        "pooler" => {
            "What sits in front of the server: `none`, `session` or `transaction` (PgBouncer's pool mode)."
        }
        "replica_max_size" => "Most connections of each replica's pool.",
        "replica_min_idle" => "Idle connections kept in each replica's pool.",
        "replica_idle_timeout" => {
            "Close a replica connection idle longer than this (`off`: never)."
        }
        "max_lag" => "Reads without a token avoid replicas further behind than this in time.",
        "max_lag_bytes" => "... or more than this many bytes of WAL behind.",
        "token_wait" => {
            "How long a read after a write waits for a replica to replay it before using the primary (`0s`: the primary at once)."
        }
        "monitor_interval" => {
            "How often the router checks every replica (and, in an HA cluster, which member is the primary)."
        }
        "patroni_urls" => {
            "Patroni REST API base URLs (comma-separated in the environment): the cluster's members and Patroni's view of them."
        }
        _ => return None,
    })
}

impl Environment {
    /// Every environment, in order of strictness.
    pub const ALL: [Environment; 4] = [
        Environment::Development,
        Environment::Test,
        Environment::Staging,
        Environment::Production,
    ];

    /// The profile's defaults.
    pub fn profile(self) -> PoolSettings {
        let s = Duration::from_secs;
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        let (max_size, min_idle, idle, connect) = match self {
            Environment::Development => (5, 1, s(60), s(2)),
            Environment::Test => (3, 0, s(10), s(2)),
            Environment::Staging => (20, 5, s(30), s(3)),
            Environment::Production => (50, 10, s(30), s(5)),
        };
        let (statement, lock, idle_in_tx, leak, lifetime) = match self {
            Environment::Development => (None, s(5), s(60), s(30), m(30)),
            Environment::Test => (None, s(2), s(10), s(10), m(5)),
            Environment::Staging => (Some(s(30)), s(5), s(60), s(30), m(30)),
            Environment::Production => (Some(s(10)), s(3), s(30), s(60), m(30)),
        };
        PoolSettings {
            max_size,
            min_idle,
            idle_timeout: Some(idle),
            connection_timeout: connect,
            max_lifetime: Some(lifetime),
            statement_timeout: statement,
            lock_timeout: Some(lock),
            idle_in_transaction_session_timeout: Some(idle_in_tx),
            application_name: default_application_name(),
            leak_threshold: Some(leak),
            validate_after_idle: Duration::from_secs(1),
            pooler: Pooler::None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Staging => "staging",
            Environment::Production => "production",
        })
    }
}

impl FromStr for Environment {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Environment::ALL
            .into_iter()
            .find(|e| e.to_string() == s.trim().to_ascii_lowercase())
            .ok_or(())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Profile => f.write_str("profile"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
        }
    }
}

impl Config {
    /// Reads the process environment and `pgops.toml` (`PGOPS_CONFIG`, or `./pgops.toml` when
    /// it exists).
    pub fn load() -> Result<Self> {
        Self::load_from(None)
    }

    /// Like [`Config::load`], reading `file` instead when given.
    pub fn load_from(file: Option<&Path>) -> Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        let path = pgops_pg::config_path(file);
        let file = match &path {
            Some(path) => Some((
                path.as_path(),
                std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
                    path: path.clone(),
                    message: format!("cannot read it ({e}); fix PGOPS_CONFIG or create the file"),
                })?,
            )),
            None => None,
        };
        Self::from_sources(&env, file.as_ref().map(|(p, text)| (*p, text.as_str())))
    }

    /// Builds the configuration from an environment lookup and an optional file's text.
    pub fn from_sources(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<(&Path, &str)>,
    ) -> Result<Self> {
        let mut sources = BTreeMap::new();
        let (file_path, table) = match file {
            Some((path, text)) => {
                let table: toml::Table = toml::from_str(text).map_err(|e| Error::ConfigFile {
                    path: path.to_path_buf(),
                    message: e.message().to_owned(),
                })?;
                (Some(path.to_path_buf()), table)
            }
            None => (None, toml::Table::new()),
        };
        let file_source = || Source::File(file_path.clone().unwrap_or_default());
        let section = |name: &str| -> Result<toml::Table> {
            match table.get(name) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t.clone()),
                Some(_) => Err(Error::ConfigFile {
                    path: file_path.clone().unwrap_or_default(),
                    message: format!("`{name}` must be a table ([{name}])"),
                }),
            }
        };

        // The environment: PGOPS_ENV, then APP_ENV, then the file, then development.
        let (environment, env_source) = if let Some((var, value)) = ["PGOPS_ENV", "APP_ENV"]
            .into_iter()
            .find_map(|var| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
        {
            (parse_environment(var, &value)?, Source::Env(var.to_owned()))
        } else if let Some(value) = table.get("environment") {
            let text = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            (
                parse_environment("environment (pgops.toml)", &text)?,
                file_source(),
            )
        } else {
            (Environment::Development, Source::Profile)
        };
        sources.insert("environment", env_source);

        // The database URL: DATABASE_URL, then [database] url.
        let database = section("database")?;
        let database_url = if let Some(url) = env("DATABASE_URL").filter(|v| !v.trim().is_empty()) {
            sources.insert("database_url", Source::Env("DATABASE_URL".into()));
            Some(DatabaseUrl::parse(&url)?)
        } else if let Some(url) = database.get("url") {
            sources.insert("database_url", file_source());
            let url = url.as_str().ok_or_else(|| Error::ConfigFile {
                path: file_path.clone().unwrap_or_default(),
                message: "[database] url must be a string".into(),
            })?;
            Some(DatabaseUrl::parse(url)?)
        } else {
            None
        };

        // Pool keys: profile, then [pool], then PGOPS_POOL_*.
        let pool_table = section("pool")?;
        if let Some(unknown) = pool_table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(Error::ConfigFile {
                path: file_path.clone().unwrap_or_default(),
                message: format!(
                    "unknown key `{unknown}` in [pool]; known keys: {}",
                    KEYS.join(", ")
                ),
            });
        }
        let mut raw: BTreeMap<&'static str, (String, String, Source)> = BTreeMap::new();
        for key in KEYS {
            if let Some(value) = pool_table.get(*key) {
                let text = value
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| value.to_string());
                raw.insert(
                    key,
                    (format!("pool.{key} (pgops.toml)"), text, file_source()),
                );
            }
            let var = format!("PGOPS_POOL_{}", key.to_ascii_uppercase());
            if let Some(value) = env(&var) {
                raw.insert(key, (var.clone(), value, Source::Env(var)));
            }
        }
        let mut pool = environment.profile();
        for key in KEYS {
            match raw.remove(key) {
                Some((name, value, source)) => {
                    apply(&mut pool, key, &name, &value)?;
                    sources.insert(key, source);
                }
                None => {
                    sources.insert(key, Source::Profile);
                }
            }
        }
        if pool.pooler == Pooler::Transaction {
            session_timeouts_behind_transaction_pooling(&mut pool, &sources)?;
        }
        if pool.min_idle > pool.max_size {
            let name = match &sources["min_idle"] {
                Source::Env(var) => var.clone(),
                Source::File(_) => "pool.min_idle (pgops.toml)".into(),
                Source::Profile => "min_idle".into(),
            };
            return Err(Error::InvalidSetting {
                key: name,
                value: pool.min_idle.to_string(),
                allowed: format!("0 to max_size ({})", pool.max_size),
            });
        }
        let replica_urls = replica_urls(env)?;
        let router = router_settings(&section("router")?, file_path.as_deref(), env, &mut sources)?;
        Ok(Config {
            environment,
            database_url,
            replica_urls,
            pool,
            router,
            sources,
        })
    }

    /// The settings of each replica's pool: the primary's, sized by `[router]`.
    pub fn replica_pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_size: self.router.replica_max_size,
            min_idle: self.router.replica_min_idle,
            idle_timeout: self.router.replica_idle_timeout,
            ..self.pool.clone()
        }
    }

    /// The database URL, or the error that says how to set it.
    pub fn require_url(&self) -> Result<&DatabaseUrl> {
        self.database_url.as_ref().ok_or(Error::MissingUrl)
    }
}

/// `DATABASE_REPLICA_URLS` (comma-separated), or `DATABASE_READ_REPLICA_URL`.
fn replica_urls(env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<DatabaseUrl>> {
    let (var, raw) = match env("DATABASE_REPLICA_URLS").filter(|v| !v.trim().is_empty()) {
        Some(raw) => ("DATABASE_REPLICA_URLS", raw),
        None => (
            "DATABASE_READ_REPLICA_URL",
            env("DATABASE_READ_REPLICA_URL").unwrap_or_default(),
        ),
    };
    raw.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .enumerate()
        .map(|(index, u)| {
            DatabaseUrl::parse(u).map_err(|e| Error::InvalidSetting {
                key: format!("{var} (entry {index})"),
                value: "(not shown: it may hold a password)".into(),
                allowed: e.to_string(),
            })
        })
        .collect()
}

/// `[router]`, then `PGOPS_ROUTER_*`, over the defaults; validated.
fn router_settings(
    table: &toml::Table,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    sources: &mut BTreeMap<&'static str, Source>,
) -> Result<RouterSettings> {
    if let Some(unknown) = table.keys().find(|k| !ROUTER_KEYS.contains(&k.as_str())) {
        return Err(Error::ConfigFile {
            path: file.map(Path::to_path_buf).unwrap_or_default(),
            message: format!(
                "unknown key `{unknown}` in [router]; known keys: {}",
                ROUTER_KEYS.join(", ")
            ),
        });
    }
    let mut router = RouterSettings::default();
    for (key, source_key) in ROUTER_KEYS.iter().zip(ROUTER_SOURCE_KEYS) {
        let var = format!("PGOPS_ROUTER_{}", key.to_ascii_uppercase());
        let (name, value, source) = if let Some(value) = env(&var) {
            (var.clone(), value, Source::Env(var))
        } else if let Some(value) = table.get(*key) {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                // A list of URLs may be written as a TOML array.
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (
                format!("router.{key} (pgops.toml)"),
                text,
                Source::File(file.map(Path::to_path_buf).unwrap_or_default()),
            )
        } else {
            sources.insert(source_key, Source::Profile);
            continue;
        };
        let raw = Raw {
            name: &name,
            value: &value,
        };
        let forever = Duration::from_secs(365 * 24 * 3600);
        match *key {
            "replica_max_size" => router.replica_max_size = raw.count(1, 10_000)? as u32,
            "replica_min_idle" => router.replica_min_idle = raw.count(0, 10_000)? as u32,
            "replica_idle_timeout" => {
                router.replica_idle_timeout = raw.optional(Duration::from_secs(1))?
            }
            "max_lag" => router.max_lag = raw.required(Duration::ZERO, forever)?,
            "max_lag_bytes" => router.max_lag_bytes = raw.count(0, u64::MAX / 2)?,
            "token_wait" => router.token_wait = raw.required(Duration::ZERO, forever)?,
            "monitor_interval" => {
                router.monitor_interval =
                    raw.required(Duration::from_millis(50), Duration::from_secs(60))?
            }
            "patroni_urls" => router.patroni_urls = raw.http_urls()?,
            // Every key of ROUTER_KEYS has its arm above.
            _ => {}
        }
        sources.insert(source_key, source);
    }
    if router.replica_min_idle > router.replica_max_size {
        return Err(Error::InvalidSetting {
            key: "router.replica_min_idle".into(),
            value: router.replica_min_idle.to_string(),
            allowed: format!("0 to replica_max_size ({})", router.replica_max_size),
        });
    }
    Ok(router)
}

/// The `sources` keys of the router settings, in the order of [`ROUTER_KEYS`].
const ROUTER_SOURCE_KEYS: [&str; 8] = [
    "router.replica_max_size",
    "router.replica_min_idle",
    "router.replica_idle_timeout",
    "router.max_lag",
    "router.max_lag_bytes",
    "router.token_wait",
    "router.monitor_interval",
    "router.patroni_urls",
];

/// Behind transaction pooling a session `SET` would stay on a server connection other clients
/// use next. The profile's timeouts are left off; one set explicitly is refused with where to
/// set it instead.
fn session_timeouts_behind_transaction_pooling(
    pool: &mut PoolSettings,
    sources: &BTreeMap<&'static str, Source>,
) -> Result<()> {
    let fields: [(&str, &mut Option<Duration>); 3] = [
        ("statement_timeout", &mut pool.statement_timeout),
        ("lock_timeout", &mut pool.lock_timeout),
        (
            "idle_in_transaction_session_timeout",
            &mut pool.idle_in_transaction_session_timeout,
        ),
    ];
    for (key, value) in fields {
        match (&sources[key], value.as_ref()) {
            (Source::Profile, _) | (_, None) => *value = None,
            (source, Some(d)) => {
                let name = match source {
                    Source::Env(var) => var.clone(),
                    _ => format!("pool.{key} (pgops.toml)"),
                };
                return Err(Error::InvalidSetting {
                    key: name,
                    value: humantime::format_duration(*d).to_string(),
                    allowed: format!(
                        "off with pooler = transaction: a session SET would stay on a server \
                         connection other clients use next; set it on the role instead \
                         (ALTER ROLE app SET {key} = '{}'), or use PgBouncer's query_timeout \
                         / idle_transaction_timeout",
                        humantime::format_duration(*d)
                    ),
                });
            }
        }
    }
    Ok(())
}

fn parse_environment(key: &str, value: &str) -> Result<Environment> {
    value.parse().map_err(|()| Error::InvalidSetting {
        key: key.to_owned(),
        value: value.to_owned(),
        allowed: "one of development, test, staging, production".into(),
    })
}

/// Parses and range-checks one key's value into the settings.
/// One setting's value as given, with where it came from, and the checks that turn it into
/// a typed value or an error naming the key, the value and what is allowed.
struct Raw<'a> {
    name: &'a str,
    value: &'a str,
}

impl Raw<'_> {
    fn invalid(&self, allowed: &str) -> Error {
        Error::InvalidSetting {
            key: self.name.to_owned(),
            value: self.value.to_owned(),
            allowed: allowed.to_owned(),
        }
    }

    /// A comma-separated list of `http://` or `https://` base URLs (empty: none).
    fn http_urls(&self) -> Result<Vec<String>> {
        let urls: Vec<String> = self
            .value
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        match urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            Some(_) => Err(self.invalid(
                "comma-separated http:// or https:// base URLs of Patroni's REST API, such as http://db1:8008,http://db2:8008",
            )),
            None => Ok(urls),
        }
    }

    fn count(&self, min: u64, max: u64) -> Result<u64> {
        let allowed = format!("a whole number from {min} to {max}");
        let n: u64 = self
            .value
            .trim()
            .parse()
            .map_err(|_| self.invalid(&allowed))?;
        if n < min || n > max {
            return Err(self.invalid(&allowed));
        }
        Ok(n)
    }

    /// `0`, `off` and `none` switch an optional duration off.
    fn optional(&self, min: Duration) -> Result<Option<Duration>> {
        let allowed = format!(
            "a duration of at least {} (like 30s, 5m), or 0/off",
            humantime::format_duration(min)
        );
        match self.value.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "none" => Ok(None),
            text => {
                let d = humantime::parse_duration(text).map_err(|_| self.invalid(&allowed))?;
                if d.is_zero() {
                    Ok(None)
                } else if d < min {
                    Err(self.invalid(&allowed))
                } else {
                    Ok(Some(d))
                }
            }
        }
    }

    fn required(&self, min: Duration, max: Duration) -> Result<Duration> {
        let allowed = format!(
            "a duration from {} to {} (like 500ms, 5s)",
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
        let text = self.value.trim();
        let d = if text == "0" {
            Duration::ZERO
        } else {
            humantime::parse_duration(text).map_err(|_| self.invalid(&allowed))?
        };
        if d < min || d > max {
            Err(self.invalid(&allowed))
        } else {
            Ok(d)
        }
    }
}

/// Parses and range-checks one pool key's value into the settings.
fn apply(pool: &mut PoolSettings, key: &str, name: &str, value: &str) -> Result<()> {
    let raw = Raw { name, value };
    let invalid = |allowed: &str| raw.invalid(allowed);
    let count = |min: u32, max: u32| -> Result<u32> {
        Ok(raw.count(u64::from(min), u64::from(max))? as u32)
    };
    let optional = |min: Duration| raw.optional(min);
    let required = |min: Duration, max: Duration| raw.required(min, max);
    let ms = Duration::from_millis;
    match key {
        "max_size" => pool.max_size = count(1, 10_000)?,
        "pooler" => {
            pool.pooler = match value.trim().to_ascii_lowercase().as_str() {
                "none" => Pooler::None,
                "session" => Pooler::Session,
                "transaction" => Pooler::Transaction,
                _ => return Err(invalid("one of none, session, transaction")),
            }
        }
        "min_idle" => pool.min_idle = count(0, 10_000)?,
        "idle_timeout" => pool.idle_timeout = optional(ms(1000))?,
        "connection_timeout" => {
            pool.connection_timeout = required(ms(10), Duration::from_secs(600))?
        }
        "max_lifetime" => pool.max_lifetime = optional(ms(1000))?,
        "statement_timeout" => pool.statement_timeout = optional(ms(1))?,
        "lock_timeout" => pool.lock_timeout = optional(ms(1))?,
        "idle_in_transaction_session_timeout" => {
            pool.idle_in_transaction_session_timeout = optional(ms(1))?
        }
        "leak_threshold" => pool.leak_threshold = optional(ms(1))?,
        "validate_after_idle" => {
            pool.validate_after_idle = required(Duration::ZERO, Duration::from_secs(3600))?
        }
        "application_name" => {
            let ok = !value.is_empty()
                && value.len() <= 63
                && value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
            if !ok {
                return Err(invalid("1 to 63 printable ASCII characters"));
            }
            pool.application_name = value.to_owned();
        }
        _ => return Err(invalid("a known key")),
    }
    Ok(())
}

/// The running program's name, so `pg_stat_activity` shows which service holds a connection.
fn default_application_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|name| {
            name.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(63)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "pgops".to_owned())
}

mod duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_key_is_described_for_the_reference() {
        for key in KEYS.iter().chain(ROUTER_KEYS.iter()) {
            assert!(describe(key).is_some(), "{key} has no description");
        }
        assert_eq!(describe("max_sise"), None);
    }

    fn load(env: &[(&str, &str)], file: Option<&str>) -> Result<Config> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.get(name).cloned();
        Config::from_sources(&lookup, file.map(|text| (Path::new("pgops.toml"), text)))
    }

    #[test]
    fn router_source_keys_follow_router_keys() {
        for (key, source) in ROUTER_KEYS.iter().zip(ROUTER_SOURCE_KEYS) {
            assert_eq!(source, format!("router.{key}"));
        }
    }

    #[test]
    fn router_settings_and_replicas_come_from_the_file_and_the_environment() {
        let c = load(&[], None).unwrap();
        assert_eq!(c.router, RouterSettings::default());
        assert_eq!(
            (c.router.replica_max_size, c.router.replica_min_idle),
            (20, 5)
        );
        assert!(c.replica_urls.is_empty());

        let c = load(
            &[
                ("PGOPS_ROUTER_TOKEN_WAIT", "50ms"),
                (
                    "DATABASE_REPLICA_URLS",
                    "postgres://app:s3cret@r1/app, postgres://app@r2/app",
                ),
            ],
            Some("[router]\nreplica_max_size = 8\nreplica_min_idle = 2\ntoken_wait = \"1s\"\n"),
        )
        .unwrap();
        assert_eq!(c.router.replica_max_size, 8);
        assert_eq!(
            c.router.token_wait,
            Duration::from_millis(50),
            "env beats file"
        );
        assert_eq!(
            c.sources["router.token_wait"],
            Source::Env("PGOPS_ROUTER_TOKEN_WAIT".into())
        );
        assert_eq!(
            c.sources["router.replica_max_size"],
            Source::File("pgops.toml".into())
        );
        assert_eq!(c.sources["router.max_lag"], Source::Profile);
        assert_eq!(c.replica_urls.len(), 2);
        let replica = c.replica_pool_settings();
        assert_eq!((replica.max_size, replica.min_idle), (8, 2));
        assert_eq!(replica.statement_timeout, c.pool.statement_timeout);

        let err = load(
            &[],
            Some("[router]\nreplica_max_size = 2\nreplica_min_idle = 3\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("0 to replica_max_size (2)"), "{err}");
        let err = load(
            &[(
                "DATABASE_REPLICA_URLS",
                "postgres://app:s3cret@r1/app?nonsense=1",
            )],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DATABASE_REPLICA_URLS (entry 0)") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn behind_transaction_pooling_no_session_timeout_is_set_and_an_explicit_one_is_refused() {
        let c = load(
            &[
                ("PGOPS_ENV", "production"),
                ("PGOPS_POOL_POOLER", "transaction"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.pool.pooler, Pooler::Transaction);
        assert_eq!(
            c.pool.statement_timeout, None,
            "the profile's 10s is not sent"
        );
        assert_eq!(c.pool.lock_timeout, None);
        assert_eq!(crate::session_sql(&c.pool), "", "no session SET at all");
        // Straight to the server (or session pooling) the profile's timeouts apply.
        let direct = load(&[("PGOPS_ENV", "production")], None).unwrap();
        assert!(crate::session_sql(&direct.pool).contains("SET statement_timeout = 10000"));

        let err = load(
            &[("PGOPS_POOL_POOLER", "transaction")],
            Some("[pool]\nstatement_timeout = \"5s\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pool.statement_timeout (pgops.toml)")
                && err.contains("ALTER ROLE app SET statement_timeout = '5s'")
                && err.contains("query_timeout"),
            "{err}"
        );
        let err = load(&[("PGOPS_POOL_POOLER", "pgbouncer")], None).unwrap_err();
        assert!(
            err.to_string()
                .contains("one of none, session, transaction"),
            "{err}"
        );
    }

    #[test]
    fn profiles_have_the_documented_defaults() {
        let expect = [
            (Environment::Development, 5, 1, 60, 2, None),
            (Environment::Test, 3, 0, 10, 2, None),
            (Environment::Staging, 20, 5, 30, 3, Some(30)),
            (Environment::Production, 50, 10, 30, 5, Some(10)),
        ];
        for (env, max, min, idle, connect, statement) in expect {
            let p = env.profile();
            assert_eq!(p.max_size, max, "{env}");
            assert_eq!(p.min_idle, min, "{env}");
            assert_eq!(p.idle_timeout, Some(Duration::from_secs(idle)), "{env}");
            assert_eq!(p.connection_timeout, Duration::from_secs(connect), "{env}");
            assert_eq!(
                p.statement_timeout,
                statement.map(Duration::from_secs),
                "{env}"
            );
            assert!(
                p.max_lifetime.is_some()
                    && p.lock_timeout.is_some()
                    && p.idle_in_transaction_session_timeout.is_some()
            );
            assert!(!p.application_name.is_empty());
        }
    }

    #[test]
    fn environment_comes_from_pgops_env_then_app_env_then_file() {
        assert_eq!(
            load(&[], None).unwrap().environment,
            Environment::Development
        );
        assert_eq!(
            load(&[("APP_ENV", "staging")], None).unwrap().environment,
            Environment::Staging
        );
        let c = load(&[("PGOPS_ENV", "Production"), ("APP_ENV", "test")], None).unwrap();
        assert_eq!(c.environment, Environment::Production);
        assert_eq!(c.sources["environment"], Source::Env("PGOPS_ENV".into()));
        let c = load(&[], Some("environment = \"test\"")).unwrap();
        assert_eq!(c.environment, Environment::Test);
        assert_eq!(c.pool.max_size, 3);
    }

    #[test]
    fn env_beats_file_beats_profile() {
        let file = "[pool]\nmax_size = 30\nidle_timeout = \"45s\"\n";
        let c = load(
            &[("PGOPS_ENV", "staging"), ("PGOPS_POOL_MAX_SIZE", "40")],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.pool.max_size, 40);
        assert_eq!(
            c.sources["max_size"],
            Source::Env("PGOPS_POOL_MAX_SIZE".into())
        );
        assert_eq!(c.pool.idle_timeout, Some(Duration::from_secs(45)));
        assert_eq!(c.sources["idle_timeout"], Source::File("pgops.toml".into()));
        assert_eq!(c.pool.min_idle, 5);
        assert_eq!(c.sources["min_idle"], Source::Profile);
        assert_eq!(c.sources.len(), KEYS.len() + 1 + ROUTER_KEYS.len());
    }

    #[test]
    fn database_url_from_env_or_file_and_never_shown() {
        let c = load(
            &[("DATABASE_URL", "postgres://app:pw@db/app")],
            Some("[database]\nurl = \"postgres://x@y/z\""),
        )
        .unwrap();
        assert_eq!(
            c.require_url().unwrap().to_string(),
            "postgres://app:***@db/app"
        );
        let c = load(&[], Some("[database]\nurl = \"postgres://x@y/z\"")).unwrap();
        assert_eq!(c.require_url().unwrap().to_string(), "postgres://x@y/z");
        let err = load(&[], None).unwrap().require_url().unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
    }

    #[test]
    fn invalid_values_name_key_value_and_range() {
        // (environment, pgops.toml, expected message)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[("PGOPS_POOL_MAX_SIZE", "0")],
                None,
                "PGOPS_POOL_MAX_SIZE = \"0\" is invalid: a whole number from 1 to 10000",
            ),
            (
                &[("PGOPS_POOL_MAX_SIZE", "-3")],
                None,
                "PGOPS_POOL_MAX_SIZE = \"-3\" is invalid",
            ),
            (
                &[("PGOPS_POOL_MIN_IDLE", "9"), ("PGOPS_POOL_MAX_SIZE", "4")],
                None,
                "PGOPS_POOL_MIN_IDLE = \"9\" is invalid: 0 to max_size (4)",
            ),
            (
                &[("PGOPS_POOL_CONNECTION_TIMEOUT", "soon")],
                None,
                "PGOPS_POOL_CONNECTION_TIMEOUT = \"soon\" is invalid: a duration from 10ms to 10m",
            ),
            (
                &[("PGOPS_POOL_CONNECTION_TIMEOUT", "0")],
                None,
                "is invalid: a duration from 10ms",
            ),
            (
                &[("PGOPS_ENV", "prod")],
                None,
                "PGOPS_ENV = \"prod\" is invalid: one of development, test, staging, production",
            ),
            (
                &[],
                Some("[pool]\nmax_size = 0"),
                "pool.max_size (pgops.toml) = \"0\" is invalid",
            ),
            (
                &[],
                Some("[pool]\nmax_sise = 3"),
                "unknown key `max_sise` in [pool]",
            ),
            (
                &[],
                Some("[pool]\nidle_timeout = \"10 parsecs\""),
                "pool.idle_timeout (pgops.toml) = \"10 parsecs\" is invalid: a duration of at least 1s",
            ),
            (
                &[("PGOPS_POOL_APPLICATION_NAME", "")],
                None,
                "1 to 63 printable ASCII characters",
            ),
            (&[], Some("[pool\n"), "pgops.toml: "),
        ];
        for (env, file, expected) in cases {
            let err = load(env, *file).unwrap_err().to_string();
            assert!(err.contains(expected), "expected `{expected}` in `{err}`");
        }
    }

    #[test]
    fn timeouts_can_be_switched_off() {
        let c = load(
            &[
                ("PGOPS_ENV", "production"),
                ("PGOPS_POOL_STATEMENT_TIMEOUT", "off"),
                ("PGOPS_POOL_MAX_LIFETIME", "0"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.pool.statement_timeout, None);
        assert_eq!(c.pool.max_lifetime, None);
    }
}
