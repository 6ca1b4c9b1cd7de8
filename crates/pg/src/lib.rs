//! PostgreSQL plumbing that every pgops crate shares, in one place and depending on nothing
//! of ours: connection strings read by libpq's own parser and shown without their password
//! ([`DatabaseUrl`]), quoting ([`quote_ident`], [`quote_literal`]), query rows as serde
//! structs ([`rows`]), passwords masked out of query text ([`mask_secrets`]), WAL positions and file names ([`Lsn`], [`WalFile`]), and finding and
//! running PostgreSQL programs as the server's OS user ([`PgBinaries`], [`ServerUser`]).
//!
//! ```
//! use pgops_pg::{DatabaseUrl, Lsn, WalFile, quote_ident};
//!
//! let url = DatabaseUrl::parse("postgresql://app:s3cret@h1:5432,h2:5432/app").unwrap();
//! assert_eq!(url.to_string(), "postgresql://app:***@h1:5432,h2:5432/app");
//! assert!(!url.conninfo_without_password().contains("s3cret"));
//! assert_eq!(quote_ident("order"), "\"order\"");
//! let lsn: Lsn = "0/3000028".parse().unwrap();
//! assert_eq!(WalFile::Segment(lsn.segment(1)).to_string(), "000000010000000000000003");
//! ```

pub mod catalog;
mod config_file;
mod conninfo;
mod error;
mod libpq;
mod os;
mod programs;
mod quote;
mod report;
pub mod rows;
mod secrets;
pub mod simple;
mod wal;

pub use config_file::config_path;
pub use conninfo::DatabaseUrl;
pub use error::{Error, Result};
pub use os::{ServerUser, free_port};
pub use programs::{PgBinaries, find_installed_program, find_program, program_major_version};
pub use quote::{KEYWORDS, is_keyword, quote_ident, quote_literal};
pub use report::report;
pub use secrets::{MASK, mask_secrets};
pub use wal::{Lsn, SEGMENT_BYTES, Segment, WalFile};
