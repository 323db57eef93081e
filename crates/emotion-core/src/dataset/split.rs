//! Reproducible train/validation/test splits: stratified, by speaker, and k-fold variants of both.

use super::index::Item;
use super::rng::SplitMix64;
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random, with every class in the same proportion in each part (the reference pipeline's split).
    Stratified,
    /// Speaker-independent: no speaker in two parts.
    Speaker,
    /// Stratified k-fold: part `fold` of `folds` is the test set.
    Kfold,
    /// Leave-speakers-out folds: the speakers of fold `fold` are the test set.
    SpeakerKfold,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SplitOptions {
    pub strategy: Strategy,
    /// Share of the clips (`stratified`, `kfold`) or speakers (`speaker`) in the test set.
    pub test_fraction: f64,
    /// Share of all the clips (or speakers) held out for validation, taken from what the test set
    /// leaves (0: no validation set): 0.2 and 0.1 give 70/10/20.
    pub val_fraction: f64,
    /// The same items, options and seed give the same split.
    pub seed: u64,
    /// `speaker`: these speakers form the test set (else `testFraction` of the speakers, drawn by seed).
    pub test_speakers: Option<Vec<String>>,
    /// `speaker`: these speakers form the validation set.
    pub val_speakers: Option<Vec<String>>,
    /// `kfold` / `speaker-kfold`: how many folds.
    pub folds: usize,
    /// `kfold` / `speaker-kfold`: which fold is the test set (0-based).
    pub fold: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            strategy: Strategy::Stratified,
            test_fraction: 0.2,
            val_fraction: 0.0,
            seed: 42,
            test_speakers: None,
            val_speakers: None,
            folds: 5,
            fold: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    pub options: SplitOptions,
    pub train: Vec<Item>,
    pub val: Vec<Item>,
    pub test: Vec<Item>,
}

pub fn split_dataset(items: &[Item], options: &SplitOptions) -> Result<Split> {
    validate(options)?;
    if items.is_empty() {
        return Err(Error::Dataset { path: None, reason: "cannot split an empty dataset".into() });
    }
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut rng = SplitMix64::new(options.seed);
    let (train, val, test) = match options.strategy {
        Strategy::Stratified => {
            let n = sorted.len();
            let n_test = (options.test_fraction * n as f64).ceil() as usize;
            let n_val = (options.val_fraction * n as f64).ceil() as usize;
            let (rest, test) = stratified_take(&sorted, n_test, &mut rng);
            let (train, val) = stratified_take(&rest, n_val, &mut rng);
            (train, val, test)
        }
        Strategy::Speaker => {
            let speakers = speakers_of(&sorted)?;
            let test_set = pick_speakers(
                &speakers,
                options.test_speakers.as_ref(),
                options.test_fraction,
                &BTreeSet::new(),
                &mut rng,
                ("testSpeakers", "testFraction"),
            )?;
            let val_set = pick_speakers(
                &speakers,
                options.val_speakers.as_ref(),
                options.val_fraction,
                &test_set,
                &mut rng,
                ("valSpeakers", "valFraction"),
            )?;
            partition_by_speaker(&sorted, &test_set, &val_set)
        }
        Strategy::Kfold => kfold(&sorted, options, &mut rng),
        Strategy::SpeakerKfold => speaker_kfold(&sorted, options, &mut rng)?,
    };
    let own = |mut v: Vec<&Item>| {
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v.into_iter().cloned().collect::<Vec<Item>>()
    };
    Ok(Split { options: options.clone(), train: own(train), val: own(val), test: own(test) })
}

type Parts<'a> = (Vec<&'a Item>, Vec<&'a Item>, Vec<&'a Item>);

/// Fold `options.fold` of `options.folds` class-stratified folds as the test set; validation drawn
/// stratified from the rest.
fn kfold<'a>(sorted: &[&'a Item], options: &SplitOptions, rng: &mut SplitMix64) -> Parts<'a> {
    let mut by_class = group(sorted, |i| i.label.clone());
    let mut test = Vec::new();
    let mut rest = Vec::new();
    let mut position = 0usize;
    for members in by_class.values_mut() {
        rng.shuffle(members);
        for item in members.iter() {
            if position % options.folds == options.fold {
                test.push(*item)
            } else {
                rest.push(*item)
            }
            position += 1;
        }
    }
    let n_val = (options.val_fraction * sorted.len() as f64).ceil() as usize;
    let (train, val) = stratified_take(&rest, n_val, rng);
    (train, val, test)
}

/// Fold `options.fold` of `options.folds` folds of whole speakers as the test set; validation speakers
/// drawn from the rest.
fn speaker_kfold<'a>(sorted: &[&'a Item], options: &SplitOptions, rng: &mut SplitMix64) -> Result<Parts<'a>> {
    let mut speakers: Vec<String> = speakers_of(sorted)?.into_iter().collect();
    if speakers.len() < options.folds {
        return Err(Error::invalid("folds", format!("{} folds but only {} speakers", options.folds, speakers.len())));
    }
    rng.shuffle(&mut speakers);
    let test_set: BTreeSet<String> = speakers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % options.folds == options.fold)
        .map(|(_, s)| s.clone())
        .collect();
    let remaining: BTreeSet<String> = speakers.iter().filter(|s| !test_set.contains(*s)).cloned().collect();
    let val_set =
        pick_speakers(&remaining, None, options.val_fraction, &test_set, rng, ("valSpeakers", "valFraction"))?;
    Ok(partition_by_speaker(sorted, &test_set, &val_set))
}

