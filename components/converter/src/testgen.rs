//! Small MP4 files made in code, for the tests and the fuzzers' seeds: the input classes
//! ffmpeg cannot write (ISO/IEC 23003-5 `ipcm`/`fpcm` PCM; MP3 packed into MP4 samples
//! that are not one frame each), with exactly known content.
//!
//! Only in test builds and with the `testgen` feature (`make fuzz` writes the seeds with
//! `cargo run --example gen_inputs --features testgen`); never in the component.

/// One audio track of a generated file.
#[derive(Debug, Clone)]
pub struct Track {
    /// The complete sample entry box (`ipcm`, `mp4a`, ...).
    pub entry: Vec<u8>,
    /// `mdhd` timescale.
    pub timescale: u32,
    /// Each sample's bytes.
    pub samples: Vec<Vec<u8>>,
    /// Each sample's duration in `timescale` units (`stts`).
    pub durations: Vec<u32>,
    /// An edit list of one edit: (media time, segment duration), both in `timescale`
    /// units (the movie's timescale is the track's).
    pub edit: Option<(i64, u64)>,
    /// `ilst` items ([`text_item`], [`data_item`], [`freeform_item`]) for a
    /// `moov/udta/meta/ilst`.
    pub tags: Vec<Vec<u8>>,
}

/// An `ilst` item with one `data` of `type_code`.
pub fn data_item(kind: &[u8; 4], type_code: u32, payload: &[u8]) -> Vec<u8> {
    let data = cat(&[&type_code.to_be_bytes(), &[0; 4], payload]);
    bx(kind, &bx(b"data", &data))
}

/// An `ilst` item with UTF-8 text.
pub fn text_item(kind: &[u8; 4], text: &str) -> Vec<u8> {
    data_item(kind, 1, text.as_bytes())
}

/// A freeform `----` item (`com.apple.iTunes`, `name`) with UTF-8 text.
pub fn freeform_item(name: &str, value: &str) -> Vec<u8> {
    let mean = full(b"mean", b"com.apple.iTunes");
    let name = full(b"name", name.as_bytes());
    let data = bx(
        b"data",
        &cat(&[&1u32.to_be_bytes(), &[0; 4], value.as_bytes()]),
    );
    bx(b"----", &cat(&[&mean, &name, &data]))
}

/// A box: size, type, body.
pub fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A full box: version 0, flags 0.
fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    b.extend_from_slice(body);
    bx(kind, &b)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The common start of an audio sample entry (ISO AudioSampleEntry, version 0).
fn audio_entry_fields(channels: u16, bits: u16, rate: u32) -> Vec<u8> {
    let mut b = vec![0u8; 6];
    b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    b.extend_from_slice(&[0; 8]); // version, revision, vendor
    b.extend_from_slice(&channels.to_be_bytes());
    b.extend_from_slice(&bits.to_be_bytes());
    b.extend_from_slice(&[0; 4]); // pre-defined, reserved
    let fixed = if rate > 0xffff { 0 } else { rate << 16 };
    b.extend_from_slice(&fixed.to_be_bytes());
    b
}

/// An ISO/IEC 23003-5 PCM sample entry: `ipcm` (integers) or `fpcm` (floats) with its
/// `pcmC` box; `srat` carries rates above 65535 Hz.
pub fn pcm_entry(float: bool, channels: u16, rate: u32, bits: u8, little_endian: bool) -> Vec<u8> {
    let mut body = audio_entry_fields(channels, bits as u16, rate);
    body.extend(full(b"pcmC", &[little_endian as u8, bits]));
    if rate > 0xffff {
        body.extend(full(b"srat", &rate.to_be_bytes()));
    }
    bx(if float { b"fpcm" } else { b"ipcm" }, &body)
}

/// An `mp4a` sample entry whose `esds` says MPEG-1/2 audio (object type 0x6B).
pub fn mp3_entry(channels: u16, rate: u32) -> Vec<u8> {
    let sl = [0x06, 0x01, 0x02];
    let mut dc = vec![0x6b, 0x15, 0, 0x06, 0]; // object type, audio stream, buffer size
    dc.extend_from_slice(&128_000u32.to_be_bytes());
    dc.extend_from_slice(&128_000u32.to_be_bytes());
    let mut es = vec![0, 1, 0]; // ES id, flags
    es.push(0x04);
    es.push(dc.len() as u8);
    es.extend(dc);
    es.extend_from_slice(&sl);
    let mut esds = vec![0x03, es.len() as u8];
    esds.extend(es);
    let mut body = audio_entry_fields(channels, 16, rate);
    body.extend(full(b"esds", &esds));
    bx(b"mp4a", &body)
}

