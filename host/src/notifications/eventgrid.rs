//! Publishing notifications to an Azure Event Grid topic (the client side).
//!
//! This module owns the publish protocol: `POST {endpoint}/api/events?api-version=2018-01-01`
//! with a JSON array body (`application/json` for the Event Grid schema,
//! `application/cloudevents-batch+json; charset=utf-8` for CloudEvents),
//! authenticated by the topic's access key in `aeg-sas-key` or by a SAS
//! token in `aeg-sas-token`; batching under Event Grid's 1 MB request
//! limit; retries; and the classification of every answer into a
//! per-notification [`DeliveryOutcome`].
//!
//! It must not decide what to do with an outcome: recording dead letters,
//! keeping undelivered notifications in the outbox and counting metrics are
//! the caller's. It never logs, prints or returns a secret: keys live in
//! [`Secret`], whose `Debug` is redacted, header values are marked
//! sensitive, and error strings only ever hold statuses, response bodies
//! and transport errors (the endpoint may not carry credentials).
//!
//! # Retries and dead letters
//!
//! - `2xx`: every notification of the request is [`Delivered`](DeliveryOutcome::Delivered).
//! - `408`, `429`, `5xx`, timeouts and connection errors: retried, up to
//!   [`RetryPolicy::max_attempts`] requests in all, waiting as the server's
//!   `Retry-After` says (seconds or an HTTP date, capped at
//!   [`RetryPolicy::max_retry_after`]) or else a "full jitter" exponential
//!   backoff: a uniformly random wait between zero and
//!   `min(max_delay, base_delay * 2^(attempt - 1))`. Exhausted:
//!   [`GaveUp`](DeliveryOutcome::GaveUp) with the last error, and the
//!   notifications after it are not tried ([`NotAttempted`](DeliveryOutcome::NotAttempted)):
//!   the topic is not answering, so the caller should keep them and try
//!   again later rather than wait through every batch's retries.
//! - Any other status is never retried. `400` and `413` refuse the
//!   *content*, and Event Grid refuses a whole request for one bad event, so
//!   a refused batch of several notifications is re-sent one notification
//!   per request: the bad ones are [`DeadLettered`](DeliveryOutcome::DeadLettered)
//!   with the status and response body, the rest are delivered. One poisoned
//!   notification therefore never holds back the others. Other statuses
//!   (`401`, `403`, `404`, a redirect, ...) say the credentials or the
//!   endpoint are wrong, which is the same for every notification: the batch
//!   is dead-lettered as it is, with that status and body, to be re-driven
//!   once an operator has fixed the configuration.
//!
//! A retried request carries the same notifications with the same ids, so
//! a receiver deduplicates whatever a timeout made us send twice.
//!
//! # Traces
//!
//! Each request (with its retries) runs in an `eventgrid.publish` span,
//! the child of its first traced notification's span and linked to the
//! others', and sends that span as its `traceparent` header. So a post of
//! one trace's notifications continues that trace exactly; a post that
//! mixes traces is filed under the first and linked from the rest. A
//! receiver that wants each event's own trace reads the CloudEvents
//! `traceparent` extension ([`model`](super::model)), which is exact per
//! event; the Event Grid schema has only the header.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sha2::Sha256;
use time::OffsetDateTime;
use tracing::Instrument;

use super::model::{EncodedNotification, EventSchema, Notification};
use super::sink::{DeliveryOutcome, NotificationOutcome, NotificationSink, Progress};
use crate::error_chain::error_chain;
use crate::telemetry;

/// The Event Grid data-plane API version this client speaks.
pub const API_VERSION: &str = "2018-01-01";

/// The largest request body sent, in bytes.
///
/// Event Grid limits a publish request to "1 MB"; like
/// [`MAX_EVENT_BYTES`](super::model::MAX_EVENT_BYTES) we read that as 10^6
/// bytes.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;

/// How much of a refusal's response body is kept for the dead letter.
pub const MAX_DEAD_LETTER_BODY: usize = 8 * 1024;

const KEY_HEADER: &str = "aeg-sas-key";
const TRACEPARENT_HEADER: &str = "traceparent";
const TOKEN_HEADER: &str = "aeg-sas-token";
const EVENTS_PATH: &str = "/api/events";
const EVENT_GRID_CONTENT_TYPE: &str = "application/json";
const CLOUDEVENTS_BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json; charset=utf-8";

