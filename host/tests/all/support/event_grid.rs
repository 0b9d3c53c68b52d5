//! An Event Grid stand-in: a topic endpoint on a loopback port that holds
//! publishers to the real publish protocol, fails on demand, and forwards
//! what it accepts to webhook subscribers the way Event Grid does.
//!
//! It is written from Event Grid's documentation, not from the host's
//! code, so that it checks the publisher rather than agreeing with it.
//!
//! Publishing (`POST /api/events`), checked in this order:
//!
//! 1. the next injected [`Fault`], if any, is applied instead;
//! 2. `api-version` must be in the query (400);
//! 3. `aeg-sas-key` must be the topic key, or `aeg-sas-token` a token
//!    `r={resource}&e={expiry}&s={signature}` signed with the decoded key,
//!    for a resource that prefixes this topic's `…/api/events`, not expired
//!    (401);
//! 4. the request must be at most 1 MB (10^6 bytes; 413);
//! 5. the content type must be `application/json` (Event Grid schema) or
//!    `application/cloudevents-batch+json` (CloudEvents), the body a JSON
//!    array of objects with the schema's required fields (400);
//! 6. each event must be at most 1 MB (413);
//! 7. no event may match the refusal predicate, if one is set (400).
//!
//! A refused request accepts nothing (Event Grid is all or nothing per
//! request); refusals carry an Event Grid-like body,
//! `{"error": {"code", "message"}}`. An accepted request is answered `200`
//! with an empty body. Every request is recorded ([`EventGridStandIn::requests`])
//! and every accepted event kept, duplicates included
//! ([`EventGridStandIn::accepted`]).
//!
//! Forwarding: [`EventGridStandIn::subscribe`] first performs the handshake
//! (the `SubscriptionValidation` event for the Event Grid schema, the
//! CloudEvents `OPTIONS` abuse-protection request otherwise) and refuses a
//! subscriber that fails it. Accepted events that pass a subscription's
//! filters (included event types, subject begins / ends with, all
//! case-insensitive) are then POSTed to it, one event per request: an array
//! of one in the Event Grid schema (with `topic` and `metadataVersion`
//! filled in), a structured `application/cloudevents+json` event otherwise.
//! A failed delivery is retried a few times, except after 400, 401 and 413,
//! which Event Grid does not retry either.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Event Grid's per-event and per-request limit, read as 10^6 bytes.
pub const MAX_BYTES: usize = 1_000_000;

/// The `topic` the stand-in writes into forwarded Event Grid events.
pub const TOPIC: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/tests/providers/Microsoft.EventGrid/topics/stand-in";

/// Deliveries to a subscriber, in all, before giving up on an event.
const DELIVERY_ATTEMPTS: u32 = 5;

/// The schema the topic takes (and delivers in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The Event Grid event schema.
    EventGrid,
    /// CloudEvents 1.0.
    CloudEvents,
}

/// A failure to inject: each publish request takes the next one queued.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `429 Too Many Requests` with this `Retry-After` value.
    TooManyRequests {
        /// Seconds or an HTTP date.
        retry_after: String,
    },
    /// `503 Service Unavailable`.
    Unavailable,
    /// Handle the request normally (accepting its events), then close the
    /// connection without answering: the client cannot tell that the topic
    /// has them, and sends them again.
    Unanswered,
    /// Close the connection without answering; nothing is accepted.
    DropConnection,
}

/// One publish request, as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The status answered; `None` if the connection was closed unanswered.
    pub status: Option<u16>,
    /// The ids of the events in the body, if it parsed and was checked.
    pub event_ids: Vec<String>,
    /// The body's size in bytes.
    pub bytes: usize,
    /// Its `traceparent` header. (Event Grid does not pass it on to
    /// subscribers, and neither does the stand-in.)
    pub traceparent: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

/// A webhook subscription with Event Grid's filters.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// The webhook URL.
    pub endpoint: String,
    /// Event types delivered (any, if empty); case-insensitive.
    pub included_event_types: Vec<String>,
    /// Subject prefix; case-insensitive.
    pub subject_begins_with: Option<String>,
    /// Subject suffix; case-insensitive.
    pub subject_ends_with: Option<String>,
}

impl Subscription {
    fn matches(&self, event_type: &str, subject: &str) -> bool {
        let (event_type, subject) = (event_type.to_lowercase(), subject.to_lowercase());
        (self.included_event_types.is_empty()
            || self
                .included_event_types
                .iter()
                .any(|t| t.to_lowercase() == event_type))
            && self
                .subject_begins_with
                .as_ref()
                .is_none_or(|p| subject.starts_with(&p.to_lowercase()))
            && self
                .subject_ends_with
                .as_ref()
                .is_none_or(|s| subject.ends_with(&s.to_lowercase()))
    }
}

