//! `cqrs-wasi-bench`: runs the benchmark suite and writes `results.md` and
//! `results.json`. Run it in release mode: `cargo xtask bench` builds the
//! component and does that. `--quick` is the smoke run the tests use.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use cqrs_wasi_bench::config::Config;
use cqrs_wasi_bench::report::Report;
use cqrs_wasi_bench::suite;
use cqrs_wasi_host::Isolation;

/// Runs the cqrs-wasi benchmark suite.
#[derive(Debug, Parser)]
struct Args {
    /// The bank component; the welcome component is read from beside it.
    #[arg(
        long,
        default_value = "target/components/wasm32-wasip2/component/bank.wasm"
    )]
    component: PathBuf,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// PostgreSQL for the PostgreSQL rows (they are skipped without it).
    #[arg(long, env = "CQRS_WASI_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// A smoke run: a few hundred commands, numbers meaningless.
    #[arg(long)]
    quick: bool,
    /// Runs only these figures (1-11), for profiling one; repeatable.
    #[arg(long)]
    only: Vec<u8>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("bench: warning: a debug build; run `cargo xtask bench` for meaningful numbers");
    }
    let component = std::fs::read(&args.component).with_context(|| {
        format!(
            "cannot read the bank component at {} (`cargo xtask components` builds it)",
            args.component.display()
        )
    })?;
    // The welcome example is built beside the bank.
    let welcome_path = args.component.with_file_name("welcome.wasm");
    let welcome = std::fs::read(&welcome_path).with_context(|| {
        format!(
            "cannot read the welcome component at {} (`cargo xtask components` builds it)",
            welcome_path.display()
        )
    })?;
    // The bank in Python and JavaScript (figure 11), when they were built
    // beside it (`cargo xtask components --lang all`).
    let beside = |name: &str| std::fs::read(args.component.with_file_name(name)).ok();
    let work = tempfile::tempdir().context("cannot make a scratch directory")?;
    let config = Config {
        quick: args.quick,
        component,
        welcome,
        python: beside("bank_py.wasm"),
        javascript: beside("bank_js.wasm"),
        postgres_url: args.postgres_url,
        work_dir: work.path().to_path_buf(),
        verbose: true,
        only: args.only,
        isolation: Isolation::default(),
    };
    let rows = suite::run(&config).await?;
    let report = Report::new(args.quick, rows);
    report.write(&args.out)?;
    eprintln!("{}", report.markdown());
    eprintln!(
        "bench: wrote {} and {}",
        args.out.join("results.md").display(),
        args.out.join("results.json").display()
    );
    Ok(())
}
