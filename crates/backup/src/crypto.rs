//! Client-side encryption of what a repository holds, in the age format
//! (age-encryption.org/v1: X25519 recipients, ChaCha20-Poly1305 in 64 KiB chunks, every chunk
//! authenticated). An operator can decrypt any object without pgops, with Debian's `age`:
//! `age -d -i backup-keys.txt wal/000000010000000000000003.zst.age | zstd -d`.
//!
//! Writers need only the public keys (`PGOPS_REPO_RECIPIENTS`, or a file of them in
//! `PGOPS_REPO_RECIPIENTS_FILE`), so a database host can archive without being able to read
//! the repository; readers need the secret keys (`PGOPS_REPO_IDENTITIES_FILE`, one
//! `AGE-SECRET-KEY-1...` per line, the current key and every older one still needed, or
//! `PGOPS_REPO_IDENTITY`). Keys never come from the command line and are never printed; an
//! object records the public keys it was written for, so a missing key is named.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::Path,
    str::FromStr,
};

use age::x25519;

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    files::private_file,
    repo::{Access, Encrypted, Store},
};

/// Where a repository says whether it is encrypted.
pub const MARKER_KEY: &str = "pgops-repository.json";

/// What the marker holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Its format.
    pub format: u32,
    /// `age` or `none`.
    pub encryption: String,
    /// The public keys the repository was created for (later keys may be added).
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// Whether `store` is encrypted, settled against the keys given: the store to use (wrapped
/// with the keys when it is encrypted). A new repository is marked as the keys say; an
/// encrypted one without keys, or a plaintext one with keys, is refused, so encrypted and
/// plaintext objects never mix.
pub fn settle(store: Box<dyn Store>, keys: Option<Keys>, access: Access) -> Result<Box<dyn Store>> {
    let marker: Option<Marker> = match store.get_bytes(MARKER_KEY)? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            id: "repository".into(),
            file: MARKER_KEY.into(),
            detail: e.to_string(),
        })?),
        None => None,
    };
    let encrypted = match (&marker, &keys) {
        (Some(m), _) => m.encryption == "age",
        // No marker, no keys: plaintext, as every repository was before the marker.
        (None, None) => false,
        (None, Some(k)) => {
            let empty = store.list("backups/")?.is_empty() && store.list("wal/")?.is_empty();
            if !empty {
                return Err(Error::Invalid(format!(
                    "{} holds plaintext backups and WAL, and encryption keys are set:                      encrypted and plaintext objects would mix. Encrypt into a new repository                      (and keep this one until its backups expire), or unset                      PGOPS_REPO_RECIPIENTS and PGOPS_REPO_IDENTITIES_FILE",
                    store.url()
                )));
            }
            if access == Access::Create {
                let marker = Marker {
                    format: 1,
                    encryption: "age".into(),
                    recipients: k.recipient_names(),
                };
                let json = serde_json::to_vec_pretty(&marker)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                if store.put_bytes_new(MARKER_KEY, &json)? {
                    store.publish(MARKER_KEY)?;
                }
            }
            true
        }
    };
    match (encrypted, keys) {
        (true, Some(keys)) => Ok(Box::new(Encrypted { inner: store, keys })),
        (true, None) => Err(Error::Invalid(format!(
            "{} is encrypted (age, for {}); set PGOPS_REPO_RECIPIENTS to write to it and              PGOPS_REPO_IDENTITIES_FILE to read from it",
            store.url(),
            marker.map(|m| m.recipients.join(", ")).unwrap_or_default()
        ))),
        (false, Some(_)) => Err(Error::Invalid(format!(
            "{} is a plaintext repository, and encryption keys are set: encrypted and              plaintext objects would mix. Encrypt into a new repository, or unset              PGOPS_REPO_RECIPIENTS and PGOPS_REPO_IDENTITIES_FILE",
            store.url()
        ))),
        (false, None) => {
            if marker.is_none() && access == Access::Create {
                let marker = Marker {
                    format: 1,
                    encryption: "none".into(),
                    recipients: Vec::new(),
                };
                let json = serde_json::to_vec_pretty(&marker)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                if store.put_bytes_new(MARKER_KEY, &json).unwrap_or(false) {
                    let _ = store.publish(MARKER_KEY);
                }
            }
            Ok(store)
        }
    }
}

