//! The cqrs-wasi benchmark suite (issue 7): the host's command path,
//! projections, storage and swaps, each measured against its baseline in
//! the same run.
//!
//! - [`suite`] runs the figures and returns [`report::Row`]s, as [`config`]
//!   sets the run up;
//! - [`load`] drives N clients and keeps latencies in a histogram;
//! - [`native`] is the native baseline: the bank's domain logic run
//!   through the same store work the host does;
//! - [`peers`] holds the bank as a `cqrs-es` aggregate and an in-memory
//!   `PersistedEventRepository`; [`pg`] sets up PostgreSQL for our store and
//!   `postgres-es`;
//! - [`systems`] puts every system under test behind one interface, and
//!   [`http_load`] is the lean HTTP load generator of figure 8;
//! - [`notify`] measures notification dispatch and local delivery;
//! - [`report`] writes the table and the JSON.
//!
//! `cargo xtask bench` runs it all (see BENCHMARKS.md).
#![deny(missing_docs)]

pub mod config;
pub mod http_load;
pub mod load;
pub mod native;
pub mod notify;
pub mod peers;
pub mod pg;
pub mod report;
pub mod suite;
pub mod systems;
