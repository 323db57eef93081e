//! The encoder head on synthetic pooled states: it learns from the layer that carries the label,
//! handles row groups, and its speaker adversary steers it away from the layer that tells speakers apart.

use emotion_core::control::CancelFlag;
use emotion_core::dataset::rng::SplitMix64;
use emotion_core::error::ErrorCode;
use emotion_core::train::predict::load_model;
use emotion_core::train::{train, HostSet, ModelKind, Sets, TrainConfig};

mod common;
use common::{small_config, tmp, toy_embeddings, turn, weights};

#[test]
fn encoder_head_learns_from_the_layer_that_carries_the_label_and_predicts_from_its_checkpoint() {
    let _turn = turn();
    let dir = tmp("encoder-head");
    let (train_set, val_set) = (toy_embeddings(96, 5), toy_embeddings(48, 6));
    let config = TrainConfig {
        model: ModelKind::Encoder,
        encoder_head: emotion_core::models::EncoderHeadConfig {
            input_layers: 3,
            input_width: 8,
            groups: 1,
            hidden: vec![16],
            dropout: 0.0,
            ..Default::default()
        },
        epochs: Some(30),
        optim: emotion_core::optim::AdamConfig { lr: 1e-2, ..Default::default() },
        checkpoint_dir: Some(dir.clone()),
        ..small_config()
    };
    let r = train(
        &config,
        Sets { train: &train_set, val: Some(&val_set), test: Some(&val_set) },
        &CancelFlag::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(r.test.as_ref().unwrap().accuracy > 0.9, "test accuracy {:?}", r.test.as_ref().map(|m| m.accuracy));
    let saved = weights(&dir, "best.safetensors");
    let mix = &saved.iter().find(|(k, _)| k == "layerWeights").expect("layer weights saved").1;
    assert!(mix[1] > mix[0] && mix[1] > mix[2], "layer 1 carries the label; learned logits {mix:?}");
    let model = load_model(&dir, "cpu").unwrap();
    let predictions = model.predict(&HostSet { labels: vec![], ..val_set.clone() }).unwrap();
    let correct = predictions.iter().zip(&val_set.labels).filter(|(p, &l)| p.index as i64 == l).count();
    assert!(correct as f64 / 48.0 > 0.9);
    let wrong = HostSet { embedding: Some((vec![0.0; 4 * 3 * 9], [4, 3, 9])), ..HostSet::default() };
    let err = model.predict(&wrong).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOption);
    assert!(err.to_string().contains("inputs.embedding"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn encoder_head_with_two_row_groups_learns_and_groups_must_divide_the_rows() {
    let _turn = turn();
    // Six rows = two groups of three (means, deviations): the label sits in the second group's row 1.
    let widen = |set: HostSet| {
        let (data, [n, layers, width]) = set.embedding.clone().unwrap();
        let mut out = Vec::with_capacity(n * 2 * layers * width);
        for i in 0..n {
            out.extend(std::iter::repeat_n(0.5f32, layers * width));
            out.extend_from_slice(&data[i * layers * width..(i + 1) * layers * width]);
        }
        HostSet { embedding: Some((out, [n, 2 * layers, width])), ..set }
    };
    let (train_set, val_set) = (widen(toy_embeddings(96, 7)), widen(toy_embeddings(48, 8)));
    let head = emotion_core::models::EncoderHeadConfig {
        input_layers: 6,
        input_width: 8,
        groups: 2,
        hidden: vec![16],
        dropout: 0.0,
        ..Default::default()
    };
    let config = TrainConfig {
        model: ModelKind::Encoder,
        encoder_head: head.clone(),
        epochs: Some(30),
        optim: emotion_core::optim::AdamConfig { lr: 1e-2, ..Default::default() },
        ..small_config()
    };
    let sets = Sets { train: &train_set, val: None, test: Some(&val_set) };
    let r = train(&config, sets, &CancelFlag::new(), &mut |_| {}).unwrap();
    assert!(r.test.as_ref().unwrap().accuracy > 0.9, "test accuracy {:?}", r.test.as_ref().map(|m| m.accuracy));
    let bad = TrainConfig { encoder_head: emotion_core::models::EncoderHeadConfig { groups: 4, ..head }, ..config };
    let err =
        train(&bad, Sets { train: &train_set, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("encoderHead.groups"), "{err}");
}

/// Rows of 3 layers × 8: the class in layer 1, the speaker (4 of them, balanced over the classes) in
/// layer 2, which a head may use freely since it says nothing of the class.
fn toy_speakers(n: usize, seed: u64) -> HostSet {
    let (layers, width) = (3, 8);
    let mut rng = SplitMix64::new(seed);
    let mut data = Vec::with_capacity(n * layers * width);
    let (mut labels, mut speakers) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (class, speaker) = (i % 3, (i / 3) % 4);
        for layer in 0..layers {
            for d in 0..width {
                let noise = (rng.next_u64() % 1000) as f32 / 500.0 - 1.0;
                let signal = match layer {
                    1 if d % 3 == class => 2.0,
                    2 if d % 4 == speaker => 4.0,
                    _ => 0.0,
                };
                data.push(signal + noise);
            }
        }
        labels.push(class as i64);
        speakers.push(speaker as i64);
    }
    HostSet { embedding: Some((data, [n, layers, width])), labels, speaker_ids: Some(speakers), ..HostSet::default() }
}

#[test]
fn the_speaker_adversary_steers_the_head_away_from_the_layer_that_tells_speakers_apart() {
    let _turn = turn();
    let set = toy_speakers(96, 11);
    let run = |adversary: f64, name: &str| {
        let dir = tmp(name);
        let config = TrainConfig {
            model: ModelKind::Encoder,
            encoder_head: emotion_core::models::EncoderHeadConfig {
                input_layers: 3,
                input_width: 8,
                hidden: vec![16],
                dropout: 0.0,
                speaker_adversary: adversary,
                speakers: 4,
                ..Default::default()
            },
            epochs: Some(30),
            optim: emotion_core::optim::AdamConfig { lr: 1e-2, ..Default::default() },
            checkpoint_dir: Some(dir.clone()),
            ..small_config()
        };
        let r =
            train(&config, Sets { train: &set, val: None, test: Some(&set) }, &CancelFlag::new(), &mut |_| {}).unwrap();
        let saved = weights(&dir, "last.safetensors");
        let mix = saved.iter().find(|(k, _)| k == "layerWeights").expect("layer weights").1.clone();
        let softmax = |v: &[f32]| {
            let z: f32 = v.iter().map(|x| x.exp()).sum();
            v.iter().map(|x| x.exp() / z).collect::<Vec<f32>>()
        };
        (r.test.unwrap().accuracy, softmax(&mix), saved.iter().any(|(k, _)| k.starts_with("adversary")))
    };
    let (plain_accuracy, plain, plain_has) = run(0.0, "adv-off");
    let (accuracy, mix, has) = run(1.0, "adv-on");
    assert!(!plain_has && has, "the adversary's classifier exists only when asked for");
    assert!(plain_accuracy > 0.9 && accuracy > 0.9, "both learn the class: {plain_accuracy} {accuracy}");
    assert!(mix[2] < plain[2], "the speaker layer's weight falls with the adversary: {mix:?} vs {plain:?}");
    // Without the speakers of the training rows, or with fewer than 2, it is refused by name.
    let head = emotion_core::models::EncoderHeadConfig {
        input_layers: 3,
        input_width: 8,
        speaker_adversary: 0.3,
        speakers: 4,
        ..Default::default()
    };
    let config = TrainConfig { model: ModelKind::Encoder, encoder_head: head.clone(), ..small_config() };
    let no_groups = HostSet { speaker_ids: None, ..set.clone() };
    let err =
        train(&config, Sets { train: &no_groups, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("train.speakerIds"), "{err}");
    let config =
        TrainConfig { encoder_head: emotion_core::models::EncoderHeadConfig { speakers: 1, ..head }, ..config };
    let err = train(&config, Sets { train: &set, val: None, test: None }, &CancelFlag::new(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("encoderHead.speakers"), "{err}");
}
