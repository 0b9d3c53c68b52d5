//! The TOML configuration of `cqrs-wasi serve`, and building a host from it.
//!
//! Every setting has a default, so an empty file (or none) serves the bank
//! example from `./data` on 127.0.0.1:8080. Relative paths are relative to
//! the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::api::ApiConfig;
use crate::grants::Grants;
use crate::host::{BuildError, Host, HostConfig, HostError};
use crate::notifications::model::NotificationKind;
use crate::notifications::{
    Auth, Destination, EventGridConfig, EventGridPublisher, EventSchema, KindSet, PublisherError,
    RaisePolicy, RaiseRule,
};
use crate::runtime::{Isolation, ReuseConfig, RuntimeConfig};
use crate::secret::Secret;
use crate::store::{
    EventStore, MemoryStore, PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, StoreError,
};
use crate::telemetry::TelemetryConfig;

/// Where the example bank component is built by `cargo xtask`.
pub const EXAMPLE_COMPONENT: &str = "target/components/wasm32-wasip2/component/bank.wasm";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long `cqrs-wasi serve`, told to stop (SIGTERM, Ctrl-C), gives
    /// the calls in flight and the outbox's dispatchers to finish, in
    /// milliseconds; what still runs then is abandoned, and the store is
    /// closed. Below the grace period of whatever stops the process
    /// (Kubernetes: 30 s), so that the host closes its store before it is
    /// killed.
    pub shutdown_timeout_ms: u64,
    /// Where the host keeps its own files: every deployed component version
    /// (`components/`) and their compiled code (`cache/`).
    pub state_dir: PathBuf,
    /// Bearer token of the admin API (deploy, list, roll back). The
    /// `CQRS_WASI_ADMIN_TOKEN` environment variable takes precedence. With
    /// neither, the admin API refuses every request.
    pub admin_token: Option<Secret>,
    /// Key the public API (`/api/...`) requires in the `X-Api-Key` header.
    /// The `CQRS_WASI_API_KEY` environment variable takes precedence. With
    /// neither, the public API is open.
    pub api_key: Option<Secret>,
    /// Secret the Event Grid webhook (`/api/eventgrid`) requires in the
    /// `X-Webhook-Secret` header. `CQRS_WASI_WEBHOOK_SECRET` takes
    /// precedence. With neither, the webhook is open.
    pub webhook_secret: Option<Secret>,
    /// A directory watched for `NAME.wasm` files: each new or changed file is
    /// deployed as component `NAME`.
    pub watch_dir: Option<PathBuf>,
    /// The event store.
    pub store: StoreConfig,
    /// Limits of the wasm runtime.
    pub runtime: Runtime,
    /// How commands run.
    pub commands: Commands,
    /// Components to load at start-up.
    pub components: Vec<ComponentConfig>,
    /// Which notifications are raised.
    pub notifications: Notifications,
    /// Event Grid topics the outbox is published to.
    pub topics: Vec<TopicConfig>,
    /// Where traces are exported (OTLP/HTTP); off by default.
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: ApiConfig::default().max_body_bytes,
            shutdown_timeout_ms: 10_000,
            state_dir: PathBuf::from("data"),
            admin_token: None,
            api_key: None,
            webhook_secret: None,
            watch_dir: None,
            store: StoreConfig::default(),
            runtime: Runtime::default(),
            commands: Commands::default(),
            components: vec![ComponentConfig {
                name: "bank".to_owned(),
                path: PathBuf::from(EXAMPLE_COMPONENT),
                grants: None,
            }],
            notifications: Notifications::default(),
            topics: Vec::new(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// The `[notifications]` section: which kinds of notification are raised,
/// and how long delivered ones are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notifications {
    /// The kinds raised by streams no rule names: any of `NewEntity`,
    /// `EventAppended`, `ProjectionCompleted` (default all three).
    pub raise: Vec<String>,
    /// Kinds raised by one domain, or one entity type of it.
    pub rules: Vec<RaiseRuleConfig>,
    /// How long an outbox row every destination (each topic, and the local
    /// handlers) has delivered is kept before it is pruned, in
    /// milliseconds (default 86 400 000: a day). Undelivered rows and dead
    /// letters' rows are never pruned.
    pub retain_delivered_ms: u64,
    /// How many local notification handler runs may be under way at once
    /// (default 16).
    pub handler_concurrency: Option<std::num::NonZeroUsize>,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            raise: NotificationKind::ALL
                .into_iter()
                .filter(|kind| kind.is_raised_by_streams())
                .map(|kind| kind.as_str().to_owned())
                .collect(),
            rules: Vec::new(),
            retain_delivered_ms: HostConfig::default()
                .retain_delivered
                .map_or(u64::MAX, millis),
            handler_concurrency: None,
        }
    }
}

