//! Training inputs: log-mel features, token ids, encoder embeddings and labels, kept resident on the
//! training device.

use super::spec::ModelSpec;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// One split's inputs as flat host buffers (from JS or from the feature extractor).
#[derive(Debug, Clone, Default)]
pub struct HostSet {
    /// Row-major `[n, n_mels, frames]`.
    pub mel: Option<(Vec<f32>, [usize; 3])>,
    /// Row-major `[n, max_len]` token ids.
    pub tokens: Option<(Vec<i64>, [usize; 2])>,
    /// Row-major `[n, layers, width]` pooled encoder states.
    pub embedding: Option<(Vec<f32>, [usize; 3])>,
    pub labels: Vec<i64>,
    /// The speaker of each row, `0..speakers`: what `encoderHead.speakerAdversary` trains the head to
    /// be blind to. Read only by that option.
    pub speaker_ids: Option<Vec<i64>>,
}

/// One micro-batch's inputs, gathered on the device.
pub struct Batch {
    pub mel: Option<Tensor>,
    pub tokens: Option<Tensor>,
    pub embedding: Option<Tensor>,
    pub labels: Tensor,
    pub speaker_ids: Option<Tensor>,
}

/// The same on a device. Batches are index gathers on the device: no host round trip per step.
pub struct DeviceSet {
    pub mel: Option<Tensor>,
    pub tokens: Option<Tensor>,
    pub embedding: Option<Tensor>,
    pub labels: Tensor,
    pub speaker_ids: Option<Tensor>,
    pub len: usize,
}

impl HostSet {
    /// Rows in the set: its labels, or (for prediction inputs without labels) its first input's rows.
    pub fn rows(&self) -> usize {
        let of = |shape: Option<usize>| shape.unwrap_or(0);
        self.labels
            .len()
            .max(of(self.mel.as_ref().map(|m| m.1[0])))
            .max(of(self.tokens.as_ref().map(|t| t.1[0])))
            .max(of(self.embedding.as_ref().map(|e| e.1[0])))
    }

