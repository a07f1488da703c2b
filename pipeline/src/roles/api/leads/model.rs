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
    /// The strings holding each folded three-byte sequence (ascending ids), for searches of
    /// three bytes or more; a sequence held by too many strings to narrow a search (see
    /// [`Trigrams::COMMON`]) keeps no list.
    trigrams: Trigrams,
}

/// Per folded three-byte sequence, the ids of the strings holding it.
#[derive(Default)]
struct Trigrams {
    lists: hashbrown::HashMap<u32, Option<Vec<u32>>>,
    entries: usize,
}

impl Trigrams {
    /// A list longer than this and than an eighth of the strings is dropped: the sequence is
    /// common (the search scans instead, or uses the needle's other sequences).
    const COMMON: usize = 4096;

    fn key(three: &[u8]) -> u32 {
        u32::from(three[0]) << 16 | u32::from(three[1]) << 8 | u32::from(three[2])
    }

    fn add(&mut self, id: u32, folded: &[u8], strings: usize) {
        let mut seen: Vec<u32> = folded.windows(3).map(Self::key).collect();
        seen.sort_unstable();
        seen.dedup();
        for key in seen {
            let list = self.lists.entry(key).or_insert_with(|| Some(Vec::new()));
            if let Some(ids) = list {
                ids.push(id);
                self.entries += 1;
                if ids.len() > Self::COMMON && ids.len() > strings / 8 {
                    self.entries -= ids.len();
                    *list = None;
                }
            }
        }
    }

    /// The candidate strings for `needle` (3 bytes or more): the shortest list among its
    /// sequences, intersected with the next shortest; `None` when every sequence is common.
    fn candidates(&self, needle: &[u8]) -> Option<Vec<u32>> {
        let mut lists: Vec<&Vec<u32>> = Vec::new();
        for three in needle.windows(3) {
            match self.lists.get(&Self::key(three)) {
                // No string holds it: nothing can match.
                None => return Some(Vec::new()),
                Some(Some(ids)) => lists.push(ids),
                Some(None) => {}
            }
        }
        lists.sort_by_key(|ids| ids.len());
        let (first, rest) = lists.split_first()?;
        let mut candidates: Vec<u32> = first.to_vec();
        if let Some(second) = rest.first() {
            candidates.retain(|id| second.binary_search(id).is_ok());
        }
        Some(candidates)
    }

    fn bytes(&self) -> usize {
        self.entries * 4 + self.lists.capacity() * 40
    }
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
            trigrams: Trigrams::default(),
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
        let strings = self.len();
        self.trigrams.add(id, folded.as_bytes(), strings);
        let Strings {
            index,
            hasher,
            starts,
            original,
            folded,
            keep_original,
            ..
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
        // Few candidates from the sequences index: check each of them only.
        if needle.len() >= 3
            && let Some(candidates) = self.trigrams.candidates(needle)
        {
            for id in candidates {
                if finder.find(&self.folded[self.range(id)]).is_some() {
                    bits[id as usize / 64] |= 1 << (id % 64);
                }
            }
            return bits;
        }
        let mut from = 0;
        // Matches come in string order: the string holding each is found by galloping forward
        // from the previous one (a broad needle matches most strings; a binary search over
        // every start per match cost milliseconds at a million names).
        let mut id = 0usize;
        while let Some(at) = finder.find(&self.folded[from..]) {
            let position = (from + at) as u32;
            id += gallop(&self.starts[id + 1..], position);
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
            + self.trigrams.bytes()
    }
}

fn bit(bits: &[u64], id: u32) -> bool {
    bits[id as usize / 64] & (1 << (id % 64)) != 0
}

/// [`bit`] of a map that may be shorter than the model.
fn bit_or_zero(bits: &[u64], id: u32) -> bool {
    word_of(bits, id as usize / 64) & (1 << (id % 64)) != 0
}

/// The first index in `0..len` for which `before` is false (`before` holds for a prefix).
fn partition(len: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// How many leading values of the ascending `values` are `<= position`, found by galloping from
/// the front (cheap when the answer is small, logarithmic otherwise).
fn gallop(values: &[u32], position: u32) -> usize {
    let mut step = 1;
    let mut low = 0;
    while step <= values.len() && values[step - 1] <= position {
        low = step;
        step *= 2;
    }
    let high = step.min(values.len());
    low + values[low..high].partition_point(|&v| v <= position)
}

/// The set bits of `bits` below `limit`, in order.
fn ids(bits: &[u64], limit: usize) -> impl Iterator<Item = usize> + '_ {
    bits.iter()
        .enumerate()
        .flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let id = w * 64 + rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    id
                })
            })
        })
        .take_while(move |&id| id < limit)
}

/// Sets `slot`'s bit, growing the map as needed.
fn set_bit(map: &mut Vec<u64>, slot: usize) {
    let word = slot / 64;
    if map.len() <= word {
        map.resize(word + 1, 0);
    }
    map[word] |= 1 << (slot % 64);
}

fn clear_bit(map: &mut [u64], slot: usize) {
    if let Some(word) = map.get_mut(slot / 64) {
        *word &= !(1 << (slot % 64));
    }
}

/// Word `i` of a map that may be shorter than the model (missing words are 0).
fn word_of(map: &[u64], i: usize) -> u64 {
    map.get(i).copied().unwrap_or(0)
}

/// Keeps, in `selected`, the slots whose `column` value passes `keep`: 64 values a word, in a
/// loop the compiler vectorises.
fn narrow_column<T: Copy>(selected: &mut [u64], column: &[T], keep: impl Fn(T) -> bool) {
    for (word, chunk) in selected.iter_mut().zip(column.chunks(64)) {
        if *word == 0 {
            continue;
        }
        let mut bits = 0u64;
        for (i, &value) in chunk.iter().enumerate() {
            bits |= u64::from(keep(value)) << i;
        }
        *word &= bits;
    }
}

