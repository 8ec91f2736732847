//! A Tapedeck converter on Tapedeck's converter core. As written it converts as the
//! built-in converter does; change the options in `convert` (or the core's output) to
//! make it your own — examples/plugins/converter-speech in the Tapedeck repository is a
//! speech preset made this way.

wit_bindgen::generate!({
    path: "wit",
    world: "converter",
});

use exports::tapedeck::plugin::conversion::{self as wit, Guest};
use tapedeck::plugin::io::{self as host_io, Sink, Source};
use tapedeck::plugin::logging::{self, Level};
use tapedeck::plugin::progress;

use tapedeck_converter::{Id3Version, Mode, Options, Trim};

/// `cbr(192)` is what hosts send when the job asked for no bitrate (wit/converter.wit).
const WIT_DEFAULT_KBPS: u16 = 192;

struct Converter;

export!(Converter);

impl Guest for Converter {
    fn convert(
        input: &Source,
        output: &Sink,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::ConvertError> {
        let options = Options {
            mode: match options.mode {
                wit::Mode::Cbr(WIT_DEFAULT_KBPS) => Mode::CbrOrDefault(WIT_DEFAULT_KBPS),
                wit::Mode::Cbr(k) => Mode::Cbr(k),
                wit::Mode::Vbr(q) => Mode::Vbr(q),
            },
            sample_rate: options.sample_rate,
            mono: options.mono,
            trim: options.trim.map(|t| Trim {
                start_ms: t.start_ms,
                end_ms: t.end_ms,
            }),
            id3_version: Id3Version::default(),
        };
        run(input, output, &options)
    }
}

// The host side of the world (source, sink, progress, logging) as the core's traits.
include!("SRC/components/converter/src/host_glue.rs");
