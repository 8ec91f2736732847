//! What an MP3 can be: its sample rates, the Layer III bitrates of each MPEG version,
//! and the default bitrate per output rate. One set of rules for everyone who checks
//! conversion options: the converter component, and the host's gateway (HTTP 400 before a
//! job is accepted) and command line. No dependencies, so any of them can use it (the
//! converter builds it for wasm32-wasip2, the host natively).

/// Sample rates MP3 (MPEG-1, -2 and -2.5 Layer III) can carry.
pub const MP3_SAMPLE_RATES: [u32; 9] =
    [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
/// MPEG-1 Layer III bitrates (32, 44.1, 48 kHz), kbit/s (free format excluded).
pub const MPEG1_BITRATES: [u16; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
/// MPEG-2 Layer III bitrates (16 to 24 kHz), kbit/s (free format excluded).
pub const MPEG2_BITRATES: [u16; 14] = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
/// MPEG-2.5 Layer III bitrates (8 to 12 kHz) that LAME encodes, kbit/s. The format has
/// MPEG-2's list, up to 160, but LAME 3.100 caps these rates at 64 kbit/s (asked for
/// more, it writes 64 and says nothing), so the converter offers what it can deliver.
pub const MPEG25_BITRATES: [u16; 8] = [8, 16, 24, 32, 40, 48, 56, 64];

/// The default CBR bitrate per output rate, kbit/s: `(rate, stereo, mono)`.
///
/// About 128 kbit/s per channel's worth of detail at 44.1/48 kHz (192 stereo, where joint
/// stereo codes what both channels share once; 128 mono), scaled down with the audio
/// bandwidth the rate can carry (rate / 2) and rounded to a bitrate the rate's MPEG
/// version has. Lower rates keep a little more per hertz, because MP3's fixed costs (side
/// information, scale factors) weigh more in smaller frames.
pub const DEFAULT_BITRATES: [(u32, u16, u16); 9] = [
    (8000, 40, 24),
    (11025, 48, 32),
    (12000, 48, 32),
    (16000, 80, 48),
    (22050, 96, 64),
    (24000, 96, 64),
    (32000, 160, 96),
    (44100, 192, 128),
    (48000, 192, 128),
];

/// The MPEG audio version that carries a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpegVersion {
    /// 32, 44.1, 48 kHz; 1152-sample frames.
    Mpeg1,
    /// 16, 22.05, 24 kHz; 576-sample frames.
    Mpeg2,
    /// 8, 11.025, 12 kHz; 576-sample frames.
    Mpeg25,
}

impl MpegVersion {
    /// The version for an MP3 sample rate; `None` for a rate MP3 lacks.
    pub fn for_rate(rate: u32) -> Option<MpegVersion> {
        match rate {
            32000 | 44100 | 48000 => Some(MpegVersion::Mpeg1),
            16000 | 22050 | 24000 => Some(MpegVersion::Mpeg2),
            8000 | 11025 | 12000 => Some(MpegVersion::Mpeg25),
            _ => None,
        }
    }

    /// "MPEG-1", "MPEG-2" or "MPEG-2.5".
    pub fn name(self) -> &'static str {
        match self {
            MpegVersion::Mpeg1 => "MPEG-1",
            MpegVersion::Mpeg2 => "MPEG-2",
            MpegVersion::Mpeg25 => "MPEG-2.5",
        }
    }

    /// The Layer III bitrates of this version, kbit/s, ascending.
    pub fn bitrates(self) -> &'static [u16] {
        match self {
            MpegVersion::Mpeg1 => &MPEG1_BITRATES,
            MpegVersion::Mpeg2 => &MPEG2_BITRATES,
            MpegVersion::Mpeg25 => &MPEG25_BITRATES,
        }
    }

    /// PCM frames per MP3 frame.
    pub fn frame_samples(self) -> u32 {
        match self {
            MpegVersion::Mpeg1 => 1152,
            MpegVersion::Mpeg2 | MpegVersion::Mpeg25 => 576,
        }
    }
}

fn list<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether MP3 can carry `rate`; the error names the rates it can.
pub fn check_sample_rate(rate: u32) -> Result<(), String> {
    if MP3_SAMPLE_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "{rate} Hz is not an MP3 sample rate; valid: {} Hz",
            list(&MP3_SAMPLE_RATES)
        ))
    }
}

