//! Batch feature extraction: decode and resample on CPU threads, log-mel in batches on the device.

use super::cache::{CacheStats, FeatureCache};
use super::decode::{decode_file_limited, probe_file, Limits};
use super::mel::{fit_clip, fit_length, Align, MelConfig, MelExtractor};
use super::resample::{input_needed, resample};
pub use super::samples::Samples;
use crate::control::{CancelFlag, Progress};
use crate::device::{device_name, parse_device};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// One clip to featurise: a file, or samples already in memory.
#[derive(Debug, Clone)]
pub enum AudioInput {
    Path(PathBuf),
    Samples { samples: Samples, sample_rate: u32 },
}

impl AudioInput {
    /// How the input is named in errors and in `failed`: its path, or `<samples #i>`.
    pub fn label(&self, index: usize) -> String {
        match self {
            AudioInput::Path(p) => p.display().to_string(),
            AudioInput::Samples { .. } => format!("<samples #{index}>"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ExtractOptions {
    pub mel: MelConfig,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Clips per mel batch on the device.
    pub batch_size: usize,
    /// Fail on the first bad input instead of reporting it in `failed`.
    pub strict: bool,
    /// CPU threads decoding and resampling; 0 = all cores.
    pub decode_threads: usize,
    /// Folder of the on-disk feature cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Longest input in seconds; longer ones are refused (`AUDIO_DECODE`) before they are decoded, so
    /// memory stays bounded whatever a file claims.
    pub max_duration: f64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            mel: MelConfig::default(),
            device: "auto".into(),
            batch_size: 64,
            strict: false,
            decode_threads: 0,
            cache_dir: None,
            max_duration: super::decode::DEFAULT_MAX_SECONDS,
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedInput {
    pub index: usize,
    pub path: String,
    pub code: crate::error::ErrorCode,
    pub message: String,
}

/// Log-mel features of many clips. Serialised without `data`, which crosses as a typed array.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MelFeatures {
    /// Row-major `[shape[0], nMels, frames]`.
    #[serde(skip)]
    pub data: Vec<f32>,
    pub shape: [usize; 3],
    /// `indices[i]` is the input that row `i` came from (failed inputs have no row).
    pub indices: Vec<usize>,
    /// Inputs that could not be featurised, with the reason.
    pub failed: Vec<FailedInput>,
    /// Inputs longer than the window (`mel.durationSeconds`): only the window was featurised.
    pub cut: Vec<usize>,
    /// The device the spectrograms were computed on.
    pub device: String,
    /// Cache counts when `cacheDir` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStats>,
    /// The front end the rows were made with: `train()` records it in the model, so predictions on audio
    /// featurise the same way.
    pub config: MelConfig,
}

/// A clip ready for the next stage: features found in the cache, or a waveform to featurise.
pub(crate) enum Loaded<'a> {
    Cached(Vec<f32>),
    /// Borrowed from an in-memory input when it needs no resampling, padding or copying.
    Wave {
        samples: Cow<'a, [f32]>,
        cache_key: Option<String>,
    },
}

/// What a stage reads of each clip.
pub(crate) struct Stage<'a> {
    /// Input frames at a rate that its window needs (`None`: the whole clip, e.g. centre alignment).
    pub keep: &'a (dyn Fn(u32) -> Option<usize> + Sync),
    /// Its window in seconds of input: a longer clip is reported as cut.
    pub window_seconds: f64,
    /// Longer inputs are refused (`maxDuration`).
    pub max_seconds: f64,
    /// Samples at their own rate → the stage's waveform.
    pub prepare: Prepare<'a>,
}

/// A cache key and the entry found under it, for a content hash (`None`: no cache).
pub(crate) type CacheLookup<'a> = &'a dyn Fn(&str) -> Option<(String, Option<Vec<f32>>)>;
/// Samples at their own rate → the waveform a stage consumes.
pub(crate) type Prepare<'a> = &'a (dyn for<'s> Fn(&'s [f32], u32) -> Result<Cow<'s, [f32]>> + Sync);

/// Reads, looks up and decodes one input, and says whether it was longer than the stage's window.
/// A file's header is checked first (a file that is not audio, or longer than `maxDuration`, is refused
/// before it is read further); then its content hash, streamed, finds cached features (a hit skips
/// decoding); else only the window's frames are decoded, and `prepare` makes the stage's waveform.
pub(crate) fn load_input<'a>(
    input: &'a AudioInput,
    index: usize,
    cached: CacheLookup,
    stage: &Stage,
) -> Result<(Loaded<'a>, bool)> {
    match input {
        AudioInput::Path(path) => {
            let header = probe_file(path)?;
            if let Some(seconds) = header.duration_seconds().filter(|&s| s > stage.max_seconds) {
                return Err(Error::decode(
                    path,
                    format!("{seconds:.1} s long, more than the {} s allowed (maxDuration)", stage.max_seconds),
                ));
            }
            let longer = header.duration_seconds().is_some_and(|s| s > stage.window_seconds);
            let hash = crate::digest::sha256_file(path).map_err(|e| Error::io(path, e))?;
            let (key, hit) = cached(&hash).unzip();
            if let Some(Some(features)) = hit {
                return Ok((Loaded::Cached(features), longer));
            }
            let decoded = decode_file_limited(path, Limits { keep: stage.keep, max_seconds: stage.max_seconds })?;
            let audio = decoded.audio;
            let samples = Cow::Owned((stage.prepare)(&audio.samples, audio.sample_rate)?.into_owned());
            Ok((Loaded::Wave { samples, cache_key: key }, decoded.source_seconds > stage.window_seconds))
        }
        AudioInput::Samples { samples, sample_rate } => {
            let label = input.label(index);
            if samples.is_empty() {
                return Err(Error::decode(label, "no audio samples (zero-length audio)"));
            }
            super::check_sample_rate(&format!("inputs[{index}].sampleRate"), *sample_rate)?;
            if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
                return Err(Error::decode(label, format!("non-finite sample (NaN or infinity) at frame {i}")));
            }
            let seconds = samples.len() as f64 / *sample_rate as f64;
            if seconds > stage.max_seconds {
                return Err(Error::decode(
                    label,
                    format!("{seconds:.1} s long, more than the {} s allowed (maxDuration)", stage.max_seconds),
                ));
            }
            Ok((
                Loaded::Wave { samples: (stage.prepare)(samples, *sample_rate)?, cache_key: None },
                seconds > stage.window_seconds,
            ))
        }
    }
}

