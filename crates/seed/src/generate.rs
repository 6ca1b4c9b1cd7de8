//! The rows themselves: generated in foreign-key order from a seeded ChaCha generator per
//! table, with realistic values (`fake`) and skew (a few large organizations and a long tail;
//! busy and quiet users). Every timestamp is relative to a fixed instant, never "now", so the
//! same plan and seed always give the same bytes.

use std::{io::Write, ops::Range};

use fake::{
    Fake,
    faker::{
        company::en::CompanyName, lorem::en::Sentence, name::en::FirstName, name::en::LastName,
    },
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Dataset, Plan, copy::CopyWriter, plan::PerParent};

/// 2026-01-01T00:00:00Z in microseconds since the Unix epoch: "now" for every dataset.
pub(crate) const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// What later tables need to know about earlier ones.
pub(crate) struct World {
    plan: Plan,
    seed: u64,
    orgs: Vec<Org>,
    /// Users' cumulative activity weights (busy users log more and keep more sessions).
    user_activity: Vec<f64>,
    /// Encounters in id order (id = index + 1).
    encounters: Vec<EncounterInfo>,
    notes: u64,
}

struct Org {
    slug: String,
    created: i64,
    users: Range<u32>,
    patients: Range<u32>,
}

struct EncounterInfo {
    provider: u32,
    started: i64,
    closed: bool,
}

/// Rows are announced to the progress callback in batches of this size.
pub(crate) const PROGRESS_EVERY: u64 = 10_000;

impl World {
    pub(crate) fn new(plan: Plan, seed: u64) -> Self {
        World {
            plan,
            seed,
            orgs: Vec::new(),
            user_activity: Vec::new(),
            encounters: Vec::new(),
            notes: 0,
        }
    }

    /// Rows a table will get, when known before generating it.
    pub(crate) fn expected_rows(&self, table: &str) -> u64 {
        let p = &self.plan;
        let per = |per: PerParent, parents: u64| (per.mean() * parents as f64) as u64;
        match table {
            "organizations" => u64::from(p.organizations),
            "users" => u64::from(p.users),
            "sessions" => u64::from(p.sessions),
            "patients" => u64::from(p.patients),
            "encounters" => per(p.encounters_per_patient, u64::from(p.patients)),
            "notes" => per(p.notes_per_encounter, self.encounters.len() as u64),
            _ => p.audit_logs,
        }
    }

