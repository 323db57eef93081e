//! Checkpoints: weights as safetensors, optimiser state as safetensors, and JSON state. Every file is
//! written to a temporary name and renamed. The resumable checkpoint is atomic as a whole: its weights
//! and optimiser state go to files named for this save (`last-<gen>.*`), `last.state.json` is written
//! after them and names them with their SHA-256, and only then are older generations deleted. A crash
//! at any point leaves `last.state.json` pointing at one complete generation, so resume continues
//! exactly; parts that do not match their hashes are refused by name.

use super::kinds::check_spec;
use super::settings::TrainingSettings;
use super::spec::ModelSpec;
use crate::atomic::{replace_file, write_atomic};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::optim::{Adam, LossScaler};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tch::nn::VarStore;
use tch::Tensor;

/// Format 2 (0.2): a model's `ModelSpec` and `TrainingSettings` instead of 0.1's flat options.
pub const FORMAT: &str = "emotion-pipeline/checkpoint@2";
const FORMAT_0_1: &str = "emotion-pipeline/checkpoint@1";
/// The largest weights file read (no model this library builds comes near).
const MAX_WEIGHTS_BYTES: u64 = 16 << 30;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
/// One finished epoch: training loss and accuracy, validation scores when there is a validation set.
pub struct EpochRecord {
    pub epoch: u32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_f1: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub skipped_steps: u32,
}

/// Running sums of the epoch in progress (so a mid-epoch resume reports the same history).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochProgress {
    pub loss_sum: f64,
    pub correct: f64,
    pub seen: usize,
    pub windows: usize,
    pub skipped: u32,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainState {
    pub format: String,
    pub spec: ModelSpec,
    pub training: TrainingSettings,
    /// Epoch in progress (0-based) and the next micro-batch in it.
    pub epoch: u32,
    pub next_batch: usize,
    pub progress: EpochProgress,
    /// The precision the job trains in, kept so a resume continues in it.
    pub precision: super::mixed::Precision,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<u32>,
    pub best_value: Option<f64>,
    pub epochs_without_improvement: u32,
    pub scaler: LossScaler,
    pub finished: bool,
    /// Processes the job trained in (a data-parallel world's size; 1 alone): a resume must use as many.
    #[serde(default = "one")]
    pub world_size: usize,
    /// The files of this checkpoint and their SHA-256 (set when saved).
    pub parts: Option<Parts>,
}

fn one() -> usize {
    1
}

/// One generation of the resumable checkpoint's files, named in `last.state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parts {
    pub weights: String,
    pub weights_sha256: String,
    pub optim: String,
    pub optim_sha256: String,
}

/// Tests set `EMOTION_PIPELINE_CRASH_AT=<point>[@n]` to kill the process (abort, no clean-up) the
/// n-th time (default 1st) a checkpoint save reaches `<point>`: `last-weights`, `last-optim`,
/// `last-state`, `last-model`.
fn crash_point(point: &str) {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("EMOTION_PIPELINE_CRASH_AT") else { return };
    let (name, nth) = spec.split_once('@').map_or((spec.as_str(), 1), |(n, k)| (n, k.parse().unwrap_or(1)));
    if name == point && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        std::process::abort();
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    crate::digest::sha256_file(path).map_err(|e| Error::io(path, e))
}

/// What `loadModel` needs: saved beside `best.safetensors` / `last.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelMeta {
    pub format: String,
    /// The emotion-pipeline version that saved it.
    pub version: String,
    pub spec: ModelSpec,
    pub training: TrainingSettings,
    pub epoch: u32,
    pub val: Option<Metrics>,
}

/// Writes tensors in the standard (row-major) layout, whatever layout they train in (channels-last).
fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let named = named.iter().map(|(n, t)| Ok((n.as_str(), t.f_contiguous()?))).collect::<Result<Vec<_>>>()?;
    replace_file(path, |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(|e| match e {
            // A failed write (a full disk, a quota) is the file's IO error, not a libtorch one.
            tch::TchError::SafeTensorError { err: safetensors::SafeTensorError::IoError(io), .. } => {
                Error::io(path, io)
            }
            other => other.into(),
        })
    })
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(e.to_string()))
}

fn weights(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// `best.*`: weights and the metadata to rebuild the model.
pub fn save_model(dir: &Path, tag: &str, vs: &VarStore, meta: &ModelMeta) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(format!("{tag}.safetensors"));
    save_tensors(&path, &weights(vs))?;
    write_atomic(&dir.join(format!("{tag}.json")), &json(meta)?)?;
    Ok(path)
}

