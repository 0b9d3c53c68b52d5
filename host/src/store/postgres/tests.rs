//! The conformance suite against PostgreSQL, and the tests of what only
//! this backend does: shared schemas, migrations taking turns, lost races,
//! group commit, claims across hosts, positions that follow commit order.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::error::lost_race;
use super::group_commit::MAX_BATCH;
use super::schema::MIGRATIONS;
use super::testing::ScratchSchema;
use super::transaction::{Mode, PgTxn};
use super::*;
use crate::error_chain::error_chain;
use crate::model::Expectation;
use crate::store::conformance::{
    Fixture, RECORDS_WITHOUT_FINGERPRINTS, a_record_and_its_json_without_written_at, append_n,
    command, conformance_tests, events, id, records_without_a_fingerprint_keep_replaying, request,
    stream, the_first_released_store_migrates_with_nothing_lost,
};
use crate::store::rules;
use crate::store::{AppendOutcome, AppendRequest, CommandRecord, EventStore, Outbox, StoreError};

/// A store in a scratch schema; another handle is another store opened in
/// the same schema, as a second host sharing it would.
async fn fixture() -> Option<Fixture> {
    let schema = ScratchSchema::new().await?;
    let (url, config) = (schema.url().to_owned(), schema.config());
    Some(Fixture {
        store: Arc::new(schema.open().await),
        guard: Box::new(schema),
        another: Some(Box::new(move || {
            let (url, config) = (url.clone(), config.clone());
            let opened: BoxFuture<'static, Arc<dyn EventStore>> = Box::pin(async move {
                let store = PostgresStore::open(&url, config)
                    .await
                    .unwrap_or_else(|error| panic!("another handle opens: {error}"));
                Arc::new(store) as Arc<dyn EventStore>
            });
            opened
        })),
    })
}

conformance_tests!(fixture);

