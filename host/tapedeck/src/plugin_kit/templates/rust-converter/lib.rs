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

use tapedeck_converter::Mode;

struct Converter;

export!(Converter);

impl Guest for Converter {
    fn convert(
        input: &Source,
        output: &Sink,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::ConvertError> {
        // The job's options; when it asked for no bitrate, the built-in converter's
        // default. Change them here (mono, a VBR quality, ...) to make it your own.
        let options = core_options(options, Mode::CbrOrDefault(WIT_DEFAULT_KBPS));
        run(input, output, &options)
    }
}

// The host side of the world (source, sink, progress, logging) as the core's traits, and
// `core_options`: from the Tapedeck checkout build.sh names in TAPEDECK_SRC.
include!(concat!(
    env!("TAPEDECK_SRC"),
    "/components/converter/src/host_glue.rs"
));
