//! The kinds of notification and sets of them.

use std::fmt;
use std::str::FromStr;

/// The kinds of notification, as every layer names them: the store's
/// outbox rows, the raise policy, the dispatcher, and the wire form.
///
/// Their string forms ([`as_str`](Self::as_str)) are stored in the outbox,
/// are `data.notificationKind` and the first part of a notification id's
/// name, so they never change. Every `match` over a kind names each one, so
/// that a new kind makes the compiler point at every place that must decide
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// A stream was created (its first event was appended): `"NewEntity"`.
    NewEntity,
    /// An event was appended to a stream: `"EventAppended"`.
    EventAppended,
    /// A projection ran over a stream: `"ProjectionCompleted"`.
    ProjectionCompleted,
    /// A notification handler published a custom event to a topic:
    /// `"Published"`.
    Published,
}

impl NotificationKind {
    /// Every kind, in a fixed order: a set's kinds come in this order, and
    /// so do the outbox rows an append writes for one event.
    pub const ALL: [NotificationKind; 4] = [
        NotificationKind::NewEntity,
        NotificationKind::EventAppended,
        NotificationKind::ProjectionCompleted,
        NotificationKind::Published,
    ];

    /// `"NewEntity"`, `"EventAppended"`, `"ProjectionCompleted"` or
    /// `"Published"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::NewEntity => "NewEntity",
            NotificationKind::EventAppended => "EventAppended",
            NotificationKind::ProjectionCompleted => "ProjectionCompleted",
            NotificationKind::Published => "Published",
        }
    }

    /// Whether it is part of the change feed: an append writes its outbox
    /// rows, each pointing at an event, in the append's transaction. The
    /// other kinds are documents the host adds later.
    pub fn is_change_feed(self) -> bool {
        match self {
            NotificationKind::NewEntity | NotificationKind::EventAppended => true,
            NotificationKind::ProjectionCompleted | NotificationKind::Published => false,
        }
    }

    /// Whether a stream's changes raise it, as a raise policy decides per
    /// domain and entity type. A published event is not: a notification
    /// handler raises it when it publishes.
    pub fn is_raised_by_streams(self) -> bool {
        match self {
            NotificationKind::NewEntity
            | NotificationKind::EventAppended
            | NotificationKind::ProjectionCompleted => true,
            NotificationKind::Published => false,
        }
    }

    /// The kind's bit in a [`KindSet`].
    const fn bit(self) -> u8 {
        match self {
            NotificationKind::NewEntity => 1,
            NotificationKind::EventAppended => 1 << 1,
            NotificationKind::ProjectionCompleted => 1 << 2,
            NotificationKind::Published => 1 << 3,
        }
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationKind {
    type Err = UnknownNotificationKind;

    /// The inverse of [`as_str`](Self::as_str) (exact, case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownNotificationKind(s.chars().take(64).collect()))
    }
}

/// A string that names no [`NotificationKind`] (cut to a printable length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown notification kind {0:?}")]
pub struct UnknownNotificationKind(pub String);

/// A set of [`NotificationKind`]s: those a stream raises, which an append
/// carries to the store (it writes the rows of the change-feed kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u8);

impl KindSet {
    /// No kind.
    pub const NONE: KindSet = KindSet(0);
    /// Every kind.
    pub const ALL: KindSet = {
        let mut bits = 0;
        let mut index = 0;
        while index < NotificationKind::ALL.len() {
            bits |= NotificationKind::ALL[index].bit();
            index += 1;
        }
        KindSet(bits)
    };

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: NotificationKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds in the set, in the order of [`NotificationKind::ALL`].
    pub fn iter(self) -> impl Iterator<Item = NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .filter(move |&kind| self.contains(kind))
    }
}

impl FromIterator<NotificationKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = NotificationKind>>(kinds: I) -> Self {
        KindSet(kinds.into_iter().fold(0, |set, kind| set | kind.bit()))
    }
}
