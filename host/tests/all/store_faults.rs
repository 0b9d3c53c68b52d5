//! A store that fails under load, and comes back: a full disk under SQLite
//! (a small tmpfs, filled up), a PostgreSQL server restarted (a throwaway
//! server the test starts itself, never the shared one). Commands meanwhile
//! get 503 `store_unavailable`, whose message says why and quotes no
//! backend; the host recovers by itself, without a restart; nothing
//! acknowledged is lost, and a refused command sent again with its
//! `Idempotency-Key` runs once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cqrs_wasi_host::store::postgres_testing::REQUIRE_VAR;
use cqrs_wasi_host::store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};

use crate::crash::{
    Ledger, load, open_accounts, resolve, serve, until_acknowledged,
    until_every_acknowledged_event_is_published, verify,
};
use crate::shutdown::{calls_started, whole};
use crate::support::event_grid::{EventGridStandIn, Schema};

/// Waits until the clients were refused `count` times more than `from`.
async fn until_refused(ledger: &Ledger, from: usize, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        {
            let entries = ledger.entries();
            ensure!(
                entries.unexpected.is_empty(),
                "unexpected answers: {:#?}",
                entries.unexpected
            );
            if entries.unavailable.len() >= from + count {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "the store never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every refusal is a clear 503 naming `why`, with no backend's text.
fn refusals_say(ledger: &Ledger, why: &str) -> anyhow::Result<()> {
    let entries = ledger.entries();
    if let Some(first) = entries.unavailable.first() {
        println!("refused with 503 {first}");
    }
    for body in &entries.unavailable {
        let message = body["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains(why) && !message.to_lowercase().contains("sqlite"),
            "{body}"
        );
    }
    Ok(())
}

/// Stops the clients, sends every refused or unanswered deposit again, and
/// checks the accounts.
async fn settle(
    clients: tokio::task::JoinSet<()>,
    stop: &AtomicBool,
    api: &crate::support::Api,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    stop.store(true, Ordering::Relaxed);
    clients.join_all().await;
    resolve(api, ledger).await;
    verify(api, ledger).await
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) at `dir`; `None`, said
    /// on stdout, where this process may not mount one.
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Option<Tmpfs>> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        if !mounted.status.success() {
            println!(
                "SKIPPED: cannot mount a tmpfs ({}); run as root to fill a disk",
                String::from_utf8_lossy(&mounted.stderr).trim()
            );
            return Ok(None);
        }
        Ok(Some(Tmpfs(dir.to_owned())))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file of its own, until it has no
/// room left.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0xa5u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_commands_with_503_and_passes_without_a_restart() -> anyhow::Result<()>
{
    let mut rng = fastrand::Rng::with_seed(crate::support::seed());
    let dir = tempfile::tempdir()?;
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk)?;
    let Some(_tmpfs) = Tmpfs::mount(&disk, "16m")? else {
        return Ok(());
    };
    let bank = dir.path().join("bank.wasm");
    std::fs::write(&bank, crate::support::component("bank"))?;
    // The store alone on the small disk; the host's own files beside it.
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            "[store]\nkind = \"sqlite\"\npath = {:?}\n\n[[components]]\nname = \"bank\"\npath = {bank:?}\n",
            disk.join("events.db")
        ),
    )?;
    let host = Arc::new(serve(dir.path(), &[], &[]).await?);
    open_accounts(&host).await?;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(std::slice::from_ref(&host), &ledger, &mut rng, 0, &stop);
    until_acknowledged(&ledger, 0, 20).await?;

    let filler = fill(&disk)?;
    until_refused(&ledger, 0, 20).await?;
    refusals_say(&ledger, "disk is full")?;
    let acknowledged = ledger.acknowledged();
    println!(
        "the disk filled up after {acknowledged} deposits; {} refused since",
        ledger.entries().unavailable.len()
    );

    // Space returns: the same process takes deposits again.
    std::fs::remove_file(filler)?;
    until_acknowledged(&ledger, acknowledged, 20).await?;
    settle(clients, &stop, &host, &ledger).await?;
    println!(
        "{} deposits acknowledged in all, {} refusals while the disk was full",
        ledger.acknowledged(),
        ledger.entries().unavailable.len()
    );
    let host = Arc::into_inner(host).context("every client is done")?;
    ensure!(host.stop()?.success(), "the host exits 0");
    let store = SqliteStore::open(disk.join("events.db"), SqliteConfig::default())?;
    whole(&store, &ledger).await
}

/// Sends a `HeldDeposit` of the `gated` fixture to `Test/Gated/held`, held
/// at `gate`, with `key` as its `Idempotency-Key`.
async fn held_deposit(
    api: &crate::support::Api,
    key: &str,
    gate: &str,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let response = api
        .client
        .post(format!(
            "{}/api/commands/Test/Gated/held/HeldDeposit",
            api.url
        ))
        .header("Idempotency-Key", key)
        .body(serde_json::json!({ "amount": 5, "gate": gate }).to_string())
        .send()
        .await?;
    Ok((response.status(), response.json().await?))
}

