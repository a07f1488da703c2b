//! A Confluent Schema Registry stand-in for the end-to-end tests (no real registry installs
//! here: Confluent's is Java behind a Docker image, Karapace is not on PyPI). It implements the
//! REST subset Hunter and confluent-kafka's Python client use, and checks compatibility for
//! real:
//!
//! - `POST /subjects/{s}/versions` registers (same schema: same id; ids are global), after the
//!   subject's compatibility check (`BACKWARD`, `FORWARD`, `FULL`, their `_TRANSITIVE` forms,
//!   `NONE`; default `BACKWARD` as Confluent's), answering `409` when it fails;
//! - `POST /subjects/{s}` looks a schema up; `GET /subjects`, `GET /subjects/{s}/versions`,
//!   `GET /subjects/{s}/versions/{n|latest}`, `GET /schemas/ids/{id}`;
//! - `GET|PUT /config` and `/config/{s}`;
//! - basic auth when `HUNTER_TEST_REGISTRY_USER` and `HUNTER_TEST_REGISTRY_PASSWORD` are set:
//!   any other request is `401`.
//!
//! The compatibility check is Hunter's own (`hunter_core::contracts::compatibility`, Avro schema
//! resolution), so it proves Hunter reacts to a refusal, not that Confluent's rules agree.
//! State persists in the `--data` file, so the tests can stop and start the registry.
//!
//! `hunter-test-registry --listen 127.0.0.1:PORT --data FILE`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use hunter_core::contracts::{canonical, compatibility};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LEVELS: [&str; 7] = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
];

#[derive(Default, Serialize, Deserialize)]
struct Store {
    /// Schema texts; id = index + 1.
    schemas: Vec<String>,
    /// Subject → ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    /// Subject → compatibility level.
    config: BTreeMap<String, String>,
    global: Option<String>,
}

struct App {
    store: Mutex<Store>,
    data: PathBuf,
    auth: Option<String>,
}

type Shared = Arc<App>;

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message.into()})),
    )
        .into_response()
}

impl App {
    /// The 401 answer when basic auth is on and the request lacks the credentials.
    fn denied(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = self.auth.as_ref()?;
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        (given != expected).then(|| error(StatusCode::UNAUTHORIZED, 401, "Unauthorized"))
    }

    fn save(&self, store: &Store) {
        let tmp = self.data.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(store).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.data).unwrap();
    }
}

fn level(store: &Store, subject: &str) -> String {
    store
        .config
        .get(subject)
        .or(store.global.as_ref())
        .cloned()
        .unwrap_or_else(|| "BACKWARD".into())
}

/// Checks `new` against the subject's versions as `level` says; `Err` names the failure.
fn compatible(store: &Store, subject: &str, new: &str, level: &str) -> Result<(), String> {
    let ids = store.subjects.get(subject).cloned().unwrap_or_default();
    let against: Vec<&u32> = if level.ends_with("_TRANSITIVE") {
        ids.iter().collect()
    } else {
        ids.last().into_iter().collect()
    };
    let base = level.trim_end_matches("_TRANSITIVE");
    for id in against {
        let old = &store.schemas[*id as usize - 1];
        if matches!(base, "BACKWARD" | "FULL") {
            compatibility::can_read_texts(old, new)
                .map_err(|e| format!("the new schema cannot read version id {id}: {e}"))?;
        }
        if matches!(base, "FORWARD" | "FULL") {
            compatibility::can_read_texts(new, old)
                .map_err(|e| format!("a reader of id {id} cannot read the new schema: {e}"))?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Submitted {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

async fn register(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(subject): Path<String>,
    Json(body): Json<Submitted>,
) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "only AVRO here");
    }
    let Ok(form) = canonical::parsing_canonical_form(&body.schema) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    let mut store = app.store.lock().unwrap();
    let ids = store.subjects.get(&subject).cloned().unwrap_or_default();
    if let Some(id) = ids.iter().find(|id| {
        canonical::parsing_canonical_form(&store.schemas[**id as usize - 1]).ok()
            == Some(form.clone())
    }) {
        return Json(json!({"id": id})).into_response();
    }
    let level = level(&store, &subject);
    if let Err(reason) = compatible(&store, &subject, &body.schema, &level) {
        return error(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({level}): {reason}"
            ),
        );
    }
    let id = match store.schemas.iter().position(|s| *s == body.schema) {
        Some(index) => index as u32 + 1,
        None => {
            store.schemas.push(body.schema);
            store.schemas.len() as u32
        }
    };
    store.subjects.entry(subject).or_default().push(id);
    app.save(&store);
    Json(json!({"id": id})).into_response()
}

