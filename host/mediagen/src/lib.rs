//! Test inputs made in code for `tapedeck plugin check`: QuickTime / ISO-BMFF files
//! carrying 16-bit PCM audio, valid or damaged in known ways, written front to back in
//! bounded memory (an hour of 96 kHz 5.1 is ~4 GiB; the writer holds one chunk of it).
//!
//! ```
//! use tapedeck_mediagen::{Damage, Spec, write};
//! let spec = Spec { sample_rate: 8_000, channels: 1, duration_ms: 1_000, ..Spec::default() };
//! let mut file = Vec::new();
//! let written = write(&spec, Damage::None, &mut file).unwrap();
//! assert_eq!((written.frames, written.duration_ms), (8_000, 1_000));
//! assert_eq!(written.bytes, file.len() as u64);
//! ```
//!
//! # The file
//!
//! `ftyp` (`qt  `; `iso6`/`isom` when fragmented), a `moov` with one track (`mvhd`,
//! `tkhd`, `mdhd` timescale = sample rate, durations = frames; `hdlr soun`, `smhd`,
//! `dinf/dref/url `, `stbl`), and the samples in an `mdat`. One MP4 sample is one PCM
//! frame (`stts`: one entry of delta 1; `stsz`: constant size = bytes per frame), grouped
//! [`FRAMES_PER_CHUNK`] to a chunk (`stsc`), the chunks located by `stco`, or `co64` once
//! an offset passes 4 GiB (the `mdat` then has a 64-bit size too).
//!
//! The sample entry is what symphonia 0.6.1's MP4 reader decodes natively:
//! - `sowt` version 0 (QuickTime 16-bit little-endian) for 1 or 2 channels at up to
//!   65535 Hz (the entry's rate field is 16.16 fixed point; symphonia accepts version 0
//!   PCM only in mono or stereo);
//! - `lpcm` version 2 (QuickTime SoundDescriptionV2: 64-bit float rate, 32-bit channel
//!   count, flags signed|packed, little-endian) otherwise, i.e. more than 2 channels or
//!   more than 65535 Hz, with a `chan` box saying 5.1 (L R C LFE Ls Rs) for 6 channels.
//!
//! ISO/IEC 23003-5 `ipcm` is not used: symphonia's MP4 reader does not know it (the
//! Tapedeck converter reads it itself) and ffmpeg 5.1 does not either.
//! [`Written::sample_entry`] says which entry a file got.
//!
//! # Layouts
//! - [`Layout::MoovFirst`]: `ftyp moov mdat` ("fast start").
//! - [`Layout::MoovLast`]: `ftyp mdat moov` (what a camera writes).
//! - [`Layout::Fragmented`]: `ftyp moov(mvex: mehd, trex; empty sample tables)`, then one
//!   `moof(mfhd, traf(tfhd, tfdt, trun))` + `mdat` pair per second of audio. `tfhd` is
//!   default-base-is-moof with default sample duration/size/flags; `trun` has only a data
//!   offset (no per-sample arrays); `tfdt` is the fragment's first frame.
//!
//! # Damage
//! - [`Damage::TruncatedMdat`]: the file ends in the middle of the audio data, half a
//!   frame after frame `frames / 2`, as after a failed upload; every header still claims
//!   the whole duration. MoovFirst / Fragmented: the index is intact, the first
//!   `frames / 2` frames are in the file ([`Written::frames`]). MoovLast: the `moov` was
//!   never written, so nothing is playable (`frames` 0). Demuxers differ here: ffmpeg
//!   decodes up to the cut (`frames` is what it gets); symphonia 0.6.1 skips any
//!   top-level box running past the end of the file, so it gets no packet at all from
//!   a truncated MoovFirst file (the Tapedeck converter says `corrupt-input`) and only
//!   the whole fragments before the cut from a Fragmented one (a shorter MP3).
//! - [`Damage::GarbageInSampleTable`]: the `stsc` (sample-to-chunk) box claims
//!   0xDEADBEEF entries while holding the real ones; every other box is valid.
//! - [`Damage::NoAudioTrack`]: a valid file whose only track is video (`hdlr vide`,
//!   `vmhd`, a 16×16 uncompressed `2vuy` sample entry): one black frame lasting the
//!   duration, timescale 1000.
//! - [`Damage::UnsupportedCodec`]: a `soun` track whose sample entry is `ac-3` (with a
//!   `dac3` box), samples of 1536 frames and 768 bytes of a repeated text that is no
//!   AC-3 (no sync word): the codec is named, the payload is bogus.
//!
//! # Limits
//! Sample rate 8000 ..= 96000 Hz, 1 ..= 8 channels (1, 2 and 6 are the ones checked
//! against symphonia and ffmpeg), at least 1 ms. Without fragments the frame count must
//! fit the 32-bit sample count of `stsz` (12.4 hours at 96 kHz); fragmented files have
//! no such limit. A sine above the Nyquist rate aliases: the generator does not check.

