//! The one behavioural test suite every [`EventStore`] backend must pass.
//!
//! Each property is an `async fn` over a fresh store; [`conformance_tests!`]
//! turns all of them into `#[tokio::test]`s for one backend, so a backend
//! joins the suite with a single macro line. Properties only use the
//! [`EventStore`] trait: anything backend-specific belongs in that
//! backend's own tests.
//!
//! One file, though a long one: it is one list of short properties, read
//! as the specification of a store, and [`conformance_tests!`] names each
//! property by its path here. Two concerns live beside it: `retention`
//! (pruning the outbox, purging dead letters) and `upgrade` (a store the
//! first released schema made, opened by today's code).

mod retention;
mod upgrade;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{
    AppendOutcome, AppendRequest, CommandKey, CommandRecord, DeadLetter, Document, EventStore,
    Fingerprint, InstancePage, OutboxEntry, StoreError,
};
use crate::model::{
    CommandId, CommandType, Domain, EntityType, EventContext, Expectation, KindSet, NewEvent,
    NotificationKind, StreamId,
};

/// A fresh, empty store for one test, and whatever must outlive it.
pub(crate) struct Fixture {
    /// The store under test. Declared first so that it is dropped first.
    pub store: Arc<dyn EventStore>,
    /// Kept alive until the store is gone (a temporary directory, ...).
    #[expect(dead_code, reason = "only held, so that it is dropped after the store")]
    pub guard: Box<dyn Any + Send>,
    /// Opens another handle on the same store, as a second host sharing it
    /// would; `None` for a backend that one handle owns alone (memory, and
    /// SQLite, whose file has one writer).
    pub another: Option<Another>,
}

/// Opens another handle on a [`Fixture`]'s store.
pub(crate) type Another = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn EventStore>> + Send + Sync>;

