//! Tapedeck's built-in converter: exports `tapedeck:plugin/conversion` over the core
//! (`tapedeck-converter`, the crate above), as any converter plugin does.
//!
//! Contact points: the WIT in `../../../wit` (world `converter`); the core's `ReadAt`,
//! `WriteSink` and `Observer` traits, implemented over the host's `source`/`sink`
//! resources and the `progress`/`logging` imports by `../src/host_glue.rs`.
//!
//! Only a wasm32 component: compiled natively (`cargo build --workspace`) it is empty.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    // Only our two files: the shared wit/ dir also holds other worlds (auth, ...),
    // whose edits must not break this build. Symlinks keep one copy of the contract.
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
        let options = core_options(options, Mode::CbrOrDefault(WIT_DEFAULT_KBPS));
        run(input, output, &options)
    }
}

include!("../../src/host_glue.rs");
