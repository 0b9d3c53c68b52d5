//! Shared by the end-to-end tests: the real components, built once, a real
//! host serving HTTP on a loopback port over a SQLite file, `cqrs-wasi
//! serve` processes; in [`event_grid`], an Event Grid stand-in; in
//! [`load`], clients sending commands throughout a swap; and in [`logs`],
//! what a test's host logs.

pub mod event_grid;
pub mod load;
pub mod logs;
pub mod otlp;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cqrs_wasi_host::RuntimeConfig;
use cqrs_wasi_host::model::KindSet;
use cqrs_wasi_host::model::{EventContext, Expectation, NewEvent, StreamId};
use cqrs_wasi_host::notifications::Destination;
use cqrs_wasi_host::notifications::model::{NotificationKind, notification_id};
use cqrs_wasi_host::store::{AppendRequest, EventStore, SqliteConfig, SqliteStore};
use cqrs_wasi_host::{ApiConfig, no_delay, router};
use cqrs_wasi_host::{Host, HostConfig};
use reqwest::StatusCode;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("wit").is_dir())
        .expect("the workspace root holds wit/")
}

/// The component crates the tests use: the examples and the fixtures in
/// `tests/components`.
const COMPONENTS: &[&str] = &[
    "announcer",
    "balance",
    "bank",
    "counter",
    "faulty",
    "gated",
    "gated-v2",
    "garbage",
    "no-handler",
    "odd-import",
    "relay",
    "trail",
    "welcome",
];

/// The bytes of component `name`, one of [`COMPONENTS`], all of which are
/// built once per test run, as `cargo xtask components` builds the
/// examples: into their own target directory, so that this never waits on
/// the lock of the `cargo test` that runs us.
pub fn component(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_components().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("building the components failed: {e}"));
    let file = dir.join(format!("{}.wasm", name.replace('-', "_")));
    let file = if file.exists() {
        file
    } else {
        dir.join(format!("{name}.wasm"))
    };
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

fn build_components() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The alias (`.cargo/config.toml`) says how components are built.
    let status = Command::new(cargo)
        .current_dir(root())
        .arg("build-components")
        .args(COMPONENTS.iter().flat_map(|name| ["--package", name]))
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build of the components failed: {status}");
    }
    Ok(root().join("target/components/wasm32-wasip2/component"))
}

