//! The native baseline: the bank's domain logic as plain Rust, run through
//! the same store work the host does for a command, so that the ratio
//! between the two isolates the cost of the wasm sandbox.
//!
//! Per command, [`NativeHost::execute`] does what `Host::execute` does
//! (`host/src/host/commands.rs`), in the same order and with the same
//! calls:
//!
//! 1. validate the command type, generate a UUID command id;
//! 2. take the stream's turn (a per-stream async lock, created on first use
//!    and forgotten with its last user, as `StreamLocks`);
//! 3. (no `command_record(id)` look-up: like the host, it skips it for an
//!    id it generated);
//! 4. the sequence the handler sees: the stream's head as this runner last
//!    saw it, or, for a stream it has not seen, `stream_sequence(stream)`
//!    (as the host's `StreamHeads`);
//! 5. the `Balance` projection as of that sequence, as `run-projection`
//!    computes it (`host/src/host/projections.rs`): the newest cached JSON
//!    state from an LRU keyed by (stream, projection, version), the events
//!    after it read with `read_stream` in batches of 1,000, the declared
//!    event types folded, the JSON state checked and cached;
//! 6. the handler (`Account::handle`), given the sequence and the state
//!    through [`CommandContext::prepared`], with the command payload decoded
//!    and the events encoded as a component does ([`cqrs_wasi::native`]);
//! 7. each event payload checked as JSON (`json_document`), then
//!    `append` with `Expectation::Exact(seen)`, the command record and the
//!    same context (correlation, causation, handler version);
//! 8. the command's events, as it returned them and as the store placed
//!    them, folded into the `Balance` state it ran on and cached at the new
//!    head (as the host's `projections::advance`), so that the stream's next
//!    command reads nothing.
//!
//! What it leaves out is exactly the sandbox: the call slot, the store and
//! instance of each call, and the conversions to and from WIT types. One
//! difference in order: the host runs the projection when the handler asks
//! for it; this runs it before calling the handler (every bank command but
//! `OpenAccount` asks for it).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use bank::{Account, AccountEvent, Balance};
use cqrs_wasi::{CommandContext, CommandError, native};
use cqrs_wasi_host::model::{
    EventContext, Expectation, KindSet, NameKind, NewEvent, RecordedEvent, StreamId, json_document,
    validate_name,
};
use cqrs_wasi_host::store::{AppendOutcome, AppendRequest, CommandKey, EventStore, StoreError};
use lru::LruCache;
use serde_json::value::RawValue;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// What the handler's version is called in events and snapshot keys.
const VERSION: &str = "native";
/// Events per `read_stream` while folding, as the host's default.
const BATCH: usize = 1000;
/// Snapshots kept, as the host's default.
const SNAPSHOTS: usize = 10_000;

type SnapshotKey = (StreamId, String, String);
/// A projection's JSON state and the sequence it reflects.
type Snapshot = (u64, Arc<RawValue>);
type Snapshots = LruCache<SnapshotKey, Snapshot>;

/// A command runner with the bank's domain logic compiled in.
#[derive(Debug)]
pub struct NativeHost {
    store: Arc<dyn EventStore>,
    snapshots: Option<Mutex<Snapshots>>,
    /// Each stream's last sequence, as this runner last saw it.
    heads: Mutex<LruCache<StreamId, u64>>,
    locks: Mutex<HashMap<StreamId, Arc<AsyncMutex<()>>>>,
}

/// Why a native command failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The domain refused it.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<StoreError> for NativeError {
    fn from(error: StoreError) -> Self {
        NativeError::Other(error.into())
    }
}

