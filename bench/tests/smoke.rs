//! The benchmark suite's quick mode, run as a test so that it cannot rot:
//! every figure runs on a few hundred commands in all. No timing is
//! asserted; only that the suite runs and writes its report, and that
//! every property a figure depends on, whatever its speed (no failed swap,
//! every acknowledged append on disk), held.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

#[path = "../../xtask/src/guests.rs"]
mod guests;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Builds the bank component (and the welcome one, and the bank in Python
/// and JavaScript beside them) into `target/components` (its own target
/// directory, so this never waits on the lock of the `cargo test` running us).
fn bank_component() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The alias (`.cargo/config.toml`) says how components are built.
    let status = Command::new(cargo)
        .current_dir(root())
        .arg("build-components")
        .args(["--package", "bank", "--package", "welcome"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the bank component failed: {status}");
    }
    // Figure 11's banks in Python and JavaScript, beside it.
    guests::build(&root(), |guest| guest.name.starts_with("bank_"))?;
    Ok(root().join("target/components/wasm32-wasip2/component/bank.wasm"))
}

#[test]
fn the_quick_run_measures_every_figure_and_writes_its_report() -> anyhow::Result<()> {
    let component = bank_component()?;
    let out = tempfile::tempdir()?;
    let mut bench = Command::new(env!("CARGO_BIN_EXE_cqrs-wasi-bench"));
    bench
        .current_dir(root())
        .arg("--quick")
        .arg("--component")
        .arg(&component)
        .arg("--out")
        .arg(out.path())
        .env_remove("CQRS_WASI_BENCH_POSTGRES_URL")
        // cqrs-es's MemStore prints a line per commit.
        .stdout(Stdio::null());
    // Under `cargo xtask test` PostgreSQL is there: run those rows too.
    if std::env::var_os("CQRS_WASI_REQUIRE_POSTGRES").is_some() {
        let url = std::env::var("CQRS_WASI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        bench.arg("--postgres-url").arg(url);
    }
    let status = bench.status().context("cannot run cqrs-wasi-bench")?;
    assert!(status.success(), "cqrs-wasi-bench --quick failed: {status}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json"))?)?;
    assert_eq!(report["quick"], true);
    let rows = report["rows"].as_array().context("rows")?;
    let figures: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter_map(|row| row["figure"].as_u64())
        .collect();
    assert_eq!(figures, (1..=11).collect(), "every figure has a row");
    // Figure 11 ran, not skipped: its components were built above.
    assert!(
        rows.iter()
            .any(|row| row["figure"] == 11 && row["status"]["kind"] == "measured"),
        "the languages figure was measured"
    );
    for row in rows {
        if row["status"]["kind"] == "measured" {
            assert!(
                row["ratio"].is_number(),
                "a measured row has a ratio: {row}"
            );
        }
        for property in row["properties"].as_array().context("properties")? {
            assert_eq!(property["held"], true, "{property} in {row}");
        }
    }
    let properties: Vec<&str> = rows
        .iter()
        .flat_map(|row| row["properties"].as_array().into_iter().flatten())
        .filter_map(|property| property["name"].as_str())
        .collect();
    for property in ["0 failed calls", "every acknowledged append on disk"] {
        assert!(
            properties.contains(&property),
            "a figure checks {property}: {properties:?}"
        );
    }
    let table = std::fs::read_to_string(out.path().join("results.md"))?;
    assert!(table.contains("| # | figure |"));
    Ok(())
}
