//! Prometheus metrics of the HTTP API, served at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    /// `ok`, or the error code.
    outcome: &'static str,
}

/// Counters and histograms of commands and projection queries.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    commands: Family<Outcome, Counter>,
    command_seconds: Histogram,
    projections: Family<Outcome, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("cqrs_wasi");
        let commands = Family::<Outcome, Counter>::default();
        // 100 µs to ~6.5 s.
        let command_seconds = Histogram::new(exponential_buckets(0.0001, 3.0, 11));
        let projections = Family::<Outcome, Counter>::default();
        registry.register("commands", "Commands handled, by outcome", commands.clone());
        registry.register(
            "command_duration_seconds",
            "Time to handle a command, from request to response",
            command_seconds.clone(),
        );
        registry.register(
            "projection_queries",
            "Projection queries served, by outcome",
            projections.clone(),
        );
        Metrics {
            registry,
            commands,
            command_seconds,
            projections,
        }
    }

    pub(crate) fn command(&self, outcome: &'static str, elapsed: Duration) {
        self.commands.get_or_create(&Outcome { outcome }).inc();
        self.command_seconds.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn projection(&self, outcome: &'static str) {
        self.projections.get_or_create(&Outcome { outcome }).inc();
    }

    /// The text exposition format, without the closing `# EOF`, so that
    /// the notification metrics can follow.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        text
    }
}
