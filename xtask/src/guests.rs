//! The Python and JavaScript components: their pinned toolchains and their
//! builds.
//!
//! componentize-py is installed into a virtualenv and ComponentizeJS into a
//! `node_modules`, both under `target/lang`, from the pins in
//! `sdk/python/requirements.txt` and `sdk/js/package-lock.json`, when they
//! are missing or the pins changed. Each component is built next to the Rust
//! ones (`target/components/wasm32-wasip2/component/NAME.wasm`) and rebuilt
//! only when what it is built from changed: its sources, the SDK, `wit/`,
//! the pins and the build command, whose hash a stamp file beside it keeps.
//!
//! `cargo xtask` and the tests (which include this file) both build them
//! here, so that a plain `cargo test` builds what it needs as it does for
//! the Rust components; `cqrs-wasi build` (which includes it too) installs
//! the toolchains a Python or JavaScript handler project is built with. So
//! it must need nothing but std and anyhow.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A language a component can be written in besides Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// componentize-py.
    Python,
    /// ComponentizeJS.
    Js,
}

/// One Python or JavaScript component.
#[derive(Debug)]
pub struct Guest {
    /// The output's name: `target/components/.../{name}.wasm`.
    pub name: &'static str,
    /// Its language.
    pub lang: Lang,
    /// The app module (Python: its file, whose name is the module's) or the
    /// ES module it is built from.
    pub entry: &'static str,
    /// Directories whose files it is built from besides the entry's own
    /// and the SDK; for Python, also its module path.
    pub also: &'static [&'static str],
    /// The WIT package version it is built against, when not `wit/`'s own:
    /// a deliberately mis-built component.
    pub wit_version: Option<&'static str>,
}

/// Every Python and JavaScript component: the examples, and the fixtures
/// the tests deploy.
pub const GUESTS: &[Guest] = &[
    Guest {
        name: "bank_py",
        lang: Lang::Python,
        entry: "examples/bank-py/app.py",
        also: &[],
        wit_version: None,
    },
    Guest {
        name: "bank_js",
        lang: Lang::Js,
        entry: "examples/bank-js/app.js",
        also: &[],
        wit_version: None,
    },
    Guest {
        name: "fixture_py",
        lang: Lang::Python,
        entry: "tests/components/fixture-py/app.py",
        also: &["examples/bank-py"],
        wit_version: None,
    },
    Guest {
        name: "fixture_js",
        lang: Lang::Js,
        entry: "tests/components/fixture-js/app.js",
        also: &["examples/bank-js"],
        wit_version: None,
    },
    // The bank built against a WIT package the host does not supply, which
    // the host must refuse at deploy.
    Guest {
        name: "misbuilt_py",
        lang: Lang::Python,
        entry: "examples/bank-py/app.py",
        also: &[],
        wit_version: Some("0.1.0"),
    },
];

/// The world every component is built for.
const WORLD: &str = "domain-component";

/// Where the components go: beside the Rust ones.
pub fn output_dir(root: &Path) -> PathBuf {
    root.join("target/components/wasm32-wasip2/component")
}

/// Builds the components `wanted` picks, installing the toolchains they
/// need first; each is skipped when it is up to date.
pub fn build(root: &Path, wanted: impl Fn(&Guest) -> bool) -> anyhow::Result<()> {
    let guests: Vec<&Guest> = GUESTS.iter().filter(|g| wanted(g)).collect();
    if guests.iter().any(|g| g.lang == Lang::Python) {
        install_python(root)?;
    }
    if guests.iter().any(|g| g.lang == Lang::Js) {
        install_js(root)?;
    }
    for guest in guests {
        build_one(root, guest).with_context(|| format!("building component {}", guest.name))?;
    }
    Ok(())
}

/// The toolchains' home.
pub fn lang_dir(root: &Path) -> PathBuf {
    root.join("target/lang")
}

/// Holds `target/lang/.lock` until dropped: processes that install at
/// once (the test binary, and the `cqrs-wasi build` a test runs beside
/// it) would otherwise build one virtualenv or `node_modules` together.
fn install_lock(root: &Path) -> anyhow::Result<std::fs::File> {
    let dir = lang_dir(root);
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::File::create(dir.join(".lock"))?;
    lock.lock()?;
    Ok(lock)
}

/// Makes `target/lang/python` a virtualenv with the pinned componentize-py.
pub fn install_python(root: &Path) -> anyhow::Result<()> {
    let _installing = install_lock(root)?;
    let pins = std::fs::read(root.join("sdk/python/requirements.txt"))?;
    let venv = lang_dir(root).join("python");
    let stamp = venv.join(".pins");
    if std::fs::read(&stamp).is_ok_and(|installed| installed == pins) {
        return Ok(());
    }
    eprintln!("xtask: installing componentize-py into {}", venv.display());
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))
    .context("creating a virtualenv needs python3 (3.10 or later) with venv")?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(root.join("sdk/python/requirements.txt")))?;
    std::fs::write(&stamp, pins)?;
    Ok(())
}

