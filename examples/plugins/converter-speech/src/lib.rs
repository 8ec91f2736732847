//! A second converter: a speech preset on Tapedeck's converter core. What a job leaves
//! to the converter it decides for speech — mono, variable bitrate at LAME quality 6
//! (about 40–56 kbit/s for a voice) — and what a job asks for (a bitrate, VBR quality,
//! sample rate, trim) it honours. Built by the test suite (tests/build.rs) and checked
//! with `tapedeck plugin check`; README.md says how to build it by hand.
//!
//! It shows how a converter reuses the core: depend on `tapedeck-converter` (a library),
//! generate the converter world's bindings, and include the host
//! glue (`host_glue.rs`: the host's source/sink/progress as the core's traits).
//!
//! Only a wasm32 component: compiled natively (`cargo build --workspace`) it is empty.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "converter",
});

use exports::tapedeck::plugin::conversion::{self as wit, Guest};
use tapedeck::plugin::io::{self as host_io, Sink, Source};
use tapedeck::plugin::logging::{self, Level};
use tapedeck::plugin::progress;

use tapedeck_converter::Mode;

/// LAME's VBR quality for speech when the job leaves the bitrate to the converter.
const SPEECH_VBR_QUALITY: u8 = 6;

struct Speech;

export!(Speech);

impl Guest for Speech {
    fn convert(
        input: &Source,
        output: &Sink,
        options: wit::Options,
    ) -> Result<wit::Summary, wit::ConvertError> {
        let mut options = core_options(options, Mode::Vbr(SPEECH_VBR_QUALITY));
        // A voice needs one channel.
        options.mono = true;
        run(input, output, &options)
    }
}

include!("../../../../components/converter/src/host_glue.rs");
