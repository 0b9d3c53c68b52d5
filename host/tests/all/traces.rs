//! Traces across the whole path: a command sent with a W3C `traceparent`
//! is followed, in one trace, through the request, the handler call, its
//! import calls and the append, to its notification's delivery (to the
//! local handlers, and to the Event Grid stand-in, which sees the header
//! and the CloudEvents extension) and on to the commands a notification
//! handler sends, here and on a second host behind the stand-in. The spans
//! go to an OTLP/HTTP collector in this process ([`Collector`]).

use std::path::Path;
use std::sync::Arc;

use cqrs_wasi_host::notifications::{
    Auth, Destination, EventGridConfig, EventGridPublisher, EventSchema, Secret,
};
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::event_grid::{EventGridStandIn, Schema, Subscription};
use crate::support::otlp::{Collector, Span};
use crate::support::{self, Api, ServedHost, TestHost};

/// The client's span: what the commands below are sent from.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CLIENT_SPAN}-01")
}

/// A fresh random trace id.
fn trace_id() -> String {
    format!("{:032x}", fastrand::u128(1..))
}

/// POSTs `command_type` to `Bank/Account/{key}` with `traceparent`.
async fn command(
    api: &Api,
    key: &str,
    command_type: &str,
    body: &str,
    traceparent: &str,
) -> anyhow::Result<Value> {
    let response = api
        .client
        .post(format!(
            "{}/api/commands/Bank/Account/{key}/{command_type}",
            api.url
        ))
        .header("traceparent", traceparent)
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status == StatusCode::OK, "{command_type}: {status} {body}");
    Ok(body)
}

/// The trace id in the context of the events of `stream`, waiting (up to
/// 30 s) until it has `count` events.
async fn traces_of(api: &Api, stream: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = api.events(stream).await?;
        if events.len() >= count {
            return Ok(events
                .iter()
                .map(|event| {
                    event["context"]["traceparent"]
                        .as_str()
                        .map_or_else(String::new, |t| t[3..35].to_owned())
                })
                .collect());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{stream} has {} events, not {count}",
            events.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `cqrs-wasi serve` in `dir`, exporting its spans as `service` to
/// `collector`, with `components` and `extra` configuration.
async fn serve(
    dir: &Path,
    service: &str,
    collector: &Collector,
    components: &[&str],
    extra: &str,
) -> anyhow::Result<ServedHost> {
    std::fs::create_dir_all(dir)?;
    let mut config = format!(
        "[store]\nkind = \"sqlite\"\npath = \"events.db\"\n\n\
         [telemetry]\nendpoint = \"{}\"\nservice_name = \"{service}\"\n\n",
        collector.url()
    );
    for name in components {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, support::component(name))?;
        config.push_str(&format!(
            "[[components]]\nname = \"{name}\"\npath = {path:?}\n\n"
        ));
    }
    config.push_str(extra);
    std::fs::write(dir.join("host.toml"), config)?;
    let mut command = std::process::Command::new(support::BINARY);
    command
        .args(["serve", "--config", "host.toml", "--listen", "127.0.0.1:0"])
        // Export every 50 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .current_dir(dir);
    tokio::task::spawn_blocking(move || ServedHost::start(command)).await?
}

/// The spans of `service` named `name`, or whose name begins with it when
/// it ends in `*` (a request's span is named after its route, an import
/// call's after its function).
fn named<'a>(spans: &'a [Span], service: &str, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|span| {
            span.service == service
                && match name.strip_suffix('*') {
                    Some(prefix) => span.name.starts_with(prefix),
                    None => span.name == name,
                }
        })
        .collect()
}

fn has(spans: &[Span], service: &str, name: &str) -> bool {
    !named(spans, service, name).is_empty()
}

const COMMAND_REQUEST: &str = "POST /api/commands/*";

