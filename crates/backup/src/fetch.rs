//! Fetching a backup's files from the repository into a local directory, every one checked
//! against its size and checksum before anything is restored from it.

use std::{fs, os::unix::fs::DirBuilderExt, path::Path};

use crate::{
    Error, Result,
    files::sha_of,
    manifest::{self, Manifest},
    repo::Store,
};

/// Downloads every file of the backup into `dir` and checks sizes and checksums; the error
/// names the first file that does not match.
pub(crate) fn fetch_verified(store: &dyn Store, manifest: &Manifest, dir: &Path) -> Result<()> {
    for file in &manifest.files {
        let local = dir.join(&file.path);
        if let Some(parent) = local.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        store.get_to_file(
            &format!("{}{}", manifest::prefix(&manifest.id), file.path),
            &local,
        )?;
        let (bytes, sha) = sha_of(&local)?;
        if bytes != file.bytes || sha != file.sha256 {
            return Err(Error::Corrupt {
                id: manifest.id.clone(),
                file: file.path.clone(),
                detail: format!(
                    "expected {} bytes with SHA-256 {}, found {bytes} bytes with {sha}",
                    file.bytes, file.sha256
                ),
            });
        }
    }
    Ok(())
}
