//! Running a projection over a stream: events in batches through one
//! instance, starting from the newest cached state that is not past the
//! requested sequence; a run over many streams ([`Folder`]) keeps one
//! instance per component version for all of them; and keeping the cache at
//! the head of a stream by folding each command's events through its
//! handler's instance.
//!
//! Snapshots are keyed by (stream, projection, component digest), so a new
//! component version never starts from a state an older one computed.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::cache::Lru;
use super::{HostError, Inner, parse_json};
use crate::model::{EventContext, NewEvent, ProjectionType, RecordedEvent, StreamId};
use crate::runtime::{
    CallSlot, CommandImports, INSTANCES_PER_CALL, Instance, LoadedComponent, ProjectionImports,
    ProjectionRoute, Role, wit,
};
use crate::store::AppendOutcome;

/// A projection's state at one point of its stream.
#[derive(Debug, Clone)]
pub struct ProjectionState {
    /// The stream it was computed over.
    pub stream: StreamId,
    /// The projection's name.
    pub projection_type: ProjectionType,
    /// The sequence of the last event it reflects (0: none).
    pub sequence: u64,
    /// The digest of the component version that computed it.
    pub projection_version: String,
    /// The state (JSON).
    pub state: Arc<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SnapshotKey {
    stream: StreamId,
    projection_type: ProjectionType,
    digest: String,
}

#[derive(Debug, Clone)]
struct Snapshot {
    sequence: u64,
    state: Arc<RawValue>,
}

/// The most recent states computed, least recently used evicted first.
#[derive(Debug)]
pub(super) struct SnapshotCache {
    entries: Lru<SnapshotKey, Snapshot>,
}

impl SnapshotCache {
    /// A cache of `capacity` states; 0 turns caching off.
    pub(super) fn new(capacity: usize) -> Self {
        SnapshotCache {
            entries: Lru::new(capacity),
        }
    }

    /// The newest cached state at or before `as_of`.
    fn get(&self, key: &SnapshotKey, as_of: u64) -> Option<Snapshot> {
        let mut entries = self.entries.lock()?;
        entries.get(key).filter(|s| s.sequence <= as_of).cloned()
    }

    /// Keeps `snapshot` unless a newer one is cached already.
    fn put(&self, key: SnapshotKey, snapshot: Snapshot) {
        let Some(mut entries) = self.entries.lock() else {
            return;
        };
        match entries.get_mut(&key) {
            Some(cached) if cached.sequence >= snapshot.sequence => {}
            Some(cached) => *cached = snapshot,
            None => {
                entries.put(key, snapshot);
            }
        }
    }
}

/// A top-level projection query.
pub(super) async fn project(
    inner: &Inner,
    stream: &StreamId,
    projection_type: &ProjectionType,
    as_of: Option<u64>,
) -> Result<ProjectionState, HostError> {
    Folder::top_level(inner)
        .fold(stream, projection_type, as_of)
        .await
}

/// Runs projections over one stream or many, each from its newest usable
/// snapshot, keeping the instances it takes (one per component version,
/// at most [`INSTANCES_PER_CALL`]) for the whole run instead of one per
/// stream.
pub(super) struct Folder<'a> {
    inner: &'a Inner,
    /// A top-level run reserves a call slot when it first needs an
    /// instance; a run inside a call uses the call's.
    slot: Slot,
    /// The instances taken so far, by component digest, the most recently
    /// used last.
    leases: Vec<(String, Instance<ProjectionImports>)>,
}

enum Slot {
    /// Reserve one when an instance is first needed; then held here.
    Reserve(Option<CallSlot>),
    /// Run from inside a call that holds a slot, which covers one instance.
    Held,
}

impl<'a> Folder<'a> {
    /// A run of its own: a projection query, a propagation round.
    pub(super) fn top_level(inner: &'a Inner) -> Self {
        Folder {
            inner,
            slot: Slot::Reserve(None),
            leases: Vec::new(),
        }
    }

    /// A run inside a call, which holds the slot: a handler's
    /// `run-projection`.
    pub(super) fn within_call(inner: &'a Inner) -> Self {
        Folder {
            inner,
            slot: Slot::Held,
            leases: Vec::new(),
        }
    }

    /// How many instances this run may hold at once.
    fn max_leases(&self) -> usize {
        match self.slot {
            Slot::Reserve(_) => INSTANCES_PER_CALL as usize,
            Slot::Held => 1,
        }
    }

