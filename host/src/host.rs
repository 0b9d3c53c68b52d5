//! The host: commands in, events out, projections on demand.
//!
//! [`Host`] ties the runtime, the registry and a store together and runs the
//! flows of DESIGN.md: a command is routed to its handler, run against a
//! pinned view of its stream, and its events appended with the expectation
//! "exactly at the sequence the handler saw"; a projection folds a stream's
//! events in batches. It raises notifications: the change feed through the
//! outbox rows of each append, projection-completed notifications by running
//! the projections of changed streams ([`propagate`]), and it delivers them
//! to notification handlers ([`notify`]) and every other destination
//! through the [`Dispatcher`]. It is the library API embedders use; it knows
//! nothing about HTTP or configuration files.

mod cache;
mod commands;
mod heads;
mod local_handlers;
mod notification_services;
mod notify;
mod projections;
mod propagate;
mod reads;
mod stream_locks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use time::OffsetDateTime;

pub use commands::{CommandOutcome, CommandRequest};
pub use notify::{Delivery, IncomingNotification};
pub use projections::ProjectionState;

use crate::grants::{Capabilities, Grants};
use crate::model::{
    CommandId, CommandType, Domain, EntityType, NameError, NameKind, ProjectionType, RecordedEvent,
    StreamId, validate_name,
};
use crate::notifications::follow::Followers;
use crate::notifications::model::NotificationKind;
use crate::notifications::retention::Retention;
use crate::notifications::{
    DeliveryOutcome, Destination, DestinationStatus, Dispatcher, RaisePolicy, RedriveError,
    RetryPolicy,
};
use crate::registry::{Registry, RollbackError, RouteConflict, VersionInfo};
use crate::repository::{Repository, RepositoryError};
use crate::runtime::{
    GuestFault, LoadError, LoadedComponent, NativeHandlers, Runtime, RuntimeConfig, RuntimeError,
    digest_of,
};
use crate::store::{DeadLetter, EventStore, InstancePage, StoreError};

/// The destination name of the local notification handlers.
pub const LOCAL_HANDLERS: &str = "@local";

/// The checkpoint name of projection propagation (it follows event
/// positions, not outbox rows).
const PROJECTIONS: &str = "@projections";

