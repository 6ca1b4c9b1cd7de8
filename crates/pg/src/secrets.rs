//! Secrets in SQL text. `pg_stat_statements` and `pg_stat_activity` keep utility statements as
//! written, so `ALTER ROLE app PASSWORD 'An0therS3cret'` carries its password into every tool
//! that shows query text. [`mask_secrets`] replaces, before the text goes anywhere:
//! - the string literal after the word `PASSWORD` (`CREATE|ALTER ROLE|USER ... PASSWORD '..'`,
//!   `CREATE|ALTER USER MAPPING ... OPTIONS (password '..')`, `SET password '..'`);
//! - inside any string literal, a connection string's `password=..` and a URL's
//!   `user:password@` (`dblink_connect('host=.. password=..')`, `CREATE SERVER ... OPTIONS`);
//! - the same inside literals and dollar-quoted bodies that hold SQL (`DO $$ .. $$`,
//!   `dblink_exec(.., 'ALTER ROLE .. PASSWORD ''..''')`).
//!
//! The text is read with PostgreSQL's lexical rules (quoted identifiers, `''` and `E'\''`
//! escapes, dollar quotes, comments), so a masked statement still reads as SQL. Pure.

use std::borrow::Cow;

/// What a masked secret becomes.
pub const MASK: &str = "***";

/// `sql` with every password it carries replaced by [`MASK`]; borrowed when there was none.
pub fn mask_secrets(sql: &str) -> Cow<'_, str> {
    // Cheap exit for the common case: no password can hide in text that never says so.
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("password") && !lower.contains("://") {
        return Cow::Borrowed(sql);
    }
    let masked = mask(sql);
    if masked == sql {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(masked)
    }
}

fn mask(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // The last word read (lowercased), for "is this literal a password?".
    let mut last_word = String::new();
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(sql.len(), |n| i + n);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = comment_end(bytes, i);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'"' => {
                let (end, inner_end) = quoted_end(bytes, i, b'"', false);
                out.push_str(&sql[i..end]);
                last_word = sql[i + 1..inner_end]
                    .replace("\"\"", "\"")
                    .to_ascii_lowercase();
                i = end;
            }
            b'\'' => {
                let escaped =
                    i > 0 && matches!(bytes[i - 1], b'E' | b'e') && !word_byte_before(bytes, i - 1);
                let (end, inner_end) = quoted_end(bytes, i, b'\'', escaped);
                let inner = &sql[i + 1..inner_end];
                out.push('\'');
                if last_word == "password" {
                    out.push_str(MASK);
                } else if escaped {
                    out.push_str(&mask_in_text(inner));
                } else {
                    // Unescape, mask (as text and as SQL), escape again.
                    let plain = inner.replace("''", "'");
                    let masked = mask_in_text(&mask(&plain));
                    if masked == plain {
                        out.push_str(inner);
                    } else {
                        out.push_str(&masked.replace('\'', "''"));
                    }
                }
                if inner_end < end {
                    out.push('\'');
                }
                last_word.clear();
                i = end;
            }
            b'$' => match dollar_tag(sql, i) {
                Some(tag) => {
                    let body_start = i + tag.len();
                    let body_end = sql[body_start..]
                        .find(tag)
                        .map_or(sql.len(), |n| body_start + n);
                    out.push_str(tag);
                    let body = &sql[body_start..body_end];
                    if last_word == "password" {
                        out.push_str(MASK);
                    } else {
                        out.push_str(&mask_in_text(&mask(body)));
                    }
                    if body_end < sql.len() {
                        out.push_str(tag);
                    }
                    last_word.clear();
                    i = (body_end + tag.len()).min(sql.len());
                }
                None => {
                    // A parameter ($1) or part of a word.
                    let end = word_end(bytes, i + 1);
                    out.push_str(&sql[i..end]);
                    last_word.clear();
                    i = end;
                }
            },
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let end = word_end(bytes, i);
                out.push_str(&sql[i..end]);
                // `E'..'`: the E is the string's prefix, not a word before it.
                let prefix =
                    end == i + 1 && c.eq_ignore_ascii_case(&b'e') && bytes.get(end) == Some(&b'\'');
                if !prefix {
                    last_word = sql[i..end].to_ascii_lowercase();
                }
                i = end;
            }
            c if c.is_ascii_whitespace() => {
                out.push(c as char);
                i += 1;
            }
            _ => {
                // Punctuation ends "the word before": `password = 'x'` in OPTIONS is not SQL,
                // but `=` keeps it for conninfo-like option lists written with one.
                if c != b'=' {
                    last_word.clear();
                }
                let len = utf8_len(c);
                out.push_str(&sql[i..(i + len).min(sql.len())]);
                i += len;
            }
        }
    }
    out
}

/// Masks `password=..` (a connection string's keyword) and `://user:password@` (a URL) in
/// free text.
fn mask_in_text(text: &str) -> String {
    let mut out = mask_conninfo_passwords(text);
    out = mask_url_passwords(&out);
    out
}

