//! A test double of the Confluent Schema Registry, shared by the engine's client tests and
//! the worker tests: no Confluent-compatible registry server can be installed here.
//! Included by path (`#[path]`) from both test crates, so there is one double.

#![allow(dead_code)] // each including test uses part of it

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sluice_engine::serde::registry::{CONTENT_TYPE, SchemaRegistryClient, error_codes};

/// A test double of the Confluent Schema Registry, because no Confluent-compatible registry
/// server can be installed on these machines.
///
/// It speaks the REST API the client uses (`POST /subjects/{subject}/versions`,
/// `POST /subjects/{subject}`, `GET /schemas/ids/{id}`,
/// `GET /subjects/{subject}/versions/latest`,
/// `POST /compatibility/subjects/{subject}/versions/latest`) with the registry's JSON bodies
/// and error codes. Ids are global (the same schema under two subjects has one id); versions
/// are per subject. Like a registry whose compatibility level is BACKWARD, it accepts a new
/// version only if a reader using it can read data written with the latest version, as judged
/// by apache-avro's `SchemaCompatibility::can_read(latest, new)`.
pub struct RegistryDouble {
    pub base_url: String,
    pub state: Arc<DoubleState>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct DoubleState {
    store: Mutex<Store>,
    /// Requests seen, by endpoint ("GET /schemas/ids/{id}").
    requests: Mutex<HashMap<&'static str, usize>>,
    pub last_authorization: Mutex<Option<String>>,
    /// While set, every endpoint answers 503, as a registry that is down behind its proxy.
    pub down: AtomicBool,
}

#[derive(Default)]
struct Store {
    /// Schemas by global id (id = index + 1): the JSON the registry returns, and the parse.
    schemas: Vec<(String, Schema)>,
    /// The ids of each subject's versions, oldest first (version = index + 1).
    subjects: HashMap<String, Vec<u32>>,
}

impl Store {
    fn schema(&self, id: u32) -> Option<&(String, Schema)> {
        self.schemas.get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    fn latest(&self, subject: &str) -> Option<(u32, u32)> {
        let versions = self.subjects.get(subject)?;
        let id = *versions.last()?;
        Some((id, versions.len() as u32))
    }
}

pub const REGISTER: &str = "POST /subjects/{subject}/versions";
pub const LOOKUP: &str = "POST /subjects/{subject}";
pub const SCHEMA_BY_ID: &str = "GET /schemas/ids/{id}";
pub const LATEST: &str = "GET /subjects/{subject}/versions/latest";
pub const COMPATIBILITY: &str = "POST /compatibility/subjects/{subject}/versions/latest";

impl RegistryDouble {
    pub async fn start() -> Self {
        let state = Arc::new(DoubleState::default());
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/subjects/{subject}", post(lookup))
            .route("/schemas/ids/{id}", get(schema_by_id))
            .route("/subjects/{subject}/versions/latest", get(latest))
            .route(
                "/compatibility/subjects/{subject}/versions/latest",
                post(check_compatibility),
            )
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url,
            state,
            server,
        }
    }

    /// A new client of this double, with empty caches (as another process would have).
    pub fn client(&self) -> SchemaRegistryClient {
        SchemaRegistryClient::new(&self.base_url).unwrap()
    }

    pub fn requests(&self, endpoint: &str) -> usize {
        let requests = self.state.requests.lock().unwrap();
        requests.get(endpoint).copied().unwrap_or(0)
    }
}

impl Drop for RegistryDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DoubleState {
    /// Counts the request; `false` while the double is down.
    fn saw(&self, endpoint: &'static str, headers: &HeaderMap) -> bool {
        *self.requests.lock().unwrap().entry(endpoint).or_default() += 1;
        *self.last_authorization.lock().unwrap() = headers
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_string());
        !self.down.load(Ordering::Relaxed)
    }

    /// Sets the down switch (see [`DoubleState::down`]).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn unavailable() -> Response {
    registry_error(
        StatusCode::SERVICE_UNAVAILABLE,
        50301,
        "the registry is down (test double switched off)".to_string(),
    )
}

fn registry_error(status: StatusCode, error_code: u32, message: String) -> Response {
    reply(
        status,
        json!({ "error_code": error_code, "message": message }),
    )
}

fn subject_not_found(subject: &str) -> Response {
    registry_error(
        StatusCode::NOT_FOUND,
        error_codes::SUBJECT_NOT_FOUND,
        format!("Subject '{subject}' not found."),
    )
}

