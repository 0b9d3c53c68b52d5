//! The HTTP API: commands, stream reads, projection queries, instance
//! listings, the Event Grid webhook, `/healthz`, `/metrics`, and the admin
//! API (deploy, list and roll back components; outbox destinations, dead
//! letters, their re-drive and purge) behind a bearer token.
//!
//! This module translates HTTP to [`Host`] calls and back, and nothing more:
//! it reads path segments, headers, query strings and bodies, and maps
//! [`HostError`]s to statuses. Every error it answers is
//! JSON `{"code", "message"}` ([`ApiError`]). It holds no domain logic.

mod error;
pub mod eventgrid;
mod json;
mod metrics;
mod trace;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use error::ApiError;

use crate::host::{CommandRequest, Host, HostError};
use crate::model::{CommandId, CommandType, EventContext, StreamId};
use crate::notifications::{DeliveryOutcome, RedriveError};
use crate::secret::Secret;
use metrics::Metrics;

/// The largest page of events or instance keys one request returns.
const MAX_PAGE: usize = 1000;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The largest component upload accepted by the admin API.
    pub max_component_bytes: usize,
    /// The bearer token the admin API requires. `None`: the admin API
    /// refuses every request.
    pub admin_token: Option<Secret>,
    /// The key the public API requires in `X-Api-Key`. `None`: it is open.
    pub api_key: Option<Secret>,
    /// The secret the Event Grid webhook requires in `X-Webhook-Secret`
    /// (set it as a delivery header on the subscription). `None`: open.
    pub webhook_secret: Option<Secret>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_component_bytes: 64 << 20,
            admin_token: None,
            api_key: None,
            webhook_secret: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Api {
    host: Host,
    metrics: Arc<Metrics>,
    admin_token: Option<Secret>,
    api_key: Option<Secret>,
    webhook_secret: Option<Secret>,
}

/// `listener`, with `TCP_NODELAY` set on every connection it accepts: serve
/// the API on it (`axum::serve(api::no_delay(listener), router)`). Without
/// it a small answer can wait for the client's delayed acknowledgement
/// (40 ms on Linux), which bounds a keep-alive connection to a few dozen
/// requests a second.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    })
}

/// The API's routes, serving `host`.
pub fn router(host: Host, config: &ApiConfig) -> Router {
    let api = Api {
        host,
        metrics: Arc::new(Metrics::new()),
        admin_token: config.admin_token.clone(),
        api_key: config.api_key.clone(),
        webhook_secret: config.webhook_secret.clone(),
    };
    let admin = Router::new()
        .route(
            "/components/{name}",
            put(deploy).layer(DefaultBodyLimit::max(config.max_component_bytes)),
        )
        .route("/components", get(components))
        .route("/components/{name}/rollback", post(rollback))
        .route("/destinations", get(destinations))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{destination}", delete(purge_dead_letters))
        .route(
            "/dead-letters/{destination}/{id}",
            delete(purge_dead_letter),
        )
        .route("/dead-letters/{destination}/{id}/redrive", post(redrive))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_admin));
    let public = Router::new()
        .route(
            "/api/commands/{domain}/{entity_type}/{instance_key}/{command_type}",
            post(command).layer(middleware::from_fn_with_state(api.clone(), count_commands)),
        )
        .route(
            "/api/streams/{domain}/{entity_type}/{instance_key}/events",
            get(events),
        )
        .route(
            "/api/projections/{domain}/{entity_type}/{instance_key}/{projection}",
            get(projection).layer(middleware::from_fn_with_state(
                api.clone(),
                count_projections,
            )),
        )
        .route("/api/instances/{domain}/{entity_type}", get(instances))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_api_key));
    Router::new()
        .nest("/admin", admin)
        .merge(public)
        .route(
            "/api/eventgrid",
            post(event_grid).options(event_grid_handshake),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(log_server_errors))
        .layer(middleware::from_fn(trace::trace_requests))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(api)
}

/// The outcome label of a response: `ok`, or its error's code.
fn outcome(response: &Response) -> &'static str {
    response
        .extensions()
        .get::<ApiError>()
        .map_or("ok", |error| error.code)
}

/// Counts commands by outcome and times them, request to response.
async fn count_commands(State(api): State<Api>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    api.metrics.command(outcome(&response), started.elapsed());
    response
}

/// Counts projection queries by outcome.
async fn count_projections(State(api): State<Api>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    api.metrics.projection(outcome(&response));
    response
}