#![forbid(unsafe_code)]

mod boxes;
mod signal;

use std::io::{self, BufWriter, Write};

use boxes::{Body, MATRIX, bx, full, mdat_header};
use signal::Generator;

/// PCM frames (MP4 samples) per chunk (`stsc`), and the most the writer holds at once.
pub const FRAMES_PER_CHUNK: u32 = 4096;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// 8_000 ..= 96_000 Hz.
    pub sample_rate: u32,
    /// 1 ..= 8; 6 is 5.1 in the order L R C LFE Ls Rs.
    pub channels: u16,
    /// At least 1 ms; hours are fine. The file has `duration_ms * sample_rate / 1000`
    /// frames (rounded down).
    pub duration_ms: u64,
    pub layout: Layout,
    pub signal: Signal,
}

impl Default for Spec {
    /// Stereo 44.1 kHz, 1 s, moov first, a 440 Hz sine at half scale.
    fn default() -> Self {
        Spec {
            sample_rate: 44_100,
            channels: 2,
            duration_ms: 1_000,
            layout: Layout::MoovFirst,
            signal: Signal::Sine {
                hz: 440.0,
                amplitude: 0.5,
            },
        }
    }
}

/// Where the index (`moov`) is relative to the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ftyp moov mdat`.
    MoovFirst,
    /// `ftyp mdat moov`.
    MoovLast,
    /// `ftyp moov (moof mdat)*`, one pair per second.
    Fragmented,
}

/// The audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Channel `i` is a sine of `hz * (1 + i / 10)` at `amplitude` (0 ..= 1, clamped) of
    /// full scale, starting at phase 0.
    Sine { hz: f32, amplitude: f32 },
    /// All zeros.
    Silence,
    /// White noise, uniform in ±0.5 of full scale, the same for the same seed.
    Noise { seed: u64 },
}

/// How the file is broken (see the crate documentation for exactly what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// A valid file.
    None,
    /// The file ends halfway through the audio data.
    TruncatedMdat,
    /// The `stsc` box claims 0xDEADBEEF entries.
    GarbageInSampleTable,
    /// The only track is video.
    NoAudioTrack,
    /// The audio track's sample entry is `ac-3` with a bogus payload.
    UnsupportedCodec,
}

/// What [`write()`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written to `out`.
    pub bytes: u64,
    /// PCM frames per channel that are in the file and indexed: what a decoder should
    /// get out of it. The spec's frame count for a valid file; `frames / 2` for a
    /// truncated one (0 when its `moov` was lost); 0 for the other damage.
    pub frames: u64,
    /// The duration the container declares (`mvhd`/`mdhd`), in milliseconds, rounded.
    /// For [`Damage::UnsupportedCodec`] it is rounded up to whole 1536-frame samples.
    pub duration_ms: u64,
    /// The track's sample entry: `sowt`, `lpcm`, `ac-3` or `2vuy`.
    pub sample_entry: [u8; 4],
}

