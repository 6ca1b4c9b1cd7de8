//! The `backup` suite, at pgbench scales 10, 50 and 200: a logical backup by pgops (pg_dump
//! in a held snapshot, zstd, SHA-256, row counts, manifest, into a file:// repository)
//! against `pg_dump -Fc` of the same database and against the floor, `pg_dump -Fc
//! --compress=0` into `/dev/null`; the size of each result; and physical backups and restores
//! against pgBackRest and the `pg_basebackup` floor. Alternating rounds, one cluster per
//! scale.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, ensure};
use pgops_backup::{logical, repo};
use pgops_pg::DatabaseUrl;
use pgops_testkit::{Cluster, ClusterOptions, SUPERUSER};

use crate::{
    report::{Comparison, Report},
    settle::settle,
    workload::pgbench,
};

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `pgbench -i -s` scales, one comparison of each kind per scale.
    pub scales: &'static [u32],
    /// Rounds per side (three at scale 50 and above).
    pub rounds: usize,
}

impl Plan {
    /// The full plan, or a short one for `--quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                scales: &[5],
                rounds: 3,
            }
        } else {
            Plan {
                scales: &[10, 50, 200],
                rounds: 5,
            }
        }
    }

    fn rounds_at(&self, scale: u32) -> usize {
        if scale >= 50 {
            self.rounds.min(3)
        } else {
            self.rounds
        }
    }
}

/// Runs the suite.
pub fn run(plan: Plan) -> anyhow::Result<Report> {
    let mut comparisons = Vec::new();
    for &scale in plan.scales {
        let cluster = Cluster::start(ClusterOptions::default()).context("starting a cluster")?;
        cluster.create_database("bench")?;
        eprintln!("pgbench -i -s {scale} ...");
        pgbench(&cluster, "bench", &["-i", "-q", "-s", &scale.to_string()])?;
        cluster.execute("bench", "VACUUM ANALYZE")?;
        let size = format!("scale {scale}");
        let rounds = plan.rounds_at(scale);
        comparisons.extend(
            logical_comparisons(&cluster, scale, rounds)?
                .into_iter()
                .map(|c| c.size(&size)),
        );
        comparisons.extend(
            physical(&cluster, scale, rounds)?
                .into_iter()
                .map(|c| c.size(&size)),
        );
    }
    Ok(Report {
        suite: "backup".into(),
        comparisons,
        measurements: Vec::new(),
        machine: None,
        quick: false,
    })
}

