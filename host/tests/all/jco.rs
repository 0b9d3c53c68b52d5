//! The same component under another component runtime: the bank example's
//! `Balance` projection, transpiled by jco and run in Node.js, gives the
//! state the host gives for the same events.
//!
//! jco is installed from npm into `target/jco` on first use (pinned in
//! `tests/jco/package.json`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use cqrs_wasi_host::model::StreamId;
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{CommandRequest, Host};
use serde_json::{Value, json};

use crate::support;

fn run(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", output.status);
    }
    Ok(output.stdout)
}

/// `target/jco`, with jco and the WASI shim installed.
fn jco_dir() -> anyhow::Result<PathBuf> {
    let sources = support::root().join("tests/jco");
    let dir = support::root().join("target/jco");
    std::fs::create_dir_all(&dir)?;
    for file in ["package.json", "event-store.js"] {
        std::fs::copy(sources.join(file), dir.join(file))?;
    }
    if !dir.join("node_modules/.bin/jco").exists() {
        run(Command::new("npm")
            .args(["install", "--no-package-lock", "--no-audit", "--no-fund"])
            .current_dir(&dir))?;
    }
    Ok(dir)
}

/// Transpiles `component` to JS in `dir/name`; the module's path.
fn transpile(dir: &Path, name: &str, component: &[u8]) -> anyhow::Result<PathBuf> {
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&wasm, component)?;
    let out = dir.join(name);
    run(Command::new("node")
        .arg(dir.join("node_modules/.bin/jco"))
        .arg("transpile")
        .arg(&wasm)
        .args(["--no-typescript", "--quiet", "-o"])
        .arg(&out)
        .args(["--map", "cqrs-wasi:handlers/event-store=../event-store.js"]))?;
    Ok(out.join(format!("{name}.js")))
}

#[tokio::test]
async fn the_balance_projection_gives_the_same_state_under_jco_in_node() -> anyhow::Result<()> {
    let bank = support::component("bank");
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?;
    host.deploy("bank", bank.clone()).await?;
    let account = StreamId::new("Bank", "Account", "jco-1")?;
    let mut commands = vec![("OpenAccount", json!({"owner": "Ada"}))];
    for i in 1..=40 {
        commands.push(("Deposit", json!({ "amount": i * 3 })));
        commands.push(("Withdraw", json!({ "amount": i })));
    }
    for (command, payload) in commands {
        host.execute(CommandRequest::new(
            account.clone(),
            command,
            &payload.to_string(),
        )?)
        .await?;
    }
    let in_host: Value =
        serde_json::from_str(host.project(&account, "Balance", None).await?.state.get())?;
    let events = host.read_stream(&account, 1, 1000).await?;
    assert_eq!(events.len(), 81);

    let dir = jco_dir()?;
    let module = transpile(&dir, "bank", &bank)?;
    let input = json!({
        "projection": { "domain": "Bank", "entityType": "Account", "projectionType": "Balance" },
        "events": events,
    });
    let mut node = Command::new("node")
        .arg(support::root().join("tests/jco/fold.mjs"))
        .arg(&module)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    serde_json::to_writer(node.stdin.take().context("stdin")?, &input)?;
    let output = node.wait_with_output()?;
    assert!(output.status.success(), "node failed: {}", output.status);
    let in_node: Value = serde_json::from_slice(&output.stdout)?;

    assert_eq!(in_node, in_host);
    assert_eq!(
        in_host,
        json!({ "balance": (1..=40).map(|i| i * 2).sum::<i64>(), "open": true })
    );
    Ok(())
}
