//! The files the tests (and `examples/write_cases.rs`) check with ffmpeg and the converter.

use tapedeck_mediagen::{Damage, Layout, Signal, Spec};

/// A named case.
pub struct Case {
    pub name: &'static str,
    pub spec: Spec,
    pub damage: Damage,
}

fn spec(sample_rate: u32, channels: u16, duration_ms: u64, layout: Layout) -> Spec {
    Spec {
        sample_rate,
        channels,
        duration_ms,
        layout,
        signal: Signal::Sine {
            hz: 440.0,
            amplitude: 0.5,
        },
    }
}

pub fn cases() -> Vec<Case> {
    use Damage::*;
    use Layout::*;
    let case = |name, spec, damage| Case { name, spec, damage };
    vec![
        case("mono_8k_1s", spec(8_000, 1, 1_000, MoovFirst), None),
        case("stereo_44k1_2s", spec(44_100, 2, 2_000, MoovFirst), None),
        case("5.1_48k_1.5s", spec(48_000, 6, 1_500, MoovFirst), None),
        case("stereo_96k_1s", spec(96_000, 2, 1_000, MoovFirst), None),
        case("mono_22k05_40ms", spec(22_050, 1, 40, MoovFirst), None),
        case(
            "stereo_44k1_2s_moov_last",
            spec(44_100, 2, 2_000, MoovLast),
            None,
        ),
        case(
            "5.1_48k_1.5s_moov_last",
            spec(48_000, 6, 1_500, MoovLast),
            None,
        ),
        case(
            "stereo_44k1_2.5s_fragmented",
            spec(44_100, 2, 2_500, Fragmented),
            None,
        ),
        case(
            "5.1_48k_1.5s_fragmented",
            spec(48_000, 6, 1_500, Fragmented),
            None,
        ),
        case(
            "mono_8k_1s_fragmented",
            spec(8_000, 1, 1_000, Fragmented),
            None,
        ),
        case(
            "stereo_16k_noise_1s",
            Spec {
                signal: Signal::Noise { seed: 1 },
                ..spec(16_000, 2, 1_000, MoovFirst)
            },
            None,
        ),
        case(
            "mono_32k_silence_1s",
            Spec {
                signal: Signal::Silence,
                ..spec(32_000, 1, 1_000, MoovLast)
            },
            None,
        ),
        case(
            "truncated_moov_first",
            spec(44_100, 2, 2_000, MoovFirst),
            TruncatedMdat,
        ),
        case(
            "truncated_moov_last",
            spec(44_100, 2, 2_000, MoovLast),
            TruncatedMdat,
        ),
        case(
            "truncated_fragmented",
            spec(44_100, 2, 2_000, Fragmented),
            TruncatedMdat,
        ),
        // Cut halfway through the second fragment.
        case(
            "truncated_fragmented_mid",
            spec(8_000, 1, 3_000, Fragmented),
            TruncatedMdat,
        ),
        case(
            "garbage_stsc_moov_first",
            spec(44_100, 2, 1_000, MoovFirst),
            GarbageInSampleTable,
        ),
        case(
            "garbage_stsc_moov_last",
            spec(44_100, 2, 1_000, MoovLast),
            GarbageInSampleTable,
        ),
        case(
            "garbage_stsc_fragmented",
            spec(44_100, 2, 1_000, Fragmented),
            GarbageInSampleTable,
        ),
        case(
            "no_audio_track",
            spec(44_100, 2, 1_000, MoovFirst),
            NoAudioTrack,
        ),
        case(
            "no_audio_track_fragmented",
            spec(44_100, 2, 1_000, Fragmented),
            NoAudioTrack,
        ),
        case(
            "unsupported_ac3",
            spec(48_000, 2, 1_000, MoovFirst),
            UnsupportedCodec,
        ),
        case(
            "unsupported_ac3_fragmented",
            spec(48_000, 6, 1_000, Fragmented),
            UnsupportedCodec,
        ),
    ]
}
