//! Public types mirroring `wit/converter.wit`, and the option rules.

/// How the MP3 spends bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Constant bitrate in kbit/s: an MPEG Layer III bitrate in 32..=320.
    Cbr(u16),
    /// LAME VBR quality, 0 (best) ..= 9 (smallest).
    Vbr(u8),
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Cbr(192),
            sample_rate: None,
            mono: false,
            trim: None,
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

/// Sample rates MP3 (MPEG-1, -2 and -2.5 Layer III) can carry.
pub const MP3_SAMPLE_RATES: [u32; 9] =
    [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
/// MPEG-1 Layer III bitrates (32, 44.1, 48 kHz), kbit/s, from 32.
const MPEG1_BITRATES: [u16; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
fn bitrates_for(rate: u32) -> &'static [u16] {
    if rate >= 32000 {
        &MPEG1_BITRATES
    } else {
        &MPEG2_BITRATES
    }
}

/// MPEG-2 and 2.5 Layer III bitrates (8 to 24 kHz), kbit/s, from 32.
const MPEG2_BITRATES: [u16; 11] = [32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

fn version_name(rate: u32) -> &'static str {
    match rate {
        32000.. => "MPEG-1",
        16000.. => "MPEG-2",
        _ => "MPEG-2.5",
    }
}

impl Options {
    /// Checks what can be checked without the source.
    pub fn validate(&self) -> Result<(), ConvertError> {
        let invalid = |m: String| Err(ConvertError::InvalidOptions(m));
        match self.mode {
            Mode::Cbr(k) if !MPEG1_BITRATES.contains(&k) && !MPEG2_BITRATES.contains(&k) => {
                return invalid(format!(
                    "{k} kbps is not an MP3 bitrate; use one of {MPEG1_BITRATES:?} \
                     (or 144 at sample rates below 32 kHz)"
                ));
            }
            Mode::Vbr(q) if q > 9 => {
                return invalid(format!("VBR quality {q} is out of range 0..=9"));
            }
            _ => {}
        }
        if let Some(rate) = self.sample_rate {
            if !MP3_SAMPLE_RATES.contains(&rate) {
                return invalid(format!(
                    "{rate} Hz is not an MP3 sample rate; use one of {MP3_SAMPLE_RATES:?}"
                ));
            }
            if let Mode::Cbr(k) = self.mode
                && !bitrates_for(rate).contains(&k)
            {
                return invalid(format!(
                    "{k} kbps is not a valid {} Layer III bitrate at {rate} Hz; valid: {:?}",
                    version_name(rate),
                    bitrates_for(rate)
                ));
            }
        }
        if let Some(Trim {
            start_ms,
            end_ms: Some(end),
        }) = self.trim
            && end <= start_ms
        {
            return invalid(format!(
                "trim end {end} ms is not after its start {start_ms} ms"
            ));
        }
        Ok(())
    }
}

/// The output rate for a source rate when none is asked for: the source's own if MP3
/// has it, else the nearest MP3 rate (96 kHz → 48 kHz).
pub(crate) fn default_output_rate(source_rate: u32) -> u32 {
    *MP3_SAMPLE_RATES
        .iter()
        .min_by_key(|&&r| (r as i64 - source_rate as i64).unsigned_abs())
        .expect("non-empty table")
}

/// The CBR bitrate actually used at `rate`. With an explicit output rate the pair was
/// validated already; with a derived rate, a bitrate that rate's MPEG version lacks
/// (192 kbps at 22.05 kHz: MPEG-2 stops at 160) becomes the nearest one it has, with a
/// warning — the default 192 would otherwise fail every low-rate source.
pub(crate) fn effective_bitrate(kbps: u16, rate: u32) -> (u16, Option<String>) {
    let table = bitrates_for(rate);
    if table.contains(&kbps) {
        return (kbps, None);
    }
    let nearest = *table
        .iter()
        .min_by_key(|&&b| (b as i32 - kbps as i32).unsigned_abs())
        .expect("non-empty table");
    let note = format!(
        "{kbps} kbps is not a {} bitrate at {rate} Hz; using {nearest} kbps",
        version_name(rate)
    );
    (nearest, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rates() {
        assert_eq!(default_output_rate(96000), 48000);
        assert_eq!(default_output_rate(44100), 44100);
        assert_eq!(default_output_rate(7350), 8000);
    }

    #[test]
    fn bitrate_rules() {
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
        assert!(
            Options {
                mode: Mode::Cbr(100),
                ..Options::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Options {
                mode: Mode::Vbr(10),
                ..Options::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Options {
                sample_rate: Some(96000),
                ..Options::default()
            }
            .validate()
            .is_err()
        );
        assert_eq!(effective_bitrate(192, 22050).0, 160);
        assert_eq!(effective_bitrate(192, 44100), (192, None));
    }
}