pub use crate::secret::Secret;

/// How requests to the topic are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The topic's access key, sent as is in the `aeg-sas-key` header.
    Key(Secret),
    /// A shared access signature in the `aeg-sas-token` header, made fresh
    /// for every request from the topic's access key:
    /// `r={resource}&e={expiry}&s={signature}`, each part URL-encoded, where
    /// the resource is the topic's `…/api/events` URL, the expiry is
    /// now + `ttl` written as Event Grid's samples write it
    /// (`6/15/2017 6:20:15 PM`, UTC), and the signature is the base64
    /// HMAC-SHA256 of `r={resource}&e={expiry}` keyed by the base64-decoded
    /// access key. The key itself never leaves the host.
    SasToken {
        /// The topic's access key (base64, as the portal shows it).
        key: Secret,
        /// How long each token is valid.
        ttl: Duration,
    },
}

/// When and how often a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests per batch in all, the first included.
    pub max_attempts: NonZeroU32,
    /// The backoff ceiling of the first retry; it doubles with each retry.
    pub base_delay: Duration,
    /// The backoff ceiling never exceeds this.
    pub max_delay: Duration,
    /// A server's `Retry-After` is honoured up to this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, backoff from 200 ms up to 30 s, `Retry-After` up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::new(6).expect("6 is not zero"),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after failed attempt number `attempt` (from 1):
    /// the server's `Retry-After` when it gave one, else full jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(attempt, retry_after, fastrand::f64())
    }

    /// [`delay`](Self::delay) with the random fraction (0..1) given.
    fn delay_with(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        // 2^31 times any sensible base is past max_delay already; capping
        // the exponent keeps the arithmetic in range.
        let factor = 1u32 << attempt.saturating_sub(1).min(31);
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Where and how to publish: one Event Grid topic.
#[derive(Debug, Clone)]
pub struct EventGridConfig {
    /// The topic endpoint, `https://{topic}.{region}-1.eventgrid.azure.net`,
    /// with or without the `/api/events` the portal shows. It may not carry
    /// credentials, a query or a fragment.
    pub endpoint: String,
    /// The schema the topic takes.
    pub schema: EventSchema,
    /// How requests are authenticated.
    pub auth: Auth,
    /// Retries of failed requests.
    pub retry: RetryPolicy,
    /// The longest one request may take, connecting included; past it the
    /// request counts as failed and is retried.
    pub request_timeout: Duration,
    /// The most notifications one request carries (it also stays under
    /// 1 MB). A dispatcher's checkpoint moves after each request, so this
    /// bounds what a crash delivers twice: the request in flight. Larger
    /// batches cost fewer requests and checkpoint writes.
    pub max_events_per_request: NonZeroUsize,
}

/// The default of [`EventGridConfig::max_events_per_request`].
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: NonZeroUsize = NonZeroUsize::new(100).expect("not zero");

impl EventGridConfig {
    /// A topic with the default retry policy, a 30 s request timeout and
    /// at most [`DEFAULT_MAX_EVENTS_PER_REQUEST`] notifications a request.
    pub fn new(endpoint: impl Into<String>, schema: EventSchema, auth: Auth) -> EventGridConfig {
        EventGridConfig {
            endpoint: endpoint.into(),
            schema,
            auth,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
        }
    }
}

/// Why a publisher could not be built. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The endpoint is not a usable topic URL.
    #[error("invalid Event Grid endpoint: {0}")]
    InvalidEndpoint(String),
    /// A SAS token needs the access key's bytes, and the key is not base64.
    #[error("the Event Grid access key is not valid base64, so no SAS token can be made from it")]
    KeyNotBase64,
    /// The key cannot be sent as an HTTP header value.
    #[error("the Event Grid access key holds characters an HTTP header cannot carry")]
    KeyNotHeaderSafe,
    /// CloudEvents need a `source`.
    #[error("a CloudEvents topic needs a non-empty source")]
    EmptySource,
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The outcome of one [`EventGridPublisher::publish`] call: one entry per
/// notification, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishReport {
    /// Per notification, in input order.
    pub outcomes: Vec<NotificationOutcome>,
}

