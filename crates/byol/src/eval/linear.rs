//! Linear evaluation (paper Section 4.1 and Appendix C.1): a linear classifier on the frozen
//! representation y, trained with SGD with Nesterov momentum 0.9, no weight decay, a cosine
//! learning-rate schedule, batch 1024; the learning rate is chosen on a class-balanced validation
//! split held out from the training set, then the classifier is retrained on train + validation
//! and reported on the test split (top-1 and top-5).
//!
//! This is the fast mode: features are computed once, without augmentation (the paper trains
//! with random crops and flips). Features are standardised with the training mean and standard
//! deviation, which is a fixed affine map of y (equivalent to a parameter-free BatchNorm before
//! the classifier); it makes one learning-rate grid fit encoders of every scale.
//! The gradient of the softmax cross-entropy is written out, so no autodiff is needed.

use crate::{Error, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Linear-evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinearEvalConfig {
    /// Training epochs. Paper: 80.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Batch size. Paper: 1024.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Learning rates tried. Paper: {0.4, 0.3, 0.2, 0.1, 0.05}.
    #[serde(default = "d_lrs")]
    pub learning_rates: Vec<f64>,
    /// Fraction of each class of the training set held out to choose the learning rate.
    #[serde(default = "d_val")]
    pub validation_fraction: f64,
    /// Nesterov momentum. Paper: 0.9.
    #[serde(default = "d_mom")]
    pub momentum: f64,
}

fn d_epochs() -> usize {
    80
}
fn d_batch() -> usize {
    1024
}
fn d_lrs() -> Vec<f64> {
    vec![0.4, 0.3, 0.2, 0.1, 0.05]
}
fn d_val() -> f64 {
    0.1
}
fn d_mom() -> f64 {
    0.9
}

impl Default for LinearEvalConfig {
    fn default() -> Self {
        Self {
            epochs: d_epochs(),
            batch_size: d_batch(),
            learning_rates: d_lrs(),
            validation_fraction: d_val(),
            momentum: d_mom(),
        }
    }
}

impl LinearEvalConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("eval.linear.epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config(
                "eval.linear.batch-size",
                "must be at least 1",
            ));
        }
        if self.learning_rates.is_empty()
            || self
                .learning_rates
                .iter()
                .any(|l| !(*l > 0.0 && l.is_finite()))
        {
            return Err(Error::config(
                "eval.linear.learning-rates",
                "must be a non-empty list of positive numbers",
            ));
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return Err(Error::config(
                "eval.linear.validation-fraction",
                format!("{} is outside (0, 1)", self.validation_fraction),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(
                "eval.linear.momentum",
                format!("{} is outside [0, 1)", self.momentum),
            ));
        }
        Ok(())
    }
}

/// Features with their labels: a row-major [N, D] matrix.
#[derive(Debug, Clone)]
pub struct Features {
    pub values: Vec<f32>,
    pub labels: Vec<usize>,
    pub dim: usize,
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    fn rows(&self, idx: &[usize]) -> Features {
        let mut values = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            values.extend_from_slice(&self.values[i * self.dim..(i + 1) * self.dim]);
        }
        Features {
            values,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            dim: self.dim,
        }
    }
}

/// A trained linear classifier.
pub struct Classifier {
    /// [D, C]
    pub weight: Tensor<2>,
    /// [1, C]
    pub bias: Tensor<2>,
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Accuracy on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

/// The outcome of the protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearResult {
    /// (learning rate, validation top-1) for every rate tried.
    pub sweep: Vec<(f64, f64)>,
    pub best_lr: f64,
    pub train: Accuracy,
    pub test: Accuracy,
}

fn standardisation(f: &Features) -> (Vec<f32>, Vec<f32>) {
    let n = f.len().max(1) as f64;
    let mut mean = vec![0f64; f.dim];
    for row in f.values.chunks(f.dim) {
        row.iter()
            .zip(&mut mean)
            .for_each(|(v, m)| *m += f64::from(*v));
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; f.dim];
    for row in f.values.chunks(f.dim) {
        row.iter()
            .zip(&mean)
            .zip(&mut var)
            .for_each(|((v, m), s)| *s += (f64::from(*v) - m).powi(2));
    }
    let std = var
        .iter()
        .map(|s| ((s / n).sqrt().max(1e-6)) as f32)
        .collect();
    (mean.iter().map(|m| *m as f32).collect(), std)
}

