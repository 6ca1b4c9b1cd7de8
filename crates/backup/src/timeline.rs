//! Timelines as the WAL archive holds them. Every promotion (a failover, a switchover, a
//! point-in-time restore that was promoted) starts a new timeline that branches off its parent
//! at a switch point; its `.history` file lists every ancestor and where each was left. A
//! recovery follows one timeline's history: it reads each WAL segment from the newest timeline
//! on that history that had begun by the segment, as PostgreSQL does, so after a failover the
//! old primary's segments past the switch point belong to an abandoned branch.
//!
//! [`Archive`] is what the repository holds (segments and history); [`Archive::plan`] walks one
//! timeline's history from a backup's start and names every segment recovery reads and every
//! gap, with the range of WAL positions that cannot be recovered. Everything but
//! [`Archive::read`] is pure.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use pgops_pg::{Lsn, Segment, WalFile};
use serde::Serialize;

use crate::{Error, Result, repo::Store, wal};

/// One timeline on a history: where it begins (the switch point from its parent; 0 for the
/// first) and where the history leaves it (the switch point to the next; none for the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// The timeline.
    pub timeline: u32,
    /// Where it begins.
    #[serde(serialize_with = "lsn_text")]
    pub begin: Lsn,
    /// Where the history leaves it.
    #[serde(serialize_with = "opt_lsn_text")]
    pub end: Option<Lsn>,
}

fn lsn_text<S: serde::Serializer>(lsn: &Lsn, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(lsn)
}

fn opt_lsn_text<S: serde::Serializer>(
    lsn: &Option<Lsn>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match lsn {
        Some(lsn) => s.collect_str(lsn),
        None => s.serialize_none(),
    }
}

/// Reads a `.history` file: one line per ancestor (`parent<TAB>switch point<TAB>reason`),
/// oldest first; comments and blank lines are skipped. Returns the history of `timeline` as
/// spans, ending with `timeline` itself (open-ended). Pure.
pub fn parse_history(timeline: u32, text: &str) -> Result<Vec<Span>> {
    let bad = |line: &str, why: &str| {
        Error::Invalid(format!(
            "{timeline:08X}.history: the line {line:?} {why}; the file is damaged"
        ))
    };
    let mut spans: Vec<Span> = Vec::new();
    let mut begin = Lsn(0);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parent: u32 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad(line, "does not start with a timeline number"))?;
        let at: Lsn = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad(line, "has no switch point"))?;
        if spans.last().is_some_and(|s| s.timeline >= parent) || parent >= timeline || at < begin {
            return Err(bad(line, "is out of order"));
        }
        spans.push(Span {
            timeline: parent,
            begin,
            end: Some(at),
        });
        begin = at;
    }
    spans.push(Span {
        timeline,
        begin,
        end: None,
    });
    Ok(spans)
}

/// Which timeline's copy of segment `number` a recovery along `path` reads: the newest one
/// that had begun by that segment. Pure.
pub fn provider(path: &[Span], number: u64) -> u32 {
    path.iter()
        .rev()
        .find(|s| s.begin.segment(s.timeline).number <= number)
        .map_or(1, |s| s.timeline)
}

/// How far a recovery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// To the end of the archived WAL on the path.
    End,
    /// To this position.
    Lsn(Lsn),
    /// Past the first segment archived at or after this time (which holds the first
    /// commit after it, at the latest).
    Time(DateTime<Utc>),
}

/// WAL a recovery needs and the archive lacks: one run of missing segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The timeline whose copy is missing.
    pub timeline: u32,
    /// The first position that cannot be recovered.
    #[serde(serialize_with = "lsn_text")]
    pub from: Lsn,
    /// Where recoverable WAL resumes.
    #[serde(serialize_with = "lsn_text")]
    pub to: Lsn,
    /// The missing files.
    pub segments: Vec<String>,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = match self.segments.as_slice() {
            [one] => format!("{one} is"),
            [first, .., last] => {
                format!("{} segments ({first} to {last}) are", self.segments.len())
            }
            [] => "nothing is".to_owned(),
        };
        write!(
            f,
            "WAL from {} to {} on timeline {} cannot be recovered: {names} missing from the archive",
            self.from, self.to, self.timeline
        )
    }
}

