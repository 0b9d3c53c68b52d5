//! Test fixture: announces every new bank account to the topic `partners`
//! as a custom event, keyed by the notification so that a redelivery
//! publishes the same event again.

use cqrs_wasi::{
    CustomEvent, HandlerError, Notification, NotificationContext, NotificationHandler, Subscription,
};
use serde::Deserialize;

/// The topic it publishes to; the host must configure and grant it.
pub const TOPIC: &str = "partners";

/// The part of a new-entity notification's data it reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct About {
    instance_key: String,
}

/// Publishes `Partners.AccountAnnounced` for each new account.
pub struct Announce;

impl NotificationHandler for Announce {
    const NAME: &'static str = "announce-new-accounts";

    fn subscription() -> Subscription {
        Subscription::event_types(&["Bank.Account.NewEntity"])
    }

    fn handle(notification: &Notification, ctx: &NotificationContext) -> Result<(), HandlerError> {
        let about: About = notification.data()?;
        let event = CustomEvent::new(
            format!("announce-{}", notification.id),
            "Partners.AccountAnnounced",
            format!("accounts/{}", about.instance_key),
            &serde_json::json!({ "account": about.instance_key }),
        )?;
        ctx.publish(TOPIC, event)?;
        Ok(())
    }
}

cqrs_wasi::export_component! {
    notifications: [Announce],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_account_is_announced_under_a_key_of_its_notification() {
        let ctx = NotificationContext::recording();
        let notification = Notification {
            id: "n-1".into(),
            event_type: "Bank.Account.NewEntity".into(),
            subject: "eventsourcing/Bank/Account/NewEntity/acc-1".into(),
            data: br#"{"instanceKey": "acc-1"}"#.to_vec(),
            time: "2026-11-27T00:00:00Z".into(),
        };
        Announce::handle(&notification, &ctx).unwrap();
        let published = ctx.published();
        assert_eq!(published.len(), 1);
        let (topic, event) = &published[0];
        assert_eq!(topic, TOPIC);
        assert_eq!(event.key, "announce-n-1");
        assert_eq!(event.subject, "accounts/acc-1");
        assert_eq!(event.data, br#"{"account":"acc-1"}"#);
    }
}
