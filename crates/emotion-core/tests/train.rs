//! Trainer behaviour on small synthetic problems (fast, CPU): accumulation parity, resume, cancel,
//! divergence handling, checkpoints and prediction.

use emotion_core::control::CancelFlag;
use emotion_core::error::ErrorCode;
use emotion_core::models::AudioCnnConfig;
use emotion_core::train::config::{Amp, Augment, Preset, SpecAugment};
use emotion_core::train::engine::Precision;
use emotion_core::train::predict::load_model;
use emotion_core::train::{train, HostSet, ModelKind, Sets, TrainConfig, TrainEvent};
use emotion_core::Error;
use tch::nn::VarStore;

mod common;
use common::{max_diff, small_config, tmp, toy_set, turn, weights, M, T};

#[test]
fn learns_a_separable_toy_problem_and_predicts_from_the_checkpoint() {
    let _turn = turn();
    let dir = tmp("learn");
    let train_set = toy_set(48, 1);
    let val_set = toy_set(24, 2);
    let config = TrainConfig {
        epochs: Some(12),
        optim: emotion_core::optim::AdamConfig { lr: 3e-3, ..Default::default() },
        checkpoint_dir: Some(dir.clone()),
        // fp16 is CUDA's: on the CPU it falls back to fp32 with a warning.
        amp: Amp::Fp16,
        ..small_config()
    };
    let mut events = Vec::new();
    let r = train(
        &config,
        Sets { train: &train_set, val: Some(&val_set), test: Some(&val_set) },
        &CancelFlag::new(),
        &mut |e| events.push(e),
    )
    .unwrap();
    assert_eq!(r.history.len(), 12);
    assert!(r.test.as_ref().unwrap().accuracy > 0.9, "test accuracy {:?}", r.test.as_ref().map(|m| m.accuracy));
    assert!(r.history.last().unwrap().train_loss < r.history[0].train_loss);
    assert_eq!(r.precision, Precision::Fp32);
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainEvent::Warning { message, .. } if message.contains("'fp16' needs CUDA"))));
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainEvent::Checkpoint { kind: emotion_core::train::engine::CheckpointKind::Best, .. })));
    let model = load_model(&dir, "cpu").unwrap();
    let predictions = model.predict(&HostSet { labels: vec![], ..val_set.clone() }).unwrap();
    let correct = predictions.iter().zip(&val_set.labels).filter(|(p, &l)| p.index as i64 == l).count();
    assert!(correct as f64 / 24.0 > 0.9);
    assert!((predictions[0].probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn two_accumulated_micro_batches_equal_one_double_batch() {
    let _turn = turn();
    // fp32, no dropout, batch norm frozen: the gradients must agree up to float rounding.
    let set = toy_set(40, 3); // 40 = 16 + 16 + 8: the last window is short
    let base = TrainConfig {
        epochs: Some(2),
        audio: AudioCnnConfig { freeze_batch_norm: true, ..small_config().audio },
        amp: Amp::Off,
        ..small_config()
    };
    let run = |batch_size: usize, accumulation: usize, name: &str| {
        let dir = tmp(name);
        let config = TrainConfig { batch_size, accumulation, checkpoint_dir: Some(dir.clone()), ..base.clone() };
        let r = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap();
        (weights(&dir, "last.safetensors"), r.optimizer_steps)
    };
    let (accumulated, steps_a) = run(8, 2, "acc");
    let (double, steps_b) = run(16, 1, "double");
    assert_eq!(steps_a, steps_b);
    let diff = max_diff(&accumulated, &double);
    assert!(diff < 1e-5, "max weight difference {diff}");
}

#[test]
fn resuming_after_a_cancel_gives_the_uninterrupted_result() {
    let _turn = turn();
    let set = toy_set(48, 4);
    let val = toy_set(12, 5);
    // With both augmentations: their draws follow the per-micro-batch seed, so a resume repeats them.
    let augment = Augment {
        spec_augment: Some(SpecAugment { freq_width: 3, time_width: 3, ..Default::default() }),
        mixup: Some(0.4),
    };
    let base = TrainConfig {
        epochs: Some(3),
        audio: AudioCnnConfig { dropout: 0.3, ..small_config().audio },
        augment: Some(augment),
        ..small_config()
    };

    let whole = tmp("whole");
    let cfg = TrainConfig { checkpoint_dir: Some(whole.clone()), ..base.clone() };
    let full = train(&cfg, Sets { train: &set, val: Some(&val), test: None }, &CancelFlag::new(), &mut |_| {}).unwrap();

    // Cancel in the middle of epoch 2, then resume.
    let parts = tmp("parts");
    let cfg = TrainConfig { checkpoint_dir: Some(parts.clone()), ..base.clone() };
    let cancel = CancelFlag::new();
    let trigger = cancel.clone();
    let err = train(&cfg, Sets { train: &set, val: Some(&val), test: None }, &cancel, &mut |e| {
        if let TrainEvent::Step { epoch: 2, step: 3, .. } = e {
            trigger.cancel();
        }
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(parts.join("last.state.json").exists(), "cancel writes a checkpoint");
    let resumed = train(
        &TrainConfig { resume: true, ..cfg },
        Sets { train: &set, val: Some(&val), test: None },
        &CancelFlag::new(),
        &mut |_| {},
    )
    .unwrap();

    assert_eq!(resumed.history.len(), 3);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        // The interrupted epoch's mean loss is summed in two f32 parts: equal to ~1e-7, not bit for bit.
        assert!((a.train_loss - b.train_loss).abs() < 1e-6, "epoch {}: {} vs {}", a.epoch, a.train_loss, b.train_loss);
        assert_eq!(a.val_accuracy, b.val_accuracy);
    }
    let diff = max_diff(&weights(&whole, "last.safetensors"), &weights(&parts, "last.safetensors"));
    assert!(diff == 0.0, "weights differ by {diff}");
}

/// Trains with an absurd learning rate until `NON_FINITE`; returns the error, the skipped-step
/// warnings and the saved weights.
fn diverge(sync_free: bool) -> (Error, usize, Vec<(String, Vec<f32>)>) {
    let set = toy_set(64, 6);
    let dir = tmp(if sync_free { "diverge-sync-free" } else { "diverge" });
    let config = TrainConfig {
        epochs: Some(30),
        optim: emotion_core::optim::AdamConfig { lr: 1e12, ..Default::default() },
        max_non_finite_steps: 3,
        checkpoint_dir: Some(dir.clone()),
        sync_free: Some(sync_free),
        ..small_config()
    };
    let mut warnings = 0;
    let err = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |e| {
        if let TrainEvent::Warning { message, .. } = e {
            if message.contains("skipped") {
                warnings += 1;
            }
        }
    })
    .unwrap_err();
    (err, warnings, weights(&dir, "last.safetensors"))
}

#[test]
fn a_diverging_run_stops_with_non_finite_and_keeps_its_checkpoint() {
    let _turn = turn();
    let (err, warnings, kept) = diverge(false);
    assert_eq!(err.code(), ErrorCode::NonFinite, "{err}");
    assert!(err.to_string().contains("lr"), "{err}");
    assert!(warnings >= 3);
    assert!(kept.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())), "the saved weights are the last finite ones");
}

