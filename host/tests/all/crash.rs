//! A crash loses nothing acknowledged: `cqrs-wasi serve` is killed
//! (SIGKILL) at random moments under concurrent load, several times; after
//! each restart every acknowledged deposit is in its stream at the sequence
//! its client was told, the streams have no gaps, and every balance is the
//! sum of the acknowledged deposits. A deposit whose answer the kill cut
//! off is sent again with its `Idempotency-Key`: it ran once, or runs now,
//! never twice. Once the host runs again, every acknowledged event reaches
//! its Event Grid topic (the stand-in, throttling, failing and dropping
//! connections throughout), each copy with the id of its identity.
//!
//! What a kill cannot prove: that a commit was fsynced. SIGKILL ends the
//! process, not the machine; what the host wrote is in the kernel's page
//! cache and reaches the file whether or not it was ever fsynced. Only a
//! power loss or an OS crash tells the two apart, and no test here can
//! cause one. So the kills show that the host acknowledges nothing before
//! its transaction commits, and the tests assert the settings that make a
//! commit durable instead: for SQLite, `synchronous=FULL` as the host reads
//! it back from the connection that commits (the setting belongs to a
//! connection, not to the file: a fresh connection would show only its own
//! default); for PostgreSQL, `fsync` and `synchronous_commit` on the server.
//!
//! The accounts, amounts and kill moments come from a seeded generator; the
//! seed is printed, and `CQRS_WASI_TEST_SEED` repeats a run's choices.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::notifications::model::{NotificationKind, notification_id};
use cqrs_wasi_host::store::postgres_testing::ScratchSchema;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::event_grid::{EventGridStandIn, Fault, Schema};
use crate::support::{self, Api, ServedHost};

const ACCOUNTS: usize = 4;
const CLIENTS: usize = 8;
/// Kills (and restarts) per test.
const CYCLES: usize = 3;

fn account(n: usize) -> String {
    format!("acc-{n}")
}

/// One deposit a client sent.
#[derive(Debug, Clone)]
pub(crate) struct Deposit {
    /// Its `Idempotency-Key`, unique to it.
    pub(crate) command_id: String,
    pub(crate) account: String,
    pub(crate) amount: i64,
}

impl Deposit {
    /// Sends it to `api`: its answer, or `None` if the host never answered.
    pub(crate) async fn send(&self, api: &Api) -> Option<(StatusCode, Value)> {
        let body = json!({ "amount": self.amount }).to_string();
        api.command_with(&self.account, "Deposit", &body, Some(&self.command_id))
            .await
            .ok()
    }
}

/// What the clients were told, and what they were not.
#[derive(Default)]
pub(crate) struct Ledger(Mutex<Entries>);

#[derive(Default)]
pub(crate) struct Entries {
    /// Each acknowledged deposit and the sequence its answer gave it.
    pub(crate) acknowledged: BTreeMap<String, (Deposit, u64)>,
    /// Sent, unanswered (the host died under them) or refused for now
    /// (503, `store_unavailable`): sent again later.
    pub(crate) in_doubt: Vec<Deposit>,
    /// Every 503 answer's body, kept for the tests that cause them.
    pub(crate) unavailable: Vec<Value>,
    /// Answers no client should get: any other status but 200, a replay
    /// of a deposit sent once.
    pub(crate) unexpected: Vec<String>,
}

impl Ledger {
    pub(crate) fn entries(&self) -> MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `answer` to `deposit`; `resent` if it was in doubt, when a
    /// replay is one of the two right answers.
    pub(crate) fn record(
        &self,
        deposit: Deposit,
        answer: Option<(StatusCode, Value)>,
        resent: bool,
    ) {
        let mut entries = self.entries();
        match answer {
            None => entries.in_doubt.push(deposit),
            Some((StatusCode::OK, body)) => {
                let sequence = body["events"][0]["sequence"].as_u64();
                match sequence {
                    Some(sequence) if resent || body["replayed"] == false => {
                        entries
                            .acknowledged
                            .insert(deposit.command_id.clone(), (deposit, sequence));
                    }
                    _ => entries
                        .unexpected
                        .push(format!("{deposit:?} was answered {body}")),
                }
            }
            Some((StatusCode::SERVICE_UNAVAILABLE, body))
                if body["code"] == "store_unavailable" =>
            {
                entries.unavailable.push(body);
                entries.in_doubt.push(deposit);
            }
            Some((status, body)) => entries
                .unexpected
                .push(format!("{deposit:?} was answered {status} {body}")),
        }
    }

