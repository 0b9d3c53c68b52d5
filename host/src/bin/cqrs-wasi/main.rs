//! `cqrs-wasi`: run the host, talk to a running one, or make a handler
//! project of your own (`new`, `build`, `dev`).

mod client;
mod project;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cqrs_wasi_host::Secret;
use cqrs_wasi_host::config::Config;
use cqrs_wasi_host::telemetry::{self, Telemetry, TelemetryConfig};

/// Event sourcing with handlers as WebAssembly components.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: load components, open the store, serve the HTTP API.
    ///
    /// With no configuration file it serves the bank example (built by
    /// `cargo xtask serve`) from a SQLite file under ./data on
    /// 127.0.0.1:8080.
    Serve {
        /// TOML configuration file.
        #[arg(long, short, env = "CQRS_WASI_CONFIG")]
        config: Option<PathBuf>,
        /// Listen on this address instead of the configured one.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Use the PostgreSQL database at this URL as the store
        /// (postgres://user:password@host:port/database), instead of the
        /// configured store.
        #[arg(long, env = "CQRS_WASI_STORE_URL", hide_env_values = true)]
        store_url: Option<String>,
        /// The PostgreSQL schema that holds the store (default: the
        /// configured one, or cqrs_wasi). Hosts sharing a store name the same
        /// schema.
        #[arg(long, env = "CQRS_WASI_STORE_SCHEMA")]
        store_schema: Option<String>,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
    #[command(flatten)]
    Project(project::ProjectCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            store_url,
            store_schema,
        } => serve(config, listen, store_url, store_schema).await,
        Command::Client(command) => client::run(command).await,
        Command::Project(command) => project::run(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(
    config_path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    store_url: Option<String>,
    store_schema: Option<String>,
) -> anyhow::Result<()> {
    let mut config = match &config_path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let _telemetry = telemetry::install(&config.telemetry)?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.store = config
        .store
        .with_postgres(store_url.map(Secret::new), store_schema)?;
    let host = config.build_host().await.with_context(|| {
        if config_path.is_none() {
            "starting the example host (run `cargo xtask serve` to build the example components first)"
        } else {
            "starting the host"
        }
    })?;
    if let Some(dir) = &config.watch_dir {
        tokio::spawn(cqrs_wasi_host::watch_directory(
            host.clone(),
            dir.clone(),
            std::time::Duration::from_millis(500),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving");
    let grace = std::time::Duration::from_millis(config.shutdown_timeout_ms);
    let (signalled, signal) = tokio::sync::oneshot::channel();
    let serving = axum::serve(
        cqrs_wasi_host::no_delay(listener),
        cqrs_wasi_host::router(host.clone(), &config.api()),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = signalled.send(tokio::time::Instant::now() + grace);
    })
    .into_future();
    let mut serving = std::pin::pin!(serving);
    // On the signal the server stops accepting connections, closes idle
    // ones, and lets each request in flight finish before closing its
    // connection; it resolves once all have.
    let deadline = tokio::select! {
        served = &mut serving => return Ok(served?),
        Ok(deadline) = signal => deadline,
    };
    match tokio::time::timeout_at(deadline, serving).await {
        Ok(served) => served?,
        Err(_) => tracing::warn!(
            "requests still in flight at the deadline are cut off: each appended all it would have, or nothing, and its client may get no answer"
        ),
    }
    host.shutdown(deadline).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs to stdout, at `info` unless `RUST_LOG` says otherwise, and
/// exports traces if the `OTEL_*` environment names a collector. Keep what
/// it returns until the end.
pub(crate) fn init_logging() -> anyhow::Result<Telemetry> {
    Ok(telemetry::install(&TelemetryConfig::default())?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = interrupt => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
    tracing::info!("shutting down");
}
