//! File helpers every backup path shares: private (0600) files, the SHA-256 of a file, zstd
//! decompression that hashes what it writes, reading ahead on a thread of its own, unpacking
//! a tar archive in large writes, and reading a file while another program still appends to
//! it.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, sync_channel},
    },
    time::Duration,
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

impl<W: Write> Hashing<W> {
    /// Flushes the writer and gives it back, with the size and SHA-256 (hex) of what was
    /// written through it.
    pub(crate) fn finish(mut self) -> std::io::Result<(W, u64, String)> {
        self.inner.flush()?;
        Ok((self.inner, self.bytes, hex_digest(self.hash)))
    }
}

/// A finished SHA-256 as the manifests keep it: lowercase hex.
pub(crate) fn hex_digest(hash: Sha256) -> String {
    hex::encode(hash.finalize())
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

/// A reader run on a thread of its own, up to four 1 MiB chunks ahead of whoever reads from
/// this: a restore decompresses on one core while the other writes the files the archive
/// holds. The end of the input is an explicit marker, so a reader thread that dies reads as
/// an error, never as a short archive.
pub(crate) struct ReadAhead {
    chunks: Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `reader` on a new thread.
    pub(crate) fn spawn(mut reader: impl Read + Send + 'static) -> Self {
        const CHUNK: usize = 1 << 20;
        let (send, chunks) = sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let mut filled = 0;
                let outcome = loop {
                    match reader.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == CHUNK {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                let end = filled == 0;
                let message = match outcome {
                    Err(e) => Err(e),
                    // An empty chunk is the end marker.
                    Ok(()) => Ok(chunk),
                };
                let failed = message.is_err();
                // The reader went away (it stopped on an error of its own): stop too.
                if send.send(message).is_err() || end || failed {
                    return;
                }
            }
        });
        ReadAhead {
            chunks,
            current: Vec::new(),
            at: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the thread reading ahead stopped before the end of the input",
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Unpacks the tar archive `input` reads into the directory `into`, permissions kept.
///
/// Regular files are written here in 1 MiB writes: the tar crate's own unpacking copies each
/// file in 8 KiB writes, which at scale 200 is 400,000 system calls for 3 GB of data files.
/// Every other entry (directories, links, the rare sparse file) is left to the tar crate.
/// Nothing lands outside `into`: an entry whose path is absolute or climbs out with `..` is
/// refused, and so is one whose directory resolves outside `into` through a link the
/// archive made.
pub(crate) fn unpack(input: impl Read, into: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let root = into.canonicalize()?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    let mut buf = vec![0u8; 1 << 20];
    // The last directory found inside `into` since the last entry that was not a file: an
    // archive lists a directory's files together.
    let mut checked: Option<std::path::PathBuf> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            entry.unpack_in(into)?;
            // A link made here may change where a directory leads: look again.
            checked = None;
            continue;
        }
        let path = entry.path()?.into_owned();
        if !path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the archive's entry {} points outside the directory",
                    path.display()
                ),
            ));
        }
        let dst = into.join(&path);
        let parent = dst.parent().unwrap_or(into);
        if checked.as_deref() != Some(parent) {
            std::fs::create_dir_all(parent)?;
            if !parent.canonicalize()?.starts_with(&root) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the archive's entry {} leads outside the directory through a link",
                        path.display()
                    ),
                ));
            }
            checked = Some(parent.to_path_buf());
        }
        let size = entry.size();
        let mode = entry.header().mode()? & 0o7777;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dst)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("creating {}: {e}", dst.display()))
            })?;
        let mut written = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                match entry.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                break;
            }
            file.write_all(&buf[..filled])?;
            written += filled as u64;
        }
        if written != size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the archive ends inside {}: {written} of its {size} bytes",
                    path.display()
                ),
            ));
        }
        if mode != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Reads a file that another program is still appending to: at its current end it waits
/// for more until `finished` is set (the writer has exited), then reads what is left and
/// ends. Only for files their writer never rewrites (pg_basebackup's base archive).
pub(crate) struct Follow {
    file: File,
    finished: Arc<AtomicBool>,
}

