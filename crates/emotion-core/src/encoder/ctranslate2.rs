//! Reader of CTranslate2's `model.bin` (binary versions 5 and 6), the format faster-whisper models
//! ship in. Little-endian, unpadded: `u32 version · str spec · u32 revision · u32 count`, then per
//! variable `str name · u8 rank · u32 dims[rank] · u8 dtype · u32 bytes · data`, then aliases
//! (`u32 count`, pairs of `str`). A `str` is a `u16` length that counts a trailing NUL.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The variables of one model file, as float32 CPU tensors (int8 weights dequantised with their
/// `_scale`), and its scalar attributes (`encoder/num_heads`, …).
pub struct Ct2Model {
    pub spec: String,
    pub tensors: HashMap<String, Tensor>,
    pub scalars: HashMap<String, i64>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            Error::model_not_found(
                self.path,
                format!(
                    "truncated: {what} needs {n} bytes at offset {}, the file has {} bytes",
                    self.at,
                    self.bytes.len()
                ),
            )
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u16(what)? as usize;
        let raw = self.take(n, what)?;
        Ok(String::from_utf8_lossy(raw.strip_suffix(&[0]).unwrap_or(raw)).into_owned())
    }
}

fn dtype(code: u8) -> Option<(Kind, usize)> {
    match code {
        0 => Some((Kind::Float, 4)),
        1 => Some((Kind::Int8, 1)),
        2 => Some((Kind::Int16, 2)),
        3 => Some((Kind::Int, 4)),
        4 => Some((Kind::Half, 2)),
        5 => Some((Kind::BFloat16, 2)),
        _ => None,
    }
}

impl Ct2Model {
    /// The variables of the file `bytes` (named `path` in errors) whose names pass `keep`; the rest
    /// are skipped, not converted.
    pub fn parse(bytes: &[u8], path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Ct2Model> {
        let mut r = Reader { bytes, at: 0, path };
        let version = r.u32("the format version")?;
        if !(5..=6).contains(&version) {
            return Err(Error::model_not_found(
                path,
                format!("not a CTranslate2 model of binary version 5 or 6 (found {version})"),
            ));
        }
        let spec = r.string("the spec name")?;
        let _revision = r.u32("the spec revision")?;
        let count = r.u32("the variable count")?;
        let mut raw: HashMap<String, Tensor> = HashMap::new();
        let mut scalars = HashMap::new();
        for _ in 0..count {
            let name = r.string("a variable name")?;
            let rank = r.u8(&name)? as usize;
            let dims = (0..rank).map(|_| r.u32(&name).map(|d| d as i64)).collect::<Result<Vec<_>>>()?;
            let code = r.u8(&name)?;
            let (kind, size) = dtype(code)
                .ok_or_else(|| Error::model_not_found(path, format!("variable {name} has unknown dtype {code}")))?;
            let n_bytes = r.u32(&name)? as usize;
            let elements: i64 = dims.iter().product();
            if n_bytes != elements as usize * size {
                return Err(Error::model_not_found(
                    path,
                    format!("variable {name}: {n_bytes} bytes do not fit shape {dims:?}"),
                ));
            }
            let data = r.take(n_bytes, &name)?;
            if rank == 0 {
                scalars.insert(name, scalar(data, kind));
            } else if keep(&name) {
                raw.insert(name, Tensor::f_from_data_size(data, &dims, kind)?);
            }
        }
        if r.at < bytes.len() {
            for _ in 0..r.u32("the alias count")? {
                let (alias, target) = (r.string("an alias")?, r.string("an alias target")?);
                if let Some(t) = raw.get(&target) {
                    let t = t.shallow_clone();
                    raw.entry(alias).or_insert(t);
                }
            }
        }
        let tensors = dequantise(raw)?;
        Ok(Ct2Model { spec, tensors, scalars })
    }

    /// A float32 variable by name, checked against `shape`; missing or misshapen is an error naming it.
    pub fn get(&self, name: &str, shape: &[i64], path: &Path) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::model_not_found(path, format!("variable {name} is missing")))?;
        if t.size() != shape {
            return Err(Error::model_not_found(
                path,
                format!("variable {name} has shape {:?}, expected {shape:?}", t.size()),
            ));
        }
        Ok(t.shallow_clone())
    }
}