#[tokio::test]
async fn a_schema_written_by_a_newer_version_is_refused() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    drop(schema.open().await);
    let newer = MIGRATIONS.len() + 1;
    schema
        .execute(&format!(
            "INSERT INTO schema_migrations (version) VALUES ({newer})"
        ))
        .await;
    match PostgresStore::open(schema.url(), schema.config()).await {
        Err(error @ StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found as usize, newer);
            assert_eq!(supported as usize, MIGRATIONS.len());
            assert!(error.to_string().contains("upgrade the host"), "{error}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_opening_a_new_schema_at_once_create_it_once() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let mut opening = JoinSet::new();
    for _ in 0..4 {
        let (url, options) = (schema.url().to_owned(), schema.config());
        opening.spawn(async move { PostgresStore::open(&url, options).await });
    }
    let stores: Vec<PostgresStore> = opening
        .join_all()
        .await
        .into_iter()
        .map(|opened| opened.expect("every host opens the store"))
        .collect();
    let client = stores[0].client().await.unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
    assert_eq!(versions, expected, "each migration ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_sharing_a_schema_share_streams_commands_and_positions() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let (one, two) = (Arc::new(schema.open().await), Arc::new(schema.open().await));
    let s = stream("shared");
    let mut appends = JoinSet::new();
    for n in 0..40 {
        let store = if n % 2 == 0 { &one } else { &two };
        let (store, s) = (Arc::clone(store), s.clone());
        appends.spawn(async move { append_n(&*store, &s, 1 + n % 3).await });
    }
    appends.join_all().await;
    let mut with_command = request(&s, Expectation::Any, events(1));
    with_command.command = Some(command("cmd-shared"));
    one.append(with_command).await.unwrap();

    let read = two.read_stream(&s, 1, usize::MAX).await.unwrap();
    let sequences: Vec<u64> = read.iter().map(|event| event.sequence).collect();
    let total = (0..40).map(|n| 1 + n % 3).sum::<usize>() as u64 + 1;
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    assert!(
        read.windows(2)
            .all(|pair| pair[0].position < pair[1].position),
        "positions increase with sequences"
    );
    assert!(
        two.command_record(&id("cmd-shared"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        one.read_all(0, usize::MAX).await.unwrap().len() as u64,
        total
    );
}

/// Version 3 of the schema gives the events of records written before it
/// the times they were written, from the events table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_to_version_3_gives_recorded_events_their_times() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let store = schema.open().await;
    let (record, old_json) = a_record_and_its_json_without_written_at(&store).await;
    drop(store);
    schema
        .execute(&format!(
            "UPDATE commands SET record = '{old_json}' WHERE command_id = '{}';
             DELETE FROM schema_migrations WHERE version >= 3;
             DROP INDEX completions_by_time;
             ALTER TABLE completions DROP COLUMN completed_at;
             ALTER TABLE outbox DROP COLUMN added_at",
            record.command_id().as_str()
        ))
        .await;
    let store = schema.open().await;
    assert_eq!(
        store.command_record(record.command_id()).await.unwrap(),
        Some(record)
    );
}

/// A schema the first released schema made (version 2, built by the
/// fixture's script) migrates with nothing lost and takes appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_released_schema_migrates_with_nothing_lost() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    schema
        .execute(&format!(
            "CREATE SCHEMA {}; {}",
            schema.name(),
            include_str!("../../../tests/fixtures/store-v2/postgres.sql")
        ))
        .await;
    let store = schema.open().await;
    the_first_released_store_migrates_with_nothing_lost(&store).await;
}

/// Records that a host which kept no fingerprints wrote keep replaying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_records_without_a_fingerprint_keep_replaying() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    drop(schema.open().await);
    for (command_id, record) in RECORDS_WITHOUT_FINGERPRINTS {
        schema
            .execute(&format!(
                "INSERT INTO commands (command_id, record) VALUES ('{command_id}', '{record}')"
            ))
            .await;
    }
    let store = schema.open().await;
    records_without_a_fingerprint_keep_replaying(&store).await;
}

#[tokio::test]
async fn invalid_options_are_refused_with_a_message_that_keeps_the_password() {
    let url = "postgres://someone:s3cret@127.0.0.1:1/nowhere";
    let refusals = [
        (
            PostgresConfig {
                schema: "Has-Capitals".to_owned(),
                ..PostgresConfig::default()
            },
            "invalid schema name",
        ),
        (
            PostgresConfig {
                schema: "1st".to_owned(),
                ..PostgresConfig::default()
            },
            "invalid schema name",
        ),
        (
            PostgresConfig {
                pool_size: 0,
                ..PostgresConfig::default()
            },
            "pool size",
        ),
    ];
    for (options, expected) in refusals {
        let error = PostgresStore::open(url, options).await.unwrap_err();
        let message = error_chain(&error);
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("127.0.0.1:1/nowhere"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
    let error = PostgresStore::open("postgres://someone:s3cret@[::1", PostgresConfig::default())
        .await
        .unwrap_err();
    assert!(!error_chain(&error).contains("s3cret"), "{error}");
}

/// Appends `request` the way [`PostgresStore::append`] does, but pauses
/// for `pause` between taking positions and `COMMIT`: a deliberately slow
/// transaction.
async fn append_slowly(
    store: &PostgresStore,
    request: &AppendRequest,
    pause: Duration,
) -> AppendOutcome {
    let client = store.client().await.unwrap();
    let mut txn = PgTxn::new(&client, Mode::Optimistic);
    let outcome = rules::append(&mut txn, request, rules::now_micros())
        .await
        .unwrap();
    tokio::time::sleep(pause).await;
    txn.commit().await.unwrap();
    outcome
}

/// Waits until a transaction waits for the schema's `append_lock`.
async fn a_transaction_waits_for_the_append_lock(store: &PostgresStore) {
    let client = store.client().await.unwrap();
    for _ in 0..1000 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE relation = 'append_lock'::regclass AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no transaction waited for the append lock");
}

/// Two appends of one command id (to different streams) that both read
/// no record for it: the second decides on its snapshot and inserts its
/// events once the first commits, and its record, sent with `COMMIT`,
/// fails the commit as a lost race. Nothing of it is kept, and run again
/// it is refused as another command under the id, with the first's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_record_that_loses_at_commit_is_a_lost_race() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let store = Arc::new(schema.open().await);
    let mut first = request(&stream("first"), Expectation::Any, events(1));
    first.command = Some(command("cmd-late"));
    let mut second = request(&stream("second"), Expectation::Any, events(1));
    second.command = Some(command("cmd-late"));

    // The first takes its positions and holds the append lock until it
    // commits.
    let client = store.client().await.unwrap();
    let mut first_txn = PgTxn::new(&client, Mode::Optimistic);
    let first_outcome = rules::append(&mut first_txn, &first, rules::now_micros())
        .await
        .unwrap();
    // The second reads (no record yet), then waits for the lock.
    let racing = {
        let (store, second) = (Arc::clone(&store), second.clone());
        tokio::spawn(async move {
            let client = store.client().await.unwrap();
            let mut txn = PgTxn::new(&client, Mode::Optimistic);
            let decided = rules::append(&mut txn, &second, rules::now_micros()).await;
            (decided, txn.commit().await)
        })
    };
    a_transaction_waits_for_the_append_lock(&store).await;
    first_txn.commit().await.unwrap();

    let (decided, committed) = racing.await.unwrap();
    assert!(decided.is_ok(), "the rules accept the second: {decided:?}");
    let error = committed.expect_err("the second's record fails its commit");
    assert!(lost_race(&error), "not a lost race: {error}");
    assert_eq!(store.stream_sequence(&stream("second")).await.unwrap(), 0);
    let record = store.command_record(&id("cmd-late")).await.unwrap();
    assert!(
        matches!(&record, Some(CommandRecord::Appended { outcome, .. }) if *outcome == first_outcome),
        "{record:?}"
    );
    match store.append(second).await {
        Err(StoreError::CommandIdReused { record: stands }) => {
            assert_eq!(Some(*stands), record);
        }
        other => panic!("expected CommandIdReused, got {other:?}"),
    }
    assert_eq!(store.stream_sequence(&stream("second")).await.unwrap(), 0);
}

/// A transaction dropped before it ends (a refusal, or a caller that
/// stopped waiting) is rolled back before its connection serves again.
#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_its_connection_serves_again() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let store = PostgresStore::open(
        schema.url(),
        PostgresConfig {
            pool_size: 1,
            ..schema.config()
        },
    )
    .await
    .unwrap();
    {
        let client = store.client().await.unwrap();
        let mut txn = PgTxn::new(&client, Mode::Optimistic);
        let request = request(&stream("dropped"), Expectation::Any, events(1));
        rules::append(&mut txn, &request, rules::now_micros())
            .await
            .unwrap();
    }
    // The pool's one connection, which the dropped transaction used.
    let client = store.client().await.unwrap();
    let isolation: String = client
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "read committed", "no transaction is open");
    drop(client);
    assert!(store.read_all(0, usize::MAX).await.unwrap().is_empty());
}

