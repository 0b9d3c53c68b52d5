//! From zero to a handler of one's own (issue 28): `cqrs-wasi new`, `build`
//! and `dev` on projects in temporary directories outside the repository,
//! and the README's quickstart run as written.
//!
//! Every Rust scaffold builds into one target directory,
//! `target/onboarding`, so that the SDK and its dependencies compile once
//! per run (for wasm32-wasip2, and natively for `cargo test`), and offline
//! (`CARGO_NET_OFFLINE`): a scaffold must build from the clone and the
//! crates cargo already has, with no network. Each test's crate has a name
//! of its own, since cargo copies every crate's `.wasm` to one directory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host, HostError, digest_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{self, Api, ServedHost};

/// Where the scaffolds' builds go.
fn target_dir() -> PathBuf {
    support::root().join("target/onboarding")
}

/// `cqrs-wasi ARGS`, run in `dir` as a user runs it, but building into
/// [`target_dir`], offline, and serving (`dev`) on a free port.
fn cqrs_wasi(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(support::BINARY);
    command.args(args).current_dir(dir);
    scaffold_env(&mut command);
    command
}

fn scaffold_env(command: &mut Command) {
    command
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_NET_OFFLINE", "true")
        .env("CQRS_WASI_LISTEN", "127.0.0.1:0")
        .env_remove("CQRS_WASI_URL");
}

/// What a finished process said.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Fails unless it succeeded; then what it printed on stdout.
    fn ok(self, what: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.status.success(),
            "{what} failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        Ok(self.stdout)
    }

    /// Fails unless it failed; then what it printed on stderr.
    fn refused(self, what: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            !self.status.success(),
            "{what} succeeded, and should not have:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        Ok(self.stderr)
    }
}

fn run(command: &mut Command) -> anyhow::Result<Ran> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    Ok(Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The file names in `dir`, sorted.
fn listing(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// The value of the `key: value` line `key` of `cqrs-wasi build`'s output.
fn field<'a>(printed: &'a str, key: &str) -> anyhow::Result<&'a str> {
    printed
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .with_context(|| format!("no {key} in:\n{printed}"))
}

/// Checks what `cqrs-wasi build` printed against the file it names; the
/// file's bytes.
fn check_build_output(printed: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    assert_eq!(field(printed, "built")?, name);
    let path = PathBuf::from(field(printed, "path")?);
    assert!(path.is_absolute(), "the path printed is absolute: {path:?}");
    assert_eq!(
        path.parent().and_then(Path::file_name),
        Some("component".as_ref()),
        "built with the component profile: {path:?}"
    );
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    assert_eq!(field(printed, "digest")?, digest_of(&bytes));
    assert_eq!(
        field(printed, "commands")?,
        "Shop/Order/CreateOrder, Shop/Order/RenameOrder"
    );
    assert_eq!(field(printed, "projections")?, "Shop/Order/Summary");
    Ok(bytes)
}

