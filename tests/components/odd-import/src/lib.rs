//! A handler that needs an import the host does not supply, so that loading
//! it must fail before it is ever called.

use cqrs_wasi::{CommandContext, CommandError, CommandHandler};
use serde::{Deserialize, Serialize};

wit_bindgen::generate!({
    inline: "
        package test:odd;
        interface oracle { ask: func() -> u32; }
        world odd { import oracle; }
    ",
});

/// The one command.
#[derive(Debug, Deserialize)]
pub enum OddCommand {
    /// Asks the oracle.
    Ask {},
}

/// What the oracle said.
#[derive(Debug, Serialize)]
pub enum OddEvent {
    /// The answer.
    Answered {
        /// It.
        answer: u32,
    },
}

/// The `Test/Odd` command handler.
pub struct Odd;

impl CommandHandler for Odd {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Odd";
    type Command = OddCommand;
    type Event = OddEvent;

    fn handle(command: OddCommand, _: &CommandContext) -> Result<Vec<OddEvent>, CommandError> {
        match command {
            OddCommand::Ask {} => Ok(vec![OddEvent::Answered { answer: ask() }]),
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn ask() -> u32 {
    test::odd::oracle::ask()
}

#[cfg(not(target_arch = "wasm32"))]
fn ask() -> u32 {
    42
}

cqrs_wasi::export_component! {
    commands: [Odd],
}
