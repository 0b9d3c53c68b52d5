//! State propagation: runs the projections of every stream that changed and
//! writes their projection-completed notifications to the outbox.
//!
//! It follows the store's events by position with a checkpoint of its own
//! (claimed like a destination's, so one host does it for a shared store).
//! For each batch of events it runs, for every stream of it whose entity
//! type raises projection-completed notifications, each projection that
//! declares one of the new events, as of the stream's last event in the
//! batch, and adds the result as an outbox document; only then does the
//! checkpoint move. A crash in between runs the projections again, and the
//! documents' deterministic ids keep the outbox free of duplicates.
//!
//! States are propagated, not every step: events of one stream that arrive
//! in one batch are reported by one notification of the state after the
//! last of them.

use std::sync::Arc;
use std::time::Duration;

use super::{HostError, Inner, PROJECTIONS, ProjectionState, projections};
use crate::model::{EventType, ProjectionType, RecordedEvent, StreamId};
use crate::notifications::follow::Round;
use crate::notifications::model::{NotificationKind, ProjectionCompleted, notification_id};
use crate::runtime::GuestFault;
use crate::store::{Document, StoreError};

/// How many events one round takes at most.
const BATCH: usize = 512;

/// The pause after a failed round.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a round stopped; it is tried again after a pause.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every call slot was taken by commands: propagation waits its turn.
    #[error(transparent)]
    Busy(GuestFault),
    #[error("could not encode a projection-completed notification")]
    Encode(#[from] serde_json::Error),
}

/// Starts the propagation task of `inner`'s host.
pub(super) fn start(inner: &Arc<Inner>) {
    inner.propagation.follow(
        "projection propagation".to_owned(),
        Arc::downgrade(inner),
        inner.store.event_changes(),
        |_| RETRY_PAUSE,
        |inner: Arc<Inner>| async move { round(&inner).await },
    );
}

/// One round: the documents of a batch of events, then the checkpoint.
async fn round(inner: &Inner) -> Result<Round, RoundError> {
    let Some(claim) = inner.store.claim(PROJECTIONS).await? else {
        return Ok(Round::Idle);
    };
    let from = claim.next_position();
    let events = inner.store.read_all(from, BATCH).await?;
    let Some(last) = events.last() else {
        inner.store.release(claim, from).await?;
        return Ok(Round::Idle);
    };
    let next = last.position + 1;
    let documents = documents_for(inner, &events).await?;
    if !documents.is_empty() {
        inner.store.add_documents(documents).await?;
    }
    inner.store.release(claim, next).await?;
    Ok(Round::Progress)
}

/// The projection-completed documents for a batch of events.
async fn documents_for(
    inner: &Inner,
    events: &[RecordedEvent],
) -> Result<Vec<Document>, RoundError> {
    // Each stream once, at its last event in the batch, in the order the
    // streams last changed.
    let mut latest: Vec<&RecordedEvent> = Vec::new();
    for event in events.iter().rev() {
        if !latest.iter().any(|seen| seen.stream == event.stream) {
            latest.push(event);
        }
    }
    latest.reverse();

    let routes = inner.registry.routes();
    // One run for the whole batch: each projection component's instance
    // folds every stream of it.
    let mut folder = projections::Folder::top_level(inner);
    let mut documents = Vec::new();
    for last in latest {
        let stream = &last.stream;
        if !inner
            .config
            .raise
            .kinds_for(stream)
            .contains(NotificationKind::ProjectionCompleted)
        {
            continue;
        }
        let changed = |event_types: &[EventType]| {
            events
                .iter()
                .any(|e| e.stream == *stream && event_types.contains(&e.event_type))
        };
        let projection_types: Vec<ProjectionType> = routes
            .components()
            .flat_map(|component| component.projections())
            .filter(|route| {
                route.domain == *stream.domain()
                    && route.entity_type == *stream.entity_type()
                    && changed(&route.event_types)
            })
            .map(|route| route.projection_type.clone())
            .collect();
        for projection_type in projection_types {
            let state = match folder
                .fold(stream, &projection_type, Some(last.sequence))
                .await
            {
                Ok(state) => state,
                // The store failing, or every call slot taken: the round
                // is tried again.
                Err(HostError::Store(error)) => return Err(error.into()),
                Err(HostError::Guest(busy @ GuestFault::Busy { .. })) => {
                    return Err(RoundError::Busy(busy));
                }
                // A projection that fails otherwise would fail on every
                // retry: its notification is skipped, loudly, rather than
                // holding back every stream after it.
                Err(error) => {
                    tracing::warn!(
                        %stream,
                        projection = %projection_type,
                        sequence = last.sequence,
                        "no projection-completed notification: {error}"
                    );
                    continue;
                }
            };
            documents.push(document(stream, projection_type, last, state)?);
        }
    }
    Ok(documents)
}

/// The projection-completed document of `stream`'s `state` as of `last`.
fn document(
    stream: &StreamId,
    projection_type: ProjectionType,
    last: &RecordedEvent,
    state: ProjectionState,
) -> Result<Document, serde_json::Error> {
    let id = notification_id(
        NotificationKind::ProjectionCompleted,
        stream,
        state.sequence,
        Some(&projection_type),
    );
    let completed = ProjectionCompleted {
        stream: stream.clone(),
        projection_type,
        sequence: state.sequence,
        as_of_date: last.written_at,
        value: state.state,
        projection_version: state.projection_version,
        context: last.context.clone(),
    };
    Ok(Document {
        id,
        kind: NotificationKind::ProjectionCompleted,
        topic: None,
        body: serde_json::value::to_raw_value(&completed)?.into(),
    })
}