type Predicate = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// The stand-in; stops serving when dropped.
pub struct EventGridStandIn {
    endpoint: String,
    key: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    schema: Schema,
    /// The decoded key, for SAS tokens.
    key_bytes: Vec<u8>,
    /// The base64 key, for `aeg-sas-key`.
    key: String,
    /// `http://127.0.0.1:{port}/api/events`.
    resource: String,
    client: reqwest::Client,
    state: Mutex<StateInner>,
}

#[derive(Default)]
struct StateInner {
    faults: VecDeque<Fault>,
    /// Every request without a queued fault gets `503`.
    down: bool,
    /// How long an accepted request waits for its answer.
    answer_after: Duration,
    refuse: Option<Predicate>,
    requests: Vec<RequestRecord>,
    accepted: Vec<Value>,
    subscriptions: Vec<Subscription>,
    deliveries: Vec<JoinHandle<()>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, StateInner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventGridStandIn {
    /// A topic of `schema` with a fresh random key, serving on a loopback
    /// port.
    pub async fn start(schema: Schema) -> anyhow::Result<EventGridStandIn> {
        let key_bytes: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        let key = BASE64.encode(&key_bytes);
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            schema,
            key_bytes,
            key: key.clone(),
            resource: format!("{endpoint}/api/events"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            state: Mutex::default(),
        });
        let router = Router::new()
            .route("/api/events", post(publish))
            // Sizes are the stand-in's to judge (413), not axum's.
            .layer(DefaultBodyLimit::max(16 * MAX_BYTES))
            .with_state(shared.clone());
        let server = tokio::spawn(serve(listener, router));
        Ok(EventGridStandIn {
            endpoint,
            key,
            shared,
            server,
        })
    }

    /// The topic endpoint, `http://127.0.0.1:{port}` (publish to
    /// `{endpoint}/api/events`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The topic's access key (base64).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Answers each accepted request only `delay` after accepting it, as a
    /// distant topic would: a publisher that dies in between has had its
    /// events taken without knowing it.
    pub fn answer_after(&self, delay: Duration) {
        self.shared.state().answer_after = delay;
    }

    /// How many publish requests came so far.
    pub fn request_count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// Queues a fault for a coming publish request (first in, first out).
    pub fn inject(&self, fault: Fault) {
        self.shared.state().faults.push_back(fault);
    }

    /// From now on, answers every request `503` (after the faults queued):
    /// a topic that is down, until [`EventGridStandIn::come_back`].
    pub fn go_down(&self) {
        self.shared.state().down = true;
    }

    /// Ends [`EventGridStandIn::go_down`].
    pub fn come_back(&self) {
        self.shared.state().down = false;
    }

    /// From now on, refuses with 400 every request holding an event for
    /// which `predicate` is true.
    pub fn refuse_where(&self, predicate: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        self.shared.state().refuse = Some(Arc::new(predicate));
    }

    /// Stops refusing events (the cause was fixed).
    pub fn stop_refusing(&self) {
        self.shared.state().refuse = None;
    }

    /// Every publish request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state().requests.clone()
    }

    /// Every accepted event so far, in order, duplicates included.
    pub fn accepted(&self) -> Vec<Value> {
        self.shared.state().accepted.clone()
    }

    /// The ids of [`accepted`](Self::accepted).
    pub fn accepted_ids(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Adds a webhook subscription after its handshake; fails (and adds
    /// nothing) if the webhook does not complete it.
    pub async fn subscribe(&self, subscription: Subscription) -> anyhow::Result<()> {
        match self.shared.schema {
            Schema::EventGrid => self.validate_event_grid(&subscription.endpoint).await?,
            Schema::CloudEvents => self.validate_cloud_events(&subscription.endpoint).await?,
        }
        self.shared.state().subscriptions.push(subscription);
        Ok(())
    }

    /// Waits until every delivery to subscribers started so far has ended
    /// (delivered, or given up).
    pub async fn settle(&self) {
        loop {
            let pending = std::mem::take(&mut self.shared.state().deliveries);
            if pending.is_empty() {
                return;
            }
            for delivery in pending {
                let _ = delivery.await;
            }
        }
    }

    async fn validate_event_grid(&self, endpoint: &str) -> anyhow::Result<()> {
        let code = uuid::Uuid::new_v4().to_string();
        let event = json!([{
            "id": uuid::Uuid::new_v4().to_string(),
            "topic": TOPIC,
            "subject": "",
            "data": {"validationCode": code},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": now(),
            "metadataVersion": "1",
            "dataVersion": "1",
        }]);
        let response = self
            .shared
            .client
            .post(endpoint)
            .header("aeg-event-type", "SubscriptionValidation")
            .json(&event)
            .send()
            .await
            .context("the validation request failed")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() || body["validationResponse"] != json!(code) {
            bail!("the webhook failed validation: {status} {body}");
        }
        Ok(())
    }

    async fn validate_cloud_events(&self, endpoint: &str) -> anyhow::Result<()> {
        const ORIGIN: &str = "eventgrid.azure.net";
        let response = self
            .shared
            .client
            .request(reqwest::Method::OPTIONS, endpoint)
            .header("WebHook-Request-Origin", ORIGIN)
            .send()
            .await
            .context("the abuse-protection request failed")?;
        let allowed = response
            .headers()
            .get("WebHook-Allowed-Origin")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !response.status().is_success() || !(allowed == ORIGIN || allowed == "*") {
            bail!(
                "the webhook failed the abuse-protection handshake: {} (allowed origin {allowed:?})",
                response.status()
            );
        }
        Ok(())
    }
}

impl Drop for EventGridStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves each connection with hyper directly (rather than `axum::serve`),
/// so that a handler can have its connection closed without an answer.
async fn serve(listener: TcpListener, router: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let kill = Arc::new(Notify::new());
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(Kill(kill.clone()))));
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                // Dropping the connection closes the socket, unanswered.
                _ = kill.notified() => {}
            }
        });
    }
}

