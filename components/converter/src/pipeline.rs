//! The conversion: pick a track, demux and decode it with symphonia, keep the presented
//! range (edit list / iTunSMPB / trim option), downmix, encode with LAME, tag.
//!
//! Memory stays bounded whatever the input length: the source is read through a
//! fixed window, decoded PCM lives in buffers reused per packet, and MP3 bytes leave in
//! fixed batches. Only the `moov` (capped, see `mp4`) is held whole.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

use mp3lame_encoder::{Builder, DualPcm, Encoder, FlushGap, MonoPcm, Quality, VbrMode};
use symphonia::core::audio::{Channels, Position};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, Timestamp};
use symphonia::default::formats::IsoMp4Reader;

use crate::io::{BatchedSink, IoError, MediaSourceAdapter, ReadAt, WindowedReader, WriteSink};
use crate::mix::Downmix;
use crate::mp4::{self, CodecKind, Movie, TrackBox};
use crate::mpa::Reframer;
use crate::options::{self, Mode, Options, Summary};
use crate::{ConvertError, id3, io_error, reasons};

/// Source bytes fetched per host read (the host allows up to 1 MiB).
const READ_WINDOW: usize = 256 << 10;
/// MP3 bytes handed to the sink per write.
const WRITE_BATCH: usize = 64 << 10;
/// Undecodable packets in a row after which the audio is declared corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 16;
/// Progress is reported at most this often (in fractions of the whole).
const PROGRESS_STEP: f32 = 0.01;

/// Receives what a run reports besides its result.
pub trait Observer {
    /// `fraction` of the work done, 0.0 to 1.0, non-decreasing, at most ~100 calls.
    fn progress(&mut self, fraction: f32);
    /// Something worth a log line that does not fail the run.
    fn warn(&mut self, message: &str) {
        let _ = message;
    }
}

struct ProgressFn<'a>(&'a mut dyn FnMut(f32));

impl Observer for ProgressFn<'_> {
    fn progress(&mut self, fraction: f32) {
        (self.0)(fraction)
    }
}

/// Converts the MP4/M4A/MOV in `source` to an MP3 written to `sink`.
pub fn convert(
    source: &mut dyn ReadAt,
    sink: &mut dyn WriteSink,
    options: &Options,
    progress: &mut dyn FnMut(f32),
) -> Result<Summary, ConvertError> {
    convert_observed(source, sink, options, &mut ProgressFn(progress))
}

