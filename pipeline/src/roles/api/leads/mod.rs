//! `GET /leads`, `GET /leads/{id}` and `GET /referrals/{id}`.
//!
//! The list reads `leads FINAL` (one live row per lead) with validated filters, a sort from a
//! fixed set, and keyset pagination: the cursor carries the sort, the last row's sort key and
//! its lead id, so a page never repeats or skips a lead while rows are being added.

mod handlers;
mod query;

pub use handlers::*;
