//! The HTTP API: commands, stream reads, projection queries, instance
//! listings, `/healthz` and `/metrics`.
//!
//! This module translates HTTP to [`Host`] calls and back, and nothing more:
//! it reads path segments, headers, query strings and bodies, and maps
//! [`HostError`](crate::HostError)s to statuses. Every error it answers is
//! JSON `{"code", "message"}` ([`ApiError`]). It holds no domain logic.

mod error;
mod metrics;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use error::ApiError;

use crate::host::{CommandRequest, Host};
use crate::model::{EventContext, RecordedEvent, StreamId};
use metrics::Metrics;

/// The largest page of events or instance keys one request returns.
const MAX_PAGE: usize = 1000;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone)]
struct Api {
    host: Host,
    metrics: Arc<Metrics>,
}

/// The API's routes, serving `host`.
pub fn router(host: Host, config: &ApiConfig) -> Router {
    let api = Api {
        host,
        metrics: Arc::new(Metrics::new()),
    };
    Router::new()
        .route(
            "/api/commands/{domain}/{entity_type}/{instance_key}/{command_type}",
            post(command),
        )
        .route(
            "/api/streams/{domain}/{entity_type}/{instance_key}/events",
            get(events),
        )
        .route(
            "/api/projections/{domain}/{entity_type}/{instance_key}/{projection}",
            get(projection),
        )
        .route("/api/instances/{domain}/{entity_type}", get(instances))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(api)
}

type Answer<T> = Result<Json<T>, ApiError>;

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(segments)| segments)
        .map_err(|e| ApiError::bad_request("invalid_name", e.body_text()))
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

fn stream(
    (domain, entity_type, instance_key): (String, String, String),
) -> Result<StreamId, ApiError> {
    StreamId::new(domain, entity_type, instance_key).map_err(|e| crate::HostError::from(e).into())
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("header {name} is not visible ASCII"),
                )
            })
        })
        .transpose()
}

async fn command(
    State(api): State<Api>,
    segments: Result<Path<(String, String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer<crate::CommandOutcome> {
    let started = Instant::now();
    let result = async {
        let (domain, entity_type, instance_key, command_type) = path(segments)?;
        let stream = stream((domain, entity_type, instance_key))?;
        let body = body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the configured limit",
                )
            } else {
                ApiError::bad_request("unreadable_body", e.body_text())
            }
        })?;
        let payload = if body.iter().all(u8::is_ascii_whitespace) {
            RawValue::from_string("{}".to_owned())
        } else {
            serde_json::from_slice::<Box<RawValue>>(&body)
        }
        .map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not JSON: {e}"))
        })?;
        let request = CommandRequest {
            stream,
            command_type,
            payload,
            command_id: header_text(&headers, "idempotency-key")?,
            context: EventContext {
                correlation_id: header_text(&headers, "x-correlation-id")?,
                source: Some("http".to_owned()),
                ..EventContext::default()
            },
        };
        Ok(api.host.execute(request).await?)
    }
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError { code, .. }) => code,
    };
    api.metrics.command(outcome, started.elapsed());
    result.map(Json)
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventsPage {
    stream: StreamId,
    events: Vec<RecordedEvent>,
    /// Where the next page starts, when this one was full.
    next_from: Option<u64>,
}

async fn events(
    State(api): State<Api>,
    segments: Result<Path<(String, String, String)>, PathRejection>,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Answer<EventsPage> {
    let stream = stream(path(segments)?)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let events = api
        .host
        .read_stream(&stream, params.from.unwrap_or(1), limit)
        .await?;
    let next_from = (events.len() == limit)
        .then(|| events.last().map(|e| e.sequence + 1))
        .flatten();
    Ok(Json(EventsPage {
        stream,
        events,
        next_from,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectionQuery {
    as_of: Option<u64>,
}

async fn projection(
    State(api): State<Api>,
    segments: Result<Path<(String, String, String, String)>, PathRejection>,
    params: Result<Query<ProjectionQuery>, QueryRejection>,
) -> Answer<crate::ProjectionState> {
    let result = async {
        let (domain, entity_type, instance_key, projection) = path(segments)?;
        let stream = stream((domain, entity_type, instance_key))?;
        let params = query(params)?;
        crate::model::validate_name(crate::model::NameKind::ProjectionType, &projection)
            .map_err(crate::HostError::from)?;
        Ok(api.host.project(&stream, &projection, params.as_of).await?)
    }
    .await;
    api.metrics.projection(match &result {
        Ok(_) => "ok",
        Err(ApiError { code, .. }) => code,
    });
    result.map(Json)
}

#[derive(Debug, Deserialize)]
struct InstancesQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn instances(
    State(api): State<Api>,
    segments: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<InstancesQuery>, QueryRejection>,
) -> Answer<crate::store::InstancePage> {
    let (domain, entity_type) = path(segments)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    Ok(Json(
        api.host
            .list_instances(&domain, &entity_type, params.cursor.as_deref(), limit)
            .await?,
    ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
