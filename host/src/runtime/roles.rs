//! The roles an instance serves, each with the imports it may use.
//!
//! A component version gets one instance pool per role it exports, linked
//! by that role's own linker: a command handler's instance links the
//! `event-store` import (reads, its own stream pinned), a notification
//! handler's links `event-store`, `commands` and `publisher`, a projection's
//! links none of the host's imports. An import a role does not serve is
//! linked as a trap, so what a role may not call has no implementation to
//! reach, rather than one that refuses at run time.
//!
//! The host decides what the imports do for each call, through the service
//! traits here ([`StoreReads`], [`NotificationServices`]); this module knows
//! nothing about stores, routing or grants. Names a guest passes are
//! validated here before anything reads with them.

use std::sync::Arc;

use tracing::Instrument;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::cqrs_wasi::handlers::{commands, event_store, publisher, types};
use super::bindings::wit;
use super::convert::{event_to_wit, stream_from_wit};
use super::state::CallState;
use crate::model::{Domain, EntityType, ProjectionType, RecordedEvent, StreamId};

pub use super::bindings::cqrs_wasi::handlers::commands::{
    CommandOutcome as SendOutcome, CommandRequest as SendRequest,
};

/// The prefix of the host's own interfaces' import names.
const HOST_INTERFACES: &str = "cqrs-wasi:handlers/";

/// The most events one `read-stream` call returns, whatever the guest asks
/// for, so that one call cannot make the host buffer a whole long stream.
const MAX_READ: u32 = 4096;

/// The most instance keys one `list-instances` call returns.
const MAX_PAGE: u32 = 1000;

/// What a guest's `event-store` import reads through during one call. The
/// host decides per call: a command handler reads its own stream pinned at
/// the sequence the host will append after.
#[async_trait::async_trait]
pub trait StoreReads: Send + Sync {
    /// `event-store.read-stream`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError>;

    /// `event-store.stream-sequence`.
    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError>;

    /// `event-store.list-instances`.
    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<wit::InstancePage, wit::StoreError>;

    /// `event-store.run-projection`: the state as JSON.
    async fn run_projection(
        &self,
        projection_type: &ProjectionType,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, wit::StoreError>;
}

/// What a notification handler may do during one call besides reading.
#[async_trait::async_trait]
pub trait NotificationServices: StoreReads {
    /// `commands.send`.
    async fn send_command(&self, request: SendRequest) -> Result<SendOutcome, wit::SendError>;

    /// `publisher.publish`.
    async fn publish(
        &self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Result<(), wit::PublishError>;
}

/// A role: the import state its instances hold, and the imports its linker
/// serves.
pub(crate) trait Role: Sized + Send + 'static {
    /// How metrics and messages name the role.
    const NAME: &'static str;

    /// The host interfaces it serves (`event-store`, ...).
    const SERVES: &'static [&'static str];

    /// The import state between calls, when no call's services are held.
    fn closed() -> Self;

    /// Adds the host's imports this role serves to `linker` (which has
    /// WASI already).
    fn add_imports(linker: &mut Linker<CallState<Self>>) -> wasmtime::Result<()>;
}

/// A command handler's imports: reads only.
pub(crate) struct CommandImports(Option<Arc<dyn StoreReads>>);

impl CommandImports {
    pub(crate) fn new(reads: Arc<dyn StoreReads>) -> Self {
        CommandImports(Some(reads))
    }
}

impl Role for CommandImports {
    const NAME: &'static str = "command-handler";
    const SERVES: &'static [&'static str] = &["event-store"];

    fn closed() -> Self {
        CommandImports(None)
    }

    fn add_imports(linker: &mut Linker<CallState<Self>>) -> wasmtime::Result<()> {
        event_store::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    }
}

/// A notification handler's imports: reads, sending commands, publishing.
pub(crate) struct NotificationImports(Option<Arc<dyn NotificationServices>>);

impl NotificationImports {
    pub(crate) fn new(services: Arc<dyn NotificationServices>) -> Self {
        NotificationImports(Some(services))
    }
}

impl Role for NotificationImports {
    const NAME: &'static str = "notification-handler";
    const SERVES: &'static [&'static str] = &["event-store", "commands", "publisher"];

    fn closed() -> Self {
        NotificationImports(None)
    }

    fn add_imports(linker: &mut Linker<CallState<Self>>) -> wasmtime::Result<()> {
        event_store::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
        commands::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
        publisher::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    }
}

/// A projection's imports: none of the host's (standard WASI only), so a
/// fold is a function of its state and events alone.
pub(crate) struct ProjectionImports;

impl Role for ProjectionImports {
    const NAME: &'static str = "projection";
    const SERVES: &'static [&'static str] = &[];

    fn closed() -> Self {
        ProjectionImports
    }

    fn add_imports(_: &mut Linker<CallState<Self>>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Links the host functions `component` imports that `R` does not serve as
/// traps, so that its instances link, and a guest that calls one fails its
/// call without any host code running for it.
///
/// Only the host's own interfaces are linked this way: an import nobody
/// supplies is refused at load, and WASI is every role's.
pub(crate) fn link_unserved_as_traps<R: Role>(
    linker: &mut Linker<CallState<R>>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    for (name, import) in component.component_type().imports(engine) {
        let Some(interface) = name.strip_prefix(HOST_INTERFACES) else {
            continue;
        };
        let interface = interface.split('@').next().unwrap_or(interface);
        if R::SERVES.contains(&interface) {
            continue;
        }
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        let functions: Vec<&str> = instance
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(function, _)| function)
            .collect();
        if functions.is_empty() {
            continue;
        }
        let mut stubs = linker.instance(name)?;
        for function in functions {
            let refusal = format!("a {} may not call `{name}#{function}`", R::NAME);
            stubs.func_new(function, move |_, _, _, _| {
                Err(wasmtime::format_err!("{refusal}"))
            })?;
        }
    }
    Ok(())
}