/// One `[[notifications.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaiseRuleConfig {
    /// The domain.
    pub domain: String,
    /// The entity type; every one of the domain when missing.
    pub entity_type: Option<String>,
    /// The kinds raised (possibly none).
    pub raise: Vec<String>,
}

impl Notifications {
    fn policy(&self) -> Result<RaisePolicy, ConfigError> {
        let kinds = |names: &[String]| {
            names
                .iter()
                .map(|name| {
                    name.parse::<NotificationKind>()
                        .ok()
                        .filter(|kind| kind.is_raised_by_streams())
                        .ok_or_else(|| ConfigError::NotificationKind(name.clone()))
                })
                .collect::<Result<KindSet, _>>()
        };
        let mut policy = RaisePolicy::new(kinds(&self.raise)?);
        for rule in &self.rules {
            policy = policy.with_rule(RaiseRule {
                domain: rule.domain.clone(),
                entity_type: rule.entity_type.clone(),
                kinds: kinds(&rule.raise)?,
            });
        }
        Ok(policy)
    }
}

/// One `[[topics]]` entry: an Event Grid topic that gets every notification
/// of the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The destination's name: keeps its checkpoint and dead letters.
    pub name: String,
    /// The topic endpoint (`https://{topic}.{region}-1.eventgrid.azure.net`).
    pub endpoint: String,
    /// `eventgrid` (default) or `cloudevents`.
    #[serde(default)]
    pub schema: TopicSchema,
    /// The CloudEvents `source` (default `/cqrs-wasi`).
    pub source: Option<String>,
    /// The topic's access key. The environment variable named by `key_env`
    /// takes precedence.
    pub key: Option<Secret>,
    /// An environment variable holding the access key.
    pub key_env: Option<String>,
    /// Send a SAS token made from the key (`aeg-sas-token`) rather than the
    /// key itself (`aeg-sas-key`).
    #[serde(default)]
    pub sas_token: bool,
    /// Requests per batch in all before the batch waits for the next round
    /// (default 6).
    pub max_attempts: Option<u32>,
    /// The longest one request may take, in milliseconds (default 30 000).
    pub request_timeout_ms: Option<u64>,
    /// The most notifications one request carries (default 100): what a
    /// crash of the host may deliver twice.
    pub max_events_per_request: Option<std::num::NonZeroUsize>,
}

/// The event schema of a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicSchema {
    /// The Event Grid event schema.
    #[default]
    EventGrid,
    /// CloudEvents 1.0.
    CloudEvents,
}

impl TopicConfig {
    fn destination(&self) -> Result<Destination, ConfigError> {
        let key = self
            .key_env
            .as_deref()
            .and_then(secret_from_env)
            .or_else(|| self.key.clone())
            .ok_or_else(|| ConfigError::TopicKey(self.name.clone()))?;
        let auth = if self.sas_token {
            Auth::SasToken {
                key,
                ttl: Duration::from_secs(3600),
            }
        } else {
            Auth::Key(key)
        };
        let schema = match self.schema {
            TopicSchema::EventGrid => EventSchema::EventGrid,
            TopicSchema::CloudEvents => EventSchema::CloudEvents {
                source: self
                    .source
                    .clone()
                    .unwrap_or_else(|| "/cqrs-wasi".to_owned()),
            },
        };
        let mut config = EventGridConfig::new(&self.endpoint, schema, auth);
        if let Some(attempts) = self.max_attempts.and_then(std::num::NonZeroU32::new) {
            config.retry.max_attempts = attempts;
        }
        if let Some(timeout) = self.request_timeout_ms {
            config.request_timeout = Duration::from_millis(timeout);
        }
        if let Some(max) = self.max_events_per_request {
            config.max_events_per_request = max;
        }
        let retry = config.retry.clone();
        let publisher = EventGridPublisher::new(config).map_err(|source| ConfigError::Topic {
            name: self.name.clone(),
            source,
        })?;
        Ok(Destination {
            name: self.name.clone(),
            sink: Arc::new(publisher),
            retry,
        })
    }
}

