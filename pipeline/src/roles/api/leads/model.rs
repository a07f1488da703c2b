//! The read model: the current leads' filter and sort columns in memory, column by column, so
//! `GET /leads` is answered without a ClickHouse scan (docs/api-read-model.md).
//!
//! Invariants:
//! - One slot per lead id; a slot holds the lead's newest version seen (`upsert` keeps the
//!   higher version; an equal version replaces, as ReplacingMergeTree keeps the last insert).
//!   Slots are never removed (Hunter never deletes leads).
//! - Every column holds exactly what the ClickHouse path's SQL compares: the sort keys are the
//!   values of [`SortKey::expression`], enum columns a code per allowed value (0: any other
//!   value or NULL, which no filter names), the country a code for two upper-case ASCII
//!   letters (0: anything else), the text fields ASCII-lower-cased for the search.
//! - The text search is answered only for ASCII search text: for an ASCII needle,
//!   ClickHouse's `positionCaseInsensitiveUTF8` is an ASCII case-insensitive byte search (no
//!   non-ASCII character matches an ASCII one; checked against every code point on 18.16).
//!   Other text gets `None`: the question goes to ClickHouse.
//! - Strings are interned: company names (kept as written, for the company sort, and folded)
//!   and names and domains (folded only: they are only searched). A string that no lead uses
//!   any more stays until the model is rebuilt.

use std::cmp::Ordering;
use std::hash::BuildHasher as _;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;

use super::query::{Cursor, CursorKey, EnumColumn, Filter, Sort, SortKey};

/// One lead as the feed reads it: the columns after the SQL expressions the API compares.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub(crate) struct ModelRow {
    pub lead_id: String,
    pub version: u64,
    /// `ifNull(column, '')` of each [`EnumColumn`], in [`EnumColumn::ALL`] order. (`m_`
    /// names: an alias equal to a column name is refused by older servers.)
    pub m_status: String,
    pub m_substatus: String,
    pub m_provider: String,
    pub m_direction: String,
    pub m_qualification: String,
    pub m_country: String,
    pub score: u8,
    /// The sort expressions of `updated_at`, `created_at` and `deal_value_usd`.
    pub m_updated: i64,
    pub m_created: i64,
    pub m_deal: i64,
    pub m_company: String,
    pub m_name: String,
    pub m_domain: String,
    /// `processed_at` in seconds: not held by the model; the feed asks the row store with it
    /// whether the lead's whole row is to be read (the same version made again).
    pub m_processed: u32,
}

impl ModelRow {
    /// The SELECT list that reads a [`ModelRow`] from `leads`.
    pub(crate) fn select_list() -> String {
        let mut columns = vec!["lead_id".to_owned(), "version".to_owned()];
        for (column, alias) in EnumColumn::ALL.into_iter().zip([
            "m_status",
            "m_substatus",
            "m_provider",
            "m_direction",
            "m_qualification",
        ]) {
            columns.push(format!("ifNull({}, '') AS {alias}", column.column()));
        }
        columns.push("ifNull(country, '') AS m_country".into());
        columns.push("score".into());
        for (key, alias) in [
            (SortKey::UpdatedAt, "m_updated"),
            (SortKey::CreatedAt, "m_created"),
            (SortKey::DealValueUsd, "m_deal"),
            (SortKey::Company, "m_company"),
        ] {
            columns.push(format!("{} AS {alias}", key.expression()));
        }
        columns.push("ifNull(name, '') AS m_name".into());
        columns.push("ifNull(company_domain, '') AS m_domain".into());
        columns.push("toUInt32(processed_at) AS m_processed".into());
        columns.join(", ")
    }

    fn enum_value(&self, column: EnumColumn) -> &str {
        match column {
            EnumColumn::Status => &self.m_status,
            EnumColumn::Substatus => &self.m_substatus,
            EnumColumn::Provider => &self.m_provider,
            EnumColumn::Direction => &self.m_direction,
            EnumColumn::Qualification => &self.m_qualification,
        }
    }
}