#[test]
fn bad_inputs_are_rejected_with_the_field_named() {
    let _turn = turn();
    let mut set = toy_set(6, 7);
    set.labels[2] = 9;
    let err = train(&small_config(), Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("train.labels[2]"), "{err}");
    let mut set = toy_set(6, 7);
    if let Some((data, _)) = &mut set.mel {
        data[M * T + 5] = f32::NAN;
    }
    let err = train(&small_config(), Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NonFinite);
    assert!(err.to_string().contains("row 1"), "{err}");
    let err = train(
        &TrainConfig { device: "cuda".into(), ..small_config() },
        Sets { train: &toy_set(6, 7), val: None, test: None },
        &CancelFlag::new(),
        &mut |_| {},
    );
    if !tch::Cuda::is_available() {
        assert_eq!(err.unwrap_err().code(), ErrorCode::CudaUnavailable);
    }
}

#[test]
fn reference_models_have_the_reference_shapes() {
    let _turn = turn();
    let vs = VarStore::new(tch::Device::Cpu);
    let config = TrainConfig {
        model: ModelKind::Fusion,
        vocab_size: 200,
        labels: (0..8).map(|i| i.to_string()).collect(),
        ..TrainConfig::default()
    };
    let spec = emotion_core::train::settings::derive_spec(&config, &HostSet::default()).unwrap();
    let model = ModelKind::Fusion.kind().build(&vs.root(), &spec);
    let mel = tch::Tensor::randn([2, 128, 280], (tch::Kind::Float, tch::Device::Cpu));
    let tokens = tch::Tensor::from_slice(&[1i64, 2, 3, 0, 0, 0, 4, 5, 0, 0, 0, 0]).reshape([2, 6]);
    let labels = tch::Tensor::zeros([2], (tch::Kind::Int64, tch::Device::Cpu));
    let batch = emotion_core::train::data::Batch {
        mel: Some(mel),
        tokens: Some(tokens),
        embedding: None,
        labels,
        speaker_ids: None,
    };
    let logits = model.forward(&batch, false).logits;
    assert_eq!(logits.size(), vec![2, 8]);
    let names: Vec<String> = vs.variables().into_keys().collect();
    for expected in [
        "audio.blocks.5.conv.weight",
        "audio.head.0.weight",
        "text.lstm.weight_ih_l1_reverse",
        "head.0.fc.weight",
        "head.1.bn.running_mean",
        "out.weight",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected} in {names:?}");
    }
    let conv5 = vs.variables()["audio.blocks.5.conv.weight"].size();
    assert_eq!(conv5, vec![512, 512, 3, 3]);
    assert_eq!(vs.variables()["head.0.fc.weight"].size(), vec![256, 384]);
}

