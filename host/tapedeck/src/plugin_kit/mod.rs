//! `tapedeck plugin`: the plugin author's kit — the WIT this binary was built with
//! (`wit`), a new project that builds out of the box (`new`), and the conformance suite
//! (`check`, which `publish` runs too at its quick depth).

pub mod bounded;
pub mod check;
mod dev;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

/// The WIT of `tapedeck:plugin@0.1.0`, as built into this binary.
pub const WIT: &[(&str, &str)] = &[
    ("io.wit", include_str!("../../../../wit/io.wit")),
    (
        "converter.wit",
        include_str!("../../../../wit/converter.wit"),
    ),
    ("notifier.wit", include_str!("../../../../wit/notifier.wit")),
    ("auth.wit", include_str!("../../../../wit/auth.wit")),
];

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print the WIT this binary was built with, or write it into a folder.
    Wit {
        /// Write io.wit, converter.wit, notifier.wit and auth.wit into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Start a plugin project that builds out of the box and passes `plugin check`.
    New {
        /// What it implements (an auth stage has no template: start from the built-in
        /// one, components/auth in the Tapedeck repository).
        kind: TemplateKind,
        /// Its name: lowercase letters, digits and `-`, starting with a letter.
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run one call of a component locally and print what it did: a notifier composes an
    /// event (its messages as JSON; nothing is sent), a converter converts INPUT to
    /// OUTPUT (as `tapedeck convert --plugin`).
    Run(RunArgs),
    /// Watch a project and, on every save, build it (./build.sh), run the quick check,
    /// publish it to a running service and activate it for a tenant (or everyone),
    /// waiting until every process runs it.
    Dev(DevArgs),
    /// Run the conformance suite on a component: exports and imports, golden cases,
    /// limits, determinism. Exit status 1 if any case fails.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        #[arg(long, value_enum)]
        stage: Kind,
        /// The report as JSON (for CI).
        #[arg(long)]
        json: bool,
        /// Skip the hour-long input (what publishing runs).
        #[arg(long)]
        quick: bool,
        /// Your own cases too, after the suite's: a converter converts every file in DIR
        /// (`bad-*` ones must be refused with the typed error, the others become an MP3
        /// of their length), a notifier composes every event `DIR/*.json` (as `plugin
        /// run --event`) into well-formed messages.
        #[arg(long, value_name = "DIR")]
        cases: Option<PathBuf>,
        /// Where compiled components are kept between checks (and `convert` runs),
        /// keyed by the component's digest and the engine (default:
        /// $XDG_CACHE_HOME/tapedeck, else ~/.cache/tapedeck; a service's is
        /// DATA_DIR/plugin-cache). It must belong to you; it is made private (0700):
        /// its files are loaded as machine code. The least recently used go past 2 GiB.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// What `plugin run` runs.
#[derive(Debug, Args)]
struct RunArgs {
    /// The component (.wasm).
    file: PathBuf,
    #[arg(long, value_enum)]
    stage: TemplateKind,
    /// A converter's input (an MP4/M4A/MOV file).
    #[arg(required_if_eq("stage", "converter"))]
    input: Option<PathBuf>,
    /// Where a converter writes the MP3 (only if it succeeds).
    #[arg(required_if_eq("stage", "converter"))]
    output: Option<PathBuf>,
    /// A notifier's event: a JSON file with any field of the WIT `job-event` (snake_case,
    /// `status`: `done` or `failed`) [default: a finished job of talk.mp4 owned by
    /// owner@example.com].
    #[arg(long, value_name = "JSON")]
    event: Option<PathBuf>,
    /// A notifier's webhook URL (webhooks are off without one).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// A notifier's e-mail off.
    #[arg(long)]
    no_email: bool,
    /// Compiled-code cache, as `plugin check` [default: $XDG_CACHE_HOME/tapedeck or
    /// ~/.cache/tapedeck].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// What `plugin dev` works on.
#[derive(Debug, Args)]
struct DevArgs {
    /// The project (a folder with a build.sh that writes NAME.wasm into it).
    #[arg(default_value = ".")]
    dir: PathBuf,
    #[arg(long, value_enum)]
    stage: TemplateKind,
    /// Base URL of the deployment's API.
    #[arg(
        long,
        env = "TAPEDECK_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    server: url::Url,
    /// The operator token (as `tapedeck admin`).
    #[arg(
        long,
        env = "TAPEDECK_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: String,
    /// Activate for this tenant only (default: every tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// One round (build, check, publish, activate), then exit.
    #[arg(long)]
    once: bool,
    /// Compiled-code cache, as `plugin check`.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// How much compiled code `plugin check` keeps in its cache directory.
const CHECK_CACHE_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Converter,
    Notifier,
    Auth,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Converter => "converter",
            Kind::Notifier => "notifier",
            Kind::Auth => "auth",
        }
    }
}

/// The stages `plugin new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TemplateKind {
    Converter,
    Notifier,
}

