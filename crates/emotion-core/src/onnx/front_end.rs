//! The log-mel front end as ONNX nodes: the same steps as `audio::mel::MelExtractor::forward` (fit
//! the clip, centre padding, STFT with the same window, power, the same filterbank, decibels or
//! Whisper's log, frames kept), so an exported model reads mono samples at its sample rate.

use super::graph::{Attr, Graph};
use crate::audio::mel::{mel_filterbank, Align, MelConfig, PadMode};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The window `torch.stft` applies: a periodic Hann of `winLength`, centred in `nFft` zeros.
fn stft_window(config: &MelConfig) -> Result<Vec<f32>> {
    let win = Tensor::f_hann_window_periodic(config.win_length(), true, (Kind::Float, Device::Cpu))?;
    let mut window = vec![0.0f32; config.n_fft as usize];
    let left = ((config.n_fft - config.win_length()) / 2) as usize;
    let values = Vec::<f32>::try_from(win)?;
    window[left..left + values.len()].copy_from_slice(&values);
    Ok(window)
}

/// `[batch, n]` samples of any length → exactly `numSamples()` per clip: the first ones (`start`) or
/// the middle ones (`center`), zero-padded as `mel::fit_clip` pads.
fn fit_clip(g: &mut Graph, samples: &str, config: &MelConfig) -> String {
    let n = config.num_samples() as i64;
    let (axis1, n_end) = (g.ints(&[1]), g.ints(&[n]));
    match config.align {
        Align::Start => {
            let starts_at_zero = g.ints(&[0]);
            let pads = g.ints(&[0, 0, 0, n]);
            let padded = g.op("Pad", &[samples, &pads], vec![]);
            g.op("Slice", &[&padded, &starts_at_zero, &n_end, &axis1], vec![])
        }
        Align::Center => {
            // len = samples.shape[1]; left = max(n − len, 0) / 2 zeros; start = max(len − n, 0) / 2.
            let shape = g.op("Shape", &[samples], vec![]);
            let len = g.op("Gather", &[&shape, &axis1], vec![]);
            let zero = g.ints(&[0]);
            let two = g.ints(&[2]);
            let short = g.binary("Sub", &n_end, &len);
            let short = g.binary("Max", &short, &zero);
            let left = g.binary("Div", &short, &two);
            let long = g.binary("Sub", &len, &n_end);
            let long = g.binary("Max", &long, &zero);
            let start = g.binary("Div", &long, &two);
            let (zeros_before, n_after) = (g.ints(&[0]), g.ints(&[0, n]));
            let pads = g.op("Concat", &[&zeros_before, &left, &n_after], vec![("axis", Attr::Int(0))]);
            let padded = g.op("Pad", &[samples, &pads], vec![]);
            let end = g.binary("Add", &start, &n_end);
            g.op("Slice", &[&padded, &start, &end, &axis1], vec![])
        }
    }
}

/// `[batch, n]` samples → `[batch, nMels, frames]` features as the model saw them, including the
/// training set's normalisation `(x − mean) / std` when given.
pub fn log_mel(g: &mut Graph, samples: &str, config: &MelConfig, norm: Option<(f64, f64)>) -> Result<String> {
    config.validate()?;
    let clip = fit_clip(g, samples, config);
    let mut mel = power_mel(g, &clip, config)?;
    if config.to_db {
        mel = decibels(g, &mel, config.top_db);
    }
    if config.output_frames() < config.stft_frames() {
        let (start, end, axis) = (g.ints(&[0]), g.ints(&[config.output_frames()]), g.ints(&[2]));
        mel = g.op("Slice", &[&mel, &start, &end, &axis], vec![]);
    }
    if config.whisper_log {
        mel = whisper_log(g, &mel);
    }
    if let Some((mean, std)) = norm {
        let (mean, std) = (g.scalar(mean as f32), g.scalar(std as f32));
        let centred = g.binary("Sub", &mel, &mean);
        mel = g.binary("Div", &centred, &std);
    }
    Ok(mel)
}

