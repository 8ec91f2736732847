//! The `tapedeck` command line: `convert` one file locally, `serve` (the HTTP service,
//! see `crate::serve`), and the hidden `plugin-run` (the child side of subprocess
//! isolation) and `plugin-check-run` (publishing's check, `crate::plugin_kit::bounded`).

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use tapedeck_runtime::{
    ConvertOptions, Isolation, Mode, PluginRuntime, RunLimits, RuntimeConfig, Trim,
};

#[derive(Debug, Parser)]
#[command(
    name = "tapedeck",
    version,
    about = "Converts audio in MP4/M4A/MOV files to MP3 in a WebAssembly sandbox"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as JSON objects (one per line, with the span fields such as
    /// `request_id` and `job`) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TAPEDECK_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert one file to MP3.
    Convert(ConvertArgs),
    /// Run the HTTP service.
    Serve(Box<crate::serve::ServeArgs>),
    /// Manage the tenants of a running deployment over its operator API.
    Admin(crate::admin_cli::AdminArgs),
    /// The plugin author's kit: the WIT, new projects, the conformance suite.
    Plugin(crate::plugin_kit::PluginArgs),
    /// Run publishing's conformance check for a parent tapedeck process (internal): the
    /// component on stdin, the report as JSON on stdout.
    #[command(hide = true)]
    PluginCheckRun(crate::plugin_kit::bounded::ChildArgs),
    /// Run one plugin call for a parent tapedeck process (internal).
    #[command(hide = true)]
    PluginRun {
        #[arg(long)]
        artifact: PathBuf,
        #[arg(long)]
        request: String,
    },
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// The MP4/M4A/MOV file to convert.
    input: PathBuf,
    /// Where to write the MP3; written only if the conversion succeeds.
    #[arg(short, long)]
    output: PathBuf,
    /// Constant bitrate in kbit/s: 32..=320 at 32-48 kHz, 8..=160 at 16-24 kHz, 8..=64 at
    /// 8-12 kHz [default: by output rate and channels, 192 for 44.1 kHz stereo].
    #[arg(long, conflicts_with = "vbr")]
    bitrate: Option<u16>,
    /// Variable bitrate quality, 0 (best) ..= 9 (smallest).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    vbr: Option<u8>,
    /// Output sample rate in Hz (default: the source's, or the nearest MP3 rate).
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Downmix to one channel.
    #[arg(long)]
    mono: bool,
    /// Skip this many milliseconds at the start.
    #[arg(long, value_name = "MS")]
    trim_start: Option<u64>,
    /// Stop at this millisecond of the input.
    #[arg(long, value_name = "MS")]
    trim_end: Option<u64>,
    /// Use this converter component instead of the built-in one.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Linear memory limit of the converter, in MiB.
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u64>,
    /// CPU time limit of the conversion, in seconds.
    #[arg(long, value_name = "S")]
    cpu_seconds: Option<f64>,
    /// Output size limit, in MiB.
    #[arg(long, value_name = "MIB")]
    max_output: Option<u64>,
    /// Where the converter runs: a child process per run, or this process.
    #[arg(long, default_value_t = Isolation::Subprocess)]
    isolation: Isolation,
    /// Compiled-plugin cache [default: $XDG_CACHE_HOME/tapedeck or ~/.cache/tapedeck].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// Runs the command line; the exit code says whether it worked.
pub fn run(cli: Cli) -> ExitCode {
    // The one place logging is set up. `serve` is a service: `info` tells an operator what
    // it does; one-shot commands only warn. `RUST_LOG` overrides both. Colours only on
    // a terminal (journald and log files get plain text).
    let default_filter = match cli.command {
        Command::Serve(_) => "info,tower_http=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
    }
    let result = match cli.command {
        Command::Convert(args) => convert(args),
        Command::PluginRun { artifact, request } => {
            return tapedeck_runtime::run_runner_child(&artifact, &request);
        }
        Command::PluginCheckRun(args) => return crate::plugin_kit::bounded::run_child(args),
        Command::Serve(args) => crate::serve::run(*args, crate::components::DEFAULT_CONVERTER),
        Command::Admin(args) => return crate::admin_cli::run(args),
        Command::Plugin(args) => return crate::plugin_kit::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tapedeck: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tapedeck plugin run FILE --stage converter INPUT OUTPUT`: `convert` with the plugin
/// and the defaults.
pub(crate) fn convert_with(
    plugin: &Path,
    input: PathBuf,
    output: PathBuf,
    cache_dir: Option<PathBuf>,
) -> Result<()> {
    convert(ConvertArgs {
        input,
        output,
        bitrate: None,
        vbr: None,
        sample_rate: None,
        mono: false,
        trim_start: None,
        trim_end: None,
        plugin: Some(plugin.to_owned()),
        max_memory: None,
        cpu_seconds: None,
        max_output: None,
        isolation: Isolation::Subprocess,
        cache_dir,
    })
}

fn convert(args: ConvertArgs) -> Result<()> {
    args.check()?;
    let options = args.options();
    let limits = args.limits()?;
    let bytes = match &args.plugin {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?
        }
        None => crate::components::DEFAULT_CONVERTER.to_vec(),
    };
    let cache_dir = crate::plugin_kit::user_cache_dir(args.cache_dir.clone())?;
    let config = RuntimeConfig {
        isolation: args.isolation,
        incremental: true,
        ..RuntimeConfig::new(cache_dir)
            .context("cannot find this executable to run plugins with")?
    };
    let runtime = PluginRuntime::new(config)?;
    let plugin = runtime.load_converter(&bytes)?;

    let input =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let dir = match args.output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Written next to OUTPUT and renamed over it on success, so OUTPUT is never partial.
    // tempfile creates 0600 files; the MP3 should get the usual mode (umask applies).
    let partial = tempfile::Builder::new()
        .prefix(".tapedeck-")
        .suffix(".part")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;

    let bar = progress_bar();
    let summary = plugin.convert(
        &input,
        partial.as_file(),
        &options,
        &limits,
        &mut |fraction| {
            bar.set_position((fraction * 1000.0) as u64);
        },
    );
    bar.finish_and_clear();
    let summary = summary?;
    partial
        .persist(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "{}: {} ms, {} Hz, {} channel(s), {} bytes",
            args.output.display(),
            summary.duration_ms,
            summary.output_sample_rate,
            summary.output_channels,
            summary.output_bytes
        );
    }
    Ok(())
}

impl ConvertArgs {
    /// The converter's own rules (tapedeck-mp3-rules), before anything runs.
    fn check(&self) -> Result<()> {
        if let Some(rate) = self.sample_rate {
            tapedeck_mp3_rules::check_sample_rate(rate).map_err(anyhow::Error::msg)?;
        }
        if let Some(kbps) = self.bitrate {
            tapedeck_mp3_rules::check_bitrate(kbps, self.sample_rate)
                .map_err(anyhow::Error::msg)?;
        }
        if let Some(quality) = self.vbr {
            tapedeck_mp3_rules::check_vbr_quality(quality).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    fn options(&self) -> ConvertOptions {
        let defaults = ConvertOptions::default();
        let mode = match (self.bitrate, self.vbr) {
            (_, Some(quality)) => Mode::Vbr(quality),
            (Some(kbps), None) => Mode::Cbr(kbps),
            (None, None) => defaults.mode,
        };
        let trim = (self.trim_start.is_some() || self.trim_end.is_some()).then(|| Trim {
            start_ms: self.trim_start.unwrap_or(0),
            end_ms: self.trim_end,
        });
        ConvertOptions {
            mode,
            sample_rate: self.sample_rate,
            mono: self.mono,
            trim,
        }
    }

    fn limits(&self) -> Result<RunLimits> {
        let mut limits = RunLimits::default();
        if let Some(mib) = self.max_memory {
            limits.max_memory_bytes = mib
                .checked_mul(1 << 20)
                .context("--max-memory is too large")?;
        }
        if let Some(mib) = self.max_output {
            limits.max_output_bytes = mib
                .checked_mul(1 << 20)
                .context("--max-output is too large")?;
        }
        if let Some(seconds) = self.cpu_seconds {
            limits.cpu_time = Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--cpu-seconds must be a positive number")?;
        }
        Ok(limits)
    }
}

/// A bar on stderr when someone watches it; hidden otherwise.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1000);
    let style = ProgressStyle::with_template("{bar:40} {percent:>3}% {elapsed}")
        .expect("the template is valid");
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ConvertArgs {
        let cli = Cli::try_parse_from(
            [&["tapedeck", "convert", "in.mp4", "-o", "out.mp3"], args].concat(),
        )
        .unwrap();
        match cli.command {
            Command::Convert(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn options_default_to_192_kbps_cbr() {
        assert_eq!(parse(&[]).options(), ConvertOptions::default());
    }

    #[test]
    fn options_follow_the_flags() {
        let options = parse(&[
            "--vbr",
            "2",
            "--mono",
            "--sample-rate",
            "22050",
            "--trim-end",
            "5000",
        ])
        .options();
        assert_eq!(options.mode, Mode::Vbr(2));
        assert!(options.mono);
        assert_eq!(options.sample_rate, Some(22050));
        assert_eq!(
            options.trim,
            Some(Trim {
                start_ms: 0,
                end_ms: Some(5000)
            })
        );
    }

    #[test]
    fn bitrate_and_vbr_conflict_and_are_range_checked() {
        let base = ["tapedeck", "convert", "in.mp4", "-o", "out.mp3"];
        assert!(
            Cli::try_parse_from([&base[..], &["--bitrate", "192", "--vbr", "2"]].concat()).is_err()
        );
        assert!(
            parse(&["--bitrate", "16"]).check().is_ok(),
            "16 kbps exists at 8-24 kHz"
        );
        assert!(
            parse(&["--bitrate", "16", "--sample-rate", "44100"])
                .check()
                .is_err()
        );
        assert!(parse(&["--bitrate", "100"]).check().is_err());
        assert!(parse(&["--sample-rate", "96000"]).check().is_err());
        assert!(Cli::try_parse_from([&base[..], &["--vbr", "10"]].concat()).is_err());
    }

    #[test]
    fn limits_take_mib_and_seconds() {
        let limits = parse(&[
            "--max-memory",
            "16",
            "--cpu-seconds",
            "1.5",
            "--max-output",
            "2",
        ])
        .limits()
        .unwrap();
        assert_eq!(limits.max_memory_bytes, 16 << 20);
        assert_eq!(limits.cpu_time, Duration::from_millis(1500));
        assert_eq!(limits.max_output_bytes, 2 << 20);
        assert!(parse(&["--cpu-seconds", "0"]).limits().is_err());
    }
}