/// What the model selected for a page: (lead id, version, sort key as text) of up to
/// `limit + 1` leads in page order (the extra one says another page follows), and the total.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelPage {
    pub keys: Vec<(String, u64, String)>,
    pub total: u64,
}

/// The separator after every interned string in the folded text: never part of an ASCII
/// needle, never in UTF-8, so a match never spans two strings.
const SEPARATOR: u8 = 0xFF;

/// Interned strings, searchable ASCII-case-insensitively all at once.
struct Strings {
    /// Keep the strings as written (company names, for the sort).
    keep_original: bool,
    original: Vec<u8>,
    /// Every string ASCII-lower-cased, each followed by [`SEPARATOR`]; same offsets as
    /// `original` (folding keeps the length).
    folded: Vec<u8>,
    /// Start of string `i` in `folded`; `starts[i + 1] - 1` is its end.
    starts: Vec<u32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Strings {
    fn new(keep_original: bool) -> Self {
        Strings {
            keep_original,
            original: Vec::new(),
            folded: Vec::new(),
            starts: vec![0],
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn range(&self, id: u32) -> std::ops::Range<usize> {
        let id = id as usize;
        self.starts[id] as usize..self.starts[id + 1] as usize - 1
    }

    fn original(&self, id: u32) -> &[u8] {
        &self.original[self.range(id)]
    }

    fn intern(&mut self, text: &str) -> u32 {
        let folded = text.to_ascii_lowercase();
        let key = if self.keep_original {
            text.as_bytes()
        } else {
            folded.as_bytes()
        };
        let hash = self.hasher.hash_one(key);
        let found = self.index.find(hash, |&id| {
            let range = {
                let id = id as usize;
                self.starts[id] as usize..self.starts[id + 1] as usize - 1
            };
            let stored = if self.keep_original {
                &self.original[range]
            } else {
                &self.folded[range]
            };
            stored == key
        });
        if let Some(&id) = found {
            return id;
        }
        let id = self.len() as u32;
        if self.keep_original {
            self.original.extend_from_slice(text.as_bytes());
            self.original.push(SEPARATOR);
        }
        self.folded.extend_from_slice(folded.as_bytes());
        self.folded.push(SEPARATOR);
        self.starts.push(self.folded.len() as u32);
        let Strings {
            index,
            hasher,
            starts,
            original,
            folded,
            keep_original,
        } = self;
        index.insert_unique(hash, id, |&other| {
            let range = starts[other as usize] as usize..starts[other as usize + 1] as usize - 1;
            if *keep_original {
                hasher.hash_one(&original[range])
            } else {
                hasher.hash_one(&folded[range])
            }
        });
        id
    }

    /// A bit per string: whether it contains `needle` (folded, ASCII).
    fn matching(&self, needle: &[u8]) -> Vec<u64> {
        let mut bits = vec![0u64; self.len().div_ceil(64)];
        let finder = memchr::memmem::Finder::new(needle);
        let mut from = 0;
        while let Some(at) = finder.find(&self.folded[from..]) {
            let position = (from + at) as u32;
            let id = self.starts.partition_point(|&start| start <= position) - 1;
            bits[id / 64] |= 1 << (id % 64);
            from = self.starts[id + 1] as usize;
        }
        bits
    }

    fn bytes(&self) -> usize {
        self.original.capacity()
            + self.folded.capacity()
            + self.starts.capacity() * 4
            + self.index.capacity() * 5
    }
}

fn bit(bits: &[u64], id: u32) -> bool {
    bits[id as usize / 64] & (1 << (id % 64)) != 0
}

/// The code of an enum column's value: its position in the allowed values plus one, 0 for
/// anything else.
fn enum_code(column: EnumColumn, value: &str) -> u8 {
    column
        .allowed()
        .iter()
        .position(|allowed| *allowed == value)
        .map_or(0, |at| at as u8 + 1)
}

/// Two upper-case ASCII letters as 1 + 26 * a + b; anything else 0 (no filter names it).
fn country_code(value: &str) -> u16 {
    match value.as_bytes() {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => 1 + u16::from(a - b'A') * 26 + u16::from(b - b'A'),
        _ => 0,
    }
}

/// The current leads, one slot each, column by column.
pub(crate) struct ReadModel {
    /// Lead ids, back to back; slot `s` ends at `id_ends[s]` and starts where `s - 1` ends.
    id_bytes: Vec<u8>,
    id_ends: Vec<u32>,
    /// Slot by lead id.
    slots: HashTable<u32>,
    hasher: DefaultHashBuilder,
    version: Vec<u64>,
    /// One column per [`EnumColumn`], in [`EnumColumn::ALL`] order.
    enums: [Vec<u8>; 5],
    country: Vec<u16>,
    score: Vec<u8>,
    updated_at: Vec<u32>,
    created_at: Vec<u32>,
    deal_usd: Vec<i64>,
    company: Vec<u32>,
    name: Vec<u32>,
    domain: Vec<u32>,
    companies: Strings,
    texts: Strings,
}

impl Default for ReadModel {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadModel {
    pub(crate) fn new() -> Self {
        ReadModel {
            id_bytes: Vec::new(),
            id_ends: Vec::new(),
            slots: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            version: Vec::new(),
            enums: Default::default(),
            country: Vec::new(),
            score: Vec::new(),
            updated_at: Vec::new(),
            created_at: Vec::new(),
            deal_usd: Vec::new(),
            company: Vec::new(),
            name: Vec::new(),
            domain: Vec::new(),
            companies: Strings::new(true),
            texts: Strings::new(false),
        }
    }

    /// Leads held.
    pub(crate) fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// Heap bytes the model holds (capacities), for the bytes-per-lead figure.
    pub(crate) fn bytes(&self) -> usize {
        self.id_bytes.capacity()
            + self.id_ends.capacity() * 4
            + self.slots.capacity() * 5
            + self.version.capacity() * 8
            + self.enums.iter().map(Vec::capacity).sum::<usize>()
            + self.country.capacity() * 2
            + self.score.capacity()
            + (self.updated_at.capacity() + self.created_at.capacity()) * 4
            + self.deal_usd.capacity() * 8
            + (self.company.capacity() + self.name.capacity() + self.domain.capacity()) * 4
            + self.companies.bytes()
            + self.texts.bytes()
    }

    fn id(&self, slot: u32) -> &[u8] {
        let slot = slot as usize;
        let start = if slot == 0 {
            0
        } else {
            self.id_ends[slot - 1] as usize
        };
        &self.id_bytes[start..self.id_ends[slot] as usize]
    }

    fn find(&self, hash: u64, id: &[u8]) -> Option<u32> {
        self.slots.find(hash, |&slot| self.id(slot) == id).copied()
    }

    /// Takes `row` when it is newer than (or as new as) what the model holds for its lead;
    /// whether anything changed.
    pub(crate) fn upsert(&mut self, row: &ModelRow) -> bool {
        let hash = self.hasher.hash_one(row.lead_id.as_bytes());
        let slot = match self.find(hash, row.lead_id.as_bytes()) {
            Some(slot) => {
                let current = self.version[slot as usize];
                if row.version < current {
                    return false;
                }
                slot
            }
            None => {
                let slot = self.id_ends.len() as u32;
                self.id_bytes.extend_from_slice(row.lead_id.as_bytes());
                self.id_ends.push(self.id_bytes.len() as u32);
                let ReadModel {
                    slots,
                    hasher,
                    id_bytes,
                    id_ends,
                    ..
                } = self;
                slots.insert_unique(hash, slot, |&other| {
                    let other = other as usize;
                    let start = if other == 0 {
                        0
                    } else {
                        id_ends[other - 1] as usize
                    };
                    hasher.hash_one(&id_bytes[start..id_ends[other] as usize])
                });
                self.version.push(0);
                for column in &mut self.enums {
                    column.push(0);
                }
                self.country.push(0);
                self.score.push(0);
                self.updated_at.push(0);
                self.created_at.push(0);
                self.deal_usd.push(0);
                self.company.push(0);
                self.name.push(0);
                self.domain.push(0);
                slot
            }
        };
        let s = slot as usize;
        let company = self.companies.intern(&row.m_company);
        let name = self.texts.intern(&row.m_name);
        let domain = self.texts.intern(&row.m_domain);
        let mut enums = [0u8; 5];
        for (code, column) in enums.iter_mut().zip(EnumColumn::ALL) {
            *code = enum_code(column, row.enum_value(column));
        }
        let updated_at = u32::try_from(row.m_updated).unwrap_or(0);
        let created_at = u32::try_from(row.m_created).unwrap_or(0);
        let country = country_code(&row.m_country);
        let same = self.version[s] == row.version
            && self.enums.iter().zip(enums).all(|(c, v)| c[s] == v)
            && self.country[s] == country
            && self.score[s] == row.score
            && self.updated_at[s] == updated_at
            && self.created_at[s] == created_at
            && self.deal_usd[s] == row.m_deal
            && self.company[s] == company
            && self.name[s] == name
            && self.domain[s] == domain;
        if same {
            return false;
        }
        self.version[s] = row.version;
        for (column, code) in self.enums.iter_mut().zip(enums) {
            column[s] = code;
        }
        self.country[s] = country;
        self.score[s] = row.score;
        self.updated_at[s] = updated_at;
        self.created_at[s] = created_at;
        self.deal_usd[s] = row.m_deal;
        self.company[s] = company;
        self.name[s] = name;
        self.domain[s] = domain;
        true
    }

    /// Keeps, in `selected`, the slots for which `keep` holds.
    fn narrow(&self, selected: &mut [u64], keep: impl Fn(usize) -> bool) {
        let n = self.len();
        for (word_index, word) in selected.iter_mut().enumerate() {
            if *word == 0 {
                continue;
            }
            let base = word_index * 64;
            let end = (base + 64).min(n);
            let mut bits = 0u64;
            for slot in base..end {
                bits |= u64::from(keep(slot)) << (slot - base);
            }
            *word &= bits;
        }
    }

    /// The page and total for `filters`, `sort`, `cursor`, `limit` with the ClickHouse path's
    /// meaning; `None` when the model cannot answer it exactly (non-ASCII search text).
    pub(super) fn answer(
        &self,
        filters: &[Filter],
        sort: Sort,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Option<ModelPage> {
        let n = self.len();
        let mut selected = vec![!0u64; n.div_ceil(64)];
        if !n.is_multiple_of(64)
            && let Some(last) = selected.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        for filter in filters {
            match filter {
                Filter::In(column, values) => {
                    let mut allowed = [false; 256];
                    for value in values {
                        let code = enum_code(*column, value);
                        if code != 0 {
                            allowed[code as usize] = true;
                        }
                    }
                    let at = EnumColumn::ALL.iter().position(|c| c == column)?;
                    let codes = &self.enums[at];
                    self.narrow(&mut selected, |s| allowed[codes[s] as usize]);
                }
                Filter::Country(countries) => {
                    let mut allowed = vec![false; 1 + 26 * 26];
                    for country in countries {
                        let code = country_code(country);
                        if code != 0 {
                            allowed[code as usize] = true;
                        }
                    }
                    self.narrow(&mut selected, |s| allowed[self.country[s] as usize]);
                }
                Filter::MinScore(score) => {
                    self.narrow(&mut selected, |s| self.score[s] >= *score);
                }
                Filter::UpdatedSince(seconds) => {
                    self.narrow(&mut selected, |s| i64::from(self.updated_at[s]) >= *seconds);
                }
                Filter::Text(text) => {
                    if !text.is_ascii() || text.is_empty() {
                        return None;
                    }
                    let needle = text.to_ascii_lowercase();
                    let companies = self.companies.matching(needle.as_bytes());
                    let texts = self.texts.matching(needle.as_bytes());
                    self.narrow(&mut selected, |s| {
                        bit(&companies, self.company[s])
                            || bit(&texts, self.name[s])
                            || bit(&texts, self.domain[s])
                    });
                }
            }
        }
        let total = selected.iter().map(|w| u64::from(w.count_ones())).sum();
        let keys = match sort.key {
            SortKey::Company => {
                let after = cursor.map(|c| match &c.k {
                    CursorKey::Text(text) => (text.as_bytes(), c.i.as_bytes()),
                    CursorKey::Int(_) => (&b""[..], c.i.as_bytes()),
                });
                let top = self.top(&selected, sort.descending, after, limit, |s| {
                    self.companies.original(self.company[s as usize])
                });
                top.into_iter()
                    .map(|s| {
                        let key = String::from_utf8_lossy(
                            self.companies.original(self.company[s as usize]),
                        )
                        .into_owned();
                        self.key_of(s, key)
                    })
                    .collect()
            }
            numeric => {
                let value = |s: u32| -> i64 {
                    let s = s as usize;
                    match numeric {
                        SortKey::UpdatedAt => i64::from(self.updated_at[s]),
                        SortKey::CreatedAt => i64::from(self.created_at[s]),
                        SortKey::Score => i64::from(self.score[s]),
                        SortKey::DealValueUsd => self.deal_usd[s],
                        // Never asked: `LeadsRequest::model_filters` sends sorts the model does
                        // not hold (`SortKey::in_model`) to ClickHouse.
                        SortKey::ExpiresAt | SortKey::Company => 0,
                    }
                };
                let after = cursor.map(|c| match &c.k {
                    CursorKey::Int(number) => (*number, c.i.as_bytes()),
                    CursorKey::Text(_) => (0, c.i.as_bytes()),
                });
                let top = self.top(&selected, sort.descending, after, limit, value);
                top.into_iter()
                    .map(|s| self.key_of(s, value(s).to_string()))
                    .collect()
            }
        };
        Some(ModelPage { keys, total })
    }

    fn key_of(&self, slot: u32, key: String) -> (String, u64, String) {
        (
            String::from_utf8_lossy(self.id(slot)).into_owned(),
            self.version[slot as usize],
            key,
        )
    }

    /// The first `limit + 1` selected slots in sort order (key, then lead id, both ascending
    /// or both descending) strictly after `after`.
    fn top<'a, K: Ord + Copy + 'a>(
        &'a self,
        selected: &[u64],
        descending: bool,
        after: Option<(K, &[u8])>,
        limit: usize,
        key: impl Fn(u32) -> K,
    ) -> Vec<u32> {
        let want = limit + 1;
        // Ascending order of (key, id); descending reverses it.
        let order = |a: (K, &[u8]), b: (K, &[u8])| -> Ordering {
            let ordering = a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1));
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        };
        let mut top: Vec<(K, u32)> = Vec::with_capacity(want + 1);
        for (word_index, &word) in selected.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let slot = (word_index * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                let k = key(slot);
                // Cheap rejection on the key alone before the lead id is looked at.
                if top.len() == want {
                    let worst = top[want - 1].0;
                    let by_key = if descending {
                        worst.cmp(&k)
                    } else {
                        k.cmp(&worst)
                    };
                    if by_key == Ordering::Greater {
                        continue;
                    }
                }
                let id = self.id(slot);
                if let Some(after) = after
                    && order((k, id), after) != Ordering::Greater
                {
                    continue;
                }
                if top.len() == want
                    && order((k, id), (top[want - 1].0, self.id(top[want - 1].1))) != Ordering::Less
                {
                    continue;
                }
                let at = top.partition_point(|&(tk, ts)| {
                    order((tk, self.id(ts)), (k, id)) == Ordering::Less
                });
                top.insert(at, (k, slot));
                top.truncate(want);
            }
        }
        top.into_iter().map(|(_, slot)| slot).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: u64) -> ModelRow {
        ModelRow {
            lead_id: id.into(),
            version,
            m_status: "New".into(),
            m_substatus: String::new(),
            m_provider: "unknown".into(),
            m_direction: "Incoming".into(),
            m_qualification: String::new(),
            m_country: "US".into(),
            score: 10,
            m_updated: 1_700_000_000,
            m_created: 0,
            m_deal: -1_000_000_000_000_000_000,
            m_company: "Contoso".into(),
            m_name: "Deal".into(),
            m_domain: "contoso.com".into(),
            m_processed: 1_700_000_001,
        }
    }

    fn sort(key: SortKey, descending: bool) -> Sort {
        Sort { key, descending }
    }

    #[test]
    fn newer_versions_replace_older_ones_and_older_ones_are_ignored() {
        let mut model = ReadModel::new();
        assert!(model.upsert(&row("a", 5)));
        let mut newer = row("a", 6);
        newer.m_status = "Closed".into();
        assert!(model.upsert(&newer));
        assert!(!model.upsert(&row("a", 4)), "an older version is ignored");
        assert!(!model.upsert(&newer), "the same row again changes nothing");
        assert_eq!(model.len(), 1);
        let page = model
            .answer(
                &[Filter::In(EnumColumn::Status, vec!["Closed"])],
                sort(SortKey::UpdatedAt, true),
                None,
                10,
            )
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.keys, vec![("a".into(), 6, "1700000000".into())]);
    }

    #[test]
    fn the_search_is_ascii_case_insensitive_and_never_spans_two_strings() {
        let mut model = ReadModel::new();
        let mut a = row("a", 1);
        a.m_company = "Fabrikam GmbH".into();
        a.m_domain = "fabrikam.de".into();
        model.upsert(&a);
        let mut b = row("b", 1);
        b.m_company = "Müller".into();
        b.m_name = "ab".into();
        b.m_domain = "cd".into();
        model.upsert(&b);
        let search = |text: &str| {
            model
                .answer(
                    &[Filter::Text(text.into())],
                    sort(SortKey::Company, false),
                    None,
                    10,
                )
                .map(|page| page.keys.into_iter().map(|k| k.0).collect::<Vec<_>>())
        };
        assert_eq!(search("BRIKAM g"), Some(vec!["a".to_owned()]));
        assert_eq!(search("LLER"), Some(vec!["b".to_owned()]));
        assert_eq!(
            search("bcd"),
            Some(vec![]),
            "no match across name and domain"
        );
        assert_eq!(search("ü"), None, "non-ASCII text goes to ClickHouse");
    }

    #[test]
    fn cursors_continue_after_the_last_key_and_id() {
        let mut model = ReadModel::new();
        for (id, score) in [("a", 5), ("b", 5), ("c", 7), ("d", 1)] {
            let mut r = row(id, 1);
            r.score = score;
            model.upsert(&r);
        }
        let by_score = sort(SortKey::Score, true);
        let first = model.answer(&[], by_score, None, 2).unwrap();
        let ids: Vec<_> = first.keys.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"], "limit + 1 rows");
        let cursor = Cursor {
            s: "-score".into(),
            k: CursorKey::Int(5),
            i: "b".into(),
        };
        let next = model.answer(&[], by_score, Some(&cursor), 2).unwrap();
        let ids: Vec<_> = next.keys.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(ids, ["a", "d"]);
        assert_eq!(next.total, 4, "the total ignores the cursor");
    }
}
