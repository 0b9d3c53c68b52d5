//! The results: one [`Row`] per figure, each a measurement against its
//! baseline from the same run, written as a markdown table and as JSON with
//! the machine's description, the date and the commit.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

use crate::load::LoadResult;

/// One measured quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// What ran, such as `wasm handler (Host::execute)`.
    pub label: String,
    /// The headline number.
    pub value: f64,
    /// Its unit, such as `commands/s`.
    pub unit: String,
    /// Median latency per operation, in microseconds, where measured.
    pub p50_us: Option<f64>,
    /// 99th-percentile latency, in microseconds, where measured.
    pub p99_us: Option<f64>,
    /// Operations that failed during the measurement.
    pub failed: u64,
}

impl Measure {
    /// A throughput measure from a load run.
    pub fn throughput(label: impl Into<String>, unit: &str, run: &LoadResult) -> Self {
        Measure {
            label: label.into(),
            value: run.per_second,
            unit: unit.to_owned(),
            p50_us: Some(run.p50_us),
            p99_us: Some(run.p99_us),
            failed: run.failed,
        }
    }

    /// A plain value.
    pub fn value(label: impl Into<String>, value: f64, unit: &str) -> Self {
        Measure {
            label: label.into(),
            value,
            unit: unit.to_owned(),
            p50_us: None,
            p99_us: None,
            failed: 0,
        }
    }
}

/// Whether a row was measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "reason")]
pub enum Status {
    /// Measured in this run.
    Measured,
    /// Depends on work not done yet.
    NotYet(String),
    /// Not measured in this run (no PostgreSQL server, say).
    Skipped(String),
}

/// One figure against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The figure number (1..11; BENCHMARKS.md).
    pub figure: u8,
    /// What the row measures.
    pub name: String,
    /// The measurement.
    pub subject: Option<Measure>,
    /// Its baseline, from the same run.
    pub baseline: Option<Measure>,
    /// `subject / baseline` (for a latency, baseline / subject is not
    /// used: the ratio is always subject over baseline of the same unit).
    pub ratio: Option<f64>,
    /// The target, as text.
    pub target: Option<String>,
    /// Whether the target is met; `None` when there is none or nothing was
    /// measured.
    pub met: Option<bool>,
    /// Measured or not.
    pub status: Status,
    /// Anything a reader needs to interpret it.
    pub note: String,
    /// What the run must have shown whatever its speed (no call failed,
    /// every acknowledged append on disk), and whether it did. A target
    /// may name one too, but `met` also depends on the speed, which a
    /// quick run on a busy machine may miss.
    pub properties: Vec<Property>,
}

/// Something a run must show, whatever its speed.
#[derive(Debug, Clone, Serialize)]
pub struct Property {
    /// What it is, such as `0 failed calls`.
    pub name: String,
    /// Whether the run showed it.
    pub held: bool,
}

impl Row {
    /// A measured row; the ratio is subject over baseline.
    pub fn measured(
        figure: u8,
        name: impl Into<String>,
        subject: Measure,
        baseline: Measure,
    ) -> Self {
        let ratio = (baseline.value != 0.0).then(|| subject.value / baseline.value);
        Row {
            figure,
            name: name.into(),
            subject: Some(subject),
            baseline: Some(baseline),
            ratio,
            target: None,
            met: None,
            status: Status::Measured,
            note: String::new(),
            properties: Vec::new(),
        }
    }

    /// A row that cannot be measured yet.
    pub fn not_yet(figure: u8, name: impl Into<String>, target: &str, reason: &str) -> Self {
        Row {
            figure,
            name: name.into(),
            subject: None,
            baseline: None,
            ratio: None,
            target: Some(target.to_owned()),
            met: None,
            status: Status::NotYet(reason.to_owned()),
            note: String::new(),
            properties: Vec::new(),
        }
    }

    /// A row skipped in this run.
    pub fn skipped(
        figure: u8,
        name: impl Into<String>,
        target: Option<&str>,
        reason: &str,
    ) -> Self {
        Row {
            status: Status::Skipped(reason.to_owned()),
            target: target.map(str::to_owned),
            ..Row::not_yet(figure, name, "", "")
        }
    }

