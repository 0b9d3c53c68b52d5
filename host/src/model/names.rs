//! Names: what each part of an identity may hold, checked once where a name
//! enters (the API, a guest's import, a component's `describe`), and
//! carried from there in a type that says it was checked.
//!
//! Every name type here is built only through its validating constructor,
//! so a value that exists is valid; code that takes one never checks again.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest name (domain, entity type, instance key, type name) accepted.
pub const MAX_NAME_BYTES: usize = 128;

/// Event type names that the notification subjects reserve.
pub const RESERVED_EVENT_TYPES: [&str; 2] = ["NewEntity", "Projection"];

/// Which part of an identity a name is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `Bank`, `Retail.Bank`.
    Domain,
    /// `Account`.
    EntityType,
    /// `acc-042`, `user@example.com`.
    InstanceKey,
    /// `MoneyDeposited`.
    EventType,
    /// `Deposit`.
    CommandType,
    /// `Balance`.
    ProjectionType,
    /// A caller-chosen command id (`Idempotency-Key`).
    CommandId,
    /// The name a component is deployed under.
    ComponentName,
    /// The name of a notification handler's subscription.
    SubscriptionName,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Domain => "domain",
            NameKind::EntityType => "entity type",
            NameKind::InstanceKey => "instance key",
            NameKind::EventType => "event type",
            NameKind::CommandType => "command type",
            NameKind::ProjectionType => "projection type",
            NameKind::CommandId => "command id",
            NameKind::ComponentName => "component name",
            NameKind::SubscriptionName => "subscription name",
        })
    }
}

/// A name that failed validation; nothing was read or written because of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {reason}")]
pub struct NameError {
    /// What the name was meant to be.
    pub kind: NameKind,
    /// The offending name, cut to a printable length.
    pub name: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Checks that `name` is a valid name of the given kind.
///
/// All names hold ASCII letters, digits, `_` and `-`, and at most
/// [`MAX_NAME_BYTES`] bytes. A domain may also hold `.` between parts
/// (`Retail.Bank`); an instance key and a command id may also hold `.`, `:`
/// and `@`. Event types may not be one of [`RESERVED_EVENT_TYPES`].
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            kind,
            name: name.chars().take(2 * MAX_NAME_BYTES).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("must not be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse("longer than 128 bytes");
    }
    let extra: &[char] = match kind {
        NameKind::Domain => &['.'],
        NameKind::InstanceKey | NameKind::CommandId => &['.', ':', '@'],
        _ => &[],
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
    {
        return refuse(match kind {
            NameKind::Domain => "only letters, digits, '_', '-' and '.' are allowed",
            NameKind::InstanceKey | NameKind::CommandId => {
                "only letters, digits, '_', '-', '.', ':' and '@' are allowed"
            }
            _ => "only letters, digits, '_' and '-' are allowed",
        });
    }
    if kind == NameKind::Domain && name.split('.').any(str::is_empty) {
        return refuse("dots must separate non-empty parts");
    }
    if kind == NameKind::EventType && RESERVED_EVENT_TYPES.contains(&name) {
        return refuse("reserved for notifications");
    }
    Ok(())
}

/// A validated name of one kind: its type is proof that it passed
/// [`validate_name`].
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `name` and keeps it.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate_name($kind, &name)?;
                Ok($name(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as owned text.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(name: &str) -> Result<Self, NameError> {
                $name::new(name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(name: String) -> Result<Self, NameError> {
                $name::new(name)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(name: &str) -> Result<Self, NameError> {
                $name::new(name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
                out.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
                $name::new(String::deserialize(input)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A domain: `Bank`, `Retail.Bank`.
    Domain,
    NameKind::Domain
);
name_type!(
    /// An entity type: `Account`.
    EntityType,
    NameKind::EntityType
);
name_type!(
    /// An instance key: `acc-042`, `user@example.com`.
    InstanceKey,
    NameKind::InstanceKey
);
name_type!(
    /// An event type: `MoneyDeposited`; never one of
    /// [`RESERVED_EVENT_TYPES`].
    EventType,
    NameKind::EventType
);
name_type!(
    /// A command type: `Deposit`.
    CommandType,
    NameKind::CommandType
);
name_type!(
    /// A command id, the idempotency key of a command.
    CommandId,
    NameKind::CommandId
);

impl CommandId {
    /// The id the host gives a command that came without one.
    pub fn generated(id: uuid::Uuid) -> Self {
        // A hyphenated UUID is a valid command id.
        CommandId(id.to_string())
    }
}
name_type!(
    /// A projection type: `Balance`.
    ProjectionType,
    NameKind::ProjectionType
);

/// Identity of an event stream: `domain / entity type / instance key`.
///
/// Constructed only through [`StreamId::new`], so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamId {
    domain: Domain,
    entity_type: EntityType,
    instance_key: InstanceKey,
}

impl StreamId {
    /// Validates the three parts and builds the identity.
    pub fn new(
        domain: impl Into<String>,
        entity_type: impl Into<String>,
        instance_key: impl Into<String>,
    ) -> Result<Self, NameError> {
        Ok(StreamId::of(
            Domain::new(domain)?,
            EntityType::new(entity_type)?,
            InstanceKey::new(instance_key)?,
        ))
    }

    /// The identity of validated parts.
    pub fn of(domain: Domain, entity_type: EntityType, instance_key: InstanceKey) -> Self {
        StreamId {
            domain,
            entity_type,
            instance_key,
        }
    }

    /// `Bank` in `Bank/Account/acc-042`.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// `Account` in `Bank/Account/acc-042`.
    pub fn entity_type(&self) -> &EntityType {
        &self.entity_type
    }

    /// `acc-042` in `Bank/Account/acc-042`.
    pub fn instance_key(&self) -> &InstanceKey {
        &self.instance_key
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Parts {
            domain: Domain,
            entity_type: EntityType,
            instance_key: InstanceKey,
        }
        let parts = Parts::deserialize(deserializer)?;
        Ok(StreamId::of(
            parts.domain,
            parts.entity_type,
            parts.instance_key,
        ))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.domain, self.entity_type, self.instance_key
        )
    }
}