/// `bytes` (a component) with a custom section appended: the same
/// behaviour under another digest, like a rebuilt version.
pub fn variant(bytes: &[u8], label: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = b"cqrs-wasi-test-variant";
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(label.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// The seed of a test's random choices: `CQRS_WASI_TEST_SEED` if set,
/// otherwise a fresh one. Printed, so that a failure can be repeated.
pub fn seed() -> u64 {
    let seed = std::env::var("CQRS_WASI_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (CQRS_WASI_TEST_SEED={seed} repeats these choices)");
    seed
}

/// The id a notification (as a topic accepted it) must carry: the one its
/// identity, as its `data` describes it, gives.
pub fn identity_id(notification: &Value) -> anyhow::Result<String> {
    let data = &notification["data"];
    let text = |field: &str| {
        data[field]
            .as_str()
            .with_context(|| format!("{field} in {notification}"))
    };
    let stream = StreamId::new(
        text("domainName")?,
        text("entityTypeName")?,
        text("instanceKey")?,
    )?;
    let kind: NotificationKind = text("notificationKind")?.parse()?;
    let sequence = data["sequenceNumber"].as_u64().unwrap_or(1);
    let projection = data["projectionTypeName"].as_str();
    Ok(notification_id(kind, &stream, sequence, projection).to_string())
}

/// Opens gate `gate` of the `gated` fixture (`tests/components/gated`):
/// every `HeldDeposit` waiting at it goes on. Appended to `store` directly,
/// so that it needs no call slot.
pub async fn open_gate(store: &dyn EventStore, gate: &str) -> anyhow::Result<()> {
    store
        .append(AppendRequest {
            stream: StreamId::new("Test", "Gate", gate)?,
            expectation: Expectation::Any,
            events: vec![NewEvent::new(
                "Opened",
                RawValue::from_string("{}".to_owned())?,
            )?],
            context: EventContext::default(),
            command: None,
            raise: KindSet::NONE,
        })
        .await?;
    Ok(())
}

/// Waits until `host` has started a call more than `before` (from
/// [`Host::calls_started`]): a call sent alone after reading `before` has
/// been routed, and runs in the version it was routed to.
pub async fn until_a_call_starts(host: &Host, before: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while host.calls_started() == before {
        anyhow::ensure!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The letters (`examples/welcome`) in stream `Letters/Letter/{key}`, each
/// as `EventType payload`.
pub async fn letters(host: &Host, key: &str) -> anyhow::Result<Vec<String>> {
    let stream = StreamId::new("Letters", "Letter", key)?;
    Ok(host
        .read_stream(&stream, 1, 100)
        .await?
        .into_iter()
        .map(|e| format!("{} {}", e.event_type, e.payload.get()))
        .collect())
}

/// The admin token of [`TestHost::with_destinations`].
/// Waits until `done` holds, for at most 30 s.
pub async fn eventually<F: AsyncFnMut() -> anyhow::Result<bool>>(
    what: &str,
    mut done: F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A host with the bank component, serving HTTP on a loopback port, over a
/// SQLite file in a temporary directory. Its HTTP API is [`Api`]'s methods.
pub struct TestHost {
    pub host: Host,
    pub api: Api,
    pub store: Arc<dyn EventStore>,
    server: JoinHandle<()>,
}

impl Deref for TestHost {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestHost {
    /// Starts a host over the SQLite file `db`.
    pub async fn start(db: &Path) -> anyhow::Result<TestHost> {
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(db, SqliteConfig::default())?);
        Self::with_store(store, HostConfig::default(), &ApiConfig::default()).await
    }

    /// Starts a host over `store`.
    pub async fn with_store(
        store: Arc<dyn EventStore>,
        config: HostConfig,
        api_config: &ApiConfig,
    ) -> anyhow::Result<TestHost> {
        Self::build(store, config, RuntimeConfig::default(), api_config).await
    }

    /// Starts a host over `store` whose outbox also goes to `destinations`;
    /// its admin API takes [`ADMIN_TOKEN`].
    pub async fn with_destinations(
        store: Arc<dyn EventStore>,
        config: HostConfig,
        destinations: Vec<Destination>,
    ) -> anyhow::Result<TestHost> {
        let api_config = ApiConfig {
            admin_token: Some(cqrs_wasi_host::Secret::new(ADMIN_TOKEN)),
            ..ApiConfig::default()
        };
        Self::build_with(
            store,
            config,
            RuntimeConfig::default(),
            &api_config,
            destinations,
        )
        .await
    }

    /// Starts a host with everything chosen by the caller.
    pub async fn build(
        store: Arc<dyn EventStore>,
        config: HostConfig,
        runtime: RuntimeConfig,
        api_config: &ApiConfig,
    ) -> anyhow::Result<TestHost> {
        Self::build_with(store, config, runtime, api_config, Vec::new()).await
    }

    async fn build_with(
        store: Arc<dyn EventStore>,
        config: HostConfig,
        runtime: RuntimeConfig,
        api_config: &ApiConfig,
        destinations: Vec<Destination>,
    ) -> anyhow::Result<TestHost> {
        let mut builder = Host::builder()
            .store(store.clone())
            .config(config)
            .runtime(runtime);
        for destination in destinations {
            builder = builder.destination(destination);
        }
        let host = builder.build()?;
        host.deploy("bank", component("bank")).await?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let router = router(host.clone(), api_config);
        let server = tokio::spawn(async move {
            axum::serve(no_delay(listener), router)
                .await
                .expect("server runs");
        });
        Ok(TestHost {
            host,
            api: Api::new(url),
            store,
            server,
        })
    }

    /// Deploys another of the built components.
    pub async fn deploy(&self, name: &str) -> anyhow::Result<()> {
        self.host.deploy(name, component(name)).await?;
        Ok(())
    }

    /// Stops serving. The store is closed when the last reference goes.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
    }

    /// Every event in the store, in position order.
    pub async fn all_events(&self) -> anyhow::Result<Vec<cqrs_wasi_host::model::RecordedEvent>> {
        Ok(self.store.read_all(1, usize::MAX).await?)
    }
}

/// A host's HTTP API, at `url`.
pub struct Api {
    pub url: String,
    pub client: reqwest::Client,
}

impl Api {
    /// The API at `url` (`http://host:port`).
    pub fn new(url: String) -> Api {
        Api {
            url,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs a command; the status and the JSON answer.
    pub async fn command(
        &self,
        instance_key: &str,
        command_type: &str,
        body: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.command_with(instance_key, command_type, body, None)
            .await
    }

    /// POSTs a command with an `Idempotency-Key`.
    pub async fn command_with(
        &self,
        instance_key: &str,
        command_type: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .client
            .post(format!(
                "{}/api/commands/Bank/Account/{instance_key}/{command_type}",
                self.url
            ))
            .body(body.to_owned());
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request.send().await?).await
    }

    /// POSTs `body` to `path`; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &str) -> anyhow::Result<(StatusCode, Value)> {
        answer(
            self.client
                .post(format!("{}{path}", self.url))
                .body(body.to_owned())
                .send()
                .await?,
        )
        .await
    }

    /// GETs `path`; the status and the JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        answer(
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await?,
        )
        .await
    }

    /// Every event of a stream (`Domain/EntityType/key`), page by page.
    pub async fn events(&self, stream: &str) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let (status, page) = self
                .get(&format!(
                    "/api/streams/{stream}/events?from={from}&limit=1000"
                ))
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "reading {stream}: {page}");
            events.extend(page["events"].as_array().into_iter().flatten().cloned());
            match page["nextFrom"].as_u64() {
                Some(next) => from = next,
                None => return Ok(events),
            }
        }
    }

    /// The Prometheus text `/metrics` answers.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// How many instances were discarded for `reason` (`trap`,
    /// `deadline`, `per_call`, ...), from `/metrics`.
    pub async fn discarded(&self, reason: &str) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        let metric = format!("cqrs_wasi_instances_discarded_total{{reason=\"{reason}\"}} ");
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(&metric))
            .map_or(Ok(0), str::parse)?)
    }

    /// The `Balance` projection's state of an account.
    pub async fn balance(&self, instance_key: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .get(&format!(
                "/api/projections/Bank/Account/{instance_key}/Balance"
            ))
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "balance query failed: {body}");
        Ok(body["state"].clone())
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .with_context(|| format!("answer with status {status} is not JSON: {text:?}"))?;
    Ok((status, body))
}