/// Writes the file described by `spec`, damaged as `damage` says, to `out`, front to
/// back: no `Seek` is needed (every size and offset is computed before it is written).
///
/// Memory is bounded whatever the duration: one chunk of samples ([`FRAMES_PER_CHUNK`]
/// frames), a 64 KiB write buffer, and the `moov` without its chunk offset table, which
/// is streamed. Errors: `InvalidInput` for a spec outside the limits, else `out`'s.
pub fn write<W: Write + ?Sized>(spec: &Spec, damage: Damage, out: &mut W) -> io::Result<Written> {
    let frames = check(spec)?;
    let plan = Plan::new(spec, damage, frames)?;
    let total = plan.sample_count * plan.sample_size;
    let cut = if damage == Damage::TruncatedMdat {
        plan.sample_count / 2 * plan.sample_size + plan.sample_size / 2
    } else {
        total
    };
    let mut out = Counter {
        inner: BufWriter::with_capacity(64 << 10, out),
        pos: 0,
    };
    let mut media = Media {
        generator: match plan.payload {
            Payload::Pcm => Some(Generator::new(spec.signal, spec.sample_rate, spec.channels)),
            Payload::Pattern(_) => None,
        },
        pattern: match plan.payload {
            Payload::Pcm => &[],
            Payload::Pattern(p) => p,
        },
        sample_size: plan.sample_size,
        per_chunk: plan.per_chunk,
        buf: Vec::new(),
        written: 0,
        cut,
        total,
    };
    let garbage = damage == Damage::GarbageInSampleTable;
    let mut indexed = true;
    match spec.layout {
        Layout::MoovFirst => {
            let ftyp = ftyp(false);
            let mdat = mdat_header(total);
            let chunks = plan.chunks();
            let mut wide = false;
            let (head, first) = loop {
                let head = moov(&plan, false, garbage, chunks, wide);
                let table = chunks * if wide { 8 } else { 4 };
                let first = (ftyp.len() + head.len() + mdat.len()) as u64 + table;
                if !wide && plan.last_chunk_offset(first) > u64::from(u32::MAX) {
                    wide = true;
                    continue;
                }
                break (head, first);
            };
            out.write_all(&ftyp)?;
            out.write_all(&head)?;
            chunk_table(&mut out, &plan, first, wide)?;
            out.write_all(&mdat)?;
            media.write(&mut out, plan.sample_count)?;
        }
        Layout::MoovLast => {
            let ftyp = ftyp(false);
            let mdat = mdat_header(total);
            out.write_all(&ftyp)?;
            out.write_all(&mdat)?;
            media.write(&mut out, plan.sample_count)?;
            if media.truncated() {
                indexed = false;
            } else {
                let first = (ftyp.len() + mdat.len()) as u64;
                let wide = plan.last_chunk_offset(first) > u64::from(u32::MAX);
                out.write_all(&moov(&plan, false, garbage, plan.chunks(), wide))?;
                chunk_table(&mut out, &plan, first, wide)?;
            }
        }
        Layout::Fragmented => {
            out.write_all(&ftyp(true))?;
            out.write_all(&moov(&plan, true, garbage, 0, false))?;
            let mut done = 0u64;
            let mut sequence = 1u32;
            while done < plan.sample_count && !media.truncated() {
                let n = plan.per_fragment.min(plan.sample_count - done);
                let mdat = mdat_header(n * plan.sample_size);
                let size = moof(&plan, sequence, done, n, 0).len();
                let data_offset = (size + mdat.len()) as u32;
                out.write_all(&moof(&plan, sequence, done, n, data_offset))?;
                out.write_all(&mdat)?;
                media.write(&mut out, n)?;
                done += n;
                sequence += 1;
            }
        }
    }
    out.flush()?;
    let frames = match damage {
        Damage::None => frames,
        Damage::TruncatedMdat if indexed => media.written / plan.sample_size,
        _ => 0,
    };
    let ts = u128::from(plan.timescale);
    let declared = u128::from(plan.duration()) * 1000;
    Ok(Written {
        bytes: out.pos,
        frames,
        duration_ms: ((declared + ts / 2) / ts) as u64,
        sample_entry: plan.fourcc,
    })
}

