//! The wasmtime side of the host: one [`Engine`], a linker per role,
//! loading and validating components, and calling their exports in warm
//! instances.
//!
//! This module narrows wasmtime to what handlers need: the component model
//! only, async calls only, instances from a pre-linked `InstancePre` out of
//! the pooling allocator, kept warm per component version and role
//! ([`pool`]) or made fresh for every call ([`Isolation::PerCall`]), a
//! deadline per call enforced by epoch interruption, and a memory limit per
//! instance. Guests get WASI clocks and random numbers, their stdout/stderr
//! go to the log, and they see no filesystem, network, environment or
//! arguments.
//!
//! It knows nothing about stores, routing or HTTP: what a guest's imports
//! do is decided by the services the caller passes in for each call (see
//! [`roles`]).

// Generated code; its documentation is the WIT file's.
#[allow(missing_docs)]
mod bindings;
mod component;
mod convert;
mod guest_log;
mod native;
mod pool;
mod roles;
mod routes;
mod state;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use bindings::wit;
pub(crate) use component::Instance;
pub use component::{LoadError, LoadedComponent, digest_of};
pub(crate) use convert::{context_param, stream_from_wit, stream_param};
pub use native::NativeHandlers;
pub use pool::{Isolation, ReuseConfig};
pub(crate) use roles::{CommandImports, NotificationImports, ProjectionImports, Role};
pub use roles::{NotificationServices, SendOutcome, SendRequest, StoreReads};
pub(crate) use routes::SubscriptionRoute;
pub use routes::{CommandRoute, ProjectionRoute};

use pool::Instances;
use state::CallState;

/// Instances one call may hold at once: a command handler's, and that of a
/// projection it runs through `event-store.run-projection`.
pub const INSTANCES_PER_CALL: u32 = 2;

/// Core instances the pool has room for per component instance. A
/// component instantiates one core instance per module it embeds: the
/// Rust bank 3 (the program, the WASI adapter, a shim), the JavaScript
/// bank (ComponentizeJS) 4, the Python bank (componentize-py) 14 (CPython
/// and the C libraries it links dynamically, each a module of its own, the
/// WASI adapter, the shims). At 8, which fitted Rust, a host with one call
/// slot and no idle instances could not run a Python command and the
/// projection it asks for at once (28 core instances against 16). The
/// bound is only a count: wasmtime allocates a core instance's metadata
/// when it is made, so room that goes unused costs nothing.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Bytes of a linear memory kept resident (reset with `memset`) when its
/// slot is freed; see `engine_config`.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// Bytes of a table kept resident when its slot is freed.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How often the epoch advances. A guest past its deadline is stopped within
/// one tick, and a long-running guest yields its thread once per tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How often idle instances past their idle timeout are let go.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Limits of the runtime. Every field has a default chosen for a small
/// server; see each field for what it costs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Calls that may run at once, across all components. Each may use up
    /// to [`INSTANCES_PER_CALL`] instances (a command handler and a
    /// projection it runs); the pooling allocator reserves address space
    /// (not memory) for all of them up front, and for the idle instances
    /// [`ReuseConfig::max_idle`] allows.
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
    /// Whether and how instances are kept warm between calls.
    pub reuse: ReuseConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_calls: 128,
            queue_timeout: Duration::from_secs(2),
            max_memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            cache_dir: None,
            reuse: ReuseConfig::default(),
        }
    }
}

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not configure the wasm runtime")]
pub struct RuntimeError(#[source] wasmtime::Error);

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
        /// What wasmtime reported, and the guest's last words on stderr.
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

/// The linkers of the roles: each links WASI and the host's imports its
/// role serves (see [`roles`]).
struct Linkers {
    command: Linker<CallState<CommandImports>>,
    notification: Linker<CallState<NotificationImports>>,
    projection: Linker<CallState<ProjectionImports>>,
}

impl Linkers {
    fn new(engine: &Engine) -> wasmtime::Result<Self> {
        Ok(Linkers {
            command: linker(engine)?,
            notification: linker(engine)?,
            projection: linker(engine)?,
        })
    }
}

fn linker<R: Role>(engine: &Engine) -> wasmtime::Result<Linker<CallState<R>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    R::add_imports(&mut linker)?;
    Ok(linker)
}