fn to_device(f: &Features, mean: &[f32], std: &[f32], device: &Device) -> Tensor<2> {
    let mut v = f.values.clone();
    for row in v.chunks_mut(f.dim) {
        for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
            *x = (*x - m) / s;
        }
    }
    Tensor::from_data(TensorData::new(v, [f.len(), f.dim]), device)
}

/// Train a classifier on `train` with learning rate `lr` (seeded shuffles).
pub fn train_classifier(
    train: &Features,
    classes: usize,
    lr: f64,
    cfg: &LinearEvalConfig,
    seed: u64,
    device: &Device,
) -> Classifier {
    use rand::seq::SliceRandom;
    let (mean, std) = standardisation(train);
    let x = to_device(train, &mean, &std, device); // [N, D]
    let n = train.len();
    let onehot: Vec<f32> = train
        .labels
        .iter()
        .flat_map(|&l| (0..classes).map(move |c| if c == l { 1.0 } else { 0.0 }))
        .collect();
    let y = Tensor::<2>::from_data(TensorData::new(onehot, [n, classes]), device); // [N, C]
    let mut w = Tensor::<2>::zeros([train.dim, classes], device);
    let mut b = Tensor::<2>::zeros([1, classes], device);
    let mut vw = w.zeros_like();
    let mut vb = b.zeros_like();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = (steps_per_epoch * cfg.epochs) as f64;
    let mut step = 0usize;
    let mu = cfg.momentum;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut crate::rng::rng(
            seed,
            crate::rng::Stream::LinearOrder,
            &[epoch as u64],
        ));
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(
                    chunk.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [chunk.len()],
                ),
                device,
            );
            let xb = x.clone().select(0, idx.clone()); // [B, D]
            let yb = y.clone().select(0, idx); // [B, C]
            let logits = xb.clone().matmul(w.clone()) + b.clone(); // [B, C]
            let p = burn::tensor::activation::softmax(logits, 1); // [B, C]
            let g = (p - yb).div_scalar(chunk.len() as f64); // dL/dlogits: [B, C]
            let gw = xb.transpose().matmul(g.clone()); // [D, C]
            let gb = g.sum_dim(0); // [1, C]
            let lr_t = lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            // Nesterov: v ← μv + g; w ← w − lr·(g + μv).
            vw = vw.mul_scalar(mu) + gw.clone();
            vb = vb.mul_scalar(mu) + gb.clone();
            w = w - (gw + vw.clone().mul_scalar(mu)).mul_scalar(lr_t);
            b = b - (gb + vb.clone().mul_scalar(mu)).mul_scalar(lr_t);
            step += 1;
        }
    }
    Classifier {
        weight: w,
        bias: b,
        mean,
        std,
    }
}

/// Top-1 and top-5 accuracy of row-major `logits` ([N, C]) against `labels`.
pub fn top1_top5(logits: &[f32], classes: usize, labels: &[usize]) -> Accuracy {
    let (mut t1, mut t5) = (0usize, 0usize);
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let above = row.iter().filter(|&&v| v > row[label]).count();
        t1 += usize::from(above == 0);
        t5 += usize::from(above < 5);
    }
    let n = labels.len().max(1) as f64;
    Accuracy {
        top1: t1 as f64 / n,
        top5: t5 as f64 / n,
    }
}

impl Classifier {
    /// Top-1 and top-5 accuracy on `f`.
    pub fn accuracy(&self, f: &Features, device: &Device) -> Accuracy {
        if f.is_empty() {
            return Accuracy {
                top1: 0.0,
                top5: 0.0,
            };
        }
        let x = to_device(f, &self.mean, &self.std, device);
        let logits: Vec<f32> = (x.matmul(self.weight.clone()) + self.bias.clone())
            .into_data()
            .try_into_vec()
            .expect("f32");
        top1_top5(&logits, self.bias.dims()[1], &f.labels)
    }
}

