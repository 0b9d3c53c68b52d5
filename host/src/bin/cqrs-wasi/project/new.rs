//! `cqrs-wasi new`: writes a handler project from the templates in
//! `templates/`, one directory per language, after checking every name it
//! is given as the host would (a scaffold whose stream names the host
//! refuses would only fail later, at its first command).
//!
//! A template holds `{{placeholder}}`s, replaced by [`render`]; the names
//! that fill them are checked to hold nothing a Rust, Python, JavaScript,
//! TOML or Markdown file would read as syntax.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use cqrs_wasi_host::model::{Domain, EntityType, InstanceKey, NameKind, validate_name};

use super::{Lang, check_sdk};

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The project's directory, made if missing (it must be empty). Its last
    /// part names the crate and the component.
    path: PathBuf,
    /// The domain of the streams the handler serves: `Shop`, `Retail.Shop`.
    #[arg(long)]
    domain: String,
    /// The entity type of those streams: `Order`.
    #[arg(long)]
    entity: String,
    /// The language of the handlers.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The cqrs-wasi clone to build with, as a path dependency (Rust) or in
    /// cqrs-wasi.toml (Python, JavaScript). Default: the clone this binary
    /// was built from, so that the SDK matches the host.
    #[arg(long, conflicts_with = "git")]
    sdk: Option<PathBuf>,
    /// Depend on the Rust SDK as a git dependency on this repository URL
    /// instead (a `file:///path/to/clone` URL too); Rust only.
    #[arg(long)]
    git: Option<String>,
    /// With --git: the commit (or tag) to build with.
    #[arg(long, requires = "git")]
    rev: Option<String>,
}

/// The clone this binary was built from (`cargo install --path host` builds
/// it in place), the default SDK: its SDK speaks the WIT package version
/// this host serves.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The toolchain pin the workspace builds with, for projects whose SDK
/// clone has none to copy (a git dependency).
const TOOLCHAIN: &str = include_str!("../../../../../rust-toolchain.toml");

/// Rust names a scaffold must not define at its top level: what it imports
/// from the SDK and serde, and the prelude's names it uses.
const TAKEN_RUST_NAMES: &[&str] = &[
    "CommandContext",
    "CommandError",
    "CommandHandler",
    "Projection",
    "RecordedEvent",
    "Serialize",
    "Deserialize",
    "Debug",
    "Default",
    "PartialEq",
    "String",
    "Vec",
    "Result",
    "Ok",
    "Err",
    "Self",
];

/// Names cargo refuses for a package, or that would clash with the SDK.
const TAKEN_CRATE_NAMES: &[&str] = &[
    "cqrs-wasi",
    "cqrs_wasi",
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "proc-macro",
    "self",
    "super",
    "crate",
];

/// The names a scaffold is written with, each checked.
#[derive(Debug)]
struct Names {
    domain: Domain,
    entity: EntityType,
    /// The entity type as a type name in the generated code: `Order`.
    ident: String,
    /// The crate's and the component's name.
    name: String,
    /// The instance key the examples use.
    key: InstanceKey,
}

impl Names {
    fn check(args: &NewArgs) -> anyhow::Result<Names> {
        let domain = Domain::new(&args.domain)?;
        let entity = EntityType::new(&args.entity)?;
        let shown = entity.as_str();
        let ident = type_name(shown).map_err(|reason| {
            anyhow::anyhow!(
                "entity type {shown:?}: {reason} (the generated code names its types after it)"
            )
        })?;
        if args.lang == Lang::Rust {
            let defined = [
                ident.clone(),
                format!("{ident}Command"),
                format!("{ident}Event"),
                format!("{ident}Summary"),
                format!("{ident}SummaryState"),
            ];
            if let Some(taken) = defined
                .iter()
                .find(|d| TAKEN_RUST_NAMES.contains(&d.as_str()))
            {
                bail!(
                    "entity type {shown:?} would make the generated code define {taken}, a name it already uses; choose another entity type"
                );
            }
        }
        let name = project_name(&args.path, args.lang)?;
        let key = InstanceKey::new(format!("{}-1", entity.to_ascii_lowercase()))
            .or_else(|_| InstanceKey::new("key-1"))?;
        Ok(Names {
            domain,
            entity,
            ident,
            name,
            key,
        })
    }
}

/// `order-line` → `OrderLine`: the parts between `-` and `_`, each
/// capitalised.
fn type_name(entity: &str) -> Result<String, &'static str> {
    let ident: String = entity
        .split(['-', '_'])
        .flat_map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect();
    if !ident.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("it must start with a letter");
    }
    Ok(ident)
}