fn load<'a>(
    input: &'a AudioInput,
    index: usize,
    options: &ExtractOptions,
    cache: Option<&FeatureCache>,
) -> Result<(Loaded<'a>, bool)> {
    let mel = &options.mel;
    let expected = (mel.n_mels * mel.output_frames()) as usize;
    let cached = |hash: &str| lookup(cache, hash, expected);
    // Start alignment keeps the first window: only the input it depends on is decoded. Centre alignment
    // needs the clip's length (decoded whole, up to maxDuration).
    let keep = |rate: u32| (mel.align == Align::Start).then(|| input_needed(rate, mel.sample_rate, mel.num_samples()));
    let stage = Stage {
        keep: &keep,
        window_seconds: mel.num_samples() as f64 / mel.sample_rate as f64,
        max_seconds: options.max_duration,
        prepare: &|samples, rate| Ok(to_clip(samples, rate, mel)),
    };
    load_input(input, index, &cached, &stage)
}

/// The cache key of a clip's content hash and the entry found under it (`None` without a cache).
pub(crate) fn lookup(cache: Option<&FeatureCache>, hash: &str, expected: usize) -> Option<(String, Option<Vec<f32>>)> {
    cache.map(|c| {
        let key = c.key(hash);
        let hit = c.get(&key, expected);
        (key, hit)
    })
}

