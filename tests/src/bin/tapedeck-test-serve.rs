//! The `tapedeck` command line, built inside the test package so the end-to-end tests
//! can start it (`serve`, and the `plugin-run` children of the converter) as real
//! processes: several per test, killed or restarted at will.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tapedeck::cli::run(tapedeck::cli::Cli::parse())
}
