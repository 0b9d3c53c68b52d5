//! A compiled, validated component version and the calls into it.
//!
//! Loading does all the checking up front, off the hot path: the bytes are a
//! component, its imports are ones the host supplies, it exports at least one
//! handler interface with the right types, and `describe` answers with valid
//! names. A call then only instantiates from the pre-linked `InstancePre`.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use super::bindings::{command_handler, notification_handler, projection, wit};
use super::convert::{EventIdText, batch_events, stream_param};
use super::{CallState, GuestFault, GuestServices, ParkedSlot, Runtime, fault};
use crate::model::{NameError, NameKind, RecordedEvent, StreamId, validate_name};

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

/// A command type a component handles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandRoute {
    /// `Bank`.
    pub domain: String,
    /// `Account`.
    pub entity_type: String,
    /// `Deposit`.
    pub command_type: String,
}

/// A projection a component computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRoute {
    /// `Bank`.
    pub domain: String,
    /// `Account`.
    pub entity_type: String,
    /// `Balance`.
    pub projection_type: String,
    /// The event types it folds; the host passes it no others.
    pub event_types: Vec<String>,
}

/// A notification handler's subscription, with Event Grid's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRoute {
    /// Names the handler within its component.
    pub name: String,
    /// Only these event types (case-insensitive); empty: all.
    pub included_event_types: Vec<String>,
    /// Only subjects beginning with this (case-insensitive).
    pub subject_begins_with: Option<String>,
    /// Only subjects ending with this (case-insensitive).
    pub subject_ends_with: Option<String>,
}

impl SubscriptionRoute {
    /// Whether a notification of `event_type` about `subject` matches.
    pub fn matches(&self, event_type: &str, subject: &str) -> bool {
        let starts = |text: &str, prefix: &str| {
            text.len() >= prefix.len()
                && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        };
        let ends = |text: &str, suffix: &str| {
            text.len() >= suffix.len()
                && text.as_bytes()[text.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        (self.included_event_types.is_empty()
            || self
                .included_event_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(event_type)))
            && self
                .subject_begins_with
                .as_deref()
                .is_none_or(|p| starts(subject, p))
            && self
                .subject_ends_with
                .as_deref()
                .is_none_or(|s| ends(subject, s))
    }
}

/// One version of a component, compiled, linked and validated.
pub struct LoadedComponent {
    name: Arc<str>,
    digest: String,
    pre: InstancePre<CallState>,
    command_handler: Option<command_handler::GuestIndices>,
    projection: Option<projection::GuestIndices>,
    notification_handler: Option<notification_handler::GuestIndices>,
    commands: Vec<CommandRoute>,
    projections: Vec<ProjectionRoute>,
    subscriptions: Vec<SubscriptionRoute>,
}

impl fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("commands", &self.commands)
            .field("projections", &self.projections)
            .finish_non_exhaustive()
    }
}

