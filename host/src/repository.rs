//! Deployed component versions on disk: the bytes of every version and the
//! version list of each name, so that a restarted host serves what was live
//! and can roll back to any version ever deployed.
//!
//! Layout: `{dir}/{name}/{sha256 hex}.wasm` and `{dir}/{name}/versions.json`.
//! Every file is written atomically (`atomic_file`). This module only stores;
//! it never validates or compiles a component.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::registry::VersionInfo;

/// A failure to read or write the repository.
#[derive(Debug, thiserror::Error)]
#[error("component repository, {path}: {source}")]
pub struct RepositoryError {
    /// The file or directory involved.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: std::io::Error,
}

/// The versions of one component name, as `versions.json` holds them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    /// Oldest first.
    versions: Vec<ManifestVersion>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestVersion {
    digest: String,
    #[serde(with = "time::serde::rfc3339")]
    deployed_at: OffsetDateTime,
    live: bool,
}

/// A directory of deployed component versions.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    /// Opens (creating it if needed) the repository in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RepositoryError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| RepositoryError {
            path: dir.clone(),
            source,
        })?;
        Ok(Repository { dir })
    }

    fn version_path(&self, name: &str, digest: &str) -> PathBuf {
        self.dir
            .join(name)
            .join(format!("{}.wasm", digest.trim_start_matches("sha256:")))
    }

    /// Keeps the bytes of a version (once; a digest names its content).
    pub fn save_version(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RepositoryError> {
        let path = self.version_path(name, digest);
        if path.is_file() {
            return Ok(());
        }
        crate::atomic_file::write(&path, bytes).map_err(|source| RepositoryError { path, source })
    }

    /// The bytes of a kept version.
    pub fn read_version(&self, name: &str, digest: &str) -> Result<Vec<u8>, RepositoryError> {
        let path = self.version_path(name, digest);
        std::fs::read(&path).map_err(|source| RepositoryError { path, source })
    }

    /// Records the version list of `name`.
    pub fn save_versions(
        &self,
        name: &str,
        versions: &[VersionInfo],
    ) -> Result<(), RepositoryError> {
        let manifest = Manifest {
            versions: versions
                .iter()
                .map(|v| ManifestVersion {
                    digest: v.digest.clone(),
                    deployed_at: v.deployed_at,
                    live: v.live,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| RepositoryError {
            path: self.dir.join(name),
            source: e.into(),
        })?;
        let path = self.dir.join(name).join("versions.json");
        crate::atomic_file::write(&path, &json).map_err(|source| RepositoryError { path, source })
    }

    /// Every name's recorded version list, oldest version first.
    pub fn all_versions(&self) -> Result<Vec<(String, Vec<VersionInfo>)>, RepositoryError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| RepositoryError {
            path: self.dir.clone(),
            source,
        })?;
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RepositoryError {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path().join("versions.json");
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read(&path).map_err(|source| RepositoryError {
                path: path.clone(),
                source,
            })?;
            let manifest: Manifest =
                serde_json::from_slice(&text).map_err(|e| RepositoryError {
                    path: path.clone(),
                    source: e.into(),
                })?;
            let versions = manifest
                .versions
                .into_iter()
                .map(|v| VersionInfo {
                    digest: v.digest,
                    deployed_at: v.deployed_at,
                    live: v.live,
                })
                .collect();
            all.push((name, versions));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}
