//! Criterion micro-benchmarks, wasm vs native: one deposit on the in-memory
//! store (figure 1's command, one at a time), one instantiate + call, and
//! folding a 1,000-event stream. `cargo bench -p cqrs-wasi-bench` (after
//! `cargo xtask components`, which builds the bank component); `cargo bench
//! -p cqrs-wasi-bench -- deposit/wasm --profile-time 10` runs one of them
//! alone, for `perf record`.

use std::path::Path;
use std::sync::Arc;

use cqrs_wasi_bench::config::ACCOUNTS;
use cqrs_wasi_bench::native::{NativeBank, VERSION};
use cqrs_wasi_bench::systems::{Bank, Command, HostBank, account};
use cqrs_wasi_host::model::{EventContext, Expectation, NewEvent};
use cqrs_wasi_host::notifications::{KindSet, RaisePolicy};
use cqrs_wasi_host::store::{AppendRequest, EventStore, MemoryStore};
use cqrs_wasi_host::{Host, HostConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

fn component() -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/components/wasm32-wasip2/component/bank.wasm");
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

/// A host with the bank component (`bytes`), or without `bytes` the native
/// bank.
async fn host(store: Arc<dyn EventStore>, bytes: Option<Vec<u8>>, config: HostConfig) -> Host {
    let host = Host::builder()
        .store(store)
        .config(config)
        .build()
        .expect("a host");
    match bytes {
        Some(bytes) => host.deploy("bank", bytes).await,
        None => {
            host.deploy_native("bank", VERSION, Arc::new(NativeBank))
                .await
        }
    }
    .expect("the bank deploys");
    host
}

/// Deposits into the next account in turn, as figure 1 does at
/// concurrency 1 (the accounts opened first).
async fn deposits(bank: &dyn Bank, iterations: u64) -> std::time::Duration {
    let started = std::time::Instant::now();
    for i in 0..iterations {
        let index = (i % ACCOUNTS as u64) as usize;
        bank.run(index, Command::Deposit).await.expect("a deposit");
    }
    started.elapsed()
}

async fn opened(bank: &dyn Bank) {
    for index in 0..ACCOUNTS {
        bank.run(index, Command::Open).await.expect("an opening");
    }
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
            raise: KindSet::NONE,
        })
        .await
        .expect("the append");
}

fn benches(c: &mut Criterion) {
    let Some(bytes) = component() else { return };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");

    // The command path's host configuration in figure 1: no notifications.
    let config = HostConfig {
        raise: RaisePolicy::new(KindSet::NONE),
        ..HostConfig::default()
    };
    let wasm = HostBank(runtime.block_on(host(
        Arc::new(MemoryStore::new()),
        Some(bytes.clone()),
        config.clone(),
    )));
    let native = HostBank(runtime.block_on(host(Arc::new(MemoryStore::new()), None, config)));
    runtime.block_on(opened(&wasm));
    runtime.block_on(opened(&native));
    let mut group = c.benchmark_group("deposit");
    group.bench_function("wasm", |b| {
        b.to_async(&runtime).iter_custom(|n| deposits(&wasm, n))
    });
    group.bench_function("native", |b| {
        b.to_async(&runtime).iter_custom(|n| deposits(&native, n))
    });
    group.finish();
    drop(wasm);

    let store = Arc::new(MemoryStore::new());
    runtime.block_on(stream_of(&store, 1000));
    let config = HostConfig {
        snapshot_capacity: 0,
        ..HostConfig::default()
    };
    let wasm = runtime.block_on(host(store.clone(), Some(bytes), config.clone()));
    let native = runtime.block_on(host(store, None, config));

    let mut group = c.benchmark_group("instantiate+call");
    group.bench_function("wasm", |b| {
        b.to_async(&runtime).iter(|| async {
            wasm.project(&account(99), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.bench_function("native", |b| {
        b.to_async(&runtime).iter(|| async {
            native
                .project(&account(99), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("fold 1000 events");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("wasm", |b| {
        b.to_async(&runtime).iter(|| async {
            wasm.project(&account(0), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.bench_function("native", |b| {
        b.to_async(&runtime).iter(|| async {
            native
                .project(&account(0), "Balance", None)
                .await
                .expect("a state")
        })
    });
    group.finish();
}

criterion_group!(micro, benches);
criterion_main!(micro);
