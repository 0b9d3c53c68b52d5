//! A misbehaving or hostile component cannot hurt the host, its data, or
//! other domains: each fault fails only its own call with a clear error,
//! appends nothing, and the host keeps serving.

use std::sync::Arc;
use std::time::Duration;

use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::Grants;
use cqrs_wasi_host::RuntimeConfig;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{KindSet, RaisePolicy};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostConfig};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{self, TestHost};

async fn sandboxed(runtime: RuntimeConfig) -> anyhow::Result<TestHost> {
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        HostConfig {
            max_events_per_command: 10,
            max_event_bytes: 64 << 10,
            ..HostConfig::default()
        },
        runtime,
        &ApiConfig::default(),
    )
    .await?;
    host.deploy("faulty").await?;
    host.deploy("garbage").await?;
    host.command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    Ok(host)
}

/// Memory small enough that `Allocate` runs out at once. (A looping guest
/// and its deadline have tests of their own, so that a short deadline
/// never applies to the calls around it.)
fn limits() -> RuntimeConfig {
    RuntimeConfig {
        max_memory_bytes: 16 << 20,
        ..RuntimeConfig::default()
    }
}

#[tokio::test]
async fn each_misbehaving_component_fails_only_its_own_call() -> anyhow::Result<()> {
    let host = sandboxed(limits()).await?;
    let cases = [
        (
            "Test/Faulty/f/Panic",
            "{}",
            "guest_fault",
            "the handler panicked on purpose",
        ),
        (
            "Test/Faulty/f/Allocate",
            "{}",
            "guest_fault",
            "memory allocation of 1048576 bytes failed",
        ),
        (
            "Test/Faulty/f/Huge",
            r#"{"bytes": 70000}"#,
            "invalid_output",
            "the limit is 65536",
        ),
        (
            "Test/Faulty/f/Many",
            r#"{"count": 11}"#,
            "invalid_output",
            "at most 10",
        ),
        (
            "Test/Faulty/f/Snoop",
            r#"{"instance_key": "acc"}"#,
            "handler_failed",
            "may not read domain Bank",
        ),
        (
            "Test/Garbage/g/NotJson",
            "{}",
            "invalid_output",
            "an event payload is not interoperable JSON",
        ),
        (
            "Test/Garbage/g/Reserved",
            "{}",
            "invalid_output",
            "reserved for notifications",
        ),
    ];
    for (path, body, code, says) in cases {
        let (status, answer) = host.post(&format!("/api/commands/{path}"), body).await?;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {answer}"
        );
        assert_eq!(answer["code"], code, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{path}: {message}");

        let (status, deposit) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(status, StatusCode::OK, "after {path}: {deposit}");
    }
    let (status, answer) = host.get("/api/projections/Test/Garbage/g/Junk").await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert_eq!(answer["code"], "invalid_output");

    let appended = host.all_events().await?;
    assert!(
        appended.iter().all(|e| e.stream.domain() == "Bank"),
        "no misbehaving call appended anything"
    );
    assert_eq!(host.balance("acc").await?["balance"], 7);
    // The same commands within the limits succeed.
    for (path, body) in [
        ("Test/Faulty/f/Huge", r#"{"bytes": 1000}"#),
        ("Test/Faulty/f/Many", r#"{"count": 10}"#),
    ] {
        let (status, answer) = host.post(&format!("/api/commands/{path}"), body).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    Ok(())
}

#[tokio::test]
async fn a_guest_sees_no_filesystem_network_environment_or_arguments() -> anyhow::Result<()> {
    let host = sandboxed(RuntimeConfig::default()).await?;
    let (status, answer) = host.post("/api/commands/Test/Faulty/p/Probe", "{}").await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, page) = host.get("/api/streams/Test/Faulty/p/events").await?;
    let probed: &Value = &page["events"][0]["payload"];
    assert_eq!(probed["env_vars"], 0, "{probed}");
    assert_eq!(probed["args"], 0, "{probed}");
    assert!(
        probed["filesystem"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "{probed}"
    );
    assert!(
        probed["network"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "{probed}"
    );
    assert_eq!(probed["random_works"], true, "{probed}");
    assert_eq!(probed["clock_works"], true, "{probed}");
    Ok(())
}

#[tokio::test]
async fn granted_domains_can_be_read_and_ungranted_appends_are_refused_at_deploy()
-> anyhow::Result<()> {
    let store = Arc::new(MemoryStore::new());
    let host = cqrs_wasi_host::Host::builder()
        .store(store)
        .grant(
            "faulty",
            Grants {
                read: vec!["Test".into(), "Bank".into()],
                append: vec!["Test".into()],
                ..Grants::default()
            },
        )
        .grant(
            "garbage",
            Grants {
                read: vec!["*".into()],
                append: vec!["Elsewhere".into()],
                ..Grants::default()
            },
        )
        .build()?;
    host.deploy("bank", support::component("bank")).await?;
    host.deploy("faulty", support::component("faulty")).await?;
    let account = cqrs_wasi_host::model::StreamId::new("Bank", "Account", "acc")?;
    host.execute(cqrs_wasi_host::CommandRequest::new(
        account,
        "OpenAccount",
        r#"{"owner": "Ada"}"#,
    )?)
    .await?;
    let snoop = cqrs_wasi_host::model::StreamId::new("Test", "Faulty", "s")?;
    let outcome = host
        .execute(cqrs_wasi_host::CommandRequest::new(
            snoop.clone(),
            "Snoop",
            r#"{"instance_key": "acc"}"#,
        )?)
        .await?;
    assert_eq!(outcome.events.len(), 1);
    let events = host.read_stream(&snoop, 1, 10).await?;
    assert_eq!(events[0].payload.get(), r#"{"events":1}"#);

    let refused = host
        .deploy("garbage", support::component("garbage"))
        .await
        .expect_err("garbage may not append to Test");
    assert_eq!(refused.code(), "not_granted");
    assert!(
        refused
            .to_string()
            .contains("may not append to domain Test"),
        "{refused}"
    );
    assert!(host.components().iter().all(|c| c.name != "garbage"));
    Ok(())
}

/// A read grant of `"*"` reads every domain; the domains a component
/// declares are all it reads without one.
#[tokio::test]
async fn a_read_grant_of_star_reads_every_domain() -> anyhow::Result<()> {
    let snoop = || {
        CommandRequest::new(
            StreamId::new("Test", "Faulty", "s")?,
            "Snoop",
            r#"{"instance_key": "acc"}"#,
        )
        .map_err(anyhow::Error::from)
    };
    // The second host loads the components the first compiled.
    let cache = tempfile::tempdir()?;
    for (grants, reads) in [
        (
            Some(Grants {
                read: vec!["*".into()],
                append: vec!["Test".into()],
                ..Grants::default()
            }),
            true,
        ),
        (None, false),
    ] {
        let mut builder =
            Host::builder()
                .store(Arc::new(MemoryStore::new()))
                .runtime(RuntimeConfig {
                    cache_dir: Some(cache.path().to_owned()),
                    ..RuntimeConfig::default()
                });
        if let Some(grants) = grants {
            builder = builder.grant("faulty", grants);
        }
        let host = builder.build()?;
        host.deploy("bank", support::component("bank")).await?;
        host.deploy("faulty", support::component("faulty")).await?;
        host.execute(CommandRequest::new(
            StreamId::new("Bank", "Account", "acc")?,
            "OpenAccount",
            r#"{"owner": "Ada"}"#,
        )?)
        .await?;
        let snooped = host.execute(snoop()?).await;
        if reads {
            let outcome = snooped?;
            let events = host.read_stream(&outcome.stream, 1, 10).await?;
            assert_eq!(events[0].payload.get(), r#"{"events":1}"#);
        } else {
            let error = snooped.expect_err("Bank is not faulty's to read");
            assert!(
                error.to_string().contains("may not read domain Bank"),
                "{error}"
            );
        }
    }
    Ok(())
}

/// A guest that never returns is stopped at its deadline, and the call
/// fails alone: its slot comes back, so that the next call runs (on a host
/// with one slot), to be stopped the same way. The host has no other
/// component and runs no other call, so that the short deadline decides
/// nothing else.
#[tokio::test]
async fn a_looping_guest_is_stopped_at_its_deadline_and_frees_its_slot() -> anyhow::Result<()> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .runtime(RuntimeConfig {
            call_timeout: Duration::from_millis(500),
            max_concurrent_calls: 1,
            ..RuntimeConfig::default()
        })
        .build()?;
    host.deploy("faulty", support::component("faulty")).await?;
    let stream = StreamId::new("Test", "Faulty", "f")?;
    for _ in 0..2 {
        let error = host
            .execute(CommandRequest::new(stream.clone(), "Loop", "{}")?)
            .await
            .expect_err("a loop never returns");
        assert_eq!(error.code(), "deadline_exceeded", "{error}");
        assert!(
            error.to_string().contains("ran past its 500ms deadline"),
            "{error}"
        );
    }
    assert!(host.read_stream(&stream, 1, 10).await?.is_empty());
    Ok(())
}

/// Guests run on async wasmtime and yield at every epoch tick, so a guest
/// that loops holds no thread: on a runtime of one thread, which also
/// serves the API, other calls go on while it loops.
#[test]
fn a_looping_guest_leaves_its_thread_to_other_calls() -> anyhow::Result<()> {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let run = async {
            let host = Arc::new(
                TestHost::build(
                    Arc::new(MemoryStore::new()),
                    // No notifications: no projection runs in the
                    // background, so that the instance counted below is
                    // the loop's.
                    HostConfig {
                        raise: RaisePolicy::new(KindSet::NONE),
                        ..HostConfig::default()
                    },
                    RuntimeConfig {
                        call_timeout: Duration::from_secs(300),
                        ..RuntimeConfig::default()
                    },
                    &ApiConfig::default(),
                )
                .await?,
            );
            host.deploy("faulty").await?;
            let (status, body) = host
                .command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "{body}");
            let before = host.host.calls_started();
            let looping = tokio::spawn({
                let host = host.clone();
                async move { host.post("/api/commands/Test/Faulty/f/Loop", "{}").await }
            });
            support::until_a_call_starts(&host.host, before).await?;
            // Slow, but it goes: the loop takes the thread a tick at a time.
            let (status, body) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
            anyhow::ensure!(status == StatusCode::OK, "{body}");
            anyhow::ensure!(!looping.is_finished(), "the loop still runs");
            looping.abort();
            anyhow::Ok(())
        };
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run));
        let _ = done.send(outcome);
    });
    // Were the loop to keep the thread, nothing else would run on it, this
    // test's own checks included: fail then, rather than hang.
    outcome
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| anyhow::anyhow!("the runtime's only thread is stuck"))?
}