/// The whole protocol: sweep the learning rates on a held-out validation split, retrain on all
/// the training features with the best one, report train and test accuracy.
pub fn linear_eval(
    train: &Features,
    test: &Features,
    classes: usize,
    cfg: &LinearEvalConfig,
    seed: u64,
    device: &Device,
) -> LinearResult {
    let n_val = ((train.len() as f64) * cfg.validation_fraction).round() as usize;
    let val_idx = crate::data::balanced_subset(&train.labels, classes, n_val, seed);
    let mut is_val = vec![false; train.len()];
    val_idx.iter().for_each(|&i| is_val[i] = true);
    let fit_idx: Vec<usize> = (0..train.len()).filter(|&i| !is_val[i]).collect();
    let (fit, val) = (train.rows(&fit_idx), train.rows(&val_idx));
    let mut sweep = Vec::new();
    for &lr in &cfg.learning_rates {
        let clf = train_classifier(&fit, classes, lr, cfg, seed, device);
        sweep.push((lr, clf.accuracy(&val, device).top1));
    }
    // Highest validation accuracy; ties go to the earlier (larger) rate.
    let best_lr = sweep
        .iter()
        .fold((f64::NAN, -1.0), |best, &(lr, acc)| {
            if acc > best.1 { (lr, acc) } else { best }
        })
        .0;
    let clf = train_classifier(train, classes, best_lr, cfg, seed, device);
    LinearResult {
        sweep,
        best_lr,
        train: clf.accuracy(train, device),
        test: clf.accuracy(test, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// `n` points around `classes` centres drawn from `centre_seed`; the points from `seed`.
    fn separable(n: usize, dim: usize, classes: usize, centre_seed: u64, seed: u64) -> Features {
        let mut c = crate::rng::rng(centre_seed, crate::rng::Stream::Synthetic, &[]);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..dim).map(|_| c.random_range(-3.0..3.0)).collect())
            .collect();
        let mut r = crate::rng::rng(seed, crate::rng::Stream::Synthetic, &[1]);
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = i % classes;
            values.extend(centres[c].iter().map(|m| m + r.random_range(-0.5..0.5f32)));
            labels.push(c);
        }
        Features {
            values,
            labels,
            dim,
        }
    }

    #[test]
    fn separable_features_are_learned() {
        let device = Device::flex();
        // Same centres, other points: the test set shares no row with the training set.
        let train = separable(600, 16, 5, 1, 1);
        let test = separable(200, 16, 5, 1, 2);
        assert!(
            test.values
                .chunks(16)
                .all(|t| !train.values.chunks(16).any(|x| x == t))
        );
        let cfg = LinearEvalConfig {
            epochs: 20,
            batch_size: 64,
            ..Default::default()
        };
        let r = linear_eval(&train, &test, 5, &cfg, 0, &device);
        assert!(r.train.top1 > 0.95 && r.test.top1 > 0.95, "{r:?}");
        assert_eq!(r.sweep.len(), 5);
        // Test labels permuted without a fixed point: the accuracy is measured against the test
        // labels, so it falls to (almost) nothing.
        let shuffled = Features {
            labels: test.labels.iter().map(|&l| (l + 1) % 5).collect(),
            ..test.clone()
        };
        let r = linear_eval(&train, &shuffled, 5, &cfg, 0, &device);
        assert!(r.test.top1 < 0.05, "{r:?}");
    }

    #[test]
    fn top1_and_top5_by_hand() {
        // 7 classes; sample 0: label ranked 1st; sample 1: ranked 3rd; sample 2: ranked 6th.
        let logits = [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [1.0, 7.0, 5.0, 6.0, 0.0, 2.0, 3.0],
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ]
        .concat();
        let a = top1_top5(&logits, 7, &[0, 2, 5]);
        assert_eq!((a.top1, a.top5), (1.0 / 3.0, 2.0 / 3.0));
    }

    #[test]
    fn gradient_step_matches_a_hand_computation() {
        // One sample, two classes, zero weights: p = (0.5, 0.5), y = (1, 0), so g = (−0.5, 0.5),
        // ∇W = xᵀg; with momentum 0 one step of lr 1 gives W = −xᵀg with the standardised x = 0
        // (a single sample has zero deviation), so only the bias moves: b = (0.5, −0.5).
        let device = Device::flex();
        let f = Features {
            values: vec![2.0, -1.0],
            labels: vec![0],
            dim: 2,
        };
        let cfg = LinearEvalConfig {
            epochs: 1,
            batch_size: 1,
            momentum: 0.0,
            ..Default::default()
        };
        let clf = train_classifier(&f, 2, 1.0, &cfg, 0, &device);
        let b: Vec<f32> = clf.bias.into_data().try_into_vec().unwrap();
        assert!(
            (b[0] - 0.5).abs() < 1e-6 && (b[1] + 0.5).abs() < 1e-6,
            "{b:?}"
        );
        let w: Vec<f32> = clf.weight.into_data().try_into_vec().unwrap();
        assert!(w.iter().all(|v| v.abs() < 1e-6));
    }
}
