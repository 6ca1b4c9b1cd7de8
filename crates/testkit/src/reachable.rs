//! Programs the server must run, such as the `pgops` of an `archive_command`, when they sit
//! where the server's OS user cannot reach them: a checkout under root's home (mode 0700)
//! builds its binaries there. Such a program is copied once per process into a directory the
//! server user owns, removed when the process goes away however it goes.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use pgops_pg::ServerUser;

use crate::{Error, Result, process::Watchdog};

struct Copies {
    dir: PathBuf,
    done: HashMap<PathBuf, PathBuf>,
    _watchdog: Watchdog,
}

static COPIES: Mutex<Option<Copies>> = Mutex::new(None);

/// `program` itself when the server's OS user can run it; otherwise a copy it can run. Use
/// the returned path in an `archive_command`, and to run `pgops` commands that write a
/// `restore_command` naming themselves.
pub fn server_can_run(program: &Path) -> Result<PathBuf> {
    let user = ServerUser::detect()?;
    if user.check_can_run(program).is_ok() {
        return Ok(program.to_path_buf());
    }
    let mut guard = COPIES.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("pgops-bin-")
            .tempdir()
            .map_err(|e| Error::io("creating a directory for programs the server runs", e))?
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        user.own(&dir)?;
        let watchdog = Watchdog::remove_dir(&user, &dir)?;
        *guard = Some(Copies {
            dir,
            done: HashMap::new(),
            _watchdog: watchdog,
        });
    }
    let Some(copies) = guard.as_mut() else {
        unreachable!("set just above")
    };
    if let Some(copy) = copies.done.get(program) {
        return Ok(copy.clone());
    }
    let name = program.file_name().ok_or_else(|| {
        Error::io(
            format!("{} has no file name", program.display()),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let copy = copies.dir.join(name);
    fs::copy(program, &copy).map_err(|e| {
        Error::io(
            format!("copying {} to {}", program.display(), copy.display()),
            e,
        )
    })?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("chmod {}", copy.display()), e))?;
    user.own(&copy)?;
    user.check_can_run(&copy)?;
    copies.done.insert(program.to_path_buf(), copy.clone());
    Ok(copy)
}