/// Makes `target/lang/js/node_modules` the pinned ComponentizeJS.
pub fn install_js(root: &Path) -> anyhow::Result<()> {
    let _installing = install_lock(root)?;
    let lock = std::fs::read(root.join("sdk/js/package-lock.json"))?;
    let dir = lang_dir(root).join("js");
    let stamp = dir.join("node_modules/.pins");
    if std::fs::read(&stamp).is_ok_and(|installed| installed == lock) {
        return Ok(());
    }
    eprintln!("xtask: installing ComponentizeJS into {}", dir.display());
    std::fs::create_dir_all(&dir)?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(root.join("sdk/js").join(file), dir.join(file))?;
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))
    .context("installing ComponentizeJS needs Node.js 18 or later with npm")?;
    std::fs::write(&stamp, lock)?;
    Ok(())
}

fn build_one(root: &Path, guest: &Guest) -> anyhow::Result<()> {
    let out_dir = output_dir(root);
    std::fs::create_dir_all(&out_dir)?;
    let output = out_dir.join(format!("{}.wasm", guest.name));
    let stamp = out_dir.join(format!("{}.wasm.stamp", guest.name));
    let wit = wit_dir(root, guest)?;
    let mut command = build_command(root, guest, &wit)?;
    let building = out_dir.join(format!(".{}.wasm", guest.name));
    command.arg("-o").arg(&building);

    let hash = inputs_hash(root, guest, &wit, &command)?;
    let up_to_date = output.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|stamped| stamped.trim() == hash);
    if up_to_date {
        return Ok(());
    }
    eprintln!("xtask: building {}", output.display());
    run(command.current_dir(root))?;
    std::fs::rename(&building, &output)?;
    std::fs::write(&stamp, hash)?;
    Ok(())
}

/// `wit/`, or a copy of it under another package version, relative to the
/// workspace root (ComponentizeJS reads nothing outside the working
/// directory).
fn wit_dir(root: &Path, guest: &Guest) -> anyhow::Result<PathBuf> {
    let Some(version) = guest.wit_version else {
        return Ok(PathBuf::from("wit"));
    };
    let copy = PathBuf::from(format!("target/lang/wit-{version}"));
    std::fs::create_dir_all(root.join(&copy))?;
    for entry in std::fs::read_dir(root.join("wit"))? {
        let entry = entry?;
        let text = std::fs::read_to_string(entry.path())?;
        let (package, rest) = text
            .split_once("package cqrs-wasi:handlers@")
            .context("wit/ declares package cqrs-wasi:handlers")?;
        let rest = rest.split_once(';').map_or("", |(_, rest)| rest);
        std::fs::write(
            root.join(&copy).join(entry.file_name()),
            format!("{package}package cqrs-wasi:handlers@{version};{rest}"),
        )?;
    }
    Ok(copy)
}

fn build_command(root: &Path, guest: &Guest, wit: &Path) -> anyhow::Result<Command> {
    let entry = Path::new(guest.entry);
    let entry_dir = entry.parent().context("an entry lies in a directory")?;
    match guest.lang {
        Lang::Python => {
            let module = entry
                .file_stem()
                .and_then(|s| s.to_str())
                .context("a Python entry is a module file")?;
            let mut command = Command::new(lang_dir(root).join("python/bin/componentize-py"));
            command
                .args(["--quiet", "--wit-path"])
                .arg(wit)
                .args(["--world", WORLD, "componentize"])
                .args(["--python-path", "sdk/python", "--python-path"])
                .arg(entry_dir);
            for dir in guest.also {
                command.args(["--python-path", dir]);
            }
            command.arg(module);
            Ok(command)
        }
        Lang::Js => {
            // Relative imports resolve only below the working directory,
            // the workspace root.
            let mut command = Command::new("node");
            command
                .arg(
                    lang_dir(root)
                        .join("js/node_modules/@bytecodealliance/componentize-js/src/cli.js"),
                )
                .arg(entry)
                .arg("--wit")
                .arg(wit)
                .args(["--world-name", WORLD])
                // The host supplies no `wasi:http`.
                .args(["--disable", "http", "fetch-event"]);
            Ok(command)
        }
    }
}

/// A hash of everything a component is built from.
fn inputs_hash(
    root: &Path,
    guest: &Guest,
    wit: &Path,
    command: &Command,
) -> anyhow::Result<String> {
    let entry_dir = Path::new(guest.entry).parent().unwrap_or(Path::new("."));
    let sdk = match guest.lang {
        Lang::Python => ["sdk/python"],
        Lang::Js => ["sdk/js"],
    };
    let mut hasher = DefaultHasher::new();
    let dirs = sdk
        .iter()
        .map(|d| root.join(d))
        .chain([root.join(entry_dir), root.join(wit)])
        .chain(guest.also.iter().map(|d| root.join(d)));
    for dir in dirs {
        hash_tree(&dir, &mut hasher)?;
    }
    hasher.write(format!("{command:?}").as_bytes());
    Ok(format!("{:016x}", hasher.finish()))
}

fn hash_tree(path: &Path, hasher: &mut DefaultHasher) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Written by the builds themselves.
            if name == "__pycache__" || name == "node_modules" {
                continue;
            }
            hash_tree(&entry, hasher)?;
        }
    } else {
        hasher.write(path.to_string_lossy().as_bytes());
        hasher.write(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        );
    }
    Ok(())
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