/// Instantiates every property of the suite as a `#[tokio::test]`, each
/// against a store made by the `async fn() -> Option<Fixture>` named
/// `$factory`. A factory returns `None` only for a backend that is not
/// available here, after saying so on stdout; the test then passes as
/// skipped. Most properties take the store; those that need more of the
/// fixture (another handle on the store) take the fixture.
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::store::conformance::conformance_tests!(@each $factory;
            expectation_any_appends_to_new_and_existing_streams,
            expectation_no_stream_fails_once_the_stream_has_events,
            expectation_stream_exists_fails_on_an_empty_stream,
            expectation_exact_fails_unless_it_names_the_current_sequence,
            conflict_writes_nothing_and_consumes_no_sequence,
            sequences_start_at_one_and_stay_contiguous,
            concurrent_any_appends_get_contiguous_sequences,
            concurrent_exact_appends_have_one_winner_per_sequence,
            empty_batch_checks_the_expectation_and_creates_no_stream,
            retried_event_ids_return_the_original_outcome_and_write_nothing,
            concurrent_retries_of_one_append_write_it_once,
            partly_reused_event_ids_are_refused,
            event_ids_from_another_stream_are_refused,
            event_ids_out_of_their_original_order_are_refused,
            duplicate_event_ids_in_one_batch_are_refused,
            reused_command_id_returns_the_original_outcome_and_writes_nothing,
            failed_append_records_no_command,
            empty_batch_records_its_command,
            rejection_stands_against_later_appends_and_rejections,
            rejection_of_an_executed_command_returns_the_append_record,
            a_command_id_reused_for_another_command_is_refused,
            concurrent_executions_of_one_command_id_have_one_winner,
                list_instances_pages_after_the_cursor_within_one_entity_type,
            list_instances_with_limit_zero_resumes_where_it_began,
            read_stream_honours_from_and_max_count,
            unknown_stream_reads_as_empty,
            read_all_returns_every_stream_in_position_order,
            context_payload_and_written_at_round_trip,
            outbox_rows_come_with_their_events_in_commit_order,
            outbox_rows_follow_what_the_append_raises,
            refused_and_retried_appends_add_no_outbox_rows,
            documents_are_added_once_per_id,
            claims_are_exclusive_and_checkpoints_only_move_forward,
            checkpoints_move_for_good_during_a_round_that_keeps_its_claim,
            dead_letters_are_kept_replaced_and_removed,
            completions_are_recorded_once,
            appends_signal_events_and_outbox_rows_apart,
            pruning_removes_only_rows_below_the_checkpoint_and_older_than_the_retention,
            pruning_keeps_the_last_row_so_positions_keep_growing,
            pruning_keeps_the_rows_of_dead_letters_until_they_are_purged,
            pruning_forgets_only_completions_no_kept_row_can_need,
            purging_removes_every_dead_letter_of_one_destination,
            registering_a_destination_lists_it_and_moves_no_checkpoint,
        );
        $crate::store::conformance::conformance_tests!(@fixture $factory;
            readers_following_positions_never_skip_an_event,
        );
    };
    (@fixture $factory:path; $($property:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $property() {
                let Some(fixture) = $factory().await else {
                    return;
                };
                $crate::store::conformance::$property(&fixture).await;
            }
        )*
    };
    (@each $factory:path; $($property:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $property() {
                let Some(fixture) = $factory().await else {
                    return;
                };
                $crate::store::conformance::$property(::std::sync::Arc::clone(&fixture.store)).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;
pub(crate) use retention::*;
pub(crate) use upgrade::the_first_released_store_migrates_with_nothing_lost;

// ---------------------------------------------------------------- helpers

pub(crate) fn stream(instance_key: &str) -> StreamId {
    stream_of("Bank", "Account", instance_key)
}

pub(crate) fn stream_of(domain: &str, entity_type: &str, instance_key: &str) -> StreamId {
    StreamId::new(domain, entity_type, instance_key).expect("test names are valid")
}

pub(crate) fn event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent::new(
        event_type,
        RawValue::from_string(payload.to_owned()).expect("test payloads are JSON"),
    )
    .expect("test event types are valid")
}

pub(crate) fn events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| event("MoneyDeposited", &format!(r#"{{"amount":{n}}}"#)))
        .collect()
}

pub(crate) fn request(
    stream: &StreamId,
    expectation: Expectation,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expectation,
        events,
        context: EventContext::default(),
        command: None,
        raise: KindSet::ALL,
    }
}

/// A `Deposit` command's key. Its fingerprint is one all the tests' keys
/// share ([`command_with`] makes others): to a store a fingerprint is an
/// opaque value, so which stream it was computed over does not matter.
pub(crate) fn command(command_id: &str) -> CommandKey {
    command_with(command_id, "Deposit", "{}")
}

/// A key of a `command_type` command whose payload was `payload`.
pub(crate) fn command_with(command_id: &str, command_type: &str, payload: &str) -> CommandKey {
    let command_type = CommandType::new(command_type).expect("a valid command type");
    CommandKey {
        command_id: id(command_id),
        fingerprint: Fingerprint::of(&command_type, &stream("fingerprinted"), payload.as_bytes()),
        command_type,
    }
}

/// A command id of the tests'.
pub(crate) fn id(command_id: &str) -> CommandId {
    CommandId::new(command_id).expect("a valid command id")
}

/// `domain / entity type` of the tests' instance listings.
pub(crate) fn kind_of(domain: &str, entity_type: &str) -> (Domain, EntityType) {
    (
        Domain::new(domain).expect("a valid domain"),
        EntityType::new(entity_type).expect("a valid entity type"),
    )
}

pub(crate) async fn append_n(
    store: &dyn EventStore,
    stream: &StreamId,
    count: usize,
) -> AppendOutcome {
    store
        .append(request(stream, Expectation::Any, events(count)))
        .await
        .expect("unconditional append succeeds")
}

pub(crate) fn sequences(outcome: &AppendOutcome) -> Vec<u64> {
    outcome.events.iter().map(|event| event.sequence).collect()
}

pub(crate) async fn everything(store: &dyn EventStore) -> Vec<(StreamId, u64, Uuid)> {
    store
        .read_all(0, usize::MAX)
        .await
        .expect("read_all")
        .into_iter()
        .map(|event| (event.stream, event.sequence, event.event_id))
        .collect()
}

#[track_caller]
pub(crate) fn assert_conflict(
    result: Result<AppendOutcome, StoreError>,
    expected_stream: &StreamId,
    expected_expectation: Expectation,
    expected_actual: u64,
) {
    match result {
        Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, *expected_stream);
            assert_eq!(expected, expected_expectation);
            assert_eq!(actual, expected_actual);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_event_id_reused(result: Result<AppendOutcome, StoreError>, expected: Uuid) {
    match result {
        Err(StoreError::EventIdReused { event_id }) => assert_eq!(event_id, expected),
        other => panic!("expected EventIdReused({expected}), got {other:?}"),
    }
}

#[track_caller]
fn assert_already_executed(result: Result<AppendOutcome, StoreError>, expected: &CommandRecord) {
    match result {
        Err(StoreError::CommandAlreadyExecuted { record }) => assert_eq!(*record, *expected),
        other => panic!("expected CommandAlreadyExecuted, got {other:?}"),
    }
}

#[track_caller]
fn assert_command_id_reused<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    expected: &CommandRecord,
) {
    match result {
        Err(StoreError::CommandIdReused { record }) => assert_eq!(*record, *expected),
        other => panic!("expected CommandIdReused, got {other:?}"),
    }
}

// ----------------------------------------------------------- expectations

pub(crate) async fn expectation_any_appends_to_new_and_existing_streams(
    store: Arc<dyn EventStore>,
) {
    let s = stream("any");
    let first = store
        .append(request(&s, Expectation::Any, events(1)))
        .await
        .unwrap();
    assert_eq!(first.stream_sequence, 1);
    let second = store
        .append(request(&s, Expectation::Any, events(2)))
        .await
        .unwrap();
    assert_eq!(sequences(&second), [2, 3]);
    assert_eq!(second.stream_sequence, 3);
}

pub(crate) async fn expectation_no_stream_fails_once_the_stream_has_events(
    store: Arc<dyn EventStore>,
) {
    let s = stream("no-stream");
    let created = store
        .append(request(&s, Expectation::NoStream, events(2)))
        .await
        .unwrap();
    assert_eq!(created.stream_sequence, 2);
    let again = store
        .append(request(&s, Expectation::NoStream, events(1)))
        .await;
    assert_conflict(again, &s, Expectation::NoStream, 2);
}

pub(crate) async fn expectation_stream_exists_fails_on_an_empty_stream(store: Arc<dyn EventStore>) {
    let s = stream("exists");
    let refused = store
        .append(request(&s, Expectation::StreamExists, events(1)))
        .await;
    assert_conflict(refused, &s, Expectation::StreamExists, 0);
    append_n(&*store, &s, 1).await;
    let accepted = store
        .append(request(&s, Expectation::StreamExists, events(1)))
        .await
        .unwrap();
    assert_eq!(sequences(&accepted), [2]);
}

pub(crate) async fn expectation_exact_fails_unless_it_names_the_current_sequence(
    store: Arc<dyn EventStore>,
) {
    let s = stream("exact");
    assert_conflict(
        store
            .append(request(&s, Expectation::Exact(1), events(1)))
            .await,
        &s,
        Expectation::Exact(1),
        0,
    );
    let created = store
        .append(request(&s, Expectation::Exact(0), events(2)))
        .await
        .unwrap();
    assert_eq!(sequences(&created), [1, 2]);
    for wrong in [0, 1, 3] {
        assert_conflict(
            store
                .append(request(&s, Expectation::Exact(wrong), events(1)))
                .await,
            &s,
            Expectation::Exact(wrong),
            2,
        );
    }
    let next = store
        .append(request(&s, Expectation::Exact(2), events(1)))
        .await
        .unwrap();
    assert_eq!(sequences(&next), [3]);
}

pub(crate) async fn conflict_writes_nothing_and_consumes_no_sequence(store: Arc<dyn EventStore>) {
    let s = stream("conflict");
    append_n(&*store, &s, 1).await;
    let before = everything(&*store).await;
    let refused = events(2);
    let refused_ids: Vec<Uuid> = refused.iter().map(|event| event.event_id).collect();
    assert!(
        store
            .append(request(&s, Expectation::Exact(5), refused))
            .await
            .is_err()
    );
    assert_eq!(everything(&*store).await, before);
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 1);

    let next = append_n(&*store, &s, 1).await;
    assert_eq!(sequences(&next), [2]);
    // The refused events' ids were not consumed either.
    let mut retry = events(2);
    for (event, id) in retry.iter_mut().zip(refused_ids) {
        event.event_id = id;
    }
    let landed = store
        .append(request(&s, Expectation::Any, retry))
        .await
        .unwrap();
    assert_eq!(sequences(&landed), [3, 4]);
}

pub(crate) async fn sequences_start_at_one_and_stay_contiguous(store: Arc<dyn EventStore>) {
    let s = stream("contiguous");
    let mut expected = 1..;
    let mut last_position = 0;
    for size in [1, 3, 2, 5] {
        let outcome = append_n(&*store, &s, size).await;
        let wanted: Vec<u64> = expected.by_ref().take(size).collect();
        assert_eq!(sequences(&outcome), wanted);
        assert_eq!(outcome.stream_sequence, *wanted.last().unwrap());
        for appended in &outcome.events {
            assert!(appended.position > last_position, "positions increase");
            last_position = appended.position;
        }
    }
    let read = store.read_stream(&s, 1, usize::MAX).await.unwrap();
    let read_sequences: Vec<u64> = read.iter().map(|event| event.sequence).collect();
    assert_eq!(read_sequences, (1..=11).collect::<Vec<_>>());
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 11);
}

// ------------------------------------------------------------ concurrency

pub(crate) async fn concurrent_any_appends_get_contiguous_sequences(store: Arc<dyn EventStore>) {
    let s = stream("concurrent-any");
    let mut appends = JoinSet::new();
    for _ in 0..32 {
        let (store, s) = (Arc::clone(&store), s.clone());
        appends.spawn(async move { append_n(&*store, &s, 1).await });
    }
    let mut landed: Vec<(u64, u64)> = appends
        .join_all()
        .await
        .iter()
        .map(|outcome| (outcome.events[0].sequence, outcome.events[0].position))
        .collect();
    landed.sort_unstable();
    let landed_sequences: Vec<u64> = landed.iter().map(|&(sequence, _)| sequence).collect();
    assert_eq!(landed_sequences, (1..=32).collect::<Vec<_>>());
    assert!(
        landed.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "positions increase with sequences: {landed:?}"
    );
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 32);
}

