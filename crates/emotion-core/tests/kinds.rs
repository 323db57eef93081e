//! Every model kind through the same door: its JSON spec accounts for exactly the values its weights
//! hold, the linear probe trains and predicts like any model, and a checkpoint whose JSON and weights
//! disagree (or that 0.1 wrote) is refused by name before a model is built.

use emotion_core::control::CancelFlag;
use emotion_core::error::ErrorCode;
use emotion_core::models::{AudioCnnConfig, EncoderHeadConfig, TextLstmConfig};
use emotion_core::train::kinds::MODEL_KINDS;
use emotion_core::train::predict::load_model;
use emotion_core::train::{train, HostSet, ModelKind, Sets, TrainConfig};
use tch::nn::VarStore;

mod common;
use common::{small_config, tmp, toy_embeddings, turn};

/// Options small enough to build every kind, with every optional part (the adversary) switched on.
fn options(model: ModelKind) -> TrainConfig {
    TrainConfig {
        model,
        vocabulary: Some((0..30).map(|i| format!("t{i}")).collect()),
        audio: AudioCnnConfig { channels: vec![4, 8], hidden: vec![16, 8], ..Default::default() },
        text: TextLstmConfig { embedding: 8, hidden: 6, layers: 2, head: 5, dropout: 0.0 },
        encoder_head: EncoderHeadConfig { hidden: vec![16], speaker_adversary: 0.5, ..Default::default() },
        ..small_config()
    }
}

fn rows_with_speakers() -> HostSet {
    HostSet { speaker_ids: Some((0..24).map(|i| i % 4).collect()), ..toy_embeddings(24, 3) }
}

#[test]
fn every_kind_s_spec_counts_exactly_the_values_of_the_model_it_builds() {
    let _turn = turn();
    for kind in MODEL_KINDS {
        let spec = emotion_core::train::settings::derive_spec(&options(kind), &rows_with_speakers()).unwrap();
        let vs = VarStore::new(tch::Device::Cpu);
        let _model = kind.kind().build(&vs.root(), &spec);
        let built: u128 = vs.variables().values().map(|t| t.numel() as u128).sum();
        assert_eq!(kind.kind().parameter_count(&spec), built, "{kind:?}");
        assert!(built > 0);
    }
}

#[test]
fn the_linear_probe_learns_the_layer_that_carries_the_label_and_predicts_from_its_checkpoint() {
    let _turn = turn();
    let dir = tmp("probe");
    let (train_set, val_set) = (toy_embeddings(96, 5), toy_embeddings(48, 6));
    let config = TrainConfig {
        model: ModelKind::Probe,
        epochs: Some(40),
        optim: emotion_core::optim::AdamConfig { lr: 3e-2, ..Default::default() },
        checkpoint_dir: Some(dir.clone()),
        ..small_config()
    };
    let sets = Sets { train: &train_set, val: Some(&val_set), test: Some(&val_set) };
    let r = train(&config, sets, &CancelFlag::new(), &mut |_| {}).unwrap();
    assert!(r.test.as_ref().unwrap().accuracy > 0.9, "probe test accuracy {:?}", r.test.map(|m| m.accuracy));
    let loaded = load_model(&dir, "cpu").unwrap();
    assert_eq!(loaded.meta.spec.kind, ModelKind::Probe);
    let e = loaded.meta.spec.inputs.embedding.as_ref().unwrap();
    assert_eq!((e.layers, e.width, e.groups), (3, 8, 1));
    let unlabelled = HostSet { labels: vec![], ..val_set.clone() };
    let predicted = loaded.predict(&unlabelled).unwrap();
    let hits = predicted.iter().zip(&val_set.labels).filter(|(p, &l)| p.index as i64 == l).count();
    assert!(hits as f64 / val_set.labels.len() as f64 > 0.9);
}

/// Trains a one-epoch probe into a fresh folder and returns it.
fn probe_checkpoint(name: &str) -> common::Scratch {
    let dir = tmp(name);
    let config =
        TrainConfig { model: ModelKind::Probe, epochs: Some(1), checkpoint_dir: Some(dir.clone()), ..small_config() };
    let set = toy_embeddings(24, 1);
    train(&config, Sets { train: &set, val: Some(&set), test: None }, &CancelFlag::new(), &mut |_| {}).unwrap();
    dir
}

fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

fn refusal(dir: &std::path::Path) -> String {
    let err = load_model(dir, "cpu").err().expect("the checkpoint is refused");
    assert_eq!(err.code(), ErrorCode::ModelNotFound, "{err}");
    err.to_string()
}

