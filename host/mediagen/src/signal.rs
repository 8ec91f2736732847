//! The PCM: 16-bit signed little-endian, channel-interleaved, made frame by frame.

use crate::Signal;

/// Noise is uniform in ±this fraction of full scale (headroom for the MP3 round trip).
pub(crate) const NOISE_SCALE: f64 = 0.5;

/// Produces the frames of a [`Signal`] in order, any number at a time.
pub(crate) struct Generator {
    signal: Signal,
    channels: usize,
    /// Per channel: radians per frame of its sine.
    steps: Vec<f64>,
    /// The next frame's index.
    frame: u64,
    /// splitmix64 state (noise).
    rng: u64,
}

impl Generator {
    pub(crate) fn new(signal: Signal, rate: u32, channels: u16) -> Self {
        let steps = (0..channels)
            .map(|c| match signal {
                Signal::Sine { hz, .. } => {
                    std::f64::consts::TAU * f64::from(hz) * (1.0 + f64::from(c) / 10.0)
                        / f64::from(rate)
                }
                _ => 0.0,
            })
            .collect();
        let rng = match signal {
            Signal::Noise { seed } => seed,
            _ => 0,
        };
        Generator {
            signal,
            channels: usize::from(channels),
            steps,
            frame: 0,
            rng,
        }
    }

    /// Fills `buf` (a whole number of frames) with the next frames.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let frame_bytes = 2 * self.channels;
        debug_assert_eq!(buf.len() % frame_bytes, 0);
        let frames = (buf.len() / frame_bytes) as u64;
        match self.signal {
            Signal::Silence => buf.fill(0),
            Signal::Sine { amplitude, .. } => {
                let amplitude = f64::from(amplitude);
                let amplitude = if amplitude.is_nan() {
                    0.0
                } else {
                    amplitude.clamp(0.0, 1.0)
                };
                for (i, frame) in buf.chunks_exact_mut(frame_bytes).enumerate() {
                    let n = (self.frame + i as u64) as f64;
                    for (sample, step) in frame.chunks_exact_mut(2).zip(&self.steps) {
                        sample.copy_from_slice(&quantize(amplitude * (step * n).sin()));
                    }
                }
            }
            Signal::Noise { .. } => {
                for sample in buf.chunks_exact_mut(2) {
                    let unit = (splitmix64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
                    sample.copy_from_slice(&quantize(NOISE_SCALE * (2.0 * unit - 1.0)));
                }
            }
        }
        self.frame += frames;
    }
}

/// [-1, 1] → 16-bit little-endian.
fn quantize(v: f64) -> [u8; 2] {
    ((v * 32767.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
