//! MPEG audio (MP3) frames out of MP4 samples, whatever the muxer did.
//!
//! symphonia's MP3 decoder takes exactly one frame per packet ("mpa: invalid packet
//! length" otherwise), but MP4 muxers do not all store one frame per sample: some give
//! every sample the nominal frame size and ignore the padding bit (so samples drift off
//! the frame boundaries), some pack several frames into a sample, some leave stray bytes
//! between frames. ffmpeg runs an MP3 parser over such tracks; [`Reframer`] does the same:
//! it treats the samples as one byte stream and cuts it at frame headers.
//!
//! Every length comes from a checked header, the buffer never holds more than a few
//! frames, and bytes that are not a frame are skipped (and counted), so hostile input
//! costs at most a linear scan.

/// A Layer III frame header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5 (the header's version bits).
    version: u8,
    bitrate_kbps: u32,
    sample_rate: u32,
    padding: bool,
}

/// Layer III bitrates, kbit/s, by index: MPEG-1, then MPEG-2/2.5.
const BITRATES: [[u32; 15]; 2] = [
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

impl FrameHeader {
    /// The header at the start of `bytes` if it is a Layer III header with a known
    /// bitrate (free format has no length in its header) and sample rate.
    pub(crate) fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let &[b0, b1, b2, _] = bytes.get(..4)? else {
            return None;
        };
        if b0 != 0xff || b1 & 0xe0 != 0xe0 {
            return None;
        }
        let version = (b1 >> 3) & 3;
        let layer = (b1 >> 1) & 3;
        let bitrate_index = (b2 >> 4) as usize;
        let rate_index = ((b2 >> 2) & 3) as usize;
        if version == 1
            || layer != 1
            || bitrate_index == 0
            || bitrate_index == 15
            || rate_index == 3
        {
            return None;
        }
        let base = [44100, 48000, 32000][rate_index];
        let sample_rate = match version {
            3 => base,
            2 => base / 2,
            _ => base / 4,
        };
        let bitrate_kbps = BITRATES[(version != 3) as usize][bitrate_index];
        Some(FrameHeader {
            version,
            bitrate_kbps,
            sample_rate,
            padding: b2 & 2 != 0,
        })
    }

    /// The frame's length in bytes, header included.
    pub(crate) fn frame_len(&self) -> usize {
        let per_kbit = if self.version == 3 { 144_000 } else { 72_000 };
        (per_kbit * self.bitrate_kbps / self.sample_rate) as usize + self.padding as usize
    }

    /// The bitrate in kbit/s.
    #[cfg(test)]
    pub(crate) fn bitrate_kbps(&self) -> u32 {
        self.bitrate_kbps
    }

    /// The sample rate in Hz.
    #[cfg(test)]
    pub(crate) fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// What stays the same for every frame of a stream.
    fn stream_key(&self) -> (u8, u32) {
        (self.version, self.sample_rate)
    }
}

/// Cuts a byte stream into whole MP3 frames.
#[derive(Debug, Default)]
pub(crate) struct Reframer {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    start: usize,
    /// The stream's version and rate, once a frame confirmed by its successor was found.
    key: Option<(u8, u32)>,
    /// Bytes skipped because they were not part of a frame.
    pub skipped: u64,
    /// What the skipped bytes looked like, for a precise refusal when no frame is found.
    pub unsupported: Option<Unsupported>,
}

/// MPEG audio headers the converter cannot decode, seen where frames were expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// Layer III without a bitrate in its header (free format).
    FreeFormat,
    /// Layer I or II (MP1, MP2).
    OtherLayer,
}

impl Unsupported {
    /// What the audio is, as `ConvertError::UnsupportedCodec` names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Unsupported::FreeFormat => "free-format MP3 (free bit rate)",
            Unsupported::OtherLayer => "MPEG audio Layer I or II (MP1/MP2)",
        }
    }

    /// Recognises the header at the start of `bytes` as one we cannot decode.
    fn of(bytes: &[u8]) -> Option<Unsupported> {
        let &[0xff, b1, b2, _] = bytes.get(..4)? else {
            return None;
        };
        let (version, layer) = ((b1 >> 3) & 3, (b1 >> 1) & 3);
        if b1 & 0xe0 != 0xe0 || version == 1 || layer == 0 || b2 >> 4 == 15 || (b2 >> 2) & 3 == 3 {
            return None;
        }
        match (layer, b2 >> 4) {
            (1, 0) => Some(Unsupported::FreeFormat),
            (1, _) => None,
            _ => Some(Unsupported::OtherLayer),
        }
    }
}

