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

/// The commands of the `sh` blocks in the README's [`SECTIONS`], each
/// followed by its `# ⇒` line.
fn tour() -> anyhow::Result<Vec<Step>> {
    let readme = std::fs::read_to_string(support::root().join("README.md"))?;
    let sections: Vec<&str> = readme
        .split("\n## ")
        .filter(|s| SECTIONS.iter().any(|title| s.starts_with(title)))
        .collect();
    anyhow::ensure!(
        sections.len() == SECTIONS.len(),
        "README lacks one of {SECTIONS:?}"
    );
    let mut steps = Vec::new();
    let mut in_block = false;
    for line in sections.iter().flat_map(|section| section.lines()) {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            line if in_block => {
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
            _ => {}
        }
    }
    Ok(steps)
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
    let steps = tour()?;
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
    let address = host.address().to_owned();
    for step in &steps {
        let command = step
            .command
            .replace("localhost:8080", &address)
            .replace("./target/debug/cqrs-wasi", support::BINARY);
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(dir.path())
            .env("CQRS_WASI_URL", format!("http://{address}"))
            .output()?;
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            printed.contains(&step.expected),
            "`{}` printed:\n{printed}\nwhich lacks: {}",
            step.command,
            step.expected
        );
    }

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