/// Checks the spec's limits; returns its frame count.
fn check(spec: &Spec) -> io::Result<u64> {
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if !(8_000..=96_000).contains(&spec.sample_rate) {
        return invalid(format!(
            "sample rate {} Hz is outside 8000 ..= 96000",
            spec.sample_rate
        ));
    }
    if !(1..=8).contains(&spec.channels) {
        return invalid(format!("{} channels is outside 1 ..= 8", spec.channels));
    }
    if spec.duration_ms == 0 {
        return invalid("a duration of 0 ms".into());
    }
    let frames = u128::from(spec.duration_ms) * u128::from(spec.sample_rate) / 1000;
    let Ok(frames) = u64::try_from(frames) else {
        return invalid(format!("{} ms is too long", spec.duration_ms));
    };
    if spec.layout != Layout::Fragmented && frames > u64::from(u32::MAX) {
        return invalid(format!(
            "{frames} frames do not fit a 32-bit sample table; use Layout::Fragmented"
        ));
    }
    Ok(frames)
}

/// Where the samples' bytes come from.
#[derive(Clone, Copy)]
enum Payload {
    /// The spec's PCM.
    Pcm,
    /// A byte pattern repeated.
    Pattern(&'static [u8]),
}

/// The one track of the file: constant-size, constant-duration samples.
struct Plan {
    handler: [u8; 4],
    fourcc: [u8; 4],
    /// The whole sample entry box.
    entry: Vec<u8>,
    timescale: u32,
    sample_size: u64,
    sample_delta: u32,
    sample_count: u64,
    /// Samples per chunk (`stsc`) and per write.
    per_chunk: u64,
    /// Samples per fragment (about one second).
    per_fragment: u64,
    video: bool,
    payload: Payload,
}

const AC3_FRAMES: u32 = 1536;
const AC3_BYTES: u64 = 768;
const VIDEO_SIDE: u16 = 16;

impl Plan {
    fn new(spec: &Spec, damage: Damage, frames: u64) -> io::Result<Plan> {
        let rate = spec.sample_rate;
        let channels = spec.channels;
        let per_second = |delta: u32| u64::from(rate.div_ceil(delta)).max(1);
        Ok(match damage {
            Damage::NoAudioTrack => {
                let Ok(delta) = u32::try_from(spec.duration_ms) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a video track of more than 2^32 ms",
                    ));
                };
                Plan {
                    handler: *b"vide",
                    fourcc: *b"2vuy",
                    entry: video_entry(),
                    timescale: 1000,
                    sample_size: u64::from(VIDEO_SIDE) * u64::from(VIDEO_SIDE) * 2,
                    sample_delta: delta,
                    sample_count: 1,
                    per_chunk: 1,
                    per_fragment: 1,
                    video: true,
                    // UYVY black.
                    payload: Payload::Pattern(&[0x80, 0x10]),
                }
            }
            Damage::UnsupportedCodec => Plan {
                handler: *b"soun",
                fourcc: *b"ac-3",
                entry: ac3_entry(channels, rate),
                timescale: rate,
                sample_size: AC3_BYTES,
                sample_delta: AC3_FRAMES,
                sample_count: frames.div_ceil(u64::from(AC3_FRAMES)),
                per_chunk: 16,
                per_fragment: per_second(AC3_FRAMES),
                video: false,
                payload: Payload::Pattern(b"not AC-3, a test payload. "),
            },
            _ => {
                let (fourcc, entry) = pcm_entry(channels, rate);
                Plan {
                    handler: *b"soun",
                    fourcc,
                    entry,
                    timescale: rate,
                    sample_size: 2 * u64::from(channels),
                    sample_delta: 1,
                    sample_count: frames,
                    per_chunk: u64::from(FRAMES_PER_CHUNK),
                    per_fragment: per_second(1),
                    video: false,
                    payload: Payload::Pcm,
                }
            }
        })
    }

    /// Duration in timescale units.
    fn duration(&self) -> u64 {
        self.sample_count * u64::from(self.sample_delta)
    }

    fn chunks(&self) -> u64 {
        self.sample_count.div_ceil(self.per_chunk)
    }

    fn chunk_bytes(&self) -> u64 {
        self.per_chunk * self.sample_size
    }

    fn last_chunk_offset(&self, first: u64) -> u64 {
        first + (self.chunks() - 1) * self.chunk_bytes()
    }
}

