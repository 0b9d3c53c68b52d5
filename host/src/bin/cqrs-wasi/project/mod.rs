//! The commands of a handler project of one's own, outside this repository:
//! `new` scaffolds one, `build` makes its component and checks it as a host
//! loads it, `dev` serves it and swaps in each rebuild.
//!
//! A project is a Rust crate (its `Cargo.toml` names the SDK as a
//! dependency) or a Python or JavaScript project, whose `cqrs-wasi.toml`
//! ([`Manifest`]) names the cqrs-wasi clone it is built with. This module
//! owns that file and how a project's kind is told; `new.rs`, `build.rs`
//! and `dev.rs` own one command each.

mod build;
mod dev;
mod new;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCommand {
    /// Scaffold a handler project of your own, e.g. `new orders --domain
    /// Shop --entity Order`.
    ///
    /// It holds a command handler, its events, a projection, a unit test
    /// that runs the handler natively, and a README with the commands that
    /// build, serve and deploy it.
    New(new::NewArgs),
    /// Build a handler project's component, check it as a host loads it,
    /// and print its path and digest.
    ///
    /// Rust: for wasm32-wasip2 with the `component` profile. Python and
    /// JavaScript: with the pinned toolchain of the project's cqrs-wasi
    /// clone, installed on first use.
    Build {
        /// The project's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Serve a host with a handler project's component, rebuilding it and
    /// swapping it in each time a source file changes.
    Dev(dev::DevArgs),
}

pub(crate) async fn run(command: ProjectCommand) -> anyhow::Result<()> {
    match command {
        ProjectCommand::New(args) => new::run(args),
        ProjectCommand::Build { dir } => build::run(&dir).await,
        ProjectCommand::Dev(args) => dev::run(args).await,
    }
}

/// The language a project's handlers are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Lang {
    /// A crate depending on the Rust SDK.
    Rust,
    /// componentize-py, with the helpers in the clone's `sdk/python`.
    Python,
    /// ComponentizeJS, with the helpers in the clone's `sdk/js`.
    Js,
}

/// The name of a Python or JavaScript project's [`Manifest`].
const MANIFEST: &str = "cqrs-wasi.toml";

/// A Python or JavaScript project's `cqrs-wasi.toml`, which `new` writes.
/// (A Rust project needs none: its `Cargo.toml` says it all.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// The component's name, and its file's.
    pub name: String,
    /// Python or JavaScript.
    pub lang: Lang,
    /// The cqrs-wasi clone it is built with; relative to the project.
    pub sdk: PathBuf,
}

/// What is in a project's directory.
#[derive(Debug)]
pub(crate) enum Project {
    /// A crate; its manifest.
    Rust(PathBuf),
    /// A Python or JavaScript project, with the clone's path resolved.
    Guest(Manifest),
}

impl Project {
    /// The project in `dir`: a `cqrs-wasi.toml` if there is one, else a
    /// `Cargo.toml`.
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        let manifest = dir.join(MANIFEST);
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let mut parsed: Manifest = toml::from_str(&text)
                .with_context(|| format!("{} is not a project manifest", manifest.display()))?;
            anyhow::ensure!(
                parsed.lang != Lang::Rust,
                "{}: a Rust project needs no {MANIFEST}; its Cargo.toml says how it is built",
                manifest.display()
            );
            parsed.sdk = dir.join(&parsed.sdk);
            return Ok(Project::Guest(parsed));
        }
        let cargo = dir.join("Cargo.toml");
        anyhow::ensure!(
            cargo.is_file(),
            "{} holds no handler project: neither {MANIFEST} (Python, JavaScript) nor Cargo.toml (Rust)",
            dir.display()
        );
        Ok(Project::Rust(cargo))
    }
}

/// The world every Python and JavaScript component is built for: the one
/// that exports all three handler interfaces.
const WORLD: &str = "domain-component";

/// Checks that `root` is a cqrs-wasi clone: the Rust SDK's crate at its
/// root, beside the WIT package and the other languages' helpers.
pub(crate) fn check_sdk(root: &Path) -> anyhow::Result<PathBuf> {
    let root = root
        .canonicalize()
        .with_context(|| format!("no cqrs-wasi clone at {}", root.display()))?;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    anyhow::ensure!(
        root.join("wit").is_dir() && manifest.contains("name = \"cqrs-wasi\""),
        "{} is not a cqrs-wasi clone (it lacks wit/ or the cqrs-wasi crate's Cargo.toml)",
        root.display()
    );
    Ok(root)
}