/// Closes the connection a request came on.
#[derive(Clone)]
struct Kill(Arc<Notify>);

async fn publish(
    State(shared): State<Arc<Shared>>,
    axum::Extension(kill): axum::Extension<Kill>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let fault = {
        let mut state = shared.state();
        let down = state.down.then_some(Fault::Unavailable);
        state.faults.pop_front().or(down)
    };
    let (response, event_ids) = match fault {
        Some(fault @ (Fault::DropConnection | Fault::Unanswered)) => {
            let event_ids = match fault {
                Fault::Unanswered => check_and_accept(&shared, &query, &headers, &body).1,
                _ => Vec::new(),
            };
            shared.state().requests.push(RequestRecord {
                status: None,
                event_ids,
                bytes: body.len(),
                traceparent: traceparent(&headers),
                at,
            });
            kill.0.notify_one();
            return std::future::pending().await;
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "throttled",
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            (response, Vec::new())
        }
        Some(Fault::Unavailable) => (
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the service is unavailable",
            ),
            Vec::new(),
        ),
        None => {
            let answer = check_and_accept(&shared, &query, &headers, &body);
            let delay = shared.state().answer_after;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        }
    };
    shared.state().requests.push(RequestRecord {
        status: Some(response.status().as_u16()),
        event_ids,
        bytes: body.len(),
        traceparent: traceparent(&headers),
        at,
    });
    response
}

fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Steps 2 to 7 of the module docs; on success records the events and
/// starts their deliveries. Returns the answer and the ids seen.
fn check_and_accept(
    shared: &Arc<Shared>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Vec<String>) {
    let refused = |response| (response, Vec::new());
    if query.get("api-version").is_none_or(|v| v.is_empty()) {
        return refused(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the api-version query parameter is required",
        ));
    }
    if !authorized(shared, headers) {
        return refused(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request authorization key or token is missing, wrong or expired",
        ));
    }
    if body.len() > MAX_BYTES {
        return refused(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            &format!(
                "the request is {} bytes; the limit is {MAX_BYTES}",
                body.len()
            ),
        ));
    }
    let (media_type, schema_name) = match shared.schema {
        Schema::EventGrid => ("application/json", "Event Grid"),
        Schema::CloudEvents => ("application/cloudevents-batch+json", "CloudEvents"),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if content_type != media_type {
        return refused(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("a {schema_name} topic takes {media_type}, not {content_type:?}"),
        ));
    }
    let Ok(raw_events) = serde_json::from_slice::<Vec<Box<RawValue>>>(body) else {
        return refused(error(
            StatusCode::BAD_REQUEST,
            "InputJsonInvalid",
            "the body must be a JSON array of events",
        ));
    };
    let mut events = Vec::with_capacity(raw_events.len());
    for raw in &raw_events {
        if raw.get().len() > MAX_BYTES {
            return refused(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                &format!(
                    "an event is {} bytes; the limit is {MAX_BYTES}",
                    raw.get().len()
                ),
            ));
        }
        let event: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        if let Err(problem) = check_event(shared.schema, &event) {
            return refused(error(StatusCode::BAD_REQUEST, "InputJsonInvalid", &problem));
        }
        events.push(event);
    }
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut state = shared.state();
    if let Some(refuse) = state.refuse.clone()
        && let Some(bad) = events.iter().find(|e| refuse(e))
    {
        let id = bad["id"].as_str().unwrap_or_default();
        return (
            error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("event {id} is not acceptable"),
            ),
            ids,
        );
    }
    let StateInner {
        subscriptions,
        deliveries,
        accepted,
        ..
    } = &mut *state;
    for event in events {
        for subscription in subscriptions.iter() {
            let (event_type, subject) = match shared.schema {
                Schema::EventGrid => (&event["eventType"], &event["subject"]),
                Schema::CloudEvents => (&event["type"], &event["subject"]),
            };
            if subscription.matches(
                event_type.as_str().unwrap_or_default(),
                subject.as_str().unwrap_or_default(),
            ) {
                let delivery = tokio::spawn(deliver(
                    shared.clone(),
                    subscription.endpoint.clone(),
                    event.clone(),
                ));
                deliveries.push(delivery);
            }
        }
        accepted.push(event);
    }
    (StatusCode::OK.into_response(), ids)
}

