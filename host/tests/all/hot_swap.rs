//! Deploying new versions while the host serves: atomic swaps, refused
//! uploads, rollback, restarts from the compiled-code cache, and the watched
//! components directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::Secret;
use cqrs_wasi_host::model::RecordedEvent;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{Host, HostConfig};
use cqrs_wasi_host::{Isolation, ReuseConfig, RuntimeConfig, digest_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::load::{Finished, Load, event_ids};
use crate::support::{self, TestHost, component, variant};

const TOKEN: &str = "test-admin-token";

async fn admin_host(
    cache: &std::path::Path,
    max_component_bytes: usize,
    isolation: Isolation,
) -> anyhow::Result<TestHost> {
    TestHost::build(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        RuntimeConfig {
            cache_dir: Some(cache.to_owned()),
            // A held call stays in flight across every swap.
            call_timeout: Duration::from_secs(300),
            reuse: ReuseConfig {
                isolation,
                ..ReuseConfig::default()
            },
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

/// One swap: when the deploy was sent and answered, and the digest it made
/// live. The version was live from some moment in between until some
/// moment within the next swap.
struct Swap {
    sent: Instant,
    answered: Instant,
    digest: String,
}

/// Swaps in the test below: odd, so that the held deposit is released while
/// the version it did not start on is live.
const SWAPS: usize = 51;

/// The two versions of the `gated` fixture behave differently: version 1
/// credits a deposit's amount, version 2 twice the amount, and each event
/// says which version made it. [`SWAPS`] swaps between them run under
/// load, while one deposit, held at a gate, stays in flight across all of
/// them: no call fails, every event was made by the version the host
/// recorded (`handlerVersion`) and that version was live during its call,
/// the held deposit finishes on the version it started on (while the other
/// is live), and every balance is what those versions credited. So in
/// both isolation modes: warm instances of the version swapped out are
/// retired, never handed to a call routed to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_under_load_fails_no_call_and_finishes_each_on_its_version_with_warm_instances()
-> anyhow::Result<()> {
    swapping_under_load(Isolation::Reuse).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_under_load_fails_no_call_and_finishes_each_on_its_version_with_an_instance_per_call()
-> anyhow::Result<()> {
    swapping_under_load(Isolation::PerCall).await
}

async fn swapping_under_load(isolation: Isolation) -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let host = Arc::new(admin_host(cache.path(), 64 << 20, isolation).await?);
    host.deploy("gated").await?;
    let versions = [component("gated"), component("gated-v2")];
    let digests = [digest_of(&versions[0]), digest_of(&versions[1])];
    // Which version (1 or 2) a digest is.
    let version_of = |digest: &str| digests.iter().position(|d| d == digest).map(|i| i + 1);
    let mut swaps = vec![Swap {
        sent: Instant::now(),
        answered: Instant::now(),
        digest: host.live_digest("gated").await.expect("gated is live"),
    }];
    assert_eq!(swaps[0].digest, digests[0]);

    // Started alone, so that the instance it creates is its own: once
    // there is one, it has been routed to version 1.
    let before = host.host.calls_started();
    let held = tokio::spawn({
        let host = host.clone();
        async move {
            host.post(
                "/api/commands/Test/Gated/held/HeldDeposit",
                r#"{"amount": 1000, "gate": "swaps"}"#,
            )
            .await
        }
    });
    support::until_a_call_starts(&host.host, before).await?;

    const CLIENTS: usize = 16;
    let load = Load::start(
        &host.url,
        CLIENTS,
        Arc::new(|client, _| {
            (
                format!("/api/commands/Test/Gated/load-{client}/Deposit"),
                r#"{"amount": 1}"#.to_owned(),
            )
        }),
    );
    for i in 0..SWAPS {
        // Some call answered since the last swap: the load runs through
        // every one of them.
        load.progressed(1).await?;
        let sent = Instant::now();
        let (status, body) = host
            .upload("gated", versions[(i + 1) % 2].clone(), Some(TOKEN))
            .await?;
        assert_eq!(status, StatusCode::OK, "deploy {i}: {body}");
        swaps.push(Swap {
            sent,
            answered: Instant::now(),
            digest: body["digest"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let Finished { calls, failures } = load.stop().await?;
    assert!(
        failures.is_empty(),
        "failed calls during swaps: {failures:?}"
    );
    assert!(
        calls.len() >= SWAPS,
        "the load ran through the swaps ({} calls)",
        calls.len()
    );

    // The held deposit started on version 1 and, released after the last
    // swap, with version 2 live, finishes on version 1.
    assert_eq!(swaps.last().map(|swap| &swap.digest), Some(&digests[1]));
    support::open_gate(host.store.as_ref(), "swaps").await?;
    let (status, body) = held.await??;
    assert_eq!(status, StatusCode::OK, "the held deposit: {body}");
    let stored: HashMap<String, RecordedEvent> = host
        .all_events()
        .await?
        .into_iter()
        .map(|e| (e.event_id.to_string(), e))
        .collect();
    let held = &stored[&event_ids(&body)[0]];
    assert_eq!(
        serde_json::from_str::<Value>(held.payload.get())?,
        json!({"amount": 1000, "credited": 1000, "version": 1})
    );
    assert_eq!(held.context.handler_version.as_ref(), Some(&digests[0]));

    // Each balance is what the versions that ran its deposits credited:
    // the amount for version 1, twice the amount for version 2.
    let mut credited: BTreeMap<String, i64> = [("held".to_owned(), 1000)].into();
    let mut versions_seen = BTreeSet::new();
    for call in &calls {
        for event_id in &call.event_ids {
            let event = &stored[event_id];
            let digest = event.context.handler_version.clone().unwrap_or_default();
            let payload: Value = serde_json::from_str(event.payload.get())?;
            let version = payload["version"].as_u64().unwrap_or_default();
            assert_eq!(
                version_of(&digest),
                Some(version as usize),
                "the version the host recorded made event {event_id}: {payload}"
            );
            let live_during_call = swaps.iter().enumerate().any(|(i, swap)| {
                let until = swaps.get(i + 1).map(|next| next.answered);
                swap.digest == digest
                    && swap.sent <= call.answered
                    && until.is_none_or(|until| call.sent <= until)
            });
            assert!(
                live_during_call,
                "event {event_id} was handled by {digest}, not live during its call"
            );
            versions_seen.insert(version);
            *credited
                .entry(event.stream.instance_key().to_string())
                .or_default() += payload["amount"].as_i64().unwrap_or_default() * version as i64;
        }
    }
    assert_eq!(
        versions_seen,
        [1, 2].into(),
        "both versions ran some of the load"
    );
    for (key, expected) in &credited {
        let (status, body) = host
            .get(&format!("/api/projections/Test/Gated/{key}/Balance"))
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], *expected, "the balance of {key}");
    }
    assert_eq!(
        host.host.compilations(),
        3,
        "bank and the two versions compiled, every other swap came from the cache"
    );
    // The load ran in the mode asked for: per call, every call's instance
    // was thrown away after it; warm, swaps retired idle instances and no
    // call's instance was thrown away for being used.
    let per_call = host.discarded("per_call").await?;
    match isolation {
        Isolation::PerCall => assert!(per_call >= calls.len() as u64, "{per_call}"),
        Isolation::Reuse => {
            assert_eq!(per_call, 0);
            assert!(host.discarded("retired").await? > 0);
        }
    }
    Ok(())
}

#[tokio::test]
async fn bad_uploads_are_refused_with_their_reason_and_the_live_version_keeps_serving()
-> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let host = admin_host(cache.path(), 4 << 20, Isolation::Reuse).await?;
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
    let host = admin_host(cache.path(), 64 << 20, Isolation::Reuse).await?;
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
    // The runtime is single-threaded: the watcher logs on this thread.
    let logs = support::logs::capture();
    let watched = tempfile::tempdir()?;
    let host = durable_host(watched.path().join("state").as_path())?;
    let watcher = tokio::spawn(cqrs_wasi_host::watch_directory(
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

    // A broken file is refused, as the watcher says; the live version stays.
    std::fs::write(watched.path().join("bank.wasm"), b"not a component")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs.text().contains("refused from the watched directory") {
        assert!(Instant::now() < deadline, "no refusal:\n{}", logs.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live(), Some(digest_of(&first)));

    let second = variant(&first, "watched");
    std::fs::write(watched.path().join("bank.wasm"), &second)?;
    assert_eq!(until(digest_of(&second)).await, Some(digest_of(&second)));
    watcher.abort();
    Ok(())
}
