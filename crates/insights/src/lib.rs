//! What PgHero and `pg_stat_statements` give an operator, as a library: slow-query log
//! settings, top queries over a window (by snapshot diff, never by reset), safe EXPLAIN with a
//! plan summary, index advice with HypoPG what-if, and health checks with thresholds.
//!
//! ```no_run
//! use diesel::{Connection, PgConnection};
//! use pgops_insights::{ExplainOptions, explain};
//!
//! let mut conn = PgConnection::establish("postgres://localhost/app").unwrap();
//! let plan = explain(&mut conn, "DELETE FROM notes WHERE id < 100", &ExplainOptions {
//!     analyze: true,
//!     ..ExplainOptions::default()
//! })
//! .unwrap(); // the rows are still there: the transaction was rolled back
//! for finding in &plan.findings {
//!     println!("{finding:?}");
//! }
//! ```

pub mod advice;
pub mod checks;
mod error;
pub mod explain;
pub mod slowlog;
pub mod sql;
pub mod statements;
pub mod whatif;

pub use advice::{Advice, IndexFinding, IndexIssue, Severity, Thresholds, advise};
pub use checks::{Check, CheckThresholds};
pub use error::{Error, Result};
pub use explain::{ExplainOptions, Explained, Finding, Parameter, explain};
pub use slowlog::{LogStatement, SlowLog};
pub use statements::{Order, Top, TopOptions, query_text, record_snapshot, top};
pub use whatif::{WhatIf, suggest, what_if};