impl Reframer {
    /// Appends the next sample's bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if the bytes pushed so far hold one. With `at_end` (no more
    /// bytes will come) a frame is taken without a following header to confirm it.
    pub(crate) fn next_frame(&mut self, at_end: bool) -> Option<&[u8]> {
        loop {
            let rest = &self.buf[self.start..];
            let found = (0..rest.len().saturating_sub(3)).find(|&i| {
                FrameHeader::parse(&rest[i..])
                    .is_some_and(|h| self.key.is_none_or(|k| k == h.stream_key()))
            });
            if self.unsupported.is_none() && self.key.is_none() {
                let scan = found.unwrap_or(rest.len().saturating_sub(3));
                self.unsupported = (0..scan).find_map(|i| Unsupported::of(&rest[i..]));
            }
            let Some(at) = found else {
                // Keep what could be the start of a header split across samples.
                let keep = rest.len().min(3);
                self.skipped += (rest.len() - keep) as u64;
                self.start = self.buf.len() - keep;
                if at_end {
                    self.skipped += keep as u64;
                    self.start = self.buf.len();
                }
                return None;
            };
            self.skipped += at as u64;
            self.start += at;
            let rest = &self.buf[self.start..];
            let header = FrameHeader::parse(rest).expect("found above");
            let len = header.frame_len();
            if rest.len() < len {
                if at_end {
                    // A frame cut short at the end of the data is lost, as in ffmpeg.
                    self.skipped += rest.len() as u64;
                    self.start = self.buf.len();
                }
                return None;
            }
            if self.key.is_none() && self.skipped > 0 {
                // After bytes that were not a frame, a sync pattern can occur by chance:
                // the first frame counts only when another header follows it (or nothing
                // does). A header at the very start of the data is taken as it is.
                match rest.get(len..len + 4) {
                    Some(next)
                        if FrameHeader::parse(next)
                            .is_none_or(|n| n.stream_key() != header.stream_key()) =>
                    {
                        self.skipped += 1;
                        self.start += 1;
                        continue;
                    }
                    None if !at_end => return None,
                    _ => {}
                }
            }
            self.key = Some(header.stream_key());
            let frame = self.start..self.start + len;
            self.start += len;
            return Some(&self.buf[frame]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A silent MPEG-1 128 kbps 44.1 kHz mono frame (417 bytes, 418 with padding).
    fn frame(padding: bool) -> Vec<u8> {
        let mut f = vec![0xff, 0xfb, 0x90 | if padding { 2 } else { 0 }, 0xc4];
        f.resize(if padding { 418 } else { 417 }, 0);
        f
    }

    #[test]
    fn headers_give_lengths() {
        let h = FrameHeader::parse(&frame(true)).unwrap();
        assert_eq!(
            (h.sample_rate, h.bitrate_kbps, h.frame_len()),
            (44100, 128, 418)
        );
        // MPEG-2.5, 8 kHz, 160 kbps: 72 * 160000 / 8000 = 1440 bytes.
        let h = FrameHeader::parse(&[0xff, 0xe3, 0xe8, 0xc4]).unwrap();
        assert_eq!(
            (h.sample_rate, h.bitrate_kbps, h.frame_len()),
            (8000, 160, 1440)
        );
        // Free format, a bad rate, Layer II: not for us.
        assert_eq!(FrameHeader::parse(&[0xff, 0xfb, 0x00, 0xc4]), None);
        assert_eq!(FrameHeader::parse(&[0xff, 0xfb, 0x9c, 0xc4]), None);
        assert_eq!(FrameHeader::parse(&[0xff, 0xfd, 0x90, 0xc4]), None);
    }

    #[test]
    fn samples_cut_anywhere_give_back_the_frames() {
        let frames = [frame(false), frame(true), frame(false), frame(true)];
        let stream: Vec<u8> = frames.concat();
        for cut in [1, 3, 100, 417, 418, 500, 2000] {
            let mut r = Reframer::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                r.push(chunk);
                while let Some(f) = r.next_frame(false) {
                    got.push(f.to_vec());
                }
            }
            while let Some(f) = r.next_frame(true) {
                got.push(f.to_vec());
            }
            assert_eq!(got, frames, "cut {cut}");
            assert_eq!(r.skipped, 0);
        }
    }

    #[test]
    fn junk_between_frames_is_skipped_and_a_cut_tail_dropped() {
        let mut stream = frame(false);
        stream.extend([0u8; 7]);
        stream.extend(frame(true));
        stream.extend(&frame(false)[..100]);
        let mut r = Reframer::default();
        r.push(&stream);
        let mut got = Vec::new();
        while let Some(f) = r.next_frame(true) {
            got.push(f.len());
        }
        assert_eq!(got, [417, 418]);
        assert_eq!(r.skipped, 7 + 100);
    }

    #[test]
    fn free_format_and_layer_ii_are_named() {
        let mut r = Reframer::default();
        r.push(&[0xff, 0xfb, 0x00, 0xc4, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(true), None);
        assert_eq!(r.unsupported, Some(Unsupported::FreeFormat));
        let mut r = Reframer::default();
        r.push(&[0xff, 0xfd, 0x90, 0xc4, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(true), None);
        assert_eq!(r.unsupported, Some(Unsupported::OtherLayer));
    }

    #[test]
    fn after_leading_junk_a_frame_needs_a_successor() {
        // A false sync in the junk (0xff 0xfb 0x90: a header, but no frame follows it).
        let mut stream = b"junk\xff\xfb\x90\xc4junk".to_vec();
        stream.extend(frame(false));
        stream.extend(frame(true));
        let mut r = Reframer::default();
        r.push(&stream);
        let mut got = Vec::new();
        while let Some(f) = r.next_frame(true) {
            got.push(f.len());
        }
        assert_eq!(got, [417, 418]);
        assert_eq!(r.skipped, 12);
    }
}
