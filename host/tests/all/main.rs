//! The host's integration tests, in one binary (as wasmtime's
//! `tests/all`): linking wasmtime once rather than once per file, and
//! building the components the tests load once per run. Each module is one
//! area; `cargo test -p cqrs-wasi-host --test all bank::` runs one of them.
//!
//! [`support`] holds what the modules share: the real components, a host
//! serving HTTP on a loopback port, `cqrs-wasi serve` processes, and an
//! Event Grid stand-in.

mod bank;
mod components;
mod crash;
mod event_grid;
mod hot_swap;
mod idempotency;
mod jco;
mod languages;
mod limits;
mod local_handlers;
mod native;
mod notifications;
mod onboarding;
mod outbox;
mod postgres_hosts;
mod projections;
mod properties;
mod readme;
mod retention;
mod sandbox;
mod secrets;
mod shutdown;
mod store_faults;
mod support;
mod traces;
mod two_hosts;
mod warm;
