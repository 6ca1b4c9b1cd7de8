//! File helpers every backup path shares: private (0600) files, the SHA-256 of a file, and
//! zstd decompression that hashes what it writes.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Creates (or truncates) a file only its owner may read: 0600.
pub(crate) fn private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// A writer that hashes and counts what passes through.
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    pub(crate) hash: Sha256,
    pub(crate) bytes: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Size and SHA-256 (hex) of a file.
pub(crate) fn sha_of(path: &Path) -> Result<(u64, String)> {
    let mut input = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mut hashing = Hashing::new(std::io::sink());
    std::io::copy(&mut input, &mut hashing)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    Ok((hashing.bytes, hex::encode(hashing.hash.finalize())))
}

/// Decompresses `from` into a new private file `to`, synced; returns the size and SHA-256 of
/// what it wrote.
pub(crate) fn decompress(from: &Path, to: &Path) -> Result<(u64, String)> {
    let input = File::open(from).map_err(Error::io(format!("reading {}", from.display())))?;
    let mut decoder = zstd::stream::read::Decoder::new(input)
        .map_err(Error::io(format!("decompressing {}", from.display())))?;
    let out = private_file(to).map_err(Error::io(format!("creating {}", to.display())))?;
    let mut hashing = Hashing::new(out);
    std::io::copy(&mut decoder, &mut hashing)
        .and_then(|_| hashing.flush())
        .and_then(|()| hashing.inner.sync_all())
        .map_err(Error::io(format!("decompressing {}", from.display())))?;
    Ok((hashing.bytes, hex::encode(hashing.hash.finalize())))
}