/// Which event store to use.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file (the embedded default).
    Sqlite {
        /// The database file; its directory is created if missing.
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
        /// Fsync every acknowledged command (default true).
        #[serde(default = "default_true")]
        durable: bool,
    },
    /// A PostgreSQL database, which several hosts can share.
    Postgres {
        /// `postgres://user:password@host:port/database`.
        url: Secret,
        /// The PostgreSQL schema holding the store's tables (default
        /// `cqrs_wasi`); hosts sharing a store name the same one.
        #[serde(default = "default_postgres_schema")]
        schema: String,
        /// The most connections open at once (default 16).
        #[serde(default = "default_postgres_pool_size")]
        pool_size: usize,
    },
    /// Nothing survives a restart; for trying things out.
    Memory,
}

impl StoreConfig {
    /// The store with the command line's choices applied: `url` selects
    /// PostgreSQL at that URL, keeping the schema and pool size when this
    /// already is PostgreSQL; `schema` names the PostgreSQL schema, and
    /// needs PostgreSQL (configured, or selected by `url`).
    pub fn with_postgres(
        self,
        url: Option<Secret>,
        schema: Option<String>,
    ) -> Result<StoreConfig, ConfigError> {
        let (configured_url, configured_schema, pool_size) = match self {
            StoreConfig::Postgres {
                url,
                schema,
                pool_size,
            } => (Some(url), schema, pool_size),
            other if url.is_none() && schema.is_none() => return Ok(other),
            _ => (
                None,
                default_postgres_schema(),
                default_postgres_pool_size(),
            ),
        };
        Ok(StoreConfig::Postgres {
            url: url
                .or(configured_url)
                .ok_or(ConfigError::SchemaWithoutPostgres)?,
            schema: schema.unwrap_or(configured_schema),
            pool_size,
        })
    }
}

fn default_postgres_schema() -> String {
    PostgresConfig::default().schema
}

fn default_postgres_pool_size() -> usize {
    PostgresConfig::default().pool_size
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("data/events.db")
}

fn default_true() -> bool {
    true
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite {
            path: default_sqlite_path(),
            durable: true,
        }
    }
}

/// The `[runtime]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// Calls into components that may run at once.
    pub max_concurrent_calls: u32,
    /// How long a call waits for a free slot before a 503, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Linear memory per instance, in MiB.
    pub max_memory_mib: usize,
    /// Wall-clock limit of one call, in milliseconds.
    pub call_timeout_ms: u64,
    /// `reuse` (the default): instances are kept warm and reused, one call
    /// at a time, within one component version; `per-call`: a fresh
    /// instance for every call.
    pub isolation: Isolation,
    /// An instance is recycled after a number of calls drawn at random
    /// between these two (inclusive), so that instances do not all recycle
    /// at once.
    pub recycle_after_calls: [u32; 2],
    /// An instance whose linear memory grew past this many MiB is not
    /// reused.
    pub recycle_memory_mib: usize,
    /// Idle instances kept per component version (and role).
    pub max_idle_per_version: u32,
    /// Idle instances kept across the host.
    pub max_idle_instances: u32,
    /// An idle instance unused this long, in milliseconds, is let go.
    pub idle_timeout_ms: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        let defaults = RuntimeConfig::default();
        let reuse = &defaults.reuse;
        Runtime {
            max_concurrent_calls: defaults.max_concurrent_calls,
            queue_timeout_ms: millis(defaults.queue_timeout),
            max_memory_mib: defaults.max_memory_bytes >> 20,
            call_timeout_ms: millis(defaults.call_timeout),
            isolation: reuse.isolation,
            recycle_after_calls: [
                *reuse.recycle_after_calls.start(),
                *reuse.recycle_after_calls.end(),
            ],
            recycle_memory_mib: reuse.recycle_memory_bytes >> 20,
            max_idle_per_version: reuse.max_idle_per_version,
            max_idle_instances: reuse.max_idle,
            idle_timeout_ms: millis(reuse.idle_timeout),
        }
    }
}

fn secret_from_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .map(Secret::new)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Runtime {
    fn runtime_config(&self, cache_dir: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            max_concurrent_calls: self.max_concurrent_calls,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
            max_memory_bytes: self.max_memory_mib << 20,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            cache_dir: Some(cache_dir),
            reuse: ReuseConfig {
                isolation: self.isolation,
                recycle_after_calls: self.recycle_after_calls[0].max(1)
                    ..=self.recycle_after_calls[1]
                        .max(self.recycle_after_calls[0])
                        .max(1),
                recycle_memory_bytes: self.recycle_memory_mib << 20,
                max_idle_per_version: self.max_idle_per_version,
                max_idle: self.max_idle_instances,
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            },
        }
    }
}

