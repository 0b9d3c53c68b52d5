//! What a fold is given: every event reaches a projection with what it was
//! stored with, however the host cuts a stream into batches.

use std::sync::Arc;

use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostConfig};
use serde_json::{Value, json};

use crate::support;

#[tokio::test]
async fn a_fold_sees_each_event_with_its_own_stream_and_context() -> anyhow::Result<()> {
    // Batches of four cut through the runs of events that share a command's
    // context, and without snapshots every query folds from the first event.
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .config(HostConfig {
            projection_batch: 4,
            snapshot_capacity: 0,
            ..HostConfig::default()
        })
        .build()?;
    host.deploy("trail", support::component("trail")).await?;
    let stream = StreamId::new("Test", "Trail", "t-1")?;
    for (n, count) in [3, 1, 0, 5, 2].into_iter().enumerate() {
        let mut request = CommandRequest::new(
            stream.clone(),
            "Mark",
            &json!({ "count": count }).to_string(),
        )?;
        request.context.correlation_id = Some(format!("flow-{n}"));
        request.context.who = (n % 2 == 0).then(|| format!("user-{n}"));
        host.execute(request).await?;
    }

    let stored = host.read_stream(&stream, 1, 100).await?;
    assert_eq!(stored.len(), 11);
    let expected: Vec<Value> = stored
        .iter()
        .map(|event| {
            let payload: Value = serde_json::from_str(event.payload.get())?;
            Ok(json!({
                "index": payload["index"],
                "stream": "Test/Trail/t-1",
                "sequence": event.sequence,
                "position": event.position,
                "eventId": event.event_id.to_string(),
                "writtenAt": event.written_at.unix_timestamp_nanos() / 1_000,
                "correlationId": event.context.correlation_id,
                "causationId": event.context.causation_id,
                "who": event.context.who,
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let folded = host.project(&stream, "Trail", None).await?;
    let seen: Vec<Value> = serde_json::from_str(folded.state.get())?;
    assert_eq!(seen, expected);
    // Each command's events carry its own context: four commands appended.
    let causes: Vec<&Value> = expected.iter().map(|e| &e["causationId"]).collect();
    assert_eq!(
        causes
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        4
    );
    Ok(())
}
