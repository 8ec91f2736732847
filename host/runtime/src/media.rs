//! How long an upload's audio is, read from its container without decoding: the movie
//! header (`moov/mvhd`) of an ISO-BMFF file (MP4, M4A, MOV, 3GP), by the bounded walk the
//! gateway uses too ([`tapedeck_model::iso_bmff`]). Used to size a conversion's CPU
//! allowance before the converter runs. Also what the host counts of an MP3 from its
//! frame headers.
//!
//! The files are untrusted and this runs natively in the host, so every read is bounded
//! and the walks visit at most [`MAX_BOXES`] boxes or [`MAX_MP3_FRAMES`] frames;
//! anything odd answers `None` (the caller then uses its ceiling). A file that lies about
//! its length gets at most that ceiling.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use futures::FutureExt;
use tapedeck_model::iso_bmff::Probe;

/// Boxes visited before giving up (a real file has a handful at the top level).
pub const MAX_BOXES: usize = 4096;

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Option<()> {
    file.read_exact_at(buf, offset).ok()
}

/// The presentation length in `moov/mvhd`, if the file has one that says it.
pub fn iso_bmff_duration(file: &File) -> Option<Duration> {
    let size = file.metadata().ok()?.len();
    // A file's reads are ready at once: the walk never waits.
    Probe::new(file, size, MAX_BOXES)
        .duration()
        .now_or_never()
        .flatten()
}

/// One MPEG audio Layer III frame header: its length in bytes and in samples per channel.
fn mp3_frame(h: [u8; 4]) -> Option<(u64, u64, u32, u32)> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 1: Layer III
    if version == 1 || layer != 1 {
        return None;
    }
    let (bitrate_idx, rate_idx, padding) = (
        (h[2] >> 4) as usize,
        ((h[2] >> 2) & 3) as usize,
        (h[2] >> 1) & 1,
    );
    if bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
        return None;
    }
    const V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let (kbps, rate, samples) = match version {
        3 => (V1[bitrate_idx], [44_100, 48_000, 32_000][rate_idx], 1152u64),
        2 => (V2[bitrate_idx], [22_050, 24_000, 16_000][rate_idx], 576),
        _ => (V2[bitrate_idx], [11_025, 12_000, 8_000][rate_idx], 576),
    };
    let bytes = samples / 8 * kbps as u64 * 1000 / rate as u64 + padding as u64;
    Some((bytes, samples, rate, kbps))
}

/// Frames a file may have before the walk gives up (a day of 8 kHz audio is ~1.2 M).
pub const MAX_MP3_FRAMES: u64 = 4_000_000;

/// The length of an MP3 file, counted from its frame headers by the host — the
/// converter's summary is the guest's word. Skips an ID3v2 tag and the Xing/Info frame
/// an encoder puts first; stops at the first thing that is not a frame (an ID3v1 tag,
/// garbage). `None` if there is no frame at all. Every read is bounded; at most
/// [`MAX_MP3_FRAMES`] frames are visited.
pub fn mp3_duration(file: &File) -> Option<Duration> {
    mp3_info(file).map(|i| i.duration)
}

/// What the host can tell of an MP3 from its frame headers and side information,
/// without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp3Info {
    /// Audio frames × samples per frame ÷ rate (the Xing/Info frame not counted).
    pub duration: Duration,
    pub sample_rate: u32,
    /// 1 (the frames' channel mode is mono) or 2.
    pub channels: u8,
    /// The bitrates the frames use, kbit/s, ascending (one for CBR, several for VBR).
    pub bitrates: Vec<u32>,
    /// The first frame is an encoder's Xing (VBR) or Info (CBR) header.
    pub xing: Option<&'static str>,
    /// Some granule codes data (`part2_3_length > 0`): the MP3 is not pure silence.
    pub audible: bool,
}

