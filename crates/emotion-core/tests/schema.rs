//! The committed JSON Schema of the options must be what the Rust types say. When a type changes on
//! purpose, regenerate it with `EMOTION_UPDATE_SCHEMA=1 node scripts/cargo.mjs test --release -p
//! emotion-core --test schema` (then `node scripts/gen-types.mjs` rewrites the TypeScript).

use std::path::Path;

#[test]
fn committed_schema_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join("options.schema.json");
    let generated = emotion_core::schema::options_schema_json();
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
