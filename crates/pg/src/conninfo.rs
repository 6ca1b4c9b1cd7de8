//! Connection strings that never show their password. [`DatabaseUrl`] is read by libpq's own
//! parser, so multi-host URLs, `key=value` strings with quotes and backslashes, and URL query
//! options mean here what they mean to libpq. Every message prints a connection string
//! through its `Display`, which puts `***` in place of the password; text from elsewhere (a
//! driver's or a program's error) goes through [`DatabaseUrl::scrub`].

use std::fmt;

use crate::{Error, Result, libpq};

/// A PostgreSQL connection string (URL or `key=value` form) whose password stays hidden.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    /// What libpq read from `raw`: only the options the string sets, in libpq's order.
    options: Vec<(String, String)>,
}

impl DatabaseUrl {
    /// Reads a connection string as libpq does; the error names the problem without echoing
    /// the string (which may hold a password).
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Error::InvalidConnectionString(
                "the database URL is empty; set DATABASE_URL to postgres://user:password@host:5432/dbname".into(),
            ));
        }
        let is_url = is_url(raw);
        if !is_url && !raw.contains('=') {
            return Err(Error::InvalidConnectionString(format!(
                "the database URL `{}` is neither a postgres:// URL nor key=value pairs; \
                 expected postgres://user:password@host:5432/dbname",
                shape_only(raw)
            )));
        }
        let options = libpq::parse(raw).map_err(|message| {
            let hint = if is_url {
                "expected postgres://user:password@host:5432/dbname (percent-encode special characters in the password)"
            } else {
                "expected key=value pairs such as host=db port=5432 dbname=app (quote values with spaces as 'a b')"
            };
            Error::InvalidConnectionString(format!(
                "the database URL is not valid: {}; {hint}",
                without_quoted_fragments(&message)
            ))
        })?;
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            options,
        })
    }

    /// The real string, for the driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The value the string sets for a libpq keyword (`host`, `port`, `dbname`, `user`,
    /// `sslmode`, ...), as libpq read it.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }

    /// The password, if the string holds one.
    pub fn password(&self) -> Option<&str> {
        self.get("password").filter(|p| !p.is_empty())
    }

    /// The database name, if the string names one.
    pub fn database(&self) -> Option<&str> {
        self.get("dbname").filter(|d| !d.is_empty())
    }

    /// Every `host:port` the string lists (one for most strings, several for a multi-host
    /// URL), with libpq's defaults (`localhost`, `5432`) where it gives none.
    pub fn servers(&self) -> Vec<String> {
        let hosts: Vec<&str> = self
            .get("host")
            .or_else(|| self.get("hostaddr"))
            .map(|h| h.split(',').collect())
            .unwrap_or_default();
        let ports: Vec<&str> = self
            .get("port")
            .map(|p| p.split(',').collect())
            .unwrap_or_default();
        let count = hosts.len().max(ports.len()).max(1);
        (0..count)
            .map(|i| {
                let host = hosts.get(i).copied().filter(|h| !h.is_empty());
                // libpq: one port applies to every host.
                let port = if ports.len() == 1 {
                    Some(ports[0])
                } else {
                    ports.get(i).copied()
                }
                .filter(|p| !p.is_empty());
                format!("{}:{}", host.unwrap_or("localhost"), port.unwrap_or("5432"))
            })
            .collect()
    }

    /// `host:port` of the server (`localhost:5432` when not given; comma-separated for a
    /// multi-host string): a label that names the server without credentials or database.
    pub fn server(&self) -> String {
        self.servers().join(",")
    }

    /// The same options, one server of the list (`host:port` as [`DatabaseUrl::servers`]
    /// gives it), with `target_session_attrs` left out: a connection to that server only,
    /// whatever its role. A `key=value` string.
    pub fn for_server(&self, server: &str) -> Result<DatabaseUrl> {
        let (host, port) = server.rsplit_once(':').ok_or_else(|| {
            Error::InvalidConnectionString(format!("`{server}` is not host:port"))
        })?;
        let mut parts = vec![
            format!("host={}", quote_value(host)),
            format!("port={}", quote_value(port)),
        ];
        parts.extend(
            self.options
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "host" | "hostaddr" | "port" | "target_session_attrs"
                    )
                })
                .map(|(k, v)| format!("{k}={}", quote_value(v))),
        );
        DatabaseUrl::parse(&parts.join(" "))
    }

    /// The same server and options, another database. A URL stays a URL.
    pub fn with_database(&self, database: &str) -> Result<DatabaseUrl> {
        let replaced = if is_url(&self.raw) {
            let (head, tail) = url_parts(&self.raw);
            let encoded = percent_encode(database);
            let query = tail.find('?').map_or("", |q| &tail[q..]);
            format!("{head}/{encoded}{query}")
        } else {
            format!("{} dbname={}", self.raw, quote_value(database))
        };
        DatabaseUrl::parse(&replaced)
    }

    /// The same string with `keyword` set to `value` unless it sets that keyword already
    /// (`connect_timeout`, `application_name`, ...). A URL stays a URL.
    pub fn with_default(&self, keyword: &str, value: &str) -> Result<DatabaseUrl> {
        if self.get(keyword).is_some() {
            return Ok(self.clone());
        }
        let extended = if is_url(&self.raw) {
            let encoded = percent_encode(value);
            let (head, tail) = url_parts(&self.raw);
            let separator = if tail.contains('?') {
                "&"
            } else if tail.is_empty() {
                "/?"
            } else {
                "?"
            };
            format!("{head}{tail}{separator}{keyword}={encoded}")
        } else {
            format!("{} {keyword}={}", self.raw, quote_value(value))
        };
        DatabaseUrl::parse(&extended)
    }

    /// A `key=value` connection string with every option but the password, for a child
    /// program's command line; the password goes to it through `PGPASSWORD` or a passfile.
    pub fn conninfo_without_password(&self) -> String {
        self.options
            .iter()
            .filter(|(k, _)| k != "password")
            .map(|(k, v)| format!("{k}={}", quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Replaces the password wherever it appears in `text`, plain or percent-encoded.
    pub fn scrub(&self, text: &str) -> String {
        match self.password() {
            Some(password) => {
                let encoded = percent_encode(password);
                text.replace(password, "***").replace(&encoded, "***")
            }
            None => text.to_owned(),
        }
    }

    fn redacted(&self) -> String {
        let shown = if is_url(&self.raw) {
            redact_url(&self.raw)
        } else {
            match keyword_span(&self.raw, "password") {
                Some(span) => format!("{}***{}", &self.raw[..span.start], &self.raw[span.end..]),
                None => self.raw.clone(),
            }
        };
        // Belt and braces: if our reading of the text missed the password, show libpq's.
        match self.password() {
            Some(p) if shown.contains(p) => self
                .options
                .iter()
                .map(|(k, v)| {
                    if k == "password" {
                        format!("{k}=***")
                    } else {
                        format!("{k}={}", quote_value(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => shown,
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Characters a URL component keeps as they are (RFC 3986's unreserved set).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a URL's path or query.
fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

fn is_url(raw: &str) -> bool {
    raw.starts_with("postgres://") || raw.starts_with("postgresql://")
}

/// Splits a URL into `scheme://authority` and the rest (path and query), where the authority
/// ends at the first `/` or `?`, as libpq reads it.
fn url_parts(raw: &str) -> (&str, &str) {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let end = raw[start..]
        .find(['/', '?'])
        .map_or(raw.len(), |i| start + i);
    (&raw[..end], &raw[end..])
}

/// A URL with the password of its user info and of a `password=` query option replaced.
fn redact_url(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    // libpq takes the user info up to the first '@' before the first '/'.
    let before_slash = raw[start..].find('/').map_or(raw.len(), |i| start + i);
    let mut out = String::with_capacity(raw.len());
    let rest = match raw[start..before_slash].find('@') {
        Some(at) => {
            let userinfo = &raw[start..start + at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&raw[..start + colon + 1]);
                    out.push_str("***");
                    &raw[start + at..]
                }
                None => {
                    out.push_str(&raw[..start + at]);
                    &raw[start + at..]
                }
            }
        }
        None => {
            out.push_str(&raw[..start]);
            &raw[start..]
        }
    };
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..=q]);
            let params: Vec<String> = rest[q + 1..]
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key == "password" => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// The byte range of `key`'s value in a `key=value` string (quotes included), following
/// libpq's rules: spaces around `=`, single-quoted values with backslash escapes.
fn keyword_span(conninfo: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let bytes = conninfo.as_bytes();
    let mut pos = 0;
    let skip_space = |mut p: usize| {
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    loop {
        pos = skip_space(pos);
        if pos >= bytes.len() {
            return None;
        }
        let name_start = pos;
        while pos < bytes.len() && bytes[pos] != b'=' && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let name = &conninfo[name_start..pos];
        pos = skip_space(pos);
        if bytes.get(pos) != Some(&b'=') {
            return None;
        }
        pos = skip_space(pos + 1);
        let start = pos;
        if bytes.get(pos) == Some(&b'\'') {
            pos += 1;
            while pos < bytes.len() {
                match bytes[pos] {
                    b'\\' => pos += 2,
                    b'\'' => {
                        pos += 1;
                        break;
                    }
                    _ => pos += 1,
                }
            }
        } else {
            while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
                pos += if bytes[pos] == b'\\' { 2 } else { 1 };
            }
        }
        let end = pos.min(bytes.len());
        if name == key {
            return Some(start..end);
        }
    }
}

/// A value quoted for a `key=value` string: `'...'` with `\` and `'` escaped.
fn quote_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// libpq quotes the piece of the string it stumbled on, which may be a password: drop it.
fn without_quoted_fragments(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Something that is not a connection string may still hold a secret: show its start only.
fn shape_only(raw: &str) -> String {
    let head: String = raw.chars().take(12).collect();
    if raw.chars().count() > 12 {
        format!("{head}...")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_host_and_port_only() {
        let url = DatabaseUrl::parse("postgres://app:pw@db.internal:6432/app").unwrap();
        assert_eq!(url.server(), "db.internal:6432");
        let url = DatabaseUrl::parse("postgresql://app@10.0.0.5/app").unwrap();
        assert_eq!(url.server(), "10.0.0.5:5432");
        let url = DatabaseUrl::parse("host=/tmp port=5499 user=app password=pw").unwrap();
        assert_eq!(url.server(), "/tmp:5499");
        let url = DatabaseUrl::parse("dbname=app").unwrap();
        assert_eq!(url.server(), "localhost:5432");
        let url = DatabaseUrl::parse(
            "postgresql://app:pw@h1:5432,h2:5433,h3/db?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(url.servers(), ["h1:5432", "h2:5433", "h3:5432"]);
        let url = DatabaseUrl::parse("host=a,b port=6000").unwrap();
        assert_eq!(url.server(), "a:6000,b:6000");
    }

    #[test]
    fn url_password_is_hidden() {
        let url =
            DatabaseUrl::parse("postgres://app:s3cr%40t@db.internal:5432/app?sslmode=require")
                .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db.internal:5432/app?sslmode=require"
        );
        assert_eq!(
            format!("{url:?}"),
            "DatabaseUrl(postgres://app:***@db.internal:5432/app?sslmode=require)"
        );
        assert_eq!(url.password(), Some("s3cr@t"));
        assert_eq!(
            url.scrub("failed for s3cr@t and s3cr%40t"),
            "failed for *** and ***"
        );
        let url =
            DatabaseUrl::parse("postgresql://h1:1,h2:2/db?user=u&password=qp&sslmode=disable")
                .unwrap();
        assert_eq!(
            url.to_string(),
            "postgresql://h1:1,h2:2/db?user=u&password=***&sslmode=disable"
        );
    }

    #[test]
    fn keyword_password_is_hidden() {
        let url = DatabaseUrl::parse("host=db user=app password='p w\\'d' dbname=app").unwrap();
        assert_eq!(url.to_string(), "host=db user=app password=*** dbname=app");
        assert_eq!(url.password(), Some("p w'd"));
        assert_eq!(url.scrub("auth failed for p w'd"), "auth failed for ***");
        let url = DatabaseUrl::parse("host=db password = plain dbname=app").unwrap();
        assert_eq!(url.to_string(), "host=db password = *** dbname=app");
    }

    #[test]
    fn no_password_is_shown_unchanged() {
        let url = DatabaseUrl::parse("postgres://app@localhost/app").unwrap();
        assert_eq!(url.to_string(), "postgres://app@localhost/app");
        assert_eq!(url.password(), None);
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        let err = DatabaseUrl::parse("mysql-ish-secret-string")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected postgres://"), "{err}");
        assert!(!err.contains("secret-string"), "{err}");
        assert!(DatabaseUrl::parse("  ").is_err());
        // libpq stumbles on the second word of an unquoted password and quotes it.
        let err = DatabaseUrl::parse("host=db password=first secondpart")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secondpart"), "{err}");
        assert!(err.contains("quote values with spaces"), "{err}");
        let err = DatabaseUrl::parse("postgres://u:pw@db/app?nonsense=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid"), "{err}");
    }

    #[test]
    fn the_password_leaves_the_command_line_in_every_form() {
        for (raw, password) in [
            (
                "postgres://app:s%40cret@db:5432/app?sslmode=disable",
                "s@cret",
            ),
            ("host=db user=app password=pw dbname=app", "pw"),
            (
                r"host=db user=app password='a b\'c\\d' dbname=app",
                r"a b'c\d",
            ),
            ("postgresql://app@h1:1,h2:2/app?password=q%20p", "q p"),
        ] {
            let url = DatabaseUrl::parse(raw).unwrap();
            assert_eq!(url.password(), Some(password), "{raw}");
            let conninfo = url.conninfo_without_password();
            assert!(!conninfo.contains("password"), "{conninfo}");
            let again = DatabaseUrl::parse(&conninfo).unwrap();
            assert_eq!(again.get("user"), url.get("user"), "{conninfo}");
            assert_eq!(again.get("host"), url.get("host"), "{conninfo}");
            assert_eq!(again.get("dbname"), Some("app"), "{conninfo}");
        }
    }

    #[test]
    fn a_default_is_added_only_when_missing() {
        for (raw, expected) in [
            (
                "postgres://u@db/app",
                "postgres://u@db/app?connect_timeout=5",
            ),
            ("postgres://u@db", "postgres://u@db/?connect_timeout=5"),
            (
                "postgresql://h1:1,h2:2/app?sslmode=disable",
                "postgresql://h1:1,h2:2/app?sslmode=disable&connect_timeout=5",
            ),
            ("host=db dbname=app", "host=db dbname=app connect_timeout=5"),
            (
                "postgres://u@db/app?connect_timeout=9",
                "postgres://u@db/app?connect_timeout=9",
            ),
        ] {
            let url = DatabaseUrl::parse(raw).unwrap();
            let with = url.with_default("connect_timeout", "5").unwrap();
            assert_eq!(with.expose(), expected);
        }
    }

    #[test]
    fn another_database_on_the_same_server() {
        let url = DatabaseUrl::parse("postgres://app:pw@db:5432/app?sslmode=disable").unwrap();
        assert_eq!(
            url.with_database("app copy").unwrap().expose(),
            "postgres://app:pw@db:5432/app%20copy?sslmode=disable"
        );
        let url = DatabaseUrl::parse("postgresql://h1:1,h2:2?target_session_attrs=any").unwrap();
        let one = url.for_server("h2:2").unwrap();
        assert_eq!(one.servers(), vec!["h2:2"]);
        assert_eq!(one.get("target_session_attrs"), None);
        let other = url.with_database("x").unwrap();
        assert_eq!(other.database(), Some("x"));
        assert_eq!(other.get("target_session_attrs"), Some("any"));
        let url = DatabaseUrl::parse("host=db dbname=app").unwrap();
        let other = url.with_database("it's").unwrap();
        assert_eq!(other.database(), Some("it's"));
        assert_eq!(other.get("host"), Some("db"));
    }
}
