//! The conformance suite against SQLite (durable, and relaxed with no
//! pooled connections), and the tests of what only this backend does:
//! reopening a file, its schema versions, the writer's batches.

use std::sync::Arc;

use tempfile::TempDir;
use tokio::task::JoinSet;

use super::schema::{MIGRATIONS, migrate, open_writer};
use super::writer::{queued, write_batch};
use super::*;
use crate::model::Expectation;
use crate::store::conformance::{
    Fixture, RECORDS_WITHOUT_FINGERPRINTS, a_record_and_its_json_without_written_at, append_n,
    assert_conflict, command, conformance_tests, events, id, kind_of, outbox_positions,
    records_without_a_fingerprint_keep_replaying, request, stream,
    the_first_released_store_migrates_with_nothing_lost,
};
use crate::store::rules::Append;
use crate::store::{AppendOutcome, CommandRecord, EventStore, Outage, StoreError};

fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn open_in(dir: &TempDir, options: SqliteConfig) -> SqliteStore {
    SqliteStore::open(dir.path().join("events.db"), options).expect("the store opens")
}

async fn fixture() -> Option<Fixture> {
    let dir = temp_dir();
    Some(Fixture {
        store: Arc::new(open_in(&dir, SqliteConfig::default())),
        guard: Box::new(dir),
        another: None,
    })
}

conformance_tests!(fixture);

/// The same suite without fsync and without pooled connections, where
/// every read opens its own connection.
mod relaxed {
    use super::*;

    async fn fixture() -> Option<Fixture> {
        let dir = temp_dir();
        let options = SqliteConfig {
            durable: false,
            read_connections: 0,
        };
        Some(Fixture {
            store: Arc::new(open_in(&dir, options)),
            guard: Box::new(dir),
            another: None,
        })
    }

    conformance_tests!(fixture);
}