/// Sends the scaffold's commands to `host` (which runs a scaffold's
/// component for `Shop/Order`) and checks its rules and its `Summary`.
async fn check_scaffold_rules(host: &Host, key: &str) -> anyhow::Result<()> {
    let stream = StreamId::new("Shop", "Order", key)?;
    let send = |command: &str, payload: &str| {
        host.execute(CommandRequest::new(stream.clone(), command, payload).expect("a command"))
    };
    let created = send("CreateOrder", r#"{"name": "first"}"#).await?;
    assert_eq!(created.events.len(), 1);
    match send("CreateOrder", r#"{"name": "again"}"#).await {
        Err(HostError::Rejected { message }) => assert_eq!(message, "this Order already exists"),
        other => panic!("a second CreateOrder is rejected, not {other:?}"),
    }
    match send("RenameOrder", r#"{"name": " "}"#).await {
        Err(error @ HostError::InvalidPayload { .. }) => {
            assert!(
                error.to_string().contains("a name must not be blank"),
                "{error}"
            )
        }
        other => panic!("a blank name is an invalid payload, not {other:?}"),
    }
    send("RenameOrder", r#"{"name": "second"}"#).await?;
    let summary = host.project(&stream, "Summary", None).await?;
    assert_eq!(
        serde_json::from_str::<Value>(summary.state.get())?,
        json!({"created": true, "name": "second", "renames": 1})
    );
    let events: Vec<String> = host
        .read_stream(&stream, 1, 10)
        .await?
        .iter()
        .map(|e| format!("{} {}", e.event_type, e.payload.get()))
        .collect();
    assert_eq!(
        events,
        [
            r#"OrderCreated {"name":"first"}"#,
            r#"OrderRenamed {"name":"second"}"#
        ]
    );
    Ok(())
}

/// A host of its own, with `bytes` deployed as `name`.
async fn host_with(name: &str, bytes: Vec<u8>) -> anyhow::Result<Host> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?;
    host.deploy(name, bytes).await?;
    Ok(host)
}

/// Waits until `ready` holds of the process's output so far.
fn until_output(host: &ServedHost, what: &str, ready: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready(&host.output().text()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            host.output().text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn new_refuses_what_the_host_would_refuse_and_a_directory_in_use() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let long = "x".repeat(129);
    let refusals: &[(&[&str], &str)] = &[
        (
            &["shop", "--domain", "Shop/Orders", "--entity", "Order"],
            r#"invalid domain "Shop/Orders": only letters, digits, '_', '-' and '.' are allowed"#,
        ),
        (
            &["shop", "--domain", "Shop.", "--entity", "Order"],
            r#"invalid domain "Shop.": dots must separate non-empty parts"#,
        ),
        (
            &["shop", "--domain", "Shop", "--entity", "Or.der"],
            r#"invalid entity type "Or.der": only letters, digits, '_' and '-' are allowed"#,
        ),
        (
            &["shop", "--domain", "Shop", "--entity", &long],
            "longer than 128 bytes",
        ),
        (
            &["shop", "--domain", "", "--entity", "Order"],
            r#"invalid domain "": must not be empty"#,
        ),
        // Names the host takes, but no generated code can be written with.
        (
            &["shop", "--domain", "Shop", "--entity", "3D"],
            r#"entity type "3D": it must start with a letter"#,
        ),
        (
            &["shop", "--domain", "Shop", "--entity", "Recorded"],
            "define RecordedEvent, a name it already uses",
        ),
        (
            &["my shop", "--domain", "Shop", "--entity", "Order"],
            r#"invalid component name "my shop""#,
        ),
        (
            &["9shop", "--domain", "Shop", "--entity", "Order"],
            r#"the directory's name "9shop" names the crate, so it must start with a letter"#,
        ),
        (
            &["cqrs-wasi", "--domain", "Shop", "--entity", "Order"],
            "cargo or the SDK already uses that name",
        ),
        (
            &[
                "shop",
                "--domain",
                "Shop",
                "--entity",
                "Order",
                "--lang",
                "python",
                "--git",
                "file:///srv/cqrs-wasi",
            ],
            "--git is for Rust projects",
        ),
    ];
    for (args, reason) in refusals {
        let printed = run(&mut cqrs_wasi(tmp.path(), &[&["new"][..], *args].concat()))?
            .refused(&format!("new {args:?}"))?;
        assert!(
            printed.contains(reason),
            "new {args:?} says why ({reason}):\n{printed}"
        );
        assert!(
            listing(tmp.path())?.is_empty(),
            "new {args:?} wrote nothing"
        );
    }

    let taken = tmp.path().join("taken");
    std::fs::create_dir(&taken)?;
    std::fs::write(taken.join("notes.txt"), "mine")?;
    let printed = run(&mut cqrs_wasi(
        tmp.path(),
        &["new", "taken", "--domain", "Shop", "--entity", "Order"],
    ))?
    .refused("new into a directory in use")?;
    assert!(
        printed.contains("taken exists and is not empty"),
        "{printed}"
    );
    assert_eq!(listing(&taken)?, ["notes.txt"]);

    // An empty directory will do; names the host takes become types.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh)?;
    run(&mut cqrs_wasi(
        tmp.path(),
        &[
            "new",
            "fresh",
            "--domain",
            "Retail.Shop",
            "--entity",
            "order-line",
        ],
    ))?
    .ok("new into an empty directory")?;
    assert_eq!(
        listing(&fresh)?,
        [
            ".gitignore",
            "Cargo.toml",
            "README.md",
            "rust-toolchain.toml",
            "src"
        ]
    );
    let lib = std::fs::read_to_string(fresh.join("src/lib.rs"))?;
    for expected in [
        r#"const DOMAIN: &'static str = "Retail.Shop";"#,
        r#"const ENTITY_TYPE: &'static str = "order-line";"#,
        "pub struct OrderLine;",
        "CreateOrderLine {",
    ] {
        assert!(lib.contains(expected), "src/lib.rs holds {expected}");
    }
    let root = support::root().canonicalize()?;
    let manifest = std::fs::read_to_string(fresh.join("Cargo.toml"))?;
    assert!(
        manifest.contains(&format!("cqrs-wasi = {{ path = \"{}\" }}", root.display())),
        "by default, the SDK of the clone the binary was built from:\n{manifest}"
    );

    run(&mut cqrs_wasi(
        tmp.path(),
        &[
            "new",
            "pinned",
            "--domain",
            "Shop",
            "--entity",
            "Order",
            "--git",
            "file:///srv/cqrs-wasi",
            "--rev",
            "0d78bcd",
        ],
    ))?
    .ok("new with --git")?;
    let manifest = std::fs::read_to_string(tmp.path().join("pinned/Cargo.toml"))?;
    assert!(
        manifest.contains(r#"cqrs-wasi = { git = "file:///srv/cqrs-wasi", rev = "0d78bcd" }"#),
        "{manifest}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_scaffold_tests_builds_deploys_and_swaps_in_each_save() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let project = tmp.path().join("order-desk");
    run(&mut cqrs_wasi(
        tmp.path(),
        &["new", "order-desk", "--domain", "Shop", "--entity", "Order"],
    ))?
    .ok("new")?;

    // The generated code is formatted, and its unit tests run natively.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut fmt = Command::new(&cargo);
    fmt.args(["fmt", "--check"]).current_dir(&project);
    run(&mut fmt)?.ok("cargo fmt --check")?;
    let mut test = Command::new(&cargo);
    test.arg("test").current_dir(&project);
    scaffold_env(&mut test);
    let ran = run(&mut test)?;
    let summary = format!("{}{}", ran.stdout, ran.stderr);
    ran.ok("cargo test")?;
    assert!(
        summary.contains("test result: ok. 5 passed"),
        "the scaffold's five tests ran:\n{summary}"
    );

    // `build`: the component, its path and its digest.
    let printed = run(&mut cqrs_wasi(&project, &["build"]))?.ok("build")?;
    let bytes = check_build_output(&printed, "order-desk")?;
    assert_eq!(
        PathBuf::from(field(&printed, "path")?).file_name(),
        Some("order_desk.wasm".as_ref())
    );
    check_scaffold_rules(&host_with("order-desk", bytes).await?, "o-1").await?;

    // `deploy` takes it from there, to a host serving nothing yet.
    let config = tmp.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "components = []\nstate_dir = {:?}\n[store]\nkind = \"memory\"\n",
            tmp.path().join("data")
        ),
    )?;
    let mut serve = Command::new(support::BINARY);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("CQRS_WASI_ADMIN_TOKEN", "change-me");
    let served = ServedHost::start(serve)?;
    let path = field(&printed, "path")?;
    let deployed = run(
        cqrs_wasi(&project, &["deploy", path, "--name", "order-desk"]).args([
            "--token",
            "change-me",
            "--url",
            &served.api.url,
        ]),
    )?
    .ok("deploy")?;
    assert!(
        deployed.contains(r#""Shop/Order/CreateOrder""#),
        "{deployed}"
    );
    let answer = run(cqrs_wasi(
        &project,
        &[
            "command",
            "Shop",
            "Order",
            "o-1",
            "CreateOrder",
            r#"{"name": "first"}"#,
        ],
    )
    .args(["--url", &served.api.url]))?
    .ok("command")?;
    assert!(
        answer.contains(r#""eventType": "OrderCreated""#),
        "{answer}"
    );
    drop(served);

    // `dev`: serve it, edit a rule, save, and the next call sees the edit.
    let db = tmp.path().join("dev/events.db");
    let dev_with_sqlite = || {
        let mut dev = cqrs_wasi(&project, &["dev", "--sqlite"]);
        dev.arg(&db);
        ServedHost::start(dev)
    };
    let dev = dev_with_sqlite()?;
    assert!(
        dev.output().text().contains("swapped in"),
        "dev serves once the component is live:\n{}",
        dev.output().text()
    );
    let create = |name: &str| {
        let api = &dev.api;
        let body = json!({ "name": name }).to_string();
        async move {
            api.post("/api/commands/Shop/Order/o-1/CreateOrder", &body)
                .await
        }
    };
    let (status, _) = create("first").await?;
    assert_eq!(status, StatusCode::OK);
    let (status, refusal) = create("again").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refusal["message"], "this Order already exists");

    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib)?;
    let edited = source.replace(
        "\"this Order already exists\"",
        "\"an order with this key exists already\"",
    );
    assert_ne!(edited, source, "the message is in src/lib.rs");
    std::fs::write(&lib, &edited)?;
    let saved = Instant::now();
    loop {
        let (status, answer) = create("again").await?;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        if answer["message"] == "an order with this key exists already" {
            break;
        }
        assert_eq!(answer["message"], "this Order already exists");
        anyhow::ensure!(
            saved.elapsed() < Duration::from_secs(600),
            "the edit never went live:\n{}",
            dev.output().text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("save -> new behaviour: {:?}", saved.elapsed());
    assert_eq!(
        dev.output().text().matches("swapped in").count(),
        2,
        "one swap per save:\n{}",
        dev.output().text()
    );

    // A save that does not build leaves the live version serving.
    std::fs::write(&lib, format!("{edited}\nfn broken( {{}}\n"))?;
    until_output(&dev, "the failed build", |out| {
        out.contains("the build failed")
    })?;
    let (status, answer) = create("again").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["message"], "an order with this key exists already");
    // The swaps kept the stream: one event, from the first version.
    let events = dev.api.events("Shop/Order/o-1").await?;
    assert_eq!(events.len(), 1, "{events:?}");

    let status = dev.stop()?;
    assert!(status.success(), "dev stops cleanly on SIGTERM: {status}");

    // The SQLite file kept the events for the next run.
    std::fs::write(&lib, &edited)?;
    let dev = dev_with_sqlite()?;
    let events = dev.api.events("Shop/Order/o-1").await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["eventType"], "OrderCreated");
    Ok(())
}

#[test]
fn build_says_which_export_is_missing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let printed = run(&mut cqrs_wasi(tmp.path(), &["build"]))?.refused("build of nothing")?;
    assert!(printed.contains("holds no handler project"), "{printed}");

    let project = tmp.path().join("no-exports");
    run(&mut cqrs_wasi(
        tmp.path(),
        &["new", "no-exports", "--domain", "Shop", "--entity", "Order"],
    ))?
    .ok("new")?;

    // A crate that makes no component at all.
    let manifest = project.join("Cargo.toml");
    let cargo_toml = std::fs::read_to_string(&manifest)?;
    std::fs::write(
        &manifest,
        cargo_toml.replace(
            r#"crate-type = ["cdylib", "rlib"]"#,
            r#"crate-type = ["rlib"]"#,
        ),
    )?;
    let printed = run(&mut cqrs_wasi(&project, &["build"]))?.refused("build of an rlib")?;
    assert!(
        printed.contains("crate no-exports builds no component"),
        "{printed}"
    );
    std::fs::write(&manifest, cargo_toml)?;

    // A component that exports no handler interface: the host's loader
    // says which exports it looked for.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib)?;
    let start = source
        .find("cqrs_wasi::export_component!")
        .context("the scaffold exports its handlers")?;
    let end = start + source[start..].find("}\n").context("the macro ends")? + 2;
    std::fs::write(&lib, format!("{}{}", &source[..start], &source[end..]))?;
    let printed = run(&mut cqrs_wasi(&project, &["build"]))?.refused("build without exports")?;
    for expected in [
        "component no-exports exports none of `cqrs-wasi:handlers/command-handler@",
        "`cqrs-wasi:handlers/projection@",
        "cqrs_wasi::export_component!",
    ] {
        assert!(printed.contains(expected), "says {expected}:\n{printed}");
    }
    Ok(())
}

/// Scaffolds, tests natively, builds and runs a Python or JavaScript
/// project; `native_test` runs its unit tests in its directory.
async fn guest_scaffold(lang: &str, native_test: &[&str]) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let name = format!("orders-{lang}");
    run(&mut cqrs_wasi(
        tmp.path(),
        &[
            "new", &name, "--domain", "Shop", "--entity", "Order", "--lang", lang,
        ],
    ))?
    .ok("new")?;
    let project = tmp.path().join(&name);
    let sdk = support::root().canonicalize()?;
    let mut test = Command::new(native_test[0]);
    test.args(&native_test[1..])
        .current_dir(&project)
        .env(
            "PYTHONPATH",
            format!("{}:src", sdk.join("sdk/python").display()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run(&mut test)?;
    let said = format!("{}{}", ran.stdout, ran.stderr);
    ran.ok("the native tests")?;
    assert!(
        said.contains("Ran 5 tests") || said.contains("# pass 5"),
        "five tests ran:\n{said}"
    );

    let printed = run(&mut cqrs_wasi(&project, &["build"]))?.ok("build")?;
    let bytes = check_build_output(&printed, &name)?;
    check_scaffold_rules(&host_with(&name, bytes).await?, "o-1").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_scaffold_tests_builds_and_runs() -> anyhow::Result<()> {
    guest_scaffold(
        "python",
        &["python3", "-m", "unittest", "discover", "-s", "tests"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_scaffold_tests_builds_and_runs() -> anyhow::Result<()> {
    guest_scaffold("js", &["npm", "test"]).await
}

/// The README section whose `sh` block is the quickstart.
const QUICKSTART: &str = "Your own domain in five commands";

/// The install line of the README, which the quickstart starts with.
const INSTALL: &str = "cargo install --locked --path host";

#[test]
fn the_quickstart_works_as_written() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(support::root().join("README.md"))?;
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(QUICKSTART))
        .context("README has the quickstart")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .context("the quickstart is an sh block")?;
    let mut steps: Vec<(String, Option<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("# ⇒ ") {
            Some(expected) => {
                steps.last_mut().context("⇒ before a command")?.1 = Some(expected.to_owned())
            }
            None => steps.push((line.to_owned(), None)),
        }
    }
    let commands: Vec<&str> = steps.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(commands.len(), 5, "five commands: {commands:?}");
    assert_eq!(commands[0], INSTALL, "it starts with the install");
    assert!(
        readme.contains("## Install\n") && readme.matches(INSTALL).count() >= 2,
        "the install is documented on its own"
    );

    // The clone's working directory, outside the repository. What the steps
    // use of the clone is `host/`, to install from, and the test stands in
    // for the install with the binary cargo built for it, put on the PATH
    // as `cqrs-wasi` (as the README tour runs ./target/debug/cqrs-wasi).
    let tmp = tempfile::tempdir()?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin)?;
    std::os::unix::fs::symlink(support::BINARY, bin.join("cqrs-wasi"))?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut dir = tmp.path().join("cqrs-wasi");
    std::fs::create_dir(&dir)?;

    let mut dev: Option<ServedHost> = None;
    for (command, expected) in &steps[1..] {
        if let Some(to) = command.strip_prefix("cd ") {
            dir = dir.join(to);
            continue;
        }
        // `exec`: a `dev` that keeps running is the shell's own process,
        // which the test stops.
        let mut shell = Command::new("sh");
        shell
            .args(["-c", &format!("exec {command}")])
            .current_dir(&dir)
            .env("PATH", &path);
        scaffold_env(&mut shell);
        if let Some(served) = &dev {
            shell.env("CQRS_WASI_URL", &served.api.url);
        }
        let printed = if command.starts_with("cqrs-wasi dev") {
            // It keeps running; the next commands go to it.
            let served = ServedHost::start(shell)?;
            let printed = served.output().text();
            dev = Some(served);
            printed
        } else {
            let ran = run(&mut shell)?;
            let printed = format!("{}{}", ran.stdout, ran.stderr);
            ran.ok(command)?;
            printed
        };
        if let Some(expected) = expected {
            assert!(
                printed.contains(expected),
                "`{command}` printed:\n{printed}\nwhich lacks: {expected}"
            );
        }
    }
    let dev = dev.context("the quickstart runs dev")?;
    assert!(
        tmp.path().join("orders/src/lib.rs").is_file(),
        "the project is beside the clone, outside it"
    );
    let api = Api::new(dev.api.url.clone());
    let summary = tokio::runtime::Runtime::new()?
        .block_on(async { api.get("/api/projections/Shop/Order/order-1/Summary").await })?;
    assert_eq!(summary.1["state"]["name"], "first", "{summary:?}");
    Ok(())
}
