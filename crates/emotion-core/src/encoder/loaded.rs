//! An encoder folder's weight files, their identity (SHA-256), and the last encoder a job used, kept
//! for the process: files are read, hashed (145 MB for Whisper-base) and parsed once per file identity,
//! device and precision, not once per call. A file replaced on disk (another size, modification time
//! or inode) is read again, so the hash a model is checked against is always the file's.

use super::hf;
use super::whisper::WhisperEncoder;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind};

/// The weight files of an encoder folder.
enum Layout {
    /// CTranslate2's `model.bin`.
    Ct2(PathBuf),
    /// Hugging Face's `config.json` + `model.safetensors` (or shards).
    Hf(Vec<PathBuf>),
}

impl Layout {
    fn of(dir: &Path) -> Result<Layout> {
        if !dir.is_dir() {
            return Err(Error::model_not_found(dir, "the encoder folder does not exist"));
        }
        let ct2 = dir.join("model.bin");
        if ct2.is_file() {
            return Ok(Layout::Ct2(ct2));
        }
        Ok(Layout::Hf(hf::weight_files(dir)?))
    }

    fn files(&self) -> &[PathBuf] {
        match self {
            Layout::Ct2(file) => std::slice::from_ref(file),
            Layout::Hf(files) => files,
        }
    }
}

/// A file's identity on disk: what changes when it is rewritten or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    len: u64,
    modified: (i64, i64),
    inode: u64,
}

impl FileKey {
    fn of(path: &Path) -> Result<FileKey> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let path = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        Ok(FileKey { path, len: meta.len(), modified: (meta.mtime(), meta.mtime_nsec()), inode: meta.ino() })
    }
}

static HASHES: Mutex<Option<HashMap<FileKey, String>>> = Mutex::new(None);

/// SHA-256 of one file, once per process and file identity (streamed, or `bytes` already read).
fn file_sha256(path: &Path, bytes: Option<&[u8]>) -> Result<String> {
    let key = FileKey::of(path)?;
    if let Some(known) = HASHES.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).get(&key) {
        return Ok(known.clone());
    }
    let sha = match bytes {
        Some(bytes) => crate::digest::sha256_hex(bytes),
        None => crate::digest::sha256_file(path).map_err(|e| Error::io(path, e))?,
    };
    HASHES.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(key, sha.clone());
    Ok(sha)
}

/// The identity of the encoder in `dir`: the SHA-256 of its one weight file (`model.bin`, or
/// `model.safetensors`: the Hub's LFS oid), or for shards the SHA-256 of their `<name> <sha256>` lines.
pub fn weights_sha256(dir: &Path) -> Result<String> {
    let layout = Layout::of(dir)?;
    match layout.files() {
        [one] => file_sha256(one, None),
        shards => {
            let mut lines = String::new();
            for shard in shards {
                let name = shard.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                lines.push_str(&format!("{name} {}\n", file_sha256(shard, None)?));
            }
            Ok(crate::digest::sha256_hex(lines.as_bytes()))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Key {
    files: Vec<FileKey>,
    device: Device,
    kind: Kind,
}

struct Loaded {
    key: Key,
    sha256: String,
    /// The head count from `config.json` (Hugging Face layout), which the SHA-256 does not cover.
    config_heads: Option<i64>,
    encoder: WhisperEncoder,
}

/// Encoder jobs take turns (`job_turn`): the one in progress holds the entry, and gives it back on drop.
static LAST: Mutex<Option<Loaded>> = Mutex::new(None);

/// An encoder a job holds; returned to the process cache when dropped.
pub struct HeldEncoder(Option<Loaded>);

impl HeldEncoder {
    /// The encoder's identity ([`weights_sha256`]).
    pub fn sha256(&self) -> &str {
        &self.0.as_ref().expect("held until drop").sha256
    }

    /// The head count its `config.json` gave (Hugging Face layout only): not covered by the SHA-256.
    pub fn config_heads(&self) -> Option<i64> {
        self.0.as_ref().expect("held until drop").config_heads
    }
}

impl Deref for HeldEncoder {
    type Target = WhisperEncoder;
    fn deref(&self) -> &WhisperEncoder {
        &self.0.as_ref().expect("held until drop").encoder
    }
}

impl Drop for HeldEncoder {
    fn drop(&mut self) {
        if let Some(loaded) = self.0.take() {
            *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded);
        }
    }
}

/// The encoder in `dir` on `device` in `kind`: the kept one when its files are the same, else read.
pub fn encoder_for(dir: &Path, device: Device, kind: Kind) -> Result<HeldEncoder> {
    let layout = Layout::of(dir)?;
    let mut files = layout.files().iter().map(|f| FileKey::of(f)).collect::<Result<Vec<_>>>()?;
    if let Layout::Hf(_) = layout {
        // The head count lives in config.json: a changed config is another encoder.
        files.push(FileKey::of(&dir.join("config.json"))?);
    }
    let key = Key { files, device, kind };
    let kept = LAST.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(loaded) = kept.filter(|l| l.key == key) {
        return Ok(HeldEncoder(Some(loaded)));
    }
    let encoder = match &layout {
        Layout::Ct2(model_bin) => {
            let bytes = std::fs::read(model_bin).map_err(|e| Error::io(model_bin, e))?;
            // Hashed from the bytes just read: the 145 MB are read once.
            file_sha256(model_bin, Some(&bytes))?;
            WhisperEncoder::from_bytes(&bytes, model_bin, device, kind)?
        }
        Layout::Hf(files) => WhisperEncoder::from_model(&hf::read(dir, files)?, &files[0], device, kind)?,
    };
    let sha256 = weights_sha256(dir)?;
    let config_heads = matches!(layout, Layout::Hf(_)).then(|| encoder.heads());
    Ok(HeldEncoder(Some(Loaded { key, sha256, config_heads, encoder })))
}
