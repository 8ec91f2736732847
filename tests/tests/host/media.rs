//! The built-in converter component, run as the service runs it (wasm, subprocess
//! isolation, default limits), over real and generated media.
//!
//! - The shared corpus: every file gives the same verdict in wasm as the same converter
//!   compiled natively (whose verdicts `components/converter` checks against ffmpeg), and
//!   every success is an MP3 whose decoded length ffmpeg agrees with.
//! - Generated media (ffmpeg): mono/stereo/5.1, 8 kHz to 96 kHz, moov at start and at
//!   end, fragmented; each MP3 decodes to the source's length within one MP3 frame.
//! - An hour of audio: guest linear memory stays small.
//!
//! A missing ffmpeg or ../shared/media fails these tests (with what is missing).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tapedeck::components::DEFAULT_CONVERTER;
use tapedeck::runtime::{
    ConvertError, ConvertOptions, ConverterPlugin, Isolation, Mode, PluginRuntime, RunError,
    RunLimits, RuntimeConfig,
};
use tapedeck_tests::{media_dir, require_ffmpeg};
use tempfile::TempDir;

const RUNNER: &str = env!("CARGO_BIN_EXE_tapedeck-test-serve");
/// One MPEG-1 Layer III frame at 44.1 kHz.
const ONE_FRAME_S: f64 = 1152.0 / 44_100.0;

fn plugin(dir: &Path) -> Arc<ConverterPlugin> {
    let mut config = RuntimeConfig::new(dir.join("cache")).unwrap();
    config.isolation = Isolation::Subprocess;
    config.runner_exe = RUNNER.into();
    PluginRuntime::new(config)
        .unwrap()
        .load_converter(DEFAULT_CONVERTER)
        .unwrap()
}

/// The same verdict, compared without message details that differ only in wording.
#[derive(Debug, PartialEq)]
enum Verdict {
    Converted {
        frames: u64,
        rate: u32,
        channels: u8,
    },
    NoAudio,
    Unsupported(String),
    Drm(String),
    Corrupt,
    Other(String),
}

fn native(path: &Path) -> Verdict {
    let mut source = tapedeck_converter::FileSource::open(path).unwrap();
    let mut sink = tapedeck_converter::VecSink::default();
    let options = tapedeck_converter::Options::default();
    use tapedeck_converter::ConvertError as E;
    match tapedeck_converter::convert(&mut source, &mut sink, &options, &mut |_| {}) {
        Ok(s) => Verdict::Converted {
            frames: s.output_frames,
            rate: s.output_sample_rate,
            channels: s.output_channels,
        },
        Err(E::NoAudioTrack) => Verdict::NoAudio,
        Err(E::UnsupportedCodec(c)) => Verdict::Unsupported(c),
        Err(E::DrmProtected(s)) => Verdict::Drm(s),
        Err(E::CorruptInput(_)) => Verdict::Corrupt,
        Err(other) => Verdict::Other(other.to_string()),
    }
}

fn wasm(plugin: &ConverterPlugin, path: &Path, out: &Path, options: &ConvertOptions) -> Verdict {
    let input = File::open(path).unwrap();
    let output = File::create(out).unwrap();
    match plugin.convert(&input, &output, options, &RunLimits::default(), &mut |_| {}) {
        Ok(s) => Verdict::Converted {
            frames: s.output_frames,
            rate: s.output_sample_rate,
            channels: s.output_channels,
        },
        Err(RunError::Convert(ConvertError::NoAudioTrack)) => Verdict::NoAudio,
        Err(RunError::Convert(ConvertError::UnsupportedCodec(c))) => Verdict::Unsupported(c),
        Err(RunError::Convert(ConvertError::DrmProtected(s))) => Verdict::Drm(s),
        Err(RunError::Convert(ConvertError::CorruptInput(_))) => Verdict::Corrupt,
        Err(other) => Verdict::Other(other.to_string()),
    }
}

/// Seconds of audio ffmpeg decodes from `path` (first audio stream), and whether any
/// sample is louder than -60 dBFS.
fn decoded(path: &Path) -> (f64, bool) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:a:0",
            "-af",
            "volumedetect",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    let samples = out.stdout.len() / 4;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rate: f64 = probe(path, "stream=sample_rate").parse().unwrap_or(0.0);
    let peak = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).abs())
        .fold(0.0f32, f32::max);
    assert!(
        rate > 0.0,
        "ffprobe found no sample rate in {}: {stderr}",
        path.display()
    );
    (samples as f64 / rate, peak > 0.001)
}