/// Retries of one append racing each other (a client that gave up waiting
/// and sent it again, several times) write it once, and every one of them
/// answers with its outcome, while appends to other streams land beside
/// them.
pub(crate) async fn concurrent_retries_of_one_append_write_it_once(store: Arc<dyn EventStore>) {
    let s = stream("concurrent-retries");
    let append = request(&s, Expectation::Exact(0), events(2));
    let (mut retries, mut others) = (JoinSet::new(), JoinSet::new());
    for n in 0..16 {
        let (retrying, append) = (Arc::clone(&store), append.clone());
        retries.spawn(async move { retrying.append(append).await });
        let (store, other) = (Arc::clone(&store), stream(&format!("beside-retries-{n}")));
        others.spawn(async move {
            store
                .append(request(&other, Expectation::Exact(0), events(1)))
                .await
        });
    }
    let mut outcomes: Vec<AppendOutcome> = retries
        .join_all()
        .await
        .into_iter()
        .map(|result| result.expect("a retry returns the original outcome"))
        .collect();
    outcomes.dedup();
    assert_eq!(
        outcomes.len(),
        1,
        "one outcome for every retry: {outcomes:?}"
    );
    for result in others.join_all().await {
        result.expect("an append beside the retries lands");
    }
    assert_eq!(store.read_stream(&s, 1, usize::MAX).await.unwrap().len(), 2);
    assert_eq!(store.read_all(0, usize::MAX).await.unwrap().len(), 2 + 16);
}

pub(crate) async fn concurrent_exact_appends_have_one_winner_per_sequence(
    store: Arc<dyn EventStore>,
) {
    let s = stream("concurrent-exact");
    for current in 0..5 {
        let mut racers = JoinSet::new();
        for _ in 0..8 {
            let (store, s) = (Arc::clone(&store), s.clone());
            racers.spawn(async move {
                store
                    .append(request(&s, Expectation::Exact(current), events(1)))
                    .await
            });
        }
        let mut winners = 0;
        for result in racers.join_all().await {
            match result {
                Ok(outcome) => {
                    winners += 1;
                    assert_eq!(sequences(&outcome), [current + 1]);
                }
                Err(error) => {
                    assert_conflict(Err(error), &s, Expectation::Exact(current), current + 1)
                }
            }
        }
        assert_eq!(
            winners,
            1,
            "exactly one racer wins sequence {}",
            current + 1
        );
    }
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 5);
}

// ------------------------------------------------------------ empty batch

pub(crate) async fn empty_batch_checks_the_expectation_and_creates_no_stream(
    store: Arc<dyn EventStore>,
) {
    let s = stream("empty");
    let outcome = store
        .append(request(&s, Expectation::NoStream, Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        AppendOutcome {
            events: Vec::new(),
            stream_sequence: 0
        }
    );
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 0);
    let page = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            None,
            10,
        )
        .await
        .unwrap();
    assert!(page.instance_keys.is_empty(), "{page:?}");

    append_n(&*store, &s, 2).await;
    assert_conflict(
        store
            .append(request(&s, Expectation::Exact(1), Vec::new()))
            .await,
        &s,
        Expectation::Exact(1),
        2,
    );
    let at_two = store
        .append(request(&s, Expectation::Exact(2), Vec::new()))
        .await
        .unwrap();
    assert_eq!(at_two.stream_sequence, 2);
    assert!(at_two.events.is_empty());
}

// -------------------------------------------------------------- event ids

pub(crate) async fn retried_event_ids_return_the_original_outcome_and_write_nothing(
    store: Arc<dyn EventStore>,
) {
    let s = stream("retry");
    let batch = events(3);
    let original = store
        .append(request(&s, Expectation::NoStream, batch.clone()))
        .await
        .unwrap();
    append_n(&*store, &s, 1).await;
    let before = everything(&*store).await;

    // The retry's expectation no longer holds; it is a retry all the same.
    let retried = store
        .append(request(&s, Expectation::NoStream, batch.clone()))
        .await
        .unwrap();
    assert_eq!(retried, original);
    // A retry of a leading part of the batch is a retry of those events,
    // down to the first alone (which a backend may look up another way).
    for len in [2, 1] {
        let prefix = store
            .append(request(&s, Expectation::Any, batch[..len].to_vec()))
            .await
            .unwrap();
        assert_eq!(prefix.events, original.events[..len]);
        assert_eq!(prefix.stream_sequence, len as u64);
    }
    assert_eq!(everything(&*store).await, before);
}

pub(crate) async fn partly_reused_event_ids_are_refused(store: Arc<dyn EventStore>) {
    let s = stream("partial");
    let batch = events(2);
    store
        .append(request(&s, Expectation::Any, batch.clone()))
        .await
        .unwrap();
    let before = everything(&*store).await;
    let mut mixed = events(1);
    mixed.push(batch[1].clone());
    let reused = batch[1].event_id;
    assert_event_id_reused(
        store.append(request(&s, Expectation::Any, mixed)).await,
        reused,
    );
    assert_eq!(everything(&*store).await, before);
}

pub(crate) async fn event_ids_from_another_stream_are_refused(store: Arc<dyn EventStore>) {
    let (here, there) = (stream("here"), stream("there"));
    let batch = events(2);
    store
        .append(request(&here, Expectation::Any, batch.clone()))
        .await
        .unwrap();
    assert_event_id_reused(
        store
            .append(request(&there, Expectation::Any, batch.clone()))
            .await,
        batch[0].event_id,
    );
    assert_eq!(store.stream_sequence(&there).await.unwrap(), 0);
}

pub(crate) async fn event_ids_out_of_their_original_order_are_refused(store: Arc<dyn EventStore>) {
    let s = stream("order");
    let batch = events(3);
    store
        .append(request(&s, Expectation::Any, batch.clone()))
        .await
        .unwrap();
    let swapped = vec![batch[1].clone(), batch[0].clone()];
    assert_event_id_reused(
        store.append(request(&s, Expectation::Any, swapped)).await,
        batch[1].event_id,
    );
    let gapped = vec![batch[0].clone(), batch[2].clone()];
    assert_event_id_reused(
        store.append(request(&s, Expectation::Any, gapped)).await,
        batch[0].event_id,
    );
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 3);
}

pub(crate) async fn duplicate_event_ids_in_one_batch_are_refused(store: Arc<dyn EventStore>) {
    let s = stream("duplicates");
    let one = event("MoneyDeposited", "{}");
    let twice = vec![one.clone(), event("MoneyWithdrawn", "{}"), one.clone()];
    assert_event_id_reused(
        store.append(request(&s, Expectation::Any, twice)).await,
        one.event_id,
    );
    assert!(everything(&*store).await.is_empty());
}

// ---------------------------------------------------------------- commands

pub(crate) async fn reused_command_id_returns_the_original_outcome_and_writes_nothing(
    store: Arc<dyn EventStore>,
) {
    let s = stream("command");
    let batch = events(2);
    let mut first = request(&s, Expectation::NoStream, batch.clone());
    first.command = Some(command("cmd-1"));
    let outcome = store.append(first.clone()).await.unwrap();
    let record = CommandRecord::Appended {
        command_id: id("cmd-1"),
        stream: s.clone(),
        command_type: CommandType::new("Deposit").expect("a valid command type"),
        outcome: outcome.clone(),
        fingerprint: Some(command("cmd-1").fingerprint),
    };
    assert_eq!(
        store.command_record(&id("cmd-1")).await.unwrap(),
        Some(record.clone())
    );
    let before = everything(&*store).await;

    // The command id is checked before event ids and the expectation.
    assert_already_executed(store.append(first).await, &record);
    let mut fresh = request(&s, Expectation::Any, events(1));
    fresh.command = Some(command("cmd-1"));
    assert_already_executed(store.append(fresh).await, &record);
    assert_eq!(everything(&*store).await, before);
}

