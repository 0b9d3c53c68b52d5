//! A compiled, validated component version and the calls into it.
//!
//! Loading does all the checking up front, off the hot path: the bytes are a
//! component, its imports are ones the host supplies, it exports at least one
//! handler interface with the right types, and `describe` answers with valid
//! names. It then has one pre-linked `InstancePre` per role it exports, each
//! behind a pool of warm instances ([`super::pool`]); a call checks an
//! instance out of its role's pool as a [`Lease`] and calls the export.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};

use super::bindings::{command_handler, notification_handler, projection, wit};
use super::convert::{EventIdText, batch_events, stream_param};
use super::native::NativeHandlers;
use super::pool::{Exports, Lease, Pool, Warm};
use super::roles::{
    CommandImports, NotificationImports, NotificationServices, ProjectionImports, Role, StoreReads,
    link_unserved_as_traps,
};
use super::routes::{CommandRoute, ProjectionRoute, SubscriptionRoute};
use super::state::CallState;
use super::{GuestFault, Runtime, fault};
use crate::model::{
    CommandType, Domain, EntityType, EventType, NameError, NameKind, ProjectionType, RecordedEvent,
    StreamId, validate_name,
};

/// The interface names a handler component may export.
const COMMAND_HANDLER_EXPORT: &str = "cqrs-wasi:handlers/command-handler@0.2.0";
const PROJECTION_EXPORT: &str = "cqrs-wasi:handlers/projection@0.2.0";
const NOTIFICATION_HANDLER_EXPORT: &str = "cqrs-wasi:handlers/notification-handler@0.2.0";

/// Why a component was refused. The reason is meant for the person who
/// built it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("component {name} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The component's name.
        name: String,
        /// What the compiler said.
        reason: String,
    },
    /// It imports something the host does not supply.
    #[error("component {name} imports what the host cannot supply: {reason}")]
    UnsatisfiedImports {
        /// The component's name.
        name: String,
        /// What the linker said.
        reason: String,
    },
    /// It exports no handler interface, or one of the wrong shape.
    #[error("component {name} {reason}")]
    WrongExports {
        /// The component's name.
        name: String,
        /// What is missing or mistyped.
        reason: String,
    },
    /// Instantiating it or calling `describe` failed.
    #[error("component {name} failed while describing itself: {fault}")]
    DescribeFailed {
        /// The component's name.
        name: String,
        /// What went wrong.
        fault: GuestFault,
    },
    /// `describe` named something invalid.
    #[error("component {name} describes an invalid route: {error}")]
    InvalidDescription {
        /// The component's name.
        name: String,
        /// The name that failed.
        error: NameError,
    },
}

/// Compiles `bytes`, or loads the compiled code from the runtime's cache,
/// off the async threads.
async fn compile(
    runtime: &Runtime,
    name: &str,
    digest: &str,
    bytes: Vec<u8>,
) -> Result<Component, LoadError> {
    let engine = runtime.engine.clone();
    let cached = runtime.config.cache_dir.as_ref().map(|dir| {
        let hex = digest.trim_start_matches("sha256:");
        dir.join(format!("{hex}-{}.cwasm", runtime.engine_key))
    });
    let name = name.to_owned();
    let (component, compiled) = tokio::task::spawn_blocking(move || {
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name),
            // into the host's own cache directory. Wasmtime still checks
            // the header and refuses a mismatch; then we compile anew.
            match unsafe { Component::deserialize_file(&engine, path) } {
                Ok(component) => return Ok((component, false)),
                Err(e) => tracing::warn!(path = %path.display(), "unusable cached component, compiling: {e}"),
            }
        }
        let component = Component::new(&engine, &bytes).map_err(|e| format!("{e:#}"))?;
        if let Some(path) = &cached {
            let written = component
                .serialize()
                .map_err(|e| format!("{e:#}"))
                .and_then(|code| crate::atomic_file::write(path, &code).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e}");
            }
        }
        Ok((component, true))
    })
    .await
    .map_err(|e| format!("compilation did not finish: {e}"))
    .and_then(|result| result)
    .map_err(|reason| LoadError::Invalid { name, reason })?;
    if compiled {
        runtime
            .compilations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(component)
}

