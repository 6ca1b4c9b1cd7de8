//! `pgops pool show` (the effective pool and router configuration and where each value came
//! from) and `pgops pool check` (do every instance's pools fit in each server's
//! `max_connections`: the primary pool on the primary, a replica pool on each replica).

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use diesel::{QueryableByName, RunQueryDsl, sql_types::Integer};
use pgops_pool::{Config, Pooler, Source};
use serde_json::{Map, Value, json};

use crate::{
    db::connect,
    exit::{Exit, Failure},
};

/// Options of `pgops pool`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
    /// The configuration file [default: PGOPS_CONFIG, or ./pgops.toml when it exists].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs of `pgops pool`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Verb {
    /// Print the effective configuration with the source of every value (does not connect).
    Show,
    /// Connect and check that the pools of all instances fit in the server's max_connections,
    /// on the primary, each replica, or every member of an HA cluster (exit 1 if they do not).
    Check {
        /// How many instances of the service run with this configuration.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        instances: u32,
    },
}

#[derive(QueryableByName)]
struct ServerLimits {
    #[diesel(sql_type = Integer)]
    max_connections: i32,
    #[diesel(sql_type = Integer)]
    superuser_reserved: i32,
    #[diesel(sql_type = Integer)]
    reserved: i32,
    #[diesel(sql_type = Integer)]
    in_use: i32,
}

/// Runs one `pgops pool` command.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Exit, Failure> {
    let config = Config::load_from(args.config.as_deref()).map_err(Failure::usage)?;
    match &args.verb {
        Verb::Show => show(&config, args.json, out),
        Verb::Check { instances } => check(&config, *instances, args.json, out),
    }
}

fn show(config: &Config, json: bool, out: &mut dyn Write) -> Result<Exit, Failure> {
    let entry =
        |value: Value, key: &str| json!({ "value": value, "source": config.sources.get(key) });
    let values = serde_json::to_value(&config.pool)
        .context("encoding the settings")
        .map_err(Failure::problem)?;
    let mut pool = Map::new();
    for key in pgops_pool::KEYS {
        pool.insert((*key).to_owned(), entry(values[*key].clone(), key));
    }
    let url = config
        .database_url
        .as_ref()
        .map(|u| Value::String(u.to_string()));
    let router_values = serde_json::to_value(&config.router)
        .context("encoding the router settings")
        .map_err(Failure::problem)?;
    let mut router = Map::new();
    for key in pgops_pool::ROUTER_KEYS {
        router.insert(
            (*key).to_owned(),
            entry(router_values[key].clone(), &format!("router.{key}")),
        );
    }
    let replicas: Vec<String> = config
        .replica_urls
        .iter()
        .map(ToString::to_string)
        .collect();
    let report = json!({
        "environment": entry(json!(config.environment), "environment"),
        "database_url": entry(url.unwrap_or(Value::Null), "database_url"),
        "replica_urls": replicas,
        "pool": pool,
        "router": router,
    });
    let written = if json {
        writeln!(out, "{report:#}")
    } else {
        let source = |key: &str| {
            config
                .sources
                .get(key)
                .map_or("not set".to_owned(), Source::to_string)
        };
        let mut text = format!(
            "{:<38} {:<44} {}\n",
            "environment",
            config.environment,
            source("environment")
        );
        let url = config
            .database_url
            .as_ref()
            .map_or("(not set)".to_owned(), |u| u.to_string());
        text.push_str(&format!(
            "{:<38} {:<44} {}\n",
            "database_url",
            url,
            source("database_url")
        ));
        // Pool keys' sources are named by the key, router keys' by `router.<key>`.
        let sections = [
            ("pool", pgops_pool::KEYS, &values, ""),
            (
                "router",
                &pgops_pool::ROUTER_KEYS[..],
                &router_values,
                "router.",
            ),
        ];
        for (section, keys, values, source_prefix) in sections {
            for key in keys {
                let value = match &values[key] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                text.push_str(&format!(
                    "{:<38} {:<44} {}\n",
                    format!("{section}.{key}"),
                    value,
                    source(&format!("{source_prefix}{key}"))
                ));
            }
            if section == "pool" {
                for (index, url) in replicas.iter().enumerate() {
                    text.push_str(&format!("{:<38} {url}\n", format!("replica-{index}")));
                }
            }
        }
        write!(out, "{text}")
    };
    written
        .context("writing the report")
        .map_err(Failure::problem)?;
    Ok(Exit::Ok)
}

