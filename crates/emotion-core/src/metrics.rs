//! Classification metrics from predictions: accuracy, weighted and macro precision/recall/F1, UAR,
//! per-class scores and the confusion matrix (rows: true class, columns: predicted).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// Scores of one class.
pub struct ClassScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Clips of this class in the scored set.
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// Scores of a model on one set of clips.
pub struct Metrics {
    pub accuracy: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Unweighted average recall (= macro recall), the usual SER figure.
    pub uar: f64,
    pub per_class: Vec<ClassScores>,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<usize>>,
    /// Clips scored.
    pub count: usize,
}

/// `truth` and `predicted` are class indices into `labels`. Undefined ratios (0/0) count as 0, as
/// scikit-learn's `zero_division=0`.
pub fn classification_metrics(truth: &[i64], predicted: &[i64], labels: &[String]) -> Metrics {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        if (t as usize) < k && (p as usize) < k {
            confusion[t as usize][p as usize] += 1;
        }
    }
    let n = truth.len();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassScores> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted_c);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            ClassScores { label: labels[c].clone(), precision, recall, f1, support }
        })
        .collect();
    let weighted =
        |f: fn(&ClassScores) -> f64| per_class.iter().map(|c| f(c) * c.support as f64).sum::<f64>() / n.max(1) as f64;
    let mean = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / k.max(1) as f64;
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    Metrics {
        accuracy: ratio(correct, n),
        weighted_precision: weighted(|c| c.precision),
        weighted_recall: weighted(|c| c.recall),
        weighted_f1: weighted(|c| c.f1),
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        uar: mean(|c| c.recall),
        per_class,
        confusion,
        count: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_scores() {
        // By hand: F1 per class 0.5, 0.8, 0 with supports 2, 2, 1.
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = classification_metrics(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], &labels);
        assert_eq!(m.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.weighted_f1 - 0.52).abs() < 1e-12, "{}", m.weighted_f1);
        assert!((m.macro_f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
        assert!((m.uar - 0.5).abs() < 1e-12);
    }
}
