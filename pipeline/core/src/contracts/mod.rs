//! Hunter's public Avro contracts and their history: every released version of every `.avsc`,
//! its spec fingerprint, and what Hunter once wrote for it.
//!
//! `schemas/history/<contract>/<NNNN>.avsc` holds each version exactly as released, oldest
//! first; the newest is the current `schemas/<contract>.avsc` (a test fails when they differ).
//! Records of every version may sit in a topic (a compacted one keeps them for ever), so a
//! version is never removed or edited, and readers know them all: a single-object record names
//! its writer schema by fingerprint, [`history`] maps the fingerprint to the version, and the
//! codec reads it into the current type by Avro schema resolution.
//!
//! Two fingerprints name a version:
//! - the specification's (CRC-64-AVRO of the Parsing Canonical Form, [`canonical`]), which
//!   Hunter writes and every spec-conforming reader computes;
//! - the *legacy* one, apache-avro 0.22's, which Hunter wrote before it computed its own;
//!   `schemas/history/fingerprints.tsv` keeps it for the versions released until then.
//!
//! Rules for a contract change (tests enforce them): add the new version to the history and
//! [`CONTRACTS`]; it must be readable by and read every earlier version
//! ([`compatibility::mutually_readable`], full transitive); its fixture records are written
//! once (`schemas/fixtures/`).

pub mod canonical;
pub mod compatibility;

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;

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
        versions: versions!("referral": "0001", "0002"),
    },
    Contract {
        name: "lead",
        full_name: "hunter.leads.v1.Lead",
        versions: versions!("lead": "0001", "0002", "0003", "0004"),
    },
    Contract {
        name: "sync_run",
        full_name: "hunter.syncruns.v1.SyncRun",
        versions: versions!("sync_run": "0001", "0002", "0003"),
    },
    Contract {
        name: "source_state",
        full_name: "hunter.sourcestate.v1.SourceState",
        versions: versions!("source_state": "0001", "0002"),
    },
    Contract {
        name: "command",
        full_name: "hunter.commands.v1.Command",
        versions: versions!("command": "0001", "0002", "0003"),
    },
    Contract {
        name: "referral_action",
        full_name: "hunter.referralactions.v1.ReferralAction",
        versions: versions!("referral_action": "0001"),
    },
    Contract {
        name: "referral_action_result",
        full_name: "hunter.referralactionresults.v1.ReferralActionResult",
        versions: versions!("referral_action_result": "0001"),
    },
];

/// The committed fingerprints: `contract<TAB>version<TAB>spec<TAB>legacy`.
const FINGERPRINTS: &str = include_str!("../../../../schemas/history/fingerprints.tsv");

/// A released version, parsed once per process.
#[derive(Debug)]
pub struct Released {
    pub contract: &'static str,
    /// `0001`, …
    pub file: &'static str,
    pub schema: Schema,
    /// The Parsing Canonical Form (the specification's).
    pub canonical: String,
    /// The spec fingerprint, as the single-object header carries it.
    pub fingerprint: [u8; 8],
    /// What Hunter wrote for this version before it computed spec fingerprints.
    pub legacy_fingerprint: Option<[u8; 8]>,
}

impl Released {
    /// `lead 0002`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.contract, self.file)
    }
}

/// Every released version of `contract`, oldest first. Panics for a contract that does not
/// exist or a history that does not parse: both are fixed in the repository, and tests parse
/// every one.
pub fn history(contract: &str) -> &'static [Released] {
    static HISTORIES: OnceLock<HashMap<&'static str, Vec<Released>>> = OnceLock::new();
    HISTORIES
        .get_or_init(|| {
            let legacy = legacy_fingerprints();
            CONTRACTS
                .iter()
                .map(|contract| {
                    let versions = contract
                        .versions
                        .iter()
                        .map(|version| released(contract, version, &legacy))
                        .collect();
                    (contract.name, versions)
                })
                .collect()
        })
        .get(contract)
        .unwrap_or_else(|| panic!("no contract {contract:?} in CONTRACTS"))
}

fn released(
    contract: &Contract,
    version: &Version,
    legacy: &HashMap<(String, String), [u8; 8]>,
) -> Released {
    let label = format!("schemas/history/{}/{}.avsc", contract.name, version.file);
    let canonical = canonical::parsing_canonical_form(version.text)
        .unwrap_or_else(|e| panic!("{label} has no canonical form: {e}"));
    Released {
        contract: contract.name,
        file: version.file,
        schema: Schema::parse_str(version.text)
            .unwrap_or_else(|e| panic!("{label} is not a valid schema: {e}")),
        fingerprint: canonical::fingerprint(&canonical),
        canonical,
        legacy_fingerprint: legacy
            .get(&(contract.name.to_owned(), version.file.to_owned()))
            .copied(),
    }
}

/// The legacy column of `fingerprints.tsv` (`-` where a version has none).
fn legacy_fingerprints() -> HashMap<(String, String), [u8; 8]> {
    committed_fingerprints()
        .into_iter()
        .filter_map(|(contract, file, _, legacy)| legacy.map(|l| ((contract, file), l)))
        .collect()
}

/// One line of `fingerprints.tsv`: contract, version, spec and legacy fingerprints.
pub(crate) type CommittedFingerprint = (String, String, [u8; 8], Option<[u8; 8]>);

/// Every line of `fingerprints.tsv`.
pub(crate) fn committed_fingerprints() -> Vec<CommittedFingerprint> {
    FINGERPRINTS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            assert_eq!(columns.len(), 4, "fingerprints.tsv: {line:?}");
            let spec =
                parse_hex(columns[2]).unwrap_or_else(|| panic!("fingerprints.tsv: {line:?}"));
            let legacy = (columns[3] != "-").then(|| {
                parse_hex(columns[3]).unwrap_or_else(|| panic!("fingerprints.tsv: {line:?}"))
            });
            (columns[0].to_owned(), columns[1].to_owned(), spec, legacy)
        })
        .collect()
}

fn parse_hex(text: &str) -> Option<[u8; 8]> {
    let mut out = [0u8; 8];
    if text.len() != 16 {
        return None;
    }
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