/// [`mp3_duration`], with the rest of [`Mp3Info`]. Same bounds.
pub fn mp3_info(file: &File) -> Option<Mp3Info> {
    let len = file.metadata().ok()?.len();
    let mut offset = 0u64;
    let mut head = [0u8; 10];
    if read_exact_at(file, &mut head, 0).is_some() && &head[..3] == b"ID3" {
        let size = head[6..10]
            .iter()
            .fold(0u64, |n, b| (n << 7) | (*b & 0x7F) as u64);
        let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
        offset = 10 + size + footer;
    }
    let (mut samples_total, mut rate, mut frames) = (0u64, 0u32, 0u64);
    let (mut channels, mut bitrates, mut xing, mut audible) = (2u8, Vec::new(), None, false);
    let mut trim = 0u64;
    while offset + 4 <= len && frames < MAX_MP3_FRAMES {
        let mut h = [0u8; 4];
        read_exact_at(file, &mut h, offset)?;
        let Some((bytes, samples, r, kbps)) = mp3_frame(h) else {
            break;
        };
        if rate != 0 && r != rate {
            break;
        }
        rate = r;
        let mono = h[3] >> 6 == 3;
        channels = if mono { 1 } else { 2 };
        let mut body = vec![0u8; bytes.min(if frames == 0 { 256 } else { 64 }) as usize];
        let have_body = read_exact_at(file, &mut body, offset).is_some();
        // The first frame may be the encoder's Xing/Info frame (no audio).
        let info = frames == 0
            && have_body
            && match body.windows(4).position(|w| w == b"Xing" || w == b"Info") {
                Some(at) => {
                    xing = Some(if &body[at..at + 4] == b"Xing" {
                        "Xing"
                    } else {
                        "Info"
                    });
                    trim = lame_trim(&body[at..]);
                    true
                }
                None => false,
            };
        if !info {
            samples_total += samples;
            if !bitrates.contains(&kbps) {
                bitrates.push(kbps);
            }
            if have_body && !audible {
                audible = granule_codes_data(&body, h, mono);
            }
        }
        frames += 1;
        offset += bytes.max(1);
    }
    if rate == 0 || samples_total == 0 {
        return None;
    }
    bitrates.sort_unstable();
    // The encoder's delay and padding, when its LAME tag gives them, are not audio.
    let samples = samples_total.saturating_sub(trim).max(1);
    Some(Mp3Info {
        duration: Duration::from_secs_f64(samples as f64 / rate as f64),
        sample_rate: rate,
        channels,
        bitrates,
        xing,
        audible,
    })
}

/// The encoder delay + padding of a LAME tag following a Xing/Info header (`xing`
/// starts at the `Xing`/`Info` tag), in samples; 0 without one.
fn lame_trim(xing: &[u8]) -> u64 {
    let flags = match xing.get(4..8) {
        Some(f) => u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
        None => return 0,
    };
    // Frames (4 bytes), bytes (4), TOC (100), quality (4), as the flags say.
    let mut at = 8;
    for (bit, len) in [(1, 4), (2, 4), (4, 100), (8, 4)] {
        if flags & bit != 0 {
            at += len;
        }
    }
    match xing.get(at..at + 24) {
        Some(tag) if tag.starts_with(b"LAME") || tag.starts_with(b"Lavc") => {
            let d = &tag[21..24];
            let delay = ((d[0] as u64) << 4) | (d[1] as u64 >> 4);
            let padding = (((d[1] & 0x0F) as u64) << 8) | d[2] as u64;
            delay + padding
        }
        _ => 0,
    }
}

/// Whether the first granule of the first channel codes any data: its
/// `part2_3_length` (12 bits in the side information) is not zero.
fn granule_codes_data(frame: &[u8], h: [u8; 4], mono: bool) -> bool {
    let mpeg1 = (h[1] >> 3) & 3 == 3;
    let crc = if h[1] & 1 == 0 { 2 } else { 0 };
    // main_data_begin, private bits, scfsi (MPEG-1 only).
    let skip = match (mpeg1, mono) {
        (true, true) => 9 + 5 + 4,
        (true, false) => 9 + 3 + 8,
        (false, true) => 8 + 1,
        (false, false) => 8 + 2,
    };
    let start = (4 + crc) * 8 + skip;
    let bit = |i: usize| frame.get(i / 8).is_some_and(|b| b >> (7 - i % 8) & 1 == 1);
    (start..start + 12).any(bit)
}

