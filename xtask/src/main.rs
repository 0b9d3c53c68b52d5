//! Project automation, run as `cargo xtask <task>`:
//!
//! - `components [--lang python|js|all]`: build the example components to
//!   wasm32-wasip2; with `--lang`, the Python or JavaScript ones (or every
//!   one, fixtures included), installing their toolchains first.
//! - `serve [--lang python|js] [ARGS]`: build them, then run `cqrs-wasi serve
//!   [ARGS]` (with no arguments: the bank example from ./data on
//!   127.0.0.1:8080; with `--lang`, its Python or JavaScript twin).
//! - `test`: the whole test suite, with everything it needs: the Python and
//!   JavaScript components (and their toolchains, under `target/lang`); it
//!   starts the local PostgreSQL server when nothing listens at
//!   127.0.0.1:5432, and makes the PostgreSQL tests fail rather than skip
//!   without one.
//! - `ci`: formatting and lints, then `test`.
//! - `bench [ARGS]`: build the components (the bank in Python and
//!   JavaScript too, for figure 11), then run the benchmark suite in
//!   release mode (`cqrs-wasi-bench [ARGS]`), with the local PostgreSQL
//!   server for the PostgreSQL rows; results in `target/bench`.
//!
//! Every task runs from the workspace root, whatever the current directory.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod guests;

/// The example components `serve` loads, built into `target/components`.
/// (The tests build the components they need themselves.)
const EXAMPLES: &[&str] = &["bank", "welcome"];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    if matches!(
        task.as_str(),
        "components" | "serve" | "test" | "bench" | "ci"
    ) {
        ensure_wasm_target()?;
    }
    match task.as_str() {
        "components" => match lang_flag(rest)? {
            (None, _) => components(),
            (Some(lang), _) => guests::build(&root, |g| lang.builds(g)),
        },
        "serve" => {
            let (lang, rest) = lang_flag(rest)?;
            components()?;
            let mut serve = cargo();
            serve.args([
                "run",
                "--package",
                "cqrs-wasi-host",
                "--bin",
                "cqrs-wasi",
                "--",
                "serve",
            ]);
            if let Some(lang) = lang {
                serve.arg("--config").arg(lang.serve_config(&root)?);
            }
            run(serve.args(&rest))
        }
        "test" => test(cargo(), &rest),
        "bench" => bench(&rest),
        "ci" => {
            // CI builds a fresh clone once: incremental caches would only
            // take disk (gigabytes of it).
            let cargo = || {
                let mut cargo = cargo();
                cargo.env("CARGO_INCREMENTAL", "0");
                cargo
            };
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            run(cargo().args(["clippy-components", "--", "-D", "warnings"]))?;
            test(cargo(), &rest)
        }
        _ => bail!(
            "usage: cargo xtask <task>\n\ntasks:\n  components  build the example components (--lang python|js|all: those languages' ones)\n  serve       build them and run the example host (--lang python|js: the bank in that language)\n  test        run the whole test suite\n  ci          check formatting and lints, then test\n  bench       run the benchmark suite (results in target/bench)"
        ),
    }
}

/// The PostgreSQL server the tests use unless `CQRS_WASI_TEST_POSTGRES_URL`
/// names another.
const POSTGRES: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);

/// How long a PostgreSQL server that was started may take to accept
/// connections.
const POSTGRES_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the suite with `cargo`, which may carry settings of its own: first
/// the Python and JavaScript components it deploys are built, and the
/// Python example's own tests run natively.
fn test(mut cargo: Command, extra: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    guests::build(&root, |_| true)?;
    run(Command::new(root.join("target/lang/python/bin/python"))
        .args(["-m", "unittest", "discover", "--start-directory"])
        .arg(root.join("examples/bank-py/tests"))
        .env("PYTHONPATH", "sdk/python:examples/bank-py")
        .env("PYTHONDONTWRITEBYTECODE", "1"))?;
    ensure_postgres()?;
    run(cargo
        .args(["test", "--workspace"])
        .args(extra)
        // Here the PostgreSQL tests must run: an unreachable server fails
        // them instead of skipping them.
        .env("CQRS_WASI_REQUIRE_POSTGRES", "1"))
}

