//! `pgops migrate check` and `pgops migrate drift`: the round trip of a migrations directory
//! and the drift of a live database, each on a database made for it: an empty database it is
//! given (`--scratch-url`), a database it creates and drops on the server of `DATABASE_URL`,
//! or a throwaway cluster started from the installed PostgreSQL binaries.

use std::io::Write;

use anyhow::Context as _;
use diesel::PgConnection;
use pgops_migrate::{
    CheckReport, Drift, Error as MigrateError, MigrationSet, Migrator, RunOptions,
    scratch::{self, ScratchDatabase},
};
use pgops_pg::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions, PgBinaries};

use crate::exit::{Exit, Failure};

/// Where the check runs.
#[derive(Debug, Clone, Copy)]
pub struct Where<'a> {
    /// An empty database given explicitly.
    pub scratch_url: Option<&'a str>,
    /// Start a throwaway cluster even when a server is given.
    pub throwaway_cluster: bool,
}

/// A database made for one run; dropped (or stopped and removed) with it.
enum Place {
    Given(DatabaseUrl),
    Scratch(ScratchDatabase),
    Throwaway {
        cluster: Box<Cluster>,
        url: DatabaseUrl,
    },
}

/// `pgops migrate check`; `server` (`DATABASE_URL`) is where a scratch database is created.
pub fn check(
    set: &MigrationSet,
    options: &RunOptions,
    place: Where<'_>,
    server: Option<&DatabaseUrl>,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let place = Place::open(place, server)?;
    let mut conn = place.connect()?;
    let migrator = Migrator::new(set).with_options(options.clone());
    let report = pgops_migrate::check(&migrator, &mut conn).map_err(|e| place.fail(e))?;
    drop(conn);
    let ok = report.problem.is_none();
    let text = check_text(&report, &place.describe());
    write_report(
        out,
        json,
        &report,
        ok,
        ("database", place.describe()),
        &text,
    )
}

/// `pgops migrate drift`.
pub fn drift(
    set: &MigrationSet,
    options: &RunOptions,
    live_url: &DatabaseUrl,
    place: Where<'_>,
    json: bool,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let mut live = scratch::connect(live_url).map_err(Failure::usage)?;
    let place = Place::open(place, Some(live_url))?;
    let mut reference = place.connect()?;
    let found =
        pgops_migrate::drift(set, options, &mut live, &mut reference).map_err(|e| place.fail(e))?;
    drop(reference);
    let text = drift_text(&found, live_url, set);
    write_report(
        out,
        json,
        &found,
        found.is_clean(),
        ("reference", place.describe()),
        &text,
    )
}

/// Writes a report as JSON (with `ok` and where it ran) or as `text`; exit 0 when `ok`, else 1.
fn write_report(
    out: &mut dyn Write,
    json: bool,
    report: &impl serde::Serialize,
    ok: bool,
    (key, database): (&str, String),
    text: &str,
) -> Result<Exit, Failure> {
    let written = if json {
        let mut value = serde_json::to_value(report)
            .context("encoding the report")
            .map_err(Failure::problem)?;
        value["ok"] = serde_json::Value::Bool(ok);
        value[key] = serde_json::Value::String(database);
        writeln!(out, "{value:#}")
    } else {
        write!(out, "{text}")
    };
    written
        .context("writing the report")
        .map_err(Failure::problem)?;
    Ok(if ok { Exit::Ok } else { Exit::Problem })
}

fn check_text(report: &CheckReport, database: &str) -> String {
    let mut text = String::new();
    match &report.problem {
        Some(problem) => {
            text.push_str(&format!("{problem}\n"));
            text.push_str(&format!(
                "migration check failed: {} migration(s) from {}, on {database}, stopped after {} step(s) ({:.1}s)\n",
                report.migrations,
                report.origin,
                report.steps,
                report.elapsed.as_secs_f64()
            ));
        }
        None => text.push_str(&format!(
            "migration check passed: {} migration(s) from {} on {database}: each down.sql restores \
             the schema from before its up.sql, each up.sql applies again, the whole history \
             applies again to the same schema ({} objects), and validate agrees ({} steps, {:.1}s)\n",
            report.migrations,
            report.origin,
            report.objects,
            report.steps,
            report.elapsed.as_secs_f64()
        )),
    }
    text
}

fn drift_text(found: &Drift, live: &DatabaseUrl, set: &MigrationSet) -> String {
    let mut text = String::new();
    for version in &found.unknown_applied {
        text.push_str(&format!(
            "  applied in the database but not in {}: version {version}\n",
            set.origin()
        ));
    }
    if !found.differences.is_empty() {
        text.push_str("  (expected: what the applied migrations make; found: the live database)\n");
    }
    for difference in &found.differences {
        text.push_str(&format!("{difference}\n"));
    }
    if found.is_clean() {
        text.push_str(&format!(
            "no drift: {live} has exactly the schema its {} applied migration(s) make\n",
            found.applied
        ));
    } else {
        text.push_str(&format!(
            "drift: {live} differs from what its {} applied migration(s) make in {} object(s)\n",
            found.applied,
            found.differences.len() + found.unknown_applied.len()
        ));
    }
    text
}

impl Place {
    /// The given scratch database, a throwaway cluster, or a scratch database on `server`;
    /// a throwaway cluster when there is no server.
    fn open(place: Where<'_>, server: Option<&DatabaseUrl>) -> Result<Place, Failure> {
        if let Some(url) = place.scratch_url {
            return Ok(Place::Given(
                DatabaseUrl::parse(url)
                    .context("--scratch-url")
                    .map_err(Failure::usage)?,
            ));
        }
        match server {
            Some(server) if !place.throwaway_cluster => Ok(Place::Scratch(
                ScratchDatabase::create(server).map_err(Failure::usage)?,
            )),
            _ => Place::throwaway(),
        }
    }

    fn throwaway() -> Result<Place, Failure> {
        let binaries = PgBinaries::discover()
            .context("a throwaway cluster needs the PostgreSQL server binaries")
            .map_err(Failure::usage)?;
        let mut options = ClusterOptions::default();
        if binaries.has_library("pg_stat_statements") {
            options = options.preload("pg_stat_statements");
        }
        let cluster = Cluster::start(options)
            .context("starting a throwaway cluster")
            .map_err(Failure::usage)?;
        cluster
            .create_database("pgops_check")
            .context("creating the check database")
            .map_err(Failure::usage)?;
        let url = DatabaseUrl::parse(&cluster.url("pgops_check")).map_err(Failure::usage)?;
        Ok(Place::Throwaway {
            cluster: Box::new(cluster),
            url,
        })
    }

    fn url(&self) -> &DatabaseUrl {
        match self {
            Place::Given(url) | Place::Throwaway { url, .. } => url,
            Place::Scratch(db) => db.url(),
        }
    }

    fn connect(&self) -> Result<PgConnection, Failure> {
        scratch::connect(self.url()).map_err(Failure::usage)
    }

    fn describe(&self) -> String {
        match self {
            Place::Given(url) => format!("the given database {url}"),
            Place::Scratch(db) => format!(
                "scratch database {} (created and dropped) on {}",
                db.name(),
                db.url().server()
            ),
            Place::Throwaway { cluster, .. } => {
                format!("a throwaway PostgreSQL {} cluster", cluster.major_version())
            }
        }
    }

    /// An error that stops the check or drift, classified like every `pgops migrate` error,
    /// never with a password.
    fn fail(&self, e: MigrateError) -> Failure {
        crate::migrate::scrubbed(self.url(), crate::migrate::classify(e))
    }
}
