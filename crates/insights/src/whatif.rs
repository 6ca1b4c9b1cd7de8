//! What-if index analysis with HypoPG: a query's cost before and after hypothetical indexes,
//! without building them. Everything happens in a rolled-back transaction, so even the
//! `CREATE EXTENSION hypopg` it may need leaves no trace.

use std::time::Duration;

use diesel::{PgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};

use pgops_pg::{
    quote_ident, quote_literal,
    rows::{row, rows},
};

use crate::{
    Error, Result,
    explain::{self, Node, explain_json, in_rolled_back_transaction, walk},
    sql::check_explainable,
};

/// One hypothetical index and whether the planner chose it.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The `CREATE INDEX` statement.
    pub definition: String,
    /// The planner used it in the plan after.
    pub used: bool,
    /// Its estimated size in bytes.
    pub estimated_bytes: Option<i64>,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIf {
    /// Planner cost without the indexes.
    pub cost_before: f64,
    /// Planner cost with them.
    pub cost_after: f64,
    /// `cost_before / cost_after`.
    pub improvement: f64,
    /// The indexes tried.
    pub candidates: Vec<Candidate>,
    /// The plan with them.
    pub plan_after: Node,
}

/// Suggests indexes for `sql` from its plan: for each sequential scan on a table of at least
/// `large_table_rows` rows with a filter, an index on the filtered columns (equality first).
pub fn suggest(
    conn: &mut PgConnection,
    sql: &str,
    large_table_rows: f64,
    statement_timeout: Duration,
) -> Result<Vec<String>> {
    check_explainable(sql)?;
    let options = explain::ExplainOptions {
        analyze: false,
        buffers: false,
        statement_timeout,
        large_table_rows,
        ..explain::ExplainOptions::default()
    };
    let explained = explain::explain(conn, sql, &options)?;
    let mut out = Vec::new();
    for finding in &explained.findings {
        let explain::Finding::SeqScanOnLargeTable {
            table,
            filter: Some(filter),
            ..
        } = finding
        else {
            continue;
        };
        let columns = table_columns(conn, table)?;
        let (equal, range) = filtered_columns(filter, &columns);
        let mut chosen: Vec<String> = equal;
        if let Some(r) = range.into_iter().find(|r| !chosen.contains(r)) {
            chosen.push(r);
        }
        if !chosen.is_empty() {
            let list: Vec<String> = chosen.iter().map(|c| quote_ident(c)).collect();
            let definition = format!("CREATE INDEX ON {table} ({})", list.join(", "));
            if !out.contains(&definition) {
                out.push(definition);
            }
        }
    }
    Ok(out)
}

/// Columns compared in a filter the server printed (`((t.a = 5) AND (t.b > now()))`): those
/// compared with `=` first, then those compared with a range or `LIKE` operator. Pure.
pub fn filtered_columns(filter: &str, columns: &[String]) -> (Vec<String>, Vec<String>) {
    let mut equal = Vec::new();
    let mut range = Vec::new();
    let bytes = filter.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' || bytes[i] == b'"' {
            // A possibly qualified name (`t.a`, `t."order"`): the column is its last part,
            // with a quoted part's quotes removed (the server quotes keywords and odd names).
            let (column, end) = qualified_name_tail(filter, i);
            i = end;
            let column = column.as_str();
            let rest = skip_casts(&filter[i..]);
            let op: String = rest.chars().take_while(|c| "=<>~!".contains(*c)).collect();
            if columns.iter().any(|c| c == column) {
                let list = if op == "=" {
                    Some(&mut equal)
                } else if matches!(op.as_str(), "<" | ">" | "<=" | ">=" | "~~") {
                    Some(&mut range)
                } else {
                    None
                };
                if let Some(list) = list
                    && !list.iter().any(|c| c == column)
                {
                    list.push(column.to_owned());
                }
            }
        } else if bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    range.retain(|c| !equal.contains(c));
    (equal, range)
}

/// The last part of the (possibly qualified, possibly quoted) name starting at `start`, and
/// where the name ends.
fn qualified_name_tail(text: &str, start: usize) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut i = start;
    let mut part = String::new();
    loop {
        part.clear();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        part.push('"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
                part.push_str(&text[i..i + ch_len]);
                i += ch_len;
            }
        } else {
            let begin = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
            {
                i += 1;
            }
            part.push_str(&text[begin..i]);
        }
        if bytes.get(i) == Some(&b'.')
            && bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_' || *b == b'"')
        {
            i += 1;
            continue;
        }
        return (part.clone(), i);
    }
}

/// Skips closing parentheses and `::type` casts after a column, as in `(t.name)::text ~~ ..`.
fn skip_casts(mut rest: &str) -> &str {
    loop {
        let trimmed = rest.trim_start().trim_start_matches(')');
        if let Some(after) = trimmed.strip_prefix("::") {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '"'))
                .unwrap_or(after.len());
            rest = &after[end..];
        } else if trimmed.len() != rest.len() {
            rest = trimmed;
        } else {
            return rest;
        }
    }
}

