//! End-to-end checks over the shared media corpus (`../shared/media`), judged by ffmpeg:
//! every file ffmpeg decodes cleanly converts to an MP3 of the same decoded length
//! (within one MP3 frame) that is not silent; every other file fails with the specific
//! error the table below names. Skipped, with a message, when the corpus or ffmpeg is
//! absent.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ConvertError, FileSource, Mode, Options, Summary, Trim, VecSink, convert};

mod generated;
mod mp3check;

const MEDIA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/media");
/// One MP3 frame at 44.1 kHz.
const TOLERANCE_S: f64 = 0.026;

/// What a corpus file must do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Converts; its audio is ffmpeg's audio stream number `.0`.
    Convert(usize),
    /// Converts, but ffmpeg decodes the source `.1` seconds shorter than we do (why: see
    /// the table).
    ConvertLonger(usize, f64),
    NoAudio,
    Unsupported(&'static str),
    Drm(&'static str),
    Corrupt,
}

use Expect::*;

const TABLE: &[(&str, Expect)] = &[
    (
        "aac-lc_8k_stereo_short__musicmetadata_pr-544.m4a",
        Convert(0),
    ),
    (
        "aac-lc_8k_mono_coverart__tinytag_mpeg4_with_image.m4a",
        Convert(0),
    ),
    (
        "aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4",
        Convert(0),
    ),
    (
        "aac-lc_22k_mono_video_moovend__bento4_video-h264-001.mp4",
        Convert(0),
    ),
    (
        "aac-lc_22k_mono_video_frag__bento4_video-h264-002.mp4",
        Convert(0),
    ),
    // `ctts` gives the first AAC frame a +1024 composition offset, overlapping the second:
    // ffmpeg drops a frame's worth (46 ms) that we keep.
    (
        "aac-lc_22k_mono_speech__mp4parser_count-english-audio.mp4",
        ConvertLonger(0, 1024.0 / 22050.0),
    ),
    // Same as count-english: ffmpeg gives the first packet no duration and decodes one
    // AAC frame (46 ms) less than the track holds.
    (
        "aac-lc_22k_mono_3g2_frag__mutagen_no-tags.3g2",
        ConvertLonger(0, 1024.0 / 22050.0),
    ),
    (
        "aac-lc_32k_mono__taglib_nonprintable-atom-type.m4a",
        Convert(0),
    ),
    ("aac-lc_44k_stereo_music__rodio_music.m4a", Convert(0)),
    ("aac-lc_44k_stereo_LRtest__rodio_RL.m4a", Convert(0)),
    ("aac-lc_44k_stereo_gapless__alfg_audio_aac.m4a", Convert(0)),
    (
        "aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a",
        Convert(0),
    ),
    ("aac-lc_48k_stereo__lofty_m4a_codec_aac.m4a", Convert(0)),
    (
        "aac-lc_48k_stereo_20s__mp4parser_output_audio-2ch-20s.mp4",
        Convert(0),
    ),
    // 5.1 AAC: upstream symphonia 0.6.1 refuses it; the vendored patch decodes it.
    (
        "aac-lc_48k_5.1_frag_video__mediabunny_frag-buck-bunny.mp4",
        Convert(0),
    ),
    (
        "he-aac_48k_stereo_truncated__mp4parse_invalid_userdata.mp4",
        Unsupported("HE-AAC (AAC with SBR)"),
    ),
    (
        "he-aac_44k_stereo_headeronly_mvhdv1__tinytag_mvhd_version_1.m4a",
        Unsupported("HE-AAC (AAC with SBR)"),
    ),
    ("alac_44k_mono__androidx_sample_alac.mp4", Convert(0)),
    (
        "alac_44k_mono_20bit__androidx_sample_alac_20bit.mp4",
        Convert(0),
    ),
    (
        "alac_44k_stereo_itunes__musicmetadata_BethHart.m4a",
        Convert(0),
    ),
    ("mp3-in-mp4_44k_mono__tinytag_mp3_audio.m4a", Convert(0)),
    ("flac-in-mp4_96k_stereo__taglib_flac96.m4a", Convert(0)),
    (
        "pcm-sowt_44k_stereo_varsize__androidx_sowt_pcm_variable_sample_size.mp4",
        Convert(0),
    ),
    ("unsupported_opus__taglib_opus.m4a", Unsupported("opus")),
    (
        "unsupported_ac3_5.1__androidx_sample_ac3.mp4",
        Unsupported("ac-3"),
    ),
    (
        "unsupported_als__tinytag_16bit_pcm_to_als.mp4",
        Unsupported("MPEG-4 ALS (lossless)"),
    ),
    (
        "unsupported_amr-nb_3gp__androidx_bbb_mono_8kHz_amrnb.3gp",
        Unsupported("amr-nb"),
    ),
    (
        "unsupported_wma_piff_frag__mp4ff_wma_audio_dec.mp4",
        Unsupported("wma"),
    ),
    ("drm_fairplay_m4p__mp4parser_test.m4p", Drm("fairplay")),
    ("drm_cbcs_aac_frag__mp4ff_cbcs_audio.mp4", Drm("cbcs")),
    (
        "frag_aac_48k_stereo_decrypted__mp4ff_cbcs_audiodec.mp4",
        Convert(0),
    ),
    (
        "frag_aac_44k_mono_video__androidx_sample_fragmented.mp4",
        Convert(0),
    ),
    (
        "frag_aac_44k_mono_video_sidx__androidx_sample_fragmented_seekable.mp4",
        Convert(0),
    ),
    (
        "frag_aac_48k_stereo_sidx__mp4ff_bbb5s_aac_sidx.mp4",
        Convert(0),
    ),
    ("frag_aac_48k_stereo_isml__mp4ff_bbb5s_aac.isma", Convert(0)),
    (
        "frag_aac_44k_stereo_30s__bento4_audio-aac-002.mp4",
        Convert(0),
    ),
    ("dashinit_aac_48k_stereo__mp4ff_aac_init.mp4", Corrupt),
    ("dashseg_aac_48k_stereo__mp4ff_aac_1.m4s", Corrupt),
    (
        "edts_positive_shift__androidx_edit_list_positive_shift.mp4",
        Convert(0),
    ),
    (
        "edts_preroll__androidx_sample_edit_list_only_preroll_sync_sample.mp4",
        Convert(0),
    ),
    (
        "shorter-audio-than-video__androidx_sample_shorter_audio.mp4",
        Convert(0),
    ),
    ("noaudio_h264__androidx_sample_video_only.mp4", NoAudio),
    (
        "multitrack_ac3+aac__androidx_sample_ac3_aac.mp4",
        Convert(1),
    ),
    (
        "empty-video-track__androidx_sample_empty_track.mp4",
        Convert(0),
    ),
    ("short_aac_48k_mono_0.04s__mp4rust_minimal.mp4", Convert(0)),
    ("corrupt_empty_0bytes__tinytag_empty_file.m4a", Corrupt),
    ("corrupt_1byte__tinytag_invalid_file.m4a", Corrupt),
    (
        "corrupt_zero_timescale_channels__tinytag_zero_value_properties.m4a",
        Corrupt,
    ),
    // A well-formed (if truncated) moov without tracks.
    ("corrupt_64bit_85B__mutagen_64bit.mp4", NoAudio),
    ("truncated_mdat_aac_315s__tinytag_test.m4a", Corrupt),
    ("truncated_ilst-is-last__taglib_ilst-is-last.m4a", Corrupt),
    (
        "corrupt_infloop_bad_sample_size__taglib_infloop.m4a",
        Corrupt,
    ),
    (
        "corrupt_malformed_free_box__androidx_sample_malformed_free_box.mp4",
        Corrupt,
    ),
    (
        "corrupt_missing_stsd__androidx_sample_missing_stsd.mp4",
        Corrupt,
    ),
    // Its only track is video (the broken tables are the video's).
    (
        "corrupt_chunk_out_of_range__mp4parse_chunk_out_of_range.mp4",
        NoAudio,
    ),
    (
        "corrupt_bad_mdhd_timescale__mp4parse_test_case_1185230.mp4",
        Corrupt,
    ),
    (
        "corrupt_large_stbl_truncated__androidx_large_stbl_truncated_after_moov.m4b",
        Corrupt,
    ),
    ("corrupt_aac_payload__musicmetadata_issue-133.m4a", Corrupt),
    (
        "corrupt_aac_payload_64bit-sizes__tinytag_mp4_extended_size.m4a",
        Corrupt,
    ),
    (
        "real_iphone_voice_memo__musicmetadata_Apple_voice_memo.m4a",
        Convert(0),
    ),
    (
        "real_iphone_hevc_hdr__androidx_dolbyVision-hdr.MOV",
        Convert(0),
    ),
    (
        "real_old_phone_3gp__mp4parser_MOV00006.3gp",
        Unsupported("amr-nb"),
    ),
    ("real_video_aac__rodio_monkeys.mp4a", Convert(0)),
    ("qt_brand_aac_truncated__gomp4_sample_qt.mp4", Corrupt),
    ("m4v_aac_video__taglib_blank_video.m4v", Convert(0)),
];

/// True, or the test fails saying ffmpeg is missing: `make test` never passes by
/// skipping what it cannot check (`make setup` installs ffmpeg).
fn have_ffmpeg() -> bool {
    let runs = Command::new("ffmpeg")
        .arg("-version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok();
    assert!(
        runs,
        "ffmpeg is missing: run `make setup` (it installs ffmpeg)"
    );
    true
}

/// `MEDIA/name`, always `Some`: a missing corpus or ffmpeg fails the test.
fn media(name: &str) -> Option<PathBuf> {
    let dir = Path::new(MEDIA);
    assert!(dir.is_dir(), "the test media are missing: {MEDIA}");
    have_ffmpeg();
    Some(dir.join(name))
}

/// Decodes audio stream `stream` of `path` with ffmpeg: (seconds, peak |sample| over all
/// channels).
fn ffmpeg_decode(path: &Path, stream: usize) -> (f64, f32) {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", &format!("a:{stream}")])
        .args([
            "-show_entries",
            "stream=sample_rate,channels",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    let mut fields = text.trim().split(',');
    let rate: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .expect("a sample rate");
    let channels: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .expect("a channel count");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            &format!("0:a:{stream}"),
            "-c:a",
            "pcm_f32le",
            "-f",
            "f32le",
            "-",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ffmpeg runs");
    let samples: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    (samples.len() as f64 / channels / rate, peak)
}

fn run(path: &Path, options: &Options) -> (Result<Summary, ConvertError>, Vec<u8>) {
    let mut source = FileSource::open(path).expect("media file opens");
    let mut sink = VecSink::default();
    let mut last = 0.0f32;
    let mut calls = 0;
    let result = convert(&mut source, &mut sink, options, &mut |f| {
        assert!(f >= last, "progress went backwards: {last} → {f}");
        last = f;
        calls += 1;
    });
    assert!(calls <= 110, "{calls} progress reports");
    if result.is_ok() {
        assert_eq!(last, 1.0, "progress must end at 1.0");
    }
    (result, sink.bytes)
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".mp3")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut file, bytes).expect("temp write");
    file
}

/// Checks one corpus file against its expectation; returns a problem description.
fn check(name: &str, expect: Expect) -> Option<String> {
    let path = media(name)?;
    let (result, bytes) = run(&path, &Options::default());
    match (expect, result) {
        (Convert(stream) | ConvertLonger(stream, _), Ok(summary)) => {
            let (mut want, source_peak) = ffmpeg_decode(&path, stream);
            if let ConvertLonger(_, extra) = expect {
                want += extra;
            }
            let mp3 = write_temp(&bytes);
            let (got, peak) = ffmpeg_decode(mp3.path(), 0);
            let mut problems = Vec::new();
            if (got - want).abs() > TOLERANCE_S {
                problems.push(format!(
                    "duration {got:.4}s, ffmpeg decodes {want:.4}s from the source"
                ));
            }
            let claimed = summary.output_frames as f64 / summary.output_sample_rate as f64;
            if (claimed - got).abs() > TOLERANCE_S {
                problems.push(format!(
                    "summary says {claimed:.4}s, the MP3 decodes {got:.4}s"
                ));
            }
            // Some corpus files are digital silence; the MP3 must be audible when they are not.
            if source_peak > 1e-2 && peak < source_peak * 0.1 {
                problems.push(format!(
                    "silent output (peak {peak}, source peak {source_peak})"
                ));
            }
            if summary.output_bytes != bytes.len() as u64 {
                problems.push("summary output_bytes differs from the bytes written".into());
            }
            (!problems.is_empty()).then(|| format!("{name}: {}", problems.join("; ")))
        }
        (Convert(_) | ConvertLonger(..), Err(e)) => {
            Some(format!("{name}: expected a conversion, got {e:?}"))
        }
        (expect, Ok(_)) => Some(format!("{name}: expected {expect:?}, but it converted")),
        (expect, Err(e)) => {
            eprintln!("{name}: {e}");
            let ok = match (&expect, &e) {
                (NoAudio, ConvertError::NoAudioTrack) => true,
                (Unsupported(want), ConvertError::UnsupportedCodec(got)) => got == want,
                (Drm(want), ConvertError::DrmProtected(got)) => got == want,
                (Corrupt, ConvertError::CorruptInput(_)) => true,
                _ => false,
            };
            if !bytes.is_empty() {
                return Some(format!(
                    "{name}: failed with {e:?} but wrote {} bytes",
                    bytes.len()
                ));
            }
            (!ok).then(|| format!("{name}: expected {expect:?}, got {e:?}"))
        }
    }
}

#[test]
fn corpus_table_covers_every_media_file() {
    let entries = std::fs::read_dir(MEDIA)
        .unwrap_or_else(|e| panic!("the test media are missing: {MEDIA}: {e}"));
    for entry in entries {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".tsv") || name.ends_with(".md") {
            continue;
        }
        assert!(
            TABLE.iter().any(|(n, _)| *n == name),
            "{name} has no expected outcome"
        );
    }
}

/// The corpus in a few shards so the test harness runs them in parallel.
fn check_shard(shard: usize, of: usize) {
    let problems: Vec<String> = TABLE
        .iter()
        .enumerate()
        .filter(|(i, _)| i % of == shard)
        .filter_map(|(_, (name, expect))| check(name, *expect))
        .collect();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn corpus_shard_0() {
    check_shard(0, 4);
}
#[test]
fn corpus_shard_1() {
    check_shard(1, 4);
}
#[test]
fn corpus_shard_2() {
    check_shard(2, 4);
}
#[test]
fn corpus_shard_3() {
    check_shard(3, 4);
}

fn convert_ok(name: &str, options: &Options) -> Option<(Summary, tempfile::NamedTempFile)> {
    let path = media(name)?;
    let (result, bytes) = run(&path, options);
    let summary = result.unwrap_or_else(|e| panic!("{name} with {options:?}: {e}"));
    Some((summary, write_temp(&bytes)))
}

fn probe_stream(path: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            entries,
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn mono_option_downmixes() {
    let Some((summary, mp3)) = convert_ok(
        "aac-lc_44k_stereo_LRtest__rodio_RL.m4a",
        &Options {
            mono: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    assert_eq!(summary.output_channels, 1);
    assert!(probe_stream(mp3.path(), "stream=channels").contains("channels=1"));
}

#[test]
fn vbr_mode_writes_a_vbr_stream_of_the_right_length() {
    let name = "aac-lc_44k_stereo_music__rodio_music.m4a";
    let Some((_, mp3)) = convert_ok(
        name,
        &Options {
            mode: Mode::Vbr(4),
            ..Options::default()
        },
    ) else {
        return;
    };
    let (want, _) = ffmpeg_decode(&media(name).expect("checked"), 0);
    let (got, peak) = ffmpeg_decode(mp3.path(), 0);
    assert!((got - want).abs() <= TOLERANCE_S, "{got} vs {want}");
    assert!(peak > 1e-3);
    let bytes = std::fs::read(mp3.path()).expect("read back");
    assert!(
        bytes.windows(4).any(|w| w == b"Xing"),
        "VBR stream has a Xing header"
    );
}

#[test]
fn rate_96k_becomes_48k() {
    let Some((summary, mp3)) = convert_ok(
        "flac-in-mp4_96k_stereo__taglib_flac96.m4a",
        &Options::default(),
    ) else {
        return;
    };
    assert_eq!(
        (summary.input_sample_rate, summary.output_sample_rate),
        (96000, 48000)
    );
    assert!(probe_stream(mp3.path(), "stream=sample_rate").contains("sample_rate=48000"));
}

#[test]
fn explicit_rate_and_bitrate_mismatch_is_invalid() {
    let Some(path) = media("aac-lc_44k_stereo_music__rodio_music.m4a") else {
        return;
    };
    let options = Options {
        mode: Mode::Cbr(320),
        sample_rate: Some(8000),
        ..Options::default()
    };
    let (result, bytes) = run(&path, &options);
    assert!(
        matches!(result, Err(ConvertError::InvalidOptions(_))),
        "{result:?}"
    );
    assert!(bytes.is_empty());
}

#[test]
fn trim_keeps_the_requested_range() {
    let trim = Trim {
        start_ms: 2000,
        end_ms: Some(5500),
    };
    let Some((summary, mp3)) = convert_ok(
        "aac-lc_44k_stereo_music__rodio_music.m4a",
        &Options {
            trim: Some(trim),
            ..Options::default()
        },
    ) else {
        return;
    };
    let (got, peak) = ffmpeg_decode(mp3.path(), 0);
    assert!((got - 3.5).abs() <= TOLERANCE_S, "{got}");
    assert!((summary.duration_ms as i64 - 3500).abs() <= 26);
    assert!(peak > 1e-3);
}

#[test]
fn trim_past_the_end_is_invalid() {
    let Some(path) = media("aac-lc_44k_stereo_music__rodio_music.m4a") else {
        return;
    };
    let trim = Trim {
        start_ms: 60_000,
        end_ms: None,
    };
    let (result, bytes) = run(
        &path,
        &Options {
            trim: Some(trim),
            ..Options::default()
        },
    );
    assert!(
        matches!(result, Err(ConvertError::InvalidOptions(_))),
        "{result:?}"
    );
    assert!(bytes.is_empty());
}

/// A full-scale 440 Hz tone in all six channels of a 5.1 ALAC file: an unnormalised
/// ITU fold would reach 2.4× full scale; ours must stay at about 1.
#[test]
fn five_one_downmix_is_stereo_and_does_not_clip() {
    if media("").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("5.1.m4a");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=2:sample_rate=48000,volume=7.9",
        ])
        .args([
            "-filter_complex",
            "[0]asplit=6[a][b][c][d][e][f];[a][b][c][d][e][f]join=inputs=6:channel_layout=5.1[o]",
        ])
        .args(["-map", "[o]", "-c:a", "alac"])
        .arg(&src)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let (result, bytes) = run(&src, &Options::default());
    let summary = result.expect("5.1 ALAC converts");
    assert_eq!((summary.input_channels, summary.output_channels), (6, 2));
    let mp3 = write_temp(&bytes);
    let (seconds, peak) = ffmpeg_decode(mp3.path(), 0);
    assert!((seconds - 2.0).abs() <= TOLERANCE_S, "{seconds}");
    assert!(peak > 0.8 && peak < 1.1, "peak {peak}");
}

#[test]
fn tags_round_trip_through_ffprobe() {
    let name = "alac_44k_stereo_itunes__musicmetadata_BethHart.m4a";
    let Some((_, mp3)) = convert_ok(name, &Options::default()) else {
        return;
    };
    let tags = |p: &Path| {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format_tags=title,artist,album",
                "-of",
                "default=nw=1",
            ])
            .arg(p)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ffprobe runs");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.to_lowercase())
            .collect();
        lines.sort();
        lines
    };
    let want = tags(&media(name).expect("checked"));
    assert!(
        want.iter().any(|l| l.starts_with("tag:title=")),
        "source has a title: {want:?}"
    );
    assert_eq!(tags(mp3.path()), want);
}

#[test]
fn cover_art_becomes_an_attached_picture() {
    let Some((_, mp3)) = convert_ok(
        "aac-lc_8k_mono_coverart__tinytag_mpeg4_with_image.m4a",
        &Options::default(),
    ) else {
        return;
    };
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name:stream_disposition=attached_pic",
        ])
        .args(["-of", "csv=p=0"])
        .arg(mp3.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("video") && l.ends_with(",1")),
        "{text}"
    );
}

