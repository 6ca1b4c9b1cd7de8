//! Four of the tasks an operator does from the docs alone, done here with only the commands
//! and files the docs show, on a `cargo xtask dev` stack (the CI one needs only the binary):
//!
//! - schedule nightly S3 backups with WAL archiving and retention, then restore to ten
//!   minutes ago (`docs/database/operations.md#schedule`, the roles of
//!   `docs/database/privileges.md`);
//! - find what cost the most in the last hour and test an index for it
//!   (`docs/database/query-optimization.md`);
//! - wire the endpoint into Prometheus with the alerts (`docs/database/monitoring.md`);
//! - add the lint and a rollback test to a service's CI (`docs/database/migrations.md`).
//!
//! The fifth, adding the pool and router to an axum service, is `examples/axum-service` and
//! its own test. What the docs install under `/etc` and `/usr/local/bin` goes to a scratch
//! directory and the stack's `bin/pgops` instead; `systemctl` lines are left out (no init
//! system here: units are checked with `systemd-analyze verify`, then their commands run as
//! their `User=` with their `EnvironmentFile=`); everything else runs as written, cron lines
//! under `env -i` as cron runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{Block, Ports, Stack, psql_value, stack_dir, stack_env, text};
use nix::sys::signal::Signal;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The fenced blocks of a page of the repository.
fn blocks(page: &str) -> Vec<Block> {
    common::blocks(&fs::read_to_string(root().join(page)).unwrap())
}

/// The single block of `page` whose text contains `marker`.
fn block_with(page: &str, marker: &str) -> Block {
    let mut found: Vec<Block> = blocks(page)
        .into_iter()
        .filter(|b| b.text.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "{page}: one block with {marker:?}");
    found.pop().unwrap()
}

/// The files a page shows whole: blocks whose first line is `# /path`.
fn files(page: &str, under: &str) -> Vec<(String, String)> {
    blocks(page)
        .into_iter()
        .filter_map(|b| {
            let first = b.text.lines().next()?.strip_prefix("# ")?.trim().to_owned();
            first.starts_with(under).then_some((first, b.text))
        })
        .collect()
}