    /// An instance of `component`: one this run took before, or a new one
    /// (letting go of the least recently used if the run holds as many as
    /// it may).
    async fn lease(
        &mut self,
        component: &LoadedComponent,
    ) -> Result<&mut Instance<ProjectionImports>, HostError> {
        if let Some(at) = self
            .leases
            .iter()
            .position(|(digest, _)| digest == component.digest())
        {
            let taken = self.leases.remove(at);
            self.leases.push(taken);
        } else {
            if let Slot::Reserve(slot @ None) = &mut self.slot {
                *slot = Some(self.inner.runtime.reserve().await?);
            }
            if self.leases.len() >= self.max_leases() {
                self.leases.remove(0);
            }
            let lease = component.projector().await?;
            self.leases.push((component.digest().to_owned(), lease));
        }
        let (_, lease) = self
            .leases
            .last_mut()
            .expect("a lease was just pushed or moved last");
        Ok(lease)
    }

    /// Folds `stream`'s events into `projection_type` up to `as_of` (or
    /// the head), from the newest usable snapshot.
    pub(super) async fn fold(
        &mut self,
        stream: &StreamId,
        projection_type: &ProjectionType,
        as_of: Option<u64>,
    ) -> Result<ProjectionState, HostError> {
        let inner = self.inner;
        let routes = inner.registry.routes();
        let Some((component, route)) =
            routes.projection(stream.domain(), stream.entity_type(), projection_type)
        else {
            return Err(HostError::NoProjection {
                domain: stream.domain().clone(),
                entity_type: stream.entity_type().clone(),
                projection_type: projection_type.clone(),
            });
        };
        let key = SnapshotKey {
            stream: stream.clone(),
            projection_type: projection_type.clone(),
            digest: component.digest().to_owned(),
        };
        let as_of = as_of.unwrap_or(u64::MAX);
        let cached = inner.snapshots.get(&key, as_of);
        let (mut sequence, mut state) = match &cached {
            Some(snapshot) => (snapshot.sequence, Some(snapshot.state.clone())),
            None => (0, None),
        };

        let batch = inner.config.projection_batch.max(1);
        while sequence < as_of {
            let mut events = inner.store.read_stream(stream, sequence + 1, batch).await?;
            let complete = events.len() < batch;
            events.retain(|e| e.sequence <= as_of);
            let Some(last) = events.last() else { break };
            sequence = last.sequence;
            let declared = declared_by(route, &events);
            if !declared.is_empty() {
                let lease = self.lease(component).await?;
                let folded = apply(
                    inner,
                    component,
                    lease,
                    route,
                    state.as_deref(),
                    stream,
                    &declared,
                )
                .await?;
                state = Some(folded);
            }
            if complete {
                break;
            }
        }

        let state = match state {
            Some(state) => state,
            None => {
                // No event to fold: the projection's initial state.
                let lease = self.lease(component).await?;
                apply(inner, component, lease, route, None, stream, &[]).await?
            }
        };
        if cached.as_ref().is_none_or(|c| c.sequence < sequence) {
            inner.snapshots.put(
                key,
                Snapshot {
                    sequence,
                    state: state.clone(),
                },
            );
        }
        Ok(ProjectionState {
            stream: stream.clone(),
            projection_type: projection_type.clone(),
            sequence,
            projection_version: component.digest().to_owned(),
            state,
        })
    }
}

/// A command's events as they landed: what [`advance`] folds.
pub(super) struct Appended<'a> {
    /// The stream they were appended to.
    pub stream: &'a StreamId,
    /// The events, as the handler returned them.
    pub events: &'a [NewEvent],
    /// The context stored with them.
    pub context: &'a EventContext,
    /// Where the store put them.
    pub outcome: &'a AppendOutcome,
}

impl Appended<'_> {
    /// The events as a read of the stream returns them; `None` if the
    /// outcome does not account for each of them.
    fn recorded(&self) -> Option<Vec<RecordedEvent>> {
        if self.outcome.events.len() != self.events.len() {
            return None;
        }
        self.events
            .iter()
            .zip(&self.outcome.events)
            .map(|(event, landed)| {
                if landed.event_id != event.event_id {
                    return None;
                }
                Some(RecordedEvent {
                    stream: self.stream.clone(),
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    sequence: landed.sequence,
                    position: landed.position,
                    written_at: landed.written_at,
                    payload: event.payload.clone(),
                    context: self.context.clone(),
                })
            })
            .collect()
    }
}