/// Logical backups of database `bench`: pgops, `pg_dump -Fc`, and the floor.
fn logical_comparisons(
    cluster: &Cluster,
    scale: u32,
    rounds: usize,
) -> anyhow::Result<Vec<Comparison>> {
    let dir = tempfile::tempdir()?;
    let store = repo::open(
        &format!("file://{}/repo", dir.path().display()),
        repo::Access::Create,
    )?;
    let url = DatabaseUrl::parse(&cluster.url("bench"))?;
    let pg_dump = cluster.binaries().program("pg_dump");
    let dump_path = dir.path().join("bench.dump");
    let port = cluster.port().to_string();
    let dump = |extra: &[&str], to: &std::path::Path| -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = Command::new(&pg_dump)
            .args(["-Fc", "-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER])
            .args(extra)
            .arg("-f")
            .arg(to)
            .arg("bench")
            .output()
            .with_context(|| format!("running {}", pg_dump.display()))?;
        ensure!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(t.elapsed().as_secs_f64())
    };
    let anchor_tool = format!(
        "pg_dump -Fc -h 127.0.0.1 -p <port> -U {SUPERUSER} -f bench.dump bench (pgbench scale {scale}; default gzip level)"
    );
    let (mut ours, mut anchor, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_bytes, mut anchor_bytes) = (0u64, 0u64);
    for round in 0..rounds {
        let mut sides = ["pgops", "pg_dump", "floor"];
        sides.rotate_left(round % 3);
        for side in sides {
            // Dumps write little, so only the writeback is settled (the first round would
            // otherwise pay for the load's: 10.9 s against 8.6 to 9.1 s at scale 200).
            settle(dir.path(), 0)?;
            match side {
                "pgops" => {
                    let t = Instant::now();
                    let manifest = logical::create(
                        &*store,
                        &url,
                        &logical::CreateOptions::default(),
                        &mut pgops_backup::progress::Quiet,
                    )?;
                    ours.push(t.elapsed().as_secs_f64());
                    ours_bytes = manifest.bytes();
                    keep_newest(&*store)?;
                }
                "pg_dump" => {
                    anchor.push(dump(&[], &dump_path)?);
                    anchor_bytes = std::fs::metadata(&dump_path)?.len();
                }
                _ => floor.push(dump(
                    &["--compress=0", "--no-sync"],
                    std::path::Path::new("/dev/null"),
                )?),
            }
        }
        eprintln!(
            "scale {scale}, round {}: pgops {:.2} s ({ours_bytes} bytes), pg_dump -Fc {:.2} s ({anchor_bytes} bytes), pg_dump -Fc --compress=0 to /dev/null {:.2} s",
            round + 1,
            ours[round],
            anchor[round],
            floor[round]
        );
    }
    Ok(vec![
        Comparison::from_rounds(
            "logical_backup_seconds",
            "seconds",
            &ours,
            &anchor,
            &anchor_tool,
            false,
        )
        .target(0.95),
        Comparison::from_rounds(
            "logical_backup_bytes",
            "bytes",
            &[ours_bytes as f64],
            &[anchor_bytes as f64],
            &anchor_tool,
            false,
        )
        .target(1.0),
        Comparison::from_rounds(
            "logical_backup_vs_pg_dump_floor",
            "seconds",
            &ours,
            &floor,
            &format!(
                "pg_dump -Fc --compress=0 --no-sync -f /dev/null bench (the floor: the dump alone, nothing compressed, checked, counted or stored; pgbench scale {scale})"
            ),
            false,
        )
        .target(0.9),
    ])
}

/// Runs `pgbackrest` as the server's OS user with `config`.
fn pgbackrest(config: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = pgops_pg::ServerUser::detect()?.command("pgbackrest", std::path::Path::new("/"));
    let out = cmd
        .arg(format!("--config={}", config.display()))
        .args(args)
        .output()
        .context("running pgbackrest (apt-get install pgbackrest)")?;
    ensure!(
        out.status.success(),
        "pgbackrest {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The physical comparisons: pgops against pgBackRest (zstd, process-max 2) for backup,
/// encrypted backup and restore, pgops encrypted against pgops plain, and raw
/// `pg_basebackup` as the floor; all on `cluster`, alternating.
pub fn physical(cluster: &Cluster, scale: u32, rounds: usize) -> anyhow::Result<Vec<Comparison>> {
    // A directory the server's user can use too (pgBackRest runs as that user).
    let dir = tempfile::Builder::new()
        .prefix("pgops-bench-physical-")
        .tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let config = dir.path().join("pgbackrest.conf");
    let repo_path = dir.path().join("pgbackrest-repo");
    std::fs::write(
        &config,
        format!(
            "[global]\nrepo1-path={}\ncompress-type=zst\ncompress-level=3\nprocess-max=2\nstart-fast=y\narchive-check=n\n\
             log-level-console=warn\nlog-level-file=off\nlock-path={}/lock\nspool-path={}/spool\n\n\
             [bench]\npg1-path={}\npg1-port={}\npg1-socket-path={}\npg1-user={SUPERUSER}\n",
            repo_path.display(),
            dir.path().display(),
            dir.path().display(),
            cluster.data_dir().display(),
            cluster.port(),
            cluster.socket_dir().display()
        ),
    )?;
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    pgbackrest(&config, &["--stanza=bench", "stanza-create"])?;
    // The same two with encryption: pgBackRest's repository cipher (AES-256-CBC, a passphrase
    // in its configuration) and pgops's age keys (a key pair made for the run).
    let cipher_config = dir.path().join("pgbackrest-cipher.conf");
    std::fs::write(
        &cipher_config,
        std::fs::read_to_string(&config)?.replace(
            &format!("repo1-path={}\n", repo_path.display()),
            &format!(
                "repo1-path={}-cipher\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=pgops-bench-{}\n",
                repo_path.display(),
                std::process::id()
            ),
        ),
    )?;
    std::fs::set_permissions(
        &cipher_config,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    pgbackrest(&cipher_config, &["--stanza=bench", "stanza-create"])?;
    let key_file = dir.path().join("age-key.txt");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&key_file)
        .output()
        .context("running age-keygen (apt-get install age)")?;
    ensure!(keygen.status.success(), "age-keygen failed");
    let public = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&key_file)
            .output()?
            .stdout,
    )?;
    let keys =
        pgops_backup::crypto::Keys::new(public.trim(), &std::fs::read_to_string(&key_file)?)?;
    let encrypted_store = pgops_backup::crypto::settle(
        repo::open(
            &format!("file://{}/pgops-encrypted-repo", dir.path().display()),
            repo::Access::Create,
        )?,
        Some(keys),
        repo::Access::Create,
    )?;
    let (mut ours_e, mut anchor_e) = (Vec::new(), Vec::new());
    let store = repo::open(
        &format!("file://{}/pgops-repo", dir.path().display()),
        repo::Access::Create,
    )?;
    let url = DatabaseUrl::parse(&cluster.url("postgres"))?;
    let pg_basebackup = cluster.binaries().program("pg_basebackup");
    let exe = std::env::current_exe()?;
    // What a step writes, about: a restore, the data directory; a backup, what it stores
    // (compressed, a fifth to a third of it) and the WAL beside it.
    let data_bytes = dir_size(&cluster.data_dir())?;
    let backup_bytes = data_bytes / 3;
    let (mut ours_b, mut anchor_b, mut floor_b) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_r, mut anchor_r) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let pgops_first = round % 2 == 0;
        // Each tool's backup and encrypted backup are taken one after the other, in an order
        // that alternates with the rounds, so that what encryption costs is measured under
        // the same conditions rather than a restore and the other tool's backups apart.
        let plain_first = round % 2 == 0;
        for side in [pgops_first, !pgops_first] {
            if side {
                for encrypted in [!plain_first, plain_first] {
                    settle(dir.path(), backup_bytes)?;
                    let (target, times) = if encrypted {
                        (&*encrypted_store, &mut ours_e)
                    } else {
                        (&*store, &mut ours_b)
                    };
                    let t = Instant::now();
                    pgops_backup::physical::create(
                        target,
                        &url,
                        &mut pgops_backup::progress::Quiet,
                    )?;
                    times.push(t.elapsed().as_secs_f64());
                }
                keep_newest(&*encrypted_store)?;
                let target = dir.path().join("pgops-restore");
                let _ = std::fs::remove_dir_all(&target);
                settle(dir.path(), data_bytes)?;
                let t = Instant::now();
                pgops_backup::physical::restore_to_dir(
                    &*store,
                    store.url(),
                    &exe,
                    &pgops_backup::physical::Recovery::to(pgops_backup::physical::Target::Latest),
                    &target,
                )?;
                ours_r.push(t.elapsed().as_secs_f64());
                std::fs::remove_dir_all(&target)?;
                keep_newest(&*store)?;
            } else {
                for encrypted in [!plain_first, plain_first] {
                    settle(dir.path(), backup_bytes)?;
                    let (config, times) = if encrypted {
                        (&cipher_config, &mut anchor_e)
                    } else {
                        (&config, &mut anchor_b)
                    };
                    let t = Instant::now();
                    pgbackrest(config, &["--stanza=bench", "--type=full", "backup"])?;
                    times.push(t.elapsed().as_secs_f64());
                }
                pgbackrest(
                    &cipher_config,
                    &["--stanza=bench", "--repo1-retention-full=1", "expire"],
                )?;
                let target = dir.path().join("pgbackrest-restore");
                let _ = std::fs::remove_dir_all(&target);
                std::fs::create_dir(&target)?;
                std::fs::set_permissions(
                    &target,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )?;
                if nix::unistd::geteuid().is_root() {
                    let user =
                        nix::unistd::User::from_name("postgres")?.context("no postgres OS user")?;
                    nix::unistd::chown(&target, Some(user.uid), Some(user.gid))?;
                }
                settle(dir.path(), data_bytes)?;
                let t = Instant::now();
                pgbackrest(
                    &config,
                    &[
                        "--stanza=bench",
                        &format!("--pg1-path={}", target.display()),
                        "restore",
                    ],
                )?;
                anchor_r.push(t.elapsed().as_secs_f64());
                std::fs::remove_dir_all(&target)?;
                pgbackrest(
                    &config,
                    &["--stanza=bench", "--repo1-retention-full=1", "expire"],
                )?;
            }
        }
        let floor_dir = dir.path().join("floor");
        let _ = std::fs::remove_dir_all(&floor_dir);
        let port = cluster.port().to_string();
        settle(dir.path(), backup_bytes)?;
        let t = Instant::now();
        let out = Command::new(&pg_basebackup)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "--format=tar",
                "--wal-method=stream",
                "--checkpoint=fast",
                &format!("--compress={}", pgops_backup::physical::SERVER_COMPRESSION),
                "-D",
            ])
            .arg(&floor_dir)
            .output()?;
        ensure!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        floor_b.push(t.elapsed().as_secs_f64());
        eprintln!(
            "scale {scale}, round {}: backup pgops {:.2} s, pgbackrest {:.2} s, pg_basebackup {:.2} s; restore pgops {:.2} s, pgbackrest {:.2} s; encrypted backup pgops {:.2} s, pgbackrest {:.2} s",
            round + 1,
            ours_b[round],
            anchor_b[round],
            floor_b[round],
            ours_r[round],
            anchor_r[round],
            ours_e[round],
            anchor_e[round]
        );
    }
    let backrest = format!(
        "pgbackrest --type=full backup (pgBackRest 2.45, compress-type=zst level 3, process-max=2, start-fast; pgbench scale {})",
        scale
    );
    Ok(vec![
        Comparison::from_rounds(
            "physical_backup_seconds",
            "seconds",
            &ours_b,
            &anchor_b,
            &backrest,
            false,
        )
        .target(1.5),
        Comparison::from_rounds(
            "restore_seconds",
            "seconds",
            &ours_r,
            &anchor_r,
            "pgbackrest restore into an empty directory (same settings)",
            false,
        )
        .target(1.2),
        Comparison::from_rounds(
            "encrypted_physical_backup_seconds",
            "seconds",
            &ours_e,
            &anchor_e,
            &format!(
                "pgbackrest --type=full backup with repo1-cipher-type=aes-256-cbc (otherwise as above; pgops: age, X25519 + ChaCha20-Poly1305; pgbench scale {scale})"
            ),
            false,
        )
        .target(1.5),
        Comparison::from_rounds(
            "encryption_overhead",
            "seconds",
            &ours_e,
            &ours_b,
            "pgops backup create --kind physical without encryption (same cluster, same rounds)",
            false,
        )
        .target(0.9),
        Comparison::from_rounds(
            "physical_backup_vs_pg_basebackup",
            "seconds",
            &ours_b,
            &floor_b,
            &format!(
                "pg_basebackup -Ft -X stream --checkpoint=fast --compress={} (the floor: a plain pg_basebackup with pgops's compression, synced as it does by default, without checksums or a repository)",
                pgops_backup::physical::SERVER_COMPRESSION
            ),
            false,
        )
        .target(0.9),
    ])
}

/// Deletes every backup but the newest, so rounds do not fill the disk.
fn keep_newest(store: &dyn repo::Store) -> anyhow::Result<()> {
    let policy = pgops_backup::retention::Policy {
        keep_last: 1,
        ..Default::default()
    };
    pgops_backup::prune(store, policy, None, false)?;
    Ok(())
}

/// The bytes under `dir` (the cluster's data directory: what a restore writes).
fn dir_size(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_size(&entry.path())?;
        } else if kind.is_file() {
            // A file the server removed meanwhile (a temporary one) counts as nothing.
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    Ok(total)
}