/// The resumable checkpoint: a new generation of weights and optimiser state, then `last.state.json`
/// naming it, then `last.safetensors`/`last.json` for `loadModel`, then the old generation goes.
pub fn save_resumable(dir: &Path, vs: &VarStore, adam: &Adam, state: &TrainState, meta: &ModelMeta) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let generation = format!("last-{}-{nanos}", adam.step);
    let weights_name = format!("{generation}.safetensors");
    save_tensors(&dir.join(&weights_name), &weights(vs))?;
    crash_point("last-weights");
    let mut optim: Vec<(String, Tensor)> = Vec::new();
    for (i, (m, v)) in adam.exp_avg.iter().zip(&adam.exp_avg_sq).enumerate() {
        optim.push((format!("exp_avg.{i}"), m.shallow_clone()));
        optim.push((format!("exp_avg_sq.{i}"), v.shallow_clone()));
    }
    optim.push(("step".into(), Tensor::from_slice(&[adam.step])));
    let optim_name = format!("{generation}.optim.safetensors");
    save_tensors(&dir.join(&optim_name), &optim)?;
    crash_point("last-optim");
    let parts = Parts {
        weights_sha256: sha256_file(&dir.join(&weights_name))?,
        weights: weights_name,
        optim_sha256: sha256_file(&dir.join(&optim_name))?,
        optim: optim_name,
    };
    let keep = [parts.weights.clone(), parts.optim.clone()];
    write_atomic(&dir.join("last.state.json"), &json(&TrainState { parts: Some(parts), ..state.clone() })?)?;
    crash_point("last-state");
    let path = save_model(dir, "last", vs, meta)?;
    crash_point("last-model");
    // Older generations (and the unversioned parts of checkpoints from earlier versions) are now unused.
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old_generation = name.starts_with("last-") && name.ends_with(".safetensors") && !keep.contains(&name);
        if old_generation || name == "last.optim.safetensors" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

/// Parses a checkpoint JSON file of format 2; one of 0.1 is refused with how to retrain, anything
/// unreadable by name.
fn read_checkpoint_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let refuse = |reason: String| Error::ModelNotFound { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| refuse(format!("unreadable {what}: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(FORMAT_0_1) => {
            return Err(refuse(format!(
            "trained by emotion-pipeline 0.1 (checkpoint format 1), which this version ({}) cannot read: retrain it \
                 with the same command (features are cached, so only training runs again)",
            env!("CARGO_PKG_VERSION")
        )))
        }
        other => return Err(refuse(format!("{what} of format {other:?}, not {FORMAT}"))),
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| refuse(format!("unreadable {what} at `{}`: {}", e.path(), e.inner())))
}

pub fn load_state(dir: &Path) -> Result<Option<TrainState>> {
    let path = dir.join("last.state.json");
    if !path.exists() {
        return Ok(None);
    }
    let state: TrainState = read_checkpoint_json(&path, "checkpoint state")?;
    check_spec(&state.spec)
        .map_err(|e| Error::ModelNotFound { path: path.clone(), reason: format!("its model spec is invalid: {e}") })?;
    Ok(Some(state))
}

/// Loads the generation `state` names, after checking each part against its SHA-256 and the weights
/// against the model.
pub fn load_resumable(dir: &Path, state: &TrainState, vs: &mut VarStore, adam: &mut Adam) -> Result<()> {
    let Some(parts) = &state.parts else {
        return Err(Error::ModelNotFound {
            path: dir.join("last.state.json"),
            reason: "names no checkpoint files".into(),
        });
    };
    for (name, sha) in [(&parts.weights, &parts.weights_sha256), (&parts.optim, &parts.optim_sha256)] {
        let path = dir.join(name);
        let found = if path.exists() { sha256_file(&path)? } else { "nothing".into() };
        if &found != sha {
            return Err(Error::ModelNotFound {
                path,
                reason: format!(
                    "checkpoint part does not match last.state.json (SHA-256 {sha}, found {found}): the checkpoint is \
                     damaged; train without resume to start over"
                ),
            });
        }
    }
    let (weights, optim) = (dir.join(&parts.weights), dir.join(&parts.optim));
    check_weights(&weights, vs)?;
    vs.load(&weights)?;
    let named = Tensor::read_safetensors(&optim)?;
    let device = vs.device();
    let _guard = tch::no_grad_guard();
    for (name, t) in named {
        let t = t.f_to_device(device)?;
        if name == "step" {
            adam.set_step(t.f_int64_value(&[0])?)?;
        } else if let Some((kind, i)) = name.split_once('.') {
            let i: usize = i.parse().map_err(|_| Error::Internal(format!("bad optimiser entry {name}")))?;
            let slot = if kind == "exp_avg" { adam.exp_avg.get_mut(i) } else { adam.exp_avg_sq.get_mut(i) };
            slot.ok_or_else(|| Error::Internal(format!("optimiser entry {name} does not match the model")))?
                .f_copy_(&t)?;
        }
    }
    Ok(())
}

