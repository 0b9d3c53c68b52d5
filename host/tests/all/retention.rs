//! Outbox retention end to end (issue 24 item 1): a host that runs for a
//! while keeps its outbox bounded, prunes nothing a destination has not
//! delivered (a topic that is down keeps every row after its checkpoint,
//! and gets them all when it comes back), and keeps dead letters until an
//! operator purges them over the admin API or the CLI.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::notifications::{
    Auth, Destination, EventGridConfig, EventGridPublisher, EventSchema, RetryPolicy, Secret,
};
use cqrs_wasi_host::store::postgres_testing::ScratchSchema;
use cqrs_wasi_host::store::{EventStore, SqliteConfig, SqliteStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::event_grid::{EventGridStandIn, Schema};
use crate::support::{self, TestHost, eventually};

/// Rows are pruned as soon as every destination has passed them.
fn prune_at_once() -> HostConfig {
    HostConfig {
        retain_delivered: Some(Duration::ZERO),
        ..HostConfig::default()
    }
}

/// A topic of the stand-in named `name`, with short pauses between retries.
fn topic(stand_in: &EventGridStandIn, name: &str) -> anyhow::Result<Destination> {
    let quick = |attempts| RetryPolicy {
        max_attempts: NonZeroU32::new(attempts).expect("nonzero"),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_millis(200),
    };
    let mut config = EventGridConfig::new(
        stand_in.endpoint(),
        EventSchema::EventGrid,
        Auth::Key(Secret::new(stand_in.key())),
    );
    config.retry = quick(2);
    Ok(Destination {
        name: name.to_owned(),
        sink: Arc::new(EventGridPublisher::new(config)?),
        retry: quick(1),
    })
}

/// The positions of the rows the outbox holds.
async fn rows(store: &dyn EventStore) -> anyhow::Result<Vec<u64>> {
    Ok(store
        .read_outbox(0, usize::MAX)
        .await?
        .iter()
        .map(|record| record.position)
        .collect())
}

fn sqlite(dir: &tempfile::TempDir) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?))
}

