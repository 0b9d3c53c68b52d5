//! A handler that misbehaves on request, to show that a guest fault fails
//! only its own call.

use cqrs_wasi::{CommandContext, CommandError, CommandHandler};
use serde::{Deserialize, Serialize};

/// Each command is a way to fail.
#[derive(Debug, Deserialize)]
pub enum FaultCommand {
    /// Panics, which traps.
    Panic {},
    /// Never returns.
    Loop {},
    /// Allocates until memory runs out.
    Allocate {},
}

/// Never produced.
#[derive(Debug, Serialize)]
pub enum FaultEvent {
    /// Unreachable.
    Survived {},
}

/// The `Test/Faulty` command handler.
pub struct Faulty;

impl CommandHandler for Faulty {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Faulty";
    type Command = FaultCommand;
    type Event = FaultEvent;

    fn handle(command: FaultCommand, _: &CommandContext) -> Result<Vec<FaultEvent>, CommandError> {
        match command {
            FaultCommand::Panic {} => panic!("the handler panicked on purpose"),
            FaultCommand::Loop {} => loop {
                std::hint::spin_loop();
            },
            FaultCommand::Allocate {} => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
        }
    }
}

cqrs_wasi::export_component! {
    commands: [Faulty],
}
