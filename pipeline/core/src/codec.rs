//! Avro on the wire: how every Hunter record is framed in a Kafka message value.
//!
//! - No Schema Registry configured (the local default): the Avro single-object encoding
//!   (`C3 01`, the writer schema's 8-byte CRC-64-AVRO fingerprint little-endian, then the body),
//!   so every record names its schema without a server. The fingerprint is the specification's
//!   ([`crate::contracts::canonical`]), the one Java's `SchemaNormalization` and fastavro compute.
//! - A Confluent-compatible registry configured: Confluent framing (`00`, the 4-byte
//!   big-endian schema id, then the body). The schema is registered under the topic's
//!   `<topic>-value` subject ([`crate::registry`]).
//!
//! Readers accept both framings whatever the writer side is configured for, and every released
//! version of the contract:
//! - a record of the current version (its spec fingerprint, its legacy apache-avro fingerprint,
//!   or a registry schema with the same canonical form) is read by serde_avro_fast straight
//!   into the Rust type (no `Value` tree; about 1.3 times apache-avro's serde path on a
//!   referral, 1.5 times on a lead: BENCHMARKS.md), or into a part of it
//!   ([`Codec::decode_as`]: the fields a stage does not read are skipped, not allocated);
//!   apache-avro writes every record and resolves the older versions;
//! - a record of an earlier version (by either fingerprint, see [`crate::contracts::history`])
//!   or of another registry schema is read with its writer schema and resolved into the
//!   current one (Avro schema resolution: reader defaults for fields the writer lacked, writer
//!   fields the reader lacks skipped, promotions), then deserialized;
//! - an unknown fingerprint is [`CodecError::UnknownFingerprint`]: the record goes to the
//!   dead-letter topic.
//!
//! Errors know what a stage should do with them: [`CodecError::is_retryable`] (the registry is
//! away: pause and retry, never dead-letter), [`CodecError::is_fatal`] (the registry refuses the
//! credentials or its certificate: stop the role with the setting named), anything else is the
//! record's fault (dead-letter it). [`Codec::decode_patiently`] and [`Codec::encode_patiently`]
//! do the waiting.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;

pub use crate::registry::Registry;

use crate::contracts::{self, Released, canonical};
use crate::records::Record;
use crate::shutdown::Shutdown;

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
    #[error(
        "single-object record written with unknown schema fingerprint {0} (not a released version of this contract)"
    )]
    UnknownFingerprint(String),
    #[error("confluent-framed record (schema id {0}) but no schema registry is configured")]
    NoRegistry(u32),
    #[error("schema registry: {message}")]
    Registry { message: String, retryable: bool },
    #[error(
        "the schema registry refused hunter's credentials (http {status}): check HUNTER_SCHEMA_REGISTRY_USERNAME and HUNTER_SCHEMA_REGISTRY_PASSWORD"
    )]
    RegistryAuth { status: u16 },
    #[error(
        "the schema registry's tls certificate is not trusted ({message}): set HUNTER_SCHEMA_REGISTRY_CA_LOCATION to the CA's PEM file"
    )]
    RegistryTls { message: String },
    #[error(
        "the schema registry refused the schema for subject {subject} as incompatible with the versions registered before (409: {message}); a contract may only change compatibly, see docs/contracts.md"
    )]
    Incompatible { subject: String, message: String },
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

    /// Nothing a stage does can help (wrong credentials, an untrusted certificate): stop the
    /// role with this error rather than fail every record one by one.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            CodecError::RegistryAuth { .. } | CodecError::RegistryTls { .. }
        )
    }
}

/// Reads records of another schema version: the writer's schema resolved into ours.
struct Resolver {
    reader: GenericDatumReader<'static>,
    /// `lead 0002`, or `registry schema id 7`.
    label: String,
}

impl Resolver {
    fn new<T: Record>(writer: &'static Schema, label: String) -> Result<Self, String> {
        let reader = GenericDatumReader::builder(writer)
            .reader_schema(T::schema())
            .human_readable(false)
            .build()
            .map_err(|e| format!("{label} does not resolve: {e}"))?;
        Ok(Resolver { reader, label })
    }

    fn read<T: Record>(&self, body: &mut &[u8]) -> Result<T, CodecError> {
        let error = |message: String| CodecError::Body {
            schema: T::FULL_NAME,
            message: format!("written with {}: {message}", self.label),
        };
        let value = self
            .reader
            .read_value(body)
            .map_err(|e| error(e.to_string()))?;
        apache_avro::from_value::<T>(&value).map_err(|e| error(e.to_string()))
    }
}

/// How to read a record of one registry schema id.
#[derive(Clone)]
enum ById {
    Current,
    Other(Arc<Resolver>),
}

