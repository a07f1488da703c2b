//! The Avro specification's Parsing Canonical Form and CRC-64-AVRO fingerprint, computed over
//! the schema's JSON.
//!
//! Hunter computes these itself rather than through apache-avro: apache-avro 0.22 (like the
//! Python `avro` package 1.12) leaves `{"type":"long"}` where a logical type was, while the
//! specification's [PRIMITIVES] and [STRIP] rules give `"long"`, as Java's
//! `SchemaNormalization` and fastavro do. A fingerprint that differs from Java's makes every
//! spec-conforming single-object reader (Java's `BinaryMessageDecoder` with a `SchemaStore`,
//! fastavro) refuse the records.
//!
//! The transformation, rule by rule (Avro specification, "Transforming into Parsing Canonical
//! Form"; where the text leaves a choice, Java's `SchemaNormalization` decides):
//!
//! - [PRIMITIVES] a primitive in object form is its bare name, whatever other attributes
//!   (`logicalType`, `precision`, …) it carries;
//! - [FULLNAMES] named types (record, enum, fixed) carry their fullname, namespaces resolved as
//!   the specification says (a dotted name is a fullname; else the `namespace` attribute; else the
//!   enclosing named type's namespace); references print the fullname; a type already defined is
//!   printed as its name only;
//! - [STRIP] only `name`, `type`, `fields`, `symbols`, `items`, `values`, `size` remain;
//! - [ORDER] in that order;
//! - [STRINGS], [INTEGERS], [WHITESPACE]: text is re-printed from parsed JSON, so escapes,
//!   quotes around sizes, leading zeros and whitespace are gone.
//!
//! An `error` type (only valid in protocols) prints as `record`, as Java's does.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;

/// Why a schema has no canonical form (it is not a valid Avro schema).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("schema is not json: {0}")]
    Json(String),
    #[error("{0} is not a schema")]
    NotASchema(String),
    #[error("a {kind} has no valid {attribute:?} attribute")]
    Missing {
        kind: &'static str,
        attribute: &'static str,
    },
    #[error("type {0:?} is used before it is defined, or never is")]
    UnknownName(String),
    #[error("type {0:?} is defined twice")]
    Redefined(String),
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String, CanonicalError> {
    let json: Value =
        serde_json::from_str(schema_json).map_err(|e| CanonicalError::Json(e.to_string()))?;
    parsing_canonical_form_of(&json)
}

/// The Parsing Canonical Form of a parsed JSON schema.
pub fn parsing_canonical_form_of(schema: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(1024);
    Canonical::default().write(schema, "", &mut out)?;
    Ok(out)
}

#[derive(Default)]
struct Canonical {
    defined: HashSet<String>,
}