/// Whether `service` ran a command that a notification handler sent: a
/// `command` span whose parent is the `commands.send` import call, whose
/// parent is the handler's run.
fn sent_by_a_handler(spans: &[Span], service: &str) -> bool {
    let parent = |span: &Span| {
        spans
            .iter()
            .find(|other| other.service == service && other.span_id == span.parent_span_id)
    };
    named(spans, service, "command").into_iter().any(|command| {
        parent(command)
            .filter(|send| send.name == "commands.send")
            .and_then(parent)
            .is_some_and(|run| run.name == "notification.handle")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_command_to_its_notifications_and_across_hosts() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let stand_in = EventGridStandIn::start(Schema::CloudEvents).await?;
    let dir = tempfile::tempdir()?;

    // Host B: the welcome letters, fed by the stand-in's subscription.
    let b = serve(&dir.path().join("b"), "b", &collector, &["welcome"], "").await?;
    stand_in
        .subscribe(Subscription {
            endpoint: format!("{}/api/eventgrid", b.url),
            included_event_types: vec!["Bank.Account.NewEntity".into()],
            ..Subscription::default()
        })
        .await?;
    // Host A: the bank, its own welcome letters, and the stand-in as a
    // CloudEvents topic.
    let topic = format!(
        "[[topics]]\nname = \"grid\"\nendpoint = \"{}\"\nschema = \"cloudevents\"\nkey = \"{}\"\n",
        stand_in.endpoint(),
        stand_in.key()
    );
    let a = serve(
        &dir.path().join("a"),
        "a",
        &collector,
        &["bank", "welcome"],
        &topic,
    )
    .await?;

    let trace = trace_id();
    command(
        &a,
        "acc-1",
        "OpenAccount",
        r#"{"owner": "Ada"}"#,
        &traceparent(&trace),
    )
    .await?;

    let spans = collector
        .until(&trace, |spans| {
            [
                ("a", COMMAND_REQUEST),
                ("a", "command"),
                ("a", "handler.call"),
                ("a", "event-store.*"),
                ("a", "store.append"),
                ("a", "outbox.dispatch"),
                ("a", "notification.handle"),
                ("a", "eventgrid.publish"),
                ("b", "notification.handle"),
                ("b", "command"),
            ]
            .iter()
            .all(|(service, name)| has(spans, service, name))
                && sent_by_a_handler(spans, "a")
                && sent_by_a_handler(spans, "b")
        })
        .await?;
    // The request continues the client's span.
    let request = named(&spans, "a", COMMAND_REQUEST);
    assert_eq!(request.len(), 1, "{spans:#?}");
    assert_eq!(request[0].parent_span_id, CLIENT_SPAN);
    // The events record the trace, the letters' too, on both hosts.
    assert_eq!(
        traces_of(&a, "Bank/Account/acc-1", 1).await?,
        [trace.as_str()]
    );
    assert_eq!(
        traces_of(&a, "Letters/Letter/welcome-acc-1", 1).await?,
        [trace.as_str()]
    );
    assert_eq!(
        traces_of(&b, "Letters/Letter/welcome-acc-1", 1).await?,
        [trace.as_str()]
    );

    // The stand-in saw the trace in the header and in each event.
    stand_in.settle().await;
    let headers: Vec<String> = stand_in
        .requests()
        .iter()
        .filter_map(|request| request.traceparent.clone())
        .collect();
    assert!(
        headers.iter().any(|header| header[3..35] == trace),
        "no post carried the trace: {headers:?}"
    );
    for event in stand_in.accepted() {
        let extension = event["traceparent"].as_str().unwrap_or_default();
        assert_eq!(extension.get(3..35), Some(trace.as_str()), "{event}");
    }

    // A traceparent that is not one is ignored: the command runs, in a
    // trace of its own.
    let answer = command(
        &a,
        "acc-2",
        "OpenAccount",
        r#"{"owner": "Bob"}"#,
        "00-not-a-traceparent-01",
    )
    .await?;
    assert!(answer["events"].is_array(), "{answer}");
    let fresh = &traces_of(&a, "Bank/Account/acc-2", 1).await?[0];
    assert_eq!(fresh.len(), 32, "the command recorded no trace");
    assert_ne!(fresh, &trace);
    let spans = collector
        .until(fresh, |spans| has(spans, "a", COMMAND_REQUEST))
        .await?;
    assert_eq!(named(&spans, "a", COMMAND_REQUEST)[0].parent_span_id, "");
    Ok(())
}

#[tokio::test]
async fn a_host_that_exports_nothing_passes_the_trace_on_unchanged() -> anyhow::Result<()> {
    let stand_in = EventGridStandIn::start(Schema::CloudEvents).await?;
    let topic = EventGridPublisher::new(EventGridConfig::new(
        stand_in.endpoint(),
        EventSchema::CloudEvents {
            source: "/tests".into(),
        },
        Auth::Key(Secret::new(stand_in.key())),
    ))?;
    let host = TestHost::with_destinations(
        Arc::new(MemoryStore::new()),
        Default::default(),
        vec![Destination::new("grid", Arc::new(topic))],
    )
    .await?;
    host.deploy("bank").await?;
    host.deploy("welcome").await?;

    let trace = trace_id();
    let parent = traceparent(&trace);
    command(
        &host.api,
        "acc-1",
        "OpenAccount",
        r#"{"owner": "Ada"}"#,
        &parent,
    )
    .await?;

    let context = |event: &Value| event["context"]["traceparent"].clone();
    let opened = host.api.events("Bank/Account/acc-1").await?;
    assert_eq!(context(&opened[0]), parent.as_str());
    // Through the local handler, into the letter it sent.
    traces_of(&host.api, "Letters/Letter/welcome-acc-1", 1).await?;
    let letters = host.api.events("Letters/Letter/welcome-acc-1").await?;
    assert_eq!(context(&letters[0]), parent.as_str());
    // And out to the topic, header and extension.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stand_in.accepted().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let accepted = stand_in.accepted();
    assert!(!accepted.is_empty());
    for event in &accepted {
        assert_eq!(event["traceparent"], parent.as_str(), "{event}");
    }
    assert!(
        stand_in
            .requests()
            .iter()
            .all(|request| request.traceparent.as_deref() == Some(parent.as_str())),
        "{:?}",
        stand_in.requests()
    );
    Ok(())
}

#[tokio::test]
async fn the_webhook_takes_the_trace_from_the_event_or_else_from_the_post() -> anyhow::Result<()> {
    let host = TestHost::with_store(
        Arc::new(MemoryStore::new()),
        Default::default(),
        &Default::default(),
    )
    .await?;
    host.deploy("welcome").await?;
    let header = traceparent(&trace_id());
    let own = traceparent(&trace_id());
    // Two new accounts in one post, in the Event Grid schema: one event
    // with a `traceparent` of its own, one without.
    let event = |key: &str, traceparent: Option<&str>| {
        let mut event = serde_json::json!({
            "id": format!("4f7a3b1e-8c7d-5d2e-9f00-00000000000{}", key.len()),
            "eventType": "Bank.Account.NewEntity",
            "subject": format!("eventsourcing/Bank/Account/NewEntity/{key}"),
            "eventTime": "2026-12-05T10:00:00Z",
            "dataVersion": "1.0",
            "data": {"notificationKind": "NewEntity", "domainName": "Bank",
                     "entityTypeName": "Account", "instanceKey": key},
        });
        if let Some(traceparent) = traceparent {
            event["traceparent"] = traceparent.into();
        }
        event
    };
    let body = serde_json::json!([event("acc-1", Some(&own)), event("acc-22", None)]);
    let response = host
        .api
        .client
        .post(format!("{}/api/eventgrid", host.api.url))
        .header("traceparent", &header)
        .json(&body)
        .send()
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await?
    );
    let context = |events: Vec<Value>| events[0]["context"]["traceparent"].clone();
    assert_eq!(
        context(host.api.events("Letters/Letter/welcome-acc-1").await?),
        own.as_str()
    );
    assert_eq!(
        context(host.api.events("Letters/Letter/welcome-acc-22").await?),
        header.as_str()
    );
    Ok(())
}
