//! A client for a Confluent-compatible Schema Registry: the REST subset Hunter uses.
//!
//! - `POST /subjects/{subject}/versions` registers a schema (the id of an identical one if it
//!   is there already); `409` means the subject's compatibility level refused it;
//! - `GET /schemas/ids/{id}` gives the writer schema of a Confluent-framed record;
//! - `PUT /config/{subject}` sets a subject's compatibility level (`hunter migrate`);
//! - `GET /subjects` answers when the registry is up and the credentials are good.
//!
//! Basic auth (`HUNTER_SCHEMA_REGISTRY_USERNAME`, `HUNTER_SCHEMA_REGISTRY_PASSWORD`: Confluent
//! Cloud's API key and secret) goes with every request; HTTPS trusts the system's CAs plus those
//! in `HUNTER_SCHEMA_REGISTRY_CA_LOCATION`.
//!
//! Failure modes, as [`CodecError`]s that know what the caller should do:
//! - unreachable, timed out, `408`, `429`, `5xx`: retryable; a stage pauses and retries, it
//!   never dead-letters a record because the registry is away;
//! - `401`/`403` and an untrusted certificate: fatal; the role stops with the setting named
//!   (retrying cannot help, and every record would fail the same way);
//! - anything else (`404` for an unknown schema id, `422` for an invalid schema): the record's
//!   or the schema's fault, not retryable.
//!
//! Schemas by id are cached for the life of the process (a registry never changes an id's
//! schema); errors are not.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::codec::CodecError;
use crate::config::SchemaRegistrySettings;

/// Per request; a registry that takes longer is treated as unreachable (retryable).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A connection to a Confluent-compatible Schema Registry, shared by every codec.
pub struct Registry {
    client: reqwest::Client,
    base: Url,
    credentials: Option<(String, crate::config::Secret)>,
    schemas: Mutex<HashMap<u32, Arc<str>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base.as_str())
            .field("authenticated", &self.credentials.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct RegistryErrorBody {
    message: Option<String>,
}

impl Registry {
    /// A client for the registry at `url`. Fails when the CA file cannot be read or holds no
    /// certificate, naming the setting.
    pub fn new(url: &Url, settings: &SchemaRegistrySettings) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("hunter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_location {
            for certificate in read_ca(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("schema registry http client: {e}"))?;
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        };
        Ok(Registry {
            client,
            base,
            credentials,
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's address (no credentials in it), for messages.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) url has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password.expose())),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, CodecError> {
        match self.exchange(request, what).await? {
            Ok(response) => Ok(response),
            Err((status, detail)) => Err(self.refusal(status, &detail, what)),
        }
    }

    /// Sends `request`: `Err` without an HTTP answer, `Ok(Err((status, detail)))` for an answer
    /// that is not a success.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Result<reqwest::Response, (u16, String)>, CodecError> {
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&error, what, self.url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(response));
        }
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<RegistryErrorBody>(&text)
            .ok()
            .and_then(|b| b.message)
            .unwrap_or_else(|| text.chars().take(200).collect());
        Ok(Err((status.as_u16(), detail)))
    }

    fn refusal(&self, status: u16, detail: &str, what: &str) -> CodecError {
        match status {
            401 | 403 => CodecError::RegistryAuth { status },
            408 | 429 | 500..=599 => CodecError::Registry {
                message: format!("{what}: status {status} from {} ({detail})", self.url()),
                retryable: true,
            },
            _ => CodecError::Registry {
                message: format!("{what}: status {status} ({detail})"),
                retryable: false,
            },
        }
    }

    /// Registers `schema` under `subject` (or finds it there); returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let body = serde_json::json!({ "schema": schema });
        let request = self
            .request(
                reqwest::Method::POST,
                self.endpoint(&["subjects", subject, "versions"]),
            )
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string());
        let what = format!("registering the schema under {subject}");
        match self.exchange(request, &what).await? {
            Ok(response) => response
                .json::<Registered>()
                .await
                .map(|r| r.id)
                .map_err(|e| CodecError::Registry {
                    message: format!("{what}: unreadable answer: {e}"),
                    retryable: false,
                }),
            Err((409, detail)) => Err(CodecError::Incompatible {
                subject: subject.to_owned(),
                message: detail,
            }),
            Err((status, detail)) => Err(self.refusal(status, &detail, &what)),
        }
    }

    /// The schema text of `id` (cached once found).
    pub async fn schema(&self, id: u32) -> Result<Arc<str>, CodecError> {
        if let Some(found) = self
            .schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(found.clone());
        }
        let what = format!("schema id {id}");
        let response = self
            .send(
                self.request(
                    reqwest::Method::GET,
                    self.endpoint(&["schemas", "ids", &id.to_string()]),
                ),
                &what,
            )
            .await?;
        let found: SchemaById = response.json().await.map_err(|e| CodecError::Registry {
            message: format!("{what}: unreadable answer: {e}"),
            retryable: false,
        })?;
        if let Some(kind) = found
            .schema_type
            .filter(|t| !t.eq_ignore_ascii_case("AVRO"))
        {
            return Err(CodecError::Registry {
                message: format!("{what} is a {kind} schema, not Avro"),
                retryable: false,
            });
        }
        let schema: Arc<str> = found.schema.into();
        self.schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// Sets `subject`'s compatibility level (`FULL_TRANSITIVE`, …).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), CodecError> {
        let body = serde_json::json!({ "compatibility": level });
        let request = self
            .request(reqwest::Method::PUT, self.endpoint(&["config", subject]))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string());
        self.send(
            request,
            &format!("setting {subject}'s compatibility to {level}"),
        )
        .await
        .map(|_| ())
    }

    /// Answers when the registry is up and takes the credentials.
    pub async fn check(&self) -> Result<(), CodecError> {
        self.send(
            self.request(reqwest::Method::GET, self.endpoint(&["subjects"])),
            "listing subjects",
        )
        .await
        .map(|_| ())
    }
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let setting = "HUNTER_SCHEMA_REGISTRY_CA_LOCATION";
    let pem = std::fs::read(path)
        .map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{setting}: {} is not PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting}: {} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// A request that got no HTTP answer: a TLS trust failure is fatal (it names the CA setting),
/// anything else (refused, reset, timed out) is an outage worth waiting for.
fn transport_error(error: &reqwest::Error, what: &str, url: &str) -> CodecError {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
        return CodecError::RegistryTls { message: chain };
    }
    CodecError::Registry {
        message: format!("{what}: {url} unreachable: {chain}"),
        retryable: true,
    }
}