#[test]
fn precision_falls_back_to_fp32_with_a_warning_where_it_cannot_be_honoured() {
    let _turn = turn();
    let set = toy_set(16, 5);
    let run = |amp: Amp| {
        let config = TrainConfig { epochs: Some(1), amp, preset: Preset::Recommended, ..small_config() };
        let mut warnings = Vec::new();
        let r = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |e| {
            if let TrainEvent::Warning { message, .. } = e {
                warnings.push(message)
            }
        })
        .unwrap();
        (r.precision, warnings)
    };
    // The recommended preset trains in bf16 where the CPU has it natively (the reference stays fp32).
    let native = emotion_core::device::cpu_has_native_bf16();
    let (precision, warnings) = run(Amp::Auto);
    assert_eq!(precision, if native { Precision::Bf16 } else { Precision::Fp32 });
    assert!(warnings.is_empty(), "{warnings:?}");
    // A CPU without native bf16 (simulated): 'bf16' falls back with a warning, 'auto' quietly.
    std::env::set_var("EMOTION_PIPELINE_NO_CPU_BF16", "1");
    let bf16 = run(Amp::Bf16);
    let auto = run(Amp::Auto);
    std::env::remove_var("EMOTION_PIPELINE_NO_CPU_BF16");
    assert_eq!(bf16.0, Precision::Fp32);
    assert!(bf16.1.iter().any(|w| w.contains("no native bf16")), "{:?}", bf16.1);
    assert_eq!(auto, (Precision::Fp32, vec![]));
}

