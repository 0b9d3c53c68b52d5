//! Property tests: name validation against its specification written as
//! regular expressions, and append semantics against a simple model, on
//! every backend (PostgreSQL in a scratch schema per case, when reachable).

use std::collections::HashMap;

use cqrs_wasi_host::model::{
    EventContext, Expectation, KindSet, NameKind, NewEvent, StreamId, validate_name,
};
use cqrs_wasi_host::store::postgres_testing::ScratchSchema;
use cqrs_wasi_host::store::{
    AppendRequest, EventStore, MemoryStore, SqliteConfig, SqliteStore, StoreError,
};
use proptest::prelude::*;
use serde_json::value::RawValue;
use uuid::Uuid;

/// DESIGN.md's rules, restated as patterns.
fn specification(kind: NameKind) -> regex::Regex {
    let pattern = match kind {
        NameKind::Domain => r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        NameKind::InstanceKey | NameKind::CommandId => r"^[A-Za-z0-9_.:@-]+$",
        _ => r"^[A-Za-z0-9_-]+$",
    };
    regex::Regex::new(pattern).expect("a valid pattern")
}

fn allowed(kind: NameKind, name: &str) -> bool {
    name.len() <= 128
        && specification(kind).is_match(name)
        && !(kind == NameKind::EventType && (name == "NewEntity" || name == "Projection"))
}

/// Names near the edges: the allowed characters and their neighbours,
/// lengths around the limit.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.:@/ -]{0,12}",
        "[a-z.]{0,6}",
        "[A-Za-z0-9]{120,135}",
        any::<String>(),
        Just("NewEntity".to_owned()),
    ]
}

const KINDS: [NameKind; 6] = [
    NameKind::Domain,
    NameKind::EntityType,
    NameKind::InstanceKey,
    NameKind::EventType,
    NameKind::CommandType,
    NameKind::CommandId,
];

proptest! {
    #[test]
    fn names_are_accepted_exactly_as_the_design_says(name in names()) {
        for kind in KINDS {
            prop_assert_eq!(validate_name(kind, &name).is_ok(), allowed(kind, &name), "{:?} {:?}", kind, name);
        }
    }

    #[test]
    fn a_stream_id_exists_only_with_three_valid_parts(domain in names(), entity in names(), key in names()) {
        let valid = allowed(NameKind::Domain, &domain)
            && allowed(NameKind::EntityType, &entity)
            && allowed(NameKind::InstanceKey, &key);
        prop_assert_eq!(StreamId::new(domain, entity, key).is_ok(), valid);
    }
}

/// One step of a run against the store.
#[derive(Debug, Clone)]
enum Step {
    Append {
        stream: usize,
        expectation: Expectation,
        events: usize,
    },
    /// Sends again the batch of an earlier append (by index, modulo).
    Retry { earlier: usize },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let expectation = prop_oneof![
        Just(Expectation::Any),
        Just(Expectation::NoStream),
        Just(Expectation::StreamExists),
        (0u64..6).prop_map(Expectation::Exact),
    ];
    let step = prop_oneof![
        4 => (0usize..3, expectation, 0usize..4).prop_map(|(stream, expectation, events)| Step::Append { stream, expectation, events }),
        1 => (0usize..64).prop_map(|earlier| Step::Retry { earlier }),
    ];
    prop::collection::vec(step, 1..40)
}

/// What the store must do, kept as simply as possible.
#[derive(Default)]
struct Model {
    streams: HashMap<usize, Vec<Uuid>>,
}

fn stream(index: usize) -> StreamId {
    StreamId::new("Prop", "Thing", format!("t-{index}")).expect("valid")
}

fn new_events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|n| {
            NewEvent::new(
                "Happened",
                RawValue::from_string(format!("{{\"n\":{n}}}")).expect("json"),
            )
            .expect("valid")
        })
        .collect()
}

async fn check(store: &dyn EventStore, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    // Every batch sent successfully, for retries: stream, its events, and
    // the sequences they got.
    let mut sent: Vec<(usize, Vec<NewEvent>, Vec<u64>)> = Vec::new();
    for step in steps {
        let (index, expectation, events, retried) = match step {
            Step::Append {
                stream,
                expectation,
                events,
            } => (stream, expectation, new_events(events), None),
            Step::Retry { earlier } if !sent.is_empty() => {
                let (index, events, sequences) = sent[earlier % sent.len()].clone();
                (index, Expectation::Any, events, Some(sequences))
            }
            Step::Retry { .. } => continue,
        };
        let current = model.streams.get(&index).map_or(0, Vec::len) as u64;
        let result = store
            .append(AppendRequest {
                stream: stream(index),
                expectation,
                events: events.clone(),
                context: EventContext::default(),
                command: None,
                raise: KindSet::ALL,
            })
            .await;
        match (retried, result) {
            (Some(sequences), Ok(outcome)) if !events.is_empty() => {
                let got: Vec<u64> = outcome.events.iter().map(|e| e.sequence).collect();
                prop_assert_eq!(got, sequences, "a retry returns the original outcome");
            }
            (_, Ok(outcome)) => {
                prop_assert!(
                    expectation.is_met_by(current),
                    "{expectation:?} met at {current}"
                );
                let expected: Vec<u64> = (current + 1..=current + events.len() as u64).collect();
                let got: Vec<u64> = outcome.events.iter().map(|e| e.sequence).collect();
                prop_assert_eq!(&got, &expected);
                model
                    .streams
                    .entry(index)
                    .or_default()
                    .extend(events.iter().map(|e| e.event_id));
                if !events.is_empty() {
                    sent.push((index, events, got));
                }
            }
            (None, Err(StoreError::Conflict { actual, .. })) => {
                prop_assert!(
                    !expectation.is_met_by(current),
                    "{expectation:?} refused at {current}"
                );
                prop_assert_eq!(actual, current, "a conflict says the current sequence");
            }
            (_, Err(error)) => prop_assert!(false, "unexpected {error}"),
        }
    }
    for (index, ids) in &model.streams {
        let events = store
            .read_stream(&stream(*index), 1, 1000)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        prop_assert_eq!(&stored, ids, "no gaps, nothing lost, nothing extra");
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        prop_assert_eq!(sequences, (1..=ids.len() as u64).collect::<Vec<_>>());
    }
    let all = store
        .read_all(1, 10_000)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        all.len(),
        model.streams.values().map(Vec::len).sum::<usize>()
    );
    prop_assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_store_appends_like_the_model(steps in steps()) {
        runtime().block_on(check(&MemoryStore::new(), steps))?;
    }

    #[test]
    fn sqlite_store_appends_like_the_model(steps in steps()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let store = SqliteStore::open(
            dir.path().join("events.db"),
            SqliteConfig { durable: false, ..SqliteConfig::default() },
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime().block_on(check(&store, steps))?;
    }
}

proptest! {
    // Fewer cases: each creates and drops a schema (about 0.1 s); the
    // conformance suite covers PostgreSQL in depth.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn postgres_store_appends_like_the_model(steps in steps()) {
        runtime().block_on(async {
            let Some(schema) = ScratchSchema::new().await else {
                return Ok(());
            };
            check(&schema.open().await, steps).await
        })?;
    }
}
