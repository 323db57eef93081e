//! Writing a loaded model out in other formats: ONNX with its front end (`exportOnnx`).

use crate::job::spawn;
use crate::system::parse_options;
use crate::train::NativeModel;
use emotion_core::export::{export_onnx, ExportOptions};
use emotion_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;

#[napi]
impl NativeModel {
    /// Writes the model to `path` as ONNX and its sidecar to `<path>.json`; resolves to the sidecar
    /// (JSON `OnnxSidecar`). `source`: the model folder, recorded in the sidecar.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn export_onnx<'env>(
        &self,
        env: &'env Env,
        path: String,
        source: String,
        options_json: Option<String>,
    ) -> Result<Object<'env>> {
        let options = parse_options::<ExportOptions>("export options", options_json);
        let model = self.shared();
        spawn(
            env,
            "export",
            move || {
                let options = options?;
                let model = model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let sidecar = export_onnx(&model, &PathBuf::from(source), &PathBuf::from(path), &options)?;
                serde_json::to_string(&sidecar).map_err(|e| CoreError::Internal(e.to_string()))
            },
            |_, json| Ok(json),
        )
    }
}

/// Writes Whisper from a CTranslate2 `model.bin` as transformers.js loads it (`onnx/encoder_model.onnx`,
/// `onnx/decoder_model_merged.onnx` under `outDir`); resolves to JSON `AsrExport` (its sizes, for the
/// config files).
#[napi(ts_return_type = "Promise<string>")]
pub fn build_whisper_onnx<'env>(env: &'env Env, model_bin: String, out_dir: String) -> Result<Object<'env>> {
    spawn(
        env,
        "whisper export",
        move || {
            let summary = emotion_core::encoder::whisper_asr::write_transformers_js_onnx(
                &PathBuf::from(model_bin),
                &PathBuf::from(out_dir),
            )?;
            serde_json::to_string(&summary).map_err(|e| CoreError::Internal(e.to_string()))
        },
        |_, json| Ok(json),
    )
}