    /// Writes one table's rows; `tick` is called every [`PROGRESS_EVERY`] rows.
    pub(crate) fn write<W: Write>(
        &mut self,
        table: &str,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(table));
        match table {
            "organizations" => self.organizations(&mut rng, w),
            "users" => self.users(&mut rng, w, tick),
            "sessions" => self.sessions(&mut rng, w, tick),
            "patients" => self.patients(&mut rng, w, tick),
            "encounters" => self.encounters(&mut rng, w, tick),
            "notes" => self.notes(&mut rng, w, tick),
            _ => self.audit_logs(&mut rng, w, tick),
        }
    }

    fn test_data(&self) -> bool {
        self.plan.dataset == Dataset::Test
    }

    fn organizations<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
    ) -> std::io::Result<()> {
        let n = self.plan.organizations;
        let user_ranges = split(
            self.plan.users,
            n,
            rng,
            self.test_data().then_some(&[6, 2][..]),
        );
        let patient_ranges = split(
            self.plan.patients,
            n,
            rng,
            self.test_data().then_some(&[15, 5][..]),
        );
        for (i, (users, patients)) in user_ranges.into_iter().zip(patient_ranges).enumerate() {
            let id = i as i64 + 1;
            let (name, slug) = if self.test_data() {
                let (name, slug) = [("Acme Health", "acme"), ("Beacon Clinic", "beacon")][i];
                (name.to_owned(), slug.to_owned())
            } else {
                let company: String = CompanyName().fake_with_rng(rng);
                let suffix = ["Health", "Clinic", "Medical Group", "Care", "Hospital"]
                    [rng.random_range(0..5)];
                let slug = format!("{}-{id}", slugify(&company));
                (format!("{company} {suffix}"), slug)
            };
            let created = T0 - rng.random_range(700..1500) * DAY;
            w.row(5)
                .int8(id)
                .text(&name)
                .text(&slug)
                .timestamptz(created)
                .timestamptz(created + rng.random_range(0..100) * DAY);
            w.end()?;
            self.orgs.push(Org {
                slug,
                created,
                users,
                patients,
            });
        }
        Ok(())
    }

    fn users<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        const TEST_USERS: [(&str, &str, &str, &str, bool); 8] = [
            ("ada.admin", "Ada", "Admin", "admin", false),
            ("carl.clinician", "Carl", "Clinician", "clinician", false),
            ("cora.clinician", "Cora", "Clinician", "clinician", false),
            ("sam.staff", "Sam", "Staff", "staff", false),
            ("aldo.auditor", "Aldo", "Auditor", "auditor", false),
            ("dee.deleted", "Dee", "Deleted", "clinician", true),
            ("bea.admin", "Bea", "Admin", "admin", false),
            ("bo.clinician", "Bo", "Clinician", "clinician", false),
        ];
        // Busy and quiet users: activity follows a Zipf law over a shuffled ranking.
        let mut ranks: Vec<u32> = (0..self.plan.users).collect();
        for i in (1..ranks.len()).rev() {
            ranks.swap(i, rng.random_range(0..=i));
        }
        let mut total = 0.0;
        self.user_activity = ranks
            .iter()
            .map(|rank| {
                total += 1.0 / (f64::from(*rank) + 1.0);
                total
            })
            .collect();
        for (org_index, org) in self.orgs.iter().enumerate() {
            for id in org.users.clone() {
                let (email, full_name, role, deleted) = if self.test_data() {
                    let (local, first, last, role, deleted) = TEST_USERS[id as usize - 1];
                    (
                        format!("{local}@{}.test", org.slug),
                        format!("{first} {last}"),
                        role,
                        deleted,
                    )
                } else {
                    let first: String = FirstName().fake_with_rng(rng);
                    let last: String = LastName().fake_with_rng(rng);
                    let role = pick(
                        rng,
                        &[
                            ("admin", 5),
                            ("clinician", 70),
                            ("staff", 20),
                            ("auditor", 5),
                        ],
                    );
                    let email = format!(
                        "{}.{}.{id}@{}.test",
                        slugify(&first),
                        slugify(&last),
                        org.slug
                    );
                    (
                        email,
                        format!("{first} {last}"),
                        role,
                        rng.random_range(0..100) < 3,
                    )
                };
                let created =
                    org.created + rng.random_range(1..600) * DAY + rng.random_range(0..DAY);
                let deleted_at = deleted.then(|| T0 - rng.random_range(1..90) * DAY);
                w.row(8)
                    .int8(i64::from(id))
                    .int8(org_index as i64 + 1)
                    .text(&email)
                    .text(&full_name)
                    .text(role)
                    .timestamptz(created)
                    .timestamptz(created + rng.random_range(0..DAY * 30))
                    .timestamptz_opt(deleted_at);
                w.end()?;
                progress(tick, u64::from(id));
            }
        }
        Ok(())
    }

    fn sessions<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        const AGENTS: [&str; 4] = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/140.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
            "Mozilla/5.0 (iPad; CPU OS 18_0 like Mac OS X) Mobile/15E148",
            "okhttp/4.12.0",
        ];
        for id in 1..=u64::from(self.plan.sessions) {
            let user = if self.test_data() {
                id as u32
            } else {
                self.busy_user(rng)
            };
            let created = T0 - rng.random_range(0..90 * DAY);
            let revoked = if self.test_data() {
                id == 6
            } else {
                rng.random_range(0..100) < 40
            };
            let mut token = [0u8; 32];
            rng.fill(&mut token[..]);
            w.row(8)
                .int8(id as i64)
                .int8(i64::from(user))
                .bytea(&token)
                .timestamptz(created)
                .timestamptz(created + 12 * HOUR)
                .timestamptz_opt(Some(created + rng.random_range(0..12 * HOUR)))
                .timestamptz_opt(revoked.then(|| created + rng.random_range(1..12 * HOUR)))
                .text_opt(Some(AGENTS[rng.random_range(0..AGENTS.len())]));
            w.end()?;
            progress(tick, id);
        }
        Ok(())
    }

    fn patients<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        for (org_index, org) in self.orgs.iter().enumerate() {
            for (local, id) in org.patients.clone().enumerate() {
                let first: String = FirstName().fake_with_rng(rng);
                let last: String = LastName().fake_with_rng(rng);
                let status = if self.test_data() {
                    match id {
                        14 => "inactive",
                        15 => "deceased",
                        _ => "active",
                    }
                } else {
                    pick(rng, &[("active", 85), ("inactive", 12), ("deceased", 3)])
                };
                // Born between 1930 and 2025 (days since 1970 may be negative).
                let born = rng.random_range(-14_600..20_089);
                let created =
                    org.created + rng.random_range(0..600) * DAY + rng.random_range(0..DAY);
                w.row(9)
                    .int8(i64::from(id))
                    .int8(org_index as i64 + 1)
                    .text(&format!("MRN{:08}", local + 1))
                    .text(&first)
                    .text(&last)
                    .date(born)
                    .text(status)
                    .timestamptz(created)
                    .timestamptz(created + rng.random_range(0..200) * DAY);
                w.end()?;
                progress(tick, u64::from(id));
            }
        }
        Ok(())
    }

    fn encounters<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let per = self.plan.encounters_per_patient;
        let mut id = 0u64;
        for org in &self.orgs {
            for patient in org.patients.clone() {
                for k in 0..count(rng, per, 12) {
                    id += 1;
                    let (kind, status, provider) = if self.test_data() {
                        let clinician = if org.slug == "acme" { 2 } else { 8 };
                        if k == 0 {
                            ("office_visit", "closed", clinician)
                        } else {
                            ("telehealth", "open", clinician)
                        }
                    } else {
                        let kind = pick(
                            rng,
                            &[
                                ("office_visit", 60),
                                ("telehealth", 25),
                                ("inpatient", 10),
                                ("emergency", 5),
                            ],
                        );
                        let status = pick(
                            rng,
                            &[
                                ("closed", 80),
                                ("open", 8),
                                ("scheduled", 7),
                                ("cancelled", 5),
                            ],
                        );
                        (kind, status, rng.random_range(org.users.clone()))
                    };
                    let started =
                        T0 - rng.random_range(1..730) * DAY + rng.random_range(8 * HOUR..18 * HOUR);
                    let closed = status == "closed";
                    w.row(8)
                        .int8(id as i64)
                        .int8(i64::from(patient))
                        .int8(i64::from(provider))
                        .text(kind)
                        .text(status)
                        .timestamptz(started)
                        .timestamptz_opt(
                            closed.then(|| started + rng.random_range(15..90) * MINUTE),
                        )
                        .timestamptz(started - rng.random_range(1..30) * DAY);
                    w.end()?;
                    self.encounters.push(EncounterInfo {
                        provider,
                        started,
                        closed,
                    });
                    progress(tick, id);
                }
            }
        }
        Ok(())
    }

    fn notes<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let per = self.plan.notes_per_encounter;
        let mut id = 0u64;
        let mut body = String::with_capacity(1024);
        for (index, encounter) in self.encounters.iter().enumerate() {
            for _ in 0..count(rng, per, 4) {
                id += 1;
                body.clear();
                for s in 0..rng.random_range(1..5) {
                    if s > 0 {
                        body.push(' ');
                    }
                    let sentence: String = Sentence(6..18).fake_with_rng(rng);
                    body.push_str(&sentence);
                }
                let kind = pick(
                    rng,
                    &[
                        ("progress", 70),
                        ("history", 15),
                        ("consult", 10),
                        ("discharge", 5),
                    ],
                );
                let created = encounter.started + rng.random_range(5..120) * MINUTE;
                let signed =
                    encounter.closed && (self.test_data() || rng.random_range(0..100) < 90);
                w.row(8)
                    .int8(id as i64)
                    .int8(index as i64 + 1)
                    .int8(i64::from(encounter.provider))
                    .text(kind)
                    .text(&body)
                    .timestamptz(created)
                    .timestamptz(created + rng.random_range(0..60) * MINUTE)
                    .timestamptz_opt(
                        signed.then(|| created + rng.random_range(1..48 * 60) * MINUTE),
                    );
                w.end()?;
                progress(tick, id);
            }
        }
        self.notes = id;
        Ok(())
    }

    fn audit_logs<W: Write>(
        &mut self,
        rng: &mut ChaCha8Rng,
        w: &mut CopyWriter<W>,
        tick: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        const ACTIONS: [(&str, u32); 8] = [
            ("patient.view", 40),
            ("note.view", 20),
            ("encounter.view", 10),
            ("session.login", 7),
            ("note.create", 8),
            ("note.sign", 5),
            ("patient.update", 9),
            ("export.csv", 1),
        ];
        let total = self.plan.audit_logs;
        // Append-only: ids and times grow together over the last year.
        let span = 365 * DAY;
        let step = span / total.max(1) as i64;
        let mut details = String::with_capacity(160);
        for id in 1..=total {
            let system = if self.test_data() {
                id % 10 == 0
            } else {
                rng.random_range(0..100) < 5
            };
            let user = if system {
                None
            } else if self.test_data() {
                Some(((id - 1) % 8) as u32 + 1)
            } else {
                Some(self.busy_user(rng))
            };
            let action = pick(rng, &ACTIONS);
            let (entity_type, entity_id) = match action.split_once('.').map(|(kind, _)| kind) {
                Some("patient") => (
                    "patient",
                    rng.random_range(1..=u64::from(self.plan.patients)),
                ),
                Some("encounter") => (
                    "encounter",
                    rng.random_range(1..=self.encounters.len().max(1) as u64),
                ),
                Some("note") if self.notes > 0 => ("note", rng.random_range(1..=self.notes)),
                Some("session") => ("user", u64::from(user.unwrap_or(1))),
                _ => ("report", rng.random_range(1..1000)),
            };
            details.clear();
            details.push_str(&format!(
                "{{\"ip\": \"10.{}.{}.{}\", \"request_id\": \"{:016x}\", \"client\": \"{}\"}}",
                rng.random_range(0..256),
                rng.random_range(0..256),
                rng.random_range(1..255),
                rng.random::<u64>(),
                ["web", "ipad", "api", "batch"][rng.random_range(0..4)]
            ));
            let created = T0 - span + (id - 1) as i64 * step + rng.random_range(0..step.max(1));
            w.row(7)
                .int8(id as i64)
                .int8_opt(user.map(i64::from))
                .text(action)
                .text_opt(Some(entity_type))
                .int8_opt(Some(entity_id as i64))
                .jsonb(&details)
                .timestamptz(created);
            w.end()?;
            progress(tick, id);
        }
        Ok(())
    }

    /// A user drawn by activity: busy users often, quiet ones rarely.
    fn busy_user(&self, rng: &mut ChaCha8Rng) -> u32 {
        let total = self.user_activity.last().copied().unwrap_or(1.0);
        let x = rng.random_range(0.0..total);
        self.user_activity
            .partition_point(|c| *c <= x)
            .min(self.user_activity.len() - 1) as u32
            + 1
    }
}