async fn lookup(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(subject): Path<String>,
    Json(body): Json<Submitted>,
) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    let form = canonical::parsing_canonical_form(&body.schema).ok();
    let Some(ids) = store.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    for (index, id) in ids.iter().enumerate() {
        let text = &store.schemas[*id as usize - 1];
        if canonical::parsing_canonical_form(text).ok() == form {
            return Json(
                json!({"subject": subject, "id": id, "version": index + 1, "schema": text}),
            )
            .into_response();
        }
    }
    error(StatusCode::NOT_FOUND, 40403, "Schema not found")
}

async fn subjects(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    Json(store.subjects.keys().collect::<Vec<_>>()).into_response()
}

async fn versions(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(subject): Path<String>,
) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    match store.subjects.get(&subject) {
        Some(ids) => Json((1..=ids.len()).collect::<Vec<_>>()).into_response(),
        None => error(StatusCode::NOT_FOUND, 40401, "Subject not found"),
    }
}

async fn version(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    let Some(ids) = store.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, "Subject not found");
    };
    let index = match version.as_str() {
        "latest" | "-1" => ids.len().checked_sub(1),
        n => n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)),
    };
    match index.and_then(|i| ids.get(i).map(|id| (i, id))) {
        Some((i, id)) => Json(json!({
            "subject": subject, "version": i + 1, "id": id,
            "schema": store.schemas[*id as usize - 1],
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, 40402, "Version not found"),
    }
}

async fn by_id(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u32>) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    match id
        .checked_sub(1)
        .and_then(|i| store.schemas.get(i as usize))
    {
        Some(schema) => Json(json!({"schema": schema})).into_response(),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

#[derive(Deserialize)]
struct Level {
    compatibility: String,
}

async fn get_config(app: Shared, headers: HeaderMap, subject: Option<String>) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    let store = app.store.lock().unwrap();
    let level = match subject {
        Some(subject) => match store.config.get(&subject) {
            Some(level) => level.clone(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    40408,
                    "Subject has no compatibility level",
                );
            }
        },
        None => store.global.clone().unwrap_or_else(|| "BACKWARD".into()),
    };
    Json(json!({"compatibilityLevel": level})).into_response()
}

async fn put_config(
    app: Shared,
    headers: HeaderMap,
    subject: Option<String>,
    body: Level,
) -> Response {
    if let Some(denied) = app.denied(&headers) {
        return denied;
    }
    if !LEVELS.contains(&body.compatibility.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level",
        );
    }
    let mut store = app.store.lock().unwrap();
    match subject {
        Some(subject) => {
            store.config.insert(subject, body.compatibility.clone());
        }
        None => store.global = Some(body.compatibility.clone()),
    }
    app.save(&store);
    Json(json!({"compatibility": body.compatibility})).into_response()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = None;
    let mut data = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--data" => data = args.next().map(PathBuf::from),
            other => anyhow::bail!("unknown argument {other:?}; usage: --listen ADDR --data FILE"),
        }
    }
    let (Some(listen), Some(data)) = (listen, data) else {
        anyhow::bail!("usage: hunter-test-registry --listen ADDR --data FILE");
    };
    let store: Store = match std::fs::read(&data) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => Store::default(),
    };
    let auth = match (
        std::env::var("HUNTER_TEST_REGISTRY_USER"),
        std::env::var("HUNTER_TEST_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )),
        _ => None,
    };
    let app = Arc::new(App {
        store: Mutex::new(store),
        data,
        auth,
    });
    let router = Router::new()
        .route(
            "/",
            get(|| async { Json(Value::Object(Default::default())) }),
        )
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", axum::routing::post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(by_id))
        .route(
            "/config",
            get(|State(app): State<Shared>, h: HeaderMap| get_config(app, h, None)).put(
                |State(app): State<Shared>, h: HeaderMap, Json(b): Json<Level>| {
                    put_config(app, h, None, b)
                },
            ),
        )
        .route(
            "/config/{subject}",
            get(
                |State(app): State<Shared>, h: HeaderMap, Path(s): Path<String>| {
                    get_config(app, h, Some(s))
                },
            )
            .put(
                |State(app): State<Shared>,
                 h: HeaderMap,
                 Path(s): Path<String>,
                 Json(b): Json<Level>| put_config(app, h, Some(s), b),
            ),
        )
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "hunter-test-registry listening on {}",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