/// Where PostgreSQL 15's programs are.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of the test's own, in a temporary directory, on a
/// free port; stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    /// Whether the programs run as `postgres` (this process is root, which
    /// PostgreSQL refuses to run as).
    as_postgres: bool,
}

impl Server {
    /// Makes a cluster and starts it; `None`, said on stdout, where the
    /// programs are missing (a failure under [`REQUIRE_VAR`]` = 1`).
    fn start() -> anyhow::Result<Option<Server>> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            ensure!(
                std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                "PostgreSQL is required ({REQUIRE_VAR}=1) but {PG_BIN}/initdb is missing"
            );
            println!("SKIPPED: no PostgreSQL programs in {PG_BIN}");
            return Ok(None);
        }
        let uid = Command::new("id").arg("-u").output()?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir()?;
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Server {
            dir,
            port,
            as_postgres,
        };
        run(server
            .program("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(server.data()))?;
        server.pg_ctl("start")?;
        Ok(Some(server))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn program(&self, name: &str) -> Command {
        let path = Path::new(PG_BIN).join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// `pg_ctl start` (waiting until it takes connections) or `stop`
    /// (fast: sessions are ended, their transactions rolled back).
    fn pg_ctl(&self, action: &str) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        run(self
            .program("pg_ctl")
            .args([action, "-w", "-m", "fast", "-D"])
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &options]))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_answers_503_and_the_host_reconnects_by_itself()
-> anyhow::Result<()> {
    let Some(server) = tokio::task::spawn_blocking(Server::start).await?? else {
        return Ok(());
    };
    let server = Arc::new(server);
    let mut rng = fastrand::Rng::with_seed(crate::support::seed());
    let stand_in = EventGridStandIn::start(Schema::EventGrid).await?;
    let dir = tempfile::tempdir()?;
    let (bank, gated) = (dir.path().join("bank.wasm"), dir.path().join("gated.wasm"));
    std::fs::write(&bank, crate::support::component("bank"))?;
    std::fs::write(&gated, crate::support::component("gated"))?;
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            "[store]\nkind = \"postgres\"\nurl = \"{}\"\n\n[[components]]\nname = \"bank\"\npath = {bank:?}\n\n\
             [[components]]\nname = \"gated\"\npath = {gated:?}\n\n\
             [[topics]]\nname = \"grid\"\nendpoint = \"{}\"\nkey = \"{}\"\n",
            server.url(),
            stand_in.endpoint(),
            stand_in.key()
        ),
    )?;
    let host = Arc::new(serve(dir.path(), &[], &[]).await?);
    open_accounts(&host).await?;
    // A handler reading its gate's stream over and over when the server
    // goes: its read fails, and so does it, because of the store.
    let before = calls_started(&host).await?;
    let held = tokio::spawn({
        let api = crate::support::Api::new(host.api.url.clone());
        async move { held_deposit(&api, "held-1", "restart").await }
    });
    while calls_started(&host).await? == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(std::slice::from_ref(&host), &ledger, &mut rng, 0, &stop);
    until_acknowledged(&ledger, 0, 30).await?;

    let stopping = server.clone();
    tokio::task::spawn_blocking(move || stopping.pg_ctl("stop")).await??;
    until_refused(&ledger, 0, 10).await?;
    let (status, body) = held.await??;
    ensure!(
        status == reqwest::StatusCode::SERVICE_UNAVAILABLE && body["code"] == "store_unavailable",
        "a handler whose read failed: {status} {body}"
    );
    let acknowledged = ledger.acknowledged();
    let starting = server.clone();
    tokio::task::spawn_blocking(move || starting.pg_ctl("start")).await??;
    until_acknowledged(&ledger, acknowledged, 30).await?;
    refusals_say(&ledger, "cannot be reached")?;
    settle(clients, &stop, &host, &ledger).await?;
    // Nothing was recorded for it: sent again, it runs.
    let store = PostgresStore::open(&server.url(), PostgresConfig::default()).await?;
    crate::support::open_gate(&store, "restart").await?;
    let (status, body) = held_deposit(&host, "held-1", "restart").await?;
    ensure!(
        status == reqwest::StatusCode::OK && body["replayed"] == false,
        "{status} {body}"
    );
    println!(
        "{} deposits acknowledged, {} refused while the server was down",
        ledger.acknowledged(),
        ledger.entries().unavailable.len()
    );

    // The dispatcher claims its destination again: every acknowledged
    // event reaches the topic.
    until_every_acknowledged_event_is_published(&stand_in, &ledger).await?;

    let host = Arc::into_inner(host).context("every client is done")?;
    ensure!(host.stop()?.success(), "the host exits 0");
    whole(&store, &ledger).await
}
