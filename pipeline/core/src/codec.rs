//! Avro on the wire: how every Hunter record is framed in a Kafka message value.
//!
//! - No Schema Registry configured (the local default): the Avro single-object encoding
//!   (`C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint little-endian, then the body), so
//!   every record names its schema without a server.
//! - A Confluent-compatible registry configured: Confluent framing (`00`, the 4-byte
//!   big-endian schema id, then the body). The schema is registered under the topic's
//!   `<topic>-value` subject through `schema_registry_converter`, which caches ids.
//!
//! Readers accept both framings whatever the writer side is configured for. Bodies are written
//! and read through apache-avro's schema-aware serde path (no intermediate `Value`), the fastest
//! path measured here. A body written with another schema version is read by field name: a
//! field the writer lacks takes its serde default, a field the reader lacks is skipped.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::records::Record;

/// The two magic bytes of the Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// The magic byte of Confluent framing.
pub const CONFLUENT_MAGIC: u8 = 0x00;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record is too short for its framing ({0} bytes)")]
    Truncated(usize),
    #[error(
        "unknown framing: first byte {0:#04x} is neither single-object (0xc3 0x01) nor confluent (0x00)"
    )]
    UnknownFraming(u8),
    #[error("single-object record written with unknown schema fingerprint {0}")]
    UnknownFingerprint(String),
    #[error("confluent-framed record (schema id {0}) but no schema registry is configured")]
    NoRegistry(u32),
    #[error("schema registry: {message}")]
    Registry { message: String, retryable: bool },
    #[error("avro body does not match schema {schema}: {message}")]
    Body {
        schema: &'static str,
        message: String,
    },
}

impl CodecError {
    /// A registry outage is worth waiting for; a bad record is not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CodecError::Registry {
                retryable: true,
                ..
            }
        )
    }
}

