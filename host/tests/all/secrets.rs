//! Operator surfaces: the admin API needs its bearer token, the public API
//! its key when one is configured, and no secret ever reaches a log line or
//! an error message, in the library or in `cqrs-wasi serve`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cqrs_wasi_host::ApiConfig;
use cqrs_wasi_host::HostConfig;
use cqrs_wasi_host::RuntimeConfig;
use cqrs_wasi_host::Secret;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::store::postgres_testing::ScratchSchema;
use reqwest::StatusCode;

use crate::support::event_grid::{EventGridStandIn, Fault, Schema};
use crate::support::{self, ServedHost, TestHost};

const ADMIN_TOKEN: &str = "admin-token-5f1c9e";
const API_KEY: &str = "api-key-77d0b3";

#[tokio::test]
async fn tokens_are_required_and_never_logged_or_echoed() -> anyhow::Result<()> {
    // The runtime is single-threaded: the host's tasks and its server log
    // on this thread.
    let logs = support::logs::capture();

    let config = ApiConfig {
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        api_key: Some(Secret::new(API_KEY)),
        ..ApiConfig::default()
    };
    assert!(!format!("{config:?}").contains(ADMIN_TOKEN));
    assert!(!format!("{config:?}").contains(API_KEY));
    let host = TestHost::build(
        Arc::new(MemoryStore::new()),
        HostConfig::default(),
        RuntimeConfig::default(),
        &config,
    )
    .await?;
    let client = &host.client;
    let open = |key: Option<&str>| {
        let mut request = client
            .post(format!(
                "{}/api/commands/Bank/Account/acc/OpenAccount",
                host.url
            ))
            .body(r#"{"owner": "Ada"}"#);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    let deploy = |token: Option<&str>| {
        let mut request = client
            .put(format!("{}/admin/components/bank", host.url))
            .body(support::variant(&support::component("bank"), "new"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let live = || host.host.components()[0].digest.clone();
    let before = live();

    let mut answers = Vec::new();
    for response in [
        open(None).await?,
        open(Some("wrong")).await?,
        open(Some(ADMIN_TOKEN)).await?,
        deploy(None).await?,
        deploy(Some("wrong")).await?,
        deploy(Some(API_KEY)).await?,
    ] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        answers.push(response.text().await?);
    }
    assert!(
        host.all_events().await?.is_empty(),
        "refused requests change nothing"
    );
    assert_eq!(live(), before, "refused deploys change nothing");

    let response = open(Some(API_KEY)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    answers.push(response.text().await?);
    let response = deploy(Some(ADMIN_TOKEN)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    answers.push(response.text().await?);
    assert_ne!(live(), before);
    let health = client.get(format!("{}/healthz", host.url)).send().await?;
    assert_eq!(health.status(), StatusCode::OK, "health needs no key");

    let logs = logs.text();
    assert!(
        logs.contains("component is live"),
        "the logs were captured:\n{logs}"
    );
    for secret in [ADMIN_TOKEN, API_KEY] {
        assert!(!logs.contains(secret), "a log line holds a secret:\n{logs}");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "an answer holds a secret: {answer}"
            );
        }
    }
    Ok(())
}

/// `url` with `password` in it, unless it has one already; the password
/// it ends up with.
fn with_password(url: &str, password: &str) -> anyhow::Result<(String, String)> {
    let (scheme, rest) = url.split_once("://").context("a URL")?;
    let (user, host) = rest.split_once('@').context("a user in the URL")?;
    Ok(match user.split_once(':') {
        Some((_, existing)) => (url.to_owned(), existing.to_owned()),
        None => (
            format!("{scheme}://{user}:{password}@{host}"),
            password.to_owned(),
        ),
    })
}

/// Everything at trace level but the compiler, whose output is large, and
/// which sees no secret.
const TRACE: &str = "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
                     wasmtime_cranelift=info,wasmtime_environ=info,wasmtime=info";

/// `cqrs-wasi serve` at trace level, the libraries it uses included, with a
/// webhook secret, a topic key and a PostgreSQL password configured and
/// used: none of them appears in anything it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_no_secret_even_at_trace_level() -> anyhow::Result<()> {
    let Some(schema) = ScratchSchema::new().await else {
        return Ok(());
    };
    const WEBHOOK_SECRET: &str = "webhook-secret-3c81aa";
    // The test server trusts loopback connections: any password does.
    let (url, password) = with_password(schema.url(), "pg-password-90e2f4")?;
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    // A refused publish, retried, is logged too.
    stand_in.inject(Fault::Unavailable);
    let dir = tempfile::tempdir()?;
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            r#"webhook_secret = "{WEBHOOK_SECRET}"

[store]
kind = "postgres"
url = "{url}"
schema = "{}"

[[components]]
name = "bank"
path = {bank:?}

[[topics]]
name = "grid"
endpoint = "{}"
key = "{}"
"#,
            schema.name(),
            stand_in.endpoint(),
            stand_in.key()
        ),
    )?;
    let mut command = std::process::Command::new(support::BINARY);
    command
        .args(["serve", "--config", "host.toml", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", TRACE)
        .current_dir(dir.path());
    let host = tokio::task::spawn_blocking(move || ServedHost::start(command)).await??;

    for (command, payload) in [
        ("OpenAccount", r#"{"owner": "Ada"}"#),
        ("Deposit", r#"{"amount": 5}"#),
    ] {
        let (status, body) = host.command("acc", command, payload).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let webhook = format!("{}/api/eventgrid", host.url);
    let validation = serde_json::json!([{
        "id": "v-1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
        "eventTime": "2026-11-27T00:00:00Z", "data": {"validationCode": "code-7"}, "dataVersion": "1"
    }]);
    for (secret, expected) in [
        ("wrong", StatusCode::UNAUTHORIZED),
        (WEBHOOK_SECRET, StatusCode::OK),
    ] {
        let response = host
            .client
            .post(&webhook)
            .header("X-Webhook-Secret", secret)
            .json(&validation)
            .send()
            .await?;
        assert_eq!(response.status(), expected);
    }
    // The outbox went out, past the refusal.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stand_in.accepted().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", stand_in.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stand_in.requests()[0].status, Some(503));

    let output = host.output();
    let status = host.stop()?;
    assert!(status.success(), "{status}");
    let output = output.text();
    println!("the host wrote {} bytes", output.len());
    assert!(
        output.contains(" TRACE ") && output.contains("serving"),
        "the host logged at trace level:\n{output}"
    );
    for secret in [WEBHOOK_SECRET, password.as_str(), stand_in.key()] {
        assert!(
            !output.contains(secret),
            "the output holds a secret ({secret}):\n{output}"
        );
    }
    Ok(())
}
