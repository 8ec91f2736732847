//! `tapedeck plugin check`: the conformance suite a plugin author runs locally, and the
//! registry runs at publish (its quick depth).
//!
//! A converter gets golden inputs made in-process (`tapedeck-mediagen`: PCM in MP4 and
//! MOV, mono to 5.1, 8–96 kHz, 40 ms to an hour, moov at the end, fragmented, plus the
//! built-in AAC clip), each checked by the host's own reading of the MP3's frames
//! (length within one frame, not silent, the options honoured), the error cases (no
//! audio, unsupported codec, damaged files) that must give the typed `convert-error`
//! rather than a trap, the same output twice, all within the default run limits.
//! A notifier gets sample events (done, failed, a hostile file name) and must queue
//! well-formed messages only through the channels the settings allow.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tapedeck_mediagen::{Damage, Layout, Signal, Spec};
use tapedeck_model::notify::{Channels, Composer, FinalStatus, JobEvent, Outgoing, SendPolicy};
use tapedeck_runtime::media::{Mp3Info, mp3_info};
use tapedeck_runtime::{
    ConvertError, ConvertOptions, ConverterPlugin, Isolation, LimitPolicy, Mode, PluginRuntime,
    RunError, RuntimeConfig,
};

/// How a check runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub depth: Depth,
    /// Reuse Cranelift's per-function cache (an author's own builds; never the service).
    pub incremental: bool,
    /// The author's own cases (`plugin check --cases DIR`), run after the suite's: a
    /// converter converts every file (named `bad-*`: must be refused with the typed
    /// error; else an MP3 of the length its container declares, ± one frame); a notifier
    /// composes every `*.json` event (as `plugin run --event`) with e-mail and webhook on,
    /// into well-formed messages.
    pub cases: Option<&'a Path>,
}

/// How much of the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// What publishing runs: everything but the hour-long input.
    Quick,
    /// Everything (`tapedeck plugin check`).
    Full,
}

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub name: String,
    pub passed: bool,
    /// Publishing refuses a component that fails this case (the others are recorded).
    pub required: bool,
    pub ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub stage: String,
    pub digest: String,
    pub world: String,
    pub compile_ms: u64,
    /// The compiled code came from the compile cache (`compile_ms` is then its loading).
    #[serde(default)]
    pub cached: bool,
    /// With an author's per-function cache: the functions whose machine code it reused,
    /// and all functions compiled (`[0, 0]` when loaded from the compile cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions_reused: Option<[u64; 2]>,
    pub passed: bool,
    pub cases: Vec<Case>,
}

