use crate::audio::{to_inputs, SamplesInput};
use crate::errors::{to_js, Code};
use crate::job::{emit, spawn, ProgressCallback};
use crate::system::{parse_options, CancelToken};
use crate::world::NativeWorld;
use emotion_core::train::predict::{load_model as core_load_model, LoadedModel};
use emotion_core::train::predict_audio::PredictAudioOptions;
use emotion_core::train::{self, HostSet, TrainConfig};
use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One split's inputs. `mel` is row-major `[n, nMels, frames]`, `tokens` row-major `[n, maxLen]`,
/// `embedding` row-major `[n, layers, width]`.
#[napi(object)]
pub struct TrainSet {
    pub mel: Option<Float32Array>,
    pub mel_shape: Option<Vec<u32>>,
    pub tokens: Option<Int32Array>,
    pub tokens_shape: Option<Vec<u32>>,
    pub embedding: Option<Float32Array>,
    pub embedding_shape: Option<Vec<u32>>,
    pub labels: Int32Array,
    /// The speaker index of each row, for `encoderHead.speakerAdversary`.
    pub speaker_ids: Option<Int32Array>,
}

fn to_host(set: &TrainSet, name: &str) -> emotion_core::Result<HostSet> {
    let shape3 = |s: &Option<Vec<u32>>, what: &str, dims: &str| -> emotion_core::Result<[usize; 3]> {
        match s.as_deref() {
            Some([a, b, c]) => Ok([*a as usize, *b as usize, *c as usize]),
            _ => Err(CoreError::invalid(format!("{name}.{what}"), format!("must be {dims}"))),
        }
    };
    let mel = match &set.mel {
        Some(data) => Some((data.to_vec(), shape3(&set.mel_shape, "melShape", "[n, nMels, frames]")?)),
        None => None,
    };
    let embedding = match &set.embedding {
        Some(data) => Some((data.to_vec(), shape3(&set.embedding_shape, "embeddingShape", "[n, layers, width]")?)),
        None => None,
    };
    let tokens = match (&set.tokens, set.tokens_shape.as_deref()) {
        (Some(data), Some([n, l])) => Some((data.iter().map(|&t| t as i64).collect(), [*n as usize, *l as usize])),
        (Some(_), _) => return Err(CoreError::invalid(format!("{name}.tokensShape"), "must be [n, maxLen]")),
        (None, _) => None,
    };
    let speaker_ids = set.speaker_ids.as_ref().map(|ids| ids.iter().map(|&x| x as i64).collect());
    Ok(HostSet { mel, tokens, embedding, labels: set.labels.iter().map(|&l| l as i64).collect(), speaker_ids })
}

/// The encoder head's speaker-adversary weight for a training part with `speakers` known speakers
/// (`train::preset::speaker_adversary`), as the JSON text of `{ weight, off }`; `off` when the preset's
/// weight was switched off.
#[napi]
pub fn resolve_speaker_adversary(preset: String, set: Option<f64>, speakers: u32) -> Result<String, Code> {
    let parsed: train::config::Preset =
        serde_json::from_value(serde_json::Value::String(preset.clone())).map_err(|_| {
            to_js(CoreError::invalid("preset", format!("must be 'recommended' or 'reference', got '{preset}'")))
        })?;
    let (weight, off) = train::preset::speaker_adversary(parsed, set, speakers as usize).map_err(to_js)?;
    Ok(serde_json::json!({ "weight": weight, "off": off }).to_string())
}

/// Parses and checks training options as `train` would, without data, and returns them resolved
/// (every default filled in) as JSON text: the one place defaults and validation live.
#[napi]
pub fn resolve_train_config(config_json: String) -> Result<String, Code> {
    let config: TrainConfig = parse_options("train options", Some(config_json)).map_err(to_js)?;
    config.validate_settings().map_err(to_js)?;
    Ok(serde_json::to_string(&config.resolved()).expect("a config serialises"))
}

/// Trains one model on its own thread. `configJson` is a `TrainConfig`; resolves to the JSON text
/// of a `TrainResult`; progress events are JSON text.
#[napi(ts_return_type = "Promise<string>")]
#[allow(clippy::too_many_arguments)] // the JS call's positional arguments (src/train.ts is the only caller)
pub fn train<'env>(
    env: &'env Env,
    config_json: String,
    train_set: TrainSet,
    val_set: Option<TrainSet>,
    test_set: Option<TrainSet>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    cancel: Option<&CancelToken>,
    world: Option<&NativeWorld>,
) -> Result<Object<'env>> {
    // Typed arrays are copied here, on the JS thread.
    let prepared = (|| -> emotion_core::Result<_> {
        let config: TrainConfig = parse_options("train options", Some(config_json))?;
        let train = to_host(&train_set, "train")?;
        let val = val_set.as_ref().map(|s| to_host(s, "val")).transpose()?;
        let test = test_set.as_ref().map(|s| to_host(s, "test")).transpose()?;
        Ok((config, train, val, test))
    })();
    let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let world = world.map(|w| Arc::clone(&w.inner));
    spawn(
        env,
        "train",
        move || {
            let (config, train, val, test) = prepared?;
            let mut progress = |e: train::TrainEvent| emit(on_progress.as_ref(), &e);
            let result = train::train_in(
                &config,
                train::Sets { train: &train, val: val.as_ref(), test: test.as_ref() },
                world.as_deref(),
                &flag,
                &mut progress,
            )?;
            serde_json::to_string(&result).map_err(|e| CoreError::Internal(e.to_string()))
        },
        |_, json| Ok(json),
    )
}

