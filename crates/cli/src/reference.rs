//! `docs/reference.md`: every environment variable and `pgops.toml` key, generated from the
//! code (the command line's definitions, the pool's and router's key lists and profiles, the
//! linter's keys) plus the variables read outside the command line, listed in [`OTHER`]. A
//! test compares the page with [`markdown`] and scans the sources for variables it lacks;
//! `cargo xtask reference` writes it.

use std::fmt::Write as _;

use clap::CommandFactory;

/// Variables read outside the command line's definitions: (name, who reads it, what it does).
pub const OTHER: &[(&str, &str, &str)] = &[
    (
        "PGOPS_ENV",
        "the pool, `pgops pool`",
        "The environment whose pool profile applies: `development` (default), `test`, `staging` or `production`. `APP_ENV` is read when it is unset.",
    ),
    (
        "APP_ENV",
        "the pool, `pgops pool`",
        "Read as `PGOPS_ENV` when that is unset.",
    ),
    (
        "DATABASE_REPLICA_URLS",
        "the router, `pgops health`, `pgops pool`",
        "Replicas, comma-separated URLs.",
    ),
    (
        "DATABASE_READ_REPLICA_URL",
        "the router, `pgops health`, `pgops pool`",
        "One replica, when `DATABASE_REPLICA_URLS` is unset.",
    ),
    (
        "PGOPS_CONFIG",
        "the pool, `pgops pool`, `pgops migrate lint`",
        "The configuration file [default: `./pgops.toml` when it exists].",
    ),
    (
        "PGOPS_METRICS_TOKEN",
        "`pgops health serve`, `pgops_health::server::router`",
        "When set, `/` (the operator page), `/metrics` and `/ready` want `Authorization: Bearer <token>` or HTTP Basic with the token as the password; never on the command line.",
    ),
    (
        "PGOPS_MIGRATE_DATABASE_URL",
        "`pgops migrate`",
        "A direct (or session-pooled) URL for migrations when `DATABASE_URL` is marked transaction-pooled (`PGOPS_POOL_POOLER=transaction`): the advisory lock needs a session.",
    ),
    (
        "PGOPS_BACKUP_DATABASE_URL",
        "`pgops backup`, `pgops wal setup`",
        "A direct URL for backups when `DATABASE_URL` is marked transaction-pooled.",
    ),
    (
        "PGOPS_REPO_RECIPIENTS",
        "`pgops backup create`, `pgops wal push`",
        "Public age keys (`age1...`), comma- or line-separated: encrypt what is written.",
    ),
    (
        "PGOPS_REPO_RECIPIENTS_FILE",
        "`pgops backup create`, `pgops wal push`",
        "A file of public age keys, one per line.",
    ),
    (
        "PGOPS_REPO_IDENTITIES_FILE",
        "`pgops backup verify|restore|drill`, `pgops wal fetch`",
        "A file of secret age keys (`AGE-SECRET-KEY-1...`): the current one and every older one still needed.",
    ),
    (
        "PGOPS_REPO_IDENTITY",
        "`pgops backup verify|restore|drill`, `pgops wal fetch`",
        "One secret age key, when no file is given.",
    ),
    (
        "AWS_ACCESS_KEY_ID",
        "`s3://` repositories",
        "The access key.",
    ),
    (
        "AWS_SECRET_ACCESS_KEY",
        "`s3://` repositories",
        "The secret key.",
    ),
    (
        "AWS_REGION",
        "`s3://` repositories",
        "The region (`AWS_DEFAULT_REGION` is read when it is unset; default `us-east-1`).",
    ),
    (
        "AWS_DEFAULT_REGION",
        "`s3://` repositories",
        "Read as `AWS_REGION` when that is unset.",
    ),
    (
        "AWS_ENDPOINT_URL",
        "`s3://` repositories",
        "An S3-compatible endpoint (MinIO, Ceph, moto); `AWS_ENDPOINT` is read when it is unset.",
    ),
    (
        "AWS_ENDPOINT",
        "`s3://` repositories",
        "Read as `AWS_ENDPOINT_URL` when that is unset.",
    ),
    (
        "PGOPS_PG_BINDIR",
        "`pgops backup drill|restore`, `pgops migrate check --throwaway-cluster`, the test kit",
        "Where the PostgreSQL server programs are [default: `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`, `PATH`].",
    ),
    (
        "PGOPS_TEST_PORTS",
        "`pgops backup drill`, `pgops migrate check --throwaway-cluster`, the test kit",
        "The ports from which a server pgops starts takes a free one, as `<low>-<high>` within the default [default: `10000-19999`]. Processes that start servers side by side each take a part (`cargo xtask ci` gives one to each lane).",
    ),
    (
        "PGOPS_PG_USER",
        "`pgops backup drill`, `pgops migrate check --throwaway-cluster`, the test kit",
        "The OS user that runs a server pgops starts when it runs as root [default: `postgres`].",
    ),
];