/// Reads and writes one record type `T` for one topic.
pub struct Codec<T: Record> {
    writer: GenericDatumWriter<'static>,
    /// The current version as serde_avro_fast reads it.
    fast: serde_avro_fast::Schema,
    /// The spec fingerprint of the current version: what this codec writes.
    fingerprint: [u8; 8],
    /// Fingerprints read by the fast path: the current version's spec and legacy ones.
    current: Vec<[u8; 8]>,
    /// Earlier versions by spec and legacy fingerprint.
    older: HashMap<[u8; 8], Arc<Resolver>>,
    /// The current version's canonical form, to recognise it among registry schemas.
    canonical: String,
    history: &'static [Released],
    registry: Option<Arc<Registry>>,
    subject: String,
    registered: tokio::sync::OnceCell<u32>,
    by_id: Mutex<HashMap<u32, ById>>,
    _record: PhantomData<fn() -> T>,
}

impl<T: Record> Codec<T> {
    /// A codec for `topic`; with a registry it writes Confluent framing, else single-object.
    pub fn new(topic: &str, registry: Option<Arc<Registry>>) -> Self {
        Self::with_history(topic, registry, contracts::history(T::CONTRACT))
    }

    /// A codec that knows the given history (released versions of `T`'s contract).
    pub(crate) fn with_history(
        topic: &str,
        registry: Option<Arc<Registry>>,
        history: &'static [Released],
    ) -> Self {
        let schema = T::schema();
        let writer = GenericDatumWriter::builder(schema)
            .human_readable(false)
            .build()
            .expect("a parsed contract schema resolves");
        // The current version is the .avsc compiled in; the history's newest version equals
        // it (a test makes sure), and its legacy fingerprint reads on the fast path too.
        let form = canonical::parsing_canonical_form(T::SCHEMA_TEXT)
            .expect("a contract has a canonical form (tested)");
        let fingerprint = canonical::fingerprint(&form);
        let mut current = vec![fingerprint];
        let mut older = HashMap::new();
        for version in history {
            if version.canonical == form {
                current.extend(version.legacy_fingerprint);
                continue;
            }
            let resolver = Arc::new(
                Resolver::new::<T>(&version.schema, version.label())
                    .expect("released versions resolve (tested)"),
            );
            for fingerprint in
                std::iter::once(version.fingerprint).chain(version.legacy_fingerprint)
            {
                older.insert(fingerprint, resolver.clone());
            }
        }
        Codec {
            writer,
            fast: T::SCHEMA_TEXT
                .parse()
                .expect("serde_avro_fast parses the contract"),
            fingerprint,
            current,
            older,
            canonical: form,
            history,
            registry,
            subject: format!("{topic}-value"),
            registered: tokio::sync::OnceCell::new(),
            by_id: Mutex::new(HashMap::new()),
            _record: PhantomData,
        }
    }

    /// The spec fingerprint this codec writes in single-object records.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// The registry subject of this codec's topic.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Writes `value` in the configured framing.
    pub async fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        match &self.registry {
            None => self.encode_single_object(value),
            Some(registry) => {
                let id = *self
                    .registered
                    .get_or_try_init(|| registry.register(&self.subject, T::SCHEMA_TEXT))
                    .await?;
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

    /// Reads a record in either framing, of any released version.
    pub async fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        self.decode_as::<T>(bytes).await
    }

    /// Reads only part of a record: `P` is a struct with some of `T`'s fields, under the same
    /// serde names. A record of the current version is read straight into `P` (the fields `P`
    /// lacks are skipped over, never allocated); one of an earlier version is resolved into
    /// `T` first and converted. What a stage that needs a few fields of a large record reads.
    pub async fn decode_as<P>(&self, bytes: &[u8]) -> Result<P, CodecError>
    where
        P: serde::de::DeserializeOwned + From<T>,
    {
        let (how, mut body) = self.locate(bytes).await?;
        match how {
            ById::Current => self.read_current(body),
            ById::Other(resolver) => resolver.read::<T>(&mut body).map(P::from),
        }
    }

    /// The body of a record in either framing, and how to read it.
    async fn locate<'b>(&self, bytes: &'b [u8]) -> Result<(ById, &'b [u8]), CodecError> {
        match bytes {
            [] => Err(CodecError::Empty),
            [0xC3, 0x01, rest @ ..] => {
                if rest.len() < 8 {
                    return Err(CodecError::Truncated(bytes.len()));
                }
                let (fingerprint, body) = rest.split_at(8);
                if self.current.iter().any(|f| f == fingerprint) {
                    return Ok((ById::Current, body));
                }
                match self.older.get(fingerprint) {
                    Some(resolver) => Ok((ById::Other(resolver.clone()), body)),
                    None => Err(CodecError::UnknownFingerprint(canonical::hex(fingerprint))),
                }
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                if rest.len() < 4 {
                    return Err(CodecError::Truncated(bytes.len()));
                }
                let (id, body) = rest.split_at(4);
                let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                let Some(registry) = &self.registry else {
                    return Err(CodecError::NoRegistry(id));
                };
                Ok((self.by_id(registry, id).await?, body))
            }
            [other, ..] => Err(CodecError::UnknownFraming(*other)),
        }
    }