/// The crate's and component's name: the directory's last part.
fn project_name(path: &Path, lang: Lang) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not end in a name", path.display()))?;
    validate_name(NameKind::ComponentName, name)
        .with_context(|| format!("the directory's name {name:?} names the component"))?;
    if lang == Lang::Rust {
        anyhow::ensure!(
            name.starts_with(|c: char| c.is_ascii_alphabetic()),
            "the directory's name {name:?} names the crate, so it must start with a letter"
        );
        anyhow::ensure!(
            !TAKEN_CRATE_NAMES.contains(&name),
            "the directory's name {name:?} names the crate, and cargo or the SDK already uses that name"
        );
    }
    Ok(name.to_owned())
}

/// Where the Rust SDK comes from.
#[derive(Debug)]
enum Source {
    /// A clone on this machine.
    Path(PathBuf),
    /// A git repository, at a revision or its default branch's head.
    Git { url: String, rev: Option<String> },
}

pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    let names = Names::check(&args)?;
    let dir = &args.path;
    if dir.exists() {
        anyhow::ensure!(
            dir.is_dir(),
            "{} exists and is not a directory",
            dir.display()
        );
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{} exists and is not empty; `new` writes a project only into a new or empty directory",
            dir.display()
        );
    }
    let source = match (&args.git, &args.sdk) {
        (Some(url), _) => {
            anyhow::ensure!(
                args.lang == Lang::Rust,
                "--git is for Rust projects: a Python or JavaScript project is built with a clone's helpers and toolchain (--sdk)"
            );
            Source::Git {
                url: url.clone(),
                rev: args.rev.clone(),
            }
        }
        (None, Some(path)) => Source::Path(check_sdk(path)?),
        (None, None) => Source::Path(check_sdk(Path::new(BUILT_FROM)).context(
            "the clone this binary was built from is gone: pass --sdk PATH (a cqrs-wasi clone) or --git URL",
        )?),
    };
    let files = files(&names, args.lang, &source)?;
    for (path, contents) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let lang = match args.lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    let test = match args.lang {
        Lang::Rust => "cargo test".to_owned(),
        Lang::Python => format!(
            "PYTHONPATH={}:src python3 -m unittest discover -s tests",
            sdk_python_path(&source)
        ),
        Lang::Js => "npm test".to_owned(),
    };
    println!(
        "created {}: the {}/{} handler in {lang}, with the SDK {}\n\nnext:\n  cd {}\n  {test:<22}# its rules, natively\n  cqrs-wasi dev         # serve it on 127.0.0.1:8080; each save rebuilds it and swaps it in",
        dir.display(),
        names.domain,
        names.entity,
        match &source {
            Source::Path(path) => format!("at {}", path.display()),
            Source::Git { url, .. } => format!("from {url}"),
        },
        shell_word(&dir.display().to_string()),
    );
    Ok(())
}