/// The schema of a `{"schema": "..."}` request body, normalised to the JSON the double
/// stores, or the registry's answer to a bad request (boxed: a `Response` is large).
fn schema_of_request(headers: &HeaderMap, body: &[u8]) -> Result<(String, Schema), Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap());
    if content_type != Some(CONTENT_TYPE) {
        return Err(Box::new(registry_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            format!("expected content type {CONTENT_TYPE}, got {content_type:?}"),
        )));
    }
    #[derive(Deserialize)]
    struct SchemaRequest {
        schema: String,
    }
    let invalid = |message: String| {
        Box::new(registry_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            error_codes::INVALID_SCHEMA,
            message,
        ))
    };
    let request: SchemaRequest =
        serde_json::from_slice(body).map_err(|e| invalid(format!("bad request body: {e}")))?;
    let schema =
        Schema::parse_str(&request.schema).map_err(|e| invalid(format!("Invalid schema: {e}")))?;
    Ok((serde_json::to_string(&schema).unwrap(), schema))
}

/// BACKWARD compatibility: a reader with `new` reads everything written with `latest`.
fn backward_compatible(latest: &Schema, new: &Schema) -> bool {
    matches!(
        SchemaCompatibility::can_read(latest, new),
        Ok(Compatibility::Full)
    )
}

async fn register(
    State(double): State<Arc<DoubleState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !double.saw(REGISTER, &headers) {
        return unavailable();
    }
    let (json, schema) = match schema_of_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let mut store = double.store.lock().unwrap();
    let versions = store.subjects.get(&subject).cloned().unwrap_or_default();
    if let Some(&id) = versions
        .iter()
        .find(|&&id| store.schema(id).unwrap().0 == json)
    {
        return reply(StatusCode::OK, json!({ "id": id }));
    }
    if let Some(&latest_id) = versions.last() {
        let latest = &store.schema(latest_id).unwrap().1;
        if !backward_compatible(latest, &schema) {
            return registry_error(
                StatusCode::CONFLICT,
                error_codes::INCOMPATIBLE_SCHEMA,
                format!(
                    "Schema being registered is incompatible with an earlier schema for \
                     subject \"{subject}\""
                ),
            );
        }
    }
    let id = match store.schemas.iter().position(|(known, _)| *known == json) {
        Some(index) => index as u32 + 1,
        None => {
            store.schemas.push((json, schema));
            store.schemas.len() as u32
        }
    };
    store.subjects.entry(subject).or_default().push(id);
    reply(StatusCode::OK, json!({ "id": id }))
}

async fn lookup(
    State(double): State<Arc<DoubleState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !double.saw(LOOKUP, &headers) {
        return unavailable();
    }
    let (json, _) = match schema_of_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let store = double.store.lock().unwrap();
    let Some(versions) = store.subjects.get(&subject) else {
        return subject_not_found(&subject);
    };
    match versions
        .iter()
        .position(|&id| store.schema(id).unwrap().0 == json)
    {
        Some(index) => reply(
            StatusCode::OK,
            json!({
                "subject": subject,
                "id": versions[index],
                "version": index + 1,
                "schema": json,
            }),
        ),
        None => registry_error(
            StatusCode::NOT_FOUND,
            error_codes::SCHEMA_NOT_FOUND,
            "Schema not found".to_string(),
        ),
    }
}

async fn schema_by_id(
    State(double): State<Arc<DoubleState>>,
    Path(id): Path<u32>,
    headers: HeaderMap,
) -> Response {
    if !double.saw(SCHEMA_BY_ID, &headers) {
        return unavailable();
    }
    let store = double.store.lock().unwrap();
    match store.schema(id) {
        Some((json, _)) => reply(StatusCode::OK, json!({ "schema": json })),
        None => registry_error(
            StatusCode::NOT_FOUND,
            error_codes::SCHEMA_NOT_FOUND,
            format!("Schema {id} not found"),
        ),
    }
}

async fn latest(
    State(double): State<Arc<DoubleState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !double.saw(LATEST, &headers) {
        return unavailable();
    }
    let store = double.store.lock().unwrap();
    let Some((id, version)) = store.latest(&subject) else {
        return subject_not_found(&subject);
    };
    reply(
        StatusCode::OK,
        json!({
            "subject": subject,
            "id": id,
            "version": version,
            "schema": store.schema(id).unwrap().0,
        }),
    )
}

async fn check_compatibility(
    State(double): State<Arc<DoubleState>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !double.saw(COMPATIBILITY, &headers) {
        return unavailable();
    }
    let (_, schema) = match schema_of_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let store = double.store.lock().unwrap();
    let Some((latest_id, _)) = store.latest(&subject) else {
        return subject_not_found(&subject);
    };
    let latest = &store.schema(latest_id).unwrap().1;
    reply(
        StatusCode::OK,
        json!({ "is_compatible": backward_compatible(latest, &schema) }),
    )
}