impl PublishReport {
    /// Whether every notification was delivered.
    pub fn all_delivered(&self) -> bool {
        self.outcomes
            .iter()
            .all(|o| o.outcome == DeliveryOutcome::Delivered)
    }
}

/// Publishes notifications to one Event Grid topic. Cheap to share behind
/// an `Arc`; `publish` may be called concurrently.
pub struct EventGridPublisher {
    client: reqwest::Client,
    /// `…/api/events?api-version=…`.
    url: Url,
    /// The SAS resource: `…/api/events`.
    resource: String,
    schema: EventSchema,
    auth: PreparedAuth,
    retry: RetryPolicy,
    max_events: NonZeroUsize,
}

/// [`Auth`] checked and decoded once.
enum PreparedAuth {
    Key(HeaderValue),
    SasToken { key: Vec<u8>, ttl: Duration },
}

impl fmt::Debug for EventGridPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventGridPublisher")
            .field("url", &self.url.as_str())
            .field("schema", &self.schema)
            .field(
                "auth",
                &match self.auth {
                    PreparedAuth::Key(_) => "aeg-sas-key",
                    PreparedAuth::SasToken { .. } => "aeg-sas-token",
                },
            )
            .field("retry", &self.retry)
            .field("max_events", &self.max_events)
            .finish_non_exhaustive()
    }
}

/// How one request ended.
enum Attempt {
    Accepted,
    /// Not worth retrying.
    Refused {
        status: StatusCode,
        body: String,
    },
    /// Worth retrying, after `retry_after` if the server said so.
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// How a batch ended, after retries.
enum BatchResult {
    Delivered,
    Refused { status: StatusCode, body: String },
    GaveUp { last_error: String },
}

impl EventGridPublisher {
    /// Checks `config` and prepares the HTTP client.
    pub fn new(config: EventGridConfig) -> Result<EventGridPublisher, PublisherError> {
        let (url, resource) = events_url(&config.endpoint)?;
        if let EventSchema::CloudEvents { source } = &config.schema
            && source.trim().is_empty()
        {
            return Err(PublisherError::EmptySource);
        }
        let auth = match &config.auth {
            Auth::Key(key) => {
                let mut value = HeaderValue::from_str(key.expose())
                    .map_err(|_| PublisherError::KeyNotHeaderSafe)?;
                value.set_sensitive(true);
                PreparedAuth::Key(value)
            }
            Auth::SasToken { key, ttl } => PreparedAuth::SasToken {
                key: BASE64
                    .decode(key.expose().trim())
                    .map_err(|_| PublisherError::KeyNotBase64)?,
                ttl: *ttl,
            },
        };
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            // A redirect would turn the POST into a GET elsewhere; report
            // it as the misconfiguration it is instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(PublisherError::Client)?;
        Ok(EventGridPublisher {
            client,
            url,
            resource,
            schema: config.schema,
            auth,
            retry: config.retry,
            max_events: config.max_events_per_request,
        })
    }

    /// Publishes `notifications` in order, in as few requests as fit (under
    /// 1 MB, at most [`EventGridConfig::max_events_per_request`] each), and
    /// says what became of each (see the [module docs](self)).
    pub async fn publish(&self, notifications: &[Notification]) -> PublishReport {
        self.publish_reporting(notifications, &Progress::untracked())
            .await
    }