impl Report {
    /// Why publishing refuses this component: the required cases it failed.
    pub fn refusal(&self) -> Option<String> {
        let failed: Vec<String> = self
            .cases
            .iter()
            .filter(|c| c.required && !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// The failed cases, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.cases
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }

    /// The last line of the report `plugin check` prints (after the header and each
    /// case's line, printed as the cases end): how many cases passed or failed.
    pub fn footer(&self) -> String {
        let failed = self.cases.iter().filter(|c| !c.passed).count();
        if failed == 0 {
            format!("all {} cases passed\n", self.cases.len())
        } else {
            format!("{failed} of {} cases failed\n", self.cases.len())
        }
    }
}

/// The first line of a report: the component, and what loading it took.
fn header(stage: &str, digest: &str, world: &str, cached: bool, compile_ms: u64) -> String {
    format!(
        "{stage} component {} ({world}), {} in {compile_ms} ms\n",
        digest.get(..12).unwrap_or(digest),
        if cached {
            "loaded from the compile cache"
        } else {
            "compiled"
        },
    )
}

impl Case {
    /// A case the verdict decides: passed with `Ok(detail)`, failed with `Err(detail)`.
    fn of(
        name: impl Into<String>,
        required: bool,
        ms: u64,
        verdict: Result<String, String>,
    ) -> Self {
        let (passed, detail) = match verdict {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Case {
            name: name.into(),
            passed,
            required,
            ms,
            peak_memory_bytes: None,
            detail,
        }
    }

    /// An optional case started at `started`, decided by `verdict`.
    fn judged(name: impl Into<String>, started: Instant, verdict: Result<String, String>) -> Self {
        Self::of(name, false, started.elapsed().as_millis() as u64, verdict)
    }

    /// The case's line of a report.
    pub fn line(&self) -> String {
        let mem = self
            .peak_memory_bytes
            .map(|b| format!(" {:>6.1} MiB", b as f64 / (1 << 20) as f64))
            .unwrap_or_default();
        format!(
            "{} {:<44} {:>6} ms{mem}  {}\n",
            if self.passed { "pass" } else { "FAIL" },
            self.name,
            self.ms,
            self.detail
        )
    }
}

/// The cases run so far, each handed to the caller's `out` as it ends (after the
/// report's first line, before the first case): `plugin check` prints them as they come,
/// so a long suite shows its progress.
struct Cases<'a> {
    list: Vec<Case>,
    /// The report's first line but its load time: stage, digest, world, cached.
    head: (&'a str, &'a str, &'a str, bool),
    out: &'a mut dyn FnMut(&str),
}

impl Cases<'_> {
    fn push(&mut self, case: Case) {
        if self.list.is_empty() {
            let (stage, digest, world, cached) = self.head;
            (self.out)(&header(stage, digest, world, cached, case.ms));
        }
        (self.out)(&case.line());
        self.list.push(case);
    }
}

/// Runs the suite for `stage` on `bytes`, each converter run under the limits `policy`
/// gives a job of its input. `Err` only when the suite itself cannot run (no scratch
/// space); a component that does not load is a failed first case. At the quick depth a
/// converter whose smoke run fails is not run on the other inputs (publishing refuses
/// it anyway, and a converter that spins would spin on each).
pub fn check(
    cache_dir: &Path,
    stage: &str,
    bytes: &[u8],
    policy: &LimitPolicy,
    options: Options<'_>,
    out: &mut dyn FnMut(&str),
) -> Result<Report, String> {
    let Options {
        depth,
        incremental,
        cases: own_cases,
    } = options;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let world = format!("tapedeck:plugin/{stage}@{}", tapedeck_runtime::WIT_VERSION);
    let mut config = RuntimeConfig::new(cache_dir).map_err(|e| e.to_string())?;
    config.incremental = incremental;
    // Notifiers and auth stages run in-process in the service: checked the same way.
    if stage == "notifier" || stage == "auth" {
        config.isolation = Isolation::InProcess;
    }
    let runtime = PluginRuntime::new(config).map_err(|e| e.to_string())?;
    let cached = runtime.is_compiled(&digest);
    let start = Instant::now();
    let mut cases = Cases {
        list: Vec::new(),
        head: (stage, &digest, &world, cached),
        out,
    };
    let load_case = |result: Result<(), String>, ms: u64| Case {
        name: "loads: exports the world, imports only what the host provides".into(),
        passed: result.is_ok(),
        required: true,
        ms,
        peak_memory_bytes: None,
        detail: result
            .err()
            .unwrap_or_else(|| match runtime.functions_reused() {
                Some((hits, all)) if all > 0 => {
                    format!("{world}; {hits} of {all} functions' code reused from the cache")
                }
                _ => world.clone(),
            }),
    };
    match stage {
        "converter" => match runtime.load_converter(bytes) {
            Ok(plugin) => {
                cases.push(load_case(Ok(()), start.elapsed().as_millis() as u64));
                converter_cases(&plugin, depth, policy, &mut cases)?;
                if let Some(dir) = own_cases {
                    own_converter_cases(&plugin, dir, policy, &mut cases)?;
                }
            }
            Err(e) => cases.push(load_case(Err(e.to_string()), 0)),
        },
        "notifier" => match runtime.load_notifier(bytes) {
            Ok(plugin) => {
                cases.push(load_case(Ok(()), start.elapsed().as_millis() as u64));
                notifier_cases(plugin.as_ref(), &mut cases);
                if let Some(dir) = own_cases {
                    own_notifier_cases(plugin.as_ref(), dir, &mut cases)?;
                }
            }
            Err(e) => cases.push(load_case(Err(e.to_string()), 0)),
        },
        "auth" => match runtime.load_auth(bytes) {
            Ok(plugin) => {
                cases.push(load_case(Ok(()), start.elapsed().as_millis() as u64));
                auth_cases(&plugin, &mut cases);
            }
            Err(e) => cases.push(load_case(Err(e.to_string()), 0)),
        },
        other => return Err(format!("no conformance suite for the {other} stage")),
    }
    let cases = cases.list;
    let compile_ms = cases.first().map_or(0, |c| c.ms);
    let functions_reused = runtime.functions_reused().map(|(hits, all)| [hits, all]);
    Ok(Report {
        stage: stage.to_owned(),
        digest,
        world,
        compile_ms,
        cached,
        functions_reused,
        passed: cases.iter().all(|c| c.passed),
        cases,
    })
}

/// What a converter case expects.
enum Expect {
    /// An MP3 this long (ms), with these properties.
    Mp3 {
        ms: u64,
        check: fn(&Mp3Info) -> Result<(), String>,
    },
    /// The typed `convert-error` (any case but `io`), not a trap.
    Refused,
    /// An MP3, of whatever length (an author's input whose container declares none).
    AnyMp3,
}

fn any_mp3(_: &Mp3Info) -> Result<(), String> {
    Ok(())
}

fn default_options() -> ConvertOptions {
    ConvertOptions::default()
}

fn generated(dir: &Path, name: &str, spec: &Spec, damage: Damage) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(
        File::create(dir.join(name)).map_err(|e| format!("scratch file: {e}"))?,
    );
    tapedeck_mediagen::write(spec, damage, &mut f)
        .map_err(|e| format!("generating {name}: {e}"))?;
    Ok(())
}

