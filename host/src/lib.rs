//! The cqrs-wasi host: event sourcing and CQRS with every piece of business
//! logic in a WebAssembly component.
//!
//! A [`Host`] runs command handlers and projections compiled to
//! `wasm32-wasip2` components of the `cqrs-wasi:handlers` WIT package, over
//! an [`EventStore`](store::EventStore). The `cqrs-wasi` binary wraps it in
//! an HTTP API ([`api`]) configured from TOML ([`config`]); a Rust program
//! can embed it directly:
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_wasi_host::{CommandRequest, Host};
//! use cqrs_wasi_host::model::StreamId;
//! use cqrs_wasi_host::store::MemoryStore;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let host = Host::builder().store(Arc::new(MemoryStore::new())).build()?;
//! host.deploy("bank", std::fs::read("bank.wasm")?).await?;
//!
//! let account = StreamId::new("Bank", "Account", "acc-1")?;
//! host.execute(CommandRequest::new(account.clone(), "OpenAccount", r#"{"owner": "Ada"}"#)?).await?;
//! host.execute(CommandRequest::new(account.clone(), "Deposit", r#"{"amount": 10}"#)?).await?;
//!
//! let balance = host.project(&account, "Balance", None).await?;
//! assert_eq!(balance.state.get(), r#"{"balance":10,"open":true}"#);
//! # Ok(())
//! # }
//! ```
//!
//! `host/examples/embed.rs` is the same as a program (and a test). The
//! store can be used on its own, too:
//!
//! ```
//! use cqrs_wasi_host::model::{EventContext, Expectation, KindSet, NewEvent, StreamId};
//! use cqrs_wasi_host::store::{AppendRequest, EventStore, MemoryStore, StoreError};
//! use serde_json::value::RawValue;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let store = MemoryStore::new();
//! let stream = StreamId::new("Bank", "Account", "acc-1")?;
//! let opened = NewEvent::new("AccountOpened", RawValue::from_string(r#"{"owner":"Ada"}"#.into())?)?;
//! let append = |expectation| AppendRequest {
//!     stream: stream.clone(),
//!     expectation,
//!     events: vec![opened.clone()],
//!     context: EventContext::default(),
//!     command: None,
//!     raise: KindSet::NONE,
//! };
//! let outcome = store.append(append(Expectation::NoStream)).await?;
//! assert_eq!(outcome.stream_sequence, 1);
//!
//! // The same event id again: a no-op that returns the original outcome.
//! assert_eq!(store.append(append(Expectation::NoStream)).await?, outcome);
//! // A stale expectation: a conflict that says where the stream is.
//! let mut stale = append(Expectation::Exact(0));
//! stale.events[0].event_id = uuid::Uuid::new_v4();
//! assert!(matches!(store.append(stale).await, Err(StoreError::Conflict { actual: 1, .. })));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

// The embedding API is the crate root's re-exports and the five public
// modules below; everything else is the host's own business, private so
// that the compiler tells us when something stops being used.
pub mod config;
pub mod model;
pub mod notifications;
pub mod store;
pub mod telemetry;

mod api;
mod atomic_file;
mod error_chain;
mod grants;
mod host;
mod registry;
mod repository;
mod runtime;
mod secret;
mod watch;

pub use api::{ApiConfig, no_delay, router};
pub use grants::Grants;
pub use host::{
    BuildError, CommandOutcome, CommandRequest, ComponentInfo, Delivery, Host, HostBuilder,
    HostConfig, HostError, IncomingNotification, ProjectionState,
};
pub use runtime::{GuestFault, Isolation, LoadError, ReuseConfig, RuntimeConfig, digest_of};
pub use secret::Secret;
pub use watch::watch_directory;

/// Command handlers and projections written in Rust and deployed beside
/// components ([`Host::deploy_native`]): the trait they implement and the
/// types it speaks, which are the WIT package's.
pub mod native {
    pub use crate::runtime::{CommandRoute, NativeHandlers, ProjectionRoute, StoreReads, wit};
}

/// What the fuzz targets (`host/fuzz`) drive: the decoders of untrusted
/// HTTP input. Not part of the embedding API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::api::decode_command;
    pub use crate::api::eventgrid::{Delivery, decode_delivery};
}
