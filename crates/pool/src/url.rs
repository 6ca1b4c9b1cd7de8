//! Connection strings that never show their password: every message prints them through
//! [`DatabaseUrl`]'s `Display`, which puts `***` in its place, and text from elsewhere (a
//! driver error) goes through [`DatabaseUrl::scrub`].

use std::fmt;

use crate::{Error, Result};

/// A PostgreSQL connection string (URL or `key=value` form) whose password stays hidden.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    password: Option<String>,
}

impl DatabaseUrl {
    /// Checks the form of a connection string.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Error::InvalidUrl(
                "the database URL is empty; set DATABASE_URL to postgres://user:password@host:5432/dbname".into(),
            ));
        }
        let password = if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let url = url::Url::parse(raw).map_err(|e| {
                Error::InvalidUrl(format!(
                    "the database URL is not a valid URL ({e}); expected postgres://user:password@host:5432/dbname \
                     (percent-encode special characters in the password)"
                ))
            })?;
            url.password().map(|p| {
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map_or_else(|| p.to_owned(), |(_, v)| v.into_owned())
            })
        } else if raw.contains('=') {
            keyword_value(raw, "password").map(|(value, _)| value)
        } else {
            return Err(Error::InvalidUrl(format!(
                "the database URL `{}` is neither a postgres:// URL nor key=value pairs; \
                 expected postgres://user:password@host:5432/dbname",
                redact_unknown(raw)
            )));
        };
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            password: password.filter(|p| !p.is_empty()),
        })
    }

    /// The real string, for the driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `host:port` of the server (`localhost:5432` when not given): a label that names the
    /// server without credentials or database.
    pub fn server(&self) -> String {
        let (host, port) = if self.raw.starts_with("postgres") {
            match url::Url::parse(&self.raw) {
                Ok(url) => (
                    url.host_str().filter(|h| !h.is_empty()).map(str::to_owned),
                    url.port().map(|p| p.to_string()),
                ),
                Err(_) => (None, None),
            }
        } else {
            (
                keyword_value(&self.raw, "host").map(|(v, _)| v),
                keyword_value(&self.raw, "port").map(|(v, _)| v),
            )
        };
        format!(
            "{}:{}",
            host.unwrap_or_else(|| "localhost".to_owned()),
            port.unwrap_or_else(|| "5432".to_owned())
        )
    }

    /// Replaces the password wherever it appears in `text`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(password) => {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
                text.replace(password.as_str(), "***")
                    .replace(&encoded, "***")
            }
            None => text.to_owned(),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raw.starts_with("postgres")
            && let Ok(mut url) = url::Url::parse(&self.raw)
        {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            return f.write_str(url.as_str());
        }
        match keyword_value(&self.raw, "password") {
            Some((_, span)) => write!(f, "{}***{}", &self.raw[..span.start], &self.raw[span.end..]),
            None => f.write_str(&self.raw),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The value of `key` in a libpq `key=value` string (values may be single-quoted, with
/// backslash escapes) and the byte range it spans in the string, quotes included.
fn keyword_value(conninfo: &str, key: &str) -> Option<(String, std::ops::Range<usize>)> {
    let mut pos = 0;
    loop {
        let rest = &conninfo[pos..];
        let skipped = rest.len() - rest.trim_start().len();
        pos += skipped;
        if pos >= conninfo.len() {
            return None;
        }
        let eq = conninfo[pos..].find('=')?;
        let name = conninfo[pos..pos + eq].trim();
        pos += eq + 1;
        pos += conninfo[pos..].len() - conninfo[pos..].trim_start().len();
        let start = pos;
        let mut value = String::new();
        let mut chars = conninfo[pos..].char_indices();
        if conninfo[pos..].starts_with('\'') {
            chars.next();
            let mut end = conninfo.len() - pos;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            pos += end;
        } else {
            let end = conninfo[pos..]
                .find(char::is_whitespace)
                .unwrap_or(conninfo.len() - pos);
            value.push_str(&conninfo[pos..pos + end]);
            pos += end;
        }
        if name == key {
            return Some((value, start..pos));
        }
    }
}

/// Something that is not a connection string may still hold a secret: show its shape only.
fn redact_unknown(raw: &str) -> String {
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
        assert_eq!(
            url.scrub("failed for s3cr@t and s3cr%40t"),
            "failed for *** and ***"
        );
    }

    #[test]
    fn keyword_password_is_hidden() {
        let url = DatabaseUrl::parse("host=db user=app password='p w\\'d' dbname=app").unwrap();
        assert_eq!(url.to_string(), "host=db user=app password=*** dbname=app");
        assert_eq!(url.scrub("auth failed for p w'd"), "auth failed for ***");
        let url = DatabaseUrl::parse("host=db password=plain dbname=app").unwrap();
        assert_eq!(url.to_string(), "host=db password=*** dbname=app");
    }

    #[test]
    fn no_password_is_shown_unchanged() {
        let url = DatabaseUrl::parse("postgres://app@localhost/app").unwrap();
        assert_eq!(url.to_string(), "postgres://app@localhost/app");
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        let err = DatabaseUrl::parse("mysql-ish-secret-string")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected postgres://"), "{err}");
        assert!(!err.contains("secret-string"), "{err}");
        assert!(DatabaseUrl::parse("  ").is_err());
    }
}
