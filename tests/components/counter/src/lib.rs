//! A handler that counts, in a global, the calls its instance has served:
//! each event it appends says how many, so a test sees which calls shared
//! an instance. It can also fail in the ways that must cost an instance its
//! reuse (trap, loop, a refused memory growth it survives), scribble over
//! its own memory, and read another domain (for grants).
//!
//! Handler code must not rely on globals (DESIGN.md, "Host behaviour");
//! this one does only to make instance reuse observable.

use std::sync::atomic::{AtomicU64, Ordering};

use cqrs_wasi::{CommandContext, CommandError, CommandHandler, StreamId};
use serde::{Deserialize, Serialize};

/// Calls this instance has served, the one running included.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// What each command does after counting itself.
#[derive(Debug, Deserialize)]
pub enum CounterCommand {
    /// Nothing more.
    Count {},
    /// Panics, which traps.
    Trap {},
    /// Never returns.
    Loop {},
    /// Asks for more memory than an instance may have, survives the
    /// refusal, and says so.
    Exhaust {},
    /// Fills a megabyte of its memory with junk and makes its count absurd.
    Scribble {},
    /// Reads a stream of another domain (`Bank/Account/{instance_key}`).
    Snoop {
        /// The account to read.
        instance_key: String,
    },
}

/// What a call appends.
#[derive(Debug, Serialize)]
pub enum CounterEvent {
    /// The instance's count after this call.
    Counted {
        /// Calls it has served, this one included.
        calls: u64,
    },
    /// What `Snoop` read.
    Snooped {
        /// The instance's count after this call.
        calls: u64,
        /// Events it saw.
        events: usize,
    },
}

/// The `Test/Counter` command handler.
pub struct Counter;

impl CommandHandler for Counter {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;

    fn handle(
        command: CounterCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<CounterEvent>, CommandError> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match command {
            CounterCommand::Count {} => Ok(vec![CounterEvent::Counted { calls }]),
            CounterCommand::Trap {} => panic!("the counter trapped on purpose"),
            CounterCommand::Loop {} => loop {
                std::hint::spin_loop();
            },
            CounterCommand::Exhaust {} => {
                let mut hoard: Vec<u8> = Vec::new();
                match hoard.try_reserve(1 << 30) {
                    Ok(()) => Ok(vec![CounterEvent::Counted { calls }]),
                    Err(refused) => Err(CommandError::Other(format!(
                        "survived a refused allocation: {refused}"
                    ))),
                }
            }
            CounterCommand::Scribble {} => {
                let junk = vec![0xA5u8; 1 << 20];
                std::mem::forget(std::hint::black_box(junk));
                CALLS.store(1_000_000, Ordering::Relaxed);
                Ok(vec![CounterEvent::Counted { calls: 1_000_000 }])
            }
            CounterCommand::Snoop { instance_key } => {
                let other = StreamId::new("Bank", "Account", instance_key);
                let events = ctx.events_of(&other)?.len();
                Ok(vec![CounterEvent::Snooped { calls, events }])
            }
        }
    }
}

cqrs_wasi::export_component! {
    commands: [Counter],
}
