//! Host-side bindings of the `cqrs-wasi:handlers` WIT package, generated
//! once for the `domain-component` world, which names every interface.
//!
//! Components of a single-role world are handled through the per-interface
//! `GuestIndices`, so one set of bindings serves every world.
//!
//! What the host passes to a guest's exports is borrowed (`BatchEvent<'a>`
//! and the like): lowering copies it into guest memory anyway, so a fold or
//! a command lowers the host's own strings instead of clones of them. A
//! type that also crosses the other way keeps an owned form
//! (`StreamIdResult`), which [`wit`] names as the WIT does.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "domain-component",
    imports: { default: async | trappable },
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use exports::cqrs_wasi::handlers::{command_handler, notification_handler, projection};

/// The package's `types`, each owned form under its WIT name.
pub mod wit {
    pub use super::cqrs_wasi::handlers::types::*;
    pub use super::cqrs_wasi::handlers::types::{
        EventContextResult as EventContext, StreamIdResult as StreamId,
    };
}
