//! Backup repositories: a local directory (`file:///var/backups/pgops`) or an S3-compatible
//! bucket (`s3://bucket/prefix`, through `object_store`). Objects are written whole or not at
//! all; a backup exists only once its manifest is written, after its data.

use std::{
    fs::{self, File},
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Where backups live.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a local file under `key`, whole or not at all, and durably: the file need not
    /// be synced by whoever wrote it.
    fn put_file(&self, key: &str, local: &Path) -> Result<()>;
    /// Stores bytes under `key`, whole or not at all.
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Stores bytes under `key` only if nothing is stored there yet: `false` when something
    /// was (two writers racing for one name never overwrite each other).
    fn put_bytes_new(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// Copies the object into a local file.
    fn get_to_file(&self, key: &str, local: &Path) -> Result<()>;
    /// Copies the object into a local file (0600) and returns the size and SHA-256 of what
    /// was written there; a store that can hashes while it copies instead of reading the
    /// copy again.
    fn get_to_file_hashed(&self, key: &str, local: &Path) -> Result<(u64, String)> {
        self.get_to_file(key, local)?;
        crate::files::sha_of(local)
    }
    /// The object's own file, when the repository is a local directory: a restore reads it
    /// where it lies instead of copying it first. `None` for a remote store.
    fn local_file(&self, _key: &str) -> Option<PathBuf> {
        None
    }
    /// Reads a small object; `None` when it does not exist.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Keys under `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Deletes an object (absent is fine).
    fn delete(&self, key: &str) -> Result<()>;
    /// The repository URL, for messages.
    fn url(&self) -> &str;
    /// A local directory for files on their way in, when the repository is local (so storing
    /// them is a rename); `None` for remote stores (a temporary directory is used).
    fn staging_root(&self) -> Option<PathBuf> {
        None
    }
    /// Where encrypted objects are put together before they are stored (a rename away from
    /// their place in a local repository); plaintext never goes there.
    fn sealed_staging_root(&self) -> Option<PathBuf> {
        self.staging_root()
    }
    /// Lets every user that shares the repository read `key` (a marker that holds nothing
    /// secret; data stays 0600).
    fn publish(&self, _key: &str) -> Result<()> {
        Ok(())
    }
    /// The keys objects are encrypted with (an encrypted repository, see
    /// [`crate::crypto::settle`]); `None` for a plaintext one.
    fn keys(&self) -> Option<&crate::crypto::Keys> {
        None
    }
}

/// A store whose data objects are encrypted with `keys`: everything else is the inner store's.
#[derive(Debug)]
pub struct Encrypted {
    pub(crate) inner: Box<dyn Store>,
    pub(crate) keys: crate::crypto::Keys,
}

impl Store for Encrypted {
    fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        self.inner.put_file(key, local)
    }
    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put_bytes(key, data)
    }
    fn put_bytes_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.inner.put_bytes_new(key, data)
    }
    fn get_to_file(&self, key: &str, local: &Path) -> Result<()> {
        self.inner.get_to_file(key, local)
    }
    fn get_to_file_hashed(&self, key: &str, local: &Path) -> Result<(u64, String)> {
        self.inner.get_to_file_hashed(key, local)
    }
    fn local_file(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_file(key)
    }
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_bytes(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn staging_root(&self) -> Option<PathBuf> {
        // Plaintext is put together in the local temporary directory, never in the
        // repository (which may be a file share).
        None
    }
    fn sealed_staging_root(&self) -> Option<PathBuf> {
        self.inner.staging_root()
    }
    fn keys(&self) -> Option<&crate::crypto::Keys> {
        Some(&self.keys)
    }
}

/// How a command uses the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// It only reads, or changes what is there: a repository that does not exist is an error,
    /// so a mistyped path in a monitoring job is not read as an empty, healthy repository.
    Existing,
    /// It may write the first object (`backup create`, `wal push`): a missing local
    /// repository directory is created (0700).
    Create,
}

/// Opens the repository named by `url`.
pub fn open(url: &str, access: Access) -> Result<Box<dyn Store>> {
    let bad = |reason: &str| Error::BadRepository {
        url: redact(url),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|()| bad("a file:// URL needs an absolute path"))?;
            Ok(Box::new(LocalStore::open(path, url, access)?))
        }
        "s3" => Ok(Box::new(S3Store::open(&parsed, url)?)),
        other => Err(bad(&format!("scheme {other}:// is not supported"))),
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A repository directory: files 0600, directories 0700, every write through a temporary
/// file, `fsync` and `rename`.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    url: String,
}