    /// Checks shapes, label range and finiteness against the model `spec`, naming the set (`train`,
    /// `val`, `test`) and row.
    pub fn validate(&self, name: &str, spec: &ModelSpec) -> Result<()> {
        let (classes, vocab, embedding) = (spec.labels.len(), spec.vocab_size(), spec.embedding_shape());
        // The spec describes exactly the inputs its kind reads (`kinds::check_spec`).
        let (needs_mel, needs_tokens) = (spec.inputs.mel.is_some(), spec.inputs.tokens.is_some());
        let n = self.labels.len();
        if n == 0 {
            return Err(Error::invalid(name, "has no examples"));
        }
        if let Some(i) = self.labels.iter().position(|&l| l < 0 || l as usize >= classes) {
            return Err(Error::invalid(
                format!("{name}.labels[{i}]"),
                format!("{} is not a class id in 0..{classes}", self.labels[i]),
            ));
        }
        match (&self.mel, needs_mel) {
            (None, true) => return Err(Error::invalid(format!("{name}.mel"), "required by this model")),
            (Some((data, shape)), _) => {
                if shape[0] != n || data.len() != shape.iter().product::<usize>() {
                    let rows = if shape[0] != n {
                        " (one label per row: extractMel leaves out inputs it cannot decode, so take the labels by its `indices`)"
                    } else {
                        ""
                    };
                    return Err(Error::invalid(
                        format!("{name}.mel"),
                        format!("shape {shape:?} does not fit {} values and {n} labels{rows}", data.len()),
                    ));
                }
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    let row = i / (shape[1] * shape[2]).max(1);
                    return Err(Error::NonFinite(format!("{name}.mel row {row} holds NaN or infinity")));
                }
            }
            _ => {}
        }
        match (&self.tokens, needs_tokens) {
            (None, true) => return Err(Error::invalid(format!("{name}.tokens"), "required by this model")),
            (Some((data, shape)), _) => {
                if shape[0] != n || data.len() != shape[0] * shape[1] {
                    return Err(Error::invalid(
                        format!("{name}.tokens"),
                        format!("shape {shape:?} does not fit {} values and {n} labels", data.len()),
                    ));
                }
                if let Some(i) = data.iter().position(|&t| t < 0 || t >= vocab) {
                    return Err(Error::invalid(
                        format!("{name}.tokens"),
                        format!("token id {} at row {} is outside the vocabulary (0..{vocab})", data[i], i / shape[1]),
                    ));
                }
            }
            _ => {}
        }
        match (&self.embedding, spec.inputs.embedding.is_some()) {
            (None, true) => return Err(Error::invalid(format!("{name}.embedding"), "required by this model")),
            (Some((data, shape)), true) => {
                if shape[0] != n || data.len() != shape.iter().product::<usize>() || shape[1..] != embedding {
                    return Err(Error::invalid(
                        format!("{name}.embedding"),
                        format!(
                            "shape {shape:?} ({} values) does not fit {n} labels × {embedding:?} (the model's inputLayers × inputWidth)",
                            data.len()
                        ),
                    ));
                }
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    let row = i / (shape[1] * shape[2]).max(1);
                    return Err(Error::NonFinite(format!("{name}.embedding row {row} holds NaN or infinity")));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks `speaker_ids` for a model that learns to be blind to them: one per row, each in
    /// `0..speakers`.
    pub fn validate_speaker_ids(&self, name: &str, speakers: i64) -> Result<()> {
        let Some(ids) = &self.speaker_ids else {
            return Err(Error::invalid(
                format!("{name}.speakerIds"),
                "encoderHead.speakerAdversary needs the speaker of each training row",
            ));
        };
        if ids.len() != self.labels.len() {
            return Err(Error::invalid(
                format!("{name}.speakerIds"),
                format!("has {} entries for {} rows", ids.len(), self.labels.len()),
            ));
        }
        if let Some(i) = ids.iter().position(|&x| x < 0 || x >= speakers) {
            return Err(Error::invalid(
                format!("{name}.speakerIds[{i}]"),
                format!("{} is not a speaker id in 0..{speakers} (encoderHead.speakers)", ids[i]),
            ));
        }
        Ok(())
    }

    /// Mean and standard deviation of all mel values (the input normalisation).
    pub fn mel_stats(&self) -> (f64, f64) {
        let Some((data, _)) = &self.mel else { return (0.0, 1.0) };
        let n = data.len().max(1) as f64;
        let mean = data.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = data.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt().max(1e-6))
    }

    /// Uploads to `device`, normalising mel with `(mean, std)`.
    pub fn to_device(&self, device: Device, norm: (f64, f64)) -> Result<DeviceSet> {
        let mel = match &self.mel {
            Some((data, s)) => Some(
                Tensor::f_from_slice(data)?
                    .f_reshape([s[0] as i64, s[1] as i64, s[2] as i64])?
                    .f_to_device(device)?
                    .f_sub_scalar(norm.0)?
                    .f_div_scalar(norm.1)?,
            ),
            None => None,
        };
        let tokens = match &self.tokens {
            Some((data, s)) => {
                Some(Tensor::f_from_slice(data)?.f_reshape([s[0] as i64, s[1] as i64])?.f_to_device(device)?)
            }
            None => None,
        };
        let embedding = match &self.embedding {
            Some((data, s)) => Some(
                Tensor::f_from_slice(data)?.f_reshape([s[0] as i64, s[1] as i64, s[2] as i64])?.f_to_device(device)?,
            ),
            None => None,
        };
        let labels = Tensor::f_from_slice(&self.labels)?.f_to_kind(Kind::Int64)?.f_to_device(device)?;
        let speaker_ids = match &self.speaker_ids {
            Some(ids) => Some(Tensor::f_from_slice(ids)?.f_to_device(device)?),
            None => None,
        };
        Ok(DeviceSet { mel, tokens, embedding, labels, speaker_ids, len: self.labels.len() })
    }
}

impl DeviceSet {
    /// Gathers rows `index` (an int64 tensor on the same device).
    pub fn batch(&self, index: &Tensor) -> Result<Batch> {
        let pick = |t: &Option<Tensor>| t.as_ref().map(|t| t.f_index_select(0, index)).transpose();
        Ok(Batch {
            mel: pick(&self.mel)?,
            tokens: pick(&self.tokens)?,
            embedding: pick(&self.embedding)?,
            labels: self.labels.f_index_select(0, index)?,
            speaker_ids: pick(&self.speaker_ids)?,
        })
    }
}