impl NativeHost {
    /// A runner over `store` that caches projection states, as the host
    /// does by default.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_snapshots(store, SNAPSHOTS)
    }

    /// A runner over `store` that caches `capacity` projection states (0:
    /// none, every projection folds its whole stream).
    pub fn with_snapshots(store: Arc<dyn EventStore>, capacity: usize) -> Self {
        NativeHost {
            store,
            snapshots: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            heads: Mutex::new(LruCache::new(
                NonZeroUsize::new(SNAPSHOTS).expect("not zero"),
            )),
            locks: Mutex::default(),
        }
    }

    /// The store it runs over.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Runs one bank command, as `Host::execute` does.
    pub async fn execute(
        &self,
        stream: &StreamId,
        command_type: &str,
        payload: &RawValue,
    ) -> Result<AppendOutcome, NativeError> {
        validate_name(NameKind::CommandType, command_type).context("command type")?;
        let command_id = cqrs_wasi_host::model::new_id().to_string();
        let key = CommandKey {
            command_id: command_id.clone(),
            command_type: command_type.to_owned(),
        };
        let _turn = self.turn(stream).await;
        // As the host, no `command_record` look-up: the id was generated
        // just now, so it cannot have run before.
        let context = EventContext {
            correlation_id: Some(command_id.clone()),
            causation_id: Some(command_id.clone()),
            handler_version: Some(VERSION.to_owned()),
            ..EventContext::default()
        };
        // (sequence, whether it is a guess), as the host's command flow.
        let mut next = self.heads().get(stream).map(|&seen| (seen, true));
        for _attempt in 0..16 {
            let (seen, guessed) = match next.take() {
                Some(next) => next,
                None => (self.store.stream_sequence(stream).await?, false),
            };
            let state = self.project(stream, Some(seen)).await?;
            let ctx = CommandContext::prepared(
                cqrs_wasi::StreamId::new(
                    stream.domain(),
                    stream.entity_type(),
                    stream.instance_key(),
                ),
                command_id.clone(),
                cqrs_wasi::EventContext::default(),
                seen,
                vec![("Balance".to_owned(), state.1.get().as_bytes().to_vec())],
            );
            let events =
                match native::handle::<Account>(command_type, payload.get().as_bytes(), &ctx) {
                    Ok(events) => events,
                    Err(CommandError::Rejected(message)) => {
                        // As the host: a refusal must rest on the stream's
                        // actual head.
                        if guessed {
                            let actual = self.store.stream_sequence(stream).await?;
                            if actual != seen {
                                next = Some((actual, false));
                                continue;
                            }
                        }
                        self.store.record_rejection(stream, &key, &message).await?;
                        return Err(NativeError::Rejected(message));
                    }
                    Err(other) => return Err(anyhow::anyhow!("{other:?}").into()),
                };
            let events = events
                .into_iter()
                .map(|(event_type, payload)| {
                    let payload = json_document(payload).context("event payload")?;
                    NewEvent::new(event_type, payload).context("event type")
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let appended = self
                .store
                .append(AppendRequest {
                    stream: stream.clone(),
                    expectation: Expectation::Exact(seen),
                    events: events.clone(),
                    context: context.clone(),
                    command: Some(key.clone()),
                    // As the benchmarked host: no notifications.
                    raise: KindSet::NONE,
                })
                .await;
            match appended {
                Ok(outcome) => {
                    self.heads().put(stream.clone(), outcome.stream_sequence);
                    self.advance(stream, state, &events, &context, &outcome)?;
                    return Ok(outcome);
                }
                Err(StoreError::Conflict { actual, .. }) => next = Some((actual, false)),
                Err(other) => return Err(other.into()),
            }
        }
        Err(anyhow::anyhow!("stream {stream} kept changing").into())
    }

    /// The `Balance` state of `stream` as of `as_of` (`None`: now), with
    /// its sequence, as the host's projection run computes it.
    pub async fn project(
        &self,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> anyhow::Result<(u64, Arc<RawValue>)> {
        let key = (stream.clone(), "Balance".to_owned(), VERSION.to_owned());
        let as_of = as_of.unwrap_or(u64::MAX);
        let cached = self.snapshots().and_then(|mut snapshots| {
            snapshots
                .get(&key)
                .filter(|(sequence, _)| *sequence <= as_of)
                .cloned()
        });
        let (mut sequence, mut state) = match &cached {
            Some((sequence, state)) => (*sequence, Some(state.clone())),
            None => (0, None),
        };
        let declared = cqrs_wasi::variant_names::<AccountEvent>();
        while sequence < as_of {
            let mut events = self.store.read_stream(stream, sequence + 1, BATCH).await?;
            let complete = events.len() < BATCH;
            events.retain(|e| e.sequence <= as_of);
            let Some(last) = events.last() else { break };
            sequence = last.sequence;
            let folded: Vec<cqrs_wasi::RecordedEvent> = events
                .iter()
                .filter(|e| declared.contains(&e.event_type.as_str()))
                .map(to_sdk)
                .collect();
            if !folded.is_empty() {
                let next =
                    native::apply::<Balance>(state.as_deref().map(|s| s.get().as_bytes()), &folded)
                        .map_err(anyhow::Error::msg)?;
                state = Some(Arc::from(json_document(next)?));
            }
            if complete {
                break;
            }
        }
        let state = match state {
            Some(state) => state,
            None => Arc::from(json_document(
                native::apply::<Balance>(None, &[]).map_err(anyhow::Error::msg)?,
            )?),
        };
        if cached.as_ref().is_none_or(|(cached, _)| *cached < sequence) {
            self.cache(key, sequence, &state);
        }
        Ok((sequence, state))
    }

    /// Folds a command's events, as it returned them and as the store
    /// placed them, into `state` (the `Balance` state it ran on), and caches
    /// the result at the stream's new head.
    fn advance(
        &self,
        stream: &StreamId,
        (sequence, state): (u64, Arc<RawValue>),
        events: &[NewEvent],
        context: &EventContext,
        outcome: &AppendOutcome,
    ) -> anyhow::Result<()> {
        if outcome.events.first().map(|e| e.sequence) != Some(sequence + 1) {
            return Ok(());
        }
        let declared = cqrs_wasi::variant_names::<AccountEvent>();
        let folded: Vec<cqrs_wasi::RecordedEvent> = events
            .iter()
            .zip(&outcome.events)
            .filter(|(event, _)| declared.contains(&event.event_type.as_str()))
            .map(|(event, landed)| {
                Ok(to_sdk(&RecordedEvent {
                    stream: stream.clone(),
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    sequence: landed.sequence,
                    position: landed.position,
                    written_at: landed.written_at.context("the store kept no time")?,
                    payload: event.payload.clone(),
                    context: context.clone(),
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        let state = if folded.is_empty() {
            state
        } else {
            let next = native::apply::<Balance>(Some(state.get().as_bytes()), &folded)
                .map_err(anyhow::Error::msg)?;
            Arc::from(json_document(next)?)
        };
        self.cache(
            (stream.clone(), "Balance".to_owned(), VERSION.to_owned()),
            outcome.stream_sequence,
            &state,
        );
        Ok(())
    }

    /// Keeps `state` at `sequence` unless a newer one is cached already.
    fn cache(&self, key: SnapshotKey, sequence: u64, state: &Arc<RawValue>) {
        let Some(mut snapshots) = self.snapshots() else {
            return;
        };
        match snapshots.get_mut(&key) {
            Some(kept) if kept.0 >= sequence => {}
            Some(kept) => *kept = (sequence, state.clone()),
            None => {
                snapshots.put(key, (sequence, state.clone()));
            }
        }
    }

    fn heads(&self) -> MutexGuard<'_, LruCache<StreamId, u64>> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshots(&self) -> Option<MutexGuard<'_, Snapshots>> {
        let snapshots = self.snapshots.as_ref()?;
        Some(snapshots.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn turn(&self, stream: &StreamId) -> Turn<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(stream.clone())
            .or_default()
            .clone();
        Turn {
            host: self,
            stream: stream.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

struct Turn<'a> {
    host: &'a NativeHost,
    stream: StreamId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.host.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.stream)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.stream);
        }
    }
}

/// The event as the SDK sees it, converted field by field as the host
/// converts it to WIT for a component.
fn to_sdk(event: &RecordedEvent) -> cqrs_wasi::RecordedEvent {
    cqrs_wasi::RecordedEvent {
        stream: cqrs_wasi::StreamId::new(
            event.stream.domain(),
            event.stream.entity_type(),
            event.stream.instance_key(),
        ),
        event_type: event.event_type.clone(),
        payload: event.payload.get().as_bytes().to_vec(),
        sequence: event.sequence,
        position: event.position,
        event_id: event.event_id.to_string(),
        written_at: u64::try_from(event.written_at.unix_timestamp_nanos() / 1_000).unwrap_or(0),
        context: cqrs_wasi::EventContext {
            correlation_id: event.context.correlation_id.clone(),
            causation_id: event.context.causation_id.clone(),
            who: event.context.who.clone(),
            source: event.context.source.clone(),
            commentary: event.context.commentary.clone(),
            handler_version: event.context.handler_version.clone(),
        },
    }
}
