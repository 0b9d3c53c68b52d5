//! The `event-store`, `commands` and `publisher` imports, served from the
//! call's [`GuestServices`].
//!
//! Guests name streams as plain strings; this is where those names are
//! validated before anything reads with them.

use std::sync::Arc;

use super::bindings::cqrs_wasi::handlers::event_store::Host;
use super::bindings::cqrs_wasi::handlers::{commands, publisher, types};
use super::bindings::wit;
use super::convert::{event_to_wit, stream_from_wit};
use super::{CallState, GuestServices};

/// The most events one `read-stream` call returns, whatever the guest asks
/// for, so that one call cannot make the host buffer a whole long stream.
const MAX_READ: u32 = 4096;

/// The most instance keys one `list-instances` call returns.
const MAX_PAGE: u32 = 1000;

type Answer<T> = wasmtime::Result<Result<T, wit::StoreError>>;

impl CallState {
    /// The call's services, cloned out so that no borrow of the store data
    /// is held across an await.
    fn services(&self) -> Result<Arc<dyn GuestServices>, wit::StoreError> {
        self.services.clone().ok_or_else(|| {
            wit::StoreError::Denied("this call has no access to the event store".to_owned())
        })
    }
}

fn invalid(error: crate::model::NameError) -> wit::StoreError {
    wit::StoreError::InvalidName(error.to_string())
}

impl types::Host for CallState {}

impl commands::Host for CallState {
    async fn send(
        &mut self,
        request: commands::CommandRequest,
    ) -> wasmtime::Result<Result<commands::CommandOutcome, wit::SendError>> {
        let services = self.services.clone();
        let answer = async move {
            let services = services.ok_or_else(|| {
                wit::SendError::Denied("this call may not send commands".to_owned())
            })?;
            services.send_command(request).await
        };
        Ok(answer.await)
    }
}

impl publisher::Host for CallState {
    async fn publish(
        &mut self,
        topic: String,
        event: wit::CustomEvent,
    ) -> wasmtime::Result<Result<(), wit::PublishError>> {
        let services = self.services.clone();
        let answer = async move {
            let services = services
                .ok_or_else(|| wit::PublishError::Denied("this call may not publish".to_owned()))?;
            services.publish(topic, event).await
        };
        Ok(answer.await)
    }
}

impl Host for CallState {
    async fn read_stream(
        &mut self,
        stream: wit::StreamId,
        from_sequence: u64,
        max_count: u32,
    ) -> Answer<Vec<wit::Event>> {
        let services = self.services();
        let answer = async move {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            let events = services?
                .read_stream(&stream, from_sequence, max_count.min(MAX_READ) as usize)
                .await?;
            Ok(events.iter().map(event_to_wit).collect())
        };
        Ok(answer.await)
    }

    async fn stream_sequence(&mut self, stream: wit::StreamId) -> Answer<u64> {
        let services = self.services();
        let answer = async move {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            services?.stream_sequence(&stream).await
        };
        Ok(answer.await)
    }

    async fn list_instances(
        &mut self,
        domain: String,
        entity_type: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Answer<wit::InstancePage> {
        let services = self.services();
        let answer = async move {
            use crate::model::{NameKind, validate_name};
            validate_name(NameKind::Domain, &domain).map_err(invalid)?;
            validate_name(NameKind::EntityType, &entity_type).map_err(invalid)?;
            let page = services?
                .list_instances(
                    &domain,
                    &entity_type,
                    cursor.as_deref(),
                    limit.min(MAX_PAGE) as usize,
                )
                .await?;
            Ok(wit::InstancePage {
                instance_keys: page.instance_keys,
                next_cursor: page.next_cursor,
            })
        };
        Ok(answer.await)
    }

    async fn run_projection(
        &mut self,
        projection_type: String,
        stream: wit::StreamId,
        as_of: Option<u64>,
    ) -> Answer<Vec<u8>> {
        let services = self.services();
        let answer = async move {
            let stream = stream_from_wit(&stream).map_err(invalid)?;
            services?
                .run_projection(&projection_type, &stream, as_of)
                .await
        };
        Ok(answer.await)
    }
}
