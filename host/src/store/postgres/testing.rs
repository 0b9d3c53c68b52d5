//! Scratch PostgreSQL schemas for tests (feature `test-util`).
//!
//! Every test that needs PostgreSQL takes a [`ScratchSchema`]: a schema name
//! of its own in the test database, so that tests and test runs never see
//! each other's events, dropped again when the test is done. Where no server
//! is reachable, a test is skipped, loudly, unless
//! [`REQUIRE_VAR`] says PostgreSQL must be there (as `cargo xtask test` does):
//! then it fails.

use std::io::Write;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::{PostgresConfig, PostgresStore};
use crate::error_chain::error_chain;

/// The environment variable naming the test database's URL.
pub const URL_VAR: &str = "CQRS_WASI_TEST_POSTGRES_URL";

/// The test database when [`URL_VAR`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The environment variable that, set to `1`, makes an unreachable test
/// database fail tests instead of skipping them.
pub const REQUIRE_VAR: &str = "CQRS_WASI_REQUIRE_POSTGRES";

/// How long a test waits for the server to answer before skipping.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The test database's URL.
pub fn url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of its own in the test database, dropped (with everything in
/// it) when this is dropped.
#[derive(Debug)]
pub struct ScratchSchema {
    url: String,
    name: String,
}

impl ScratchSchema {
    /// A fresh schema name, once the test database has answered. The schema
    /// itself is created by the first store opened in it.
    ///
    /// `None` when the server cannot be reached: the caller returns, and
    /// the test passes as skipped after saying so on stdout.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached and [`REQUIRE_VAR`] is `1`.
    pub async fn new() -> Option<ScratchSchema> {
        let url = url();
        if let Err(error) = reach(&url).await {
            let target = super::describe_url(&url);
            assert!(
                std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                "PostgreSQL is required ({REQUIRE_VAR}=1) but not reachable at {target}: {error}"
            );
            // To the process's stdout itself: the test harness captures
            // what `print!` and `eprint!` write and shows it only when a
            // test fails, and a skip is news when the test passes.
            let _ = writeln!(
                std::io::stdout(),
                "SKIPPED: PostgreSQL not reachable at {target} ({error}); \
                 set {URL_VAR} or start the server to run this test"
            );
            return None;
        }
        Some(ScratchSchema {
            url,
            name: format!("cqrs_wasi_test_{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings that open a store in this schema.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            schema: self.name.clone(),
            pool_size: 8,
        }
    }

    /// Opens a store in this schema.
    ///
    /// # Panics
    ///
    /// When the store cannot be opened.
    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url, self.config())
            .await
            .unwrap_or_else(|error| panic!("the store opens: {error}"))
    }

    /// Runs `sql` (one or more statements, no parameters) in this schema, on
    /// a connection of its own.
    ///
    /// # Panics
    ///
    /// When the statements fail.
    pub async fn execute(&self, sql: &str) {
        let client = connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect: {error}"));
        client
            .batch_execute(&format!("SET search_path = {}; {sql}", self.name))
            .await
            .unwrap_or_else(|error| panic!("{sql} failed: {error}"));
    }
}

impl Drop for ScratchSchema {
    /// Drops the schema on a thread and runtime of its own, so that it works
    /// from any context, a panicking test included. A failure is reported,
    /// not raised: the schema is only left behind.
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let client = connect(&url).await.map_err(|error| error_chain(&error))?;
                // A session that still holds a lock in the schema belongs to
                // this test (its connection task may never run again, if the
                // test's runtime is the thread this drop blocks): end it.
                client
                    .execute(
                        "SELECT pg_terminate_backend(l.pid)
                         FROM pg_locks l
                         JOIN pg_class c ON c.oid = l.relation
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await
                    .map_err(|error| error_chain(&error))?;
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                    ))
                    .await
                    .map_err(|error| error_chain(&error))
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("warning: scratch schema {} left behind: {error}", self.name)
            }
            Err(_) => eprintln!("warning: scratch schema {} left behind", self.name),
        }
    }
}

async fn reach(url: &str) -> Result<(), String> {
    let attempt = async {
        let client = connect(url).await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, tokio_postgres::Error>(())
    };
    match tokio::time::timeout(REACH_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error_chain(&error)),
        Err(_) => Err(format!("no answer within {REACH_TIMEOUT:?}")),
    }
}

/// One connection, driven by a task of the current runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error then has no one to tell.
        let _ = connection.await;
    });
    Ok(client)
}