/// The audio sample entry fields up to and including the 16.16 rate (QuickTime
/// SoundDescription version 0; ISO AudioSampleEntry).
fn audio_entry_head(
    version: u16,
    channels: u16,
    bits: u16,
    compression: u16,
    rate_field: u32,
) -> Body {
    Body::default()
        .zeros(6)
        .u16(1) // data reference index
        .u16(version)
        .u16(0) // revision
        .u32(0) // vendor
        .u16(channels)
        .u16(bits)
        .u16(compression)
        .u16(0) // packet size
        .u32(rate_field)
}

fn pcm_entry(channels: u16, rate: u32) -> ([u8; 4], Vec<u8>) {
    if channels <= 2 && rate <= 0xffff {
        let body = audio_entry_head(0, channels, 16, 0, rate << 16);
        return (*b"sowt", bx(b"sowt", &[&body.0], 0));
    }
    // SoundDescriptionV2: the version 0 fields hold fixed values, the real ones follow.
    let body = audio_entry_head(2, 3, 16, 0xfffe, 0x0001_0000)
        .u32(72) // sizeOfStructOnly
        .u64(f64::from(rate).to_bits())
        .u32(u32::from(channels))
        .u32(0x7f00_0000)
        .u32(16) // constBitsPerChannel
        .u32(4 | 8) // kAudioFormatFlagIsSignedInteger | IsPacked; little-endian
        .u32(2 * u32::from(channels)) // constBytesPerAudioPacket
        .u32(1); // constLPCMFramesPerAudioPacket
    let chan = (channels == 6).then(|| {
        // kAudioChannelLayoutTag_MPEG_5_1_A: L R C LFE Ls Rs.
        let layout = Body::default().u32((121 << 16) | 6).u32(0).u32(0);
        full(b"chan", 0, 0, &[&layout.0], 0)
    });
    (
        *b"lpcm",
        bx(b"lpcm", &[&body.0, chan.as_deref().unwrap_or_default()], 0),
    )
}

fn ac3_entry(channels: u16, rate: u32) -> Vec<u8> {
    let rate_field = if rate <= 0xffff { rate << 16 } else { 0 };
    let body = audio_entry_head(0, channels, 16, 0, rate_field);
    // dac3: fscod 0 (48 kHz), bsid 8, bsmod 0, acmod (1/0, 2/0 or 3/2), lfeon,
    // bit_rate_code 14 (256 kbit/s), 5 reserved bits.
    let (acmod, lfe) = match channels {
        1 => (1u32, 0u32),
        2 => (2, 0),
        _ => (7, 1),
    };
    let bits = (8 << 17) | (acmod << 11) | (lfe << 10) | (14 << 5);
    let dac3 = bx(b"dac3", &[&bits.to_be_bytes()[1..]], 0);
    bx(b"ac-3", &[&body.0, &dac3], 0)
}

fn video_entry() -> Vec<u8> {
    let mut name = [0u8; 32];
    let text = b"2vuy";
    name[0] = text.len() as u8;
    name[1..=text.len()].copy_from_slice(text);
    let body = Body::default()
        .zeros(6)
        .u16(1) // data reference index
        .zeros(16) // version, revision, vendor, temporal and spatial quality
        .u16(VIDEO_SIDE)
        .u16(VIDEO_SIDE)
        .u32(0x0048_0000) // 72 dpi
        .u32(0x0048_0000)
        .u32(0) // data size
        .u16(1) // frames per sample
        .bytes(&name)
        .u16(24) // depth
        .u16(0xffff); // no colour table
    bx(b"2vuy", &[&body.0], 0)
}

fn ftyp(fragmented: bool) -> Vec<u8> {
    let body = if fragmented {
        Body::default().bytes(b"iso6").u32(0).bytes(b"iso6isommp41")
    } else {
        Body::default().bytes(b"qt  ").u32(0x0200).bytes(b"qt  ")
    };
    bx(b"ftyp", &[&body.0], 0)
}

