//! Warm instances: each component version keeps, per role, a small pool of
//! idle instances, so that a call takes one instead of creating it.
//!
//! A call checks an instance out as a [`Lease`]; no instance serves two
//! calls at once, and an instance belongs to one version and one role (so
//! to one set of grants) for its whole life. When the lease ends the
//! instance goes back to its pool, unless it must be discarded
//! ([`Discard`]): after a trap, a deadline, a refused memory growth, a
//! failure on the host's side during the call, a number of calls drawn at
//! random within a range (so instances do not all recycle at once), linear
//! memory grown past a threshold, an idle timeout, or once its version was
//! swapped out. With [`Isolation::PerCall`] every lease ends with its
//! instance discarded: a fresh instance for every call.
//!
//! This module owns the pools, their bounds (idle instances per version,
//! and across the host) and the instance metrics. It must not decide what
//! a call does inside the guest; it only decides which instance runs it.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{Engine, Store};

use super::bindings::{command_handler, notification_handler, projection};
use super::roles::Role;
use super::state::CallState;
use super::{DeadlineExceeded, GuestFault};

/// Whether an instance may serve more than one call (`[runtime] isolation`
/// in the configuration file: `"reuse"` or `"per-call"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Instances are kept warm and reused, one call at a time, within one
    /// version and role. A guest's memory may carry over between its calls.
    #[default]
    Reuse,
    /// A fresh instance for every call: nothing carries over.
    PerCall,
}

