//! Channel layouts to the MP3's one or two channels.
//!
//! Multichannel is folded ITU-style: L + 0.707·C + 0.707·Ls, R + 0.707·C + 0.707·Rs, LFE
//! dropped; then every output row is scaled by the largest row sum so the mix cannot
//! exceed full scale. Mono is the mean of the stereo mix.

use symphonia::core::audio::{Channels, Position};

const MINUS_3DB: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// A fixed mixing matrix from the decoded channels to the output channels.
pub(crate) struct Downmix {
    /// Output channels: 1 or 2.
    pub out_channels: usize,
    /// Per input channel: gain into output left (or mono) and right.
    gains: Vec<[f32; 2]>,
    /// The output is the input planes unchanged (mono→mono, stereo→stereo).
    pub passthrough: bool,
}

impl Downmix {
    pub(crate) fn new(channels: &Channels, count: usize, mono: bool) -> Downmix {
        let out_channels = if mono || count == 1 { 1 } else { 2 };
        let passthrough = count == out_channels && is_plain(channels, count);
        let mut gains: Vec<[f32; 2]> = match channels {
            Channels::Positioned(mask) if count > 2 || !passthrough => {
                positions(*mask).map(gains_for).collect()
            }
            _ => (0..count)
                .map(|i| match (count, i) {
                    (1, _) => [1.0, 1.0],
                    (_, 0) => [1.0, 0.0],
                    (_, 1) => [0.0, 1.0],
                    _ => [MINUS_3DB, MINUS_3DB],
                })
                .collect(),
        };
        gains.resize(count, [0.0, 0.0]);
        if out_channels == 1 {
            for g in &mut gains {
                let m = if count == 1 { 1.0 } else { (g[0] + g[1]) * 0.5 };
                *g = [m, 0.0];
            }
        }
        // Scale so the loudest output cannot clip.
        let peak = (0..out_channels)
            .map(|o| gains.iter().map(|g| g[o].abs()).sum::<f32>())
            .fold(0.0f32, f32::max);
        if peak > 1.0 {
            for g in &mut gains {
                g[0] /= peak;
                g[1] /= peak;
            }
        }
        Downmix {
            out_channels,
            gains,
            passthrough,
        }
    }

    /// Mixes `range` of `planes` into `out` (each cleared and refilled).
    pub(crate) fn apply(
        &self,
        planes: &[Vec<f32>],
        range: std::ops::Range<usize>,
        out: &mut [Vec<f32>; 2],
    ) {
        let n = range.len();
        for (o, dst) in out.iter_mut().enumerate().take(self.out_channels) {
            dst.clear();
            dst.resize(n, 0.0);
            for (plane, g) in planes.iter().zip(&self.gains) {
                let gain = g[o];
                if gain == 0.0 {
                    continue;
                }
                for (d, s) in dst.iter_mut().zip(&plane[range.clone()]) {
                    *d += gain * s;
                }
            }
        }
    }
}

fn is_plain(channels: &Channels, count: usize) -> bool {
    match channels {
        Channels::Positioned(mask) if count == 2 => {
            *mask == Position::FRONT_LEFT | Position::FRONT_RIGHT
        }
        _ => count <= 2,
    }
}

/// The positions in `mask`, in buffer (bit) order.
fn positions(mask: Position) -> impl Iterator<Item = Position> {
    (0..64)
        .map(|bit| Position::from_bits_retain(1u64 << bit))
        .filter(move |p| mask.contains(*p))
}

fn gains_for(p: Position) -> [f32; 2] {
    const LEFT: Position = Position::FRONT_LEFT
        .union(Position::FRONT_LEFT_CENTER)
        .union(Position::FRONT_LEFT_WIDE);
    const RIGHT: Position = Position::FRONT_RIGHT
        .union(Position::FRONT_RIGHT_CENTER)
        .union(Position::FRONT_RIGHT_WIDE);
    const LEFT_SURROUND: Position = Position::REAR_LEFT.union(Position::SIDE_LEFT);
    const RIGHT_SURROUND: Position = Position::REAR_RIGHT.union(Position::SIDE_RIGHT);
    if LEFT.contains(p) {
        [1.0, 0.0]
    } else if RIGHT.contains(p) {
        [0.0, 1.0]
    } else if p == Position::FRONT_CENTER {
        [MINUS_3DB, MINUS_3DB]
    } else if LEFT_SURROUND.contains(p) {
        [MINUS_3DB, 0.0]
    } else if RIGHT_SURROUND.contains(p) {
        [0.0, MINUS_3DB]
    } else if p == Position::LFE1 || p == Position::LFE2 {
        [0.0, 0.0]
    } else {
        // Rear centre, heights and the rest: half into each side.
        [0.5, 0.5]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five_one() -> Channels {
        Channels::Positioned(
            Position::FRONT_LEFT
                | Position::FRONT_RIGHT
                | Position::FRONT_CENTER
                | Position::LFE1
                | Position::REAR_LEFT
                | Position::REAR_RIGHT,
        )
    }

    #[test]
    fn five_one_full_scale_does_not_clip() {
        let mix = Downmix::new(&five_one(), 6, false);
        assert_eq!(mix.out_channels, 2);
        let planes: Vec<Vec<f32>> = (0..6).map(|_| vec![1.0; 4]).collect();
        let mut out = [Vec::new(), Vec::new()];
        mix.apply(&planes, 0..4, &mut out);
        for v in out.iter().flatten() {
            assert!(*v <= 1.0 + 1e-6, "{v}");
        }
        assert!(out[0][0] > 0.99);
    }

    #[test]
    fn lfe_is_dropped_and_sides_stay_sided() {
        let mix = Downmix::new(&five_one(), 6, false);
        let mut planes: Vec<Vec<f32>> = (0..6).map(|_| vec![0.0; 1]).collect();
        planes[3][0] = 1.0; // LFE
        planes[4][0] = 1.0; // rear left
        let mut out = [Vec::new(), Vec::new()];
        mix.apply(&planes, 0..1, &mut out);
        assert!((out[0][0] - MINUS_3DB / (1.0 + 2.0 * MINUS_3DB)).abs() < 1e-6);
        assert_eq!(out[1][0], 0.0);
    }

    #[test]
    fn stereo_passes_through_and_mono_averages() {
        let stereo = Channels::Positioned(Position::FRONT_LEFT | Position::FRONT_RIGHT);
        assert!(Downmix::new(&stereo, 2, false).passthrough);
        let mono = Downmix::new(&stereo, 2, true);
        assert_eq!(mono.out_channels, 1);
        let planes = vec![vec![1.0], vec![-1.0]];
        let mut out = [Vec::new(), Vec::new()];
        mono.apply(&planes, 0..1, &mut out);
        assert_eq!(out[0][0], 0.0);
    }
}