    /// [`publish`](Self::publish), reporting each request's outcomes to
    /// `progress` and sending the next request only once the checkpoint
    /// has passed them, so that only one request is ever in flight ahead of
    /// it.
    async fn publish_reporting(
        &self,
        notifications: &[Notification],
        progress: &Progress,
    ) -> PublishReport {
        let encoded: Vec<EncodedNotification> = notifications
            .iter()
            .map(|n| n.encode(&self.schema))
            .collect();
        let mut outcomes: Vec<NotificationOutcome> = encoded
            .iter()
            .map(|e| NotificationOutcome {
                id: e.id,
                outcome: DeliveryOutcome::NotAttempted,
                attempts: 0,
                payload_omitted: e.payload_omitted,
            })
            .collect();
        // After a batch (or a notification re-sent alone) gives up, the
        // rest stay NotAttempted: the topic is not answering.
        'batches: for batch in batches(&encoded, self.max_events) {
            let items = &encoded[batch.clone()];
            let (result, attempts) = self.send_traced(items, &notifications[batch.clone()]).await;
            for outcome in &mut outcomes[batch.clone()] {
                outcome.attempts += attempts;
            }
            match result {
                BatchResult::Delivered => {
                    set(&mut outcomes[batch.clone()], DeliveryOutcome::Delivered);
                }
                BatchResult::Refused { status, .. } if items.len() > 1 && about_content(status) => {
                    tracing::warn!(
                        status = status.as_u16(),
                        notifications = items.len(),
                        "Event Grid refused a batch; sending its notifications one by one"
                    );
                    let alone = items.iter().zip(&notifications[batch.clone()]);
                    for ((item, notification), outcome) in alone.zip(&mut outcomes[batch.clone()]) {
                        let (result, attempts) = self
                            .send_traced(
                                std::slice::from_ref(item),
                                std::slice::from_ref(notification),
                            )
                            .await;
                        let gave_up = matches!(result, BatchResult::GaveUp { .. });
                        outcome.attempts += attempts;
                        outcome.outcome = self.conclude(result, 1);
                        if gave_up {
                            break 'batches;
                        }
                    }
                }
                result => {
                    let gave_up = matches!(result, BatchResult::GaveUp { .. });
                    let outcome = self.conclude(result, items.len());
                    set(&mut outcomes[batch.clone()], outcome);
                    if gave_up {
                        break 'batches;
                    }
                }
            }
            for index in batch.clone() {
                progress.report(index, outcomes[index].clone());
            }
            if !progress.passed(batch.end).await {
                break;
            }
        }
        PublishReport { outcomes }
    }

    /// The outcome of a batch of `count` notifications that ended as
    /// `result`, logged.
    fn conclude(&self, result: BatchResult, count: usize) -> DeliveryOutcome {
        match result {
            BatchResult::Delivered => DeliveryOutcome::Delivered,
            BatchResult::Refused { status, body } => {
                tracing::warn!(
                    url = %self.url,
                    status = status.as_u16(),
                    notifications = count,
                    "Event Grid refused notifications; they go to the dead letters: {body}"
                );
                DeliveryOutcome::DeadLettered {
                    status: Some(status.as_u16()),
                    reason: body,
                }
            }
            BatchResult::GaveUp { last_error } => {
                tracing::warn!(
                    url = %self.url,
                    notifications = count,
                    "giving up publishing to Event Grid for now: {last_error}"
                );
                DeliveryOutcome::GaveUp { last_error }
            }
        }
    }

    /// [`send_with_retries`](Self::send_with_retries) in the span of the
    /// post of `notifications` (see the [module docs](self)).
    async fn send_traced(
        &self,
        items: &[EncodedNotification],
        notifications: &[Notification],
    ) -> (BatchResult, u32) {
        let span = tracing::debug_span!(
            "eventgrid.publish",
            otel.kind = "producer",
            url = %self.url,
            notifications = items.len(),
        );
        let first =
            telemetry::continue_batch(&span, notifications.iter().map(Notification::traceparent));
        let traceparent = telemetry::traceparent(&span, first.as_ref())
            .and_then(|parent| HeaderValue::from_str(parent.as_str()).ok());
        self.send_with_retries(items, traceparent.as_ref())
            .instrument(span)
            .await
    }