    pub(crate) fn acknowledged(&self) -> usize {
        self.entries().acknowledged.len()
    }
}

/// Deposits through `api` until it stops answering or `stop` is set.
pub(crate) async fn client(
    api: Arc<ServedHost>,
    ledger: Arc<Ledger>,
    mut rng: fastrand::Rng,
    name: String,
    stop: Arc<AtomicBool>,
) {
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let deposit = Deposit {
            command_id: format!("{name}-{n}"),
            account: account(rng.usize(..ACCOUNTS)),
            amount: rng.i64(1..=100),
        };
        let answer = deposit.send(&api).await;
        let gone = answer.is_none();
        ledger.record(deposit, answer, false);
        if gone {
            return;
        }
    }
}

/// Starts `clients` clients, each on `hosts[client % hosts.len()]`.
pub(crate) fn load(
    hosts: &[Arc<ServedHost>],
    ledger: &Arc<Ledger>,
    rng: &mut fastrand::Rng,
    cycle: usize,
    stop: &Arc<AtomicBool>,
) -> JoinSet<()> {
    let mut clients = JoinSet::new();
    for n in 0..CLIENTS {
        clients.spawn(client(
            hosts[n % hosts.len()].clone(),
            ledger.clone(),
            rng.fork(),
            format!("dep-{cycle}-{n}"),
            stop.clone(),
        ));
    }
    clients
}

