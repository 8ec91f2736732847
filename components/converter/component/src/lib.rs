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

use tapedeck_converter::{Id3Version, Mode, Options, Trim};

/// The bitrate `wit/converter.wit` documents as the default of `mode`. The WIT has no
/// way to say "none asked for", so `cbr(192)` means 192 kbps where the output rate has
/// it and the default for the rate and channels where it does not (below 32 kHz):
/// [`Mode::CbrOrDefault`].
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
                // The contract's default: what a host sends when no bitrate was asked for.
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
            // The WIT has no option for it yet: the core's default, ID3v2.4.
            id3_version: Id3Version::default(),
        };
        run(input, output, &options)
    }
}

include!("../../src/host_glue.rs");