/// The `cqrs-wasi` binary, built by cargo for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_cqrs-wasi");

/// A `cqrs-wasi serve` process, killed when dropped.
pub struct ServedHost {
    child: Child,
    /// Its HTTP API.
    pub api: Api,
    output: Output,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Every line a [`ServedHost`] wrote, stdout (its log) and stderr
/// interleaved as they were read.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The lines so far, as one text.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Keeps `line`, and shows it on this test's stderr (which the harness
    /// prints when the test fails).
    fn push(&self, line: String) {
        eprintln!("{line}");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

impl ServedHost {
    /// Spawns `command` ([`BINARY`] `serve ...`) and waits until it
    /// serves. Its output is kept ([`output`](Self::output)) and copied to
    /// stderr.
    pub fn start(mut command: Command) -> anyhow::Result<ServedHost> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {command:?}"))?;
        let output = Output::default();
        let (serving, address) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let readers = vec![
            {
                let output = output.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if let Some((_, address)) = line.split_once("address=") {
                            let _ = serving.send(address.trim().to_owned());
                        }
                        output.push(line);
                    }
                })
            },
            {
                let output = output.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        output.push(line);
                    }
                })
            },
        ];
        // The reader drops the sender at the end of the output: the host
        // exited without serving.
        let Ok(address) = address.recv() else {
            let status = child.wait()?;
            for reader in readers {
                let _ = reader.join();
            }
            bail!(
                "the host exited ({status}) before serving:\n{}",
                output.text()
            );
        };
        Ok(ServedHost {
            child,
            api: Api::new(format!("http://{address}")),
            output,
            readers,
        })
    }

    /// The address it listens on, `host:port`.
    pub fn address(&self) -> &str {
        self.api.url.trim_start_matches("http://")
    }

    /// What it wrote so far (and, once it has stopped, all it wrote).
    pub fn output(&self) -> Output {
        self.output.clone()
    }

    /// Kills it with SIGKILL, as a crash would: nothing of it runs after,
    /// even while others still hold it.
    pub fn kill(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -KILL failed: {status}");
        Ok(())
    }

    /// Stops it with SIGTERM, as an operator would, and waits for it and
    /// for the end of its output.
    pub fn stop(self) -> anyhow::Result<ExitStatus> {
        // It may have exited already: then it is waited for all the same.
        let _ = self.terminate();
        self.wait()
    }

    /// Sends it SIGTERM, and returns at once.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        Ok(())
    }

    /// Waits for it to exit, and for the end of its output.
    pub fn wait(mut self) -> anyhow::Result<ExitStatus> {
        let status = self.child.wait()?;
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        Ok(status)
    }
}

impl Deref for ServedHost {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for ServedHost {
    fn drop(&mut self) {
        // Already gone after `stop`; then this fails, harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