fn check(
    config: &Config,
    instances: u32,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let primary = config.require_url().map_err(Failure::usage)?;
    // Every pool an instance opens: the primary pool (which the router shares) on the primary,
    // and one replica pool on each replica.
    let mut servers = vec![("primary".to_owned(), primary.clone(), config.pool.max_size)];
    for (index, url) in config.replica_urls.iter().enumerate() {
        servers.push((
            format!("replica-{index}"),
            url.clone(),
            config.router.replica_max_size,
        ));
    }
    // An HA cluster (a multi-host URL, or Patroni's members): the router keeps a pool on every
    // member, and any member may become the primary, which then holds the primary pool too.
    let members = if config.replica_urls.is_empty() && config.pool.pooler == Pooler::None {
        pgops_router::cluster_members(primary, &config.router.patroni_urls)
    } else {
        Vec::new()
    };
    let ha = members.len() >= 2;
    if ha {
        let demand = config.pool.max_size + config.router.replica_max_size;
        servers = members
            .into_iter()
            .map(|(name, url)| (name, url, demand))
            .collect();
    }
    let mut reports = Vec::new();
    let mut text = String::new();
    let mut all_fit = true;
    // Behind PgBouncer the instances' pools are PgBouncer's clients; the server sees only
    // PgBouncer's own pool.
    let bouncer = if config.pool.pooler == Pooler::None {
        None
    } else {
        let limits = pgbouncer_limits(primary)?;
        let verdict = fit_pgbouncer(config.pool.max_size, instances, &limits);
        all_fit &= verdict.fits;
        text.push_str(&format!(
            "pgbouncer ({}): {} clients (max_size {} x {instances}) of max_client_conn {}; \
             {} server connections to the primary (pool_size {} + reserve_pool {}{})\n  {}\n",
            limits.url,
            verdict.needed,
            config.pool.max_size,
            limits.max_client_conn,
            limits.server_connections(),
            limits.pool_size,
            limits.reserve_pool,
            if limits.max_db_connections > 0 {
                format!(", max_db_connections {}", limits.max_db_connections)
            } else {
                String::new()
            },
            verdict.advice
        ));
        reports.push(json!({
            "server": "pgbouncer",
            "url": limits.url,
            "clients_needed": verdict.needed,
            "max_client_conn": limits.max_client_conn,
            "server_connections": limits.server_connections(),
            "fits": verdict.fits,
            "advice": verdict.advice,
        }));
        Some(limits)
    };
    for (name, url, max_size) in &servers {
        let mut conn = connect(url)?;
        let limits: ServerLimits = diesel::sql_query(
            "SELECT current_setting('max_connections')::int AS max_connections,
                    current_setting('superuser_reserved_connections')::int AS superuser_reserved,
                    coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS in_use",
        )
        .get_result(&mut conn)
        .map_err(|e| Failure::problem(anyhow::anyhow!("reading the connection limits of {url}: {}", url.scrub(&e.to_string()))))?;
        let verdict = match &bouncer {
            // The primary behind PgBouncer: its pool, whatever the instance count.
            Some(b) if name == "primary" => fit(
                u32::try_from(b.server_connections()).unwrap_or(u32::MAX),
                1,
                &limits,
            ),
            _ => fit(*max_size, instances, &limits),
        };
        all_fit &= verdict.fits;
        reports.push(json!({
            "server": name,
            "url": url.to_string(),
            "max_size": max_size,
            "instances": instances,
            "needed": verdict.needed,
            "max_connections": limits.max_connections,
            "superuser_reserved_connections": limits.superuser_reserved,
            "reserved_connections": limits.reserved,
            "available": verdict.available,
            "connections_now": limits.in_use,
            "fits": verdict.fits,
            "advice": verdict.advice,
        }));
        let demand = match &bouncer {
            Some(_) if name == "primary" => {
                format!("PgBouncer's pool = {} connections", verdict.needed)
            }
            _ if ha => format!(
                "as the primary, pool max_size {} + router replica_max_size {} = {max_size} x \
                 {instances} instance(s) = {} connections",
                config.pool.max_size, config.router.replica_max_size, verdict.needed
            ),
            _ => format!(
                "pool max_size {max_size} x {instances} instance(s) = {} connections",
                verdict.needed
            ),
        };
        text.push_str(&format!(
            "{name} ({url}): {demand}\n  \
             server: max_connections {} - {} reserved for superusers - {} reserved = {} for applications ({} connected now)\n  {}\n",
            limits.max_connections,
            limits.superuser_reserved,
            limits.reserved,
            verdict.available,
            limits.in_use,
            verdict.advice
        ));
    }
    let written = if json {
        // The primary's figures at the top (in an HA cluster, the first member that does not
        // fit, else the first).
        let mut report = reports
            .iter()
            .find(|r| r["server"] == "primary")
            .or_else(|| reports.iter().find(|r| r["fits"] == false))
            .or_else(|| reports.first())
            .cloned()
            .unwrap_or_default();
        report["servers"] = Value::Array(reports);
        report["fits"] = Value::Bool(all_fit);
        writeln!(out, "{report:#}")
    } else {
        write!(out, "{text}")
    };
    written
        .context("writing the report")
        .map_err(Failure::problem)?;
    Ok(if all_fit { Exit::Ok } else { Exit::Problem })
}

