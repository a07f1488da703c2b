//! `GET /leads`, `GET /leads/{id}`, `GET /referrals/{id}` and the CSV export `GET /leads.csv`.
//!
//! The list reads `leads FINAL` (one live row per lead) with validated filters, a sort from a
//! fixed set, and keyset pagination: the cursor carries the sort, the last row's sort key and
//! its lead id, so a page never repeats or skips a lead while rows are being added. The export
//! walks the same keyset in chunks (`export.rs`).

mod csv;
mod export;
mod handlers;
mod query;

pub(crate) use export::*;
pub use handlers::*;
