//! What a store made by the first released schema holds
//! (`host/tests/fixtures/store-v2/`, one script per SQL backend), and the
//! check, shared by both backends' tests, that today's code opens it with
//! nothing lost and writes on.
//!
//! Version 2 is the first schema with everything a running host keeps
//! (version 1 had no outbox); both are copied verbatim from the commits
//! that released them, and the rows are what that version's code wrote.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::{Uuid, uuid};

use super::{
    assert_already_executed, command_with, event, id, outbox, outbox_positions, request, stream_of,
};
use crate::model::{Expectation, StreamId};
use crate::store::{CommandRecord, DeadLetter, EventStore, Pruned};

/// A time as the fixture spells it.
fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).expect("a valid time")
}

/// The fixture's events, in position order: stream, sequence, event id,
/// type, payload and when it was written.
fn fixture_events() -> [(
    StreamId,
    u64,
    Uuid,
    &'static str,
    &'static str,
    OffsetDateTime,
); 4] {
    let (acc_1, acc_2) = (
        stream_of("Bank", "Account", "acc-1"),
        stream_of("Bank", "Account", "acc-2"),
    );
    let letter = stream_of("Letters", "Letter", "welcome-acc-1");
    [
        (
            acc_1.clone(),
            1,
            uuid!("019ac3f0-0000-7000-8000-000000000001"),
            "AccountOpened",
            r#"{"owner":"Ada"}"#,
            at("2025-11-27T05:48:02Z"),
        ),
        (
            acc_1,
            2,
            uuid!("019ac3f0-0000-7000-8000-000000000002"),
            "MoneyDeposited",
            r#"{"amount":700}"#,
            at("2025-11-27T05:48:03.123456Z"),
        ),
        (
            acc_2,
            1,
            uuid!("019ac3f0-0000-7000-8000-000000000003"),
            "AccountOpened",
            r#"{"owner":"Eve"}"#,
            at("2025-11-27T05:48:04Z"),
        ),
        (
            letter,
            1,
            uuid!("019ac3f0-0000-7000-8000-000000000004"),
            "WelcomeSent",
            r#"{"account":"acc-1"}"#,
            at("2025-11-27T05:48:04.5Z"),
        ),
    ]
}

