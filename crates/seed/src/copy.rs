//! PostgreSQL's binary COPY format, written row by row, with a SHA-256 of everything written
//! (the table's checksum).

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between the Unix epoch and PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Writes one table's binary COPY stream.
pub(crate) struct CopyWriter<W: Write> {
    out: W,
    hash: Sha256,
    rows: u64,
    scratch: Vec<u8>,
}

impl<W: Write> CopyWriter<W> {
    /// Starts the stream (signature, flags, header extension).
    pub(crate) fn new(out: W) -> io::Result<Self> {
        let mut writer = CopyWriter {
            out,
            hash: Sha256::new(),
            rows: 0,
            scratch: Vec::with_capacity(1024),
        };
        writer.scratch.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        writer.scratch.extend_from_slice(&0i32.to_be_bytes());
        writer.scratch.extend_from_slice(&0i32.to_be_bytes());
        writer.flush_scratch()?;
        Ok(writer)
    }

    /// Starts a row of `fields` columns.
    pub(crate) fn row(&mut self, fields: i16) -> &mut Self {
        self.rows += 1;
        self.scratch.extend_from_slice(&fields.to_be_bytes());
        self
    }

    /// `bigint`.
    pub(crate) fn int8(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    /// `bigint` or NULL.
    pub(crate) fn int8_opt(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int8(v),
            None => self.null(),
        }
    }

    /// `text`.
    pub(crate) fn text(&mut self, v: &str) -> &mut Self {
        self.field(v.as_bytes())
    }

    /// `text` or NULL.
    pub(crate) fn text_opt(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// `bytea`.
    pub(crate) fn bytea(&mut self, v: &[u8]) -> &mut Self {
        self.field(v)
    }

    /// `jsonb` (version byte 1, then the JSON text).
    pub(crate) fn jsonb(&mut self, json: &str) -> &mut Self {
        let len = i32::try_from(json.len() + 1).unwrap_or(i32::MAX);
        self.scratch.extend_from_slice(&len.to_be_bytes());
        self.scratch.push(1);
        self.scratch.extend_from_slice(json.as_bytes());
        self
    }

    /// `timestamptz` from microseconds since the Unix epoch.
    pub(crate) fn timestamptz(&mut self, unix_micros: i64) -> &mut Self {
        self.field(&(unix_micros - PG_EPOCH_MICROS).to_be_bytes())
    }

    /// `timestamptz` or NULL.
    pub(crate) fn timestamptz_opt(&mut self, unix_micros: Option<i64>) -> &mut Self {
        match unix_micros {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// `date` from days since the Unix epoch.
    pub(crate) fn date(&mut self, unix_days: i32) -> &mut Self {
        self.field(&(unix_days - PG_EPOCH_DAYS).to_be_bytes())
    }

    /// NULL.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.scratch.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// Ends the row (hands its bytes to the hash and the output).
    pub(crate) fn end(&mut self) -> io::Result<()> {
        self.flush_scratch()
    }

    /// Writes the trailer; returns rows written and the stream's SHA-256.
    pub(crate) fn finish(mut self) -> io::Result<(u64, [u8; 32])> {
        self.scratch.extend_from_slice(&(-1i16).to_be_bytes());
        self.flush_scratch()?;
        self.out.flush()?;
        Ok((self.rows, self.hash.finalize().into()))
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.scratch.extend_from_slice(&len.to_be_bytes());
        self.scratch.extend_from_slice(bytes);
        self
    }

    fn flush_scratch(&mut self) -> io::Result<()> {
        self.hash.update(&self.scratch);
        self.out.write_all(&self.scratch)?;
        self.scratch.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_binary_format() {
        let mut out = Vec::new();
        let mut w = CopyWriter::new(&mut out).unwrap();
        w.row(3).int8(1).text("ab").null();
        w.end().unwrap();
        let (rows, _) = w.finish().unwrap();
        assert_eq!(rows, 1);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[
            0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff,
            0xff,
        ]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, expected);
    }

    #[test]
    fn times_are_relative_to_2000() {
        let mut out = Vec::new();
        let mut w = CopyWriter::new(&mut out).unwrap();
        w.row(2)
            .timestamptz(PG_EPOCH_MICROS + 5)
            .date(PG_EPOCH_DAYS + 1);
        w.end().unwrap();
        w.finish().unwrap();
        let body = &out[19..];
        assert_eq!(&body[..2], &[0, 2]);
        assert_eq!(&body[2..14], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&body[14..22], &[0, 0, 0, 4, 0, 0, 0, 1]);
    }
}
