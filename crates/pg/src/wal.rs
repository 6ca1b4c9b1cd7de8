//! WAL positions and WAL file names: [`Lsn`] (`16/B374D848`) and [`WalFile`], the names
//! PostgreSQL gives segments, timeline history files, backup history files and partial
//! segments. Both are parsed with validation; a malformed one is an error, never a guess.
//! Segments are PostgreSQL's default 16 MB.

use std::{fmt, str::FromStr};

use crate::{Error, Result};

/// Bytes in one WAL segment (PostgreSQL's default `wal_segment_size`).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Segments per 4 GB "log" (the middle eight hex digits of a segment name).
const SEGMENTS_PER_LOG: u64 = 0x1_0000_0000 / SEGMENT_BYTES;

/// A WAL position, as printed by `pg_current_wal_lsn()` (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// A WAL segment: its timeline and its number counted from the start of WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline (the first eight hex digits of the name).
    pub timeline: u32,
    /// The segment number: log * 256 + segment within the log.
    pub number: u64,
}

/// A file PostgreSQL puts in `pg_wal` and hands to `archive_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFile {
    /// A segment (`000000010000000000000003`).
    Segment(Segment),
    /// A timeline history file (`00000002.history`).
    History(u32),
    /// A backup history file (`000000010000000000000002.00000028.backup`): the segment and
    /// the backup's start offset in it.
    Backup(Segment, u32),
    /// A partial segment left by a promotion (`000000010000000000000003.partial`).
    Partial(Segment),
}

impl Lsn {
    /// The segment holding this position on `timeline`.
    pub fn segment(self, timeline: u32) -> Segment {
        Segment {
            timeline,
            number: self.0 / SEGMENT_BYTES,
        }
    }
}

impl FromStr for Lsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidLsn(s.to_owned());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hex = |part: &str| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex(hi) || !hex(lo) {
            return Err(bad());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Segment {
    /// The next segment on the same timeline.
    pub fn next(self) -> Segment {
        Segment {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }

    /// The first position in the segment.
    pub fn start(self) -> Lsn {
        Lsn(self.number * SEGMENT_BYTES)
    }

    /// The file name (`000000010000000000000003`).
    pub fn name(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / SEGMENTS_PER_LOG,
            self.number % SEGMENTS_PER_LOG
        )
    }
}

impl FromStr for Segment {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<WalFile>()? {
            WalFile::Segment(segment) => Ok(segment),
            _ => Err(Error::InvalidWalName(s.to_owned())),
        }
    }
}

impl WalFile {
    /// The segment the file belongs to (none for a history file).
    pub fn segment(self) -> Option<Segment> {
        match self {
            WalFile::Segment(s) | WalFile::Backup(s, _) | WalFile::Partial(s) => Some(s),
            WalFile::History(_) => None,
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(self) -> u32 {
        match self {
            WalFile::History(tli) => tli,
            other => other.segment().map_or(0, |s| s.timeline),
        }
    }
}

impl FromStr for WalFile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidWalName(s.to_owned());
        // Only ASCII hex digits and dots are ever valid, so byte slicing below is safe.
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            return Err(bad());
        }
        let hex32 = |part: &str| {
            (part.len() == 8 && part.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(part, 16).ok())
                .flatten()
        };
        let segment = |name: &str| -> Option<Segment> {
            if name.len() != 24 {
                return None;
            }
            let timeline = hex32(&name[..8])?;
            let log = u64::from(hex32(&name[8..16])?);
            let seg = u64::from(hex32(&name[16..])?);
            (seg < SEGMENTS_PER_LOG).then_some(Segment {
                timeline,
                number: log * SEGMENTS_PER_LOG + seg,
            })
        };
        let parsed = if let Some(tli) = s.strip_suffix(".history") {
            hex32(tli).map(WalFile::History)
        } else if let Some(name) = s.strip_suffix(".partial") {
            segment(name).map(WalFile::Partial)
        } else if let Some(rest) = s.strip_suffix(".backup") {
            rest.split_once('.')
                .and_then(|(name, offset)| Some(WalFile::Backup(segment(name)?, hex32(offset)?)))
        } else {
            segment(s).map(WalFile::Segment)
        };
        parsed.ok_or_else(bad)
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFile::Segment(s) => write!(f, "{s}"),
            WalFile::History(tli) => write!(f, "{tli:08X}.history"),
            WalFile::Backup(s, offset) => write!(f, "{s}.{offset:08X}.backup"),
            WalFile::Partial(s) => write!(f, "{s}.partial"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_and_prints_round_trip() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
    }

    #[test]
    fn lsn_rejects_garbage() {
        for bad in [
            "",
            "16",
            "/1",
            "1/",
            "zz/1",
            "1/2/3",
            "123456789/0",
            "+1/0",
            "1/+0",
            "1/ 0",
        ] {
            let err = bad.parse::<Lsn>().unwrap_err();
            assert!(
                err.to_string().contains("not a WAL position"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn segments_of_positions() {
        let lsn: Lsn = "1/23000028".parse().unwrap();
        let segment = lsn.segment(1);
        assert_eq!(segment.name(), "000000010000000100000023");
        assert_eq!(segment.next().name(), "000000010000000100000024");
        let last: Segment = "0000000100000000000000FF".parse().unwrap();
        assert_eq!(last.next().name(), "000000010000000100000000");
        assert_eq!(last.start().to_string(), "0/FF000000");
    }

    #[test]
    fn every_kind_of_wal_file_round_trips() {
        for name in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            let file: WalFile = name.parse().unwrap();
            assert_eq!(file.to_string(), name);
        }
        assert_eq!(
            "0000000A.history".parse::<WalFile>().unwrap().timeline(),
            10
        );
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        for bad in [
            "",
            "../etc/passwd",
            "00000001000000000000000",
            "00000001000000000000000G",
            "000000010000000000000100",
            "x.history",
            "aÄÄÄÄÄÄÄÄÄÄÄÄ.backup",
            "ÄÄÄÄÄÄÄÄÄÄÄÄ",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000002.backup",
        ] {
            let err = bad.parse::<WalFile>().unwrap_err();
            assert!(
                err.to_string().contains("not a WAL file name"),
                "{bad}: {err}"
            );
        }
    }
}
