//! Whether data written with one schema can be read with another (Avro schema resolution),
//! checked before anything is written: a contract may change only so that every released
//! version reads every other (backward and forward, transitively).
//!
//! The rules are the specification's "Schema Resolution", as Java's `SchemaCompatibility`
//! applies them, with two stricter choices for a public contract:
//!
//! - only full compatibility counts: a union or enum that reads *some* of the other side's
//!   values (apache-avro's `SchemaCompatibility` calls that "partial") is incompatible, because
//!   the other values would fail at read time;
//! - a logical type may not change (`long` → `timestamp-micros`, millis → micros): the bytes
//!   resolve, but their meaning changes silently.
//!
//! apache-avro 0.22's own `SchemaCompatibility` is not used: besides "partial" results it lets
//! an `int` be read as any timestamp.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, NamesRef, ResolvedSchema, UuidSchema};

/// Why a reader cannot read what a writer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Incompatibility {
    /// Where in the reader's schema (`Lead.products[]`, `Referral.details?`).
    pub path: String,
    pub reason: String,
}

/// Whether a reader with `reader` reads every datum written with `writer`.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), Incompatibility> {
    let unresolvable = |side: &str, error: apache_avro::Error| Incompatibility {
        path: String::new(),
        reason: format!("the {side} schema does not resolve: {error}"),
    };
    let writer_names = ResolvedSchema::try_from(writer).map_err(|e| unresolvable("writer", e))?;
    let reader_names = ResolvedSchema::try_from(reader).map_err(|e| unresolvable("reader", e))?;
    Checker {
        writer_names: writer_names.get_names(),
        reader_names: reader_names.get_names(),
        memo: HashMap::new(),
    }
    .check(writer, reader, &root_path(reader))
}

/// [`can_read`] for schemas given as JSON text (a schema that does not parse is reported as
/// such).
pub fn can_read_texts(writer: &str, reader: &str) -> Result<(), Incompatibility> {
    let parse = |side: &str, text: &str| {
        Schema::parse_str(text).map_err(|e| Incompatibility {
            path: String::new(),
            reason: format!("the {side} schema is not valid Avro: {e}"),
        })
    };
    can_read(&parse("writer", writer)?, &parse("reader", reader)?)
}

/// Both ways: each reads what the other writes.
pub fn mutually_readable(a: &Schema, b: &Schema) -> Result<(), Incompatibility> {
    can_read(a, b).map_err(|e| Incompatibility {
        reason: format!(
            "a reader of the newer schema cannot read the older: {}",
            e.reason
        ),
        ..e
    })?;
    can_read(b, a).map_err(|e| Incompatibility {
        reason: format!(
            "a reader of the older schema cannot read the newer: {}",
            e.reason
        ),
        ..e
    })
}

fn root_path(schema: &Schema) -> String {
    schema
        .name()
        .map_or_else(String::new, |n| n.name().to_owned())
}

struct Checker<'a> {
    writer_names: &'a NamesRef<'a>,
    reader_names: &'a NamesRef<'a>,
    /// Named pairs being or already checked: `None` while in progress (a recursive type is
    /// assumed compatible on its second visit), then the result.
    memo: HashMap<(String, String), Option<Result<(), Incompatibility>>>,
}

/// A primitive's underlying Avro type and its logical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

