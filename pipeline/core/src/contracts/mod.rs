//! The history of Hunter's public Avro contracts: every released version of every `.avsc`.
//!
//! `schemas/history/<contract>/<NNNN>.avsc` holds each version exactly as released, oldest
//! first; the newest is the current `schemas/<contract>.avsc`. Records of every version may sit
//! in a topic (a compacted one keeps them for ever), so a version is never removed or edited.

/// One released version of a contract.
#[derive(Debug)]
pub struct Version {
    /// `0001`, `0002`, … as the file is named.
    pub file: &'static str,
    /// The `.avsc` text as released.
    pub text: &'static str,
}

/// A contract and its released versions, oldest first (the last is the current one).
#[derive(Debug)]
pub struct Contract {
    /// The `.avsc` file's stem in `schemas/` (`referral`, `lead`, …).
    pub name: &'static str,
    /// The record's full name.
    pub full_name: &'static str,
    pub versions: &'static [Version],
}

macro_rules! versions {
    ($contract:literal: $($file:literal),+ $(,)?) => {
        &[$(Version {
            file: $file,
            text: include_str!(concat!("../../../../schemas/history/", $contract, "/", $file, ".avsc")),
        }),+]
    };
}

/// Every contract with its history.
pub const CONTRACTS: &[Contract] = &[
    Contract {
        name: "referral",
        full_name: "hunter.partnercenter.v1.Referral",
        versions: versions!("referral": "0001"),
    },
    Contract {
        name: "lead",
        full_name: "hunter.leads.v1.Lead",
        versions: versions!("lead": "0001", "0002", "0003"),
    },
    Contract {
        name: "sync_run",
        full_name: "hunter.syncruns.v1.SyncRun",
        versions: versions!("sync_run": "0001", "0002"),
    },
    Contract {
        name: "source_state",
        full_name: "hunter.sourcestate.v1.SourceState",
        versions: versions!("source_state": "0001", "0002"),
    },
    Contract {
        name: "command",
        full_name: "hunter.commands.v1.Command",
        versions: versions!("command": "0001"),
    },
];

#[cfg(test)]
pub(crate) mod fixtures;