fn mask_conninfo_passwords(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password") {
        let at = search + found;
        let before_ok = at == 0 || !is_word_byte(lower.as_bytes()[at - 1]);
        let mut j = at + "password".len();
        let bytes = text.as_bytes();
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if !before_ok || bytes.get(j) != Some(&b'=') {
            search = at + "password".len();
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let value_end = if bytes.get(j) == Some(&b'\'') {
            let mut k = j + 1;
            while k < bytes.len() && bytes[k] != b'\'' {
                k += if bytes[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(bytes.len())
        } else {
            let mut k = j;
            while k < bytes.len() && !bytes[k].is_ascii_whitespace() && bytes[k] != b'\'' {
                k += 1;
            }
            k
        };
        out.push_str(&text[from..j]);
        out.push_str(MASK);
        from = value_end;
        search = value_end.max(at + 1);
    }
    out.push_str(&text[from..]);
    out
}

fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // userinfo ends at the first '@' before any '/', '?', '#' or whitespace.
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(userinfo_end) => match authority[..userinfo_end].find(':') {
                Some(colon) => {
                    out.push_str(&authority[..=colon]);
                    out.push_str(MASK);
                    out.push_str(&authority[userinfo_end..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn word_byte_before(bytes: &[u8], i: usize) -> bool {
    i > 0 && is_word_byte(bytes[i - 1])
}

fn word_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_word_byte(bytes[i]) {
        i += 1;
    }
    i
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Where a quoted string or identifier that opens at `start` ends (just past its closing
/// quote), and where its content ends (at the closing quote); both are the end of the text
/// when it never closes.
fn quoted_end(bytes: &[u8], start: usize, quote: u8, backslashes: bool) -> (usize, usize) {
    let mut i = start + 1;
    while i < bytes.len() {
        if backslashes && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return (i + 1, i);
        }
        i += 1;
    }
    (bytes.len(), bytes.len())
}

/// Where a (nestable) block comment that opens at `start` ends.
fn comment_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The dollar-quote tag (`$$`, `$body$`) that opens at `start`, if one does.
fn dollar_tag(sql: &str, start: usize) -> Option<&str> {
    let bytes = sql.as_bytes();
    if word_byte_before(bytes, start) {
        return None;
    }
    let mut i = start + 1;
    if bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    (bytes.get(i) == Some(&b'$')).then(|| &sql[start..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "An0therS3cret";

    #[test]
    fn passwords_of_roles_and_user_mappings_are_masked() {
        for (sql, expected) in [
            (
                "ALTER ROLE app PASSWORD 'An0therS3cret'",
                "ALTER ROLE app PASSWORD '***'",
            ),
            (
                "create user bob with encrypted password 'An0therS3cret' valid until 'infinity'",
                "create user bob with encrypted password '***' valid until 'infinity'",
            ),
            (
                "ALTER USER \"Bob\" WITH LOGIN PASSWORD E'An0ther\\'S3cret'",
                "ALTER USER \"Bob\" WITH LOGIN PASSWORD E'***'",
            ),
            (
                "CREATE ROLE r PASSWORD $pw$An0therS3cret$pw$",
                "CREATE ROLE r PASSWORD $pw$***$pw$",
            ),
            (
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password 'An0therS3cret')",
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password '***')",
            ),
            (
                "ALTER USER MAPPING FOR app SERVER s OPTIONS (SET \"password\" 'An0therS3cret')",
                "ALTER USER MAPPING FOR app SERVER s OPTIONS (SET \"password\" '***')",
            ),
            (
                "SELECT dblink_connect('c', 'host=db port=5432 password=An0therS3cret dbname=x')",
                "SELECT dblink_connect('c', 'host=db port=5432 password=*** dbname=x')",
            ),
            (
                "SELECT dblink_connect('c', 'password = ''An0therS3cret'' host=db')",
                "SELECT dblink_connect('c', 'password = *** host=db')",
            ),
            (
                "SELECT dblink('postgresql://app:An0therS3cret@db:5432/x', 'SELECT 1')",
                "SELECT dblink('postgresql://app:***@db:5432/x', 'SELECT 1')",
            ),
            (
                "SELECT dblink_exec('c', 'ALTER ROLE app PASSWORD ''An0therS3cret''')",
                "SELECT dblink_exec('c', 'ALTER ROLE app PASSWORD ''***''')",
            ),
            (
                "DO $$BEGIN EXECUTE 'ALTER ROLE app PASSWORD ''An0therS3cret'''; END$$",
                "DO $$BEGIN EXECUTE 'ALTER ROLE app PASSWORD ''***'''; END$$",
            ),
        ] {
            let masked = mask_secrets(sql);
            assert_eq!(masked, expected, "{sql}");
            assert!(!masked.contains(MARKER), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_left_as_it_is() {
        for sql in [
            "SELECT * FROM users WHERE id = $1",
            "ALTER ROLE app PASSWORD $1",
            "ALTER ROLE app PASSWORD NULL",
            "SELECT 'password' AS word, \"password\" FROM t",
            "SELECT $1::text, $2 -- password: see the vault\n",
            "UPDATE t SET note = 'it''s fine' /* password */ WHERE x = 'ünïcode'",
            "SELECT 'no url here: https://example.com/path'",
            "SELECT password_hash FROM accounts WHERE login = 'a'",
        ] {
            assert!(matches!(mask_secrets(sql), Cow::Borrowed(_)), "{sql}");
        }
        // Unterminated text does not panic.
        for sql in [
            "ALTER ROLE x PASSWORD 'unterminated",
            "SELECT $a$ never closed",
            "/* open",
            "SELECT E'\\",
            "x password=",
            "'",
            "$",
        ] {
            let _ = mask_secrets(sql);
        }
    }
}