/// A connection to a Confluent-compatible Schema Registry, shared by every codec.
pub struct Registry {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Registry {
    pub fn new(url: &str) -> Self {
        let settings = SrSettings::new(url.trim_end_matches('/').to_owned());
        Registry {
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
        }
    }
}

/// Reads and writes one record type `T` for one topic.
pub struct Codec<T: Record> {
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    fingerprint: [u8; 8],
    registry: Option<Arc<Registry>>,
    subject: String,
    /// Registry schema ids already seen: `true` when the id's schema is ours, so the fast
    /// reader can be used.
    known_ids: Mutex<HashMap<u32, bool>>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Record> Codec<T> {
    /// A codec for `topic`; with a registry it writes Confluent framing, else single-object.
    pub fn new(topic: &str, registry: Option<Arc<Registry>>) -> Self {
        let schema = T::schema();
        let writer = GenericDatumWriter::builder(schema)
            .human_readable(false)
            .build()
            .expect("a parsed contract schema resolves");
        let reader = GenericDatumReader::builder(schema)
            .human_readable(false)
            .build()
            .expect("a parsed contract schema resolves");
        Codec {
            writer,
            reader,
            fingerprint: fingerprint(schema),
            registry,
            subject: format!("{topic}-value"),
            known_ids: Mutex::new(HashMap::new()),
            _record: PhantomData,
        }
    }

    /// Writes `value` in the configured framing.
    pub async fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        match &self.registry {
            None => self.encode_single_object(value),
            Some(registry) => {
                let id = self.registered_id(registry).await?;
                let mut out = Vec::with_capacity(256);
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
                self.write_body(value, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Writes `value` in the single-object encoding (no registry needed).
    pub fn encode_single_object(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(&self.fingerprint);
        self.write_body(value, &mut out)?;
        Ok(out)
    }

    fn write_body(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.writer
            .write_ser(out, value)
            .map(|_| ())
            .map_err(|error| CodecError::Body {
                schema: T::FULL_NAME,
                message: error.to_string(),
            })
    }

    /// Reads a record in either framing.
    pub async fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match bytes {
            [] => Err(CodecError::Empty),
            [0xC3, 0x01, rest @ ..] => {
                if rest.len() < 8 {
                    return Err(CodecError::Truncated(bytes.len()));
                }
                let (fingerprint, mut body) = rest.split_at(8);
                if fingerprint != self.fingerprint {
                    return Err(CodecError::UnknownFingerprint(hex(fingerprint)));
                }
                self.read_body(&self.reader, &mut body)
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                if rest.len() < 4 {
                    return Err(CodecError::Truncated(bytes.len()));
                }
                let (id, mut body) = rest.split_at(4);
                let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                let Some(registry) = &self.registry else {
                    return Err(CodecError::NoRegistry(id));
                };
                let known = self.known_ids.lock().expect("poisoned").get(&id).copied();
                let ours = match known {
                    Some(ours) => ours,
                    None => {
                        let writer_schema = self.registry_schema(registry, id).await?;
                        let ours =
                            writer_schema.parsed.canonical_form() == T::schema().canonical_form();
                        self.known_ids.lock().expect("poisoned").insert(id, ours);
                        ours
                    }
                };
                if ours {
                    self.read_body(&self.reader, &mut body)
                } else {
                    // Another version of the contract: read by field names with its own schema.
                    let writer_schema = self.registry_schema(registry, id).await?;
                    let reader = GenericDatumReader::builder(&writer_schema.parsed)
                        .human_readable(false)
                        .build()
                        .map_err(|error| CodecError::Registry {
                            message: format!("schema id {id} does not resolve: {error}"),
                            retryable: false,
                        })?;
                    self.read_body(&reader, &mut body)
                }
            }
            [other, ..] => Err(CodecError::UnknownFraming(*other)),
        }
    }

    fn read_body(
        &self,
        reader: &GenericDatumReader<'_>,
        body: &mut &[u8],
    ) -> Result<T, CodecError> {
        reader.read_deser(body).map_err(|error| CodecError::Body {
            schema: T::FULL_NAME,
            message: error.to_string(),
        })
    }

    async fn registered_id(&self, registry: &Registry) -> Result<u32, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            self.subject.trim_end_matches("-value").to_owned(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, T::SCHEMA_TEXT.to_owned()),
        );
        let registered = registry
            .encoder
            .get_schema_and_id(&self.subject, strategy)
            .await
            .map_err(registry_error)?;
        Ok(registered.id)
    }

    async fn registry_schema(
        &self,
        registry: &Registry,
        id: u32,
    ) -> Result<Arc<AvroSchema>, CodecError> {
        registry
            .decoder
            .get_schema(id)
            .await
            .map_err(registry_error)
    }
}

fn registry_error(error: schema_registry_converter::error::SRCError) -> CodecError {
    CodecError::Registry {
        retryable: error.retriable,
        message: match &error.cause {
            Some(cause) => format!("{}: {cause}", error.error),
            None => error.error.clone(),
        },
    }
}

/// CRC-64-AVRO (Rabin) fingerprint of the schema's parsing canonical form, little-endian as
/// the single-object encoding wants it.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Command, Timestamp};

    fn command() -> Command {
        Command {
            command_id: "c-1".into(),
            kind: Command::SYNC_NOW.into(),
            tenant: None,
            requested_at: Timestamp(42),
        }
    }

    #[tokio::test]
    async fn single_object_round_trip_and_header() {
        let codec = Codec::<Command>::new("hunter.commands.v1", None);
        let bytes = codec.encode(&command()).await.unwrap();
        assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
        assert_eq!(codec.decode(&bytes).await.unwrap(), command());
    }

