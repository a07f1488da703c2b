//! `GET /leads`, `GET /leads/{id}` and `GET /referrals/{id}`.
//!
//! The list reads `leads FINAL` (one live row per lead) with validated filters, a sort from a
//! fixed set, and keyset pagination: the cursor carries the sort, the last row's sort key and
//! its lead id, so a page never repeats or skips a lead while rows are being added.
//!
//! With `HUNTER_API_READ_MODEL` on (the default), the list's ids, order, cursor and total come
//! from the in-memory read model (`model.rs`, kept current by `feed.rs`) with the same meaning
//! as the SQL; the page's rows are still read from ClickHouse by (lead id, version). A question
//! the model cannot answer exactly, or any question while it is not built or not fresh, goes to
//! ClickHouse (docs/api-read-model.md).

pub(crate) mod feed;
mod handlers;
pub(crate) mod model;
mod query;

pub use handlers::*;
