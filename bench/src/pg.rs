//! PostgreSQL scratch schemas for the PostgreSQL rows: one for our
//! `PostgresStore`, one for postgres-es's tables, both dropped and made
//! anew before each run, in the database the URL names.

use anyhow::Context;
use cqrs_es::CqrsFramework;
use cqrs_es::persist::PersistedEventStore;
use postgres_es::{PostgresCqrs, PostgresEventRepository};

use crate::peers::BankAccount;

/// The schema our store uses.
pub const CQRS_WASI_SCHEMA: &str = "bench_cqrs_wasi";
/// The schema postgres-es's tables go in.
pub const POSTGRES_ES_SCHEMA: &str = "bench_postgres_es";

/// A connection for setting up the schemas.
pub struct Scratch {
    client: tokio_postgres::Client,
}

impl Scratch {
    /// Connects (no TLS: loopback or a trusted network only).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| "cannot connect to PostgreSQL for the PostgreSQL rows")?;
        tokio::spawn(connection);
        Ok(Scratch { client })
    }

    /// Drops our store's schema; the store creates it again when opened.
    pub async fn reset_cqrs_wasi(&self) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {CQRS_WASI_SCHEMA} CASCADE"))
            .await?;
        Ok(())
    }

    /// Makes postgres-es's tables anew, as its `db/init.sql` does.
    pub async fn reset_postgres_es(&self) -> anyhow::Result<()> {
        let s = POSTGRES_ES_SCHEMA;
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE;
                 CREATE SCHEMA {s};
                 CREATE TABLE {s}.events (
                     aggregate_type text NOT NULL,
                     aggregate_id text NOT NULL,
                     sequence bigint CHECK (sequence >= 0) NOT NULL,
                     event_type text NOT NULL,
                     event_version text NOT NULL,
                     payload json NOT NULL,
                     metadata json NOT NULL,
                     PRIMARY KEY (aggregate_type, aggregate_id, sequence));
                 CREATE TABLE {s}.snapshots (
                     aggregate_type text NOT NULL,
                     aggregate_id text NOT NULL,
                     last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                     current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                     payload json NOT NULL,
                     PRIMARY KEY (aggregate_type, aggregate_id, last_sequence));"
            ))
            .await?;
        Ok(())
    }
}

/// postgres-es as `postgres_cqrs` sets it up (event-store mode, a pool of
/// 10 connections), with its tables in [`POSTGRES_ES_SCHEMA`].
pub async fn postgres_es(url: &str) -> anyhow::Result<PostgresCqrs<BankAccount>> {
    let pool = postgres_es::default_postgress_pool(url).await;
    let repo = PostgresEventRepository::new(pool).with_tables(
        &format!("{POSTGRES_ES_SCHEMA}.events"),
        &format!("{POSTGRES_ES_SCHEMA}.snapshots"),
    );
    Ok(CqrsFramework::new(
        PersistedEventStore::new_event_store(repo),
        vec![],
        (),
    ))
}
