//! `cqrs-wasi build`: a project's component, built for `wasm32-wasip2` with
//! the tools of its language, then loaded by a host of its own (on an
//! in-memory store), so that what a deploy would refuse (a crate that
//! exports no handler interface, an import the host does not supply) is
//! said here, with the host's own reason.
//!
//! Rust: `cargo build --lib --target wasm32-wasip2 --profile component`,
//! the `.wasm` found in cargo's JSON messages, whatever the target
//! directory. Python and JavaScript: the pinned componentize-py or
//! ComponentizeJS of the SDK clone (installed under its `target/lang` on
//! first use, by the code `cargo xtask` uses), with the clone's WIT package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use cqrs_wasi_host::store::MemoryStore;
use cqrs_wasi_host::{ComponentInfo, Host, HostError, LoadError, digest_of};

use super::{Lang, Manifest, Project, WORLD};

// The toolchain installers, shared with `cargo xtask` and the tests; this
// binary uses only those and `lang_dir`.
#[allow(dead_code)]
#[path = "../../../../../xtask/src/guests.rs"]
mod guests;

/// The target every component is built for.
pub(crate) const TARGET: &str = "wasm32-wasip2";

/// The cargo profile components are built with; defined by a scaffold's
/// `Cargo.toml`, and by [`PROFILE_SETTINGS`] for a crate that lacks it.
const PROFILE: &str = "component";

/// The `component` profile of a scaffold's `Cargo.toml` (and of this
/// workspace), for a crate that does not define it.
const PROFILE_SETTINGS: &[&str] = &[
    "profile.component.inherits=\"release\"",
    "profile.component.lto=true",
    "profile.component.codegen-units=1",
    "profile.component.debug=false",
    "profile.component.panic=\"abort\"",
];

/// The JavaScript helpers in an SDK clone.
pub(crate) const JS_HELPERS: &str = "sdk/js/cqrs-wasi.js";

/// Where a JavaScript project keeps its copy of them: ComponentizeJS
/// resolves imports only below the directory it runs in.
pub(crate) const JS_HELPERS_COPY: &str = "lib/cqrs-wasi.js";

/// A built component.
#[derive(Debug)]
pub(crate) struct Built {
    /// The name to deploy it under: the crate's, or the manifest's.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// `sha256:...`, as the host names its versions.
    pub digest: String,
}

pub(crate) async fn run(dir: &Path) -> anyhow::Result<()> {
    let dir = dir.to_owned();
    let built = tokio::task::spawn_blocking(move || component(&dir)).await??;
    let info = check(&built).await?;
    println!("built: {}", built.name);
    println!("path: {}", built.path.display());
    println!("digest: {}", built.digest);
    println!("commands: {}", info.commands.join(", "));
    println!("projections: {}", info.projections.join(", "));
    eprintln!(
        "deploy it to a running host (admin token from CQRS_WASI_ADMIN_TOKEN or --token):\n  cqrs-wasi deploy {} --name {}",
        built.path.display(),
        built.name
    );
    Ok(())
}

/// Loads `built` into a host of its own, as a deploy would; what the host
/// refuses is the error, with a hint when the cause is the usual one.
pub(crate) async fn check(built: &Built) -> anyhow::Result<ComponentInfo> {
    let host = Host::builder()
        .store(Arc::new(MemoryStore::new()))
        .build()?;
    host.deploy(&built.name, built.bytes.clone())
        .await
        .map_err(|e| refused(built, e))
}

/// The host's refusal of `built`, as the error of a build.
pub(crate) fn refused(built: &Built, error: HostError) -> anyhow::Error {
    let hint = match &error {
        HostError::Load(LoadError::WrongExports { .. }) => {
            "\na Rust crate exports them with `cqrs_wasi::export_component! { commands: [...], projections: [...] }`; Python with `export(...)` in its app module, JavaScript with `exportComponent(...)`"
        }
        _ => "",
    };
    anyhow::anyhow!(
        "{} is not a component a host accepts: {error}{hint}",
        built.path.display()
    )
}

/// Builds the project in `dir`.
pub(crate) fn component(dir: &Path) -> anyhow::Result<Built> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no project at {}", dir.display()))?;
    match Project::open(&dir)? {
        Project::Rust(manifest) => rust(&manifest),
        Project::Guest(manifest) => {
            let path = guest(&dir, &manifest)?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Built {
                name: manifest.name,
                digest: digest_of(&bytes),
                path,
                bytes,
            })
        }
    }
}

/// `cargo`: the one that runs us, if cargo does, as `cargo xtask` does.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The package a Cargo.toml defines, as `cargo metadata` describes it.
#[derive(Debug, serde::Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: PathBuf,
    targets: Vec<Target>,
}

#[derive(Debug, serde::Deserialize)]
struct Target {
    crate_types: Vec<String>,
}

/// A line of `cargo build --message-format json`: only artifacts matter.
#[derive(Debug, serde::Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