/// The names, dtypes and shapes of a safetensors file, from its header alone (8 bytes of length, then
/// JSON): the tensors are not read. The header must describe exactly the file's bytes.
fn weights_header(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>> {
    use std::io::Read;
    let refuse = |reason: String| Error::ModelNotFound { path: path.to_path_buf(), reason };
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if size > MAX_WEIGHTS_BYTES {
        return Err(refuse(format!("the weights file is {size} bytes, more than any model this library makes")));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|_| refuse("not a safetensors file (shorter than its header)".into()))?;
    let n = u64::from_le_bytes(length);
    if n > 100 << 20 || 8 + n > size {
        return Err(refuse(format!("not a safetensors file (a header of {n} bytes in a file of {size})")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    #[derive(serde::Deserialize)]
    struct Info {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: (u64, u64),
    }
    let mut parsed: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| refuse(format!("unreadable safetensors header: {e}")))?;
    parsed.remove("__metadata__");
    let mut out = Vec::with_capacity(parsed.len());
    let mut end = 0u64;
    for (name, value) in parsed {
        let info: Info =
            serde_json::from_value(value).map_err(|e| refuse(format!("tensor `{name}` in the header: {e}")))?;
        end = end.max(info.data_offsets.1);
        out.push((name, info.dtype, info.shape));
    }
    if 8 + n + end != size {
        return Err(refuse(format!(
            "the header describes {} bytes, the file holds {size}: the checkpoint is damaged",
            8 + n + end
        )));
    }
    Ok(out)
}

/// Values in a weights file (its header only).
pub fn weights_values(path: &Path) -> Result<u128> {
    Ok(weights_header(path)?.iter().map(|(_, _, shape)| shape.iter().map(|&d| d as u128).product::<u128>()).sum())
}

/// The weights file holds exactly the model's tensors, each fp32 of the model's shape.
pub fn check_weights(path: &Path, vs: &VarStore) -> Result<()> {
    let refuse = |reason: String| Error::ModelNotFound { path: path.to_path_buf(), reason };
    let mut file: Vec<_> = weights_header(path)?;
    file.sort_by(|a, b| a.0.cmp(&b.0));
    let model = weights(vs);
    for (name, t) in &model {
        let Ok(k) = file.binary_search_by(|(n, _, _)| n.as_str().cmp(name)) else {
            return Err(refuse(format!("the weights lack tensor `{name}` of the model its JSON describes")));
        };
        let (_, dtype, shape) = &file[k];
        let want: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        if dtype != "F32" || *shape != want {
            return Err(refuse(format!(
                "tensor `{name}` is {dtype} {shape:?} in the weights, but the model its JSON describes has F32 {want:?}"
            )));
        }
    }
    if let Some((extra, _, _)) = file.iter().find(|(n, _, _)| model.binary_search_by(|(m, _)| m.cmp(n)).is_err()) {
        return Err(refuse(format!("the weights hold tensor `{extra}`, which the model its JSON describes has not")));
    }
    Ok(())
}

/// The model metadata of `best` in `dir`, checked, and its weights file. A folder with only `last.*`
/// (a run stopped before its first epoch ended) is refused rather than loaded half-trained.
pub fn load_meta(dir: &Path) -> Result<(ModelMeta, PathBuf)> {
    let meta = dir.join("best.json");
    if !meta.exists() {
        let reason = if dir.join("last.json").exists() {
            "no best.json: the run stopped before its first epoch ended (last.json holds a partial epoch); \
             finish it with the same command and --resume"
        } else {
            "no checkpoint here (best.json)"
        };
        return Err(Error::ModelNotFound { path: dir.into(), reason: reason.into() });
    }
    let parsed: ModelMeta = read_checkpoint_json(&meta, "model metadata")?;
    check_spec(&parsed.spec)
        .map_err(|e| Error::ModelNotFound { path: meta.clone(), reason: format!("its model spec is invalid: {e}") })?;
    Ok((parsed, dir.join("best.safetensors")))
}