impl Follow {
    pub(crate) fn new(file: File, finished: Arc<AtomicBool>) -> Self {
        Follow { file, finished }
    }
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // Read after looking: bytes written before the writer finished are read before
            // an end is believed.
            let finished = self.finished.load(Ordering::Acquire);
            let n = self.file.read(buf)?;
            if n > 0 || finished || buf.is_empty() {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Size and SHA-256 (hex) of a file.
pub(crate) fn sha_of(path: &Path) -> Result<(u64, String)> {
    let input = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    sha_of_reader(input).map_err(Error::io(format!("reading {}", path.display())))
}

/// Size and SHA-256 (hex) of what `input` reads to its end, read in large blocks.
pub(crate) fn sha_of_reader(input: impl Read) -> std::io::Result<(u64, String)> {
    let mut input = std::io::BufReader::with_capacity(1 << 20, input);
    let mut hashing = Hashing::new(std::io::sink());
    std::io::copy(&mut input, &mut hashing)?;
    let (_, bytes, sha256) = hashing.finish()?;
    Ok((bytes, sha256))
}

/// Compresses `from` into a new private file `to` (zstd at `level`). Not synced: the store
/// syncs what it keeps (`Store::put_file`).
pub(crate) fn compress(from: &Path, to: &Path, level: i32) -> Result<()> {
    let mut input = File::open(from).map_err(Error::io(format!("reading {}", from.display())))?;
    let out = private_file(to).map_err(Error::io(format!("creating {}", to.display())))?;
    let mut encoder = zstd::stream::write::Encoder::new(std::io::BufWriter::new(out), level)
        .map_err(Error::io("starting zstd"))?;
    std::io::copy(&mut input, &mut encoder)
        .and_then(|_| encoder.finish())
        .and_then(|writer| writer.into_inner().map_err(|e| e.into_error()))
        .map(drop)
        .map_err(Error::io(format!("compressing {}", from.display())))
}

/// Decompresses `from` into a new private file `to`, synced; returns the size and SHA-256 of
/// what it wrote.
pub(crate) fn decompress(from: &Path, to: &Path) -> Result<(u64, String)> {
    let input = File::open(from).map_err(Error::io(format!("reading {}", from.display())))?;
    let mut decoder = zstd::stream::read::Decoder::new(input)
        .map_err(Error::io(format!("decompressing {}", from.display())))?;
    let out = private_file(to).map_err(Error::io(format!("creating {}", to.display())))?;
    // 1 MiB writes: copying straight into the file would write 8 KiB at a time.
    let mut hashing = Hashing::new(std::io::BufWriter::with_capacity(1 << 20, out));
    std::io::copy(&mut decoder, &mut hashing)
        .and_then(|_| hashing.finish())
        .and_then(|(file, bytes, sha256)| file.get_ref().sync_all().map(|()| (bytes, sha256)))
        .map_err(Error::io(format!("decompressing {}", from.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_a_file_reads_what_is_appended_until_the_writer_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing");
        let mut writer = File::create(&path).unwrap();
        let finished = Arc::new(AtomicBool::new(false));
        let mut follow = Follow::new(File::open(&path).unwrap(), finished.clone());
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            follow.read_to_end(&mut all).unwrap();
            all
        });
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let chunk = vec![i; 1000 + usize::from(i)];
            writer.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The last bytes land just before the writer is called finished.
        writer.write_all(b"end").unwrap();
        expected.extend_from_slice(b"end");
        drop(writer);
        finished.store(true, Ordering::Release);
        assert_eq!(reader.join().unwrap(), expected);
    }

    /// A tar archive shaped like a base backup's: directories, files of several sizes and
    /// modes, and a tablespace's link.
    fn base_like_archive() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add =
            |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(kind);
                header.set_mode(mode);
                header.set_size(data.len() as u64);
                if let Some(link) = link {
                    header.set_link_name(link).unwrap();
                }
                builder.append_data(&mut header, path, data).unwrap();
            };
        add("base", tar::EntryType::Directory, 0o700, b"", None);
        add("base/1", tar::EntryType::Directory, 0o700, b"", None);
        add("base/1/empty", tar::EntryType::Regular, 0o600, b"", None);
        let large: Vec<u8> = (0..(3 << 20) + 5u32).map(|i| (i % 253) as u8).collect();
        add("base/1/16384", tar::EntryType::Regular, 0o600, &large, None);
        add("PG_VERSION", tar::EntryType::Regular, 0o640, b"15\n", None);
        add("pg_tblspc", tar::EntryType::Directory, 0o700, b"", None);
        add(
            "pg_tblspc/16385",
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("/srv/space"),
        );
        builder.into_inner().unwrap()
    }

