//! Which component version handles which command and computes which
//! projection, and which versions of each component were deployed.
//!
//! The registry holds the live version of every named component, the
//! routing tables derived from their `describe` answers, and each name's
//! version history (by digest) for rollback. Readers take a
//! snapshot of the tables without locking; a deploy builds new tables and
//! swaps them in atomically, so a call that already took a snapshot finishes
//! on the version it started with. The registry never compiles or validates
//! anything: it is handed finished [`LoadedComponent`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::model::{CommandType, Domain, EntityType, ProjectionType};
use crate::runtime::{CommandRoute, LoadedComponent, ProjectionRoute};

/// A route another component already owns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{route} is already handled by component {owner}")]
pub struct RouteConflict {
    /// The contested route, as `Domain/EntityType/Name`.
    pub route: String,
    /// The component that owns it.
    pub owner: String,
}

/// The routing tables at one moment.
#[derive(Debug, Default)]
pub struct Routes {
    components: BTreeMap<String, Arc<LoadedComponent>>,
    commands: HashMap<CommandRoute, Arc<LoadedComponent>>,
    projections: HashMap<ProjectionKey, (Arc<LoadedComponent>, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProjectionKey {
    domain: Domain,
    entity_type: EntityType,
    projection_type: ProjectionType,
}

impl Routes {
    fn build(components: BTreeMap<String, Arc<LoadedComponent>>) -> Result<Routes, RouteConflict> {
        let mut commands = HashMap::new();
        let mut projections = HashMap::new();
        for component in components.values() {
            for route in component.commands() {
                if let Some(owner) = commands.insert(route.clone(), component.clone()) {
                    return Err(RouteConflict {
                        route: format!(
                            "command {}/{}/{}",
                            route.domain, route.entity_type, route.command_type
                        ),
                        owner: owner.name().to_owned(),
                    });
                }
            }
            for (index, route) in component.projections().iter().enumerate() {
                let key = ProjectionKey {
                    domain: route.domain.clone(),
                    entity_type: route.entity_type.clone(),
                    projection_type: route.projection_type.clone(),
                };
                if let Some((owner, _)) = projections.insert(key, (component.clone(), index)) {
                    return Err(RouteConflict {
                        route: format!(
                            "projection {}/{}/{}",
                            route.domain, route.entity_type, route.projection_type
                        ),
                        owner: owner.name().to_owned(),
                    });
                }
            }
        }
        Ok(Routes {
            components,
            commands,
            projections,
        })
    }

    /// The component that handles `command_type` on `domain / entity_type`.
    pub fn command_handler(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        command_type: &CommandType,
    ) -> Option<&Arc<LoadedComponent>> {
        self.commands.get(&CommandRoute {
            domain: domain.clone(),
            entity_type: entity_type.clone(),
            command_type: command_type.clone(),
        })
    }

    /// The component that computes `projection_type` of
    /// `domain / entity_type`, and the projection's declaration.
    pub fn projection(
        &self,
        domain: &Domain,
        entity_type: &EntityType,
        projection_type: &ProjectionType,
    ) -> Option<(&Arc<LoadedComponent>, &ProjectionRoute)> {
        let key = ProjectionKey {
            domain: domain.clone(),
            entity_type: entity_type.clone(),
            projection_type: projection_type.clone(),
        };
        self.projections
            .get(&key)
            .map(|(component, index)| (component, &component.projections()[*index]))
    }

    /// Every live component, by name.
    pub fn components(&self) -> impl Iterator<Item = &Arc<LoadedComponent>> {
        self.components.values()
    }
}

/// One deployed version of a component, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The content digest (`sha256:...`).
    pub digest: String,
    /// When it was last made live.
    pub deployed_at: OffsetDateTime,
    /// Whether it serves now.
    pub live: bool,
}

/// Why a version could not be made live again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RollbackError {
    /// No component of that name was ever deployed.
    #[error("no component named {0}")]
    UnknownComponent(String),
    /// The name has no version to go back to.
    #[error("component {0} has no earlier version")]
    NoEarlierVersion(String),
    /// The name has no version with that digest.
    #[error("component {name} has no version {digest}")]
    UnknownVersion {
        /// The component's name.
        name: String,
        /// The digest asked for.
        digest: String,
    },
}

#[derive(Debug)]
struct Version {
    digest: String,
    deployed_at: OffsetDateTime,
    /// The compiled version, while it is kept in memory.
    loaded: Option<Arc<LoadedComponent>>,
}