impl LocalStore {
    /// Opens the directory; with [`Access::Create`], creates it when missing.
    pub fn open(root: PathBuf, url: &str, access: Access) -> Result<Self> {
        if access == Access::Existing && !root.is_dir() {
            return Err(Error::BadRepository {
                url: redact(url),
                reason: format!(
                    "{} does not exist; check the path, or create the repository by taking a \
                     backup (`pgops backup create`) or archiving WAL (`pgops wal push`)",
                    root.display()
                ),
            });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(Error::io(format!(
                "creating the repository {}",
                root.display()
            )))?;
        Ok(LocalStore {
            root,
            url: url.to_owned(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The directory `target` goes in, created (0700) when missing.
    fn parent_dir(&self, target: &Path) -> Result<PathBuf> {
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    fn write_with(
        &self,
        key: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let target = self.path(key);
        let dir = self.parent_dir(&target)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object"),
            std::process::id()
        ));
        let result = (|| {
            let mut file = crate::files::private_file(&tmp)?;
            fill(&mut file)?;
            file.sync_all()?;
            fs::rename(&tmp, &target)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(Error::io(format!("writing {}", target.display())))
    }
}

impl Store for LocalStore {
    fn staging_root(&self) -> Option<PathBuf> {
        Some(self.root.join(".staging"))
    }

    fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        // A file staged inside the repository (already 0600) is synced and moved into place.
        if local.starts_with(self.root.join(".staging")) {
            let target = self.path(key);
            let dir = self.parent_dir(&target)?;
            return File::open(local)
                .and_then(|file| file.sync_all())
                .and_then(|()| fs::rename(local, &target))
                .and_then(|()| File::open(&dir)?.sync_all())
                .map_err(Error::io(format!("storing {}", target.display())));
        }
        self.write_with(key, |out| {
            let mut input = File::open(local)?;
            std::io::copy(&mut input, out).map(|_| ())
        })
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write_with(key, |out| out.write_all(data))
    }

    fn publish(&self, key: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(Error::io(format!("letting others read {}", path.display())))
    }

    fn put_bytes_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        // Written beside the target, then linked into place: link(2) refuses an existing
        // name, where rename(2) would replace it.
        let target = self.path(key);
        let dir = self.parent_dir(&target)?;
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempfile_in(&dir)
            .map_err(Error::io(format!("creating a file in {}", dir.display())))?;
        let written = (|| {
            let mut file = tmp.as_file();
            file.write_all(data)?;
            file.sync_all()?;
            match fs::hard_link(tmp.path(), &target) {
                Ok(()) => {
                    File::open(&dir)?.sync_all()?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        written.map_err(Error::io(format!("writing {}", target.display())))
    }

    fn get_to_file(&self, key: &str, local: &Path) -> Result<()> {
        let source = self.path(key);
        let mut input =
            File::open(&source).map_err(Error::io(format!("opening {}", source.display())))?;
        let mut out = crate::files::private_file(local)
            .map_err(Error::io(format!("creating {}", local.display())))?;
        std::io::copy(&mut input, &mut out)
            .map(|_| ())
            .map_err(Error::io(format!("copying {}", source.display())))
    }

    fn local_file(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn get_to_file_hashed(&self, key: &str, local: &Path) -> Result<(u64, String)> {
        let source = self.path(key);
        let mut input =
            File::open(&source).map_err(Error::io(format!("opening {}", source.display())))?;
        let out = crate::files::private_file(local)
            .map_err(Error::io(format!("creating {}", local.display())))?;
        let mut hashing =
            crate::files::Hashing::new(std::io::BufWriter::with_capacity(1 << 20, out));
        std::io::copy(&mut input, &mut hashing)
            .map_err(Error::io(format!("copying {}", source.display())))?;
        let (_, bytes, sha256) = hashing
            .finish()
            .map_err(Error::io(format!("writing {}", local.display())))?;
        Ok((bytes, sha256))
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match File::open(&path) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)
                    .map_err(Error::io(format!("reading {}", path.display())))?;
                Ok(Some(data))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let start = self.path(prefix);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()))(e)),
            };
            for entry in entries {
                let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue; // temporary files of writes in progress
                }
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                // Remove directories left empty, up to the root.
                let mut dir = path.parent().map(Path::to_path_buf);
                while let Some(d) = dir {
                    if d == self.root || fs::remove_dir(&d).is_err() {
                        break;
                    }
                    dir = d.parent().map(Path::to_path_buf);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()))(e)),
        }
    }

    fn url(&self) -> &str {
        &self.url
    }
}

/// Checks that a repository file has the modes we promise (0600 files, 0700 directories).
pub fn mode_of(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .map_err(Error::io(format!("reading {}", path.display())))?
        .permissions()
        .mode()
        & 0o777)
}

