//! The README's tour, run as written against the `cqrs-wasi` binary serving
//! its default configuration (the bank example from ./data).

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::support;

/// One command of the tour and a part of what it must print.
struct Step {
    command: String,
    expected: String,
}

/// The README sections whose `sh` blocks are run.
const SECTIONS: [&str; 3] = ["A tour", "Deploying a new version", "Notifications"];

/// What the README's `sections` say to do: the files of their code blocks
/// in `languages` (each block's first line, a comment, names its file),
/// and the commands of their `sh` blocks, each followed by its `# ⇒` line.
fn read(sections: &[&str], languages: &[&str]) -> anyhow::Result<(Vec<File>, Vec<Step>)> {
    let readme = std::fs::read_to_string(support::root().join("README.md"))?;
    let found: Vec<&str> = readme
        .split("\n## ")
        .filter(|s| sections.iter().any(|title| s.starts_with(title)))
        .collect();
    anyhow::ensure!(
        found.len() == sections.len(),
        "README lacks one of {sections:?}"
    );
    let mut steps = Vec::new();
    let mut files: Vec<File> = Vec::new();
    enum Block {
        None,
        Sh,
        File,
    }
    let mut block = Block::None;
    for line in found.iter().flat_map(|section| section.lines()) {
        match (&block, line.trim()) {
            (Block::None, "```sh") => block = Block::Sh,
            (Block::None, fence) if languages.iter().any(|l| fence == format!("```{l}")) => {
                block = Block::File;
                files.push(File::default());
            }
            (_, "```") => block = Block::None,
            (Block::Sh, line) => {
                if let Some(expected) = line.strip_prefix("# ⇒ ") {
                    let step: &mut Step = steps.last_mut().context("⇒ before any command")?;
                    step.expected = expected.to_owned();
                } else {
                    steps.push(Step {
                        command: line.to_owned(),
                        expected: String::new(),
                    });
                }
            }
            (Block::File, _) => {
                let file = files.last_mut().context("a file block is open")?;
                if file.path.is_empty() {
                    file.path = line.trim_start_matches(['#', '/']).trim().to_owned();
                } else {
                    file.text.push_str(line);
                    file.text.push('\n');
                }
            }
            (Block::None, _) => {}
        }
    }
    Ok((files, steps))
}

/// A file the README shows whole, and where it says it goes.
#[derive(Default)]
struct File {
    path: String,
    text: String,
}

/// Runs `steps` in `dir` against `host`, as a user would type them there
/// (the README's host and binary swapped for the test's), and checks that
/// each prints what the README says.
fn run(steps: &[Step], dir: &Path, host: &support::ServedHost) -> anyhow::Result<()> {
    let address = host.address();
    for step in steps {
        let command = step
            .command
            .replace("localhost:8080", address)
            .replace("./target/debug/cqrs-wasi", support::BINARY);
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(dir)
            .env("CQRS_WASI_URL", format!("http://{address}"))
            .output()?;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        anyhow::ensure!(
            printed.contains(&step.expected),
            "`{}` printed:\n{printed}\nwhich lacks: {}",
            step.command,
            step.expected
        );
    }
    Ok(())
}

/// Starts `cqrs-wasi serve` in `dir` on a free port, with the admin token
/// the README uses.
fn serve(dir: &Path) -> anyhow::Result<support::ServedHost> {
    let mut command = Command::new(support::BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CQRS_WASI_ADMIN_TOKEN", "change-me")
        .current_dir(dir);
    support::ServedHost::start(command)
}

#[test]
fn the_readme_tour_works_as_written() -> anyhow::Result<()> {
    let (_, steps) = read(&SECTIONS, &[])?;
    assert!(steps.len() >= 10, "the tour has its steps");
    assert!(
        steps.iter().all(|s| !s.expected.is_empty()),
        "every step says what it prints"
    );

    // The working directory of a fresh clone after `cargo xtask serve` built
    // the example component.
    let dir = tempfile::tempdir()?;
    let components = dir.path().join("target/components/wasm32-wasip2/component");
    std::fs::create_dir_all(&components)?;
    std::fs::write(components.join("bank.wasm"), support::component("bank"))?;

    let host = serve(dir.path())?;
    run(&steps, dir.path(), &host)?;

    assert!(
        dir.path().join("data/events.db").is_file(),
        "the store is a SQLite file under ./data"
    );
    // SIGTERM: the host shuts down cleanly.
    let status = host.stop()?;
    assert!(
        status.success(),
        "the host exits cleanly on SIGTERM: {status}"
    );
    Ok(())
}

/// "Writing handlers in Python" and "... in JavaScript": each handler
/// saved where the README says, built with the command it gives (the
/// toolchain `cargo xtask` installs under `target/lang`), deployed with the
/// CLI to a running host, and answering the commands shown, one section
/// after the other on one host.
#[test]
fn the_readme_python_and_javascript_handlers_build_deploy_and_answer_as_written()
-> anyhow::Result<()> {
    let (files, steps) = read(
        &[
            "Writing handlers in Python",
            "Writing handlers in JavaScript",
        ],
        &["python", "js"],
    )?;
    assert_eq!(files.len(), 2, "a handler in each language");
    assert!(
        steps.iter().all(|s| !s.expected.is_empty()),
        "every step says what it prints"
    );
    // A clone, with the toolchains installed (by the tests' own build of
    // the example components, as `cargo xtask components --lang all` would)
    // and the handlers saved in it.
    crate::languages::language_component("bank_py");
    crate::languages::language_component("bank_js");
    let dir = tempfile::tempdir()?;
    let root = support::root();
    for tree in ["wit", "sdk/python/cqrs_wasi", "sdk/js"] {
        copy_tree(&root.join(tree), &dir.path().join(tree))?;
    }
    // The host serves the example bank, as `cargo xtask serve` does.
    let components = dir.path().join("target/components/wasm32-wasip2/component");
    std::fs::create_dir_all(&components)?;
    std::fs::write(components.join("bank.wasm"), support::component("bank"))?;
    std::os::unix::fs::symlink(root.join("target/lang"), dir.path().join("target/lang"))?;
    for file in &files {
        let path = dir.path().join(&file.path);
        std::fs::create_dir_all(path.parent().context("a file in a directory")?)?;
        std::fs::write(path, &file.text)?;
    }

    let host = serve(dir.path())?;
    run(&steps, dir.path(), &host)?;
    let status = host.stop()?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// Copies the files under `from` to `to`, leaving out what builds write
/// there.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "__pycache__" || name == "node_modules" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}
