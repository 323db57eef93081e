//! The committed JSON Schemas must be what the Rust types say. When a type changes on purpose,
//! regenerate them with `EMOTION_UPDATE_SCHEMA=1 node scripts/cargo.mjs test --release -p
//! emotion-core --test schema` (then `node scripts/gen-types.mjs` rewrites the TypeScript).

use std::path::Path;

fn check(file: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(file);
    if std::env::var_os("EMOTION_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run EMOTION_UPDATE_SCHEMA=1 node scripts/cargo.mjs test --release -p emotion-core --test schema, then node scripts/gen-types.mjs",
        path.display()
    );
}

#[test]
fn committed_options_schema_matches_the_rust_types() {
    check("options.schema.json", emotion_core::schema::options_schema_json());
}

#[test]
fn committed_presets_match_the_rust_presets() {
    check("presets.json", emotion_core::schema::presets_json());
}

#[test]
fn committed_kinds_match_the_rust_kinds() {
    check("kinds.json", emotion_core::schema::kinds_json());
}

#[test]
fn committed_results_schema_matches_the_rust_types() {
    check("results.schema.json", emotion_core::schema::results_schema_json());
}