/// Encrypts the local file `local` when the store is encrypted and stores it under `key`
/// (`key.age` when encrypted). Returns the stored size and SHA-256, and for an encrypted
/// object the public keys it was written for and the SHA-256 of what was encrypted.
pub fn store_file(store: &dyn Store, key: &str, local: &Path) -> Result<Stored> {
    let input = File::open(local).map_err(Error::io(format!("reading {}", local.display())))?;
    seal(store, local, input)?.put(store, key)
}

/// Stores the detail of a record that must not be plaintext in an encrypted repository
/// (table names, a probe's answer, a server's message quoting a row) under `key.age`,
/// encrypted, and returns that key; `None` when the store is not encrypted, and the record
/// keeps its detail. The plaintext never touches the disk.
pub(crate) fn store_private_json(
    store: &dyn Store,
    key: &str,
    detail: &impl Serialize,
) -> Result<Option<String>> {
    if store.keys().is_none() {
        return Ok(None);
    }
    let json = serde_json::to_vec_pretty(detail).map_err(|e| Error::Invalid(e.to_string()))?;
    // Names the input in messages, and where to encrypt for a store with no staging area.
    let dir = tempfile::tempdir().map_err(Error::io("creating a temporary directory"))?;
    seal(store, &dir.path().join("detail.json"), json.as_slice())?.put(store, key)?;
    Ok(Some(format!("{key}.age")))
}

/// Reads `input`, the content of the local file `local` (or of what is still being written
/// to it), and prepares it for [`Sealed::put`]: hashed, and encrypted when the store is.
/// Splitting the reading from the storing lets a file be hashed and encrypted while the
/// program that writes it is still running.
pub fn seal(store: &dyn Store, local: &Path, input: impl Read) -> Result<Sealed> {
    match store.keys() {
        None => {
            let (bytes, sha256) = crate::files::sha_of_reader(input)
                .map_err(Error::io(format!("reading {}", local.display())))?;
            Ok(Sealed {
                plain_bytes: bytes,
                stored: Stored {
                    bytes,
                    sha256,
                    encrypted_for: Vec::new(),
                    plain_sha256: None,
                },
                local: local.to_path_buf(),
                encrypted: None,
            })
        }
        Some(keys) => {
            // Encrypted straight into the repository's own staging area when it is local (so
            // storing it is a rename), hashing what is read and what is written on the way.
            // Beside the plaintext when the staging area belongs to another user (the server's
            // user archiving into a repository the backup user created).
            let beside = local.parent().unwrap_or(Path::new(".")).to_path_buf();
            let in_repository = store.sealed_staging_root().and_then(|root| {
                std::fs::create_dir_all(&root).ok()?;
                tempfile::Builder::new()
                    .prefix(".sealed-")
                    .tempfile_in(&root)
                    .ok()
            });
            let sealed = match in_repository {
                Some(file) => file,
                None => tempfile::Builder::new()
                    .prefix(".sealed-")
                    .tempfile_in(&beside)
                    .map_err(Error::io(format!(
                        "creating a file in {}",
                        beside.display()
                    )))?,
            }
            .into_temp_path();
            let (plain, plain_bytes, bytes, sha256) =
                keys.encrypt_reader(input, &local.display().to_string(), &sealed)?;
            Ok(Sealed {
                plain_bytes,
                stored: Stored {
                    bytes,
                    sha256,
                    encrypted_for: keys.recipient_names(),
                    plain_sha256: Some(plain),
                },
                local: local.to_path_buf(),
                encrypted: Some(sealed),
            })
        }
    }
}

/// A file read by [`seal`], ready to be stored; dropped unstored, its encrypted copy is
/// removed.
#[derive(Debug)]
pub struct Sealed {
    plain_bytes: u64,
    stored: Stored,
    local: std::path::PathBuf,
    encrypted: Option<tempfile::TempPath>,
}