#[tokio::test]
async fn a_long_run_keeps_the_outbox_bounded_and_prunes_nothing_undelivered() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let store = sqlite(&dir)?;
    let (up, down) = (
        EventGridStandIn::start(Schema::EventGrid).await?,
        EventGridStandIn::start(Schema::EventGrid).await?,
    );
    down.go_down();
    let host = TestHost::with_destinations(
        store.clone(),
        prune_at_once(),
        vec![topic(&up, "up")?, topic(&down, "down")?],
    )
    .await?;
    host.deploy("welcome").await?;
    let run = async |round: usize| -> anyhow::Result<()> {
        for n in 0..10 {
            let key = format!("acc-{round}-{n}");
            let (status, body) = host
                .command(&key, "OpenAccount", r#"{"owner": "Ada"}"#)
                .await?;
            ensure!(status == StatusCode::OK, "{body}");
            let (status, body) = host.command(&key, "Deposit", r#"{"amount": 5}"#).await?;
            ensure!(status == StatusCode::OK, "{body}");
        }
        Ok(())
    };

    // While "down" is down, its checkpoint holds every row: none is pruned,
    // though "up" and the local handlers delivered them all.
    for round in 0..3 {
        run(round).await?;
    }
    let head = store.outbox_head().await?;
    eventually("up's deliveries", async || {
        let status = host.host.destinations().await?;
        Ok(status
            .iter()
            .filter(|d| d.destination != "down")
            .all(|d| d.next_position > head))
    })
    .await?;
    // Several prunes' worth (one a second with no retention).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = rows(&*store).await?;
    let head = store.outbox_head().await?;
    assert_eq!(
        kept,
        (1..=head).collect::<Vec<_>>(),
        "nothing was pruned: every row is still there"
    );

    // Back up: it gets every notification "up" got, none lost to pruning.
    down.come_back();
    eventually("down's catching up", async || {
        let accepted: HashSet<String> = down.accepted_ids().into_iter().collect();
        Ok(up.accepted_ids().iter().all(|id| accepted.contains(id)))
    })
    .await?;
    let pruned = async || -> anyhow::Result<bool> { Ok(rows(&*store).await?.len() <= 1) };
    eventually("the delivered rows to be pruned", pruned).await?;

    // From then on the outbox stays bounded however many rows go through.
    let mut bound = 0;
    for round in 3..8 {
        run(round).await?;
        bound = bound.max(rows(&*store).await?.len());
        eventually("this round's rows to be pruned", pruned).await?;
    }
    let total = store.outbox_head().await?;
    let kept = rows(&*store).await?;
    assert_eq!(kept, [total], "only the last row stays");
    assert!(
        bound < 100 && total > 4 * bound as u64,
        "{total} rows went through, at most {bound} were kept at once"
    );
    // Positions keep growing past what was pruned.
    run(8).await?;
    let after = rows(&*store).await?;
    assert!(after.iter().all(|&position| position >= total), "{after:?}");
    assert!(store.outbox_head().await? > total);
    // Every destination got everything, each notification once or more.
    let every: HashSet<String> = up.accepted_ids().into_iter().collect();
    eventually("both topics to have everything", async || {
        let up_ids: HashSet<String> = up.accepted_ids().into_iter().collect();
        let down_ids: HashSet<String> = down.accepted_ids().into_iter().collect();
        Ok(every.is_subset(&down_ids) && up_ids == down_ids)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn dead_letters_are_kept_until_purged_over_http_or_the_cli() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = sqlite(&dir)?;
    let grid = EventGridStandIn::start(Schema::EventGrid).await?;
    grid.refuse_where(|event| {
        event["subject"]
            .as_str()
            .is_some_and(|subject| subject.ends_with("/acc-bad"))
    });
    let host =
        TestHost::with_destinations(store.clone(), prune_at_once(), vec![topic(&grid, "grid")?])
            .await?;
    for (key, command, payload) in [
        ("acc-bad", "OpenAccount", r#"{"owner": "Eve"}"#),
        ("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#),
        ("acc-1", "Deposit", r#"{"amount": 5}"#),
    ] {
        let (status, body) = host.command(key, command, payload).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // acc-bad's new entity, event and projection.
    eventually("the dead letters", async || {
        Ok(host.host.dead_letters().await?.len() == 3)
    })
    .await?;
    let letters = host.host.dead_letters().await?;
    let dead: Vec<u64> = letters.iter().map(|letter| letter.position).collect();
    // The delivered rows go; the dead letters' rows stay.
    eventually("the delivered rows to be pruned", async || {
        let kept = rows(&*store).await?;
        let head = store.outbox_head().await?;
        Ok(kept.iter().all(|p| dead.contains(p) || *p == head))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = rows(&*store).await?;
    for position in &dead {
        assert!(kept.contains(position), "{position} in {kept:?}");
    }

    // One dead letter over HTTP: refused without the admin token or with a
    // wrong one, then removed; a second time it is not there.
    let first = &letters[0];
    let url = format!(
        "{}/admin/dead-letters/grid/{}",
        host.url, first.notification_id
    );
    for request in [
        host.client.delete(&url),
        host.client.delete(&url).bearer_auth("wrong"),
    ] {
        let response = request.send().await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(host.host.dead_letters().await?.len(), 3, "nothing purged");
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(support::ADMIN_TOKEN);
    let response = admin(host.client.delete(&url)).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await?, json!({"purged": 1}));
    let response = admin(host.client.delete(&url)).send().await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await?["code"],
        json!("no_dead_letter")
    );
    let response = admin(
        host.client
            .delete(format!("{}/admin/dead-letters/grid/not-an-id", host.url)),
    )
    .send()
    .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(host.host.dead_letters().await?.len(), 2);

    // The rest of the destination's from the CLI: refused with a wrong
    // token, then all removed.
    let cli = async |token: &str| -> anyhow::Result<std::process::Output> {
        let output = tokio::process::Command::new(support::BINARY)
            .args(["purge-dead-letters", "grid", "--url", &host.url])
            .args(["--token", token])
            .output()
            .await
            .context("cannot run cqrs-wasi")?;
        Ok(output)
    };
    let refused = cli("wrong").await?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(host.host.dead_letters().await?.len(), 2, "nothing purged");
    let purged = cli(support::ADMIN_TOKEN).await?;
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    let answer: Value = serde_json::from_slice(&purged.stdout)?;
    assert_eq!(answer, json!({"purged": 2}));
    assert!(host.host.dead_letters().await?.is_empty());

    // Purged, their rows are pruned like any delivered row.
    let head = store.outbox_head().await?;
    eventually("the purged letters' rows to be pruned", async || {
        Ok(rows(&*store).await? == [head])
    })
    .await?;
    // The purged notification was never delivered.
    let delivered: HashSet<String> = grid.accepted_ids().into_iter().collect();
    assert!(!delivered.contains(&first.notification_id.to_string()));
    Ok(())
}

/// Hosts sharing a PostgreSQL store each prune it, and each keeps the rows
/// of a destination that only the other one has: every destination the
/// store lists holds the floor, wherever it is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_of_one_host_keeps_its_rows_when_another_prunes() -> anyhow::Result<()> {
    let Some(schema) = ScratchSchema::new().await else {
        return Ok(());
    };
    let down = EventGridStandIn::start(Schema::EventGrid).await?;
    down.go_down();
    let with_topic = TestHost::with_destinations(
        Arc::new(schema.open().await),
        HostConfig {
            retain_delivered: None,
            ..HostConfig::default()
        },
        vec![topic(&down, "only-here")?],
    )
    .await?;
    let pruning =
        TestHost::with_destinations(Arc::new(schema.open().await), prune_at_once(), Vec::new())
            .await?;
    let store = pruning.store.clone();
    for n in 0..10 {
        let (status, body) = pruning
            .command(&format!("acc-{n}"), "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    eventually("the local handlers' deliveries", async || {
        let head = store.outbox_head().await?;
        let checkpoints = store.checkpoints().await?;
        Ok(checkpoints
            .iter()
            .any(|(name, next)| name == "@local" && *next > head))
    })
    .await?;
    // Several of the pruning host's rounds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = rows(&*store).await?;
    let head = store.outbox_head().await?;
    assert_eq!(kept.first(), Some(&1), "nothing was pruned: {kept:?}");
    assert_eq!(kept.last(), Some(&head));

    down.come_back();
    eventually("the topic's catching up", async || {
        let accepted: HashSet<String> = down.accepted_ids().into_iter().collect();
        Ok(accepted.len() >= kept.len())
    })
    .await?;
    eventually("the delivered rows to be pruned", async || {
        Ok(rows(&*store).await?.len() <= 1)
    })
    .await?;
    drop(with_topic);
    Ok(())
}