pub(crate) async fn failed_append_records_no_command(store: Arc<dyn EventStore>) {
    let s = stream("failed-command");
    let mut refused = request(&s, Expectation::StreamExists, events(1));
    refused.command = Some(command("cmd-2"));
    assert!(store.append(refused).await.is_err());
    assert_eq!(store.command_record(&id("cmd-2")).await.unwrap(), None);

    let mut accepted = request(&s, Expectation::NoStream, events(1));
    accepted.command = Some(command("cmd-2"));
    let outcome = store.append(accepted).await.unwrap();
    assert_eq!(sequences(&outcome), [1]);
}

pub(crate) async fn empty_batch_records_its_command(store: Arc<dyn EventStore>) {
    let s = stream("empty-command");
    append_n(&*store, &s, 2).await;
    let mut nothing = request(&s, Expectation::Exact(2), Vec::new());
    nothing.command = Some(command("cmd-3"));
    let outcome = store.append(nothing).await.unwrap();
    assert_eq!(
        outcome,
        AppendOutcome {
            events: Vec::new(),
            stream_sequence: 2
        }
    );
    assert_eq!(
        store.command_record(&id("cmd-3")).await.unwrap(),
        Some(CommandRecord::Appended {
            command_id: id("cmd-3"),
            stream: s,
            command_type: CommandType::new("Deposit").expect("a valid command type"),
            outcome,
            fingerprint: Some(command("cmd-3").fingerprint),
        })
    );
}

pub(crate) async fn rejection_stands_against_later_appends_and_rejections(
    store: Arc<dyn EventStore>,
) {
    let s = stream("rejected");
    let rejected = store
        .record_rejection(&s, &command("cmd-4"), "insufficient funds")
        .await
        .unwrap();
    let expected = CommandRecord::Rejected {
        command_id: id("cmd-4"),
        stream: s.clone(),
        command_type: CommandType::new("Deposit").expect("a valid command type"),
        message: "insufficient funds".to_owned(),
        fingerprint: Some(command("cmd-4").fingerprint),
    };
    assert_eq!(rejected, expected);
    assert_eq!(
        store.command_record(&id("cmd-4")).await.unwrap(),
        Some(expected.clone())
    );

    let again = store
        .record_rejection(&s, &command("cmd-4"), "another reason")
        .await
        .unwrap();
    assert_eq!(again, expected);
    let mut append = request(&s, Expectation::Any, events(1));
    append.command = Some(command("cmd-4"));
    assert_already_executed(store.append(append).await, &expected);
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 0);
}

pub(crate) async fn rejection_of_an_executed_command_returns_the_append_record(
    store: Arc<dyn EventStore>,
) {
    let s = stream("executed");
    let mut append = request(&s, Expectation::Any, events(1));
    append.command = Some(command("cmd-5"));
    store.append(append).await.unwrap();
    let stands = store
        .record_rejection(&s, &command("cmd-5"), "too late")
        .await
        .unwrap();
    assert!(
        matches!(stands, CommandRecord::Appended { .. }),
        "{stands:?}"
    );
    assert_eq!(
        store.command_record(&id("cmd-5")).await.unwrap(),
        Some(stands)
    );
}