#[tokio::test]
async fn streams_sequences_and_command_records_survive_reopening() {
    let dir = temp_dir();
    let (a, b) = (stream("a"), stream("b"));
    let (written, record) = {
        let store = open_in(&dir, SqliteConfig::default());
        append_n(&store, &a, 3).await;
        let mut with_command = request(&b, Expectation::NoStream, events(2));
        with_command.command = Some(command("cmd-1"));
        store.append(with_command).await.unwrap();
        store
            .record_rejection(&a, &command("cmd-2"), "refused")
            .await
            .unwrap();
        let record = store.command_record(&id("cmd-1")).await.unwrap();
        (store.read_all(0, 100).await.unwrap(), record)
    };

    let store = open_in(&dir, SqliteConfig::default());
    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(
        serde_json::to_string(&read).unwrap(),
        serde_json::to_string(&written).unwrap()
    );
    assert_eq!(store.stream_sequence(&a).await.unwrap(), 3);
    assert_eq!(store.stream_sequence(&b).await.unwrap(), 2);
    assert_eq!(store.command_record(&id("cmd-1")).await.unwrap(), record);
    assert!(matches!(
        store.command_record(&id("cmd-2")).await.unwrap(),
        Some(CommandRecord::Rejected { .. })
    ));
    let page = store
        .list_instances(
            &kind_of("Bank", "Account").0,
            &kind_of("Bank", "Account").1,
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(page.instance_keys, ["a", "b"]);
    // Numbering goes on where it stopped.
    let next = append_n(&store, &a, 1).await;
    assert_eq!(next.events[0].sequence, 4);
    assert_eq!(next.events[0].position, 6);
}

/// Pins the stored JSON: records outlive the code that wrote them.
#[tokio::test]
async fn command_records_are_stored_as_camel_case_json() {
    let dir = temp_dir();
    let store = open_in(&dir, SqliteConfig::default());
    let s = stream("json");
    let mut append = request(&s, Expectation::Any, Vec::new());
    append.command = Some(command("cmd-1"));
    store.append(append).await.unwrap();
    store
        .record_rejection(&s, &command("cmd-2"), "no")
        .await
        .unwrap();
    drop(store);

    let connection = Connection::open(dir.path().join("events.db")).unwrap();
    let stored = |id: &str| -> serde_json::Value {
        let json: String = connection
            .query_row(
                "SELECT record FROM commands WHERE command_id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        serde_json::from_str(&json).unwrap()
    };
    let stream_json = serde_json::json!({
        "domain": "Bank", "entityType": "Account", "instanceKey": "json"
    });
    // SHA-256 over the parts of `command`'s key, each after its length as
    // 8 big-endian bytes: "cqrs-wasi command fingerprint v1", "Deposit",
    // "Bank", "Account", "fingerprinted", "{}" (computed apart, with
    // Python's hashlib).
    let fingerprint = "631e34798b4e5c889be5c8d67b35a83dc193e9b29d4106602c9084a54e94134a";
    assert_eq!(
        stored("cmd-1"),
        serde_json::json!({
            "kind": "appended",
            "commandId": "cmd-1",
            "stream": stream_json,
            "commandType": "Deposit",
            "outcome": { "events": [], "streamSequence": 0 },
            "fingerprint": fingerprint,
        })
    );
    assert_eq!(
        stored("cmd-2"),
        serde_json::json!({
            "kind": "rejected",
            "commandId": "cmd-2",
            "stream": stream_json,
            "commandType": "Deposit",
            "message": "no",
            "fingerprint": fingerprint,
        })
    );
}

/// A file reopened after pruning numbers new outbox rows after every
/// position it ever handed out: the last row is never pruned, and SQLite
/// numbers a new row after the largest rowid left.
#[tokio::test]
async fn positions_keep_growing_after_pruning_and_reopening() {
    let dir = temp_dir();
    let head = {
        let store = open_in(&dir, SqliteConfig::default());
        append_n(&store, &stream("a"), 3).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pruned = store.prune_outbox(u64::MAX, Duration::ZERO).await.unwrap();
        assert_eq!(pruned.rows, 3);
        store.outbox_head().await.unwrap()
    };
    let store = open_in(&dir, SqliteConfig::default());
    assert_eq!(store.outbox_head().await.unwrap(), head);
    append_n(&store, &stream("a"), 1).await;
    assert_eq!(outbox_positions(&store).await, [head, head + 1]);
}

/// A file the first released schema made (version 2, built by the
/// fixture's script) migrates with nothing lost and takes appends.
#[tokio::test]
async fn the_first_released_file_migrates_with_nothing_lost() {
    let dir = temp_dir();
    let path = dir.path().join("events.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(include_str!("../../../tests/fixtures/store-v2/sqlite.sql"))
        .unwrap();
    let store = SqliteStore::open(&path, SqliteConfig::default()).expect("the old file opens");
    the_first_released_store_migrates_with_nothing_lost(&store).await;
}

/// Version 3 of the schema gives the events of records written before it
/// the times they were written, from the events table.
#[tokio::test]
async fn migrating_to_version_3_gives_recorded_events_their_times() {
    let dir = temp_dir();
    let store = open_in(&dir, SqliteConfig::default());
    let (record, old_json) = a_record_and_its_json_without_written_at(&store).await;
    drop(store);
    let connection = Connection::open(dir.path().join("events.db")).unwrap();
    connection
        .execute(
            "UPDATE commands SET record = ?2 WHERE command_id = ?1",
            [record.command_id().as_str(), &old_json],
        )
        .unwrap();
    // Back to version 2: what version 4 added goes too.
    connection
        .execute_batch(
            "DROP INDEX completions_by_time;
             ALTER TABLE completions DROP COLUMN completed_at;
             ALTER TABLE outbox DROP COLUMN added_at;",
        )
        .unwrap();
    connection.pragma_update(None, "user_version", 2).unwrap();
    drop(connection);
    let store = open_in(&dir, SqliteConfig::default());
    assert_eq!(
        store.command_record(record.command_id()).await.unwrap(),
        Some(record)
    );
}

/// Records that a host which kept no fingerprints wrote keep replaying.
#[tokio::test]
async fn command_records_without_a_fingerprint_keep_replaying() {
    let dir = temp_dir();
    drop(open_in(&dir, SqliteConfig::default()));
    let connection = Connection::open(dir.path().join("events.db")).unwrap();
    for (command_id, record) in RECORDS_WITHOUT_FINGERPRINTS {
        connection
            .execute(
                "INSERT INTO commands (command_id, record) VALUES (?1, ?2)",
                [command_id, record],
            )
            .unwrap();
    }
    drop(connection);
    let store = open_in(&dir, SqliteConfig::default());
    records_without_a_fingerprint_keep_replaying(&store).await;
}

#[test]
fn a_schema_newer_than_the_code_is_refused() {
    let dir = temp_dir();
    drop(open_in(&dir, SqliteConfig::default()));
    let path = dir.path().join("events.db");
    let connection = Connection::open(&path).unwrap();
    connection
        .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
        .unwrap();
    drop(connection);

    match SqliteStore::open(&path, SqliteConfig::default()) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found as usize, MIGRATIONS.len() + 1);
            assert_eq!(supported as usize, MIGRATIONS.len());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn a_new_file_gets_the_newest_schema_version() {
    let dir = temp_dir();
    drop(open_in(&dir, SqliteConfig::default()));
    let connection = Connection::open(dir.path().join("events.db")).unwrap();
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version as usize, MIGRATIONS.len());
    let mode: String = connection
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn an_unopenable_path_is_an_error_that_names_it() {
    let dir = temp_dir();
    let missing = dir.path().join("no-such-directory").join("events.db");
    let error = SqliteStore::open(&missing, SqliteConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    let not_sqlite = dir.path().join("not-sqlite.db");
    std::fs::write(&not_sqlite, vec![b'x'; 4096]).unwrap();
    let error = SqliteStore::open(&not_sqlite, SqliteConfig::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&not_sqlite.display().to_string()),
        "{error}"
    );
}

/// Runs jobs through `write_batch` as one batch, deterministically.
#[test]
fn a_failed_job_in_a_batch_is_undone_alone() {
    let dir = temp_dir();
    let path = dir.path().join("events.db");
    let mut connection = open_writer(&path, SqliteConfig::default()).unwrap();
    migrate(&mut connection).unwrap();
    let s = stream("batch");

    let mut appends = Vec::new();
    for n in 0..10u64 {
        // Good and bad interleaved; the bad ones would have inserted
        // events had they got that far.
        appends.push(Append(request(&s, Expectation::Exact(n), events(1))));
        appends.push(Append(request(&s, Expectation::Exact(100 + n), events(2))));
    }
    let reused = events(1);
    appends.push(Append(request(
        &stream("other"),
        Expectation::Any,
        reused.clone(),
    )));
    appends.push(Append(request(&stream("third"), Expectation::Any, reused)));
    let (jobs, answers): (Vec<_>, Vec<_>) = appends.into_iter().map(queued).unzip();
    write_batch(&mut connection, jobs.into_iter());

    let results: Vec<Result<AppendOutcome, StoreError>> = answers
        .into_iter()
        .map(|answer| answer.blocking_recv().expect("every job is answered"))
        .collect();
    for (n, pair) in results[..20].chunks(2).enumerate() {
        match &pair[0] {
            Ok(outcome) => {
                assert_eq!(outcome.events[0].sequence, n as u64 + 1)
            }
            _ => panic!("good append {n} failed"),
        }
        match &pair[1] {
            Err(StoreError::Conflict { actual, .. }) => assert_eq!(*actual, n as u64 + 1),
            _ => panic!("bad append {n} did not conflict"),
        }
    }
    assert!(results[20].is_ok());
    assert!(matches!(results[21], Err(StoreError::EventIdReused { .. })));

    let count: i64 = connection
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 11);
    let positions: Vec<i64> = connection
        .prepare("SELECT position FROM events ORDER BY position")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        positions,
        (1..=11).collect::<Vec<i64>>(),
        "no gaps left by undone jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_wrong_expectations_fail_alone() {
    let dir = temp_dir();
    let store = Arc::new(open_in(&dir, SqliteConfig::default()));
    let s = stream("mixed");
    let mut appends = JoinSet::new();
    for n in 0..20 {
        let (store, s) = (Arc::clone(&store), s.clone());
        appends.spawn(async move {
            let expectation = if n % 2 == 0 {
                Expectation::Any
            } else {
                Expectation::Exact(1_000)
            };
            (n, store.append(request(&s, expectation, events(1))).await)
        });
    }
    let mut landed = Vec::new();
    for (n, result) in appends.join_all().await {
        if n % 2 == 0 {
            landed.push(result.expect("a good append lands").events[0].sequence);
        } else {
            let actual = match &result {
                Err(StoreError::Conflict { actual, .. }) => *actual,
                other => panic!("expected a conflict, got {other:?}"),
            };
            assert!(actual <= 10);
            assert_conflict(result, &s, Expectation::Exact(1_000), actual);
        }
    }
    landed.sort_unstable();
    assert_eq!(landed, (1..=10).collect::<Vec<u64>>());
    assert_eq!(store.read_all(0, 100).await.unwrap().len(), 10);
}

#[tokio::test]
async fn writes_after_the_writer_stopped_fail_with_a_backend_error() {
    let dir = temp_dir();
    let mut store = open_in(&dir, SqliteConfig::default());
    append_n(&store, &stream("a"), 1).await;
    let writer = store.writer.take().unwrap();
    drop(writer.jobs);
    writer.thread.join().unwrap();

    let result = store
        .append(request(&stream("a"), Expectation::Any, events(1)))
        .await;
    match result {
        Err(StoreError::Backend(error)) => {
            assert!(error.to_string().contains("writer"), "{error}")
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // Reads do not need the writer.
    assert_eq!(store.stream_sequence(&stream("a")).await.unwrap(), 1);
}

#[tokio::test]
async fn close_checkpoints_the_log_and_refuses_later_writes_as_closed() {
    let dir = temp_dir();
    let store = open_in(&dir, SqliteConfig::default());
    append_n(&store, &stream("a"), 20).await;
    let log = dir.path().join("events.db-wal");
    assert!(
        std::fs::metadata(&log).unwrap().len() > 0,
        "appends go to the log first"
    );

    store.close().await.unwrap();
    assert_eq!(
        std::fs::metadata(&log).map_or(0, |m| m.len()),
        0,
        "every committed page is in the database file"
    );
    let refused = store
        .append(request(&stream("a"), Expectation::Any, events(1)))
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Unavailable {
                outage: Outage::Closed,
                ..
            })
        ),
        "{refused:?}"
    );
    // Closing again is harmless, and reads still work.
    store.close().await.unwrap();
    assert_eq!(store.stream_sequence(&stream("a")).await.unwrap(), 20);
    drop(store);

    // The database file alone holds everything.
    std::fs::remove_file(dir.path().join("events.db-shm")).ok();
    std::fs::remove_file(&log).ok();
    let reopened = open_in(&dir, SqliteConfig::default());
    assert_eq!(reopened.stream_sequence(&stream("a")).await.unwrap(), 20);
}

/// `max_page_count` stands in for a full disk: SQLite answers `SQLITE_FULL`
/// either way.
#[test]
fn a_full_disk_is_an_outage_that_passes_once_space_returns() {
    let dir = temp_dir();
    let path = dir.path().join("events.db");
    let mut connection = open_writer(&path, SqliteConfig::default()).unwrap();
    migrate(&mut connection).unwrap();
    let s = stream("full");
    let append = |connection: &mut Connection, n: u64, events: Vec<crate::model::NewEvent>| {
        let (job, answer) = queued(Append(request(&s, Expectation::Exact(n), events)));
        write_batch(connection, std::iter::once(job));
        answer.blocking_recv().expect("every job is answered")
    };
    append(&mut connection, 0, events(1)).unwrap();
    let pages: i64 = connection
        .pragma_query_value(None, "page_count", |row| row.get(0))
        .unwrap();
    connection
        .pragma_update(None, "max_page_count", pages)
        .unwrap();

    let big = vec![crate::store::conformance::event(
        "MoneyDeposited",
        &format!(r#"{{"memo":"{}"}}"#, "x".repeat(64 << 10)),
    )];
    let full = append(&mut connection, 1, big.clone()).unwrap_err();
    match &full {
        StoreError::Unavailable {
            outage: Outage::DiskFull,
            ..
        } => {}
        other => panic!("expected a full disk, got {other:?}"),
    }
    assert!(
        full.to_string().contains("disk is full") && !full.to_string().contains("SQLITE"),
        "{full}"
    );
    let count: i64 = connection
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 1, "nothing of the refused append was written");

    // Space returns: the same connection writes again.
    connection
        .pragma_update(None, "max_page_count", pages * 100)
        .unwrap();
    let landed = append(&mut connection, 1, big).unwrap();
    assert_eq!(landed.events[0].sequence, 2);
}
