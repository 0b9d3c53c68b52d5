//! One command at a time per stream, within this host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::model::StreamId;

/// A lock per stream, created on first use and dropped with its last user,
/// so the map holds only streams with a command in flight.
#[derive(Debug, Default)]
pub(super) struct StreamLocks {
    locks: Mutex<HashMap<StreamId, Arc<AsyncMutex<()>>>>,
}

/// Holds a stream's turn; releasing it forgets the lock if nobody waits.
pub(super) struct Turn<'a> {
    locks: &'a StreamLocks,
    stream: StreamId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl StreamLocks {
    pub(super) async fn lock(&self, stream: &StreamId) -> Turn<'_> {
        let lock = self.map().entry(stream.clone()).or_default().clone();
        Turn {
            locks: self,
            stream: stream.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<AsyncMutex<()>>>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // With our guard gone, the map holds the only reference unless a
        // waiter (each holds a clone) still needs the lock.
        if map
            .get(&self.stream)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.stream);
        }
    }
}