/// `MelExtractor::power_mel`: `[batch, n]` samples (any n) → `[batch, nMels, frames]` power mel.
pub fn power_mel(g: &mut Graph, samples: &str, config: &MelConfig) -> Result<String> {
    let mut x = samples.to_string();
    if config.center {
        let mode = match config.pad_mode {
            PadMode::Reflect => "reflect",
            PadMode::Constant => "constant",
            PadMode::Replicate => "edge",
            PadMode::Circular => {
                return Err(Error::invalid(
                    "mel.padMode",
                    "circular padding has no ONNX opset-17 equivalent: this model cannot be exported",
                ))
            }
        };
        let p = config.n_fft / 2;
        let pads = g.ints(&[0, p, 0, p]);
        x = g.op("Pad", &[&x, &pads], vec![("mode", Attr::Str(mode))]);
    }
    // STFT wants [batch, length, 1] real signals; it returns [batch, frames, nFft/2 + 1, 2].
    let axis2 = g.ints(&[2]);
    let signal = g.op("Unsqueeze", &[&x, &axis2], vec![]);
    let step = g.int(config.hop_length);
    let window = stft_window(config)?;
    let window = g.floats("window", &[config.n_fft], &window);
    let length = g.int(config.n_fft);
    let spec = g.op("STFT", &[&signal, &step, &window, &length], vec![("onesided", Attr::Int(1))]);
    // re² + im²: torchaudio's |X|² up to rounding (within 1e-5 dB, as `fastPower`).
    let mut power = g.op("ReduceSumSquare", &[&spec], vec![("axes", Attr::Ints(vec![3])), ("keepdims", Attr::Int(0))]);
    if config.power != 2.0 {
        let exponent = g.scalar((config.power / 2.0) as f32);
        power = g.binary("Pow", &power, &exponent);
    }
    let fb = mel_filterbank(config)?;
    let fb = g.weight("filterbank", &fb)?;
    let mel = g.binary("MatMul", &power, &fb);
    Ok(g.op("Transpose", &[&mel], vec![("perm", Attr::Ints(vec![0, 2, 1]))]))
}

/// `log10(max(x, 1e-10))` of `[batch, a, b]` values.
fn log10(g: &mut Graph, x: &str) -> String {
    let floor = g.scalar(1e-10);
    let clamped = g.binary("Max", x, &floor);
    let ln = g.op("Log", &[&clamped], vec![]);
    let to_log10 = g.scalar(std::f32::consts::LOG10_E);
    g.binary("Mul", &ln, &to_log10)
}

/// Each clip's values floored at its own maximum − `below`.
fn floor_below_max(g: &mut Graph, x: &str, below: f64) -> String {
    let max = g.op("ReduceMax", &[x], vec![("axes", Attr::Ints(vec![1, 2])), ("keepdims", Attr::Int(1))]);
    let below = g.scalar(below as f32);
    let floor = g.binary("Sub", &max, &below);
    g.binary("Max", x, &floor)
}

/// `mel::power_to_db`: 10·log10, then each clip clamped to its own max − `top_db`.
fn decibels(g: &mut Graph, power: &str, top_db: Option<f64>) -> String {
    let log = log10(g, power);
    let ten = g.scalar(10.0);
    let db = g.binary("Mul", &log, &ten);
    match top_db {
        Some(top) => floor_below_max(g, &db, top),
        None => db,
    }
}

/// `mel::whisper_log`: log10, floored at the clip's max − 8, then `(x + 4) / 4`.
pub fn whisper_log(g: &mut Graph, power: &str) -> String {
    let log = log10(g, power);
    let floored = floor_below_max(g, &log, 8.0);
    let four = g.scalar(4.0);
    let shifted = g.binary("Add", &floored, &four);
    g.binary("Div", &shifted, &four)
}
