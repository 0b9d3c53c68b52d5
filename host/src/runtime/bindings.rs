//! Host-side bindings of the `cqrs-wasi:handlers` WIT package, generated
//! once for the `domain-component` world, which names every interface.
//!
//! Components of a single-role world are handled through the per-interface
//! `GuestIndices`, so one set of bindings serves every world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "domain-component",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use cqrs_wasi::handlers::types as wit;
pub use exports::cqrs_wasi::handlers::{command_handler, notification_handler, projection};