#[test]
fn output_limit_becomes_output_too_large() {
    let Some(path) = media("aac-lc_44k_stereo_music__rodio_music.m4a") else {
        return;
    };
    let mut source = FileSource::open(&path).expect("opens");
    let mut sink = VecSink {
        limit: Some(50_000),
        ..VecSink::default()
    };
    let result = convert(&mut source, &mut sink, &Options::default(), &mut |_| {});
    assert_eq!(result, Err(ConvertError::OutputTooLarge(50_000)));
}

/// Native speed on the 213 s song (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_long_song() {
    let Some(path) = media("aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a") else {
        return;
    };
    let started = std::time::Instant::now();
    let (result, bytes) = run(&path, &Options::default());
    let summary = result.expect("converts");
    eprintln!(
        "{} ms of audio → {} bytes in {:?}",
        summary.duration_ms,
        bytes.len(),
        started.elapsed()
    );
}

/// Counts live heap bytes so tests can bound the converter's memory natively (a proxy
/// for guest linear memory; LAME's own C allocations, a fixed ~0.3 MiB, are not seen).
struct PeakAlloc;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// A generated 60-minute AAC file converts with a bounded heap (run alone, with
/// `--ignored --nocapture`: other tests running at the same time would add to the count).
#[test]
#[ignore]
fn memory_stays_bounded_for_an_hour_of_audio() {
    if media("").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("hour.m4a");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=3600:sample_rate=44100",
        ])
        .args(["-ac", "2", "-c:a", "aac", "-b:a", "32k"])
        .arg(&src)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let mut source = FileSource::open(&src).expect("opens");
    let before = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    PEAK.store(before, std::sync::atomic::Ordering::Relaxed);
    // Count the converter's own memory, not the output buffer's: write to a counting sink.
    struct CountingSink(u64);
    impl crate::WriteSink for CountingSink {
        fn write(&mut self, bytes: &[u8]) -> Result<(), crate::IoError> {
            self.0 += bytes.len() as u64;
            Ok(())
        }
        fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), crate::IoError> {
            Ok(())
        }
    }
    let mut counting = CountingSink(0);
    let started = std::time::Instant::now();
    let summary =
        convert(&mut source, &mut counting, &Options::default(), &mut |_| {}).expect("converts");
    let peak = PEAK.load(std::sync::atomic::Ordering::Relaxed) - before;
    eprintln!(
        "{} s of audio, {} MP3 bytes, in {:?}; peak heap {:.2} MiB",
        summary.duration_ms / 1000,
        counting.0,
        started.elapsed(),
        peak as f64 / (1 << 20) as f64
    );
    assert!(peak < 8 << 20, "peak heap {peak} bytes");
}