/// PgBouncer's limits for the service's database, from its admin console.
struct BouncerLimits {
    url: String,
    max_client_conn: i64,
    pool_size: i64,
    reserve_pool: i64,
    max_db_connections: i64,
}

impl BouncerLimits {
    /// Server connections PgBouncer may open to the database for one user.
    fn server_connections(&self) -> i64 {
        let pool = self.pool_size + self.reserve_pool;
        if self.max_db_connections > 0 {
            pool.min(self.max_db_connections)
        } else {
            pool
        }
    }
}

/// Reads PgBouncer's limits from its admin console (`PGOPS_PGBOUNCER_URL`) for the database
/// `primary` names.
fn pgbouncer_limits(primary: &pgops_pool::DatabaseUrl) -> Result<BouncerLimits, Failure> {
    let raw = std::env::var("PGOPS_PGBOUNCER_URL").map_err(|_| {
        Failure::usage(anyhow::anyhow!(
            "pooler is session or transaction, so the pools are PgBouncer's clients: set \
             PGOPS_PGBOUNCER_URL to PgBouncer's admin console (database pgbouncer) so that pool \
             check compares them with PgBouncer's limits"
        ))
    })?;
    let url = pgops_pool::DatabaseUrl::parse(&raw)
        .map_err(|e| Failure::usage(anyhow::anyhow!("PGOPS_PGBOUNCER_URL: {e}")))?;
    let mut console = pgops_pg::simple::SimpleConnection::connect(&url).map_err(Failure::usage)?;
    let config = console.query("SHOW CONFIG").map_err(Failure::problem)?;
    let setting = |name: &str| -> i64 {
        config
            .records()
            .find(|r| r.get("key") == Some(name))
            .and_then(|r| r.number("value"))
            .unwrap_or(0.0) as i64
    };
    let databases = console.query("SHOW DATABASES").map_err(Failure::problem)?;
    let database = primary.database().unwrap_or("postgres");
    let row = databases
        .records()
        .find(|r| r.get("name") == Some(database));
    // A database's own limit, when it sets one (0 or -1: PgBouncer's default applies).
    let own = |column: &str, default: &str| -> i64 {
        row.and_then(|r| r.number(column))
            .map(|n| n as i64)
            .filter(|n| *n > 0)
            .unwrap_or_else(|| setting(default))
    };
    Ok(BouncerLimits {
        url: url.to_string(),
        max_client_conn: setting("max_client_conn"),
        pool_size: own("pool_size", "default_pool_size"),
        reserve_pool: own("reserve_pool", "reserve_pool_size"),
        max_db_connections: own("max_connections", "max_db_connections"),
    })
}

