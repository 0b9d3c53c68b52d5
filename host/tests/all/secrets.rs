//! Operator surfaces: the admin API needs its bearer token, the public API
//! its key when one is configured, and no secret ever reaches a log line or
//! an error message.

use std::sync::Arc;

use cqrs_wasi_host::HostOptions;
use cqrs_wasi_host::api::ApiConfig;
use cqrs_wasi_host::runtime::RuntimeConfig;
use cqrs_wasi_host::secret::Secret;
use cqrs_wasi_host::store::MemoryStore;
use reqwest::StatusCode;

use crate::support::{self, TestHost};

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
        HostOptions::default(),
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