/// A walk along one timeline's history from a backup's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// Its history.
    pub path: Vec<Span>,
    /// The segments read, in order (those missing included).
    pub segments: Vec<String>,
    /// The missing ones, as runs.
    pub gaps: Vec<Gap>,
    /// The end of the last archived segment on the path that recovery reads: how far the
    /// archive reaches.
    #[serde(serialize_with = "opt_lsn_text")]
    pub reaches: Option<Lsn>,
}

/// What the archive holds: every segment (with its checksum object's time, read on demand)
/// and every timeline's history.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Archived segments.
    pub segments: BTreeSet<Segment>,
    /// Histories read from `.history` files, by timeline.
    pub histories: BTreeMap<u32, Vec<Span>>,
    /// History files that could not be read, with why.
    pub unreadable: Vec<String>,
    /// When each segment was archived, where known.
    pub archived_at: BTreeMap<Segment, DateTime<Utc>>,
}

impl Archive {
    /// Reads the archive's listing and every history file (small) from `store`; the time of
    /// each segment is read later, only where a time target needs it.
    pub fn read(store: &dyn Store) -> Result<Archive> {
        let (files, _foreign) = wal::classify(&wal::archived(store)?);
        let mut archive = Archive::default();
        for (name, file) in files {
            match file {
                WalFile::Segment(segment) => {
                    archive.segments.insert(segment);
                }
                WalFile::History(tli) => match wal::read_small(store, &name)
                    .and_then(|text| parse_history(tli, &String::from_utf8_lossy(&text)))
                {
                    Ok(spans) => {
                        archive.histories.insert(tli, spans);
                    }
                    Err(e) => archive
                        .unreadable
                        .push(format!("{name}: {}", pgops_pg::report(&e))),
                },
                WalFile::Backup(..) | WalFile::Partial(_) => {}
            }
        }
        Ok(archive)
    }

    /// Reads the archive times of `segments` that are not known yet.
    pub fn load_times(&mut self, store: &dyn Store, segments: &[Segment]) -> Result<()> {
        for segment in segments {
            if self.archived_at.contains_key(segment) || !self.segments.contains(segment) {
                continue;
            }
            if let Some(at) = wal::sum(store, &segment.name())?.and_then(|s| s.archived_at) {
                self.archived_at.insert(*segment, at);
            }
        }
        Ok(())
    }

    /// Every timeline the archive knows of (from segments and history files).
    pub fn timelines(&self) -> BTreeSet<u32> {
        let mut all: BTreeSet<u32> = self.segments.iter().map(|s| s.timeline).collect();
        all.extend(self.histories.keys());
        all
    }

    /// The newest timeline: what `recovery_target_timeline = 'latest'` would follow.
    pub fn newest_timeline(&self) -> Option<u32> {
        self.timelines().into_iter().next_back()
    }

    /// The history of `timeline`: its `.history` file, or just itself for timeline 1. A later
    /// timeline whose history is not archived cannot be followed.
    pub fn path(&self, timeline: u32) -> Result<Vec<Span>> {
        if let Some(spans) = self.histories.get(&timeline) {
            return Ok(spans.clone());
        }
        if timeline == 1 {
            return Ok(vec![Span {
                timeline: 1,
                begin: Lsn(0),
                end: None,
            }]);
        }
        let file = format!("{timeline:08X}.history");
        if let Some(why) = self
            .unreadable
            .iter()
            .find_map(|u| u.strip_prefix(&file).and_then(|u| u.strip_prefix(": ")))
        {
            return Err(Error::Invalid(format!(
                "timeline {timeline}'s history file {file} is archived but cannot be read ({why}), \
                 so recovery cannot follow timeline {timeline}; `pgops backup verify` checks the \
                 archive, or give --target-timeline"
            )));
        }
        Err(Error::Invalid(format!(
            "timeline {timeline}'s history file {timeline:08X}.history is not in the archive, so \
             recovery cannot follow timeline {timeline}; archive it from the server that began \
             the timeline (its pg_wal directory holds it), or give --target-timeline"
        )))
    }

    /// Whether a backup that starts at `start` on `timeline` lies on `path` (it began before
    /// the history left its timeline). Pure.
    pub fn on_path(path: &[Span], timeline: u32, start: Lsn) -> bool {
        path.iter()
            .any(|s| s.timeline == timeline && s.begin <= start && s.end.is_none_or(|e| start < e))
    }

