use crate::errors::{to_js, Code};
use crate::job::{emit, spawn, ProgressCallback};
use crate::system::{parse_options, CancelToken};
use emotion_core::dataset::{self, IndexOptions, Item, SplitOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;

/// Indexes a corpus folder. Resolves to the JSON text of a `DatasetIndex` (typed in TypeScript).
#[napi(ts_return_type = "Promise<string>")]
pub fn index_dataset<'env>(
    env: &'env Env,
    dir: String,
    options_json: Option<String>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    cancel: Option<&CancelToken>,
) -> Result<Object<'env>> {
    let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    spawn(
        env,
        "index",
        move || {
            let options: IndexOptions = parse_options("indexDataset options", options_json)?;
            let mut progress = |p: emotion_core::control::Progress| emit(on_progress.as_ref(), &p);
            let index = dataset::index_dataset(&PathBuf::from(dir), &options, &flag, &mut progress)?;
            serde_json::to_string(&index).map_err(|e| emotion_core::Error::Internal(e.to_string()))
        },
        |_, json| Ok(json),
    )
}

/// Splits items (JSON array of `Item`) into train/val/test. Returns the JSON text of a `Split`.
#[napi]
pub fn split_dataset(items_json: String, options_json: Option<String>) -> Result<String, Code> {
    let items: Vec<Item> =
        serde_json::from_str(&items_json).map_err(|e| to_js(emotion_core::Error::invalid("items", e.to_string())))?;
    let options: SplitOptions = parse_options("splitDataset options", options_json).map_err(to_js)?;
    let split = dataset::split_dataset(&items, &options).map_err(to_js)?;
    serde_json::to_string(&split).map_err(|e| to_js(emotion_core::Error::Internal(e.to_string())))
}