/// The files of a project: each path (relative to its directory) and text.
fn files(names: &Names, lang: Lang, source: &Source) -> anyhow::Result<Vec<(String, String)>> {
    let sdk = match source {
        Source::Path(path) => Some(path.display().to_string()),
        Source::Git { .. } => None,
    };
    let mut values: Vec<(&str, String)> = vec![
        ("domain", names.domain.to_string()),
        ("entity", names.entity.to_string()),
        ("Entity", names.ident.clone()),
        ("name", names.name.clone()),
        ("lib", names.name.replace('-', "_")),
        ("key", names.key.to_string()),
        ("sdk", sdk.clone().unwrap_or_default()),
        ("sdk_toml", toml_string(sdk.as_deref().unwrap_or_default())),
        ("sdk_python_path", sdk_python_path(source)),
    ];
    macro_rules! template {
        ($lang:literal, $file:literal) => {
            include_str!(concat!("templates/", $lang, "/", $file, ".tmpl"))
        };
    }
    let files: Vec<(&str, &str)> = match lang {
        Lang::Rust => {
            let (dependency, whence) = match source {
                Source::Path(path) => (
                    format!(
                        "cqrs-wasi = {{ path = {} }}",
                        toml_string(&path.display().to_string())
                    ),
                    format!(
                        "at `{}` (a path dependency in `Cargo.toml`)",
                        path.display()
                    ),
                ),
                Source::Git { url, rev } => (
                    match rev {
                        Some(rev) => format!(
                            "cqrs-wasi = {{ git = {}, rev = {} }}",
                            toml_string(url),
                            toml_string(rev)
                        ),
                        None => format!("cqrs-wasi = {{ git = {} }}", toml_string(url)),
                    },
                    format!("from `{url}` (a git dependency in `Cargo.toml`)"),
                ),
            };
            values.push(("sdk_dependency", dependency));
            values.push(("sdk_where", whence));
            vec![
                ("Cargo.toml", template!("rust", "Cargo.toml")),
                ("src/lib.rs", template!("rust", "lib.rs")),
                ("README.md", template!("rust", "README.md")),
                (".gitignore", template!("rust", "gitignore")),
            ]
        }
        Lang::Python => vec![
            ("cqrs-wasi.toml", template!("python", "cqrs-wasi.toml")),
            ("src/app.py", template!("python", "app.py")),
            ("src/domain.py", template!("python", "domain.py")),
            (
                "tests/test_domain.py",
                template!("python", "test_domain.py"),
            ),
            ("README.md", template!("python", "README.md")),
            (".gitignore", template!("python", "gitignore")),
        ],
        Lang::Js => vec![
            ("cqrs-wasi.toml", template!("js", "cqrs-wasi.toml")),
            ("package.json", template!("js", "package.json")),
            ("src/app.js", template!("js", "app.js")),
            ("src/domain.js", template!("js", "domain.js")),
            ("test/domain.test.js", template!("js", "domain.test.js")),
            ("test/wit-stubs.js", template!("js", "wit-stubs.js")),
            ("README.md", template!("js", "README.md")),
            (".gitignore", template!("js", "gitignore")),
        ],
    };
    let mut out = files
        .into_iter()
        .map(|(path, template)| Ok((path.to_owned(), render(template, &values)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match (lang, source) {
        (Lang::Rust, Source::Path(sdk)) => {
            // The clone's own pin, so that the project builds with the
            // toolchain its SDK is tested with.
            let pin = std::fs::read_to_string(sdk.join("rust-toolchain.toml"))
                .unwrap_or_else(|_| TOOLCHAIN.to_owned());
            out.push(("rust-toolchain.toml".to_owned(), toolchain_file(&pin)));
        }
        (Lang::Rust, Source::Git { .. }) => {
            out.push(("rust-toolchain.toml".to_owned(), toolchain_file(TOOLCHAIN)));
        }
        (Lang::Js, Source::Path(sdk)) => {
            // ComponentizeJS resolves imports only below the project, so
            // the helpers are copied in (and refreshed by each build).
            let helpers = sdk.join(super::build::JS_HELPERS);
            let text = std::fs::read_to_string(&helpers)
                .with_context(|| format!("cannot read {}", helpers.display()))?;
            out.push((super::build::JS_HELPERS_COPY.to_owned(), text));
        }
        (_, Source::Git { .. }) | (Lang::Python, Source::Path(_)) => {}
    }
    Ok(out)
}

fn toolchain_file(pin: &str) -> String {
    format!(
        "# The toolchain the cqrs-wasi SDK is built and tested with, and the\n\
         # wasm32-wasip2 target components are built for (copied by `cqrs-wasi new`).\n{pin}"
    )
}

/// The SDK's Python helpers, as a shell word for a `PYTHONPATH`.
fn sdk_python_path(source: &Source) -> String {
    match source {
        Source::Path(path) => shell_word(&path.join("sdk/python").display().to_string()),
        Source::Git { .. } => String::new(),
    }
}

/// `template` with each `{{key}}` replaced by its value. A placeholder left
/// over is a mistake in a template, reported rather than written.
fn render(template: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut text = template.to_owned();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = text.find("{{") {
        let rest = &text[start..];
        let end = rest.find("}}").map_or(rest.len(), |end| end + 2);
        bail!("a template has no value for {}", &rest[..end]);
    }
    Ok(text)
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as one word of a POSIX shell command line.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_types_become_type_names() {
        assert_eq!(type_name("Order"), Ok("Order".to_owned()));
        assert_eq!(type_name("order-line_item"), Ok("OrderLineItem".to_owned()));
        assert!(type_name("3D").is_err());
        assert!(type_name("-").is_err());
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error() {
        let values = [("a", "x".to_owned())];
        assert_eq!(render("{{a}}-{{a}}", &values).unwrap(), "x-x");
        let err = render("{{a}} {{b}}", &values).unwrap_err();
        assert_eq!(err.to_string(), "a template has no value for {{b}}");
    }

    #[test]
    fn strings_are_quoted_for_toml_and_the_shell() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
        assert_eq!(shell_word("/srv/cqrs-wasi"), "/srv/cqrs-wasi");
        assert_eq!(shell_word("/my dir/it's"), r#"'/my dir/it'\''s'"#);
    }
}
