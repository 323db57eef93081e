//! Helpers shared by the training integration tests: a toy mel set, a small CNN config, temp folders,
//! weight comparison, and the turn on libtorch's global generator.
#![allow(dead_code)]

use emotion_core::dataset::rng::SplitMix64;
use emotion_core::models::AudioCnnConfig;
use emotion_core::train::config::Preset;
use emotion_core::train::{HostSet, ModelKind, TrainConfig};
use std::path::PathBuf;

pub const M: usize = 16;

/// libtorch's RNG is process-global and the test harness runs tests on parallel threads: tests that
/// build models take turns so the determinism checks see only their own random draws.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}
pub const T: usize = 20;

/// Three classes whose "spectrograms" differ in which band is loud.
pub fn toy_set(n: usize, seed: u64) -> HostSet {
    let mut rng = SplitMix64::new(seed);
    let mut mel = Vec::with_capacity(n * M * T);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 3) as i64;
        for m in 0..M {
            for _ in 0..T {
                let noise = (rng.next_u64() % 1000) as f32 / 1000.0 - 0.5;
                let band = if m / (M / 3).max(1) == class as usize { 3.0 } else { 0.0 };
                mel.push(band + noise - 40.0);
            }
        }
        labels.push(class);
    }
    HostSet { mel: Some((mel, [n, M, T])), labels, ..HostSet::default() }
}

pub fn small_config() -> TrainConfig {
    TrainConfig {
        model: ModelKind::Audio,
        // The mechanics under test, without augmentation (the recommended preset's SpecAugment).
        preset: Preset::Reference,
        labels: vec!["a".into(), "b".into(), "c".into()],
        audio: AudioCnnConfig {
            channels: vec![4, 8],
            hidden: vec![16, 8],
            dropout: 0.0,
            conv_dropout: 0.0,
            freeze_batch_norm: false,
        },
        epochs: Some(3),
        batch_size: 8,
        accumulation: 1,
        device: "cpu".into(),
        progress_interval_ms: 0,
        ..TrainConfig::default()
    }
}

/// A test's folder under the temporary directory, removed when the test is done with it.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tmp(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("ep-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Scratch(dir)
}

pub fn weights(dir: &std::path::Path, file: &str) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = tch::Tensor::read_safetensors(dir.join(file))
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).flatten(0, -1)).unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((ka, va), (kb, vb))| {
            assert_eq!(ka, kb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// Pooled "encoder states" `[n, 3, 8]`: the label is in layer 1; each layer has its own scale.
pub fn toy_embeddings(n: usize, seed: u64) -> HostSet {
    let (layers, width) = (3, 8);
    let mut rng = SplitMix64::new(seed);
    let mut data = Vec::with_capacity(n * layers * width);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 3;
        for layer in 0..layers {
            for d in 0..width {
                let noise = (rng.next_u64() % 1000) as f32 / 500.0 - 1.0;
                let signal = if layer == 1 && d % 3 == class { 2.5 } else { 0.0 };
                data.push(signal + noise + 10.0 * layer as f32);
            }
        }
        labels.push(class as i64);
    }
    HostSet { embedding: Some((data, [n, layers, width])), labels, ..HostSet::default() }
}