/// The `[commands]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Commands {
    /// How many times a command's handler runs before the command fails with
    /// `conflict`. A host runs the commands to one stream one at a time, so
    /// only hosts sharing a store ever re-run a handler: raise it when many
    /// hosts contend for the same streams.
    pub attempts: u32,
}

impl Default for Commands {
    fn default() -> Self {
        Commands {
            attempts: HostConfig::default().command_attempts,
        }
    }
}

/// A component to load at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The name it is deployed under.
    pub name: String,
    /// The `.wasm` file.
    pub path: PathBuf,
    /// What it may touch; by default the domains it declares.
    pub grants: Option<Grants>,
}

/// Why the host could not start from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        source: Box<toml::de::Error>,
    },
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// A PostgreSQL schema was given for a store that is not PostgreSQL.
    #[error(
        "a PostgreSQL schema needs a PostgreSQL store: give its URL too (--store-url, or [store] kind = \"postgres\" with a url)"
    )]
    SchemaWithoutPostgres,
    /// The store's directory could not be created.
    #[error("cannot create {path}: {source}")]
    StoreDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The host could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A notification kind is not one of the three.
    #[error(
        "unknown notification kind {0:?}: expected NewEntity, EventAppended or ProjectionCompleted"
    )]
    NotificationKind(String),
    /// A topic has no access key.
    #[error("topic {0:?} has no access key: set key, or key_env to a variable that holds it")]
    TopicKey(String),
    /// A topic's publisher could not be set up.
    #[error("topic {name:?}: {source}")]
    Topic {
        /// The topic.
        name: String,
        /// Why.
        source: PublisherError,
    },
    /// The components of the last run could not be restored.
    #[error("cannot restore the deployed components: {0}")]
    Restore(Box<HostError>),
    /// A component file could not be read.
    #[error("cannot read component {name} from {path}: {source}")]
    ComponentFile {
        /// The component's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A component was refused.
    #[error("component {name} from {path} was refused: {source}")]
    Component {
        /// The component's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<HostError>,
    },
}

