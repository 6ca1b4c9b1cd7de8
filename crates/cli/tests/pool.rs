//! `pgops pool show` and `pgops pool check` as an operator runs them.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use pgops_testkit::{HaCluster, HaOptions, TestDatabase};

fn pgops(args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgops"));
    cmd.args(args).current_dir(cwd);
    for (name, _) in std::env::vars() {
        if name.starts_with("PGOPS_") || name == "APP_ENV" || name == "DATABASE_URL" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn show_prints_every_key_with_its_source_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pgops.toml"),
        "[pool]\nidle_timeout = \"45s\"\n",
    )
    .unwrap();
    let env = [
        ("PGOPS_ENV", "production"),
        ("PGOPS_POOL_MAX_SIZE", "30"),
        (
            "DATABASE_URL",
            "postgres://app:s3cret-pw@db.internal:5432/app",
        ),
    ];
    let out = pgops(&["pool", "show", "--json"], &env, dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("s3cret-pw"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["environment"]["value"], "production");
    assert_eq!(v["environment"]["source"]["name"], "PGOPS_ENV");
    assert_eq!(
        v["database_url"]["value"],
        "postgres://app:***@db.internal:5432/app"
    );
    assert_eq!(v["pool"]["max_size"]["value"], 30);
    assert_eq!(v["pool"]["max_size"]["source"]["kind"], "env");
    assert_eq!(v["pool"]["idle_timeout"]["value"], "45s");
    assert_eq!(v["pool"]["idle_timeout"]["source"]["kind"], "file");
    assert_eq!(v["pool"]["statement_timeout"]["value"], "10s");
    assert_eq!(v["pool"]["statement_timeout"]["source"]["kind"], "profile");
    for key in pgops_pool::KEYS {
        assert!(v["pool"][key].is_object(), "{key} missing");
    }

    let out = pgops(&["pool", "show"], &env, dir.path());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("pool.max_size") && stdout.contains("env PGOPS_POOL_MAX_SIZE"),
        "{stdout}"
    );
    assert!(stdout.contains("file pgops.toml"), "{stdout}");
    assert!(!stdout.contains("s3cret-pw") && !text(&out.stderr).contains("s3cret-pw"));
}

#[test]
fn bad_settings_exit_2_naming_key_value_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = pgops(
        &["pool", "show"],
        &[("PGOPS_POOL_MIN_IDLE", "9"), ("PGOPS_POOL_MAX_SIZE", "4")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("PGOPS_POOL_MIN_IDLE = \"9\" is invalid: 0 to max_size (4)"),
        "{}",
        text(&out.stderr)
    );
    let out = pgops(&["pool", "show"], &[("APP_ENV", "qa")], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("APP_ENV = \"qa\" is invalid"));
}

#[test]
fn check_compares_pools_of_all_instances_with_max_connections() {
    let db = TestDatabase::empty().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    // The test cluster has max_connections 100 and 3 superuser-reserved slots.
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PGOPS_POOL_MAX_SIZE", "20"),
    ];
    let out = pgops(&["pool", "check", "--instances", "2"], &env, dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ok: 40 of 97"),
        "{}",
        text(&out.stdout)
    );

    let out = pgops(
        &["pool", "check", "--instances", "5", "--json"],
        &env,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["needed"], 100);
    assert_eq!(v["available"], 97);
    assert_eq!(v["fits"], false);
    assert!(v["connections_now"].as_i64().unwrap() >= 1);

    let out = pgops(&["pool", "check"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("DATABASE_URL is not set"));
}

