//! Deploying the components dropped into a watched directory.
//!
//! Each `NAME.wasm` file is component `NAME`. The directory is scanned
//! periodically; a file is deployed once its size and modification time held
//! still across two scans (debouncing, and a guard against deploying a file
//! half written), and only if its content is not the live version already.
//! Hidden files and other extensions are ignored, so writing `.NAME.wasm`
//! and renaming it into place is the safe way to drop a file. Deploys go
//! through [`Host::deploy`], with all its validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::host::Host;
use crate::model::{NameKind, validate_name};
use crate::runtime::digest_of;

/// What a scan saw of a file.
type Seen = (u64, Option<SystemTime>);

/// Watches `dir` until the task is dropped, scanning every `interval`.
pub async fn watch_directory(host: Host, dir: PathBuf, interval: Duration) {
    tracing::info!(dir = %dir.display(), "watching for components");
    let mut watcher = Watcher::default();
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        watcher.scan(&host, &dir).await;
    }
}

#[derive(Debug, Default)]
struct Watcher {
    /// Size and modification time of each file at the previous scan.
    previous: HashMap<PathBuf, Seen>,
    /// The digest last tried per name, so that a refused file is not tried
    /// again until it changes.
    tried: HashMap<String, String>,
}

impl Watcher {
    async fn scan(&mut self, host: &Host, dir: &Path) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot read the watched directory: {e}");
                return;
            }
        };
        let mut current = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = component_name(&path) else {
                continue;
            };
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let seen = (metadata.len(), metadata.modified().ok());
            if self.previous.get(&path) == Some(&seen) {
                self.deploy_if_new(host, &name, &path).await;
            }
            current.insert(path, seen);
        }
        self.previous = current;
    }

    async fn deploy_if_new(&mut self, host: &Host, name: &str, path: &Path) {
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read component file: {e}");
                return;
            }
        };
        let digest = digest_of(&bytes);
        if host.is_live(name, &digest) || self.tried.get(name) == Some(&digest) {
            return;
        }
        self.tried.insert(name.to_owned(), digest);
        match host.deploy(name, bytes).await {
            Ok(info) => {
                tracing::info!(component = name, digest = %info.digest, path = %path.display(), "deployed from the watched directory")
            }
            Err(e) => {
                tracing::warn!(component = name, path = %path.display(), "refused from the watched directory: {e}")
            }
        }
    }
}

/// `NAME` for a visible `NAME.wasm` whose name is a valid component name.
fn component_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    (!name.starts_with('.') && validate_name(NameKind::ComponentName, name).is_ok())
        .then(|| name.to_owned())
}