/// The live routing tables, swapped atomically on deploy, and the history
/// of versions behind them.
#[derive(Debug)]
pub struct Registry {
    routes: ArcSwap<Routes>,
    /// Versions per name, oldest first. The mutex also serialises deploys,
    /// so that two never build tables from the same snapshot and one
    /// silently undoes the other.
    history: Mutex<BTreeMap<String, Vec<Version>>>,
    /// How many versions per name stay compiled in memory, for an instant
    /// rollback.
    loaded_versions: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(4)
    }
}

impl Registry {
    /// A registry with no components, keeping the newest `loaded_versions`
    /// versions of each name compiled in memory (the live one always).
    pub fn new(loaded_versions: usize) -> Self {
        Registry {
            routes: ArcSwap::default(),
            history: Mutex::default(),
            loaded_versions: loaded_versions.max(1),
        }
    }

    /// The current routing tables. Hold on to them for the length of a call
    /// so that the whole call sees one version.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Makes `component` the live version of its name, first recorded at
    /// `deployed_at`, and retires the version it replaces (whose calls in
    /// flight finish on it). Refused, changing nothing, if another component
    /// already owns one of its routes.
    pub fn install(
        &self,
        component: Arc<LoadedComponent>,
        deployed_at: OffsetDateTime,
    ) -> Result<(), RouteConflict> {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut components = self.routes.load().components.clone();
        let replaced = components.insert(component.name().to_owned(), component.clone());
        let routes = Routes::build(components)?;
        // A version rolled back to may have served before: it starts from
        // fresh instances. The one it replaces keeps none for later calls.
        component.revive();
        self.routes.store(Arc::new(routes));
        if let Some(replaced) = replaced.filter(|old| !Arc::ptr_eq(old, &component)) {
            replaced.retire();
        }

        let versions = history.entry(component.name().to_owned()).or_default();
        versions.retain(|v| v.digest != component.digest());
        versions.push(Version {
            digest: component.digest().to_owned(),
            deployed_at,
            loaded: Some(component),
        });
        let unload = versions.len().saturating_sub(self.loaded_versions);
        for version in &mut versions[..unload] {
            version.loaded = None;
        }
        Ok(())
    }

    /// Records a version that is not live and not loaded, such as an older
    /// version found on disk at start-up.
    pub fn remember(&self, name: &str, digest: &str, deployed_at: OffsetDateTime) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let versions = history.entry(name.to_owned()).or_default();
        if versions.iter().all(|v| v.digest != digest) {
            let at = versions.partition_point(|v| v.deployed_at <= deployed_at);
            versions.insert(
                at,
                Version {
                    digest: digest.to_owned(),
                    deployed_at,
                    loaded: None,
                },
            );
        }
    }

    /// The version a rollback of `name` goes to: `digest`, or the version
    /// deployed before the live one. Its compiled form, if still in memory.
    pub fn rollback_target(
        &self,
        name: &str,
        digest: Option<&str>,
    ) -> Result<(String, Option<Arc<LoadedComponent>>), RollbackError> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let versions = history
            .get(name)
            .ok_or_else(|| RollbackError::UnknownComponent(name.to_owned()))?;
        let live = self
            .routes
            .load()
            .components
            .get(name)
            .map(|c| c.digest().to_owned());
        let target = match digest {
            Some(digest) => versions
                .iter()
                .find(|v| v.digest == digest)
                .ok_or_else(|| RollbackError::UnknownVersion {
                    name: name.to_owned(),
                    digest: digest.to_owned(),
                })?,
            None => versions
                .iter()
                .rev()
                .find(|v| Some(&v.digest) != live.as_ref())
                .ok_or_else(|| RollbackError::NoEarlierVersion(name.to_owned()))?,
        };
        Ok((target.digest.clone(), target.loaded.clone()))
    }

    /// Every version of `name`, oldest first; empty if none was deployed.
    pub fn versions(&self, name: &str) -> Vec<VersionInfo> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let live = self
            .routes
            .load()
            .components
            .get(name)
            .map(|c| c.digest().to_owned());
        history
            .get(name)
            .into_iter()
            .flatten()
            .map(|v| VersionInfo {
                digest: v.digest.clone(),
                deployed_at: v.deployed_at,
                live: Some(&v.digest) == live.as_ref(),
            })
            .collect()
    }
}
