//! Handlers written in Rust and run by the host itself, beside wasm
//! components: the same routing, the same store work, no sandbox.
//!
//! An embedding program implements [`NativeHandlers`] and deploys it under a
//! name (`Host::deploy_native`); from then on its commands and projections
//! are routed, pinned, appended, folded and cached exactly as a component's
//! are, and it shares a component's grants. What it does not get is the
//! sandbox: no instance, no deadline, no memory limit; it runs on the
//! host's threads with the host's privileges, so it is only for code the
//! embedder trusts as it trusts itself.
//!
//! The calls take and return what the WIT exports do, so that the host's
//! flows (validation of the events returned, of the states folded) do not
//! know which kind of handler answered.

use super::bindings::wit;
use super::roles::StoreReads;
use super::routes::{CommandRoute, ProjectionRoute};
use crate::model::{RecordedEvent, StreamId};

/// Command handlers and projections in Rust, for [`Host::deploy_native`](crate::Host::deploy_native).
#[async_trait::async_trait]
pub trait NativeHandlers: Send + Sync + 'static {
    /// The commands it handles, as a component's `describe` lists them.
    fn commands(&self) -> Vec<CommandRoute>;

    /// The projections it computes.
    fn projections(&self) -> Vec<ProjectionRoute>;

    /// Handles one command, as `command-handler.handle`: `reads` serves
    /// what a component's `event-store` import would, the command's own
    /// stream pinned at the sequence the host appends after.
    async fn handle(
        &self,
        command: &wit::Command<'_>,
        reads: &dyn StoreReads,
    ) -> Result<Vec<wit::NewEvent>, wit::CommandError>;

    /// Folds `events` of `stream` into `state` (JSON; `None` for the
    /// initial state) and returns the new state (JSON), as
    /// `projection.apply`. Only the event types `projection` declares are
    /// passed.
    fn apply(
        &self,
        projection: &ProjectionRoute,
        state: Option<&[u8]>,
        stream: &StreamId,
        events: &[&RecordedEvent],
    ) -> Result<Vec<u8>, wit::ProjectionError>;
}
