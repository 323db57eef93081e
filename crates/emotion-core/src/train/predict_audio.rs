//! Prediction from audio: clips (files or samples) through the model's own front end (its mel
//! settings, or its encoder, checked by SHA-256), its normalisation (per speaker with calibration
//! clips when it was trained so), then the model. Models that read transcripts take tokens instead
//! (`LoadedModel::predict`): transcription is the caller's (transformers.js in TypeScript).

use super::data::HostSet;
use super::kinds::Input;
use super::predict::{LoadedModel, Prediction};
use super::spec::EncoderIdentity;
use crate::audio::features::{extract_mel, AudioInput, ExtractOptions};
use crate::control::CancelFlag;
use crate::encoder::speaker_norm::{speaker_stats, standardise};
use crate::encoder::{extract_embeddings, EmbedOptions, Embeddings};
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// How `predictFiles` featurises clips for a loaded model.
pub struct PredictAudioOptions {
    /// The folder of the encoder the model was trained on (models on encoder states). The TypeScript
    /// API resolves an installed encoder's name itself; a model trained on a folder needs it again.
    pub encoder_dir: Option<PathBuf>,
    /// Where features are computed: `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// CPU threads decoding and resampling; 0 = all cores.
    pub decode_threads: usize,
}

impl Default for PredictAudioOptions {
    fn default() -> Self {
        PredictAudioOptions { encoder_dir: None, device: "cpu".into(), decode_threads: 0 }
    }
}

impl LoadedModel {
    /// One prediction per clip of `inputs`, in order (a clip that cannot be decoded fails the call,
    /// naming it). `calibration`: unlabelled clips of the one speaker of `inputs`, needed by a model
    /// trained with per-speaker normalisation.
    pub fn predict_audio(
        &self,
        inputs: &[AudioInput],
        calibration: &[AudioInput],
        options: &PredictAudioOptions,
        cancel: &CancelFlag,
    ) -> Result<Vec<Prediction>> {
        let spec = &self.meta.spec;
        if spec.kind.uses(Input::Tokens) {
            return Err(Error::invalid(
                "model",
                format!(
                    "the {} model reads transcripts: transcribe the clips and predict from tokens (predictFeatures)",
                    spec.kind.name()
                ),
            ));
        }
        let rows = match (&spec.inputs.mel, &spec.inputs.embedding) {
            (Some(mel), _) => {
                let extract = ExtractOptions {
                    mel: mel.config.clone().unwrap_or_default(),
                    device: options.device.clone(),
                    strict: true,
                    decode_threads: options.decode_threads,
                    ..ExtractOptions::default()
                };
                let f = extract_mel(inputs, &extract, cancel, &mut |_| {})?;
                HostSet { mel: Some((f.data, f.shape)), ..HostSet::default() }
            }
            (None, Some(e)) => {
                let identity = e.encoder.as_ref().ok_or_else(|| {
                    Error::invalid(
                        "model",
                        "was trained on encoder states without naming their encoder (encoderSource): predict from states (predictFeatures)",
                    )
                })?;
                let mut states = self.encode(inputs, identity, options, cancel)?;
                if identity.speaker_norm {
                    self.normalise_speaker(&mut states, calibration, identity, options, cancel)?;
                }
                HostSet { embedding: Some((states.data, states.shape)), ..HostSet::default() }
            }
            (None, None) => return Err(Error::Internal(format!("a {} spec without audio inputs", spec.kind.name()))),
        };
        self.predict_unless_cancelled(&rows, cancel)
    }

    /// The pooled states of `inputs` from the model's encoder, refused when the encoder file differs.
    fn encode(
        &self,
        inputs: &[AudioInput],
        identity: &EncoderIdentity,
        options: &PredictAudioOptions,
        cancel: &CancelFlag,
    ) -> Result<Embeddings> {
        let Some(dir) = &options.encoder_dir else {
            return Err(Error::invalid(
                "encoder",
                format!(
                    "the model was trained on states of the encoder folder '{}': give that folder (the encoder option)",
                    identity.name
                ),
            ));
        };
        // The encoder's identity first: a different encoder is refused before any clip is encoded.
        let sha256 = crate::encoder::weights_sha256(dir)?;
        if sha256 != identity.sha256 {
            return Err(Error::model_not_found(
                dir,
                format!(
                    "the model was trained on states of the {} encoder with SHA-256 {}, but the weights in this folder have {sha256}: give the same encoder",
                    identity.name, identity.sha256
                ),
            ));
        }
        if let (Some(recorded), Some(found)) = (identity.heads, crate::encoder::hf::config_heads(dir)?) {
            crate::encoder::check_heads(dir, recorded, found)?;
        }
        let embed = EmbedOptions {
            model_dir: dir.clone(),
            input: identity.input,
            pooling: identity.pooling,
            precision: identity.precision,
            device: options.device.clone(),
            strict: true,
            decode_threads: options.decode_threads,
            ..EmbedOptions::default()
        };
        extract_embeddings(inputs, &embed, cancel, &mut |_| {})
    }

    /// Standardises `states` with the statistics of the speaker's `calibration` clips.
    fn normalise_speaker(
        &self,
        states: &mut Embeddings,
        calibration: &[AudioInput],
        identity: &EncoderIdentity,
        options: &PredictAudioOptions,
        cancel: &CancelFlag,
    ) -> Result<()> {
        if calibration.is_empty() {
            return Err(Error::invalid(
                "calibration",
                "this model standardises encoder states per speaker (speakerNorm): give unlabelled clips of the speaker of these files (they may be the files themselves)",
            ));
        }
        let reference = self.encode(calibration, identity, options, cancel)?;
        let per = reference.shape[1] * reference.shape[2];
        let stats = speaker_stats(reference.data.chunks(per.max(1)), per);
        for row in states.data.chunks_mut(per.max(1)) {
            standardise(row, &stats);
        }
        Ok(())
    }
}
