//! Test fixture: the `Balance` projection of `examples/bank`, exported
//! alone, so that a test can deploy it beside command handlers written in
//! another language (`host/tests/languages.rs`).

// The bank's own source, not a copy: depending on the `bank` crate would
// link its exports too.
#[path = "../../../../examples/bank/src/balance.rs"]
pub mod balance;

cqrs_wasi::export_component! {
    projections: [balance::Balance],
}
