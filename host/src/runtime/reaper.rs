//! Tearing finished calls down off the caller's path.
//!
//! Dropping a call's [`Store`] returns its instance's slot to the pooling
//! allocator: the pages the guest dirtied are found (`PAGEMAP_SCAN`) and
//! reset, a few microseconds that the caller would otherwise wait for
//! before it can answer. A [`CallStore`] hands its store to a thread that
//! drops it instead, unless that thread is behind by [`BACKLOG`] stores, in
//! which case it drops it in place: the work is the same, only who waits for
//! it changes, and the pool never holds more than [`BACKLOG`] + 1 finished
//! instances (it is sized for them; see `engine_config`).
//!
//! What a call must see finished before its caller goes on is finished
//! before the hand-off: the guest's output streams are closed in place, so
//! that its last partial line is logged before the call's answer.

use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use wasmtime::component::ResourceTable;
use wasmtime::{AsContext, AsContextMut, Store, StoreContext, StoreContextMut};

use super::CallState;

/// Finished stores that may wait for the reaper thread.
pub(super) const BACKLOG: u32 = 8;

/// Where finished stores go; cloned into every [`CallStore`].
#[derive(Clone)]
pub(super) struct Reaper(Option<SyncSender<Store<CallState>>>);

impl Reaper {
    /// Starts the thread, which ends once every sender is gone. Without a
    /// thread (it could not start), stores are dropped in place.
    pub(super) fn start() -> Reaper {
        let (sender, receiver) = sync_channel::<Store<CallState>>(BACKLOG as usize);
        let started = std::thread::Builder::new()
            .name("cqrs-wasi-reaper".into())
            .spawn(move || receiver.into_iter().for_each(drop));
        match started {
            Ok(_) => Reaper(Some(sender)),
            Err(e) => {
                tracing::warn!("cannot start the store reaper; calls end in place: {e}");
                Reaper(None)
            }
        }
    }

    /// `store`, to be dropped by the reaper when it is done.
    pub(super) fn wrap(&self, store: Store<CallState>) -> CallStore {
        CallStore {
            store: Some(store),
            reaper: self.clone(),
        }
    }
}

/// One call's store; see the module documentation for what its drop does.
pub(crate) struct CallStore {
    /// `Some` until dropped.
    store: Option<Store<CallState>>,
    reaper: Reaper,
}

impl CallStore {
    fn store(&self) -> &Store<CallState> {
        self.store
            .as_ref()
            .unwrap_or_else(|| unreachable!("a CallStore holds its store until dropped"))
    }

    fn store_mut(&mut self) -> &mut Store<CallState> {
        self.store
            .as_mut()
            .unwrap_or_else(|| unreachable!("a CallStore holds its store until dropped"))
    }
}

impl Deref for CallStore {
    type Target = Store<CallState>;

    fn deref(&self) -> &Store<CallState> {
        self.store()
    }
}

impl DerefMut for CallStore {
    fn deref_mut(&mut self) -> &mut Store<CallState> {
        self.store_mut()
    }
}

impl AsContext for CallStore {
    type Data = CallState;

    fn as_context(&self) -> StoreContext<'_, CallState> {
        self.store().as_context()
    }
}

impl AsContextMut for CallStore {
    fn as_context_mut(&mut self) -> StoreContextMut<'_, CallState> {
        self.store_mut().as_context_mut()
    }
}

impl Drop for CallStore {
    fn drop(&mut self) {
        let Some(mut store) = self.store.take() else {
            return;
        };
        drop(std::mem::replace(
            &mut store.data_mut().table,
            ResourceTable::new(),
        ));
        if let Some(sender) = &self.reaper.0 {
            match sender.try_send(store) {
                Ok(()) => {}
                Err(TrySendError::Full(store) | TrySendError::Disconnected(store)) => drop(store),
            }
        }
    }
}