/// [`convert`], with warnings reported too.
pub fn convert_observed(
    source: &mut dyn ReadAt,
    sink: &mut dyn WriteSink,
    options: &Options,
    observer: &mut dyn Observer,
) -> Result<Summary, ConvertError> {
    options.validate()?;
    let mut reader = WindowedReader::new(source, READ_WINDOW);
    let movie = mp4::read_movie(&mut reader)?;
    let (track, codec) = choose_track(&movie)?;
    for warning in &movie.warnings {
        observer.warn(warning);
    }
    let high_water = reader.high_water();
    let size = reader.size().max(1);
    let adapter = MediaSourceAdapter::new(reader);
    let read_failure = adapter.failure.clone();
    let host_failure = || {
        read_failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .map(io_error)
    };

    let mss = MediaSourceStream::new(Box::new(adapter), MediaSourceStreamOptions::default());
    let mut demuxer = IsoMp4Reader::try_new(mss, FormatOptions::default())
        .map_err(|e| host_failure().unwrap_or_else(|| reasons::open_error(&e)))?;
    let params = match track.pcm {
        // symphonia's MP4 reader does not know ISO/IEC 23003-5 entries; its PCM decoder
        // does the decoding once told the format.
        Some(pcm) => iso_pcm_params(&pcm),
        None => demuxer
            .tracks()
            .iter()
            .find(|t| t.id == track.id)
            .and_then(|t| match &t.codec_params {
                Some(CodecParameters::Audio(p)) => Some(p.clone()),
                _ => None,
            })
            .ok_or_else(|| reasons::unrecognised_track(codec))?,
    };
    let channels = params.channels.as_ref().map_or(0, |c| c.count());
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| reasons::setup_error(codec, channels, &e))?;

    let mut run = Run::new(sink, options, observer, &movie, &track, params.sample_rate);
    let mut errors = ErrorRun {
        codec,
        rate: params.sample_rate,
        consecutive: 0,
    };
    // MP3 samples are cut into frames first (see `mpa`).
    let mut reframer = (codec == "mp3").then(Reframer::default);
    let mut truncated = false;
    loop {
        let packet = match demuxer.next_packet() {
            Ok(p) => p,
            Err(e) => {
                if let Some(failure) = host_failure() {
                    return Err(failure);
                }
                // A cut-off file ends the audio where the data ends.
                truncated = true;
                run.observer.warn(&format!("demuxing stopped: {e}"));
                None
            }
        };
        let Some(packet) = packet else {
            if let Some(frames) = reframer.as_mut() {
                while let Some(frame) = frames.next_frame(true) {
                    let frame = Packet::new(track.id, packet_ts(), mp3_dur(), frame);
                    errors.decode(decoder.as_mut(), &frame, &mut run)?;
                }
            }
            break;
        };
        if packet.track_id != track.id {
            continue;
        }
        match reframer.as_mut() {
            Some(frames) => {
                frames.push(&packet.data);
                while let Some(frame) = frames.next_frame(false) {
                    let frame = Packet::new(track.id, packet_ts(), mp3_dur(), frame);
                    errors.decode(decoder.as_mut(), &frame, &mut run)?;
                    if run.past_end() {
                        break;
                    }
                }
            }
            None => errors.decode(decoder.as_mut(), &packet, &mut run)?,
        }
        if run.past_end() {
            break;
        }
        let fraction = if let Some(total) = run.expected_frames() {
            (run.decoded.saturating_sub(run.keep_start)) as f32 / total.max(1) as f32
        } else {
            high_water.load(Ordering::Relaxed) as f32 / size as f32
        };
        run.report(fraction);
    }
    if let Some(frames) = &reframer {
        if frames.skipped > 0 {
            run.observer.warn(&format!(
                "{} bytes of the MP3 track were not whole MP3 frames and were skipped",
                frames.skipped
            ));
        }
        if let Some(what) = frames.unsupported.filter(|_| run.decoded == 0) {
            return Err(ConvertError::UnsupportedCodec(what.name().into()));
        }
    }
    if run.decode_errors > 0 {
        run.observer.warn(&format!(
            "{} {codec} packets could not be decoded and were skipped",
            run.decode_errors
        ));
    }
    if run.decoded == 0 {
        let why = if truncated {
            "audio data missing or truncated"
        } else {
            "no decodable audio"
        };
        return Err(ConvertError::CorruptInput(why.into()));
    }
    run.finish(codec)
}

/// Counts undecodable packets in a row: a few are skipped (damage), a long run is the
/// end of the conversion.
struct ErrorRun<'c> {
    codec: &'c str,
    /// The rate from the codec parameters, until the decoder says otherwise.
    rate: Option<u32>,
    consecutive: u32,
}

impl ErrorRun<'_> {
    /// Decodes one packet into `run`.
    fn decode(
        &mut self,
        decoder: &mut dyn AudioDecoder,
        packet: &Packet,
        run: &mut Run<'_>,
    ) -> Result<(), ConvertError> {
        match decoder.decode(packet) {
            Ok(buf) => {
                self.consecutive = 0;
                run.take(&buf)
            }
            Err(e @ (SymError::DecodeError(_) | SymError::IoError(_))) => {
                self.consecutive += 1;
                run.decode_errors += 1;
                if self.consecutive >= MAX_CONSECUTIVE_DECODE_ERRORS {
                    let rate = run.decoded_rate().or(self.rate);
                    return Err(reasons::undecodable(
                        self.codec,
                        self.consecutive,
                        run.decoded,
                        rate,
                        &e,
                    ));
                }
                Ok(())
            }
            Err(e) => Err(reasons::decode_error(self.codec, &e)),
        }
    }
}

fn packet_ts() -> Timestamp {
    Timestamp::from(0i64)
}

/// The decoder reads a frame's length from its header; the packet's is not used.
fn mp3_dur() -> Duration {
    Duration::from(1152u64)
}

