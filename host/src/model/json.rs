//! What the system admits as a JSON document.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Admits a JSON document into the system: it must parse, and every number
/// in it must fit an IEEE 754 double (interoperable JSON, RFC 7493), so that
/// every consumer's JSON library reads what was stored. Every payload and
/// state, from clients and guests alike, comes in through here.
pub fn json_document(bytes: Vec<u8>) -> Result<Box<RawValue>, serde_json::Error> {
    let text = String::from_utf8(bytes).map_err(|e| {
        serde::de::Error::custom(format!(
            "not UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    serde_json::from_str::<Interoperable>(&text)?;
    RawValue::from_string(text)
}

/// Reads a document without keeping it, failing on numbers a double cannot
/// hold (which `serde_json`'s `RawValue` and `IgnoredAny` let through).
struct Interoperable;

impl<'de> Deserialize<'de> for Interoperable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InteroperableVisitor)
    }
}

struct InteroperableVisitor;

impl<'de> serde::de::Visitor<'de> for InteroperableVisitor {
    type Value = Interoperable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Interoperable, E> {
        if value.is_finite() {
            Ok(Interoperable)
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_unit<E>(self) -> Result<Interoperable, E> {
        Ok(Interoperable)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<Interoperable, A::Error> {
        while seq.next_element::<Interoperable>()?.is_some() {}
        Ok(Interoperable)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Interoperable, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, Interoperable>()?
            .is_some()
        {}
        Ok(Interoperable)
    }
}
