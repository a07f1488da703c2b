//! The processor role's logic, free of Kafka: what a referral version becomes.
//!
//! - [`dedupe`]: the newest version per referral id; repeats and older versions produce nothing.
//! - [`enrich`]: company domain, mail provider, normalised fields, USD value, score.

pub mod dedupe;
pub mod enrich;