impl From<TemplateKind> for Kind {
    fn from(kind: TemplateKind) -> Self {
        match kind {
            TemplateKind::Converter => Kind::Converter,
            TemplateKind::Notifier => Kind::Notifier,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
}

/// Runs `tapedeck plugin ...`.
pub fn run(args: PluginArgs) -> ExitCode {
    let result = match args.command {
        PluginCommand::Wit { out } => wit(out.as_deref()),
        PluginCommand::New {
            kind,
            name,
            lang,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            new_project(kind.into(), &name, lang, &dir)
        }
        PluginCommand::Dev(args) => user_cache_dir(args.cache_dir.clone()).and_then(|cache| {
            dev::Dev {
                dir: &args.dir,
                stage: Kind::from(args.stage).as_str(),
                server: &args.server,
                token: &args.token,
                tenant: args.tenant.as_deref(),
                cache_dir: &cache,
            }
            .run(args.once)
        }),
        PluginCommand::Run(args) => match (args.stage, args.input, args.output) {
            (TemplateKind::Notifier, _, _) => run::notifier(
                &args.file,
                args.event.as_deref(),
                args.webhook_url,
                args.no_email,
                args.cache_dir,
            ),
            (TemplateKind::Converter, Some(input), Some(output)) => {
                crate::cli::convert_with(&args.file, input, output, args.cache_dir)
            }
            (TemplateKind::Converter, ..) => unreachable!("clap requires INPUT and OUTPUT"),
        },
        PluginCommand::Check {
            file,
            stage,
            json,
            quick,
            cases,
            cache_dir,
        } => return check_file(&file, stage, json, quick, cases.as_deref(), cache_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn wit(out: Option<&Path>) -> anyhow::Result<()> {
    match out {
        Some(dir) => write_wit(dir),
        None => {
            for (name, text) in WIT {
                println!("// ---- {name} ----\n{text}");
            }
            Ok(())
        }
    }
}

fn write_wit(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in WIT {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn check_file(
    file: &Path,
    stage: Kind,
    json: bool,
    quick: bool,
    cases: Option<&Path>,
    cache_dir: Option<PathBuf>,
) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let cache = match user_cache_dir(cache_dir) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let depth = if quick {
        check::Depth::Quick
    } else {
        check::Depth::Full
    };
    let policy = tapedeck_runtime::LimitPolicy::default();
    // People see each case as it ends (a full check of a slow converter takes minutes);
    // `--json` prints the report once, at the end.
    // Written without `print!`, which panics once a reader (`| head`) has gone.
    let write = |text: &str| {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
    };
    let mut print = |line: &str| {
        if !json {
            write(line);
        }
    };
    // The author's own builds: an edited component reuses the unchanged functions' code.
    let options = check::Options {
        depth,
        incremental: true,
        cases,
    };
    let result = check::check(&cache, stage.as_str(), &bytes, &policy, options, &mut print);
    if let Err(e) = tapedeck_runtime::prune_compile_cache(&cache, CHECK_CACHE_BYTES) {
        eprintln!(
            "warning: pruning the compile cache {}: {e}",
            cache.display()
        );
    }
    match result {
        Ok(report) => {
            if json {
                let text = serde_json::to_string_pretty(&report).expect("reports serialize");
                write(&format!("{text}\n"));
            } else {
                write(&report.footer());
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The compile cache of the author's commands (`plugin check`, `convert`): `given`, or
/// `$XDG_CACHE_HOME/tapedeck`, else `~/.cache/tapedeck` — one cache, so converting with a
/// plugin after checking it compiles nothing. Made private to this user (0700); one that
/// another user owns is refused, untouched: what it holds is loaded as machine code.
pub(crate) fn user_cache_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let dir = match given {
        Some(dir) => dir,
        None => {
            let absolute = |var: &str| {
                std::env::var_os(var)
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
            };
            absolute("XDG_CACHE_HOME")
                .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
                .context("no compile cache: set HOME, XDG_CACHE_HOME or --cache-dir")?
                .join("tapedeck")
        }
    };
    private_dir(&dir).with_context(|| {
        format!(
            "compile cache {}: choose another with --cache-dir",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// Creates `dir` (and missing parents) private to this user, or makes an existing one of
/// this user's so, as a service's data dir; stricter than a data dir (which may be a
/// volume someone else mounted), refuses one another user owns.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !dir.exists() {
        crate::serve::private_dir(dir)?;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(dir)?.uid();
    if owner != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {owner}, not by you (uid {me})"
        )));
    }
    crate::serve::private_dir(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The files of a new project: path within it, contents.
fn template(kind: Kind, name: &str, lang: Lang) -> anyhow::Result<Vec<(String, String)>> {
    let snake = name.replace('-', "_");
    let files: Vec<(&str, String)> = match (kind, lang) {
        (Kind::Notifier, Lang::Python) => vec![
            (
                "app.py",
                include_str!("../../../../examples/plugins/notifier-python/app.py").into(),
            ),
            (
                "pyproject.toml",
                include_str!("../../../../examples/plugins/notifier-python/pyproject.toml")
                    .replace("name = \"notifier-python\"", &format!("name = \"{name}\"")),
            ),
            (
                "requirements.txt",
                include_str!("../../../../examples/plugins/notifier-python/requirements.txt")
                    .into(),
            ),
            (
                "build.sh",
                include_str!("templates/python-build.sh").replace("NAME", name),
            ),
            (".gitignore", ".venv/\n__pycache__/\n*.wasm\n".into()),
        ],
        (Kind::Notifier, Lang::Js) => {
            let relocate = |s: &str| {
                s.replace("notifier-js", name)
                    .replace("${OUT_DIR:-../../../target/plugins}", "${OUT_DIR:-.}")
                    .replace("${WIT_DIR:-../../../wit}", "${WIT_DIR:-wit}")
            };
            vec![
                (
                    "notifier.js",
                    include_str!("../../../../examples/plugins/notifier-js/notifier.js").into(),
                ),
                (
                    "package.json",
                    relocate(include_str!(
                        "../../../../examples/plugins/notifier-js/package.json"
                    )),
                ),
                (
                    "package-lock.json",
                    relocate(include_str!(
                        "../../../../examples/plugins/notifier-js/package-lock.json"
                    )),
                ),
                (
                    "build.sh",
                    include_str!("templates/js-build.sh").replace("NAME", name),
                ),
                (".gitignore", "node_modules/\n*.wasm\n".into()),
            ]
        }
        (Kind::Notifier, Lang::Rust) => vec![
            (
                "Cargo.toml",
                include_str!("templates/rust-notifier/Cargo.toml").replace("NAME", name),
            ),
            // The built-in notifier itself: the same messages, and its tests.
            (
                "src/lib.rs",
                include_str!("../../../../components/notifier/src/lib.rs").into(),
            ),
            (
                "src/component.rs",
                include_str!("../../../../components/notifier/src/component.rs").into(),
            ),
            (
                "build.sh",
                include_str!("templates/rust-build.sh")
                    .replace("SNAKE", &snake)
                    .replace("NAME", name),
            ),
            (".gitignore", "target/\n*.wasm\n".into()),
        ],
        (Kind::Converter, Lang::Rust) => {
            vec![
                (
                    "Cargo.toml",
                    include_str!("templates/rust-converter/Cargo.toml").replace("NAME", name),
                ),
                (
                    "src/lib.rs",
                    include_str!("templates/rust-converter/lib.rs").into(),
                ),
                (
                    "build.sh",
                    include_str!("templates/rust-converter-build.sh")
                        .replace("SNAKE", &snake)
                        .replace("NAME", name),
                ),
                (".gitignore", "target/\n*.wasm\n.tapedeck-src\n".into()),
            ]
        }
        (Kind::Auth, _) => unreachable!("`plugin new` offers no auth template"),
        (Kind::Converter, _) => anyhow::bail!(
            "converter templates are in Rust only (--lang rust): a converter is built on \
             Tapedeck's converter core (symphonia and LAME), a Rust crate"
        ),
    };
    let readme = include_str!("templates/README.md")
        .replace("NAME", name)
        .replace("KIND", kind.as_str());
    let mut out: Vec<(String, String)> =
        files.into_iter().map(|(p, s)| (p.to_owned(), s)).collect();
    out.push(("README.md".into(), readme));
    Ok(out)
}

/// The Tapedeck source a Rust converter project builds the core from:
/// `TAPEDECK_SRC`, or the checkout this binary was built from.
fn tapedeck_source() -> anyhow::Result<String> {
    let src = std::env::var_os("TAPEDECK_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let src = src.canonicalize().map_err(|_| {
        anyhow::anyhow!(
            "a converter project builds on Tapedeck's converter core: set TAPEDECK_SRC to a \
             Tapedeck source checkout ({} is not one)",
            src.display()
        )
    })?;
    anyhow::ensure!(
        src.join("components/converter/src/host_glue.rs").is_file(),
        "{} is not a Tapedeck source checkout (no components/converter); set TAPEDECK_SRC",
        src.display()
    );
    src.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the Tapedeck source path is not UTF-8"))
}

fn new_project(kind: Kind, name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_name(name),
        "{name:?} is not a plugin name: lowercase letters, digits and -, starting with a letter, at most 64"
    );
    let files = template(kind, name, lang)?;
    // A converter builds on the core's source: found before anything is written.
    let source = match kind {
        Kind::Converter => Some(tapedeck_source()?),
        _ => None,
    };
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    write_wit(&dir.join("wit"))?;
    if let Some(source) = source {
        // Where build.sh finds the core when TAPEDECK_SRC is not set (not in Cargo.toml:
        // the project builds from wherever TAPEDECK_SRC points, here or elsewhere).
        std::fs::write(dir.join(".tapedeck-src"), format!("{source}\n"))?;
    }
    println!(
        "created {} ({} {}, {:?}); next:\n  cd {}\n  ./build.sh\n  tapedeck plugin check {name}.wasm --stage {}",
        dir.display(),
        kind.as_str(),
        name,
        lang,
        dir.display(),
        kind.as_str()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("speech-notes2"));
        assert!(!valid_name("2fast"));
        assert!(!valid_name("Upper"));
        assert!(!valid_name("../etc"));
    }

    #[test]
    fn templates_carry_the_name_and_nothing_of_the_example() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = template(Kind::Notifier, "my-notes", lang).unwrap();
            let all: String = files.iter().map(|(_, s)| s.as_str()).collect();
            assert!(all.contains("my-notes"), "{lang:?}");
            assert!(!all.contains("notifier-js"), "{lang:?}");
            assert!(!all.contains("../../../"), "{lang:?}: paths of the example");
        }
        assert!(template(Kind::Converter, "x", Lang::Python).is_err());
        let converter = template(Kind::Converter, "my-conv", Lang::Rust).unwrap();
        let all: String = converter.iter().map(|(_, s)| s.as_str()).collect();
        assert!(
            all.contains("/components/converter") && !all.contains("SRC/"),
            "{all}"
        );
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let checkout = checkout.canonicalize().unwrap();
        assert!(
            !all.contains(checkout.to_str().unwrap()),
            "no path of this checkout in the project: {all}"
        );
    }
}
