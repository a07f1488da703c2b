//! `GET /leads`, `GET /leads/{id}`, `GET /referrals/{id}` and the CSV export `GET /leads.csv`.
//!
//! The list reads `leads FINAL` (one live row per lead) with validated filters, a sort from a
//! fixed set, and keyset pagination: the cursor carries the sort, the last row's sort key and
//! its lead id, so a page never repeats or skips a lead while rows are being added. The export
//! walks the same filters in one streamed query (`export.rs`).
//!
//! With `HUNTER_API_READ_MODEL` on (the default), the list's ids, order, cursor and total come
//! from the in-memory read model (`model.rs`, kept current by `feed.rs`) with the same meaning
//! as the SQL, and the page's rows from its row store (`rows.rs`, `HUNTER_API_READ_MODEL_ROWS`;
//! a row it does not hold is read from ClickHouse by (lead id, version)). A question
//! the model cannot answer exactly, or any question while it is not built or not fresh, goes to
//! ClickHouse (docs/api-read-model.md).

mod csv;
mod export;
pub(crate) mod feed;
mod handlers;
pub(crate) mod model;
mod query;
mod rows;

pub(crate) use export::*;
pub use handlers::*;