/// symphonia's PCM decoder parameters for an ISO/IEC 23003-5 track ([`mp4::IsoPcm`]; the
/// combinations were checked by `TrackBox::codec`).
fn iso_pcm_params(pcm: &mp4::IsoPcm) -> AudioCodecParameters {
    use symphonia::core::codecs::audio::well_known::*;
    let codec = match (pcm.float, pcm.bits, pcm.little_endian) {
        (true, 64, true) => CODEC_ID_PCM_F64LE,
        (true, 64, false) => CODEC_ID_PCM_F64BE,
        (true, _, true) => CODEC_ID_PCM_F32LE,
        (true, _, false) => CODEC_ID_PCM_F32BE,
        (false, 16, true) => CODEC_ID_PCM_S16LE,
        (false, 16, false) => CODEC_ID_PCM_S16BE,
        (false, 24, true) => CODEC_ID_PCM_S24LE,
        (false, 24, false) => CODEC_ID_PCM_S24BE,
        (false, _, true) => CODEC_ID_PCM_S32LE,
        (false, _, false) => CODEC_ID_PCM_S32BE,
    };
    let channels = match pcm.channels {
        1 => Channels::Positioned(Position::FRONT_LEFT),
        2 => Channels::Positioned(Position::FRONT_LEFT | Position::FRONT_RIGHT),
        n => Channels::Discrete(n),
    };
    let mut params = AudioCodecParameters::new();
    params
        .for_codec(codec)
        .with_sample_rate(pcm.rate)
        .with_channels(channels)
        .with_bits_per_sample(pcm.bits as u32)
        .with_bits_per_coded_sample(pcm.bits as u32);
    params
}

/// Picks the first audio track we can decode; failing that, says why none qualifies.
fn choose_track(movie: &Movie) -> Result<(TrackBox, &'static str), ConvertError> {
    let audio: Vec<&TrackBox> = movie
        .tracks
        .iter()
        .filter(|t| &t.handler == b"soun")
        .collect();
    if audio.is_empty() {
        return Err(ConvertError::NoAudioTrack);
    }
    let kinds: Vec<CodecKind> = audio.iter().map(|t| t.codec()).collect();
    for (t, kind) in audio.iter().zip(&kinds) {
        if let CodecKind::Decodable(name) = kind
            && (t.sample_count > 0 || movie.fragmented)
        {
            return Ok(((*t).clone(), name));
        }
    }
    for kind in &kinds {
        if let CodecKind::Drm(scheme) = kind {
            return Err(ConvertError::DrmProtected(scheme.clone()));
        }
    }
    for kind in &kinds {
        if let CodecKind::Unsupported(name) = kind {
            return Err(ConvertError::UnsupportedCodec(name.clone()));
        }
    }
    for kind in &kinds {
        if let CodecKind::Broken(why) = kind {
            return Err(ConvertError::CorruptInput(why.clone()));
        }
    }
    Err(ConvertError::CorruptInput(
        "the audio track has no samples".into(),
    ))
}

/// State of one conversion from the first decoded packet on.
struct Run<'a> {
    sink: BatchedSink<'a>,
    options: &'a Options,
    observer: &'a mut dyn Observer,
    /// The ID3v2 tag, until it is written ahead of the first MP3 bytes.
    id3: Option<Vec<u8>>,
    /// Where the first MP3 frame (later overwritten by the LAME tag) starts.
    audio_start: u64,
    /// Source frames decoded so far (the decoder's timeline, priming included).
    decoded: u64,
    /// First decoded frame to keep.
    keep_start: u64,
    /// The container's end of the presentation: the packet that holds it is kept whole.
    edit_end: Option<u64>,
    /// Where kept audio ends exactly (iTunSMPB length, trim end).
    exact_end: Option<u64>,
    /// Track length in frames from the container, for progress.
    track_frames: Option<u64>,
    /// Source frames handed to LAME.
    kept: u64,
    decode_errors: u64,
    last_progress: f32,
    /// Set up on the first kept audio, when rate and layout are known.
    encoder: Option<Stage>,
    /// Decoded planes as f32, reused.
    planes: Vec<Vec<f32>>,
    /// Mixed output, reused.
    mixed: [Vec<f32>; 2],
    /// LAME output, reused.
    mp3: Vec<u8>,
    /// Source timing from the container, applied once the decoder's rate is known.
    timing: Timing,
}

struct Stage {
    lame: Encoder,
    mix: Downmix,
    in_rate: u32,
    in_channels: usize,
    out_rate: u32,
    /// The CBR bitrate, kbit/s; `None` with VBR.
    cbr: Option<u16>,
}

/// What the container says about the presented range, in its own units.
struct Timing {
    edit: Option<mp4::Edit>,
    gapless: Option<mp4::Gapless>,
    movie_timescale: u32,
    media_timescale: u32,
    media_duration: u64,
    fragmented: bool,
}