/// The CBR bitrates valid at an MP3 sample rate (`None` for a rate MP3 lacks).
pub fn bitrates_at(rate: u32) -> Option<&'static [u16]> {
    MpegVersion::for_rate(rate).map(MpegVersion::bitrates)
}

/// Whether `kbps` is a CBR bitrate MP3 has: at `sample_rate` when one is given (it must
/// be an MP3 rate, see [`check_sample_rate`]), else at some MP3 rate. The error says why
/// and lists the valid values. This is the rule the converter applies to an explicit
/// bitrate; a host can apply it before accepting a job (HTTP 400).
pub fn check_bitrate(kbps: u16, sample_rate: Option<u32>) -> Result<(), String> {
    match sample_rate {
        Some(rate) => {
            check_sample_rate(rate)?;
            let version = MpegVersion::for_rate(rate).expect("checked above");
            if version.bitrates().contains(&kbps) {
                Ok(())
            } else {
                Err(format!(
                    "{kbps} kbps is not a valid {} Layer III bitrate at {rate} Hz; valid: {} kbps",
                    version.name(),
                    list(version.bitrates())
                ))
            }
        }
        None if MPEG1_BITRATES.contains(&kbps) || MPEG2_BITRATES.contains(&kbps) => Ok(()),
        None => Err(format!(
            "{kbps} kbps is not an MP3 bitrate; valid: {} kbps at 32, 44.1 and 48 kHz; \
             {} kbps at 16, 22.05 and 24 kHz; {} kbps at 8, 11.025 and 12 kHz",
            list(&MPEG1_BITRATES),
            list(&MPEG2_BITRATES),
            list(&MPEG25_BITRATES)
        )),
    }
}

/// [`check_bitrate`] at an output rate the converter derived from the source (no sample
/// rate was asked for): the error also says where the rate came from and which rates
/// would take the bitrate.
pub fn check_bitrate_at_source_rate(kbps: u16, rate: u32) -> Result<(), String> {
    check_bitrate(kbps, Some(rate)).map_err(|_| {
        let version = MpegVersion::for_rate(rate).expect("an MP3 rate");
        let other = if kbps > 160 {
            "; or ask for a sample rate of 32000 Hz or more"
        } else if kbps > 64 && !MPEG1_BITRATES.contains(&kbps) {
            // 144 kbps: MPEG-2 only.
            "; or ask for a sample rate of 16000 to 24000 Hz"
        } else if kbps > 64 {
            "; or ask for a sample rate of 16000 Hz or more"
        } else if !MPEG1_BITRATES.contains(&kbps) {
            "; or ask for a sample rate of 24000 Hz or less"
        } else {
            ""
        };
        format!(
            "{kbps} kbps is not a valid {} Layer III bitrate at {rate} Hz, the output rate \
             taken from the source (no sample rate was asked for); valid: {} kbps{other}",
            version.name(),
            list(version.bitrates())
        )
    })
}

/// Whether `quality` is a VBR quality (0 best ..= 9 smallest).
pub fn check_vbr_quality(quality: u8) -> Result<(), String> {
    if quality <= 9 {
        Ok(())
    } else {
        Err(format!(
            "VBR quality {quality} is out of range 0..=9 (0 best, 9 smallest)"
        ))
    }
}

/// The CBR bitrate used when none is asked for, from [`DEFAULT_BITRATES`]: by output rate
/// and output channels (1: mono; 2 or more: stereo). A rate MP3 lacks gets the nearest
/// rate's value.
pub fn default_bitrate(sample_rate: u32, channels: u8) -> u16 {
    let &(_, stereo, mono) = DEFAULT_BITRATES
        .iter()
        .min_by_key(|(r, _, _)| (*r as i64 - sample_rate as i64).unsigned_abs())
        .expect("non-empty table");
    if channels <= 1 { mono } else { stereo }
}

/// The output rate: the one asked for, else the source's own if MP3 has it, else the
/// nearest MP3 rate (96 kHz → 48 kHz, 7350 Hz → 8000 Hz).
pub fn output_rate(requested: Option<u32>, source_rate: u32) -> u32 {
    requested.unwrap_or_else(|| default_output_rate(source_rate))
}

/// The output rate for a source rate when none is asked for: the source's own if MP3
/// has it, else the nearest MP3 rate (96 kHz → 48 kHz).
pub fn default_output_rate(source_rate: u32) -> u32 {
    *MP3_SAMPLE_RATES
        .iter()
        .min_by_key(|&&r| (r as i64 - source_rate as i64).unsigned_abs())
        .expect("non-empty table")
}