fn validate(o: &SplitOptions) -> Result<()> {
    let frac = |name: &str, v: f64| {
        if (0.0..1.0).contains(&v) {
            Ok(())
        } else {
            Err(Error::invalid(name, format!("must be in [0, 1), got {v}")))
        }
    };
    frac("testFraction", o.test_fraction)?;
    frac("valFraction", o.val_fraction)?;
    if o.test_fraction + o.val_fraction >= 1.0 {
        return Err(Error::invalid("valFraction", "testFraction + valFraction must be < 1"));
    }
    if matches!(o.strategy, Strategy::Kfold | Strategy::SpeakerKfold) {
        if o.folds < 2 {
            return Err(Error::invalid("folds", format!("must be ≥ 2, got {}", o.folds)));
        }
        if o.fold >= o.folds {
            return Err(Error::invalid("fold", format!("must be < folds ({}), got {}", o.folds, o.fold)));
        }
    }
    Ok(())
}

fn group<'a, K: Ord>(items: &[&'a Item], key: impl Fn(&Item) -> K) -> BTreeMap<K, Vec<&'a Item>> {
    let mut map: BTreeMap<K, Vec<&Item>> = BTreeMap::new();
    for item in items {
        map.entry(key(item)).or_default().push(item);
    }
    map
}

/// Takes `n` items with class proportions kept (largest remainder, ties broken by seed); returns (rest, taken).
fn stratified_take<'a>(items: &[&'a Item], n: usize, rng: &mut SplitMix64) -> (Vec<&'a Item>, Vec<&'a Item>) {
    let mut by_class = group(items, |i| i.label.clone());
    let total = items.len().max(1);
    let n = n.min(items.len());
    let exact: Vec<f64> = by_class.values().map(|m| m.len() as f64 * n as f64 / total as f64).collect();
    let mut quota: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..quota.len()).collect();
    rng.shuffle(&mut order);
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut missing = n - quota.iter().sum::<usize>();
    for &k in order.iter().cycle().take(order.len() * 2) {
        if missing == 0 {
            break;
        }
        if quota[k] < by_class.values().nth(k).map_or(0, |m| m.len()) {
            quota[k] += 1;
            missing -= 1;
        }
    }
    let (mut rest, mut taken) = (Vec::new(), Vec::new());
    for (k, members) in by_class.values_mut().enumerate() {
        rng.shuffle(members);
        taken.extend_from_slice(&members[..quota[k]]);
        rest.extend_from_slice(&members[quota[k]..]);
    }
    (rest, taken)
}

fn speakers_of(items: &[&Item]) -> Result<BTreeSet<String>> {
    if let Some(item) = items.iter().find(|i| i.speaker.is_empty()) {
        return Err(Error::Dataset {
            path: Some(item.path.clone().into()),
            reason: "a speaker split needs a speaker for every item (RAVDESS names or a manifest `speaker` column)"
                .into(),
        });
    }
    Ok(items.iter().map(|i| i.speaker.clone()).collect())
}

fn pick_speakers(
    all: &BTreeSet<String>,
    named: Option<&Vec<String>>,
    fraction: f64,
    taken: &BTreeSet<String>,
    rng: &mut SplitMix64,
    (option, fraction_option): (&str, &str),
) -> Result<BTreeSet<String>> {
    if let Some(list) = named {
        for s in list {
            if !all.contains(s) {
                return Err(Error::invalid(
                    option,
                    format!("unknown speaker '{s}' (known: {})", all.iter().cloned().collect::<Vec<_>>().join(", ")),
                ));
            }
            if taken.contains(s) {
                return Err(Error::invalid(option, format!("speaker '{s}' is already in the test set")));
            }
        }
        return Ok(list.iter().cloned().collect());
    }
    if fraction == 0.0 {
        return Ok(BTreeSet::new());
    }
    let mut pool: Vec<String> = all.iter().filter(|s| !taken.contains(*s)).cloned().collect();
    let n = ((fraction * all.len() as f64).round() as usize).max(1);
    if n >= pool.len() {
        // The fraction asked for the speakers, so the fraction is the option to change.
        return Err(Error::invalid(
            fraction_option,
            format!(
                "is {fraction}: {n} speaker(s) requested but only {} available (at least one must stay in training)",
                pool.len()
            ),
        ));
    }
    rng.shuffle(&mut pool);
    Ok(pool.into_iter().take(n).collect())
}

fn partition_by_speaker<'a>(
    items: &[&'a Item],
    test: &BTreeSet<String>,
    val: &BTreeSet<String>,
) -> (Vec<&'a Item>, Vec<&'a Item>, Vec<&'a Item>) {
    let (mut train, mut v, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for &item in items {
        if test.contains(&item.speaker) {
            t.push(item)
        } else if val.contains(&item.speaker) {
            v.push(item)
        } else {
            train.push(item)
        }
    }
    (train, v, t)
}