/// The sort keys the model keeps orders for, in [`Orders::by`] order.
const ORDERED: [SortKey; 5] = [
    SortKey::UpdatedAt,
    SortKey::CreatedAt,
    SortKey::Score,
    SortKey::DealValueUsd,
    SortKey::Company,
];

/// Every slot in ascending (sort key, lead id) order as of one moment (`seq`), with the key each
/// had then: numbers as themselves, the company as its interned string's id.
struct Order {
    slots: Vec<u32>,
    keys: Vec<i64>,
    /// For the keys filtered by a lower bound (score, `updated_at`): bitmap `j` holds the
    /// slots at positions `j * SUFFIX_STEP(len)..` of the order, so "key >= bound" is one of
    /// them plus fewer than a step of entries (empty for the other keys).
    suffixes: Vec<Vec<u64>>,
}

/// Suffix bitmaps per bounded key: the entries added by hand per question are at most
/// `len / SUFFIXES`.
const SUFFIXES: usize = 64;

fn suffix_step(len: usize) -> usize {
    len.div_ceil(SUFFIXES).max(1)
}

/// One [`Order`] per [`ORDERED`] key, built from an [`OrderSnapshot`] off the model's lock.
/// Slots changed after `seq` are in the model's change log and answered from it.
pub(crate) struct Orders {
    seq: u64,
    by: Vec<Order>,
    /// The slots of each company string, and of each name or domain string, then.
    company_postings: Postings,
    text_postings: Postings,
}

/// The slots using each string (strings interned later are used only by changed slots).
struct Postings {
    /// Slots of string `i`: `slots[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    slots: Vec<u32>,
}

impl Postings {
    /// From (string, slot) uses, `strings` strings.
    fn build(strings: usize, uses: impl Iterator<Item = (u32, u32)> + Clone) -> Postings {
        let mut starts = vec![0u32; strings + 1];
        for (string, _) in uses.clone() {
            starts[string as usize + 1] += 1;
        }
        for i in 0..strings {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut slots = vec![0u32; starts[strings] as usize];
        for (string, slot) in uses {
            let at = &mut fill[string as usize];
            slots[*at as usize] = slot;
            *at += 1;
        }
        Postings { starts, slots }
    }

    fn strings(&self) -> usize {
        self.starts.len() - 1
    }

    fn of(&self, string: usize) -> &[u32] {
        &self.slots[self.starts[string] as usize..self.starts[string + 1] as usize]
    }

    fn bytes(&self) -> usize {
        (self.starts.capacity() + self.slots.capacity()) * 4
    }
}

impl Orders {
    fn bytes(&self) -> usize {
        self.by
            .iter()
            .map(|o| {
                o.slots.capacity() * 4
                    + o.keys.capacity() * 8
                    + o.suffixes.iter().map(|b| b.capacity() * 8).sum::<usize>()
            })
            .sum::<usize>()
            + self.company_postings.bytes()
            + self.text_postings.bytes()
    }
}

/// What building the orders needs, copied from the model under its read lock (a few tens of
/// MB at a million leads) so the sort runs without holding it.
pub(crate) struct OrderSnapshot {
    seq: u64,
    id_bytes: Vec<u8>,
    id_ends: Vec<u32>,
    updated_at: Vec<u32>,
    created_at: Vec<u32>,
    score: Vec<u8>,
    deal_usd: Vec<i64>,
    company: Vec<u32>,
    company_text: Vec<u8>,
    company_starts: Vec<u32>,
    name: Vec<u32>,
    domain: Vec<u32>,
    texts: usize,
}

impl OrderSnapshot {
    /// The orders (about 0.1 s a key at a million leads).
    pub(crate) fn build(self) -> Orders {
        let n = self.id_ends.len();
        let id = |slot: usize| {
            let start = if slot == 0 {
                0
            } else {
                self.id_ends[slot - 1] as usize
            };
            &self.id_bytes[start..self.id_ends[slot] as usize]
        };
        // Each slot's rank by lead id, so every order sorts plain numbers.
        let mut by_id: Vec<u32> = (0..n as u32).collect();
        by_id.sort_unstable_by(|&a, &b| id(a as usize).cmp(id(b as usize)));
        let mut id_rank = vec![0u32; n];
        for (rank, &slot) in by_id.iter().enumerate() {
            id_rank[slot as usize] = rank as u32;
        }
        drop(by_id);
        // Each company string's rank by its bytes (the company sort compares them).
        let strings = self.company_starts.len().saturating_sub(1);
        let text = |i: usize| {
            &self.company_text
                [self.company_starts[i] as usize..self.company_starts[i + 1] as usize - 1]
        };
        let mut by_text: Vec<u32> = (0..strings as u32).collect();
        by_text.sort_unstable_by(|&a, &b| text(a as usize).cmp(text(b as usize)));
        let mut text_rank = vec![0u32; strings];
        for (rank, &string) in by_text.iter().enumerate() {
            text_rank[string as usize] = rank as u32;
        }
        let by = ORDERED
            .iter()
            .map(|key| {
                let key_of = |s: usize| -> (i64, i64) {
                    match key {
                        SortKey::UpdatedAt => (i64::from(self.updated_at[s]), 0),
                        SortKey::CreatedAt => (i64::from(self.created_at[s]), 0),
                        SortKey::Score => (i64::from(self.score[s]), 0),
                        SortKey::DealValueUsd => (self.deal_usd[s], 0),
                        // Sorted by the string's rank, kept as the string's id.
                        _ => (
                            i64::from(text_rank[self.company[s] as usize]),
                            i64::from(self.company[s]),
                        ),
                    }
                };
                let mut entries: Vec<(i64, u32, u32)> = (0..n)
                    .map(|s| (key_of(s).0, id_rank[s], s as u32))
                    .collect();
                entries.sort_unstable();
                let slots: Vec<u32> = entries.iter().map(|e| e.2).collect();
                let keys = slots
                    .iter()
                    .map(|&s| {
                        let (sorted, kept) = key_of(s as usize);
                        if *key == SortKey::Company {
                            kept
                        } else {
                            sorted
                        }
                    })
                    .collect();
                let suffixes = if matches!(key, SortKey::Score | SortKey::UpdatedAt) {
                    // Built from the end: each bitmap adds one step of entries to the next.
                    let step = suffix_step(n);
                    let mut bits = vec![0u64; n.div_ceil(64)];
                    let mut suffixes = vec![Vec::new(); n.div_ceil(step)];
                    for j in (0..suffixes.len()).rev() {
                        for &slot in &slots[j * step..((j + 1) * step).min(n)] {
                            set_bit(&mut bits, slot as usize);
                        }
                        suffixes[j] = bits.clone();
                    }
                    suffixes
                } else {
                    Vec::new()
                };
                Order {
                    slots,
                    keys,
                    suffixes,
                }
            })
            .collect();
        let company_postings = Postings::build(
            strings,
            self.company.iter().enumerate().map(|(s, &c)| (c, s as u32)),
        );
        let text_postings = Postings::build(
            self.texts,
            (self.name.iter().enumerate())
                .chain(self.domain.iter().enumerate())
                .map(|(s, &t)| (t, s as u32)),
        );
        Orders {
            seq: self.seq,
            by,
            company_postings,
            text_postings,
        }
    }
}

/// Where a cursor points, as the orders compare it.
enum Probe<'a> {
    Int(i64),
    Text(&'a [u8]),
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
    /// Per enum column, a bitmap per code (code 0 included): the slots holding it.
    enum_bits: [Vec<Vec<u64>>; 5],
    /// Per country code, the slots holding it (empty for codes no lead has).
    country_bits: Vec<Vec<u64>>,
    /// The orders for the sort keys, once built (`None`: pages come from a top-k over the
    /// selection).
    orders: Option<Orders>,
    /// Slots changed since change number `log_base` (the newest orders' `seq`): a slot may
    /// appear several times.
    log: Vec<u32>,
    log_base: u64,
    /// The slots in `log`: their keys in the orders are stale, so walks skip them.
    dirty: Vec<u64>,
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
            enum_bits: EnumColumn::ALL.map(|column| vec![Vec::new(); column.allowed().len() + 1]),
            country_bits: vec![Vec::new(); 1 + 26 * 26],
            orders: None,
            log: Vec::new(),
            log_base: 0,
            dirty: Vec::new(),
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
            + self
                .enum_bits
                .iter()
                .chain(std::iter::once(&self.country_bits))
                .flatten()
                .map(|map| map.capacity() * 8)
                .sum::<usize>()
            + self.orders.as_ref().map_or(0, Orders::bytes)
            + self.log.capacity() * 4
            + self.dirty.capacity() * 8
    }