impl<'a> Run<'a> {
    fn new(
        sink: &'a mut dyn WriteSink,
        options: &'a Options,
        observer: &'a mut dyn Observer,
        movie: &Movie,
        track: &TrackBox,
        rate: Option<u32>,
    ) -> Run<'a> {
        let mut run = Run {
            sink: BatchedSink::new(sink, WRITE_BATCH),
            options,
            observer,
            id3: id3::encode(&movie.tags, options.id3_version),
            audio_start: 0,
            decoded: 0,
            keep_start: 0,
            edit_end: None,
            exact_end: None,
            track_frames: None,
            kept: 0,
            decode_errors: 0,
            last_progress: 0.0,
            encoder: None,
            planes: Vec::new(),
            mixed: [Vec::new(), Vec::new()],
            mp3: Vec::new(),
            timing: Timing {
                edit: track.edit,
                gapless: movie.itunsmpb,
                movie_timescale: movie.movie_timescale,
                media_timescale: track.media_timescale,
                media_duration: track.media_duration,
                fragmented: movie.fragmented,
            },
        };
        if let Some(rate) = rate {
            run.set_range(rate);
        }
        run
    }

    /// Computes the kept range in decoded frames at `rate`.
    ///
    /// ffmpeg is the reference for what the source "decodes to": it skips an edit's
    /// `media_time` (or iTunSMPB priming when there is no edit list) sample-exactly, but
    /// ends an edit only at packet granularity — the packet holding the edit's end is
    /// kept whole — and ignores the edit's length in fragmented files. We do the same.
    /// iTunSMPB's length and the trim option's end are applied exactly.
    fn set_range(&mut self, rate: u32) {
        let t = &self.timing;
        let scale = |v: u64, from: u32| -> u64 {
            if from == 0 {
                v
            } else {
                (v as u128 * rate as u128 / from as u128).min(u64::MAX as u128) as u64
            }
        };
        let (mut start, mut edit_end, mut exact_end) = (0u64, None, None);
        match (t.edit, t.gapless) {
            (Some(e), _) => {
                start = scale(e.media_time, t.media_timescale);
                if e.segment_duration > 0 && t.movie_timescale > 0 && !t.fragmented {
                    edit_end =
                        Some(start.saturating_add(scale(e.segment_duration, t.movie_timescale)));
                }
            }
            (None, Some(g)) => {
                start = g.priming as u64;
                exact_end = Some(start.saturating_add(g.frames));
            }
            (None, None) => {}
        }
        if t.media_timescale > 0 && t.media_duration > 0 && t.media_duration != u64::MAX {
            self.track_frames = Some(scale(t.media_duration, t.media_timescale));
        }
        if let Some(trim) = self.options.trim {
            let ms = |v: u64| (v as u128 * rate as u128 / 1000).min(u64::MAX as u128) as u64;
            if let Some(end) = trim.end_ms {
                let end = start.saturating_add(ms(end));
                exact_end = Some(exact_end.map_or(end, |e: u64| e.min(end)));
            }
            start = start.saturating_add(ms(trim.start_ms));
        }
        self.keep_start = start;
        self.edit_end = edit_end;
        self.exact_end = exact_end;
    }

    /// Where the kept audio ends for a buffer decoded at `[begin, end)`.
    fn keep_end_for(&self, begin: u64, end: u64) -> u64 {
        let edit = match self.edit_end {
            Some(e) if begin >= e => begin,
            _ => end,
        };
        edit.min(self.exact_end.unwrap_or(u64::MAX))
    }

    fn past_end(&self) -> bool {
        self.decoded
            >= self
                .edit_end
                .unwrap_or(u64::MAX)
                .min(self.exact_end.unwrap_or(u64::MAX))
    }

    /// The decoder's rate, once the encoder is set up (at the first kept audio).
    fn decoded_rate(&self) -> Option<u32> {
        self.encoder.as_ref().map(|stage| stage.in_rate)
    }

    fn expected_frames(&self) -> Option<u64> {
        let end = [self.exact_end, self.edit_end, self.track_frames]
            .into_iter()
            .flatten()
            .min()?;
        Some(end.saturating_sub(self.keep_start))
    }

    fn report(&mut self, fraction: f32) {
        let fraction = fraction.clamp(0.0, 1.0);
        if fraction >= self.last_progress + PROGRESS_STEP {
            self.last_progress = fraction;
            self.observer.progress(fraction);
        }
    }

    /// Takes one decoded buffer: keeps the part in range and encodes it.
    fn take(
        &mut self,
        buf: &symphonia::core::audio::GenericAudioBufferRef<'_>,
    ) -> Result<(), ConvertError> {
        let frames = buf.frames() as u64;
        if frames == 0 {
            return Ok(());
        }
        if self.decoded == 0 {
            // The decoder's rate is the one that counts (the sample entry's may be wrong).
            self.set_range(buf.spec().rate());
        }
        let begin = self.decoded;
        self.decoded += frames;
        let lo = self.keep_start.max(begin);
        let hi = self.keep_end_for(begin, self.decoded);
        if lo >= hi {
            return Ok(());
        }
        let range = (lo - begin) as usize..(hi - begin) as usize;
        let channels = buf.spec().channels().clone();
        let count = buf.num_planes();
        if self.encoder.is_none() {
            self.start_encoder(buf.spec().rate(), &channels, count)?;
        }
        let stage = self.encoder.as_mut().expect("started above");
        if stage.in_channels != count || stage.in_rate != buf.spec().rate() {
            return Err(ConvertError::CorruptInput(format!(
                "audio format changes mid-stream ({} Hz × {} → {} Hz × {count})",
                stage.in_rate,
                stage.in_channels,
                buf.spec().rate()
            )));
        }
        buf.copy_to_vecs_planar::<f32>(&mut self.planes);
        for plane in &mut self.planes {
            tame(&mut plane[range.clone()]);
        }
        let n = range.len();
        self.mp3.clear();
        self.mp3.reserve(n * 5 / 4 + 7200);
        let (left, right): (&[f32], &[f32]) = if stage.mix.passthrough {
            let l = &self.planes[0][range.clone()];
            let r = if stage.mix.out_channels == 2 {
                &self.planes[1][range.clone()]
            } else {
                l
            };
            (l, r)
        } else {
            stage
                .mix
                .apply(&self.planes, range.clone(), &mut self.mixed);
            (&self.mixed[0], &self.mixed[1])
        };
        let out = self.mp3.spare_capacity_mut();
        let written = if stage.mix.out_channels == 1 {
            stage.lame.encode(MonoPcm(left), out)
        } else {
            stage.lame.encode(DualPcm { left, right }, out)
        }
        .map_err(|e| ConvertError::Io(format!("LAME encode failed: {e}")))?;
        // SAFETY: LAME initialised the first `written` bytes of the spare capacity.
        unsafe { self.mp3.set_len(written) };
        self.kept += n as u64;
        self.emit()
    }

    fn start_encoder(
        &mut self,
        in_rate: u32,
        channels: &symphonia::core::audio::Channels,
        count: usize,
    ) -> Result<(), ConvertError> {
        if in_rate == 0 || count == 0 {
            return Err(ConvertError::CorruptInput(format!(
                "decoded audio has {count} channels at {in_rate} Hz"
            )));
        }
        let mix = Downmix::new(channels, count, self.options.mono);
        let out_rate = options::output_rate(self.options.sample_rate, in_rate);
        let setup = |e: mp3lame_encoder::BuildError| {
            ConvertError::InvalidOptions(format!("LAME rejected the settings: {e}"))
        };
        let mut b =
            Builder::new().ok_or_else(|| ConvertError::Io("LAME could not allocate".into()))?;
        b.set_num_channels(mix.out_channels as u8).map_err(setup)?;
        b.set_sample_rate(in_rate).map_err(setup)?;
        b.set_output_sample_rate(std::num::NonZeroU32::new(out_rate))
            .map_err(setup)?;
        b.set_mode(if mix.out_channels == 1 {
            mp3lame_encoder::Mode::Mono
        } else {
            mp3lame_encoder::Mode::JointStereo
        })
        .map_err(setup)?;
        // LAME's own default, and ffmpeg's libmp3lame default: benchmarks compare like with like.
        b.set_quality(Quality::VeryNice).map_err(setup)?;
        let cbr = self.options.cbr_bitrate(out_rate, mix.out_channels as u8)?;
        match (cbr, self.options.mode) {
            (Some(kbps), _) => {
                b.set_vbr_mode(VbrMode::Off).map_err(setup)?;
                // The crate's Bitrate enum lacks 8, 16, 24, 56 and 144 kbps: set it directly.
                // SAFETY: the pointer is the builder's live LAME handle, used on this thread only.
                let rc = unsafe { mp3lame_encoder::ffi::lame_set_brate(b.as_ptr(), kbps as i32) };
                if rc != 0 {
                    return Err(ConvertError::InvalidOptions(format!(
                        "LAME rejected {kbps} kbps"
                    )));
                }
            }
            (None, mode) => {
                let q = match mode {
                    Mode::Vbr(q) => q,
                    _ => unreachable!("cbr_bitrate gives a bitrate for every CBR mode"),
                };
                b.set_vbr_mode(VbrMode::Mtrh).map_err(setup)?;
                b.set_vbr_quality(vbr_quality(q)).map_err(setup)?;
            }
        }
        b.set_to_write_vbr_tag(true).map_err(setup)?;
        let lame = b.build().map_err(setup)?;
        self.encoder = Some(Stage {
            lame,
            mix,
            in_rate,
            in_channels: count,
            out_rate,
            cbr,
        });
        Ok(())
    }

    /// Writes the pending MP3 bytes, preceded by the ID3 tag the first time.
    fn emit(&mut self) -> Result<(), ConvertError> {
        if let Some(tag) = self.id3.take() {
            self.sink.write(&tag).map_err(io_error)?;
            self.audio_start = tag.len() as u64;
        }
        if !self.mp3.is_empty() {
            self.sink.write(&self.mp3).map_err(io_error)?;
        }
        Ok(())
    }

    fn finish(mut self, codec: &str) -> Result<Summary, ConvertError> {
        let Some(mut stage) = self.encoder.take() else {
            // Audio was decoded, but none of it fell in the kept range.
            return Err(match self.options.trim {
                Some(trim) => ConvertError::InvalidOptions(format!(
                    "the trim range starting at {} ms keeps no audio: the source decodes to {} frames",
                    trim.start_ms, self.decoded
                )),
                None => ConvertError::CorruptInput(format!(
                    "the edit list starts at frame {} but the audio has only {} frames",
                    self.keep_start, self.decoded
                )),
            });
        };
        self.mp3.clear();
        self.mp3.reserve(7200);
        let out: &mut [MaybeUninit<u8>] = self.mp3.spare_capacity_mut();
        let written = stage
            .lame
            .flush::<FlushGap>(out)
            .map_err(|e| ConvertError::Io(format!("LAME flush failed: {e}")))?;
        // SAFETY: LAME initialised the first `written` bytes of the spare capacity.
        unsafe { self.mp3.set_len(written) };
        self.emit()?;
        self.sink.flush().map_err(io_error)?;
        let mut tag = Vec::with_capacity(stage.lame.lame_tag_size());
        if stage.lame.lame_tag_encode_to_vec(&mut tag).is_some() {
            self.sink
                .write_at(self.audio_start, &tag)
                .map_err(io_error)?;
        }
        let output_frames =
            (self.kept as u128 * stage.out_rate as u128 / stage.in_rate as u128) as u64;
        let audio_bytes = self.sink.len() - self.audio_start;
        let bitrate_kbps = stage.cbr.unwrap_or_else(|| {
            let bits = audio_bytes as u128 * 8 * stage.out_rate as u128;
            (bits / (output_frames.max(1) as u128 * 1000)).min(u16::MAX as u128) as u16
        });
        self.observer.progress(1.0);
        Ok(Summary {
            input_codec: codec.to_string(),
            input_sample_rate: stage.in_rate,
            input_channels: stage.in_channels.min(255) as u8,
            output_sample_rate: stage.out_rate,
            output_channels: stage.mix.out_channels as u8,
            output_frames,
            duration_ms: output_frames * 1000 / stage.out_rate as u64,
            output_bytes: self.sink.len(),
            bitrate_kbps,
        })
    }
}

