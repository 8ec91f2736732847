//! `tapedeck serve` for the end-to-end tests: the same service, started as its own
//! process so tests can run several, kill one, and restart Redis under them.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: tapedeck::serve::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tapedeck::serve::run_with(cli.serve, std::sync::Arc::new(tapedeck_tests::ffmpeg::FfmpegConverter))
}