/// Pooled "encoder states" of 3 layers × 8 dims where only layer 1 carries the class.
#[test]
fn the_sync_free_window_end_trains_exactly_as_the_synced_one() {
    let _turn = turn();
    let set = toy_set(48, 7);
    let val = toy_set(12, 8);
    let run = |sync_free: bool, name: &str| {
        let dir = tmp(name);
        let config = TrainConfig {
            epochs: Some(3),
            accumulation: 2,
            lr_schedule: Some(emotion_core::train::config::LrSchedule::Cosine),
            checkpoint_dir: Some(dir.clone()),
            sync_free: Some(sync_free),
            ..small_config()
        };
        let r =
            train(&config, Sets { train: &set, val: Some(&val), test: None }, &CancelFlag::new(), &mut |_| {}).unwrap();
        (r, weights(&dir, "last.safetensors"))
    };
    let (synced, a) = run(false, "synced");
    let (free, b) = run(true, "sync-free");
    assert_eq!(synced.optimizer_steps, free.optimizer_steps);
    for (x, y) in synced.history.iter().zip(&free.history) {
        assert_eq!(
            (x.train_loss, x.train_accuracy, x.lr, x.val_loss),
            (y.train_loss, y.train_accuracy, y.lr, y.val_loss)
        );
    }
    assert_eq!(max_diff(&a, &b), 0.0, "the same weights, bit for bit");
}

#[test]
fn a_diverging_sync_free_run_stops_with_non_finite_and_keeps_finite_weights() {
    let _turn = turn();
    let (err, warnings, kept) = diverge(true);
    assert_eq!(err.code(), ErrorCode::NonFinite, "{err}");
    assert!(warnings >= 1);
    assert!(kept.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())), "the saved weights are the last finite ones");
}

#[test]
fn a_sync_free_run_resumed_after_a_cancel_gives_the_uninterrupted_result() {
    let _turn = turn();
    let set = toy_set(48, 4);
    let base = TrainConfig { epochs: Some(3), sync_free: Some(true), ..small_config() };
    let whole = tmp("whole-sync-free");
    let full = train(
        &TrainConfig { checkpoint_dir: Some(whole.clone()), ..base.clone() },
        Sets { train: &set, val: None, test: None },
        &CancelFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    let parts = tmp("parts-sync-free");
    let cfg = TrainConfig { checkpoint_dir: Some(parts.clone()), ..base.clone() };
    let cancel = CancelFlag::new();
    let trigger = cancel.clone();
    let err = train(&cfg, Sets { train: &set, val: None, test: None }, &cancel, &mut |e| {
        if let TrainEvent::Step { epoch: 2, step: 3, .. } = e {
            trigger.cancel();
        }
    })
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let resumed = train(
        &TrainConfig { resume: true, ..cfg },
        Sets { train: &set, val: None, test: None },
        &CancelFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.optimizer_steps, full.optimizer_steps);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-6, "epoch {}: {} vs {}", a.epoch, a.train_loss, b.train_loss);
    }
    assert_eq!(max_diff(&weights(&whole, "last.safetensors"), &weights(&parts, "last.safetensors")), 0.0);
}

#[test]
fn cuda_graph_where_it_cannot_run_warns_and_trains_eagerly_to_the_same_weights() {
    let _turn = turn();
    let set = toy_set(32, 9);
    let run = |cuda_graph: bool, name: &str| {
        let dir = tmp(name);
        let config = TrainConfig {
            epochs: Some(2),
            sync_free: Some(true),
            cuda_graph,
            checkpoint_dir: Some(dir.clone()),
            ..small_config()
        };
        let mut warnings = Vec::new();
        let r = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |e| {
            if let TrainEvent::Warning { message, .. } = e {
                warnings.push(message)
            }
        })
        .unwrap();
        (r.graphed_windows, warnings, weights(&dir, "last.safetensors"))
    };
    let (_, quiet, eager) = run(false, "graph-off");
    let (graphed, warnings, asked) = run(true, "graph-on-cpu");
    assert!(quiet.is_empty(), "{quiet:?}");
    assert_eq!(graphed, 0);
    assert!(
        warnings.len() == 1 && warnings[0].contains("cudaGraph") && warnings[0].contains("CUDA device"),
        "{warnings:?}"
    );
    assert_eq!(max_diff(&eager, &asked), 0.0);
    // A graph needs the sync-free window end: asking for both the graph and the synced end is an error.
    let config = TrainConfig { cuda_graph: true, sync_free: Some(false), ..small_config() };
    let err = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOption);
    assert!(err.to_string().contains("cudaGraph"), "{err}");
}
