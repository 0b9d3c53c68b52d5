//! Handlers in Python and JavaScript run on the same host code as Rust ones,
//! answer alike, and are limited alike: the README's tour gives the same
//! answers and appends the same events whichever language the bank is
//! written in; the three languages serve one domain together; the bank
//! swaps from one language to another and back under load without a failed
//! call; a failing, looping or memory-hungry handler fails its call with the
//! code a Rust one gets, warm or in an instance per call; the smallest pool
//! holds what a Python call needs; a component built against another WIT
//! version is refused at deploy.
//!
//! The Python and JavaScript components (and their toolchains) are built by
//! `xtask/src/guests.rs`, which `cargo xtask` also uses. Their compiled code
//! is cached under `target/lang/compiled`, as a host caches it under its
//! state directory: compiling a language runtime with Cranelift is the slow
//! part of every test here.

#[path = "../../../xtask/src/guests.rs"]
mod guests;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::support::load::{Finished, Load};
use crate::support::{TestHost, eventually};
use anyhow::{Context, ensure};
use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::{KindSet, RaisePolicy};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{ApiConfig, ComponentInfo, digest_of};
use cqrs_wasi_host::{Isolation, ReuseConfig, RuntimeConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// A built Python or JavaScript component (see `xtask/src/guests.rs`).
pub(crate) fn language_component(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = crate::support::root();
    BUILT
        .get_or_init(|| guests::build(root, |_| true).map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("building the Python and JavaScript components failed: {e}"));
    let file = guests::output_dir(root).join(format!("{name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// A host over an in-memory store whose compiled code is cached across
/// tests and runs. It starts with the Rust bank deployed as `bank`.
async fn host(runtime: RuntimeConfig) -> anyhow::Result<TestHost> {
    let runtime = RuntimeConfig {
        cache_dir: Some(crate::support::root().join("target/lang/compiled")),
        ..runtime
    };
    TestHost::build(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        runtime,
        &ApiConfig::default(),
    )
    .await
}

/// Deploys the Python or JavaScript component `component` as `name`. Tests
/// that deploy the same component take turns, so that the first compiles
/// it into the cache and the others load it from there.
async fn deploy(host: &TestHost, name: &str, component: &str) -> anyhow::Result<String> {
    let info = deploy_bytes(host, name, language_component(component))
        .await
        .with_context(|| format!("deploying {component}"))?;
    Ok(info.digest)
}

/// Deploys `bytes` as `name`, taking turns as [`deploy`] does.
async fn deploy_bytes(
    host: &TestHost,
    name: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<ComponentInfo> {
    static COMPILING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = COMPILING.lock().await;
    Ok(host.host.deploy(name, bytes).await?)
}

/// The languages the bank is written in.
#[derive(Debug, Clone, Copy)]
enum Bank {
    Rust,
    Python,
    JavaScript,
}

/// One request of the tour: method, path, body, idempotency key.
type Request = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// The README's tour (its HTTP requests, and its CLI commands as the
/// requests they send), then each of the bank's rules.
const TOUR: &[Request] = &[
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/OpenAccount",
        r#"{"owner": "Ada"}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/Deposit",
        r#"{"amount": 100}"#,
        Some("dep-1"),
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/Deposit",
        r#"{"amount": 100}"#,
        Some("dep-1"),
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/Withdraw",
        r#"{"amount": 250}"#,
        None,
    ),
    (
        "GET",
        "/api/projections/Bank/Account/acc-042/Balance",
        "",
        None,
    ),
    (
        "GET",
        "/api/projections/Bank/Account/acc-042/Balance?asOf=1",
        "",
        None,
    ),
    (
        "GET",
        "/api/streams/Bank/Account/acc-042/events?from=1&limit=10",
        "",
        None,
    ),
    ("GET", "/api/instances/Bank/Account", "", None),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/OpenAccount",
        r#"{"owner": "Grace"}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/Deposit",
        r#"{"amount": 5}"#,
        Some("dep-7"),
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/CloseAccount",
        "",
        None,
    ),
    (
        "GET",
        "/api/projections/Bank/Account/acc-7/Balance",
        "",
        None,
    ),
    (
        "GET",
        "/api/streams/Bank/Account/acc-7/events?from=2",
        "",
        None,
    ),
    ("GET", "/api/instances/Bank/Account?limit=1", "", None),
    // The rules, each way a command is refused.
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/OpenAccount",
        r#"{"owner": "Bob"}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-9/OpenAccount",
        r#"{"owner": "  "}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-9/Deposit",
        r#"{"amount": 1}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/Deposit",
        r#"{"amount": 0}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-042/Withdraw",
        r#"{"amount": -3}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/Withdraw",
        r#"{"amount": 5}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/CloseAccount",
        "{}",
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-7/Deposit",
        r#"{"amount": 1}"#,
        None,
    ),
    (
        "GET",
        "/api/projections/Bank/Account/acc-7/Balance",
        "",
        None,
    ),
    // Text the JSON writers of three languages must escape alike.
    (
        "POST",
        "/api/commands/Bank/Account/acc-10/OpenAccount",
        r#"{"owner": "Zoë \"Zed\" O'Neil\tü/😀\u0001"}"#,
        None,
    ),
    (
        "POST",
        "/api/commands/Bank/Account/acc-10/Deposit",
        r#"{"amount": 9007199254740991}"#,
        None,
    ),
    (
        "GET",
        "/api/projections/Bank/Account/acc-10/Balance",
        "",
        None,
    ),
];

/// Fields whose values name a run (ids, times, digests) rather than what
/// happened.
const VOLATILE: &[&str] = &[
    "commandId",
    "eventId",
    "writtenAt",
    "correlationId",
    "causationId",
    "handlerVersion",
    "projectionVersion",
    "position",
];

fn normalized(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = if VOLATILE.contains(&key.as_str()) {
                        Value::from("…")
                    } else {
                        normalized(value)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        other => other,
    }
}

/// What the tour answered and what it appended (each event as `stream
/// sequence type payload`, the payload as stored), with the bank in
/// `language`.
async fn tour(language: Bank) -> anyhow::Result<(Vec<(StatusCode, Value)>, Vec<String>)> {
    let host = host(RuntimeConfig::default()).await?;
    match language {
        // The Rust bank's welcome letters are a component of their own.
        Bank::Rust => host.deploy("welcome").await?,
        Bank::Python => drop(deploy(&host, "bank", "bank_py").await?),
        Bank::JavaScript => drop(deploy(&host, "bank", "bank_js").await?),
    }
    let mut answers = Vec::new();
    for (method, path, body, key) in TOUR {
        let url = format!("{}{path}", host.url);
        let mut request = match *method {
            "POST" => host.client.post(url).body(*body),
            _ => host.client.get(url),
        };
        if let Some(key) = key {
            request = request.header("Idempotency-Key", *key);
        }
        let response = request.send().await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        answers.push((status, normalized(answer)));
    }
    // A welcome for each account opened, congratulations for the one that
    // reached 1,000.
    let letters = [
        "welcome-acc-042",
        "welcome-acc-7",
        "welcome-acc-10",
        "savings-acc-10",
    ];
    eventually("the letters", async || {
        for key in letters {
            if crate::support::letters(&host.host, key).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    let mut events: Vec<String> = host
        .all_events()
        .await?
        .into_iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e.stream,
                e.sequence,
                e.event_type,
                e.payload.get()
            )
        })
        .collect();
    events.sort();
    host.stop().await;
    Ok((answers, events))
}

#[tokio::test]
async fn the_readme_tour_answers_and_appends_alike_in_rust_python_and_javascript()
-> anyhow::Result<()> {
    let (rust_answers, rust_events) = tour(Bank::Rust).await?;
    // What the Rust bank answers is the reference; check it is the tour.
    let codes: Vec<&str> = rust_answers
        .iter()
        .filter_map(|(_, answer)| answer["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "invalid_payload",
            "invalid_payload",
            "rejected"
        ],
        "{rust_answers:#?}"
    );
    assert_eq!(rust_answers[2].1["replayed"], true);
    assert_eq!(
        rust_answers[3].1["message"],
        "insufficient funds: balance 100 is less than 250"
    );
    assert!(
        rust_events.contains(
            &r#"Letters/Letter/welcome-acc-042 1 WelcomeSent {"account":"acc-042"}"#.to_owned()
        ),
        "{rust_events:#?}"
    );

    for language in [Bank::Python, Bank::JavaScript] {
        let (answers, events) = tour(language).await?;
        for (((method, path, body, _), expected), answer) in
            TOUR.iter().zip(&rust_answers).zip(&answers)
        {
            assert_eq!(
                answer, expected,
                "{language:?} answered {method} {path} {body} otherwise than Rust"
            );
        }
        assert_eq!(
            events, rust_events,
            "{language:?} appended otherwise than Rust"
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_commands_a_rust_projection_and_javascript_notifications_serve_one_domain()
-> anyhow::Result<()> {
    let host = host(RuntimeConfig::default()).await?;
    // The Python bank's command handlers replace the Rust bank; the Rust
    // `Balance` projection alone and the JavaScript welcome letters join.
    let python = deploy(&host, "bank", "fixture_py").await?;
    host.deploy("balance").await?;
    let rust = host
        .host
        .components()
        .into_iter()
        .find(|c| c.name == "balance")
        .context("balance is deployed")?
        .digest;
    let javascript = deploy(&host, "letters", "fixture_js").await?;

    let (status, opened) = host
        .command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{opened}");
    host.command("acc-1", "Deposit", r#"{"amount": 100}"#)
        .await?;
    // The Python handler decides on the state the Rust projection computes.
    let (status, refused) = host
        .command("acc-1", "Withdraw", r#"{"amount": 250}"#)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["message"],
        "insufficient funds: balance 100 is less than 250"
    );
    let (_, balance) = host
        .get("/api/projections/Bank/Account/acc-1/Balance")
        .await?;
    assert_eq!(
        balance["state"],
        serde_json::json!({"balance": 100, "open": true})
    );
    assert_eq!(balance["projectionVersion"], rust.as_str());

    // The JavaScript notification handler, the only one subscribed, sends
    // the letter its `Letter` handler writes.
    eventually("the welcome letter", async || {
        Ok(!crate::support::letters(&host.host, "welcome-acc-1")
            .await?
            .is_empty())
    })
    .await?;
    let letter = StreamId::new("Letters", "Letter", "welcome-acc-1")?;
    let letters = host.host.read_stream(&letter, 1, 10).await?;
    assert_eq!(letters.len(), 1, "one letter: {letters:?}");
    assert_eq!(letters[0].event_type, "WelcomeSent");
    assert_eq!(letters[0].payload.get(), r#"{"account":"acc-1"}"#);
    assert_eq!(
        letters[0].context.handler_version.as_deref(),
        Some(javascript.as_str())
    );
    assert!(
        letters[0]
            .context
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("notification ")),
        "sent by a notification handler: {:?}",
        letters[0].context
    );
    let account = StreamId::new("Bank", "Account", "acc-1")?;
    let events = host.host.read_stream(&account, 1, 10).await?;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.context.handler_version.as_deref() == Some(python.as_str())),
        "the Python component appended the account's events"
    );
    host.stop().await;
    Ok(())
}

/// Each fault of a Rust, Python and JavaScript handler, in warm instances
/// and in an instance per call: the same code for the same fault, nothing
/// appended, and the instance it ran in thrown away, so that the next call
/// of that version (here, a fault of another kind) starts afresh.
#[tokio::test]
async fn python_and_javascript_handlers_fail_loop_and_exhaust_memory_as_a_rust_one_does_with_warm_instances()
-> anyhow::Result<()> {
    faults_in(Isolation::Reuse).await
}

#[tokio::test]
async fn python_and_javascript_handlers_fail_loop_and_exhaust_memory_as_a_rust_one_does_with_an_instance_per_call()
-> anyhow::Result<()> {
    faults_in(Isolation::PerCall).await
}

async fn faults_in(isolation: Isolation) -> anyhow::Result<()> {
    let host = host(RuntimeConfig {
        call_timeout: Duration::from_secs(2),
        max_memory_bytes: 64 << 20,
        reuse: ReuseConfig {
            isolation,
            ..ReuseConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .await?;
    host.deploy("faulty").await?;
    deploy(&host, "bank", "fixture_py").await?;
    deploy(&host, "letters", "fixture_js").await?;

    // What each fault costs its instance, besides the call: in the same
    // terms for the three languages (`/metrics`). A refused growth is a
    // trap too: each language's allocator gives up when `memory.grow`
    // fails (the Rust one aborts, CPython's MemoryError and
    // SpiderMonkey's out-of-memory are left to trap).
    let cases = [
        (
            "Fail",
            "handler_failed",
            "the handler failed on purpose",
            None,
        ),
        (
            "Loop",
            "deadline_exceeded",
            "ran past its 2s deadline",
            Some("deadline"),
        ),
        ("Allocate", "guest_fault", "trapped", Some("trap")),
    ];
    for entity_type in ["Faulty", "FaultyPy", "FaultyJs"] {
        for (command, code, message, discarded) in cases {
            let before = match discarded {
                Some(reason) => host.discarded(reason).await?,
                None => 0,
            };
            let path = format!("/api/commands/Test/{entity_type}/f/{command}");
            let (status, answer) = host.post(&path, "{}").await?;
            assert_eq!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}: {answer}"
            );
            assert_eq!(answer["code"], code, "{path}: {answer}");
            let said = answer["message"].as_str().unwrap_or_default();
            assert!(said.contains(message), "{path}: {answer}");
            if let Some(reason) = discarded {
                assert_eq!(
                    host.discarded(reason).await?,
                    before + 1,
                    "{path}: its instance was thrown away ({reason})"
                );
            }
        }
        let stream = StreamId::new("Test", entity_type, "f")?;
        assert!(
            host.host.read_stream(&stream, 1, 10).await?.is_empty(),
            "a failed call appends nothing"
        );
    }
    // The host, and the components whose calls failed, serve on.
    let (status, answer) = host
        .command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, answer) = host
        .post("/api/commands/Test/FaultyJs/g/Fail", "{}")
        .await?;
    assert_eq!(answer["code"], "handler_failed", "{answer}");
    host.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_python_component_built_against_another_wit_version_is_refused_at_deploy()
-> anyhow::Result<()> {
    let host = host(RuntimeConfig::default()).await?;
    let refused = deploy(&host, "bank", "misbuilt_py")
        .await
        .expect_err("the host refuses it");
    let reason = format!("{refused:#}");
    assert!(
        reason.contains("imports what the host cannot supply")
            && reason.contains("cqrs-wasi:handlers/event-store@0.1.0"),
        "{reason}"
    );
    // The Rust bank it would have replaced keeps serving.
    let (status, answer) = host
        .command("acc-1", "OpenAccount", r#"{"owner": "Ada"}"#)
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rust = crate::support::component("bank");
    let live = host.host.components();
    assert_eq!(
        live.iter()
            .find(|c| c.name == "bank")
            .map(|c| c.digest.clone()),
        Some(cqrs_wasi_host::digest_of(&rust))
    );
    host.stop().await;
    Ok(())
}

/// The Rust bank is replaced by the Python bank while clients send
/// commands, rolled back to, replaced by the JavaScript bank, and rolled
/// back to again. No call fails; every account's events run from 1 with no
/// gap and are exactly those its acknowledged calls appended, each made by
/// a version that was live during its call; and the three languages each
/// handled some of them. In both isolation modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_languages_under_load_fails_no_call_with_warm_instances() -> anyhow::Result<()> {
    swapping_languages_under_load(Isolation::Reuse).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_languages_under_load_fails_no_call_with_an_instance_per_call()
-> anyhow::Result<()> {
    swapping_languages_under_load(Isolation::PerCall).await
}

async fn swapping_languages_under_load(isolation: Isolation) -> anyhow::Result<()> {
    let host = host(RuntimeConfig {
        reuse: ReuseConfig {
            isolation,
            ..ReuseConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .await?;
    let python = language_component("bank_py");
    let javascript = language_component("bank_js");
    let (python_digest, javascript_digest) = (digest_of(&python), digest_of(&javascript));
    let rust_digest = digest_of(&crate::support::component("bank"));

    // When each version went live (the deploy's or rollback's start) and
    // until when (the next one's end).
    let mut live: Vec<(Instant, String)> = vec![(Instant::now(), rust_digest.clone())];
    let mut ends: Vec<Instant> = Vec::new();
    // Client `c` opens account `swap-c`, then deposits 1 into it, over
    // and over.
    const CLIENTS: usize = 8;
    let load = Load::start(
        &host.url,
        CLIENTS,
        Arc::new(|client, i| {
            let (command, body) = match i {
                0 => ("OpenAccount", r#"{"owner": "Ada"}"#),
                _ => ("Deposit", r#"{"amount": 1}"#),
            };
            (
                format!("/api/commands/Bank/Account/swap-{client}/{command}"),
                body.to_owned(),
            )
        }),
    );
    // Python, back to Rust, JavaScript, back to Rust.
    for bytes in [Some(python), None, Some(javascript), None] {
        // Each version serves a few calls of every client first.
        load.progressed(4 * CLIENTS).await?;
        let started = Instant::now();
        let info = match bytes {
            // Compiled while the load runs on the live version (or loaded
            // from the cache other tests filled).
            Some(bytes) => deploy_bytes(&host, "bank", bytes).await?,
            None => host.host.rollback("bank", Some(&rust_digest)).await?,
        };
        ends.push(Instant::now());
        live.push((started, info.digest));
    }
    load.progressed(4 * CLIENTS).await?;
    let Finished { calls, failures } = load.stop().await?;
    ensure!(failures.is_empty(), "failed calls: {failures:#?}");

    let acknowledged: std::collections::HashSet<&String> =
        calls.iter().flat_map(|call| &call.event_ids).collect();
    let mut by_digest: std::collections::BTreeMap<String, usize> = Default::default();
    for client in 0..CLIENTS {
        let stream = StreamId::new("Bank", "Account", format!("swap-{client}"))?;
        let events = host.host.read_stream(&stream, 1, 100_000).await?;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        ensure!(
            sequences == (1..=events.len() as u64).collect::<Vec<_>>(),
            "{stream}: the sequences are contiguous from 1: {sequences:?}"
        );
        for event in &events {
            ensure!(
                acknowledged.contains(&event.event_id.to_string()),
                "{stream} {}: appended by an acknowledged call",
                event.sequence
            );
            let digest = event.context.handler_version.clone().unwrap_or_default();
            *by_digest.entry(digest).or_default() += 1;
        }
        let deposits = events.len() as i64 - 1;
        ensure!(
            host.balance(&format!("swap-{client}")).await?
                == serde_json::json!({"balance": deposits, "open": true}),
            "{stream}: the balance counts every deposit"
        );
    }
    let stored: usize = by_digest.values().sum();
    ensure!(
        stored == acknowledged.len(),
        "every acknowledged event is stored ({stored} of {})",
        acknowledged.len()
    );
    // Each call's events were made by a version live at some moment of it.
    let stored: std::collections::HashMap<String, String> = host
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
            let digest = &stored[event_id];
            let was_live = live.iter().enumerate().any(|(i, (from, version))| {
                version == digest
                    && *from <= call.answered
                    && ends.get(i).is_none_or(|until| call.sent <= *until)
            });
            ensure!(
                was_live,
                "event {event_id} by {digest}: not live during its call ({:?}..{:?}); live: {:?}; ends: {:?}",
                call.sent - live[0].0,
                call.answered - live[0].0,
                live.iter()
                    .map(|(at, d)| (*at - live[0].0, &d[..12]))
                    .collect::<Vec<_>>(),
                ends.iter().map(|at| *at - live[0].0).collect::<Vec<_>>()
            );
        }
    }
    println!("events appended by each version: {by_digest:?}");
    for (language, digest) in [
        ("Rust", &rust_digest),
        ("Python", &python_digest),
        ("JavaScript", &javascript_digest),
    ] {
        ensure!(
            by_digest.get(digest).copied().unwrap_or(0) > 0,
            "{language} handled some of the load: {by_digest:?}"
        );
    }
    host.stop().await;
    Ok(())
}

/// The smallest pool a host can have, one call slot and no idle instance,
/// still holds what one call of a Python or JavaScript bank needs at once:
/// the command handler's instance and that of the `Balance` projection it
/// asks for (for Python, 28 core instances: see `runtime/mod.rs`), in both
/// isolation modes.
#[tokio::test]
async fn one_call_slot_holds_a_python_or_javascript_command_and_its_projection()
-> anyhow::Result<()> {
    for isolation in [Isolation::Reuse, Isolation::PerCall] {
        let host = TestHost::build(
            Arc::new(MemoryStore::new()),
            // No notifications: nothing else takes the one slot.
            HostConfig {
                raise: RaisePolicy::new(KindSet::NONE),
                ..HostConfig::default()
            },
            RuntimeConfig {
                cache_dir: Some(crate::support::root().join("target/lang/compiled")),
                max_concurrent_calls: 1,
                reuse: ReuseConfig {
                    isolation,
                    max_idle: 0,
                    ..ReuseConfig::default()
                },
                ..RuntimeConfig::default()
            },
            &ApiConfig::default(),
        )
        .await?;
        for component in ["bank_py", "bank_js"] {
            deploy(&host, "bank", component).await?;
            let key = format!("{component}-{isolation:?}");
            for (command, body) in [
                ("OpenAccount", r#"{"owner": "Ada"}"#),
                ("Deposit", r#"{"amount": 10}"#),
                ("Withdraw", r#"{"amount": 4}"#),
            ] {
                let (status, answer) = host.command(&key, command, body).await?;
                assert_eq!(status, StatusCode::OK, "{key} {command}: {answer}");
            }
            assert_eq!(host.balance(&key).await?["balance"], 6, "{key}");
        }
        host.stop().await;
    }
    Ok(())
}
