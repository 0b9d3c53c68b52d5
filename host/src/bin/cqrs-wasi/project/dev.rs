//! `cqrs-wasi dev`: the inner loop, save → call. A host on an in-memory
//! store (or a SQLite file) serves the project's component over the HTTP
//! API; the project's files are watched, and each change is rebuilt and
//! swapped in with [`Host::deploy`], so calls in flight finish on the
//! version they started with and the next ones get the new one. A build
//! that fails, or a component the host refuses, is logged and the live
//! version keeps serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use cqrs_wasi_host::store::{EventStore, MemoryStore, SqliteConfig, SqliteStore};
use cqrs_wasi_host::{ApiConfig, Host, Secret, no_delay, router};

use super::{Project, build};

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// The project's directory.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The address to serve the HTTP API on.
    #[arg(long, env = "CQRS_WASI_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep the events in this SQLite file across runs. Default: in
    /// memory, gone when dev stops.
    #[arg(long)]
    sqlite: Option<PathBuf>,
}

/// How often the project's files are looked at. A change is built once
/// they held still for one more look, since editors save in steps.
const POLL: Duration = Duration::from_millis(250);

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let _telemetry = crate::init_logging()?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("no project at {}", args.dir.display()))?;
    Project::open(&dir)?;
    let store: Arc<dyn EventStore> = match &args.sqlite {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            Arc::new(SqliteStore::open(path, SqliteConfig::default())?)
        }
        None => Arc::new(MemoryStore::new()),
    };
    let host = Host::builder().store(store).build()?;

    // Looked at before the first build, so that a save during it is built
    // next.
    let seen = snapshot(&dir);
    rebuild(&host, &dir).await;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving");
    let api = ApiConfig {
        admin_token: std::env::var("CQRS_WASI_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        ..ApiConfig::default()
    };
    let server = axum::serve(no_delay(listener), router(host.clone(), &api))
        .with_graceful_shutdown(crate::shutdown_signal());
    tokio::select! {
        served = async { server.await } => served?,
        () = watch(&host, &dir, seen) => {}
    }
    Ok(())
}

/// Rebuilds and swaps in the component each time the project's files
/// change; never returns.
async fn watch(host: &Host, dir: &Path, mut seen: Snapshot) {
    loop {
        tokio::time::sleep(POLL).await;
        let mut now = snapshot(dir);
        if now == seen {
            continue;
        }
        loop {
            tokio::time::sleep(POLL).await;
            let again = snapshot(dir);
            if again == now {
                break;
            }
            now = again;
        }
        seen = now;
        tracing::info!("a file changed; rebuilding");
        rebuild(host, dir).await;
    }
}

/// Builds the project and deploys the component if it is new; logs what
/// happened.
async fn rebuild(host: &Host, dir: &Path) {
    let project = dir.to_owned();
    let built = match tokio::task::spawn_blocking(move || build::component(&project)).await {
        Ok(Ok(built)) => built,
        Ok(Err(error)) => {
            tracing::warn!("the build failed, so the live version keeps serving: {error:#}");
            return;
        }
        Err(error) => {
            tracing::error!("the build stopped: {error}");
            return;
        }
    };
    if host.is_live(&built.name, &built.digest) {
        tracing::info!(component = %built.name, digest = %built.digest, "unchanged");
        return;
    }
    match host.deploy(&built.name, built.bytes.clone()).await {
        Ok(info) => tracing::info!(
            component = %info.name,
            digest = %info.digest,
            commands = %info.commands.join(" "),
            projections = %info.projections.join(" "),
            "swapped in"
        ),
        Err(error) => tracing::warn!(
            "{:#}; the live version keeps serving",
            build::refused(&built, error)
        ),
    }
}

/// Each watched file's size and modification time.
type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The project's files, but for what builds write: `target/`,
/// `Cargo.lock`, caches, and hidden files (editors' swap files too).
fn snapshot(dir: &Path) -> Snapshot {
    let mut files = Snapshot::new();
    walk(dir, true, &mut files);
    files
}

fn walk(dir: &Path, top: bool, files: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let written_by_builds = name.starts_with('.')
            || name.ends_with('~')
            || name == "node_modules"
            || name == "__pycache__"
            || (top && (name == "target" || name == "Cargo.lock"));
        if written_by_builds {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_dir() {
            walk(&entry.path(), false, files);
        } else {
            files.insert(entry.path(), (metadata.len(), metadata.modified().ok()));
        }
    }
}
