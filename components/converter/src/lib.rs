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
//! - `id3`: the ID3v2.4 tag written before the audio.
//! - `pipeline`: demux (symphonia) → decode → trim → downmix → encode (LAME).
//! - `reasons`: symphonia's error texts → failure reasons in words for people.
//! - `component` (wasm32 only): the WIT export, adapting host resources to the traits.

mod id3;
pub mod io;
mod mix;
mod mp4;
pub mod options;
mod pipeline;
mod reasons;

#[cfg(target_arch = "wasm32")]
mod component;

#[cfg(test)]
mod corpus_tests;

pub use io::{FileSource, IoError, ReadAt, SliceSource, VecSink, WriteSink};
pub use options::{ConvertError, Mode, Options, Summary, Trim};
pub use pipeline::{Observer, convert, convert_observed};

/// Maps a source/sink failure to the conversion error the caller sees.
pub(crate) fn io_error(e: IoError) -> ConvertError {
    match e {
        IoError::LimitExceeded(limit) => ConvertError::OutputTooLarge(limit),
        IoError::Failed(msg) => ConvertError::Io(msg),
    }
}