fn spec(rate: u32, channels: u16, ms: u64, layout: Layout) -> Spec {
    Spec {
        sample_rate: rate,
        channels,
        duration_ms: ms,
        layout,
        signal: Signal::Sine {
            hz: 440.0,
            amplitude: 0.5,
        },
    }
}

fn converter_cases(
    plugin: &ConverterPlugin,
    depth: Depth,
    policy: &LimitPolicy,
    cases: &mut Cases<'_>,
) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("scratch dir: {e}"))?;
    let d = dir.path();
    std::fs::write(d.join("aac.m4a"), crate::serve::registry::SMOKE_CLIP)
        .map_err(|e| format!("scratch file: {e}"))?;
    let mut inputs: Vec<(&str, &str, ConvertOptions, Expect)> = vec![
        (
            "smoke: a 2 s AAC clip becomes an MP3 of its length",
            "aac.m4a",
            default_options(),
            Expect::Mp3 {
                ms: 2000,
                check: any_mp3,
            },
        ),
        (
            "AAC stereo 44.1 kHz, 2 s, default options",
            "aac.m4a",
            default_options(),
            Expect::Mp3 {
                ms: 2000,
                check: |i| stereo(i).and(audible(i)),
            },
        ),
        (
            "option: mono",
            "aac.m4a",
            ConvertOptions {
                mono: true,
                ..default_options()
            },
            Expect::Mp3 {
                ms: 2000,
                check: |i| match i.channels {
                    1 => Ok(()),
                    n => Err(format!("{n} channels, asked for mono")),
                },
            },
        ),
        (
            "option: CBR 96 kbit/s",
            "aac.m4a",
            ConvertOptions {
                mode: Mode::Cbr(96),
                ..default_options()
            },
            Expect::Mp3 {
                ms: 2000,
                check: |i| match i.bitrates.as_slice() {
                    [96] => Ok(()),
                    other => Err(format!("frames at {other:?} kbit/s, asked for 96")),
                },
            },
        ),
        (
            "option: VBR quality 4",
            "aac.m4a",
            ConvertOptions {
                mode: Mode::Vbr(4),
                ..default_options()
            },
            Expect::Mp3 {
                ms: 2000,
                check: |i| {
                    if i.bitrates.len() > 1 || i.xing == Some("Xing") {
                        Ok(())
                    } else {
                        Err(format!(
                            "one bitrate ({:?}) and no Xing header: not VBR",
                            i.bitrates
                        ))
                    }
                },
            },
        ),
        (
            "option: sample rate 22050 Hz",
            "aac.m4a",
            ConvertOptions {
                sample_rate: Some(22_050),
                ..default_options()
            },
            Expect::Mp3 {
                ms: 2000,
                check: |i| match i.sample_rate {
                    22_050 => Ok(()),
                    r => Err(format!("{r} Hz, asked for 22050")),
                },
            },
        ),
    ];
    let mut generated_cases: Vec<(&str, &str, Spec, Damage, Expect)> = vec![
        (
            "PCM mono 8 kHz, 1 s",
            "mono8k.mov",
            spec(8_000, 1, 1000, Layout::MoovFirst),
            Damage::None,
            Expect::Mp3 {
                ms: 1000,
                check: audible,
            },
        ),
        (
            "PCM stereo 44.1 kHz, 2 s, moov at the end",
            "moovlast.mov",
            spec(44_100, 2, 2000, Layout::MoovLast),
            Damage::None,
            Expect::Mp3 {
                ms: 2000,
                check: |i| stereo(i).and(audible(i)),
            },
        ),
        (
            "PCM 5.1 48 kHz, 1.5 s",
            "surround.mov",
            spec(48_000, 6, 1500, Layout::MoovFirst),
            Damage::None,
            Expect::Mp3 {
                ms: 1500,
                check: audible,
            },
        ),
        (
            "PCM stereo 96 kHz, 1 s",
            "hires.mov",
            spec(96_000, 2, 1000, Layout::MoovFirst),
            Damage::None,
            Expect::Mp3 {
                ms: 1000,
                check: |i| match i.sample_rate {
                    48_000 => Ok(()),
                    r => Err(format!("{r} Hz: 96 kHz has no MP3 rate, expected 48000")),
                },
            },
        ),
        (
            "PCM mono 22.05 kHz, 40 ms (very short)",
            "short.mov",
            spec(22_050, 1, 40, Layout::MoovFirst),
            Damage::None,
            Expect::Mp3 {
                ms: 40,
                check: any_mp3,
            },
        ),
        (
            "PCM stereo 44.1 kHz, 3 s, fragmented",
            "fragmented.mp4",
            spec(44_100, 2, 3000, Layout::Fragmented),
            Damage::None,
            Expect::Mp3 {
                ms: 3000,
                check: audible,
            },
        ),
        (
            LARGE_CASE,
            "large.mov",
            spec(96_000, 6, 16_000, Layout::MoovFirst),
            Damage::None,
            // Its length, in bounded time and memory: what the sound is like the other
            // cases judge (this one refuses at publish).
            Expect::Mp3 {
                ms: 16_000,
                check: any_mp3,
            },
        ),
        (
            "no audio track (video only)",
            "noaudio.mp4",
            spec(44_100, 2, 1000, Layout::MoovFirst),
            Damage::NoAudioTrack,
            Expect::Refused,
        ),
        (
            "unsupported codec",
            "unsupported.mp4",
            spec(44_100, 2, 1000, Layout::MoovFirst),
            Damage::UnsupportedCodec,
            Expect::Refused,
        ),
        (
            "truncated audio data",
            "truncated.mov",
            spec(44_100, 2, 2000, Layout::MoovFirst),
            Damage::TruncatedMdat,
            Expect::Refused,
        ),
        (
            "garbage in the sample table",
            "garbage.mov",
            spec(44_100, 2, 2000, Layout::MoovFirst),
            Damage::GarbageInSampleTable,
            Expect::Refused,
        ),
    ];
    if depth == Depth::Full {
        generated_cases.push((
            "PCM mono 8 kHz, an hour",
            "hour.mov",
            spec(8_000, 1, 3_600_000, Layout::MoovFirst),
            Damage::None,
            Expect::Mp3 {
                ms: 3_600_000,
                check: any_mp3,
            },
        ));
    }
    for (name, file, spec, damage, expect) in generated_cases {
        generated(d, file, &spec, damage)?;
        inputs.push((name, file, default_options(), expect));
    }
    for (name, file, options, expect) in inputs {
        let case = run_case(plugin, d, name, file, &options, &expect, policy);
        let refused = case.required && !case.passed;
        cases.push(case);
        if refused && depth == Depth::Quick {
            return Ok(());
        }
    }
    // The same input, twice: the same bytes.
    let start = Instant::now();
    let first = convert_bytes(plugin, &d.join("moovlast.mov"), d, policy);
    let second = convert_bytes(plugin, &d.join("moovlast.mov"), d, policy);
    let verdict = match (first, second) {
        (Ok(a), Ok(b)) if a == b => Ok(format!("{} bytes both times", a.len())),
        (Ok(a), Ok(b)) => Err(format!(
            "{} bytes, then {} different bytes",
            a.len(),
            b.len()
        )),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    cases.push(Case::judged(
        "deterministic: the same output twice",
        start,
        verdict,
    ));
    Ok(())
}