/// Logs every error the API answers with a 5xx: those are the host's to
/// fix, not the client's.
async fn log_server_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(error) = response.extensions().get::<ApiError>()
        && error.status().is_server_error()
    {
        match error.cause() {
            Some(cause) => tracing::warn!(code = error.code, cause, "{}", error.message),
            None => tracing::warn!(code = error.code, "{}", error.message),
        }
    }
    response
}

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
    StreamId::new(domain, entity_type, instance_key).map_err(|e| HostError::from(e).into())
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        )
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
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
) -> Result<Response, ApiError> {
    let segments = path(segments)?;
    let body = body.map_err(body_error)?;
    let request = decode_command(segments, &headers, &body)?;
    let outcome = api.host.execute(request).await?;
    Ok(Json(json::Outcome::from(&outcome)).into_response())
}

/// Reads a command from its HTTP parts: the four path segments (domain,
/// entity type, instance key, command type, already percent-decoded), the
/// headers (`Idempotency-Key`, `X-Correlation-Id`, `traceparent`) and the
/// body (JSON; empty means `{}`). Every name is validated here, so a request that decodes is
/// one the host can run.
pub fn decode_command(
    (domain, entity_type, instance_key, command_type): (String, String, String, String),
    headers: &HeaderMap,
    body: &[u8],
) -> Result<CommandRequest, ApiError> {
    let stream = stream((domain, entity_type, instance_key))?;
    let command_type = CommandType::new(command_type).map_err(HostError::from)?;
    let command_id = header_text(headers, "idempotency-key")?
        .map(CommandId::new)
        .transpose()
        .map_err(HostError::from)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let payload = crate::model::json_document(body.to_vec()).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not JSON: {e}"))
    })?;
    Ok(CommandRequest {
        stream,
        command_type,
        payload,
        command_id,
        context: EventContext {
            correlation_id: header_text(headers, "x-correlation-id")?,
            source: Some("http".to_owned()),
            traceparent: trace::traceparent(headers),
            ..EventContext::default()
        },
    })
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(api): State<Api>,
    segments: Result<Path<(String, String, String)>, PathRejection>,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
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
    Ok(Json(json::EventsPage {
        stream: (&stream).into(),
        events: events.iter().map(json::Event::from).collect(),
        next_from,
    })
    .into_response())
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
) -> Result<Response, ApiError> {
    let (domain, entity_type, instance_key, projection) = path(segments)?;
    let stream = stream((domain, entity_type, instance_key))?;
    let params = query(params)?;
    let state = api.host.project(&stream, &projection, params.as_of).await?;
    Ok(Json(json::Projection::from(&state)).into_response())
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
) -> Result<Response, ApiError> {
    let (domain, entity_type) = path(segments)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = api
        .host
        .list_instances(&domain, &entity_type, params.cursor.as_deref(), limit)
        .await?;
    Ok(Json(json::Instances::from(&page)).into_response())
}

/// Lets a request through only with `Authorization: Bearer <admin token>`.
async fn require_admin(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(expected) = &api.admin_token else {
        return unauthorized("the admin API is disabled: no admin token is configured");
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if expected.matches(token) => next.run(request).await,
        Some(_) => unauthorized("the admin token is wrong"),
        None => unauthorized("the admin API needs `Authorization: Bearer <admin token>`"),
    }
}

/// Lets a request through only with the API key, when one is configured.
async fn require_api_key(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(expected) = &api.api_key else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    match presented {
        Some(key) if expected.matches(key) => next.run(request).await,
        Some(_) => unauthorized("the API key is wrong"),
        None => unauthorized("the API needs an `X-Api-Key` header"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn deploy(
    State(api): State<Api>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = path(name)?;
    let bytes = body.map_err(body_error)?;
    let info = api.host.deploy(&name, bytes.to_vec()).await?;
    Ok(Json(json::Component::from(&info)).into_response())
}

async fn components(State(api): State<Api>) -> Response {
    let components = api.host.components();
    Json(
        components
            .iter()
            .map(json::Component::from)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct RollbackRequest {
    /// The version to go back to; the one before the live one if absent.
    digest: Option<String>,
}

async fn rollback(
    State(api): State<Api>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = path(name)?;
    let body = body.map_err(body_error)?;
    let request: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not a rollback request: {e}"),
            )
        })?
    };
    let info = api.host.rollback(&name, request.digest.as_deref()).await?;
    Ok(Json(json::Component::from(&info)).into_response())
}

async fn destinations(State(api): State<Api>) -> Result<Response, ApiError> {
    let destinations = api.host.destinations().await?;
    let destinations: Vec<_> = destinations.iter().map(json::Destination::from).collect();
    Ok(Json(destinations).into_response())
}

async fn dead_letters(State(api): State<Api>) -> Result<Response, ApiError> {
    let letters = api.host.dead_letters().await?;
    let letters: Vec<_> = letters.iter().map(json::DeadLetterJson::from).collect();
    Ok(Json(letters).into_response())
}

/// What became of a re-driven dead letter.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Redriven {
    /// `delivered`, `deadLettered` (refused again; still a dead letter) or
    /// `notDelivered` (the destination did not answer; still a dead letter).
    outcome: &'static str,
    /// Why it was not delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn redrive(
    State(api): State<Api>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Redriven>, ApiError> {
    let (destination, id) = path(params)?;
    let id = notification_id(&id)?;
    let outcome = api
        .host
        .redrive(&destination, id)
        .await
        .map_err(|error| match error {
            RedriveError::Store(error) => ApiError::from(HostError::Store(error)),
            other => ApiError::new(StatusCode::NOT_FOUND, "no_dead_letter", other.to_string()),
        })?;
    Ok(Json(Redriven {
        outcome: match outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::DeadLettered { .. } => "deadLettered",
            DeliveryOutcome::GaveUp { .. } | DeliveryOutcome::NotAttempted => "notDelivered",
        },
        reason: outcome.reason(),
    }))
}