    /// Every path under `dir` with its mode and its content (a link: its target).
    fn tree(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                let mode = meta.permissions().mode() & 0o7777;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    out.push((name, 0, target.display().to_string().into_bytes()));
                } else if meta.is_dir() {
                    out.push((name, mode, Vec::new()));
                    stack.push(path);
                } else {
                    out.push((name, mode, std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn unpacking_lays_out_what_the_tar_crate_does() {
        let archive = base_like_archive();
        let ours = tempfile::tempdir().unwrap();
        unpack(archive.as_slice(), ours.path()).unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let mut reference = tar::Archive::new(archive.as_slice());
        reference.set_preserve_permissions(true);
        reference.unpack(theirs.path()).unwrap();
        let got = tree(ours.path());
        assert_eq!(got, tree(theirs.path()));
        // The comparison saw what matters.
        assert!(got.iter().any(|(name, mode, data)| name == "base/1/16384"
            && *mode == 0o600
            && data.len() == (3 << 20) + 5));
        assert!(
            got.iter()
                .any(|(name, mode, _)| name == "PG_VERSION" && *mode == 0o640)
        );
        assert!(
            got.iter()
                .any(|(name, _, target)| name == "pg_tblspc/16385" && target == b"/srv/space")
        );
    }

    #[test]
    fn unpacking_refuses_entries_that_leave_the_directory_and_archives_cut_short() {
        let outside = tempfile::tempdir().unwrap();
        // A file whose path climbs out; tar's builder refuses to write one, so by hand.
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_size(2);
        header.set_cksum();
        let mut climbing = header.as_bytes().to_vec();
        climbing.extend_from_slice(b"hi");
        climbing.resize(climbing.len() + 510 + 1024, 0);
        let into = outside.path().join("data");
        std::fs::create_dir(&into).unwrap();
        let err = unpack(climbing.as_slice(), &into).unwrap_err();
        assert!(err.to_string().contains("points outside"), "{err}");
        assert!(!outside.path().join("escape").exists());

        // A link the archive makes, then a file through it.
        let elsewhere = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_link_name(elsewhere.path()).unwrap();
        builder
            .append_data(&mut link, "pg_tblspc", std::io::empty())
            .unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_mode(0o600);
        file.set_size(2);
        builder
            .append_data(&mut file, "pg_tblspc/planted", &b"hi"[..])
            .unwrap();
        let through_link = builder.into_inner().unwrap();
        let into = tempfile::tempdir().unwrap();
        let err = unpack(through_link.as_slice(), into.path()).unwrap_err();
        assert!(err.to_string().contains("through a link"), "{err}");
        assert!(!elsewhere.path().join("planted").exists());

        // An archive that ends inside a file's data.
        let archive = base_like_archive();
        let cut = &archive[..archive.len() / 2];
        let into = tempfile::tempdir().unwrap();
        let err = unpack(cut, into.path()).unwrap_err();
        assert!(err.to_string().contains("ends inside"), "{err}");
    }

    #[test]
    fn reading_ahead_gives_every_byte_in_order_and_passes_errors_on() {
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        ReadAhead::spawn(std::io::Cursor::new(data.clone()))
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, data);
        let mut empty = Vec::new();
        ReadAhead::spawn(std::io::empty())
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());

        /// Two chunks, then a failure.
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf.fill(7);
                Ok(buf.len())
            }
        }
        let mut sink = Vec::new();
        let err = ReadAhead::spawn(Failing(2))
            .read_to_end(&mut sink)
            .unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(sink.len(), 2 << 20);

        /// A reader that panics: an error, not a short read.
        struct Panicking;
        impl Read for Panicking {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                panic!("the reader thread dies")
            }
        }
        let err = ReadAhead::spawn(Panicking)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("stopped before the end"), "{err}");
    }
}