/// The content digest of component bytes: `sha256:` and 64 hex digits.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LoadedComponent {
    /// Compiles and validates `bytes` as the component `name`.
    pub async fn load(runtime: &Runtime, name: &str, bytes: Vec<u8>) -> Result<Self, LoadError> {
        let digest = digest_of(&bytes);
        let compiled = compile(runtime, name, &digest, bytes).await?;
        let pre = runtime.linker.instantiate_pre(&compiled).map_err(|e| {
            LoadError::UnsatisfiedImports {
                name: name.to_owned(),
                reason: format!("{e:#}"),
            }
        })?;

        let command_handler = command_handler::GuestIndices::new(&pre).ok();
        let projection = projection::GuestIndices::new(&pre).ok();
        let notification_handler = notification_handler::GuestIndices::new(&pre).ok();
        if command_handler.is_none() && projection.is_none() && notification_handler.is_none() {
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

        let mut component = LoadedComponent {
            name: Arc::from(name),
            digest,
            pre,
            command_handler,
            projection,
            notification_handler,
            commands: Vec::new(),
            projections: Vec::new(),
            subscriptions: Vec::new(),
        };
        component.describe(runtime).await?;
        Ok(component)
    }

    /// Calls every `describe` the component exports, type-checking each
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
        let (mut store, instance) = self
            .instantiate(runtime, None)
            .await
            .map_err(describe_failed)?;
        if let Some(indices) = &self.command_handler {
            let guest = indices
                .load(&mut store, &instance)
                .map_err(|e| wrong_exports(COMMAND_HANDLER_EXPORT, e))?;
            let described = guest
                .call_describe(&mut store)
                .await
                .map_err(|e| describe_failed(self.fault(runtime, &store, e)))?;
            for routes in described {
                validate_name(NameKind::Domain, &routes.domain).map_err(invalid)?;
                validate_name(NameKind::EntityType, &routes.entity_type).map_err(invalid)?;
                for command_type in routes.command_types {
                    validate_name(NameKind::CommandType, &command_type).map_err(invalid)?;
                    self.commands.push(CommandRoute {
                        domain: routes.domain.clone(),
                        entity_type: routes.entity_type.clone(),
                        command_type,
                    });
                }
            }
        }
        if let Some(indices) = &self.projection {
            let guest = indices
                .load(&mut store, &instance)
                .map_err(|e| wrong_exports(PROJECTION_EXPORT, e))?;
            let described = guest
                .call_describe(&mut store)
                .await
                .map_err(|e| describe_failed(self.fault(runtime, &store, e)))?;
            for info in described {
                let id = info.id;
                validate_name(NameKind::Domain, &id.domain).map_err(invalid)?;
                validate_name(NameKind::EntityType, &id.entity_type).map_err(invalid)?;
                validate_name(NameKind::ProjectionType, &id.projection_type).map_err(invalid)?;
                for event_type in &info.event_types {
                    validate_name(NameKind::EventType, event_type).map_err(invalid)?;
                }
                self.projections.push(ProjectionRoute {
                    domain: id.domain,
                    entity_type: id.entity_type,
                    projection_type: id.projection_type,
                    event_types: info.event_types,
                });
            }
        }
        if let Some(indices) = &self.notification_handler {
            let guest = indices
                .load(&mut store, &instance)
                .map_err(|e| wrong_exports(NOTIFICATION_HANDLER_EXPORT, e))?;
            let described = guest
                .call_describe(&mut store)
                .await
                .map_err(|e| describe_failed(self.fault(runtime, &store, e)))?;
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

    /// The content digest of its bytes (`sha256:...`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The commands it handles.
    pub fn commands(&self) -> &[CommandRoute] {
        &self.commands
    }

    /// The projections it computes.
    pub fn projections(&self) -> &[ProjectionRoute] {
        &self.projections
    }

    /// Its notification handlers' subscriptions.
    pub fn subscriptions(&self) -> &[SubscriptionRoute] {
        &self.subscriptions
    }

    async fn instantiate(
        &self,
        runtime: &Runtime,
        services: Option<Arc<dyn GuestServices>>,
    ) -> Result<(Store<CallState>, wasmtime::component::Instance), GuestFault> {
        let mut store = runtime.new_store(&self.name, services);
        runtime
            .instantiations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| {
            GuestFault::Instantiation {
                component: self.name.to_string(),
                message: format!("{e:#}"),
            }
        })?;
        Ok((store, instance))
    }

    fn fault(
        &self,
        runtime: &Runtime,
        store: &Store<CallState>,
        error: wasmtime::Error,
    ) -> GuestFault {
        fault(&self.name, runtime.config.call_timeout, store, error)
    }

    /// Runs `command-handler.handle` in a fresh instance whose `event-store`
    /// import is served by `services`. The instance comes back with the
    /// answer: the host may fold the command's own events through it (see
    /// [`Spent::into_projector`]) or drop it.
    pub(crate) async fn handle(
        &self,
        runtime: &Runtime,
        services: Arc<dyn GuestServices>,
        command: &wit::Command<'_>,
    ) -> Result<(Result<Vec<wit::NewEvent>, wit::CommandError>, Spent), GuestFault> {
        let Some(indices) = &self.command_handler else {
            return Err(GuestFault::Instantiation {
                component: self.name.to_string(),
                message: "it does not export a command handler".to_owned(),
            });
        };
        let (mut store, instance) = self.instantiate(runtime, Some(services)).await?;
        let guest = indices
            .load(&mut store, &instance)
            .map_err(|e| self.fault(runtime, &store, e))?;
        let answer = guest
            .call_handle(&mut store, command.clone())
            .await
            .map_err(|e| self.fault(runtime, &store, e))?;
        let spent = Spent {
            store,
            instance,
            parked: None,
        };
        Ok((answer, spent))
    }

    /// Runs `notification-handler.handle` for `subscription` in a fresh
    /// instance whose imports are served by `services`.
    pub(crate) async fn notify(
        &self,
        runtime: &Runtime,
        services: Arc<dyn GuestServices>,
        subscription: &str,
        notification: &wit::Notification<'_>,
    ) -> Result<Result<(), String>, GuestFault> {
        let Some(indices) = &self.notification_handler else {
            return Err(GuestFault::Instantiation {
                component: self.name.to_string(),
                message: "it does not export a notification handler".to_owned(),
            });
        };
        let (mut store, instance) = self.instantiate(runtime, Some(services)).await?;
        let guest = indices
            .load(&mut store, &instance)
            .map_err(|e| self.fault(runtime, &store, e))?;
        let answer = guest
            .call_handle(&mut store, subscription, notification.clone())
            .await;
        answer.map_err(|e| self.fault(runtime, &store, e))
    }

    /// A fresh instance for folding events through `projection.apply`,
    /// batch after batch.
    pub(crate) async fn projector(&self, runtime: &Runtime) -> Result<Projector, GuestFault> {
        let Some(indices) = &self.projection else {
            return Err(GuestFault::Instantiation {
                component: self.name.to_string(),
                message: "it does not export a projection".to_owned(),
            });
        };
        let (mut store, instance) = self.instantiate(runtime, None).await?;
        let guest = indices
            .load(&mut store, &instance)
            .map_err(|e| self.fault(runtime, &store, e))?;
        Ok(Projector {
            store,
            guest,
            component: self.name.clone(),
            timeout: runtime.config.call_timeout,
            _parked: None,
        })
    }
}