impl<'a> Checker<'a> {
    fn deref<'s>(&self, schema: &'s Schema, names: &'a NamesRef<'a>) -> &'s Schema
    where
        'a: 's,
    {
        match schema {
            Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
            other => other,
        }
    }

    fn check(
        &mut self,
        writer: &Schema,
        reader: &Schema,
        path: &str,
    ) -> Result<(), Incompatibility> {
        let writer = self.deref(writer, self.writer_names);
        let reader = self.deref(reader, self.reader_names);
        let fail = |reason: String| {
            Err(Incompatibility {
                path: path.to_owned(),
                reason,
            })
        };
        match (writer, reader) {
            (Schema::Union(writer), _) => {
                // Every branch the writer may have chosen must be readable.
                for branch in writer.variants() {
                    self.check(branch, reader, path)?;
                }
                Ok(())
            }
            (_, Schema::Union(reader)) => {
                let mut reasons = Vec::new();
                for branch in reader.variants() {
                    match self.check(writer, branch, &format!("{path}?")) {
                        Ok(()) => return Ok(()),
                        Err(error) => reasons.push(error.reason),
                    }
                }
                fail(format!(
                    "the reader's union has no branch for the writer's {} ({})",
                    describe(writer),
                    reasons.join("; ")
                ))
            }
            (Schema::Record(w), Schema::Record(r)) => {
                self.named(&w.name, &r.name, r.aliases.as_deref(), path, |checker| {
                    for field in &r.fields {
                        let field_path = format!("{path}.{}", field.name);
                        let found = std::iter::once(&field.name)
                            .chain(field.aliases.iter())
                            .find_map(|name| w.fields.iter().find(|f| &f.name == name));
                        match found {
                            Some(written) => checker.check(&written.schema, &field.schema, &field_path)?,
                            None if field.default.is_some() => {}
                            None => {
                                return Err(Incompatibility {
                                    path: field_path,
                                    reason: "the reader's field is not in the writer's record and has no default".into(),
                                });
                            }
                        }
                    }
                    Ok(())
                })
            }
            (Schema::Enum(w), Schema::Enum(r)) => {
                self.named(&w.name, &r.name, r.aliases.as_deref(), path, |_| {
                    if r.default.is_some() {
                        return Ok(());
                    }
                    let missing: Vec<&str> = w
                        .symbols
                        .iter()
                        .filter(|s| !r.symbols.contains(s))
                        .map(String::as_str)
                        .collect();
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(Incompatibility {
                            path: path.to_owned(),
                            reason: format!(
                                "the reader's enum lacks symbols {missing:?} and has no default"
                            ),
                        })
                    }
                })
            }
            (Schema::Array(w), Schema::Array(r)) => self.check(&w.items, &r.items, &format!("{path}[]")),
            (Schema::Map(w), Schema::Map(r)) => self.check(&w.types, &r.types, &format!("{path}{{}}")),
            _ => match (fixed(writer), fixed(reader)) {
                (Some((w_name, w_size, w_logical)), Some((r_name, r_size, r_logical))) => {
                    self.named(w_name, r_name, None, path, |_| {
                        if w_size != r_size {
                            return Err(Incompatibility {
                                path: path.to_owned(),
                                reason: format!("fixed size changed from {w_size} to {r_size}"),
                            });
                        }
                        if w_logical != r_logical {
                            return Err(Incompatibility {
                                path: path.to_owned(),
                                reason: format!("logical type changed from {w_logical:?} to {r_logical:?}"),
                            });
                        }
                        Ok(())
                    })
                }
                _ => match (primitive(writer), primitive(reader)) {
                    (Some((w, w_logical)), Some((r, r_logical))) => {
                        if !promotes(w, r) {
                            return fail(format!("a {} cannot be read as a {}", describe(writer), describe(reader)));
                        }
                        if w_logical != r_logical {
                            return fail(format!(
                                "logical type changed from {} to {}",
                                w_logical.unwrap_or("none"),
                                r_logical.unwrap_or("none")
                            ));
                        }
                        Ok(())
                    }
                    _ => fail(format!(
                        "a {} cannot be read as a {}",
                        describe(writer),
                        describe(reader)
                    )),
                },
            },
        }
    }

    /// Checks a named pair once (recursive types terminate), after their names agree: the
    /// reader's full name or one of its aliases must be the writer's full name; an unqualified
    /// alias matches on the name alone.
    fn named(
        &mut self,
        writer: &Name,
        reader: &Name,
        aliases: Option<&[apache_avro::schema::Alias]>,
        path: &str,
        body: impl FnOnce(&mut Self) -> Result<(), Incompatibility>,
    ) -> Result<(), Incompatibility> {
        let written = writer.fullname(None);
        let read = reader.fullname(None);
        let alias_matches = aliases
            .unwrap_or_default()
            .iter()
            .any(|alias| alias.fullname(reader.namespace()) == written);
        if written != read && !alias_matches {
            return Err(Incompatibility {
                path: path.to_owned(),
                reason: format!(
                    "the writer's {written} is not the reader's {read} nor one of its aliases"
                ),
            });
        }
        let key = (written, read);
        match self.memo.get(&key) {
            Some(None) => return Ok(()),
            Some(Some(result)) => return result.clone(),
            None => {}
        }
        self.memo.insert(key.clone(), None);
        let result = body(self);
        self.memo.insert(key, Some(result.clone()));
        result
    }
}