    /// Whether the orders should be (re)built: none yet, or so many changes since that every
    /// question pays for them.
    pub(crate) fn wants_orders(&self) -> bool {
        match &self.orders {
            None => self.len() > 0,
            Some(_) => self.log.len() > (self.len() / 64).max(4096),
        }
    }

    /// A copy of what the orders are built from.
    pub(crate) fn order_snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            seq: self.log_base + self.log.len() as u64,
            id_bytes: self.id_bytes.clone(),
            id_ends: self.id_ends.clone(),
            updated_at: self.updated_at.clone(),
            created_at: self.created_at.clone(),
            score: self.score.clone(),
            deal_usd: self.deal_usd.clone(),
            company: self.company.clone(),
            company_text: self.companies.original.clone(),
            company_starts: self.companies.starts.clone(),
            name: self.name.clone(),
            domain: self.domain.clone(),
            texts: self.texts.len(),
        }
    }

    /// Takes orders built from a snapshot: the changes before it leave the log; those after it
    /// stay dirty. Orders older than the ones held are dropped.
    pub(crate) fn install_orders(&mut self, orders: Orders) {
        if orders.seq < self.log_base {
            return;
        }
        let applied = (orders.seq - self.log_base) as usize;
        self.log.drain(..applied.min(self.log.len()));
        self.log_base = orders.seq;
        self.dirty.iter_mut().for_each(|word| *word = 0);
        for &slot in &self.log {
            set_bit(&mut self.dirty, slot as usize);
        }
        self.orders = Some(orders);
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
                for maps in &mut self.enum_bits {
                    set_bit(&mut maps[0], slot as usize);
                }
                set_bit(&mut self.country_bits[0], slot as usize);
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
        for ((column, code), maps) in self.enums.iter_mut().zip(enums).zip(&mut self.enum_bits) {
            if column[s] != code {
                clear_bit(&mut maps[column[s] as usize], s);
                set_bit(&mut maps[code as usize], s);
                column[s] = code;
            }
        }
        if self.country[s] != country {
            clear_bit(&mut self.country_bits[self.country[s] as usize], s);
            set_bit(&mut self.country_bits[country as usize], s);
        }
        self.country[s] = country;
        self.log.push(slot);
        set_bit(&mut self.dirty, s);
        self.score[s] = row.score;
        self.updated_at[s] = updated_at;
        self.created_at[s] = created_at;
        self.deal_usd[s] = row.m_deal;
        self.company[s] = company;
        self.name[s] = name;
        self.domain[s] = domain;
        true
    }

    /// The slots every filter keeps, as a bitmap; `None` when the model cannot answer exactly
    /// (non-ASCII or empty search text).
    fn select(&self, filters: &[Filter]) -> Option<Vec<u64>> {
        let n = self.len();
        let words = n.div_ceil(64);
        let mut selected = vec![!0u64; words];
        if !n.is_multiple_of(64)
            && let Some(last) = selected.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        // Cheapest first: bitmaps, then column scans, then the search (which then looks only
        // at the slots still selected).
        let cost = |filter: &Filter| match filter {
            Filter::In(..) | Filter::Country(_) => 0,
            Filter::MinScore(_) | Filter::UpdatedSince(_) => 1,
            Filter::Text(_) => 2,
        };
        let mut ordered: Vec<&Filter> = filters.iter().collect();
        ordered.sort_by_key(|filter| cost(filter));
        for filter in ordered {
            match filter {
                Filter::In(column, values) => {
                    let at = EnumColumn::ALL.iter().position(|c| c == column)?;
                    let mut codes: Vec<usize> = values
                        .iter()
                        .map(|value| enum_code(*column, value) as usize)
                        .filter(|&code| code != 0)
                        .collect();
                    codes.sort_unstable();
                    codes.dedup();
                    let maps = &self.enum_bits[at];
                    self.keep_any(&mut selected, codes.iter().map(|&code| &maps[code][..]));
                }
                Filter::Country(countries) => {
                    let mut codes: Vec<usize> = countries
                        .iter()
                        .map(|country| country_code(country) as usize)
                        .filter(|&code| code != 0)
                        .collect();
                    codes.sort_unstable();
                    codes.dedup();
                    self.keep_any(
                        &mut selected,
                        codes.iter().map(|&code| &self.country_bits[code][..]),
                    );
                }
                Filter::MinScore(score) => {
                    if !self.keep_at_least(&mut selected, SortKey::Score, i64::from(*score)) {
                        narrow_column(&mut selected, &self.score, |v| v >= *score);
                    }
                }
                Filter::UpdatedSince(seconds) => {
                    if !self.keep_at_least(&mut selected, SortKey::UpdatedAt, *seconds) {
                        // Seconds are u32 in the model: a bound outside that range keeps all
                        // or none.
                        let bound = (*seconds).clamp(0, i64::from(u32::MAX) + 1);
                        if bound > i64::from(u32::MAX) {
                            selected.iter_mut().for_each(|w| *w = 0);
                        } else {
                            let bound = bound as u32;
                            narrow_column(&mut selected, &self.updated_at, |v| v >= bound);
                        }
                    }
                }
                Filter::Text(text) => {
                    if !text.is_ascii() || text.is_empty() {
                        return None;
                    }
                    let needle = text.to_ascii_lowercase();
                    let companies = self.companies.matching(needle.as_bytes());
                    let texts = self.texts.matching(needle.as_bytes());
                    if !self.keep_postings(&mut selected, &companies, &texts) {
                        let matches = |slot: usize| {
                            bit(&companies, self.company[slot])
                                || bit(&texts, self.name[slot])
                                || bit(&texts, self.domain[slot])
                        };
                        for (word_index, word) in selected.iter_mut().enumerate() {
                            let mut bits = *word;
                            while bits != 0 {
                                let slot = word_index * 64 + bits.trailing_zeros() as usize;
                                bits &= bits - 1;
                                if !matches(slot) {
                                    *word &= !(1 << (slot % 64));
                                }
                            }
                        }
                    }
                }
            }
        }
        Some(selected)
    }

    /// Keeps, in `selected`, the slots whose `key` is at least `bound`, from the key's order
    /// and suffix bitmaps: the bitmap at the first step boundary at or after the bound's
    /// position, the entries between, and the changed slots by their values now. `false`
    /// (nothing done) without orders.
    fn keep_at_least(&self, selected: &mut [u64], key: SortKey, bound: i64) -> bool {
        let Some(orders) = &self.orders else {
            return false;
        };
        let Some(at) = ORDERED.iter().position(|k| *k == key) else {
            return false;
        };
        let order = &orders.by[at];
        if order.suffixes.is_empty() && !order.slots.is_empty() {
            return false;
        }
        let len = order.slots.len();
        let step = suffix_step(len);
        let first = partition(len, |i| order.keys[i] < bound);
        let boundary = first.div_ceil(step);
        let mut pass = vec![0u64; selected.len()];
        if let Some(suffix) = order.suffixes.get(boundary) {
            pass[..suffix.len()].copy_from_slice(suffix);
        }
        for &slot in &order.slots[first..(boundary * step).min(len)] {
            set_bit(&mut pass, slot as usize);
        }
        self.keep_pass(selected, pass, |slot| self.key_now(key, slot) >= bound);
        true
    }

    /// Keeps, in `selected`, the slots in `pass` (built from the orders, so stale for the
    /// changed slots) with each changed slot decided by `now` from its values now.
    fn keep_pass(&self, selected: &mut [u64], mut pass: Vec<u64>, now: impl Fn(u32) -> bool) {
        for (word, dirty) in pass.iter_mut().zip(&self.dirty) {
            *word &= !dirty;
        }
        for &slot in &self.log {
            if now(slot) {
                set_bit(&mut pass, slot as usize);
            }
        }
        for (word, keep) in selected.iter_mut().zip(&pass) {
            *word &= keep;
        }
    }

    /// Keeps, in `selected`, the slots whose company, name or domain is among the matched
    /// strings, from the orders' postings (the slots of each string) when the matched strings'
    /// slots are few; the changed slots by their strings now. `false` (nothing done) without
    /// orders or when a pass over every selected slot is cheaper.
    fn keep_postings(&self, selected: &mut [u64], companies: &[u64], texts: &[u64]) -> bool {
        let Some(orders) = &self.orders else {
            return false;
        };
        let postings = [
            (&orders.company_postings, companies),
            (&orders.text_postings, texts),
        ];
        let mut slots = 0usize;
        for (posting, matched) in postings {
            for id in ids(matched, posting.strings()) {
                slots += posting.of(id).len();
            }
            if slots > self.len() / 8 {
                return false;
            }
        }
        let mut pass = vec![0u64; selected.len()];
        for (posting, matched) in postings {
            for id in ids(matched, posting.strings()) {
                for &slot in posting.of(id) {
                    set_bit(&mut pass, slot as usize);
                }
            }
        }
        self.keep_pass(selected, pass, |slot| {
            let s = slot as usize;
            bit(companies, self.company[s])
                || bit(texts, self.name[s])
                || bit(texts, self.domain[s])
        });
        true
    }

    /// Keeps, in `selected`, the slots set in any of `maps`.
    fn keep_any<'m>(&self, selected: &mut [u64], maps: impl Iterator<Item = &'m [u64]>) {
        let mut union = vec![0u64; selected.len()];
        for map in maps {
            for (u, m) in union.iter_mut().zip(map) {
                *u |= *m;
            }
        }
        for (word, u) in selected.iter_mut().zip(&union) {
            *word &= *u;
        }
    }

    /// The sort key of `slot` now, as the orders hold it (the company as its string's id).
    fn key_now(&self, key: SortKey, slot: u32) -> i64 {
        let s = slot as usize;
        match key {
            SortKey::UpdatedAt => i64::from(self.updated_at[s]),
            SortKey::CreatedAt => i64::from(self.created_at[s]),
            SortKey::Score => i64::from(self.score[s]),
            SortKey::DealValueUsd => self.deal_usd[s],
            SortKey::Company => i64::from(self.company[s]),
            // Never asked: `LeadsRequest::model_filters` sends sorts the model does not hold
            // (`SortKey::in_model`) to ClickHouse.
            SortKey::ExpiresAt => 0,
        }
    }

    /// Ascending (key, lead id) order of two entries holding keys as [`Self::key_now`] gives them.
    fn compare(&self, key: SortKey, a: (i64, u32), b: (i64, u32)) -> Ordering {
        let by_key = if key == SortKey::Company {
            self.companies
                .original(a.0 as u32)
                .cmp(self.companies.original(b.0 as u32))
        } else {
            a.0.cmp(&b.0)
        };
        by_key.then_with(|| self.id(a.1).cmp(self.id(b.1)))
    }

    /// Ascending order of an entry against a cursor.
    fn compare_to(&self, entry: (i64, u32), probe: &Probe, id: &[u8]) -> Ordering {
        let by_key = match probe {
            Probe::Text(text) => self.companies.original(entry.0 as u32).cmp(text),
            Probe::Int(number) => entry.0.cmp(number),
        };
        by_key.then_with(|| self.id(entry.1).cmp(id))
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
        let selected = self.select(filters)?;
        let total: u64 = selected.iter().map(|w| u64::from(w.count_ones())).sum();
        let want = limit + 1;
        // A walk of the sort key's order stops after `want` selected slots: about
        // want * n / total entries. A top-k looks at every selected slot once. Walk when that
        // is clearly cheaper (a walked entry costs a few times a selected slot).
        let walk = self.orders.is_some()
            && total > 0
            && (want as u64).saturating_mul(self.len() as u64) / total <= total.saturating_mul(4);
        let slots = if walk {
            self.walk(&selected, sort, cursor, want)
        } else {
            self.top_k(&selected, sort, cursor, limit)
        };
        let keys = slots
            .into_iter()
            .map(|slot| {
                let key = match sort.key {
                    SortKey::Company => String::from_utf8_lossy(
                        self.companies.original(self.company[slot as usize]),
                    )
                    .into_owned(),
                    numeric => self.key_now(numeric, slot).to_string(),
                };
                self.key_of(slot, key)
            })
            .collect();
        Some(ModelPage { keys, total })
    }

    /// Where `cursor` points, as the orders compare it (a cursor of another key type compares
    /// as the empty text or zero, as the ClickHouse path's binds would).
    fn probe<'c>(key: SortKey, cursor: &'c Cursor) -> (Probe<'c>, &'c [u8]) {
        let probe = match (&cursor.k, key) {
            (CursorKey::Text(text), SortKey::Company) => Probe::Text(text.as_bytes()),
            (CursorKey::Int(_), SortKey::Company) => Probe::Text(b""),
            (CursorKey::Int(number), _) => Probe::Int(*number),
            (CursorKey::Text(_), _) => Probe::Int(0),
        };
        (probe, cursor.i.as_bytes())
    }

    /// The first `want` selected slots in sort order after `cursor`, from the key's order: the
    /// slots not changed since it was built in order, merged with the changed ones (the log).
    fn walk(&self, selected: &[u64], sort: Sort, cursor: Option<&Cursor>, want: usize) -> Vec<u32> {
        let Some(orders) = &self.orders else {
            return Vec::new();
        };
        let Some(at) = ORDERED.iter().position(|k| *k == sort.key) else {
            return Vec::new();
        };
        let order = &orders.by[at];
        let key = sort.key;
        let probe = cursor.map(|c| Self::probe(key, c));
        // In page order: ascending, or both key and id descending.
        let page_order = |a: (i64, u32), b: (i64, u32)| {
            let ordering = self.compare(key, a, b);
            if sort.descending {
                ordering.reverse()
            } else {
                ordering
            }
        };
        let after_cursor = |entry: (i64, u32)| match &probe {
            None => true,
            Some((probe, id)) => {
                let ordering = self.compare_to(entry, probe, id);
                if sort.descending {
                    ordering == Ordering::Less
                } else {
                    ordering == Ordering::Greater
                }
            }
        };
        // The changed slots that are selected, with their keys now, in page order.
        let mut changed: Vec<u32> = self
            .log
            .iter()
            .copied()
            .filter(|&slot| bit(selected, slot))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let mut changed: Vec<(i64, u32)> = changed
            .into_iter()
            .map(|slot| (self.key_now(key, slot), slot))
            .filter(|&entry| after_cursor(entry))
            .collect();
        changed.sort_unstable_by(|a, b| page_order(*a, *b));
        changed.truncate(want);
        // The unchanged ones from the order.
        let eligible = |slot: u32| bit(selected, slot) && !bit_or_zero(&self.dirty, slot);
        let len = order.slots.len();
        let entry = |i: usize| (order.keys[i], order.slots[i]);
        let mut walked: Vec<(i64, u32)> = Vec::with_capacity(want);
        if sort.descending {
            // Entries before the cursor's position, last first.
            let end = match &probe {
                None => len,
                Some((probe, id)) => partition(len, |i| {
                    self.compare_to(entry(i), probe, id) == Ordering::Less
                }),
            };
            for i in (0..end).rev() {
                if walked.len() == want {
                    break;
                }
                if eligible(order.slots[i]) {
                    walked.push(entry(i));
                }
            }
        } else {
            let start = match &probe {
                None => 0,
                Some((probe, id)) => partition(len, |i| {
                    self.compare_to(entry(i), probe, id) != Ordering::Greater
                }),
            };
            for i in start..len {
                if walked.len() == want {
                    break;
                }
                if eligible(order.slots[i]) {
                    walked.push(entry(i));
                }
            }
        }
        // Merge the two page-ordered lists.
        let mut page = Vec::with_capacity(want);
        let (mut a, mut b) = (
            walked.into_iter().peekable(),
            changed.into_iter().peekable(),
        );
        while page.len() < want {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if page_order(*x, *y) == Ordering::Greater {
                        b.next()
                    } else {
                        a.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => None,
            };
            match next {
                Some((_, slot)) => page.push(slot),
                None => break,
            }
        }
        page
    }

    /// The first `limit + 1` selected slots after `cursor` by a pass over every selected slot.
    fn top_k(
        &self,
        selected: &[u64],
        sort: Sort,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Vec<u32> {
        match sort.key {
            SortKey::Company => {
                let after = cursor.map(|c| match &c.k {
                    CursorKey::Text(text) => (text.as_bytes(), c.i.as_bytes()),
                    CursorKey::Int(_) => (&b""[..], c.i.as_bytes()),
                });
                self.top(selected, sort.descending, after, limit, |s| {
                    self.companies.original(self.company[s as usize])
                })
            }
            numeric => {
                let after = cursor.map(|c| match &c.k {
                    CursorKey::Int(number) => (*number, c.i.as_bytes()),
                    CursorKey::Text(_) => (0, c.i.as_bytes()),
                });
                self.top(selected, sort.descending, after, limit, |s| {
                    self.key_now(numeric, s)
                })
            }
        }
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

    /// The answer by brute force over the newest row of each lead.
    fn reference(
        rows: &std::collections::HashMap<String, ModelRow>,
        filters: &[Filter],
        sort: Sort,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> ModelPage {
        let seconds = |v: i64| i64::from(u32::try_from(v).unwrap_or(0));
        let keep = |row: &ModelRow| {
            filters.iter().all(|filter| match filter {
                Filter::In(column, values) => values.contains(&row.enum_value(*column)),
                Filter::Country(codes) => {
                    country_code(&row.m_country) != 0 && codes.contains(&row.m_country)
                }
                Filter::MinScore(score) => row.score >= *score,
                Filter::UpdatedSince(since) => seconds(row.m_updated) >= *since,
                Filter::Text(text) => {
                    let needle = text.to_ascii_lowercase();
                    [&row.m_company, &row.m_name, &row.m_domain]
                        .iter()
                        .any(|field| field.to_ascii_lowercase().contains(&needle))
                }
            })
        };
        #[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
        enum Key {
            Int(i64),
            Text(Vec<u8>),
        }
        let key = |row: &ModelRow| match sort.key {
            SortKey::UpdatedAt => Key::Int(seconds(row.m_updated)),
            SortKey::CreatedAt => Key::Int(seconds(row.m_created)),
            SortKey::Score => Key::Int(i64::from(row.score)),
            SortKey::DealValueUsd => Key::Int(row.m_deal),
            _ => Key::Text(row.m_company.as_bytes().to_vec()),
        };
        let mut kept: Vec<(Key, &ModelRow)> = rows
            .values()
            .filter(|r| keep(r))
            .map(|r| (key(r), r))
            .collect();
        let total = kept.len() as u64;
        kept.sort_by(|a, b| {
            let ordering = a.0.cmp(&b.0).then_with(|| a.1.lead_id.cmp(&b.1.lead_id));
            if sort.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
        let after = cursor.map(|c| {
            let k = match (&c.k, sort.key) {
                (CursorKey::Text(t), SortKey::Company) => Key::Text(t.as_bytes().to_vec()),
                (CursorKey::Int(_), SortKey::Company) => Key::Text(Vec::new()),
                (CursorKey::Int(n), _) => Key::Int(*n),
                (CursorKey::Text(_), _) => Key::Int(0),
            };
            (k, c.i.clone())
        });
        let keys = kept
            .into_iter()
            .filter(|(k, r)| match &after {
                None => true,
                Some((ak, ai)) => {
                    let ordering = k.cmp(ak).then_with(|| r.lead_id.cmp(ai));
                    if sort.descending {
                        ordering == Ordering::Less
                    } else {
                        ordering == Ordering::Greater
                    }
                }
            })
            .take(limit + 1)
            .map(|(k, r)| {
                let text = match k {
                    Key::Int(n) => n.to_string(),
                    Key::Text(t) => String::from_utf8(t).unwrap(),
                };
                (r.lead_id.clone(), r.version, text)
            })
            .collect();
        ModelPage { keys, total }
    }

    /// The model with its orders (built at any moment, with changes after) answers exactly as
    /// a brute force over the rows, through both its walk and its top-k, and without orders.
    #[test]
    fn answers_with_and_without_orders_equal_a_brute_force() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let statuses = ["New", "Active", "Closed", "Weird"];
        let companies = ["Contoso", "contoso", "Fabrikam", "Ådatum", "", "Northwind"];
        for round in 0..40 {
            let mut model = ReadModel::new();
            let mut rows = std::collections::HashMap::new();
            let leads = 1 + next(300);
            let random_row = |next: &mut dyn FnMut(u64) -> u64, id: u64, version: u64| {
                let mut r = row(&format!("lead-{id}"), version);
                r.m_status = statuses[next(4) as usize].into();
                r.m_provider = ["unknown", "other", "microsoft365"][next(3) as usize].into();
                r.m_country = ["US", "DE", "us", ""][next(4) as usize].into();
                r.score = next(101) as u8;
                r.m_updated = 1_700_000_000 + next(50) as i64 * 1000;
                r.m_created = [-5, 0, 1_700_000_000, 5_000_000_000][next(4) as usize];
                r.m_deal = next(7) as i64 * 100 - 200;
                r.m_company = companies[next(6) as usize].into();
                r.m_name = format!("Deal {}", next(40));
                r.m_domain = format!("d{}.example", next(10));
                r
            };
            let feed = |model: &mut ReadModel,
                        rows: &mut std::collections::HashMap<String, ModelRow>,
                        next: &mut dyn FnMut(u64) -> u64,
                        count: u64| {
                for _ in 0..count {
                    let id = next(leads);
                    let version = next(5);
                    let r = random_row(next, id, version);
                    model.upsert(&r);
                    let newer = rows
                        .get(&r.lead_id)
                        .is_none_or(|held: &ModelRow| r.version >= held.version);
                    if newer {
                        rows.insert(r.lead_id.clone(), r);
                    }
                }
            };
            feed(&mut model, &mut rows, &mut next, leads * 2);
            // Orders from a snapshot, changes while they are built, then more after.
            let with_orders = round % 4 != 0;
            if with_orders {
                let snapshot = model.order_snapshot();
                let during = next(20);
                feed(&mut model, &mut rows, &mut next, during);
                model.install_orders(snapshot.build());
                let after = next(20);
                feed(&mut model, &mut rows, &mut next, after);
            }
            for _ in 0..200 {
                let mut filters = Vec::new();
                if next(2) == 0 {
                    filters.push(Filter::In(
                        EnumColumn::Status,
                        vec!["Active", "New"][..1 + next(2) as usize].to_vec(),
                    ));
                }
                if next(4) == 0 {
                    filters.push(Filter::Country(vec!["US".into()]));
                }
                if next(3) == 0 {
                    filters.push(Filter::MinScore(next(101) as u8));
                }
                if next(4) == 0 {
                    filters.push(Filter::UpdatedSince(
                        1_700_000_000 + next(50) as i64 * 1000 - 500,
                    ));
                }
                if next(4) == 0 {
                    filters.push(Filter::Text(
                        ["CONTOSO", "deal 1", "d3.", "nw", "zz"][next(5) as usize].into(),
                    ));
                }
                let key = [
                    SortKey::UpdatedAt,
                    SortKey::CreatedAt,
                    SortKey::Score,
                    SortKey::DealValueUsd,
                    SortKey::Company,
                ][next(5) as usize];
                let sort = Sort {
                    key,
                    descending: next(2) == 0,
                };
                let cursor = (next(2) == 0).then(|| Cursor {
                    s: String::new(),
                    k: if next(2) == 0 {
                        CursorKey::Int([-1, 0, 50, 1_700_020_000][next(4) as usize])
                    } else {
                        CursorKey::Text(companies[next(6) as usize].into())
                    },
                    i: format!("lead-{}", next(leads)),
                });
                let limit = [1, 3, 10, 50][next(4) as usize];
                let got = model
                    .answer(&filters, sort, cursor.as_ref(), limit)
                    .unwrap();
                let want = reference(&rows, &filters, sort, cursor.as_ref(), limit);
                assert_eq!(
                    got, want,
                    "round {round}, orders {with_orders}: {filters:?} {sort:?} {cursor:?} limit {limit}"
                );
            }
        }
    }

    /// The sequences index finds exactly what a scan finds, also once common sequences have
    /// dropped their lists (more than 4,096 strings and an eighth of them).
    #[test]
    fn the_sequences_index_finds_what_a_scan_finds() {
        let mut strings = Strings::new(false);
        let mut all = Vec::new();
        for n in 0..40_000u32 {
            let text = match n % 4 {
                0 => format!("Referral {n}"),
                1 => format!("company{}.example", n % 700),
                2 => format!("ÄÖ Deal {}", n % 50),
                _ => format!("x{n}y"),
            };
            strings.intern(&text);
            all.push(text.to_ascii_lowercase());
        }
        assert!(
            strings.trigrams.lists.values().any(Option::is_none),
            "some sequences are common"
        );
        for needle in [
            "referral 1",
            "erra",
            "rral 3999",
            "ral 12",
            "company12.",
            "deal 4",
            "ö deal",
            "x3",
            "99y",
            "zzz",
            "l 1",
            ".ex",
            "referral 39999",
            "y",
        ] {
            let needle = needle.to_ascii_lowercase();
            let bits = strings.matching(needle.as_bytes());
            let mut seen = std::collections::BTreeSet::new();
            for (id, text) in all.iter().enumerate() {
                // Interned strings are unique: compare by the first id of each text.
                let interned = strings.intern(text.as_str());
                if text.contains(&needle) {
                    seen.insert(interned);
                }
                assert_eq!(
                    bit(&bits, interned),
                    seen.contains(&interned) || text.contains(&needle),
                    "{needle:?} in {text:?} (string {id})"
                );
            }
        }
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

/// The model's own cost per question at a million leads, without HTTP or the rows:
/// `cargo test --release -p hunter --lib model_speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;
    use std::time::Instant;

    fn bench_row(n: u64) -> ModelRow {
        let pick = |list: &[&str], i: u64| list[(i % list.len() as u64) as usize].to_owned();
        ModelRow {
            lead_id: format!("lead-{n}"),
            version: n,
            m_status: pick(&["New", "Active", "Closed"], n),
            m_substatus: pick(&["Pending", "Accepted", "Won", "Lost"], n),
            m_provider: pick(&["microsoft365", "google_workspace", "other", "unknown"], n),
            m_direction: pick(&["Incoming", "Outgoing"], n),
            m_qualification: pick(
                &["None", "Direct", "MarketingQualified", "SalesQualified"],
                n,
            ),
            m_country: pick(&["US", "DE", "NL", "FR", "GB"], n),
            score: (n % 101) as u8,
            m_updated: 1_700_000_000 + ((n * 7919) % 30_000_000) as i64,
            m_created: 1_700_000_000 + (n * 7) as i64,
            m_deal: ((n % 100_000) * 100) as i64,
            m_company: format!("Company {}", n % 50_000),
            m_name: format!("Referral {n}"),
            m_domain: format!("company{}.com", n % 50_000),
            m_processed: 0,
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, p: f64) -> bool {
            (self.next() % 10_000) as f64 / 10_000.0 < p
        }
    }

    #[test]
    #[ignore = "speed figure, run by hand"]
    fn model_speed() {
        let leads: u64 = std::env::var("MODEL_SPEED_LEADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let mut model = ReadModel::new();
        let started = Instant::now();
        for n in 0..leads {
            model.upsert(&bench_row(n));
        }
        println!("built {leads} in {:?}", started.elapsed());
        let with_orders = std::env::var("MODEL_SPEED_ORDERS").map_or(true, |v| v != "off");
        if with_orders {
            let started = Instant::now();
            let orders = model.order_snapshot().build();
            model.install_orders(orders);
            println!("orders built in {:?}", started.elapsed());
        }
        // Some changes since the orders, as a live model has.
        for n in (0..leads).step_by(500) {
            let mut row = bench_row(n);
            row.version += 1;
            row.score = 100 - row.score;
            row.m_updated += 86_400;
            model.upsert(&row);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let statuses: &[&'static str] = &["New", "Active", "Closed"];
        let substatuses: &[&'static str] = &["Pending", "Accepted", "Won", "Lost"];
        let keys = [
            SortKey::UpdatedAt,
            SortKey::CreatedAt,
            SortKey::Score,
            SortKey::DealValueUsd,
            SortKey::Company,
        ];
        let mut by_kind: std::collections::BTreeMap<&str, (u32, std::time::Duration)> =
            Default::default();
        let questions = 2000;
        let all = Instant::now();
        for _ in 0..questions {
            let mut filters = Vec::new();
            let mut kind = String::new();
            if rng.chance(0.5) {
                filters.push(Filter::In(
                    EnumColumn::Status,
                    vec![statuses[rng.below(3) as usize]],
                ));
            }
            if rng.chance(0.3) {
                filters.push(Filter::In(
                    EnumColumn::Substatus,
                    vec![
                        substatuses[rng.below(4) as usize],
                        substatuses[rng.below(4) as usize],
                    ],
                ));
            }
            if rng.chance(0.3) {
                filters.push(Filter::Country(vec!["US".into(), "DE".into()]));
            }
            if rng.chance(0.4) {
                filters.push(Filter::MinScore(rng.below(101) as u8));
            }
            if rng.chance(0.2) {
                filters.push(Filter::UpdatedSince(
                    1_700_000_000 + rng.below(30_000_000) as i64,
                ));
            }
            if rng.chance(0.25) {
                kind.push_str("text ");
                let text = match rng.below(4) {
                    0 => format!("company {}", rng.below(50_000)),
                    1 => format!("Referral {}", rng.below(leads)),
                    2 => format!("COMPANY{}", rng.below(5_000)),
                    _ => format!("ral {}", rng.below(1_000)),
                };
                filters.push(Filter::Text(text));
            }
            let key = keys[rng.below(5) as usize];
            let descending = rng.chance(0.5);
            let cursor = rng.chance(0.5).then(|| {
                let n = rng.below(leads);
                let row = bench_row(n);
                Cursor {
                    s: String::new(),
                    k: match key {
                        SortKey::Company => CursorKey::Text(row.m_company.clone()),
                        SortKey::UpdatedAt => CursorKey::Int(row.m_updated),
                        SortKey::CreatedAt => CursorKey::Int(row.m_created),
                        SortKey::Score => CursorKey::Int(i64::from(row.score)),
                        _ => CursorKey::Int(row.m_deal),
                    },
                    i: row.lead_id,
                }
            });
            kind.push_str(&format!("{key:?}"));
            let limit = [10, 20, 50, 50, 100][rng.below(5) as usize];
            let started = Instant::now();
            let selected = model.select(&filters);
            let selecting = started.elapsed();
            std::hint::black_box(selected);
            let entry = by_kind.entry("(selection alone)").or_default();
            entry.0 += 1;
            entry.1 += selecting;
            for filter in &filters {
                let started = Instant::now();
                std::hint::black_box(model.select(std::slice::from_ref(filter)));
                let took = started.elapsed();
                if let Filter::Text(text) = filter {
                    let started = Instant::now();
                    let needle = text.to_ascii_lowercase();
                    std::hint::black_box(model.companies.matching(needle.as_bytes()));
                    std::hint::black_box(model.texts.matching(needle.as_bytes()));
                    let entry = by_kind.entry("(text matching alone)").or_default();
                    entry.0 += 1;
                    entry.1 += started.elapsed();
                }
                let name = match filter {
                    Filter::In(..) => "(filter enum)",
                    Filter::Country(_) => "(filter country)",
                    Filter::MinScore(_) => "(filter min_score)",
                    Filter::UpdatedSince(_) => "(filter updated_since)",
                    Filter::Text(_) => "(filter text)",
                };
                let entry = by_kind.entry(name).or_default();
                entry.0 += 1;
                entry.1 += took;
            }
            let started = Instant::now();
            let page = model.answer(&filters, Sort { key, descending }, cursor.as_ref(), limit);
            let took = started.elapsed();
            assert!(page.is_some());
            let entry = by_kind
                .entry(if kind.starts_with("text") {
                    "text"
                } else {
                    "no text"
                })
                .or_default();
            entry.0 += 1;
            entry.1 += took;
            let entry = by_kind
                .entry(match key {
                    SortKey::UpdatedAt => "sort updated_at",
                    SortKey::CreatedAt => "sort created_at",
                    SortKey::Score => "sort score",
                    SortKey::DealValueUsd => "sort deal",
                    _ => "sort company",
                })
                .or_default();
            entry.0 += 1;
            entry.1 += took;
        }
        let _ = all;
        for (kind, (count, took)) in by_kind {
            println!(
                "  {kind}: {count} questions, {:.0} µs each",
                took.as_secs_f64() * 1e6 / f64::from(count)
            );
        }
    }
}
