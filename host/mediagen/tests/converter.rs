//! Every case through the Tapedeck converter run natively (symphonia 0.6.1 demux and
//! decode, LAME encode): the code the conformance suite holds components to. The MP3s
//! of the valid cases are also decoded with ffmpeg when it is installed.

mod cases;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use tapedeck_converter::options::default_output_rate;
use tapedeck_converter::{ConvertError, Options, SliceSource, VecSink, convert};
use tapedeck_mediagen::{Damage, Layout, write};

/// One MP3 frame: the converter's count may be off by at most this.
const MP3_FRAME: u64 = 1152;
/// LAME's encoder delay plus the decoder's (529): what ffmpeg may add if it does not
/// apply the LAME tag's gapless information.
const ENCODER_DELAY: u64 = 576 + 529;

fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mediagen-converter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// PCM frames ffmpeg decodes from `mp3`.
fn ffmpeg_frames(dir: &std::path::Path, name: &str, mp3: &[u8], channels: u8) -> u64 {
    let path = dir.join(format!("{name}.mp3"));
    std::fs::write(&path, mp3).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "s16le", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as u64 / (2 * u64::from(channels))
}

#[derive(Debug)]
enum Expect {
    /// Converts to this many frames at the input rate.
    Frames(u64),
    NoAudio,
    Unsupported(&'static str),
    Corrupt,
}

/// What the converter must make of a case.
fn expect(case: &cases::Case, frames: u64) -> Expect {
    let rate = u64::from(case.spec.sample_rate);
    match (case.damage, case.spec.layout) {
        (Damage::None, _) => Expect::Frames(frames),
        // symphonia 0.6.1 skips a top-level box that runs past the end of the file: the
        // cut mdat of a fast-start file is dropped whole (no packet at all), that of a
        // fragmented file too, leaving the whole fragments (seconds) before it.
        (Damage::TruncatedMdat, Layout::Fragmented) => Expect::Frames(frames / 2 / rate * rate),
        (Damage::TruncatedMdat, _) => Expect::Corrupt,
        (Damage::GarbageInSampleTable, _) => Expect::Corrupt,
        (Damage::NoAudioTrack, _) => Expect::NoAudio,
        (Damage::UnsupportedCodec, _) => Expect::Unsupported("ac-3"),
    }
}

#[test]
fn the_converter_reads_every_case_as_intended() {
    let ffmpeg = have_ffmpeg();
    if !ffmpeg {
        eprintln!("ffmpeg not found: the MP3s are not decoded");
    }
    let dir = scratch();
    for case in cases::cases() {
        let mut file = Vec::new();
        let written = write(&case.spec, case.damage, &mut file).unwrap();
        let spec_frames = case.spec.duration_ms * u64::from(case.spec.sample_rate) / 1000;
        let mut sink = VecSink::default();
        let result = convert(
            &mut SliceSource { bytes: &file },
            &mut sink,
            &Options::default(),
            &mut |_| {},
        );
        let want = expect(&case, spec_frames);
        let name = case.name;
        match (&want, &result) {
            (Expect::Frames(frames), Ok(summary)) => {
                let rate = case.spec.sample_rate;
                let out_rate = default_output_rate(rate);
                assert_eq!(summary.input_codec, "pcm", "{name}");
                assert_eq!(summary.input_sample_rate, rate, "{name}");
                assert_eq!(
                    u16::from(summary.input_channels),
                    case.spec.channels,
                    "{name}"
                );
                assert_eq!(summary.output_sample_rate, out_rate, "{name}");
                assert_eq!(
                    u16::from(summary.output_channels),
                    case.spec.channels.min(2),
                    "{name}"
                );
                let expected = frames * u64::from(out_rate) / u64::from(rate);
                assert!(
                    summary.output_frames.abs_diff(expected) <= MP3_FRAME,
                    "{name}: {} frames, expected {expected}",
                    summary.output_frames
                );
                if case.damage == Damage::None {
                    assert_eq!(written.frames, *frames, "{name}");
                }
                if ffmpeg {
                    let decoded = ffmpeg_frames(&dir, name, &sink.bytes, summary.output_channels);
                    println!(
                        "{name}: converter {} frames, ffmpeg {decoded}, expected {expected}",
                        summary.output_frames
                    );
                    assert!(
                        decoded.abs_diff(expected) <= MP3_FRAME + ENCODER_DELAY,
                        "{name}: ffmpeg decodes {decoded} frames of the MP3, expected {expected}"
                    );
                }
            }
            (Expect::NoAudio, Err(ConvertError::NoAudioTrack)) => {}
            (Expect::Unsupported(codec), Err(ConvertError::UnsupportedCodec(c))) if c == codec => {}
            (Expect::Corrupt, Err(ConvertError::CorruptInput(_))) => {}
            _ => panic!("{name}: expected {want:?}, got {result:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