    #[test]
    fn header_matches_apache_avro_single_object_writer() {
        // apache-avro's own single-object writer is the reference for the header bytes.
        let value = apache_avro::to_value(command()).unwrap();
        let mut reference = Vec::new();
        let mut writer =
            apache_avro::GenericSingleObjectWriter::new_with_capacity(Command::schema(), 64)
                .unwrap();
        writer.write_value(value, &mut reference).unwrap();
        let ours = Codec::<Command>::new("t", None)
            .encode_single_object(&command())
            .unwrap();
        assert_eq!(&ours[..10], &reference[..10], "magic and fingerprint");
        assert_eq!(ours, reference, "whole record");
    }

    /// A stand-in for a Confluent Schema Registry: the REST subset schema_registry_converter
    /// uses (register under a subject, latest by subject, schema by id).
    async fn registry_stand_in() -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        use axum::{Json, Router};
        type Schemas = std::sync::Arc<Mutex<Vec<String>>>;
        let schemas: Schemas = Default::default();
        let register = |State(schemas): State<Schemas>, Json(body): Json<serde_json::Value>| async move {
            let text = body["schema"].as_str().unwrap().to_owned();
            let mut all = schemas.lock().unwrap();
            let id = match all.iter().position(|s| *s == text) {
                Some(index) => index + 1,
                None => {
                    all.push(text);
                    all.len()
                }
            };
            Json(serde_json::json!({ "id": id }))
        };
        let by_id = |State(schemas): State<Schemas>, Path(id): Path<usize>| async move {
            let all = schemas.lock().unwrap();
            Json(serde_json::json!({ "schema": all[id - 1] }))
        };
        let latest = |State(schemas): State<Schemas>, Path(subject): Path<String>| async move {
            let all = schemas.lock().unwrap();
            Json(
                serde_json::json!({ "subject": subject, "version": all.len(), "id": all.len(), "schema": all.last().unwrap() }),
            )
        };
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/subjects/{subject}/versions/latest", get(latest))
            .route("/schemas/ids/{id}", get(by_id))
            .with_state(schemas.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), schemas)
    }

    #[tokio::test]
    async fn confluent_framing_through_a_registry_and_readers_accept_both() {
        let (url, schemas) = registry_stand_in().await;
        let registry = Some(Arc::new(Registry::new(&url)));
        let confluent = Codec::<Command>::new("hunter.commands.v1", registry.clone());
        let bytes = confluent.encode(&command()).await.unwrap();
        assert_eq!(bytes[0], CONFLUENT_MAGIC);
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        assert_eq!(id, 1, "registered under the topic's subject");
        assert_eq!(schemas.lock().unwrap().len(), 1);
        assert_eq!(confluent.decode(&bytes).await.unwrap(), command());
        // A reader configured with a registry reads single-object records too.
        let single = Codec::<Command>::new("t", None)
            .encode_single_object(&command())
            .unwrap();
        assert_eq!(confluent.decode(&single).await.unwrap(), command());
        // The body after the 5-byte header is the same Avro body as after the 10-byte one.
        assert_eq!(&bytes[5..], &single[10..]);
    }

    #[tokio::test]
    async fn bad_bytes_are_named_errors() {
        let codec = Codec::<Command>::new("t", None);
        assert!(matches!(codec.decode(&[]).await, Err(CodecError::Empty)));
        assert!(matches!(
            codec.decode(&[0x7b, 0x22]).await,
            Err(CodecError::UnknownFraming(0x7b))
        ));
        assert!(matches!(
            codec.decode(&[0xC3, 0x01, 1]).await,
            Err(CodecError::Truncated(3))
        ));
        assert!(matches!(
            codec.decode(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]).await,
            Err(CodecError::UnknownFingerprint(_))
        ));
        assert!(matches!(
            codec.decode(&[0, 0, 0, 0, 7, 2]).await,
            Err(CodecError::NoRegistry(7))
        ));
        let mut good = codec.encode_single_object(&command()).unwrap();
        good.truncate(good.len() - 3);
        assert!(matches!(
            codec.decode(&good).await,
            Err(CodecError::Body { .. })
        ));
    }
}
