//! The local notification handlers as a destination, run concurrently:
//! each stream's notifications reach each handler in sequence order, while
//! other streams and other handlers go on; a failing handler is retried
//! and its notification dead-lettered, holding back only the later
//! notifications of its stream for itself.
//!
//! The `relay` component's two handlers note each tick's sequence in a log
//! stream per (handler, ticker), so the logs show the order each handler
//! took each stream's notifications in.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::RetryPolicy;
use cqrs_wasi_host::store::{EventStore, SqliteConfig, SqliteStore};
use cqrs_wasi_host::{CommandRequest, HostConfig};
use serde_json::{Value, json};

use crate::support::{self, TestHost};

const HANDLERS: [&str; 2] = ["relay-a", "relay-b"];

async fn relay_host(dir: &tempfile::TempDir, config: HostConfig) -> anyhow::Result<TestHost> {
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(
        dir.path().join("events.db"),
        SqliteConfig::default(),
    )?);
    let host = TestHost::with_store(store, config, &Default::default()).await?;
    host.deploy("relay").await?;
    Ok(host)
}

async fn tick(host: &TestHost, ticker: &str, payload: Value) -> anyhow::Result<()> {
    let stream = StreamId::new("Test", "Ticker", ticker)?;
    host.host
        .execute(CommandRequest::new(stream, "Tick", &payload.to_string())?)
        .await?;
    Ok(())
}

/// The sequences `handler` noted for `ticker`, in the order it noted them.
async fn log(host: &TestHost, handler: &str, ticker: &str) -> anyhow::Result<Vec<u64>> {
    let stream = StreamId::new("Test", "Log", format!("{handler}-{ticker}"))?;
    let events = host.host.read_stream(&stream, 1, 10_000).await?;
    events
        .iter()
        .map(|event| {
            let noted: Value = serde_json::from_str(event.payload.get())?;
            noted["sequence"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("no sequence in {noted}"))
        })
        .collect()
}

/// Waits until `done` holds, for at most 30 s.
async fn eventually<F: AsyncFnMut() -> anyhow::Result<bool>>(
    what: &str,
    mut done: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Ticks of eight streams, sent from concurrent clients, reach both
/// handlers stream by stream in sequence order; meanwhile a ninth stream,
/// whose first tick holds its handlers at a gate, holds back its own later
/// ticks and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_stream_reaches_each_handler_in_order_and_a_slow_one_holds_back_only_itself()
-> anyhow::Result<()> {
    const TICKERS: usize = 8;
    const TICKS: u64 = 25;
    let dir = tempfile::tempdir()?;
    let host = Arc::new(relay_host(&dir, HostConfig::default()).await?);
    tick(&host, "slow", json!({"gate": "slow"})).await?;
    for _ in 0..3 {
        tick(&host, "slow", json!({})).await?;
    }
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..TICKERS {
        let host = host.clone();
        clients.spawn(async move {
            for _ in 0..TICKS {
                tick(&host, &format!("t{n}"), json!({})).await?;
            }
            anyhow::Ok(())
        });
    }
    for client in clients.join_all().await {
        client?;
    }

    eventually("every fast stream's ticks in both logs", async || {
        for n in 0..TICKERS {
            for handler in HANDLERS {
                if log(&host, handler, &format!("t{n}")).await?.len() < TICKS as usize {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
    .await?;
    for handler in HANDLERS {
        assert_eq!(
            log(&host, handler, "slow").await?,
            [] as [u64; 0],
            "{handler} went past the held tick of its stream"
        );
    }
    support::open_gate(host.store.as_ref(), "slow").await?;
    eventually("the slow stream's ticks in both logs", async || {
        for handler in HANDLERS {
            if log(&host, handler, "slow").await?.len() < 4 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;

    for handler in HANDLERS {
        assert_eq!(
            log(&host, handler, "slow").await?,
            [1, 2, 3, 4],
            "{handler}"
        );
        for n in 0..TICKERS {
            let ticker = format!("t{n}");
            assert_eq!(
                log(&host, handler, &ticker).await?,
                (1..=TICKS).collect::<Vec<_>>(),
                "{handler} took {ticker}'s ticks out of order"
            );
        }
    }
    assert!(host.host.dead_letters().await?.is_empty());
    Ok(())
}

/// A handler that fails on a tick is retried as `handler_retry` says, then
/// the tick is a dead letter with that handler's error; the later ticks of
/// its stream wait for it (for that handler only), and then go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_handler_is_retried_then_dead_lettered_holding_back_only_its_stream()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let attempts = 4;
    let config = HostConfig {
        handler_retry: RetryPolicy {
            max_attempts: NonZeroU32::new(attempts).expect("nonzero"),
            // Long enough to see what the retries hold back.
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_millis(200),
        },
        ..HostConfig::default()
    };
    let host = relay_host(&dir, config).await?;
    tick(&host, "bad", json!({"fail": "relay-a"})).await?;
    tick(&host, "bad", json!({})).await?;
    tick(&host, "good", json!({})).await?;

    // While relay-a retries bad's first tick, relay-b has both of bad's
    // ticks, and good's tick reaches both.
    eventually(
        "the ticks relay-a's failure does not hold back",
        async || {
            Ok(log(&host, "relay-b", "bad").await?.len() == 2
                && log(&host, "relay-a", "good").await?.len() == 1
                && log(&host, "relay-b", "good").await?.len() == 1)
        },
    )
    .await?;
    assert_eq!(
        log(&host, "relay-a", "bad").await?,
        [] as [u64; 0],
        "relay-a went past the tick it is retrying"
    );

    eventually("the dead letter", async || {
        Ok(!host.host.dead_letters().await?.is_empty())
    })
    .await?;
    let letters = host.host.dead_letters().await?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.destination, "@local");
    assert_eq!(letter.attempts, attempts);
    assert!(
        letter.reason.starts_with("relay/relay-a: ")
            && letter.reason.contains("relay-a fails on tick 1 of bad")
            && !letter.reason.contains("relay-b"),
        "{}",
        letter.reason
    );
    // Then bad's second tick reaches relay-a.
    eventually("relay-a's log of bad", async || {
        Ok(log(&host, "relay-a", "bad").await? == [2])
    })
    .await?;
    assert_eq!(log(&host, "relay-b", "bad").await?, [1, 2]);
    Ok(())
}
