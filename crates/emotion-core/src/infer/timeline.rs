//! `timeline`: a recording labelled over time, streamed from its source in batches of windows.

use super::input::{InferInput, Source};
use super::scorer::WindowScorer;
use super::{resolve_window, InferOptions, Timeline};
use crate::audio::features::AudioInput;
use crate::control::CancelFlag;
use crate::error::{Error, Result};
use crate::train::predict::LoadedModel;

/// Slides the model over `input`; `progress` gets the seconds scored so far after each batch.
pub fn timeline(
    model: &LoadedModel,
    input: &InferInput,
    calibration: &[AudioInput],
    options: &InferOptions,
    cancel: &CancelFlag,
    progress: &mut dyn FnMut(f64),
) -> Result<Timeline> {
    super::check_audio_model(&model.meta.spec, true)?;
    let (window, hop) = resolve_window(&model.meta.spec, options)?;
    let name = |reason: String| Error::decode(input.label(0), reason);
    let max_seconds = options.max_duration.unwrap_or(super::TIMELINE_MAX_SECONDS);
    let mut source = Source::open(input, max_seconds).map_err(name)?;
    let mut scorer: Option<WindowScorer> = None;
    let mut segments = Vec::new();
    while let Some((rate, chunk)) = source.next_chunk().map_err(name)? {
        let s = scorer.get_or_insert_with(|| WindowScorer::new(rate, window, hop, options, false));
        let scored = s.push(model, chunk, calibration, cancel)?;
        if !scored.is_empty() {
            progress(s.seconds());
        }
        segments.extend(scored);
    }
    let mut scorer = scorer.ok_or_else(|| name("no audio samples (zero-length audio)".into()))?;
    segments.extend(scorer.finish(model, calibration, cancel)?);
    progress(scorer.seconds());
    Ok(Timeline {
        seconds: scorer.seconds(),
        window,
        hop,
        vad: options.vad,
        labels: model.meta.spec.labels.clone(),
        segments,
    })
}
