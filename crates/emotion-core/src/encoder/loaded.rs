//! The last encoder a job used, kept for the process: a file is read, hashed (SHA-256 of 145 MB for
//! Whisper-base) and parsed once per file identity, device and precision, not once per call. A file
//! replaced on disk (another size, modification time or inode) is read again, so the hash a model is
//! checked against is always the file's.

use super::whisper::WhisperEncoder;
use crate::error::{Error, Result};
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind};

#[derive(Debug, Clone, PartialEq)]
struct Key {
    path: PathBuf,
    len: u64,
    modified: i64,
    modified_nanos: i64,
    inode: u64,
    device: Device,
    kind: Kind,
}

struct Loaded {
    key: Key,
    sha256: String,
    encoder: WhisperEncoder,
}

/// Encoder jobs take turns (`job_turn`): the one in progress holds the entry, and gives it back on drop.
static LAST: Mutex<Option<Loaded>> = Mutex::new(None);

/// An encoder a job holds; returned to the process cache when dropped.
pub struct HeldEncoder(Option<Loaded>);

impl HeldEncoder {
    /// The SHA-256 of the `model.bin` it was read from.
    pub fn sha256(&self) -> &str {
        &self.0.as_ref().expect("held until drop").sha256
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

/// The encoder of `model_bin` on `device` in `kind`: the kept one when the file is the same, else read.
pub fn encoder_for(model_bin: &Path, device: Device, kind: Kind) -> Result<HeldEncoder> {
    let meta = std::fs::metadata(model_bin).map_err(|e| Error::io(model_bin, e))?;
    let path = std::fs::canonicalize(model_bin).map_err(|e| Error::io(model_bin, e))?;
    let key = Key {
        path,
        len: meta.len(),
        modified: meta.mtime(),
        modified_nanos: meta.mtime_nsec(),
        inode: meta.ino(),
        device,
        kind,
    };
    let kept = LAST.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(loaded) = kept.filter(|l| l.key == key) {
        return Ok(HeldEncoder(Some(loaded)));
    }
    let bytes = std::fs::read(model_bin).map_err(|e| Error::io(model_bin, e))?;
    let sha256 = crate::digest::sha256_hex(&bytes);
    let encoder = WhisperEncoder::from_bytes(&bytes, model_bin, device, kind)?;
    Ok(HeldEncoder(Some(Loaded { key, sha256, encoder })))
}
