//! The wasmtime side of the host: one [`Engine`] and [`Linker`], loading and
//! validating components, and calling their exports in fresh instances.
//!
//! This module narrows wasmtime to what handlers need: the component model
//! only, async calls only, one instance per call from a pre-linked
//! `InstancePre` out of the pooling allocator, a deadline per call enforced
//! by epoch interruption, and a memory limit per instance. Guests get WASI
//! clocks and random numbers, their stdout/stderr go to the log, and they
//! see no filesystem, network, environment or arguments.
//!
//! It knows nothing about stores, routing or HTTP: what a guest's
//! `event-store` import does is decided by the [`GuestServices`] the caller
//! passes in for the call.

// Generated code; its documentation is the WIT file's.
#[allow(missing_docs)]
mod bindings;
mod component;
mod convert;
mod guest_log;
mod imports;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::cqrs_wasi::handlers::commands::{
    CommandOutcome as SendOutcome, CommandRequest as SendRequest,
};
pub use bindings::notification_handler::Subscription;
pub use bindings::wit;
pub(crate) use component::Spent;
pub use component::{
    CommandRoute, LoadError, LoadedComponent, ProjectionRoute, Projector, SubscriptionRoute,
    digest_of,
};
pub(crate) use convert::{context_param, stream_from_wit, stream_param};

use crate::model::{RecordedEvent, StreamId};
use crate::store::InstancePage;

/// Instances one call may hold at once: a command handler's, and that of a
/// projection it runs through `event-store.run-projection`.
pub const INSTANCES_PER_CALL: u32 = 2;

/// Handler instances that may be kept past their call per call slot, to fold
/// the command's own events once they are appended (see [`Runtime::park`]).
const PARKED_PER_CALL: u32 = 1;

/// Bytes of a linear memory kept resident (reset with `memset`) when its
/// slot is freed; see `engine_config`.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// Bytes of a table kept resident when its slot is freed.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How often the epoch advances. A guest past its deadline is stopped within
/// one tick, and a long-running guest yields its thread once per tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of the runtime. Every field has a default chosen for a small
/// server; see each field for what it costs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Calls that may run at once, across all components. Each may use up
    /// to [`INSTANCES_PER_CALL`] instances (a command handler and a
    /// projection it runs), and as many handler instances again may be kept
    /// past their calls to fold the commands' events; the pooling allocator
    /// reserves address space (not memory) for all of them up front.
    pub max_concurrent_calls: u32,
    /// How long a call waits for a free slot when all are busy before it is
    /// refused with [`GuestFault::Busy`] (HTTP 503 with `Retry-After`).
    pub queue_timeout: Duration,
    /// Linear memory one instance may grow to. Past it, `memory.grow` fails
    /// and the guest's allocator typically traps: that call fails alone.
    pub max_memory_bytes: usize,
    /// Wall-clock time one call may run before it is stopped.
    pub call_timeout: Duration,
    /// Where compiled components are cached, so that a restart loads them
    /// without compiling. `None`: compile on every load.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_calls: 128,
            queue_timeout: Duration::from_secs(2),
            max_memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            cache_dir: None,
        }
    }
}

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not configure the wasm runtime: {0}")]
pub struct RuntimeError(String);

/// Why a call into a component failed without an answer from the guest.
/// Nothing the call produced is kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestFault {
    /// The call ran past [`RuntimeConfig::call_timeout`] and was stopped.
    #[error("component {component} ran past its {timeout:?} deadline and was stopped")]
    DeadlineExceeded {
        /// The component's name.
        component: String,
        /// The deadline it had.
        timeout: Duration,
    },
    /// The guest trapped (a panic, an out-of-bounds access, running out of
    /// memory, ...).
    #[error("component {component} trapped: {message}")]
    Trapped {
        /// The component's name.
        component: String,
        /// What wasmtime reported.
        message: String,
    },
    /// Every call slot stayed busy for the whole queue timeout.
    #[error("all {slots} call slots stayed busy for {waited:?}; try again shortly")]
    Busy {
        /// How many calls may run at once.
        slots: u32,
        /// How long the call waited.
        waited: Duration,
    },
    /// No instance could be created.
    #[error("component {component} could not be instantiated: {message}")]
    Instantiation {
        /// The component's name.
        component: String,
        /// What wasmtime reported.
        message: String,
    },
}

