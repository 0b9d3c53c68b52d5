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

/// Runs the request in a server span named after its route.
pub(super) async fn trace_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unrouted", MatchedPath::as_str)
        .to_owned();
    let span = tracing::debug_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, traceparent(request.headers()).as_ref());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