/// The `moov`, except the `chunks` entries of its chunk offset table (`co64` if `wide`),
/// which come last in it and are written by [`chunk_table`]; the sizes count them.
fn moov(plan: &Plan, fragmented: bool, garbage: bool, chunks: u64, wide: bool) -> Vec<u8> {
    let tail = chunks * if wide { 8 } else { 4 };
    let duration = plan.duration();
    let v1 = duration > u64::from(u32::MAX);
    let version = u8::from(v1);
    let matrix = MATRIX.iter().fold(Body::default(), |b, &v| b.u32(v)).0;

    let mvhd = Body::default()
        .uv(v1, 0) // creation
        .uv(v1, 0) // modification
        .u32(plan.timescale)
        .uv(v1, duration)
        .u32(0x0001_0000) // rate 1.0
        .u16(0x0100) // volume 1.0
        .zeros(10)
        .bytes(&matrix)
        .zeros(24)
        .u32(2); // next track id
    let mvhd = full(b"mvhd", version, 0, &[&mvhd.0], 0);

    let side = if plan.video {
        u32::from(VIDEO_SIDE) << 16
    } else {
        0
    };
    let tkhd = Body::default()
        .uv(v1, 0)
        .uv(v1, 0)
        .u32(1) // track id
        .u32(0)
        .uv(v1, duration)
        .zeros(8)
        .u16(0) // layer
        .u16(0) // alternate group
        .u16(if plan.video { 0 } else { 0x0100 }) // volume
        .u16(0)
        .bytes(&matrix)
        .u32(side)
        .u32(side);
    // Enabled, in movie, in preview.
    let tkhd = full(b"tkhd", version, 7, &[&tkhd.0], 0);

    let mdhd = Body::default()
        .uv(v1, 0)
        .uv(v1, 0)
        .u32(plan.timescale)
        .uv(v1, duration)
        .u16(0x55c4) // "und"
        .u16(0);
    let mdhd = full(b"mdhd", version, 0, &[&mdhd.0], 0);
    let name: &[u8] = if plan.video {
        b"VideoHandler\0"
    } else {
        b"SoundHandler\0"
    };
    let hdlr = Body::default()
        .u32(0)
        .bytes(&plan.handler)
        .zeros(12)
        .bytes(name);
    let hdlr = full(b"hdlr", 0, 0, &[&hdlr.0], 0);

    let media_header = if plan.video {
        full(b"vmhd", 0, 1, &[&[0; 8]], 0)
    } else {
        full(b"smhd", 0, 0, &[&[0; 4]], 0)
    };
    let url = full(b"url ", 0, 1, &[], 0); // self-contained
    let dref = full(b"dref", 0, 0, &[&1u32.to_be_bytes(), &url], 0);
    let dinf = bx(b"dinf", &[&dref], 0);

    let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &plan.entry], 0);
    let count = u32::try_from(plan.sample_count).unwrap_or(u32::MAX);
    let (stts, mut stsc, stsz) = if fragmented {
        (
            Body::default().u32(0),
            Body::default().u32(0),
            Body::default().u32(0).u32(0),
        )
    } else {
        let per_chunk = plan.per_chunk as u32;
        let last = (plan.sample_count - (chunks - 1) * plan.per_chunk) as u32;
        let mut stsc = Body::default();
        stsc = if chunks == 1 {
            stsc.u32(1).u32(1).u32(last).u32(1)
        } else if last == per_chunk {
            stsc.u32(1).u32(1).u32(per_chunk).u32(1)
        } else {
            stsc.u32(2)
                .u32(1)
                .u32(per_chunk)
                .u32(1)
                .u32(chunks as u32)
                .u32(last)
                .u32(1)
        };
        (
            Body::default().u32(1).u32(count).u32(plan.sample_delta),
            stsc,
            Body::default().u32(plan.sample_size as u32).u32(count),
        )
    };
    if garbage {
        stsc.0[..4].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    }
    let stts = full(b"stts", 0, 0, &[&stts.0], 0);
    let stsc = full(b"stsc", 0, 0, &[&stsc.0], 0);
    let stsz = full(b"stsz", 0, 0, &[&stsz.0], 0);
    let table_kind = if wide { b"co64" } else { b"stco" };
    let stco = full(table_kind, 0, 0, &[&(chunks as u32).to_be_bytes()], tail);

    let stbl = bx(b"stbl", &[&stsd, &stts, &stsc, &stsz, &stco], tail);
    let minf = bx(b"minf", &[&media_header, &dinf, &stbl], tail);
    let mdia = bx(b"mdia", &[&mdhd, &hdlr, &minf], tail);
    let trak = bx(b"trak", &[&tkhd, &mdia], tail);

    let mvex = fragmented.then(|| {
        let mehd = full(
            b"mehd",
            version,
            0,
            &[&Body::default().uv(v1, duration).0],
            0,
        );
        let trex = Body::default()
            .u32(1) // track id
            .u32(1) // sample description index
            .u32(plan.sample_delta)
            .u32(plan.sample_size as u32)
            .u32(sample_flags(plan));
        let trex = full(b"trex", 0, 0, &[&trex.0], 0);
        bx(b"mvex", &[&mehd, &trex], 0)
    });
    // The chunk table is the last thing in stbl, minf, mdia, trak and moov.
    bx(
        b"moov",
        &[&mvhd, &trak, mvex.as_deref().unwrap_or_default()],
        tail,
    )
}

