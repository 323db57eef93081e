//! A frozen pretrained speech encoder as a feature branch: Whisper's encoder run on each clip, its
//! hidden states mean-pooled over the clip's real frames, per layer. The cached `[layers + 1, width]`
//! rows feed the `encoder` model (a learned weighted sum of layers and a small head).

pub mod ctranslate2;
pub mod hf;
mod loaded;

pub use loaded::weights_sha256;
pub mod speaker_norm;
pub mod whisper;
pub mod whisper_asr;

use crate::audio::cache::{CacheStats, FeatureCache};
use crate::audio::features::{load_input, lookup, parallel_map, AudioInput, FailedInput, Loaded, Prepare, Stage};
use crate::audio::resample::input_needed;
use crate::audio::resample::resample;
use crate::control::{CancelFlag, Progress};
use crate::device::{device_name, parse_device};
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use whisper::{WhisperEncoder, MIN_SAMPLES, SAMPLES_PER_POSITION, SAMPLE_RATE, WINDOW_SAMPLES};

/// Bump when the embedding computation changes in a way that alters values.
/// v2: states computed on every core whatever ran before in the process (v1 entries made after an
/// encoder-model job, on 1 libtorch thread, differed in the last bits; the cross-validations cached
/// some).
const FORMAT: &str = "emotion-pipeline whisper-encoder v2";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// What the encoder sees of each clip.
pub enum EncoderInput {
    /// The clip at its own length (up to 30 s): positions beyond it are never computed.
    Clip,
    /// The clip padded with silence to Whisper's 30 s window, as Whisper was trained; pooling still
    /// covers the clip's own positions only. About 8× the compute of `clip` for 4 s clips.
    Padded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// How each layer's states are summarised over the clip's positions.
pub enum Pooling {
    /// The mean: rows `[layers + 1, width]`.
    Mean,
    /// Mean and standard deviation (statistics pooling): rows `[2 (layers + 1), width]`, the means
    /// first. Give the `encoder` model `encoderHead.groups: 2`.
    MeanStd,
}

impl Pooling {
    /// Row groups per clip (the `encoder` model's `encoderHead.groups`).
    pub fn groups(self) -> usize {
        match self {
            Pooling::Mean => 1,
            Pooling::MeanStd => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Arithmetic of the encoder's forward pass.
pub enum EncoderPrecision {
    /// fp16 on CUDA; on the CPU bf16 where it is native (AVX512-BF16, Arm BF16), else fp32.
    Auto,
    Fp32,
    Fp16,
    Bf16,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EmbedOptions {
    /// Folder holding a Whisper encoder: a CTranslate2 `model.bin`, or Hugging Face's `config.json` with
    /// `model.safetensors` or its shards, any size (the TypeScript API also takes the names
    /// `whisper-base` and `whisper-tiny.en` and resolves them to installed models).
    pub model_dir: PathBuf,
    pub input: EncoderInput,
    pub pooling: Pooling,
    pub precision: EncoderPrecision,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Fail on the first bad input instead of reporting it in `failed`.
    pub strict: bool,
    /// CPU threads decoding and resampling; 0 = all cores.
    pub decode_threads: usize,
    /// Folder of the on-disk cache (entries keyed by clip content, model file and these settings).
    pub cache_dir: Option<PathBuf>,
    /// Speed perturbation: each clip played this many times faster (resampled as if it had been
    /// recorded at `speed ×` its rate, so pitch and tempo change together), 0.5–2. Training copies at
    /// 0.9 and 1.1 are the usual augmentation.
    pub speed: f64,
    /// Longest input in seconds; longer ones are refused (`AUDIO_DECODE`) before they are decoded, so
    /// memory stays bounded whatever a file claims.
    pub max_duration: f64,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            model_dir: PathBuf::new(),
            input: EncoderInput::Clip,
            pooling: Pooling::Mean,
            precision: EncoderPrecision::Auto,
            device: "auto".into(),
            strict: false,
            decode_threads: 0,
            cache_dir: None,
            speed: 1.0,
            max_duration: crate::audio::decode::DEFAULT_MAX_SECONDS,
        }
    }
}

/// Pooled encoder states of many clips. Serialised without `data`, which crosses as a typed array.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Embeddings {
    /// Row-major `[shape[0], rows, width]`: per clip, the mean over its positions of the encoder's
    /// input to each layer and of its final (normalised) output (`layers + 1` rows), then with
    /// `meanStd` pooling their standard deviations (as many rows again).
    #[serde(skip)]
    pub data: Vec<f32>,
    pub shape: [usize; 3],
    /// `indices[i]` is the input that row `i` came from (failed inputs have no row).
    pub indices: Vec<usize>,
    pub failed: Vec<FailedInput>,
    /// Inputs longer than Whisper's 30 s window: only the window was encoded.
    pub cut: Vec<usize>,
    pub device: String,
    /// The encoder's identity: SHA-256 of its weight file (`model.bin` or `model.safetensors`; for shards,
    /// of their `<name> <sha256>` lines).
    pub model_sha256: String,
    /// The precision the encoder ran in (`auto` resolved).
    pub precision: EncoderPrecision,
    /// The encoder's attention heads per layer (a Hugging Face folder's `config.json` sets them apart
    /// from the weights the SHA-256 covers).
    pub heads: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStats>,
}

/// What `auto` means on `device`: fp16 on CUDA; bf16 on a CPU with native bf16 (about 2× fp32 there:
/// 58 vs 28 clips/s for Whisper-base on the 2-core Intel development machine, pooled rows within
/// cosine 0.9999 of fp32); fp32 elsewhere.
pub fn resolve_precision(precision: EncoderPrecision, device: Device) -> EncoderPrecision {
    match (precision, device) {
        (EncoderPrecision::Auto, Device::Cuda(_)) => EncoderPrecision::Fp16,
        (EncoderPrecision::Auto, _) if crate::device::cpu_has_native_bf16() => EncoderPrecision::Bf16,
        (EncoderPrecision::Auto, _) => EncoderPrecision::Fp32,
        (p, _) => p,
    }
}

fn precision_kind(precision: EncoderPrecision, device: Device) -> Kind {
    match resolve_precision(precision, device) {
        EncoderPrecision::Fp16 => Kind::Half,
        EncoderPrecision::Bf16 => Kind::BFloat16,
        _ => Kind::Float,
    }
}

/// 16 kHz mono, at most Whisper's 30 s window (longer clips keep their first 30 s); `speed` ≠ 1
/// resamples as if the clip had been recorded at `speed × rate`.
fn to_encoder_rate(samples: &[f32], rate: u32, speed: f64) -> Vec<f32> {
    let rate = (rate as f64 * speed).round() as u32;
    let mut out = if rate == SAMPLE_RATE { samples.to_vec() } else { resample(samples, rate, SAMPLE_RATE) };
    out.truncate(WINDOW_SAMPLES);
    out
}

/// The pooled-row cache under `options.cache_dir`, if any, tagged with what a row depends on besides the
/// audio: the encoder's weights, input handling, precision, speed, pooling and attention heads.
fn open_cache(
    options: &EmbedOptions,
    model_sha256: &str,
    kind: Kind,
    heads: Option<i64>,
) -> Result<Option<FeatureCache>> {
    let mut tag = format!("{FORMAT}\0{model_sha256}\0{:?}\0{kind:?}", options.input);
    if options.speed != 1.0 {
        tag.push_str(&format!("\0speed {}", options.speed));
    }
    if options.pooling != Pooling::Mean {
        tag.push_str(&format!("\0{:?}", options.pooling));
    }
    if let Some(heads) = heads {
        tag.push_str(&format!("\0heads {heads}"));
    }
    options.cache_dir.as_deref().map(|d| FeatureCache::open_tagged(&d.join("embeddings"), tag)).transpose()
}

impl Embeddings {
    /// Appends input `index`'s pooled row, or lists it as failed (the call fails instead when `strict`
    /// or when the error is not the input's own).
    fn record(
        &mut self,
        index: usize,
        pooled: Result<Vec<f32>>,
        strict: bool,
        label: impl FnOnce() -> String,
    ) -> Result<()> {
        match pooled {
            Ok(row) => {
                self.data.extend_from_slice(&row);
                self.indices.push(index);
            }
            Err(e) if strict || !is_per_input(&e) => return Err(e),
            Err(e) => self.failed.push(FailedInput { index, path: label(), code: e.code(), message: e.to_string() }),
        }
        Ok(())
    }
}

fn check_options(options: &EmbedOptions) -> Result<()> {
    if !(0.5..=2.0).contains(&options.speed) {
        return Err(Error::invalid("speed", format!("must be 0.5–2, got {}", options.speed)));
    }
    crate::audio::features::check_max_duration(options.max_duration)
}

/// Encodes each input and pools its hidden states; failed inputs are listed, or fail the call when
/// `strict`.
pub fn extract_embeddings(
    inputs: &[AudioInput],
    options: &EmbedOptions,
    cancel: &CancelFlag,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Embeddings> {
    let _cache = crate::cpu_cache::JobCache::enter();
    let _turn = crate::job_turn_unless_cancelled(cancel)?;
    crate::use_all_cores();
    check_options(options)?;
    let device = parse_device(&options.device)?;
    let kind = precision_kind(options.precision, device);
    let encoder = loaded::encoder_for(&options.model_dir, device, kind)?;
    let model_sha256 = encoder.sha256().to_string();
    let (rows, width) = ((encoder.layers() + 1) * options.pooling.groups(), encoder.width as usize);
    let per_clip = rows * width;
    let cache = open_cache(options, &model_sha256, kind, encoder.config_heads())?;
    let threads = if options.decode_threads == 0 { crate::cores() } else { options.decode_threads };
    let mut out = Embeddings {
        data: Vec::with_capacity(inputs.len() * per_clip),
        shape: [0, rows, width],
        indices: Vec::new(),
        failed: Vec::new(),
        cut: Vec::new(),
        device: device_name(device),
        model_sha256,
        precision: resolve_precision(options.precision, device),
        heads: encoder.heads(),
        cache: None,
    };
    // Whisper's 30 s window in input frames at a file's rate (as if recorded `speed` times faster): only
    // those are decoded; a longer clip is reported in `cut`.
    let keep = |rate: u32| {
        let rate = (rate as f64 * options.speed).round() as u32;
        Some(if rate == SAMPLE_RATE { WINDOW_SAMPLES } else { input_needed(rate, SAMPLE_RATE, WINDOW_SAMPLES) })
    };
    let prepare: Prepare = &|samples, rate| Ok(Cow::Owned(to_encoder_rate(samples, rate, options.speed)));
    let stage = Stage {
        keep: &keep,
        window_seconds: WINDOW_SAMPLES as f64 / SAMPLE_RATE as f64 * options.speed,
        max_seconds: options.max_duration,
        prepare,
    };
    let chunk = 16;
    for (chunk_no, batch) in inputs.chunks(chunk).enumerate() {
        cancel.check()?;
        let first = chunk_no * chunk;
        let cached = |hash: &str| lookup(cache.as_ref(), hash, per_clip);
        let loaded = parallel_map(batch, first, threads, &|input, index| load_input(input, index, &cached, &stage));
        for (offset, result) in loaded.into_iter().enumerate() {
            let index = first + offset;
            if let Ok((_, true)) = &result {
                out.cut.push(index);
            }
            let pooled = result.and_then(|(loaded, _)| match loaded {
                Loaded::Cached(row) => Ok(row),
                Loaded::Wave { samples, cache_key } => {
                    let label = batch[offset].label(index);
                    let row = embed_clip(&encoder, &samples, options.input, options.pooling, &label)?;
                    if let (Some(c), Some(key)) = (&cache, cache_key) {
                        c.put(&key, &row)?;
                    }
                    Ok(row)
                }
            });
            out.record(index, pooled, options.strict, || batch[offset].label(index))?;
        }
        on_progress(Progress {
            stage: "embed",
            done: (first + batch.len()).min(inputs.len()),
            total: inputs.len(),
            failed: out.failed.len(),
        });
    }
    out.shape[0] = out.indices.len();
    out.cache = cache.map(|c| c.stats());
    Ok(out)
}

/// The encoder in `dir` as ONNX nodes on `[B, n]` 16 kHz samples → pooled rows `[B, rows, width]`
/// (and the encoder's mel bands), in fp32 from the CPU's copy of the weights; refused unless its SHA-256 is `sha256` (what the model
/// trained on). `Padded` input is refused: the graph reads each clip at its own length.
pub fn onnx_pooled(
    dir: &std::path::Path,
    sha256: &str,
    heads: Option<i64>,
    input: EncoderInput,
    pooling: Pooling,
    g: &mut crate::onnx::graph::Graph,
    samples: &str,
) -> Result<(String, i64)> {
    if input == EncoderInput::Padded {
        return Err(Error::invalid(
            "model",
            "was trained on states of clips padded to 30 s (encoderInput: 'padded'); the exported graph reads each clip at its own length: train with encoderInput 'clip' to export",
        ));
    }
    let encoder = loaded::encoder_for(dir, Device::Cpu, Kind::Float)?;
    if let Some(want) = heads {
        check_heads(dir, want, encoder.heads())?;
    }
    if encoder.sha256() != sha256 {
        return Err(Error::model_not_found(
            dir,
            format!("the model was trained on states of the encoder with SHA-256 {sha256}, but these weights have {}: give the same encoder", encoder.sha256()),
        ));
    }
    Ok((encoder.onnx_pooled(g, samples, pooling)?, encoder.n_mels))
}

/// Refuses an encoder folder whose head count is not the one a model recorded (the weights' SHA-256
/// cannot tell: a Hugging Face `config.json` sets it).
pub fn check_heads(dir: &std::path::Path, recorded: i64, found: i64) -> Result<()> {
    if recorded == found {
        return Ok(());
    }
    Err(Error::model_not_found(
        dir,
        format!("the model was trained on an encoder with {recorded} attention heads, but this folder's config.json gives {found}: give the encoder it was trained on"),
    ))
}

/// Failures that belong to one input (listed in `failed`); anything else stops the call.
fn is_per_input(e: &Error) -> bool {
    matches!(e, Error::AudioDecode { .. } | Error::InvalidOption { .. } | Error::NonFinite(_))
}

/// `[layers + 1, width]` means (then as many standard deviations with `meanStd`) of one clip's
/// hidden states over its own positions.
pub fn embed_clip(
    encoder: &WhisperEncoder,
    samples: &[f32],
    input: EncoderInput,
    pooling: Pooling,
    label: &str,
) -> Result<Vec<f32>> {
    if samples.len() < MIN_SAMPLES {
        return Err(Error::decode(
            label,
            format!(
                "{} samples at 16 kHz is shorter than one Whisper frame ({MIN_SAMPLES} samples, 25 ms)",
                samples.len()
            ),
        ));
    }
    let own_frames = samples.len() / whisper::HOP;
    let real_positions = own_frames.div_ceil(2) as i64;
    let log_mel = match input {
        EncoderInput::Clip => encoder.log_mel(samples)?,
        EncoderInput::Padded => {
            let mut padded = samples.to_vec();
            padded.resize(WINDOW_SAMPLES, 0.0);
            encoder.log_mel(&padded)?
        }
    };
    debug_assert!(real_positions as usize <= WINDOW_SAMPLES / SAMPLES_PER_POSITION);
    let _guard = tch::no_grad_guard();
    let states = encoder.hidden_states(&log_mel)?;
    let own: Vec<Tensor> = states.iter().map(|s| s.f_narrow(1, 0, real_positions)).collect::<Result<_, _>>()?;
    let mut pooled: Vec<Tensor> =
        own.iter().map(|s| s.f_mean_dim([1i64].as_slice(), false, Kind::Float)).collect::<Result<_, _>>()?;
    if pooling == Pooling::MeanStd {
        for s in &own {
            pooled.push(s.f_std_correction([1i64].as_slice(), 0i64, false)?);
        }
    }
    let pooled = Tensor::f_cat(&pooled, 0)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let n = pooled.numel();
    let mut row = vec![0f32; n];
    pooled.f_copy_data(&mut row, n)?;
    if row.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite(format!("encoder output of {label} is not finite")));
    }
    Ok(row)
}