/// The `KEY` names of a here-document `cat > FILE <<'ENV' ... ENV` in a block.
fn heredoc_keys(block: &str) -> Vec<String> {
    block
        .lines()
        .skip_while(|l| !l.contains("<<'ENV'"))
        .skip(1)
        .take_while(|l| l.trim() != "ENV")
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// Paths the docs use on a real host, and where they are here.
struct Host {
    scratch: PathBuf,
    pgops: PathBuf,
    bindir: PathBuf,
    is_root: bool,
}

impl Host {
    fn new(scratch: &Path, stack_dir: &Path) -> Host {
        fs::create_dir_all(scratch).unwrap();
        fs::set_permissions(scratch, fs::Permissions::from_mode(0o1777)).unwrap();
        Host {
            scratch: scratch.to_path_buf(),
            pgops: stack_dir.join("bin").join("pgops"),
            bindir: pgops_testkit::PgBinaries::discover()
                .unwrap()
                .bindir()
                .to_path_buf(),
            is_root: nix::unistd::Uid::effective().is_root(),
        }
    }

    /// A documented text with the host's paths put here.
    fn local(&self, text: &str) -> String {
        text.replace("/usr/local/bin/pgops", &self.pgops.display().to_string())
            .replace("/etc/pgops/", &format!("{}/", self.scratch.display()))
            .replace(
                "/etc/prometheus/",
                &format!("{}/prometheus/", self.scratch.display()),
            )
            .replace(
                "/var/lib/postgresql/pitr",
                &self.scratch.join("pitr").display().to_string(),
            )
    }

    /// A file the docs say to write, here, readable by the server's OS user (its real mode
    /// is the doc's `install` line; here the scratch directory stands for /etc).
    fn write(&self, name: &str, lines: &[(&str, String)]) -> PathBuf {
        let path = self.scratch.join(name);
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            self.pgops.parent().unwrap().display(),
            self.bindir.display()
        )
    }

    /// Runs a documented shell block (its `systemctl` lines left out) with `bash -euo
    /// pipefail`, `env` and nothing else of ours; panics with the output when it fails.
    fn run_block(&self, page: &str, block: &Block, env: &[(&str, String)]) -> String {
        let script: String = self
            .local(&block.text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("systemctl "))
            .map(|l| format!("{l}\n"))
            .collect();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c"])
            .arg(format!("exec 2>&1\n{script}"))
            .env_clear()
            .env("PATH", self.path_var())
            .env("HOME", &self.scratch)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let shown = text(&out.stdout);
        assert!(
            out.status.success(),
            "{page}:{} failed ({}):\n{shown}",
            block.line,
            out.status
        );
        shown
    }

    /// Runs `command` through `/bin/sh -c` as `user` with exactly `env` (`env -i`), as cron
    /// and systemd run it.
    fn run_as(&self, user: &str, command: &str, env: &[(String, String)]) -> Output {
        let mut cmd = if self.is_root && user != "root" {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--", "env", "-i"]);
            cmd
        } else {
            let mut cmd = Command::new("env");
            cmd.arg("-i");
            cmd
        };
        cmd.args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(["/bin/sh", "-c", command]);
        cmd.current_dir(&self.scratch);
        cmd.output().unwrap()
    }

    /// Every line of a ```cron block (`/etc/cron.d` form: five time fields, the user, the
    /// command), run as cron runs it: its user, `/bin/sh`, and cron's own environment only.
    fn run_cron(&self, page: &str, block: &Block) -> Vec<String> {
        let mut outputs = Vec::new();
        for (n, line) in block.text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() > 6, "{page}:{}: {line}", block.line + n + 1);
            for field in &fields[..5] {
                assert!(
                    field
                        .chars()
                        .all(|c| c.is_ascii_digit() || ",-*/".contains(c)),
                    "{page}:{}: {field} is not a cron time field",
                    block.line + n + 1
                );
            }
            let user = fields[5];
            // The command is the rest of the line after the sixth field, as cron takes it.
            let mut rest = line;
            for field in &fields[..6] {
                rest = rest.trim_start().strip_prefix(field).unwrap();
            }
            let command = self.local(rest.trim());
            let home = if user == "root" {
                "/root"
            } else {
                "/var/lib/postgresql"
            };
            let cron_env = [
                ("HOME", home),
                ("LOGNAME", user),
                ("SHELL", "/bin/sh"),
                ("PATH", "/usr/bin:/bin"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
            let out = self.run_as(user, &command, &cron_env);
            assert!(
                out.status.success(),
                "{page}:{}: the cron line failed ({}):\n{}{}",
                block.line + n + 1,
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
            outputs.push(text(&out.stdout));
        }
        outputs
    }
}

/// The `Key=value` settings of a unit file's sections, every occurrence in order.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Writes the units a page shows into `dir`, checks them with `systemd-analyze verify`, and
/// refuses what systemd would misread: a `#` after a value (systemd has no inline comments).
fn verify_units(host: &Host, page: &str, dir: &Path) -> BTreeMap<String, String> {
    fs::create_dir_all(dir).unwrap();
    let mut units = BTreeMap::new();
    for (path, text) in files(page, "/etc/systemd/system/") {
        let name = Path::new(&path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (key, value) in unit_settings(&text) {
            assert!(
                !value.contains(" #") && !value.contains("\t#"),
                "{page}: {name}: {key}={value}: systemd has no inline comments"
            );
        }
        let local = host.local(&text);
        fs::write(dir.join(&name), &local).unwrap();
        units.insert(name, local);
    }
    assert!(!units.is_empty(), "{page} shows no unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.keys().map(|n| dir.join(n)))
        .output()
        .expect("systemd-analyze (Debian: systemd)");
    assert!(
        out.status.success(),
        "{page}: systemd-analyze verify:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    units
}

/// Runs a service unit's `ExecStart=` and `ExecStartPost=` as systemd would: as its `User=`,
/// with exactly the variables of its `EnvironmentFile=`.
fn run_service(host: &Host, name: &str, unit: &str) -> String {
    let settings = unit_settings(unit);
    let get = |key: &str| {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let user = get("User").pop().unwrap_or_else(|| "root".into());
    let mut env: Vec<(String, String)> = vec![("PATH".into(), "/usr/bin:/bin".into())];
    for file in get("EnvironmentFile") {
        let file = file.trim_start_matches('-');
        for line in fs::read_to_string(file).unwrap().lines() {
            if let Some((k, v)) = line.split_once('=')
                && !line.trim_start().starts_with('#')
            {
                env.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    let mut shown = String::new();
    for command in get("ExecStart").into_iter().chain(get("ExecStartPost")) {
        let out = host.run_as(&user, &command, &env);
        assert!(
            out.status.success(),
            "{name}: {command} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        // A physical backup warns when its WAL did not reach the archive in time.
        assert!(
            !text(&out.stderr).contains("WARN"),
            "{name}: {command}:\n{}",
            text(&out.stderr)
        );
        shown.push_str(&text(&out.stdout));
    }
    shown
}

/// The roles of `docs/database/privileges.md`, created on the stack as its SQL says, with
/// its `pg_hba.conf` lines (for 127.0.0.1 instead of the page's network).
fn create_roles(port: u16, stack_dir: &Path) {
    let hba = blocks("docs/database/privileges.md")
        .into_iter()
        .find(|b| b.info == "text pg_hba")
        .expect("privileges.md shows its pg_hba.conf lines");
    let lines: String = hba
        .text
        .lines()
        .filter(|l| l.starts_with("host"))
        .map(|l| format!("{}\n", l.replace("10.0.0.0/24", "127.0.0.1/32")))
        .collect();
    assert!(lines.contains("replication  pgops_backup"), "{lines}");
    let conf = stack_dir.join("primary").join("data").join("pg_hba.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str(&lines);
    fs::write(&conf, text).unwrap();
    use diesel::{Connection, connection::SimpleConnection};
    let mut admin =
        diesel::PgConnection::establish(&format!("postgres://postgres@127.0.0.1:{port}/pgops_dev"))
            .unwrap();
    let sql: Vec<Block> = blocks("docs/database/privileges.md")
        .into_iter()
        .filter(|b| b.info == "sql privileges")
        .collect();
    assert!(sql.len() >= 3, "privileges.md shows its SQL");
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    for block in sql {
        admin
            .batch_execute(&block.text.replace("DATABASE app", "DATABASE pgops_dev"))
            .unwrap_or_else(|e| panic!("privileges.md:{}: {e}", block.line));
    }
    // The dev stack wants a password from every role but its superuser over TCP.
    admin
        .batch_execute(&format!(
            "ALTER ROLE pgops_monitor PASSWORD '{MONITOR_PASSWORD}';
             ALTER ROLE pgops_backup PASSWORD '{BACKUP_PASSWORD}';"
        ))
        .unwrap();
}

const MONITOR_PASSWORD: &str = "monitor-Pw-4c1e";
const BACKUP_PASSWORD: &str = "backup-Pw-9a7d";

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nightly_s3_backups_with_wal_archiving_then_a_restore_to_ten_minutes_ago() {
    const PAGE: &str = "docs/database/operations.md";
    let (tmp, dir) = stack_dir();
    let ports = Ports::free();
    let stack = Stack::start(&dir, &ports);
    let host = Host::new(&tmp.path().join("etc"), &dir);
    let s3 = pgops_testkit::S3Server::start().unwrap();
    create_roles(ports.primary, &dir);

    // 1. The environment file, with the keys the page lists and this S3 server's endpoint.
    let env_block = block_with(PAGE, "cat > /etc/pgops/pgops.env");
    assert_eq!(
        heredoc_keys(&env_block.text),
        [
            "DATABASE_URL",
            "PGOPS_REPO",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION"
        ]
    );
    let mut lines = vec![
        (
            "DATABASE_URL",
            format!(
                "postgresql://pgops_backup:{BACKUP_PASSWORD}@127.0.0.1:{}/pgops_dev",
                ports.primary
            ),
        ),
        ("PGOPS_REPO", "s3://backups/app".to_owned()),
    ];
    lines.extend(s3.env());
    host.write("pgops.env", &lines);

    // 2. WAL archiving into S3, the first base backup, the archive checked.
    let admin_url = format!("postgresql://postgres@127.0.0.1:{}/postgres", ports.primary);
    let setup = block_with(PAGE, "pgops wal setup --env-file");
    let shown = host.run_block(PAGE, &setup, &[("ADMIN_URL", admin_url.clone())]);
    assert!(shown.contains("applied"), "{shown}");
    assert_eq!(
        psql_value(ports.primary, "current_setting('archive_timeout')"),
        "5min"
    );

    // 3. The units, verified, then run; and the same schedule from cron.
    let units = verify_units(&host, PAGE, &tmp.path().join("units"));
    assert_eq!(
        units.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "pgops-backup-drill.service",
            "pgops-backup-drill.timer",
            "pgops-backup-logical.service",
            "pgops-backup-logical.timer",
            "pgops-backup-physical.service",
            "pgops-backup-physical.timer",
        ]
    );
    for name in [
        "pgops-backup-physical.service",
        "pgops-backup-logical.service",
        "pgops-backup-drill.service",
    ] {
        run_service(&host, name, &units[name]);
    }
    let cron = blocks(PAGE)
        .into_iter()
        .find(|b| b.info == "cron")
        .expect("the schedule's cron lines");
    let outputs = host.run_cron(PAGE, &cron);
    assert_eq!(outputs.len(), 3);
    let pgops_env: Vec<(String, String)> = lines
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .chain([("PATH".to_owned(), "/usr/bin:/bin".to_owned())])
        .collect();
    let listed = host.run_as(
        "postgres",
        &format!("{} backup list --json", host.pgops.display()),
        &pgops_env,
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["manifest"]["kind"].as_str().unwrap())
        .collect();
    // Three physical backups and two logical ones were taken today; retention per kind
    // (`--keep-daily`) kept the newest of today of each.
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!((count("physical"), count("logical")), (1, 1), "{kinds:?}");

    // 4. Ten minutes ago, in seconds here: a row before the target, a row after it, the WAL
    // archived, then the page's restore to AGO ago.
    let exec = |sql: &str| psql_value(ports.primary, sql);
    {
        use diesel::{Connection, connection::SimpleConnection};
        let mut conn = diesel::PgConnection::establish(&format!(
            "postgres://postgres@127.0.0.1:{}/pgops_dev",
            ports.primary
        ))
        .unwrap();
        conn.batch_execute(
            "CREATE TABLE pitr_marks (mark text PRIMARY KEY, at timestamptz DEFAULT now());
             INSERT INTO pitr_marks (mark) VALUES ('before');",
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let target = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        conn.batch_execute("INSERT INTO pitr_marks (mark) VALUES ('after')")
            .unwrap();
        let segment = exec("pg_walfile_name(pg_current_wal_lsn())");
        conn.batch_execute("SELECT pg_switch_wal()").unwrap();
        wait_for(
            "the WAL after the target to be archived",
            Duration::from_secs(60),
            || exec("(SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver)") >= segment,
        );
        let ago = target.elapsed().as_secs();
        let restore = block_with(PAGE, "--target-time \"$target\"");
        let shown = host.run_block(PAGE, &restore, &[("AGO", format!("{ago} seconds"))]);
        assert!(shown.contains("pitr"), "{shown}");
    }

    // Started as the page says, it replays from S3 (its restore_command reads the
    // environment file) to the target and pauses: the row before is there, the one after
    // is not.
    let pitr = host.scratch.join("pitr");
    let port = pgops_pg::free_port().unwrap();
    let pg_ctl = host.bindir.join("pg_ctl");
    let as_postgres = |args: &[&str]| {
        let mut cmd = if host.is_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            cmd
        } else {
            Command::new(&pg_ctl)
        };
        cmd.args(args).current_dir("/").output().unwrap()
    };
    if host.is_root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&pitr)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let log = host.scratch.join("pitr.log");
    let started = as_postgres(&[
        "-D",
        pitr.to_str().unwrap(),
        "-l",
        log.to_str().unwrap(),
        "-w",
        "-t",
        "300",
        "-o",
        &format!(
            "-p {port} -c archive_mode=off -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        ),
        "start",
    ]);
    let stop = || {
        as_postgres(&["-D", pitr.to_str().unwrap(), "-m", "immediate", "stop"]);
    };
    if !started.status.success() {
        stop();
        panic!(
            "the restored copy did not start: {}\n{}",
            text(&started.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let copy = |sql: &str| -> String {
        use diesel::{Connection, RunQueryDsl, dsl::sql as raw, sql_types::Text};
        let mut conn = diesel::PgConnection::establish(&format!(
            "postgres://postgres@127.0.0.1:{port}/pgops_dev"
        ))
        .unwrap();
        diesel::select(raw::<Text>(&format!("({sql})::text")))
            .get_result(&mut conn)
            .unwrap()
    };
    let paused = std::panic::catch_unwind(|| {
        wait_for(
            "recovery to pause at the target",
            Duration::from_secs(120),
            || copy("pg_is_wal_replay_paused()") == "true",
        );
        copy("(SELECT string_agg(mark, ',' ORDER BY mark) FROM pitr_marks)")
    });
    stop();
    let marks = paused.unwrap_or_else(|_| {
        panic!(
            "recovery did not pause: {}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(marks, "before", "restored to between the two rows");

    drop(s3);
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
}

#[test]
fn last_hours_costliest_query_and_an_index_for_it() {
    const PAGE: &str = "docs/database/query-optimization.md";
    let (tmp, dir) = stack_dir();
    let ports = Ports::free();
    let stack = Stack::start(&dir, &ports);
    let host = Host::new(&tmp.path().join("etc"), &dir);
    create_roles(ports.primary, &dir);
    let database_url = stack_env(&dir)
        .into_iter()
        .find_map(|(k, v)| (k == "DATABASE_URL").then_some(v))
        .unwrap();

    // The snapshot cron line, as the monitoring role (its own schema holds the snapshots).
    host.write(
        "health.env",
        &[(
            "DATABASE_URL",
            format!(
                "postgresql://pgops_monitor:{MONITOR_PASSWORD}@127.0.0.1:{}/pgops_dev",
                ports.primary
            ),
        )],
    );
    let crons: Vec<Block> = blocks(PAGE)
        .into_iter()
        .filter(|b| b.info == "cron")
        .collect();
    assert!(!crons.is_empty());
    for cron in &crons {
        host.run_cron(PAGE, cron);
    }
    assert_eq!(
        psql_value(
            ports.primary,
            "(SELECT count(*) FROM pgops_monitor.pgops_stat_snapshots)"
        ),
        crons.len().to_string(),
        "the snapshots are in the monitoring role's schema"
    );

    // The last "hour": lookups by entity, each a sequential scan of 50,000 rows.
    {
        use diesel::{Connection, connection::SimpleConnection};
        let mut app = diesel::PgConnection::establish(&database_url).unwrap();
        for id in 0..150 {
            app.batch_execute(&format!(
                "SELECT id, action, created_at FROM audit_logs WHERE entity_type = 'patient' AND entity_id = {id}"
            ))
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let steps: Vec<Block> = blocks(PAGE)
        .into_iter()
        .filter(|b| b.info == "sh task-slow-queries")
        .collect();
    assert_eq!(steps.len(), 4, "the page's four steps");
    let mut script = String::new();
    for step in &steps {
        script.push_str(&step.text);
    }
    let all = host.run_block(
        PAGE,
        &Block {
            info: "sh".into(),
            line: steps[0].line,
            text: script,
        },
        &[
            ("DATABASE_URL", database_url.clone()),
            (
                "MONITOR_URL",
                format!(
                    "postgresql://pgops_monitor:{MONITOR_PASSWORD}@127.0.0.1:{}/pgops_dev",
                    ports.primary
                ),
            ),
            ("WINDOW", "1s".to_owned()),
        ],
    );
    // The costliest statement was the lookup; its plan read the table, what-if found the
    // index, and after building it the plan uses it.
    assert!(
        all.contains("SELECT id, action, created_at FROM audit_logs WHERE entity_type = $1 AND entity_id = $2"),
        "{all}"
    );
    assert!(
        all.contains("$1 text = 'patient'\n$2 bigint = '42'"),
        "{all}"
    );
    let scan = all.find("Seq Scan on public.audit_logs").expect(&all);
    let index = all.find("using audit_logs_entity_idx").expect(&all);
    assert!(scan < index, "{all}");
    assert!(all.contains("(used"), "what-if: {all}");

    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
}

#[test]
fn the_endpoint_wired_into_prometheus_with_every_alert_rule() {
    const PAGE: &str = "docs/database/monitoring.md";
    let (tmp, dir) = stack_dir();
    let ports = Ports::free();
    let stack = Stack::start(&dir, &ports);
    let host = Host::new(&tmp.path().join("etc"), &dir);
    create_roles(ports.primary, &dir);

    // The endpoint's environment file and unit, as the monitoring role, with a token.
    let env_block = block_with(PAGE, "cat > /etc/pgops/health.env");
    assert_eq!(
        heredoc_keys(&env_block.text),
        [
            "DATABASE_URL",
            "DATABASE_REPLICA_URLS",
            "PGOPS_REPO",
            "PGOPS_METRICS_TOKEN"
        ]
    );
    let token = "a-long-random-string-for-the-test";
    // A repository the service's user (postgres) wrote, as the backup units do.
    let repo = format!("file://{}", host.scratch.join("repo").display());
    let backup = host.run_as(
        "postgres",
        &format!("{} backup create --repo {repo}", host.pgops.display()),
        &[
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            (
                "DATABASE_URL".to_owned(),
                format!(
                    "postgresql://postgres@127.0.0.1:{}/pgops_dev",
                    ports.primary
                ),
            ),
        ],
    );
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let listen_port = pgops_pg::free_port().unwrap();
    host.write(
        "health.env",
        &[
            (
                "DATABASE_URL",
                format!(
                    "postgresql://pgops_monitor:{MONITOR_PASSWORD}@127.0.0.1:{}/pgops_dev",
                    ports.primary
                ),
            ),
            (
                "DATABASE_REPLICA_URLS",
                format!(
                    "postgresql://pgops_monitor:{MONITOR_PASSWORD}@127.0.0.1:{}/pgops_dev",
                    ports.primary + 1
                ),
            ),
            ("PGOPS_REPO", repo.clone()),
            ("PGOPS_METRICS_TOKEN", token.to_owned()),
        ],
    );
    let units = verify_units(&host, PAGE, &tmp.path().join("units"));
    let unit = units["pgops-health.service"].replace(
        "--listen 0.0.0.0:9187",
        &format!("--listen 127.0.0.1:{listen_port}"),
    );
    let serve = std::thread::spawn({
        let unit = unit.clone();
        let host = Host::new(&host.scratch, &dir);
        move || {
            // ExecStart runs until stopped: run it in the background as the unit would.
            let settings = unit_settings(&unit);
            let command = settings
                .iter()
                .find(|(k, _)| k == "ExecStart")
                .unwrap()
                .1
                .clone();
            let mut env: Vec<(String, String)> = vec![("PATH".into(), "/usr/bin:/bin".into())];
            for line in fs::read_to_string(host.scratch.join("health.env"))
                .unwrap()
                .lines()
            {
                let (k, v) = line.split_once('=').unwrap();
                env.push((k.to_owned(), v.to_owned()));
            }
            host.run_as("postgres", &format!("exec {command}"), &env)
        }
    });
    let metrics = format!("http://127.0.0.1:{listen_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_err() {
        if serve.is_finished() {
            let out = serve.join().unwrap();
            panic!(
                "pgops-health.service stopped ({}):\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the endpoint never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        common::get(&format!("http://127.0.0.1:{listen_port}/health")).0,
        200
    );
    assert_eq!(common::get(&metrics).0, 401, "the token is required");

    // The Prometheus host (its /etc/prometheus exists): the token file, the rules, the
    // configuration, checked, then run.
    fs::create_dir_all(host.scratch.join("prometheus")).unwrap();
    let install = block_with(PAGE, "printf '%s'");
    let script = host
        .local(&install.text)
        .replace("change-me-to-a-long-random-string", token)
        .replace(" -o root -g prometheus", "")
        .replace(
            "docs/monitoring/",
            &format!("{}/docs/monitoring/", root().display()),
        );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, config) = files(PAGE, "/etc/prometheus/prometheus.yml").pop().unwrap();
    let config = host
        .local(&config)
        .replace("db1.internal:9187", &format!("127.0.0.1:{listen_port}"));
    let config_path = host.scratch.join("prometheus").join("prometheus.yml");
    fs::write(&config_path, &config).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .expect("promtool (Debian: prometheus)");
    assert!(
        check.status.success(),
        "promtool check config:\n{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let prometheus_dir = host.scratch.join("prometheus");
    let in_dir = |name: &str| format!("{{dir}}/{name}");
    let config = config
        .replace(
            &prometheus_dir.join("pgops-token").display().to_string(),
            &in_dir("pgops-token"),
        )
        .replace(
            &prometheus_dir
                .join("rules/pgops-alerts.yml")
                .display()
                .to_string(),
            &in_dir("pgops-alerts.yml"),
        )
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    let token_file = prometheus_dir.join("pgops-token");
    let rules_file = prometheus_dir.join("rules/pgops-alerts.yml");
    let prometheus = pgops_testkit::Prometheus::start_with_config(
        &config,
        &[
            ("pgops-token", token_file.as_path()),
            ("pgops-alerts.yml", rules_file.as_path()),
        ],
    )
    .unwrap();
    let rules = prometheus.rule_names().unwrap();
    assert!(rules.len() >= 20, "{rules:?}");
    assert!(rules.iter().any(|r| r == "PostgresDown"), "{rules:?}");
    wait_for(
        "Prometheus to scrape the endpoint",
        Duration::from_secs(60),
        || {
            prometheus
                .query("up{job=\"pgops\"}")
                .unwrap()
                .iter()
                .any(|(_, v)| *v == 1.0)
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let up = loop {
        let up = prometheus
            .query("pg_up")
            .unwrap()
            .iter()
            .any(|(_, v)| *v == 1.0);
        if up || Instant::now() > deadline {
            break up;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(prometheus);
    let scraped = if up {
        String::new()
    } else {
        ureq::get(&metrics)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("up") || l.contains("error") || l.contains("success"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let _ = Command::new("pkill")
        .args([
            "-f",
            "--",
            &format!("health serve --listen 127.0.0.1:{listen_port}"),
        ])
        .status();
    let served = serve.join().unwrap();
    assert!(
        up,
        "the database never showed up through Prometheus; /metrics:\n{scraped}\nthe endpoint said:\n{}",
        text(&served.stderr)
    );
    assert_eq!(stack.stop(Signal::SIGTERM), Some(0));
}

#[test]
fn a_services_ci_lints_and_round_trips_its_migrations() {
    const PAGE: &str = "docs/database/migrations.md";
    // No database: the runner has only the binary (installed as `pgops`, as `cargo xtask dev`
    // installs it) and the server packages for the throwaway cluster.
    let (tmp, dir) = stack_dir();
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(
        env!("CARGO_BIN_EXE_pgops-tasks"),
        dir.join("bin").join("pgops"),
    )
    .unwrap();
    let host = Host::new(&tmp.path().join("etc"), &dir);
    let workflow = blocks(PAGE)
        .into_iter()
        .find(|b| b.info == "yaml task-ci")
        .expect("the CI workflow");
    // The workflow's pgops steps, run in a checkout of a service: its migrations/.
    let checkout = tmp.path().join("service");
    fs::create_dir_all(&checkout).unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(root().join("migrations"))
        .arg(&checkout)
        .status()
        .unwrap();
    assert!(copy.success());
    let steps: Vec<String> = workflow
        .text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- run: "))
        .filter(|command| command.starts_with("pgops "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        steps,
        [
            "pgops migrate lint --dir migrations",
            "pgops migrate check --dir migrations --throwaway-cluster"
        ]
    );
    for step in &steps {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", step])
            .current_dir(&checkout)
            .env("PATH", host.path_var())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{step}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // And a broken rollback fails the step, as CI must.
    let newest = fs::read_dir(checkout.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    fs::write(newest.join("down.sql"), "SELECT 1;\n").unwrap();
    let out = Command::new("bash")
        .args(["-c", &steps[1]])
        .current_dir(&checkout)
        .env("PATH", host.path_var())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

/// The pages whose units, cron lines and scrape configurations the tests above run.
const RUN_HERE: [&str; 3] = [
    "docs/database/operations.md",
    "docs/database/query-optimization.md",
    "docs/database/monitoring.md",
];

#[test]
fn every_unit_cron_line_and_scrape_config_in_the_docs_is_on_a_page_run_here() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut pages = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut pages);
    let mut elsewhere = Vec::new();
    for page in pages {
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        for block in blocks(&name) {
            let scheduled = block.info == "cron"
                || block.text.contains("[Unit]")
                || block.text.contains("[Timer]")
                || block.text.contains("scrape_configs:");
            if scheduled && !RUN_HERE.contains(&name.as_str()) {
                elsewhere.push(format!("{name}:{}", block.line));
            }
        }
    }
    assert!(
        elsewhere.is_empty(),
        "units, cron lines and scrape configurations go on a page these tests run: {elsewhere:?}"
    );
}