/// Splits ids `1..=total` into `parts` contiguous ranges of Zipf-like sizes (a few large
/// parts and a long tail), each at least 1; `fixed` gives exact sizes instead.
fn split(total: u32, parts: u32, rng: &mut ChaCha8Rng, fixed: Option<&[u32]>) -> Vec<Range<u32>> {
    let sizes: Vec<u32> = match fixed {
        Some(sizes) => sizes.to_vec(),
        None => {
            let weights: Vec<f64> = (0..parts)
                .map(|i| 1.0 / f64::from(i + 1).powf(1.1) * rng.random_range(0.8..1.2))
                .collect();
            let sum: f64 = weights.iter().sum();
            let spare = total - parts;
            let mut sizes: Vec<u32> = weights
                .iter()
                .map(|w| 1 + (f64::from(spare) * w / sum) as u32)
                .collect();
            let assigned: u32 = sizes.iter().sum();
            sizes[0] += total - assigned;
            sizes
        }
    };
    let mut start = 1;
    sizes
        .into_iter()
        .map(|size| {
            let range = start..start + size;
            start += size;
            range
        })
        .collect()
}

/// How many children a parent gets.
fn count(rng: &mut ChaCha8Rng, per: PerParent, max: u32) -> u32 {
    match per {
        PerParent::Fixed(n) => n,
        // Exponential around the mean, rounded down: many with few, a few with many.
        PerParent::Skewed(mean) => {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            ((-u.ln() * mean) as u32).min(max)
        }
    }
}

