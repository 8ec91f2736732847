//! Tapedeck's converter: audio in an MP4/M4A/MOV container → MP3.
//!
//! The same code runs natively (benchmarks, tests) and as a wasm component.
//!
//! # Layout
//! - [`options`]: the public types mirroring the WIT contract (`Options`, `Summary`,
//!   `ConvertError`) and option validation.
//! - [`io`]: the `ReadAt` / `WriteSink` seams, with file and in-memory implementations.
//! - `mp4`: our own reading of the `moov` (edit lists, codec names, DRM, tags).
//! - `mix`: channel layouts → mono/stereo downmix.
//! - `mpa`: MP3 frames cut out of MP4 samples that are not one frame each.
//! - `id3`: the ID3v2.4 or v2.3 tag written before the audio.
//! - `pipeline`: demux (symphonia) → decode → trim → downmix → encode (LAME).
//! - `reasons`: symphonia's error texts → failure reasons in words for people.
//! - `host_glue.rs` (not a module): the host's source/sink/progress as the core's traits,
//!   `include!`d by each converter component built on the core — the built-in one
//!   (`component/`, package `tapedeck-converter-component`) and plugins.
//! - `fuzzing` (tests and the `fuzzing` feature only): the fuzz targets' bodies
//!   (`fuzz/`, `make fuzz`) and the stable-toolchain replay of `fuzz/regressions/`.
//! - `testgen` (tests and the `testgen` feature only): MP4 inputs made in code (ISO PCM,
//!   MP3 in odd sample layouts) for the tests and the fuzzers' seeds.

mod id3;
pub mod io;
mod mix;
mod mp4;
mod mpa;
pub mod options;
mod pipeline;
mod reasons;

#[cfg(test)]
mod corpus_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "testgen"))]
pub mod testgen;

pub use io::{FileSource, IoError, ReadAt, SliceSource, VecSink, WriteSink};
pub use options::{ConvertError, Id3Version, Mode, MpegVersion, Options, Summary, Trim};
pub use pipeline::{Observer, convert, convert_observed};

/// Maps a source/sink failure to the conversion error the caller sees.
pub(crate) fn io_error(e: IoError) -> ConvertError {
    match e {
        IoError::LimitExceeded(limit) => ConvertError::OutputTooLarge(limit),
        IoError::Failed(msg) => ConvertError::Io(msg),
    }
}