/// Resamples to `mel.sample_rate` when the rates differ and fits the clip length; input already at
/// the target rate and long enough is only sliced (it is copied once, into the batch tensor).
fn to_clip<'s>(samples: &'s [f32], rate: u32, mel: &MelConfig) -> Cow<'s, [f32]> {
    if rate == mel.sample_rate {
        return fit_clip(samples, mel.num_samples(), mel.align);
    }
    // Keeping the start: resample only the input that the kept samples depend on (a 10-minute
    // recording is not resampled to keep 3 s); the kept samples are identical either way.
    let needed = input_needed(rate, mel.sample_rate, mel.num_samples());
    let input = if mel.align == Align::Start && samples.len() > needed { &samples[..needed] } else { samples };
    Cow::Owned(fit_length(&resample(input, rate, mel.sample_rate), mel.num_samples(), mel.align))
}

/// A clip of the batch to featurise: its input index, its samples and its cache key.
type Wave<'a> = (usize, Cow<'a, [f32]>, Option<String>);

/// A row of the output in input order: features read from the cache, or row `k` of this batch's mel pass.
enum Row {
    Cached(Vec<f32>),
    Computed(usize),
}

pub fn extract_mel(
    inputs: &[AudioInput],
    options: &ExtractOptions,
    cancel: &CancelFlag,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<MelFeatures> {
    let _cache = crate::cpu_cache::JobCache::enter();
    let _turn = crate::job_turn_unless_cancelled(cancel)?;
    crate::use_all_cores();
    if options.batch_size == 0 {
        return Err(Error::invalid("batchSize", "must be ≥ 1"));
    }
    check_max_duration(options.max_duration)?;
    let device = parse_device(&options.device)?;
    let extractor = MelExtractor::new(options.mel.clone(), device)?;
    let (n_mels, frames) = (options.mel.n_mels as usize, options.mel.output_frames() as usize);
    let threads = if options.decode_threads == 0 { crate::cores() } else { options.decode_threads };

    let cache = options.cache_dir.as_deref().map(|dir| FeatureCache::open(dir, &options.mel)).transpose()?;
    let per_clip = n_mels * frames;
    let mut out = MelFeatures {
        data: Vec::new(),
        shape: [0, n_mels, frames],
        indices: Vec::new(),
        failed: Vec::new(),
        cut: Vec::new(),
        device: device_name(device),
        cache: None,
        config: options.mel.clone(),
    };
    out.data.reserve(inputs.len() * n_mels * frames);
    let total = inputs.len();
    for (batch_no, batch) in inputs.chunks(options.batch_size).enumerate() {
        cancel.check()?;
        let first = batch_no * options.batch_size;
        let loaded = load_parallel(batch, first, options, threads, cache.as_ref());
        let (rows, waves) = sort_loaded(loaded, batch, first, options.strict, &mut out)?;
        // The batch's features, row-major `[waves, n_mels, frames]`, read straight from libtorch's output.
        let mel = if waves.is_empty() { None } else { Some(mel_of(&extractor, &waves, options.mel.num_samples())?) };
        let mel_rows: &[f32] = match &mel {
            // SAFETY: `mel_of` returns a contiguous f32 CPU tensor of `waves.len() * per_clip` elements,
            // alive (`mel`) for as long as the slice is used.
            Some(t) => unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, waves.len() * per_clip) },
            None => &[],
        };
        for (k, (index, _, key)) in waves.iter().enumerate() {
            let features = &mel_rows[k * per_clip..(k + 1) * per_clip];
            if features.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!("mel output of input {index} is not finite")));
            }
            if let (Some(c), Some(key)) = (&cache, key) {
                c.put(key, features)?;
            }
        }
        for (index, row) in rows {
            match row {
                Row::Cached(features) => out.data.extend_from_slice(&features),
                Row::Computed(k) => out.data.extend_from_slice(&mel_rows[k * per_clip..(k + 1) * per_clip]),
            }
            out.indices.push(index);
        }
        on_progress(Progress { stage: "mel", done: (first + batch.len()).min(total), total, failed: out.failed.len() });
    }
    out.shape[0] = out.indices.len();
    out.cache = cache.map(|c| c.stats());
    Ok(out)
}

/// A batch's rows in input order (each cached, or the index of its waveform) and the waveforms to compute.
type SortedBatch<'a> = (Vec<(usize, Row)>, Vec<Wave<'a>>);

