//! The online linear probe: a linear classifier trained during pre-training on the detached
//! representation of the online encoder (view 1 of each training batch, with its augmentations
//! and the BatchNorm statistics of the batch), with its own SGD, and evaluated on the test split
//! every epoch. The official BYOL code trains such a classifier beside the network on
//! `stop_gradient` of the representation (its `classif_loss`), solo-learn and lightly report one
//! too. No gradient reaches the encoder: the probe sees a copy of the representation without
//! autodiff, and its update is computed in closed form (softmax cross-entropy: ∂L/∂logits =
//! (softmax − one-hot)/B), so the pre-training trajectory is the same with or without it.
//!
//! It differs from `byol eval linear` (the paper's offline protocol): that trains a fresh
//! classifier to convergence on frozen features of centre crops, with a learning rate chosen on
//! a validation split; the probe follows a moving encoder with one SGD step per batch, so it
//! lags behind and reads lower. It is a monitor, not the reported protocol.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// `[eval.online-probe]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OnlineProbeConfig {
    /// Train the probe when the data has labels (more than one class).
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// SGD learning rate (solo-learn's default for its online classifier: 0.1).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// SGD momentum.
    #[serde(default = "d_momentum")]
    pub momentum: f64,
}

fn d_true() -> bool {
    true
}
fn d_lr() -> f64 {
    0.1
}
fn d_momentum() -> f64 {
    0.9
}

impl Default for OnlineProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lr: d_lr(),
            momentum: d_momentum(),
        }
    }
}

impl OnlineProbeConfig {
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(crate::Error::config(
                "eval.online-probe.lr",
                format!("{} must be positive", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(crate::Error::config(
                "eval.online-probe.momentum",
                format!("{} is outside [0, 1)", self.momentum),
            ));
        }
        Ok(())
    }
}

/// The probe's weights and momentum buffers, on the plain device, and its count of correct
/// answers in the current epoch (part of a checkpoint, so that a run resumed in mid-epoch reports
/// the epoch's training accuracy over all its steps).
#[derive(Debug, Clone)]
pub struct OnlineProbe {
    /// [D, C]
    pub w: Tensor<2>,
    /// [C]
    pub b: Tensor<1>,
    /// Momentum buffers of `w` and `b`.
    pub mw: Tensor<2>,
    pub mb: Tensor<1>,
    /// Correct answers on this epoch's training batches so far, on the device (read when the
    /// epoch is reported): \[1\].
    pub epoch_correct: Tensor<1>,
    /// Training images seen this epoch.
    pub epoch_seen: u64,
}

impl OnlineProbe {
    /// A probe from `dim` features to `classes` classes, all zeros.
    pub fn new(dim: usize, classes: usize, device: &Device) -> Self {
        OnlineProbe {
            w: Tensor::zeros([dim, classes], device),
            b: Tensor::zeros([classes], device),
            mw: Tensor::zeros([dim, classes], device),
            mb: Tensor::zeros([classes], device),
            epoch_correct: Tensor::zeros([1], device),
            epoch_seen: 0,
        }
    }

    /// The epoch's training accuracy so far (NaN before any batch), and a new epoch's count.
    pub fn take_epoch_accuracy(&mut self) -> f64 {
        let seen = std::mem::take(&mut self.epoch_seen);
        let correct = std::mem::replace(
            &mut self.epoch_correct,
            Tensor::zeros([1], &self.b.device()),
        );
        if seen == 0 {
            f64::NAN
        } else {
            f64::from(correct.into_scalar::<f32>()) / seen as f64
        }
    }

    pub fn classes(&self) -> usize {
        self.b.dims()[0]
    }

    fn labels(labels: &[usize], device: &Device) -> Tensor<1, Int> {
        let l: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(l, [labels.len()]), device)
    }