/// How warm instances are kept.
#[derive(Debug, Clone)]
pub struct ReuseConfig {
    /// Reuse instances, or make one per call.
    pub isolation: Isolation,
    /// An instance is recycled after a number of calls drawn at random in
    /// this range when it is made.
    pub recycle_after_calls: RangeInclusive<u32>,
    /// An instance whose linear memories grew past this many bytes (in all)
    /// is not reused: a guest that once needed that much keeps it resident.
    pub recycle_memory_bytes: usize,
    /// Idle instances kept per component version and role.
    pub max_idle_per_version: u32,
    /// Idle instances kept across the host.
    pub max_idle: u32,
    /// An idle instance unused for this long is let go, and its memory
    /// with it.
    pub idle_timeout: Duration,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        ReuseConfig {
            isolation: Isolation::Reuse,
            recycle_after_calls: 5_000..=10_000,
            recycle_memory_bytes: 32 << 20,
            max_idle_per_version: 32,
            max_idle: 256,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why an instance was not kept for another call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Discard {
    /// The guest trapped.
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// A memory growth was refused.
    MemoryRefused,
    /// An import failed on the host's side during the call.
    HostError,
    /// It served its number of calls.
    Recycled,
    /// Its linear memory grew past the threshold.
    MemoryGrown,
    /// It stayed idle past the idle timeout.
    Idle,
    /// Its version was swapped out or rolled back.
    Retired,
    /// Its pool, or the host's idle bound, was full.
    PoolFull,
    /// Per-call isolation: every instance serves one call.
    PerCall,
}

impl Discard {
    fn label(self) -> &'static str {
        match self {
            Discard::Trap => "trap",
            Discard::Deadline => "deadline",
            Discard::MemoryRefused => "memory_refused",
            Discard::HostError => "host_error",
            Discard::Recycled => "recycled",
            Discard::MemoryGrown => "memory_grown",
            Discard::Idle => "idle",
            Discard::Retired => "retired",
            Discard::PoolFull => "pool_full",
            Discard::PerCall => "per_call",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabel {
    component: String,
    version: String,
    role: &'static str,
}

/// What every pool shares: the engine and limits a new instance gets, the
/// host-wide idle bound, the metrics, and the pools themselves (for the
/// idle sweep and the idle gauge).
pub(crate) struct Instances {
    engine: Engine,
    config: ReuseConfig,
    max_memory_bytes: usize,
    call_timeout: Duration,
    /// One permit per instance that may be idle across the host.
    idle_permits: Arc<Semaphore>,
    pools: Mutex<Vec<Weak<dyn Sweep>>>,
    created: Counter,
    reused: Counter,
    discarded: Family<ReasonLabel, Counter>,
    idle: Family<PoolLabel, Gauge>,
    registry: Registry,
    made: AtomicU64,
    checked_out: AtomicU64,
}

impl Instances {
    pub(crate) fn new(
        engine: Engine,
        config: ReuseConfig,
        max_memory_bytes: usize,
        call_timeout: Duration,
    ) -> Self {
        let created = Counter::default();
        let reused = Counter::default();
        let discarded = Family::<ReasonLabel, Counter>::default();
        let idle = Family::<PoolLabel, Gauge>::default();
        let mut registry = Registry::with_prefix("cqrs_wasi_instances");
        registry.register("created", "Instances made", created.clone());
        registry.register(
            "reused",
            "Calls served by an instance kept from an earlier call",
            reused.clone(),
        );
        registry.register(
            "discarded",
            "Instances let go, by reason",
            discarded.clone(),
        );
        registry.register(
            "idle",
            "Idle instances, by component version and role",
            idle.clone(),
        );
        Instances {
            engine,
            idle_permits: Arc::new(Semaphore::new(config.max_idle as usize)),
            config,
            max_memory_bytes,
            call_timeout,
            pools: Mutex::default(),
            created,
            reused,
            discarded,
            idle,
            registry,
            made: AtomicU64::new(0),
            checked_out: AtomicU64::new(0),
        }
    }

    /// How many instances were made since the runtime was built.
    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// How many times an instance was checked out for a call (warm or
    /// new) since the runtime was built.
    pub(crate) fn checked_out(&self) -> u64 {
        self.checked_out.load(Ordering::Relaxed)
    }

    fn discarded(&self, reason: Discard) {
        self.discarded
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// Lets go of idle instances past the idle timeout, in every pool.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let pools: Vec<Arc<dyn Sweep>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|pool| pool.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in pools {
            pool.sweep(now, self.config.idle_timeout);
        }
    }

    /// The instance metrics in the Prometheus text format.
    pub(crate) fn encode_metrics(&self, out: &mut String) {
        self.idle.clear();
        let pools: Vec<Arc<dyn Sweep>> = {
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in pools {
            let (label, idle) = pool.idle_count();
            self.idle
                .get_or_create(&label)
                .inc_by(i64::try_from(idle).unwrap_or(i64::MAX));
        }
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

/// What the sweep and the metrics ask of a pool, whatever its role.
trait Sweep: Send + Sync {
    fn sweep(&self, now: Instant, idle_timeout: Duration);
    fn idle_count(&self) -> (PoolLabel, usize);
}

/// The idle instances of one component version in one role.
pub(crate) struct Pool<R: Role> {
    component: Arc<str>,
    digest: String,
    pre: InstancePre<CallState<R>>,
    exports: Arc<Exports>,
    instances: Arc<Instances>,
    idle: Mutex<Idle<R>>,
}

/// The export interfaces a component version has, found once at load.
pub(crate) struct Exports {
    pub(crate) command_handler: Option<command_handler::GuestIndices>,
    pub(crate) projection: Option<projection::GuestIndices>,
    pub(crate) notification_handler: Option<notification_handler::GuestIndices>,
}

struct Idle<R: Role> {
    warm: Vec<Warm<R>>,
    /// Bumped when the version is retired: an instance checked out before
    /// does not come back.
    generation: u64,
    /// Whether the version is routable; a retired pool keeps nothing.
    live: bool,
}

/// An instance, with its store and what it has served.
pub(crate) struct Warm<R: Role> {
    pub(super) store: Store<CallState<R>>,
    instance: Instance,
    command_handler: Option<command_handler::Guest>,
    projection: Option<projection::Guest>,
    notification_handler: Option<notification_handler::Guest>,
    calls: u32,
    recycle_after: u32,
    generation: u64,
    idle_since: Instant,
    _idle: Option<OwnedSemaphorePermit>,
}

impl<R: Role> Pool<R> {
    pub(crate) fn new(
        component: Arc<str>,
        digest: &str,
        pre: InstancePre<CallState<R>>,
        exports: Arc<Exports>,
        instances: &Arc<Instances>,
    ) -> Arc<Self> {
        let pool = Arc::new(Pool {
            component,
            digest: digest.to_owned(),
            pre,
            exports,
            instances: instances.clone(),
            idle: Mutex::new(Idle {
                warm: Vec::new(),
                generation: 0,
                live: true,
            }),
        });
        let weak: Weak<dyn Sweep> = Arc::downgrade(&pool) as Weak<dyn Sweep>;
        instances
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(weak);
        pool
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle<R>> {
        // The list is changed by single pushes and pops: a panic elsewhere
        // cannot leave it half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An instance for one call: an idle one, or a new one.
    pub(crate) async fn checkout(self: &Arc<Self>) -> Result<Lease<R>, GuestFault> {
        let (reused, generation) = {
            let mut idle = self.idle();
            (idle.warm.pop(), idle.generation)
        };
        let warm = match reused {
            Some(mut warm) => {
                warm._idle = None;
                self.instances.reused.inc();
                warm
            }
            None => self.instantiate(generation).await?,
        };
        self.instances.checked_out.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            warm: Some(warm),
            pool: self.clone(),
            discard: None,
        })
    }

    async fn instantiate(&self, generation: u64) -> Result<Warm<R>, GuestFault> {
        let mut store = Store::new(
            &self.instances.engine,
            CallState::new(
                self.component.clone(),
                self.instances.max_memory_bytes,
                R::closed(),
            ),
        );
        store.limiter(|state| &mut state.limits);
        // Instantiating runs the guest's start-up code: it has a call's time.
        store.data_mut().deadline = Instant::now() + self.instances.call_timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| {
            GuestFault::Instantiation {
                component: self.component.to_string(),
                message: format!("{e:#}"),
            }
        })?;
        self.instances.created.inc();
        self.instances.made.fetch_add(1, Ordering::Relaxed);
        let range = &self.instances.config.recycle_after_calls;
        Ok(Warm {
            store,
            instance,
            command_handler: None,
            projection: None,
            notification_handler: None,
            calls: 0,
            recycle_after: fastrand::u32(*range.start()..=(*range.end()).max(*range.start())),
            generation,
            idle_since: Instant::now(),
            _idle: None,
        })
    }

    /// Takes back an instance whose lease ended without a reason to
    /// discard it, if it may stay.
    fn put_back(&self, mut warm: Warm<R>) {
        let config = &self.instances.config;
        let refused = {
            let mut idle = self.idle();
            if !idle.live || warm.generation != idle.generation {
                Some((warm, Discard::Retired))
            } else if idle.warm.len() >= config.max_idle_per_version as usize {
                Some((warm, Discard::PoolFull))
            } else {
                match self.instances.idle_permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        warm._idle = Some(permit);
                        warm.idle_since = Instant::now();
                        idle.warm.push(warm);
                        None
                    }
                    Err(_) => Some((warm, Discard::PoolFull)),
                }
            }
        };
        // Dropped outside the lock: letting an instance go takes a while.
        if let Some((warm, reason)) = refused {
            self.instances.discarded(reason);
            drop(warm);
        }
    }

    /// Retires the version's instances (swapped out or rolled back from):
    /// the idle ones go now, the busy ones when their calls end.
    pub(crate) fn retire(&self) {
        let gone = {
            let mut idle = self.idle();
            idle.live = false;
            idle.generation += 1;
            std::mem::take(&mut idle.warm)
        };
        for _ in &gone {
            self.instances.discarded(Discard::Retired);
        }
    }

    /// Makes a retired version routable again, with no instance of before.
    pub(crate) fn revive(&self) {
        self.idle().live = true;
    }
}

impl<R: Role> Sweep for Pool<R> {
    fn sweep(&self, now: Instant, idle_timeout: Duration) {
        let stale: Vec<Warm<R>> = {
            let mut idle = self.idle();
            let (stale, fresh) = std::mem::take(&mut idle.warm)
                .into_iter()
                .partition(|warm| now.duration_since(warm.idle_since) >= idle_timeout);
            idle.warm = fresh;
            stale
        };
        for _ in &stale {
            self.instances.discarded(Discard::Idle);
        }
    }

    fn idle_count(&self) -> (PoolLabel, usize) {
        let label = PoolLabel {
            component: self.component.to_string(),
            version: self.digest.clone(),
            role: R::NAME,
        };
        (label, self.idle().warm.len())
    }
}

/// One instance, checked out for one call at a time; it goes back to its
/// pool (or is discarded) when the lease is dropped.
pub(crate) struct Lease<R: Role> {
    warm: Option<Warm<R>>,
    pool: Arc<Pool<R>>,
    /// Set once something happened that rules out reuse.
    discard: Option<Discard>,
}

impl<R: Role> Lease<R> {
    pub(super) fn warm(&mut self) -> &mut Warm<R> {
        self.warm
            .as_mut()
            .expect("a lease holds its instance until dropped")
    }

    /// Arms the instance for a call with `imports`, which must end within
    /// the call timeout. A call that `counts` counts towards recycling; the
    /// `describe` calls at deploy do not, so that the instance they warm up
    /// serves as many calls as any other.
    pub(super) fn begin(&mut self, imports: R, counts: bool) -> &mut Warm<R> {
        let timeout = self.pool.instances.call_timeout;
        let warm = self.warm();
        warm.calls += u32::from(counts);
        warm.store
            .data_mut()
            .begin(Instant::now() + timeout, imports);
        warm.store.set_epoch_deadline(1);
        warm
    }

    /// Ends a call: the imports are let go, and whatever rules out reuse is
    /// noted.
    pub(super) fn finish(&mut self, failed: Option<Discard>) {
        let config = self.pool.instances.config.clone();
        let warm = self.warm();
        let state = warm.store.data_mut();
        state.end(R::closed());
        let reason = failed
            .or(state.limits.refused.then_some(Discard::MemoryRefused))
            .or(state.host_failed.then_some(Discard::HostError));
        let reason = reason.or_else(|| {
            if config.isolation == Isolation::PerCall {
                Some(Discard::PerCall)
            } else if warm.calls >= warm.recycle_after {
                Some(Discard::Recycled)
            } else if warm.store.data().limits.peak_memory_bytes > config.recycle_memory_bytes {
                Some(Discard::MemoryGrown)
            } else {
                None
            }
        });
        if self.discard.is_none() {
            self.discard = reason;
        }
    }

    /// The component's name, for faults.
    pub(super) fn component(&self) -> Arc<str> {
        self.pool.component.clone()
    }

    /// How long a call may run.
    pub(super) fn call_timeout(&self) -> Duration {
        self.pool.instances.call_timeout
    }

    /// The `command-handler` export of the instance.
    pub(super) fn command_handler(
        warm: &mut Warm<R>,
        exports: &Exports,
    ) -> wasmtime::Result<command_handler::Guest> {
        if warm.command_handler.is_none() {
            let indices = exports
                .command_handler
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("it does not export a command handler"))?;
            warm.command_handler = Some(indices.load(&mut warm.store, &warm.instance)?);
        }
        warm.command_handler
            .clone()
            .ok_or_else(|| wasmtime::format_err!("it does not export a command handler"))
    }

    /// The `projection` export of the instance.
    pub(super) fn projection(
        warm: &mut Warm<R>,
        exports: &Exports,
    ) -> wasmtime::Result<projection::Guest> {
        if warm.projection.is_none() {
            let indices = exports
                .projection
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("it does not export a projection"))?;
            warm.projection = Some(indices.load(&mut warm.store, &warm.instance)?);
        }
        warm.projection
            .clone()
            .ok_or_else(|| wasmtime::format_err!("it does not export a projection"))
    }

    /// The `notification-handler` export of the instance.
    pub(super) fn notification_handler(
        warm: &mut Warm<R>,
        exports: &Exports,
    ) -> wasmtime::Result<notification_handler::Guest> {
        if warm.notification_handler.is_none() {
            let indices = exports.notification_handler.as_ref().ok_or_else(|| {
                wasmtime::format_err!("it does not export a notification handler")
            })?;
            warm.notification_handler = Some(indices.load(&mut warm.store, &warm.instance)?);
        }
        warm.notification_handler
            .clone()
            .ok_or_else(|| wasmtime::format_err!("it does not export a notification handler"))
    }

    /// The export indices of the pool's component version.
    pub(super) fn exports(&self) -> Arc<Exports> {
        self.pool.exports.clone()
    }
}

impl<R: Role> Drop for Lease<R> {
    fn drop(&mut self) {
        let Some(warm) = self.warm.take() else {
            return;
        };
        match self.discard {
            Some(reason) => {
                self.pool.instances.discarded(reason);
                drop(warm);
            }
            None => self.pool.put_back(warm),
        }
    }
}