/// The roles whose instances read the store.
pub(crate) trait ReadsStore {
    /// The running call's reads; `None` between calls.
    fn reads(&self) -> Option<Arc<dyn StoreReads>>;
}

impl ReadsStore for CommandImports {
    fn reads(&self) -> Option<Arc<dyn StoreReads>> {
        self.0.clone()
    }
}

impl ReadsStore for NotificationImports {
    fn reads(&self) -> Option<Arc<dyn StoreReads>> {
        self.0
            .clone()
            .map(|services| services as Arc<dyn StoreReads>)
    }
}

type Answer<T, E = wit::StoreError> = wasmtime::Result<Result<T, E>>;

/// The span of one import call, named after the WIT function, inside the
/// span of the call into the guest that made it.
fn import_span(function: &'static str) -> tracing::Span {
    tracing::debug_span!("import", otel.name = function)
}

/// Between calls an instance runs no guest code, so this is only reached by
/// a guest that keeps running after its call ended: never, short of a bug.
fn no_call<E>(refuse: impl FnOnce(String) -> E) -> E {
    refuse("no call is running in this instance".to_owned())
}

fn invalid(error: crate::model::NameError) -> wit::StoreError {
    wit::StoreError::InvalidName(error.to_string())
}

impl<R> CallState<R> {
    /// Notes a failure on the host's side: the guest sees the error, and the
    /// instance is not reused after the call.
    fn noting<T, E>(
        &mut self,
        answer: Result<T, E>,
        host_side: impl Fn(&E) -> bool,
    ) -> Answer<T, E> {
        if let Err(error) = &answer
            && host_side(error)
        {
            self.host_failed = true;
        }
        Ok(answer)
    }
}

fn store_failed(error: &wit::StoreError) -> bool {
    matches!(error, wit::StoreError::Other(_))
}

impl<R: Send> types::Host for CallState<R> {}

impl<R: Role + ReadsStore> event_store::Host for CallState<R> {
    async fn read_stream(
        &mut self,
        stream: wit::StreamId,
        from_sequence: u64,
        max_count: u32,
    ) -> Answer<Vec<wit::Event>> {
        let reads = self.imports.reads();
        let answer = async {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            let reads = reads.ok_or_else(|| no_call(wit::StoreError::Denied))?;
            let events = reads
                .read_stream(&stream, from_sequence, max_count.min(MAX_READ) as usize)
                .await?;
            Ok(events.iter().map(event_to_wit).collect())
        }
        .instrument(import_span("event-store.read-stream"))
        .await;
        self.noting(answer, store_failed)
    }

    async fn stream_sequence(&mut self, stream: wit::StreamId) -> Answer<u64> {
        let reads = self.imports.reads();
        let answer = async {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            let reads = reads.ok_or_else(|| no_call(wit::StoreError::Denied))?;
            reads.stream_sequence(&stream).await
        }
        .instrument(import_span("event-store.stream-sequence"))
        .await;
        self.noting(answer, store_failed)
    }

    async fn list_instances(
        &mut self,
        domain: String,
        entity_type: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Answer<wit::InstancePage> {
        let reads = self.imports.reads();
        let answer = async {
            let domain = Domain::new(domain).map_err(invalid)?;
            let entity_type = EntityType::new(entity_type).map_err(invalid)?;
            let reads = reads.ok_or_else(|| no_call(wit::StoreError::Denied))?;
            reads
                .list_instances(
                    &domain,
                    &entity_type,
                    cursor.as_deref(),
                    limit.min(MAX_PAGE) as usize,
                )
                .await
        }
        .instrument(import_span("event-store.list-instances"))
        .await;
        self.noting(answer, store_failed)
    }

    async fn run_projection(
        &mut self,
        projection_type: String,
        stream: wit::StreamId,
        as_of: Option<u64>,
    ) -> Answer<Vec<u8>> {
        let reads = self.imports.reads();
        let answer = async {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            let projection_type = ProjectionType::new(projection_type).map_err(invalid)?;
            let reads = reads.ok_or_else(|| no_call(wit::StoreError::Denied))?;
            reads.run_projection(&projection_type, &stream, as_of).await
        }
        .instrument(import_span("event-store.run-projection"))
        .await;
        self.noting(answer, store_failed)
    }
}

impl commands::Host for CallState<NotificationImports> {
    async fn send(
        &mut self,
        request: commands::CommandRequest,
    ) -> Answer<commands::CommandOutcome, wit::SendError> {
        let services = self.imports.0.clone();
        let answer = match services {
            Some(services) => {
                services
                    .send_command(request)
                    .instrument(import_span("commands.send"))
                    .await
            }
            None => Err(no_call(wit::SendError::Denied)),
        };
        self.noting(answer, |error| matches!(error, wit::SendError::Other(_)))
    }
}

impl publisher::Host for CallState<NotificationImports> {
    async fn publish(
        &mut self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Answer<(), wit::PublishError> {
        let services = self.imports.0.clone();
        let answer = match services {
            Some(services) => {
                services
                    .publish(topic, event)
                    .instrument(import_span("publisher.publish"))
                    .await
            }
            None => Err(no_call(wit::PublishError::Denied)),
        };
        self.noting(answer, |error| matches!(error, wit::PublishError::Other(_)))
    }
}
