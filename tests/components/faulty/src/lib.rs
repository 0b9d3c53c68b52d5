//! A handler that misbehaves on request, to show that a guest fault fails
//! only its own call, and that a guest sees nothing of the host it was not
//! granted; and that goes to the host's limits on request (output lines,
//! payload and state sizes), to test them at their edges.

use cqrs_wasi::{
    CommandContext, CommandError, CommandHandler, Projection, RecordedEvent, StreamId,
};
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

/// Each command is a way to fail.
#[derive(Debug, Deserialize)]
pub enum FaultCommand {
    /// Panics, which traps.
    Panic {},
    /// Returns an error that is not the domain's (`other`).
    Fail {},
    /// Never returns.
    Loop {},
    /// Allocates until memory runs out.
    Allocate {},
    /// Keeps its call slot busy for a while, then succeeds.
    Sleep {
        /// How long.
        millis: u64,
    },
    /// Returns one event with a payload this large.
    Huge {
        /// Payload size in bytes.
        bytes: usize,
    },
    /// Returns this many events.
    Many {
        /// How many.
        count: usize,
    },
    /// Reads a stream of another domain (`Bank/Account/{instance_key}`).
    Snoop {
        /// The account to read.
        instance_key: String,
    },
    /// Reports what of the outside world the guest can see.
    Probe {},
    /// Writes this many lines, to stdout and stderr in turn.
    Chatter {
        /// How many.
        lines: usize,
    },
    /// Returns one event with this text as its payload.
    Echo {
        /// The text.
        text: String,
    },
    /// Makes the `Sized` projection's state this large.
    Grow {
        /// The state's size in bytes, as JSON.
        bytes: usize,
    },
}

/// What the well-behaved commands produce.
#[derive(Debug, Serialize, Deserialize)]
pub enum FaultEvent {
    /// A `Sleep` finished.
    Slept {},
    /// `Huge`'s payload.
    Padded {
        /// Filler.
        padding: String,
    },
    /// One of `Many`'s events.
    Counted {
        /// Its number.
        n: usize,
    },
    /// What `Snoop` read.
    Snooped {
        /// Events it saw.
        events: usize,
    },
    /// What `Probe` saw.
    Probed {
        /// Environment variables visible.
        env_vars: usize,
        /// Command-line arguments visible.
        args: usize,
        /// What listing `/` gave.
        filesystem: String,
        /// What connecting to the loopback gave.
        network: String,
        /// Two random numbers differed.
        random_works: bool,
        /// The wall clock reads after 2020.
        clock_works: bool,
    },
    /// `Chatter` wrote its lines.
    Chattered {},
    /// What `Echo` was given.
    Echoed {
        /// The text.
        text: String,
    },
    /// The size `Grow` asked for.
    Grown {
        /// In bytes.
        bytes: usize,
    },
}

/// The `Test/Faulty` command handler.
pub struct Faulty;

impl CommandHandler for Faulty {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Faulty";
    type Command = FaultCommand;
    type Event = FaultEvent;

    fn handle(
        command: FaultCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<FaultEvent>, CommandError> {
        match command {
            FaultCommand::Panic {} => panic!("the handler panicked on purpose"),
            FaultCommand::Fail {} => Err(CommandError::Other(
                "the handler failed on purpose".to_owned(),
            )),
            FaultCommand::Loop {} => loop {
                std::hint::spin_loop();
            },
            FaultCommand::Allocate {} => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            FaultCommand::Sleep { millis } => {
                std::thread::sleep(std::time::Duration::from_millis(millis));
                Ok(vec![FaultEvent::Slept {}])
            }
            FaultCommand::Huge { bytes } => Ok(vec![FaultEvent::Padded {
                padding: "x".repeat(bytes),
            }]),
            FaultCommand::Many { count } => {
                Ok((0..count).map(|n| FaultEvent::Counted { n }).collect())
            }
            FaultCommand::Snoop { instance_key } => {
                let other = StreamId::new("Bank", "Account", instance_key);
                Ok(vec![FaultEvent::Snooped {
                    events: ctx.events_of(&other)?.len(),
                }])
            }
            FaultCommand::Probe {} => Ok(vec![probe()]),
            FaultCommand::Chatter { lines } => {
                for n in 1..=lines {
                    if n % 2 == 1 {
                        println!("line {n}");
                    } else {
                        eprintln!("line {n}");
                    }
                }
                Ok(vec![FaultEvent::Chattered {}])
            }
            FaultCommand::Echo { text } => Ok(vec![FaultEvent::Echoed { text }]),
            FaultCommand::Grow { bytes } => Ok(vec![FaultEvent::Grown { bytes }]),
        }
    }
}

fn probe() -> FaultEvent {
    let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
    FaultEvent::Probed {
        env_vars: std::env::vars_os().count(),
        args: std::env::args_os().count(),
        filesystem: match std::fs::read_dir("/") {
            Ok(entries) => format!("listed {} entries", entries.count()),
            Err(e) => format!("refused: {e}"),
        },
        network: match std::net::TcpStream::connect("127.0.0.1:80") {
            Ok(_) => "connected".to_owned(),
            Err(e) => format!("refused: {e}"),
        },
        random_works: random() != random(),
        clock_works: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|since| since.as_secs() > 1_577_836_800),
    }
}

/// The `Sized` projection: a JSON string exactly as large as the last
/// `Grown` asked (its quotes included).
pub struct Sized;

impl Projection for Sized {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Faulty";
    const NAME: &'static str = "Sized";
    type Event = FaultEvent;
    type State = String;

    fn apply(state: &mut String, event: FaultEvent, _: &RecordedEvent) {
        if let FaultEvent::Grown { bytes } = event {
            *state = "x".repeat(bytes.saturating_sub(2));
        }
    }
}

cqrs_wasi::export_component! {
    commands: [Faulty],
    projections: [Sized],
}