/// Why a host operation failed. Each variant has a stable [`code`](HostError::code).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A name in the request is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The handler refused the command's payload.
    #[error("invalid payload for {command_type}: {message}")]
    InvalidPayload {
        /// The command's type.
        command_type: CommandType,
        /// The handler's explanation.
        message: String,
    },
    /// No live component handles that command.
    #[error("no handler for command {command_type} on {domain}/{entity_type}")]
    NoHandler {
        /// The command's domain.
        domain: Domain,
        /// The command's entity type.
        entity_type: EntityType,
        /// The command's type.
        command_type: CommandType,
    },
    /// No live component computes that projection.
    #[error("no projection {projection_type} of {domain}/{entity_type}")]
    NoProjection {
        /// The stream's domain.
        domain: Domain,
        /// The stream's entity type.
        entity_type: EntityType,
        /// The projection asked for.
        projection_type: ProjectionType,
    },
    /// The domain's rules refused the command; nothing was appended.
    #[error("{message}")]
    Rejected {
        /// The handler's message.
        message: String,
    },
    /// Other appends to the stream kept winning; the command was re-run the
    /// configured number of times and nothing was appended.
    #[error(
        "stream {stream} kept changing while the command ran ({attempts} attempts); nothing was appended"
    )]
    Conflict {
        /// The contested stream.
        stream: StreamId,
        /// How many times the handler ran.
        attempts: u32,
    },
    /// The command id was already used for another command: another type,
    /// stream or payload.
    #[error(
        "command id {:?} was already used for another command (first {command_type} on {stream}); a retry sends the same command type, stream and payload",
        command_id.as_str()
    )]
    CommandIdReused {
        /// The reused id.
        command_id: CommandId,
        /// The command type it was first used with.
        command_type: CommandType,
        /// The stream it was first used on.
        stream: StreamId,
    },
    /// The guest answered with an error of its own.
    #[error("component {component} failed: {message}")]
    HandlerFailed {
        /// The component's name.
        component: String,
        /// What it said.
        message: String,
    },
    /// The guest returned something the host cannot accept (an invalid
    /// event type, a payload or state that is not JSON).
    #[error("component {component} returned invalid output: {message}")]
    InvalidOutput {
        /// The component's name.
        component: String,
        /// What was wrong.
        message: String,
    },
    /// The guest trapped, ran out of time or could not be instantiated.
    #[error(transparent)]
    Guest(#[from] GuestFault),
    /// A component was refused at deploy.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A component claims a route another one owns.
    #[error("component refused: {0}")]
    RouteConflict(#[from] RouteConflict),
    /// A rollback named no known version.
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    /// A component claims routes its grants do not allow.
    #[error("component {component} may not append to domain {domain}, but handles commands in it")]
    NotGranted {
        /// The component's name.
        component: String,
        /// The domain it is not granted.
        domain: String,
    },
    /// The component repository on disk failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HostError {
    /// A stable, machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::InvalidName(_) => "invalid_name",
            HostError::InvalidPayload { .. } => "invalid_payload",
            HostError::NoHandler { .. } => "no_handler",
            HostError::NoProjection { .. } => "no_projection",
            HostError::Rejected { .. } => "rejected",
            HostError::Conflict { .. } => "conflict",
            HostError::CommandIdReused { .. } => "idempotency_key_reused",
            HostError::HandlerFailed { .. } => "handler_failed",
            HostError::InvalidOutput { .. } => "invalid_output",
            HostError::Guest(GuestFault::DeadlineExceeded { .. }) => "deadline_exceeded",
            HostError::Guest(GuestFault::Busy { .. }) => "busy",
            HostError::Guest(_) => "guest_fault",
            HostError::Load(_) => "invalid_component",
            HostError::RouteConflict(_) => "route_conflict",
            HostError::Rollback(_) => "unknown_version",
            HostError::NotGranted { .. } => "not_granted",
            HostError::Repository(_) => "repository_error",
            HostError::Store(StoreError::InvalidName(_)) => "invalid_name",
            HostError::Store(StoreError::Unavailable { .. }) => "store_unavailable",
            HostError::Store(_) => "store_error",
        }
    }
}

/// Tuning of the command and projection flows.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How many times a command handler runs before a conflict is reported.
    /// Commands to one stream are serialised within a host, so re-runs are
    /// only needed when several hosts share a store. There a host can lose
    /// several races for one stream in a row (the other host's commands to it
    /// run back to back), hence the default of 16.
    pub command_attempts: u32,
    /// Pause before the first re-run; doubled, with jitter, for each next,
    /// up to 50 ms.
    pub retry_backoff: Duration,
    /// How many events one `projection.apply` call folds.
    pub projection_batch: usize,
    /// How many projection states are kept in memory, so that the next run
    /// folds only the events appended since.
    pub snapshot_capacity: usize,
    /// How many streams' heads (last sequences) are kept in memory. A
    /// command to a stream whose head this host knows runs its handler at
    /// that sequence without asking the store; if another writer moved the
    /// stream meanwhile, the append fails on its expectation and the handler
    /// runs again at the stream's actual head, and from then on commands to
    /// that stream ask the store first. 0: every command asks.
    pub stream_heads: usize,
    /// The most events one command may produce.
    pub max_events_per_command: usize,
    /// The largest payload of one event, in bytes (Event Grid's limit for a
    /// whole event is 1 MB).
    pub max_event_bytes: usize,
    /// The largest state a projection may return, in bytes.
    pub max_state_bytes: usize,
    /// Which notifications the streams of each domain and entity type raise.
    pub raise: RaisePolicy,
    /// Retries of a notification a local handler failed: attempts, and the
    /// pauses between them; then it is dead-lettered.
    pub handler_retry: RetryPolicy,
    /// How long an outbox row every destination has delivered is kept
    /// before it is pruned (with the local handlers' completion records no
    /// redelivery can need); `None` keeps them for ever. Default 24 hours,
    /// Event Grid's default retry window, so that a redelivery through a
    /// webhook still finds its completion record.
    pub retain_delivered: Option<Duration>,
    /// How many local notification handler runs may be under way at once,
    /// across handlers and streams (each stream's notifications still reach
    /// a handler one at a time, in order). Each run also holds a call slot.
    pub handler_concurrency: std::num::NonZeroUsize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            command_attempts: 16,
            retry_backoff: Duration::from_millis(2),
            projection_batch: 1000,
            snapshot_capacity: 10_000,
            stream_heads: 10_000,
            max_events_per_command: 100,
            max_event_bytes: 1 << 20,
            max_state_bytes: 4 << 20,
            raise: RaisePolicy::default(),
            handler_retry: RetryPolicy {
                max_attempts: std::num::NonZeroU32::new(5).expect("5 is not zero"),
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                max_retry_after: Duration::from_secs(5),
            },
            retain_delivered: Some(Duration::from_secs(24 * 3600)),
            handler_concurrency: std::num::NonZeroUsize::new(16).expect("16 is not zero"),
        }
    }
}

