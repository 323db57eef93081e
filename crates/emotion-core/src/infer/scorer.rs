//! Scoring windows: the voice gate, then the model on the speech windows in batches. The one path
//! that `timeline`, `predict` of long inputs and live streams share.

use super::slicer::{Slicer, Window};
use super::vad::voiced_fraction;
use super::{InferOptions, Segment};
use crate::audio::features::AudioInput;
use crate::audio::samples::Samples;
use crate::control::CancelFlag;
use crate::error::Result;
use crate::train::predict::LoadedModel;
use crate::train::predict_audio::PredictAudioOptions;

/// Windows of one recording at `sample_rate`, scored `batch` at a time.
pub struct WindowScorer {
    slicer: Slicer,
    sample_rate: u32,
    options: InferOptions,
    pending: Vec<Window>,
    /// Score windows that are not speech too (what `predict`'s aggregate falls back to).
    score_silence: bool,
}

impl WindowScorer {
    /// `window` and `hop` in seconds (resolved by [`super::resolve_window`]).
    pub fn new(sample_rate: u32, window: f64, hop: f64, options: &InferOptions, score_silence: bool) -> WindowScorer {
        let frames = |s: f64| (s * sample_rate as f64).round() as usize;
        WindowScorer {
            slicer: Slicer::new(frames(window), frames(hop)),
            sample_rate,
            options: options.clone(),
            pending: Vec::new(),
            score_silence,
        }
    }

    /// Seconds pushed so far.
    pub fn seconds(&self) -> f64 {
        self.slicer.frames() as f64 / self.sample_rate as f64
    }

    /// Adds samples; returns the segments of the windows scored by this call (a batch fills up, or at
    /// once when the batch is 1 window).
    pub fn push(
        &mut self,
        model: &LoadedModel,
        chunk: &[f32],
        calibration: &[AudioInput],
        cancel: &CancelFlag,
    ) -> Result<Vec<Segment>> {
        self.pending.extend(self.slicer.push(chunk));
        let held: usize = self.pending.iter().map(|w| w.samples.len()).sum();
        if self.pending.len() >= self.options.window_batch() || held >= super::MAX_BATCH_SAMPLES {
            return self.score_pending(model, calibration, cancel);
        }
        Ok(Vec::new())
    }

    /// Scores what is left, including the window aligned to the recording's end.
    pub fn finish(
        &mut self,
        model: &LoadedModel,
        calibration: &[AudioInput],
        cancel: &CancelFlag,
    ) -> Result<Vec<Segment>> {
        self.pending.extend(self.slicer.finish());
        self.score_pending(model, calibration, cancel)
    }

    fn score_pending(
        &mut self,
        model: &LoadedModel,
        calibration: &[AudioInput],
        cancel: &CancelFlag,
    ) -> Result<Vec<Segment>> {
        let pending = std::mem::take(&mut self.pending);
        let mut segments = Vec::with_capacity(pending.len());
        for batch in batches(&pending, self.options.window_batch(), super::MAX_BATCH_SAMPLES) {
            cancel.check()?;
            segments.extend(self.score(model, batch, calibration, cancel)?);
            // A recording's batches come one after another for as long as it lasts: the blocks the caching
            // CPU allocator kept are given back after each (it would otherwise hold them for the whole run).
            crate::cpu_cache::release_when_idle();
        }
        Ok(segments)
    }

    fn score(
        &self,
        model: &LoadedModel,
        windows: &[Window],
        calibration: &[AudioInput],
        cancel: &CancelFlag,
    ) -> Result<Vec<Segment>> {
        let rate = self.sample_rate;
        let voiced: Vec<f32> = windows.iter().map(|w| voiced_fraction(self.options.vad, &w.samples, rate)).collect();
        let speech: Vec<bool> = voiced.iter().map(|&v| v as f64 >= self.options.min_voiced).collect();
        let scored: Vec<usize> = (0..windows.len()).filter(|&i| speech[i] || self.score_silence).collect();
        let parts: Vec<&[f32]> = scored.iter().map(|&i| windows[i].samples.as_slice()).collect();
        let inputs: Vec<AudioInput> = Samples::pack(&parts, 1)
            .into_iter()
            .map(|samples| AudioInput::Samples { samples, sample_rate: rate })
            .collect();
        let predictions = if inputs.is_empty() {
            Vec::new()
        } else {
            let options = PredictAudioOptions {
                encoder_dir: self.options.encoder_dir.clone(),
                device: self.options.device.clone(),
                decode_threads: self.options.decode_threads,
            };
            model.predict_audio(&inputs, calibration, &options, cancel)?
        };
        // The prediction of each window, in window order (`None` for unscored silence).
        let mut by_window: Vec<Option<_>> = (0..windows.len()).map(|_| None).collect();
        for (i, p) in scored.into_iter().zip(predictions) {
            by_window[i] = Some(p);
        }
        let labels = &model.meta.spec.labels;
        Ok(windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let p = by_window[i].take();
                Segment {
                    start: w.start as f64 / rate as f64,
                    end: w.end as f64 / rate as f64,
                    voiced: voiced[i],
                    speech: speech[i],
                    label: p.as_ref().filter(|_| speech[i]).map(|p| labels[p.index].clone()),
                    label_index: p.as_ref().filter(|_| speech[i]).map(|p| p.index),
                    probabilities: p.map(|p| p.probabilities),
                }
            })
            .collect())
    }
}

/// Consecutive runs of at most `count` windows and `samples` samples (at least one window each).
fn batches(windows: &[Window], count: usize, samples: usize) -> Vec<&[Window]> {
    let mut out = Vec::new();
    let (mut start, mut held) = (0, 0);
    for (i, w) in windows.iter().enumerate() {
        if i > start && (i - start >= count || held + w.samples.len() > samples) {
            out.push(&windows[start..i]);
            (start, held) = (i, 0);
        }
        held += w.samples.len();
    }
    if start < windows.len() {
        out.push(&windows[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_at_the_count_or_the_sample_budget() {
        let w = |n: usize| Window { start: 0, end: n as u64, samples: vec![0.0; n] };
        let windows: Vec<Window> = [4, 4, 4, 10, 1, 1].into_iter().map(w).collect();
        let sizes = |b: Vec<&[Window]>| b.iter().map(|x| x.len()).collect::<Vec<_>>();
        assert_eq!(sizes(batches(&windows, 16, 100)), [6]);
        assert_eq!(sizes(batches(&windows, 2, 100)), [2, 2, 2]);
        assert_eq!(sizes(batches(&windows, 16, 12)), [3, 3]);
        assert_eq!(sizes(batches(&windows, 16, 5)), [1, 1, 1, 1, 2]);
    }
}
