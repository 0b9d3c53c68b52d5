//! The bounded, least-recently-used maps the host keeps in memory
//! (projection snapshots, stream heads), shared by concurrent calls. A
//! capacity of 0 keeps nothing, which is how each is turned off.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

/// An LRU map behind a lock; nothing at all when its capacity is 0.
#[derive(Debug)]
pub(super) struct Lru<K: Hash + Eq, V> {
    entries: Option<Mutex<LruCache<K, V>>>,
}

impl<K: Hash + Eq, V> Lru<K, V> {
    /// A map of at most `capacity` entries.
    pub(super) fn new(capacity: usize) -> Self {
        Lru {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
        }
    }

    /// The map, locked; `None` when it keeps nothing. A panic while it was
    /// locked leaves entries that are each whole, so the lock is taken over.
    pub(super) fn lock(&self) -> Option<MutexGuard<'_, LruCache<K, V>>> {
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