    /// Sends one batch until it is accepted, refused, or out of attempts.
    /// Returns how it ended and how many requests it took.
    async fn send_with_retries(
        &self,
        items: &[EncodedNotification],
        traceparent: Option<&HeaderValue>,
    ) -> (BatchResult, u32) {
        let body = request_body(items);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.send_once(body.clone(), traceparent).await {
                Attempt::Accepted => return (BatchResult::Delivered, attempt),
                Attempt::Refused { status, body } => {
                    return (BatchResult::Refused { status, body }, attempt);
                }
                Attempt::Failed { error, retry_after } => (error, retry_after),
            };
            if attempt >= self.retry.max_attempts.get() {
                return (BatchResult::GaveUp { last_error: error }, attempt);
            }
            let delay = self.retry.delay(attempt, retry_after);
            tracing::info!(
                url = %self.url,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "publishing to Event Grid failed, retrying: {error}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request.
    async fn send_once(&self, body: Vec<u8>, traceparent: Option<&HeaderValue>) -> Attempt {
        let mut headers = self.headers();
        if let Some(traceparent) = traceparent {
            headers.insert(TRACEPARENT_HEADER, traceparent.clone());
        }
        let response = match self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Failed {
                    error: error_chain(&e),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Accepted;
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_body(response).await;
        if is_retryable(status) {
            Attempt::Failed {
                error: format!("{status}: {body}"),
                retry_after,
            }
        } else {
            Attempt::Refused { status, body }
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(match self.schema {
                EventSchema::EventGrid => EVENT_GRID_CONTENT_TYPE,
                EventSchema::CloudEvents { .. } => CLOUDEVENTS_BATCH_CONTENT_TYPE,
            }),
        );
        match &self.auth {
            PreparedAuth::Key(value) => {
                headers.insert(KEY_HEADER, value.clone());
            }
            PreparedAuth::SasToken { key, ttl } => {
                let expires = OffsetDateTime::now_utc() + *ttl;
                let token = sas_token(&self.resource, expires, key);
                // Only URL-encoded ASCII: always a valid header value.
                if let Ok(mut value) = HeaderValue::from_str(&token) {
                    value.set_sensitive(true);
                    headers.insert(TOKEN_HEADER, value);
                }
            }
        }
        headers
    }
}

/// Sets every outcome of a slice.
fn set(outcomes: &mut [NotificationOutcome], outcome: DeliveryOutcome) {
    for o in outcomes {
        o.outcome = outcome.clone();
    }
}

/// Whether a status refuses the request's content (so that sending the
/// notifications one by one can isolate the bad ones), as opposed to the
/// credentials or the endpoint.
fn about_content(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
    )
}

/// 408, 429 and 5xx are worth retrying; nothing else that is not a success.
fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The request URL and the SAS resource of an endpoint.
fn events_url(endpoint: &str) -> Result<(Url, String), PublisherError> {
    let invalid = |reason: &str| PublisherError::InvalidEndpoint(reason.to_owned());
    let mut url = Url::parse(endpoint.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("the scheme must be https (or http)"));
    }
    // Refused rather than stripped: credentials in a URL end up in logs.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it may not hold credentials; configure the key instead",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it may not have a query or a fragment"));
    }
    let path = url.path().trim_end_matches('/');
    let path = if path.ends_with(EVENTS_PATH) {
        path.to_owned()
    } else {
        format!("{path}{EVENTS_PATH}")
    };
    url.set_path(&path);
    let resource = url.as_str().to_owned();
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    Ok((url, resource))
}

/// Greedy, order-keeping split into contiguous batches of at most
/// `max_events` whose request body (`[` + events joined by `,` + `]`) fits
/// in [`MAX_REQUEST_BYTES`]. An event too large to fit even alone gets a
/// batch of its own (Event Grid will refuse it, and only it).
fn batches(encoded: &[EncodedNotification], max_events: NonZeroUsize) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = 2; // the brackets
    for (i, e) in encoded.iter().enumerate() {
        let added = e.json.len() + usize::from(i > start);
        if i > start && (size + added > MAX_REQUEST_BYTES || i - start == max_events.get()) {
            batches.push(start..i);
            start = i;
            size = 2 + e.json.len();
        } else {
            size += added;
        }
    }
    if start < encoded.len() {
        batches.push(start..encoded.len());
    }
    batches
}

