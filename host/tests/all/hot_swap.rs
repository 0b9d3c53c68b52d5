//! Deploying new versions while the host serves: atomic swaps, refused
//! uploads, rollback, restarts from the compiled-code cache, and the watched
//! components directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_wasi_host::api::ApiConfig;
use cqrs_wasi_host::runtime::{RuntimeConfig, digest_of};
use cqrs_wasi_host::secret::Secret;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{Host, HostOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestHost, component, variant};

const TOKEN: &str = "test-admin-token";

async fn admin_host(
    cache: &std::path::Path,
    max_component_bytes: usize,
) -> anyhow::Result<TestHost> {
    TestHost::build(
        Arc::new(MemoryStore::new()),
        HostOptions::default(),
        RuntimeConfig {
            cache_dir: Some(cache.to_owned()),
            ..RuntimeConfig::default()
        },
        &ApiConfig {
            admin_token: Some(Secret::new(TOKEN)),
            max_component_bytes,
            ..ApiConfig::default()
        },
    )
    .await
}

impl TestHost {
    async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .client
            .put(format!("{}/admin/components/{name}", self.url))
            .body(bytes);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        Ok((response.status(), response.json().await?))
    }

    async fn live_digest(&self, name: &str) -> Option<String> {
        self.host
            .components()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.digest)
    }
}

/// One call of the load: when it was sent and answered, and the events it
/// appended.
struct Call {
    sent: Instant,
    answered: Instant,
    event_ids: Vec<String>,
}

/// One swap: when the deploy was sent and answered, and the digest it made
/// live. The version was live from some moment in between until some
/// moment within the next swap.
struct Swap {
    sent: Instant,
    answered: Instant,
    digest: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_fifty_times_under_load_fails_no_call() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let host = Arc::new(admin_host(cache.path(), 64 << 20).await?);
    let versions = [
        variant(&component("bank"), "a"),
        variant(&component("bank"), "b"),
    ];
    let mut swaps = vec![Swap {
        sent: Instant::now(),
        answered: Instant::now(),
        digest: host.live_digest("bank").await.expect("bank is live"),
    }];

    const CLIENTS: usize = 16;
    for client in 0..CLIENTS {
        let (status, body) = host
            .command(
                &format!("load-{client}"),
                "OpenAccount",
                r#"{"owner": "Ada"}"#,
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "{body}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (host, stop) = (host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match host
                        .command(&format!("load-{client}"), "Deposit", r#"{"amount": 1}"#)
                        .await
                    {
                        Ok((StatusCode::OK, body)) => calls.push(Call {
                            sent,
                            answered: Instant::now(),
                            event_ids: body["events"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|e| e["eventId"].as_str().map(str::to_owned))
                                .collect(),
                        }),
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (calls, failures)
            })
        })
        .collect();

    for i in 0..50 {
        let sent = Instant::now();
        let (status, body) = host
            .upload("bank", versions[i % 2].clone(), Some(TOKEN))
            .await?;
        assert_eq!(status, StatusCode::OK, "deploy {i}: {body}");
        swaps.push(Swap {
            sent,
            answered: Instant::now(),
            digest: body["digest"].as_str().unwrap_or_default().to_owned(),
        });
    }
    stop.store(true, Ordering::Relaxed);

    let mut calls = Vec::new();
    for client in clients {
        let (mut done, failures) = client.await?;
        assert!(
            failures.is_empty(),
            "failed calls during swaps: {failures:?}"
        );
        calls.append(&mut done);
    }
    assert!(
        calls.len() > 50,
        "the load ran through the swaps ({} calls)",
        calls.len()
    );

    let digests_by_event: std::collections::HashMap<String, String> = host
        .all_events()
        .await?
        .into_iter()
        .map(|e| {
            (
                e.event_id.to_string(),
                e.context.handler_version.unwrap_or_default(),
            )
        })
        .collect();
    for call in &calls {
        for event_id in &call.event_ids {
            let digest = &digests_by_event[event_id];
            let live_during_call = swaps.iter().enumerate().any(|(i, swap)| {
                let until = swaps.get(i + 1).map(|next| next.answered);
                &swap.digest == digest
                    && swap.sent <= call.answered
                    && until.is_none_or(|until| call.sent <= until)
            });
            assert!(
                live_during_call,
                "event {event_id} was handled by {digest}, not live during its call"
            );
        }
    }
    assert_eq!(
        host.host.compilations(),
        3,
        "three versions compiled, every other swap came from the cache"
    );
    Ok(())
}

