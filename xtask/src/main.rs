//! Project automation, run as `cargo xtask <task>`:
//!
//! - `components`: build the example components to wasm32-wasip2.
//! - `serve [ARGS]`: build them, then run `cqrs-wasi serve [ARGS]` (with no
//!   arguments: the bank example from ./data on 127.0.0.1:8080).
//! - `test`: the whole test suite, with everything it needs.
//! - `ci`: formatting and lints, then `test`.
//!
//! Every task runs from the workspace root, whatever the current directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The example components `serve` loads, built into `target/components`.
/// (The tests build the components they need themselves.)
const EXAMPLES: &[&str] = &["bank", "welcome"];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    match task.as_str() {
        "components" => components(),
        "serve" => {
            components()?;
            run(cargo()
                .args([
                    "run",
                    "--package",
                    "cqrs-wasi-host",
                    "--bin",
                    "cqrs-wasi",
                    "--",
                    "serve",
                ])
                .args(&rest))
        }
        "test" => test(&rest),
        "ci" => {
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            test(&rest)
        }
        _ => bail!(
            "usage: cargo xtask <task>\n\ntasks:\n  components  build the example components\n  serve       build them and run the example host\n  test        run the whole test suite\n  ci          check formatting and lints, then test"
        ),
    }
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["test", "--workspace"]).args(extra))
}

fn components() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
        "target/components",
    ]);
    for name in EXAMPLES {
        build.args(["--package", name]);
    }
    run(&mut build)
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
