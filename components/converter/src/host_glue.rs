// The host side of the converter world, shared by every converter component built on
// this crate's core: `include!`d after `wit_bindgen::generate!({ world: "converter" })`
// by the built-in converter (`../component`) and by other converters (examples/plugins/
// converter-speech, the plugin kit's template), which generate the same bindings and
// depend on this crate as `tapedeck_converter`.

use tapedeck_converter::{ConvertError, IoError, Observer, ReadAt, WriteSink};

/// The bitrate `wit/converter.wit` documents as the default of `mode`: what a host sends
/// when the job asked for no bitrate (the WIT has no way to say "none asked for").
pub const WIT_DEFAULT_KBPS: u16 = 192;

/// A job's options as the core takes them. `default` is what this converter does when the
/// job asked for no bitrate (`cbr(192)`): the built-in converter's is
/// `Mode::CbrOrDefault(192)` (192 kbps where the output rate has it, the rate's default
/// below 32 kHz). Change the result (mono, a quality) to make a converter your own.
pub fn core_options(
    options: wit::Options,
    default: tapedeck_converter::Mode,
) -> tapedeck_converter::Options {
    use tapedeck_converter::Mode;
    tapedeck_converter::Options {
        mode: match options.mode {
            wit::Mode::Cbr(WIT_DEFAULT_KBPS) => default,
            wit::Mode::Cbr(k) => Mode::Cbr(k),
            wit::Mode::Vbr(q) => Mode::Vbr(q),
        },
        sample_rate: options.sample_rate,
        mono: options.mono,
        trim: options.trim.map(|t| tapedeck_converter::Trim {
            start_ms: t.start_ms,
            end_ms: t.end_ms,
        }),
        // The WIT has no option for it yet: the core's default, ID3v2.4.
        id3_version: tapedeck_converter::Id3Version::default(),
    }
}

/// Converts with the core, over the host's source and sink, reporting progress and
/// logging the outcome.
pub fn run(
    input: &Source,
    output: &Sink,
    options: &tapedeck_converter::Options,
) -> Result<wit::Summary, wit::ConvertError> {
    let max_read = host_io::max_read().max(4096) as usize;
    let mut source = HostSource {
        source: input,
        max_read,
    };
    let mut sink = HostSink {
        sink: output,
        max_write: max_read,
    };
    let result =
        tapedeck_converter::convert_observed(&mut source, &mut sink, options, &mut HostObserver);
    match &result {
        Err(e) => logging::log(Level::Info, &format!("conversion failed: {e}")),
        // The WIT summary has no field for it: the bitrate produced goes to the log.
        Ok(s) => logging::log(
            Level::Info,
            &format!(
                "encoded {} Hz, {} channel(s) at {} kbps",
                s.output_sample_rate, s.output_channels, s.bitrate_kbps
            ),
        ),
    }
    result.map(into_wit_summary).map_err(into_wit_error)
}

/// The host's source, borrowed for the duration of one `convert` call.
///
/// symphonia 0.6.1's `MediaSourceStream<'s>` accepts a borrowed source (no `'static`),
/// and wit-bindgen's resource handles are `Send + Sync`, so the borrow is used as is:
/// no re-wrapping of raw handles, no `unsafe`.
struct HostSource<'a> {
    source: &'a Source,
    /// The host's `max-read`: no request is larger.
    max_read: usize,
}

impl ReadAt for HostSource<'_> {
    fn size(&self) -> u64 {
        self.source.size()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, IoError> {
        let len = buf.len().min(self.max_read);
        let bytes = self.source.read_at(offset, len as u32).map_err(from_host)?;
        let n = bytes.len().min(len);
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }
}

/// The host's sink, borrowed for the duration of one `convert` call.
struct HostSink<'a> {
    sink: &'a Sink,
    /// The host's `max-read`, which also caps each write.
    max_write: usize,
}

impl WriteSink for HostSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        for chunk in bytes.chunks(self.max_write) {
            self.sink.write(chunk).map_err(from_host)?;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), IoError> {
        let mut at = offset;
        for chunk in bytes.chunks(self.max_write) {
            self.sink.write_at(at, chunk).map_err(from_host)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }
}

struct HostObserver;

impl Observer for HostObserver {
    fn progress(&mut self, fraction: f32) {
        progress::report(fraction);
    }

    fn warn(&mut self, message: &str) {
        logging::log(Level::Warn, message);
    }
}

fn from_host(e: host_io::IoError) -> IoError {
    match e {
        host_io::IoError::LimitExceeded(limit) => IoError::LimitExceeded(limit),
        host_io::IoError::InvalidRequest(msg) => IoError::Failed(format!("invalid request: {msg}")),
        host_io::IoError::Failed(msg) => IoError::Failed(msg),
    }
}

fn into_wit_summary(s: tapedeck_converter::Summary) -> wit::Summary {
    wit::Summary {
        input_codec: s.input_codec,
        input_sample_rate: s.input_sample_rate,
        input_channels: s.input_channels,
        output_sample_rate: s.output_sample_rate,
        output_channels: s.output_channels,
        output_frames: s.output_frames,
        duration_ms: s.duration_ms,
        output_bytes: s.output_bytes,
        bitrate_kbps: s.bitrate_kbps,
    }
}

fn into_wit_error(e: ConvertError) -> wit::ConvertError {
    match e {
        ConvertError::NoAudioTrack => wit::ConvertError::NoAudioTrack,
        ConvertError::UnsupportedCodec(s) => wit::ConvertError::UnsupportedCodec(s),
        ConvertError::DrmProtected(s) => wit::ConvertError::DrmProtected(s),
        ConvertError::CorruptInput(s) => wit::ConvertError::CorruptInput(s),
        ConvertError::InvalidOptions(s) => wit::ConvertError::InvalidOptions(s),
        ConvertError::OutputTooLarge(n) => wit::ConvertError::OutputTooLarge(n),
        ConvertError::Io(s) => wit::ConvertError::Io(s),
    }
}
