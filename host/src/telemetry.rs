//! Traces: the process's `tracing` subscriber, OpenTelemetry export over
//! OTLP/HTTP when it is configured, and the bridge between a stored
//! [`TraceParent`] and the spans that continue it.
//!
//! The host's code opens plain `tracing` spans at `debug` level where work
//! happens (a request, a command, a handler call, each import call, an
//! append, a dispatch round, an Event Grid publish, a notification
//! handler's run). With export off no subscriber wants them, so each costs
//! a cached callsite check; with export on, [`install`] adds
//! `tracing-opentelemetry`'s layer for this crate's spans only, and the
//! helpers here give them their remote parents and read back the
//! `traceparent` to store or send. This module decides nothing about what
//! gets a span, and nothing here ever fails a request: a trace is advice.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::model::TraceParent;

/// The service name spans are exported under when neither the
/// configuration nor `OTEL_SERVICE_NAME` names one.
const DEFAULT_SERVICE_NAME: &str = "cqrs-wasi";

/// Whether spans are being exported: only then do the helpers below touch
/// OpenTelemetry at all. Set by [`install`], for the life of the process.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The `[telemetry]` table: where traces go. Export is off unless an
/// endpoint is configured here or in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`); spans
    /// are posted to `{endpoint}/v1/traces`. Unset: the OpenTelemetry
    /// environment variables decide (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// used as it is, or `OTEL_EXPORTER_OTLP_ENDPOINT`, a base URL); with
    /// neither, nothing is exported.
    pub endpoint: Option<String>,
    /// The `service.name` of the exported spans. Unset:
    /// `OTEL_SERVICE_NAME`, or `cqrs-wasi`.
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    /// Where spans go, if anywhere: `None` when export is off.
    /// `OTEL_SDK_DISABLED=true` turns it off whatever else says.
    fn export_to(&self) -> Option<Endpoint> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        match &self.endpoint {
            Some(base) => Some(Endpoint::Url(format!(
                "{}/v1/traces",
                base.trim_end_matches('/')
            ))),
            None => (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
            .then_some(Endpoint::FromEnvironment),
        }
    }
}

/// Where the exporter sends spans.
enum Endpoint {
    Url(String),
    /// The exporter reads the OpenTelemetry variables itself.
    FromEnvironment,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint, say).
    #[error("cannot export traces: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was set already.
    #[error("cannot install the log and trace subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed subscriber. Dropping it exports the spans still buffered
/// and stops export: keep it for the life of the process.
#[derive(Debug)]
#[must_use = "dropping it stops exporting traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(error) = provider.shutdown() {
                // The subscriber may be gone already: say it plainly.
                eprintln!("the last traces were not exported: {error}");
            }
        }
    }
}

/// Installs the process's subscriber: log lines on stdout at `info`
/// unless `RUST_LOG` says otherwise, and, when `config` (or the
/// environment) names a collector, this crate's spans exported over
/// OTLP/HTTP in batches (`OTEL_BSP_*` tune them).
pub fn install(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let logs = fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
    let Some(endpoint) = config.export_to() else {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    let exporter = match &endpoint {
        Endpoint::Url(url) => exporter.with_endpoint(url),
        Endpoint::FromEnvironment => exporter,
    }
    .build()?;
    let resource = match &config.service_name {
        Some(name) => Resource::builder().with_service_name(name.clone()),
        None if std::env::var_os("OTEL_SERVICE_NAME").is_some() => Resource::builder(),
        None => Resource::builder().with_service_name(DEFAULT_SERVICE_NAME),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    // Only this crate's spans: the exporter's own HTTP client (and every
    // other dependency) would otherwise trace its own exports.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cqrs-wasi-host"))
        .with_filter(Targets::new().with_target("cqrs_wasi_host", tracing::Level::DEBUG));
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Whether spans are exported; when not, nothing needs a span's context.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

fn span_context(parent: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from(parent.trace_id_bits()),
        SpanId::from(parent.span_id_bits()),
        TraceFlags::new(parent.flags()),
        true,
        TraceState::NONE,
    )
}

/// Makes `parent` (from a request, an event, a notification) the parent of
/// `span`, which must not have been entered yet.
pub(crate) fn continue_trace(span: &Span, parent: Option<&TraceParent>) {
    if let Some(parent) = parent
        && exporting()
    {
        let parent = opentelemetry::Context::new().with_remote_span_context(span_context(parent));
        // Fails only for a span no subscriber records: nothing to do.
        let _ = span.set_parent(parent);
    }
}

/// Like [`continue_trace`], but only when the current span is in no trace:
/// a command run inside a request (or a notification handler) is already
/// that span's child, and `parent` is where the request came from.
pub(crate) fn adopt(span: &Span, parent: Option<&TraceParent>) {
    if exporting() && !in_trace(&Span::current()) {
        continue_trace(span, parent);
    }
}

/// For work done for several traces at once (one Event Grid post of many
/// notifications): `span` continues the first of `parents` there is, and
/// links to the others. Returns that first one.
pub(crate) fn continue_batch<'a>(
    span: &Span,
    parents: impl IntoIterator<Item = Option<&'a TraceParent>>,
) -> Option<TraceParent> {
    let mut parents = parents.into_iter().flatten();
    let first = parents.next()?;
    continue_trace(span, Some(first));
    if exporting() {
        for other in parents.filter(|other| *other != first) {
            span.add_link(span_context(other));
        }
    }
    Some(first.clone())
}

fn in_trace(span: &Span) -> bool {
    span.context().span().span_context().is_valid()
}

/// The `traceparent` to store or send from inside `span`: its own when
/// spans are exported, else `fallback` (what came in), passed on as it is,
/// so that a host that exports nothing still lets a trace through.
pub(crate) fn traceparent(span: &Span, fallback: Option<&TraceParent>) -> Option<TraceParent> {
    if exporting() {
        let context = span.context();
        let own = context.span();
        let own = own.span_context();
        if own.is_valid() {
            return TraceParent::new(
                u128::from_be_bytes(own.trace_id().to_bytes()),
                u64::from_be_bytes(own.span_id().to_bytes()),
                own.trace_flags().to_u8(),
            );
        }
    }
    fallback.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_without_an_endpoint() {
        // The test environment sets no OTEL_* variables.
        assert!(TelemetryConfig::default().export_to().is_none());
        let configured = TelemetryConfig {
            endpoint: Some("http://127.0.0.1:4318/".into()),
            service_name: None,
        };
        assert!(matches!(
            configured.export_to(),
            Some(Endpoint::Url(url)) if url == "http://127.0.0.1:4318/v1/traces"
        ));
    }

    #[test]
    fn without_export_a_traceparent_passes_through_unchanged() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").ok();
        let span = tracing::debug_span!("command");
        continue_trace(&span, parent.as_ref());
        assert_eq!(traceparent(&span, parent.as_ref()), parent);
        assert_eq!(traceparent(&span, None), None);
    }
}