/// Appends that queue while a batch commits are committed together, one
/// append per stream in a batch, each with its own outcome.
///
/// Deterministic: the test holds the append lock, so the first append's
/// batch waits for it with that append alone; the others are queued while
/// it waits, and the lock is released only once the queue's free slots say
/// that all of them are in it. Then exactly three transactions commit: the
/// first append; the 62 queued appends to distinct streams; and the one
/// queued append to a stream already in that batch, which waits for the
/// next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_that_wait_together_commit_in_one_transaction() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let store = Arc::new(schema.open().await);
    let append = |s: String| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { append_n(&*store, &stream(&s), 2).await })
    };
    let holder = store.client().await.unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE append_lock IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let first = append("grouped-first".to_owned());
    a_transaction_waits_for_the_append_lock(&store).await;
    let mut queued: Vec<_> = (0..62).map(|n| append(format!("grouped-{n}"))).collect();
    queued.push(append("grouped-7".to_owned()));
    let queued_len = queued.len();
    for _ in 0..10_000 {
        if store.appends.capacity() == MAX_BATCH - queued_len {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        store.appends.capacity(),
        MAX_BATCH - queued_len,
        "every append is queued behind the held batch"
    );
    holder.batch_execute("COMMIT").await.unwrap();

    let mut outcomes = vec![first.await.unwrap()];
    for append in queued {
        outcomes.push(append.await.unwrap());
    }
    let mut positions: Vec<u64> = outcomes
        .iter()
        .flat_map(|outcome| outcome.events.iter().map(|event| event.position))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(
        positions.len(),
        128,
        "every event has a position of its own"
    );
    let events_per_transaction: Vec<i64> = store
        .client()
        .await
        .unwrap()
        .query(
            "SELECT count(*) FROM events GROUP BY xmin::text ORDER BY min(position)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(events_per_transaction, [2, 62 * 2, 2]);
}

/// A claim dropped without release (a dispatcher round cut short) is
/// rolled back, not closed: its connection serves again with no
/// transaction open, and the destination is free at once, for this
/// store and for another host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_claim_is_rolled_back_and_its_connection_serves_again() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let options = PostgresConfig {
        pool_size: 1,
        ..schema.config()
    };
    let store = PostgresStore::open(schema.url(), options.clone())
        .await
        .unwrap();
    let other_host = PostgresStore::open(schema.url(), options).await.unwrap();
    // The pool's one connection: its backend, and whether it is inside a
    // transaction that took a row lock (which assigns a transaction id).
    let backend = async || {
        let row = store
            .client()
            .await
            .unwrap()
            .query_one(
                "SELECT pg_backend_pid(), txid_current_if_assigned() IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i32>(0), row.get::<_, bool>(1))
    };
    let (first, _) = backend().await;
    for round in 0..20 {
        let claim = store.claim("topic").await.unwrap();
        drop(claim.unwrap_or_else(|| panic!("round {round}: the dropped claim is free")));
        assert_eq!(backend().await, (first, false), "round {round}");
        let claim = other_host.claim("topic").await.unwrap();
        let claim = claim.unwrap_or_else(|| panic!("round {round}: free for another host"));
        other_host.release(claim, 1).await.unwrap();
    }
}