fn stbl(track: &Track, chunk_offset: u32) -> Vec<u8> {
    let stsd = full(b"stsd", &cat(&[&1u32.to_be_bytes(), &track.entry]));
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in &track.durations {
        match runs.last_mut() {
            Some((n, delta)) if *delta == d => *n += 1,
            _ => runs.push((1, d)),
        }
    }
    let mut stts = (runs.len() as u32).to_be_bytes().to_vec();
    for (n, d) in runs {
        stts.extend_from_slice(&n.to_be_bytes());
        stts.extend_from_slice(&d.to_be_bytes());
    }
    let n = track.samples.len() as u32;
    let mut stsz = Vec::new();
    let first = track.samples.first().map_or(0, Vec::len);
    if track.samples.iter().all(|s| s.len() == first) {
        stsz.extend_from_slice(&(first as u32).to_be_bytes());
        stsz.extend_from_slice(&n.to_be_bytes());
    } else {
        stsz.extend_from_slice(&0u32.to_be_bytes());
        stsz.extend_from_slice(&n.to_be_bytes());
        for s in &track.samples {
            stsz.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
    }
    let stsc = cat(&[
        &1u32.to_be_bytes(),
        &1u32.to_be_bytes(),
        &n.to_be_bytes(),
        &1u32.to_be_bytes(),
    ]);
    let stco = cat(&[&1u32.to_be_bytes(), &chunk_offset.to_be_bytes()]);
    bx(
        b"stbl",
        &cat(&[
            &stsd,
            &full(b"stts", &stts),
            &full(b"stsc", &stsc),
            &full(b"stsz", &stsz),
            &full(b"stco", &stco),
        ]),
    )
}

fn moov(track: &Track, chunk_offset: u32) -> Vec<u8> {
    let duration: u64 = track.durations.iter().map(|&d| d as u64).sum();
    let shown = match track.edit {
        Some((_, d)) => d,
        None => duration,
    };
    let mut mvhd = vec![0u8; 8]; // creation, modification
    mvhd.extend_from_slice(&track.timescale.to_be_bytes());
    mvhd.extend_from_slice(&(shown as u32).to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume
    mvhd.extend_from_slice(&[0; 10]);
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        mvhd.extend_from_slice(&v.to_be_bytes());
    }
    mvhd.extend_from_slice(&[0; 24]);
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id
    let mut tkhd = vec![0, 0, 0, 7]; // version 0, enabled | in movie | in preview
    tkhd.extend_from_slice(&[0; 8]);
    tkhd.extend_from_slice(&1u32.to_be_bytes()); // track id
    tkhd.extend_from_slice(&[0; 4]);
    tkhd.extend_from_slice(&(shown as u32).to_be_bytes());
    tkhd.extend_from_slice(&[0; 8]);
    tkhd.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00, 0, 0]); // layer, group, volume
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        tkhd.extend_from_slice(&v.to_be_bytes());
    }
    tkhd.extend_from_slice(&[0; 8]);
    let mut mdhd = vec![0u8; 8];
    mdhd.extend_from_slice(&track.timescale.to_be_bytes());
    mdhd.extend_from_slice(&(duration as u32).to_be_bytes());
    mdhd.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und"
    let hdlr = cat(&[&[0; 4], b"soun", &[0; 12], b"sound\0"]);
    let dref = full(
        b"dref",
        &cat(&[&1u32.to_be_bytes(), &bx(b"url ", &[0, 0, 0, 1])]),
    );
    let minf = bx(
        b"minf",
        &cat(&[
            &full(b"smhd", &[0; 4]),
            &bx(b"dinf", &dref),
            &stbl(track, chunk_offset),
        ]),
    );
    let mdia = bx(
        b"mdia",
        &cat(&[&full(b"mdhd", &mdhd), &full(b"hdlr", &hdlr), &minf]),
    );
    let edts = track.edit.map(|(media_time, segment)| {
        let elst = cat(&[
            &1u32.to_be_bytes(),
            &(segment as u32).to_be_bytes(),
            &(media_time as i32).to_be_bytes(),
            &0x0001_0000u32.to_be_bytes(),
        ]);
        bx(b"edts", &full(b"elst", &elst))
    });
    let trak = bx(
        b"trak",
        &cat(&[
            &full(b"tkhd", &tkhd[4..]),
            edts.as_deref().unwrap_or_default(),
            &mdia,
        ]),
    );
    let udta = if track.tags.is_empty() {
        Vec::new()
    } else {
        let hdlr = cat(&[&[0; 4], b"mdirappl", &[0; 9]]);
        let meta = full(
            b"meta",
            &cat(&[&full(b"hdlr", &hdlr), &bx(b"ilst", &track.tags.concat())]),
        );
        bx(b"udta", &meta)
    };
    bx(b"moov", &cat(&[&full(b"mvhd", &mvhd), &trak, &udta]))
}

