//! Capabilities: which domains a component may read and append to, which
//! topics it may publish to, which commands it may send.
//!
//! A component with no configured grants may read, append to and send
//! commands to the domains it declares in `describe`, and nothing else. Grants are checked by the
//! host's import implementations and at deploy; this module only decides.

use serde::Deserialize;

use crate::runtime::LoadedComponent;

/// What one component is granted. Each list holds exact names, or `*` for
/// any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Domains whose streams it may read.
    pub read: Vec<String>,
    /// Domains it may handle commands for, and so append to.
    pub append: Vec<String>,
    /// Topics it may publish custom events to.
    pub publish: Vec<String>,
    /// Commands it may send, as `Domain/EntityType/CommandType`.
    pub send: Vec<String>,
}

fn allows(list: &[String], name: &str) -> bool {
    list.iter().any(|granted| granted == "*" || granted == name)
}

/// The grants of one component: configured, or its own domains.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capabilities<'a> {
    pub(crate) component: &'a LoadedComponent,
    pub(crate) configured: Option<&'a Grants>,
}

impl Capabilities<'_> {
    fn declares(&self, domain: &str) -> bool {
        self.component.commands().iter().any(|r| r.domain == domain)
            || self
                .component
                .projections()
                .iter()
                .any(|r| r.domain == domain)
    }

    /// Whether the component may read streams of `domain`.
    pub(crate) fn may_read(&self, domain: &str) -> bool {
        match self.configured {
            Some(grants) => allows(&grants.read, domain),
            None => self.declares(domain),
        }
    }

    /// Whether the component may send `command_type` to `domain /
    /// entity_type`.
    pub(crate) fn may_send(&self, domain: &str, entity_type: &str, command_type: &str) -> bool {
        match self.configured {
            Some(grants) => allows(
                &grants.send,
                &format!("{domain}/{entity_type}/{command_type}"),
            ),
            None => self.declares(domain),
        }
    }

    /// Whether the component may publish to `topic`. Only configured grants
    /// allow it: a topic reaches outside the host.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.configured
            .is_some_and(|grants| allows(&grants.publish, topic))
    }

    /// The first domain the component handles commands for but may not
    /// append to.
    pub(crate) fn ungranted_append(&self) -> Option<&str> {
        let grants = self.configured?;
        self.component
            .commands()
            .iter()
            .map(|route| route.domain.as_str())
            .find(|domain| !allows(&grants.append, domain))
    }
}