/// Folds a command's own events, just appended, into the states its handler
/// projected before them, through the handler's instance (its imports
/// closed since it answered), and caches them. The stream's next command then finds those
/// projections at the head of the stream and runs no instance for them: one
/// instance per command instead of two. The events are the ones the handler
/// returned, as the store placed them, so nothing is read back.
///
/// Only projections of the handler's own component version are folded this
/// way, so the state is the one a fresh instance of that version computes
/// (a projection's `apply` is a function of its state and events; the
/// instance gets no store access for it). Anything that goes wrong only
/// leaves the snapshot where it was.
pub(super) async fn advance(
    inner: &Inner,
    component: &LoadedComponent,
    lease: &mut Instance<CommandImports>,
    projected: Vec<ProjectionState>,
    appended: Appended<'_>,
) {
    let stream = appended.stream;
    let folds: Vec<(&ProjectionRoute, ProjectionState)> = projected
        .into_iter()
        .filter(|state| state.projection_version == component.digest())
        .filter_map(|state| {
            let route = component.projections().iter().find(|route| {
                route.projection_type == state.projection_type
                    && route.domain == *stream.domain()
                    && route.entity_type == *stream.entity_type()
            })?;
            Some((route, state))
        })
        .collect();
    if folds.is_empty() {
        return;
    }
    let Some(events) = appended.recorded() else {
        return;
    };
    let head = appended.outcome.stream_sequence;
    for (route, projected) in folds {
        // The handler ran at the sequence right before its events; a state
        // from elsewhere would miss some.
        if events.first().map(|e| e.sequence) != Some(projected.sequence + 1) {
            continue;
        }
        let declared = declared_by(route, &events);
        let state = if declared.is_empty() {
            projected.state
        } else {
            let state = Some(&*projected.state);
            match apply(inner, component, lease, route, state, stream, &declared).await {
                Ok(state) => state,
                Err(error) => {
                    tracing::warn!(%stream, projection = %route.projection_type, "folding a command's events failed: {error}");
                    continue;
                }
            }
        };
        let key = SnapshotKey {
            stream: stream.clone(),
            projection_type: projected.projection_type,
            digest: component.digest().to_owned(),
        };
        inner.snapshots.put(
            key,
            Snapshot {
                sequence: head,
                state,
            },
        );
    }
}

/// The events of `events` that `route`'s projection folds.
fn declared_by<'a>(route: &ProjectionRoute, events: &'a [RecordedEvent]) -> Vec<&'a RecordedEvent> {
    events
        .iter()
        .filter(|e| route.event_types.contains(&e.event_type))
        .collect()
}

/// `projection.apply` through `projector`, and the state it returned,
/// checked.
async fn apply(
    inner: &Inner,
    component: &LoadedComponent,
    lease: &mut Instance<impl Role>,
    route: &ProjectionRoute,
    state: Option<&RawValue>,
    stream: &StreamId,
    events: &[&RecordedEvent],
) -> Result<Arc<RawValue>, HostError> {
    let folded = lease
        .apply(route, state.map(|s| s.get().as_bytes()), stream, events)
        .await?
        .map_err(|e| guest_error(component.name(), e))?;
    checked_state(inner, component.name(), folded)
}

/// A state the guest returned, if it is JSON and within the size limit.
fn checked_state(
    inner: &Inner,
    component: &str,
    state: Vec<u8>,
) -> Result<Arc<RawValue>, HostError> {
    let limit = inner.config.max_state_bytes;
    if state.len() > limit {
        return Err(HostError::InvalidOutput {
            component: component.to_owned(),
            message: format!(
                "it returned a state of {} bytes; the limit is {limit}",
                state.len()
            ),
        });
    }
    Ok(Arc::from(parse_json(
        component,
        "the projection state",
        state,
    )?))
}

fn guest_error(component: &str, error: wit::ProjectionError) -> HostError {
    let message = match error {
        wit::ProjectionError::InvalidState(m) => format!("invalid state: {m}"),
        wit::ProjectionError::InvalidEvent(m) => format!("invalid event: {m}"),
        wit::ProjectionError::Other(m) => m,
    };
    HostError::HandlerFailed {
        component: component.to_owned(),
        message,
    }
}