/// A batch's loaded inputs sorted into rows in input order (cached features, or waveforms to compute),
/// with cut and failed inputs recorded in `out` (a failure stops the extraction when `strict`).
fn sort_loaded<'a>(
    loaded: Vec<Result<(Loaded<'a>, bool)>>,
    batch: &[AudioInput],
    first: usize,
    strict: bool,
    out: &mut MelFeatures,
) -> Result<SortedBatch<'a>> {
    let mut rows: Vec<(usize, Row)> = Vec::with_capacity(batch.len());
    let mut waves: Vec<Wave> = Vec::new();
    for (offset, result) in loaded.into_iter().enumerate() {
        let index = first + offset;
        if let Ok((_, true)) = &result {
            out.cut.push(index);
        }
        match result.map(|(loaded, _)| loaded) {
            Ok(Loaded::Cached(features)) => rows.push((index, Row::Cached(features))),
            Ok(Loaded::Wave { samples, cache_key }) => {
                rows.push((index, Row::Computed(waves.len())));
                waves.push((index, samples, cache_key));
            }
            Err(e) if strict => return Err(e),
            Err(e) => out.failed.push(FailedInput {
                index,
                path: batch[offset].label(index),
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }
    Ok((rows, waves))
}

/// Log-mel of equal-length waveforms (each `n` samples): they are copied once, into the input tensor,
/// and the result is a contiguous f32 CPU tensor `[waves, n_mels, frames]`.
fn mel_of(extractor: &MelExtractor, waves: &[Wave], n: usize) -> Result<Tensor> {
    let input = Tensor::f_empty([waves.len() as i64, n as i64], (Kind::Float, Device::Cpu))?;
    // SAFETY: a fresh contiguous f32 CPU tensor of `waves.len() * n` elements, written before it is read.
    let rows = unsafe { std::slice::from_raw_parts_mut(input.data_ptr() as *mut f32, waves.len() * n) };
    for ((_, wave, _), row) in waves.iter().zip(rows.chunks_exact_mut(n)) {
        row.copy_from_slice(wave);
    }
    let mel = extractor.forward(&input)?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
    Ok(mel)
}

fn load_parallel<'a>(
    batch: &'a [AudioInput],
    first: usize,
    options: &ExtractOptions,
    threads: usize,
    cache: Option<&FeatureCache>,
) -> Vec<Result<(Loaded<'a>, bool)>> {
    parallel_map(batch, first, threads, &|input, index| load(input, index, options, cache))
}

/// `f(input, index)` for each input of `batch` (whose first input has index `first`) on up to
/// `threads` threads, in input order; a panic fails its input, not the batch or the process.
pub(crate) fn parallel_map<'a, T: Send>(
    batch: &'a [AudioInput],
    first: usize,
    threads: usize,
    f: &(dyn Fn(&'a AudioInput, usize) -> Result<T> + Sync),
) -> Vec<Result<T>> {
    crate::pool::map_in_order(batch, threads, |k, input| f(input, first + k))
        .into_iter()
        .map(|r| r.unwrap_or_else(|()| Err(Error::Internal("decode thread panicked".into()))))
        .collect()
}

/// `maxDuration` is a positive number of seconds.
pub(crate) fn check_max_duration(seconds: f64) -> Result<()> {
    if seconds > 0.0 && seconds.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid("maxDuration", format!("must be a positive number of seconds, got {seconds}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_before_resampling_keeps_the_kept_samples_identical() {
        let mel = MelConfig::default();
        for rate in [44_100u32, 22_050, 96_000, 16_000, 8_000] {
            // 20 s of a deterministic noisy signal: far longer than the 3 s kept.
            let mut seed = 7u64;
            let long: Vec<f32> = (0..rate as usize * 20)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.3 + (i as f32 * 0.01).sin() * 0.5
                })
                .collect();
            let full = fit_length(&resample(&long, rate, mel.sample_rate), mel.num_samples(), mel.align);
            assert_eq!(to_clip(&long, rate, &mel).as_ref(), full.as_slice(), "{rate} Hz");
        }
    }
}