/// Waits until `count` more deposits than `from` were acknowledged.
pub(crate) async fn until_acknowledged(
    ledger: &Ledger,
    from: usize,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger.acknowledged() < from + count {
        ensure!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Sends every deposit in doubt again, with its key, through `api`.
pub(crate) async fn resolve(api: &Api, ledger: &Ledger) {
    let in_doubt = std::mem::take(&mut ledger.entries().in_doubt);
    for deposit in in_doubt {
        let answer = deposit.send(api).await;
        ledger.record(deposit, answer, true);
    }
}

/// Every stream holds exactly the acknowledged deposits, each at the
/// sequence its client was told, with no gap; every balance is their sum.
pub(crate) async fn verify(api: &Api, ledger: &Ledger) -> anyhow::Result<()> {
    let acknowledged = {
        let entries = ledger.entries();
        ensure!(
            entries.unexpected.is_empty(),
            "unexpected answers: {:#?}",
            entries.unexpected
        );
        ensure!(
            entries.in_doubt.is_empty(),
            "in doubt: {:?}",
            entries.in_doubt
        );
        entries.acknowledged.clone()
    };
    for n in 0..ACCOUNTS {
        let key = account(n);
        let events = api.events(&format!("Bank/Account/{key}")).await?;
        let sequences: Vec<u64> = events
            .iter()
            .filter_map(|e| e["sequence"].as_u64())
            .collect();
        ensure!(
            sequences == (1..=events.len() as u64).collect::<Vec<_>>(),
            "{key}: sequences {sequences:?}"
        );
        ensure!(events[0]["eventType"] == "AccountOpened", "{key}");
        let mut stored = BTreeMap::new();
        for event in &events[1..] {
            ensure!(event["eventType"] == "MoneyDeposited", "{key}: {event}");
            let command_id = event["context"]["causationId"]
                .as_str()
                .with_context(|| format!("{key}: no command id in {event}"))?;
            let amount = event["payload"]["amount"].as_i64().context("an amount")?;
            let sequence = event["sequence"].as_u64().context("a sequence")?;
            let again = stored.insert(command_id.to_owned(), (amount, sequence));
            ensure!(again.is_none(), "{key}: {command_id} appended twice");
        }
        let expected: BTreeMap<String, (i64, u64)> = acknowledged
            .iter()
            .filter(|(_, (deposit, _))| deposit.account == key)
            .map(|(id, (deposit, sequence))| (id.clone(), (deposit.amount, *sequence)))
            .collect();
        let lost: Vec<_> = expected
            .keys()
            .filter(|id| !stored.contains_key(*id))
            .collect();
        ensure!(lost.is_empty(), "{key}: acknowledged, not stored: {lost:?}");
        ensure!(
            stored == expected,
            "{key}: the stream holds exactly the acknowledged deposits, as acknowledged"
        );
        let total: i64 = expected.values().map(|(amount, _)| amount).sum();
        let balance = api.balance(&key).await?;
        ensure!(
            balance == json!({"balance": total, "open": true}),
            "{key}: {balance}, the acknowledged deposits make {total}"
        );
    }
    Ok(())
}

pub(crate) async fn open_accounts(api: &Api) -> anyhow::Result<()> {
    for n in 0..ACCOUNTS {
        let (status, body) = api
            .command(&account(n), "OpenAccount", r#"{"owner": "Ada"}"#)
            .await?;
        ensure!(status == StatusCode::OK, "opening {}: {body}", account(n));
    }
    Ok(())
}

/// Starts `cqrs-wasi serve ARGS` in `dir` with `env`, off the async threads
/// (it blocks until the host serves, which includes compiling the
/// component).
pub(crate) async fn serve(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<ServedHost> {
    let mut command = std::process::Command::new(support::BINARY);
    command
        .args(["serve", "--config", "host.toml", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir);
    tokio::task::spawn_blocking(move || ServedHost::start(command)).await?
}

/// The writer connection's `synchronous`, as the host logged it when it
/// opened the store.
fn synchronous(host: &ServedHost) -> Option<String> {
    host.output().lines().iter().find_map(|line| {
        let (_, rest) = line
            .split_once("event store opened")?
            .1
            .split_once("synchronous=")?;
        rest.split_whitespace().next().map(str::to_owned)
    })
}

fn faults(stand_in: &EventGridStandIn) {
    for fault in [
        Fault::Unavailable,
        Fault::TooManyRequests {
            retry_after: "0".to_owned(),
        },
        Fault::DropConnection,
        Fault::Unanswered,
        Fault::Unavailable,
        Fault::DropConnection,
    ] {
        stand_in.inject(fault);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_killed_under_load_loses_nothing_it_acknowledged() -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    faults(&stand_in);
    let dir = tempfile::tempdir()?;
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            r#"[store]
kind = "sqlite"
path = "events.db"

[[components]]
name = "bank"
path = {bank:?}

[[topics]]
name = "grid"
endpoint = "{}"
key_env = "GRID_TEST_KEY"
max_attempts = 3
"#,
            stand_in.endpoint()
        ),
    )?;
    // The key comes from the environment, as an operator would keep it.
    let env = [("GRID_TEST_KEY", stand_in.key())];
    let start = async || -> anyhow::Result<Arc<ServedHost>> {
        let host = serve(dir.path(), &[], &env).await?;
        let synchronous = synchronous(&host);
        ensure!(
            synchronous.as_deref() == Some("FULL"),
            "the host commits with synchronous={synchronous:?}, not FULL:\n{}",
            host.output().text()
        );
        Ok(Arc::new(host))
    };

    let ledger = Arc::new(Ledger::default());
    let mut host = start().await.context("the host starts")?;
    open_accounts(&host).await?;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&[host.clone()], &ledger, &mut rng, cycle, &stop);
        let before = ledger.acknowledged();
        until_acknowledged(&ledger, before, rng.usize(10..=80)).await?;
        // More faults for whatever the dispatcher is sending right now.
        faults(&stand_in);
        host.kill()?;
        clients.join_all().await;
        let in_doubt = ledger.entries().in_doubt.len();
        println!(
            "cycle {cycle}: killed after {} acknowledged deposits, {in_doubt} in doubt",
            ledger.acknowledged() - before
        );

        host = start().await.context("the host starts again")?;
        verify_after_restart(&host, &ledger).await?;
    }

    until_every_acknowledged_event_is_published(&stand_in, &ledger).await?;
    // Duplicates (from retries, and from the rounds the kills cut short)
    // carry the same id: every copy's id is its identity's.
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for event in stand_in.accepted() {
        let id = event["id"].as_str().context("an id")?.to_owned();
        ensure!(id == support::identity_id(&event)?, "{event}");
        *copies.entry(id).or_default() += 1;
    }
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    println!(
        "{} distinct notifications reached the topic, {duplicated} of them more than once",
        copies.len()
    );
    let host = Arc::into_inner(host).context("every client is done")?;
    host.stop()?;
    Ok(())
}

/// Waits until every acknowledged event has reached the topic of
/// `stand_in`, the accounts' openings included.
pub(crate) async fn until_every_acknowledged_event_is_published(
    stand_in: &EventGridStandIn,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let wanted: BTreeSet<String> = (0..ACCOUNTS)
        .map(|n| (account(n), 1))
        .chain(
            ledger
                .entries()
                .acknowledged
                .values()
                .map(|(deposit, sequence)| (deposit.account.clone(), *sequence)),
        )
        .map(|(key, sequence)| {
            let stream = StreamId::new("Bank", "Account", key)?;
            Ok(
                notification_id(NotificationKind::EventAppended, &stream, sequence, None)
                    .to_string(),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let accepted: BTreeSet<String> = stand_in.accepted_ids().into_iter().collect();
        let missing = wanted.difference(&accepted).count();
        if missing == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} acknowledged events never reached the topic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the deposits in doubt again through `host`, then checks every
/// stream and balance.
async fn verify_after_restart(host: &Api, ledger: &Ledger) -> anyhow::Result<()> {
    resolve(host, ledger).await;
    verify(host, ledger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_postgres_hosts_killed_under_load_loses_nothing_it_acknowledged()
-> anyhow::Result<()> {
    let Some(schema) = ScratchSchema::new().await else {
        return Ok(());
    };
    let mut rng = fastrand::Rng::with_seed(support::seed());
    // The host's sessions start with the server's settings for its role and
    // database (it sets neither), which a fresh session shows.
    let (client, connection) = tokio_postgres::connect(schema.url(), tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    for setting in ["fsync", "synchronous_commit"] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
        let value: String = row.try_get(0)?;
        ensure!(value == "on", "the server runs with {setting} = {value}");
    }
    drop(client);
    let _ = connection.await;

    let dir = tempfile::tempdir()?;
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    // Each host has a working directory (and so a state directory) of its
    // own. Both contend for every account: a conflict costs a re-run, never
    // an error.
    let config = format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n\n[commands]\nattempts = 1000\n\n\
         [[components]]\nname = \"bank\"\npath = {bank:?}\n",
        schema.url(),
        schema.name()
    );
    let dirs = [dir.path().join("a"), dir.path().join("b")];
    for dir in &dirs {
        std::fs::create_dir(dir)?;
        std::fs::write(dir.join("host.toml"), &config)?;
    }
    let start = |n: usize| {
        let dir = dirs[n].clone();
        async move { anyhow::Ok(Arc::new(serve(&dir, &[], &[]).await?)) }
    };
    let mut hosts = [
        start(0).await.context("host A starts")?,
        start(1).await.context("host B starts")?,
    ];
    open_accounts(&hosts[0]).await?;

    let ledger = Arc::new(Ledger::default());
    for cycle in 0..CYCLES {
        let victim = rng.usize(..hosts.len());
        let survivor = &hosts[1 - victim];
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&hosts, &ledger, &mut rng, cycle, &stop);
        let before = ledger.acknowledged();
        until_acknowledged(&ledger, before, rng.usize(10..=80)).await?;
        hosts[victim].kill()?;
        // The other host serves on: its clients keep depositing.
        let killed = ledger.acknowledged();
        until_acknowledged(&ledger, killed, 20).await?;
        stop.store(true, Ordering::Relaxed);
        clients.join_all().await;
        println!(
            "cycle {cycle}: host {victim} killed after {} acknowledged deposits, {} more through the other, {} in doubt",
            killed - before,
            ledger.acknowledged() - killed,
            ledger.entries().in_doubt.len()
        );
        verify_after_restart(survivor, &ledger).await?;
        hosts[victim] = start(victim)
            .await
            .context("the killed host starts again")?;
        verify(&hosts[victim], &ledger).await?;
    }
    for host in hosts {
        let host = Arc::into_inner(host).context("every client is done")?;
        let status = host.stop()?;
        ensure!(status.success(), "the host exits cleanly: {status}");
    }
    Ok(())
}

/// A host killed in the middle of a long dispatch round delivers again
/// only the request that was in flight. The topic answers each request
/// 30 ms after taking its events, so that the outbox runs ahead of it and
/// rounds are long; each kill lands once the topic has taken dozens of
/// requests from the host's current life, and after every restart the
/// topic sees at most one request's worth (`max_events_per_request`) of
/// notifications again per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_killed_mid_round_delivers_again_only_the_request_in_flight() -> anyhow::Result<()> {
    const PER_REQUEST: usize = 5;
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    stand_in.answer_after(Duration::from_millis(30));
    let dir = tempfile::tempdir()?;
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, support::component("bank"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            r#"[store]
kind = "sqlite"
path = "events.db"

[[components]]
name = "bank"
path = {bank:?}

[[topics]]
name = "grid"
endpoint = "{}"
key_env = "GRID_TEST_KEY"
max_events_per_request = {PER_REQUEST}
"#,
            stand_in.endpoint()
        ),
    )?;
    let env = [("GRID_TEST_KEY", stand_in.key())];

    let ledger = Arc::new(Ledger::default());
    let mut host = Arc::new(serve(dir.path(), &[], &env).await?);
    open_accounts(&host).await?;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&[host.clone()], &ledger, &mut rng, cycle, &stop);
        let requests = stand_in.request_count();
        let wanted = requests + rng.usize(30..=60);
        let deadline = Instant::now() + Duration::from_secs(120);
        while stand_in.request_count() < wanted {
            ensure!(
                Instant::now() < deadline,
                "the topic is not being published to"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let backlog = grid_lag(&host).await?.unwrap_or(0);
        host.kill()?;
        clients.join_all().await;
        println!(
            "cycle {cycle}: killed after {} requests of its life, with about {backlog} notifications not yet taken",
            stand_in.request_count() - requests
        );
        ensure!(
            backlog > 2 * PER_REQUEST as u64,
            "the outbox did not run ahead of the topic: a kill proves nothing"
        );
        host = Arc::new(serve(dir.path(), &[], &env).await?);
    }
    resolve(&host, &ledger).await;
    verify(&host, &ledger).await?;

    // Everything reaches the topic: the destination's lag goes to 0.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lag = grid_lag(&host).await?;
        if lag == Some(0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the topic never caught up: lag {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = stand_in.accepted_ids();
    let distinct: BTreeSet<&String> = accepted.iter().collect();
    let duplicates = accepted.len() - distinct.len();
    println!(
        "{} notifications reached the topic, {duplicates} of them again after {CYCLES} kills",
        distinct.len()
    );
    ensure!(
        duplicates <= CYCLES * PER_REQUEST,
        "{duplicates} notifications were delivered twice; {CYCLES} kills allow at most {}",
        CYCLES * PER_REQUEST
    );
    let host = Arc::into_inner(host).context("every client is done")?;
    host.stop()?;
    Ok(())
}

/// The outbox rows the `grid` topic has not taken, as the host's metrics say.
async fn grid_lag(api: &Api) -> anyhow::Result<Option<u64>> {
    Ok(api
        .metrics()
        .await?
        .lines()
        .find(|line| line.starts_with(r#"cqrs_wasi_notifications_outbox_lag{destination="grid"}"#))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok()))
}
