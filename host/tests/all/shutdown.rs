//! A graceful shutdown: `cqrs-wasi serve`, sent SIGTERM under load from
//! several clients, stops taking requests, lets the calls in flight finish
//! (one of them held at a gate until well after the signal), stops its
//! dispatchers, closes its store and exits 0 within its deadline. After a
//! restart every acknowledged command is in the store as acknowledged, a
//! command whose answer the shutdown cut off and that its client sends
//! again with its `Idempotency-Key` runs once, and the store holds no
//! half-written state: sequences without gaps, each command record's
//! events in their stream, an outbox row for each event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cqrs_wasi_host::model::CommandId;
use cqrs_wasi_host::store::{CommandRecord, EventStore, OutboxEntry, SqliteConfig, SqliteStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::crash::{Ledger, load, open_accounts, resolve, serve, until_acknowledged, verify};
use crate::support::{self, Api};

/// The host's shutdown deadline in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

/// Calls started so far (each took an instance, new or reused), from
/// `/metrics`.
pub(crate) async fn calls_started(api: &Api) -> anyhow::Result<u64> {
    let text = api.metrics().await?;
    let counter = |name: &str| -> anyhow::Result<u64> {
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .with_context(|| format!("no {name}"))?
            .trim()
            .parse()?)
    };
    Ok(counter("cqrs_wasi_instances_created_total ")?
        + counter("cqrs_wasi_instances_reused_total ")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_the_calls_in_flight_and_loses_nothing() -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let dir = tempfile::tempdir()?;
    let (bank, gated) = (dir.path().join("bank.wasm"), dir.path().join("gated.wasm"));
    std::fs::write(&bank, support::component("bank"))?;
    std::fs::write(&gated, support::component("gated"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            "shutdown_timeout_ms = {}\n\n[store]\nkind = \"sqlite\"\npath = \"events.db\"\n\n\
             [[components]]\nname = \"bank\"\npath = {bank:?}\n\n\
             [[components]]\nname = \"gated\"\npath = {gated:?}\n",
            DEADLINE.as_millis()
        ),
    )?;
    let host = Arc::new(serve(dir.path(), &[], &[]).await?);
    open_accounts(&host).await?;

    // A deposit held in flight at a gate: once it has its instance, its
    // call runs, and it stays running until the gate opens.
    let before = calls_started(&host).await?;
    let held = tokio::spawn({
        let api = Api::new(host.api.url.clone());
        async move {
            api.post(
                "/api/commands/Test/Gated/held/HeldDeposit",
                &json!({ "amount": 5, "gate": "shutdown" }).to_string(),
            )
            .await
        }
    });
    let started = Instant::now();
    while calls_started(&host).await? == before {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the held deposit never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(std::slice::from_ref(&host), &ledger, &mut rng, 0, &stop);
    until_acknowledged(&ledger, 0, rng.usize(20..=100)).await?;
    host.terminate()?;
    let signalled = Instant::now();
    // The clients stop at their first request the host no longer takes.
    clients.join_all().await;
    let refused = ledger.entries().in_doubt.len();

    // The held call is still running, and keeps the host up: open its gate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !held.is_finished(),
        "the held deposit was answered before its gate opened"
    );
    {
        let store = SqliteStore::open(dir.path().join("events.db"), SqliteConfig::default())?;
        support::open_gate(&store, "shutdown").await?;
    }
    let (status, body) = held.await?.context("the held deposit is answered")?;
    ensure!(
        status == StatusCode::OK,
        "the held deposit: {status} {body}"
    );
    ensure!(body["events"][0]["sequence"] == 1, "{body}");

    let host = Arc::into_inner(host).context("every client is done")?;
    let output = host.output();
    let exit = tokio::task::spawn_blocking(move || host.wait()).await??;
    let took = signalled.elapsed();
    println!(
        "exited {exit} {took:?} after SIGTERM; {} deposits acknowledged, {refused} refused or cut off",
        ledger.acknowledged()
    );
    ensure!(
        exit.success(),
        "the host exits 0: {exit}\n{}",
        output.text()
    );
    ensure!(
        took < DEADLINE,
        "the host exited {took:?} after the signal, past its deadline of {DEADLINE:?}"
    );
    let log = output.text();
    ensure!(
        log.contains("event store closed") && log.contains("stopped"),
        "the host closes its store before it exits:\n{log}"
    );
    ensure!(!log.contains("abandoned"), "nothing was abandoned:\n{log}");
    let wal = std::fs::metadata(dir.path().join("events.db-wal")).map_or(0, |m| m.len());
    ensure!(
        wal == 0,
        "the log was checkpointed into the database file ({wal} bytes left)"
    );

    // After a restart: the cut-off deposits sent again, each runs once.
    let host = serve(dir.path(), &[], &[]).await?;
    resolve(&host, &ledger).await;
    verify(&host, &ledger).await?;
    let (status, body) = host.get("/api/projections/Test/Gated/held/Balance").await?;
    ensure!(
        status == StatusCode::OK && body["state"] == 5,
        "{status} {body}"
    );
    ensure!(host.stop()?.success(), "the host exits 0");
    let store = SqliteStore::open(dir.path().join("events.db"), SqliteConfig::default())?;
    whole(&store, &ledger).await
}

/// The store holds nothing half-written: every stream's sequences run from
/// 1 without a gap, every acknowledged command's record names events that
/// are in its stream, and every event a command appended has its outbox row.
pub(crate) async fn whole(store: &dyn EventStore, ledger: &Ledger) -> anyhow::Result<()> {
    let events = store.read_all(1, usize::MAX).await?;
    let mut streams: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        streams
            .entry(event.stream.to_string())
            .or_default()
            .push(event.sequence);
    }
    for (stream, sequences) in &streams {
        ensure!(
            *sequences == (1..=sequences.len() as u64).collect::<Vec<_>>(),
            "{stream}: sequences {sequences:?}"
        );
    }
    let stored: BTreeSet<(String, u64)> = events
        .iter()
        .map(|event| (event.stream.to_string(), event.sequence))
        .collect();
    let acknowledged: Vec<String> = ledger.entries().acknowledged.keys().cloned().collect();
    for command_id in acknowledged {
        let record = store
            .command_record(&CommandId::new(command_id.as_str())?)
            .await?
            .with_context(|| format!("{command_id} has no record"))?;
        let CommandRecord::Appended {
            stream, outcome, ..
        } = &record
        else {
            anyhow::bail!("{command_id} is recorded as {record:?}");
        };
        for event in &outcome.events {
            ensure!(
                stored.contains(&(stream.to_string(), event.sequence)),
                "{command_id}: its event {} of {stream} is not there",
                event.sequence
            );
        }
    }
    let announced: BTreeSet<u64> = store
        .read_outbox(1, usize::MAX)
        .await?
        .into_iter()
        .filter_map(|record| match record.entry {
            OutboxEntry::EventAppended(event) => Some(event.position),
            _ => None,
        })
        .collect();
    // Gates are opened by the test itself, raising nothing.
    let unannounced: Vec<_> = events
        .iter()
        .filter(|event| event.stream.entity_type().as_str() != "Gate")
        .filter(|event| !announced.contains(&event.position))
        .map(|event| format!("{} {}", event.stream, event.sequence))
        .collect();
    ensure!(
        unannounced.is_empty(),
        "events without an outbox row: {unannounced:?}"
    );
    println!(
        "the store is whole: {} events in {} streams",
        events.len(),
        streams.len()
    );
    Ok(())
}
