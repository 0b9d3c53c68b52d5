//! Which component version handles which command and computes which
//! projection.
//!
//! The registry holds the live version of every named component and the
//! routing tables derived from their `describe` answers. Readers take a
//! snapshot of the tables without locking; a deploy builds new tables and
//! swaps them in atomically, so a call that already took a snapshot finishes
//! on the version it started with. The registry never compiles or validates
//! anything: it is handed finished [`LoadedComponent`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

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
    domain: String,
    entity_type: String,
    projection_type: String,
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
        domain: &str,
        entity_type: &str,
        command_type: &str,
    ) -> Option<&Arc<LoadedComponent>> {
        self.commands.get(&CommandRoute {
            domain: domain.to_owned(),
            entity_type: entity_type.to_owned(),
            command_type: command_type.to_owned(),
        })
    }

    /// The component that computes `projection_type` of
    /// `domain / entity_type`, and the projection's declaration.
    pub fn projection(
        &self,
        domain: &str,
        entity_type: &str,
        projection_type: &str,
    ) -> Option<(&Arc<LoadedComponent>, &ProjectionRoute)> {
        let key = ProjectionKey {
            domain: domain.to_owned(),
            entity_type: entity_type.to_owned(),
            projection_type: projection_type.to_owned(),
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

/// The live routing tables, swapped atomically on deploy.
#[derive(Debug, Default)]
pub struct Registry {
    routes: ArcSwap<Routes>,
    /// Serialises deploys, so that two never build tables from the same
    /// snapshot and one silently undoes the other.
    deploying: Mutex<()>,
}

impl Registry {
    /// A registry with no components.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The current routing tables. Hold on to them for the length of a call
    /// so that the whole call sees one version.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Makes `component` the live version of its name, replacing the version
    /// before it (returned). Refused, changing nothing, if another component
    /// already owns one of its routes.
    pub fn install(
        &self,
        component: LoadedComponent,
    ) -> Result<Option<Arc<LoadedComponent>>, RouteConflict> {
        let _deploying = self.deploying.lock().unwrap_or_else(|e| e.into_inner());
        let mut components = self.routes.load().components.clone();
        let previous = components.insert(component.name().to_owned(), Arc::new(component));
        let routes = Routes::build(components)?;
        self.routes.store(Arc::new(routes));
        Ok(previous)
    }
}
