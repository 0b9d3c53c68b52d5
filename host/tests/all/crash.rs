//! A crash loses no notification: `cqrs-wasi serve` is killed (SIGKILL)
//! during a burst of commands while its Event Grid topic (the stand-in)
//! throttles, fails and drops connections; once it runs again, every event
//! acknowledged to a client has reached the topic at least once, and every
//! copy of a notification carries the id of its identity.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::model::{NotificationKind, notification_id};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::event_grid::{EventGridStandIn, Fault, Schema};
use crate::support::{self, ServedHost};

const ACCOUNTS: usize = 4;
const CLIENTS: usize = 8;
/// Acknowledged commands before the kill.
const KILL_AFTER: usize = 120;

/// Starts `cqrs-wasi serve` in `dir` with the topic's key in its
/// environment, as an operator would keep it.
async fn start(dir: &Path, key: &str) -> anyhow::Result<ServedHost> {
    let mut command = std::process::Command::new(support::BINARY);
    command
        .args(["serve", "--config", "host.toml", "--listen", "127.0.0.1:0"])
        .env("GRID_TEST_KEY", key)
        .current_dir(dir);
    tokio::task::spawn_blocking(move || ServedHost::start(command)).await?
}

fn faults(stand_in: &EventGridStandIn) {
    for fault in [
        Fault::Unavailable,
        Fault::TooManyRequests {
            retry_after: "0".to_owned(),
        },
        Fault::DropConnection,
        Fault::Slow(Duration::from_millis(800)),
        Fault::Unavailable,
        Fault::DropConnection,
    ] {
        stand_in.inject(fault);
    }
}

/// The identity an accepted notification's data describes, as the id it
/// must carry.
fn expected_id(event: &Value) -> anyhow::Result<String> {
    let data = &event["data"];
    let text = |field: &str| {
        data[field]
            .as_str()
            .with_context(|| format!("{field} in {event}"))
    };
    let stream = StreamId::new(
        text("domainName")?,
        text("entityTypeName")?,
        text("instanceKey")?,
    )?;
    let kind: NotificationKind = text("notificationKind")?.parse()?;
    let sequence = data["sequenceNumber"].as_u64().unwrap_or(1);
    let projection = data["projectionTypeName"].as_str();
    Ok(notification_id(kind, &stream, sequence, projection).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_host_delivers_every_acknowledged_event_after_restart() -> anyhow::Result<()> {
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    faults(&stand_in);
    let dir = tempfile::tempdir()?;
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            r#"[store]
kind = "sqlite"
path = "events.db"

[[components]]
name = "bank"
path = {bank:?}

[[topics]]
name = "grid"
endpoint = "{}"
key_env = "GRID_TEST_KEY"
max_attempts = 3
request_timeout_ms = 500
"#,
            stand_in.endpoint()
        ),
    )?;

    let host = Arc::new(
        start(dir.path(), stand_in.key())
            .await
            .context("the host starts")?,
    );
    let account = |n: usize| format!("acc-{}", n % ACCOUNTS);
    for n in 0..ACCOUNTS {
        let (status, body) = host
            .command(&account(n), "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        ensure!(status == StatusCode::OK, "{body}");
    }

    // The burst: clients deposit until the host dies under them. Every
    // acknowledged (stream, sequence) is kept.
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        let (host, acknowledged, count) = (host.clone(), acknowledged.clone(), count.clone());
        clients.spawn(async move {
            for n in (client..).step_by(CLIENTS) {
                let key = account(n);
                let Ok((status, body)) = host.command(&key, "Deposit", r#"{"amount": 1}"#).await
                else {
                    return; // The host is gone.
                };
                if status != StatusCode::OK {
                    continue;
                }
                for event in body["events"].as_array().into_iter().flatten() {
                    if let Some(sequence) = event["sequence"].as_u64() {
                        acknowledged
                            .lock()
                            .expect("not poisoned")
                            .insert((key.clone(), sequence));
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < KILL_AFTER {
        ensure!(Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // More faults for whatever the dispatcher is sending right now.
    faults(&stand_in);
    host.kill()?;
    clients.join_all().await;
    drop(host);
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("not poisoned"));
    eprintln!(
        "killed after {} acknowledged deposits; the stand-in had taken {} notifications",
        acknowledged.len(),
        stand_in.accepted().len()
    );

    let host = start(dir.path(), stand_in.key())
        .await
        .context("the host starts again")?;
    let wanted: BTreeSet<String> = (0..ACCOUNTS)
        .map(|n| (account(n), 1))
        .chain(acknowledged.iter().cloned())
        .map(|(key, sequence)| {
            let stream = StreamId::new("Bank", "Account", key).expect("valid");
            notification_id(NotificationKind::EventAppended, &stream, sequence, None).to_string()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let accepted: BTreeSet<String> = stand_in.accepted_ids().into_iter().collect();
        let missing = wanted.difference(&accepted).count();
        if missing == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} acknowledged events never reached the topic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Duplicates (from retries, and from the rounds the kill cut short)
    // carry the same id: every copy's id is its identity's.
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for event in stand_in.accepted() {
        let id = event["id"].as_str().context("an id")?.to_owned();
        ensure!(id == expected_id(&event)?, "{event}");
        *copies.entry(id).or_default() += 1;
    }
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    eprintln!(
        "{} distinct notifications reached the topic, {duplicated} of them more than once",
        copies.len()
    );
    host.stop()?;
    Ok(())
}
