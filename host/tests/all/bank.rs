//! The bank example end to end: the real component on a real host, a SQLite
//! file, HTTP over loopback.

use std::sync::Arc;

use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{KindSet, RaisePolicy};
use cqrs_wasi_host::store::{SqliteConfig, SqliteStore};
use cqrs_wasi_host::{CommandRequest, HostConfig};
use cqrs_wasi_host::{Isolation, ReuseConfig, RuntimeConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestHost;

async fn host() -> anyhow::Result<(tempfile::TempDir, TestHost)> {
    let dir = tempfile::tempdir()?;
    let host = TestHost::start(&dir.path().join("events.db")).await?;
    Ok((dir, host))
}

#[tokio::test]
async fn overdraft_is_refused_and_appends_nothing() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    let (status, opened) = host
        .command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{opened}");
    assert_eq!(opened["events"][0]["eventType"], "AccountOpened");
    assert_eq!(opened["events"][0]["sequence"], 1);
    for amount in [30, 20] {
        let (status, body) = host
            .command("acc-1", "Deposit", &json!({ "amount": amount }).to_string())
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let (status, refused) = host
        .command("acc-1", "Withdraw", r#"{"amount": 51}"#)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["code"], "rejected");
    assert_eq!(
        refused["message"],
        "insufficient funds: balance 50 is less than 51"
    );
    assert_eq!(host.all_events().await?.len(), 3, "nothing appended");

    let (status, _) = host
        .command("acc-1", "Withdraw", r#"{"amount": 50}"#)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        host.balance("acc-1").await?,
        json!({"balance": 0, "open": true})
    );

    let (status, as_of) = host
        .get("/api/projections/Bank/Account/acc-1/Balance?asOf=2")
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_of["sequence"], 2);
    assert_eq!(as_of["state"], json!({"balance": 30, "open": true}));

    let (status, closed) = host.command("acc-1", "CloseAccount", "").await?;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(
        host.balance("acc-1").await?,
        json!({"balance": 0, "open": false})
    );
    Ok(())
}

#[tokio::test]
async fn commands_on_an_account_never_opened_are_refused() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    let (status, body) = host.command("ghost", "Deposit", r#"{"amount": 5}"#).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["message"], "the account does not exist");
    let (status, body) = host.command("ghost", "CloseAccount", "{}").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(host.all_events().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_empty_stream_projects_to_the_initial_state() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    let (status, body) = host
        .get("/api/projections/Bank/Account/none/Balance")
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sequence"], 0);
    assert_eq!(body["state"], json!({"balance": 0, "open": false}));
    Ok(())
}

#[tokio::test]
async fn concurrent_deposits_to_one_account_all_land() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    host.command("acc-c", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    let host = Arc::new(host);
    let deposits = (1..=32).map(|amount| {
        let host = host.clone();
        tokio::spawn(async move {
            host.command("acc-c", "Deposit", &json!({ "amount": amount }).to_string())
                .await
        })
    });
    for deposit in futures_join(deposits).await {
        let (status, body) = deposit??;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let (_, page) = host
        .get("/api/streams/Bank/Account/acc-c/events?limit=1000")
        .await?;
    let sequences: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(sequences, (1..=33).collect::<Vec<_>>());
    assert_eq!(
        host.balance("acc-c").await?,
        json!({"balance": (1..=32).sum::<i64>(), "open": true})
    );
    Ok(())
}

/// Two hosts sharing one store do not share their per-stream turn, so their
/// appends race and the loser's handler must run again.
#[tokio::test]
async fn hosts_sharing_a_store_rerun_handlers_on_conflict() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?);
    let options = HostConfig {
        command_attempts: 100,
        ..HostConfig::default()
    };
    let a = Arc::new(
        TestHost::with_store(store.clone(), options.clone(), &ApiConfig::default()).await?,
    );
    let b = Arc::new(TestHost::with_store(store, options, &ApiConfig::default()).await?);
    a.command("shared", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    let deposits = (0..40).map(|i| {
        let host = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { host.command("shared", "Deposit", r#"{"amount": 1}"#).await })
    });
    for deposit in futures_join(deposits).await {
        let (status, body) = deposit??;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let events = a.all_events().await?;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=41).collect::<Vec<_>>());
    assert_eq!(
        b.balance("shared").await?,
        json!({"balance": 40, "open": true})
    );
    Ok(())
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_outcome_and_appends_nothing()
-> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    host.command("acc-i", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    let deposit = |key| host.command_with("acc-i", "Deposit", r#"{"amount": 7}"#, Some(key));

    let (status, first) = deposit("dep-1").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["replayed"], false);
    let (status, again) = deposit("dep-1").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["events"], first["events"]);
    assert_eq!(host.all_events().await?.len(), 2);
    assert_eq!(host.balance("acc-i").await?["balance"], 7);

    // A refusal is remembered too, even once the account could pay.
    let withdraw = |key| host.command_with("acc-i", "Withdraw", r#"{"amount": 10}"#, Some(key));
    let (status, _) = withdraw("wd-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    deposit("dep-2").await?;
    let (status, body) = withdraw("wd-1").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "rejected");

    // The same key for another command is an error, not a replay.
    let (status, body) = host
        .command_with("acc-i", "Withdraw", r#"{"amount": 1}"#, Some("dep-1"))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(host.all_events().await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn after_a_restart_every_stream_and_projection_is_as_before() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("events.db");
    let host = TestHost::start(&db).await?;
    for key in ["r-1", "r-2"] {
        host.command(key, "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        host.command(key, "Deposit", r#"{"amount": 12}"#).await?;
    }
    host.command("r-2", "Withdraw", r#"{"amount": 5}"#).await?;
    let before = host.get("/api/streams/Bank/Account/r-2/events").await?;
    let instances_before = host.get("/api/instances/Bank/Account").await?;
    host.stop().await;

    let host = TestHost::start(&db).await?;
    assert_eq!(
        host.get("/api/streams/Bank/Account/r-2/events").await?,
        before
    );
    assert_eq!(
        host.get("/api/instances/Bank/Account").await?,
        instances_before
    );
    assert_eq!(
        host.balance("r-1").await?,
        json!({"balance": 12, "open": true})
    );
    assert_eq!(
        host.balance("r-2").await?,
        json!({"balance": 7, "open": true})
    );
    let (status, body) = host.command("r-2", "Deposit", r#"{"amount": 1}"#).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["sequence"], 4);
    Ok(())
}

/// A deposit's handler runs `Balance` over its own stream. Once the deposit
/// is appended, the host folds it into that state through the handler's own
/// instance, so the next command finds the state at the head of the stream
/// and runs one instance (its handler's), not two, even when every call
/// gets a fresh instance. The state it caches must
/// be the one a fresh fold computes, also after another host appended.
#[tokio::test]
async fn a_command_folds_its_events_into_the_projections_its_handler_ran() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?);
    // No notifications: state propagation would run projections in the
    // background and make the instance counts race.
    let quiet = HostConfig {
        raise: RaisePolicy::new(KindSet::NONE),
        ..HostConfig::default()
    };
    // A fresh instance for every call, so that the counts of instances made
    // count calls.
    let per_call = || RuntimeConfig {
        reuse: ReuseConfig {
            isolation: Isolation::PerCall,
            ..ReuseConfig::default()
        },
        ..RuntimeConfig::default()
    };
    let (host, other) = (
        TestHost::build(
            store.clone(),
            quiet.clone(),
            per_call(),
            &ApiConfig::default(),
        )
        .await?,
        // No snapshots: every query folds the stream from its first event
        // in a fresh instance.
        TestHost::build(
            store,
            HostConfig {
                snapshot_capacity: 0,
                ..quiet
            },
            per_call(),
            &ApiConfig::default(),
        )
        .await?,
    );
    let stream = StreamId::new("Bank", "Account", "fold-1")?;
    let run = |host: &TestHost, command: &str, payload: &str| {
        let request = CommandRequest::new(stream.clone(), command, payload);
        let host = host.host.clone();
        async move { anyhow::Ok(host.execute(request?).await?) }
    };
    let agree = || async {
        let cached = host.host.project(&stream, "Balance", None).await?;
        let folded = other.host.project(&stream, "Balance", None).await?;
        assert_eq!(cached.sequence, folded.sequence);
        assert_eq!(cached.state.get(), folded.state.get());
        anyhow::Ok(cached)
    };

    run(&host, "OpenAccount", r#"{"owner": "Ada"}"#).await?;
    run(&host, "Deposit", r#"{"amount": 5}"#).await?;
    for (command, payload) in [
        ("Deposit", r#"{"amount": 7}"#),
        ("Withdraw", r#"{"amount": 3}"#),
        ("Deposit", r#"{"amount": 11}"#),
    ] {
        let before = host.host.instantiations();
        run(&host, command, payload).await?;
        assert_eq!(
            host.host.instantiations() - before,
            1,
            "{command} {payload}"
        );
    }
    let before = host.host.instantiations();
    let state = agree().await?;
    assert_eq!(
        host.host.instantiations(),
        before,
        "the query is answered from the state the last command cached"
    );
    assert_eq!(state.sequence, 5);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(state.state.get())?,
        json!({"balance": 20, "open": true})
    );

    // Another host appends. The next command runs at the head this host
    // last saw, and its append fails; it runs again at the actual head,
    // where the cached state is one event behind, so that event is folded
    // in a projection instance of its own: three instances.
    run(&other, "Deposit", r#"{"amount": 100}"#).await?;
    let before = host.host.instantiations();
    run(&host, "Withdraw", r#"{"amount": 20}"#).await?;
    assert_eq!(host.host.instantiations() - before, 3);
    let state = agree().await?;
    assert_eq!(state.sequence, 7);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(state.state.get())?,
        json!({"balance": 100, "open": true})
    );
    // Another writer was seen on the stream, so from now on this host reads
    // its head before each command: after the other host appends again, a
    // command runs its handler once, beside the projection's instance.
    run(&other, "Deposit", r#"{"amount": 1}"#).await?;
    let before = host.host.instantiations();
    run(&host, "Deposit", r#"{"amount": 1}"#).await?;
    assert_eq!(host.host.instantiations() - before, 2);
    assert_eq!(agree().await?.sequence, 9);
    Ok(())
}

/// A host runs a command at the head it last saw of the stream without
/// asking the store. When another host appended meanwhile, that guess is
/// stale: the append fails and the handler runs again at the actual head,
/// which costs no attempt; and a refusal, which no append checks, is made
/// again at the actual head before it is recorded.
#[tokio::test]
async fn a_stale_head_never_decides_a_refusal_or_costs_an_attempt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?);
    let (a, b) = (
        TestHost::with_store(
            store.clone(),
            HostConfig {
                command_attempts: 1,
                ..HostConfig::default()
            },
            &ApiConfig::default(),
        )
        .await?,
        TestHost::with_store(store, HostConfig::default(), &ApiConfig::default()).await?,
    );
    let ok = |(status, body): (StatusCode, serde_json::Value)| {
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };

    // At the head `a` saw, the account is empty and the withdrawal would be
    // refused, for good.
    ok(a.command("refusal", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?);
    ok(b.command("refusal", "Deposit", r#"{"amount": 100}"#)
        .await?);
    ok(a.command("refusal", "Withdraw", r#"{"amount": 60}"#)
        .await?);
    assert_eq!(
        a.balance("refusal").await?,
        json!({"balance": 40, "open": true})
    );

    // With one attempt allowed, the run at the stale head is not one.
    ok(a.command("conflict", "OpenAccount", r#"{"owner": "Bo"}"#)
        .await?);
    ok(b.command("conflict", "Deposit", r#"{"amount": 1}"#).await?);
    let body = ok(a.command("conflict", "Deposit", r#"{"amount": 2}"#).await?);
    assert_eq!(body["streamSequence"], 3, "{body}");
    let sequences: Vec<u64> = a
        .all_events()
        .await?
        .iter()
        .filter(|e| e.stream.instance_key() == "conflict")
        .map(|e| e.sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    Ok(())
}

#[tokio::test]
async fn instances_are_listed_a_page_at_a_time() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    for key in ["c", "a", "e", "b", "d"] {
        host.command(key, "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
    }
    let (_, first) = host.get("/api/instances/Bank/Account?limit=2").await?;
    assert_eq!(first["instanceKeys"], json!(["a", "b"]));
    let cursor = first["nextCursor"].as_str().expect("a cursor");
    let (_, second) = host
        .get(&format!(
            "/api/instances/Bank/Account?limit=2&cursor={cursor}"
        ))
        .await?;
    assert_eq!(second["instanceKeys"], json!(["c", "d"]));
    let cursor = second["nextCursor"].as_str().expect("a cursor");
    let (_, last) = host
        .get(&format!(
            "/api/instances/Bank/Account?limit=2&cursor={cursor}"
        ))
        .await?;
    assert_eq!(last["instanceKeys"], json!(["e"]));
    assert_eq!(last["nextCursor"], json!(null));
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_its_status_and_code_and_changes_nothing() -> anyhow::Result<()> {
    // The default body limit, 1 MiB, is what the oversize case exceeds.
    let (_dir, host) = host().await?;
    host.command("acc-b", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    let before = host.all_events().await?.len();
    let long_name = "x".repeat(300);
    let cases = [
        (
            "acc-b",
            "Deposit",
            "{\"amount\": ".to_owned(),
            400,
            "malformed_json",
        ),
        (
            "acc-b",
            "Deposit",
            r#"{"amount": "ten"}"#.to_owned(),
            400,
            "invalid_payload",
        ),
        (
            "acc-b",
            "Deposit",
            r#"{"amount": -3}"#.to_owned(),
            400,
            "invalid_payload",
        ),
        (
            "a%2Fb",
            "Deposit",
            r#"{"amount": 1}"#.to_owned(),
            400,
            "invalid_name",
        ),
        (
            &long_name,
            "Deposit",
            r#"{"amount": 1}"#.to_owned(),
            400,
            "invalid_name",
        ),
        ("acc-b", "Launch", "{}".to_owned(), 404, "no_handler"),
        ("acc-b", "NewEntity", "{}".to_owned(), 404, "no_handler"),
        (
            "acc-b",
            "Deposit",
            format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(1 << 20)),
            413,
            "payload_too_large",
        ),
    ];
    for (key, command, body, status, code) in cases {
        let (got, answer) = host.command(key, command, &body).await?;
        assert_eq!(got.as_u16(), status, "{command} on {key:.20}: {answer}");
        assert_eq!(answer["code"], code, "{command} on {key:.20}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = host.get("/api/projections/Bank/Account/acc-b/Nope").await?;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (404, Some("no_projection"))
    );
    let (status, body) = host
        .get("/api/streams/Bank/Account/acc-b/events?from=x")
        .await?;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, body) = host.get("/api/nowhere").await?;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        host.all_events().await?.len(),
        before,
        "the store is unchanged"
    );
    Ok(())
}

#[tokio::test]
async fn health_and_metrics_are_served() -> anyhow::Result<()> {
    let (_dir, host) = host().await?;
    host.command("m", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    host.command("m", "Withdraw", r#"{"amount": 1}"#).await?;
    assert_eq!(host.get("/healthz").await?.1, json!({"status": "ok"}));
    let metrics = host.metrics().await?;
    assert!(
        metrics.contains(r#"cqrs_wasi_commands_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cqrs_wasi_commands_total{outcome="rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("cqrs_wasi_command_duration_seconds_count 2"),
        "{metrics}"
    );
    Ok(())
}

async fn futures_join<T>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut results = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        results.push(task.await);
    }
    results
}
