//! Failure reasons in words for people, from symphonia's errors.
//!
//! symphonia says what stopped it in texts written for its developers:
//! `Error::Unsupported("aac: predictor data")`, `Error::DecodeError("common (mp4a): invalid
//! sample rate")`. Those used to reach job failure reasons, and so the owner's e-mail, as
//! they were. [`KNOWN`] says what each text means, for the texts that the parts of
//! symphonia we use (the MP4 demuxer; the AAC decoder, our vendored copy; ALAC, FLAC, MP3
//! and PCM; the MPEG-4 audio and ALAC config readers they share) can produce and that an
//! uploaded file can plausibly cause. The functions below put that meaning into a
//! sentence for where it happened: opening the file ([`open_error`]), setting up the
//! decoder ([`setup_error`]), decoding packets ([`decode_error`], [`undecodable`]). A
//! text missing from the table keeps a generic but honest wording that quotes it.
//!
//! Where the failure lands: an unsupported feature found before decoding is an
//! `UnsupportedCodec` (the host words it "unsupported audio codec: NAME", so names are
//! noun phrases); one found while decoding is a `CorruptInput`, because in an AAC-LC
//! stream the bits that ask for prediction, coupling or a program config element are, in
//! practice, damage far more often than a real use of the feature.
//!
//! The texts are symphonia 0.6.1's (pinned in Cargo.toml) and the vendored
//! symphonia-codec-aac's: on an upgrade, re-read them (`grep -rn
//! 'unsupported_error(\|decode_error('` in those crates).

use symphonia::core::errors::Error as SymError;

use crate::ConvertError;

