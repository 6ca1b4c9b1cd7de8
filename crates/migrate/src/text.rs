//! Reading SQL text: where a statement's first token is (past white space and comments), the
//! line and column of an offset, and (with PostgreSQL's parser, feature `lint`) the statements
//! of a file with their offsets.

/// Bytes of white space and comments before the first token of `text`.
pub(crate) fn leading_noise(text: &str) -> usize {
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next);
        } else {
            return text.len() - trimmed.len();
        }
    }
}

/// Whether a SQL text holds nothing but white space and comments.
pub(crate) fn is_blank(sql: &str) -> bool {
    leading_noise(sql) == sql.len()
}

/// 1-based line and column of a byte offset.
#[cfg(feature = "lint")]
pub(crate) fn position(sql: &str, offset: usize) -> (usize, usize) {
    let before = &sql[..offset.min(sql.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The statements of a SQL text, each with the byte offset where it starts in `sql` and the
/// offset of its first token.
#[cfg(feature = "lint")]
pub(crate) fn statements(sql: &str) -> Option<Vec<Statement<'_>>> {
    let pieces = pg_query::split_with_scanner(sql).ok()?;
    let mut offset = 0;
    let mut out = Vec::new();
    for piece in pieces {
        let start = sql[offset..].find(piece).map(|i| offset + i)?;
        offset = start + piece.len();
        out.push(Statement {
            text: piece,
            first_token: start + leading_noise(piece),
        });
    }
    Some(out)
}

/// One statement of a SQL text.
#[cfg(feature = "lint")]
pub(crate) struct Statement<'a> {
    /// Its text, with the comments before it.
    pub(crate) text: &'a str,
    /// Byte offset of its first token in the whole text.
    pub(crate) first_token: usize,
}
