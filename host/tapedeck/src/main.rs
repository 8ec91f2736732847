use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tapedeck::cli::run(tapedeck::cli::Cli::parse())
}