fn probe(path: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            entries,
        ])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn corpus_verdicts_match_the_native_converter() {
    require_ffmpeg();
    let media = media_dir();
    let dir = TempDir::new().unwrap();
    let plugin = plugin(dir.path());
    let mut files: Vec<_> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !matches!(p.extension().and_then(|e| e.to_str()), Some("tsv" | "md")))
        .collect();
    files.sort();
    assert!(
        files.len() > 50,
        "the corpus looks incomplete: {} files",
        files.len()
    );
    let mut converted = 0;
    for path in &files {
        let out = dir.path().join("out.mp3");
        let want = native(path);
        let got = wasm(&plugin, path, &out, &ConvertOptions::default());
        assert_eq!(got, want, "{}", path.display());
        if let Verdict::Converted { frames, rate, .. } = got {
            converted += 1;
            let (seconds, _) = decoded(&out);
            let expected = frames as f64 / f64::from(rate);
            assert!(
                (seconds - expected).abs() <= ONE_FRAME_S,
                "{}: the MP3 decodes to {seconds:.3} s, the converter reported {expected:.3} s",
                path.display()
            );
        } else {
            let len = std::fs::metadata(&out).unwrap().len();
            assert_eq!(len, 0, "{}: a failed run left {len} bytes", path.display());
        }
    }
    assert!(converted >= 30, "only {converted} corpus files converted");
}

/// Makes a 2-second test signal with ffmpeg: a tone per channel plus a little noise.
fn generate(dir: &Path, name: &str, rate: u32, layout: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:sample_rate={rate}:duration=2"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "anoisesrc=amplitude=0.05:sample_rate={rate}:duration=2"
        ))
        .args(["-filter_complex"])
        .arg(format!(
            "[0][1]amix=inputs=2,aformat=channel_layouts={layout}"
        ))
        .args(["-c:a", "aac"])
        .args(extra)
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make {name}");
    path
}

#[test]
fn generated_media_keeps_its_length() {
    require_ffmpeg();
    let dir = TempDir::new().unwrap();
    let plugin = plugin(dir.path());
    let mut cases = Vec::new();
    for rate in [
        8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000,
    ] {
        cases.push((format!("stereo-{rate}.mp4"), rate, "stereo", vec![]));
    }
    cases.push((
        "mono-moov-first.mp4".into(),
        44_100,
        "mono",
        vec!["-movflags", "+faststart"],
    ));
    cases.push(("stereo-moov-last.mov".into(), 48_000, "stereo", vec![]));
    cases.push((
        "stereo-fragmented.mp4".into(),
        44_100,
        "stereo",
        vec![
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration",
            "500000",
        ],
    ));
    // 5.1 in AAC (the vendored decoder patch) and in ALAC both go through the downmix.
    cases.push(("surround-5.1-aac.mp4".into(), 48_000, "5.1", vec![]));
    cases.push((
        "surround-5.1.m4a".into(),
        48_000,
        "5.1",
        vec!["-c:a", "alac"],
    ));
    for (name, rate, layout, extra) in cases {
        let input = generate(dir.path(), &name, rate, layout, &extra);
        let out = dir.path().join(format!("{name}.mp3"));
        let verdict = wasm(&plugin, &input, &out, &ConvertOptions::default());
        let Verdict::Converted {
            rate: out_rate,
            channels,
            ..
        } = verdict
        else {
            panic!("{name}: {verdict:?}");
        };
        let want_rate = if rate > 48_000 { 48_000 } else { rate };
        assert_eq!(out_rate, want_rate, "{name}");
        assert_eq!(channels, if layout == "mono" { 1 } else { 2 }, "{name}");
        let (source_s, _) = decoded(&input);
        let (mp3_s, audible) = decoded(&out);
        assert!(audible, "{name}: the MP3 is silent");
        assert!(
            (mp3_s - source_s).abs() <= ONE_FRAME_S,
            "{name}: source {source_s:.4} s, MP3 {mp3_s:.4} s"
        );
    }
}

/// Interleaved stereo f32 samples ffmpeg decodes from `path`.
fn decode_stereo(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-ac", "2", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}",
        path.display()
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Signal-to-noise ratio (dB) of `coded` against `reference`, sample by sample over
/// their common length, leaving out the first and last 0.1 s.
fn snr_db(reference: &[f32], coded: &[f32]) -> f64 {
    let n = reference.len().min(coded.len());
    let edge = 8_820.min(n / 4);
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&r, &c) in reference[edge..n - edge].iter().zip(&coded[edge..n - edge]) {
        signal += f64::from(r) * f64::from(r);
        noise += (f64::from(r) - f64::from(c)).powi(2);
    }
    10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10()
}

