//! Public types mirroring `wit/converter.wit`, and the option rules.
//!
//! The rules are pure functions with no codec behind them, so a host can apply them
//! before accepting a job (HTTP 400, CLI) with the converter's own wording:
//! [`check_sample_rate`], [`check_bitrate`] (an explicit bitrate at an asked rate, or at
//! any rate), [`check_vbr_quality`], [`bitrates_at`], and [`default_bitrate`] (the
//! bitrate used when none is asked for, from [`DEFAULT_BITRATES`]). [`Options::validate`]
//! applies them all; [`Options::cbr_bitrate`] is what the pipeline encodes with once the
//! output rate is known. A bitrate is never replaced by another: an explicit one the
//! output rate lacks is refused, and [`Summary::bitrate_kbps`] says what was produced.

/// How the MP3 spends bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No bitrate was asked for: constant bitrate from [`default_bitrate`] for the output
    /// rate and channels.
    DefaultCbr,
    /// Constant bitrate in kbit/s, valid at the output rate (see [`check_bitrate`]);
    /// anything else is refused.
    Cbr(u16),
    /// `Cbr(k)` where `k` is valid at the output rate, else [`Mode::DefaultCbr`]. What the
    /// WIT's `cbr(192)` means: it is the contract's documented default, which hosts send
    /// when nothing was asked for (the WIT `mode` has no "none" case), and below 32 kHz no
    /// MP3 has 192 kbit/s.
    CbrOrDefault(u16),
    /// LAME VBR quality, 0 (best) ..= 9 (smallest).
    Vbr(u8),
}

/// Which ID3v2 version the tag before the audio is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Id3Version {
    /// ID3v2.3: what older players and Windows read best. Text in UTF-16 with a byte
    /// order mark, `TYER` for the year, several values joined with "/".
    V23,
    /// ID3v2.4: text in UTF-8, `TDRC` for the date, several values separated by NUL.
    #[default]
    V24,
}

/// A time range of the source to keep, in milliseconds of presented audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Start of the kept range.
    pub start_ms: u64,
    /// End of the kept range; `None`: to the end.
    pub end_ms: Option<u64>,
}

/// What to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Bitrate mode.
    pub mode: Mode,
    /// Output rate in Hz; `None`: the source rate if MP3 has it, else the nearest MP3 rate.
    pub sample_rate: Option<u32>,
    /// Downmix to one channel.
    pub mono: bool,
    /// Part of the source to keep.
    pub trim: Option<Trim>,
    /// Version of the ID3v2 tag written before the audio.
    pub id3_version: Id3Version,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::DefaultCbr,
            sample_rate: None,
            mono: false,
            trim: None,
            id3_version: Id3Version::V24,
        }
    }
}

/// What a successful run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Codec of the chosen audio track: "aac", "alac", "flac", "mp3" or "pcm".
    pub input_codec: String,
    /// Sample rate of the decoded source.
    pub input_sample_rate: u32,
    /// Channels of the decoded source.
    pub input_channels: u8,
    /// Sample rate of the MP3.
    pub output_sample_rate: u32,
    /// Channels of the MP3 (1 or 2).
    pub output_channels: u8,
    /// PCM frames encoded per channel at the output rate: the MP3's decoded length.
    pub output_frames: u64,
    /// `output_frames` in milliseconds.
    pub duration_ms: u64,
    /// Bytes written to the sink, tags included.
    pub output_bytes: u64,
    /// The MP3's bitrate in kbit/s: with CBR the bitrate of every audio frame (the one
    /// chosen by [`default_bitrate`] when none was asked for); with VBR the average over
    /// the audio frames, rounded.
    pub bitrate_kbps: u16,
}

/// Why a conversion failed; the cases of the WIT `convert-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("the container holds no audio track")]
    NoAudioTrack,
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    #[error("DRM-protected audio: {0}")]
    DrmProtected(String),
    #[error("corrupt input: {0}")]
    CorruptInput(String),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("output would exceed the limit of {0} bytes")]
    OutputTooLarge(u64),
    #[error("I/O failure: {0}")]
    Io(String),
}