    /// Sets the target and whether it is met.
    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = Some(target.to_owned());
        self.met = Some(met);
        self
    }

    /// States a target that this row's measurement is not held to (it is
    /// for another mode): shown, never counted as met or missed.
    pub fn untargeted(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self.met = None;
        self
    }

    /// Names the isolation mode the row was measured in.
    pub fn in_mode(mut self, mode: &str) -> Self {
        self.name = format!("{} [{mode}]", self.name);
        self
    }

    /// Adds a property the run must show, and whether it did.
    pub fn property(mut self, name: &str, held: bool) -> Self {
        self.properties.push(Property {
            name: name.to_owned(),
            held,
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Total memory, from `/proc/meminfo`.
    pub memory: String,
    /// `uname -srm`.
    pub os: String,
    /// `rustc --version` of the toolchain that built the suite.
    pub rustc: String,
}

impl Machine {
    /// Describes this machine, as well as it can be read.
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        Machine {
            cpu: field(&cpuinfo, "model name"),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory: field(&meminfo, "MemTotal"),
            os: output("uname", &["-srm"]),
            rustc: output("rustc", &["--version"]),
        }
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (RFC 3339, UTC).
    pub date: String,
    /// The commit it ran at (`git describe --always --dirty`).
    pub commit: String,
    /// Whether it was the quick smoke run (numbers meaningless).
    pub quick: bool,
    /// Where.
    pub machine: Machine,
    /// The figures.
    pub rows: Vec<Row>,
}

impl Report {
    /// A report of `rows`, dated now, at the current commit.
    pub fn new(quick: bool, rows: Vec<Row>) -> Self {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "unknown".to_owned());
        Report {
            date,
            commit: output("git", &["describe", "--always", "--dirty"]),
            quick,
            machine: Machine::describe(),
            rows,
        }
    }

    /// The results table, in markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Run {} at commit `{}`{} on {} ({} CPUs, {} RAM), {}, {}.\n",
            self.date,
            self.commit,
            if self.quick {
                " (quick smoke run: numbers are meaningless)"
            } else {
                ""
            },
            m.cpu,
            m.cpus,
            m.memory,
            m.os,
            m.rustc
        );
        out.push_str("| # | figure | measured | baseline | ratio | target | met |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let (subject, baseline) = match &row.status {
                Status::Measured => (
                    row.subject.as_ref().map(cell).unwrap_or_default(),
                    row.baseline.as_ref().map(cell).unwrap_or_default(),
                ),
                Status::NotYet(reason) => (format!("not yet: {reason}"), String::new()),
                Status::Skipped(reason) => (format!("skipped: {reason}"), String::new()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.figure,
                row.name,
                subject,
                baseline,
                row.ratio.map(|r| format!("{r:.2}×")).unwrap_or_default(),
                row.target.as_deref().unwrap_or(""),
                match row.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
        let notes: Vec<&Row> = self.rows.iter().filter(|r| !r.note.is_empty()).collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for row in notes {
                let _ = writeln!(out, "- {}: {}", row.name, row.note);
            }
        }
        out
    }

    /// Writes `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let md = dir.join("results.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("cannot write {}", md.display()))?;
        let json = dir.join("results.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
        Ok(())
    }
}

fn cell(measure: &Measure) -> String {
    let mut text = format!(
        "{}: {} {}",
        measure.label,
        number(measure.value),
        measure.unit
    );
    if let (Some(p50), Some(p99)) = (measure.p50_us, measure.p99_us) {
        let _ = write!(text, " (p50 {}, p99 {} µs)", number(p50), number(p99));
    }
    if measure.failed > 0 {
        let _ = write!(text, ", {} failed", measure.failed);
    }
    text
}

/// Three significant digits, without scientific notation.
fn number(value: f64) -> String {
    let magnitude = if value == 0.0 {
        0
    } else {
        value.abs().log10().floor() as i32
    };
    let decimals = (2 - magnitude).clamp(0, 3) as usize;
    format!("{value:.decimals$}")
}
