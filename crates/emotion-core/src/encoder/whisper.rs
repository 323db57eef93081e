//! Whisper's audio encoder (conv stem + pre-norm transformer) on libtorch, with the weights of a
//! CTranslate2 Whisper model or a Hugging Face one (`hf`), any size, and Whisper's own log-mel front end (16 kHz, 25 ms window, 10 ms hop,
//! Slaney mels, log10 clamped to 8 below the clip's maximum, scaled `(x + 4) / 4`).

#[path = "whisper_onnx.rs"]
mod onnx;

use super::ctranslate2::Ct2Model;
use crate::audio::mel::{whisper_log, MelConfig, MelExtractor, MelNorm, MelScale};
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const SAMPLE_RATE: u32 = 16_000;
pub const HOP: usize = 160;
/// Samples per encoder position: the second convolution has stride 2.
pub const SAMPLES_PER_POSITION: usize = 2 * HOP;
/// Whisper's window: 30 s, 3000 mel frames, 1500 positions.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Shortest clip with one full STFT window (25 ms).
pub const MIN_SAMPLES: usize = 400;

struct Layer {
    attn_norm: (Tensor, Tensor),
    qkv: (Tensor, Tensor),
    out: (Tensor, Tensor),
    ffn_norm: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

pub struct WhisperEncoder {
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    positions: Tensor,
    layers: Vec<Layer>,
    final_norm: (Tensor, Tensor),
    heads: i64,
    pub width: i64,
    pub n_mels: i64,
    mel: MelExtractor,
    device: Device,
    kind: Kind,
}

impl WhisperEncoder {
    /// Loads `model.bin` of a CTranslate2 Whisper model (any size: the shapes are read from it).
    pub fn load(model_bin: &Path, device: Device, kind: Kind) -> Result<WhisperEncoder> {
        let bytes = std::fs::read(model_bin).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::model_not_found(model_bin, "file not found"),
            _ => Error::io(model_bin, e),
        })?;
        Self::from_bytes(&bytes, model_bin, device, kind)
    }

    /// The encoder of the CTranslate2 Whisper model in `bytes` (read from `model_bin`, named in errors).
    pub fn from_bytes(bytes: &[u8], model_bin: &Path, device: Device, kind: Kind) -> Result<WhisperEncoder> {
        let model = Ct2Model::parse(bytes, model_bin, &|name| name.starts_with("encoder/"))?;
        Self::from_model(&model, model_bin, device, kind)
    }

    /// The encoder from variables in CTranslate2's names (read from `model_bin`, named in errors): a
    /// `model.bin`, or a Hugging Face checkpoint renamed by `hf::read`.
    pub fn from_model(model: &Ct2Model, model_bin: &Path, device: Device, kind: Kind) -> Result<WhisperEncoder> {
        // Damaged weights would make every clip's states "non-finite": name the file instead.
        let mut names: Vec<&String> = model.tensors.keys().collect();
        names.sort();
        for name in names {
            if model.tensors[name].f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
                return Err(Error::NonFinite(format!(
                    "{}: encoder weight {name} holds NaN or infinite values; the file is damaged: install it again",
                    model_bin.display()
                )));
            }
        }
        if model.spec != "WhisperSpec" {
            return Err(Error::model_not_found(model_bin, format!("a {} model, not Whisper", model.spec)));
        }
        let conv1_w = model
            .tensors
            .get("encoder/conv1/weight")
            .ok_or_else(|| Error::model_not_found(model_bin, "variable encoder/conv1/weight is missing"))?;
        let [width, n_mels, _] = conv1_w.size()[..] else {
            return Err(Error::model_not_found(model_bin, "encoder/conv1/weight is not rank 3"));
        };
        let heads = *model
            .scalars
            .get("encoder/num_heads")
            .ok_or_else(|| Error::model_not_found(model_bin, "encoder/num_heads is missing"))?;
        if heads < 1 || width % heads != 0 {
            return Err(Error::model_not_found(model_bin, format!("{heads} heads do not divide width {width}")));
        }
        let n_layers =
            (0..).take_while(|i| model.tensors.contains_key(&format!("encoder/layer_{i}/ffn/linear_0/weight"))).count();
        if n_layers == 0 {
            return Err(Error::model_not_found(model_bin, "no encoder layers"));
        }
        let put = |t: Tensor| -> Result<Tensor> { Ok(t.f_to_device(device)?.f_to_kind(kind)?) };
        let get = |name: &str, shape: &[i64]| -> Result<Tensor> { put(model.get(name, shape, model_bin)?) };
        let norm = |prefix: &str| -> Result<(Tensor, Tensor)> {
            Ok((get(&format!("{prefix}/gamma"), &[width])?, get(&format!("{prefix}/beta"), &[width])?))
        };
        let linear = |prefix: &str, out: i64, inp: i64| -> Result<(Tensor, Tensor)> {
            Ok((get(&format!("{prefix}/weight"), &[out, inp])?, get(&format!("{prefix}/bias"), &[out])?))
        };
        let ffn_width = model.tensors["encoder/layer_0/ffn/linear_0/weight"].size()[0];
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = format!("encoder/layer_{i}");
            layers.push(Layer {
                attn_norm: norm(&format!("{p}/self_attention/layer_norm"))?,
                qkv: linear(&format!("{p}/self_attention/linear_0"), 3 * width, width)?,
                out: linear(&format!("{p}/self_attention/linear_1"), width, width)?,
                ffn_norm: norm(&format!("{p}/ffn/layer_norm"))?,
                fc1: linear(&format!("{p}/ffn/linear_0"), ffn_width, width)?,
                fc2: linear(&format!("{p}/ffn/linear_1"), width, ffn_width)?,
            });
        }
        let positions = model.tensors.get("encoder/position_encodings/encodings").ok_or_else(|| {
            Error::model_not_found(model_bin, "variable encoder/position_encodings/encodings is missing")
        })?;
        if positions.size() != [(WINDOW_SAMPLES / SAMPLES_PER_POSITION) as i64, width] {
            return Err(Error::model_not_found(model_bin, format!("position table has shape {:?}", positions.size())));
        }
        let mel = MelExtractor::new(whisper_mel_config(n_mels), device)?;
        Ok(WhisperEncoder {
            conv1: (put(conv1_w.shallow_clone())?, get("encoder/conv1/bias", &[width])?),
            conv2: (get("encoder/conv2/weight", &[width, width, 3])?, get("encoder/conv2/bias", &[width])?),
            positions: put(positions.shallow_clone())?,
            layers,
            final_norm: norm("encoder/layer_norm")?,
            heads,
            width,
            n_mels,
            mel,
            device,
            kind,
        })
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Attention heads per layer.
    pub fn heads(&self) -> i64 {
        self.heads
    }

    /// Whisper log-mel `[1, n_mels, floor(n / 160)]` of 16 kHz samples.
    pub fn log_mel(&self, samples: &[f32]) -> Result<Tensor> {
        let wave = Tensor::f_from_slice(samples)?.f_unsqueeze(0)?;
        let power = self.mel.power_mel(&wave)?;
        let frames = power.size()[2] - 1;
        whisper_log(&power.f_narrow(2, 0, frames)?)
    }

    /// Hidden states as Hugging Face's `output_hidden_states` gives them: the input of each layer,
    /// then the last layer's output after the final layer norm; each `[B, positions, width]`, float32.
    pub fn hidden_states(&self, log_mel: &Tensor) -> Result<Vec<Tensor>> {
        let x = log_mel.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let x = x.f_conv1d(&self.conv1.0, Some(&self.conv1.1), [1], [1], [1], 1)?.f_gelu("none")?;
        let x = x.f_conv1d(&self.conv2.0, Some(&self.conv2.1), [2], [1], [1], 1)?.f_gelu("none")?;
        let x = x.f_transpose(1, 2)?;
        let (batch, positions) = (x.size()[0], x.size()[1]);
        if positions > self.positions.size()[0] {
            return Err(Error::invalid("encoder input", format!("{positions} positions exceed Whisper's 1500 (30 s)")));
        }
        let mut x = x.f_add(&self.positions.f_narrow(0, 0, positions)?)?;
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let head_dim = self.width / self.heads;
        for layer in &self.layers {
            states.push(x.shallow_clone());
            let h = x.f_layer_norm([self.width], Some(&layer.attn_norm.0), Some(&layer.attn_norm.1), 1e-5, true)?;
            let qkv = h.f_linear(&layer.qkv.0, Some(&layer.qkv.1))?;
            let split = |i: i64| -> Result<Tensor> {
                Ok(qkv
                    .f_narrow(2, i * self.width, self.width)?
                    .f_reshape([batch, positions, self.heads, head_dim])?
                    .f_transpose(1, 2)?)
            };
            let attn = Tensor::f_scaled_dot_product_attention(
                &split(0)?,
                &split(1)?,
                &split(2)?,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([batch, positions, self.width])?;
            x = x.f_add(&attn.f_linear(&layer.out.0, Some(&layer.out.1))?)?;
            let h = x.f_layer_norm([self.width], Some(&layer.ffn_norm.0), Some(&layer.ffn_norm.1), 1e-5, true)?;
            let h = h
                .f_linear(&layer.fc1.0, Some(&layer.fc1.1))?
                .f_gelu("none")?
                .f_linear(&layer.fc2.0, Some(&layer.fc2.1))?;
            x = x.f_add(&h)?;
        }
        states.push(x.f_layer_norm([self.width], Some(&self.final_norm.0), Some(&self.final_norm.1), 1e-5, true)?);
        states.into_iter().map(|s| Ok(s.f_to_kind(Kind::Float)?)).collect()
    }
}

/// Whisper's STFT and filterbank in this library's mel front end (power spectrum; the log and
/// scaling are [`WhisperEncoder::log_mel`]'s).
pub fn whisper_mel_config(n_mels: i64) -> MelConfig {
    MelConfig {
        sample_rate: SAMPLE_RATE,
        n_fft: 400,
        win_length: None,
        hop_length: HOP as i64,
        f_min: 0.0,
        f_max: Some(8000.0),
        n_mels,
        power: 2.0,
        center: true,
        norm: Some(MelNorm::Slaney),
        mel_scale: MelScale::Slaney,
        to_db: false,
        top_db: None,
        duration_seconds: 30.0,
        frames: None,
        ..MelConfig::default()
    }
}
