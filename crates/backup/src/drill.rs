//! Restore drills: the whole point-in-time restore into a throwaway server on a free port, a
//! probe query, and the time it took (the recovery time objective you can actually meet),
//! recorded in the repository.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection, RunQueryDsl};
use pgops_pg::ServerUser;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, physical, repo::Store};

/// A drill's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    /// When it started.
    pub at: DateTime<Utc>,
    /// The base backup restored.
    pub backup: String,
    /// The target, as asked.
    pub target: String,
    /// Seconds from the start of the drill to the probe's answer.
    pub rto_seconds: f64,
    /// The last transaction replayed (the point actually reached).
    pub reached: Option<String>,
    /// The probe query and its answer.
    pub probe: String,
    /// The answer.
    pub answer: Option<String>,
    /// The drill succeeded.
    pub ok: bool,
    /// What went wrong.
    pub error: Option<String>,
}

/// Key prefix of drill records.
pub const PREFIX: &str = "drills/";
/// Key prefix of what an encrypted repository keeps of a drill encrypted: the probe, its
/// answer and the error.
pub const DETAIL_PREFIX: &str = "drill-details/";

/// Runs `pg_ctl` as the server's OS user (never root, which PostgreSQL refuses).
fn pg_ctl(user: &ServerUser, args: &[&str]) -> Result<std::process::Output> {
    let program = pgops_pg::find_program("pg_ctl")?;
    user.command(&program, Path::new("/"))
        .args(args)
        .output()
        .map_err(Error::io("running pg_ctl"))
}

/// Runs a drill: restore to `target` (latest when `None`) into a throwaway server, wait for
/// recovery to end, run `probe` as `user`, stop and remove the server, record the result.
pub fn run(
    store: &dyn Store,
    repo_url: &str,
    pgops: &Path,
    target: &physical::Target,
    probe: &str,
    user: &str,
) -> Result<Drill> {
    let started = Instant::now();
    let at = Utc::now();
    let work = tempfile::Builder::new()
        .prefix("pgops-drill-")
        .tempdir()
        .map_err(Error::io("creating the drill directory"))?;
    let data = work.path().join("data");
    let socket = work.path().join("sock");
    fs::create_dir(&socket).map_err(Error::io("creating the socket directory"))?;
    let mut drill = Drill {
        at,
        backup: String::new(),
        target: format!("{target:?}"),
        rto_seconds: 0.0,
        reached: None,
        probe: probe.to_owned(),
        answer: None,
        ok: false,
        error: None,
    };
    let run_as = ServerUser::detect()?;
    // The restored server's restore_command runs pgops as the server's user.
    run_as.check_can_run(pgops)?;
    let outcome = (|| -> Result<(String, Option<String>, String)> {
        let restored = physical::restore_to_dir(
            store,
            repo_url,
            pgops,
            &physical::Recovery::to(target.clone()),
            &data,
        )?;
        let port = pgops_pg::free_port()?;
        let conf = data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&conf).unwrap_or_default();
        text.push_str(&format!(
            "\n# pgops backup drill\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n",
            socket.display()
        ));
        fs::write(&conf, text).map_err(Error::io("writing the drill's settings"))?;
        run_as.own_tree(work.path())?;
        let log = work.path().join("server.log");
        let out = pg_ctl(
            &run_as,
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "600",
                "start",
            ],
        )?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(Error::Invalid(format!(
                "the drill's server did not start: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("; ")
            )));
        }
        let url = format!(
            "postgres://{user}@/postgres?host={}&port={port}",
            socket.display()
        );
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut conn = loop {
            match PgConnection::establish(&url) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the drill's server");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "connecting to the drill's server: {e}"
                    )));
                }
            }
        };
        #[derive(Deserialize)]
        struct State {
            in_recovery: bool,
            reached: Option<String>,
        }
        loop {
            let state: State = pgops_pg::rows::row(
                &mut conn,
                "SELECT pg_is_in_recovery() AS in_recovery, pg_last_xact_replay_timestamp()::text AS reached",
                "reading the recovery state",
            )?;
            if !state.in_recovery {
                #[derive(diesel::QueryableByName)]
                struct Answer {
                    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
                    answer: Option<String>,
                }
                let answer: Answer = diesel::sql_query(format!("SELECT ({probe})::text AS answer"))
                    .get_result(&mut conn)
                    .map_err(Error::db(format!("the probe {probe:?}")))?;
                return Ok((
                    restored.backup,
                    state.reached,
                    answer.answer.unwrap_or_default(),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(
                    "recovery did not finish within 10 minutes".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    drill.rto_seconds = started.elapsed().as_secs_f64();
    if data.join("postmaster.pid").exists() {
        let _ = pg_ctl(
            &run_as,
            &[
                "-D",
                &data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
    match outcome {
        Ok((backup, reached, answer)) => {
            drill.backup = backup;
            drill.reached = reached;
            drill.answer = Some(answer);
            drill.ok = true;
        }
        Err(e) => drill.error = Some(pgops_pg::report(&e)),
    }
    let stamp = at.format("%Y%m%dT%H%M%S%3fZ");
    let mut kept = drill.clone();
    // The probe names tables, its answer is data, and an error can quote a row: in an
    // encrypted repository they are stored encrypted, and the record points there.
    #[derive(Serialize)]
    struct Detail<'a> {
        probe: &'a str,
        answer: &'a Option<String>,
        error: &'a Option<String>,
    }
    let detail = Detail {
        probe: &drill.probe,
        answer: &drill.answer,
        error: &drill.error,
    };
    let detail_key = format!("{DETAIL_PREFIX}{stamp}.json");
    if let Some(key) = crate::crypto::store_private_json(store, &detail_key, &detail)? {
        let there = format!("(encrypted in {key})");
        kept.probe = there.clone();
        kept.answer = kept.answer.map(|_| there.clone());
        kept.error = kept.error.map(|_| format!("the drill failed {there}"));
    }
    let json = serde_json::to_vec_pretty(&kept).map_err(|e| Error::Invalid(e.to_string()))?;
    store.put_bytes(&format!("{PREFIX}{stamp}.json"), &json)?;
    Ok(drill)
}

/// The newest drill record, if any.
pub fn last(store: &dyn Store) -> Result<Option<Drill>> {
    let Some(key) = store
        .list(PREFIX)?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .max()
    else {
        return Ok(None);
    };
    Ok(store
        .get_bytes(&key)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}
