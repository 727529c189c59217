//! What the dense protocols share: the SGD schedule (momentum 0.9, the learning rate ×0.1 at 70 %
//! and 90 % of training, as MoCo's segmentation protocol), the fine-tuning loop over seeded
//! shuffles, the preprocessing of a whole image, and the rows of a prediction picture.

use crate::augment::{AugmentConfig, normalize};
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;

/// What a dense fine-tuning run reports as it goes.
pub trait Progress {
    fn on_start(&mut self, _total_steps: u64) {}
    fn on_step(&mut self, _step: u64, _loss: f32) {}
}

impl Progress for () {}

/// The optimisation settings of a protocol; `task` names its config section (`segment`, `depth`).
pub struct Schedule<'a> {
    pub task: &'a str,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl Schedule<'_> {
    pub fn validate(&self) -> Result<()> {
        let field = |f: &str| format!("transfer.{}.{f}", self.task);
        if self.epochs == 0 {
            return Err(Error::config(field("epochs"), "must be ≥ 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::config(field("batch-size"), "must be ≥ 2 (BatchNorm needs two samples)"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::config(field("learning-rate"), "must be a positive number"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(field("weight-decay"), "must be ≥ 0"));
        }
        Ok(())
    }

    /// Train `model` (on an autodiff device) over `n` samples: each epoch a shuffle drawn from
    /// (`seed`, `order_stream`, epoch), batches of `batch_size` (the remainder left out), `loss_of`
    /// the loss of a batch of sample indices at an epoch. Returns the model, the steps taken and
    /// each epoch's mean loss; a non-finite loss is an error naming the step.
    pub fn run<M: Module>(
        &self,
        mut model: M,
        n: usize,
        seed: u64,
        order_stream: Stream,
        progress: &mut dyn Progress,
        mut loss_of: impl FnMut(&M, &[usize], u64) -> Result<Tensor<1>>,
    ) -> Result<(M, u64, Vec<f64>)> {
        if n < self.batch_size {
            return Err(Error::data(self.task, format!("{n} training images are fewer than one batch of {}", self.batch_size)));
        }
        let mut opt = sgd(self.learning_rate, self.weight_decay).init();
        let per_epoch = n / self.batch_size;
        let total = per_epoch.checked_mul(self.epochs).and_then(|t| u64::try_from(t).ok()).ok_or_else(|| {
            Error::config(
                format!("transfer.{}.epochs", self.task),
                format!("{} epochs of {per_epoch} steps overflow the step count; at most {}", self.epochs, usize::MAX / per_epoch.max(1)),
            )
        })?;
        progress.on_start(total);
        let (mut step, mut epoch_losses) = (0u64, Vec::new());
        for epoch in 0..self.epochs as u64 {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng(seed, order_stream, &[epoch]));
            let mut sum = 0.0;
            for chunk in order.chunks_exact(self.batch_size) {
                let loss = loss_of(&model, chunk, epoch)?; // [1]
                let value = loss.clone().into_scalar::<f32>();
                if !value.is_finite() {
                    return Err(Error::data(self.task, format!("non-finite loss at step {step}; lower transfer.{}.learning-rate", self.task)));
                }
                let mut grads = loss.backward();
                model = opt.step(model, &mut grads, step_lr(self.learning_rate, step, total), step + 1)?;
                step += 1;
                sum += f64::from(value);
                progress.on_step(step, value);
            }
            epoch_losses.push(sum / per_epoch as f64);
        }
        Ok((model, step, epoch_losses))
    }
}

// The defaults both protocols share (see their configs).
pub(super) fn d_epochs() -> usize {
    10
}
pub(super) fn d_batch() -> usize {
    16
}
pub(super) fn d_lr() -> f64 {
    0.01
}
pub(super) fn d_wd() -> f64 {
    1e-4
}
pub(super) fn d_pictures() -> usize {
    6
}

/// SGD with momentum 0.9 (no Nesterov), the optimizer of both dense protocols.
fn sgd(learning_rate: f64, weight_decay: f64) -> crate::optim::OptimConfig {
    crate::optim::OptimConfig::sgd(learning_rate, weight_decay, false)
}

/// The learning rate at `step` of `total`: `base`, ×0.1 from 70 % and again from 90 % of
/// training (MoCo's and the paper's segmentation schedule).
pub fn step_lr(base: f64, step: u64, total: u64) -> f64 {
    let at = |fraction: f64| (total as f64 * fraction).round() as u64;
    if step >= at(0.9) {
        base * 0.01
    } else if step >= at(0.7) {
        base * 0.1
    } else {
        base
    }
}

/// A whole image, normalised, as a [1, 3, H, W] tensor on `device`.
pub fn image_tensor(img: &Rgb8, aug: &AugmentConfig, device: &Device) -> Tensor<4> {
    let n = img.width * img.height;
    let mut x = vec![0f32; 3 * n];
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            x[c * n + i] = f32::from(p[c]) / 255.0;
        }
    }
    normalize(&mut x, &aug.mean, &aug.std);
    Tensor::from_data(TensorData::new(x, [1, 3, img.height, img.width]), device)
}

/// Rows of three panels (each an image of the row's size), drawn `scale` times their size with
/// a white gap between panels and rows.
pub fn rows_picture(rows: &[[Rgb8; 3]], scale: usize) -> Rgb8 {
    let (w, h) = rows.iter().fold((0, 0), |(w, h), r| (w.max(r[0].width), h.max(r[0].height)));
    let (cw, ch, gap) = (w * scale, h * scale, 4);
    let (width, height) = (3 * cw + 2 * gap, rows.len() * ch + rows.len().saturating_sub(1) * gap);
    let mut out = Rgb8 { width, height, data: vec![255; width * height * 3] };
    for (r, panels) in rows.iter().enumerate() {
        for (col, p) in panels.iter().enumerate() {
            for y in 0..p.height * scale {
                for x in 0..p.width * scale {
                    let i = ((y / scale) * p.width + x / scale) * 3;
                    let o = ((r * (ch + gap) + y) * width + col * (cw + gap) + x) * 3;
                    out.data[o..o + 3].copy_from_slice(&p.data[i..i + 3]);
                }
            }
        }
    }
    out
}

/// A small-cpu encoder at base width 4, drawn from a fixed seed (burn's own initialisers draw
/// from a generator that tests running beside each other share), and its output width, for the
/// tests of the protocols.
#[cfg(test)]
pub(super) fn small_encoder() -> (crate::model::ResNet, usize) {
    let cfg = crate::config::ExperimentConfig::load("small-cpu", &["model.encoder.base-width=4".into()]).unwrap();
    (crate::model::params::reinit(cfg.model.encoder.init(&burn::tensor::Device::flex()), 3), cfg.model.encoder.output_dim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_steps_down_at_70_and_90_percent() {
        let lr: Vec<f64> = [0, 69, 70, 89, 90, 99].iter().map(|&s| step_lr(1.0, s, 100)).collect();
        assert_eq!(lr, [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]);
    }
}