/// What a symphonia error text means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// A feature we cannot decode: its name, fit to follow "unsupported audio codec: "
    /// and "uses " (and to take "which is not supported").
    Unsupported(&'static str),
    /// Damage: what is wrong.
    Damaged(&'static str),
}

use Meaning::{Damaged, Unsupported};

/// symphonia's texts, exactly, and what they mean.
const KNOWN: &[(&str, Meaning)] = &[
    // The AAC decoder (vendored symphonia-codec-aac): AAC-LC only, up to 5.1.
    // The predictor bit asks for AAC Main prediction (AAC-LTP uses the same bit).
    (
        "aac: predictor data",
        Unsupported("AAC Main-profile prediction"),
    ),
    (
        "aac: gain control data",
        Unsupported("AAC-SSR gain control"),
    ),
    (
        "aac: coupling channel element",
        Unsupported("AAC channel coupling"),
    ),
    (
        "aac: program config",
        Unsupported("a custom AAC channel layout (program config element)"),
    ),
    // Raised for HE-AAC signalled in the config, for other object types, for 960-sample
    // frames and for layouts beyond 5.1; `setup_error` words the channel case itself.
    (
        "aac: aac too complex",
        Unsupported("an AAC variant other than AAC-LC"),
    ),
    (
        "aac: object type",
        Unsupported("an AAC variant other than AAC-LC"),
    ),
    (
        "aac: channels or channel layout is required",
        Damaged("no channel layout is given"),
    ),
    (
        "aac: sample rate is required",
        Damaged("no sample rate is given"),
    ),
    ("aac: invalid data", Damaged("invalid AAC data")),
    // The MPEG-4 AudioSpecificConfig reader (symphonia-common), run by the AAC decoder.
    (
        "common (mp4a): program config element",
        Unsupported("a custom AAC channel layout (program config element)"),
    ),
    (
        "common (mp4a): invalid channel configuration",
        Unsupported("an AAC channel configuration this converter does not know"),
    ),
    (
        "common (mp4a): invalid sample rate",
        Damaged("an invalid AAC sample rate"),
    ),
    (
        "common (mp4a): a sample rate of 0 is invalid",
        Damaged("a sample rate of 0"),
    ),
    (
        "common (mp4a): version3 extensions",
        Unsupported("MPEG-4 audio version 3 extensions"),
    ),
    (
        "common (mp4a): error protection config",
        Unsupported("error-protected MPEG-4 audio"),
    ),
    (
        "common (mp4a): ELD config",
        Unsupported("AAC-ELD (enhanced low delay)"),
    ),
    (
        "common (mp4a): ALS config",
        Unsupported("MPEG-4 ALS (lossless)"),
    ),
    (
        "common (mp4a): SLS config",
        Unsupported("MPEG-4 SLS (scalable lossless)"),
    ),
    (
        "common (mp4a): MPEG Surround config",
        Unsupported("MPEG Surround"),
    ),
    (
        "common (mp4a): MPEG Layer 1/2/3 config",
        Unsupported("MPEG-1/2 audio labelled as MPEG-4 audio"),
    ),
    // The ALAC decoder and its config reader (symphonia-common).
    (
        "alac: missing extra data",
        Damaged("the magic cookie (ALAC settings block) is missing"),
    ),
    (
        "common (alac): magic cookie size too small",
        Damaged("the magic cookie (ALAC settings block) is cut short"),
    ),
    (
        "common (alac): invalid magic cookie size",
        Damaged("the magic cookie (ALAC settings block) has an invalid size"),
    ),
    (
        "common (alac): not compatible with alac version 0",
        Unsupported("an ALAC version other than 0"),
    ),
    (
        "common (alac): frame length too large",
        Unsupported("ALAC with frames longer than this converter accepts"),
    ),
    // The FLAC decoder.
    (
        "flac: missing extra data",
        Damaged("the FLAC stream info is missing"),
    ),
    (
        "flac: lpc shifts less than 0 are not supported",
        Unsupported("FLAC with negative prediction shifts"),
    ),
    // The PCM decoder.
    (
        "pcm: sample rate is required",
        Damaged("no sample rate is given"),
    ),
    (
        "pcm: number of channels cannot be 0",
        Damaged("the channel count is 0"),
    ),
    (
        "pcm: channels or channel_layout is required",
        Damaged("no channel layout is given"),
    ),
    (
        "pcm: codec is unsupported",
        Unsupported("this PCM sample format"),
    ),
    // The MP3 decoder.
    (
        "mpa: free bit-rate is not supported",
        Unsupported("free-format MP3 (free bit rate)"),
    ),
    // The codec registry: no decoder for what the demuxer made of the sample entry.
    (
        "core (codec): unsupported audio codec",
        Unsupported("an audio format description the decoder does not recognise"),
    ),
    // The MP4 demuxer (symphonia-format-isomp4) and the descriptor reader it uses.
    (
        "isomp4: missing ftyp atom",
        Unsupported(
            "an MP4/MOV file without a file type box (ftyp), as very old QuickTime files are",
        ),
    ),
    (
        "isomp4 (stsd): more than 1 sample entry",
        Unsupported("an audio track that changes format midway (several sample descriptions)"),
    ),
    (
        "isomp4: maximum 32 channels",
        Unsupported("PCM audio with more than 32 channels"),
    ),
    (
        "isomp4: unsupported number of channels",
        Unsupported("PCM audio with this number of channels"),
    ),
    (
        "isomp4 (alac): unsupported alac version",
        Unsupported("this version of ALAC in MP4"),
    ),
    (
        "isomp4 (flac): unsupported flac version",
        Unsupported("this version of FLAC in MP4"),
    ),
    (
        "isomp4: unknown sample entry version",
        Damaged("an unknown version of the audio sample description"),
    ),
    (
        "common (mp4): invalid sl config descriptor predefined",
        Damaged("an invalid stream descriptor (esds)"),
    ),
    (
        "isomp4: missing moov atom",
        Damaged("the movie index (moov box) is missing"),
    ),
    (
        "isomp4 (mvhd): timescale is zero",
        Damaged("the movie header gives a time scale of 0"),
    ),
    (
        "isomp4: unknown size atom has sized parent",
        Damaged("a box without a size inside a box with one"),
    ),
];

fn meaning(e: &SymError) -> Option<Meaning> {
    let text = text(e)?;
    KNOWN.iter().find(|(t, _)| *t == text).map(|&(_, m)| m)
}

/// The text symphonia put in `e`, if it has one.
fn text(e: &SymError) -> Option<&'static str> {
    match e {
        SymError::Unsupported(t) | SymError::DecodeError(t) | SymError::LimitError(t) => Some(t),
        _ => None,
    }
}

