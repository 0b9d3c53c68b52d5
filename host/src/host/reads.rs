//! What a handler reads during one call: the streams its component is
//! granted, a command handler's own stream pinned at the sequence the host
//! will append after, and projections over them.
//!
//! [`Reads`] serves a guest's `event-store` import for a command handler
//! and, inside the notification handler's services, for a notification
//! handler. It only reads: sending commands and publishing are the
//! notification handler's (`notify.rs`).

use std::sync::{Arc, Mutex, OnceLock};

use super::projections::{Folder, ProjectionState};
use super::{HostError, Inner};
use crate::model::{Domain, EntityType, ProjectionType, RecordedEvent, StreamId};
use crate::runtime::{LoadedComponent, StoreReads, wit};
use crate::store::{Outage, StoreError};

/// The reads of one call.
pub(super) struct Reads {
    inner: Arc<Inner>,
    component: Arc<LoadedComponent>,
    /// A command handler's own stream and the sequence the host will append
    /// after: its reads of that stream stop there.
    pinned: Option<(StreamId, u64)>,
    /// The projections run over the pinned stream at the pinned sequence:
    /// the host folds the command's events into them once they land.
    projected: Mutex<Vec<ProjectionState>>,
    /// The first outage a read met: the guest sees an error it may pass on
    /// as its own, and the host answers with the outage instead.
    outage: OnceLock<Outage>,
}

impl Reads {
    /// A command handler's reads, its own `stream` seen at sequence `seen`.
    pub(super) fn pinned(
        inner: &Arc<Inner>,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
        seen: u64,
    ) -> Arc<Self> {
        Arc::new(Reads {
            inner: inner.clone(),
            component: component.clone(),
            pinned: Some((stream.clone(), seen)),
            projected: Mutex::default(),
            outage: OnceLock::new(),
        })
    }

    /// The reads of a handler that has no stream of its own.
    pub(super) fn unpinned(inner: &Arc<Inner>, component: &Arc<LoadedComponent>) -> Self {
        Reads {
            inner: inner.clone(),
            component: component.clone(),
            pinned: None,
            projected: Mutex::default(),
            outage: OnceLock::new(),
        }
    }

    /// The component whose call this is.
    pub(super) fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }

    /// The host the call runs on.
    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The states of projections run over the pinned stream at the pinned
    /// sequence, taken.
    pub(super) fn take_projected(&self) -> Vec<ProjectionState> {
        std::mem::take(&mut *self.projected.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The outage a read of this call met, if any: a handler that failed
    /// after it failed because of it.
    pub(super) fn outage(&self) -> Option<Outage> {
        self.outage.get().copied()
    }

    /// How a read's failure looks to the guest; an outage is also kept for
    /// the host's answer.
    fn failed(&self, error: HostError) -> wit::StoreError {
        if let HostError::Store(StoreError::Unavailable { outage, .. }) = &error {
            let _ = self.outage.set(*outage);
        }
        to_store_error(error)
    }

    fn pinned_at(&self, stream: &StreamId) -> Option<u64> {
        self.pinned
            .as_ref()
            .and_then(|(own, seen)| (own == stream).then_some(*seen))
    }

    /// Refuses a read of a domain the component is not granted; the guest
    /// sees the refusal and the log records it.
    fn check_read(&self, domain: &str) -> Result<(), wit::StoreError> {
        if self.inner.capabilities(&self.component).may_read(domain) {
            return Ok(());
        }
        tracing::warn!(
            component = self.component.name(),
            domain,
            "refused a read of an ungranted domain"
        );
        Err(wit::StoreError::Denied(format!(
            "component {} may not read domain {domain}",
            self.component.name()
        )))
    }
}

#[async_trait::async_trait]
impl StoreReads for Reads {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError> {
        self.check_read(stream.domain())?;
        let max_count = match self.pinned_at(stream) {
            Some(seen) => {
                let first = from.max(1);
                let available = if first > seen { 0 } else { seen - first + 1 };
                max_count.min(usize::try_from(available).unwrap_or(usize::MAX))
            }
            None => max_count,
        };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.inner
            .store
            .read_stream(stream, from, max_count)
            .await
            .map_err(|e| self.failed(e.into()))
    }

    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError> {
        self.check_read(stream.domain())?;
        match self.pinned_at(stream) {
            Some(seen) => Ok(seen),
            None => self
                .inner
                .store
                .stream_sequence(stream)
                .await
                .map_err(|e| self.failed(e.into())),
        }
    }

    async fn list_instances(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<wit::InstancePage, wit::StoreError> {
        self.check_read(domain)?;
        let page = self
            .inner
            .store
            .list_instances(domain, entity_type, cursor, limit)
            .await
            .map_err(|e| self.failed(e.into()))?;
        Ok(wit::InstancePage {
            instance_keys: page.instance_keys,
            next_cursor: page.next_cursor,
        })
    }

    async fn run_projection(
        &self,
        projection_type: &ProjectionType,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, wit::StoreError> {
        self.check_read(stream.domain())?;
        let pinned = self.pinned_at(stream);
        let as_of = match (pinned, as_of) {
            (Some(seen), Some(as_of)) => Some(as_of.min(seen)),
            (Some(seen), None) => Some(seen),
            (None, as_of) => as_of,
        };
        // The call's slot covers the projection's instance.
        let mut folder = Folder::within_call(&self.inner);
        let state = folder
            .fold(stream, projection_type, as_of)
            .await
            .map_err(|e| self.failed(e))?;
        let answer = state.state.get().as_bytes().to_vec();
        if pinned == Some(state.sequence) {
            let mut projected = self.projected.lock().unwrap_or_else(|e| e.into_inner());
            if !projected
                .iter()
                .any(|p| p.projection_type == state.projection_type)
            {
                projected.push(state);
            }
        }
        Ok(answer)
    }
}

/// How a host error looks to a guest that caused it through an import.
pub(super) fn to_store_error(error: HostError) -> wit::StoreError {
    match error {
        HostError::InvalidName(e) | HostError::Store(StoreError::InvalidName(e)) => {
            wit::StoreError::InvalidName(e.to_string())
        }
        e @ HostError::NoProjection { .. } => wit::StoreError::UnknownProjection(e.to_string()),
        e => wit::StoreError::Other(e.to_string()),
    }
}
