//! The shared [`EventStore`](super::EventStore): PostgreSQL, for several hosts on one store.
//!
//! This module owns the store's schema inside one PostgreSQL schema (named by
//! [`PostgresConfig::schema`]) and its migrations, the connection pool, and
//! the transaction protocol that keeps appends from several hosts correct. It
//! must not decide any append rule itself (those live in [`super::rules`]),
//! must never acknowledge a write before its transaction has committed, and
//! must never let a reader see a position while a lower one can still commit.
//!
//! Its parts, each documented where it lives:
//!
//! - [`transaction`]: why every write runs in one `REPEATABLE READ`
//!   transaction and runs again when it loses a race, what goes to the
//!   server in which round trip, and the transaction type with the rules'
//!   primitives on it;
//! - [`held`]: the writes a transaction holds back to send with its next
//!   statement;
//! - [`group_commit`]: how appends of events that wait together commit in
//!   one transaction;
//! - [`positions`]: why positions follow commit order, and how a
//!   transaction hands them out;
//! - [`schema`]: the tables and their migrations;
//! - [`event_store`]: the `EventStore` impl and its reads;
//! - [`outbox`]: outbox rows, the `LISTEN`/`NOTIFY` wake-up and destination
//!   claims;
//! - [`error`]: the client's errors, and which of them are lost races.

mod error;
mod event_store;
mod group_commit;
mod held;
mod outbox;
mod positions;
mod schema;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod transaction;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use self::error::OpenError;
use self::group_commit::{Job, MAX_BATCH, commit_appends};
use self::schema::validate_schema_name;
use self::transaction::{connection, transact};
use crate::store::outbox::Feeds;
use crate::store::rules::{Append, Write};
use crate::store::{AppendOutcome, StoreError};

/// How long connecting may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for a pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How a [`PostgresStore`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The PostgreSQL schema that holds the store's tables, created when
    /// missing. Hosts sharing a store name the same schema; a database can
    /// hold several stores in different schemas. Lowercase ASCII letters,
    /// digits and `_`, not starting with a digit, at most 63 bytes. Default
    /// `cqrs_wasi`.
    pub schema: String,
    /// The most connections open at once. Default 16.
    pub pool_size: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            schema: "cqrs_wasi".to_owned(),
            pool_size: 16,
        }
    }
}

/// An event store in a PostgreSQL schema, which several hosts may share.
///
/// Cheap to share behind an `Arc`; every call takes a connection from the
/// pool for its duration. Connections are not encrypted (no TLS): use it on
/// loopback or a trusted network.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// Where the database is, without credentials, for messages.
    target: String,
    feeds: Arc<Feeds>,
    dropped_claims: Arc<outbox::DroppedClaims>,
    /// Where appends queue for [`commit_appends`], which ends when this
    /// sender is dropped with the store.
    appends: mpsc::Sender<Job>,
    /// Turns the server's notifications into `feeds`; stopped
    /// when the store is dropped.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Where a database URL points, without credentials: `host:port/database`.
fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => describe(&config),
        Err(_) => "<an unparsable PostgreSQL URL>".to_owned(),
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            // One port for all hosts, or one each; 5432 when none is given.
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or_default())
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// or the key-value form) and opens the store in the schema `config`
    /// names, creating the schema and its tables when missing and migrating an
    /// older version. Hosts opening the same schema at once take turns.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when the schema was written by
    /// a newer version of this code, and with [`StoreError::Backend`] naming
    /// the schema and the server (never the password) when the URL or the
    /// settings are invalid or the server cannot be reached.
    ///
    /// The store's tasks (the one that commits appends, the one that
    /// listens for other hosts' changes) run on the runtime this is called
    /// on, so use the store while that runtime runs: once it has shut down,
    /// appends fail.
    pub async fn open(url: &str, config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let open_error = |target: &str, source: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::backend(OpenError {
                schema: config.schema.clone(),
                target: target.to_owned(),
                source,
            })
        };
        let mut client_config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| open_error(&describe_url(url), Box::new(error)))?;
        let target = describe(&client_config);
        validate_schema_name(&config.schema).map_err(|error| open_error(&target, error.into()))?;
        if config.pool_size == 0 {
            return Err(open_error(
                &target,
                "the pool size must be at least 1".into(),
            ));
        }
        // Every connection resolves the store's tables, and nothing else, in
        // its schema. The name was validated, so it needs no quoting.
        let search_path = format!("-c search_path={}", config.schema);
        let startup_options = match client_config.get_options() {
            Some(given) => format!("{given} {search_path}"),
            None => search_path,
        };
        client_config.options(&startup_options);
        if client_config.get_application_name().is_none() {
            client_config.application_name("cqrs-wasi");
        }
        if client_config.get_connect_timeout().is_none() {
            client_config.connect_timeout(CONNECT_TIMEOUT);
        }
        let listen_config = client_config.clone();
        let manager = Manager::from_config(
            client_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| open_error(&target, error.into()))?;
        let feeds = Arc::new(Feeds::default());
        let (appends, queued) = mpsc::channel(MAX_BATCH);
        tokio::spawn(commit_appends(pool.clone(), queued));
        let store = PostgresStore {
            appends,
            pool,
            schema: config.schema.clone(),
            target,
            listener: outbox::listen(listen_config, config.schema.clone(), feeds.clone()),
            feeds,
            dropped_claims: Default::default(),
        };
        store.migrate().await.map_err(|error| match error {
            StoreError::Backend(source) => open_error(&store.target, source),
            other => other,
        })?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        connection(&self.pool).await
    }

    /// Runs `append` through the queue that commits appends of events in
    /// batches; an append of no events, which only records its command, in a
    /// transaction of its own.
    async fn append_grouped(&self, append: Append) -> Result<AppendOutcome, StoreError> {
        if !append.adds().events {
            return transact(&self.pool, &append).await;
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::backend("the store's append queue is gone");
        self.appends
            .send(Job { append, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `write` in a transaction of its own.
    async fn write<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        transact(&self.pool, &write).await
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .field("pool", &self.pool.status())
            .finish()
    }
}
