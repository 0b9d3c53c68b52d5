//! Running handlers natively, in the caller's process and without a
//! component: the same decoding, encoding and folding that
//! `export_component!` does inside a component, for a native runner such as
//! the benchmark suite's baseline (`bench/`), which measures what the wasm
//! sandbox costs by doing everything else the host does.
//!
//! Only on native targets.

use crate::{CommandContext, CommandError, CommandHandler, Projection, RecordedEvent};

/// Runs `H` on a command given as its type and JSON payload, as a
/// component's `command-handler.handle` does: the events come back as
/// `(event type, JSON payload)` pairs.
pub fn handle<H: CommandHandler>(
    command_type: &str,
    payload: &[u8],
    ctx: &CommandContext,
) -> Result<Vec<(String, Vec<u8>)>, CommandError> {
    let command: H::Command = crate::codec::decode(command_type, payload)
        .map_err(|e| CommandError::InvalidPayload(e.to_string()))?;
    H::handle(command, ctx)?
        .iter()
        .map(|event| {
            crate::codec::encode(event)
                .map_err(|e| CommandError::Other(format!("event not serializable: {e}")))
        })
        .collect()
}

/// Folds a batch of events into a JSON state with `P` (`None`: the initial
/// state) and returns the new JSON state, as a component's
/// `projection.apply` does.
pub fn apply<P: Projection>(
    state: Option<&[u8]>,
    events: &[RecordedEvent],
) -> Result<Vec<u8>, String> {
    let mut state: P::State = match state {
        None => P::State::default(),
        Some(json) => serde_json::from_slice(json).map_err(|e| format!("invalid state: {e}"))?,
    };
    crate::fold::<P>(&mut state, events).map_err(|e| format!("invalid event: {e}"))?;
    serde_json::to_vec(&state).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventContext, StreamId};
    use serde::{Deserialize, Serialize};

    #[derive(Deserialize)]
    enum CounterCommand {
        Increment { by: u32 },
    }

    #[derive(Serialize, Deserialize)]
    enum CounterEvent {
        Incremented { by: u32 },
    }

    struct Counter;

    impl CommandHandler for Counter {
        const DOMAIN: &'static str = "Demo";
        const ENTITY_TYPE: &'static str = "Counter";
        type Command = CounterCommand;
        type Event = CounterEvent;

        fn handle(
            command: CounterCommand,
            ctx: &CommandContext,
        ) -> Result<Vec<CounterEvent>, CommandError> {
            let total = ctx.project::<Total>()?;
            let CounterCommand::Increment { by } = command;
            if total + u64::from(by) > 100 {
                return Err(CommandError::rejected("a counter stops at 100"));
            }
            Ok(vec![CounterEvent::Incremented { by }])
        }
    }

    struct Total;

    impl Projection for Total {
        const DOMAIN: &'static str = "Demo";
        const ENTITY_TYPE: &'static str = "Counter";
        const NAME: &'static str = "Total";
        type Event = CounterEvent;
        type State = u64;

        fn apply(total: &mut u64, event: CounterEvent, _: &RecordedEvent) {
            let CounterEvent::Incremented { by } = event;
            *total += u64::from(by);
        }
    }

    fn prepared(total: &[u8]) -> CommandContext {
        CommandContext::prepared(
            StreamId::new("Demo", "Counter", "c-1"),
            "cmd-1".to_owned(),
            EventContext::default(),
            3,
            vec![("Total".to_owned(), total.to_vec())],
        )
    }

    #[test]
    fn a_prepared_context_serves_the_states_it_was_given() {
        let events = handle::<Counter>("Increment", br#"{"by": 2}"#, &prepared(b"98")).unwrap();
        assert_eq!(
            events,
            vec![("Incremented".to_owned(), br#"{"by":2}"#.to_vec())]
        );
        let refused = handle::<Counter>("Increment", br#"{"by": 3}"#, &prepared(b"98"));
        assert_eq!(
            refused,
            Err(CommandError::rejected("a counter stops at 100"))
        );
        assert_eq!(prepared(b"1").sequence(), Ok(3));
        assert!(prepared(b"1").events().is_err());
    }

    #[test]
    fn a_malformed_command_is_an_invalid_payload() {
        let refused = handle::<Counter>("Increment", br#"{"by": -1}"#, &prepared(b"0"));
        assert!(matches!(refused, Err(CommandError::InvalidPayload(_))));
    }

    #[test]
    fn apply_folds_from_the_initial_or_a_given_state() {
        let ctx = CommandContext::with_history(
            "Demo",
            "Counter",
            "c-1",
            &[CounterEvent::Incremented { by: 4 }],
        )
        .unwrap();
        let events = ctx.events().unwrap();
        assert_eq!(apply::<Total>(None, &events).unwrap(), b"4");
        assert_eq!(apply::<Total>(Some(b"10"), &events).unwrap(), b"14");
        assert!(apply::<Total>(Some(b"{"), &events).is_err());
    }
}