/// symphonia's own wording ("unsupported feature: aac: predictor data") never reaches a
/// failure reason: every corpus failure says what is wrong in words (see `reasons`).
#[test]
fn failure_reasons_carry_no_decoder_internals() {
    for (name, expect) in TABLE {
        if matches!(expect, Convert(_) | ConvertLonger(..)) {
            continue;
        }
        let Some(path) = media(name) else { return };
        let (result, _) = run(&path, &Options::default());
        let reason = result.expect_err(name).to_string();
        for internal in [
            "unsupported feature:",
            "malformed stream:",
            "aac:",
            "decoder:",
        ] {
            assert!(!reason.contains(internal), "{name}: {reason}");
        }
    }
    let Some(path) = media("corrupt_aac_payload__musicmetadata_issue-133.m4a") else {
        return;
    };
    let (result, _) = run(&path, &Options::default());
    assert_eq!(
        result.unwrap_err(),
        ConvertError::CorruptInput(
            "the AAC audio is damaged or uses AAC Main-profile prediction, which is not supported"
                .into()
        )
    );
}

/// Truncated and byte-flipped variants of valid files: every run ends in a result
/// (never a panic, which in the guest is a trap), and a success is never empty.
#[test]
fn damaged_inputs_fail_cleanly() {
    let names = [
        "aac-lc_16k_mono__androidx_bbb_1ch_16kHz_aac.mp4",
        "alac_44k_mono__androidx_sample_alac.mp4",
        "flac-in-mp4_96k_stereo__taglib_flac96.m4a",
        "aac-lc_22k_mono_video_frag__bento4_video-h264-002.mp4",
        "mp3-in-mp4_44k_mono__tinytag_mp3_audio.m4a",
        "aac-lc_44k_stereo_gapless__alfg_audio_aac.m4a",
        "alac_44k_stereo_itunes__musicmetadata_BethHart.m4a",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in names {
        let Some(path) = media(name) else { return };
        let original = std::fs::read(&path).expect("readable");
        let mut variants: Vec<Vec<u8>> = [1, 3, 5, 7, 9]
            .iter()
            .map(|tenth| original[..original.len() * tenth / 10].to_vec())
            .collect();
        for _ in 0..40 {
            let mut bytes = original.clone();
            for _ in 0..8 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            variants.push(bytes);
        }
        for bytes in variants {
            let mut source = crate::SliceSource { bytes: &bytes };
            let mut sink = VecSink::default();
            if convert(&mut source, &mut sink, &Options::default(), &mut |_| {}).is_ok() {
                assert!(
                    sink.bytes.len() > 1000,
                    "{name}: success with {} bytes",
                    sink.bytes.len()
                );
            }
        }
    }
}
