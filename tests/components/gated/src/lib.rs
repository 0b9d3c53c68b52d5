//! Test fixture: `Test/Gated`, deposits that a test can hold in flight.
//!
//! A `HeldDeposit` waits until the stream `Test/Gate/{gate}` has an event,
//! which the test appends when it chooses: a call that started stays in
//! flight, deterministically, across whatever the test does meanwhile (a
//! hot swap, a second execution of the same command id, every call slot
//! taken). Built in two versions (`gated`, and `gated-v2` with feature
//! `v2`) that behave differently: version 1 credits the amount, version 2
//! twice the amount, and each event says which version made it.

use std::time::Duration;

use cqrs_wasi::{
    CommandContext, CommandError, CommandHandler, Projection, RecordedEvent, StreamId,
};
use serde::{Deserialize, Serialize};

/// Which version this build is.
const VERSION: u32 = if cfg!(feature = "v2") { 2 } else { 1 };

/// How often a held call looks at its gate.
const POLL: Duration = Duration::from_millis(2);

/// The commands.
#[derive(Debug, Deserialize)]
pub enum GatedCommand {
    /// Credits at once.
    Deposit {
        /// What the client pays in.
        amount: i64,
    },
    /// Credits once the gate is open (as the version that started it).
    HeldDeposit {
        /// What the client pays in.
        amount: i64,
        /// The instance key of the gate's stream, `Test/Gate/{gate}`.
        gate: String,
    },
}

/// The one event.
#[derive(Debug, Serialize, Deserialize)]
pub enum GatedEvent {
    /// A deposit, as the version that ran it credited it.
    Deposited {
        /// What the client paid in.
        amount: i64,
        /// What was credited: `amount` times the version.
        credited: i64,
        /// The version that ran the command.
        version: u32,
    },
}

fn deposited(amount: i64) -> GatedEvent {
    GatedEvent::Deposited {
        amount,
        credited: amount * i64::from(VERSION),
        version: VERSION,
    }
}

/// The `Test/Gated` command handler.
pub struct Gated;

impl CommandHandler for Gated {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Gated";
    type Command = GatedCommand;
    type Event = GatedEvent;

    fn handle(
        command: GatedCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<GatedEvent>, CommandError> {
        match command {
            GatedCommand::Deposit { amount } => Ok(vec![deposited(amount)]),
            GatedCommand::HeldDeposit { amount, gate } => {
                let gate = StreamId::new("Test", "Gate", gate);
                while ctx.events_of(&gate)?.is_empty() {
                    std::thread::sleep(POLL);
                }
                Ok(vec![deposited(amount)])
            }
        }
    }
}

/// The `Balance` projection: the sum of what was credited.
pub struct Balance;

impl Projection for Balance {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Gated";
    const NAME: &'static str = "Balance";
    type Event = GatedEvent;
    type State = i64;

    fn apply(state: &mut i64, event: GatedEvent, _: &RecordedEvent) {
        let GatedEvent::Deposited { credited, .. } = event;
        *state += credited;
    }
}

cqrs_wasi::export_component! {
    commands: [Gated],
    projections: [Balance],
}
