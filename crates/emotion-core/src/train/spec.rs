//! A model's description: what it is (kind, labels, its own architecture) and what it reads (mel made
//! with which front end and normalised how, tokens of which vocabulary, states of which encoder). It is
//! what a checkpoint stores and all that prediction needs; the core derives it from the options and
//! the training data (`settings::derive_spec`), so no caller fills in shapes or counts; `kinds::check_spec`
//! checks one from either source.

use crate::audio::MelConfig;
use crate::encoder::{EncoderInput, EncoderPrecision, Pooling};
use crate::models::{AudioCnnConfig, EncoderHeadConfig, FusionConfig, ProbeConfig, TextLstmConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Which model: the three reference models, the head on a frozen speech encoder, or a linear probe.
pub enum ModelKind {
    Audio,
    Text,
    Fusion,
    /// Pooled Whisper-encoder states (`extractEmbeddings`) → layer-weighted sum → dense head.
    Encoder,
    /// Pooled encoder states → layer-weighted sum → one linear layer: the standard evaluation of a
    /// frozen self-supervised encoder (SUPERB), the baseline the `encoder` model's head is measured
    /// against.
    Probe,
}

/// Every kind, in the order the documentation lists them.
pub const MODEL_KINDS: [ModelKind; 5] =
    [ModelKind::Audio, ModelKind::Text, ModelKind::Fusion, ModelKind::Encoder, ModelKind::Probe];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// One input a model reads: log-mel `[n, nMels, frames]`, token ids `[n, maxLen]`, or pooled encoder
/// states `[n, layers, width]`.
pub enum Input {
    Mel,
    Tokens,
    Embedding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A model's own architecture, the part of its options that shapes its weights.
pub enum Architecture {
    Audio(AudioCnnConfig),
    Text(TextLstmConfig),
    Fusion { audio: AudioCnnConfig, text: TextLstmConfig, fusion: FusionConfig },
    Encoder(EncoderHeadConfig),
    Probe(ProbeConfig),
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Audio => "audio",
            ModelKind::Text => "text",
            ModelKind::Fusion => "fusion",
            ModelKind::Encoder => "encoder",
            ModelKind::Probe => "probe",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// Class names; the model's outputs in this order.
    pub labels: Vec<String>,
    pub architecture: Architecture,
    pub inputs: ModelInputs,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// The inputs the model reads; the others are `null`.
pub struct ModelInputs {
    pub mel: Option<MelInput>,
    pub tokens: Option<TokenInput>,
    pub embedding: Option<EmbeddingInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Log-mel input: the front end it was made with, and the normalisation of the training set.
pub struct MelInput {
    /// The front end's settings (`null` when `train()` was given features without saying how they were
    /// made: then `predictFiles` uses the default front end).
    pub config: Option<MelConfig>,
    pub mean: f64,
    pub std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Token-id input.
pub struct TokenInput {
    /// Ids are `0..vocabSize`, `<pad>` = 0.
    pub vocab_size: i64,
    /// The tokens (index = id), when the caller gave them.
    pub vocabulary: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Pooled encoder states `[layers, width]` per clip.
pub struct EmbeddingInput {
    pub layers: i64,
    pub width: i64,
    /// Row groups (1 for mean pooling, 2 for mean and deviation), each with its own layer weights.
    pub groups: i64,
    /// The encoder that made them, when known (so `predictFiles` encodes new clips the same way).
    pub encoder: Option<EncoderIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Where an encoder comes from.
pub enum EncoderLocation {
    /// Installed by name (`install-models --encoder NAME`).
    Installed,
    /// A Hugging Face Hub repository at a commit.
    Hub,
    /// A folder the user gave; only its name is kept (a model folder moves between machines), so
    /// predicting needs the folder again (`encoder` option), checked by its SHA-256.
    Folder,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Which encoder made a model's states and how: never an absolute path.
pub struct EncoderIdentity {
    pub source: EncoderLocation,
    /// The installed encoder's name, `repo@commit` on the Hub, or the folder's own name.
    pub name: String,
    /// SHA-256 of the encoder's `model.bin`.
    pub sha256: String,
    pub input: EncoderInput,
    pub pooling: Pooling,
    /// The precision the training states were computed in (resolved, never `auto`).
    pub precision: EncoderPrecision,
    /// The states were standardised per speaker: predicting needs unlabelled clips of each speaker
    /// (`calibration`) to standardise theirs the same way.
    pub speaker_norm: bool,
    /// The encoder's attention heads, checked when predicting: a Hugging Face folder's `config.json`
    /// sets them apart from the weights `sha256` covers (absent in models saved before 0.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<i64>,
}

impl ModelSpec {
    /// `[layers, width]` of the embedding rows (`[0, 0]` for models without them).
    pub fn embedding_shape(&self) -> [usize; 2] {
        self.inputs.embedding.as_ref().map_or([0, 0], |e| [e.layers.max(0) as usize, e.width.max(0) as usize])
    }

    /// Token ids the model takes (`0` for models without tokens).
    pub fn vocab_size(&self) -> i64 {
        self.inputs.tokens.as_ref().map_or(0, |t| t.vocab_size)
    }

    /// The mel normalisation `(mean, std)` (identity for models without mel).
    pub fn mel_norm(&self) -> (f64, f64) {
        self.inputs.mel.as_ref().map_or((0.0, 1.0), |m| (m.mean, m.std))
    }
}
