//! `predict`: one row per input, in order, each a prediction or that input's own error. Inputs within
//! the model's window are featurised together; a longer one is scored over windows (the mean of its
//! speech windows) or refused, as `longInput` says, never cut silently.

use super::input::{InferInput, Source};
use super::scorer::WindowScorer;
use super::{
    check_audio_model, model_windows, resolve_window, InferOptions, LongInput, Scored, Segment, MAX_BATCH_SAMPLES,
};
use crate::audio::features::AudioInput;
use crate::audio::samples::Samples;
use crate::control::CancelFlag;
use crate::error::{Error, Result};
use crate::train::predict::LoadedModel;
use crate::train::predict_audio::PredictAudioOptions;

/// A short input read whole, waiting for its batch.
struct Short {
    index: usize,
    samples: Vec<f32>,
    sample_rate: u32,
}

/// Predictions for `inputs`, in order. The call fails as a whole only for what concerns every input
/// (a model that reads transcripts, a missing encoder, cancellation); a bad input is its row's error.
pub fn predict_inputs(
    model: &LoadedModel,
    inputs: &[InferInput],
    calibration: &[AudioInput],
    options: &InferOptions,
    cancel: &CancelFlag,
) -> Result<Vec<Result<Scored>>> {
    check_audio_model(&model.meta.spec, true)?;
    let (longest, _) = model_windows(&model.meta.spec);
    resolve_window(&model.meta.spec, options)?;
    let mut rows: Vec<Option<Result<Scored>>> = (0..inputs.len()).map(|_| None).collect();
    let mut batch: Vec<Short> = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        cancel.check()?;
        match read_short(model, input, longest, options, calibration, cancel) {
            Ok(Read::Short(samples, sample_rate)) => batch.push(Short { index, samples, sample_rate }),
            Ok(Read::Long(scored)) => rows[index] = Some(Ok(scored)),
            Err(e) if per_input(&e) => rows[index] = Some(Err(e)),
            Err(e) => return Err(e),
        }
        let held: usize = batch.iter().map(|s| s.samples.len()).sum();
        if batch.len() >= options.input_batch() || held >= MAX_BATCH_SAMPLES {
            score_batch(model, &mut batch, calibration, options, cancel, &mut rows)?;
        }
    }
    score_batch(model, &mut batch, calibration, options, cancel, &mut rows)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(index, r)| match r {
            Some(Err(e)) => Err(name_input(e, &inputs[index], index)),
            Some(ok) => ok,
            None => Err(Error::Internal("an input was not scored".into())),
        })
        .collect())
}

enum Read {
    Short(Vec<f32>, u32),
    Long(Scored),
}

/// Reads an input up to the model's window; past it, scores the rest over windows (or refuses it).
fn read_short(
    model: &LoadedModel,
    input: &InferInput,
    longest: f64,
    options: &InferOptions,
    calibration: &[AudioInput],
    cancel: &CancelFlag,
) -> Result<Read> {
    let decode_error = |reason: String| Error::decode("", reason);
    let max_seconds = options.max_duration.unwrap_or(crate::audio::decode::DEFAULT_MAX_SECONDS);
    let mut source = Source::open(input, max_seconds).map_err(decode_error)?;
    let mut samples = Vec::new();
    let mut scorer: Option<WindowScorer> = None;
    let mut segments: Vec<Segment> = Vec::new();
    let mut rate = 0;
    while let Some((chunk_rate, chunk)) = source.next_chunk().map_err(decode_error)? {
        rate = chunk_rate;
        if let Some(s) = scorer.as_mut() {
            segments.extend(s.push(model, chunk, calibration, cancel)?);
            continue;
        }
        samples.extend_from_slice(chunk);
        if samples.len() as f64 > longest * rate as f64 + 0.5 {
            if options.long_input == LongInput::Refuse {
                return Err(Error::invalid(
                    "longInput",
                    format!(
                        "the input is longer than the model's window of {longest} s: `longInput: 'aggregate'` (CLI: --long-input aggregate) scores it over windows, or cut it"
                    ),
                ));
            }
            let (window, hop) = resolve_window(&model.meta.spec, options)?;
            let mut s = WindowScorer::new(rate, window, hop, options, true);
            segments.extend(s.push(model, &std::mem::take(&mut samples), calibration, cancel)?);
            scorer = Some(s);
        }
    }
    match scorer {
        None => Ok(Read::Short(samples, rate)),
        Some(mut s) => {
            segments.extend(s.finish(model, calibration, cancel)?);
            Ok(Read::Long(aggregate(model, &segments, s.seconds())))
        }
    }
}

