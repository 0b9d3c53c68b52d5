//! The suite's properties of outbox retention: pruning what every
//! destination has passed, registering destinations, purging dead letters.
//!
//! Kept apart from the rest of the suite by concern; [`conformance_tests!`]
//! instantiates them like every other property.
//!
//! [`conformance_tests!`]: super::conformance_tests

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{append_n, stream};
use crate::store::{DeadLetter, EventStore, Pruned};

/// No retention: whatever was added before the call may go.
const AT_ONCE: Duration = Duration::ZERO;

/// A retention no test outlives.
const AN_HOUR: Duration = Duration::from_secs(3600);

/// Lets the store's clock move past what was just written, so that "added
/// before now" holds for it on every backend's clock resolution.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// The positions of the rows the outbox holds.
pub(crate) async fn outbox_positions(store: &dyn EventStore) -> Vec<u64> {
    store
        .read_outbox(0, usize::MAX)
        .await
        .expect("read_outbox")
        .iter()
        .map(|record| record.position)
        .collect()
}

fn letter(destination: &str, id: u128, position: u64) -> DeadLetter {
    DeadLetter {
        destination: destination.to_owned(),
        notification_id: Uuid::from_u128(id),
        position,
        event_type: "Bank.Account.MoneyDeposited".to_owned(),
        subject: "eventsourcing/Bank/Account/MoneyDeposited/a".to_owned(),
        reason: "400".to_owned(),
        attempts: 1,
        dead_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time"),
    }
}

fn rows(rows: u64) -> Pruned {
    Pruned {
        rows,
        completions: 0,
    }
}

pub(crate) async fn pruning_removes_only_rows_below_the_checkpoint_and_older_than_the_retention(
    store: Arc<dyn EventStore>,
) {
    // Three rows a stream: NewEntity and two EventAppended.
    for key in ["a", "b", "c"] {
        append_n(&*store, &stream(key), 2).await;
    }
    let all = outbox_positions(&*store).await;
    assert_eq!(all.len(), 9);
    let below = all[4];
    tick().await;

    assert_eq!(
        store.prune_outbox(below, AN_HOUR).await.unwrap(),
        rows(0),
        "rows younger than the retention stay"
    );
    assert_eq!(outbox_positions(&*store).await, all);

    assert_eq!(store.prune_outbox(below, AT_ONCE).await.unwrap(), rows(4));
    assert_eq!(
        outbox_positions(&*store).await,
        all[4..],
        "rows from `below` on stay"
    );
    assert_eq!(store.outbox_head().await.unwrap(), all[8]);
    assert_eq!(
        store.read_outbox(all[1], 2).await.unwrap()[0].position,
        below,
        "reading from a pruned position starts at the first row kept"
    );
    assert_eq!(store.prune_outbox(below, AT_ONCE).await.unwrap(), rows(0));
}

pub(crate) async fn pruning_keeps_the_last_row_so_positions_keep_growing(
    store: Arc<dyn EventStore>,
) {
    append_n(&*store, &stream("a"), 2).await;
    let head = store.outbox_head().await.unwrap();
    tick().await;

    assert_eq!(
        store.prune_outbox(u64::MAX, AT_ONCE).await.unwrap(),
        rows(2)
    );
    assert_eq!(outbox_positions(&*store).await, [head]);
    assert_eq!(store.outbox_head().await.unwrap(), head);

    append_n(&*store, &stream("a"), 1).await;
    let after = outbox_positions(&*store).await;
    assert_eq!(after.len(), 2);
    assert!(
        after[1] > head,
        "a row after pruning takes a new position, not a pruned one: {after:?}"
    );
    assert_eq!(store.outbox_head().await.unwrap(), after[1]);
}

pub(crate) async fn pruning_keeps_the_rows_of_dead_letters_until_they_are_purged(
    store: Arc<dyn EventStore>,
) {
    append_n(&*store, &stream("a"), 5).await;
    let all = outbox_positions(&*store).await;
    store
        .add_dead_letters(vec![letter("topic", 1, all[1])])
        .await
        .unwrap();
    tick().await;

    assert_eq!(store.prune_outbox(all[4], AT_ONCE).await.unwrap(), rows(3));
    assert_eq!(
        outbox_positions(&*store).await,
        [all[1], all[4], all[5]],
        "a dead letter's row stays for its re-drive"
    );

    assert_eq!(store.purge_dead_letters("topic").await.unwrap(), 1);
    assert_eq!(store.prune_outbox(all[4], AT_ONCE).await.unwrap(), rows(1));
    assert_eq!(outbox_positions(&*store).await, [all[4], all[5]]);
}

pub(crate) async fn pruning_forgets_only_completions_no_kept_row_can_need(
    store: Arc<dyn EventStore>,
) {
    let pair = |id: &str| ("welcome/new".to_owned(), id.to_owned());
    store.record_completions(vec![pair("old")]).await.unwrap();
    tick().await;
    append_n(&*store, &stream("a"), 1).await;
    tick().await;
    // Completed after the rows were added: it may be one of theirs.
    store.record_completions(vec![pair("new")]).await.unwrap();
    tick().await;

    assert_eq!(
        store.prune_outbox(1, AN_HOUR).await.unwrap(),
        Pruned::default()
    );
    assert_eq!(
        store.prune_outbox(1, AT_ONCE).await.unwrap(),
        Pruned {
            rows: 0,
            completions: 1
        },
        "a completion older than every row still to deliver goes"
    );
    assert!(!store.is_completed("welcome/new", "old").await.unwrap());
    assert!(store.is_completed("welcome/new", "new").await.unwrap());

    assert_eq!(
        store.prune_outbox(u64::MAX, AT_ONCE).await.unwrap(),
        Pruned {
            rows: 1,
            completions: 1
        },
        "once every row is passed, completions older than the retention go"
    );
    assert!(!store.is_completed("welcome/new", "new").await.unwrap());
}

pub(crate) async fn purging_removes_every_dead_letter_of_one_destination(
    store: Arc<dyn EventStore>,
) {
    store
        .add_dead_letters(vec![
            letter("t", 1, 4),
            letter("t", 2, 9),
            letter("u", 1, 4),
        ])
        .await
        .unwrap();
    assert_eq!(store.purge_dead_letters("t").await.unwrap(), 2);
    assert_eq!(store.dead_letters().await.unwrap(), [letter("u", 1, 4)]);
    assert_eq!(store.purge_dead_letters("t").await.unwrap(), 0);
}

pub(crate) async fn registering_a_destination_lists_it_and_moves_no_checkpoint(
    store: Arc<dyn EventStore>,
) {
    store.register_destination("a").await.unwrap();
    assert_eq!(store.checkpoints().await.unwrap(), [("a".to_owned(), 1)]);
    let claim = store.claim("a").await.unwrap().expect("free");
    store.release(claim, 5).await.unwrap();
    store.register_destination("a").await.unwrap();
    assert_eq!(store.checkpoints().await.unwrap(), [("a".to_owned(), 5)]);
}