impl Sealed {
    /// How many bytes of the plaintext were read.
    pub fn plain_bytes(&self) -> u64 {
        self.plain_bytes
    }

    /// What will be stored: its size and SHA-256, known before it is.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Stores it under `key` (`key.age` when encrypted).
    pub fn put(self, store: &dyn Store, key: &str) -> Result<Stored> {
        match &self.encrypted {
            None => store.put_file(key, &self.local)?,
            Some(sealed) => store.put_file(&format!("{key}.age"), sealed)?,
        }
        Ok(self.stored)
    }
}

/// What [`store_file`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bytes stored.
    pub bytes: u64,
    /// SHA-256 of what is stored.
    pub sha256: String,
    /// The public keys it was encrypted for (empty: plaintext).
    pub encrypted_for: Vec<String>,
    /// SHA-256 of the plaintext file, for an encrypted object.
    pub plain_sha256: Option<String>,
}

/// The keys pgops was given.
#[derive(Clone, Default)]
pub struct Keys {
    recipients: Vec<x25519::Recipient>,
    identities: Vec<x25519::Identity>,
    /// Where the secret keys came from, for a restored server's `restore_command`.
    identities_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public keys only: a secret key is never printed.
        f.debug_struct("Keys")
            .field("recipients", &self.recipient_names())
            .field("identities", &self.identities.len())
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_key_file(var: &str, path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::Invalid(format!(
            "{var}={path}: cannot read it ({e}); point it at a readable file"
        ))
    })
}

/// Public keys from text: `age1...` separated by commas, spaces or lines; `#` comments.
fn parse_recipients(var: &str, text: &str) -> Result<Vec<x25519::Recipient>> {
    key_words(text)
        .map(|word| {
            x25519::Recipient::from_str(word).map_err(|e| {
                Error::Invalid(format!(
                    "{var}: `{word}` is not an age public key ({e}); generate a key pair with \
                     `age-keygen` and give its `age1...` public key"
                ))
            })
        })
        .collect()
}

/// Secret keys from text, without ever echoing one.
fn parse_identities(var: &str, text: &str) -> Result<Vec<x25519::Identity>> {
    key_words(text)
        .enumerate()
        .map(|(n, word)| {
            x25519::Identity::from_str(word).map_err(|_| {
                Error::Invalid(format!(
                    "{var}: key {} is not an age secret key (AGE-SECRET-KEY-1...); the file \
                     `age-keygen` writes holds one per line",
                    n + 1
                ))
            })
        })
        .collect()
}

fn key_words(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split([',', ' ', '\t']))
        .map(str::trim)
        .filter(|w| !w.is_empty())
}

impl Keys {
    /// The keys from the environment; `None` when no key variable is set (plaintext).
    pub fn from_env() -> Result<Option<Keys>> {
        let mut keys = Keys::default();
        if let Some(text) = env("PGOPS_REPO_RECIPIENTS") {
            keys.recipients
                .extend(parse_recipients("PGOPS_REPO_RECIPIENTS", &text)?);
        }
        if let Some(path) = env("PGOPS_REPO_RECIPIENTS_FILE") {
            let text = read_key_file("PGOPS_REPO_RECIPIENTS_FILE", &path)?;
            keys.recipients
                .extend(parse_recipients("PGOPS_REPO_RECIPIENTS_FILE", &text)?);
        }
        if let Some(text) = env("PGOPS_REPO_IDENTITY") {
            keys.identities
                .extend(parse_identities("PGOPS_REPO_IDENTITY", &text)?);
        }
        if let Some(path) = env("PGOPS_REPO_IDENTITIES_FILE") {
            let text = read_key_file("PGOPS_REPO_IDENTITIES_FILE", &path)?;
            keys.identities
                .extend(parse_identities("PGOPS_REPO_IDENTITIES_FILE", &text)?);
            keys.identities_file = Some(std::path::PathBuf::from(path));
        }
        if keys.recipients.is_empty() && keys.identities.is_empty() {
            return Ok(None);
        }
        Ok(Some(keys))
    }

