//! The vocabulary every layer shares: stream identity and the other names,
//! events, expectations, notification kinds, the JSON the system admits.
//!
//! This module owns name validation, so a [`StreamId`] (or any name type)
//! that exists is a valid one. It knows nothing of wasm, storage or HTTP.

mod events;
mod json;
mod kinds;
mod names;
mod trace;

pub use events::{EventContext, Expectation, NewEvent, RecordedEvent, new_id};
pub use json::json_document;
pub use kinds::{KindSet, NotificationKind, UnknownNotificationKind};
pub use names::{
    CommandId, CommandType, Domain, EntityType, EventType, InstanceKey, MAX_NAME_BYTES, NameError,
    NameKind, ProjectionType, RESERVED_EVENT_TYPES, StreamId, validate_name,
};
pub(crate) use trace::lenient as lenient_traceparent;
pub use trace::{TraceParent, TraceParentError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_sort_in_the_order_they_were_made() {
        // As the stores index them: as text.
        let ids: Vec<String> = (0..10_000).map(|_| new_id().to_string()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn stream_names_follow_the_design_rules() {
        assert!(StreamId::new("Retail.Bank", "Account", "user@example.com:1").is_ok());
        assert!(StreamId::new("Bank", "Account", "a/b").is_err());
        assert!(StreamId::new("Bank.", "Account", "a").is_err());
        assert!(StreamId::new("Bank", "Acc.ount", "a").is_err());
        assert!(StreamId::new("Bank", "Account", "x".repeat(129)).is_err());
        assert!(StreamId::new("Bank", "Account", "x".repeat(128)).is_ok());
        assert!(StreamId::new("", "Account", "a").is_err());
        assert!(StreamId::new("Bänk", "Account", "a").is_err());
    }

    #[test]
    fn reserved_event_types_are_refused() {
        let err = validate_name(NameKind::EventType, "NewEntity").unwrap_err();
        assert_eq!(err.reason, "reserved for notifications");
        assert!(validate_name(NameKind::EventType, "MoneyDeposited").is_ok());
    }

    #[test]
    fn json_documents_must_be_interoperable() {
        assert!(json_document(br#"{"a": [1, -2.5e10, "x", null, true]}"#.to_vec()).is_ok());
        // A finding of the `http_command` fuzz target: RawValue admits it.
        for refused in [
            &b"33333E333333333"[..],
            b"[1e400]",
            b"{\"a\": -1e999}",
            b"{",
            b"\xff",
        ] {
            assert!(json_document(refused.to_vec()).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn expectations() {
        assert!(Expectation::NoStream.is_met_by(0));
        assert!(!Expectation::NoStream.is_met_by(1));
        assert!(Expectation::StreamExists.is_met_by(3));
        assert!(Expectation::Exact(3).is_met_by(3));
        assert!(!Expectation::Exact(2).is_met_by(3));
        assert!(Expectation::Any.is_met_by(0));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in NotificationKind::ALL {
            assert_eq!(kind.as_str().parse::<NotificationKind>().unwrap(), kind);
        }
        assert!("newentity".parse::<NotificationKind>().is_err());
    }

    #[test]
    fn a_kind_set_holds_the_kinds_it_was_made_of_in_a_fixed_order() {
        use NotificationKind::*;
        let set: KindSet = [Published, NewEntity].into_iter().collect();
        assert!(set.contains(NewEntity) && set.contains(Published));
        assert!(!set.contains(EventAppended) && !set.contains(ProjectionCompleted));
        assert_eq!(set.iter().collect::<Vec<_>>(), [NewEntity, Published]);
        assert_eq!(KindSet::NONE.iter().count(), 0);
        assert_eq!(
            KindSet::ALL.iter().collect::<Vec<_>>(),
            NotificationKind::ALL
        );
    }
}