/// `e` as it is, for a generic message: its text, or its display when it has none.
fn detail(e: &SymError) -> String {
    text(e).map_or_else(|| e.to_string(), str::to_string)
}

/// The codec as people write it: "aac" → "AAC".
fn label(codec: &str) -> String {
    codec.to_ascii_uppercase()
}

/// Why the MP4 demuxer could not open the file (the host's own read failures are
/// reported before this is asked).
pub(crate) fn open_error(e: &SymError) -> ConvertError {
    match (meaning(e), e) {
        (Some(Unsupported(name)), _) => ConvertError::UnsupportedCodec(name.into()),
        (Some(Damaged(what)), _) => corrupt(format!("the MP4/MOV structure is damaged: {what}")),
        (None, SymError::Unsupported(t)) => corrupt(format!(
            "the MP4/MOV structure is damaged or uses a feature this converter does not \
             support (the MP4 reader says \"{t}\")"
        )),
        (None, SymError::IoError(_)) => corrupt(format!(
            "the MP4/MOV structure is damaged or cut short (reading it failed: {e})"
        )),
        (None, _) => corrupt(format!(
            "the MP4/MOV structure is damaged (the MP4 reader says \"{}\")",
            detail(e)
        )),
    }
}

/// Why the decoder for `codec` (our name: "aac", "alac", ...) could not be set up for a
/// track of `channels` channels.
pub(crate) fn setup_error(codec: &str, channels: usize, e: &SymError) -> ConvertError {
    let label = label(codec);
    if let SymError::Unsupported("aac: aac too complex") = e {
        if channels > 6 {
            return ConvertError::UnsupportedCodec(format!(
                "AAC with {channels} channels (at most 6, as in 5.1, are supported)"
            ));
        }
        if channels > 2 {
            return ConvertError::UnsupportedCodec(format!(
                "AAC with this {channels}-channel layout"
            ));
        }
    }
    match (meaning(e), e) {
        (Some(Unsupported(name)), _) => ConvertError::UnsupportedCodec(name.into()),
        (Some(Damaged(what)), _) => corrupt(format!(
            "the {label} settings in the file are damaged: {what}"
        )),
        (None, SymError::Unsupported(t)) => ConvertError::UnsupportedCodec(format!(
            "{label} with a feature this converter does not support (the decoder says \"{t}\")"
        )),
        (None, _) => corrupt(format!(
            "the {label} settings in the file are damaged (the decoder says \"{}\")",
            detail(e)
        )),
    }
}

/// Why decoding stopped at a packet, for the errors that end a run at once (the
/// pipeline skips damaged packets, see [`damage`]).
pub(crate) fn decode_error(codec: &str, e: &SymError) -> ConvertError {
    let label = label(codec);
    corrupt(match (meaning(e), e) {
        (Some(Unsupported(name)), _) => {
            format!("the {label} audio is damaged or uses {name}, which is not supported")
        }
        (Some(Damaged(what)), _) => format!("the {label} audio is damaged: {what}"),
        (None, SymError::Unsupported(t)) => format!(
            "the {label} audio is damaged or uses a feature this converter does not support \
             (the decoder says \"{t}\")"
        ),
        (None, _) => format!(
            "the {label} audio cannot be decoded (the decoder says \"{}\")",
            detail(e)
        ),
    })
}

