//! On-disk feature cache keyed by content hash + front-end settings + format version. Writes go to a
//! temporary file that is renamed into place, so concurrent processes and crashes never leave a
//! half-written entry under a real key; unreadable entries count as misses and are rewritten. Each
//! entry carries the SHA-256 of its values, so a flipped byte is a miss, never a silently wrong hit.

use super::mel::MelConfig;
use crate::digest::hex;
use crate::error::{Error, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bump when the feature computation changes in a way that alters values. v2: extraction runs on
/// every core whatever ran before it in the process (v1 entries made after an encoder-model job, on
/// 1 libtorch thread, could differ in the last bits).
const FORMAT: &str = "emotion-pipeline mel v2";
/// Version 2 adds the SHA-256 of the values after the length; version 1 entries are misses.
const MAGIC: &[u8; 8] = b"EPMEL\x00\x02\x00";

/// Feature-cache counts of one `extractMel` call.
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
    pub writes: usize,
}

pub struct FeatureCache {
    dir: PathBuf,
    config_tag: String,
    hits: AtomicUsize,
    misses: AtomicUsize,
    writes: AtomicUsize,
}

impl FeatureCache {
    pub fn open(dir: &Path, config: &MelConfig) -> Result<Self> {
        Self::open_tagged(dir, serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?)
    }

    /// A cache whose keys also depend on `config_tag`: everything besides the clip that changes values.
    pub fn open_tagged(dir: &Path, config_tag: String) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(FeatureCache { dir: dir.into(), config_tag, hits: 0.into(), misses: 0.into(), writes: 0.into() })
    }

    /// Key of a clip whose content hashes to `content_hash` under this cache's settings.
    pub fn key(&self, content_hash: &str) -> String {
        let mut h = Sha256::new();
        h.update(FORMAT.as_bytes());
        h.update([0]);
        h.update(content_hash.as_bytes());
        h.update([0]);
        h.update(self.config_tag.as_bytes());
        hex(&h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.mel"))
    }

    pub fn get(&self, key: &str, expected_len: usize) -> Option<Vec<f32>> {
        let found = std::fs::read(self.path(key)).ok().and_then(|bytes| decode_entry(&bytes, expected_len));
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn put(&self, key: &str, data: &[f32]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("cache entries live in a subfolder");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = Vec::with_capacity(48 + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&payload));
        bytes.extend_from_slice(&payload);
        // No fsync: after a power cut a renamed-but-empty entry fails the length check and is a miss.
        crate::atomic::write_atomic(&path, &bytes)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

fn decode_entry(bytes: &[u8], expected_len: usize) -> Option<Vec<f32>> {
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = body.split_at_checked(8)?;
    let (sum, data) = rest.split_at_checked(32)?;
    let len = u64::from_le_bytes(len.try_into().ok()?) as usize;
    if len != expected_len || data.len() != len * 4 || Sha256::digest(data).as_slice() != sum {
        return None;
    }
    Some(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_entries_are_misses() {
        let dir = std::env::temp_dir().join(format!("ep-cache-test-{}", std::process::id()));
        let cache = FeatureCache::open(&dir, &MelConfig::default()).unwrap();
        let key = cache.key("abc");
        assert_ne!(
            key,
            FeatureCache::open(&dir, &MelConfig { n_mels: 64, ..MelConfig::default() }).unwrap().key("abc")
        );
        assert!(cache.get(&key, 3).is_none());
        cache.put(&key, &[1.0, -2.5, 3.25]).unwrap();
        assert_eq!(cache.get(&key, 3), Some(vec![1.0, -2.5, 3.25]));
        assert!(cache.get(&key, 4).is_none(), "a length mismatch is a miss");
        let mut flipped = std::fs::read(cache.path(&key)).unwrap();
        *flipped.last_mut().unwrap() ^= 0x40;
        std::fs::write(cache.path(&key), &flipped).unwrap();
        assert!(cache.get(&key, 3).is_none(), "a flipped byte fails the checksum: a miss");
        std::fs::write(cache.path(&key), b"EPMEL\x00\x02\x00garbage").unwrap();
        assert!(cache.get(&key, 3).is_none(), "a corrupt entry is a miss");
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.writes), (1, 4, 1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