/// Whether a value of `writer` is read as `reader` by the specification's promotions.
fn promotes(writer: Base, reader: Base) -> bool {
    use Base::*;
    writer == reader
        || matches!(
            (writer, reader),
            (Int, Long | Float | Double)
                | (Long, Float | Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

fn primitive(schema: &Schema) -> Option<(Base, Option<&'static str>)> {
    Some(match schema {
        Schema::Null => (Base::Null, None),
        Schema::Boolean => (Base::Boolean, None),
        Schema::Int => (Base::Int, None),
        Schema::Long => (Base::Long, None),
        Schema::Float => (Base::Float, None),
        Schema::Double => (Base::Double, None),
        Schema::Bytes => (Base::Bytes, None),
        Schema::String => (Base::String, None),
        Schema::Date => (Base::Int, Some("date")),
        Schema::TimeMillis => (Base::Int, Some("time-millis")),
        Schema::TimeMicros => (Base::Long, Some("time-micros")),
        Schema::TimestampMillis => (Base::Long, Some("timestamp-millis")),
        Schema::TimestampMicros => (Base::Long, Some("timestamp-micros")),
        Schema::TimestampNanos => (Base::Long, Some("timestamp-nanos")),
        Schema::LocalTimestampMillis => (Base::Long, Some("local-timestamp-millis")),
        Schema::LocalTimestampMicros => (Base::Long, Some("local-timestamp-micros")),
        Schema::LocalTimestampNanos => (Base::Long, Some("local-timestamp-nanos")),
        Schema::Uuid(UuidSchema::String) => (Base::String, Some("uuid")),
        Schema::Uuid(UuidSchema::Bytes) => (Base::Bytes, Some("uuid")),
        Schema::BigDecimal => (Base::Bytes, Some("big-decimal")),
        Schema::Decimal(decimal) if matches!(decimal.inner, InnerDecimalSchema::Bytes) => {
            // Precision and scale are part of the meaning too.
            (
                Base::Bytes,
                Some(decimal_label(decimal.precision, decimal.scale)),
            )
        }
        _ => return None,
    })
}

/// A fixed type's name, size and logical type.
fn fixed(schema: &Schema) -> Option<(&Name, usize, Option<String>)> {
    match schema {
        Schema::Fixed(f) => Some((&f.name, f.size, None)),
        Schema::Duration(f) => Some((&f.name, f.size, Some("duration".into()))),
        Schema::Uuid(UuidSchema::Fixed(f)) => Some((&f.name, f.size, Some("uuid".into()))),
        Schema::Decimal(decimal) => match &decimal.inner {
            InnerDecimalSchema::Fixed(f) => Some((
                &f.name,
                f.size,
                Some(format!("decimal({},{})", decimal.precision, decimal.scale)),
            )),
            InnerDecimalSchema::Bytes => None,
        },
        _ => None,
    }
}

/// Decimal labels live for the process: a handful of distinct (precision, scale) pairs at most.
fn decimal_label(precision: usize, scale: usize) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    static LABELS: OnceLock<Mutex<HashMap<(usize, usize), &'static str>>> = OnceLock::new();
    let mut labels = LABELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    labels
        .entry((precision, scale))
        .or_insert_with(|| Box::leak(format!("decimal({precision},{scale})").into_boxed_str()))
}

fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Ref { name } => name.fullname(None),
        other => match primitive(other) {
            Some((base, Some(logical))) => {
                format!("{} ({logical})", format!("{base:?}").to_lowercase())
            }
            Some((base, None)) => format!("{base:?}").to_lowercase(),
            None => format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    fn record(fields: &str) -> Schema {
        schema(&format!(
            r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#
        ))
    }

    #[test]
    fn adding_a_field_with_a_default_is_compatible_both_ways() {
        let old = record(r#"{"name":"a","type":"string"}"#);
        let new = record(
            r#"{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}"#,
        );
        assert_eq!(mutually_readable(&old, &new), Ok(()));
    }

    #[test]
    fn a_field_without_a_default_breaks_one_direction() {
        let old = record(r#"{"name":"a","type":"string"}"#);
        let added = record(r#"{"name":"a","type":"string"},{"name":"b","type":"long"}"#);
        let error = can_read(&old, &added).unwrap_err();
        assert_eq!(error.path, "R.b");
        assert!(error.reason.contains("no default"), "{error}");
        // An old reader skips the new field: forward compatible only.
        assert_eq!(can_read(&added, &old), Ok(()));
        // Removing a field that has no default: old readers need it.
        assert!(can_read(&old, &added).is_err());
        assert!(mutually_readable(&added, &old).is_err());
    }

    #[test]
    fn types_promote_only_as_the_specification_says() {
        let int = record(r#"{"name":"a","type":"int"}"#);
        let long = record(r#"{"name":"a","type":"long"}"#);
        let string = record(r#"{"name":"a","type":"string"}"#);
        assert_eq!(can_read(&int, &long), Ok(()));
        assert!(can_read(&long, &int).is_err());
        assert!(can_read(&int, &string).is_err());
        assert!(mutually_readable(&int, &long).is_err());
    }

    #[test]
    fn a_changed_logical_type_is_incompatible() {
        let micros =
            record(r#"{"name":"a","type":{"type":"long","logicalType":"timestamp-micros"}}"#);
        let millis =
            record(r#"{"name":"a","type":{"type":"long","logicalType":"timestamp-millis"}}"#);
        let plain = record(r#"{"name":"a","type":"long"}"#);
        assert!(
            can_read(&micros, &millis)
                .unwrap_err()
                .reason
                .contains("logical type")
        );
        assert!(can_read(&plain, &micros).is_err());
        assert_eq!(can_read(&micros, &micros), Ok(()));
    }

    #[test]
    fn making_a_field_optional_is_only_backward_compatible() {
        let required = record(r#"{"name":"a","type":"string"}"#);
        let optional = record(r#"{"name":"a","type":["null","string"],"default":null}"#);
        assert_eq!(can_read(&required, &optional), Ok(()));
        let error = can_read(&optional, &required).unwrap_err();
        assert!(
            error.reason.contains("null cannot be read as a string"),
            "{error}"
        );
    }

    #[test]
    fn enums_need_every_written_symbol_or_a_default() {
        let ab = record(r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#);
        let abc =
            record(r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}}"#);
        let abc_default =
            record(r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}}"#);
        assert_eq!(can_read(&ab, &abc), Ok(()));
        assert!(can_read(&abc, &ab).unwrap_err().reason.contains("[\"C\"]"));
        let with_default = record(
            r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}}"#,
        );
        assert_eq!(can_read(&abc_default, &with_default), Ok(()));
    }

    #[test]
    fn renamed_records_need_an_alias_and_nested_paths_are_named() {
        let old = schema(
            r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"x","type":{"type":"record","name":"Inner","fields":[{"name":"n","type":"int"}]}}]}"#,
        );
        let renamed = schema(
            r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"x","type":{"type":"record","name":"Renamed","fields":[{"name":"n","type":"int"}]}}]}"#,
        );
        let aliased = schema(
            r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"x","type":{"type":"record","name":"Renamed","aliases":["Inner"],"fields":[{"name":"n","type":"int"}]}}]}"#,
        );
        assert_eq!(can_read(&old, &renamed).unwrap_err().path, "R.x");
        assert_eq!(can_read(&old, &aliased), Ok(()));
        let narrowed = schema(
            r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"x","type":{"type":"record","name":"Inner","fields":[{"name":"n","type":"string"}]}}]}"#,
        );
        assert_eq!(can_read(&old, &narrowed).unwrap_err().path, "R.x.n");
    }

    #[test]
    fn recursive_types_terminate() {
        let list = schema(
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#,
        );
        let wider = schema(
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"],"default":null}]}"#,
        );
        assert_eq!(can_read(&list, &wider), Ok(()));
        assert!(can_read(&wider, &list).is_err());
    }
}