/// One version of a component, compiled, linked and validated, with a pool
/// of warm instances per role it exports; or native handlers an embedder
/// deployed ([`super::native`]), which have no pools.
pub struct LoadedComponent {
    name: Arc<str>,
    digest: String,
    native: Option<Arc<dyn NativeHandlers>>,
    command_handlers: Option<Arc<Pool<CommandImports>>>,
    projections: Option<Arc<Pool<ProjectionImports>>>,
    notification_handlers: Option<Arc<Pool<NotificationImports>>>,
    command_routes: Vec<CommandRoute>,
    projection_routes: Vec<ProjectionRoute>,
    subscriptions: Vec<SubscriptionRoute>,
}

impl fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("commands", &self.command_routes)
            .field("projections", &self.projection_routes)
            .finish_non_exhaustive()
    }
}

/// The content digest of component bytes: `sha256:` and 64 hex digits.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The pool of `role` for `compiled`: its linker, with every host function
/// the role does not serve linked as a trap.
fn pool<R: Role>(
    runtime: &Runtime,
    linker: &Linker<CallState<R>>,
    name: &Arc<str>,
    digest: &str,
    compiled: &Component,
    exports: &Arc<Exports>,
) -> Result<Arc<Pool<R>>, LoadError> {
    let unsatisfied = |e: wasmtime::Error| LoadError::UnsatisfiedImports {
        name: name.to_string(),
        reason: format!("{e:#}"),
    };
    let mut linker = linker.clone();
    link_unserved_as_traps(&mut linker, &runtime.engine, compiled).map_err(unsatisfied)?;
    let pre = linker.instantiate_pre(compiled).map_err(unsatisfied)?;
    Ok(Pool::new(
        name.clone(),
        digest,
        pre,
        exports.clone(),
        &runtime.instances,
    ))
}

