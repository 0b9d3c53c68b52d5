//! What one instance's wasmtime `Store` holds: the WASI context its guest
//! logs through, the limits it runs under, and the import state of the role
//! it serves.
//!
//! An instance may serve many calls (one at a time); everything that
//! belongs to one call (its deadline, its log budget, its imports' services)
//! is set when the call begins ([`CallState::begin`]) and cleared when it
//! ends ([`CallState::end`]), so nothing of one call reaches the next.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::guest_log::GuestLog;

/// Everything one instance's [`Store`](wasmtime::Store) holds; `R` is the
/// import state of the role the instance serves (see [`super::roles`]).
pub(crate) struct CallState<R> {
    pub(super) component: Arc<str>,
    /// Built on the guest's first WASI call, as most instances make none (a
    /// handler that neither logs nor reads the clock): building one seeds
    /// random number generators it would never use.
    wasi: Option<CallWasi>,
    table: ResourceTable,
    pub(super) limits: Limits,
    /// When the running call must stop.
    pub(super) deadline: Instant,
    /// An import failed on the host's side during the running call: the
    /// guest saw an error, but what it did with it is unknown, so the
    /// instance is not reused.
    pub(super) host_failed: bool,
    /// The running call's imports; the role's closed state between calls.
    pub(crate) imports: R,
}

impl<R> CallState<R> {
    pub(super) fn new(component: Arc<str>, max_memory_bytes: usize, imports: R) -> Self {
        CallState {
            component,
            wasi: None,
            table: ResourceTable::new(),
            limits: Limits::new(max_memory_bytes),
            deadline: Instant::now(),
            host_failed: false,
            imports,
        }
    }

    /// Prepares the instance for a call that must end by `deadline`.
    pub(super) fn begin(&mut self, deadline: Instant, imports: R) {
        self.deadline = deadline;
        self.imports = imports;
        self.host_failed = false;
        self.limits.refused = false;
        if let Some(wasi) = &self.wasi {
            wasi.stdout.begin_call();
            wasi.stderr.begin_call();
        }
    }

    /// Ends the running call: its imports' services are let go.
    pub(super) fn end(&mut self, closed: R) {
        self.imports = closed;
    }

    /// The last lines the guest wrote to stderr during the running call.
    pub(super) fn last_stderr(&self) -> Option<String> {
        self.wasi.as_ref().and_then(|wasi| wasi.stderr.last_lines())
    }
}

/// A call's WASI context and the streams it writes to.
struct CallWasi {
    ctx: WasiCtx,
    stdout: GuestLog,
    stderr: GuestLog,
}

impl CallWasi {
    fn new(component: &Arc<str>) -> Self {
        let (stdout, stderr) = GuestLog::for_instance(component.clone());
        let mut builder = WasiCtx::builder();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        CallWasi {
            ctx: builder.build(),
            stdout,
            stderr,
        }
    }
}

impl<R: Send + 'static> WasiView for CallState<R> {
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

/// The memory limit of an instance, and what the guest asked of it.
pub(super) struct Limits {
    max_memory_bytes: usize,
    /// A growth was refused during the running call. A guest may survive a
    /// refused `memory.grow` (its allocator returns null and it reports an
    /// error), but its state is then suspect: the instance is not reused.
    pub(super) refused: bool,
    /// The largest linear memory it grew to.
    pub(super) peak_memory_bytes: usize,
}

impl Limits {
    fn new(max_memory_bytes: usize) -> Self {
        Limits {
            max_memory_bytes,
            refused: false,
            peak_memory_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}
