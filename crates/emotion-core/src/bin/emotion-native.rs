//! Native command line for long runs and benchmarks without Node:
//!   emotion-native train-audio --data DIR --out DIR [--epochs 50] [--device auto] [--seed 42]
//!     [--split stratified|speaker] [--cache DIR] [--resume]
//!   emotion-native evaluate-audio --data DIR --out DIR [--seed 42] [--split stratified|speaker] [--cache DIR]
//! `train-audio` indexes the corpus, splits it, extracts (cached) log-mel features and trains the audio
//! CNN with the reference settings, printing one JSON line per epoch and the final result.
//! `evaluate-audio` scores the checkpoint in `--out` on the same test split (e.g. of a run in progress).

use emotion_core::audio::features::{extract_mel, AudioInput, ExtractOptions};
use emotion_core::control::CancelFlag;
use emotion_core::dataset::{index_dataset, split_dataset, IndexOptions, Item, SplitOptions, Strategy};
use emotion_core::train::{train, HostSet, Sets, TrainConfig, TrainEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("train-audio") => run(&args),
        Some("evaluate-audio") => evaluate(&args),
        _ => {
            eprintln!("usage: emotion-native train-audio|evaluate-audio --data DIR --out DIR [--epochs 50] [--device auto] [--seed 42] [--split stratified|speaker] [--cache DIR] [--resume]");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error [{}]: {e}", e.code());
        std::process::exit(1);
    }
}

struct Prepared {
    split: emotion_core::dataset::Split,
    strategy: Strategy,
    device: String,
    cache: Option<PathBuf>,
}

fn prepare(args: &[String]) -> emotion_core::Result<Prepared> {
    let data = PathBuf::from(arg(args, "--data").unwrap_or_else(|| "../shared/data/ravdess".into()));
    let seed: u64 = arg(args, "--seed").map(|s| s.parse().expect("--seed N")).unwrap_or(42);
    let strategy = match arg(args, "--split").as_deref() {
        Some("speaker") => Strategy::Speaker,
        _ => Strategy::Stratified,
    };
    let index = index_dataset(&data, &IndexOptions::default(), &CancelFlag::new(), &mut |_| {})?;
    let split = split_dataset(&index.items, &SplitOptions { strategy, seed, ..SplitOptions::default() })?;
    Ok(Prepared {
        split,
        strategy,
        device: arg(args, "--device").unwrap_or_else(|| "auto".into()),
        cache: arg(args, "--cache").map(PathBuf::from),
    })
}

fn features(items: &[Item], device: &str, cache: &Option<PathBuf>) -> emotion_core::Result<HostSet> {
    let inputs: Vec<AudioInput> = items.iter().map(|i| AudioInput::Path(PathBuf::from(&i.path))).collect();
    let options =
        ExtractOptions { device: device.into(), cache_dir: cache.clone(), strict: true, ..ExtractOptions::default() };
    let mel = extract_mel(&inputs, &options, &CancelFlag::new(), &mut |_| {})?;
    let labels: HashMap<&str, i64> =
        emotion_core::dataset::ravdess::EMOTIONS.iter().enumerate().map(|(i, l)| (*l, i as i64)).collect();
    Ok(HostSet {
        mel: Some((mel.data, mel.shape)),
        tokens: None,
        labels: items.iter().map(|i| labels[i.label.as_str()]).collect(),
    })
}

fn evaluate(args: &[String]) -> emotion_core::Result<()> {
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "runs/native-audio".into()));
    let p = prepare(args)?;
    let test = features(&p.split.test, &p.device, &p.cache)?;
    let model = emotion_core::train::predict::load_model(&out, &p.device)?;
    let predicted: Vec<i64> =
        model.predict(&HostSet { labels: vec![], ..test.clone() })?.iter().map(|x| x.index as i64).collect();
    let m = emotion_core::metrics::classification_metrics(&test.labels, &predicted, &model.meta.config.labels);
    let summary = serde_json::json!({
        "checkpointEpoch": model.meta.epoch, "test": p.split.test.len(), "split": format!("{:?}", p.strategy).to_lowercase(),
        "testAccuracy": m.accuracy, "testWeightedF1": m.weighted_f1, "testUar": m.uar, "confusion": m.confusion,
    });
    println!("{summary}");
    Ok(())
}

fn run(args: &[String]) -> emotion_core::Result<()> {
    let out = PathBuf::from(arg(args, "--out").unwrap_or_else(|| "runs/native-audio".into()));
    let epochs: u32 = arg(args, "--epochs").map(|s| s.parse().expect("--epochs N")).unwrap_or(50);
    let seed: u64 = arg(args, "--seed").map(|s| s.parse().expect("--seed N")).unwrap_or(42);
    let t0 = Instant::now();
    let Prepared { split, strategy, device, cache } = prepare(args)?;
    let index_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (train_set, test_set) = (features(&split.train, &device, &cache)?, features(&split.test, &device, &cache)?);
    let feature_seconds = t1.elapsed().as_secs_f64();
    eprintln!(
        "{} train / {} test clips; index {index_seconds:.1}s, features {feature_seconds:.1}s",
        split.train.len(),
        split.test.len()
    );
    let resume = args.iter().any(|a| a == "--resume");
    let config =
        TrainConfig { epochs, seed, device, checkpoint_dir: Some(out.clone()), resume, ..TrainConfig::default() };
    let result =
        train(&config, Sets { train: &train_set, val: None, test: Some(&test_set) }, &CancelFlag::new(), &mut |e| {
            match e {
                TrainEvent::EpochEnd { record, .. } => {
                    println!("{}", serde_json::to_string(&record).unwrap_or_default())
                }
                TrainEvent::Warning { message, .. } => eprintln!("warning: {message}"),
                _ => {}
            }
        })?;
    let summary = serde_json::json!({
        "model": "audio",
        "split": format!("{strategy:?}").to_lowercase(),
        "train": split.train.len(),
        "test": split.test.len(),
        "device": result.device,
        "precision": result.precision,
        "epochs": epochs,
        "testAccuracy": result.test.as_ref().map(|m| m.accuracy),
        "testWeightedF1": result.test.as_ref().map(|m| m.weighted_f1),
        "testUar": result.test.as_ref().map(|m| m.uar),
        "trainSeconds": result.seconds,
        "featureSeconds": feature_seconds,
        "microStepsPerSecond": result.micro_steps_per_second,
        "confusion": result.test.as_ref().map(|m| m.confusion.clone()),
    });
    println!("{summary}");
    std::fs::write(out.join("result.json"), serde_json::to_vec_pretty(&summary).unwrap_or_default())
        .map_err(|e| emotion_core::Error::io(&out, e))?;
    Ok(())
}