impl Config {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Settings of the HTTP API.
    pub fn api(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: self.max_body_bytes,
            admin_token: secret_from_env("CQRS_WASI_ADMIN_TOKEN")
                .or_else(|| self.admin_token.clone()),
            api_key: secret_from_env("CQRS_WASI_API_KEY").or_else(|| self.api_key.clone()),
            webhook_secret: secret_from_env("CQRS_WASI_WEBHOOK_SECRET")
                .or_else(|| self.webhook_secret.clone()),
            ..ApiConfig::default()
        }
    }

    /// Opens the configured store.
    pub async fn open_store(&self) -> Result<Arc<dyn EventStore>, ConfigError> {
        Ok(match &self.store {
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
            StoreConfig::Sqlite { path, durable } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| ConfigError::StoreDirectory {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let options = SqliteConfig {
                    durable: *durable,
                    ..SqliteConfig::default()
                };
                Arc::new(SqliteStore::open(path, options)?)
            }
            StoreConfig::Postgres {
                url,
                schema,
                pool_size,
            } => {
                let options = PostgresConfig {
                    schema: schema.clone(),
                    pool_size: *pool_size,
                };
                Arc::new(PostgresStore::open(url.expose(), options).await?)
            }
        })
    }

    /// Builds a host over the configured store, restores the components
    /// that were live when it last ran, and deploys each configured
    /// component file whose content was never deployed before (a file with
    /// a known version does not undo a later deploy or rollback). Fails on
    /// the first component that is refused.
    pub async fn build_host(&self) -> Result<Host, ConfigError> {
        let mut builder = Host::builder()
            .store(self.open_store().await?)
            .config(HostConfig {
                command_attempts: self.commands.attempts,
                raise: self.notifications.policy()?,
                retain_delivered: Some(Duration::from_millis(
                    self.notifications.retain_delivered_ms,
                )),
                handler_concurrency: self
                    .notifications
                    .handler_concurrency
                    .unwrap_or(HostConfig::default().handler_concurrency),
                ..HostConfig::default()
            })
            .runtime(self.runtime.runtime_config(self.state_dir.join("cache")))
            .repository(self.state_dir.join("components"));
        for component in &self.components {
            if let Some(grants) = &component.grants {
                builder = builder.grant(&component.name, grants.clone());
            }
        }
        for topic in &self.topics {
            builder = builder.destination(topic.destination()?);
        }
        let host = builder.build()?;
        host.restore()
            .await
            .map_err(|source| ConfigError::Restore(Box::new(source)))?;
        for component in &self.components {
            let bytes = tokio::fs::read(&component.path).await.map_err(|source| {
                ConfigError::ComponentFile {
                    name: component.name.clone(),
                    path: component.path.clone(),
                    source,
                }
            })?;
            if host.knows_version(&component.name, &bytes) {
                continue;
            }
            host.deploy(&component.name, bytes)
                .await
                .map_err(|source| ConfigError::Component {
                    name: component.name.clone(),
                    path: component.path.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(url: &str, schema: &str, pool_size: usize) -> String {
        format!("{:?}", (url, schema, pool_size))
    }

    /// The parts of a PostgreSQL store configuration, for comparing.
    fn parts(store: &StoreConfig) -> String {
        match store {
            StoreConfig::Postgres {
                url,
                schema,
                pool_size,
            } => postgres(url.expose(), schema, *pool_size),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_postgres_store_is_read_with_its_defaults_and_never_shown() {
        let config: Config = toml::from_str(
            "[store]\nkind = \"postgres\"\nurl = \"postgres://u:s3cret@db/events\"\n",
        )
        .unwrap();
        assert_eq!(
            parts(&config.store),
            postgres("postgres://u:s3cret@db/events", "cqrs_wasi", 16)
        );
        assert!(!format!("{config:?}").contains("s3cret"));

        let config: Config = toml::from_str(
            "[store]\nkind = \"postgres\"\nurl = \"postgres://db/x\"\nschema = \"one\"\npool_size = 2\n\n[commands]\nattempts = 40\n",
        )
        .unwrap();
        assert_eq!(parts(&config.store), postgres("postgres://db/x", "one", 2));
        assert_eq!(config.commands.attempts, 40);
        assert!(toml::from_str::<Config>("[store]\nkind = \"postgres\"\n").is_err());
    }

    #[test]
    fn delivered_notifications_are_kept_a_day_unless_configured() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.notifications.retain_delivered_ms, 86_400_000);
        let config: Config =
            toml::from_str("[notifications]\nretain_delivered_ms = 3_600_000\n").unwrap();
        assert_eq!(config.notifications.retain_delivered_ms, 3_600_000);
        assert!(
            toml::from_str::<Config>("[notifications]\nretain_delivered_ms = \"1h\"\n").is_err()
        );
    }

    #[test]
    fn the_command_line_selects_postgres_and_its_schema() {
        let url = || Some(Secret::new("postgres://db/x"));
        let sqlite = StoreConfig::default;
        let chosen = sqlite().with_postgres(url(), None).unwrap();
        assert_eq!(parts(&chosen), postgres("postgres://db/x", "cqrs_wasi", 16));
        let chosen = sqlite()
            .with_postgres(url(), Some("other".to_owned()))
            .unwrap();
        assert_eq!(parts(&chosen), postgres("postgres://db/x", "other", 16));
        assert!(matches!(
            sqlite().with_postgres(None, None),
            Ok(StoreConfig::Sqlite { .. })
        ));
        assert!(matches!(
            sqlite().with_postgres(None, Some("other".to_owned())),
            Err(ConfigError::SchemaWithoutPostgres)
        ));

        let configured = StoreConfig::Postgres {
            url: Secret::new("postgres://configured/db"),
            schema: "mine".to_owned(),
            pool_size: 3,
        };
        let kept = configured
            .clone()
            .with_postgres(None, Some("theirs".to_owned()))
            .unwrap();
        assert_eq!(
            parts(&kept),
            postgres("postgres://configured/db", "theirs", 3)
        );
        let moved = configured.with_postgres(url(), None).unwrap();
        assert_eq!(parts(&moved), postgres("postgres://db/x", "mine", 3));
    }

    #[test]
    fn telemetry_is_off_unless_configured_and_refuses_unknown_keys() {
        assert_eq!(Config::default().telemetry, TelemetryConfig::default());
        let config: Config = toml::from_str(
            "[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\nservice_name = \"bank\"\n",
        )
        .unwrap();
        assert_eq!(
            config.telemetry.endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(config.telemetry.service_name.as_deref(), Some("bank"));
        assert!(toml::from_str::<Config>("[telemetry]\nendpiont = \"x\"\n").is_err());
    }
}
