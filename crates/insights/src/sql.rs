//! A small PostgreSQL-aware lexer (quotes, dollar quotes, comments) for refusing what EXPLAIN
//! must not run. Reading rows and quoting live in `pgops-pg`.

use diesel::PgConnection;

use crate::{Error, Result};

/// One statement's leading keywords (upper case) and whether more statements follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The first two words outside comments, upper-cased (`["DELETE", "FROM"]`).
    pub words: Vec<String>,
    /// How many statements the text holds (empty ones between `;;` are not counted).
    pub statements: usize,
    /// The highest positional parameter (`$3` makes 3) outside quotes and comments: what
    /// `pg_stat_statements` leaves where constants were.
    pub parameters: usize,
}

/// Reads the shape of `sql`: its statements and its leading keywords.
///
/// Knows `'..'` (with `''` and `E'\''`), `".."`, `$tag$..$tag$`, `-- ..` and nested `/* */`,
/// so a `;` inside any of them does not split.
pub fn shape(sql: &str) -> Shape {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut statements = 0;
    let mut parameters = 0;
    let mut current_has_content = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b';' => {
                if current_has_content {
                    statements += 1;
                }
                current_has_content = false;
                i += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        current_has_content = true;
        match c {
            b'\'' => {
                // E'..' only when the E stands alone: `date'..'` is a typed literal whose
                // backslashes are plain characters.
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'E' | b'e')
                    && (i < 2 || !is_ident_byte(bytes[i - 2]));
                i += 1;
                while i < bytes.len() {
                    if escapes && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'$' => match dollar_tag(&bytes[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = find(bytes, body, tag).map_or(bytes.len(), |end| end + tag.len());
                }
                None => {
                    // `$1` is a parameter unless it continues an identifier (`a$1`).
                    let digits = bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    if digits > 0 && (i == 0 || !is_ident_byte(bytes[i - 1])) {
                        let number = sql[i + 1..i + 1 + digits].parse().unwrap_or(usize::MAX);
                        parameters = parameters.max(number);
                    }
                    i += 1 + digits;
                }
            },
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if statements == 0 && words.len() < 2 {
                    words.push(sql[start..i].to_ascii_uppercase());
                }
            }
            _ => i += 1,
        }
    }
    if current_has_content {
        statements += 1;
    }
    Shape {
        words,
        statements,
        parameters,
    }
}

/// The statements EXPLAIN accepts, by first keyword.
const EXPLAINABLE: &[&str] = &[
    "SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE",
];

/// Checks that `sql` is exactly one statement EXPLAIN can run, and not transaction control
/// or an EXPLAIN of its own, and returns its shape; the error says what was found.
pub fn check_explainable(sql: &str) -> Result<Shape> {
    let shape = shape(sql);
    if shape.statements == 0 {
        return Err(Error::Refused("the statement is empty".into()));
    }
    if shape.statements > 1 {
        return Err(Error::Refused(format!(
            "the text holds {} statements; give exactly one (no `;` between statements)",
            shape.statements
        )));
    }
    let first = shape.words.first().map(String::as_str).unwrap_or("");
    let control = [
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "PREPARE",
    ];
    if control.contains(&first) {
        return Err(Error::Refused(format!(
            "{first} is transaction control; pgops runs the statement in its own transaction and always rolls it back"
        )));
    }
    if first == "EXPLAIN" {
        return Err(Error::Refused(
            "give the statement without EXPLAIN; use --analyze and --buffers for the options"
                .into(),
        ));
    }
    if !EXPLAINABLE.contains(&first) {
        return Err(Error::Refused(format!(
            "EXPLAIN cannot run a {first} statement; give a SELECT, WITH, VALUES, TABLE, INSERT, UPDATE, DELETE or MERGE"
        )));
    }
    Ok(shape)
}

/// A byte that continues an identifier (ASCII letters, digits, `_`, `$`, or part of a
/// non-ASCII character).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn dollar_tag(rest: &[u8]) -> Option<&[u8]> {
    let end = rest[1..].iter().position(|&b| b == b'$')? + 1;
    let inner = &rest[1..end];
    let valid = inner
        .iter()
        .enumerate()
        .all(|(k, &b)| b == b'_' || b.is_ascii_alphabetic() || (k > 0 && b.is_ascii_digit()));
    valid.then(|| &rest[..=end])
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The server's version number (`server_version_num`, 150004 for 15.4).
pub(crate) fn server_version(conn: &mut PgConnection) -> Result<u32> {
    let version = pgops_pg::rows::server_version_num(conn)?;
    if version < 130_000 {
        return Err(Error::Unsupported(version.to_string()));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_split() {
        for sql in [
            "SELECT ';'",
            "SELECT 'it''s; fine'",
            "SELECT E'\\'; still one'",
            "SELECT \"a;b\" FROM t",
            "SELECT $$;$$",
            "SELECT $fn$ ; $x$ ; $fn$",
            "SELECT 1 -- ; not a split\n",
            "SELECT /* ; /* nested ; */ ; */ 1",
            "SELECT 1;",
            "SELECT 1;;  ",
        ] {
            assert_eq!(shape(sql).statements, 1, "{sql}");
        }
        assert_eq!(shape("SELECT 1; DELETE FROM t").statements, 2);
        assert_eq!(shape("SELECT $1; SELECT 2").statements, 2);
        assert_eq!(shape("  -- only a comment\n").statements, 0);
        // A typed literal is not an E'' string: its backslash does not escape the quote.
        assert_eq!(
            shape("SELECT date'C:\\'; DELETE FROM t; SELECT 'x'").statements,
            3
        );
        assert_eq!(shape("SELECT e'\\'; still one'").statements, 1);
    }

    #[test]
    fn parameters_are_counted_outside_quotes_and_comments() {
        assert_eq!(
            shape("SELECT * FROM t WHERE a = $1 AND b IN ($3, $2)").parameters,
            3
        );
        assert_eq!(
            shape("SELECT '$4', \"$5\", $x$ $6 $x$ -- $7\n").parameters,
            0
        );
        assert_eq!(shape("SELECT a$1 FROM t /* $2 */").parameters, 0);
        assert_eq!(shape("SELECT $12::int").parameters, 12);
    }

    #[test]
    fn leading_words_skip_comments() {
        assert_eq!(
            shape("/* why */ -- note\n delete from t").words,
            ["DELETE", "FROM"]
        );
    }

    #[test]
    fn refuses_what_explain_must_not_run() {
        assert!(check_explainable("DELETE FROM notes WHERE id < 10").is_ok());
        assert!(check_explainable("with x as (select 1) select * from x").is_ok());
        for (sql, says) in [
            ("", "empty"),
            ("SELECT 1; COMMIT", "2 statements"),
            ("COMMIT", "transaction control"),
            ("begin", "transaction control"),
            ("EXPLAIN SELECT 1", "without EXPLAIN"),
            ("DROP TABLE notes", "cannot run a DROP"),
            ("VACUUM notes", "cannot run a VACUUM"),
        ] {
            let err = check_explainable(sql).unwrap_err().to_string();
            assert!(err.contains(says), "{sql}: {err}");
        }
    }
}
