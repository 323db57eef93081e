//! Loading a trained model from a checkpoint folder and predicting labels with probabilities.

use super::checkpoint::{check_weights, load_meta, weights_values, ModelMeta};
use super::data::HostSet;
use super::engine::predict_logits;
use super::kinds::Net;
use crate::device::parse_device;
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

pub struct LoadedModel {
    pub meta: ModelMeta,
    model: Box<dyn Net>,
    vs: VarStore,
    device: Device,
    weights: std::path::PathBuf,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    /// One probability per label, in label order.
    pub probabilities: Vec<f32>,
}

pub fn load_model(dir: &Path, device: &str) -> Result<LoadedModel> {
    let (meta, weights) = load_meta(dir)?;
    // The JSON's architecture must account for the weights file's values before anything is built:
    // a tampered width fails here, not as an allocation.
    let (described, stored) = (meta.spec.kind.kind().parameter_count(&meta.spec), weights_values(&weights)?);
    if described != stored {
        return Err(Error::ModelNotFound {
            path: weights.clone(),
            reason: format!(
                "holds {stored} values, but the {} model its JSON describes has {described}: the checkpoint is damaged or its files are from different models",
                meta.spec.kind.name()
            ),
        });
    }
    let device = parse_device(device)?;
    let mut vs = VarStore::new(device);
    // Building draws initial weights (then replaced by the checkpoint's) from the global generator.
    let model = {
        let _turn = crate::generator_turn();
        meta.spec.kind.kind().build(&vs.root(), &meta.spec)
    };
    check_weights(&weights, &vs)?;
    vs.load(&weights)?;
    // A model with NaN or infinite weights would predict NaN probabilities: refuse it by file.
    for (name, t) in vs.variables() {
        if t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(Error::NonFinite(format!(
                "{}: weight `{name}` holds NaN or infinite values, so the model is unusable; retrain it",
                weights.display()
            )));
        }
    }
    Ok(LoadedModel { meta, model, vs, device, weights })
}

impl LoadedModel {
    /// Its weights by parameter path (`blocks.0.conv.weight`, …), as loaded.
    pub fn variables(&self) -> std::collections::HashMap<String, tch::Tensor> {
        self.vs.variables()
    }

    /// The weights file it was loaded from (`best.safetensors`).
    pub fn weights_file(&self) -> &Path {
        &self.weights
    }

    /// `inputs.labels` may be empty: only mel/tokens/embeddings are read.
    pub fn predict(&self, inputs: &HostSet) -> Result<Vec<Prediction>> {
        self.predict_unless_cancelled(inputs, &crate::control::CancelFlag::new())
    }

    /// [`LoadedModel::predict`], giving up with `Cancelled` while it waits for its job turn.
    pub fn predict_unless_cancelled(
        &self,
        inputs: &HostSet,
        cancel: &crate::control::CancelFlag,
    ) -> Result<Vec<Prediction>> {
        let with_labels = HostSet { labels: vec![0; inputs.rows()], ..inputs.clone() };
        let spec = &self.meta.spec;
        with_labels.validate("inputs", spec)?;
        // Features must be what the model was trained on (`[n, nMels, frames]` of its front end).
        let front_end = spec.inputs.mel.as_ref().and_then(|m| m.config.as_ref());
        if let (Some((_, [_, mels, frames])), Some(mel)) = (&inputs.mel, front_end) {
            let want = (mel.n_mels as usize, mel.frames.map(|f| f as usize));
            if *mels != want.0 || want.1.is_some_and(|f| f != *frames) {
                return Err(Error::invalid(
                    "inputs.mel",
                    format!(
                        "features are [n, {mels}, {frames}] but the model was trained on [n, {}, {}]: make them with the model's mel settings",
                        want.0,
                        want.1.map_or("any".into(), |f| f.to_string())
                    ),
                ));
            }
        }
        let set = with_labels.to_device(self.device, spec.mel_norm())?;
        // In the job turn with every core: the numbers do not depend on what else runs in the process.
        let _turn = crate::job_turn_unless_cancelled(cancel)?;
        crate::use_all_cores();
        let (logits, _) = predict_logits(self.model.as_ref(), &set)?;
        let probs: Vec<f32> =
            Vec::<f32>::try_from(logits.f_softmax(1, tch::Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
        let k = spec.labels.len();
        Ok(probs
            .chunks(k)
            .map(|p| {
                let index = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
                Prediction { label: spec.labels[index].clone(), index, probabilities: p.to_vec() }
            })
            .collect())
    }
}