/// A JSON array of the events, as one body.
fn request_body(items: &[EncodedNotification]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + items.iter().map(|e| e.json.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.json.as_bytes());
    }
    body.push(b']');
    body
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The response body, cut to [`MAX_DEAD_LETTER_BODY`] bytes.
async fn read_body(response: reqwest::Response) -> String {
    match response.text().await {
        Ok(mut text) => {
            if text.len() > MAX_DEAD_LETTER_BODY {
                let mut end = MAX_DEAD_LETTER_BODY;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            text
        }
        Err(e) => format!("<unreadable response body: {}>", error_chain(&e)),
    }
}

/// An `aeg-sas-token` for `resource`, valid until `expires`, signed with
/// the decoded access key (see [`Auth::SasToken`]).
fn sas_token(resource: &str, expires: OffsetDateTime, key: &[u8]) -> String {
    let unsigned = format!(
        "r={}&e={}",
        url_encode(resource),
        url_encode(&us_date_time(expires))
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 takes a key of any length");
    mac.update(unsigned.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    format!("{unsigned}&s={}", url_encode(&signature))
}

/// `application/x-www-form-urlencoded`, as .NET's `HttpUtility.UrlEncode`
/// and Python's `quote_plus` in Event Grid's samples.
fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `6/15/2017 6:20:15 PM`: the en-US date and time Event Grid's SAS
/// samples write, in UTC.
fn us_date_time(time: OffsetDateTime) -> String {
    let time = time.to_offset(time::UtcOffset::UTC);
    let (hour, period) = match time.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{} {hour}:{:02}:{:02} {period}",
        u8::from(time.month()),
        time.day(),
        time.year(),
        time.minute(),
        time.second()
    )
}

#[async_trait::async_trait]
impl NotificationSink for EventGridPublisher {
    async fn deliver(
        &self,
        notifications: &[Notification],
        progress: &Progress,
    ) -> Vec<NotificationOutcome> {
        self.publish_reporting(notifications, progress)
            .await
            .outcomes
    }
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;
    use uuid::Uuid;

    use super::*;

    fn encoded(len: usize) -> EncodedNotification {
        EncodedNotification {
            id: Uuid::nil(),
            json: "x".repeat(len),
            payload_omitted: false,
        }
    }

    #[test]
    fn batches_fit_the_request_limit_and_keep_order() {
        let third = MAX_REQUEST_BYTES / 3;
        let items = vec![encoded(third), encoded(third), encoded(third), encoded(10)];
        // Three thirds plus brackets and commas overflow by 4 bytes.
        assert_eq!(batches(&items, ANY), vec![0..2, 2..4]);
        for range in batches(&items, ANY) {
            assert!(request_body(&items[range]).len() <= MAX_REQUEST_BYTES);
        }
        // Exactly at the limit: one batch.
        let exact = vec![
            encoded(MAX_REQUEST_BYTES / 2 - 2),
            encoded(MAX_REQUEST_BYTES / 2 - 1),
        ];
        assert_eq!(request_body(&exact).len(), MAX_REQUEST_BYTES);
        assert_eq!(batches(&exact, ANY), vec![0..2]);
        // Too large even alone: a batch of its own.
        let huge = vec![encoded(1), encoded(MAX_REQUEST_BYTES), encoded(1)];
        assert_eq!(batches(&huge, ANY), vec![0..1, 1..2, 2..3]);
        assert!(batches(&[], ANY).is_empty());
    }

    const ANY: NonZeroUsize = NonZeroUsize::MAX;

    #[test]
    fn batches_hold_at_most_the_configured_count() {
        let items: Vec<_> = (0..7).map(|_| encoded(10)).collect();
        let three = NonZeroUsize::new(3).unwrap();
        assert_eq!(batches(&items, three), vec![0..3, 3..6, 6..7]);
        let one = NonZeroUsize::new(1).unwrap();
        assert_eq!(batches(&items[..2], one), vec![0..1, 1..2]);
        // The byte limit still splits earlier.
        let third = MAX_REQUEST_BYTES / 3;
        let large = vec![encoded(third), encoded(third), encoded(third)];
        assert_eq!(batches(&large, three), vec![0..2, 2..3]);
    }

    #[test]
    fn request_bodies_are_json_arrays() {
        let items = [
            EncodedNotification {
                id: Uuid::nil(),
                json: r#"{"a":1}"#.into(),
                payload_omitted: false,
            },
            EncodedNotification {
                id: Uuid::nil(),
                json: r#"{"b":2}"#.into(),
                payload_omitted: false,
            },
        ];
        assert_eq!(request_body(&items), br#"[{"a":1},{"b":2}]"#);
        assert_eq!(request_body(&[]), b"[]");
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let policy = RetryPolicy {
            max_attempts: NonZeroU32::new(10).unwrap(),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        let ceiling = |attempt| policy.delay_with(attempt, None, 1.0);
        assert_eq!(ceiling(1), Duration::from_millis(100));
        assert_eq!(ceiling(2), Duration::from_millis(200));
        assert_eq!(ceiling(4), Duration::from_millis(800));
        assert_eq!(ceiling(5), Duration::from_secs(1));
        assert_eq!(ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(policy.delay_with(3, None, 0.0), Duration::ZERO);
        assert_eq!(policy.delay_with(3, None, 0.5), Duration::from_millis(200));
        for attempt in 1..10 {
            assert!(policy.delay(attempt, None) <= ceiling(attempt));
        }
        // Retry-After wins over the backoff, up to the cap.
        let after = Some(Duration::from_secs(3));
        assert_eq!(policy.delay_with(1, after, 0.0), Duration::from_secs(3));
        let long = Some(Duration::from_secs(3600));
        assert_eq!(policy.delay_with(1, long, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn statuses_are_classified() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 413] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        assert!(about_content(StatusCode::BAD_REQUEST));
        assert!(about_content(StatusCode::PAYLOAD_TOO_LARGE));
        assert!(!about_content(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn endpoints_are_normalised_and_checked() {
        for endpoint in [
            "https://t.westus-1.eventgrid.azure.net",
            "https://t.westus-1.eventgrid.azure.net/",
            "https://t.westus-1.eventgrid.azure.net/api/events",
        ] {
            let (url, resource) = events_url(endpoint).unwrap();
            assert_eq!(
                url.as_str(),
                "https://t.westus-1.eventgrid.azure.net/api/events?api-version=2018-01-01"
            );
            assert_eq!(
                resource,
                "https://t.westus-1.eventgrid.azure.net/api/events"
            );
        }
        for bad in [
            "t.eventgrid.azure.net",
            "ftp://t.eventgrid.azure.net",
            "https://user:hunter2@t.eventgrid.azure.net",
            "https://t.eventgrid.azure.net/api/events?aeg-sas-key=hunter2",
        ] {
            let err = events_url(bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn sas_tokens_match_event_grids_samples() {
        let expires = OffsetDateTime::parse("2017-06-15T18:20:15Z", &Rfc3339).unwrap();
        assert_eq!(us_date_time(expires), "6/15/2017 6:20:15 PM");
        let midnight = OffsetDateTime::parse("2030-01-02T00:05:09+01:00", &Rfc3339).unwrap();
        assert_eq!(us_date_time(midnight), "1/1/2030 11:05:09 PM");
        let noon = OffsetDateTime::parse("2030-01-02T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(us_date_time(noon), "1/2/2030 12:00:00 PM");
        let night = OffsetDateTime::parse("2030-01-02T00:00:00Z", &Rfc3339).unwrap();
        assert_eq!(us_date_time(night), "1/2/2030 12:00:00 AM");

        // Computed independently, with Python's hmac, hashlib and
        // urllib.parse.quote_plus, following Event Grid's Python sample.
        let token = sas_token(
            "https://mytopic.westus2-1.eventgrid.azure.net/api/events",
            expires,
            b"not a real key",
        );
        assert_eq!(
            token,
            "r=https%3A%2F%2Fmytopic.westus2-1.eventgrid.azure.net%2Fapi%2Fevents\
             &e=6%2F15%2F2017+6%3A20%3A15+PM\
             &s=yGPrgBZWIt2rZG1OHh4cAS35pjbGifgvlQPHfkOBun4%3D"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = EventGridConfig::new(
            "https://t.eventgrid.azure.net",
            EventSchema::EventGrid,
            Auth::SasToken {
                key: Secret::new("c2VjcmV0LWtleS12YWx1ZQ=="),
                ttl: Duration::from_secs(60),
            },
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("c2VjcmV0LWtleS12YWx1ZQ=="), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let publisher = EventGridPublisher::new(config).unwrap();
        let debug = format!("{publisher:?}");
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert!(!debug.contains("secret-key-value"), "{debug}");

        let keyed = EventGridConfig::new(
            "https://t.eventgrid.azure.net",
            EventSchema::EventGrid,
            Auth::Key(Secret::new("hunter2-key")),
        );
        assert!(!format!("{keyed:?}").contains("hunter2"));
        let publisher = EventGridPublisher::new(keyed).unwrap();
        assert!(!format!("{publisher:?}").contains("hunter2"));

        let not_base64 = EventGridConfig::new(
            "https://t.eventgrid.azure.net",
            EventSchema::EventGrid,
            Auth::SasToken {
                key: Secret::new("hunter2 is not base64!"),
                ttl: Duration::from_secs(60),
            },
        );
        let err = EventGridPublisher::new(not_base64).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
