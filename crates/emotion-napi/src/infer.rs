//! Using a loaded model on audio: `predict` rows, `timeline`, and live streams.

use crate::audio::{to_inputs, SamplesInput};
use crate::errors::to_js;
use crate::job::{emit, spawn, ProgressCallback};
use crate::system::{parse_options, CancelToken};
use crate::train::NativeModel;
use emotion_core::control::CancelFlag;
use emotion_core::infer::{self, InferInput, InferOptions, PredictRow, WindowScorer};
use emotion_core::train::predict::LoadedModel;
use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One input: a path, an encoded file's bytes, or samples at a rate (exactly one of them).
#[napi(object)]
pub struct InferInputJs {
    pub path: Option<String>,
    pub bytes: Option<Uint8Array>,
    pub samples: Option<Float32Array>,
    pub sample_rate: Option<u32>,
}

fn to_infer(input: &InferInputJs) -> InferInput {
    match (&input.path, &input.bytes, &input.samples) {
        (Some(path), _, _) => InferInput::Path(PathBuf::from(path)),
        (_, Some(bytes), _) => InferInput::Encoded(bytes.to_vec()),
        (_, _, Some(samples)) => {
            InferInput::Samples { samples: samples.to_vec(), sample_rate: input.sample_rate.unwrap_or(0) }
        }
        _ => InferInput::Samples { samples: Vec::new(), sample_rate: 0 },
    }
}

/// The model, waited for until `cancel` is set: a call queued behind a long timeline on the same model
/// can be cancelled. (A panic in an earlier call left nothing half-done: predicting only reads the model.)
fn lock_unless_cancelled<'a>(
    model: &'a Mutex<LoadedModel>,
    cancel: &CancelFlag,
) -> emotion_core::Result<std::sync::MutexGuard<'a, LoadedModel>> {
    loop {
        match model.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                cancel.check()?;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> emotion_core::Result<String> {
    serde_json::to_string(value).map_err(|e| CoreError::Internal(e.to_string()))
}

#[napi]
impl NativeModel {
    /// One row per input (JSON `PredictRow[]`): a prediction, or that input's error. `optionsJson`: a
    /// JSON `InferOptions`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn predict_inputs<'env>(
        &self,
        env: &'env Env,
        inputs: Vec<InferInputJs>,
        calibration: Option<Vec<Either<String, SamplesInput>>>,
        options_json: Option<String>,
        cancel: Option<&CancelToken>,
    ) -> Result<Object<'env>> {
        // Typed arrays are copied here, on the JS thread.
        let inputs: Vec<InferInput> = inputs.iter().map(to_infer).collect();
        let calibration = to_inputs(calibration.unwrap_or_default());
        let options = parse_options::<InferOptions>("predict options", options_json);
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        let model = self.shared();
        spawn(
            env,
            "predict",
            move || {
                let options = options?;
                let model = lock_unless_cancelled(&model, &flag)?;
                let rows = infer::predict_inputs(&model, &inputs, &calibration, &options, &flag)?;
                json(&PredictRow::rows(rows))
            },
            |_, json| Ok(json),
        )
    }

    /// The model slid over one recording (JSON `Timeline`); `onProgress` gets `{ "seconds": s }`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn timeline<'env>(
        &self,
        env: &'env Env,
        input: InferInputJs,
        calibration: Option<Vec<Either<String, SamplesInput>>>,
        options_json: Option<String>,
        cancel: Option<&CancelToken>,
        #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    ) -> Result<Object<'env>> {
        let input = to_infer(&input);
        let calibration = to_inputs(calibration.unwrap_or_default());
        let options = parse_options::<InferOptions>("timeline options", options_json);
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        let model = self.shared();
        spawn(
            env,
            "timeline",
            move || {
                let options = options?;
                let model = lock_unless_cancelled(&model, &flag)?;
                let mut progress =
                    |seconds: f64| emit(on_progress.as_ref(), &serde_json::json!({ "seconds": seconds }));
                json(&infer::timeline(&model, &input, &calibration, &options, &flag, &mut progress)?)
            },
            |_, json| Ok(json),
        )
    }

    /// A live stream at `sampleRate`: push chunks, get the segments they complete.
    #[napi]
    pub fn stream(&self, sample_rate: u32, options_json: Option<String>) -> Result<NativeStream, crate::errors::Code> {
        let options = parse_options::<InferOptions>("stream options", options_json).map_err(to_js)?;
        emotion_core::audio::check_sample_rate("sampleRate", sample_rate).map_err(to_js)?;
        let model = self.shared();
        infer::check_audio_model(&self.spec, false).map_err(to_js)?;
        let (window, hop) = infer::resolve_window(&self.spec, &options).map_err(to_js)?;
        let options = InferOptions { batch_size: Some(1), ..options };
        let scorer = WindowScorer::new(sample_rate, window, hop, &options, false);
        Ok(NativeStream { model, scorer: Arc::new(Mutex::new(Some(scorer))) })
    }
}

/// Windows of a live stream, scored as they complete.
#[napi]
pub struct NativeStream {
    model: Arc<Mutex<LoadedModel>>,
    /// `None` once ended.
    scorer: Arc<Mutex<Option<WindowScorer>>>,
}

#[napi]
impl NativeStream {
    /// Adds samples; resolves to the JSON `Segment[]` they complete. `end` scores the rest.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn push<'env>(&self, env: &'env Env, samples: Float32Array, end: bool) -> Result<Object<'env>> {
        let chunk = samples.to_vec();
        let (model, scorer) = (Arc::clone(&self.model), Arc::clone(&self.scorer));
        spawn(
            env,
            "stream",
            move || {
                if let Some(i) = chunk.iter().position(|x| !x.is_finite()) {
                    return Err(CoreError::invalid("samples", format!("non-finite sample (NaN or infinity) at {i}")));
                }
                let mut slot = scorer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(s) = slot.as_mut() else {
                    return Err(CoreError::invalid("stream", "the stream has ended"));
                };
                let model = model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let flag = CancelFlag::new();
                let mut segments = s.push(&model, &chunk, &[], &flag)?;
                if end {
                    segments.extend(s.finish(&model, &[], &flag)?);
                    *slot = None;
                }
                json(&segments)
            },
            |_, json| Ok(json),
        )
    }
}
