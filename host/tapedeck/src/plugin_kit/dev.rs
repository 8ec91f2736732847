//! `tapedeck plugin dev`: the author's inner loop against a running service. Watches a
//! project's sources; on every save it runs the project's `./build.sh`, the quick check
//! (locally, with the per-function compile cache), then publishes the component and
//! activates it for one tenant (or everyone), and waits until every process runs it —
//! what `spin watch` and `wash dev` give, on a real deployment's registry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

/// Folders a build writes (or installs into), never sources.
const NOT_SOURCES: &[&str] = &["target", "node_modules", ".venv", "__pycache__", ".git"];

/// The newest modification time and the count of the project's source files: a save, a
/// new file or a deleted one changes it.
fn sources_stamp(dir: &Path) -> (Option<SystemTime>, usize) {
    let mut newest = None;
    let mut count = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !NOT_SOURCES.contains(&name.as_ref()) {
                    stack.push(path);
                }
            } else if !name.ends_with(".wasm") && !name.starts_with('.') {
                count += 1;
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    (newest, count)
}

/// The component the build wrote: the newest `.wasm` in the project folder.
fn built_component(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
        .with_context(|| format!("the build wrote no .wasm into {}", dir.display()))
}

/// What one round needs.
pub struct Dev<'a> {
    pub dir: &'a Path,
    pub stage: &'a str,
    pub server: &'a url::Url,
    pub token: &'a str,
    pub tenant: Option<&'a str>,
    pub cache_dir: &'a Path,
}

impl Dev<'_> {
    /// Build, check, publish, activate: one save's round. Prints its steps' times.
    pub fn round(&self) -> anyhow::Result<String> {
        let started = Instant::now();
        let status = Command::new("./build.sh")
            .current_dir(self.dir)
            .status()
            .with_context(|| format!("cannot run {}/build.sh", self.dir.display()))?;
        anyhow::ensure!(status.success(), "build.sh failed ({status})");
        let file = built_component(self.dir)?;
        let built = started.elapsed();
        let bytes = std::fs::read(&file)?;
        let policy = tapedeck_runtime::LimitPolicy::default();
        let report = super::check::check(
            self.cache_dir,
            self.stage,
            &bytes,
            &policy,
            super::check::Options {
                depth: super::check::Depth::Quick,
                incremental: true,
                cases: None,
            },
            &mut |_| {},
        )
        .map_err(anyhow::Error::msg)?;
        if let Some(why) = report.refusal() {
            anyhow::bail!("the quick check refuses it: {why}");
        }
        for failure in report.failures() {
            println!("dev: recorded (not refused): FAIL {failure}");
        }
        let checked = started.elapsed();
        let digest = crate::admin_cli::publish_and_activate(
            self.server,
            self.token,
            &file,
            self.stage,
            self.tenant,
            Duration::from_secs(10),
        )
        .map_err(anyhow::Error::msg)?;
        let total = started.elapsed();
        println!(
            "dev: {} {} active for {} in {:.1} s (build {:.1} s, check {:.1} s, publish and \
             activate {:.1} s)",
            self.stage,
            &digest[..12],
            self.tenant
                .map_or("every tenant".to_owned(), |t| format!("tenant {t}")),
            total.as_secs_f64(),
            built.as_secs_f64(),
            (checked - built).as_secs_f64(),
            (total - checked).as_secs_f64(),
        );
        Ok(digest)
    }

    /// A round now, then one per change of the sources (polled every 300 ms), until
    /// killed; a failed round is reported and the loop goes on. With `once`, one round,
    /// its outcome the result.
    pub fn run(&self, once: bool) -> anyhow::Result<()> {
        let mut seen = sources_stamp(self.dir);
        loop {
            match self.round() {
                Ok(_) if once => return Ok(()),
                Err(e) if once => return Err(e),
                Ok(_) => {}
                Err(e) => eprintln!("dev: {e:#}; waiting for the next change"),
            }
            loop {
                std::thread::sleep(Duration::from_millis(300));
                let now = sources_stamp(self.dir);
                if now != seen {
                    seen = now;
                    break;
                }
            }
        }
    }
}
