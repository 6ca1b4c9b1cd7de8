//! File helpers every backup path shares: private (0600) files, the SHA-256 of a file, zstd
//! decompression that hashes what it writes, reading ahead on a thread of its own, and
//! reading a file while another program still appends to it.

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
    Ok((hashing.bytes, hex::encode(hashing.hash.finalize())))
}

/// Compresses `from` into a new private file `to` (zstd at `level`), synced.
pub(crate) fn compress(from: &Path, to: &Path, level: i32) -> Result<()> {
    let mut input = File::open(from).map_err(Error::io(format!("reading {}", from.display())))?;
    let out = private_file(to).map_err(Error::io(format!("creating {}", to.display())))?;
    let mut encoder = zstd::stream::write::Encoder::new(std::io::BufWriter::new(out), level)
        .map_err(Error::io("starting zstd"))?;
    std::io::copy(&mut input, &mut encoder)
        .and_then(|_| encoder.finish())
        .and_then(|writer| writer.into_inner().map_err(|e| e.into_error()))
        .and_then(|file| file.sync_all())
        .map_err(Error::io(format!("compressing {}", from.display())))
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