/// The mean probabilities of the speech windows, or of all windows when none is speech.
fn aggregate(model: &LoadedModel, segments: &[Segment], seconds: f64) -> Scored {
    let speech = segments.iter().any(|s| s.speech);
    let used: Vec<&Vec<f32>> =
        segments.iter().filter(|s| s.speech || !speech).filter_map(|s| s.probabilities.as_ref()).collect();
    let k = model.meta.spec.labels.len();
    let mut mean = vec![0f32; k];
    for p in &used {
        for (m, x) in mean.iter_mut().zip(p.iter()) {
            *m += x / used.len() as f32;
        }
    }
    let label_index = argmax(&mean);
    Scored {
        label: model.meta.spec.labels[label_index].clone(),
        label_index,
        probabilities: mean,
        seconds,
        windows: used.len(),
        speech,
    }
}

fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

fn score_batch(
    model: &LoadedModel,
    batch: &mut Vec<Short>,
    calibration: &[AudioInput],
    options: &InferOptions,
    cancel: &CancelFlag,
    rows: &mut [Option<Result<Scored>>],
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let shorts = std::mem::take(batch);
    let parts: Vec<&[f32]> = shorts.iter().map(|s| s.samples.as_slice()).collect();
    let inputs: Vec<AudioInput> = Samples::pack(&parts, options.decode_threads.max(1))
        .into_iter()
        .zip(&shorts)
        .map(|(samples, s)| AudioInput::Samples { samples, sample_rate: s.sample_rate })
        .collect();
    let predict = PredictAudioOptions {
        encoder_dir: options.encoder_dir.clone(),
        device: options.device.clone(),
        decode_threads: options.decode_threads,
    };
    let predictions = match model.predict_audio(&inputs, calibration, &predict, cancel) {
        Ok(p) => p,
        // One input the featuriser refuses (too short for the encoder, say) fails its batch: score the
        // batch one input at a time so that only its row carries the error, under its own name.
        Err(e) if per_input(&e) && shorts.len() > 1 => {
            for (short, input) in shorts.iter().zip(inputs) {
                let one = model.predict_audio(std::slice::from_ref(&input), calibration, &predict, cancel);
                rows[short.index] = Some(match one {
                    Ok(mut p) => Ok(scored(short, p.remove(0), options)),
                    Err(e) if per_input(&e) => Err(e),
                    Err(e) => return Err(e),
                });
            }
            return Ok(());
        }
        Err(e) if per_input(&e) => {
            rows[shorts[0].index] = Some(Err(e));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for (short, p) in shorts.iter().zip(predictions) {
        rows[short.index] = Some(Ok(scored(short, p, options)));
    }
    Ok(())
}

/// One window's result: scored whether speech or not (a single window is never dropped), and `speech`
/// says what the voice gate found.
fn scored(short: &Short, p: crate::train::predict::Prediction, options: &InferOptions) -> Scored {
    let voiced = super::vad::voiced_fraction(options.vad, &short.samples, short.sample_rate);
    Scored {
        label: p.label,
        label_index: p.index,
        probabilities: p.probabilities,
        seconds: short.samples.len() as f64 / short.sample_rate as f64,
        windows: 1,
        speech: voiced as f64 >= options.min_voiced,
    }
}

/// Errors that concern one input: its row's, not the call's.
fn per_input(e: &Error) -> bool {
    matches!(e, Error::AudioDecode { .. }) || matches!(e, Error::InvalidOption { option, .. } if option == "longInput")
}

/// Puts the input's name into an error about it.
fn name_input(e: Error, input: &InferInput, index: usize) -> Error {
    match e {
        // The featuriser named the input by its place in a batch (`<samples #k>`): the caller's name instead.
        Error::AudioDecode { reason, .. } => Error::decode(input.label(index), reason),
        Error::InvalidOption { option, reason } => {
            Error::InvalidOption { option, reason: format!("{}: {reason}", input.label(index)) }
        }
        other => other,
    }
}