/// Why the audio is declared damaged after `errors` packets in a row that the decoder
/// rejected, the last with `last`, `decoded` frames (at `rate` Hz) into the track.
pub(crate) fn undecodable(
    codec: &str,
    errors: u32,
    decoded: u64,
    rate: Option<u32>,
    last: &SymError,
) -> ConvertError {
    let at = match rate {
        _ if decoded == 0 => "from the start".to_string(),
        Some(rate) if rate > 0 => format!("after {:.1} s of audio", decoded as f64 / rate as f64),
        _ => "partway through".to_string(),
    };
    corrupt(format!(
        "the {} audio is damaged: {errors} packets in a row could not be decoded {at}; \
         the last one: {}",
        label(codec),
        damage(last)
    ))
}

/// Our codec's track has no audio parameters in symphonia's reading of the file.
pub(crate) fn unrecognised_track(codec: &str) -> ConvertError {
    ConvertError::UnsupportedCodec(format!(
        "{} stored in a way the MP4 reader does not recognise",
        label(codec)
    ))
}

/// What is wrong with a packet the decoder rejected as damaged, to end a sentence.
fn damage(e: &SymError) -> String {
    match (meaning(e), e) {
        (Some(Damaged(what)), _) => what.to_string(),
        (Some(Unsupported(name)), _) => format!("{name}, which is not supported"),
        (None, SymError::IoError(_)) => "a packet ends before its data does".into(),
        (None, _) => format!("the decoder says \"{}\"", detail(e)),
    }
}