/// Assembles a [`Host`].
#[derive(Debug, Default)]
pub struct HostBuilder {
    store: Option<Arc<dyn EventStore>>,
    runtime: RuntimeConfig,
    config: HostConfig,
    repository: Option<PathBuf>,
    grants: HashMap<String, Grants>,
    destinations: Vec<Destination>,
}

impl HostBuilder {
    /// Adds a destination of the outbox (an Event Grid topic, a sink of
    /// your own) besides the local notification handlers, which always
    /// get the change feed. Its name keeps its checkpoint and dead letters
    /// across restarts; it must not start with `@`.
    pub fn destination(mut self, destination: Destination) -> Self {
        self.destinations.push(destination);
        self
    }

    /// The event store to use. Required.
    pub fn store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Limits of the wasm runtime.
    pub fn runtime(mut self, config: RuntimeConfig) -> Self {
        self.runtime = config;
        self
    }

    /// Tuning of the command and projection flows.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps every deployed version in this directory, so that
    /// [`Host::restore`] brings back what was live after a restart and any
    /// version can be rolled back to. Without it, versions live in memory.
    pub fn repository(mut self, dir: impl Into<PathBuf>) -> Self {
        self.repository = Some(dir.into());
        self
    }

    /// What the component deployed as `name` may touch. A component with no
    /// grants may read and append to the domains it declares, and nothing
    /// else.
    pub fn grant(mut self, name: impl Into<String>, grants: Grants) -> Self {
        self.grants.insert(name.into(), grants);
        self
    }

