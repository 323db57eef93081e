//! Per-speaker standardisation of encoder states: each dimension to mean 0 and deviation 1 over one
//! speaker's clips. Training uses every speaker's clips (`speakerNorm`, test speakers included: their
//! unlabelled audio); prediction, a new speaker's unlabelled calibration clips.

/// Mean and deviation of each dimension over one speaker's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerStats {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// The statistics of `rows` (each `per` values long, all of one speaker).
pub fn speaker_stats<'a>(rows: impl ExactSizeIterator<Item = &'a [f32]>, per: usize) -> SpeakerStats {
    let n = rows.len() as f64;
    let (mut mean, mut square) = (vec![0.0f64; per], vec![0.0f64; per]);
    for row in rows {
        for (d, &x) in row.iter().enumerate() {
            let x = x as f64;
            mean[d] += x / n;
            square[d] += x * x / n;
        }
    }
    let std = mean.iter().zip(&square).map(|(m, s)| (s - m * m).max(1e-8).sqrt()).collect();
    SpeakerStats { mean, std }
}

/// Standardises one row in place.
pub fn standardise(row: &mut [f32], stats: &SpeakerStats) {
    for (d, x) in row.iter_mut().enumerate() {
        *x = ((*x as f64 - stats.mean[d]) / stats.std[d]) as f32;
    }
}

/// Standardises the rows of `data` (`per` values each) in place, each with the statistics of the rows
/// of its speaker (`speakers[i]`, any ids).
pub fn standardise_by_speaker(data: &mut [f32], per: usize, speakers: &[i64]) {
    let mut ids: Vec<i64> = speakers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let rows: Vec<usize> = (0..speakers.len()).filter(|&i| speakers[i] == id).collect();
        let stats = speaker_stats(rows.iter().map(|&i| &data[i * per..(i + 1) * per]), per);
        for &i in &rows {
            standardise(&mut data[i * per..(i + 1) * per], &stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_speaker_s_rows_end_with_mean_zero_and_deviation_one() {
        let mut data = vec![1.0, 10.0, 3.0, 30.0, 100.0, 0.5, 300.0, 1.5, 5.0, 50.0];
        standardise_by_speaker(&mut data, 2, &[7, 7, 2, 2, 7]);
        for (rows, d) in [([0usize, 1, 4], 0usize), ([0, 1, 4], 1)] {
            let v: Vec<f64> = rows.iter().map(|&i| data[i * 2 + d] as f64).collect();
            let mean = v.iter().sum::<f64>() / 3.0;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{v:?}");
        }
        assert_eq!((data[4], data[6]), (-1.0, 1.0));
    }
}
