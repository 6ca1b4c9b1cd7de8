//! Reading back the Prometheus text the exporter renders, so that the page shows exactly what
//! `/metrics` serves, from the same (cached) collectors.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its value (NaN where the exposition says so).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn matches(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample of an exposition.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// Reads the text format, line by line (comments skipped; a line that does not parse is
    /// skipped too).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        Samples(lines.into_iter().filter_map(sample).collect())
    }

    /// The first sample of `name` with (at least) these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.all(name).find(|s| s.matches(labels)).map(|s| s.value)
    }

    /// Every sample of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=')?;
            let key = inner[..eq].trim().to_owned();
            // The value starts after `="`, at eq + 2.
            let mut chars = inner[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let closing = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            inner = &inner[eq + 2 + closing + 1..];
        }
    }
    finish(name, labels, rest)
}

fn finish(name: String, labels: Vec<(String, String)>, rest: &str) -> Option<Sample> {
    let value = match rest.split_whitespace().next()? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_special_values() {
        let s = Samples::parse(
            "# HELP pg_up up\n# TYPE pg_up gauge\npg_up 1\n\
             pgops_table_size_bytes{schema=\"public\",table=\"a\\\"b\\\\c\\nd\"} 8192\n\
             x{a=\"1\",} NaN\ny{} +Inf\nbroken{a=1} 3\nz -2.5e3 1700000000\n"
                .lines(),
        );
        assert_eq!(s.get("pg_up", &[]), Some(1.0));
        let t = s.all("pgops_table_size_bytes").next().unwrap();
        assert_eq!(t.label("table"), Some("a\"b\\c\nd"));
        assert_eq!(t.value, 8192.0);
        assert!(s.get("x", &[("a", "1")]).unwrap().is_nan());
        assert_eq!(s.get("y", &[]), Some(f64::INFINITY));
        assert_eq!(s.get("broken", &[]), None);
        assert_eq!(s.get("z", &[]), Some(-2500.0));
        assert_eq!(s.get("pgops_table_size_bytes", &[("table", "nope")]), None);
    }

    #[test]
    fn reads_what_the_exporter_writes() {
        let mut family =
            pgops_health::text::Family::new("pgops_x", "x", pgops_health::text::Kind::Gauge);
        family.push(&[("table", "<script>\"x\"\n")], 2.0);
        family.push(&[("table", "plain")], f64::NAN);
        let mut text = String::new();
        pgops_health::text::render(&[family], &mut text);
        let s = Samples::parse(text.lines());
        assert_eq!(s.get("pgops_x", &[("table", "<script>\"x\"\n")]), Some(2.0));
        assert!(s.get("pgops_x", &[("table", "plain")]).unwrap().is_nan());
    }
}