    /// The segments recovery reads along `path` from `start` until `until`, the gaps among
    /// them, and how far the archive reaches. Time targets need [`Archive::load_times`] for the
    /// segments first (see [`Archive::candidates`]).
    pub fn plan(&self, path: &[Span], start: Lsn, until: Until) -> Plan {
        let timeline = path.last().map_or(1, |s| s.timeline);
        let first = start.0 / pgops_pg::SEGMENT_BYTES;
        let candidates = self.candidates(path, start);
        // The last segment recovery reads.
        let last = match until {
            Until::Lsn(lsn) => lsn.0 / pgops_pg::SEGMENT_BYTES,
            Until::End => candidates
                .iter()
                .rev()
                .find(|s| self.segments.contains(s))
                .map_or(first, |s| s.number),
            Until::Time(t) => candidates
                .iter()
                .find(|s| self.archived_at.get(s).is_some_and(|at| *at >= t))
                .or_else(|| candidates.iter().rev().find(|s| self.segments.contains(s)))
                .map_or(first, |s| s.number),
        };
        let mut segments = Vec::new();
        let mut gaps: Vec<Gap> = Vec::new();
        let mut reaches = None;
        for number in first..=last {
            let segment = Segment {
                timeline: provider(path, number),
                number,
            };
            segments.push(segment.name());
            if self.segments.contains(&segment) {
                if gaps.is_empty() {
                    reaches = Some(segment.next().start());
                }
                continue;
            }
            // Clamp the lost range to the part of the segment this timeline provides.
            let span = path.iter().find(|s| s.timeline == segment.timeline);
            let from = segment.start().max(span.map_or(Lsn(0), |s| s.begin));
            let to = span
                .and_then(|s| s.end)
                .map_or(segment.next().start(), |e| e.min(segment.next().start()));
            match gaps.last_mut() {
                Some(gap) if gap.timeline == segment.timeline && gap.to == segment.start() => {
                    gap.to = to;
                    gap.segments.push(segment.name());
                }
                _ => gaps.push(Gap {
                    timeline: segment.timeline,
                    from: from.max(start),
                    to,
                    segments: vec![segment.name()],
                }),
            }
        }
        Plan {
            timeline,
            path: path.to_vec(),
            segments,
            gaps,
            reaches,
        }
    }

    /// The segments a recovery along `path` from `start` could read, up to the newest archived
    /// one on the path. Pure.
    pub fn candidates(&self, path: &[Span], start: Lsn) -> Vec<Segment> {
        let first = start.0 / pgops_pg::SEGMENT_BYTES;
        let newest = self
            .segments
            .iter()
            .filter(|s| s.number >= first && provider(path, s.number) == s.timeline)
            .map(|s| s.number)
            .max()
            .unwrap_or(first);
        (first..=newest)
            .map(|number| Segment {
                timeline: provider(path, number),
                number,
            })
            .collect()
    }

    /// Timelines that went on after the history of `timeline` left them (WAL an old primary
    /// wrote after another server was promoted), with where they were left and the archived
    /// segments past that point. Pure.
    pub fn abandoned(&self, timeline: u32) -> Vec<(Span, Vec<Segment>)> {
        let Ok(path) = self.path(timeline) else {
            return Vec::new();
        };
        path.iter()
            .filter_map(|span| {
                let end = span.end?;
                let past: Vec<Segment> = self
                    .segments
                    .iter()
                    .filter(|s| s.timeline == span.timeline && s.number >= end.segment(1).number)
                    .copied()
                    .collect();
                (!past.is_empty()).then_some((*span, past))
            })
            .collect()
    }