/// Whether an MP3 of `decoded` length is a faithful conversion of audio `input` long:
/// within 1 s or 5 %, whichever is more (encoder delay and padding, priming, a video
/// track longer than the audio in the container's header).
pub fn lengths_agree(input: Duration, decoded: Duration) -> bool {
    let (i, d) = (input.as_secs_f64(), decoded.as_secs_f64());
    (i - d).abs() <= (i * 0.05).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A silent MPEG-1 Layer III frame, 128 kbit/s, 44.1 kHz, stereo: 417 bytes.
    fn silent_frame() -> Vec<u8> {
        let mut f = vec![0xFF, 0xFB, 0x90, 0x00];
        f.resize(417, 0);
        f
    }

    #[test]
    fn mp3_length_is_counted_from_frames() {
        let mut bytes = b"ID3\x03\0\0\0\0\0\x05hello".to_vec();
        let mut info = silent_frame();
        info[36..40].copy_from_slice(b"Info");
        bytes.extend(info);
        for _ in 0..100 {
            bytes.extend(silent_frame());
        }
        bytes.extend(b"TAG".iter().copied().chain(std::iter::repeat_n(0, 125)));
        let d = mp3_duration(file_of(&bytes).as_file()).unwrap();
        assert!(
            (d.as_secs_f64() - 100.0 * 1152.0 / 44100.0).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(mp3_duration(file_of(b"not an mp3 at all").as_file()), None);
        assert_eq!(mp3_duration(file_of(&[0xFF, 0xFB]).as_file()), None);
    }

    #[test]
    fn lengths_agree_within_a_second_or_five_percent() {
        let s = Duration::from_secs_f64;
        assert!(lengths_agree(s(2.0), s(2.9)));
        assert!(!lengths_agree(s(2.0), s(3.1)));
        assert!(lengths_agree(s(100.0), s(104.0)));
        assert!(!lengths_agree(s(100.0), s(94.0)));
    }

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    fn mvhd_v0(timescale: u32, duration: u32) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&timescale.to_be_bytes());
        p.extend_from_slice(&duration.to_be_bytes());
        p.resize(100, 0);
        boxed(b"mvhd", &p)
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn reads_mvhd_after_other_boxes() {
        let mut bytes = boxed(b"ftyp", b"M4A \0\0\0\0");
        bytes.extend(boxed(b"mdat", &[7u8; 1000]));
        let mut moov = boxed(b"udta", b"xx");
        moov.extend(mvhd_v0(1000, 90_500));
        bytes.extend(boxed(b"moov", &moov));
        let f = file_of(&bytes);
        assert_eq!(
            iso_bmff_duration(f.as_file()),
            Some(Duration::from_millis(90_500))
        );
    }

    #[test]
    fn version_1_headers_are_read() {
        let mut p = vec![1u8, 0, 0, 0];
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&48_000u32.to_be_bytes());
        p.extend_from_slice(&(48_000u64 * 3 * 3600).to_be_bytes());
        let bytes = boxed(b"moov", &boxed(b"mvhd", &p));
        let f = file_of(&bytes);
        assert_eq!(
            iso_bmff_duration(f.as_file()),
            Some(Duration::from_secs(3 * 3600))
        );
    }

    #[test]
    fn odd_files_have_no_duration() {
        // No moov; a box claiming more than the file; zero timescale; unknown length.
        for bytes in [
            boxed(b"ftyp", b"isom"),
            [&u32::MAX.to_be_bytes()[..], b"moov"].concat(),
            boxed(b"moov", &mvhd_v0(0, 5)),
            boxed(b"moov", &mvhd_v0(1000, u32::MAX)),
            b"\0\0".to_vec(),
        ] {
            assert_eq!(iso_bmff_duration(file_of(&bytes).as_file()), None);
        }
    }

    #[test]
    fn real_media_has_its_length() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/media/aac-lc_44k_stereo_LRtest__rodio_RL.m4a");
        let file = File::open(&path)
            .unwrap_or_else(|e| panic!("the test medium is missing: {}: {e}", path.display()));
        let d = iso_bmff_duration(&file).expect("a real M4A has a duration");
        assert!(
            d > Duration::from_millis(100) && d < Duration::from_secs(600),
            "{d:?}"
        );
    }
}
