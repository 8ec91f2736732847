//! Every case as ffprobe and ffmpeg see it (a missing ffmpeg fails it): the
//! valid files decode to exactly the PCM written, with the declared rate, channels and
//! duration; the damaged ones fail or show what was intended.

mod cases;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tapedeck_mediagen::{Damage, Layout, Spec, write};

fn have_ffmpeg() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn run(tool: &str, args: &[&str], file: &Path, tail: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .arg(file)
        .args(tail)
        .output()
        .unwrap()
}

/// ffprobe's streams as `key=value` lists; Err(stderr) if it cannot read the file.
fn probe(file: &Path) -> Result<Vec<Vec<(String, String)>>, String> {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,sample_rate,channels,duration_ts",
            "-of",
            "default=nw=1",
        ],
        file,
        &[],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let mut streams: Vec<Vec<(String, String)>> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "codec_name" || streams.is_empty() {
            streams.push(Vec::new());
        }
        streams.last_mut().unwrap().push((k.into(), v.into()));
    }
    Ok(streams)
}

fn field<'a>(stream: &'a [(String, String)], key: &str) -> &'a str {
    stream
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The audio ffmpeg decodes, as 16-bit little-endian PCM; and its stderr.
fn decode(file: &Path) -> (Vec<u8>, String) {
    let out = run(
        "ffmpeg",
        &["-v", "error", "-i"],
        file,
        &["-map", "0:a?", "-f", "s16le", "-"],
    );
    (out.stdout, String::from_utf8_lossy(&out.stderr).into())
}

/// The PCM a valid file of `spec` holds: the tail of its fast-start version.
fn pcm_of(spec: &Spec, frames: u64) -> Vec<u8> {
    let mut file = Vec::new();
    let spec = Spec {
        layout: Layout::MoovFirst,
        ..*spec
    };
    write(&spec, Damage::None, &mut file).unwrap();
    let len = frames as usize * 2 * usize::from(spec.channels);
    file[file.len() - len..].to_vec()
}

#[test]
fn ffmpeg_reads_every_case_as_intended() {
    assert!(
        have_ffmpeg(),
        "ffmpeg/ffprobe are missing: run `make setup` (it installs ffmpeg)"
    );
    let dir: PathBuf = std::env::temp_dir().join(format!("mediagen-ffmpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for case in cases::cases() {
        let name = case.name;
        let path = dir.join(format!("{name}.mov"));
        let mut file = std::fs::File::create(&path).unwrap();
        let written = write(&case.spec, case.damage, &mut file).unwrap();
        drop(file);
        let spec = &case.spec;
        let channels = usize::from(spec.channels);
        let probed = probe(&path);
        let (pcm, errors) = decode(&path);
        match case.damage {
            Damage::None | Damage::TruncatedMdat if written.frames > 0 => {
                let streams = probed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(streams.len(), 1, "{name}: {streams:?}");
                let s = &streams[0];
                assert_eq!(field(s, "codec_type"), "audio", "{name}");
                assert_eq!(field(s, "codec_name"), "pcm_s16le", "{name}");
                assert_eq!(
                    field(s, "codec_tag_string").as_bytes(),
                    written.sample_entry,
                    "{name}"
                );
                assert_eq!(
                    field(s, "sample_rate"),
                    spec.sample_rate.to_string(),
                    "{name}"
                );
                assert_eq!(field(s, "channels"), spec.channels.to_string(), "{name}");
                let declared = spec.duration_ms * u64::from(spec.sample_rate) / 1000;
                assert_eq!(field(s, "duration_ts"), declared.to_string(), "{name}");
                // Exactly the frames in the file, sample for sample.
                assert_eq!(pcm.len(), written.frames as usize * 2 * channels, "{name}");
                assert!(pcm == pcm_of(spec, written.frames), "{name}: other PCM");
                if case.damage == Damage::None {
                    assert!(errors.is_empty(), "{name}: {errors}");
                } else {
                    assert!(errors.contains("partial file"), "{name}: {errors}");
                }
            }
            // The moov was never written / the stsc is unreadable.
            Damage::TruncatedMdat | Damage::GarbageInSampleTable => {
                let err = probed.expect_err(name);
                assert!(
                    err.contains("moov atom not found") || err.contains("Invalid data"),
                    "{name}: {err}"
                );
                assert!(pcm.is_empty(), "{name}");
            }
            Damage::NoAudioTrack => {
                let streams = probed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(streams.len(), 1, "{name}: {streams:?}");
                assert_eq!(field(&streams[0], "codec_type"), "video", "{name}");
                assert_eq!(field(&streams[0], "codec_name"), "rawvideo", "{name}");
                assert!(pcm.is_empty(), "{name}");
            }
            Damage::UnsupportedCodec => {
                let streams = probed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(field(&streams[0], "codec_name"), "ac3", "{name}");
                assert_eq!(field(&streams[0], "channels"), spec.channels.to_string());
                // ffmpeg has an AC-3 decoder; the payload is no AC-3.
                assert!(pcm.is_empty(), "{name}");
                assert!(errors.contains("Invalid data"), "{name}: {errors}");
            }
            Damage::None => unreachable!("valid files have frames"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