    /// One SGD step on features `y` [B, D] (detached) with `labels`; the correct predictions
    /// before the step are added to the epoch's count (on the device).
    pub fn step(&mut self, y: Tensor<2>, labels: &[usize], cfg: &OnlineProbeConfig) {
        let device = y.device();
        let [b, _] = y.dims();
        let c = self.classes();
        let targets = Self::labels(labels, &device);
        let logits = y.clone().matmul(self.w.clone()) + self.b.clone().unsqueeze::<2>(); // [B, C]
        let correct = logits
            .clone()
            .argmax(1)
            .reshape([b])
            .equal(targets.clone())
            .int()
            .sum()
            .float(); // [1]
        let onehot = targets.one_hot::<2>(c).float(); // [B, C]
        let g = (burn::tensor::activation::softmax(logits, 1) - onehot) / b as f64; // ∂L/∂logits: [B, C]
        let gw = y.transpose().matmul(g.clone()); // [D, C]
        let gb = g.sum_dim(0).reshape([c]); // [C]
        let (lr, m) = (cfg.lr, cfg.momentum);
        self.mw = self.mw.clone() * m + gw;
        self.mb = self.mb.clone() * m + gb;
        self.w = self.w.clone() - self.mw.clone() * lr;
        self.b = self.b.clone() - self.mb.clone() * lr;
        self.epoch_correct = self.epoch_correct.clone() + correct;
        self.epoch_seen += b as u64;
    }

    /// Top-1 accuracy on features `y` [N, D] (row-major, host) with `labels`.
    pub fn accuracy(&self, y: &[f32], dim: usize, labels: &[usize]) -> f64 {
        let device = self.w.device();
        let n = labels.len();
        if n == 0 {
            return 0.0;
        }
        let x = Tensor::<2>::from_data(TensorData::new(y.to_vec(), [n, dim]), &device);
        let logits = x.matmul(self.w.clone()) + self.b.clone().unsqueeze::<2>(); // [N, C]
        let correct = logits
            .argmax(1)
            .reshape([n])
            .equal(Self::labels(labels, &device))
            .int()
            .sum()
            .into_scalar::<i64>();
        correct as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On two separable clusters the probe learns to classify them; its update is the gradient
    /// of the mean cross-entropy (checked against finite differences of the loss).
    #[test]
    fn probe_learns_separable_classes_with_the_cross_entropy_gradient() {
        let d = Device::flex();
        let cfg = OnlineProbeConfig {
            enabled: true,
            lr: 0.5,
            momentum: 0.0,
        };
        // Class 0 near (1, 0, 0.5), class 1 near (0, 1, 0.5).
        let pts: Vec<f32> = (0..16)
            .flat_map(|i| {
                if i % 2 == 0 {
                    [1.0, 0.1 * (i % 3) as f32, 0.5]
                } else {
                    [0.1 * (i % 3) as f32, 1.0, 0.5]
                }
            })
            .collect();
        let labels: Vec<usize> = (0..16).map(|i| i % 2).collect();
        let y = Tensor::<2>::from_data(TensorData::new(pts.clone(), [16, 3]), &d);
        let mut p = OnlineProbe::new(3, 2, &d);
        // The first step from zeros: w ← −lr·∂L/∂w; compare with finite differences of L at w = 0.
        let loss = |w: &[f32]| -> f64 {
            let mut total = 0.0;
            for (i, &l) in labels.iter().enumerate() {
                let x = &pts[i * 3..i * 3 + 3];
                let z: Vec<f64> = (0..2)
                    .map(|c| {
                        (0..3)
                            .map(|k| f64::from(x[k]) * f64::from(w[k * 2 + c]))
                            .sum()
                    })
                    .collect();
                let lse = (z[0].exp() + z[1].exp()).ln();
                total += lse - z[l];
            }
            total / labels.len() as f64
        };
        p.step(y.clone(), &labels, &cfg);
        let w: Vec<f32> = p.w.clone().into_data().try_into_vec().unwrap();
        for k in 0..6 {
            let mut plus = vec![0f32; 6];
            plus[k] = 1e-3;
            let mut minus = vec![0f32; 6];
            minus[k] = -1e-3;
            let grad = (loss(&plus) - loss(&minus)) / 2e-3;
            assert!(
                (f64::from(w[k]) + cfg.lr * grad).abs() < 1e-4,
                "w[{k}] = {}, −lr·grad = {}",
                w[k],
                -cfg.lr * grad
            );
        }
        for _ in 0..50 {
            p.step(y.clone(), &labels, &cfg);
        }
        assert_eq!(p.accuracy(&pts, 3, &labels), 1.0);
    }
}
