//! The Prometheus text exposition format (version 0.0.4): families with `# HELP` and
//! `# TYPE`, samples with escaped label values, NaN for values the server does not have.

use std::fmt::Write as _;

/// A metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up (until a reset).
    Counter,
    /// Type not known (postgres_exporter uses it for some `pg_stat_database` columns).
    Untyped,
}

/// One sample: labels and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label pairs, in order.
    pub labels: Vec<(String, String)>,
    /// The value (NaN when the server returned NULL).
    pub value: f64,
}

/// A metric family: every sample of one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The metric name.
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Its type.
    pub kind: Kind,
    /// Its samples.
    pub samples: Vec<Sample>,
    /// Samples added with [`Family::push_text`], already in the text format.
    text: String,
}

impl Family {
    /// An empty family.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
            text: String::new(),
        }
    }

    /// Adds a sample written out at once instead of kept as a [`Sample`]: for the families
    /// with a sample per table (20,000 at 10,000 tables), where a string per label and value
    /// costs more than the query that read them. Rendered after the kept samples; not in
    /// `samples`.
    pub fn push_text(&mut self, labels: &[(&str, &str)], value: f64) {
        write_sample(
            &self.name,
            labels.iter().map(|(k, v)| (*k, *v)),
            value,
            &mut self.text,
        );
    }

    /// Adds a sample with `labels`.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        });
    }

    /// A family with one sample.
    pub fn single(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Self {
        let mut family = Family::new(name, help, kind);
        family.push(labels, value);
        family
    }
}

/// Merges families with the same name (samples from several servers) keeping first-seen
/// order, so each name gets one `# HELP`/`# TYPE` block as the format requires.
pub fn merge(families: Vec<Family>) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for family in families {
        match index.get(&family.name) {
            Some(&i) => {
                let existing: &mut Family = &mut out[i];
                existing.samples.extend(family.samples);
                existing.text.push_str(&family.text);
            }
            None => {
                index.insert(family.name.clone(), out.len());
                out.push(family);
            }
        }
    }
    out
}

/// Renders families in the text format.
pub fn render(families: &[Family], out: &mut String) {
    // Room for all of it at once: a per-table family is megabytes, and growing by doubling
    // would copy it again and again.
    out.reserve(
        families
            .iter()
            .map(|f| {
                f.text.len()
                    + f.samples
                        .iter()
                        .map(|s| {
                            f.name.len()
                                + 32
                                + s.labels
                                    .iter()
                                    .map(|(k, v)| k.len() + v.len() + 4)
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
                    + 2 * f.name.len()
                    + f.help.len()
                    + 32
            })
            .sum(),
    );
    for family in families {
        let kind = match family.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Untyped => "untyped",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for sample in &family.samples {
            write_sample(
                &family.name,
                sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                sample.value,
                out,
            );
        }
        out.push_str(&family.text);
    }
}

/// Appends one sample line.
fn write_sample<'a>(
    name: &str,
    labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    value: f64,
    out: &mut String,
) {
    out.push_str(name);
    if labels.len() > 0 {
        out.push('{');
        for (i, (key, value)) in labels.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_into(value, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_number(value, out);
    out.push('\n');
}

/// A value as the format writes it.
pub fn number(value: f64) -> String {
    let mut out = String::new();
    write_number(value, &mut out);
    out
}

/// Appends a value as the format writes it (a scrape writes tens of thousands: no allocation
/// each).
fn write_number(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn escape_label_into(value: &str, out: &mut String) {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Turns a column or setting name into a metric name part (`[a-zA-Z0-9_]`).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_labels_and_special_values() {
        let mut f = Family::new("pg_x", "a \\ help\nline", Kind::Gauge);
        f.push(&[("datname", "a\"b\\c\nd"), ("server", "h:1")], 1.5);
        f.push(&[], f64::NAN);
        let mut out = String::new();
        render(&[f], &mut out);
        assert_eq!(
            out,
            "# HELP pg_x a \\\\ help\\nline\n# TYPE pg_x gauge\n\
             pg_x{datname=\"a\\\"b\\\\c\\nd\",server=\"h:1\"} 1.5\npg_x NaN\n"
        );
        assert_eq!(number(1e20), "100000000000000000000");
        assert_eq!(
            sanitize("auto_explain.log_min_duration"),
            "auto_explain_log_min_duration"
        );
    }

    #[test]
    fn a_sample_written_at_once_renders_as_a_kept_one() {
        let labels = [("relname", "t\"1"), ("server", "h:1")];
        let mut kept = Family::new("pg_x", "x", Kind::Gauge);
        kept.push(&labels, 3.0);
        kept.push(&labels, f64::NAN);
        let mut written = Family::new("pg_x", "x", Kind::Gauge);
        written.push_text(&labels, 3.0);
        written.push_text(&labels, f64::NAN);
        let (mut a, mut b) = (String::new(), String::new());
        render(&[kept], &mut a);
        render(&[written.clone()], &mut b);
        assert_eq!(a, b);
        // Merged families keep both kinds, kept samples first.
        let mut other = Family::new("pg_x", "x", Kind::Gauge);
        other.push(&[("server", "h:2")], 1.0);
        let mut merged = String::new();
        render(&merge(vec![other, written]), &mut merged);
        assert_eq!(
            merged.lines().filter(|l| l.starts_with("pg_x")).count(),
            3,
            "{merged}"
        );
        assert!(
            merged.contains("# TYPE pg_x gauge\npg_x{server=\"h:2\"} 1\npg_x{relname=\"t\\\"1\"")
        );
    }

    #[test]
    fn merge_joins_samples_of_the_same_name() {
        let a = Family::single("pg_up", "up", Kind::Gauge, &[("server", "a")], 1.0);
        let b = Family::single("pg_other", "o", Kind::Gauge, &[], 2.0);
        let c = Family::single("pg_up", "up", Kind::Gauge, &[("server", "b")], 0.0);
        let merged = merge(vec![a, b, c]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].samples.len(), 2);
        assert_eq!(merged[1].name, "pg_other");
    }
}