fn corrupt(why: String) -> ConvertError {
    ConvertError::CorruptInput(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_each_text_once_and_no_internals_in_its_words() {
        for (i, (text, m)) in KNOWN.iter().enumerate() {
            assert!(
                KNOWN[i + 1..].iter().all(|(t, _)| t != text),
                "{text} twice"
            );
            let words = match m {
                Unsupported(w) | Damaged(w) => w,
            };
            assert!(
                !words.is_empty() && !words.ends_with('.'),
                "{text}: {words}"
            );
            for internal in [
                "aac:", "common (", "isomp4", "mpa:", "pcm:", "flac:", "alac:",
            ] {
                assert!(!words.contains(internal), "{text}: {words}");
            }
        }
    }

    #[test]
    fn unsupported_features_at_setup_are_named() {
        let cases = [
            ("aac", "aac: predictor data", "AAC Main-profile prediction"),
            ("aac", "aac: gain control data", "AAC-SSR gain control"),
            (
                "aac",
                "aac: coupling channel element",
                "AAC channel coupling",
            ),
            (
                "aac",
                "common (mp4a): program config element",
                "a custom AAC channel layout (program config element)",
            ),
            (
                "aac",
                "aac: aac too complex",
                "an AAC variant other than AAC-LC",
            ),
            (
                "mp3",
                "mpa: free bit-rate is not supported",
                "free-format MP3 (free bit rate)",
            ),
            (
                "alac",
                "common (alac): not compatible with alac version 0",
                "an ALAC version other than 0",
            ),
        ];
        for (codec, text, want) in cases {
            assert_eq!(
                setup_error(codec, 2, &SymError::Unsupported(text)),
                ConvertError::UnsupportedCodec(want.into()),
                "{text}"
            );
        }
    }

    #[test]
    fn channel_counts_the_aac_decoder_refuses_are_said() {
        let e = SymError::Unsupported("aac: aac too complex");
        assert_eq!(
            setup_error("aac", 8, &e),
            ConvertError::UnsupportedCodec(
                "AAC with 8 channels (at most 6, as in 5.1, are supported)".into()
            )
        );
        assert_eq!(
            setup_error("aac", 4, &e),
            ConvertError::UnsupportedCodec("AAC with this 4-channel layout".into())
        );
    }

    #[test]
    fn damaged_settings_at_setup_are_corrupt_input() {
        assert_eq!(
            setup_error(
                "aac",
                2,
                &SymError::DecodeError("common (mp4a): invalid sample rate")
            ),
            ConvertError::CorruptInput(
                "the AAC settings in the file are damaged: an invalid AAC sample rate".into()
            )
        );
        assert_eq!(
            setup_error(
                "pcm",
                2,
                &SymError::Unsupported("pcm: sample rate is required")
            ),
            ConvertError::CorruptInput(
                "the PCM settings in the file are damaged: no sample rate is given".into()
            )
        );
    }

    #[test]
    fn unknown_texts_keep_an_honest_message_with_the_detail() {
        assert_eq!(
            setup_error("flac", 2, &SymError::Unsupported("flac: something new")),
            ConvertError::UnsupportedCodec(
                "FLAC with a feature this converter does not support \
                 (the decoder says \"flac: something new\")"
                    .into()
            )
        );
        assert_eq!(
            setup_error("alac", 2, &SymError::DecodeError("alac: invalid mode")),
            ConvertError::CorruptInput(
                "the ALAC settings in the file are damaged \
                 (the decoder says \"alac: invalid mode\")"
                    .into()
            )
        );
        assert_eq!(
            decode_error("aac", &SymError::Unsupported("aac: something new")),
            ConvertError::CorruptInput(
                "the AAC audio is damaged or uses a feature this converter does not support \
                 (the decoder says \"aac: something new\")"
                    .into()
            )
        );
        assert_eq!(
            damage(&SymError::DecodeError("aac: invalid band type")),
            "the decoder says \"aac: invalid band type\""
        );
    }

    /// The example: an AAC-LC stream whose packets ask for prediction.
    #[test]
    fn unsupported_features_mid_stream_say_damaged_or_unsupported() {
        assert_eq!(
            decode_error("aac", &SymError::Unsupported("aac: predictor data")),
            ConvertError::CorruptInput(
                "the AAC audio is damaged or uses AAC Main-profile prediction, \
                 which is not supported"
                    .into()
            )
        );
        assert_eq!(
            decode_error("aac", &SymError::Unsupported("aac: program config")),
            ConvertError::CorruptInput(
                "the AAC audio is damaged or uses a custom AAC channel layout \
                 (program config element), which is not supported"
                    .into()
            )
        );
        assert_eq!(
            damage(&SymError::DecodeError("aac: invalid data")),
            "invalid AAC data"
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "end of stream");
        assert_eq!(
            damage(&SymError::IoError(eof)),
            "a packet ends before its data does"
        );
    }

    #[test]
    fn runs_of_damaged_packets_say_where_and_why() {
        let bad = SymError::DecodeError("aac: invalid data");
        assert_eq!(
            undecodable("aac", 16, 44_100 * 12 + 22_050, Some(44_100), &bad),
            ConvertError::CorruptInput(
                "the AAC audio is damaged: 16 packets in a row could not be decoded \
                 after 12.5 s of audio; the last one: invalid AAC data"
                    .into()
            )
        );
        assert_eq!(
            undecodable("alac", 16, 0, Some(44_100), &bad),
            ConvertError::CorruptInput(
                "the ALAC audio is damaged: 16 packets in a row could not be decoded \
                 from the start; the last one: invalid AAC data"
                    .into()
            )
        );
    }

    #[test]
    fn container_errors_say_what_is_wrong_with_the_file() {
        assert_eq!(
            open_error(&SymError::Unsupported("isomp4: missing ftyp atom")),
            ConvertError::UnsupportedCodec(
                "an MP4/MOV file without a file type box (ftyp), as very old QuickTime files are"
                    .into()
            )
        );
        assert_eq!(
            open_error(&SymError::DecodeError("isomp4 (mvhd): timescale is zero")),
            ConvertError::CorruptInput(
                "the MP4/MOV structure is damaged: the movie header gives a time scale of 0".into()
            )
        );
        assert_eq!(
            open_error(&SymError::DecodeError("isomp4 (stbl): missing stsz atom")),
            ConvertError::CorruptInput(
                "the MP4/MOV structure is damaged \
                 (the MP4 reader says \"isomp4 (stbl): missing stsz atom\")"
                    .into()
            )
        );
        // Damaged boxes can look like unknown features: never blamed on the codec.
        assert!(matches!(
            open_error(&SymError::Unsupported("isomp4: something new")),
            ConvertError::CorruptInput(m) if m.contains("\"isomp4: something new\"")
        ));
    }
}
