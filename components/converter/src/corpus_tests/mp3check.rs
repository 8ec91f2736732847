//! Second opinions on an MP3 the converter wrote, besides ffmpeg's: symphonia's decoder
//! (honouring the LAME tag's delay and padding), a walk over every frame header that
//! checks the LAME/Xing tag against the frames, and `mp3val` where it is installed.

use std::process::Command;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};

use crate::mpa::FrameHeader;

/// What a decoder made of an MP3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decoded {
    /// PCM frames per channel after the LAME tag's delay and padding are removed.
    pub frames: u64,
    pub rate: u32,
    pub channels: usize,
    pub peak: f32,
}

/// Where the audio starts: after an ID3v2 tag, if any.
fn audio_start(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"ID3") && bytes.len() >= 10 {
        let footer = if bytes[5] & 0x10 != 0 { 10 } else { 0 };
        10 + footer
            + bytes[6..10]
                .iter()
                .fold(0usize, |a, &b| (a << 7) | (b & 0x7f) as usize)
    } else {
        0
    }
}

/// Decodes with symphonia's MP3 reader and decoder (a second decoder beside ffmpeg).
pub(crate) fn symphonia_decode(bytes: &[u8]) -> Result<Decoded, String> {
    let audio = bytes[audio_start(bytes).min(bytes.len())..].to_vec();
    let mss = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(audio)),
        MediaSourceStreamOptions::default(),
    );
    let mut reader = symphonia::default::formats::MpaReader::try_new(mss, FormatOptions::default())
        .map_err(|e| format!("symphonia cannot open the MP3: {e}"))?;
    let Some(CodecParameters::Audio(params)) = reader.tracks()[0].codec_params.clone() else {
        return Err("symphonia finds no audio".into());
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format!("symphonia has no decoder: {e}"))?;
    let mut out = Decoded {
        frames: 0,
        rate: params.sample_rate.unwrap_or(0),
        channels: params.channels.as_ref().map_or(0, |c| c.count()),
        peak: 0.0,
    };
    let mut planes: Vec<Vec<f32>> = Vec::new();
    while let Some(packet) = reader
        .next_packet()
        .map_err(|e| format!("symphonia: {e}"))?
    {
        // The decoder applies the packet's trim (the LAME tag's delay and padding).
        let buf = decoder
            .decode(&packet)
            .map_err(|e| format!("symphonia cannot decode a frame: {e}"))?;
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        for p in &planes {
            out.peak = p.iter().fold(out.peak, |m, s| m.max(s.abs()));
        }
        out.frames += buf.frames() as u64;
    }
    Ok(out)
}

/// What the frame walk found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Structure {
    /// Audio frames (the LAME/Xing tag frame not counted).
    pub frames: usize,
    pub rate: u32,
    /// Bitrates of the audio frames, in order of first appearance.
    pub bitrates: Vec<u32>,
    /// The LAME tag's encoder delay and padding.
    pub delay: u32,
    pub padding: u32,
}

/// CRC-16 as the LAME tag uses it (polynomial 0x8005, reflected, initial 0).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Walks every frame: each header valid and of the same rate, the frames back to back to
/// the end of the file, a LAME tag whose frame count and CRC match; then `mp3val`, if
/// installed, must report no problem.
pub(crate) fn check_structure(bytes: &[u8]) -> Result<Structure, String> {
    let start = audio_start(bytes);
    let mut at = start;
    let mut headers = Vec::new();
    while at < bytes.len() {
        let h = FrameHeader::parse(&bytes[at..])
            .ok_or_else(|| format!("no frame header at byte {at} of {}", bytes.len()))?;
        if at + h.frame_len() > bytes.len() {
            return Err(format!("the last frame, at byte {at}, is cut short"));
        }
        headers.push((at, h));
        at += h.frame_len();
    }
    let Some(&(tag_at, first)) = headers.first() else {
        return Err("no MP3 frames".into());
    };
    if headers
        .iter()
        .any(|(_, h)| h.sample_rate() != first.sample_rate())
    {
        return Err("the sample rate changes between frames".into());
    }
    let tag = &bytes[tag_at..tag_at + first.frame_len()];
    let Some(marker) = tag.windows(4).position(|w| w == b"Info" || w == b"Xing") else {
        return Err("the first frame is not a LAME/Xing tag".into());
    };
    let flags = u32::from_be_bytes(tag[marker + 4..marker + 8].try_into().expect("4"));
    let mut p = marker + 8;
    let mut tag_frames = None;
    if flags & 1 != 0 {
        tag_frames = Some(u32::from_be_bytes(tag[p..p + 4].try_into().expect("4")) as usize);
        p += 4;
    }
    if flags & 2 != 0 {
        p += 4;
    }
    if flags & 4 != 0 {
        p += 100;
    }
    if flags & 8 != 0 {
        p += 4;
    }
    if &tag[p..p + 4] != b"LAME" {
        return Err("the tag has no LAME extension".into());
    }
    let trim = u32::from_be_bytes([0, tag[p + 21], tag[p + 22], tag[p + 23]]);
    let (delay, padding) = (trim >> 12, trim & 0xfff);
    let audio_frames = headers.len() - 1;
    if tag_frames != Some(audio_frames) {
        return Err(format!(
            "the tag counts {tag_frames:?} frames, the file has {audio_frames}"
        ));
    }
    let crc_at = p + 34;
    let want = u16::from_be_bytes([tag[crc_at], tag[crc_at + 1]]);
    if crc16(&tag[..crc_at]) != want {
        return Err("the LAME tag's CRC does not match".into());
    }
    let mut bitrates = Vec::new();
    for (_, h) in &headers[1..] {
        if !bitrates.contains(&h.bitrate_kbps()) {
            bitrates.push(h.bitrate_kbps());
        }
    }
    mp3val(bytes)?;
    Ok(Structure {
        frames: audio_frames,
        rate: first.sample_rate(),
        bitrates,
        delay,
        padding,
    })
}

/// `mp3val`'s verdict, when it is installed: anything but INFO lines (and the notes that
/// a file has no ID3 tag, or is short) is a problem.
fn mp3val(bytes: &[u8]) -> Result<(), String> {
    let file = super::write_temp(bytes);
    let Ok(out) = Command::new("mp3val")
        .arg(file.path())
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
        .filter(|l| !l.contains("No supported tags in the file"))
        // A heuristic for short files, not a defect.
        .filter(|l| !l.contains("Too few MPEG frames"))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("mp3val: {}", problems.join("; ")))
    }
}