#[test]
fn check_counts_every_pool_an_instance_opens_and_show_prints_the_router() {
    let db = TestDatabase::empty().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    // The same server stands in for a replica: its pool is counted on its own.
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_REPLICA_URLS", url.as_str()),
        ("PGOPS_POOL_MAX_SIZE", "20"),
        ("PGOPS_ROUTER_REPLICA_MAX_SIZE", "40"),
    ];
    let out = pgops(
        &["pool", "check", "--instances", "3", "--json"],
        &env,
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{v:#}");
    assert_eq!(servers[0]["server"], "primary");
    assert_eq!(servers[0]["needed"], 60);
    assert_eq!(servers[1]["server"], "replica-0");
    assert_eq!(
        servers[1]["needed"], 120,
        "3 instances x replica_max_size 40"
    );
    assert_eq!(servers[0]["fits"], true);
    assert_eq!(
        v["fits"], false,
        "120 do not fit in the replica's 97: {v:#}"
    );
    assert_eq!(out.status.code(), Some(1));

    std::fs::write(
        dir.path().join("pgops.toml"),
        "[router]\nreplica_max_size = 8\nmax_lag = \"2s\"\n",
    )
    .unwrap();
    let out = pgops(&["pool", "show"], &env[..3], dir.path());
    let shown = text(&out.stdout);
    assert!(shown.contains("replica-0"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("router.replica_max_size")
                && l.contains(" 8 ")
                && l.contains("pgops.toml")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("router.max_lag") && l.contains("2s")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("router.replica_min_idle") && l.contains("profile")),
        "{shown}"
    );

    std::fs::write(
        dir.path().join("pgops.toml"),
        "[router]\nreplica_max_sise = 8\n",
    )
    .unwrap();
    let out = pgops(&["pool", "show"], &env[..3], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown key `replica_max_sise` in [router]"));
}

#[test]
fn check_in_an_ha_cluster_counts_both_pools_on_every_member() {
    let ha = HaCluster::start(HaOptions::default().nodes(3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = ha.multi_host_url("postgres");
    let patroni = ha.rest_urls().join(",");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PGOPS_POOL_MAX_SIZE", "20"),
        ("PGOPS_ROUTER_REPLICA_MAX_SIZE", "8"),
        ("PGOPS_ROUTER_PATRONI_URLS", patroni.as_str()),
    ];
    // Every member, by its host and port from the multi-host URL: any of them may become the
    // primary, and then holds an instance's primary pool and the router's pool on it.
    let check = |instances: u32, env: &[(&str, &str)]| {
        let out = pgops(
            &[
                "pool",
                "check",
                "--instances",
                &instances.to_string(),
                "--json",
            ],
            env,
            dir.path(),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, v) = check(2, &env[..3]);
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{v:#}");
    for server in servers {
        assert!(
            server["server"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{v:#}"
        );
        assert_eq!(server["needed"], 56, "2 instances x (20 + 8): {v:#}");
    }
    assert_eq!(code, Some(0), "{v:#}");

    // With Patroni's REST API, the members are Patroni's, by name; too many instances for
    // them: every member is named, and the exit says so.
    let available = servers[0]["available"].as_i64().unwrap();
    let instances = u32::try_from(available / 28 + 1).unwrap();
    let (code, v) = check(instances, &env);
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{v:#}");
    let mut names: Vec<&str> = servers
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["node0", "node1", "node2"], "{v:#}");
    assert!(servers.iter().all(|s| s["fits"] == false), "{v:#}");
    assert_eq!(v["fits"], false);
    assert_eq!(code, Some(1));
    let out = pgops(
        &["pool", "check", "--instances", &instances.to_string()],
        &env,
        dir.path(),
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("node1 (")
            && said.contains("as the primary, pool max_size 20 + router replica_max_size 8"),
        "{said}"
    );
}

#[test]
fn check_behind_pgbouncer_counts_clients_against_pgbouncer_and_its_pool_against_the_server() {
    use pgops_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions, PoolMode};
    let cluster =
        Cluster::start(ClusterOptions::default().setting("max_connections", "40")).unwrap();
    let bouncer = PgBouncer::start(
        &cluster,
        PgBouncerOptions::new(PoolMode::Transaction, 20).max_client_conn(100),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, admin) = (bouncer.url("postgres"), bouncer.admin_url());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PGOPS_POOL_POOLER", "transaction"),
        ("PGOPS_POOL_MAX_SIZE", "8"),
        ("PGOPS_PGBOUNCER_URL", admin.as_str()),
    ];
    // 12 instances: 96 clients of 100, and PgBouncer's 20 server connections fit in 37.
    let out = pgops(
        &["pool", "check", "--instances", "12", "--json"],
        &env,
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v:#}{}", text(&out.stderr));
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers[0]["server"], "pgbouncer");
    assert_eq!(servers[0]["clients_needed"], 96);
    assert_eq!(servers[0]["server_connections"], 20);
    assert_eq!(
        servers[1]["needed"], 20,
        "the server sees PgBouncer's pool, not 96: {v:#}"
    );
    // Sixteen do not fit in PgBouncer's max_client_conn, though the server would be fine.
    let out = pgops(&["pool", "check", "--instances", "16"], &env, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("128 client connections do not fit in PgBouncer's max_client_conn 100"),
        "{report}"
    );
    assert!(!report.contains("pgops-bouncer"), "no password: {report}");
    assert!(
        report.contains("PgBouncer's pool = 20 connections"),
        "{report}"
    );
    // Without the admin console it says what to set.
    let out = pgops(&["pool", "check"], &env[..3], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("PGOPS_PGBOUNCER_URL"));
}
