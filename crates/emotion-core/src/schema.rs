//! The JSON Schema of the option types that cross into TypeScript. `scripts/gen-types.mjs` turns the
//! committed copy (`crates/emotion-core/schema/options.schema.json`, kept current by the test in
//! `tests/schema.rs`) into `src/generated/options.ts`, so each option, its doc comment and its default
//! are written once, here in Rust.

use schemars::JsonSchema;
use serde::Serialize;

/// The root of the schema: every option type, reachable through `$defs`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    pub mel: crate::audio::MelConfig,
    pub train: crate::train::config::TrainConfig,
}

/// The schema as pretty-printed JSON, ending in a newline.
pub fn options_schema_json() -> String {
    let schema = schemars::schema_for!(Options);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}