/// The file: `ftyp`, `moov`, `mdat` (one chunk of all samples).
pub fn mp4(track: &Track) -> Vec<u8> {
    let ftyp = bx(b"ftyp", &cat(&[b"isom", &[0, 0, 2, 0], b"isomiso2mp41"]));
    let moov_len = moov(track, 0).len();
    let data: Vec<u8> = track.samples.concat();
    let offset = (ftyp.len() + moov_len + 8) as u32;
    cat(&[&ftyp, &moov(track, offset), &bx(b"mdat", &data)])
}

/// A 440 Hz tone in the left channel and 660 Hz in the others, at 0.5 of full scale,
/// as f64 frames (channel-interleaved).
pub fn tone(channels: usize, rate: u32, frames: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(channels * frames);
    for i in 0..frames {
        let t = i as f64 / rate as f64;
        for c in 0..channels {
            let f = if c == 0 { 440.0 } else { 660.0 };
            out.push(0.5 * (2.0 * std::f64::consts::PI * f * t).sin());
        }
    }
    out
}

/// Interleaved samples in [-1, 1] as ISO PCM bytes.
pub fn pcm_bytes(samples: &[f64], float: bool, bits: u8, little_endian: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * bits as usize / 8);
    for &s in samples {
        let mut be: Vec<u8> = match (float, bits) {
            (true, 64) => s.to_be_bytes().to_vec(),
            (true, _) => (s as f32).to_be_bytes().to_vec(),
            (false, _) => {
                let max = ((1i64 << (bits - 1)) - 1) as f64;
                let v = (s * max).round() as i64;
                v.to_be_bytes()[8 - bits as usize / 8..].to_vec()
            }
        };
        if little_endian {
            be.reverse();
        }
        out.extend(be);
    }
    out
}

/// A PCM track of `frames` frames of [`tone`], `per_sample` frames per MP4 sample.
pub fn pcm_track(
    float: bool,
    channels: u16,
    rate: u32,
    bits: u8,
    little_endian: bool,
    frames: usize,
    per_sample: usize,
) -> Track {
    let bytes = pcm_bytes(
        &tone(channels as usize, rate, frames),
        float,
        bits,
        little_endian,
    );
    let frame_bytes = channels as usize * bits as usize / 8;
    let samples: Vec<Vec<u8>> = bytes
        .chunks(frame_bytes * per_sample)
        .map(<[u8]>::to_vec)
        .collect();
    let durations = samples
        .iter()
        .map(|s| (s.len() / frame_bytes) as u32)
        .collect();
    Track {
        entry: pcm_entry(float, channels, rate, bits, little_endian),
        timescale: rate,
        samples,
        durations,
        edit: None,
        tags: Vec::new(),
    }
}

/// The frames of an MPEG audio stream (after any ID3v2 tag): each frame's bytes.
pub fn mpeg_frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut at = 0;
    if stream.starts_with(b"ID3") && stream.len() >= 10 {
        at = 10
            + stream[6..10]
                .iter()
                .fold(0usize, |a, &b| (a << 7) | (b & 0x7f) as usize);
    }
    let mut frames = Vec::new();
    while let Some(header) = stream.get(at..at + 4) {
        let Some(len) = crate::mpa::FrameHeader::parse(header).map(|h| h.frame_len()) else {
            break;
        };
        let Some(frame) = stream.get(at..at + len) else {
            break;
        };
        frames.push(frame);
        at += len;
    }
    frames
}