    /// Builds the host and starts delivering notifications, on the current
    /// tokio runtime. It has no components yet: [`Host::restore`] those of
    /// the repository, or [`Host::deploy`] them.
    pub fn build(self) -> Result<Host, BuildError> {
        let store = self.store.ok_or(BuildError::NoStore)?;
        tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let mut names = std::collections::HashSet::new();
        for destination in &self.destinations {
            if destination.name.starts_with('@') || !names.insert(destination.name.clone()) {
                return Err(BuildError::DestinationName(destination.name.clone()));
            }
        }
        let repository = self.repository.map(Repository::open).transpose()?;
        let runtime = Runtime::new(self.runtime)?;
        let inner = Arc::new_cyclic(|host| {
            let mut destinations = self.destinations;
            destinations.push(Destination {
                name: LOCAL_HANDLERS.to_owned(),
                sink: Arc::new(local_handlers::LocalHandlers::new(
                    host.clone(),
                    self.config.handler_concurrency,
                )),
                retry: self.config.handler_retry.clone(),
            });
            Inner {
                snapshots: projections::SnapshotCache::new(self.config.snapshot_capacity),
                heads: heads::StreamHeads::new(self.config.stream_heads),
                runtime,
                // Without a repository a version that is unloaded is lost,
                // so every one stays compiled in memory.
                registry: Registry::new(if repository.is_some() { 4 } else { usize::MAX }),
                repository,
                dispatcher: Arc::new(Dispatcher::new(store.clone(), destinations)),
                propagation: Followers::default(),
                retention: std::sync::Mutex::new(None),
                store,
                locks: stream_locks::StreamLocks::default(),
                grants: self.grants,
                config: self.config,
            }
        });
        inner.dispatcher.start();
        let retention = Retention {
            retain: inner.config.retain_delivered,
            destinations: inner.dispatcher.destinations().map(str::to_owned).collect(),
            not_outbox: vec![PROJECTIONS.to_owned()],
        };
        *inner.retention.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(retention.start(inner.store.clone()).abort_handle());
        if inner
            .config
            .raise
            .may_raise(NotificationKind::ProjectionCompleted)
        {
            propagate::start(&inner);
        }
        Ok(Host { inner })
    }
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// [`HostBuilder::store`] was not called.
    #[error("a host needs an event store")]
    NoStore,
    /// [`HostBuilder::build`] was called outside a tokio runtime.
    #[error("a host is built inside a tokio runtime, which runs its notification delivery")]
    NoRuntime,
    /// Two destinations have one name, or a name starts with `@`.
    #[error("destination name {0:?} is taken or reserved")]
    DestinationName(String),
    /// The wasm runtime could not be configured.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The component repository could not be opened.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// A running host. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Runtime,
    registry: Registry,
    repository: Option<Repository>,
    store: Arc<dyn EventStore>,
    snapshots: projections::SnapshotCache,
    heads: heads::StreamHeads,
    locks: stream_locks::StreamLocks,
    grants: HashMap<String, Grants>,
    config: HostConfig,
    dispatcher: Arc<Dispatcher>,
    /// The task that raises projection-completed notifications.
    propagation: Followers,
    /// The task that prunes the outbox.
    retention: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Inner {
    /// Stops the retention task, if it runs: it holds nothing a restart
    /// would miss, so it is not waited for.
    fn stop_retention(&self) {
        if let Some(task) = self
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_retention();
    }
}

impl Inner {
    fn capabilities<'a>(&'a self, component: &'a LoadedComponent) -> Capabilities<'a> {
        Capabilities {
            component,
            configured: self.grants.get(component.name()),
        }
    }
}

/// A live component, as [`Host::components`] lists it.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// The name it was deployed under.
    pub name: String,
    /// The content digest of the live version.
    pub digest: String,
    /// The commands it handles, as `Domain/EntityType/CommandType`.
    pub commands: Vec<String>,
    /// The projections it computes, as `Domain/EntityType/ProjectionType`.
    pub projections: Vec<String>,
    /// Every version deployed under the name, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl ComponentInfo {
    fn of(component: &LoadedComponent, registry: &Registry) -> Self {
        ComponentInfo {
            versions: registry.versions(component.name()),
            name: component.name().to_owned(),
            digest: component.digest().to_owned(),
            commands: component
                .commands()
                .iter()
                .map(|r| format!("{}/{}/{}", r.domain, r.entity_type, r.command_type))
                .collect(),
            projections: component
                .projections()
                .iter()
                .map(|r| format!("{}/{}/{}", r.domain, r.entity_type, r.projection_type))
                .collect(),
        }
    }
}

