//! The one way the core replaces a file: write a temporary sibling, then rename it over the target, so
//! a reader (or a resumed run after a crash) sees the old file or the new one, never half of one.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A hidden sibling of `path` under a name nobody can predict (a link planted at a predictable name
/// would make the write land elsewhere), created exclusively: `O_CREAT|O_EXCL` fails on any existing
/// entry, a symbolic link included. It keeps the target's extension: libtorch picks the safetensors
/// writer by it.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    for _ in 0..8 {
        // RandomState is keyed from the OS's randomness once per thread: a fresh key per call.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        let tmp = path.with_file_name(format!(".{:016x}.tmp.{name}", h.finish()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(_) => return Ok(tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Err(Error::io(path, std::io::Error::other("no free temporary name")))
}

/// Writes `path` through `write`, which is given the temporary path to fill; on any failure the
/// temporary file is removed and the target is left as it was.
pub fn replace_file(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path)?;
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Removes temporary siblings (`.<random>.tmp.<name>`) that a process killed mid-write left in `dir`:
/// called when a job takes a folder it alone writes (a checkpoint folder), so none is in use.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && name.starts_with('.') && name.contains(".tmp.") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Replaces `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // Through the file it created (`O_TRUNC` on the name it made, which is not a link: `O_NOFOLLOW`).
    replace_file(path, |tmp| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        const O_NOFOLLOW: i32 = 0o400000;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(O_NOFOLLOW)
            .open(tmp)
            .map_err(|e| Error::io(path, e))?;
        file.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("emotion-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("state.json");
        write_atomic(&target, b"old").unwrap();
        let err = replace_file(&target, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Internal("disk full".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary file was removed");
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_planted_at_the_target_is_replaced_never_followed() {
        let dir = std::env::temp_dir().join(format!("emotion-atomic-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = dir.join("best.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"model").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