/// The files of an author's cases folder, sorted by name (`.json` ones only for a
/// notifier, the others only for a converter).
fn own_files(dir: &Path, json: bool) -> Result<Vec<std::path::PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json") == json)
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "{} has no {}",
            dir.display(),
            if json {
                "event files (*.json)"
            } else {
                "input files"
            }
        ));
    }
    Ok(files)
}

fn own_case_name(path: &Path) -> String {
    format!(
        "yours: {}",
        path.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// The author's inputs, each converted with the default options under the limits a job
/// of it gets (copied into the scratch folder: nothing is written beside them).
fn own_converter_cases(
    plugin: &ConverterPlugin,
    dir: &Path,
    policy: &LimitPolicy,
    cases: &mut Cases<'_>,
) -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch dir: {e}"))?;
    for (i, path) in own_files(dir, false)?.iter().enumerate() {
        let file = format!("yours-{i}");
        std::fs::copy(path, scratch.path().join(&file))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let declared = File::open(path)
            .ok()
            .and_then(|f| tapedeck_runtime::media::iso_bmff_duration(&f));
        let name = own_case_name(path);
        let expect = match declared {
            _ if name.starts_with("yours: bad-") => Expect::Refused,
            Some(length) => Expect::Mp3 {
                ms: length.as_millis() as u64,
                check: any_mp3,
            },
            None => Expect::AnyMp3,
        };
        let case = run_case(
            plugin,
            scratch.path(),
            &name,
            &file,
            &default_options(),
            &expect,
            policy,
        );
        cases.push(case);
    }
    Ok(())
}

/// The author's events, each composed with e-mail and webhook on.
fn own_notifier_cases(
    composer: &dyn Composer,
    dir: &Path,
    cases: &mut Cases<'_>,
) -> Result<(), String> {
    for path in own_files(dir, true)? {
        let start = Instant::now();
        let verdict = super::run::event_file(&path)
            .map_err(|e| format!("{e:#}"))
            .and_then(|event| {
                let (channels, policy) = channels(true, true);
                composer
                    .compose(&event, &channels, &policy)
                    .map_err(|e| format!("failed: {e}"))
            })
            .and_then(|composed| well_formed(&composed.messages, false));
        cases.push(Case::judged(own_case_name(&path), start, verdict));
    }
    Ok(())
}

fn stereo(i: &Mp3Info) -> Result<(), String> {
    match i.channels {
        2 => Ok(()),
        n => Err(format!("{n} channel(s), the input is stereo")),
    }
}

fn audible(i: &Mp3Info) -> Result<(), String> {
    if i.audible {
        Ok(())
    } else {
        Err("the MP3 is silent (no granule codes any data); the input is a tone".into())
    }
}

fn convert_bytes(
    plugin: &ConverterPlugin,
    input: &Path,
    dir: &Path,
    policy: &LimitPolicy,
) -> Result<Vec<u8>, String> {
    let out = dir.join("twice.mp3");
    let input = File::open(input).map_err(|e| e.to_string())?;
    let output = File::create(&out).map_err(|e| e.to_string())?;
    let limits = case_limits(policy, &input);
    plugin
        .convert(&input, &output, &default_options(), &limits, &mut |_| {})
        .map_err(|e| e.to_string())?;
    std::fs::read(&out).map_err(|e| e.to_string())
}

/// The limits `policy` gives a job of `input`.
fn case_limits(policy: &LimitPolicy, input: &File) -> tapedeck_runtime::RunLimits {
    policy.limits_for(tapedeck_runtime::media::iso_bmff_duration(input))
}

fn run_case(
    plugin: &ConverterPlugin,
    dir: &Path,
    name: &str,
    file: &str,
    options: &ConvertOptions,
    expect: &Expect,
    policy: &LimitPolicy,
) -> Case {
    let out_path = dir.join(format!("{file}.mp3"));
    let start = Instant::now();
    let opened = File::open(dir.join(file)).and_then(|i| Ok((i, File::create(&out_path)?)));
    let (input, output) = match opened {
        Ok(files) => files,
        Err(e) => {
            return Case {
                name: name.into(),
                passed: false,
                required: name.starts_with("smoke"),
                ms: 0,
                peak_memory_bytes: None,
                detail: format!("scratch files: {e}"),
            };
        }
    };
    // The limits the service gives a job of this length; the large input's CPU time is
    // capped (a converter that loops on large files is refused at publish, in seconds).
    let mut limits = case_limits(policy, &input);
    if name == LARGE_CASE {
        limits.cpu_time = limits.cpu_time.min(LARGE_CASE_CPU);
        limits.max_wall_time = limits.max_wall_time.min(LARGE_CASE_CPU * 2);
    }
    let (result, usage) = plugin.convert_accounted(&input, &output, options, &limits, &mut |_| {});
    let ms = start.elapsed().as_millis() as u64;
    let peak = Some(usage.peak_memory_bytes).filter(|&b| b > 0);
    let verdict = match (expect, result) {
        (Expect::Mp3 { ms: want, check }, Ok(_)) => {
            match File::open(&out_path).ok().and_then(|f| mp3_info(&f)) {
                None => Err("the output is not an MP3 (no MPEG audio frames)".to_owned()),
                Some(info) => {
                    let got = info.duration.as_millis() as u64;
                    // One frame either way (1152 samples, 576 below 32 kHz), plus rounding.
                    let frame_ms = if info.sample_rate >= 32_000 {
                        1152
                    } else {
                        576
                    } * 1000
                        / info.sample_rate as u64;
                    if got.abs_diff(*want) > frame_ms + 1 {
                        Err(format!(
                            "the MP3 lasts {got} ms by its frames, the input {want} ms (± one frame, {frame_ms} ms)"
                        ))
                    } else {
                        check(&info).map(|()| {
                            format!(
                                "{got} ms, {} Hz, {} ch, {:?} kbit/s",
                                info.sample_rate, info.channels, info.bitrates
                            )
                        })
                    }
                }
            }
        }
        (Expect::Mp3 { .. } | Expect::AnyMp3, Err(e)) => Err(format!("failed: {e}")),
        (Expect::AnyMp3, Ok(_)) => match File::open(&out_path).ok().and_then(|f| mp3_info(&f)) {
            None => Err("the output is not an MP3 (no MPEG audio frames)".to_owned()),
            Some(info) => Ok(format!(
                "{} ms, {} Hz, {} ch, {:?} kbit/s",
                info.duration.as_millis(),
                info.sample_rate,
                info.channels,
                info.bitrates
            )),
        },
        (Expect::Refused, Err(RunError::Convert(ConvertError::Io(e)))) => Err(format!(
            "an io error ({e}), expected the input's own error case"
        )),
        (Expect::Refused, Err(RunError::Convert(e))) => Ok(format!("refused: {e}")),
        (Expect::Refused, Err(other)) => Err(format!(
            "{other}: bad input must give the typed convert-error, not a trap or a limit"
        )),
        (Expect::Refused, Ok(_)) => Err("converted an input it should have refused".into()),
    };
    let required = name.starts_with("smoke") || name == LARGE_CASE;
    Case {
        peak_memory_bytes: peak,
        ..Case::of(name, required, ms, verdict)
    }
}

/// The suite's large input (18 MB of PCM for 16 s of audio, so it costs about a second
/// to convert), run at publish too: a converter that loops or blows up on large files is
/// refused there, not found by a canary.
const LARGE_CASE: &str = "large input: PCM 5.1 96 kHz, 16 s (18 MB), within 10 s of CPU";
/// The CPU time the large input may take (the built-in converter: about 1 s).
const LARGE_CASE_CPU: std::time::Duration = std::time::Duration::from_secs(10);

/// The suite's sample event (`plugin run`'s default too).
pub(crate) fn event(status: FinalStatus, input_name: &str) -> JobEvent {
    let done = status == FinalStatus::Done;
    JobEvent {
        job_id: "0a1b2c3d-check".into(),
        tenant: "check".into(),
        owner_email: "owner@example.com".into(),
        status,
        input_name: input_name.into(),
        output_bytes: done.then_some(3_145_728),
        duration_ms: done.then_some(185_000),
        failure_reason: (!done).then(|| "no audio track in the file".into()),
        download_url: done.then(|| "https://tapedeck.example/v1/jobs/0a1b2c3d-check/output".into()),
        finished_at: 1_700_000_000,
    }
}

const HOOK: &str = "https://hooks.example.com/tapedeck";

fn channels(email: bool, webhook: bool) -> (Channels, SendPolicy) {
    (
        Channels {
            email_enabled: email,
            webhook_enabled: webhook,
            webhook_url: webhook.then(|| HOOK.to_owned()),
        },
        SendPolicy {
            mail_to: email.then(|| "owner@example.com".to_owned()),
            webhook_url: webhook.then(|| HOOK.to_owned()),
        },
    )
}

/// The messages are well formed: mail to the owner, one-line subject, no markup from
/// the file name in the HTML; webhooks to the tenant's URL with a JSON body.
fn well_formed(messages: &[Outgoing], hostile: bool) -> Result<String, String> {
    let (mut mails, mut hooks) = (0, 0);
    for m in messages {
        match m {
            Outgoing::Mail(mail) => {
                mails += 1;
                if mail.to != "owner@example.com" {
                    return Err(format!("mail to {}, not the job's owner", mail.to));
                }
                if mail.subject.trim().is_empty() || mail.subject.contains(['\r', '\n']) {
                    return Err(format!(
                        "subject {:?} is not one line of text",
                        mail.subject
                    ));
                }
                if hostile
                    && mail
                        .html_body
                        .as_deref()
                        .is_some_and(|h| h.contains("<script>"))
                {
                    return Err("the HTML body carries the file name's <script> unescaped".into());
                }
            }
            Outgoing::Webhook(hook) => {
                hooks += 1;
                if hook.url != HOOK {
                    return Err(format!("webhook to {}, not the tenant's URL", hook.url));
                }
                serde_json::from_str::<serde_json::Value>(&hook.body)
                    .map_err(|e| format!("webhook body is not JSON: {e}"))?;
            }
        }
    }
    Ok(format!("{mails} mail(s), {hooks} webhook(s)"))
}

/// A notifier case: name, event, (e-mail on, webhook on), the (mails, webhooks) counts
/// it must queue, whether the file name is hostile.
type NotifierRun<'a> = (
    &'a str,
    JobEvent,
    (bool, bool),
    fn(usize, usize) -> bool,
    bool,
);