/// The largest magnitude handed to LAME: +18 dBFS, far above any decoder's overshoot.
const MAX_SAMPLE: f32 = 8.0;

/// Makes samples safe for LAME: NaN becomes silence, infinities and absurd magnitudes
/// (float PCM can hold 1e38) become ±[`MAX_SAMPLE`]. LAME's psychoacoustic model
/// asserts on the NaN energies such samples cause (found by the `convert` fuzzer: an
/// abort natively, a trap in the component). Audio within ±8 is left as it is.
fn tame(samples: &mut [f32]) {
    for s in samples {
        if s.is_nan() {
            *s = 0.0;
        } else if s.abs() > MAX_SAMPLE {
            *s = MAX_SAMPLE.copysign(*s);
        }
    }
}

fn vbr_quality(q: u8) -> Quality {
    match q {
        0 => Quality::Best,
        1 => Quality::SecondBest,
        2 => Quality::NearBest,
        3 => Quality::VeryNice,
        4 => Quality::Nice,
        5 => Quality::Good,
        6 => Quality::Decent,
        7 => Quality::Ok,
        8 => Quality::SecondWorst,
        _ => Quality::Worst,
    }
}

impl From<IoError> for ConvertError {
    fn from(e: IoError) -> Self {
        io_error(e)
    }
}