#[test]
fn a_checkpoint_whose_json_and_weights_disagree_is_refused_by_name_before_it_is_built() {
    let _turn = turn();
    let dir = probe_checkpoint("probe-tampered");
    let meta = dir.join("best.json");
    let original = std::fs::read_to_string(&meta).unwrap();

    // A width no machine could hold: refused by the spec check, nothing allocated.
    edit_json(&meta, |v| v["spec"]["inputs"]["embedding"]["width"] = serde_json::json!(1u64 << 40));
    let why = refusal(&dir);
    assert!(why.contains("best.json") && why.contains("inputWidth"), "{why}");

    // A plausible width that the weights do not hold: refused by the value count, before building.
    edit_json(&meta, |v| {
        *v = serde_json::from_str(&original).unwrap();
        v["spec"]["inputs"]["embedding"]["width"] = serde_json::json!(16);
    });
    let why = refusal(&dir);
    assert!(why.contains("best.safetensors") && why.contains("values"), "{why}");

    // Same count, other shape (8 classes × … cannot match 3): the tensor is named.
    std::fs::write(&meta, &original).unwrap();
    edit_json(&meta, |v| v["spec"]["labels"] = serde_json::json!(["x", "y"]));
    let why = refusal(&dir);
    assert!(why.contains("values") || why.contains("`out."), "{why}");

    // 0.1's format: refused with how to retrain.
    edit_json(&meta, |v| {
        *v = serde_json::from_str(&original).unwrap();
        v["format"] = serde_json::json!("emotion-pipeline/checkpoint@1");
    });
    let why = refusal(&dir);
    assert!(why.contains("0.1") && why.contains("retrain"), "{why}");

    // A field of another type names its path.
    edit_json(&meta, |v| {
        *v = serde_json::from_str(&original).unwrap();
        v["spec"]["labels"] = serde_json::json!("angry");
    });
    let why = refusal(&dir);
    assert!(why.contains("spec.labels"), "{why}");

    std::fs::write(&meta, &original).unwrap();
    assert!(load_model(&dir, "cpu").is_ok());
}

#[test]
fn weights_of_another_dtype_or_missing_a_tensor_are_refused_by_tensor_name() {
    let _turn = turn();
    let dir = probe_checkpoint("probe-weights");
    let path = dir.join("best.safetensors");
    let tensors = tch::Tensor::read_safetensors(&path).unwrap();
    // Half precision: the same count of values, the wrong dtype.
    let half: Vec<(String, tch::Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_kind(tch::Kind::Half))).collect();
    tch::Tensor::write_safetensors(&half, &path).unwrap();
    let why = refusal(&dir);
    assert!(why.contains("F16") && why.contains("F32"), "{why}");
    // One tensor renamed: the count still agrees, the name does not.
    let renamed: Vec<(String, tch::Tensor)> = tensors
        .iter()
        .map(|(n, t)| (if n == "out.bias" { "out.bias2".into() } else { n.clone() }, t.shallow_clone()))
        .collect();
    tch::Tensor::write_safetensors(&renamed, &path).unwrap();
    let why = refusal(&dir);
    assert!(why.contains("`out.bias`"), "{why}");
}

#[test]
fn a_folder_with_only_last_is_refused_with_how_to_finish_it() {
    let _turn = turn();
    let dir = probe_checkpoint("probe-last-only");
    std::fs::remove_file(dir.join("best.json")).unwrap();
    std::fs::remove_file(dir.join("best.safetensors")).unwrap();
    let why = refusal(&dir);
    assert!(why.contains("no best.json") && why.contains("--resume"), "{why}");
}

#[test]
fn a_model_larger_than_the_available_memory_is_refused_before_it_is_allocated() {
    let _turn = turn();
    // 16 M values × 16 bytes (weights, gradients, two Adam moments) = 256 MB against a 100 MB cap (the
    // same check, whatever memory this machine has; the other tests' models are a few KB).
    let config = TrainConfig {
        model: ModelKind::Encoder,
        encoder_head: EncoderHeadConfig { hidden: vec![4_000, 4_000], ..Default::default() },
        ..small_config()
    };
    let set = toy_embeddings(6, 2);
    let started = std::time::Instant::now();
    std::env::set_var("EMOTION_PIPELINE_MEMORY_LIMIT", "100000000");
    let result = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {});
    std::env::remove_var("EMOTION_PIPELINE_MEMORY_LIMIT");
    let err = result.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OutOfMemory, "{err}");
    assert!(err.to_string().contains("encoderHead") && err.to_string().contains("GB"), "{err}");
    assert!(started.elapsed().as_secs() < 5, "refused before allocating");
}

#[test]
fn a_temporary_file_left_by_a_killed_save_is_removed_when_the_next_job_starts() {
    let _turn = turn();
    let dir = tmp("probe-stale-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(".0123456789abcdef.tmp.best.safetensors");
    std::fs::write(&stale, b"").unwrap();
    let config =
        TrainConfig { model: ModelKind::Probe, epochs: Some(1), checkpoint_dir: Some(dir.clone()), ..small_config() };
    let set = toy_embeddings(12, 4);
    train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap();
    assert!(!stale.exists());
    assert!(dir.join("best.safetensors").exists());
}
