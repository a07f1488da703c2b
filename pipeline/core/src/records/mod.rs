//! The records Hunter writes to Kafka, one Rust type per `.avsc` file in `schemas/`.
//!
//! The `.avsc` files are the public contract; the types here must agree with them, and the
//! tests below prove it by writing a fully populated value with the contract schema (the
//! schema-aware writer refuses an unknown or missing field and a wrong type) and reading it
//! back unchanged.

pub mod action;
pub mod control;
pub mod lead;
pub mod lenient;
pub mod referral;
pub mod states;

use std::sync::OnceLock;

use apache_avro::Schema;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use action::{ReferralAction, ReferralActionResult};
pub use control::{Command, RecentVersion, SourceState, SyncRun};
pub use lead::{ESTIMATED_EXPIRY_DAYS, Expiry, Lead, LeadError};
pub use lenient::{RawJson, Timestamp};
pub use referral::{Ingest, Referral, ReferralParseError, ReferralVersion, Truncation};
pub use states::{
    ChangeType, EmailProvider, EmailProviderSource, Priority, RunErrorClass, RunStatus, RunTrigger,
};

/// FNV-1a, 64 bits: a hash that stays the same across builds, platforms and Rust versions,
/// for values that are persisted or compared between processes (version keys, checksums).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A record type with its contract schema.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The `.avsc` text as checked in.
    const SCHEMA_TEXT: &'static str;
    /// The schema's full name, for logs and registry subjects.
    const FULL_NAME: &'static str;
    /// The contract's name in `schemas/` and `schemas/history/` (`referral`, `lead`, …).
    const CONTRACT: &'static str;
    /// The parsed schema, parsed once per process.
    fn schema() -> &'static Schema;
}

macro_rules! record {
    ($type:ty, $contract:literal, $full_name:literal) => {
        impl Record for $type {
            const SCHEMA_TEXT: &'static str =
                include_str!(concat!("../../../../schemas/", $contract, ".avsc"));
            const FULL_NAME: &'static str = $full_name;
            const CONTRACT: &'static str = $contract;
            fn schema() -> &'static Schema {
                static SCHEMA: OnceLock<Schema> = OnceLock::new();
                SCHEMA.get_or_init(|| {
                    Schema::parse_str(Self::SCHEMA_TEXT).expect(concat!(
                        "schemas/",
                        $contract,
                        ".avsc is a valid Avro schema"
                    ))
                })
            }
        }
    };
}

record!(Referral, "referral", "hunter.partnercenter.v1.Referral");
record!(Lead, "lead", "hunter.leads.v1.Lead");
record!(SyncRun, "sync_run", "hunter.syncruns.v1.SyncRun");
record!(
    SourceState,
    "source_state",
    "hunter.sourcestate.v1.SourceState"
);
record!(Command, "command", "hunter.commands.v1.Command");
record!(
    ReferralAction,
    "referral_action",
    "hunter.referralactions.v1.ReferralAction"
);
record!(
    ReferralActionResult,
    "referral_action_result",
    "hunter.referralactionresults.v1.ReferralActionResult"
);

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