/// A command id recorded for one command (an append or a rejection) and
/// sent again with another payload, command type or stream is refused as
/// reused, with the record, whether it comes as an append or a rejection,
/// and writes nothing; the same command again is a retry. The record keeps
/// the fingerprint.
pub(crate) async fn a_command_id_reused_for_another_command_is_refused(store: Arc<dyn EventStore>) {
    let (s, elsewhere) = (stream("fingerprinted"), stream("elsewhere"));
    let deposit = |key: &str, payload: &str| command_with(key, "Deposit", payload);
    let mut first = request(&s, Expectation::Any, events(1));
    first.command = Some(deposit("cmd-fp", r#"{"amount": 1}"#));
    let outcome = store.append(first).await.unwrap();
    let appended = store.command_record(&id("cmd-fp")).await.unwrap().unwrap();
    assert_eq!(
        appended.fingerprint(),
        Some(deposit("cmd-fp", r#"{"amount": 1}"#).fingerprint)
    );
    store
        .record_rejection(&s, &deposit("cmd-fp-no", r#"{"amount": 1}"#), "no")
        .await
        .unwrap();
    let rejected = store
        .command_record(&id("cmd-fp-no"))
        .await
        .unwrap()
        .unwrap();
    let before = everything(&*store).await;
    let records_before = outbox(&*store).await;

    for (key, record) in [("cmd-fp", &appended), ("cmd-fp-no", &rejected)] {
        let others = [
            // Another payload, down to its bytes.
            (&s, deposit(key, r#"{"amount": 7}"#)),
            (&s, deposit(key, r#"{"amount":1}"#)),
            // Another command type, another stream.
            (&s, command_with(key, "Withdraw", r#"{"amount": 1}"#)),
            (&elsewhere, deposit(key, r#"{"amount": 1}"#)),
        ];
        for (to, other) in others {
            let mut append = request(to, Expectation::Any, events(1));
            append.command = Some(other.clone());
            assert_command_id_reused(store.append(append).await, record);
            assert_command_id_reused(store.record_rejection(to, &other, "no").await, record);
        }
        // The same command again is a retry.
        let same = deposit(key, r#"{"amount": 1}"#);
        let mut retry = request(&s, Expectation::Any, events(1));
        retry.command = Some(same.clone());
        assert_already_executed(store.append(retry).await, record);
        assert_eq!(
            store.record_rejection(&s, &same, "again").await.unwrap(),
            *record
        );
    }
    assert!(matches!(&appended, CommandRecord::Appended { outcome: o, .. } if *o == outcome));
    assert_eq!(everything(&*store).await, before);
    assert_eq!(outbox(&*store).await, records_before);
    assert_eq!(
        store.command_record(&id("cmd-fp")).await.unwrap(),
        Some(appended)
    );
}

/// Appends two events under a command and returns the command's record as
/// the store keeps it now, and its JSON as the SQL stores kept it before
/// schema version 3: the same, but for the events' `writtenAt`. A backend's
/// tests put the old JSON in its place, migrate the store again and expect
/// the record as it was.
pub(crate) async fn a_record_and_its_json_without_written_at(
    store: &dyn EventStore,
) -> (CommandRecord, String) {
    let mut append = request(&stream("aged"), Expectation::Any, events(2));
    append.command = Some(command("cmd-aged"));
    store.append(append).await.unwrap();
    let record = store
        .command_record(&id("cmd-aged"))
        .await
        .unwrap()
        .expect("the record reads back");
    let mut json = serde_json::to_value(&record).unwrap();
    let events = json["outcome"]["events"].as_array_mut().unwrap();
    assert_eq!(events.len(), 2);
    for event in events {
        let written_at = event.as_object_mut().unwrap().remove("writtenAt");
        assert!(written_at.is_some(), "{event}");
    }
    (record, json.to_string())
}

/// Command records as a host that kept no fingerprints wrote them, by id:
/// an append of no events and a rejection, both `Deposit`s to
/// `Bank/Account/old`. A backend's tests put them in its store the way that
/// host did, then run [`records_without_a_fingerprint_keep_replaying`].
pub(crate) const RECORDS_WITHOUT_FINGERPRINTS: [(&str, &str); 2] = [
    (
        "cmd-old",
        r#"{"kind":"appended","commandId":"cmd-old","stream":{"domain":"Bank","entityType":"Account","instanceKey":"old"},"commandType":"Deposit","outcome":{"events":[],"streamSequence":0}}"#,
    ),
    (
        "cmd-old-no",
        r#"{"kind":"rejected","commandId":"cmd-old-no","stream":{"domain":"Bank","entityType":"Account","instanceKey":"old"},"commandType":"Deposit","message":"no"}"#,
    ),
];

/// Records written before fingerprints were kept
/// ([`RECORDS_WITHOUT_FINGERPRINTS`], already in `store`) have none, and
/// keep replaying as they did then: for the same command type and stream,
/// whatever the payload; another type or stream is refused as reused.
pub(crate) async fn records_without_a_fingerprint_keep_replaying(store: &dyn EventStore) {
    let old = stream("old");
    for (key, _) in RECORDS_WITHOUT_FINGERPRINTS {
        let record = store
            .command_record(&id(key))
            .await
            .unwrap()
            .expect("the old record reads back");
        assert_eq!(record.fingerprint(), None, "{record:?}");
        for payload in [r#"{"amount": 1}"#, r#"{"amount": 7}"#] {
            let retry = command_with(key, "Deposit", payload);
            let mut append = request(&old, Expectation::Any, events(1));
            append.command = Some(retry.clone());
            assert_already_executed(store.append(append).await, &record);
            assert_eq!(
                store.record_rejection(&old, &retry, "again").await.unwrap(),
                record
            );
        }
        let other_type = command_with(key, "Withdraw", "{}");
        assert_command_id_reused(
            store.record_rejection(&old, &other_type, "no").await,
            &record,
        );
        let mut elsewhere = request(&stream("elsewhere"), Expectation::Any, events(1));
        elsewhere.command = Some(command_with(key, "Deposit", "{}"));
        assert_command_id_reused(store.append(elsewhere).await, &record);
    }
    assert!(everything(store).await.is_empty());
}

/// Appends to streams of their own and rejections, all with one command
/// id, at once: one of them is recorded, and every other is refused as
/// another command under that id, with that record, and writes nothing (no
/// events, no outbox rows).
pub(crate) async fn concurrent_executions_of_one_command_id_have_one_winner(
    store: Arc<dyn EventStore>,
) {
    const APPENDS: usize = 8;
    const REJECTIONS: usize = 2;
    let mut appends = JoinSet::new();
    for n in 0..APPENDS {
        let store = Arc::clone(&store);
        appends.spawn(async move {
            let mut append = request(&stream(&format!("race-{n}")), Expectation::Any, events(1));
            append.command = Some(command("cmd-race"));
            store.append(append).await
        });
    }
    let mut rejections = JoinSet::new();
    for n in 0..REJECTIONS {
        let store = Arc::clone(&store);
        rejections.spawn(async move {
            let s = stream(&format!("race-rejected-{n}"));
            store.record_rejection(&s, &command("cmd-race"), "no").await
        });
    }
    let appended = appends.join_all().await;
    let rejected = rejections.join_all().await;

    let standing = store
        .command_record(&id("cmd-race"))
        .await
        .unwrap()
        .expect("one execution was recorded");
    for result in rejected {
        match result {
            Ok(record) => assert_eq!(record, standing, "the recorded rejection is this one"),
            refused => assert_command_id_reused(refused, &standing),
        }
    }
    let mut winners = Vec::new();
    for result in appended {
        match result {
            Ok(outcome) => winners.push(outcome),
            refused => assert_command_id_reused(refused, &standing),
        }
    }
    match &standing {
        CommandRecord::Appended {
            stream, outcome, ..
        } => {
            assert_eq!(
                winners,
                std::slice::from_ref(outcome),
                "the recorded append is the one that won"
            );
            let written: Vec<(StreamId, u64)> = everything(&*store)
                .await
                .into_iter()
                .map(|(stream, sequence, _)| (stream, sequence))
                .collect();
            assert_eq!(written, [(stream.clone(), 1)]);
            assert_eq!(
                outbox(&*store).await,
                [
                    format!("NewEntity {stream} 1"),
                    format!("EventAppended {stream} 1")
                ]
            );
        }
        CommandRecord::Rejected { .. } => {
            assert!(winners.is_empty(), "an append won after a rejection");
            assert!(everything(&*store).await.is_empty());
            assert!(outbox(&*store).await.is_empty());
        }
    }
}

// ------------------------------------------------------------------ reads

pub(crate) async fn list_instances_pages_after_the_cursor_within_one_entity_type(
    store: Arc<dyn EventStore>,
) {
    // Inserted out of order; `B` < `a` in byte order.
    for key in ["k5", "a", "k1", "B", "k3", "k2", "k4"] {
        append_n(&*store, &stream(key), 1).await;
    }
    for other in [
        stream_of("Bank", "Loan", "k0"),
        stream_of("Bank", "Accounts", "k0"),
        stream_of("Bank.Retail", "Account", "k0"),
        stream_of("Retail", "Account", "k0"),
    ] {
        append_n(&*store, &other, 1).await;
    }
    store
        .append(request(&stream("k0-empty"), Expectation::Any, Vec::new()))
        .await
        .unwrap();

    let page = |keys: &[&str], next: Option<&str>| InstancePage {
        instance_keys: keys.iter().map(|&key| key.to_owned()).collect(),
        next_cursor: next.map(str::to_owned),
    };
    let first = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            None,
            3,
        )
        .await
        .unwrap();
    assert_eq!(first, page(&["B", "a", "k1"], Some("k1")));
    let second = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            first.next_cursor.as_deref(),
            3,
        )
        .await
        .unwrap();
    assert_eq!(second, page(&["k2", "k3", "k4"], Some("k4")));
    let third = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            second.next_cursor.as_deref(),
            3,
        )
        .await
        .unwrap();
    assert_eq!(third, page(&["k5"], None));

    // A page that is exactly full does not know it is the last: the next one
    // is empty.
    let exact = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            Some("k2"),
            3,
        )
        .await
        .unwrap();
    assert_eq!(exact, page(&["k3", "k4", "k5"], None));
    // The cursor need not be an existing key.
    let between = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            Some("k25"),
            1,
        )
        .await
        .unwrap();
    assert_eq!(between, page(&["k3"], Some("k3")));
    let past = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            Some("k5"),
            3,
        )
        .await
        .unwrap();
    assert_eq!(past, page(&[], None));
    let unknown = store
        .list_instances(
            &kind_of("Bank", "Nothing").0,
            &kind_of("Bank", "Nothing").1,
            None,
            3,
        )
        .await
        .unwrap();
    assert_eq!(unknown, page(&[], None));
}

pub(crate) async fn list_instances_with_limit_zero_resumes_where_it_began(
    store: Arc<dyn EventStore>,
) {
    for key in ["k1", "k2"] {
        append_n(&*store, &stream(key), 1).await;
    }
    let list = |cursor: Option<&'static str>| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_instances(
                    &kind_of("Bank", "Account").0,
                    &kind_of("Bank", "Account").1,
                    cursor,
                    0,
                )
                .await
                .unwrap()
        }
    };
    let from_start = list(None).await;
    assert!(from_start.instance_keys.is_empty());
    assert_eq!(from_start.next_cursor.as_deref(), Some(""));
    let resumed = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            Some(""),
            10,
        )
        .await
        .unwrap();
    assert_eq!(resumed.instance_keys, ["k1", "k2"]);
    assert_eq!(list(Some("k1")).await.next_cursor.as_deref(), Some("k1"));
    assert_eq!(list(Some("k2")).await.next_cursor, None);
}

pub(crate) async fn read_stream_honours_from_and_max_count(store: Arc<dyn EventStore>) {
    let s = stream("reads");
    append_n(&*store, &s, 5).await;
    append_n(&*store, &stream("other"), 2).await;
    let read = |from: u64, max_count: usize| {
        let (store, s) = (Arc::clone(&store), s.clone());
        async move {
            store
                .read_stream(&s, from, max_count)
                .await
                .unwrap()
                .iter()
                .map(|event| event.sequence)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read(0, 10).await, [1, 2, 3, 4, 5]);
    assert_eq!(read(1, 10).await, [1, 2, 3, 4, 5]);
    assert_eq!(read(3, 10).await, [3, 4, 5]);
    assert_eq!(read(2, 2).await, [2, 3]);
    assert_eq!(read(5, 1).await, [5]);
    assert_eq!(read(6, 10).await, Vec::<u64>::new());
    assert_eq!(read(1, 0).await, Vec::<u64>::new());
    assert_eq!(read(u64::MAX, usize::MAX).await, Vec::<u64>::new());
}

pub(crate) async fn unknown_stream_reads_as_empty(store: Arc<dyn EventStore>) {
    let s = stream("unknown");
    assert!(store.read_stream(&s, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.stream_sequence(&s).await.unwrap(), 0);
    assert_eq!(
        store.command_record(&id("cmd-unknown")).await.unwrap(),
        None
    );
    assert!(store.read_all(0, 10).await.unwrap().is_empty());
}

pub(crate) async fn read_all_returns_every_stream_in_position_order(store: Arc<dyn EventStore>) {
    let (a, b) = (stream("a"), stream_of("Shop", "Order", "o-1"));
    let mut appended = Vec::new();
    for (s, count) in [(&a, 2), (&b, 1), (&a, 1), (&b, 3)] {
        for landed in append_n(&*store, s, count).await.events {
            appended.push((s.clone(), landed.sequence, landed.event_id, landed.position));
        }
    }
    let all = store.read_all(0, usize::MAX).await.unwrap();
    let read: Vec<_> = all
        .iter()
        .map(|event| {
            (
                event.stream.clone(),
                event.sequence,
                event.event_id,
                event.position,
            )
        })
        .collect();
    assert_eq!(read, appended);
    assert_eq!(all[0].position, 1, "positions start at 1");
    assert!(
        all.windows(2)
            .all(|pair| pair[0].position < pair[1].position)
    );

    let third = all[2].position;
    let resumed = store.read_all(third, 2).await.unwrap();
    let resumed_positions: Vec<u64> = resumed.iter().map(|event| event.position).collect();
    assert_eq!(resumed_positions, [all[2].position, all[3].position]);
    let last = all[all.len() - 1].position;
    assert!(store.read_all(last + 1, 10).await.unwrap().is_empty());
    assert!(store.read_all(1, 0).await.unwrap().is_empty());
}

pub(crate) async fn context_payload_and_written_at_round_trip(store: Arc<dyn EventStore>) {
    let s = stream("round-trip");
    let context = EventContext {
        correlation_id: Some("corr-1".to_owned()),
        causation_id: Some("cause-1".to_owned()),
        who: Some("ådmin \"quoted\"".to_owned()),
        source: Some("http".to_owned()),
        commentary: Some("line one\nline two".to_owned()),
        handler_version: Some("sha256:abc".to_owned()),
        traceparent: Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        ),
    };
    // Exact text, whitespace and key order included, comes back.
    let payloads = [
        r#"{ "b": 1,  "a": [1.50, "ü", null, {"nested": true}] }"#,
        r#""just a string""#,
        "42",
    ];
    let batch: Vec<NewEvent> = payloads
        .iter()
        .map(|payload| event("MoneyDeposited", payload))
        .collect();
    let before = OffsetDateTime::now_utc();
    let appended = AppendRequest {
        context: context.clone(),
        ..request(&s, Expectation::Any, batch.clone())
    };
    let outcome = store.append(appended.clone()).await.unwrap();
    let after = OffsetDateTime::now_utc();
    // The same ids again: the original outcome, its times included.
    assert_eq!(store.append(appended).await.unwrap(), outcome);
    append_n(&*store, &stream("plain"), 1).await;

    let read = store.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(read.len(), 3);
    for (stored, landed) in read.iter().zip(&outcome.events) {
        assert_eq!(landed.written_at, stored.written_at);
    }
    for ((stored, sent), payload) in read.iter().zip(&batch).zip(payloads) {
        assert_eq!(stored.stream, s);
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.event_type, sent.event_type);
        assert_eq!(stored.payload.get(), payload);
        assert_eq!(stored.context, context);
        assert_eq!(stored.written_at.offset(), time::UtcOffset::UTC);
        assert_eq!(
            stored.written_at.nanosecond() % 1_000,
            0,
            "kept in microseconds"
        );
        assert!(stored.written_at >= before - time::Duration::microseconds(1));
        assert!(stored.written_at <= after);
    }
    let plain = store.read_stream(&stream("plain"), 1, 1).await.unwrap();
    assert_eq!(plain[0].context, EventContext::default());
    // read_all sees exactly what read_stream sees.
    let all = store.read_all(0, 3).await.unwrap();
    for (one, other) in all.iter().zip(&read) {
        assert_eq!(one.payload.get(), other.payload.get());
        assert_eq!(one.context, other.context);
        assert_eq!(one.written_at, other.written_at);
    }
}

// ------------------------------------------------------------------ outbox

/// Every row, as (kind, stream, sequence) for event rows and (kind, id) for
/// documents, in position order; also checks positions increase.
async fn outbox(store: &dyn EventStore) -> Vec<String> {
    let records = store.read_outbox(0, usize::MAX).await.expect("read_outbox");
    assert!(
        records.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase"
    );
    records
        .iter()
        .map(|record| match &record.entry {
            OutboxEntry::NewEntity(e) => format!("NewEntity {} {}", e.stream, e.sequence),
            OutboxEntry::EventAppended(e) => format!("EventAppended {} {}", e.stream, e.sequence),
            OutboxEntry::Document(d) => format!("{} {} {}", d.kind, d.id, d.body.get()),
            OutboxEntry::Unknown { kind } => format!("unknown {kind}"),
        })
        .collect()
}

fn document(id: u128, body: &str) -> Document {
    Document {
        id: Uuid::from_u128(id),
        kind: NotificationKind::ProjectionCompleted,
        topic: None,
        body: RawValue::from_string(body.to_owned()).expect("JSON").into(),
    }
}

pub(crate) async fn outbox_rows_come_with_their_events_in_commit_order(store: Arc<dyn EventStore>) {
    let (a, b) = (stream("a"), stream("b"));
    append_n(&*store, &a, 2).await;
    append_n(&*store, &b, 1).await;
    append_n(&*store, &a, 1).await;
    assert_eq!(
        outbox(&*store).await,
        [
            format!("NewEntity {a} 1"),
            format!("EventAppended {a} 1"),
            format!("EventAppended {a} 2"),
            format!("NewEntity {b} 1"),
            format!("EventAppended {b} 1"),
            format!("EventAppended {a} 3"),
        ]
    );
    let records = store.read_outbox(0, usize::MAX).await.unwrap();
    let head = store.outbox_head().await.unwrap();
    assert_eq!(head, records.last().unwrap().position);
    // Reading from a position resumes exactly there.
    let rest = store.read_outbox(records[2].position, 2).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].position, records[2].position);
    // The row carries the whole event.
    let OutboxEntry::EventAppended(event) = &records[1].entry else {
        panic!("an event row");
    };
    assert_eq!(event.payload.get(), r#"{"amount":0}"#);
}

pub(crate) async fn outbox_rows_follow_what_the_append_raises(store: Arc<dyn EventStore>) {
    let s = stream("s");
    let raise = |raise, events| AppendRequest {
        raise,
        ..request(&s, Expectation::Any, events)
    };
    let only_new: KindSet = [NotificationKind::NewEntity].into_iter().collect();
    store.append(raise(only_new, events(2))).await.unwrap();
    store.append(raise(only_new, events(1))).await.unwrap();
    store.append(raise(KindSet::NONE, events(1))).await.unwrap();
    let appended: KindSet = [NotificationKind::EventAppended].into_iter().collect();
    store.append(raise(appended, events(1))).await.unwrap();
    assert_eq!(
        outbox(&*store).await,
        [format!("NewEntity {s} 1"), format!("EventAppended {s} 5")]
    );
}

pub(crate) async fn refused_and_retried_appends_add_no_outbox_rows(store: Arc<dyn EventStore>) {
    let s = stream("s");
    let first = request(&s, Expectation::NoStream, events(1));
    store.append(first.clone()).await.unwrap();
    // A retry (same event ids), a conflict, an empty batch.
    store.append(first).await.unwrap();
    let conflict = store
        .append(request(&s, Expectation::Exact(7), events(1)))
        .await;
    assert!(matches!(conflict, Err(StoreError::Conflict { .. })));
    store
        .append(request(&s, Expectation::Any, Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        outbox(&*store).await,
        [format!("NewEntity {s} 1"), format!("EventAppended {s} 1")]
    );
}

pub(crate) async fn documents_are_added_once_per_id(store: Arc<dyn EventStore>) {
    let s = stream("s");
    assert_eq!(
        store
            .add_documents(vec![document(1, r#"{"v":1}"#), document(2, r#"{"v":2}"#)])
            .await
            .unwrap(),
        2
    );
    append_n(&*store, &s, 1).await;
    // A recomputation: one id again (with other content), one new.
    assert_eq!(
        store
            .add_documents(vec![document(1, r#"{"v":"again"}"#), document(3, "[3]")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        outbox(&*store).await,
        [
            format!("ProjectionCompleted {} {{\"v\":1}}", Uuid::from_u128(1)),
            format!("ProjectionCompleted {} {{\"v\":2}}", Uuid::from_u128(2)),
            format!("NewEntity {s} 1"),
            format!("EventAppended {s} 1"),
            format!("ProjectionCompleted {} [3]", Uuid::from_u128(3)),
        ]
    );
}

pub(crate) async fn claims_are_exclusive_and_checkpoints_only_move_forward(
    store: Arc<dyn EventStore>,
) {
    let claim = store.claim("topic").await.unwrap().expect("free");
    assert_eq!(claim.next_position(), 1);
    assert!(store.claim("topic").await.unwrap().is_none(), "held");
    let other = store
        .claim("other")
        .await
        .unwrap()
        .expect("another destination is free");
    store.release(other, 2).await.unwrap();
    store.release(claim, 5).await.unwrap();

    let claim = store.claim("topic").await.unwrap().expect("released");
    assert_eq!(claim.next_position(), 5);
    // Dropped without release: the checkpoint stays, the claim is free.
    drop(claim);
    let claim = store.claim("topic").await.unwrap().expect("dropped");
    assert_eq!(claim.next_position(), 5);
    store.release(claim, 3).await.unwrap();
    assert_eq!(
        store.checkpoints().await.unwrap(),
        [("other".to_owned(), 2), ("topic".to_owned(), 5)]
    );
}

pub(crate) async fn checkpoints_move_for_good_during_a_round_that_keeps_its_claim(
    store: Arc<dyn EventStore>,
) {
    let mut claim = store.claim("topic").await.unwrap().expect("free");
    assert!(
        store.advance(&mut claim, 4).await.unwrap(),
        "the claim holds"
    );
    assert_eq!(claim.next_position(), 4);
    assert_eq!(
        store.checkpoints().await.unwrap(),
        [("topic".to_owned(), 4)]
    );
    assert!(store.claim("topic").await.unwrap().is_none(), "still held");
    assert!(
        store.advance(&mut claim, 2).await.unwrap(),
        "the claim holds"
    );
    assert_eq!(claim.next_position(), 4, "never back");
    assert!(
        store.advance(&mut claim, 5).await.unwrap(),
        "the claim holds"
    );
    // A round cut short keeps what it moved.
    drop(claim);
    let claim = store.claim("topic").await.unwrap().expect("dropped");
    assert_eq!(claim.next_position(), 5);
    store.release(claim, 7).await.unwrap();
    assert_eq!(
        store.checkpoints().await.unwrap(),
        [("topic".to_owned(), 7)]
    );
}

pub(crate) async fn dead_letters_are_kept_replaced_and_removed(store: Arc<dyn EventStore>) {
    let letter = |destination: &str, id: u128, position, reason: &str| DeadLetter {
        destination: destination.to_owned(),
        notification_id: Uuid::from_u128(id),
        position,
        event_type: "Bank.Account.MoneyDeposited".to_owned(),
        subject: "eventsourcing/Bank/Account/MoneyDeposited/a".to_owned(),
        reason: reason.to_owned(),
        attempts: 1,
        dead_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
    };
    store
        .add_dead_letters(vec![
            letter("t", 2, 9, "400"),
            letter("t", 1, 4, "400"),
            letter("u", 1, 4, "413"),
        ])
        .await
        .unwrap();
    store
        .add_dead_letters(vec![letter("t", 1, 4, "again")])
        .await
        .unwrap();
    assert_eq!(
        store.dead_letters().await.unwrap(),
        [
            letter("t", 1, 4, "again"),
            letter("t", 2, 9, "400"),
            letter("u", 1, 4, "413")
        ]
    );
    assert!(
        store
            .remove_dead_letter("t", Uuid::from_u128(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_dead_letter("t", Uuid::from_u128(1))
            .await
            .unwrap()
    );
    assert_eq!(
        store.dead_letters().await.unwrap(),
        [letter("t", 2, 9, "400"), letter("u", 1, 4, "413")]
    );
}

pub(crate) async fn completions_are_recorded_once(store: Arc<dyn EventStore>) {
    let pair = |h: &str, id: &str| (h.to_owned(), id.to_owned());
    assert!(!store.is_completed("welcome/new", "n1").await.unwrap());
    store
        .record_completions(vec![pair("welcome/new", "n1"), pair("welcome/new", "n1")])
        .await
        .unwrap();
    store
        .record_completions(vec![pair("welcome/new", "n1"), pair("other/x", "n1")])
        .await
        .unwrap();
    assert!(store.is_completed("welcome/new", "n1").await.unwrap());
    assert!(store.is_completed("other/x", "n1").await.unwrap());
    assert!(!store.is_completed("welcome/new", "n2").await.unwrap());
}

pub(crate) async fn appends_signal_events_and_outbox_rows_apart(store: Arc<dyn EventStore>) {
    async fn signalled(changes: &mut tokio::sync::watch::Receiver<u64>) {
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
            .await
            .expect("a signal within 10 s")
            .expect("the store is alive");
    }
    let (mut events, mut outbox) = (store.event_changes(), store.outbox_changes());
    events.mark_unchanged();
    outbox.mark_unchanged();
    // Raising nothing: the events' signal only.
    let quiet = AppendRequest {
        raise: KindSet::NONE,
        ..request(
            &stream("quiet"),
            Expectation::Any,
            vec![event("Opened", "{}")],
        )
    };
    store.append(quiet).await.unwrap();
    signalled(&mut events).await;
    assert!(
        !outbox.has_changed().unwrap(),
        "an append that raises nothing wakes no dispatcher"
    );
    // Raising: both.
    append_n(&*store, &stream("s"), 1).await;
    signalled(&mut outbox).await;
    signalled(&mut events).await;
}

// ------------------------------------------------------ following positions

/// The environment variable that replays
/// [`readers_following_positions_never_skip_an_event`] from a seed it
/// printed.
pub(crate) const SEED_VAR: &str = "CQRS_WASI_TEST_SEED";

/// How many rounds [`readers_following_positions_never_skip_an_event`]
/// runs, each from a seed of its own.
const NO_SKIP_ROUNDS: u64 = 4;

/// Readers that follow the store by position, each resuming after the last
/// position it saw ([`EventStore::read_all`], and
/// [`Outbox::read_outbox`](super::Outbox::read_outbox) for the outbox), see
/// every event and every outbox row exactly once and in order, while
/// writers append through [`EventStore::append`] (so through the backend's
/// batching: SQLite's writer thread, PostgreSQL's group commit) on every
/// handle the fixture opens. A position that a reader passed before a slower
/// transaction filled it would be missing from what that reader saw.
///
/// The interleavings are random: how many writers, which streams (shared,
/// so that a batch defers some, or their own), batch sizes, which handle,
/// pauses and yields in writers and readers, and the readers' page sizes.
/// Each round draws them from a seed that it prints first (the harness shows
/// it when the test fails); [`SEED_VAR`] replays from it.
pub(crate) async fn readers_following_positions_never_skip_an_event(fixture: &Fixture) {
    let mut handles = vec![Arc::clone(&fixture.store)];
    if let Some(another) = &fixture.another {
        handles.push(another().await);
        handles.push(another().await);
    }
    let first = match std::env::var(SEED_VAR) {
        Ok(seed) => seed
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={seed} is not a u64")),
        Err(_) => fastrand::u64(..),
    };
    for round in 0..NO_SKIP_ROUNDS {
        let seed = first.wrapping_add(round);
        println!(
            "round {round} of {NO_SKIP_ROUNDS} on {} handle(s): seed {seed} (replay with {SEED_VAR}={seed})",
            handles.len()
        );
        no_skip_round(&handles, seed).await;
    }
}

/// What a reader of [`readers_following_positions_never_skip_an_event`]
/// follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    Events,
    OutboxRows,
}

impl Followed {
    /// The positions of up to `count` events or rows from `from` on.
    async fn page(self, store: &dyn EventStore, from: u64, count: usize) -> Vec<u64> {
        match self {
            Followed::Events => store
                .read_all(from, count)
                .await
                .expect("read_all")
                .iter()
                .map(|event| event.position)
                .collect(),
            Followed::OutboxRows => store
                .read_outbox(from, count)
                .await
                .expect("read_outbox")
                .iter()
                .map(|row| row.position)
                .collect(),
        }
    }
}

/// One round of [`readers_following_positions_never_skip_an_event`].
async fn no_skip_round(handles: &[Arc<dyn EventStore>], seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let store = &*handles[0];
    // Where this round starts: after what earlier rounds wrote.
    let after_last = |positions: Vec<u64>| positions.last().map_or(1, |last| last + 1);
    let events_from = after_last(Followed::Events.page(store, 0, usize::MAX).await);
    let rows_from = store.outbox_head().await.expect("outbox_head") + 1;

    let writing = Arc::new(AtomicBool::new(true));
    let mut readers = JoinSet::new();
    for (n, followed) in [
        Followed::Events,
        Followed::Events,
        Followed::Events,
        Followed::OutboxRows,
    ]
    .into_iter()
    .enumerate()
    {
        let from = match followed {
            Followed::Events => events_from,
            Followed::OutboxRows => rows_from,
        };
        let handle = Arc::clone(&handles[rng.usize(..handles.len())]);
        let (writing, rng) = (Arc::clone(&writing), rng.fork());
        readers.spawn(async move {
            let seen = follow(&*handle, followed, from, &writing, rng).await;
            (n, followed, seen)
        });
    }

    let mut writers = JoinSet::new();
    for writer in 0..rng.usize(3..=6) {
        let (handles, mut rng) = (handles.to_vec(), rng.fork());
        writers.spawn(async move {
            let mut appended = 0;
            for _ in 0..rng.usize(6..=16) {
                let s = match rng.u8(..3) {
                    0 => stream("no-skip-shared"),
                    1 => stream(&format!("no-skip-shared-{}", rng.u8(..3))),
                    _ => stream(&format!("no-skip-{writer}")),
                };
                let handle = &handles[rng.usize(..handles.len())];
                pause(&mut rng).await;
                let count = rng.usize(1..=4);
                handle
                    .append(request(&s, Expectation::Any, events(count)))
                    .await
                    .unwrap_or_else(|error| panic!("seed {seed}: an append failed: {error}"));
                appended += count;
            }
            appended
        });
    }
    let appended: usize = writers.join_all().await.into_iter().sum();
    writing.store(false, Ordering::SeqCst);

    let events = Followed::Events.page(store, events_from, usize::MAX).await;
    let rows = Followed::OutboxRows
        .page(store, rows_from, usize::MAX)
        .await;
    assert_eq!(events.len(), appended, "seed {seed}: every append landed");
    for (n, followed, seen) in readers.join_all().await {
        let all = match followed {
            Followed::Events => &events,
            Followed::OutboxRows => &rows,
        };
        let skipped: Vec<u64> = all
            .iter()
            .copied()
            .filter(|position| seen.binary_search(position).is_err())
            .collect();
        assert!(
            skipped.is_empty(),
            "seed {seed}: reader {n} of {followed:?} skipped positions {skipped:?}"
        );
        assert_eq!(
            seen, *all,
            "seed {seed}: reader {n} of {followed:?} saw each position once, in order"
        );
    }
}

/// Follows `followed` on `store` from `from`, each read resuming after the
/// last position seen, until a read that began after `writing` went false
/// finds nothing more; returns every position seen, in the order seen.
async fn follow(
    store: &dyn EventStore,
    followed: Followed,
    from: u64,
    writing: &AtomicBool,
    mut rng: fastrand::Rng,
) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut next = from;
    loop {
        // Checked before the read, so that the last read starts after every
        // writer has been answered.
        let finished = !writing.load(Ordering::SeqCst);
        let page = followed.page(store, next, rng.usize(1..=8)).await;
        if page.is_empty() && finished {
            return seen;
        }
        for position in page {
            assert!(
                position >= next,
                "{followed:?}: position {position} came when reading from {next}"
            );
            next = position + 1;
            seen.push(position);
        }
        pause(&mut rng).await;
    }
}

/// Nothing, a yield, or a short sleep, at random: a different interleaving
/// of writers and readers each time.
async fn pause(rng: &mut fastrand::Rng) {
    match rng.u8(..4) {
        0 => {}
        1 => tokio::task::yield_now().await,
        _ => tokio::time::sleep(Duration::from_micros(rng.u64(..2_000))).await,
    }
}
