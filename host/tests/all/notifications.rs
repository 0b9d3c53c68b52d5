//! Local notification handlers: "when X happens, then do Y" between
//! domains, with the example `welcome` component reacting to the bank's
//! notifications by sending commands in its own domain.

use std::sync::Arc;

use cqrs_wasi_host::Grants;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{Host, IncomingNotification};
use serde_json::value::RawValue;

use crate::support::{self, letters};

async fn host(grants: Option<Grants>) -> anyhow::Result<Host> {
    let mut builder = Host::builder().store(Arc::new(MemoryStore::new()));
    if let Some(grants) = grants {
        builder = builder.grant("welcome", grants);
    }
    let host = builder.build()?;
    host.deploy("bank", support::component("bank")).await?;
    host.deploy("welcome", support::component("welcome"))
        .await?;
    Ok(host)
}

fn notification(
    id: &str,
    event_type: &str,
    subject: &str,
    data: &str,
) -> anyhow::Result<IncomingNotification> {
    Ok(IncomingNotification {
        id: id.to_owned(),
        event_type: event_type.to_owned(),
        subject: subject.to_owned(),
        data: RawValue::from_string(data.to_owned())?,
        time: "2026-11-27T10:00:00Z".to_owned(),
        traceparent: None,
    })
}

fn new_account(key: &str) -> anyhow::Result<IncomingNotification> {
    notification(
        "4f7a3b1e-8c7d-5d2e-9f00-000000000001",
        "Bank.Account.NewEntity",
        &format!("eventsourcing/Bank/Account/NewEntity/{key}"),
        &format!(
            r#"{{"notificationId": "4f7a3b1e-8c7d-5d2e-9f00-000000000001", "notificationKind": "NewEntity",
                "domainName": "Bank", "entityTypeName": "Account", "instanceKey": "{key}",
                "correlationId": "corr-1", "causationId": null, "commentary": null}}"#
        ),
    )
}

#[tokio::test]
async fn a_new_account_notification_sends_one_welcome_letter_however_often_it_comes()
-> anyhow::Result<()> {
    let host = host(None).await?;
    for _ in 0..2 {
        let deliveries = host.deliver(&new_account("acc-1")?).await;
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert_eq!(deliveries[0].subscription, "welcome-new-accounts");
        assert_eq!(deliveries[0].error, None);
    }
    assert_eq!(
        letters(&host, "welcome-acc-1").await?,
        [r#"WelcomeSent {"account":"acc-1"}"#]
    );
    let stream = StreamId::new("Letters", "Letter", "welcome-acc-1")?;
    let letter = &host.read_stream(&stream, 1, 1).await?[0];
    assert_eq!(
        letter.context.correlation_id.as_deref(),
        Some("corr-1"),
        "the correlation carries over"
    );
    Ok(())
}

#[tokio::test]
async fn a_balance_projection_notification_reaches_its_handler_and_filters_hold()
-> anyhow::Result<()> {
    let host = host(None).await?;
    let balance = |id: &str, value: i64| {
        notification(
            id,
            "Bank.Account.Projection.Balance",
            "eventsourcing/Bank/Account/Projection.Balance/acc-2",
            &format!(
                r#"{{"instanceKey": "acc-2", "projectionTypeName": "Balance", "value": {{"balance": {value}, "open": true}}}}"#
            ),
        )
    };
    let deliveries = host.deliver(&balance("a", 500)?).await;
    assert_eq!(deliveries.len(), 1);
    assert!(letters(&host, "savings-acc-2").await?.is_empty());
    host.deliver(&balance("b", 1500)?).await;
    host.deliver(&balance("c", 2000)?).await;
    assert_eq!(
        letters(&host, "savings-acc-2").await?,
        [r#"CongratulationsSent {"account":"acc-2","balance":1500}"#]
    );
    // Matching is case-insensitive; other event types reach no handler.
    let shouting = notification(
        "d",
        "BANK.ACCOUNT.NEWENTITY",
        "eventsourcing/Bank/Account/NewEntity/acc-3",
        r#"{"instanceKey": "acc-3"}"#,
    )?;
    assert_eq!(host.deliver(&shouting).await.len(), 1);
    let other = notification(
        "e",
        "Bank.Account.MoneyDeposited",
        "eventsourcing/Bank/Account/MoneyDeposited/acc-3",
        "{}",
    )?;
    assert!(host.deliver(&other).await.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_handler_may_send_only_the_commands_it_is_granted() -> anyhow::Result<()> {
    let host = host(Some(Grants {
        append: vec!["Letters".into()],
        send: vec!["Bank/Account/Deposit".into()],
        ..Grants::default()
    }))
    .await?;
    let deliveries = host.deliver(&new_account("acc-4")?).await;
    let error = deliveries[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("may not send SendWelcome to Letters/Letter"),
        "{error}"
    );
    assert!(letters(&host, "welcome-acc-4").await?.is_empty());
    Ok(())
}
