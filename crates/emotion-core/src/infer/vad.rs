//! Voice activity: how much of a window is speech, so a timeline does not label silence or noise.
//! Earshot (a small neural detector in pure Rust, MIT/Apache-2.0) is the default; an energy gate is
//! kept as the measured baseline (`npm run bench:vad`, docs/RESULTS.md).

use crate::audio::resample::resample;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The voice gate of a timeline or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Vad {
    /// Earshot's detector on 16 ms frames at 16 kHz (a frame is voiced at a score ≥ 0.5).
    #[default]
    Earshot,
    /// A frame is voiced when its level is at least −40 dBFS.
    Energy,
    /// Every window is speech.
    Off,
}

/// Rate and frame length the detectors work at.
const VAD_RATE: u32 = 16_000;
const FRAME: usize = 256;
const ENERGY_GATE_DBFS: f32 = -40.0;

/// The fraction of a window's 16 ms frames that are voiced (1 with the gate off). Each window is
/// judged on its own samples (a fresh detector): the same window gives the same answer in a file,
/// in memory or in a stream.
pub fn voiced_fraction(vad: Vad, samples: &[f32], sample_rate: u32) -> f32 {
    if vad == Vad::Off {
        return 1.0;
    }
    let audio = resample(samples, sample_rate, VAD_RATE);
    let frames = audio.chunks_exact(FRAME);
    let n = frames.len();
    if n == 0 {
        return 0.0;
    }
    let voiced = match vad {
        Vad::Earshot => {
            let mut detector = earshot::Detector::default_boxed();
            let mut frame = [0f32; FRAME];
            frames
                .filter(|f| {
                    for (d, s) in frame.iter_mut().zip(f.iter()) {
                        *d = s.clamp(-1.0, 1.0);
                    }
                    detector.predict_f32(&frame) >= 0.5
                })
                .count()
        }
        _ => frames
            .filter(|f| {
                let power = f.iter().map(|x| x * x).sum::<f32>() / FRAME as f32;
                10.0 * power.max(1e-12).log10() >= ENERGY_GATE_DBFS
            })
            .count(),
    };
    voiced as f32 / n as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_not_voiced_and_the_gate_off_passes_everything() {
        let silence = vec![0f32; 48_000];
        assert_eq!(voiced_fraction(Vad::Earshot, &silence, 48_000), 0.0);
        assert_eq!(voiced_fraction(Vad::Energy, &silence, 48_000), 0.0);
        assert_eq!(voiced_fraction(Vad::Off, &silence, 48_000), 1.0);
        // A loud tone passes the energy gate.
        let tone: Vec<f32> = (0..16_000).map(|i| 0.5 * (i as f32 * 0.1).sin()).collect();
        assert_eq!(voiced_fraction(Vad::Energy, &tone, 16_000), 1.0);
    }
}