/// Every sample is a sync sample (audio: depends on no other).
fn sample_flags(plan: &Plan) -> u32 {
    if plan.video { 0 } else { 0x0200_0000 }
}

/// Streams the chunk offsets: chunk `k` at `first + k * chunk bytes`.
fn chunk_table(out: &mut impl Write, plan: &Plan, first: u64, wide: bool) -> io::Result<()> {
    let stride = plan.chunk_bytes();
    let mut batch = Vec::with_capacity(8 << 10);
    for k in 0..plan.chunks() {
        let offset = first + k * stride;
        if wide {
            batch.extend_from_slice(&offset.to_be_bytes());
        } else {
            batch.extend_from_slice(&(offset as u32).to_be_bytes());
        }
        if batch.len() >= 8 << 10 {
            out.write_all(&batch)?;
            batch.clear();
        }
    }
    out.write_all(&batch)
}

/// A `moof` for samples `first .. first + count`, their data `data_offset` bytes after
/// its start.
fn moof(plan: &Plan, sequence: u32, first: u64, count: u64, data_offset: u32) -> Vec<u8> {
    let mfhd = full(b"mfhd", 0, 0, &[&sequence.to_be_bytes()], 0);
    let tfhd = Body::default()
        .u32(1) // track id
        .u32(plan.sample_delta)
        .u32(plan.sample_size as u32)
        .u32(sample_flags(plan));
    // default-base-is-moof | default duration | default size | default flags.
    let tfhd = full(b"tfhd", 0, 0x02_0000 | 0x08 | 0x10 | 0x20, &[&tfhd.0], 0);
    let decode_time = first * u64::from(plan.sample_delta);
    let tfdt = full(b"tfdt", 1, 0, &[&decode_time.to_be_bytes()], 0);
    let trun = Body::default().u32(count as u32).u32(data_offset);
    let trun = full(b"trun", 0, 0x01, &[&trun.0], 0); // data offset present
    let traf = bx(b"traf", &[&tfhd, &tfdt, &trun], 0);
    bx(b"moof", &[&mfhd, &traf], 0)
}

/// The sample bytes, made and written one chunk at a time, stopping at `cut`.
struct Media {
    generator: Option<Generator>,
    pattern: &'static [u8],
    sample_size: u64,
    per_chunk: u64,
    /// One chunk; reused.
    buf: Vec<u8>,
    written: u64,
    cut: u64,
    total: u64,
}

impl Media {
    /// Writes the next `samples` samples (fewer if the cut comes first).
    fn write(&mut self, out: &mut impl Write, samples: u64) -> io::Result<()> {
        let mut left = samples;
        while left > 0 && self.written < self.cut {
            let n = left.min(self.per_chunk);
            let len = (n * self.sample_size) as usize;
            self.buf.resize(len, 0);
            match &mut self.generator {
                Some(generator) => generator.fill(&mut self.buf),
                None => {
                    for (b, p) in self.buf.iter_mut().zip(self.pattern.iter().cycle()) {
                        *b = *p;
                    }
                }
            }
            let take = (len as u64).min(self.cut - self.written) as usize;
            out.write_all(&self.buf[..take])?;
            self.written += take as u64;
            left -= n;
        }
        Ok(())
    }

    /// The file ends here, short of the data its headers describe.
    fn truncated(&self) -> bool {
        self.written == self.cut && self.cut < self.total
    }
}

/// Counts the bytes that reach the writer.
struct Counter<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
