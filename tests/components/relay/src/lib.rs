//! Test fixture: `Test/Ticker` streams, whose ticks two notification
//! handlers (`relay-a`, `relay-b`) relay into logs, so that a test sees
//! in which order each handler took each stream's notifications.
//!
//! A tick's handlers note its sequence in `Test/Log/{handler}-{ticker}`,
//! one `Noted` event per notification. A tick with a `gate` holds its
//! handlers until the stream `Test/Gate/{gate}` has an event (which the
//! test appends when it chooses); a tick with `fail` naming a handler
//! makes that handler fail on it, every time.

use std::time::Duration;

use cqrs_wasi::{
    CommandContext, CommandError, CommandHandler, HandlerError, Notification, NotificationContext,
    NotificationHandler, StreamId, Subscription,
};
use serde::{Deserialize, Serialize};

/// How often a held handler looks at its gate.
const POLL: Duration = Duration::from_millis(2);

/// The commands of `Test/Ticker`.
#[derive(Debug, Serialize, Deserialize)]
pub enum TickerCommand {
    /// Appends a tick.
    Tick {
        /// Holds the tick's handlers until `Test/Gate/{gate}` has an event.
        #[serde(default)]
        gate: Option<String>,
        /// The handler (`relay-a` or `relay-b`) that fails on this tick.
        #[serde(default)]
        fail: Option<String>,
    },
}

/// The one event of `Test/Ticker`.
#[derive(Debug, Serialize, Deserialize)]
pub enum TickerEvent {
    /// A tick, as commanded.
    Ticked {
        /// See [`TickerCommand::Tick`].
        gate: Option<String>,
        /// See [`TickerCommand::Tick`].
        fail: Option<String>,
    },
}

/// The `Test/Ticker` command handler.
pub struct Ticker;

impl CommandHandler for Ticker {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Ticker";
    type Command = TickerCommand;
    type Event = TickerEvent;

    fn handle(
        command: TickerCommand,
        _: &CommandContext,
    ) -> Result<Vec<TickerEvent>, CommandError> {
        let TickerCommand::Tick { gate, fail } = command;
        Ok(vec![TickerEvent::Ticked { gate, fail }])
    }
}

/// The commands of `Test/Log`.
#[derive(Debug, Serialize, Deserialize)]
pub enum LogCommand {
    /// Appends a note.
    Note {
        /// The tick's sequence.
        sequence: u64,
    },
}

/// The one event of `Test/Log`.
#[derive(Debug, Serialize, Deserialize)]
pub enum LogEvent {
    /// A handler took the tick of this sequence.
    Noted {
        /// The tick's sequence.
        sequence: u64,
    },
}

/// The `Test/Log` command handler.
pub struct Log;

impl CommandHandler for Log {
    const DOMAIN: &'static str = "Test";
    const ENTITY_TYPE: &'static str = "Log";
    type Command = LogCommand;
    type Event = LogEvent;

    fn handle(command: LogCommand, _: &CommandContext) -> Result<Vec<LogEvent>, CommandError> {
        let LogCommand::Note { sequence } = command;
        Ok(vec![LogEvent::Noted { sequence }])
    }
}

/// The part of a tick's notification the handlers read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tick {
    instance_key: String,
    sequence_number: u64,
    event_payload: TickPayload,
}

#[derive(Debug, Deserialize)]
struct TickPayload {
    gate: Option<String>,
    fail: Option<String>,
}

/// What both handlers do, as `name`.
fn relay(
    name: &str,
    notification: &Notification,
    ctx: &NotificationContext,
) -> Result<(), HandlerError> {
    let tick: Tick = notification.data()?;
    if tick.event_payload.fail.as_deref() == Some(name) {
        return Err(HandlerError(format!(
            "{name} fails on tick {} of {}",
            tick.sequence_number, tick.instance_key
        )));
    }
    if let Some(gate) = &tick.event_payload.gate {
        let gate = StreamId::new("Test", "Gate", gate.as_str());
        while ctx.events_of(&gate)?.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    let log = StreamId::new("Test", "Log", format!("{name}-{}", tick.instance_key));
    ctx.send(
        &log,
        &LogCommand::Note {
            sequence: tick.sequence_number,
        },
        Some(format!("{}:{name}", notification.id)),
    )?;
    Ok(())
}

/// Relays ticks as `relay-a`.
pub struct RelayA;

impl NotificationHandler for RelayA {
    const NAME: &'static str = "relay-a";

    fn subscription() -> Subscription {
        Subscription::event_types(&["Test.Ticker.Ticked"])
    }

    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError> {
        relay(Self::NAME, notification, ctx)
    }
}

/// Relays ticks as `relay-b`.
pub struct RelayB;

impl NotificationHandler for RelayB {
    const NAME: &'static str = "relay-b";

    fn subscription() -> Subscription {
        Subscription::event_types(&["Test.Ticker.Ticked"])
    }

    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError> {
        relay(Self::NAME, notification, ctx)
    }
}

cqrs_wasi::export_component! {
    commands: [Ticker, Log],
    notifications: [RelayA, RelayB],
}