/// The benchmark suite in release mode. The PostgreSQL rows use the local
/// server (started if need be) unless `CQRS_WASI_BENCH_POSTGRES_URL` names
/// another. cqrs-es's `MemStore` prints a line per commit on stdout, so the
/// suite's stdout is dropped; it reports on stderr and in files.
fn bench(extra: &[String]) -> anyhow::Result<()> {
    components()?;
    // Figure 11 compares the bank in Rust with its Python and JavaScript
    // twins; without their toolchains it is skipped, not the whole run.
    if let Err(error) = guests::build(&workspace_root(), |g| g.name.starts_with("bank_")) {
        eprintln!(
            "xtask: the Python and JavaScript banks are not built ({error:#}); figure 11 is skipped"
        );
    }
    let mut command = cargo();
    command.args([
        "run",
        "--release",
        "--package",
        "cqrs-wasi-bench",
        "--bin",
        "cqrs-wasi-bench",
        "--",
    ]);
    // `cargo xtask bench -- --only 1` is how one passes arguments through
    // to a cargo-run binary elsewhere; the `--` must not reach this one.
    command.args(extra.strip_prefix(&["--".to_owned()][..]).unwrap_or(extra));
    if std::env::var_os("CQRS_WASI_BENCH_POSTGRES_URL").is_none() {
        match ensure_postgres() {
            Ok(()) => {
                command.env(
                    "CQRS_WASI_BENCH_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                );
            }
            Err(error) => eprintln!("xtask: no PostgreSQL ({error:#}); skipping those rows"),
        }
    }
    run(command.stdout(std::process::Stdio::null()))
}

/// Makes sure the local PostgreSQL server accepts connections, starting its
/// clusters when nothing listens. A server named by
/// `CQRS_WASI_TEST_POSTGRES_URL` is someone else's to run.
fn ensure_postgres() -> anyhow::Result<()> {
    if std::env::var_os("CQRS_WASI_TEST_POSTGRES_URL").is_some() {
        return Ok(());
    }
    let address = SocketAddr::from(POSTGRES);
    if listens(address) {
        return Ok(());
    }
    eprintln!("xtask: nothing listens at {address}; starting PostgreSQL");
    let clusters = Path::new("/etc/postgresql");
    let versions = std::fs::read_dir(clusters)
        .with_context(|| format!("no PostgreSQL cluster to start in {}", clusters.display()))?;
    for version in versions {
        let version = version?.file_name();
        run(Command::new("pg_ctlcluster")
            .arg("--skip-systemctl-redirect")
            .arg(&version)
            .args(["main", "start"]))?;
    }
    let started = Instant::now();
    while !listens(address) || !ready(address) {
        if started.elapsed() > POSTGRES_START_TIMEOUT {
            bail!(
                "PostgreSQL does not accept connections at {address} after {POSTGRES_START_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn listens(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// Whether the server past its port accepts connections (it refuses them
/// while it starts up). `pg_isready` comes with the server; without it, a
/// listening port has to do.
fn ready(address: SocketAddr) -> bool {
    Command::new("pg_isready")
        .args([
            "-q",
            "-h",
            &address.ip().to_string(),
            "-p",
            &address.port().to_string(),
        ])
        .status()
        .map_or(true, |status| status.success())
}

/// The target the components are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain has the standard library for [`WASM_TARGET`].
/// `rust-toolchain.toml` names it, but rustup adds a toolchain file's
/// targets only when it installs the toolchain itself, and not at all with
/// `RUSTUP_AUTO_INSTALL=0`: a machine whose toolchain came another way
/// would fail every component build with "can't find crate for `std`".
fn ensure_wasm_target() -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Ok(());
    }
    eprintln!("xtask: the toolchain lacks {WASM_TARGET}; adding it with rustup");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET])).with_context(|| {
        format!("install the {WASM_TARGET} target of the toolchain in rust-toolchain.toml")
    })
}

/// Builds the example components with the `build-components` alias of
/// `.cargo/config.toml`, which says how every component is built.
fn components() -> anyhow::Result<()> {
    let mut build = cargo();
    build.arg("build-components");
    for name in EXAMPLES {
        build.args(["--package", name]);
    }
    run(&mut build)
}

/// Which Python or JavaScript components a `--lang` flag asks for.
#[derive(Debug, Clone, Copy)]
enum LangFlag {
    One(guests::Lang),
    All,
}

impl LangFlag {
    fn builds(self, guest: &guests::Guest) -> bool {
        match self {
            LangFlag::All => true,
            // The bank in that language; the fixtures are the tests'.
            LangFlag::One(lang) => guest.lang == lang && guest.name.starts_with("bank_"),
        }
    }

    /// Builds the bank in this language and writes a configuration that
    /// serves it, as the default one serves the Rust bank: as component
    /// `bank`, so that the README's commands work unchanged.
    fn serve_config(self, root: &Path) -> anyhow::Result<PathBuf> {
        let LangFlag::One(lang) = self else {
            bail!("serve --lang takes python or js");
        };
        guests::build(root, |g| self.builds(g))?;
        let (name, file) = match lang {
            guests::Lang::Python => ("python", "bank_py.wasm"),
            guests::Lang::Js => ("js", "bank_js.wasm"),
        };
        let component = guests::output_dir(root).join(file);
        let config = root.join(format!("target/lang/serve-{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "# Written by `cargo xtask serve --lang {name}`: the default configuration,\n\
                 # serving the bank written in {name}.\n\
                 [[components]]\nname = \"bank\"\npath = {path:?}\n",
                path = component.display().to_string(),
            ),
        )?;
        Ok(config)
    }
}

/// Takes `--lang python|js|all` off the front of `args`.
fn lang_flag(args: Vec<String>) -> anyhow::Result<(Option<LangFlag>, Vec<String>)> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) != Some("--lang") {
        return Ok((None, args.collect()));
    }
    args.next();
    let lang = match args.next().as_deref() {
        Some("python") => LangFlag::One(guests::Lang::Python),
        Some("js") => LangFlag::One(guests::Lang::Js),
        Some("all") => LangFlag::All,
        other => bail!("--lang takes python, js or all, not {other:?}"),
    };
    Ok((Some(lang), args.collect()))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
