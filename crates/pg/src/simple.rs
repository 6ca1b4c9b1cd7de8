//! A connection that speaks only PostgreSQL's simple query protocol, through libpq: for peers
//! that refuse the extended protocol diesel uses, such as PgBouncer's admin console
//! (`SHOW POOLS`, `SHOW STATS_TOTALS`, ...). Errors never carry a password.

use crate::{DatabaseUrl, Error, Result, libpq};

/// One result of a simple query: column names and rows of text values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows of values (`None` for NULL), in column order.
    pub rows: Vec<Vec<Option<String>>>,
}

/// An open simple-protocol connection.
pub struct SimpleConnection {
    conn: libpq::Simple,
    url: DatabaseUrl,
}

impl SimpleConnection {
    /// Connects to `url`.
    pub fn connect(url: &DatabaseUrl) -> Result<SimpleConnection> {
        let conn = libpq::Simple::connect(url.expose()).map_err(|message| Error::Simple {
            context: format!("cannot connect to {url}"),
            message: url.scrub(&message),
        })?;
        Ok(SimpleConnection {
            conn,
            url: url.clone(),
        })
    }

    /// Runs one statement and returns its rows.
    pub fn query(&mut self, sql: &str) -> Result<Rows> {
        let (columns, rows) = self.conn.query(sql).map_err(|message| Error::Simple {
            context: format!("`{sql}` on {}", self.url),
            message: self.url.scrub(&message),
        })?;
        Ok(Rows { columns, rows })
    }
}

impl std::fmt::Debug for SimpleConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleConnection")
            .field("url", &self.url.to_string())
            .finish()
    }
}

/// One row of [`Rows`], read by column name.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    columns: &'a [String],
    values: &'a [Option<String>],
}

impl Rows {
    /// The rows, each read by column name.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.rows.iter().map(|values| Record {
            columns: &self.columns,
            values,
        })
    }
}

impl<'a> Record<'a> {
    /// The value of `column` (`None` for NULL or a column the row lacks).
    pub fn get(&self, column: &str) -> Option<&'a str> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.values.get(index)?.as_deref()
    }

    /// The value of `column` as a number, when it is one.
    pub fn number(&self, column: &str) -> Option<f64> {
        self.get(column)?.parse().ok()
    }
}