fn table_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Column {
        name: String,
    }
    let columns: Vec<Column> = rows(
        conn,
        &format!(
            "SELECT attname::text AS name FROM pg_attribute \
             WHERE attrelid = to_regclass({}) AND attnum > 0 AND NOT attisdropped",
            quote_literal(table)
        ),
        "reading table columns",
    )?;
    Ok(columns.into_iter().map(|c| c.name).collect())
}

/// Costs `sql` before and after the hypothetical `indexes` (each a `CREATE INDEX` statement).
pub fn what_if(
    conn: &mut PgConnection,
    sql: &str,
    indexes: &[String],
    statement_timeout: Duration,
) -> Result<WhatIf> {
    check_explainable(sql)?;
    if indexes.is_empty() {
        return Err(Error::Invalid(
            "no index to try; pass --index \"CREATE INDEX ON table (column)\"".into(),
        ));
    }
    for definition in indexes {
        let shape = crate::sql::shape(definition);
        if shape.statements != 1 || shape.words.first().map(String::as_str) != Some("CREATE") {
            return Err(Error::Invalid(format!(
                "--index {definition:?} is not one CREATE INDEX statement"
            )));
        }
    }
    #[derive(Deserialize)]
    struct Available {
        available: bool,
        created: bool,
    }
    let state: Available = row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'hypopg') AS available,
                EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hypopg') AS created",
        "looking for hypopg",
    )?;
    if !state.available {
        #[derive(Deserialize)]
        struct Major {
            major: String,
        }
        let major: Major = row(
            conn,
            "SELECT split_part(current_setting('server_version'), '.', 1) AS major",
            "reading the server version",
        )?;
        return Err(Error::NotInstalled {
            extension: "hypopg",
            package: format!(
                "HypoPG on the server (Debian: postgresql-{}-hypopg)",
                major.major
            ),
        });
    }
    in_rolled_back_transaction(conn, statement_timeout, |conn| {
        if !state.created {
            diesel::sql_query("CREATE EXTENSION hypopg")
                .execute(conn)
                .map_err(|source| match source {
                    diesel::result::Error::DatabaseError(_, ref info)
                        if info.message().contains("permission denied") =>
                    {
                        Error::Privilege(
                            "creating the hypopg extension needs a superuser (or CREATE EXTENSION hypopg once, as one)".into(),
                        )
                    }
                    source => Error::Database {
                        context: "creating the hypopg extension (rolled back afterwards)".into(),
                        source,
                    },
                })?;
        }
        let before = explain::parse(&explain_json(conn, sql.trim().trim_end_matches(';'), &[])?)?;
        #[derive(Deserialize)]
        struct Hypothetical {
            name: String,
            bytes: Option<i64>,
        }
        let mut made = Vec::new();
        for definition in indexes {
            let h: Hypothetical = row(
                conn,
                &format!(
                    "SELECT indexname::text AS name, hypopg_relation_size(indexrelid) AS bytes \
                     FROM hypopg_create_index({})",
                    quote_literal(definition)
                ),
                &format!("creating the hypothetical index {definition}"),
            )?;
            made.push((definition.clone(), h));
        }
        let after = explain::parse(&explain_json(conn, sql.trim().trim_end_matches(';'), &[])?);
        // Hypothetical indexes live in this backend's memory, not in the transaction.
        diesel::sql_query("SELECT hypopg_reset()")
            .execute(conn)
            .map_err(Error::db("dropping the hypothetical indexes"))?;
        let after = after?;
        let mut used_names = Vec::new();
        walk(&after.plan, &mut |n| {
            if let Some(i) = &n.index {
                used_names.push(i.clone());
            }
        });
        let candidates = made
            .into_iter()
            .map(|(definition, h)| Candidate {
                used: used_names.contains(&h.name),
                definition,
                estimated_bytes: h.bytes,
            })
            .collect();
        Ok(WhatIf {
            cost_before: before.total_cost,
            cost_after: after.total_cost,
            improvement: before.total_cost / after.total_cost.max(f64::MIN_POSITIVE),
            candidates,
            plan_after: after.plan,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_columns_lead_then_ranges() {
        let columns: Vec<String> = ["organization_id", "last_name", "created_at", "status"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (eq, range) = filtered_columns(
            "((patients.created_at > '2024-01-01 00:00:00+00'::timestamp with time zone) AND (patients.organization_id = 7) AND ((patients.last_name)::text ~~ 'Sm%'::text))",
            &columns,
        );
        assert_eq!(eq, ["organization_id"]);
        // `(patients.last_name)::text ~~ 'Sm%'` is a prefix match through a cast.
        assert_eq!(range, ["created_at", "last_name"]);
        let (eq, _) = filtered_columns("(status = 'active = x'::text)", &columns);
        assert_eq!(eq, ["status"]);
        let (eq, range) = filtered_columns("(not_a_column = 1)", &columns);
        assert!(eq.is_empty() && range.is_empty());
    }

    #[test]
    fn quoted_names_are_read_without_their_quotes() {
        let columns: Vec<String> = ["order", "Mixed \"Name\"", "qty"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (eq, range) = filtered_columns(
            r#"((lines."order" = 42) AND (l."Mixed ""Name""" = 1) AND (qty > 3))"#,
            &columns,
        );
        assert_eq!(eq, ["order", "Mixed \"Name\""]);
        assert_eq!(range, ["qty"]);
    }
}
