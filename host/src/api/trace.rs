//! The request span: every request runs in one, which continues the trace
//! its `traceparent` header names. A header that is not a valid
//! `traceparent` is ignored (the request starts a trace of its own), never
//! an error: tracing is advice.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::model::TraceParent;
use crate::telemetry;

/// The W3C Trace Context header.
pub(super) const TRACEPARENT: &str = "traceparent";

/// The request's `traceparent`, if it has a valid one.
pub(super) fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    TraceParent::parse(value)
        .inspect_err(|error| tracing::debug!(%error, "ignored the request's traceparent"))
        .ok()
}

/// Runs the request in a server span named after its route. With export
/// off the span is disabled, and nothing here reads the request.
pub(super) async fn trace_requests(request: Request, next: Next) -> Response {
    let span = tracing::debug_span!(
        "http.request",
        otel.name = %format_args!("{} {}", request.method(), route(&request)),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = route(&request),
        http.response.status_code = tracing::field::Empty,
    );
    if telemetry::exporting() {
        telemetry::continue_trace(&span, traceparent(request.headers()).as_ref());
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The route the request matched (`/api/commands/{domain}/...`), which
/// names its span without the request's own (unbounded) path.
fn route(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unrouted", MatchedPath::as_str)
}