/// MP3 frames packed into MP4 samples as some muxers do: `layout` gives, per sample, how
/// many bytes of the frame stream it holds (the stream is cut without regard to frames);
/// each sample lasts one frame (`frame_samples`).
pub fn mp3_track(
    frames: &[&[u8]],
    channels: u16,
    rate: u32,
    frame_samples: u32,
    cut: impl Fn(usize, &[u8]) -> usize,
) -> Track {
    let stream: Vec<u8> = frames.concat();
    let mut samples = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let len = cut(i, &stream[at..]).clamp(1, stream.len() - at);
        samples.push(stream[at..at + len].to_vec());
        at += len;
        i += 1;
    }
    let durations = vec![frame_samples; samples.len()];
    Track {
        entry: mp3_entry(channels, rate),
        timescale: rate,
        samples,
        durations,
        edit: None,
        tags: Vec::new(),
    }
}

/// The side information's `main_data_begin` of a Layer III frame: how many bytes of
/// earlier frames (the bit reservoir) its audio data starts in.
pub fn main_data_begin(frame: &[u8]) -> u16 {
    let crc = if frame[1] & 1 == 0 { 2 } else { 0 };
    let at = 4 + crc;
    let mpeg1 = (frame[1] >> 3) & 3 == 3;
    let v = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if mpeg1 { v >> 7 } else { v >> 8 }
}

/// An MP3 stream made by the converter itself from [`tone`] plus a frequency sweep (so
/// LAME's bit reservoir is used): `channels` at `rate`, `frames` PCM frames, CBR `kbps`.
pub fn mp3_stream(channels: u16, rate: u32, frames: usize, kbps: u16) -> Vec<u8> {
    let mut samples = tone(channels as usize, rate, frames);
    for (i, s) in samples.iter_mut().enumerate() {
        let t = (i / channels as usize) as f64 / rate as f64;
        *s = 0.6 * *s + 0.3 * (2.0 * std::f64::consts::PI * (200.0 + 1500.0 * t) * t * t).sin();
    }
    let track = Track {
        samples: vec![pcm_bytes(&samples, false, 16, true)],
        durations: vec![frames as u32],
        ..pcm_track(false, channels, rate, 16, true, 0, 1)
    };
    let source = mp4(&track);
    let mut sink = crate::VecSink::default();
    let options = crate::Options {
        mode: crate::Mode::Cbr(kbps),
        ..crate::Options::default()
    };
    crate::convert(
        &mut crate::SliceSource { bytes: &source },
        &mut sink,
        &options,
        &mut |_| {},
    )
    .expect("the generated PCM converts");
    sink.bytes
}

/// Every generated input class, named `CLASS__DETAIL.mp4`: ISO PCM in each format (with
/// and without an edit list) and MP3 in MP4 packed in the ways that broke decoding.
pub fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (float, bits) in [
        (false, 16),
        (false, 24),
        (false, 32),
        (true, 32),
        (true, 64),
    ] {
        for little_endian in [false, true] {
            let kind = if float { "fpcm" } else { "ipcm" };
            let endian = if little_endian { "le" } else { "be" };
            let channels = if bits == 24 { 1 } else { 2 };
            let rate = if bits == 32 { 48000 } else { 44100 };
            let mut track = pcm_track(float, channels, rate, bits, little_endian, 30_000, 1);
            out.push((
                format!("{kind}__{bits}bit_{endian}_{channels}ch_{rate}.mp4"),
                mp4(&track),
            ));
            if !float && bits == 16 {
                // 1024 frames per sample; an edit list starting 1000 frames in, 0.5 s long.
                track = pcm_track(float, channels, rate, bits, little_endian, 30_000, 1024);
                track.edit = Some((1000, rate as u64 / 2));
                out.push((
                    format!("{kind}__{bits}bit_{endian}_{channels}ch_{rate}_edit.mp4"),
                    mp4(&track),
                ));
            }
        }
    }
    // 8 kHz, 96 kHz (srat) ISO PCM.
    out.push((
        "ipcm__16bit_le_1ch_8000.mp4".into(),
        mp4(&pcm_track(false, 1, 8000, 16, true, 10_000, 1)),
    ));
    out.push((
        "fpcm__32bit_be_2ch_96000_srat.mp4".into(),
        mp4(&pcm_track(true, 2, 96000, 32, false, 50_000, 512)),
    ));
    let stream = mp3_stream(1, 44100, 44100 * 2, 128);
    let frames = mpeg_frames(&stream);
    // Skip the LAME tag frame.
    let audio = &frames[1..];
    let nominal = 417; // 144 * 128000 / 44100, without the padding byte
    out.push((
        "mp3-in-mp4__nominal_sample_size.mp4".into(),
        mp4(&mp3_track(audio, 1, 44100, 1152, |_, _| nominal)),
    ));
    out.push((
        "mp3-in-mp4__two_frames_per_sample.mp4".into(),
        mp4(&mp3_track(audio, 1, 44100, 2304, |i, rest| {
            let one = crate::mpa::FrameHeader::parse(rest).map_or(nominal, |h| h.frame_len());
            let two = rest
                .get(one..)
                .and_then(crate::mpa::FrameHeader::parse)
                .map_or(0, |h| h.frame_len());
            let _ = i;
            one + two
        })),
    ));
    // Four frames from the middle of the stream, the first pointing into a reservoir
    // that is not in the file.
    let start = (20..audio.len() - 4)
        .find(|&i| main_data_begin(audio[i]) > 0)
        .expect("LAME used its bit reservoir");
    out.push((
        "mp3-in-mp4__clip_4_frames_reservoir.mp4".into(),
        mp4(&mp3_track(
            &audio[start..start + 4],
            1,
            44100,
            1152,
            |_, rest| crate::mpa::FrameHeader::parse(rest).map_or(1, |h| h.frame_len()),
        )),
    ));
    out.push((
        "mp3-in-mp4__clip_4_frames_nominal_size.mp4".into(),
        mp4(&mp3_track(
            &audio[start..start + 4],
            1,
            44100,
            1152,
            |_, _| nominal,
        )),
    ));
    out.push(("tags__every_itunes_item.mp4".into(), mp4(&tagged_track())));
    out.push((
        "fpcm__32bit_be_2ch_44100_nonfinite.mp4".into(),
        mp4(&nonfinite_fpcm_track()),
    ));
    out
}