/// Every call slot taken by a deposit held at a gate: another call waits
/// for a slot, then is turned away; once the gate opens, the host serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_pool_answers_503_with_retry_after_then_serves_again() -> anyhow::Result<()> {
    let host = Arc::new(
        TestHost::build(
            Arc::new(MemoryStore::new()),
            // No notifications: no projection runs in the background, so
            // that each instance counted below is a held deposit's.
            HostConfig {
                raise: RaisePolicy::new(KindSet::NONE),
                ..HostConfig::default()
            },
            RuntimeConfig {
                max_concurrent_calls: 2,
                queue_timeout: Duration::from_millis(200),
                call_timeout: Duration::from_secs(300),
                ..RuntimeConfig::default()
            },
            &ApiConfig::default(),
        )
        .await?,
    );
    host.deploy("gated").await?;
    let (status, body) = host
        .command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut held = Vec::new();
    for i in 0..2 {
        let before = host.host.calls_started();
        held.push(tokio::spawn({
            let host = host.clone();
            async move {
                host.post(
                    &format!("/api/commands/Test/Gated/held-{i}/HeldDeposit"),
                    r#"{"amount": 1, "gate": "pool"}"#,
                )
                .await
            }
        }));
        support::until_a_call_starts(&host.host, before).await?;
    }
    let response = host
        .client
        .post(format!(
            "{}/api/commands/Bank/Account/acc/Deposit",
            host.url
        ))
        .body(r#"{"amount": 1}"#)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "busy", "{body}");

    support::open_gate(host.store.as_ref(), "pool").await?;
    for held in held {
        let (status, body) = held.await??;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for _ in 0..3 {
        let (status, body) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(host.balance("acc").await?["balance"], 3);
    Ok(())
}
