//! Mapping between Rust enums and the `(type name, JSON payload)` pairs that
//! cross the component boundary.
//!
//! A command or event enum is an ordinary externally tagged serde enum: the
//! variant name is the command or event type, the variant's fields are the
//! payload. This module is the only place that knows that convention.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize, forward_to_deserialize_any};

/// Deserializes the variant `type_name` of `T` from a JSON `payload`,
/// without building an intermediate JSON tree.
///
/// An empty payload reads as `{}`, so that a command without fields can be
/// sent with no body.
pub fn decode<T: DeserializeOwned>(type_name: &str, payload: &[u8]) -> serde_json::Result<T> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    let mut json = serde_json::Deserializer::from_slice(payload);
    let value = T::deserialize(Tagged {
        type_name,
        json: &mut json,
    })?;
    json.end()?;
    Ok(value)
}

/// Serializes an externally tagged enum value into its variant name and its
/// JSON payload. A unit variant gets the payload `{}`.
pub fn encode<T: Serialize>(value: &T) -> serde_json::Result<(String, Vec<u8>)> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(type_name) => Ok((type_name, b"{}".to_vec())),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let Some((type_name, payload)) = map.into_iter().next() else {
                unreachable!("a map of length one has an entry")
            };
            Ok((type_name, serde_json::to_vec(&payload)?))
        }
        _ => Err(de::Error::custom(
            "expected an enum whose variant names are event types",
        )),
    }
}

/// The variant names of an enum type, read off its `Deserialize` impl.
///
/// `#[derive(Deserialize)]` passes the list of variant names to
/// `deserialize_enum`; a deserializer that only records that list lets the
/// SDK derive the command and event types a handler declares from the enum
/// itself, with no second list to keep in sync.
pub fn variant_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not an enum")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(variants);
            Err(Stop)
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    let mut names = Names(None);
    let _ = T::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

/// A deserializer that presents `(type_name, payload)` as an externally
/// tagged enum.
struct Tagged<'a, 'de> {
    type_name: &'a str,
    json: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
}

impl<'de> de::Deserializer<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> serde_json::Result<V::Value> {
        Err(de::Error::custom(
            "commands and events must be enums whose variants are the type names",
        ))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;
    type Variant = Self;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> serde_json::Result<(S::Value, Self)> {
        let variant = seed.deserialize(self.type_name.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> serde_json::Result<()> {
        // A unit variant has no fields; its payload may be `{}` or `null`.
        de::IgnoredAny::deserialize(&mut *self.json).map(drop)
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> serde_json::Result<S::Value> {
        seed.deserialize(&mut *self.json)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        de::Deserializer::deserialize_tuple(&mut *self.json, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        de::Deserializer::deserialize_struct(&mut *self.json, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Command {
        Open { owner: String },
        Deposit { amount: u64 },
        Close {},
        Ping,
    }

    #[test]
    fn decodes_struct_variants_by_type_name() {
        let cmd: Command = decode("Deposit", br#"{"amount": 5}"#).unwrap();
        assert_eq!(cmd, Command::Deposit { amount: 5 });
        let cmd: Command = decode("Close", b"").unwrap();
        assert_eq!(cmd, Command::Close {});
        let cmd: Command = decode("Ping", b"{}").unwrap();
        assert_eq!(cmd, Command::Ping);
    }

    #[test]
    fn refuses_unknown_types_and_bad_payloads() {
        assert!(decode::<Command>("Withdraw", b"{}").is_err());
        assert!(decode::<Command>("Deposit", br#"{"amount": -1}"#).is_err());
        assert!(decode::<Command>("Deposit", br#"{"amount": 1} x"#).is_err());
        assert!(decode::<Command>("Open", b"{").is_err());
    }

    #[test]
    fn encodes_variant_name_and_payload() {
        let (name, payload) = encode(&Command::Deposit { amount: 7 }).unwrap();
        assert_eq!(name, "Deposit");
        assert_eq!(payload, br#"{"amount":7}"#);
        let (name, payload) = encode(&Command::Ping).unwrap();
        assert_eq!(
            (name.as_str(), payload.as_slice()),
            ("Ping", b"{}".as_slice())
        );
    }

    #[test]
    fn lists_variant_names() {
        assert_eq!(
            variant_names::<Command>(),
            &["Open", "Deposit", "Close", "Ping"]
        );
        assert!(variant_names::<u32>().is_empty());
    }
}
