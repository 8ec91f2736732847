//! The `tapedeck` command line, built inside the test package so the end-to-end tests
//! can start it (`serve`, and the `plugin-run` children of the converter) as real
//! processes: several per test, killed or restarted at will.
//!
//! One addition for the test kit: `tapedeck-test-serve testkit-compile-built-ins DIR`
//! compiles the built-in components into the compile cache DIR with the runtimes `serve`
//! loads them with (`tapedeck_tests::seed_compile_cache`), so the test binaries need not
//! link the plugin runtime themselves.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let [_, command, dir] = args.as_slice()
        && command == "testkit-compile-built-ins"
    {
        return compile_built_ins(std::path::Path::new(dir));
    }
    tapedeck::cli::run(tapedeck::cli::Cli::parse())
}

fn compile_built_ins(dir: &std::path::Path) -> ExitCode {
    use tapedeck::components::{DEFAULT_AUTH, DEFAULT_CONVERTER, DEFAULT_NOTIFIER};
    use tapedeck::runtime::{Isolation, PluginRuntime, RuntimeConfig};
    let compiled = (|| -> Result<(), Box<dyn std::error::Error>> {
        // As `serve` does: auth and the notifier in one in-process runtime, the converter
        // in a runtime of its own for its child processes.
        let mut in_process = RuntimeConfig::new(dir)?;
        in_process.isolation = Isolation::InProcess;
        let in_process = PluginRuntime::new(in_process)?;
        in_process.load_auth(DEFAULT_AUTH)?;
        in_process.load_notifier(DEFAULT_NOTIFIER)?;
        PluginRuntime::new(RuntimeConfig::new(dir)?)?.load_converter(DEFAULT_CONVERTER)?;
        Ok(())
    })();
    match compiled {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "compiling the built-in components into {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