/// How many dead letters a purge removed.
#[derive(Debug, Serialize)]
struct Purged {
    purged: usize,
}

/// Removes every dead letter of a destination, without delivering them.
async fn purge_dead_letters(
    State(api): State<Api>,
    params: Result<Path<String>, PathRejection>,
) -> Result<Json<Purged>, ApiError> {
    let destination = path(params)?;
    let purged = api.host.purge_dead_letters(&destination, None).await?;
    Ok(Json(Purged { purged }))
}

/// Removes one dead letter, without delivering it.
async fn purge_dead_letter(
    State(api): State<Api>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Purged>, ApiError> {
    let (destination, id) = path(params)?;
    let id = notification_id(&id)?;
    match api.host.purge_dead_letters(&destination, Some(id)).await? {
        0 => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_dead_letter",
            format!("{destination} has no dead letter {id}"),
        )),
        purged => Ok(Json(Purged { purged })),
    }
}

/// A notification id from a path segment.
fn notification_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|e| {
        ApiError::bad_request(
            "invalid_id",
            format!("{id:?} is not a notification id: {e}"),
        )
    })
}

/// Event Grid deliveries: the validation handshake, or notifications for
/// the handlers; 500 unless every handler succeeded, so Event Grid retries.
async fn event_grid(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(expected) = &api.webhook_secret {
        let presented = headers
            .get("x-webhook-secret")
            .and_then(|v| v.to_str().ok());
        if !presented.is_some_and(|secret| expected.matches(secret)) {
            return unauthorized("the webhook needs its secret in X-Webhook-Secret");
        }
    }
    let delivery = body
        .map_err(body_error)
        .and_then(|body| eventgrid::decode_delivery(&body));
    let mut notifications = match delivery {
        Err(error) => return error.into_response(),
        Ok(eventgrid::Delivery::Validation { code }) => {
            return Json(serde_json::json!({ "validationResponse": code })).into_response();
        }
        Ok(eventgrid::Delivery::Notifications(notifications)) => notifications,
    };
    // An event's own `traceparent` (the CloudEvents extension) names the
    // trace it belongs to; the post's header stands in for those without.
    if let Some(header) = trace::traceparent(&headers) {
        for notification in &mut notifications {
            notification
                .traceparent
                .get_or_insert_with(|| header.clone());
        }
    }
    let mut failed = Vec::new();
    for notification in &notifications {
        failed.extend(
            api.host
                .deliver(notification)
                .await
                .into_iter()
                .filter(|d| d.error.is_some()),
        );
    }
    if failed.is_empty() {
        Json(serde_json::json!({ "delivered": notifications.len() })).into_response()
    } else {
        let message = format!("{} handler(s) failed; deliver again", failed.len());
        let mut response =
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "handler_failed", message)
                .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }
}

/// The CloudEvents abuse-protection handshake.
async fn event_grid_handshake(headers: HeaderMap) -> Response {
    match eventgrid::allowed_origin(&headers) {
        Ok(origin) => match header::HeaderValue::from_str(&origin) {
            Ok(origin) => (
                [(
                    header::HeaderName::from_static("webhook-allowed-origin"),
                    origin,
                )],
                "",
            )
                .into_response(),
            Err(_) => ApiError::bad_request("missing_origin", "the origin is not a header value")
                .into_response(),
        },
        Err(error) => error.into_response(),
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(api): State<Api>) -> Response {
    let mut text = api.metrics.render();
    if let Err(error) = api.host.encode_metrics(&mut text).await {
        return ApiError::from(error).into_response();
    }
    text.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
