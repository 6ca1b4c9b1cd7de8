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
}

impl Family {
    /// An empty family.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Family {
            name: name.into(),
            help: help.into(),
            kind,
            samples: Vec::new(),
        }
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
    for family in families {
        let kind = match family.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Untyped => "untyped",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for sample in &family.samples {
            out.push_str(&family.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (key, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{key}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&number(sample.value));
            out.push('\n');
        }
    }
}

/// A value as the format writes it.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