#[tokio::test]
async fn bad_uploads_are_refused_with_their_reason_and_the_live_version_keeps_serving()
-> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let host = admin_host(cache.path(), 4 << 20).await?;
    let live = host.live_digest("bank").await;
    host.command("acc", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;

    let bank = component("bank");
    struct Upload {
        what: &'static str,
        name: &'static str,
        bytes: Vec<u8>,
        token: Option<&'static str>,
        status: u16,
        code: &'static str,
        says: &'static str,
    }
    let upload = |what, name, bytes, token, status, code, says| Upload {
        what,
        name,
        bytes,
        token,
        status,
        code,
        says,
    };
    let cases = [
        upload(
            "no token",
            "bank",
            bank.clone(),
            None,
            401,
            "unauthorized",
            "Bearer",
        ),
        upload(
            "wrong token",
            "bank",
            bank.clone(),
            Some("guess"),
            401,
            "unauthorized",
            "wrong",
        ),
        upload(
            "not wasm",
            "bank",
            b"hello".to_vec(),
            Some(TOKEN),
            400,
            "invalid_component",
            "not a valid WebAssembly component",
        ),
        upload(
            "core module",
            "bank",
            b"\0asm\x01\0\0\0".to_vec(),
            Some(TOKEN),
            400,
            "invalid_component",
            "not a valid WebAssembly component",
        ),
        upload(
            "no handler exports",
            "bank",
            component("no-handler"),
            Some(TOKEN),
            400,
            "invalid_component",
            "exports none of",
        ),
        upload(
            "unsatisfiable import",
            "bank",
            component("odd-import"),
            Some(TOKEN),
            400,
            "invalid_component",
            "imports what the host cannot supply",
        ),
        upload(
            "claims bank's commands",
            "bank2",
            bank.clone(),
            Some(TOKEN),
            409,
            "route_conflict",
            "already handled by component bank",
        ),
        upload(
            "bad name",
            "bank%2Fx",
            bank.clone(),
            Some(TOKEN),
            400,
            "invalid_name",
            "component name",
        ),
        upload(
            "too large",
            "bank",
            vec![0; 5 << 20],
            Some(TOKEN),
            413,
            "payload_too_large",
            "limit",
        ),
    ];
    for case in cases {
        let what = case.what;
        let (got, body) = host.upload(case.name, case.bytes, case.token).await?;
        assert_eq!(got.as_u16(), case.status, "{what}: {body}");
        assert_eq!(body["code"], case.code, "{what}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(case.says), "{what}: {message}");
        assert_eq!(
            host.live_digest("bank").await,
            live,
            "{what}: the live version is unchanged"
        );
        let (status, body) = host.command("acc", "Deposit", r#"{"amount": 1}"#).await?;
        assert_eq!(
            status,
            StatusCode::OK,
            "{what}: the host keeps serving: {body}"
        );
    }
    assert_eq!(host.host.components().len(), 1);
    Ok(())
}

#[tokio::test]
async fn rollback_restores_the_previous_digest() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let host = admin_host(cache.path(), 64 << 20).await?;
    let first = host.live_digest("bank").await.expect("live");
    let (_, second) = host
        .upload("bank", variant(&component("bank"), "2"), Some(TOKEN))
        .await?;
    let second = second["digest"].as_str().expect("digest").to_owned();
    assert_ne!(first, second);

    let rollback = |body: Value| {
        host.client
            .post(format!("{}/admin/components/bank/rollback", host.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let answer: Value = rollback(json!({})).await?.json().await?;
    assert_eq!(answer["digest"], first.as_str());
    assert_eq!(
        host.live_digest("bank").await.as_deref(),
        Some(first.as_str())
    );
    let answer: Value = rollback(json!({ "digest": second })).await?.json().await?;
    assert_eq!(answer["digest"], second.as_str());
    let versions = answer["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert!(
        versions
            .iter()
            .all(|v| v["live"] == json!(v["digest"] == json!(second)))
    );

    let response = rollback(json!({ "digest": "sha256:00" })).await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "unknown_version");
    assert_eq!(
        host.live_digest("bank").await.as_deref(),
        Some(second.as_str())
    );
    Ok(())
}

fn durable_host(state: &std::path::Path) -> anyhow::Result<Host> {
    Ok(Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .runtime(RuntimeConfig {
            cache_dir: Some(state.join("cache")),
            ..RuntimeConfig::default()
        })
        .repository(state.join("components"))
        .build()?)
}

#[tokio::test]
async fn a_restart_restores_the_live_versions_from_the_cache_without_compiling()
-> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let (a, b) = (
        variant(&component("bank"), "a"),
        variant(&component("bank"), "b"),
    );
    let before = durable_host(state.path())?;
    before.deploy("bank", a.clone()).await?;
    before.deploy("bank", b.clone()).await?;
    before.rollback("bank", None).await?;
    assert_eq!(before.compilations(), 2);
    drop(before);

    let after = durable_host(state.path())?;
    let restored = after.restore().await?;
    assert_eq!(
        after.compilations(),
        0,
        "loaded from the cache, nothing compiled"
    );
    assert_eq!(restored.len(), 1);
    assert_eq!(
        restored[0].digest,
        digest_of(&a),
        "the rolled-back-to version is live"
    );
    let versions: Vec<_> = restored[0]
        .versions
        .iter()
        .map(|v| (v.digest.clone(), v.live))
        .collect();
    // Oldest first, by when each was last made live.
    assert_eq!(versions, [(digest_of(&b), false), (digest_of(&a), true)]);

    // The version that is not live can still be rolled back to, from disk.
    after.rollback("bank", None).await?;
    assert_eq!(after.components()[0].digest, digest_of(&b));
    assert_eq!(after.compilations(), 0);
    Ok(())
}

#[tokio::test]
async fn a_component_dropped_into_the_watched_directory_is_deployed() -> anyhow::Result<()> {
    let watched = tempfile::tempdir()?;
    let host = durable_host(watched.path().join("state").as_path())?;
    let watcher = tokio::spawn(cqrs_wasi_host::watch::watch_directory(
        host.clone(),
        watched.path().to_owned(),
        Duration::from_millis(50),
    ));
    let live = || host.components().first().map(|c| c.digest.clone());
    let until = |digest: String| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while live() != Some(digest.clone()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        live()
    };

    let first = component("bank");
    std::fs::write(watched.path().join(".bank.wasm"), &first)?;
    std::fs::rename(
        watched.path().join(".bank.wasm"),
        watched.path().join("bank.wasm"),
    )?;
    assert_eq!(until(digest_of(&first)).await, Some(digest_of(&first)));

    // A broken file is refused; the live version stays.
    std::fs::write(watched.path().join("bank.wasm"), b"not a component")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live(), Some(digest_of(&first)));

    let second = variant(&first, "watched");
    std::fs::write(watched.path().join("bank.wasm"), &second)?;
    assert_eq!(until(digest_of(&second)).await, Some(digest_of(&second)));
    watcher.abort();
    Ok(())
}