/// 32-bit big-endian float PCM, 4410 frames of [`tone`] with NaN, ±infinity and ±1e38
/// samples among them: what made LAME's psychoacoustic model abort (fuzzing, `convert`).
pub fn nonfinite_fpcm_track() -> Track {
    let mut samples = tone(2, 44100, 4410);
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e38, -1e38];
    for (i, s) in samples.iter_mut().enumerate().filter(|(i, _)| i % 7 == 3) {
        *s = specials[(i / 7) % specials.len()];
    }
    Track {
        samples: pcm_bytes(&samples, true, 32, false)
            .chunks(8 * 441)
            .map(<[u8]>::to_vec)
            .collect(),
        durations: vec![441; 10],
        ..pcm_track(true, 2, 44100, 32, false, 0, 1)
    }
}

/// A short PCM track carrying one of every iTunes item that has an ID3 frame, two
/// covers, and iTunes data that must not reach the MP3 (iTunNORM).
pub fn tagged_track() -> Track {
    let mut track = pcm_track(false, 2, 44100, 16, true, 44100, 4410);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde";
    let jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff\xd9";
    track.tags = vec![
        text_item(b"\xa9nam", "Title ü"),
        text_item(b"\xa9ART", "Artist"),
        text_item(b"aART", "Album Artist"),
        text_item(b"\xa9alb", "Album"),
        text_item(b"\xa9wrt", "Composer"),
        text_item(b"\xa9day", "2021-05-03T14:30:00Z"),
        data_item(b"gnre", 0, &[0, 18]), // ID3v1 17 + 1: Rock
        data_item(b"trkn", 0, &[0, 0, 0, 3, 0, 12, 0, 0]),
        data_item(b"disk", 0, &[0, 0, 0, 1, 0, 2]),
        data_item(b"cpil", 21, &[1]),
        data_item(b"tmpo", 21, &[0, 120]),
        text_item(b"\xa9grp", "Grouping"),
        text_item(b"\xa9cmt", "A comment"),
        text_item(b"\xa9lyr", "Line one\nLine two"),
        text_item(b"cprt", "Copyright"),
        text_item(b"sonm", "Sort Title"),
        text_item(b"soar", "Sort Artist"),
        freeform_item(
            "MusicBrainz Album Id",
            "b5b6b8c4-0000-4000-8000-000000000000",
        ),
        freeform_item("iTunNORM", " 00000000 00000000"),
        data_item(b"covr", 13, jpeg),
        data_item(b"covr", 14, png),
    ];
    track
}