    /// Keys from text, as the environment would give them (for tests and libraries).
    pub fn new(recipients: &str, identities: &str) -> Result<Keys> {
        Ok(Keys {
            recipients: parse_recipients("recipients", recipients)?,
            identities: parse_identities("identities", identities)?,
            identities_file: None,
        })
    }

    /// The file the secret keys were read from (`PGOPS_REPO_IDENTITIES_FILE`).
    pub fn identities_file(&self) -> Option<&Path> {
        self.identities_file.as_deref()
    }

    /// Whether an object written for `written_for` can be read with these keys.
    pub fn can_read(&self, written_for: &[String]) -> bool {
        let held = self.identity_names();
        written_for.iter().any(|w| held.contains(w))
    }

    /// The public keys new objects are written for.
    pub fn recipient_names(&self) -> Vec<String> {
        self.recipients.iter().map(ToString::to_string).collect()
    }

    /// The public keys of the secret keys held (what can be read).
    pub fn identity_names(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    fn require_recipients(&self) -> Result<()> {
        if self.recipients.is_empty() {
            return Err(Error::Invalid(
                "the repository is encrypted and no public key is set to write with; set \
                 PGOPS_REPO_RECIPIENTS (age1...) or PGOPS_REPO_RECIPIENTS_FILE"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Encrypts `src` into `dst` (0600) in one pass, returning the SHA-256 of what was read,
    /// and the size and SHA-256 of what was written.
    pub fn encrypt_hashing(&self, src: &Path, dst: &Path) -> Result<(String, u64, String)> {
        let input = File::open(src).map_err(Error::io(format!("reading {}", src.display())))?;
        let (plain, _, bytes, sha256) =
            self.encrypt_reader(input, &src.display().to_string(), dst)?;
        Ok((plain, bytes, sha256))
    }

    /// [`Keys::encrypt_hashing`] of what `input` reads (`what` names it in errors): the
    /// SHA-256 and size of what was read, then of what was written.
    fn encrypt_reader(
        &self,
        input: impl Read,
        what: &str,
        dst: &Path,
    ) -> Result<(String, u64, u64, String)> {
        self.require_recipients()?;
        let recipients = self.recipients.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients)
            .map_err(|e| Error::Invalid(format!("encrypting: {e}")))?;
        let mut reading = HashingReader::new(BufReader::with_capacity(1 << 20, input));
        let output = private_file(dst).map_err(Error::io(format!("creating {}", dst.display())))?;
        let mut writer = encryptor
            .wrap_output(crate::files::Hashing::new(BufWriter::with_capacity(
                1 << 20,
                output,
            )))
            .map_err(Error::io("starting encryption"))?;
        std::io::copy(&mut reading, &mut writer)
            .map_err(Error::io(format!("encrypting {what}")))?;
        let (_, bytes, sha256) = writer
            .finish()
            .map_err(Error::io("finishing encryption"))?
            .finish()
            .map_err(Error::io(format!("writing {}", dst.display())))?;
        // Not synced here: the store syncs what it keeps (`Store::put_file`).
        Ok((
            crate::files::hex_digest(reading.hash),
            reading.bytes,
            bytes,
            sha256,
        ))
    }

    /// Decrypts `src` (the stored object `key`, written for `written_for`) into a new file
    /// `dst`, streaming, and returns the SHA-256 of what it wrote (so the caller need not read
    /// it again to check it); a wrong key or a changed byte is an error and `dst` is removed.
    pub fn decrypt_file(
        &self,
        src: &Path,
        dst: &Path,
        key: &str,
        written_for: &[String],
    ) -> Result<String> {
        if self.identities.is_empty() {
            return Err(Error::Invalid(format!(
                "{key} is encrypted and no secret key is set to read it with; set \
                 PGOPS_REPO_IDENTITIES_FILE to the file of age secret keys{}",
                for_whom(written_for)
            )));
        }
        let result = (|| {
            let input = File::open(src).map_err(Error::io(format!("reading {}", src.display())))?;
            let decryptor =
                age::Decryptor::new(BufReader::new(input)).map_err(|e| Error::Corrupt {
                    id: "repository".into(),
                    file: key.to_owned(),
                    detail: format!("not an age file ({e})"),
                })?;
            let identities = self.identities.iter().map(|i| i as &dyn age::Identity);
            let mut reader = decryptor.decrypt(identities).map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => Error::Invalid(format!(
                    "{key}: none of the secret keys given ({}) can read it{}; add the key it \
                     was written with to PGOPS_REPO_IDENTITIES_FILE",
                    self.identity_names().join(", "),
                    for_whom(written_for)
                )),
                other => Error::Corrupt {
                    id: "repository".into(),
                    file: key.to_owned(),
                    detail: format!("its encryption header does not check out ({other})"),
                },
            })?;
            let output =
                private_file(dst).map_err(Error::io(format!("creating {}", dst.display())))?;
            let mut writer = crate::files::Hashing::new(BufWriter::new(output));
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buffer).map_err(|e| Error::Corrupt {
                    id: "repository".into(),
                    file: key.to_owned(),
                    detail: format!("it was changed after it was written ({e})"),
                })?;
                if n == 0 {
                    break;
                }
                writer
                    .write_all(&buffer[..n])
                    .map_err(Error::io(format!("writing {}", dst.display())))?;
            }
            let (file, _, sha256) = writer
                .finish()
                .map_err(Error::io("flushing the decrypted file"))?;
            file.get_ref()
                .sync_all()
                .map_err(Error::io(format!("syncing {}", dst.display())))?;
            Ok(sha256)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(dst);
        }
        result
    }
}

/// A reader that hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: <sha2::Sha256 as sha2::Digest>::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn for_whom(written_for: &[String]) -> String {
    if written_for.is_empty() {
        String::new()
    } else {
        format!(" (it was written for {})", written_for.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair() -> (String, String) {
        let identity = x25519::Identity::generate();
        (
            identity.to_public().to_string(),
            secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned(),
        )
    }

    #[test]
    fn a_file_round_trips_and_a_wrong_key_or_a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = pair();
        let keys = Keys::new(&public, &secret).unwrap();
        let plain = dir.path().join("plain");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&plain, &data).unwrap();
        let sealed = dir.path().join("sealed");
        keys.encrypt_hashing(&plain, &sealed).unwrap();
        let stored = std::fs::read(&sealed).unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(
            !stored
                .windows(64)
                .any(|w| data.windows(64).next() == Some(w))
        );
        let back = dir.path().join("back");
        let sha = keys
            .decrypt_file(&sealed, &back, "obj", std::slice::from_ref(&public))
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert_eq!(sha, crate::files::sha_of(&back).unwrap().1, "what it wrote");

        // Another key: named, nothing written.
        let (other_public, other_secret) = pair();
        let other = Keys::new(&other_public, &other_secret).unwrap();
        let out = dir.path().join("out");
        let err = other
            .decrypt_file(&sealed, &out, "obj", std::slice::from_ref(&public))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none of the secret keys") && err.contains(&public),
            "{err}"
        );
        assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
        assert!(!out.exists());

        // A flipped byte in the middle: refused, nothing left behind.
        let mut flipped = stored.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        std::fs::write(&sealed, &flipped).unwrap();
        let err = keys
            .decrypt_file(&sealed, &out, "obj", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed after it was written"), "{err}");
        assert!(!out.exists());

        // Key rotation: an object for the old key reads with both listed.
        std::fs::write(&sealed, &stored).unwrap();
        let both = Keys::new(&other_public, &format!("{other_secret}\n# old\n{secret}")).unwrap();
        both.decrypt_file(&sealed, &out, "obj", &[]).unwrap();
    }

    #[test]
    fn bad_keys_are_named_without_echoing_a_secret() {
        let err = Keys::new("age1notakey", "").unwrap_err().to_string();
        assert!(err.contains("not an age public key"), "{err}");
        let err = Keys::new("", "AGE-SECRET-KEY-1NOPE")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 1 is not an age secret key"), "{err}");
        assert!(!err.contains("NOPE"), "{err}");
        assert!(!format!("{:?}", Keys::new("", &pair().1).unwrap()).contains("AGE-SECRET"));
    }
}
