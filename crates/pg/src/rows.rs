//! Reading query results as serde structs: the query is wrapped in `json_agg`, so a struct
//! whose fields are the query's column names is all a caller writes, whatever the types.

use diesel::{PgConnection, QueryableByName, RunQueryDsl, sql_types::Text};
use serde::de::DeserializeOwned;

use crate::{Error, Result};

#[derive(QueryableByName)]
struct JsonRows {
    #[diesel(sql_type = Text)]
    rows: String,
}

/// Runs `query` and decodes its rows, through `json_agg`, into `T`s (serde structs whose
/// fields are the query's column names). `oid` columns arrive as strings: cast them to `int8`.
/// `context` says what was being done, for the error.
pub fn rows<T: DeserializeOwned>(
    conn: &mut PgConnection,
    query: &str,
    context: &str,
) -> Result<Vec<T>> {
    let wrapped =
        format!("SELECT coalesce(json_agg(q), '[]'::json)::text AS rows FROM ({query}) AS q");
    json_document(conn, &wrapped, context)
}

/// Runs `query`, which returns one row, and decodes it into `T`; no row is an error.
pub fn row<T: DeserializeOwned>(conn: &mut PgConnection, query: &str, context: &str) -> Result<T> {
    rows(conn, query, context)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Query {
            context: context.to_owned(),
            source: diesel::result::Error::NotFound,
        })
}

/// Runs `query`, which must return one text column `rows` holding a JSON document, and
/// decodes it: for statements that cannot be a subquery (data-modifying `WITH`).
pub fn json_document<T: DeserializeOwned>(
    conn: &mut PgConnection,
    query: &str,
    context: &str,
) -> Result<T> {
    let got = diesel::sql_query(query)
        .get_result::<JsonRows>(conn)
        .map_err(|source| Error::Query {
            context: context.to_owned(),
            source,
        })?;
    serde_json::from_str(&got.rows).map_err(|source| Error::Decode {
        context: context.to_owned(),
        source,
    })
}

/// The server's version number (`server_version_num`: 150004 for 15.4).
pub fn server_version_num(conn: &mut PgConnection) -> Result<u32> {
    #[derive(serde::Deserialize)]
    struct V {
        v: String,
    }
    let v: V = row(
        conn,
        "SELECT current_setting('server_version_num') AS v",
        "reading the server version",
    )?;
    v.v.parse().map_err(|_| Error::Query {
        context: format!("reading the server version: {:?} is not a number", v.v),
        source: diesel::result::Error::NotFound,
    })
}