    /// One line per timeline: where it begins, its archived segments, where a later timeline
    /// left it. For messages that say what the repository holds. Pure.
    pub fn describe(&self) -> String {
        let newest = self.newest_timeline().unwrap_or(1);
        let newest_path = self.path(newest).unwrap_or_default();
        let mut lines = Vec::new();
        for tli in self.timelines() {
            let segments: Vec<&Segment> =
                self.segments.iter().filter(|s| s.timeline == tli).collect();
            let mut line = format!("timeline {tli}");
            if let Some(parent) = self
                .histories
                .get(&tli)
                .and_then(|h| h.iter().rev().nth(1).copied())
            {
                line.push_str(&format!(
                    " (from timeline {} at {})",
                    parent.timeline,
                    parent.end.unwrap_or_default()
                ));
            }
            match (segments.first(), segments.last()) {
                (Some(a), Some(b)) => {
                    line.push_str(&format!(": {} segments, {a} to {b}", segments.len()))
                }
                _ => line.push_str(": no segment yet"),
            }
            if let Some(left) = newest_path
                .iter()
                .find(|s| s.timeline == tli)
                .and_then(|s| s.end)
            {
                line.push_str(&format!("; left at {left}"));
            }
            lines.push(line);
        }
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn seg(tli: u32, number: u64) -> Segment {
        Segment {
            timeline: tli,
            number,
        }
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    /// Timeline 1 archived through segment 7, timeline 2 promoted at 0/7000060 (inside segment
    /// 7), timeline 3 at 0/9000028.
    fn archive(missing: &[Segment]) -> Archive {
        let mut a = Archive::default();
        for s in (3..=8).map(|n| seg(1, n)).chain((7..=9).map(|n| seg(2, n))) {
            a.segments.insert(s);
        }
        a.segments.extend((9..=11).map(|n| seg(3, n)));
        for m in missing {
            a.segments.remove(m);
        }
        a.histories.insert(
            2,
            parse_history(2, "1\t0/7000060\tno recovery target specified\n").unwrap(),
        );
        a.histories.insert(
            3,
            parse_history(3, "1\t0/7000060\tno recovery target specified\n\n2\t0/9000028\tno recovery target specified\n").unwrap(),
        );
        a
    }

    #[test]
    fn history_files_read_as_postgresql_writes_them() {
        let spans = parse_history(3, "# comment\n1\t0/7000060\treason\n2\t0/9000028\tx\n").unwrap();
        assert_eq!(
            spans,
            [
                Span {
                    timeline: 1,
                    begin: Lsn(0),
                    end: Some(lsn("0/7000060"))
                },
                Span {
                    timeline: 2,
                    begin: lsn("0/7000060"),
                    end: Some(lsn("0/9000028"))
                },
                Span {
                    timeline: 3,
                    begin: lsn("0/9000028"),
                    end: None
                },
            ]
        );
        for bad in [
            "x\t0/1\n",
            "1\tnope\n",
            "2\t0/1\n1\t0/2\n",
            "3\t0/1\n",
            "1\t0/5\n2\t0/4\n",
        ] {
            let err = parse_history(3, bad).unwrap_err().to_string();
            assert!(
                err.contains("00000003.history") && err.contains("damaged"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn each_segment_is_read_from_the_newest_timeline_begun_by_then() {
        let path = archive(&[]).path(3).unwrap();
        assert_eq!(provider(&path, 6), 1);
        // The switch point's segment is read from the new timeline (its copy holds the old
        // timeline's WAL up to the switch).
        assert_eq!(provider(&path, 7), 2);
        assert_eq!(provider(&path, 8), 2);
        assert_eq!(provider(&path, 9), 3);
        let plan = archive(&[]).plan(&path, lsn("0/3000028"), Until::End);
        assert!(plan.gaps.is_empty(), "{:?}", plan.gaps);
        assert_eq!(plan.segments.first().unwrap(), "000000010000000000000003");
        assert_eq!(plan.segments[4], "000000020000000000000007");
        assert_eq!(plan.segments.last().unwrap(), "00000003000000000000000B");
        assert_eq!(plan.reaches, Some(lsn("0/C000000")));
    }

    #[test]
    fn a_segment_the_old_primary_never_archived_is_named_with_its_lsn_range() {
        let a = archive(&[seg(1, 6)]);
        let path = a.path(3).unwrap();
        let plan = a.plan(&path, lsn("0/3000028"), Until::End);
        assert_eq!(
            plan.gaps,
            [Gap {
                timeline: 1,
                from: lsn("0/6000000"),
                to: lsn("0/7000000"),
                segments: vec!["000000010000000000000006".into()],
            }]
        );
        assert_eq!(
            plan.reaches,
            Some(lsn("0/6000000")),
            "recovery stops at the gap"
        );
        assert_eq!(
            plan.gaps[0].to_string(),
            "WAL from 0/6000000 to 0/7000000 on timeline 1 cannot be recovered: \
             000000010000000000000006 is missing from the archive"
        );
        // The old timeline's own segment 8 (abandoned) is not read, so its loss is no gap.
        let plan = archive(&[seg(1, 8)]).plan(&path, lsn("0/3000028"), Until::End);
        assert!(plan.gaps.is_empty());
        // A target before the gap needs none of it.
        let plan = a.plan(&path, lsn("0/3000028"), Until::Lsn(lsn("0/5FFFFFF")));
        assert!(plan.gaps.is_empty());
        // Two missing in a row are one run.
        let a = archive(&[seg(1, 5), seg(1, 6)]);
        let plan = a.plan(&path, lsn("0/3000028"), Until::End);
        assert_eq!(plan.gaps.len(), 1);
        assert_eq!(plan.gaps[0].from, lsn("0/5000000"));
        assert_eq!(plan.gaps[0].segments.len(), 2);
    }

    #[test]
    fn backups_lie_on_a_history_only_before_it_leaves_their_timeline() {
        let a = archive(&[]);
        let path = a.path(3).unwrap();
        assert!(Archive::on_path(&path, 1, lsn("0/3000028")));
        assert!(Archive::on_path(&path, 2, lsn("0/8000028")));
        // Taken from the old primary after the promotion: an abandoned branch.
        assert!(!Archive::on_path(&path, 1, lsn("0/8000028")));
        assert!(Archive::on_path(&a.path(1).unwrap(), 1, lsn("0/8000028")));
    }

    #[test]
    fn abandoned_branches_and_missing_histories_are_named() {
        let a = archive(&[]);
        let abandoned = a.abandoned(3);
        // Timeline 1 past 0/7000060 and timeline 2's own copy of segment 9.
        assert_eq!(abandoned.len(), 2);
        assert_eq!(abandoned[0].0.timeline, 1);
        assert_eq!(abandoned[0].1, [seg(1, 7), seg(1, 8)]);
        assert_eq!(abandoned[1].1, [seg(2, 9)]);
        let mut b = a.clone();
        b.histories.remove(&3);
        let err = b.path(3).unwrap_err().to_string();
        assert!(
            err.contains("00000003.history is not in the archive"),
            "{err}"
        );
        // Archived, but its data does not match its checksum object: said so, not "missing".
        b.unreadable
            .push("00000003.history: wal/00000003.history.zst is corrupt".into());
        let err = b.path(3).unwrap_err().to_string();
        assert!(
            err.contains("00000003.history is archived but cannot be read (wal/"),
            "{err}"
        );
        assert_eq!(a.newest_timeline(), Some(3));
        let text = a.describe();
        assert!(
            text.contains("timeline 1: 6 segments, 000000010000000000000003 to 000000010000000000000008; left at 0/7000060"),
            "{text}"
        );
        assert!(
            text.contains("timeline 2 (from timeline 1 at 0/7000060)"),
            "{text}"
        );
    }

    #[test]
    fn a_time_target_reads_up_to_the_first_segment_archived_after_it() {
        let mut a = archive(&[seg(2, 9)]);
        let t0 = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (k, s) in a
            .candidates(&a.path(3).unwrap(), lsn("0/3000028"))
            .iter()
            .enumerate()
        {
            a.archived_at
                .insert(*s, t0 + chrono::Duration::minutes(k as i64));
        }
        let path = a.path(3).unwrap();
        // Minute 2 is segment 5: nothing missing before it.
        let plan = a.plan(
            &path,
            lsn("0/3000028"),
            Until::Time(t0 + chrono::Duration::seconds(90)),
        );
        assert!(plan.gaps.is_empty());
        assert_eq!(plan.segments.last().unwrap(), "000000010000000000000005");
        // Segment 9 of timeline 2 is not in timeline 3's history (3 begins in segment 9).
        let plan = a.plan(&path, lsn("0/3000028"), Until::End);
        assert!(plan.gaps.is_empty(), "{:?}", plan.gaps);
        let plan = a.plan(&a.path(2).unwrap(), lsn("0/3000028"), Until::End);
        assert_eq!(
            plan.gaps.len(),
            0,
            "timeline 2's own history ends at its newest segment, 8"
        );
    }
}
