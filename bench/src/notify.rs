//! Figure 6: notifications, from the outbox to an Event Grid topic over
//! loopback HTTP, and from an append to a local notification handler.
//!
//! The topic is a minimal stand-in: it checks the key, parses each request
//! as a JSON array as Event Grid does, and counts the events. (The protocol
//! itself is tested against the full stand-in in `host/tests/all/`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cqrs_wasi_host::model::{EventContext, Expectation, NewEvent, NotificationKind, StreamId};
use cqrs_wasi_host::notifications::{
    Auth, Destination, Dispatcher, EventGridConfig, EventGridPublisher, EventSchema, Notification,
    Secret,
};
use cqrs_wasi_host::store::{AppendRequest, EventStore, MemoryStore};
use cqrs_wasi_host::{CommandRequest, Host, HostConfig};
use hdrhistogram::Histogram;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::report::{Measure, Row};

const KEY: &str = "YmVuY2gta2V5";

/// A topic that counts what it accepts.
struct Topic {
    url: String,
    accepted: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Topic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept(
    State(accepted): State<Arc<AtomicU64>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if headers.get("aeg-sas-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
        Ok(events) => {
            accepted.fetch_add(events.len() as u64, Ordering::Relaxed);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn topic() -> anyhow::Result<Topic> {
    let accepted = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new()
        .route("/api/events", axum::routing::post(accept))
        .layer(axum::extract::DefaultBodyLimit::max(2 << 20))
        .with_state(accepted.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Topic {
        url,
        accepted,
        server,
    })
}

fn publisher(topic: &Topic) -> anyhow::Result<EventGridPublisher> {
    Ok(EventGridPublisher::new(EventGridConfig::new(
        &topic.url,
        EventSchema::EventGrid,
        Auth::Key(Secret::new(KEY)),
    ))?)
}

/// An in-memory store whose outbox holds `count` event-appended rows, over
/// 100 streams.
async fn filled_outbox(count: usize) -> anyhow::Result<Arc<MemoryStore>> {
    let store = Arc::new(MemoryStore::new());
    let payload = RawValue::from_string(r#"{"amount":1}"#.to_owned())?;
    let per_stream = count.div_ceil(100);
    for account in 0..100 {
        let events = (0..per_stream)
            .map(|_| NewEvent::new("MoneyDeposited", payload.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        store
            .append(AppendRequest {
                stream: StreamId::new("Bank", "Account", format!("acc-{account:03}"))?,
                expectation: Expectation::Any,
                events,
                context: EventContext::default(),
                command: None,
                raise: [NotificationKind::EventAppended].into_iter().collect(),
            })
            .await?;
    }
    Ok(store)
}

/// Figure 6.
pub async fn notifications(config: &Config) -> anyhow::Result<Vec<Row>> {
    Ok(vec![dispatch(config).await?, local_handler(config).await?])
}

/// Outbox → topic: the dispatcher against publishing the same
/// notifications straight from memory, batch after batch.
async fn dispatch(config: &Config) -> anyhow::Result<Row> {
    let count = if config.quick { 2_000 } else { 100_000 };
    let store = filled_outbox(count).await?;
    let total = store.read_all(1, usize::MAX).await?.len() as u64;

    // Baseline: the publisher alone, the notifications already built.
    let notifications: Vec<Notification> = store
        .read_all(1, usize::MAX)
        .await?
        .iter()
        .map(Notification::event_appended)
        .collect::<Result<_, _>>()?;
    let direct = topic().await?;
    let direct_publisher = publisher(&direct)?;
    let started = Instant::now();
    for batch in notifications.chunks(512) {
        let report = direct_publisher.publish(batch).await;
        ensure!(report.all_delivered(), "the topic refused a batch");
    }
    let direct_seconds = started.elapsed().as_secs_f64();
    ensure!(direct.accepted.load(Ordering::Relaxed) == total);

    // Subject: the dispatcher drains the outbox (reads rows, builds each
    // notification, publishes, moves its checkpoint).
    let drained = topic().await?;
    let started = Instant::now();
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        vec![Destination::new("grid", Arc::new(publisher(&drained)?))],
    ));
    dispatcher.start();
    let deadline = started + Duration::from_secs(300);
    while drained.accepted.load(Ordering::Relaxed) < total {
        ensure!(Instant::now() < deadline, "the dispatcher stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let dispatch_seconds = started.elapsed().as_secs_f64();
    let rate = |seconds: f64| total as f64 / seconds;
    let dispatched = rate(dispatch_seconds);
    Ok(Row::measured(
        6,
        "Notification dispatch, outbox → Event Grid stand-in (loopback HTTP)",
        Measure::value("dispatcher, in-memory outbox", dispatched, "notifications/s"),
        Measure::value(
            "the publisher alone, notifications prebuilt",
            rate(direct_seconds),
            "notifications/s",
        ),
    )
    .target("≥ 20,000 notifications/s", dispatched >= 20_000.0)
    .note(format!(
        "{total} event-appended notifications over 100 streams, batches of 512 rows, Event Grid schema"
    )))
}

/// Append → local handler: accounts opened at 1,000 commands/s; the welcome
/// handler answers each new account with a letter. The latency is from the
/// account's first event to the letter's, both stamped by the store.
async fn local_handler(config: &Config) -> anyhow::Result<Row> {
    let (rate, seconds) = if config.quick { (200, 1) } else { (1_000, 5) };
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .config(HostConfig::default())
        .build()?;
    host.deploy("bank", config.component.clone()).await?;
    host.deploy("welcome", config.welcome.clone()).await?;

    let commands = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut command_latency = histogram();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in 0..commands {
        // Paced: command n starts at n / rate seconds.
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let host = host.clone();
        tasks.spawn(async move {
            let account = StreamId::new("Bank", "Account", format!("open-{n:06}"))?;
            let sent = Instant::now();
            host.execute(CommandRequest::new(
                account,
                "OpenAccount",
                r#"{"owner": "Ada"}"#,
            )?)
            .await?;
            anyhow::Ok(sent.elapsed())
        });
    }
    while let Some(done) = tasks.join_next().await {
        let elapsed = done??;
        command_latency.record(elapsed.as_micros().max(1) as u64)?;
    }
    let achieved = commands as f64 / started.elapsed().as_secs_f64();

    let mut handler_latency = histogram();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..commands {
        let account = StreamId::new("Bank", "Account", format!("open-{n:06}"))?;
        let letter = StreamId::new("Letters", "Letter", format!("welcome-open-{n:06}"))?;
        let opened = host.read_stream(&account, 1, 1).await?;
        let opened = opened.first().context("the account's first event")?;
        let written = loop {
            if let Some(event) = host.read_stream(&letter, 1, 1).await?.into_iter().next() {
                break event;
            }
            ensure!(Instant::now() < deadline, "no welcome letter for {account}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let micros = (written.written_at - opened.written_at).whole_microseconds();
        handler_latency.record(u64::try_from(micros).unwrap_or(0).max(1))?;
    }
    let p99_ms = handler_latency.value_at_quantile(0.99) as f64 / 1000.0;
    let measure = |label: &str, histogram: &Histogram<u64>| Measure {
        label: label.to_owned(),
        value: histogram.value_at_quantile(0.99) as f64,
        unit: "µs p99".to_owned(),
        p50_us: Some(histogram.value_at_quantile(0.5) as f64),
        p99_us: Some(histogram.value_at_quantile(0.99) as f64),
        failed: 0,
    };
    Ok(Row::measured(
        6,
        "Append → local handler latency at 1,000 commands/s",
        measure("account opened → welcome letter appended", &handler_latency),
        measure("the command itself (OpenAccount, client-side)", &command_latency),
    )
    .target("p99 ≤ 50 ms", p99_ms <= 50.0)
    .note(format!(
        "{commands} accounts opened at {achieved:.0} commands/s on the in-memory store, every kind of notification raised (the default); the welcome handler sends a command per new account"
    )))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant, valid bounds")
}
