//! `make bench`: the converter in wasm (with its CPU limit enforced) against the same
//! code compiled natively and against ffmpeg, measured in one run on one input, plus the
//! plugin runtime's fixed costs and the guest's peak memory.
//!
//! Every figure is a median of `--runs` runs taken one after the other on an otherwise
//! idle machine; ratios divide medians measured in this same run, so a slower or faster
//! machine changes the seconds but not (much) the ratios.

mod dispatch;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use tapedeck::components::DEFAULT_CONVERTER;
use tapedeck::runtime::{ConvertOptions, Isolation, Mode, PluginRuntime, RunLimits, RuntimeConfig};

#[derive(Parser)]
#[command(about = "Tapedeck converter benchmark")]
struct Args {
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where generated inputs are kept between runs.
    #[arg(long, default_value = "bench/work")]
    work_dir: PathBuf,
    /// Skip the 60-minute memory measurement (it converts an hour of audio).
    #[arg(long)]
    skip_long: bool,
    /// Measure the cost of a dispatch through the fair scheduler instead (a
    /// redis-server of its own; see `dispatch.rs`).
    #[arg(long)]
    dispatch: bool,
}

/// The reference music: a real 213 s AAC-LC 44.1 kHz stereo song, looped to length.
const MUSIC: &str = "../shared/media/aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a";

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.runs >= 1, "--runs must be at least 1");
    if args.dispatch {
        return dispatch::run(args.runs);
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let ten = prepare_input(&args.work_dir, 10)?;
    let runner = runner_exe()?;

    println!("# Converter benchmark: 10-minute 44.1 kHz stereo AAC-LC MP4 -> 192 kbit/s CBR MP3");
    println!("runs per figure: {} (median)\n", args.runs);

    let ffmpeg = median(args.runs, || time_ffmpeg(&ten, &args.work_dir))?;
    let native = median(args.runs, || time_native(&ten))?;

    let limits = RunLimits {
        cpu_time: Duration::from_secs(120),
        ..RunLimits::default()
    };
    let cache = tempfile::tempdir()?;
    let subprocess = runtime(Isolation::Subprocess, cache.path(), &runner)?;
    let plugin = subprocess.load_converter(DEFAULT_CONVERTER)?;
    let wasm_rlimit = median(args.runs, || {
        time_wasm(&plugin, &ten, &args.work_dir, &limits)
    })?;
    let in_process = runtime(Isolation::InProcess, cache.path(), &runner)?;
    let epoch_plugin = in_process.load_converter(DEFAULT_CONVERTER)?;
    let wasm_epoch = median(args.runs, || {
        time_wasm(&epoch_plugin, &ten, &args.work_dir, &limits)
    })?;

    println!("| variant | median time | vs ffmpeg | vs native |");
    println!("|---|---|---|---|");
    for (name, t) in [
        ("ffmpeg -threads 1 -vn -c:a libmp3lame -b:a 192k", ffmpeg),
        ("same converter, native (x86_64)", native),
        ("wasm, subprocess + RLIMIT_CPU (default)", wasm_rlimit),
        ("wasm, in-process + epoch deadline", wasm_epoch),
    ] {
        println!(
            "| {name} | {:.2} s | {:.2}x | {:.2}x |",
            t.as_secs_f64(),
            ratio(t, ffmpeg),
            ratio(t, native)
        );
    }

    println!("\n## Plugin runtime costs");
    let compile_dir = tempfile::tempdir()?;
    let cold = {
        let rt = runtime(Isolation::Subprocess, compile_dir.path(), &runner)?;
        let start = Instant::now();
        rt.load_converter(DEFAULT_CONVERTER)?;
        start.elapsed()
    };
    let warm = median(args.runs.max(5), || {
        let rt = runtime(Isolation::Subprocess, compile_dir.path(), &runner)?;
        let start = Instant::now();
        rt.load_converter(DEFAULT_CONVERTER)?;
        Ok(start.elapsed())
    })?;
    println!("- compile (cold cache): {:.0} ms", cold.as_secs_f64() * 1e3);
    println!(
        "- load from the compile cache (restart): {:.2} ms",
        warm.as_secs_f64() * 1e3
    );
    let empty = args.work_dir.join("empty.mp4");
    File::create(&empty)?;
    for (name, p) in [("subprocess", &plugin), ("in-process", &epoch_plugin)] {
        let t = median(20, || time_fixed_cost(p, &empty, &args.work_dir))?;
        println!(
            "- per-run fixed cost, {name} (instantiate + call + error on an empty input): {:.3} ms",
            t.as_secs_f64() * 1e3
        );
    }

    println!("\n## Guest peak linear memory");
    let mut inputs = vec![(10, ten.clone())];
    if !args.skip_long {
        inputs.push((60, prepare_input(&args.work_dir, 60)?));
    }
    for (minutes, input) in inputs {
        let peak = peak_memory(&plugin, &input, &args.work_dir)?;
        println!(
            "- {minutes}-minute input: {:.2} MiB",
            peak as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn median(runs: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut times = (0..runs).map(|_| f()).collect::<Result<Vec<_>>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// `tapedeck` next to this benchmark binary (both are in target/release).
fn runner_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let runner = exe.with_file_name("tapedeck");
    ensure!(
        runner.exists(),
        "{} is missing: run `make build` first",
        runner.display()
    );
    Ok(runner)
}

fn runtime(isolation: Isolation, cache: &Path, runner: &Path) -> Result<PluginRuntime> {
    let mut config = RuntimeConfig::new(cache)?;
    config.isolation = isolation;
    config.runner_exe = runner.to_path_buf();
    Ok(PluginRuntime::new(config)?)
}

/// A `minutes`-long AAC-LC 192 kbit/s 44.1 kHz stereo MP4 of real music, made once.
fn prepare_input(work: &Path, minutes: u32) -> Result<PathBuf> {
    let path = work.join(format!("music-{minutes}min.mp4"));
    if path.exists() {
        return Ok(path);
    }
    ensure!(
        Path::new(MUSIC).exists(),
        "{MUSIC} is missing (the shared media folder)"
    );
    eprintln!("bench: generating {} (once)", path.display());
    let tmp = work.join(format!(".music-{minutes}min.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "-1", "-i", MUSIC, "-t"])
        .arg((minutes * 60).to_string())
        .args([
            "-vn", "-c:a", "aac", "-b:a", "192k", "-ar", "44100", "-ac", "2",
        ])
        .arg(&tmp)
        .status()
        .context("ffmpeg is needed (make setup installs it)")?;
    ensure!(
        status.success(),
        "ffmpeg could not generate {}",
        path.display()
    );
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn time_ffmpeg(input: &Path, work: &Path) -> Result<Duration> {
    let out = work.join("ffmpeg.mp3");
    let start = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-threads", "1", "-i"])
        .arg(input)
        .args(["-vn", "-c:a", "libmp3lame", "-b:a", "192k"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "ffmpeg failed");
    Ok(elapsed)
}

fn time_native(input: &Path) -> Result<Duration> {
    let mut source = tapedeck_converter::FileSource::open(input)?;
    let mut sink = tapedeck_converter::VecSink::default();
    let options = tapedeck_converter::Options::default();
    let start = Instant::now();
    tapedeck_converter::convert(&mut source, &mut sink, &options, &mut |_| {})?;
    Ok(start.elapsed())
}

fn cbr192() -> ConvertOptions {
    ConvertOptions {
        mode: Mode::Cbr(192),
        ..ConvertOptions::default()
    }
}

fn time_wasm(
    plugin: &tapedeck::runtime::ConverterPlugin,
    input: &Path,
    work: &Path,
    limits: &RunLimits,
) -> Result<Duration> {
    let out_path = work.join("wasm.mp3");
    let input = File::open(input)?;
    let output = File::create(&out_path)?;
    let start = Instant::now();
    plugin.convert(&input, &output, &cbr192(), limits, &mut |_| {})?;
    Ok(start.elapsed())
}

fn time_fixed_cost(
    plugin: &tapedeck::runtime::ConverterPlugin,
    empty: &Path,
    work: &Path,
) -> Result<Duration> {
    let input = File::open(empty)?;
    let output = File::create(work.join("empty.mp3"))?;
    let start = Instant::now();
    match plugin.convert(
        &input,
        &output,
        &cbr192(),
        &RunLimits::default(),
        &mut |_| {},
    ) {
        Err(tapedeck::runtime::RunError::Convert(_)) => Ok(start.elapsed()),
        other => bail!("an empty input should fail with a conversion error, got {other:?}"),
    }
}

fn peak_memory(
    plugin: &tapedeck::runtime::ConverterPlugin,
    input: &Path,
    work: &Path,
) -> Result<u64> {
    let limits = RunLimits {
        cpu_time: Duration::from_secs(900),
        max_output_bytes: 1 << 30,
        ..RunLimits::default()
    };
    let input = File::open(input)?;
    let output = File::create(work.join("peak.mp3"))?;
    let (_, usage) = plugin.convert_measured(&input, &output, &cbr192(), &limits, &mut |_| {})?;
    Ok(usage.peak_memory_bytes)
}