fn scalar(data: &[u8], kind: Kind) -> i64 {
    match (kind, data.len()) {
        (Kind::Int8, 1) => data[0] as i8 as i64,
        (_, 2) => i16::from_le_bytes([data[0], data[1]]) as i64,
        (_, 4) => i32::from_le_bytes([data[0], data[1], data[2], data[3]]) as i64,
        _ => 0,
    }
}

/// float32 everywhere: int8 weights are `int8 / scale` per output row (CTranslate2's quantisation).
fn dequantise(mut raw: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let names: Vec<String> = raw.keys().filter(|n| !n.ends_with("_scale")).cloned().collect();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let t = raw.remove(&name).expect("listed");
        let t = if t.kind() == Kind::Int8 {
            let scale = raw
                .get(&format!("{name}_scale"))
                .ok_or_else(|| Error::Internal(format!("{name} is int8 without {name}_scale")))?
                .f_to_kind(Kind::Float)?;
            let shape = t.size();
            t.f_to_kind(Kind::Float)?.f_reshape([shape[0], -1])?.f_div(&scale.f_reshape([-1, 1])?)?.f_reshape(&shape)?
        } else {
            t.f_to_kind(Kind::Float)?
        };
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CTranslate2 file as the format describes it, built by hand.
    struct Writer(Vec<u8>);

    impl Writer {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.0.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn variable(&mut self, name: &str, dims: &[u32], dtype: u8, data: &[u8]) -> &mut Self {
            self.string(name);
            self.0.push(dims.len() as u8);
            for &d in dims {
                self.u32(d);
            }
            self.0.push(dtype);
            self.u32(data.len() as u32);
            self.0.extend_from_slice(data);
            self
        }
    }

    fn sample() -> Vec<u8> {
        // IEEE half bits of 1.5, -2, 0.25 and 4.
        let half: Vec<u8> = [0x3E00u16, 0xC000, 0x3400, 0x4400].iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut w = Writer(Vec::new());
        w.u32(6).string("WhisperSpec").u32(3).u32(5);
        w.variable("encoder/a", &[2, 2], 4, &half);
        // int8 rows [10, -20] and [30, 40] with scales 10 and 20: real values [1, -2] and [1.5, 2].
        w.variable("encoder/q", &[2, 2], 1, &[10u8, (-20i8) as u8, 30, 40]);
        let scales: Vec<u8> = [10f32, 20.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        w.variable("encoder/q_scale", &[2], 0, &scales);
        w.variable("encoder/num_heads", &[], 2, &6i16.to_le_bytes());
        w.variable("decoder/skipped", &[1], 0, &1f32.to_le_bytes());
        w.u32(1).string("encoder/alias").string("encoder/a");
        w.0
    }

    #[test]
    fn reads_half_int8_scalars_and_aliases_and_skips_what_is_not_kept() {
        let path = Path::new("model.bin");
        let m = Ct2Model::parse(&sample(), path, &|name| name.starts_with("encoder/")).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.scalars["encoder/num_heads"], 6);
        let a = Vec::<f32>::try_from(m.get("encoder/a", &[2, 2], path).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(a, vec![1.5, -2.0, 0.25, 4.0]);
        let q = Vec::<f32>::try_from(m.get("encoder/q", &[2, 2], path).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(q, vec![1.0, -2.0, 1.5, 2.0]);
        assert!(m.tensors.contains_key("encoder/alias"));
        assert!(!m.tensors.contains_key("decoder/skipped"));
        let err = m.get("encoder/a", &[4], path).unwrap_err();
        assert!(err.to_string().contains("shape [2, 2], expected [4]"), "{err}");
    }

    #[test]
    fn a_truncated_or_foreign_file_is_model_not_found_naming_it() {
        let bytes = sample();
        let path = Path::new("/models/x/model.bin");
        for cut in [3, 20, 60, bytes.len() - 30] {
            let err = Ct2Model::parse(&bytes[..cut], path, &|_| true).err().expect("truncated");
            assert_eq!(err.code(), crate::error::ErrorCode::ModelNotFound);
            assert!(err.to_string().contains("/models/x/model.bin") && err.to_string().contains("truncated"), "{err}");
        }
        let mut foreign = bytes.clone();
        foreign[0] = 2;
        let err = Ct2Model::parse(&foreign, path, &|_| true).err().expect("version 2");
        assert!(err.to_string().contains("binary version"), "{err}");
    }
}
