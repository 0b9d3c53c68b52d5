//! The cqrs-wasi host: event sourcing and CQRS with every piece of business
//! logic in a WebAssembly component.
#![deny(missing_docs)]

pub mod api;
pub mod config;
mod host;
pub mod model;
pub mod registry;
pub mod runtime;
pub mod store;

pub use host::{
    BuildError, CommandOutcome, CommandRequest, ComponentInfo, Host, HostBuilder, HostError,
    HostOptions, ProjectionState,
};