/// Whether every instance's pool fits in PgBouncer's `max_client_conn`.
fn fit_pgbouncer(max_size: u32, instances: u32, limits: &BouncerLimits) -> Verdict {
    let needed = i64::from(max_size) * i64::from(instances);
    let available = limits.max_client_conn;
    let fits = needed <= available;
    let advice = if fits {
        format!("ok: {needed} of {available} client connections")
    } else {
        format!(
            "FAIL: {needed} client connections do not fit in PgBouncer's max_client_conn \
             {available}; raise max_client_conn (and the open-files limit) or lower max_size"
        )
    };
    Verdict {
        needed,
        available,
        fits,
        advice,
    }
}

struct Verdict {
    needed: i64,
    available: i64,
    fits: bool,
    advice: String,
}

/// Whether `instances` pools of `max_size` fit in what the server leaves to applications.
fn fit(max_size: u32, instances: u32, limits: &ServerLimits) -> Verdict {
    let needed = i64::from(max_size) * i64::from(instances);
    let available = i64::from(limits.max_connections)
        - i64::from(limits.superuser_reserved)
        - i64::from(limits.reserved);
    let fits = needed <= available;
    let advice = if !fits {
        format!(
            "FAIL: {needed} connections do not fit in {available}; lower max_size, run fewer instances, \
             raise max_connections, or put PgBouncer (transaction pooling) in front"
        )
    } else if needed * 10 > available * 8 {
        format!(
            "ok, but tight: {needed} of {available} leaves little room for migrations, cron jobs, \
             monitoring and a deploy that briefly runs old and new instances side by side"
        )
    } else {
        format!("ok: {needed} of {available} connections")
    };
    Verdict {
        needed,
        available,
        fits,
        advice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: i32) -> ServerLimits {
        ServerLimits {
            max_connections: max,
            superuser_reserved: 3,
            reserved: 0,
            in_use: 1,
        }
    }

    #[test]
    fn behind_pgbouncer_the_instances_count_against_max_client_conn_and_its_pool_against_the_server()
     {
        let bouncer = BouncerLimits {
            url: "postgres://stats@pgbouncer/pgbouncer".into(),
            max_client_conn: 100,
            pool_size: 20,
            reserve_pool: 5,
            max_db_connections: 0,
        };
        assert!(fit_pgbouncer(8, 12, &bouncer).fits);
        let v = fit_pgbouncer(8, 16, &bouncer);
        assert!(!v.fits && v.needed == 128, "{}", v.advice);
        assert_eq!(bouncer.server_connections(), 25);
        let capped = BouncerLimits {
            max_db_connections: 10,
            ..bouncer
        };
        assert_eq!(capped.server_connections(), 10);
        // 25 server connections fit in a server of 40 however many instances there are.
        assert!(fit(25, 1, &limits(40)).fits);
    }

    #[test]
    fn pools_of_all_instances_must_fit() {
        let v = fit(50, 2, &limits(100));
        assert!(
            !v.fits && v.needed == 100 && v.available == 97,
            "{}",
            v.advice
        );
        assert!(v.advice.starts_with("FAIL"));
        let v = fit(40, 2, &limits(100));
        assert!(v.fits && v.advice.contains("tight"), "{}", v.advice);
        let v = fit(10, 2, &limits(100));
        assert!(
            v.fits && v.advice.starts_with("ok: 20 of 97"),
            "{}",
            v.advice
        );
    }
}
