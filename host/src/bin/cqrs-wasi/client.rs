//! The client commands: the HTTP API from the command line.
//!
//! Each prints the JSON answer on stdout, or the error's code and message on
//! stderr with a failing exit status.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::{Method, Url};

#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Base URL of the host.
    #[arg(
        long,
        env = "CQRS_WASI_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: Url,
}

/// Credentials of the admin API.
#[derive(Debug, Args)]
pub(crate) struct Admin {
    /// The host's admin token.
    #[arg(long, env = "CQRS_WASI_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Send a command, e.g. `command Bank Account acc-1 Deposit '{"amount": 5}'`.
    Command {
        domain: String,
        entity_type: String,
        instance_key: String,
        command_type: String,
        /// JSON payload; `{}` if omitted.
        payload: Option<String>,
        /// Makes retries safe: a key that already ran returns its outcome.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Ties together everything this command causes.
        #[arg(long)]
        correlation_id: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Read a stream's events.
    Events {
        domain: String,
        entity_type: String,
        instance_key: String,
        /// First sequence to read.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many events at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Query a projection's state, e.g. `projection Bank Account acc-1 Balance`.
    Projection {
        domain: String,
        entity_type: String,
        instance_key: String,
        projection: String,
        /// State as of this sequence instead of now.
        #[arg(long)]
        as_of: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Deploy a component (admin): validated, then swapped in atomically.
    Deploy {
        /// The component's `.wasm` file.
        file: std::path::PathBuf,
        /// The name to deploy it under; a new version of that name replaces
        /// the live one.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// List the live components and every version of each (admin).
    Components {
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// Make an earlier version live again (admin): the one with DIGEST, or
    /// the one before the live one.
    Rollback {
        name: String,
        digest: Option<String>,
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// Where each destination of the outbox stands: its checkpoint and lag
    /// (admin).
    Destinations {
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// List the notifications a destination refused for good (admin).
    DeadLetters {
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// Deliver a dead letter again, once its cause is fixed (admin).
    Redrive {
        /// The destination (`@local` for the local notification handlers).
        destination: String,
        /// The notification id.
        id: String,
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// Remove dead letters without delivering them: one, or every one of
    /// the destination (admin).
    PurgeDeadLetters {
        /// The destination (`@local` for the local notification handlers).
        destination: String,
        /// The notification id; every dead letter of the destination if
        /// omitted.
        id: Option<String>,
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        target: Target,
    },
    /// List the instance keys of an entity type.
    Instances {
        domain: String,
        entity_type: String,
        /// Continue after this key (the previous page's `nextCursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// How many keys at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(command: ClientCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let request = match command {
        ClientCommand::Command {
            domain,
            entity_type,
            instance_key,
            command_type,
            payload,
            idempotency_key,
            correlation_id,
            target,
        } => {
            let url = endpoint(
                &target.url,
                &[
                    "api",
                    "commands",
                    &domain,
                    &entity_type,
                    &instance_key,
                    &command_type,
                ],
            )?;
            let mut request = client
                .request(Method::POST, url)
                .header("content-type", "application/json")
                .body(payload.unwrap_or_else(|| "{}".to_owned()));
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            if let Some(id) = correlation_id {
                request = request.header("x-correlation-id", id);
            }
            request
        }
        ClientCommand::Events {
            domain,
            entity_type,
            instance_key,
            from,
            limit,
            target,
        } => client
            .get(endpoint(
                &target.url,
                &[
                    "api",
                    "streams",
                    &domain,
                    &entity_type,
                    &instance_key,
                    "events",
                ],
            )?)
            .query(&[("from", from.to_string()), ("limit", limit.to_string())]),
        ClientCommand::Projection {
            domain,
            entity_type,
            instance_key,
            projection,
            as_of,
            target,
        } => {
            let request = client.get(endpoint(
                &target.url,
                &[
                    "api",
                    "projections",
                    &domain,
                    &entity_type,
                    &instance_key,
                    &projection,
                ],
            )?);
            match as_of {
                Some(as_of) => request.query(&[("asOf", as_of)]),
                None => request,
            }
        }
        ClientCommand::Deploy {
            file,
            name,
            admin,
            target,
        } => {
            let bytes = tokio::fs::read(&file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            client
                .put(endpoint(&target.url, &["admin", "components", &name])?)
                .bearer_auth(admin.token)
                .header("content-type", "application/wasm")
                .body(bytes)
        }
        ClientCommand::Components { admin, target } => client
            .get(endpoint(&target.url, &["admin", "components"])?)
            .bearer_auth(admin.token),
        ClientCommand::Rollback {
            name,
            digest,
            admin,
            target,
        } => client
            .post(endpoint(
                &target.url,
                &["admin", "components", &name, "rollback"],
            )?)
            .bearer_auth(admin.token)
            .json(&serde_json::json!({ "digest": digest })),
        ClientCommand::Destinations { admin, target } => client
            .get(endpoint(&target.url, &["admin", "destinations"])?)
            .bearer_auth(admin.token),
        ClientCommand::DeadLetters { admin, target } => client
            .get(endpoint(&target.url, &["admin", "dead-letters"])?)
            .bearer_auth(admin.token),
        ClientCommand::Redrive {
            destination,
            id,
            admin,
            target,
        } => client
            .post(endpoint(
                &target.url,
                &["admin", "dead-letters", &destination, &id, "redrive"],
            )?)
            .bearer_auth(admin.token),
        ClientCommand::PurgeDeadLetters {
            destination,
            id,
            admin,
            target,
        } => {
            let mut segments = vec!["admin", "dead-letters", &destination];
            segments.extend(id.as_deref());
            client
                .delete(endpoint(&target.url, &segments)?)
                .bearer_auth(admin.token)
        }
        ClientCommand::Instances {
            domain,
            entity_type,
            cursor,
            limit,
            target,
        } => {
            let request = client
                .get(endpoint(
                    &target.url,
                    &["api", "instances", &domain, &entity_type],
                )?)
                .query(&[("limit", limit)]);
            match cursor {
                Some(cursor) => request.query(&[("cursor", cursor)]),
                None => request,
            }
        }
    };
    let response = request.send().await.context("cannot reach the host")?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("the host answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        bail!(
            "{} ({status}): {}",
            body["code"].as_str().unwrap_or("unknown"),
            body["message"].as_str().unwrap_or("")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// `base` with `segments` appended, each percent-encoded.
fn endpoint(base: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}
