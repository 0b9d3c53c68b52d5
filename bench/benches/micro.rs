//! Criterion micro-benchmarks: one instantiate + call, and folding a
//! 1,000-event stream, wasm vs native. `cargo bench -p cqrs-wasi-bench`
//! (after `cargo xtask components`, which builds the bank component).

use std::path::Path;
use std::sync::Arc;

use cqrs_wasi_bench::native::NativeHost;
use cqrs_wasi_bench::systems::account;
use cqrs_wasi_host::model::{EventContext, Expectation, NewEvent};
use cqrs_wasi_host::store::{AppendRequest, EventStore, MemoryStore, Raise};
use cqrs_wasi_host::{Host, HostOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

fn component() -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/components/wasm32-wasip2/release/bank.wasm");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            eprintln!(
                "micro: no bank component at {} ({error}); run `cargo xtask components`",
                path.display()
            );
            None
        }
    }
}

async fn host(store: Arc<dyn EventStore>, bytes: Vec<u8>) -> Host {
    let host = Host::builder()
        .store(store)
        .options(HostOptions {
            snapshot_capacity: 0,
            ..HostOptions::default()
        })
        .build()
        .expect("a host");
    host.deploy("bank", bytes).await.expect("the bank deploys");
    host
}

async fn stream_of(store: &MemoryStore, length: usize) {
    let event = |event_type: &str, payload: &str| {
        NewEvent::new(
            event_type,
            RawValue::from_string(payload.to_owned()).expect("JSON"),
        )
        .expect("an event")
    };
    let mut events = vec![event("AccountOpened", r#"{"owner":"Ada"}"#)];
    events.extend((1..length).map(|_| event("MoneyDeposited", r#"{"amount":1}"#)));
    store
        .append(AppendRequest {
            stream: account(0),
            expectation: Expectation::Any,
            events,
            context: EventContext::default(),
            command: None,
            raise: Raise::NONE,
        })
        .await
        .expect("the append");
}

fn benches(c: &mut Criterion) {
    let Some(bytes) = component() else { return };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let store = Arc::new(MemoryStore::new());
    runtime.block_on(stream_of(&store, 1000));
    let host = runtime.block_on(host(store.clone(), bytes));
    let native = NativeHost::with_snapshots(store, 0);

    let mut group = c.benchmark_group("instantiate+call");
    group.bench_function("wasm", |b| {
        b.to_async(&runtime).iter(|| async {
            host.project(&account(99), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.bench_function("native", |b| {
        b.to_async(&runtime)
            .iter(|| async { native.project(&account(99), None).await.expect("a state") })
    });
    group.finish();

    let mut group = c.benchmark_group("fold 1000 events");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("wasm", |b| {
        b.to_async(&runtime).iter(|| async {
            host.project(&account(0), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.bench_function("native", |b| {
        b.to_async(&runtime)
            .iter(|| async { native.project(&account(0), None).await.expect("a state") })
    });
    group.finish();
}

criterion_group!(micro, benches);
criterion_main!(micro);