/// A reader that follows `read_all` from the position after the last
/// event it saw, while fast appends keep committing and slow
/// transactions hold positions they have not committed yet, sees every
/// event exactly once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_following_reader_never_skips_an_event_of_a_slow_transaction() {
    let Some(schema) = ScratchSchema::new().await else {
        return;
    };
    let store = Arc::new(
        PostgresStore::open(
            schema.url(),
            PostgresConfig {
                pool_size: 24,
                ..schema.config()
            },
        )
        .await
        .unwrap(),
    );
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let (store, writing) = (Arc::clone(&store), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut next = 1;
            loop {
                // Read before checking the flag, so that the last read
                // starts after every writer has finished.
                let finished = !writing.load(Ordering::SeqCst);
                let batch = store.read_all(next, 7).await.unwrap();
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for event in batch {
                    assert!(event.position >= next, "read_all went backwards");
                    next = event.position + 1;
                    seen.push((event.position, event.event_id));
                }
            }
        })
    };

    let started = Instant::now();
    let mut writers = JoinSet::new();
    // Fast appends, some to one shared stream, so that they also race.
    for writer in 0..6 {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for n in 0..30 {
                let s = if n % 3 == 0 {
                    stream("shared")
                } else {
                    stream(&format!("fast-{writer}"))
                };
                append_n(&*store, &s, 1 + n % 2).await;
            }
        });
    }
    // Slow transactions, started while the fast ones run: each takes its
    // positions, then holds them uncommitted for a while.
    for slow in 0..5 {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 + 40 * slow)).await;
            let request = request(
                &stream(&format!("slow-{slow}")),
                Expectation::Any,
                events(3),
            );
            append_slowly(&store, &request, Duration::from_millis(100)).await;
        });
    }
    writers.join_all().await;
    writing.store(false, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader catches up")
        .unwrap();

    let all: Vec<(u64, Uuid)> = store
        .read_all(0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|event| (event.position, event.event_id))
        .collect();
    let fast: usize = (0..30).map(|n| 1 + n % 2).sum();
    assert_eq!(all.len(), 6 * fast + 5 * 3);
    let seen_positions: HashSet<u64> = seen.iter().map(|&(position, _)| position).collect();
    let skipped: Vec<u64> = all
        .iter()
        .map(|&(position, _)| position)
        .filter(|position| !seen_positions.contains(position))
        .collect();
    assert!(
        skipped.is_empty(),
        "the reader skipped positions {skipped:?}"
    );
    assert_eq!(seen.len(), all.len(), "the reader saw no event twice");
    assert!(seen == all, "the reader saw the events in position order");
    let ids: HashSet<Uuid> = all.iter().map(|&(_, id)| id).collect();
    assert_eq!(ids.len(), all.len());
    eprintln!(
        "{} events written and followed in {:?}",
        all.len(),
        started.elapsed()
    );
}
