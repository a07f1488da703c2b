//! Lenient readers for Partner Center JSON that also read Hunter's own Avro records.
//!
//! The live API drifts from its documentation (numbers sent as strings, empty strings for
//! "no value", `customerProfile.ids` as an array or an object, timestamps with 0–7 fraction
//! digits). Every reader here goes through `deserialize_any`, so one set of record types reads
//! both the API's JSON and the Avro records written from it: JSON hands a string timestamp,
//! Avro hands the `timestamp-micros` long; both land in the same field.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant in microseconds since the Unix epoch (Avro `timestamp-micros`).
///
/// Partner Center sends up to 7 fraction digits (100 ns); the 7th digit is dropped. The raw
/// JSON in each record keeps the exact text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses an RFC 3339 timestamp with any number of fraction digits; a missing offset is
    /// read as UTC, as Partner Center's values are UTC.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parsed = OffsetDateTime::parse(text, &Rfc3339).or_else(|first_error| {
            // No offset at all ("2024-03-04T09:15:00.123"): treat as UTC.
            OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339).map_err(|_| first_error)
        });
        match parsed {
            Ok(instant) => Ok(Self::from_offset_date_time(instant)),
            Err(error) => Err(format!("invalid timestamp {text:?}: {error}")),
        }
    }

    pub fn from_offset_date_time(instant: OffsetDateTime) -> Self {
        Self((instant.unix_timestamp_nanos() / 1_000) as i64)
    }

    pub fn now() -> Self {
        Self::from_offset_date_time(OffsetDateTime::now_utc())
    }

    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// RFC 3339 with seven fraction digits and `Z`, the form Partner Center uses.
    pub fn to_rfc3339(self) -> String {
        let instant = self.to_offset_date_time();
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        );
        instant
            .format(&format)
            .unwrap_or_else(|_| instant.unix_timestamp().to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or microseconds since the epoch")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v).map(Timestamp).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

/// Optional text: null and `""` are `None`; numbers and flags become their text.
pub fn opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, a number, a boolean or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then(|| v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then_some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    deserializer.deserialize_any(V)
}

/// Optional number: a JSON number, a numeric string (`"10000"`), null or `""`.
pub fn opt_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number, a numeric string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| E::custom(format!("not a number: {v:?}")))
        }
    }
    deserializer.deserialize_any(V)
}

/// Optional flag: a boolean, `"true"`/`"false"` in any case, null or `""`.
pub fn opt_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean, \"true\"/\"false\" or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim().to_ascii_lowercase().as_str() {
                "" => Ok(None),
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(E::custom(format!("not a boolean: {other:?}"))),
            }
        }
    }
    deserializer.deserialize_any(V)
}

/// Optional timestamp: RFC 3339 text (JSON), microseconds (Avro), null or `""`.
pub fn opt_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Timestamp>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp, microseconds since the epoch, or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Timestamp(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(|v| Some(Timestamp(v)))
                .map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            Timestamp::parse(v).map(Some).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(V)
}

/// A list where the API may send null instead of `[]`. (Through `deserialize_any`: Avro's
/// reader refuses `deserialize_option` on a plain array.)
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element::<T>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
}

/// One element of an undocumented JSON structure, kept as JSON text.
///
/// From the API it is any JSON value, written back as compact JSON; from Avro it is the text
/// written before. (A bare JSON string element is kept as its text, without quotes.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawJson(pub String);

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(RawJson(text)),
            other => Ok(RawJson(other.to_string())),
        }
    }
}

/// Optional [`RawJson`]: null stays `None`.
pub fn opt_raw_json<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RawJson>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(RawJson(text))),
        Some(other) => Ok(Some(RawJson(other.to_string()))),
    }
}

/// `customerProfile.ids`: live data sends `[{profileType, id}]`; the documentation's tables
/// describe `{ "Duns": "...", "External": "..." }`; old examples send `{}`.
pub fn customer_ids<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<super::referral::CustomerProfileId>, D::Error> {
    use super::referral::CustomerProfileId;
    struct IdsVisitor;
    impl<'de> Visitor<'de> for IdsVisitor {
        type Value = Vec<CustomerProfileId>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of {profileType, id}, an object of profile type to id, or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<CustomerProfileId>()? {
                ids.push(id);
            }
            Ok(ids)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some((profile_type, value)) = map.next_entry::<String, serde_json::Value>()? {
                let id = match value {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(text) if text.is_empty() => continue,
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                ids.push(CustomerProfileId {
                    profile_type: Some(profile_type),
                    id: Some(id),
                });
            }
            Ok(ids)
        }
    }
    deserializer.deserialize_any(IdsVisitor)
}