/// An S3-compatible bucket. Credentials, region and endpoint come from the usual `AWS_*`
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`
/// for MinIO and friends).
pub struct S3Store {
    store: object_store::aws::AmazonS3,
    prefix: String,
    url: String,
    /// The store's own runtime; `None` only while dropping. See [`S3Store::run`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Store {
    /// A runtime dropped inside another runtime's async code panics: let it go in the
    /// background instead (a service's SIGTERM drops the exporter, and this store with it,
    /// inside its own runtime).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).finish()
    }
}

impl S3Store {
    fn open(parsed: &url::Url, url: &str) -> Result<Self> {
        use object_store::aws::AmazonS3Builder;
        let bucket =
            parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| Error::BadRepository {
                    url: redact(url),
                    reason: "an s3:// URL needs a bucket: s3://bucket/prefix".into(),
                })?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Ok(endpoint) =
            std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT"))
        {
            builder = builder
                .with_endpoint(&endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| Error::BadRepository {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the S3 client runtime"))?;
        Ok(S3Store {
            store,
            prefix: parsed.path().trim_matches('/').to_owned(),
            url: url.to_owned(),
            runtime: Some(runtime),
        })
    }

    /// Runs `future` to completion on the store's runtime. Called from async code (another
    /// runtime's worker), where blocking on a runtime would panic, it blocks a scoped thread
    /// of its own instead.
    fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(runtime) = &self.runtime else {
            unreachable!("the runtime is only taken in drop")
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(future);
        }
        std::thread::scope(
            |scope| match scope.spawn(|| runtime.block_on(future)).join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            },
        )
    }

    fn key(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{}/{key}", self.prefix))
        }
    }
}

impl Store for S3Store {
    fn put_file(&self, key: &str, local: &Path) -> Result<()> {
        use object_store::{ObjectStore as _, WriteMultipart};
        use tokio::io::AsyncReadExt as _;
        let location = self.key(key);
        self.run(async {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(Error::storage(format!("starting the upload of {key}")))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 * 1024 * 1024);
            // File reads go to the blocking pool (tokio::fs), not the runtime's thread.
            let mut input = tokio::fs::File::open(local)
                .await
                .map_err(Error::io(format!("opening {}", local.display())))?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = input
                    .read(&mut buf)
                    .await
                    .map_err(Error::io(format!("reading {}", local.display())))?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(Error::storage(format!("uploading {key}")))?;
                writer.write(&buf[..n]);
            }
            // An upload that fails is aborted: nothing appears under the key.
            writer
                .finish()
                .await
                .map(|_| ())
                .map_err(Error::storage(format!("uploading {key}")))
        })
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        use object_store::ObjectStore as _;
        let location = self.key(key);
        self.run(self.store.put(&location, data.to_vec().into()))
            .map(|_| ())
            .map_err(Error::storage(format!("writing {key}")))
    }

    fn put_bytes_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        use object_store::ObjectStore as _;
        let location = self.key(key);
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self.run(
            self.store
                .put_opts(&location, data.to_vec().into(), options),
        ) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            // Stores that answer a failed condition otherwise: if the object is there now,
            // another writer won.
            Err(e) => match self.get_bytes(key) {
                Ok(Some(_)) => Ok(false),
                _ => Err(Error::storage(format!("writing {key}"))(e)),
            },
        }
    }

    fn get_to_file(&self, key: &str, local: &Path) -> Result<()> {
        use object_store::ObjectStore as _;
        use tokio::io::AsyncWriteExt as _;
        let location = self.key(key);
        self.run(async {
            let got = self
                .store
                .get(&location)
                .await
                .map_err(Error::storage(format!("reading {key}")))?;
            let out = crate::files::private_file(local)
                .map_err(Error::io(format!("creating {}", local.display())))?;
            // File writes go to the blocking pool (tokio::fs), not the runtime's thread.
            let mut out = tokio::fs::File::from_std(out);
            let mut stream = got.into_stream();
            use futures_util::StreamExt as _;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Error::storage(format!("reading {key}")))?;
                out.write_all(&chunk)
                    .await
                    .map_err(Error::io(format!("writing {}", local.display())))?;
            }
            out.flush()
                .await
                .map_err(Error::io(format!("writing {}", local.display())))
        })
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        use object_store::ObjectStore as _;
        let location = self.key(key);
        self.run(async {
            match self.store.get(&location).await {
                Ok(got) => Ok(Some(
                    got.bytes()
                        .await
                        .map_err(Error::storage(format!("reading {key}")))?
                        .to_vec(),
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::storage(format!("reading {key}"))(e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures_util::TryStreamExt as _;
        use object_store::ObjectStore as _;
        let location = self.key(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.run(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&location))
                .try_collect()
                .await
                .map_err(Error::storage(format!("listing {prefix}")))?;
            let mut keys: Vec<String> = metas
                .into_iter()
                .map(|m| m.location.to_string())
                .map(|k| k.strip_prefix(&strip).map(str::to_owned).unwrap_or(k))
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        use object_store::ObjectStore as _;
        let location = self.key(key);
        match self.run(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(format!("deleting {key}"))(e)),
        }
    }

    fn url(&self) -> &str {
        &self.url
    }
}