/// Checks that `store`, opened by today's code on the fixture, holds every
/// event, command record, outbox row, checkpoint, dead letter and
/// completion record the fixture wrote, and then takes appends.
pub(crate) async fn the_first_released_store_migrates_with_nothing_lost(store: &dyn EventStore) {
    // Every event, where it was.
    let events = store.read_all(0, usize::MAX).await.unwrap();
    let expected = fixture_events();
    assert_eq!(events.len(), expected.len(), "{events:?}");
    for (read, (stream, sequence, event_id, event_type, payload, written_at)) in
        events.iter().zip(&expected)
    {
        assert_eq!(
            (&read.stream, read.sequence, read.event_id),
            (stream, *sequence, *event_id)
        );
        assert_eq!(read.event_type.as_str(), *event_type);
        assert_eq!(read.payload.get(), *payload);
        assert_eq!(read.written_at, *written_at);
    }
    assert_eq!(events[1].context.commentary.as_deref(), Some("salary"));
    assert_eq!(
        events[3].context.causation_id.as_deref(),
        Some("b77c554e-2883-5340-9bba-e2138b1953cc")
    );
    let (acc_1, acc_2) = (&expected[0].0, &expected[2].0);
    assert_eq!(store.stream_sequence(acc_1).await.unwrap(), 2);
    assert_eq!(store.stream_sequence(&expected[3].0).await.unwrap(), 1);

    // Every command record, its events given their times by version 3,
    // and each replays as it did.
    for (command_id, position) in [
        ("cmd-open-1", 1),
        ("cmd-deposit-1", 2),
        ("cmd-open-2", 3),
        ("cmd-welcome-1", 4),
    ] {
        let record = store.command_record(&id(command_id)).await.unwrap();
        let Some(CommandRecord::Appended { outcome, .. }) = &record else {
            panic!("{command_id}: {record:?}");
        };
        let [appended] = &outcome.events[..] else {
            panic!("{command_id}: {outcome:?}");
        };
        assert_eq!(appended.position, position);
        assert_eq!(appended.written_at, expected[position as usize - 1].5);
    }
    let deposit = store
        .command_record(&id("cmd-deposit-1"))
        .await
        .unwrap()
        .expect("recorded");
    let mut again = request(acc_1, Expectation::Any, vec![event("MoneyDeposited", "{}")]);
    again.command = Some(command_with(
        "cmd-deposit-1",
        "Deposit",
        r#"{"amount":700}"#,
    ));
    assert_already_executed(store.append(again).await, &deposit);
    let refused = store
        .command_record(&id("cmd-withdraw-2"))
        .await
        .unwrap()
        .expect("recorded");
    assert!(
        matches!(&refused, CommandRecord::Rejected { message, .. }
            if message == "insufficient funds: the balance is 0"),
        "{refused:?}"
    );
    assert_eq!(
        store
            .record_rejection(
                acc_2,
                &command_with("cmd-withdraw-2", "Withdraw", "{}"),
                "x"
            )
            .await
            .unwrap(),
        refused
    );

    // Every outbox row, checkpoint, dead letter and completion record.
    let projection = r#"ProjectionCompleted 81fce765-faf3-5257-9f83-52d5f4bc5313 {"stream":{"domain":"Bank","entityType":"Account","instanceKey":"acc-1"},"projectionType":"Balance","sequence":2,"asOfDate":"2025-11-27T05:48:03.123456Z","value":{"balance":700,"open":true},"projectionVersion":"5d41402abc4b2a76b9719d911017c592a0c5c0b5c5c1d1a3b4e6f7a8b9c0d1e2","context":{"correlationId":"corr-2","source":"cli","commentary":"salary","handlerVersion":"5d41402abc4b2a76b9719d911017c592a0c5c0b5c5c1d1a3b4e6f7a8b9c0d1e2"}}"#;
    let rows = [
        "NewEntity Bank/Account/acc-1 1",
        "EventAppended Bank/Account/acc-1 1",
        "EventAppended Bank/Account/acc-1 2",
        projection,
        "NewEntity Bank/Account/acc-2 1",
        "EventAppended Bank/Account/acc-2 1",
        "NewEntity Letters/Letter/welcome-acc-1 1",
        "EventAppended Letters/Letter/welcome-acc-1 1",
    ];
    assert_eq!(outbox(store).await, rows);
    assert_eq!(outbox_positions(store).await, (1..=8).collect::<Vec<_>>());
    assert_eq!(store.outbox_head().await.unwrap(), 8);
    assert_eq!(
        store.checkpoints().await.unwrap(),
        [
            ("@local".to_owned(), 9),
            ("@projections".to_owned(), 5),
            ("grid".to_owned(), 7)
        ]
    );
    let refused_new_entity = uuid!("ccd8267e-f9ad-5248-8fca-f116376030b9");
    assert_eq!(
        store.dead_letters().await.unwrap(),
        [DeadLetter {
            destination: "grid".to_owned(),
            notification_id: refused_new_entity,
            position: 5,
            event_type: "Bank.Account.NewEntity".to_owned(),
            subject: "eventsourcing/Bank/Account/NewEntity/acc-2".to_owned(),
            reason: r#"HTTP 400: {"error":{"code":"BadRequest","message":"refused"}}"#.to_owned(),
            attempts: 1,
            dead_at: at("2025-11-27T05:48:05Z"),
        }]
    );
    for notification in [
        "b77c554e-2883-5340-9bba-e2138b1953cc",
        "ccd8267e-f9ad-5248-8fca-f116376030b9",
    ] {
        assert!(
            store
                .is_completed("welcome/welcome-new-accounts", notification)
                .await
                .unwrap()
        );
    }

    // Rows of events kept their events' times through version 4, so they
    // are old enough to prune below "grid"'s checkpoint; the document and
    // the completions are timed from the upgrade, and the dead letter's
    // row stays for its re-drive.
    assert_eq!(
        store
            .prune_outbox(7, Duration::from_secs(3600))
            .await
            .unwrap(),
        Pruned {
            rows: 4,
            completions: 0
        }
    );
    assert_eq!(
        outbox(store).await,
        [rows[3], rows[4], rows[6], rows[7]].map(str::to_owned)
    );

    // It takes appends, after every position it handed out.
    let mut deposit = request(
        acc_1,
        Expectation::Exact(2),
        vec![event("MoneyDeposited", r#"{"amount":1}"#)],
    );
    deposit.command = Some(command_with("cmd-deposit-2", "Deposit", r#"{"amount":1}"#));
    let outcome = store.append(deposit).await.unwrap();
    assert_eq!(
        (outcome.events[0].sequence, outcome.events[0].position),
        (3, 5)
    );
    let head = store.outbox_head().await.unwrap();
    assert!(head > 8, "a new row after every old one: {head}");
    assert_eq!(
        outbox(store).await.last().map(String::as_str),
        Some("EventAppended Bank/Account/acc-1 3")
    );
    assert!(
        store
            .command_record(&id("cmd-deposit-2"))
            .await
            .unwrap()
            .is_some()
    );
}