/// The instance a command handler answered in.
pub(crate) struct Spent {
    store: Store<CallState>,
    instance: wasmtime::component::Instance,
    parked: Option<ParkedSlot>,
}

impl Spent {
    pub(super) fn park(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.parked = Some(ParkedSlot(permit));
    }

    /// The same instance as a [`Projector`] of `component` (the one whose
    /// handler ran in it), if the component exports projections. Its
    /// imports are cut off from here on: a fold must see what a fresh
    /// projector sees, not the handler's pinned view of the store.
    pub(crate) fn into_projector(
        mut self,
        runtime: &Runtime,
        component: &LoadedComponent,
    ) -> Option<Projector> {
        let indices = component.projection.as_ref()?;
        self.store.data_mut().services = None;
        let guest = indices.load(&mut self.store, &self.instance).ok()?;
        Some(Projector {
            store: self.store,
            guest,
            component: component.name.clone(),
            timeout: runtime.config.call_timeout,
            _parked: self.parked,
        })
    }
}

/// One instance of a projection component, folding batches of events.
pub struct Projector {
    store: Store<CallState>,
    guest: projection::Guest,
    component: Arc<str>,
    timeout: std::time::Duration,
    /// Held while the instance is a parked handler's.
    _parked: Option<ParkedSlot>,
}

impl Projector {
    /// `projection.apply` of `route`'s projection: folds `events`, of
    /// `stream`, into `state`.
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
        let answer = self
            .guest
            .call_apply(&mut self.store, id, state, batch)
            .await;
        answer.map_err(|e| fault(&self.component, self.timeout, &self.store, e))
    }
}