/// The schema's required fields.
fn check_event(schema: Schema, event: &Value) -> Result<(), String> {
    if !event.is_object() {
        return Err("every element of the array must be an event object".into());
    }
    let string = |field: &str| event[field].as_str().filter(|s| !s.is_empty()).is_some();
    let required: &[&str] = match schema {
        Schema::EventGrid => &["id", "eventType", "subject", "eventTime", "dataVersion"],
        Schema::CloudEvents => &["id", "type", "source", "specversion"],
    };
    // Event Grid allows an empty subject, but it must be there.
    if let Some(missing) = required
        .iter()
        .find(|f| !(string(f) || (**f == "subject" && event[*f].is_string())))
    {
        return Err(format!("required property '{missing}' was not found"));
    }
    match schema {
        Schema::EventGrid => {
            if event.get("data").is_none() {
                return Err("required property 'data' was not found".into());
            }
            if event["eventTime"]
                .as_str()
                .is_some_and(|t| OffsetDateTime::parse(t, &Rfc3339).is_err())
            {
                return Err("'eventTime' is not a valid date and time".into());
            }
        }
        Schema::CloudEvents => {
            if event["specversion"] != "1.0" {
                return Err("'specversion' must be \"1.0\"".into());
            }
            if event["time"]
                .as_str()
                .is_some_and(|t| OffsetDateTime::parse(t, &Rfc3339).is_err())
            {
                return Err("'time' is not a valid RFC 3339 timestamp".into());
            }
        }
    }
    Ok(())
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    if let Some(key) = headers.get("aeg-sas-key") {
        return key.as_bytes() == shared.key.as_bytes();
    }
    headers
        .get("aeg-sas-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| valid_token(token, &shared.key_bytes, &shared.resource))
}

/// `r={resource}&e={expiry}&s={signature}`: the signature is the base64
/// HMAC-SHA256, keyed by the decoded topic key, of everything before `&s=`.
fn valid_token(token: &str, key: &[u8], resource: &str) -> bool {
    let Some((signed, _)) = token.rsplit_once("&s=") else {
        return false;
    };
    let fields: HashMap<String, String> = form_urlencoded::parse(token.as_bytes())
        .into_owned()
        .collect();
    let (Some(r), Some(e), Some(s)) = (fields.get("r"), fields.get("e"), fields.get("s")) else {
        return false;
    };
    let Ok(signature) = BASE64.decode(s) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature).is_ok()
        && resource.to_lowercase().starts_with(&r.to_lowercase())
        && parse_expiry(e).is_some_and(|expiry| expiry > OffsetDateTime::now_utc())
}

/// `6/15/2017 6:20:15 PM` (UTC, as Event Grid's .NET sample writes it) or
/// RFC 3339 (as its Python sample does).
fn parse_expiry(text: &str) -> Option<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time);
    }
    let format = time::format_description::parse_borrowed::<2>(
        "[month padding:none]/[day padding:none]/[year] \
         [hour repr:12 padding:none]:[minute]:[second] [period]",
    )
    .ok()?;
    time::PrimitiveDateTime::parse(text, &format)
        .ok()
        .map(|t| t.assume_utc())
}

/// Delivers one event to one subscriber, retrying a few times.
async fn deliver(shared: Arc<Shared>, endpoint: String, mut event: Value) {
    for attempt in 1..=DELIVERY_ATTEMPTS {
        let request = shared
            .client
            .post(&endpoint)
            .header("aeg-event-type", "Notification")
            .header("aeg-delivery-count", (attempt - 1).to_string());
        let request = match shared.schema {
            Schema::EventGrid => {
                event["topic"] = json!(TOPIC);
                event["metadataVersion"] = json!("1");
                request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(json!([event]).to_string())
            }
            Schema::CloudEvents => request
                .header(
                    header::CONTENT_TYPE,
                    "application/cloudevents+json; charset=utf-8",
                )
                .body(event.to_string()),
        };
        match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) if matches!(response.status().as_u16(), 400 | 401 | 413) => return,
            _ => tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await,
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}
