//! The JSON Schema of the types that cross into TypeScript: options (what TypeScript sends) and
//! results (what the core returns and emits). `scripts/gen-types.mjs` turns the committed copies
//! (`crates/emotion-core/schema/*.schema.json`, kept current by `tests/schema.rs`) into
//! `src/generated/*.ts`, so each type, its doc comments and defaults are written once, here in Rust.

use schemars::JsonSchema;

/// The root of the schema: every option type, reachable through `$defs`.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    pub mel: crate::audio::MelConfig,
    pub train: crate::train::config::TrainConfig,
    pub extract: crate::audio::features::ExtractOptions,
    pub index: crate::dataset::index::IndexOptions,
    pub split: crate::dataset::split::SplitOptions,
    pub embed: crate::encoder::EmbedOptions,
    pub predict_audio: crate::train::predict_audio::PredictAudioOptions,
    pub infer: crate::infer::InferOptions,
    pub export: crate::export::ExportOptions,
    pub world: crate::distributed::WorldOptions,
}

/// The root of the results' schema: what the core returns and emits, as serialised.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    pub train_result: crate::train::engine::TrainResult,
    pub train_event: crate::train::engine::TrainEvent,
    pub model_meta: crate::train::checkpoint::ModelMeta,
    pub prediction: crate::train::predict::Prediction,
    pub dataset_index: crate::dataset::index::DatasetIndex,
    pub split: crate::dataset::split::Split,
    pub progress: crate::control::Progress,
    pub mel_features: crate::audio::features::MelFeatures,
    pub embeddings: crate::encoder::Embeddings,
    pub device_info: crate::device::DeviceInfo,
    pub device_mel_timing: crate::audio::mel::DeviceMelTiming,
    pub graph_self_test: crate::cuda_graph::GraphSelfTest,
    pub group_self_test: crate::distributed::self_test::GroupSelfTest,
    pub error_code: crate::error::ErrorCode,
    pub predict_row: crate::infer::PredictRow,
    pub timeline: crate::infer::Timeline,
    pub segment: crate::infer::Segment,
    pub onnx_sidecar: crate::export::OnnxSidecar,
    pub asr_export: crate::encoder::whisper_asr::AsrExport,
}

fn pretty(schema: &schemars::Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serialises");
    text.push('\n');
    text
}

/// What each preset fills in (`train::preset`), as TypeScript's `PRESETS`.
pub fn presets_json() -> String {
    crate::train::preset::presets_json()
}

/// The inputs each model kind reads (`train::kinds`), as TypeScript's `MODEL_INPUTS`.
pub fn kinds_json() -> String {
    crate::train::kinds::kinds_json()
}

/// The options' schema (as deserialised: fields with defaults are optional), pretty-printed.
pub fn options_schema_json() -> String {
    pretty(&schemars::schema_for!(Options))
}

/// The results' schema (as serialised: every field is present), pretty-printed.
pub fn results_schema_json() -> String {
    pretty(
        &schemars::generate::SchemaSettings::default()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<Results>(),
    )
}
