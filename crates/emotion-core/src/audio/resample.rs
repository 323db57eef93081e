//! Band-limited resampling, the same windowed-sinc polyphase filter as
//! `torchaudio.functional.resample` with its defaults (`sinc_interp_hann`, `lowpass_filter_width=6`,
//! `rolloff=0.99`), computed in f64 on the CPU.

/// Resamples `input` from `from_hz` to `to_hz`. Output length is `ceil(len * to / from)`, as in torchaudio.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz || input.is_empty() {
        return input.to_vec();
    }
    let kernel = SincKernel::new(from_hz, to_hz);
    kernel.apply(input)
}

/// Input samples that determine the first `outputs` resampled samples exactly: each block of `new`
/// outputs reads `orig` inputs plus `width` on either side. Trimming a long clip to this before
/// resampling gives the same first `outputs` samples as resampling all of it.
pub fn input_needed(from_hz: u32, to_hz: u32, outputs: usize) -> usize {
    if from_hz == to_hz {
        return outputs;
    }
    let g = gcd(from_hz as u64, to_hz as u64);
    let (orig, new) = ((from_hz as u64 / g) as usize, (to_hz as u64 / g) as usize);
    let width = (LOWPASS_FILTER_WIDTH * orig as f64 / (orig.min(new) as f64 * ROLLOFF)).ceil() as usize;
    (outputs.div_ceil(new) + 1) * orig + width
}

const LOWPASS_FILTER_WIDTH: f64 = 6.0;
const ROLLOFF: f64 = 0.99;

struct SincKernel {
    orig: usize,
    new: usize,
    width: usize,
    /// `new` phases, each `2 * width + orig` taps.
    taps: Vec<Vec<f64>>,
}

impl SincKernel {
    fn new(from_hz: u32, to_hz: u32) -> Self {
        let g = gcd(from_hz as u64, to_hz as u64);
        let orig = (from_hz as u64 / g) as usize;
        let new = (to_hz as u64 / g) as usize;
        let base = orig.min(new) as f64 * ROLLOFF;
        let width = (LOWPASS_FILTER_WIDTH * orig as f64 / base).ceil() as usize;
        let taps = (0..new)
            .map(|phase| {
                (0..2 * width + orig)
                    .map(|k| {
                        let idx = (k as f64 - width as f64) / orig as f64;
                        let t = ((-(phase as f64) / new as f64 + idx) * base)
                            .clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH);
                        let window = (t * std::f64::consts::PI / LOWPASS_FILTER_WIDTH / 2.0).cos().powi(2);
                        let t = t * std::f64::consts::PI;
                        let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
                        sinc * window * base / orig as f64
                    })
                    .collect()
            })
            .collect();
        SincKernel { orig, new, width, taps }
    }

    fn apply(&self, input: &[f32]) -> Vec<f32> {
        let len = input.len();
        let target = (self.new as u128 * len as u128).div_ceil(self.orig as u128) as usize;
        // Zero padding of `width` on the left and `width + orig` on the right, as torchaudio does.
        let at = |i: isize| -> f64 {
            let j = i - self.width as isize;
            if j >= 0 && (j as usize) < len {
                input[j as usize] as f64
            } else {
                0.0
            }
        };
        let mut out = Vec::with_capacity(target);
        let mut frame = 0usize;
        while out.len() < target {
            let start = (frame * self.orig) as isize;
            for taps in &self.taps {
                if out.len() == target {
                    break;
                }
                let acc: f64 = taps.iter().enumerate().map(|(k, w)| w * at(start + k as isize)).sum();
                out.push(acc as f32);
            }
            frame += 1;
        }
        out
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_follows_torchaudio() {
        assert_eq!(resample(&vec![0.0; 44_100], 44_100, 48_000).len(), 48_000);
        assert_eq!(resample(&vec![0.0; 1001], 48_000, 16_000).len(), 334);
    }

    #[test]
    fn keeps_a_low_tone_and_removes_one_above_the_new_nyquist() {
        let sr = 48_000;
        let tone = |f: f64| -> Vec<f32> {
            (0..sr).map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / sr as f64).sin() as f32).collect()
        };
        let rms = |x: &[f32]| {
            (x[2000..x.len() - 2000].iter().map(|v| (v * v) as f64).sum::<f64>() / (x.len() - 4000) as f64).sqrt()
        };
        let low = resample(&tone(440.0), sr, 16_000);
        let high = resample(&tone(12_000.0), sr, 16_000);
        assert!((rms(&low) - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01, "440 Hz rms {}", rms(&low));
        assert!(rms(&high) < 0.01, "12 kHz leaked through: rms {}", rms(&high));
    }
}
