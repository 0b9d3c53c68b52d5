//! How a benchmark run is set up: what it measures with, how long, and how
//! loud. Every figure takes it; it decides nothing about a figure.

use std::path::PathBuf;
use std::time::Duration;

use cqrs_wasi_host::{Isolation, ReuseConfig, RuntimeConfig};

use crate::load::Budget;

/// Accounts of the bank workload.
pub const ACCOUNTS: usize = 100;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// A smoke run: a few hundred commands in all, numbers meaningless.
    pub quick: bool,
    /// The bank component's bytes.
    pub component: Vec<u8>,
    /// The welcome component's bytes (figure 6's local handler).
    pub welcome: Vec<u8>,
    /// The bank written in Python (figure 11), when built.
    pub python: Option<Vec<u8>>,
    /// The bank written in JavaScript (figure 11), when built.
    pub javascript: Option<Vec<u8>>,
    /// The PostgreSQL server for the PostgreSQL rows; `None` skips them.
    pub postgres_url: Option<String>,
    /// Scratch space: SQLite files, the compiled-code cache.
    pub work_dir: PathBuf,
    /// Prints progress to stderr.
    pub verbose: bool,
    /// Runs only these figures (all when empty): for profiling one.
    pub only: Vec<u8>,
    /// How the wasm hosts of this pass keep their instances; the suite runs
    /// the figures that call components once per mode.
    pub isolation: Isolation,
}

impl Config {
    pub(crate) fn budget(&self, clients: usize) -> Budget {
        if self.quick {
            Budget {
                warmup_ops: 1,
                duration: Duration::from_secs(5),
                max_ops: Some(20),
            }
        } else {
            Budget {
                // One command per account of each client first: every
                // snapshot is warm when the clock starts.
                warmup_ops: ACCOUNTS.div_ceil(clients) as u64,
                duration: Duration::from_secs(2),
                max_ops: None,
            }
        }
    }

    /// The runtime every wasm host of the pass runs under.
    pub(crate) fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            cache_dir: Some(self.work_dir.join("cache")),
            reuse: ReuseConfig {
                isolation: self.isolation,
                ..ReuseConfig::default()
            },
            ..RuntimeConfig::default()
        }
    }

    /// The pass's name in row names.
    pub(crate) fn mode(&self) -> &'static str {
        match self.isolation {
            Isolation::Reuse => "reuse",
            Isolation::PerCall => "per-call",
        }
    }

    pub(crate) fn say(&self, what: &str) {
        if self.verbose {
            eprintln!("bench: {what}");
        }
    }
}
