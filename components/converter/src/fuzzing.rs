//! The fuzz targets' bodies (`components/converter/fuzz`, cargo-fuzz on nightly), and the
//! replay of every input they found a problem with (`fuzz/regressions/<target>/`) as a
//! stable-toolchain test.
//!
//! Each body runs one input through a part of the native core and asserts what must hold
//! for any input: no panic (in the guest, a trap), every result a `ConvertError` or a
//! sound output. libFuzzer adds the limits: > 10 s for a 1 MiB input is a hang, > 2 GiB
//! of memory an out-of-memory.
//!
//! Only in test builds and with the `fuzzing` feature; never in the component.

use crate::io::{SliceSource, VecSink, WindowedReader};
use crate::options::{Id3Version, Options};
use crate::{id3, mp4};

/// The MP4 reader: our own `moov` walk (boxes, sample tables, sample entries, tags).
pub fn mp4_reader(bytes: &[u8]) {
    let mut source = SliceSource { bytes };
    let mut reader = WindowedReader::new(&mut source, 256 << 10);
    if let Ok(movie) = mp4::read_movie(&mut reader) {
        for track in &movie.tracks {
            let _ = track.codec();
        }
    }
}

/// The MP3 output bound for one fuzz input: far above what 1 MiB of input can make
/// legitimately at the default bitrate, low enough that an input claiming hours of audio
/// ends as `OutputTooLarge` instead of running for minutes.
const OUTPUT_LIMIT: u64 = 16 << 20;

/// Demux, decode, downmix, encode, tag: the whole conversion, with the default options
/// and, chosen by the input's length, mono, 8 kHz, VBR or ID3v2.3.
pub fn convert(bytes: &[u8]) {
    let mut options = Options::default();
    match bytes.len() % 4 {
        1 => options.mono = true,
        2 => options.sample_rate = Some(8000),
        3 => {
            options.mode = crate::Mode::Vbr(5);
            options.id3_version = Id3Version::V23;
        }
        _ => {}
    }
    let mut sink = VecSink {
        limit: Some(OUTPUT_LIMIT),
        ..VecSink::default()
    };
    let result = crate::convert(&mut SliceSource { bytes }, &mut sink, &options, &mut |f| {
        assert!((0.0..=1.0).contains(&f), "progress {f}");
    });
    if let Ok(summary) = result {
        assert_eq!(summary.output_bytes, sink.bytes.len() as u64);
        assert!(!sink.bytes.is_empty(), "a success wrote nothing");
        assert!(matches!(summary.output_channels, 1 | 2));
    }
}

/// The ID3 writer, over the tags the MP4 reader finds in the input: both versions'
/// tags must parse back frame by frame.
pub fn id3_writer(bytes: &[u8]) {
    let mut source = SliceSource { bytes };
    let mut reader = WindowedReader::new(&mut source, 256 << 10);
    let Ok(movie) = mp4::read_movie(&mut reader) else {
        return;
    };
    for version in [Id3Version::V23, Id3Version::V24] {
        if let Some(tag) = id3::encode(&movie.tags, version) {
            check_id3(&tag, version);
        }
    }
}

/// Panics unless `tag` is a well-formed ID3v2 tag of `version`: its size says its
/// length, its frames fill it exactly, each with a valid id and the version's size
/// encoding, and text frames start with the version's encoding byte.
fn check_id3(tag: &[u8], version: Id3Version) {
    let major = match version {
        Id3Version::V23 => 3,
        Id3Version::V24 => 4,
    };
    assert_eq!(&tag[..5], &[b'I', b'D', b'3', major, 0]);
    assert!(tag[6..10].iter().all(|&b| b < 0x80), "size not syncsafe");
    let syncsafe = |b: &[u8]| b.iter().fold(0usize, |a, &x| (a << 7) | x as usize);
    assert_eq!(syncsafe(&tag[6..10]) + 10, tag.len());
    let mut at = 10;
    while at < tag.len() {
        let id = &tag[at..at + 4];
        assert!(
            id.iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "frame id {id:?}"
        );
        let size = match version {
            Id3Version::V23 => u32::from_be_bytes(tag[at + 4..at + 8].try_into().expect("4")),
            Id3Version::V24 => {
                assert!(tag[at + 4..at + 8].iter().all(|&b| b < 0x80));
                syncsafe(&tag[at + 4..at + 8]) as u32
            }
        } as usize;
        let body = &tag[at + 10..at + 10 + size];
        if id[0] == b'T' || id == b"COMM" || id == b"USLT" || id == b"APIC" {
            let encoding = match version {
                Id3Version::V23 => 1,
                Id3Version::V24 => 3,
            };
            assert_eq!(body[0], encoding, "{id:?}");
            if version == Id3Version::V23 && id[0] == b'T' && id != b"TXXX" {
                assert_eq!(&body[1..3], &[0xff, 0xfe], "UTF-16 without BOM");
                assert_eq!(body.len() % 2, 1, "odd UTF-16");
            }
        }
        at += 10 + size;
    }
    assert_eq!(at, tag.len());
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");

    /// Every input a fuzzer found a crash, hang or out-of-memory with, replayed through
    /// the same target on the stable toolchain: it must now end cleanly, within the
    /// fuzzers' 10-second hang limit.
    #[test]
    fn fuzz_regressions_replay_cleanly() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 3] = [
            ("mp4_reader", super::mp4_reader),
            ("convert", super::convert),
            ("id3_writer", super::id3_writer),
        ];
        let mut replayed = 0;
        for (target, run) in targets {
            let dir = Path::new(REGRESSIONS).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.extension().is_some_and(|e| e == "md") {
                    continue;
                }
                let bytes = std::fs::read(&path).expect("readable");
                let started = Instant::now();
                run(&bytes);
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(10),
                    "{}: {took:?}",
                    path.display()
                );
                replayed += 1;
            }
        }
        eprintln!("{replayed} fuzz regression inputs replayed");
    }

    /// The targets accept the generated inputs (the fuzzers' seeds besides the corpus).
    #[test]
    fn the_targets_run_on_the_generated_inputs() {
        for (_, bytes) in crate::testgen::inputs() {
            super::mp4_reader(&bytes);
            super::id3_writer(&bytes);
        }
    }
}
