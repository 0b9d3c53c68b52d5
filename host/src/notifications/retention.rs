//! Outbox retention: the task that prunes what every destination has
//! delivered, once it is older than the retention.
//!
//! It owns *when* the outbox is pruned and *below which position*: the
//! lowest checkpoint of every destination the store lists, this host's and
//! those of any other host sharing the store, so that a destination that is
//! down (its checkpoint stuck) keeps every row from its checkpoint on. This
//! host's destinations are registered first, so that one that has not
//! delivered anything yet holds the floor at 1 on every host. What a prune
//! removes (the rows, the completion records no redelivery can need) and
//! what it keeps (the last row, dead letters' rows) is the store's
//! contract, [`Outbox::prune_outbox`](crate::store::Outbox::prune_outbox).
//! It must not move checkpoints or touch dead letters.
//!
//! Several hosts may prune one store at once: a prune removes only rows
//! every destination has passed, so two of them remove the same rows or
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error_chain::error_chain;
use crate::store::{EventStore, StoreError};

/// The shortest and longest pause between two prunes: a quarter of the
/// retention within these, so that a row outlives its retention by about a
/// quarter of it (a second at least, five minutes at most), and a zero
/// retention does not make the task spin.
const MIN_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What the retention task works from.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    /// How long a delivered row is kept; `None`: for ever (this host only
    /// registers its destinations, so that other hosts keep their rows).
    pub retain: Option<Duration>,
    /// This host's destinations, registered before the first prune.
    pub destinations: Vec<String>,
    /// Checkpoints the store keeps that are not outbox positions (the
    /// host's projection propagation follows events), and so hold nothing.
    pub not_outbox: Vec<String>,
}

impl Retention {
    /// Spawns the task; it runs until aborted, or until the destinations
    /// are registered when nothing is to be pruned.
    pub(crate) fn start(self, store: Arc<dyn EventStore>) -> JoinHandle<()> {
        let pause = self
            .retain
            .map_or(MAX_PAUSE, |retain| (retain / 4).clamp(MIN_PAUSE, MAX_PAUSE));
        tokio::spawn(async move {
            while let Err(error) = self.register(&*store).await {
                tracing::warn!(error = %error_chain(&error), "could not register the outbox destinations; trying again");
                tokio::time::sleep(MIN_PAUSE).await;
            }
            let Some(retain) = self.retain else { return };
            loop {
                if let Err(error) = self.prune(&*store, retain).await {
                    tracing::warn!(error = %error_chain(&error), "pruning the outbox failed");
                }
                tokio::time::sleep(pause).await;
            }
        })
    }

    async fn register(&self, store: &dyn EventStore) -> Result<(), StoreError> {
        for destination in &self.destinations {
            store.register_destination(destination).await?;
        }
        Ok(())
    }

    /// One prune below the lowest checkpoint.
    async fn prune(&self, store: &dyn EventStore, retain: Duration) -> Result<(), StoreError> {
        let checkpoints = store.checkpoints().await?;
        let below = checkpoints
            .iter()
            .filter(|(name, _)| !self.not_outbox.contains(name))
            .map(|&(_, next)| next)
            .min()
            // Registered, so listed; were one missing, nothing is passed.
            .filter(|_| {
                self.destinations
                    .iter()
                    .all(|own| checkpoints.iter().any(|(name, _)| name == own))
            })
            .unwrap_or(1);
        let pruned = store.prune_outbox(below, retain).await?;
        if pruned.rows > 0 || pruned.completions > 0 {
            tracing::debug!(
                below,
                rows = pruned.rows,
                completions = pruned.completions,
                "pruned the outbox"
            );
        }
        Ok(())
    }
}