/// A trained model loaded from a checkpoint folder. Loading and predicting run as jobs on threads of
/// their own, inside the panic guard (a damaged checkpoint rejects; it never aborts Node); a mutex lets
/// predictions of one model queue while other models run.
#[napi]
pub struct NativeModel {
    inner: Arc<Mutex<LoadedModel>>,
    meta_json: String,
    /// The model's description, readable without waiting for a job that holds the model.
    pub(crate) spec: emotion_core::train::ModelSpec,
}

/// Loads `best` from `dir` onto `device` (a folder with only `last.*` is refused: resume the run).
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model<'env>(env: &'env Env, dir: String, device: Option<String>) -> Result<Object<'env>> {
    spawn(
        env,
        "load",
        move || core_load_model(&PathBuf::from(dir), device.as_deref().unwrap_or("auto")),
        |_, inner| {
            let meta_json =
                serde_json::to_string(&inner.meta).map_err(|e| Error::from_reason(format!("model metadata: {e}")))?;
            let spec = inner.meta.spec.clone();
            Ok(NativeModel { inner: Arc::new(Mutex::new(inner)), meta_json, spec })
        },
    )
}

impl NativeModel {
    /// The loaded model, shared with the jobs that use it.
    pub(crate) fn shared(&self) -> Arc<Mutex<LoadedModel>> {
        Arc::clone(&self.inner)
    }
}

#[napi]
impl NativeModel {
    /// The JSON text of the model's metadata (config, labels, normalisation, validation scores).
    #[napi(getter)]
    pub fn meta_json(&self) -> String {
        self.meta_json.clone()
    }

    /// Predicts from audio (paths or samples) through the model's own front end or encoder;
    /// `calibration` clips standardise a speaker for models trained with `speakerNorm`. `optionsJson` is
    /// a JSON `PredictAudioOptions`. Resolves to the JSON text of `Prediction[]`, one per input.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn predict_audio<'env>(
        &self,
        env: &'env Env,
        inputs: Vec<Either<String, SamplesInput>>,
        calibration: Option<Vec<Either<String, SamplesInput>>>,
        options_json: Option<String>,
        cancel: Option<&CancelToken>,
    ) -> Result<Object<'env>> {
        let options = parse_options::<PredictAudioOptions>("predictFiles options", options_json);
        let (inputs, calibration) = (to_inputs(inputs), to_inputs(calibration.unwrap_or_default()));
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        let model = Arc::clone(&self.inner);
        spawn(
            env,
            "predict",
            move || {
                let options = options?;
                let model = model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let out = model.predict_audio(&inputs, &calibration, &options, &flag)?;
                serde_json::to_string(&out).map_err(|e| CoreError::Internal(e.to_string()))
            },
            |_, json| Ok(json),
        )
    }

    /// Predicts from inputs (`labels` ignored). Resolves to the JSON text of `Prediction[]`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn predict<'env>(&self, env: &'env Env, inputs: TrainSet) -> Result<Object<'env>> {
        // Typed arrays are copied here, on the JS thread.
        let set = to_host(&inputs, "inputs");
        let model = Arc::clone(&self.inner);
        spawn(
            env,
            "predict",
            move || {
                let set = set?;
                // Predicting only reads the model, so a panic in an earlier prediction left nothing half-done.
                let model = model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let out = model.predict(&set)?;
                serde_json::to_string(&out).map_err(|e| CoreError::Internal(e.to_string()))
            },
            |_, json| Ok(json),
        )
    }
}

/// Standardises encoder states per speaker: rows of `rowLength` values, `speakers[i]` the speaker of
/// row `i` (any ids). Returns a standardised copy (`emotion_core::encoder::speaker_norm`).
#[napi]
pub fn standardise_by_speaker(data: Float32Array, row_length: u32, speakers: Int32Array) -> Result<Float32Array, Code> {
    let per = row_length as usize;
    if per == 0 || data.len() != per * speakers.len() {
        return Err(to_js(CoreError::invalid(
            "speakers",
            format!("{} values are not {} rows of {per}", data.len(), speakers.len()),
        )));
    }
    let mut out = data.to_vec();
    let ids: Vec<i64> = speakers.iter().map(|&s| s as i64).collect();
    emotion_core::encoder::speaker_norm::standardise_by_speaker(&mut out, per, &ids);
    Ok(out.into())
}
