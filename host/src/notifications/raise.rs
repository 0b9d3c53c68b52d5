//! Which kinds of notification are raised, per domain and entity type.
//!
//! A [`RaisePolicy`] answers, for a stream, which kinds its changes raise
//! (of those [`NotificationKind::is_raised_by_streams`]): the most specific
//! rule wins (domain and entity type, then domain, then the default). It
//! only decides; the store writes the rows and the host runs the
//! projections.

use crate::model::{KindSet, NotificationKind, StreamId};

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
                rule.domain == stream.domain().as_str()
                    && rule.entity_type.as_deref() == entity_type
            })
        };
        for_domain(Some(stream.entity_type().as_str()))
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
            (account.contains(NewEntity), account.contains(EventAppended)),
            (false, true)
        );
        assert!(account.contains(ProjectionCompleted));
        let loan = policy.kinds_for(&stream("Bank", "Loan"));
        assert_eq!(
            (loan.contains(NewEntity), loan.contains(EventAppended)),
            (true, false)
        );
        assert_eq!(policy.kinds_for(&stream("Shop", "Cart")), KindSet::NONE);
        assert_eq!(
            RaisePolicy::default().kinds_for(&stream("Shop", "Cart")),
            KindSet::ALL
        );
    }
}