/// The engine, the linkers and the limits every call runs under.
pub struct Runtime {
    engine: Engine,
    linkers: Linkers,
    config: RuntimeConfig,
    /// One permit per call that may run; see [`Runtime::reserve`].
    slots: Arc<Semaphore>,
    /// The warm instances of every component version.
    instances: Arc<Instances>,
    /// Identifies the engine's compiled-code format (wasmtime version,
    /// target, settings) in cache file names, so that a cached artifact of
    /// another engine is never even tried.
    engine_key: String,
    compilations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and linkers, and starts the epoch ticker (a thread
    /// that ends when the engine is dropped), which also lets go of idle
    /// instances past their timeout.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(RuntimeError)?;
        let linkers = Linkers::new(&engine).map_err(RuntimeError)?;
        let instances = Arc::new(Instances::new(
            engine.clone(),
            config.reuse.clone(),
            config.max_memory_bytes,
            config.call_timeout,
        ));
        spawn_epoch_ticker(&engine, Arc::downgrade(&instances));
        let engine_key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };
        Ok(Runtime {
            slots: Arc::new(Semaphore::new(config.max_concurrent_calls as usize)),
            engine,
            linkers,
            config,
            instances,
            engine_key,
            compilations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Waits for a call slot: every top-level call into a component (a
    /// command, a projection query, a notification, a `describe` at load)
    /// holds one while it runs, and a projection run from inside a command
    /// uses its command's. The pool has room for [`INSTANCES_PER_CALL`]
    /// instances per slot beside the idle ones, so a call holding a slot
    /// never fails for want of an instance.
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

    /// How many components this runtime compiled (rather than loaded from
    /// the cache) since it was built.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many instances this runtime created since it was built.
    pub fn instantiations(&self) -> u64 {
        self.instances.made()
    }

    /// How many calls into components this runtime started since it was
    /// built: each took an instance, warm or new, once it was routed.
    pub fn calls_started(&self) -> u64 {
        self.instances.checked_out()
    }

    /// The instance metrics (created, reused, discarded by reason, idle per
    /// version), Prometheus text format.
    pub fn encode_metrics(&self, out: &mut String) {
        self.instances.encode_metrics(out);
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    // Running calls' instances, and the idle ones kept warm.
    let instances = config
        .max_concurrent_calls
        .saturating_mul(INSTANCES_PER_CALL)
        .saturating_add(config.reuse.max_idle);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
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

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is
/// gone, and every [`SWEEP_EVERY`] lets go of idle instances past their
/// timeout.
fn spawn_epoch_ticker(engine: &Engine, instances: std::sync::Weak<Instances>) {
    let engine = engine.weak();
    let mut swept = Instant::now();
    std::thread::Builder::new()
        .name("cqrs-wasi-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                if swept.elapsed() >= SWEEP_EVERY {
                    swept = Instant::now();
                    if let Some(instances) = instances.upgrade() {
                        instances.sweep();
                    }
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::error!("cannot start the epoch ticker: {e}"));
}

/// A reserved call slot; the slot frees when this drops.
#[derive(Debug)]
pub struct CallSlot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// The error an epoch callback raises when a call is past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Turns a wasmtime error from a call into a [`GuestFault`] whose message
/// says what happened in one line: the trap, and the guest's last words on
/// stderr (a panic message, typically); and why its instance must go. The
/// full error, with the guest's backtrace, goes to the log.
fn fault<R>(
    component: &str,
    timeout: Duration,
    state: &CallState<R>,
    error: wasmtime::Error,
) -> (GuestFault, pool::Discard) {
    if error.is::<DeadlineExceeded>() {
        let fault = GuestFault::DeadlineExceeded {
            component: component.to_owned(),
            timeout,
        };
        return (fault, pool::Discard::Deadline);
    }
    tracing::warn!(component, "guest fault: {error:?}");
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(said) = state.last_stderr() {
        message = format!("{message}; its stderr said: {said}");
    }
    let fault = GuestFault::Trapped {
        component: component.to_owned(),
        message,
    };
    (fault, pool::Discard::Trap)
}