/// What a guest's `event-store` import can see during one call. The host
/// decides per call: a command handler reads its stream pinned at the
/// sequence the host will append after.
#[async_trait::async_trait]
pub trait GuestServices: Send + Sync {
    /// `event-store.read-stream`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, wit::StoreError>;

    /// `event-store.stream-sequence`.
    async fn stream_sequence(&self, stream: &StreamId) -> Result<u64, wit::StoreError>;

    /// `event-store.list-instances`.
    async fn list_instances(
        &self,
        domain: &str,
        entity_type: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage, wit::StoreError>;

    /// `event-store.run-projection`: the state as JSON.
    async fn run_projection(
        &self,
        projection_type: &str,
        stream: &StreamId,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, wit::StoreError>;

    /// `commands.send`.
    async fn send_command(&self, request: SendRequest) -> Result<SendOutcome, wit::SendError>;

    /// `publisher.publish`.
    async fn publish(
        &self,
        topic: String,
        event: wit::CustomEvent,
    ) -> Result<(), wit::PublishError>;
}

/// The engine, the linker and the limits every call runs under.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    /// One permit per call that may run; see [`Runtime::reserve`].
    slots: Arc<Semaphore>,
    /// One permit per instance that may be kept past its call; see
    /// [`Runtime::park`].
    parked: Arc<Semaphore>,
    /// Identifies the engine's compiled-code format (wasmtime version,
    /// target, settings) in cache file names, so that a cached artifact of
    /// another engine is never even tried.
    engine_key: String,
    compilations: AtomicU64,
    instantiations: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and linker, and starts the epoch ticker (a thread
    /// that ends when the engine is dropped).
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine =
            Engine::new(&engine_config(&config)).map_err(|e| RuntimeError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError(e.to_string()))?;
        bindings::cqrs_wasi::handlers::event_store::add_to_linker::<
            CallState,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |state| state)
        .map_err(|e| RuntimeError(e.to_string()))?;
        bindings::cqrs_wasi::handlers::commands::add_to_linker::<
            CallState,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |state| state)
        .map_err(|e| RuntimeError(e.to_string()))?;
        bindings::cqrs_wasi::handlers::publisher::add_to_linker::<
            CallState,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |state| state)
        .map_err(|e| RuntimeError(e.to_string()))?;
        spawn_epoch_ticker(&engine);
        let engine_key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        Ok(Runtime {
            slots: Arc::new(Semaphore::new(config.max_concurrent_calls as usize)),
            parked: Arc::new(Semaphore::new(
                (config.max_concurrent_calls * PARKED_PER_CALL) as usize,
            )),
            engine,
            linker,
            config,
            engine_key,
            compilations: AtomicU64::new(0),
            instantiations: AtomicU64::new(0),
        })
    }

    /// Waits for a call slot: every top-level call into a component (a
    /// command, a projection query, a `describe` at load) holds one while it
    /// runs, and a projection run from inside a command uses its command's.
    /// The pool has room for [`INSTANCES_PER_CALL`] instances per slot, so
    /// a call holding a slot never fails for want of an instance.
    pub async fn reserve(&self) -> Result<CallSlot, GuestFault> {
        let waited = self.config.queue_timeout;
        match tokio::time::timeout(waited, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(CallSlot(permit)),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(GuestFault::Busy {
                slots: self.config.max_concurrent_calls,
                waited,
            }),
        }
    }

    /// Keeps a command handler's instance past its call, without its call
    /// slot, while fewer than [`PARKED_PER_CALL`] per slot are kept; `None`
    /// (the instance dropped) when that many are. The pool has room for
    /// them beside the instances of running calls, so a kept instance never
    /// makes a call fail for want of one, and it can still be called (as a
    /// [`Projector`]) without a slot.
    pub(crate) fn park(&self, mut spent: Spent) -> Option<Spent> {
        let permit = self.parked.clone().try_acquire_owned().ok()?;
        spent.park(permit);
        Some(spent)
    }

    /// How many components this runtime compiled (rather than loaded from
    /// the cache) since it was built.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// How many instances this runtime created since it was built.
    pub fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }

    /// The limits calls run under.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// A store for one call, with its deadline armed.
    fn new_store(
        &self,
        component: &Arc<str>,
        services: Option<Arc<dyn GuestServices>>,
    ) -> Store<CallState> {
        let state = CallState {
            component: component.clone(),
            wasi: None,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(self.config.max_memory_bytes)
                .build(),
            services,
            deadline: Instant::now() + self.config.call_timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    // Running calls' instances and parked handlers'.
    let instances = config
        .max_concurrent_calls
        .saturating_mul(INSTANCES_PER_CALL + PARKED_PER_CALL);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        // A Rust component built for wasm32-wasip2 holds a handful of core
        // instances (the program, WASI adapter shims) and one or two memories.
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size(config.max_memory_bytes)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        // Resetting a slot for reuse: by default every memory and table is
        // `madvise`d back to zero when its instance ends, which costs a
        // system call, TLB shootdowns on every core and a page fault for
        // each page the next instance touches (half the time of a
        // command, measured by `cargo xtask bench`). Instead, the pages an
        // instance dirtied (found with the `PAGEMAP_SCAN` ioctl on Linux
        // 6.7+; elsewhere the lowest addresses) are `memset` back to their
        // initial contents and stay resident, up to these many bytes per
        // memory and table; beyond that, `madvise` as before. The cost is
        // resident memory: at most this much per slot used so far (slots are
        // reused warm first), which a command-sized instance rarely dirties.
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .wasm_component_model(true);
    wasm
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is gone.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("cqrs-wasi-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("cannot start the epoch ticker: {e}"));
}

/// A reserved call slot; the slot frees when this drops.
#[derive(Debug)]
pub struct CallSlot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// A kept instance's place in [`Runtime::park`]'s count; it frees when the
/// instance drops.
#[derive(Debug)]
struct ParkedSlot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// The error an epoch callback raises when a call is past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Everything one call's [`Store`] holds.
pub(crate) struct CallState {
    component: Arc<str>,
    /// Built on the guest's first WASI call, as most calls make none (a
    /// handler that neither logs nor reads the clock). Building one seeds
    /// its random number generators twice, as the builder leaves a fresh
    /// spare behind: 0.5 µs of the 8 µs an instance and a call take
    /// (figure 4 of BENCHMARKS.md).
    wasi: Option<CallWasi>,
    table: ResourceTable,
    limits: wasmtime::StoreLimits,
    services: Option<Arc<dyn GuestServices>>,
    deadline: Instant,
}

/// A call's WASI context and the stderr it writes to.
struct CallWasi {
    ctx: WasiCtx,
    stderr: guest_log::GuestLog,
}

impl CallWasi {
    fn new(component: &Arc<str>) -> Self {
        let (stdout, stderr) = guest_log::GuestLog::for_call(component.clone());
        let mut builder = WasiCtx::builder();
        builder.stdout(stdout).stderr(stderr.clone());
        CallWasi {
            ctx: builder.build(),
            stderr,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self
            .wasi
            .get_or_insert_with(|| CallWasi::new(&self.component));
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut self.table,
        }
    }
}

/// Turns a wasmtime error from a call into a [`GuestFault`] whose message
/// says what happened in one line: the trap, and the guest's last words on
/// stderr (a panic message, typically). The full error, with the guest's
/// backtrace, goes to the log.
fn fault(
    component: &str,
    timeout: Duration,
    store: &Store<CallState>,
    error: wasmtime::Error,
) -> GuestFault {
    if error.is::<DeadlineExceeded>() {
        return GuestFault::DeadlineExceeded {
            component: component.to_owned(),
            timeout,
        };
    }
    tracing::warn!(component, "guest fault: {error:?}");
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(said) = store
        .data()
        .wasi
        .as_ref()
        .and_then(|wasi| wasi.stderr.last_lines())
    {
        message = format!("{message}; its stderr said: {said}");
    }
    GuestFault::Trapped {
        component: component.to_owned(),
        message,
    }
}
