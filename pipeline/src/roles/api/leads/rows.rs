//! The read model's row store: each current lead's row as `GET /leads` answers it (the JSON of
//! its [`LeadView`]), so a page the model chose is answered without reading ClickHouse
//! (`HUNTER_API_READ_MODEL_ROWS`, docs/api-read-model.md).
//!
//! Invariants:
//! - One entry per lead id: the newest version seen; the same version made again (a later
//!   `processed_at`: newer lead rules, docs/leads.md) replaces it, as ReplacingMergeTree keeps
//!   the last insert of a version (the feed reads rows in insert order); the same row read
//!   again changes nothing.
//! - An entry answers only for its exact (lead id, version): the model and the store are fed by
//!   two reads, so for a moment the store may hold another version than the model chose; such
//!   a row is read from ClickHouse by (lead id, version) as before. A page is never wrong, only
//!   sometimes slower.

use std::collections::HashMap;

use hunter_clickhouse::rows::LeadRow;
use serde_json::value::RawValue;

use super::handlers::LeadView;

/// One lead's row as held: its version, `processed_at` (seconds: a version made again by
/// newer lead rules has a later one) and the JSON.
struct Held {
    version: u64,
    processed: u32,
    json: Box<RawValue>,
}

/// The current leads' rows, as JSON, by lead id.
#[derive(Default)]
pub(crate) struct RowStore {
    rows: HashMap<Box<str>, Held>,
    /// Sum of the held JSON lengths and ids, for the bytes-per-lead figure.
    bytes: usize,
}

impl RowStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Leads held.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Heap bytes held: the JSON and the ids, plus the table's slots.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes + self.rows.capacity() * (std::mem::size_of::<(Box<str>, Held)>() + 1)
    }

    /// Whether a row of (lead id, version, processed seconds) would change what is held: the
    /// lead is not held, or this is a newer version, or the same version made again.
    pub(crate) fn wants(&self, lead_id: &str, version: u64, processed: u32) -> bool {
        match self.rows.get(lead_id) {
            None => true,
            Some(held) => {
                version > held.version || (version == held.version && processed != held.processed)
            }
        }
    }

    /// Takes `row` when it is newer than (or as new as) the lead's row held; whether it did.
    pub(crate) fn upsert(&mut self, row: LeadRow) -> bool {
        let version = row.version;
        let processed = u32::try_from(row.processed_at.unix_timestamp()).unwrap_or(0);
        if let Some(held) = self.rows.get(row.lead_id.as_str())
            && (version < held.version || (version == held.version && processed == held.processed))
        {
            return false;
        }
        let id: Box<str> = row.lead_id.clone().into_boxed_str();
        let json = match serde_json::value::to_raw_value(&LeadView::from(row)) {
            Ok(json) => json,
            // A view always serializes (strings, numbers, arrays); should it not, the row is
            // simply not held and is read from ClickHouse.
            Err(error) => {
                tracing::warn!(lead_id = %id, %error, "lead row not held by the read model");
                return false;
            }
        };
        self.bytes += json.get().len();
        let held = Held {
            version,
            processed,
            json,
        };
        match self.rows.insert(id.clone(), held) {
            Some(old) => self.bytes -= old.json.get().len(),
            None => self.bytes += id.len(),
        }
        true
    }

    /// The row of exactly (lead id, version), when held.
    pub(crate) fn get(&self, lead_id: &str, version: u64) -> Option<&RawValue> {
        self.rows
            .get(lead_id)
            .filter(|held| held.version == version)
            .map(|held| held.json.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: u64, name: &str) -> LeadRow {
        made(id, version, name, 1_700_000_001)
    }

    /// A row processed at `processed` (seconds).
    fn made(id: &str, version: u64, name: &str, processed: i64) -> LeadRow {
        let lead = hunter_core::records::Lead {
            lead_id: id.into(),
            referral_id: id.into(),
            tenant: "contoso".into(),
            name: Some(name.into()),
            status: Some("New".into()),
            deal_value: Some(1200.5),
            currency: Some("EUR".into()),
            updated_at: hunter_core::records::Timestamp(1_700_000_000_000_000 + version as i64),
            version: version as i64,
            processed_at: hunter_core::records::Timestamp(processed * 1_000_000),
            ..Default::default()
        };
        LeadRow::from_lead(&lead).unwrap()
    }

    #[test]
    fn the_newest_version_is_held_and_answers_only_for_its_version() {
        let mut store = RowStore::new();
        assert!(store.upsert(row("a", 2, "second")));
        assert!(
            !store.upsert(row("a", 1, "first")),
            "an older version is ignored"
        );
        let held = store.get("a", 2).expect("held");
        let view: serde_json::Value = serde_json::from_str(held.get()).unwrap();
        assert_eq!(view["name"], "second");
        assert_eq!(view["version"], 2);
        assert!(
            store.get("a", 1).is_none(),
            "another version is not answered"
        );
        assert!(store.get("b", 2).is_none());
        // The same row again changes nothing; the same version made again later replaces it.
        assert!(!store.upsert(row("a", 2, "second")));
        assert!(!store.wants("a", 2, 1_700_000_001));
        assert!(store.wants("a", 2, 1_700_000_900));
        assert!(store.wants("a", 3, 1_700_000_001));
        assert!(
            !store.wants("a", 1, 1_700_000_900),
            "an older version is not wanted"
        );
        assert!(
            store.wants("b", 1, 1_700_000_001),
            "a lead not held is wanted"
        );
        assert!(store.upsert(made("a", 2, "second, made again", 1_700_000_900)));
        let view: serde_json::Value =
            serde_json::from_str(store.get("a", 2).unwrap().get()).unwrap();
        assert_eq!(view["name"], "second, made again");
        assert_eq!(store.len(), 1);
        assert!(store.bytes() > held_len(&store, "a"));
    }

    fn held_len(store: &RowStore, id: &str) -> usize {
        store.rows[id].json.get().len()
    }

    #[test]
    fn a_held_row_is_the_json_the_clickhouse_path_answers() {
        let mut store = RowStore::new();
        let source = row("lead-1", 7, "Contoso <b>");
        store.upsert(source.clone());
        let expected = serde_json::to_string(&LeadView::from(source)).unwrap();
        assert_eq!(store.get("lead-1", 7).unwrap().get(), expected);
    }
}