impl Host {
    /// Starts assembling a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Compiles and validates `bytes` as component `name` and makes it the
    /// live version of that name. On any error the previous version keeps
    /// serving. Calls already running finish on the version they started
    /// with.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> Result<ComponentInfo, HostError> {
        validate_name(NameKind::ComponentName, name)?;
        let kept = self.inner.repository.is_some().then(|| bytes.clone());
        let component = Arc::new(LoadedComponent::load(&self.inner.runtime, name, bytes).await?);
        self.go_live(component, kept).await
    }

    /// Deploys native handlers (Rust code run by the host itself, no
    /// sandbox: see [`NativeHandlers`]) as component `name` at `version`,
    /// beside the wasm components: their commands and projections are
    /// routed, appended and folded like a component's, under the same
    /// grants. They live in memory only: deploy them again after a
    /// restart.
    pub async fn deploy_native(
        &self,
        name: &str,
        version: &str,
        handlers: Arc<dyn NativeHandlers>,
    ) -> Result<ComponentInfo, HostError> {
        validate_name(NameKind::ComponentName, name)?;
        let component = Arc::new(LoadedComponent::native(name, version, handlers)?);
        self.go_live(component, None).await
    }

    /// Makes an earlier version of `name` live again: the one with `digest`,
    /// or the one deployed before the live one.
    pub async fn rollback(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<ComponentInfo, HostError> {
        let (digest, loaded) = self.inner.registry.rollback_target(name, digest)?;
        let component = match loaded {
            Some(component) => component,
            None => Arc::new(self.load_kept(name, &digest).await?),
        };
        self.go_live(component, None).await
    }

    /// Loads the live version of every component in the repository (from
    /// the compiled-code cache when it has them) and remembers the others
    /// for rollback. Call once, after [`HostBuilder::build`].
    pub async fn restore(&self) -> Result<Vec<ComponentInfo>, HostError> {
        let Some(repository) = &self.inner.repository else {
            return Ok(Vec::new());
        };
        let mut restored = Vec::new();
        for (name, versions) in repository.all_versions()? {
            for version in versions.iter().filter(|v| !v.live) {
                self.inner
                    .registry
                    .remember(&name, &version.digest, version.deployed_at);
            }
            if let Some(live) = versions.iter().find(|v| v.live) {
                let component = Arc::new(self.load_kept(&name, &live.digest).await?);
                // The grants may have changed since it was deployed.
                self.check_grants(&component)?;
                self.inner
                    .registry
                    .install(component.clone(), live.deployed_at)?;
                restored.push(ComponentInfo::of(&component, &self.inner.registry));
            }
        }
        Ok(restored)
    }

    /// Whether a version with the digest of `bytes` was ever deployed under
    /// `name` (it may not be live: it may have been rolled back).
    pub fn knows_version(&self, name: &str, bytes: &[u8]) -> bool {
        let digest = digest_of(bytes);
        self.inner
            .registry
            .versions(name)
            .iter()
            .any(|v| v.digest == digest)
    }

    async fn load_kept(&self, name: &str, digest: &str) -> Result<LoadedComponent, HostError> {
        let repository =
            self.inner
                .repository
                .as_ref()
                .ok_or_else(|| RollbackError::UnknownVersion {
                    name: name.to_owned(),
                    digest: digest.to_owned(),
                })?;
        let bytes = repository.read_version(name, digest)?;
        Ok(LoadedComponent::load(&self.inner.runtime, name, bytes).await?)
    }

    fn check_grants(&self, component: &LoadedComponent) -> Result<(), HostError> {
        match self.inner.capabilities(component).ungranted_append() {
            Some(domain) => Err(HostError::NotGranted {
                component: component.name().to_owned(),
                domain: domain.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Checks a validated version against its grants, keeps its `bytes` in
    /// the repository (new versions only), and swaps it in.
    async fn go_live(
        &self,
        component: Arc<LoadedComponent>,
        bytes: Option<Vec<u8>>,
    ) -> Result<ComponentInfo, HostError> {
        let name = component.name().to_owned();
        self.check_grants(&component)?;
        if let (Some(repository), Some(bytes)) = (&self.inner.repository, bytes) {
            repository.save_version(&name, component.digest(), &bytes)?;
        }
        self.inner
            .registry
            .install(component.clone(), OffsetDateTime::now_utc())?;
        let info = ComponentInfo::of(&component, &self.inner.registry);
        // Native handlers are the embedder's to deploy at each start.
        if let Some(repository) = self
            .inner
            .repository
            .as_ref()
            .filter(|_| !component.is_native())
        {
            repository.save_versions(&name, &info.versions)?;
        }
        tracing::info!(component = %name, digest = %info.digest, "component is live");
        Ok(info)
    }

    /// The live components, with their version histories.
    pub fn components(&self) -> Vec<ComponentInfo> {
        self.inner
            .registry
            .routes()
            .components()
            .map(|c| ComponentInfo::of(c, &self.inner.registry))
            .collect()
    }

    /// Whether the component `name` is live at the version `digest`: a
    /// deploy of those bytes again would change nothing.
    pub fn is_live(&self, name: &str, digest: &str) -> bool {
        self.inner
            .registry
            .routes()
            .components()
            .any(|c| c.name() == name && c.digest() == digest)
    }

    /// How many components this host compiled, rather than loaded from the
    /// compiled-code cache.
    pub fn compilations(&self) -> u64 {
        self.inner.runtime.compilations()
    }

    /// How many component instances this host created. With warm
    /// instances, calls reuse them; with per-call isolation, each call
    /// makes one, and so does each projection it runs that its snapshot
    /// cannot answer.
    pub fn instantiations(&self) -> u64 {
        self.inner.runtime.instantiations()
    }

    /// How many calls into wasm components this host started: each began
    /// once the call was routed to its version and took an instance.
    pub fn calls_started(&self) -> u64 {
        self.inner.runtime.calls_started()
    }

    /// Runs a command: see [`CommandRequest`].
    pub async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome, HostError> {
        commands::execute(&self.inner, request).await
    }

    /// Delivers `notification` to every live notification handler whose
    /// subscription matches it, and says how each did. A handler that
    /// failed should get the notification again later.
    pub async fn deliver(&self, notification: &IncomingNotification) -> Vec<Delivery> {
        notify::deliver(&self.inner, notification).await
    }

    /// The state of projection `projection_type` over `stream`, as of
    /// sequence `as_of` (inclusive) or up to now.
    pub async fn project(
        &self,
        stream: &StreamId,
        projection_type: &str,
        as_of: Option<u64>,
    ) -> Result<ProjectionState, HostError> {
        let projection_type = ProjectionType::new(projection_type)?;
        projections::project(&self.inner, stream, &projection_type, as_of).await
    }

    /// Events of `stream` from sequence `from`, at most `limit`.
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, HostError> {
        Ok(self.inner.store.read_stream(stream, from, limit).await?)
    }

    /// Instance keys of `domain / entity_type`, a page at a time.
    pub async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, HostError> {
        let (domain, entity_type) = (Domain::new(domain)?, EntityType::new(entity_type)?);
        Ok(self
            .inner
            .store
            .list_instances(&domain, &entity_type, cursor, limit)
            .await?)
    }

    /// The store the host appends to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Where each destination of the outbox stands.
    pub async fn destinations(&self) -> Result<Vec<DestinationStatus>, HostError> {
        Ok(self.inner.dispatcher.status().await?)
    }

    /// The notifications destinations refused for good.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, HostError> {
        Ok(self.inner.store.dead_letters().await?)
    }

    /// Delivers dead letter `id` of `destination` again, and says what
    /// became of it (delivered: it is no dead letter any more).
    pub async fn redrive(
        &self,
        destination: &str,
        id: uuid::Uuid,
    ) -> Result<DeliveryOutcome, RedriveError> {
        self.inner.dispatcher.redrive(destination, id).await
    }

    /// Removes dead letters for good, without delivering them: `id` of
    /// `destination`, or every one of `destination` when `id` is `None`.
    /// Returns how many were removed. Their outbox rows are then pruned
    /// like any other delivered row.
    pub async fn purge_dead_letters(
        &self,
        destination: &str,
        id: Option<uuid::Uuid>,
    ) -> Result<usize, HostError> {
        let store = &self.inner.store;
        Ok(match id {
            Some(id) => usize::from(store.remove_dead_letter(destination, id).await?),
            None => store.purge_dead_letters(destination).await?,
        })
    }

    /// Stops the host's background work and closes its store, for a
    /// process about to exit, once it takes no more calls (stop serving
    /// first, and let the calls in flight finish).
    ///
    /// The outbox's dispatchers and the projection propagation start no
    /// other round; one in a round finishes it if it can by `deadline`, or
    /// is abandoned with its checkpoint past what it had finished, so that
    /// what was in flight is delivered again after a restart (at least
    /// once, with the same ids). Then the store finishes
    /// the writes handed to it and closes ([`EventStore::close`]); calls
    /// still running after that fail with `store_unavailable`.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) -> Result<(), HostError> {
        self.inner.stop_retention();
        let (dispatch, propagation) = tokio::join!(
            self.inner.dispatcher.stop(deadline),
            self.inner.propagation.stop(deadline)
        );
        if dispatch + propagation > 0 {
            tracing::warn!(
                abandoned = dispatch + propagation,
                "rounds still running at the deadline were abandoned; they run again at the next start"
            );
        }
        self.inner.store.close().await?;
        Ok(())
    }

    /// The host's metrics, Prometheus text format: component instances
    /// (created, reused, discarded by reason, idle per version) and
    /// notification delivery.
    pub async fn encode_metrics(&self, out: &mut String) -> Result<(), HostError> {
        self.inner.runtime.encode_metrics(out);
        Ok(self.inner.dispatcher.encode_metrics(out).await?)
    }
}

/// Parses guest JSON output, so that only valid JSON is ever stored or
/// served.
fn parse_json(component: &str, what: &str, bytes: Vec<u8>) -> Result<Box<RawValue>, HostError> {
    crate::model::json_document(bytes).map_err(|e| HostError::InvalidOutput {
        component: component.to_owned(),
        message: format!("{what} is not interoperable JSON: {e}"),
    })
}
