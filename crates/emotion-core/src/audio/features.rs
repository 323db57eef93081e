//! Batch feature extraction: decode and resample on CPU threads, log-mel in batches on the device.

use super::decode::decode_file;
use super::mel::{fit_length, MelConfig, MelExtractor};
use super::resample::resample;
use crate::control::{CancelFlag, Progress};
use crate::device::{device_name, parse_device};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Tensor;

/// One clip to featurise: a file, or samples already in memory.
#[derive(Debug, Clone)]
pub enum AudioInput {
    Path(PathBuf),
    Samples { samples: Vec<f32>, sample_rate: u32 },
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { mel: MelConfig::default(), device: "auto".into(), batch_size: 64, strict: false, decode_threads: 0 }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedInput {
    pub index: usize,
    pub path: String,
    pub code: &'static str,
    pub message: String,
}

/// `data` is row-major `[shape[0], n_mels, frames]`; `indices[i]` is the input that row `i` came from.
#[derive(Debug, Clone)]
pub struct MelFeatures {
    pub data: Vec<f32>,
    pub shape: [usize; 3],
    pub indices: Vec<usize>,
    pub failed: Vec<FailedInput>,
    pub device: String,
}

/// Decodes (or takes) one clip, resamples it to `mel.sample_rate` and fits it to the clip length.
pub fn load_waveform(input: &AudioInput, index: usize, mel: &MelConfig) -> Result<Vec<f32>> {
    let (samples, rate) = match input {
        AudioInput::Path(path) => {
            let audio = decode_file(path)?;
            (audio.samples, audio.sample_rate)
        }
        AudioInput::Samples { samples, sample_rate } => {
            let label = input.label(index);
            if samples.is_empty() {
                return Err(Error::decode(label, "no audio samples (zero-length audio)"));
            }
            if *sample_rate < 1000 {
                return Err(Error::invalid(format!("inputs[{index}].sampleRate"), format!("must be ≥ 1000 Hz, got {sample_rate}")));
            }
            if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
                return Err(Error::decode(label, format!("non-finite sample (NaN or infinity) at frame {i}")));
            }
            (samples.clone(), *sample_rate)
        }
    };
    let resampled = resample(&samples, rate, mel.sample_rate);
    Ok(fit_length(&resampled, mel.num_samples(), mel.align))
}

pub fn extract_mel(
    inputs: &[AudioInput],
    options: &ExtractOptions,
    cancel: &CancelFlag,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<MelFeatures> {
    if options.batch_size == 0 {
        return Err(Error::invalid("batchSize", "must be ≥ 1"));
    }
    let device = parse_device(&options.device)?;
    let extractor = MelExtractor::new(options.mel.clone(), device)?;
    let (n_mels, frames) = (options.mel.n_mels as usize, options.mel.output_frames() as usize);
    let threads = if options.decode_threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        options.decode_threads
    };

    let mut out = MelFeatures { data: Vec::new(), shape: [0, n_mels, frames], indices: Vec::new(), failed: Vec::new(), device: device_name(device) };
    out.data.reserve(inputs.len() * n_mels * frames);
    let total = inputs.len();
    for (batch_no, batch) in inputs.chunks(options.batch_size).enumerate() {
        cancel.check()?;
        let first = batch_no * options.batch_size;
        let waves = load_parallel(batch, first, &options.mel, threads);
        let mut rows = Vec::with_capacity(batch.len());
        for (offset, wave) in waves.into_iter().enumerate() {
            let index = first + offset;
            match wave {
                Ok(w) => rows.push((index, w)),
                Err(e) if options.strict => return Err(e),
                Err(e) => out.failed.push(FailedInput { index, path: batch[offset].label(index), code: e.code(), message: e.to_string() }),
            }
        }
        if !rows.is_empty() {
            let flat: Vec<f32> = rows.iter().flat_map(|(_, w)| w.iter().copied()).collect();
            let waves = Tensor::f_from_slice(&flat)?.f_reshape([rows.len() as i64, options.mel.num_samples() as i64])?;
            let mel = extractor.forward(&waves)?.f_to_device(tch::Device::Cpu)?;
            let mel_flat: Vec<f32> = Vec::<f32>::try_from(mel.f_flatten(0, -1)?).map_err(Error::from)?;
            if let Some(i) = mel_flat.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!("mel output of input {} is not finite", rows[i / (n_mels * frames)].0)));
            }
            out.data.extend_from_slice(&mel_flat);
            out.indices.extend(rows.iter().map(|(i, _)| *i));
        }
        on_progress(Progress { stage: "mel", done: (first + batch.len()).min(total), total, failed: out.failed.len() });
    }
    out.shape[0] = out.indices.len();
    Ok(out)
}

fn load_parallel(batch: &[AudioInput], first: usize, mel: &MelConfig, threads: usize) -> Vec<Result<Vec<f32>>> {
    let chunk = batch.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .enumerate()
            .map(|(c, items)| {
                scope.spawn(move || {
                    items
                        .iter()
                        .enumerate()
                        .map(|(k, input)| load_waveform(input, first + c * chunk + k, mel))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(batch.chunks(chunk))
            .flat_map(|(h, items)| {
                h.join().unwrap_or_else(|_| items.iter().map(|_| Err(Error::Internal("decode thread panicked".into()))).collect())
            })
            .collect()
    })
}
