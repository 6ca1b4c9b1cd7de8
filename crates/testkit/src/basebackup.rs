//! A base backup for a streaming replica when the installed `pg_basebackup` is older than the
//! server (a server-only build of a newer major, whose client programs are not installed):
//! the low-level backup API (`pg_backup_start` / `pg_backup_stop`, `pg_start_backup` /
//! `pg_stop_backup` before PostgreSQL 15) around a file copy, as the documentation's
//! "Making a Base Backup Using the Low Level API" describes.

use std::{fs, io::ErrorKind, path::Path};

use diesel::{PgConnection, RunQueryDsl, sql_types::Text};

use crate::{Error, Result};

/// Files and directories whose contents a base backup leaves out (as `pg_basebackup` does):
/// they are rebuilt or streamed by the standby.
const EMPTIED: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
const SKIPPED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
];

/// Copies `data` (a running primary's data directory) into `target` inside a backup taken
/// through `conn`, and writes the `backup_label` the standby starts from.
/// `major` is the primary's major version, which names the API's functions.
pub(crate) fn copy(conn: &mut PgConnection, major: u32, data: &Path, target: &Path) -> Result<()> {
    let (start, stop) = if major >= 15 {
        (
            "SELECT pg_backup_start('pgops-testkit', true)::text",
            "SELECT labelfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup('pgops-testkit', true, false)::text",
            "SELECT labelfile FROM pg_stop_backup(false, false)",
        )
    };
    diesel::sql_query(start)
        .execute(conn)
        .map_err(|source| Error::Query {
            sql: start.into(),
            source,
        })?;
    let copied = copy_tree(data, target, true);
    #[derive(diesel::QueryableByName)]
    struct Label {
        #[diesel(sql_type = Text)]
        labelfile: String,
    }
    // Stop the backup whether or not the copy worked: the session must not stay in backup mode.
    let label = diesel::sql_query(stop)
        .get_result::<Label>(conn)
        .map_err(|source| Error::Query {
            sql: stop.into(),
            source,
        });
    copied?;
    let label = label?;
    let write = |name: &str, text: &str| {
        let path = target.join(name);
        fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    };
    write("backup_label", &label.labelfile)?;
    write("standby.signal", "")?;
    // PostgreSQL refuses a data directory others may read.
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(target, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", target.display()), e))
}

/// Copies a directory tree, tolerating files that vanish while it runs (the server keeps
/// working); at the top level, leaves out what a base backup leaves out.
fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<()> {
    let io = |what: String| move |e| Error::io(what, e);
    fs::create_dir(to).map_err(io(format!("creating {}", to.display())))?;
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("reading {}", from.display()), e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", from.display()), e)),
        };
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let source = entry.path();
        let dest = to.join(&name);
        if top && SKIPPED.contains(&name_str.as_ref()) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if top && EMPTIED.contains(&name_str.as_ref()) {
                fs::create_dir(&dest).map_err(io(format!("creating {}", dest.display())))?;
                if name_str == "pg_wal" {
                    let status = dest.join("archive_status");
                    fs::create_dir(&status)
                        .map_err(io(format!("creating {}", status.display())))?;
                }
                continue;
            }
            copy_tree(&source, &dest, false)?;
        } else if kind.is_file() {
            match fs::copy(&source, &dest) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("copying {} to {}", source.display(), dest.display()),
                        e,
                    ));
                }
            }
        } else if kind.is_symlink()
            && let Ok(link) = fs::read_link(&source)
        {
            std::os::unix::fs::symlink(&link, &dest)
                .map_err(io(format!("linking {}", dest.display())))?;
        }
    }
    Ok(())
}
