//! A component built on the raw bindings, where nothing stops it from
//! returning what the SDK never would: payloads that are not JSON, reserved
//! event types, states that are not JSON.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "domain-component",
    });

    use cqrs_wasi::handlers::types::{
        Command, CommandError, NewEvent, Notification, ProjectionError,
    };
    use exports::cqrs_wasi::handlers::command_handler::{self, CommandRoutes};
    use exports::cqrs_wasi::handlers::notification_handler::{self, Subscription};
    use exports::cqrs_wasi::handlers::projection::{
        self, EventBatch, ProjectionId, ProjectionInfo,
    };

    struct Garbage;

    impl command_handler::Guest for Garbage {
        fn describe() -> Vec<CommandRoutes> {
            vec![CommandRoutes {
                domain: "Test".into(),
                entity_type: "Garbage".into(),
                command_types: vec!["NotJson".into(), "Reserved".into()],
            }]
        }

        fn handle(command: Command) -> Result<Vec<NewEvent>, CommandError> {
            let (event_type, payload) = match command.command_type.as_str() {
                "NotJson" => ("Written", b"{not json".to_vec()),
                _ => ("NewEntity", b"{}".to_vec()),
            };
            Ok(vec![NewEvent {
                event_type: event_type.into(),
                payload,
            }])
        }
    }

    impl projection::Guest for Garbage {
        fn describe() -> Vec<ProjectionInfo> {
            vec![ProjectionInfo {
                id: ProjectionId {
                    domain: "Test".into(),
                    entity_type: "Garbage".into(),
                    projection_type: "Junk".into(),
                },
                event_types: vec!["Written".into()],
            }]
        }

        fn apply(
            _: ProjectionId,
            _: Option<Vec<u8>>,
            _: EventBatch,
        ) -> Result<Vec<u8>, ProjectionError> {
            Ok(vec![0xff, 0xfe, b'{'])
        }
    }

    impl notification_handler::Guest for Garbage {
        fn describe() -> Vec<Subscription> {
            Vec::new()
        }

        fn handle(_: String, _: Notification) -> Result<(), String> {
            Err("subscribes to nothing".into())
        }
    }

    export!(Garbage);
}