impl Canonical {
    fn write(
        &mut self,
        schema: &Value,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalError> {
        match schema {
            Value::String(name) => self.write_name(name, namespace, out),
            Value::Array(branches) => {
                out.push('[');
                for (index, branch) in branches.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    self.write(branch, namespace, out)?;
                }
                out.push(']');
                Ok(())
            }
            Value::Object(attributes) => match attributes.get("type") {
                Some(Value::String(kind)) => match kind.as_str() {
                    "record" | "error" | "enum" | "fixed" => {
                        self.write_named(attributes, kind, namespace, out)
                    }
                    "array" => {
                        out.push_str(r#"{"type":"array","items":"#);
                        let items = attributes.get("items").ok_or(CanonicalError::Missing {
                            kind: "array",
                            attribute: "items",
                        })?;
                        self.write(items, namespace, out)?;
                        out.push('}');
                        Ok(())
                    }
                    "map" => {
                        out.push_str(r#"{"type":"map","values":"#);
                        let values = attributes.get("values").ok_or(CanonicalError::Missing {
                            kind: "map",
                            attribute: "values",
                        })?;
                        self.write(values, namespace, out)?;
                        out.push('}');
                        Ok(())
                    }
                    // [PRIMITIVES] (every other attribute, logicalType included, is stripped)
                    // or a reference in object form.
                    other => self.write_name(other, namespace, out),
                },
                // `{"type": <schema>}`: the inner schema.
                Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                    self.write(inner, namespace, out)
                }
                _ => Err(CanonicalError::NotASchema(schema.to_string())),
            },
            other => Err(CanonicalError::NotASchema(other.to_string())),
        }
    }

    /// A primitive or a reference to a defined named type.
    fn write_name(
        &self,
        name: &str,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalError> {
        if PRIMITIVES.contains(&name) {
            push_string(out, name);
            return Ok(());
        }
        let qualified = qualify(name, namespace);
        if self.defined.contains(&qualified) {
            push_string(out, &qualified);
        } else if self.defined.contains(name) {
            // A type of the null namespace referenced from inside a namespace (Java and fastavro
            // accept it).
            push_string(out, name);
        } else {
            return Err(CanonicalError::UnknownName(qualified));
        }
        Ok(())
    }

    fn write_named(
        &mut self,
        attributes: &serde_json::Map<String, Value>,
        kind: &str,
        enclosing: &str,
        out: &mut String,
    ) -> Result<(), CanonicalError> {
        let kind: &'static str = match kind {
            "enum" => "enum",
            "fixed" => "fixed",
            _ => "record",
        };
        let name = attributes
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(CanonicalError::Missing {
                kind,
                attribute: "name",
            })?;
        let fullname = if name.contains('.') {
            name.to_owned()
        } else {
            let namespace = match attributes.get("namespace") {
                Some(Value::String(namespace)) => namespace.as_str(),
                Some(Value::Null) => "",
                _ => enclosing,
            };
            qualify(name, namespace)
        };
        if !self.defined.insert(fullname.clone()) {
            return Err(CanonicalError::Redefined(fullname));
        }
        let own_namespace = fullname
            .rsplit_once('.')
            .map_or("", |(ns, _)| ns)
            .to_owned();
        out.push_str(r#"{"name":"#);
        push_string(out, &fullname);
        let _ = write!(out, r#","type":"{kind}""#);
        match kind {
            "enum" => {
                let symbols = attributes.get("symbols").and_then(Value::as_array).ok_or(
                    CanonicalError::Missing {
                        kind,
                        attribute: "symbols",
                    },
                )?;
                out.push_str(r#","symbols":["#);
                for (index, symbol) in symbols.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    let symbol = symbol.as_str().ok_or(CanonicalError::Missing {
                        kind,
                        attribute: "symbols",
                    })?;
                    push_string(out, symbol);
                }
                out.push(']');
            }
            "fixed" => {
                // [INTEGERS]: a size may be quoted or carry leading zeros in the source.
                let size = match attributes.get("size") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or(CanonicalError::Missing {
                    kind,
                    attribute: "size",
                })?;
                let _ = write!(out, r#","size":{size}"#);
            }
            _ => {
                let fields = attributes.get("fields").and_then(Value::as_array).ok_or(
                    CanonicalError::Missing {
                        kind,
                        attribute: "fields",
                    },
                )?;
                out.push_str(r#","fields":["#);
                for (index, field) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    let field_name = field.get("name").and_then(Value::as_str).ok_or(
                        CanonicalError::Missing {
                            kind: "field",
                            attribute: "name",
                        },
                    )?;
                    let field_type = field.get("type").ok_or(CanonicalError::Missing {
                        kind: "field",
                        attribute: "type",
                    })?;
                    out.push_str(r#"{"name":"#);
                    push_string(out, field_name);
                    out.push_str(r#","type":"#);
                    self.write(field_type, &own_namespace, out)?;
                    out.push('}');
                }
                out.push(']');
            }
        }
        out.push('}');
        Ok(())
    }
}

fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// A JSON string literal; [STRINGS]: serde_json escapes only quotes, backslashes and control
/// characters (never a non-ASCII character), and Avro names and symbols have none of them.
fn push_string(out: &mut String, text: &str) {
    out.push_str(&Value::String(text.to_owned()).to_string());
}

/// The CRC-64-AVRO fingerprint (the specification's `fingerprint64`).
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let mut fingerprint = EMPTY;
    for byte in bytes {
        fingerprint =
            (fingerprint >> 8) ^ TABLE[((fingerprint ^ u64::from(*byte)) & 0xff) as usize];
    }
    fingerprint
}

/// The fingerprint as the single-object encoding carries it: CRC-64-AVRO, little-endian.
pub fn fingerprint(parsing_canonical_form: &str) -> [u8; 8] {
    crc64_avro(parsing_canonical_form.as_bytes()).to_le_bytes()
}

/// Lower-case hex of fingerprint bytes in their wire order (as fastavro prints them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn pcf(schema: &str) -> String {
        parsing_canonical_form(schema).unwrap()
    }

    #[test]
    fn primitives_and_logical_types_reduce_to_the_bare_name() {
        assert_eq!(pcf(r#""int""#), r#""int""#);
        assert_eq!(pcf(r#"{"type":"int"}"#), r#""int""#);
        assert_eq!(
            pcf(r#"{"type":"long","logicalType":"timestamp-micros"}"#),
            r#""long""#
        );
        assert_eq!(
            pcf(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#),
            r#""bytes""#
        );
    }

    #[test]
    fn named_types_get_fullnames_in_canonical_order_and_references_print_the_name() {
        let schema = r#"{
            "doc": "ignored", "fields": [
                {"type": {"type": "enum", "symbols": ["A", "B"], "name": "Kind", "aliases": ["x"]}, "name": "kind", "default": "A"},
                {"name": "again", "type": "Kind"},
                {"name": "hash", "type": {"type": "fixed", "name": "other.Hash", "size": "016"}},
                {"name": "hash2", "type": "other.Hash"},
                {"name": "tags", "type": {"type": "array", "items": {"type": "map", "values": "string"}}},
                {"name": "next", "type": ["null", "Node"], "order": "ignore"}
            ],
            "type": "record", "namespace": "n.s", "name": "Node"
        }"#;
        assert_eq!(
            pcf(schema),
            r#"{"name":"n.s.Node","type":"record","fields":[{"name":"kind","type":{"name":"n.s.Kind","type":"enum","symbols":["A","B"]}},{"name":"again","type":"n.s.Kind"},{"name":"hash","type":{"name":"other.Hash","type":"fixed","size":16}},{"name":"hash2","type":"other.Hash"},{"name":"tags","type":{"type":"array","items":{"type":"map","values":"string"}}},{"name":"next","type":["null","n.s.Node"]}]}"#
        );
    }

    #[test]
    fn a_nested_type_takes_the_namespace_of_its_enclosing_type_unless_it_names_its_own() {
        let schema = r#"{"type":"record","name":"a.b.Outer","namespace":"ignored","fields":[
            {"name":"x","type":{"type":"record","name":"Inner","fields":[]}},
            {"name":"y","type":{"type":"record","name":"Other","namespace":"c","fields":[
                {"name":"z","type":{"type":"record","name":"Deep","fields":[]}}]}},
            {"name":"w","type":{"type":"record","name":"Root","namespace":"","fields":[]}}
        ]}"#;
        assert_eq!(
            pcf(schema),
            r#"{"name":"a.b.Outer","type":"record","fields":[{"name":"x","type":{"name":"a.b.Inner","type":"record","fields":[]}},{"name":"y","type":{"name":"c.Other","type":"record","fields":[{"name":"z","type":{"name":"c.Deep","type":"record","fields":[]}}]}},{"name":"w","type":{"name":"Root","type":"record","fields":[]}}]}"#
        );
    }

    #[test]
    fn invalid_schemas_are_named_errors() {
        assert!(matches!(
            parsing_canonical_form("{"),
            Err(CanonicalError::Json(_))
        ));
        assert_eq!(
            parsing_canonical_form(
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}"#
            ),
            Err(CanonicalError::UnknownName("Missing".into()))
        );
        assert_eq!(
            parsing_canonical_form(
                r#"["int", {"type":"fixed","name":"F","size":1}, {"type":"fixed","name":"F","size":2}]"#
            ),
            Err(CanonicalError::Redefined("F".into()))
        );
        assert!(matches!(
            parsing_canonical_form(r#"{"type":"array"}"#),
            Err(CanonicalError::Missing { .. })
        ));
        assert!(matches!(
            parsing_canonical_form("42"),
            Err(CanonicalError::NotASchema(_))
        ));
    }

    #[test]
    fn crc64_avro_matches_the_specification() {
        // Values from the Avro specification's reference implementation (Java's
        // SchemaNormalization.parsingFingerprint64) for primitive schemas, as published in
        // Apache Avro's test data (share/test/data/schema-tests.txt).
        assert_eq!(crc64_avro(br#""int""#) as i64, 8247732601305521295);
        assert_eq!(crc64_avro(br#""null""#) as i64, 7195948357588979594);
        assert_eq!(crc64_avro(br#""string""#) as i64, -8142146995180207161);
        assert_eq!(crc64_avro(b""), EMPTY);
    }
}