/// The page.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every environment variable and `pgops.toml` key pgops reads. Generated from the code by \
         `cargo xtask reference`; a test fails when this page and the code disagree, and when \
         the sources read a variable this page lacks. Where a flag and a variable both exist, \
         the flag wins; for the pool and router, a variable wins over `pgops.toml`, which wins \
         over the environment's profile.\n\n",
    );
    flags_variables(&mut out);
    other_variables(&mut out);
    pool_keys(&mut out);
    router_keys(&mut out);
    lint_keys(&mut out);
    out
}

/// Variables that stand for a flag: one row per command that takes it (a flag given to an
/// area applies to all its verbs).
fn flags_variables(out: &mut String) {
    fn walk(command: &clap::Command, path: &str, rows: &mut Vec<(String, String, String)>) {
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let help = arg
                .get_help()
                .map(|h| h.to_string().replace('\n', " "))
                .unwrap_or_default();
            rows.push((
                env.to_string_lossy().into_owned(),
                format!("`{path} --{long}`"),
                help,
            ));
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), rows);
        }
    }
    let mut rows = Vec::new();
    walk(&crate::Cli::command(), "pgops", &mut rows);
    rows.sort();
    out.push_str(
        "## Variables that stand for a flag\n\n\
         A flag given to an area (`pgops backup --repo`) applies to each of its verbs.\n\n\
         | variable | flag | what it sets |\n|---|---|---|\n",
    );
    for (variable, flag, help) in &rows {
        let _ = writeln!(out, "| `{variable}` | {flag} | {} |", cell(help));
    }
    out.push('\n');
}

/// Text for a table cell: `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn other_variables(out: &mut String) {
    out.push_str(
        "## Variables without a flag\n\n\
         Secrets and settings that never go on a command line (where `ps` would show them), \
         and what the crates read in a service.\n\n\
         | variable | read by | what it sets |\n|---|---|---|\n",
    );
    let mut rows: Vec<&(&str, &str, &str)> = OTHER.iter().collect();
    rows.sort_by_key(|(name, _, _)| *name);
    for (name, who, what) in rows {
        let _ = writeln!(out, "| `{name}` | {} | {} |", cell(who), cell(what));
    }
    out.push('\n');
}

/// A value of a profile or of the router's defaults as the file takes it.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "`off`".into(),
        serde_json::Value::String(s) => format!("`{s}`"),
        serde_json::Value::Array(items) if items.is_empty() => "(none)".into(),
        other => format!("`{other}`"),
    }
}

fn pool_keys(out: &mut String) {
    use pgops_pool::Environment;
    out.push_str(
        "## `pgops.toml`\n\n\
         Top level: `environment` (as `PGOPS_ENV`); `[database]` `url` (as `DATABASE_URL`).\n\n\
         ### `[pool]`\n\n\
         Each key is also the variable `PGOPS_POOL_` + the key in upper case. Defaults are the \
         environment's profile.\n\n\
         | key | variable | what it sets |",
    );
    let profiles: Vec<(Environment, serde_json::Value)> = Environment::ALL
        .iter()
        .map(|e| {
            (
                *e,
                serde_json::to_value(e.profile()).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    for (environment, _) in &profiles {
        let _ = write!(
            out,
            " {} |",
            serde_json::to_value(environment)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("?")
        );
    }
    out.push_str("\n|---|---|---|");
    for _ in &profiles {
        out.push_str("---|");
    }
    out.push('\n');
    for key in pgops_pool::KEYS {
        let _ = write!(
            out,
            "| `{key}` | `PGOPS_POOL_{}` | {} |",
            key.to_uppercase(),
            pgops_pool::describe_key(key).unwrap_or("")
        );
        for (_, profile) in &profiles {
            // The default name is the running program's own.
            let value = if *key == "application_name" {
                "the program's name".to_owned()
            } else {
                shown(&profile[*key])
            };
            let _ = write!(out, " {value} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn router_keys(out: &mut String) {
    out.push_str(
        "### `[router]`\n\n\
         Each key is also the variable `PGOPS_ROUTER_` + the key in upper case.\n\n\
         | key | variable | what it sets | default |\n|---|---|---|---|\n",
    );
    let defaults = serde_json::to_value(pgops_pool::RouterSettings::default()).unwrap_or_default();
    for key in pgops_pool::ROUTER_KEYS {
        let _ = writeln!(
            out,
            "| `{key}` | `PGOPS_ROUTER_{}` | {} | {} |",
            key.to_uppercase(),
            pgops_pool::describe_key(key).unwrap_or(""),
            shown(&defaults[key])
        );
    }
    out.push('\n');
}

fn lint_keys(out: &mut String) {
    out.push_str(
        "### `[lint]`\n\n\
         Read by `pgops migrate lint`; flags add to or override it.\n\n\
         | key | what it sets |\n|---|---|\n",
    );
    for (key, what) in pgops_migrate::lint::CONFIG_KEYS {
        let _ = writeln!(out, "| `{key}` | {what} |");
    }
}
