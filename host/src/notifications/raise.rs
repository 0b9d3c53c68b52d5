//! Which kinds of notification are raised, per domain and entity type.
//!
//! A [`RaisePolicy`] answers, for a stream, which of the three kinds its
//! changes raise: the most specific rule wins (domain and entity type, then
//! domain, then the default). It only decides; the store writes the rows
//! and the host runs the projections.

use crate::model::StreamId;
use crate::store::Raise;

use super::model::NotificationKind;

/// A set of [`NotificationKind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u8);

impl KindSet {
    /// No kind.
    pub const NONE: KindSet = KindSet(0);
    /// Every kind.
    pub const ALL: KindSet = KindSet(0b111);

    fn bit(kind: NotificationKind) -> u8 {
        match kind {
            NotificationKind::NewEntity => 1,
            NotificationKind::EventAppended => 2,
            NotificationKind::ProjectionCompleted => 4,
        }
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: NotificationKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// The change-feed kinds of the set, as an append raises them.
    pub fn change_feed(self) -> Raise {
        Raise {
            new_entity: self.contains(NotificationKind::NewEntity),
            event_appended: self.contains(NotificationKind::EventAppended),
        }
    }
}

impl FromIterator<NotificationKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = NotificationKind>>(kinds: I) -> Self {
        KindSet(kinds.into_iter().fold(0, |set, kind| set | Self::bit(kind)))
    }
}

/// Which kinds the streams of a domain, or of one entity type of it, raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaiseRule {
    /// The domain the rule is for.
    pub domain: String,
    /// The entity type, or `None` for every entity type of the domain.
    pub entity_type: Option<String>,
    /// The kinds raised.
    pub kinds: KindSet,
}

/// Which kinds of notification are raised, per domain and entity type.
/// The default raises every kind everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisePolicy {
    default: KindSet,
    rules: Vec<RaiseRule>,
}

impl Default for RaisePolicy {
    fn default() -> Self {
        RaisePolicy::new(KindSet::ALL)
    }
}

impl RaisePolicy {
    /// A policy raising `default` for every stream no rule names.
    pub fn new(default: KindSet) -> RaisePolicy {
        RaisePolicy {
            default,
            rules: Vec::new(),
        }
    }

    /// Adds a rule; a later rule for the same domain and entity type
    /// replaces an earlier one.
    pub fn with_rule(mut self, rule: RaiseRule) -> RaisePolicy {
        self.rules
            .retain(|r| (&r.domain, &r.entity_type) != (&rule.domain, &rule.entity_type));
        self.rules.push(rule);
        self
    }

    /// Whether any stream may raise `kind`.
    pub fn may_raise(&self, kind: NotificationKind) -> bool {
        self.default.contains(kind) || self.rules.iter().any(|rule| rule.kinds.contains(kind))
    }

    /// The kinds `stream`'s changes raise.
    pub fn kinds_for(&self, stream: &StreamId) -> KindSet {
        let for_domain = |entity_type: Option<&str>| {
            self.rules.iter().find(|rule| {
                rule.domain == stream.domain() && rule.entity_type.as_deref() == entity_type
            })
        };
        for_domain(Some(stream.entity_type()))
            .or_else(|| for_domain(None))
            .map_or(self.default, |rule| rule.kinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_wins() {
        use NotificationKind::*;
        let policy = RaisePolicy::new(KindSet::NONE)
            .with_rule(RaiseRule {
                domain: "Bank".into(),
                entity_type: None,
                kinds: [NewEntity].into_iter().collect(),
            })
            .with_rule(RaiseRule {
                domain: "Bank".into(),
                entity_type: Some("Account".into()),
                kinds: [EventAppended, ProjectionCompleted].into_iter().collect(),
            });
        let stream = |d: &str, e: &str| StreamId::new(d, e, "k").expect("valid");
        let account = policy.kinds_for(&stream("Bank", "Account"));
        assert_eq!(
            account.change_feed(),
            Raise {
                new_entity: false,
                event_appended: true
            }
        );
        assert!(account.contains(ProjectionCompleted));
        assert_eq!(
            policy.kinds_for(&stream("Bank", "Loan")).change_feed(),
            Raise {
                new_entity: true,
                event_appended: false
            }
        );
        assert_eq!(policy.kinds_for(&stream("Shop", "Cart")), KindSet::NONE);
        assert_eq!(
            RaisePolicy::default().kinds_for(&stream("Shop", "Cart")),
            KindSet::ALL
        );
    }
}