    /// [`Codec::decode`], waiting out a registry outage: a retryable error is retried with
    /// backoff (0.2 s doubling to 10 s) until it passes or `shutdown` fires, then returned.
    /// Every other error returns at once. `stage` names the waiting stage in the log.
    pub async fn decode_patiently(
        &self,
        bytes: &[u8],
        shutdown: &mut Shutdown,
        stage: &'static str,
    ) -> Result<T, CodecError> {
        self.decode_as_patiently::<T>(bytes, shutdown, stage).await
    }

    /// [`Codec::decode_as`], waiting out a registry outage like [`Codec::decode_patiently`].
    pub async fn decode_as_patiently<P>(
        &self,
        bytes: &[u8],
        shutdown: &mut Shutdown,
        stage: &'static str,
    ) -> Result<P, CodecError>
    where
        P: serde::de::DeserializeOwned + From<T>,
    {
        let mut attempt = 0u32;
        loop {
            match self.decode_as::<P>(bytes).await {
                Err(error) if error.is_retryable() => {
                    if !wait_to_retry(&error, attempt, shutdown, stage, "decode").await {
                        return Err(error);
                    }
                    attempt += 1;
                }
                other => {
                    if attempt > 0 && other.is_ok() {
                        tracing::info!(
                            stage,
                            attempts = attempt + 1,
                            "schema registry is back; decoding goes on"
                        );
                    }
                    return other;
                }
            }
        }
    }

    /// [`Codec::encode`], waiting out a registry outage like [`Codec::decode_patiently`].
    pub async fn encode_patiently(
        &self,
        value: &T,
        shutdown: &mut Shutdown,
        stage: &'static str,
    ) -> Result<Vec<u8>, CodecError> {
        let mut attempt = 0u32;
        loop {
            match self.encode(value).await {
                Err(error) if error.is_retryable() => {
                    if !wait_to_retry(&error, attempt, shutdown, stage, "encode").await {
                        return Err(error);
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A body of the current version, read by serde_avro_fast straight into `P` (no `Value`
    /// tree; fields `P` does not have are skipped).
    fn read_current<'b, P: serde::Deserialize<'b>>(&self, body: &'b [u8]) -> Result<P, CodecError> {
        serde_avro_fast::from_datum_slice::<P>(body, &self.fast).map_err(|error| CodecError::Body {
            schema: T::FULL_NAME,
            message: error.to_string(),
        })
    }

    /// How to read records of registry schema `id` (asked once per id and process).
    async fn by_id(&self, registry: &Registry, id: u32) -> Result<ById, CodecError> {
        if let Some(known) = self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(known.clone());
        }
        let text = registry.schema(id).await?;
        let not_avro = |message: String| CodecError::Registry {
            message: format!("schema id {id}: {message}"),
            retryable: false,
        };
        let form = canonical::parsing_canonical_form(&text).map_err(|e| not_avro(e.to_string()))?;
        let how = if form == self.canonical {
            ById::Current
        } else {
            let label = format!("registry schema id {id}");
            let writer: &'static Schema = match self.history.iter().find(|v| v.canonical == form) {
                Some(version) => &version.schema,
                // Leaked once per distinct schema id a registry serves for this subject: a
                // handful over a deployment's life, and the readers built on it live as long.
                None => Box::leak(Box::new(
                    Schema::parse_str(&text).map_err(|e| not_avro(e.to_string()))?,
                )),
            };
            ById::Other(Arc::new(
                Resolver::new::<T>(writer, label).map_err(not_avro)?,
            ))
        };
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, how.clone());
        Ok(how)
    }
}

/// Logs a retryable registry error and waits before the next attempt; `false` once shutdown
/// fired (the caller gives up without losing the record: its offset is not stored).
async fn wait_to_retry(
    error: &CodecError,
    attempt: u32,
    shutdown: &mut Shutdown,
    stage: &'static str,
    what: &'static str,
) -> bool {
    if shutdown.is_triggered() {
        return false;
    }
    let wait = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(6))
        .min(Duration::from_secs(10));
    tracing::warn!(stage, %error, attempts = attempt + 1, retry_in = ?wait, "schema registry unavailable: {what} paused, retrying (the record is not dead-lettered)");
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// The single-object fingerprint of a schema text: the specification's CRC-64-AVRO of its
/// Parsing Canonical Form, little-endian.
pub fn fingerprint(schema_text: &str) -> Result<[u8; 8], canonical::CanonicalError> {
    canonical::parsing_canonical_form(schema_text).map(|form| canonical::fingerprint(&form))
}

#[cfg(test)]
mod tests;