fn notifier_cases(composer: &dyn Composer, cases: &mut Cases<'_>) {
    let hostile_name = "talk\r\nBcc: victim@example.com\r\n<script>alert(1)</script>.mp4";
    let long_name = "ä".repeat(10_000);
    let runs: Vec<NotifierRun> = vec![
        (
            "smoke: done, e-mail and webhook on",
            event(FinalStatus::Done, "talk.mp4"),
            (true, true),
            |m, h| m == 1 && h == 1,
            false,
        ),
        (
            "failed, e-mail and webhook on",
            event(FinalStatus::Failed, "talk.mp4"),
            (true, true),
            |m, h| m == 1 && h == 1,
            false,
        ),
        (
            "done, e-mail only",
            event(FinalStatus::Done, "talk.mp4"),
            (true, false),
            |m, h| m == 1 && h == 0,
            false,
        ),
        (
            "done, both off: nothing queued",
            event(FinalStatus::Done, "talk.mp4"),
            (false, false),
            |m, h| m == 0 && h == 0,
            false,
        ),
        (
            "hostile file name (CR, LF, header, <script>)",
            event(FinalStatus::Done, hostile_name),
            (true, true),
            |m, h| m == 1 && h == 1,
            true,
        ),
        (
            "a 10,000-character file name",
            event(FinalStatus::Done, &long_name),
            (true, true),
            |m, h| m == 1 && h == 1,
            false,
        ),
    ];
    let mut first_output = None;
    for (name, ev, (email, webhook), counts, hostile) in runs {
        let (ch, policy) = channels(email, webhook);
        let start = Instant::now();
        let result = composer.compose(&ev, &ch, &policy);
        let ms = start.elapsed().as_millis() as u64;
        let verdict = match result {
            Err(e) => Err(format!("failed: {e}")),
            Ok(composed) => {
                let mails = composed
                    .messages
                    .iter()
                    .filter(|m| matches!(m, Outgoing::Mail(_)))
                    .count();
                let hooks = composed.messages.len() - mails;
                if first_output.is_none() {
                    first_output = Some(format!("{:?}", composed.messages));
                }
                if !counts(mails, hooks) {
                    Err(format!(
                        "queued {mails} mail(s) and {hooks} webhook(s), which these settings do not call for"
                    ))
                } else {
                    well_formed(&composed.messages, hostile)
                }
            }
        };
        cases.push(Case::of(name, name.starts_with("smoke"), ms, verdict));
    }
    // Deterministic, over 20 runs (their mean time is what one notification costs).
    let (ch, policy) = channels(true, true);
    let start = Instant::now();
    let runs = 20;
    let mut same = true;
    for _ in 0..runs {
        let again = composer
            .compose(&event(FinalStatus::Done, "talk.mp4"), &ch, &policy)
            .map(|c| format!("{:?}", c.messages));
        same &= matches!((&again, &first_output), (Ok(a), Some(b)) if a == b);
    }
    let per_call_us = start.elapsed().as_micros() as u64 / runs;
    cases.push(Case {
        name: "deterministic: the same messages every time".into(),
        passed: same,
        required: false,
        ms: start.elapsed().as_millis() as u64,
        peak_memory_bytes: None,
        detail: if same {
            format!("identical over {runs} runs, {per_call_us} µs per run")
        } else {
            "a later run composed different messages".into()
        },
    });
}