/// The MP3 is as faithful to the music as ffmpeg's own LAME encode at the same bitrate,
/// sample for sample (so no added delay, no lost channel, and the encoder's SIMD kernels
/// compute what LAME's C computes: a wrong filterbank or FFT shows up here as lost dBs).
#[test]
fn music_is_encoded_as_faithfully_as_ffmpeg_encodes_it() {
    require_ffmpeg();
    let media = media_dir();
    let dir = TempDir::new().unwrap();
    let clip = dir.path().join("music-20s.m4a");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(media.join("aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a"))
        .args([
            "-map", "0:a:0", "-ss", "30", "-t", "20", "-c:a", "aac", "-b:a", "256k",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not cut the clip");
    let ours = dir.path().join("ours.mp3");
    let verdict = wasm(
        &plugin(dir.path()),
        &clip,
        &ours,
        &ConvertOptions::default(),
    );
    assert!(
        matches!(verdict, Verdict::Converted { channels: 2, .. }),
        "{verdict:?}"
    );
    let theirs = dir.path().join("ffmpeg.mp3");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&clip)
        .args(["-threads", "1", "-vn", "-c:a", "libmp3lame", "-b:a", "192k"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "ffmpeg could not encode the reference MP3"
    );

    let source = decode_stereo(&clip);
    let (ours, theirs) = (decode_stereo(&ours), decode_stereo(&theirs));
    assert!(
        ours.len().abs_diff(source.len()) <= 2 * 1152,
        "{} samples decoded from {}",
        ours.len(),
        source.len()
    );
    let (ours_db, theirs_db) = (snr_db(&source, &ours), snr_db(&source, &theirs));
    eprintln!("SNR against the source: ours {ours_db:.2} dB, ffmpeg+LAME {theirs_db:.2} dB");
    assert!(
        theirs_db > 10.0,
        "the reference encode is implausible: {theirs_db:.2} dB"
    );
    assert!(
        ours_db >= theirs_db - 1.0,
        "ours {ours_db:.2} dB against ffmpeg+LAME {theirs_db:.2} dB"
    );
}

/// RMS of the left and right channels of a decoded MP3.
fn stereo_rms(path: &Path) -> (f64, f64) {
    let samples = decode_stereo(path);
    let rms = |channel: usize| {
        let sum: f64 = samples
            .iter()
            .skip(channel)
            .step_by(2)
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        (sum / (samples.len() / 2).max(1) as f64).sqrt()
    };
    (rms(0), rms(1))
}

/// Each channel of a 5.1 AAC file ends up on the right side of the stereo downmix: the
/// decoder's element order (C, L/R, Ls/Rs, LFE) is mapped onto the right planes.
#[test]
fn aac_surround_channels_land_on_their_side() {
    require_ffmpeg();
    let dir = TempDir::new().unwrap();
    let plugin = plugin(dir.path());
    // (channel with the tone, expected left/right balance)
    for (channel, want) in [
        ("FL", "left"),
        ("FR", "right"),
        ("BL", "left"),
        ("BR", "right"),
        ("FC", "centre"),
    ] {
        let input = dir.path().join(format!("only-{channel}.mp4"));
        let others: String = ["FL", "FR", "FC", "LFE", "BL", "BR"]
            .iter()
            .map(|c| {
                let gain = if *c == channel { "c0" } else { "0*c0" };
                format!("|{c}={gain}")
            })
            .collect();
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("sine=frequency=440:sample_rate=48000:duration=1")
            .args(["-af"])
            .arg(format!("pan=5.1{others}"))
            .args(["-c:a", "aac"])
            .arg(&input)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "ffmpeg could not make {}",
            input.display()
        );
        let out = dir.path().join(format!("only-{channel}.mp3"));
        let verdict = wasm(&plugin, &input, &out, &ConvertOptions::default());
        assert!(
            matches!(verdict, Verdict::Converted { channels: 2, .. }),
            "{channel}: {verdict:?}"
        );
        let (left, right) = stereo_rms(&out);
        let louder = |a: f64, b: f64| a > 0.01 && a > 10.0 * b;
        let ok = match want {
            "left" => louder(left, right),
            "right" => louder(right, left),
            _ => left > 0.01 && (left / right - 1.0).abs() < 0.05,
        };
        assert!(
            ok,
            "tone in {channel}: left RMS {left:.4}, right RMS {right:.4}"
        );
    }
}

#[test]
fn an_hour_of_audio_stays_in_bounded_guest_memory() {
    require_ffmpeg();
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("hour.m4a");
    // Low rate keeps the test cheap; the container holds an hour of sample tables.
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg("sine=frequency=300:sample_rate=8000:duration=3600")
        .args(["-c:a", "aac", "-b:a", "16k"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let plugin = plugin(dir.path());
    let options = ConvertOptions {
        mode: Mode::Cbr(32),
        ..ConvertOptions::default()
    };
    let limits = RunLimits {
        max_memory_bytes: 16 << 20,
        cpu_time: Duration::from_secs(300),
        ..RunLimits::default()
    };
    let out = dir.path().join("hour.mp3");
    let (summary, usage) = plugin
        .convert_measured(
            &File::open(&input).unwrap(),
            &File::create(&out).unwrap(),
            &options,
            &limits,
            &mut |_| {},
        )
        .unwrap();
    assert!(
        (summary.duration_ms as i64 - 3_600_000).abs() < 1_000,
        "{summary:?}"
    );
    assert!(
        usage.peak_memory_bytes <= 8 << 20,
        "guest peak memory {} bytes for an hour of audio",
        usage.peak_memory_bytes
    );
}
