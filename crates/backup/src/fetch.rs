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
        let stored = dir.join(file.stored_path());
        let key = format!("{}{}", manifest::prefix(&manifest.id), file.stored_path());
        // A local repository's file is linked into `dir` and hashed where it lies rather than
        // copied: a restore of a large backup neither writes it twice nor needs room for a
        // copy. Objects are never rewritten in place, so what is hashed is what is read next.
        let (bytes, sha) = match store.local_file(&key) {
            Some(source) => {
                link(&source, &stored)?;
                sha_of(&stored)?
            }
            None => store.get_to_file_hashed(&key, &stored)?,
        };
        if bytes != file.bytes || sha != file.sha256 {
            return Err(Error::Corrupt {
                id: manifest.id.clone(),
                file: file.stored_path(),
                detail: format!(
                    "expected {} bytes with SHA-256 {}, found {bytes} bytes with {sha}",
                    file.bytes, file.sha256
                ),
            });
        }
        if file.encrypted_for.is_empty() {
            continue;
        }
        let keys = store.keys().ok_or_else(|| {
            Error::Invalid(format!(
                "backup {} is encrypted; set PGOPS_REPO_IDENTITIES_FILE to read it",
                manifest.id
            ))
        })?;
        let plain = keys
            .decrypt_file(&stored, &local, &file.stored_path(), &file.encrypted_for)
            .map_err(|e| match e {
                Error::Corrupt { file, detail, .. } => Error::Corrupt {
                    id: manifest.id.clone(),
                    file,
                    detail,
                },
                other => other,
            })?;
        let _ = fs::remove_file(&stored);
        if file.plain_sha256.as_deref() != Some(plain.as_str()) {
            return Err(Error::Corrupt {
                id: manifest.id.clone(),
                file: file.stored_path(),
                detail: "it decrypts to other bytes than were backed up".into(),
            });
        }
    }
    Ok(())
}

/// A hard link to `source` at `link` (nothing copied); a symbolic one where a hard link
/// cannot be made (another file system, or a file another user owns).
fn link(source: &Path, link: &Path) -> Result<()> {
    fs::hard_link(source, link)
        .or_else(|_| std::os::unix::fs::symlink(source, link))
        .map_err(Error::io(format!(
            "linking {} to {}",
            source.display(),
            link.display()
        )))
}