/// The auth contract: register, log in, verify a round trip; a wrong password, an
/// expired token and a forged one are refused; a second account with the same address is
/// refused.
fn auth_cases(plugin: &tapedeck_runtime::AuthPlugin, cases: &mut Cases<'_>) {
    use std::sync::Arc;
    use tapedeck_runtime::auth_wit as wit;
    let now = 1_700_000_000u64;
    let users: Arc<dyn tapedeck_runtime::UserDirectory> =
        Arc::new(tapedeck_runtime::MemoryDirectory::default());
    let cx = |at: u64| tapedeck_runtime::AuthContext {
        users: users.clone(),
        signing_key: Arc::from(&b"conformance-signing-key-0123456789abcdef"[..]),
        token_lifetime_seconds: 3600,
        now_seconds: at,
    };
    let mut push = |name: &str, required: bool, ms: u64, verdict: Result<String, String>| {
        cases.push(Case::of(name, required, ms, verdict));
    };
    let timed = Instant::now();
    let registered = plugin.register(
        &cx(now),
        "check",
        "ann@example.com",
        "correct horse battery",
        wit::Role::User,
    );
    let ms = timed.elapsed().as_millis() as u64;
    let verdict = match &registered {
        Ok(Ok(a)) if a.tenant == "check" && a.email == "ann@example.com" => {
            Ok(format!("user {}", a.user_id))
        }
        Ok(Ok(a)) => Err(format!(
            "registered as {}/{}, asked for check/ann@example.com",
            a.tenant, a.email
        )),
        Ok(Err(e)) => Err(format!("refused: {e:?}")),
        Err(e) => Err(format!("failed: {e}")),
    };
    let registered_ok = verdict.is_ok();
    push("smoke: register", true, ms, verdict);
    let timed = Instant::now();
    let session = plugin.login(
        &cx(now),
        "check",
        "ann@example.com",
        "correct horse battery",
    );
    let ms = timed.elapsed().as_millis() as u64;
    let token = match &session {
        Ok(Ok(s)) => Some(s.token.clone()),
        _ => None,
    };
    push(
        "smoke: log in with the right password",
        true,
        ms,
        match (&session, registered_ok) {
            (Ok(Ok(_)), _) => Ok("a token".into()),
            (_, false) => Err("no account to log in to".into()),
            (Ok(Err(e)), _) => Err(format!("refused: {e:?}")),
            (Err(e), _) => Err(format!("failed: {e}")),
        },
    );
    let timed = Instant::now();
    let verified = token
        .as_deref()
        .map(|t| plugin.verify(&cx(now + 60), t, Some("check")));
    push(
        "smoke: verify the token",
        true,
        timed.elapsed().as_millis() as u64,
        match verified {
            Some(Ok(Ok(c))) if c.email == "ann@example.com" && c.tenant == "check" => {
                Ok(format!("claims of {} until {}", c.email, c.expires_at))
            }
            Some(Ok(Ok(c))) => Err(format!("claims of {}/{}", c.tenant, c.email)),
            Some(Ok(Err(e))) => Err(format!("refused: {e:?}")),
            Some(Err(e)) => Err(format!("failed: {e}")),
            None => Err("no token to verify".into()),
        },
    );
    let refused = |r: tapedeck_runtime::AuthOutcome<wit::Claims>| match r {
        Ok(Err(e)) => Ok(format!("refused: {e:?}")),
        Ok(Ok(_)) => Err("accepted".to_owned()),
        Err(e) => Err(format!("failed instead of refusing: {e}")),
    };
    let timed = Instant::now();
    let wrong = plugin.login(&cx(now), "check", "ann@example.com", "wrong password");
    push(
        "a wrong password is refused",
        false,
        timed.elapsed().as_millis() as u64,
        match wrong {
            Ok(Err(e)) => Ok(format!("refused: {e:?}")),
            Ok(Ok(_)) => Err("logged in with a wrong password".into()),
            Err(e) => Err(format!("failed instead of refusing: {e}")),
        },
    );
    if let Some(token) = token {
        let timed = Instant::now();
        let expired = plugin.verify(&cx(now + 3600 + 1), &token, Some("check"));
        push(
            "an expired token is refused",
            false,
            timed.elapsed().as_millis() as u64,
            refused(expired),
        );
        let mut forged = token.clone().into_bytes();
        if let Some(last) = forged.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let forged = String::from_utf8_lossy(&forged).into_owned();
        let timed = Instant::now();
        let result = plugin.verify(&cx(now + 60), &forged, Some("check"));
        push(
            "a forged token is refused",
            false,
            timed.elapsed().as_millis() as u64,
            refused(result),
        );
        let timed = Instant::now();
        let other = plugin.verify(&cx(now + 60), &token, Some("other"));
        push(
            "another tenant's token is refused",
            false,
            timed.elapsed().as_millis() as u64,
            refused(other),
        );
    }
    let timed = Instant::now();
    let again = plugin.register(
        &cx(now),
        "check",
        "ann@example.com",
        "another password",
        wit::Role::User,
    );
    push(
        "the same address twice is refused",
        false,
        timed.elapsed().as_millis() as u64,
        match again {
            Ok(Err(e)) => Ok(format!("refused: {e:?}")),
            Ok(Ok(_)) => Err("registered the same address twice".into()),
            Err(e) => Err(format!("failed instead of refusing: {e}")),
        },
    );
}