fn rust(manifest: &Path) -> anyhow::Result<Built> {
    let output = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo cannot read {}",
        manifest.display()
    );
    let metadata: Metadata = serde_json::from_slice(&output.stdout)
        .context("cargo metadata answered in a new format")?;
    let package = metadata
        .packages
        .iter()
        .find(|p| p.manifest_path == manifest)
        .with_context(|| {
            format!(
                "{} defines no package (a virtual workspace?): build in the handler crate's directory",
                manifest.display()
            )
        })?;
    anyhow::ensure!(
        package
            .targets
            .iter()
            .any(|t| t.crate_types.iter().any(|c| c == "cdylib")),
        "crate {} builds no component: its Cargo.toml needs `[lib] crate-type = [\"cdylib\", \"rlib\"]`",
        package.name
    );
    ensure_target(manifest.parent().unwrap_or(Path::new(".")))?;

    let mut build = cargo();
    build
        .args(["build", "--lib", "--target", TARGET, "--profile", PROFILE])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !defines_profile(&metadata.workspace_root) {
        for setting in PROFILE_SETTINGS {
            build.args(["--config", setting]);
        }
    }
    let output = build.output().context("cannot run cargo")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo could not build crate {} for {TARGET}",
        package.name
    );
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Message>(line).ok())
        .filter(|m| m.reason == "compiler-artifact" && m.package_id == package.id)
        .flat_map(|m| m.filenames)
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("cargo built no .wasm file for crate {}", package.name))?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Built {
        name: package.name.clone(),
        digest: digest_of(&bytes),
        path,
        bytes,
    })
}

/// Whether the workspace at `root` defines the `component` profile (only
/// the workspace root's profiles count).
fn defines_profile(root: &Path) -> bool {
    std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|manifest| {
            manifest
                .get("profile")
                .and_then(|p| p.get(PROFILE))
                .is_some()
        })
}

/// Makes sure the toolchain that builds in `dir` has the standard library
/// for [`TARGET`]; cargo's own error for a missing one is obscure ("can't
/// find crate for `core`").
fn ensure_target(dir: &Path) -> anyhow::Result<()> {
    let Ok(output) = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
    else {
        // No rustc on the PATH: cargo finds its own, and says what is
        // missing itself.
        return Ok(());
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(
        !output.status.success() || sysroot.join("lib/rustlib").join(TARGET).is_dir(),
        "the Rust toolchain lacks the {TARGET} target: run `rustup target add {TARGET}`"
    );
    Ok(())
}

/// Builds a Python or JavaScript project; its component's file.
fn guest(dir: &Path, manifest: &Manifest) -> anyhow::Result<PathBuf> {
    let sdk = super::check_sdk(&manifest.sdk)?;
    cqrs_wasi_host::model::validate_name(
        cqrs_wasi_host::model::NameKind::ComponentName,
        &manifest.name,
    )
    .context("the name in cqrs-wasi.toml")?;
    let out_dir = dir.join("target").join(TARGET).join(PROFILE);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let output = out_dir.join(format!("{}.wasm", manifest.name));
    // Written aside, then renamed: a watcher never sees half a component.
    let building = out_dir.join(format!(".{}.wasm", manifest.name));
    let mut command = match manifest.lang {
        Lang::Python => {
            guests::install_python(&sdk)?;
            let mut command =
                Command::new(guests::lang_dir(&sdk).join("python/bin/componentize-py"));
            command
                .args(["--quiet", "--wit-path"])
                .arg(sdk.join("wit"))
                .args(["--world", WORLD, "componentize", "--python-path"])
                .arg(sdk.join("sdk/python"))
                .args(["--python-path", "src", "app", "-o"])
                .arg(&building)
                // Its cache would be a source file changed, to `dev`.
                .env("PYTHONDONTWRITEBYTECODE", "1");
            command
        }
        Lang::Js => {
            guests::install_js(&sdk)?;
            refresh(&sdk.join(JS_HELPERS), &dir.join(JS_HELPERS_COPY))?;
            // The WIT package too must lie below the working directory.
            let wit = Path::new("target/cqrs-wasi/wit");
            copy_wit(&sdk.join("wit"), &dir.join(wit))?;
            let mut command = Command::new("node");
            command
                .arg(
                    guests::lang_dir(&sdk)
                        .join("js/node_modules/@bytecodealliance/componentize-js/src/cli.js"),
                )
                .arg("src/app.js")
                .arg("--wit")
                .arg(wit)
                .args(["--world-name", WORLD])
                // The host supplies no `wasi:http`.
                .args(["--disable", "http", "fetch-event", "-o"])
                .arg(&building);
            command
        }
        Lang::Rust => bail!("a Rust project is built by cargo"),
    };
    let status = command
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(status.success(), "building the component failed: {status}");
    std::fs::rename(&building, &output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(output)
}

/// Copies `from` to `to` unless `to` holds the same already (so that a
/// `dev` watching the project sees no change).
fn refresh(from: &Path, to: &Path) -> anyhow::Result<()> {
    let text = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(to, text).with_context(|| format!("cannot write {}", to.display()))
}

/// `wit/`'s files, copied into `to`.
fn copy_wit(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        refresh(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}