impl LoadedComponent {
    /// Compiles and validates `bytes` as the component `name`.
    pub async fn load(runtime: &Runtime, name: &str, bytes: Vec<u8>) -> Result<Self, LoadError> {
        let digest = digest_of(&bytes);
        let compiled = compile(runtime, name, &digest, bytes).await?;
        // The notification handler's linker serves every import the host
        // supplies: a component that imports anything else is refused here,
        // before any role links what it does not serve as a trap.
        let every_import = runtime
            .linkers
            .notification
            .instantiate_pre(&compiled)
            .map_err(|e| LoadError::UnsatisfiedImports {
                name: name.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let exports = Arc::new(Exports {
            command_handler: command_handler::GuestIndices::new(&every_import).ok(),
            projection: projection::GuestIndices::new(&every_import).ok(),
            notification_handler: notification_handler::GuestIndices::new(&every_import).ok(),
        });
        if exports.command_handler.is_none()
            && exports.projection.is_none()
            && exports.notification_handler.is_none()
        {
            let exports: Vec<String> = compiled
                .component_type()
                .exports(&runtime.engine)
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            return Err(LoadError::WrongExports {
                name: name.to_owned(),
                reason: format!(
                    "exports none of `{COMMAND_HANDLER_EXPORT}`, `{PROJECTION_EXPORT}`, `{NOTIFICATION_HANDLER_EXPORT}`; it exports {}",
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                ),
            });
        }
        let name: Arc<str> = Arc::from(name);
        let linkers = &runtime.linkers;
        let mut component = LoadedComponent {
            command_handlers: match exports.command_handler {
                Some(_) => Some(pool(
                    runtime,
                    &linkers.command,
                    &name,
                    &digest,
                    &compiled,
                    &exports,
                )?),
                None => None,
            },
            projections: match exports.projection {
                Some(_) => Some(pool(
                    runtime,
                    &linkers.projection,
                    &name,
                    &digest,
                    &compiled,
                    &exports,
                )?),
                None => None,
            },
            notification_handlers: match exports.notification_handler {
                Some(_) => Some(pool(
                    runtime,
                    &linkers.notification,
                    &name,
                    &digest,
                    &compiled,
                    &exports,
                )?),
                None => None,
            },
            name,
            digest,
            native: None,
            command_routes: Vec::new(),
            projection_routes: Vec::new(),
            subscriptions: Vec::new(),
        };
        component.describe(runtime).await?;
        Ok(component)
    }

    /// Native handlers deployed as the component `name`, at `version`
    /// (what their events record as `handlerVersion`, and what their
    /// projections' snapshots are keyed by: give each build its own).
    pub fn native(
        name: &str,
        version: &str,
        handlers: Arc<dyn NativeHandlers>,
    ) -> Result<Self, LoadError> {
        let command_routes = handlers.commands();
        let projection_routes = handlers.projections();
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_graphic()) {
            return Err(LoadError::WrongExports {
                name: name.to_owned(),
                reason: format!("has version {version:?}; a version is visible ASCII, not empty"),
            });
        }
        Ok(LoadedComponent {
            name: Arc::from(name),
            digest: format!("native:{version}"),
            native: Some(handlers),
            command_handlers: None,
            projections: None,
            notification_handlers: None,
            command_routes,
            projection_routes,
            subscriptions: Vec::new(),
        })
    }

    /// Calls every `describe` the component exports, each in an instance of
    /// its role (which stays warm for the first calls), type-checking each
    /// export interface on the way, and records the validated routes.
    async fn describe(&mut self, runtime: &Runtime) -> Result<(), LoadError> {
        let name = self.name.to_string();
        let wrong_exports = |interface: &str, e: wasmtime::Error| LoadError::WrongExports {
            name: name.clone(),
            reason: format!("exports `{interface}` with the wrong types: {e:#}"),
        };
        let describe_failed = |fault| LoadError::DescribeFailed {
            name: name.clone(),
            fault,
        };
        let invalid = |error| LoadError::InvalidDescription {
            name: name.clone(),
            error,
        };

        let _slot = runtime.reserve().await.map_err(describe_failed)?;
        if let Some(pool) = &self.command_handlers {
            let mut lease = pool.checkout().await.map_err(describe_failed)?;
            let described = lease.describe_commands().await.map_err(|e| {
                e.into_load_error(COMMAND_HANDLER_EXPORT, &wrong_exports, &describe_failed)
            })?;
            for routes in described {
                let domain = Domain::new(routes.domain).map_err(invalid)?;
                let entity_type = EntityType::new(routes.entity_type).map_err(invalid)?;
                for command_type in routes.command_types {
                    self.command_routes.push(CommandRoute {
                        domain: domain.clone(),
                        entity_type: entity_type.clone(),
                        command_type: CommandType::new(command_type).map_err(invalid)?,
                    });
                }
            }
        }
        if let Some(pool) = &self.projections {
            let mut lease = pool.checkout().await.map_err(describe_failed)?;
            let described = lease.describe_projections().await.map_err(|e| {
                e.into_load_error(PROJECTION_EXPORT, &wrong_exports, &describe_failed)
            })?;
            for info in described {
                self.projection_routes.push(ProjectionRoute {
                    domain: Domain::new(info.id.domain).map_err(invalid)?,
                    entity_type: EntityType::new(info.id.entity_type).map_err(invalid)?,
                    projection_type: ProjectionType::new(info.id.projection_type)
                        .map_err(invalid)?,
                    event_types: info
                        .event_types
                        .into_iter()
                        .map(EventType::new)
                        .collect::<Result<_, _>>()
                        .map_err(invalid)?,
                });
            }
        }
        if let Some(pool) = &self.notification_handlers {
            let mut lease = pool.checkout().await.map_err(describe_failed)?;
            let described = lease.describe_subscriptions().await.map_err(|e| {
                e.into_load_error(
                    NOTIFICATION_HANDLER_EXPORT,
                    &wrong_exports,
                    &describe_failed,
                )
            })?;
            for subscription in described {
                validate_name(NameKind::SubscriptionName, &subscription.name).map_err(invalid)?;
                self.subscriptions.push(SubscriptionRoute {
                    name: subscription.name,
                    included_event_types: subscription.included_event_types,
                    subject_begins_with: subscription.subject_begins_with,
                    subject_ends_with: subscription.subject_ends_with,
                });
            }
        }
        Ok(())
    }

    /// The name it was deployed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content digest of its bytes (`sha256:...`), or for native
    /// handlers `native:` and their version.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether it is native handlers rather than a wasm component.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// The commands it handles.
    pub fn commands(&self) -> &[CommandRoute] {
        &self.command_routes
    }

    /// The projections it computes.
    pub fn projections(&self) -> &[ProjectionRoute] {
        &self.projection_routes
    }

    /// Its notification handlers' subscriptions.
    pub fn subscriptions(&self) -> &[SubscriptionRoute] {
        &self.subscriptions
    }

    /// What runs a command handler's call.
    pub(crate) async fn command_handler(&self) -> Result<Instance<CommandImports>, GuestFault> {
        self.instance(self.command_handlers.as_ref(), "a command handler")
            .await
    }

    /// What folds events through `projection.apply`, batch after batch,
    /// over as many streams as the caller likes.
    pub(crate) async fn projector(&self) -> Result<Instance<ProjectionImports>, GuestFault> {
        self.instance(self.projections.as_ref(), "a projection")
            .await
    }

    async fn instance<R: Role>(
        &self,
        pool: Option<&Arc<Pool<R>>>,
        role: &str,
    ) -> Result<Instance<R>, GuestFault> {
        match &self.native {
            Some(handlers) => Ok(Instance::Native(handlers.clone())),
            None => checkout(&self.name, pool, role).await.map(Instance::Wasm),
        }
    }

    /// An instance for a notification handler's call.
    pub(crate) async fn notification_handler(
        &self,
    ) -> Result<Lease<NotificationImports>, GuestFault> {
        checkout(
            &self.name,
            self.notification_handlers.as_ref(),
            "a notification handler",
        )
        .await
    }

    /// Stops routing calls to this version: its idle instances go, and
    /// those in calls go when their calls end.
    pub(crate) fn retire(&self) {
        self.for_each_pool(
            |pool| pool.retire(),
            |pool| pool.retire(),
            |pool| pool.retire(),
        );
    }

    /// Routes calls to this version again (a rollback to it), from fresh
    /// instances.
    pub(crate) fn revive(&self) {
        self.for_each_pool(
            |pool| pool.revive(),
            |pool| pool.revive(),
            |pool| pool.revive(),
        );
    }

    fn for_each_pool(
        &self,
        command: impl Fn(&Pool<CommandImports>),
        projection: impl Fn(&Pool<ProjectionImports>),
        notification: impl Fn(&Pool<NotificationImports>),
    ) {
        self.command_handlers.as_deref().map(command);
        self.projections.as_deref().map(projection);
        self.notification_handlers.as_deref().map(notification);
    }
}

async fn checkout<R: Role>(
    component: &str,
    pool: Option<&Arc<Pool<R>>>,
    role: &str,
) -> Result<Lease<R>, GuestFault> {
    match pool {
        Some(pool) => pool.checkout().await,
        None => Err(GuestFault::Instantiation {
            component: component.to_owned(),
            message: format!("it does not export {role}"),
        }),
    }
}

/// Why a `describe` call failed: the export has the wrong shape, or the
/// call itself failed.
enum DescribeError {
    WrongTypes(wasmtime::Error),
    Fault(GuestFault),
}

impl DescribeError {
    fn into_load_error(
        self,
        interface: &str,
        wrong_exports: &impl Fn(&str, wasmtime::Error) -> LoadError,
        describe_failed: &impl Fn(GuestFault) -> LoadError,
    ) -> LoadError {
        match self {
            DescribeError::WrongTypes(error) => wrong_exports(interface, error),
            DescribeError::Fault(fault) => describe_failed(fault),
        }
    }
}

/// The calls every role's instance can take: `projection.apply` and the
/// `describe`s, with the role's imports closed.
impl<R: Role> Lease<R> {
    /// Runs `call` in the instance under `imports`, and settles what follows
    /// from its outcome: a fault fails the call and the instance is not
    /// reused.
    async fn run<T>(
        &mut self,
        imports: R,
        call: impl AsyncFnOnce(&mut Warm<R>, &Exports) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFault> {
        self.run_call(imports, true, call).await
    }

    /// [`Lease::run`], for a call that may not count towards recycling.
    async fn run_call<T>(
        &mut self,
        imports: R,
        counts: bool,
        call: impl AsyncFnOnce(&mut Warm<R>, &Exports) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFault> {
        let exports = self.exports();
        let component = self.component();
        let timeout = self.call_timeout();
        let warm = self.begin(imports, counts);
        let result = call(warm, &exports).await;
        match result {
            Ok(value) => {
                self.finish(None);
                Ok(value)
            }
            Err(error) => {
                let (fault, discard) = fault(&component, timeout, warm.store.data(), error);
                self.finish(Some(discard));
                Err(fault)
            }
        }
    }

    /// A `describe` call, with the role's imports closed: `export` finds
    /// the typed export, `call` calls its `describe`. It does not count
    /// toward the instance's recycling.
    async fn describe<G, T>(
        &mut self,
        export: fn(&mut Warm<R>, &Exports) -> wasmtime::Result<G>,
        call: impl AsyncFnOnce(&G, &mut Warm<R>) -> wasmtime::Result<T>,
    ) -> Result<T, DescribeError> {
        let exports = self.exports();
        let guest = export(self.warm(), &exports).map_err(DescribeError::WrongTypes)?;
        self.run_call(R::closed(), false, async |warm, _| call(&guest, warm).await)
            .await
            .map_err(DescribeError::Fault)
    }

    async fn describe_commands(
        &mut self,
    ) -> Result<Vec<command_handler::CommandRoutes>, DescribeError> {
        self.describe(Self::command_handler, async |guest, warm| {
            guest.call_describe(&mut warm.store).await
        })
        .await
    }

    async fn describe_projections(
        &mut self,
    ) -> Result<Vec<projection::ProjectionInfo>, DescribeError> {
        self.describe(Self::projection, async |guest, warm| {
            guest.call_describe(&mut warm.store).await
        })
        .await
    }

    async fn describe_subscriptions(
        &mut self,
    ) -> Result<Vec<notification_handler::Subscription>, DescribeError> {
        self.describe(Self::notification_handler, async |guest, warm| {
            guest.call_describe(&mut warm.store).await
        })
        .await
    }

    /// `projection.apply` of `route`'s projection: folds `events`, of
    /// `stream`, into `state`. Imports are closed: a fold sees nothing but
    /// its state and events.
    pub(crate) async fn apply(
        &mut self,
        route: &ProjectionRoute,
        state: Option<&[u8]>,
        stream: &StreamId,
        events: &[&RecordedEvent],
    ) -> Result<Result<Vec<u8>, wit::ProjectionError>, GuestFault> {
        let id = projection::ProjectionIdParam {
            domain: &route.domain,
            entity_type: &route.entity_type,
            projection_type: &route.projection_type,
        };
        let mut ids: Vec<EventIdText> = vec![[0; _]; events.len()];
        let mut contexts = Vec::new();
        let events = batch_events(events, &mut ids, &mut contexts);
        let batch = projection::EventBatch {
            stream: stream_param(stream),
            contexts: &contexts,
            events: &events,
        };
        self.run(R::closed(), async |warm, exports| {
            let guest = Self::projection(warm, exports)?;
            guest.call_apply(&mut warm.store, id, state, batch).await
        })
        .await
    }
}

/// What runs calls of one role: a warm instance of a wasm component, or
/// native handlers.
#[allow(
    clippy::large_enum_variant,
    reason = "lives on its call's stack and is never moved in a loop; boxing the lease would allocate on every call"
)]
pub(crate) enum Instance<R: Role> {
    /// An instance checked out of its version's pool.
    Wasm(Lease<R>),
    /// Native handlers, called directly.
    Native(Arc<dyn NativeHandlers>),
}

impl<R: Role> Instance<R> {
    /// `projection.apply` (see [`Lease::apply`]).
    pub(crate) async fn apply(
        &mut self,
        route: &ProjectionRoute,
        state: Option<&[u8]>,
        stream: &StreamId,
        events: &[&RecordedEvent],
    ) -> Result<Result<Vec<u8>, wit::ProjectionError>, GuestFault> {
        match self {
            Instance::Wasm(lease) => lease.apply(route, state, stream, events).await,
            Instance::Native(handlers) => Ok(handlers.apply(route, state, stream, events)),
        }
    }
}

impl Instance<CommandImports> {
    /// `command-handler.handle` (see [`Lease::handle`]).
    pub(crate) async fn handle(
        &mut self,
        reads: Arc<dyn StoreReads>,
        command: &wit::Command<'_>,
    ) -> Result<Result<Vec<wit::NewEvent>, wit::CommandError>, GuestFault> {
        match self {
            Instance::Wasm(lease) => lease.handle(reads, command).await,
            Instance::Native(handlers) => Ok(handlers.handle(command, &*reads).await),
        }
    }
}

impl Lease<CommandImports> {
    /// `command-handler.handle`, its `event-store` import served by `reads`.
    pub(crate) async fn handle(
        &mut self,
        reads: Arc<dyn StoreReads>,
        command: &wit::Command<'_>,
    ) -> Result<Result<Vec<wit::NewEvent>, wit::CommandError>, GuestFault> {
        self.run(CommandImports::new(reads), async |warm, exports| {
            let guest = Self::command_handler(warm, exports)?;
            guest.call_handle(&mut warm.store, command.clone()).await
        })
        .await
    }
}

impl Lease<NotificationImports> {
    /// `notification-handler.handle` for `subscription`, its imports served
    /// by `services`.
    pub(crate) async fn notify(
        &mut self,
        services: Arc<dyn NotificationServices>,
        subscription: &str,
        notification: &wit::Notification<'_>,
    ) -> Result<Result<(), String>, GuestFault> {
        self.run(NotificationImports::new(services), async |warm, exports| {
            let guest = Self::notification_handler(warm, exports)?;
            guest
                .call_handle(&mut warm.store, subscription, notification.clone())
                .await
        })
        .await
    }
}
