//! Weighted k-nearest-neighbour classification (the monitor of InstDisc, Wu et al. 2018, used by
//! most SSL libraries): cosine similarity on L2-normalised features, the k most similar training
//! features vote for their class with weight exp(sim/T).

use super::Features;
use crate::{Error, Result};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The kNN monitor (not in the paper; the protocol common in SSL libraries).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KnnConfig {
    /// Number of neighbours.
    #[serde(default = "d_k")]
    pub k: usize,
    /// Temperature T of the vote weights exp(sim/T).
    #[serde(default = "d_t")]
    pub temperature: f64,
    /// Images per forward pass when extracting features.
    #[serde(default = "d_feat_batch")]
    pub batch_size: usize,
}

fn d_k() -> usize {
    200
}
fn d_t() -> f64 {
    0.1
}
fn d_feat_batch() -> usize {
    256
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            k: d_k(),
            temperature: d_t(),
            batch_size: d_feat_batch(),
        }
    }
}

impl KnnConfig {
    /// Check the section's values.
    pub fn validate(&self) -> Result<()> {
        let k = self;
        if k.k == 0 {
            return Err(Error::config("eval.knn.k", "must be at least 1"));
        }
        if !(k.temperature > 0.0 && k.temperature.is_finite()) {
            return Err(Error::config(
                "eval.knn.temperature",
                "must be a positive number",
            ));
        }
        if k.batch_size == 0 {
            return Err(Error::config("eval.knn.batch-size", "must be at least 1"));
        }
        Ok(())
    }
}

/// Accuracy of a kNN classification.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnResult {
    pub top1: f64,
    pub top5: f64,
}

fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Classify `test` ([M, D]) by its `k` nearest `train` ([N, D]) features. Similarities are
/// computed on `device` in chunks of test rows.
pub fn knn_classify(
    train: &Features,
    test: &Features,
    num_classes: usize,
    k: usize,
    temperature: f64,
    device: &Device,
) -> KnnResult {
    assert_eq!(
        train.dim, test.dim,
        "train and test features of different sizes"
    );
    let (dim, train_labels, test_labels) = (train.dim, &train.labels[..], &test.labels[..]);
    let (train, test) = (&train.values[..], &test.values[..]);
    let (n, m) = (train_labels.len(), test_labels.len());
    assert_eq!(train.len(), n * dim);
    assert_eq!(test.len(), m * dim);
    let k = k.min(n);
    let mut tr = train.to_vec();
    let mut te = test.to_vec();
    normalize_rows(&mut tr, dim);
    normalize_rows(&mut te, dim);
    let bank = Tensor::<2>::from_data(TensorData::new(tr, [n, dim]), device).transpose(); // [D, N]
    let chunk = (16_000_000 / n.max(1)).clamp(1, 1024);
    let (mut hit1, mut hit5) = (0usize, 0usize);
    for start in (0..m).step_by(chunk) {
        let end = (start + chunk).min(m);
        let q = Tensor::<2>::from_data(
            TensorData::new(te[start * dim..end * dim].to_vec(), [end - start, dim]),
            device,
        ); // [c, D]
        let sim: Vec<f32> = q
            .matmul(bank.clone())
            .into_data()
            .try_into_vec()
            .expect("f32"); // [c, N]
        for (r, row) in sim.chunks(n).enumerate() {
            let mut idx: Vec<usize> = (0..n).collect();
            if k < n {
                idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
                idx.truncate(k);
            }
            let mut votes = vec![0f64; num_classes];
            for &i in &idx {
                votes[train_labels[i]] += (f64::from(row[i]) / temperature).exp();
            }
            let truth = test_labels[start + r];
            let mut ranked: Vec<usize> = (0..num_classes).collect();
            ranked.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
            if ranked[0] == truth {
                hit1 += 1;
            }
            if ranked.iter().take(5).any(|&c| c == truth) {
                hit5 += 1;
            }
        }
    }
    KnnResult {
        top1: hit1 as f64 / m.max(1) as f64,
        top5: hit5 as f64 / m.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(values: &[f32], labels: &[usize]) -> Features {
        Features {
            values: values.to_vec(),
            labels: labels.to_vec(),
            dim: 2,
        }
    }

    #[test]
    fn hand_built_features_give_the_known_answer() {
        // Training features on the unit circle: class 0 near angle 0, class 1 near π/2, class 2
        // near π. k = 3, T = 0.1.
        let ang = |a: f32| [a.cos(), a.sin()];
        let train: Vec<f32> = [0.0, 0.1, -0.1, 1.5, 1.6, 1.7, 3.1, 3.2, 3.0]
            .iter()
            .flat_map(|&a| ang(a))
            .collect();
        let labels = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        // Test points: angle 0.05 → class 0; 1.55 → class 1; 2.9 → class 2; 0.8 is nearer
        // class 1's (1.5) than class 0's (0.1) only with k=1, but k=3 with the weights picks:
        // neighbours 1.5 (sim cos 0.7), 0.1 (cos 0.7)… computed below.
        let test: Vec<f32> = [0.05f32, 1.55, 2.9]
            .iter()
            .flat_map(|&a| ang(a).map(|v| v * 3.0))
            .collect();
        let r = knn_classify(
            &features(&train, &labels),
            &features(&test, &[0, 1, 2]),
            3,
            3,
            0.1,
            &Device::flex(),
        );
        assert_eq!(r.top1, 1.0);
        // Wrong labels for the same points: top-1 is 0, top-5 (3 classes) is 1.
        let r = knn_classify(
            &features(&train, &labels),
            &features(&test, &[1, 2, 0]),
            3,
            3,
            0.1,
            &Device::flex(),
        );
        assert_eq!(r.top1, 0.0);
        assert_eq!(r.top5, 1.0);
    }

    #[test]
    fn weights_decide_between_classes() {
        // k = 3: two class-1 neighbours at similarity 0.5 and one class-0 neighbour at 1.0.
        // Votes with T = 0.1: class 0: e^10 ≈ 22026; class 1: 2·e^5 ≈ 297 → class 0.
        // With T = 10: class 0: e^0.1 ≈ 1.105; class 1: 2·e^0.05 ≈ 2.10 → class 1.
        let train = vec![1.0, 0.0, 0.5, 0.75f32.sqrt(), 0.5, -(0.75f32.sqrt())];
        let labels = [0, 1, 1];
        let test = vec![1.0, 0.0];
        assert_eq!(
            knn_classify(
                &features(&train, &labels),
                &features(&test, &[0]),
                2,
                3,
                0.1,
                &Device::flex()
            )
            .top1,
            1.0
        );
        assert_eq!(
            knn_classify(
                &features(&train, &labels),
                &features(&test, &[1]),
                2,
                3,
                10.0,
                &Device::flex()
            )
            .top1,
            1.0
        );
    }
}