/// A value drawn by integer weights.
fn pick<'a>(rng: &mut ChaCha8Rng, choices: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (value, weight) in choices {
        if x < *weight {
            return value;
        }
        x -= weight;
    }
    choices[choices.len() - 1].0
}

fn progress(tick: &mut dyn FnMut(u64), rows: u64) {
    if rows.is_multiple_of(PROGRESS_EVERY) {
        tick(rows);
    }
}

/// Lower-case ASCII letters and digits, words joined by dashes.
fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// A stable 64-bit hash of a table name, to give each table its own random stream.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_id_once_with_a_long_tail() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ranges = split(10_000, 50, &mut rng, None);
        assert_eq!(ranges.len(), 50);
        assert_eq!(ranges[0].start, 1);
        assert_eq!(ranges[49].end, 10_001);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert!(ranges.iter().all(|r| !r.is_empty()));
        assert!(
            ranges[0].len() > 10 * ranges[49].len(),
            "a few large, many small"
        );
    }

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(slugify("Kihn, Schmitt & O'Hara"), "kihn-schmitt-o-hara");
        assert_eq!(slugify("  Ünï 42 "), "n-42");
    }

    #[test]
    fn skewed_counts_have_the_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 100_000;
        let per = PerParent::Skewed(3.5);
        let sum: u32 = (0..n).map(|_| count(&mut rng, per, 1000)).sum();
        let mean = f64::from(sum) / f64::from(n);
        assert!((mean - per.mean()).abs() < 0.05, "{mean} vs {}", per.mean());
    }
}
