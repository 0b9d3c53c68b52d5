//! W3C Trace Context's `traceparent`: the one piece of a trace that travels
//! with a command, is stored with its events, and leaves on their
//! notifications.
//!
//! This module only parses and prints the header; it knows nothing of spans
//! or exporters (`telemetry.rs` turns a [`TraceParent`] into an OpenTelemetry
//! parent and back).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A valid `traceparent` (W3C Trace Context, level 1): version, trace id,
/// parent span id and flags, kept in the version-00 form
/// `00-{32 hex}-{16 hex}-{2 hex}`.
///
/// Only [`TraceParent::parse`] and [`TraceParent::new`] make one, so a value
/// that exists is a valid one: the ids are lowercase hex and not all zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// Why a `traceparent` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {reason}")]
pub struct TraceParentError {
    /// What was given (at most 64 bytes of it).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TraceParent {
    /// Parses a `traceparent` header value.
    ///
    /// As the specification asks, a version above `00` is read as far as
    /// version 00 goes (its first four fields), and `ff` is refused.
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let refuse = |reason| TraceParentError {
            value: value.chars().take(64).collect(),
            reason,
        };
        let value = value.trim();
        let mut fields = value.split('-');
        let (Some(version), Some(trace_id), Some(span_id), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(refuse("it needs four fields separated by '-'"));
        };
        let hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" {
            return Err(refuse(
                "the version is not two lowercase hex digits below ff",
            ));
        }
        if version == "00" && fields.next().is_some() {
            return Err(refuse("version 00 has exactly four fields"));
        }
        if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return Err(refuse(
                "the trace id is not 32 lowercase hex digits, not all zero",
            ));
        }
        if !hex(span_id, 16) || span_id.bytes().all(|b| b == b'0') {
            return Err(refuse(
                "the parent id is not 16 lowercase hex digits, not all zero",
            ));
        }
        if !hex(flags, 2) {
            return Err(refuse("the flags are not two lowercase hex digits"));
        }
        Ok(TraceParent(format!("00-{trace_id}-{span_id}-{flags}")))
    }

    /// The `traceparent` of span `span_id` in trace `trace_id`, with
    /// `flags` (bit 0: sampled). `None` if either id is all zeros.
    pub fn new(trace_id: u128, span_id: u64, flags: u8) -> Option<TraceParent> {
        (trace_id != 0 && span_id != 0)
            .then(|| TraceParent(format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}")))
    }

    /// The header value, `00-{trace id}-{parent id}-{flags}`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The parent span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> &str {
        &self.0[36..52]
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        // Checked hex by `parse`, written by `new`.
        u8::from_str_radix(&self.0[53..55], 16).unwrap_or(0)
    }

    /// The trace id as a number.
    pub fn trace_id_bits(&self) -> u128 {
        u128::from_str_radix(self.trace_id(), 16).unwrap_or(0)
    }

    /// The parent span id as a number.
    pub fn span_id_bits(&self) -> u64 {
        u64::from_str_radix(self.span_id(), 16).unwrap_or(0)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(value)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TraceParent::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads an optional `traceparent` that a reader must not fail on: a value
/// that is not one (written by hand into a store, say) reads as none, so
/// that the event or notification carrying it stays readable.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TraceParent>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.and_then(|text| TraceParent::parse(&text).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_prints_the_specifications_example() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(parent.as_str(), VALID);
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id(), "00f067aa0ba902b7");
        assert_eq!(parent.flags(), 1);
        let again = TraceParent::new(parent.trace_id_bits(), parent.span_id_bits(), 1);
        assert_eq!(again, Some(parent));
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).unwrap().as_str(), VALID);
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(TraceParent::new(0, 1, 1), None);
        assert_eq!(TraceParent::new(1, 0, 1), None);
    }

    #[test]
    fn stored_values_that_are_not_traceparents_read_as_none() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "lenient")]
            traceparent: Option<TraceParent>,
        }
        let read = |json: &str| serde_json::from_str::<Holder>(json).unwrap().traceparent;
        assert_eq!(read("{}"), None);
        assert_eq!(read(r#"{"traceparent": "nonsense"}"#), None);
        assert_eq!(
            read(&format!(r#"{{"traceparent": "{VALID}"}}"#)),
            Some(TraceParent::parse(VALID).unwrap())
        );
    }
}