// The MP3 rules (rates, bitrates per MPEG version, defaults) live in their own
// dependency-free crate, so the host's gateway and CLI apply exactly these rules.
pub use tapedeck_mp3_rules::*;

impl Options {
    /// Checks what can be checked without the source: the same rules a host applies
    /// before accepting a job ([`check_bitrate`], [`check_sample_rate`],
    /// [`check_vbr_quality`]), plus the trim range.
    pub fn validate(&self) -> Result<(), ConvertError> {
        let invalid = ConvertError::InvalidOptions;
        if let Some(rate) = self.sample_rate {
            check_sample_rate(rate).map_err(invalid)?;
        }
        match self.mode {
            Mode::Cbr(k) => check_bitrate(k, self.sample_rate).map_err(invalid)?,
            Mode::CbrOrDefault(k) => check_bitrate(k, None).map_err(invalid)?,
            Mode::Vbr(q) => check_vbr_quality(q).map_err(invalid)?,
            Mode::DefaultCbr => {}
        }
        if let Some(Trim {
            start_ms,
            end_ms: Some(end),
        }) = self.trim
            && end <= start_ms
        {
            return Err(invalid(format!(
                "trim end {end} ms is not after its start {start_ms} ms"
            )));
        }
        Ok(())
    }

    /// The CBR bitrate for an output of `channels` at `rate` (`None` with VBR): the
    /// asked one, checked against the rate ([`check_bitrate`], or
    /// [`check_bitrate_at_source_rate`] when the rate was derived), or the default.
    pub fn cbr_bitrate(&self, rate: u32, channels: u8) -> Result<Option<u16>, ConvertError> {
        let invalid = ConvertError::InvalidOptions;
        Ok(match self.mode {
            Mode::Vbr(_) => None,
            Mode::DefaultCbr => Some(default_bitrate(rate, channels)),
            Mode::CbrOrDefault(k) => Some(if check_bitrate(k, Some(rate)).is_ok() {
                k
            } else {
                default_bitrate(rate, channels)
            }),
            Mode::Cbr(k) if self.sample_rate.is_some() => {
                check_bitrate(k, Some(rate)).map_err(invalid)?;
                Some(k)
            }
            Mode::Cbr(k) => {
                check_bitrate_at_source_rate(k, rate).map_err(invalid)?;
                Some(k)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rates() {
        assert_eq!(default_output_rate(96000), 48000);
        assert_eq!(default_output_rate(44100), 44100);
        assert_eq!(default_output_rate(7350), 8000);
        assert_eq!(output_rate(Some(8000), 44100), 8000);
    }

    #[test]
    fn the_default_table_is_valid_and_follows_rate_and_channels() {
        for (rate, stereo, mono) in DEFAULT_BITRATES {
            assert_eq!(check_bitrate(stereo, Some(rate)), Ok(()), "{rate}");
            assert_eq!(check_bitrate(mono, Some(rate)), Ok(()), "{rate}");
            assert!(mono < stereo);
            assert_eq!(default_bitrate(rate, 2), stereo);
            assert_eq!(default_bitrate(rate, 6), stereo);
            assert_eq!(default_bitrate(rate, 1), mono);
        }
        assert_eq!(default_bitrate(44100, 2), 192);
        assert_eq!(default_bitrate(8000, 1), 24);
        for pair in DEFAULT_BITRATES.windows(2) {
            assert!(pair[0].1 <= pair[1].1 && pair[0].2 <= pair[1].2);
        }
    }

    #[test]
    fn bitrate_rules() {
        assert_eq!(
            check_bitrate(192, Some(8000)),
            Err(
                "192 kbps is not a valid MPEG-2.5 Layer III bitrate at 8000 Hz; valid: \
                 8, 16, 24, 32, 40, 48, 56, 64 kbps"
                    .into()
            )
        );
        assert!(check_bitrate(80, Some(12000)).is_err());
        assert_eq!(check_bitrate(80, Some(16000)), Ok(()));
        assert_eq!(
            check_bitrate(144, Some(44100)),
            Err(
                "144 kbps is not a valid MPEG-1 Layer III bitrate at 44100 Hz; valid: \
                 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320 kbps"
                    .into()
            )
        );
        assert_eq!(check_bitrate(144, Some(22050)), Ok(()));
        assert_eq!(check_bitrate(8, None), Ok(()));
        assert_eq!(
            check_bitrate(100, None),
            Err(
                "100 kbps is not an MP3 bitrate; valid: 32, 40, 48, 56, 64, 80, 96, 112, \
                 128, 160, 192, 224, 256, 320 kbps at 32, 44.1 and 48 kHz; 8, 16, 24, 32, \
                 40, 48, 56, 64, 80, 96, 112, 128, 144, 160 kbps at 16, 22.05 and 24 kHz; \
                 8, 16, 24, 32, 40, 48, 56, 64 kbps at 8, 11.025 and 12 kHz"
                    .into()
            )
        );
        assert!(check_bitrate(128, Some(96000)).is_err());
        assert_eq!(
            check_bitrate_at_source_rate(320, 22050),
            Err(
                "320 kbps is not a valid MPEG-2 Layer III bitrate at 22050 Hz, the output \
                 rate taken from the source (no sample rate was asked for); valid: 8, 16, \
                 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160 kbps; or ask for a \
                 sample rate of 32000 Hz or more"
                    .into()
            )
        );
        assert!(
            check_bitrate_at_source_rate(144, 44100)
                .unwrap_err()
                .ends_with("or ask for a sample rate of 16000 to 24000 Hz")
        );
        assert!(
            check_bitrate_at_source_rate(96, 8000)
                .unwrap_err()
                .ends_with("or ask for a sample rate of 16000 Hz or more")
        );
        assert!(
            check_bitrate_at_source_rate(8, 48000)
                .unwrap_err()
                .ends_with("or ask for a sample rate of 24000 Hz or less")
        );
        assert_eq!(
            check_sample_rate(96000),
            Err(
                "96000 Hz is not an MP3 sample rate; valid: 8000, 11025, 12000, 16000, \
                 22050, 24000, 32000, 44100, 48000 Hz"
                    .into()
            )
        );
        assert!(check_vbr_quality(10).is_err());
    }

    #[test]
    fn validate_applies_the_rules_before_the_source_is_read() {
        let opts = Options {
            sample_rate: Some(8000),
            mode: Mode::Cbr(320),
            ..Options::default()
        };
        let err = opts.validate().unwrap_err();
        assert!(
            matches!(&err, ConvertError::InvalidOptions(m) if m.contains("MPEG-2.5")),
            "{err}"
        );
        for mode in [Mode::Cbr(100), Mode::Vbr(10), Mode::CbrOrDefault(100)] {
            let opts = Options {
                mode,
                ..Options::default()
            };
            assert!(opts.validate().is_err(), "{mode:?}");
        }
        assert!(
            Options {
                sample_rate: Some(96000),
                ..Options::default()
            }
            .validate()
            .is_err()
        );
        // No bitrate asked: any MP3 rate is fine.
        assert_eq!(
            Options {
                sample_rate: Some(8000),
                ..Options::default()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn the_bitrate_used_is_the_one_asked_or_the_default_never_a_substitute() {
        let with = |mode, sample_rate| Options {
            mode,
            sample_rate,
            ..Options::default()
        };
        assert_eq!(
            with(Mode::DefaultCbr, Some(8000)).cbr_bitrate(8000, 1),
            Ok(Some(24))
        );
        assert_eq!(
            with(Mode::CbrOrDefault(192), None).cbr_bitrate(8000, 2),
            Ok(Some(40))
        );
        assert_eq!(
            with(Mode::CbrOrDefault(192), None).cbr_bitrate(44100, 1),
            Ok(Some(192))
        );
        assert_eq!(
            with(Mode::Cbr(144), None).cbr_bitrate(22050, 2),
            Ok(Some(144))
        );
        assert!(matches!(
            with(Mode::Cbr(144), None).cbr_bitrate(44100, 2),
            Err(ConvertError::InvalidOptions(m)) if m.contains("taken from the source")
        ));
        assert!(matches!(
            with(Mode::Cbr(320), None).cbr_bitrate(22050, 2),
            Err(ConvertError::InvalidOptions(_))
        ));
        assert_eq!(with(Mode::Vbr(2), None).cbr_bitrate(8000, 2), Ok(None));
    }
}
