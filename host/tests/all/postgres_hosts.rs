//! Several hosts sharing one PostgreSQL store: `cqrs-wasi serve` processes
//! on one schema, driven concurrently over HTTP at the same accounts.
//!
//! Each test takes a scratch schema of its own; without a reachable server
//! the tests say they were skipped (and fail under
//! `CQRS_WASI_REQUIRE_POSTGRES=1`, as `cargo xtask test` runs them).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use cqrs_wasi_host::notifications::model::{NotificationKind, notification_id};
use cqrs_wasi_host::store::EventStore;
use cqrs_wasi_host::store::postgres_testing::{REQUIRE_VAR, ScratchSchema, URL_VAR};
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use crate::support::event_grid::{EventGridStandIn, Schema};
use crate::support::{self, ServedHost};

const ACCOUNTS: usize = 4;
const DEPOSITS: usize = 160;

/// Starts `cqrs-wasi serve ARGS` in `dir`, off the async threads (it
/// blocks until the host serves, which includes compiling the component).
async fn start(dir: &Path, args: Vec<String>) -> anyhow::Result<ServedHost> {
    let mut command = std::process::Command::new(support::BINARY);
    command.arg("serve").args(args).current_dir(dir);
    tokio::task::spawn_blocking(move || ServedHost::start(command)).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_host_processes_on_one_schema_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let Some(schema) = ScratchSchema::new().await else {
        return Ok(());
    };
    // Each host has a working directory (and so a state directory) of its own.
    let dir = tempfile::tempdir()?;
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    // Both publish the shared outbox to one topic: whichever claims it.
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    let component = format!(
        "[[components]]\nname = \"bank\"\npath = {:?}\n\n[[topics]]\nname = \"grid\"\nendpoint = \"{}\"\nkey = \"{}\"\n",
        bank,
        stand_in.endpoint(),
        stand_in.key()
    );
    // Host A names the store in its configuration file...
    std::fs::create_dir(&a_dir)?;
    std::fs::write(
        a_dir.join("host.toml"),
        format!(
            "[store]\nkind = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\npool_size = 8\n\n{component}",
            schema.url(),
            schema.name()
        ),
    )?;
    // ...host B on the command line, over a configuration without a store.
    std::fs::create_dir(&b_dir)?;
    std::fs::write(b_dir.join("host.toml"), &component)?;
    let args = |extra: &[&str]| -> Vec<String> {
        ["--config", "host.toml", "--listen", "127.0.0.1:0"]
            .iter()
            .chain(extra)
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    let b_args = args(&["--store-url", schema.url(), "--store-schema", schema.name()]);
    // Both open the new schema at once: one creates it, the other waits.
    let (a, b) = tokio::join!(start(&a_dir, args(&[])), start(&b_dir, b_args));
    let hosts = Arc::new([a.context("host A starts")?, b.context("host B starts")?]);

    let account = |n: usize| format!("acc-{}", n % ACCOUNTS);
    // Deposit `n` goes to this host: each account gets deposits through both.
    let host = |n: usize| (n / ACCOUNTS) % 2;
    for n in 0..ACCOUNTS {
        let (status, body) = hosts[n % 2]
            .command(&account(n), "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        ensure!(status == StatusCode::OK, "opening {}: {body}", account(n));
    }

    // Every deposit at once: each account's stream is contested by both
    // processes throughout.
    let started = Instant::now();
    let mut deposits = JoinSet::new();
    for n in 0..DEPOSITS {
        let hosts = Arc::clone(&hosts);
        let instance = account(n);
        deposits.spawn(async move {
            let body = json!({ "amount": n + 1 }).to_string();
            let key = format!("dep-{n}");
            hosts[host(n)]
                .command_with(&instance, "Deposit", &body, Some(&key))
                .await
                .map(|answer| (n, answer))
        });
    }
    for done in deposits.join_all().await {
        let (n, (status, body)) = done?;
        ensure!(status == StatusCode::OK, "deposit {n}: {status} {body}");
        ensure!(body["replayed"] == false, "deposit {n} ran: {body}");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{DEPOSITS} deposits through two hosts in {elapsed:?} ({:.0} commands/s)",
        DEPOSITS as f64 / elapsed.as_secs_f64()
    );

    // A client that retries through the other host gets the recorded
    // outcome, and nothing runs again.
    for n in (0..DEPOSITS).step_by(8) {
        let body = json!({ "amount": n + 1 }).to_string();
        let (status, answer) = hosts[1 - host(n)]
            .command_with(&account(n), "Deposit", &body, Some(&format!("dep-{n}")))
            .await?;
        ensure!(status == StatusCode::OK, "retry of deposit {n}: {answer}");
        ensure!(answer["replayed"] == true, "retry of deposit {n}: {answer}");
    }

    // What the store holds, read directly.
    let store = schema.open().await;
    let mut expected_amounts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for n in 0..DEPOSITS {
        expected_amounts
            .entry(account(n))
            .or_default()
            .push(n as i64 + 1);
    }
    for (instance, expected) in &expected_amounts {
        let stream = cqrs_wasi_host::model::StreamId::new("Bank", "Account", instance.as_str())?;
        let events = store.read_stream(&stream, 1, usize::MAX).await?;
        let sequences: Vec<u64> = events.iter().map(|event| event.sequence).collect();
        let contiguous: Vec<u64> = (1..=expected.len() as u64 + 1).collect();
        ensure!(
            sequences == contiguous,
            "{instance}: sequences {sequences:?}"
        );
        ensure!(events[0].event_type == "AccountOpened", "{instance}");
        let mut amounts = events[1..]
            .iter()
            .map(|event| {
                ensure!(
                    event.event_type == "MoneyDeposited",
                    "{instance}: {event:?}"
                );
                let payload: serde_json::Value = serde_json::from_str(event.payload.get())?;
                payload["amount"].as_i64().context("an amount")
            })
            .collect::<anyhow::Result<Vec<i64>>>()?;
        amounts.sort_unstable();
        ensure!(
            &amounts == expected,
            "{instance}: every deposit once, none lost"
        );
        let total: i64 = expected.iter().sum();
        for host in hosts.iter() {
            let balance = host.balance(instance).await?;
            ensure!(
                balance == json!({"balance": total, "open": true}),
                "{instance} through {}: {balance}",
                host.address()
            );
        }
    }
    let all = store.read_all(0, usize::MAX).await?;
    ensure!(all.len() == ACCOUNTS + DEPOSITS, "{} events", all.len());
    ensure!(
        all.windows(2)
            .all(|pair| pair[0].position < pair[1].position),
        "positions increase"
    );
    let ids: HashSet<_> = all.iter().map(|event| event.event_id).collect();
    ensure!(ids.len() == all.len(), "no event id twice");

    // The outbox reached the topic through the two hosts' dispatchers,
    // woken by LISTEN/NOTIFY: every event's notification, each in its id.
    let wanted: HashSet<String> = all
        .iter()
        .map(|event| {
            notification_id(
                NotificationKind::EventAppended,
                &event.stream,
                event.sequence,
                None,
            )
            .to_string()
        })
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let accepted: HashSet<String> = stand_in.accepted_ids().into_iter().collect();
        let missing = wanted.difference(&accepted).count();
        if missing == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} notifications never reached the topic"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let copies = stand_in.accepted().len();
    eprintln!(
        "the topic took {copies} notifications for {} events",
        all.len()
    );

    let hosts = Arc::into_inner(hosts).context("every request is done")?;
    for host in hosts {
        let status = host.stop()?;
        ensure!(status.success(), "the host exits cleanly: {status}");
    }
    Ok(())
}

#[tokio::test]
async fn a_host_refuses_a_schema_newer_than_it_knows() -> anyhow::Result<()> {
    let Some(schema) = ScratchSchema::new().await else {
        return Ok(());
    };
    drop(schema.open().await);
    schema
        .execute("INSERT INTO schema_migrations (version) VALUES (1000)")
        .await;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("host.toml"), "components = []\n")?;
    let output = tokio::process::Command::new(support::BINARY)
        .args(["serve", "--config", "host.toml", "--listen", "127.0.0.1:0"])
        .args(["--store-url", schema.url(), "--store-schema", schema.name()])
        .current_dir(dir.path())
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "the host refused to start");
    ensure!(
        stderr.contains("the store's schema is version 1000")
            && stderr.contains("upgrade the host"),
        "the refusal says why: {stderr}"
    );
    Ok(())
}

/// Without a reachable server, a PostgreSQL test passes as skipped, and
/// says so where a run shows it: on stdout, past the harness's capture,
/// which shows a passing test's output to no one. Run here as its own
/// process, against a server that closes every connection.
#[test]
fn a_test_without_its_postgres_server_says_it_skipped() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "postgres_hosts::a_host_refuses_a_schema_newer_than_it_knows",
        ])
        .env(URL_VAR, format!("postgres://postgres@{address}/test"))
        .env_remove(REQUIRE_VAR)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "the test failed:\n{stdout}");
    ensure!(
        stdout.contains("1 passed") && stdout.contains("SKIPPED: PostgreSQL not reachable"),
        "the test passed without saying on stdout that it skipped:\n{stdout}"
    );
    Ok(())
}
