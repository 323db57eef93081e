//! What each preset fills in, in one place for both languages: the training settings the core resolves
//! (epochs, label smoothing, schedule) and the pipeline's choices (models, speed perturbation, the
//! speaker adversary). TypeScript reads the same table as `PRESETS` (generated from
//! `schema/presets.json`, which `tests/schema.rs` keeps equal to [`presets_json`]).

use super::config::{LrSchedule, Preset};
use super::spec::{Input, ModelKind};
use crate::error::{Error, Result};
use serde::Serialize;

/// The settings a preset gives where the options leave them unset.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresetDefaults {
    /// The models `trainPipeline` trains when `models` is not given.
    pub models: Vec<ModelKind>,
    /// The encoder model's extra training copies at these speeds.
    pub speed_perturb: Vec<f64>,
    /// The weight of the encoder head's speaker adversary (0: none). Needs at least 2 training speakers.
    pub speaker_adversary: f64,
    /// Epochs of the models on mel and tokens (audio, text, fusion).
    pub epochs: u32,
    /// Epochs of the models on encoder states (encoder, probe): small heads that keep improving.
    pub encoder_epochs: u32,
    pub label_smoothing: f64,
    pub lr_schedule: LrSchedule,
}

impl PresetDefaults {
    /// Epochs of a model of `kind`: `encoderEpochs` for models on encoder states, else `epochs`.
    pub fn epochs_for(&self, kind: ModelKind) -> u32 {
        if kind.uses(Input::Embedding) {
            self.encoder_epochs
        } else {
            self.epochs
        }
    }
}

impl Preset {
    pub fn defaults(self) -> PresetDefaults {
        match self {
            // Chosen on the validation speakers of the speaker folds (docs/RESULTS.md).
            Preset::Recommended => PresetDefaults {
                models: vec![ModelKind::Encoder],
                speed_perturb: vec![0.9, 1.1],
                speaker_adversary: 0.3,
                epochs: 50,
                encoder_epochs: 100,
                label_smoothing: 0.1,
                lr_schedule: LrSchedule::Cosine,
            },
            // The published recipe as it was.
            Preset::Reference => PresetDefaults {
                models: vec![ModelKind::Audio, ModelKind::Text, ModelKind::Fusion],
                speed_perturb: vec![],
                speaker_adversary: 0.0,
                epochs: 50,
                encoder_epochs: 50,
                label_smoothing: 0.0,
                lr_schedule: LrSchedule::Constant,
            },
        }
    }
}

/// Both presets' defaults as pretty JSON (`{ "recommended": …, "reference": … }`).
pub fn presets_json() -> String {
    let table = serde_json::json!({
        "recommended": Preset::Recommended.defaults(),
        "reference": Preset::Reference.defaults(),
    });
    let mut text = serde_json::to_string_pretty(&table).expect("presets serialise");
    text.push('\n');
    text
}

/// The speaker adversary's weight for a training part with `speakers` distinct known speakers: as
/// `set`, else the preset's. The preset's weight is switched off (`off: true`) below 2 speakers; a
/// weight the user set is refused there, by the option's name.
pub fn speaker_adversary(preset: Preset, set: Option<f64>, speakers: usize) -> Result<(f64, bool)> {
    let weight = set.unwrap_or(preset.defaults().speaker_adversary);
    if weight == 0.0 || speakers >= 2 {
        return Ok((weight, false));
    }
    match set {
        Some(w) => Err(Error::invalid(
            "train.encoder.encoderHead.speakerAdversary",
            format!(
                "is {w}, but the speaker adversary needs at least 2 training speakers and the training clips name {speakers} speaker(s); \
                 set it to 0 (--train '{{\"encoder\":{{\"encoderHead\":{{\"speakerAdversary\":0}}}}}}')"
            ),
        )),
        None => Ok((0.0, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_adversary_switches_off_below_two_speakers_and_a_set_one_is_refused() {
        assert_eq!(speaker_adversary(Preset::Recommended, None, 4).unwrap(), (0.3, false));
        assert_eq!(speaker_adversary(Preset::Recommended, None, 1).unwrap(), (0.0, true));
        assert_eq!(speaker_adversary(Preset::Reference, None, 0).unwrap(), (0.0, false));
        assert_eq!(speaker_adversary(Preset::Reference, Some(0.5), 3).unwrap(), (0.5, false));
        let err = speaker_adversary(Preset::Recommended, Some(0.5), 1).unwrap_err().to_string();
        assert!(err.contains("train.encoder.encoderHead.speakerAdversary") && err.contains("is 0.5"), "{err}");
    }
}
