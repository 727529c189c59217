//! Semi-supervised fine-tuning (paper Section 4.2 and Appendix C.2): the encoder and a linear
//! classifier are trained together, with labels, on a class-balanced seeded subset (1 % or 10 %)
//! of the training set, with random resized crops and horizontal flips, SGD with Nesterov
//! momentum 0.9, no weight decay and a cosine learning rate; the test split is evaluated with
//! centre crops in eval mode.

use crate::augment::{AugmentConfig, ViewConfig, make_view};
use crate::data::{ImageSet, balanced_subset};
use crate::eval::features::eval_batch;
use crate::eval::linear::{Accuracy, top1_top5};
use crate::model::{Encoder, Mlp, batch_norm_relu};
use crate::optim::OptimConfig;
use crate::rng::{Stream, rng};
use crate::supervised::{Decay, Epochs, Hooks, Tuning};
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;

/// Fine-tuning settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FinetuneConfig {
    /// Fraction of the labelled training set used (paper: 0.01 and 0.1).
    #[serde(default = "d_frac")]
    pub label_fraction: f64,
    /// Epochs over the labelled subset. Paper: 30 (1 %) and 20 (10 %) on ImageNet.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Batch size. Paper: 1024.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Learning rates (each cosine-decayed to 0). One: used as it is. Several: the network is
    /// fine-tuned with each, and the one with the best top-1 on a validation set is kept: a
    /// class-balanced `validation-fraction` of the training images held out from the labelled
    /// subset (the paper chooses its hyper-parameters on a validation split of the training
    /// set, Appendix C). A single number is read as a list of one (`learning-rate = 0.05`, the
    /// key of earlier versions, is accepted).
    #[serde(
        default = "d_lrs",
        alias = "learning-rate",
        deserialize_with = "one_or_many"
    )]
    pub learning_rates: Vec<f64>,
    /// The fraction of the training images held out as the validation set when several learning
    /// rates are tried. Their labels are used to choose the rate only, as the paper's validation
    /// split of ImageNet's training set is (10,009 images, 0.8 %); 2 % of CIFAR-10 is 1,000.
    #[serde(default = "d_val")]
    pub validation_fraction: f64,
    /// Where the classifier goes: on the encoder (the paper's protocol), or on the projector's
    /// first layer (SimCLR v2's, Chen et al. 2020b, Section 2).
    #[serde(default)]
    pub from: FinetuneFrom,
}

/// What fine-tuning starts from, under the new linear classifier.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum FinetuneFrom {
    /// The encoder's representation (the projector is discarded).
    #[default]
    #[serde(rename = "encoder")]
    Encoder,
    /// The encoder and the projector's first layer (Linear → BatchNorm → ReLU), fine-tuned
    /// together: SimCLR v2 fine-tunes "from the middle layer of the projection head".
    #[serde(rename = "projector:1")]
    ProjectorLayer1,
}

impl std::str::FromStr for FinetuneFrom {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "encoder" => Ok(FinetuneFrom::Encoder),
            "projector:1" => Ok(FinetuneFrom::ProjectorLayer1),
            _ => Err(format!("`{s}`: expected `encoder` or `projector:1`")),
        }
    }
}

fn d_frac() -> f64 {
    0.1
}
fn d_epochs() -> usize {
    20
}
fn d_batch() -> usize {
    256
}
fn d_lrs() -> Vec<f64> {
    vec![0.05]
}
fn d_val() -> f64 {
    0.02
}

/// A number or a list of numbers, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
    })
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            label_fraction: d_frac(),
            epochs: d_epochs(),
            batch_size: d_batch(),
            learning_rates: d_lrs(),
            validation_fraction: d_val(),
            from: FinetuneFrom::Encoder,
        }
    }
}

impl FinetuneConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.label_fraction > 0.0 && self.label_fraction <= 1.0) {
            return Err(Error::config(
                "eval.finetune.label-fraction",
                format!("{} is outside (0, 1]", self.label_fraction),
            ));
        }
        if self.epochs == 0 || self.batch_size < 2 {
            return Err(Error::config(
                "eval.finetune",
                "epochs must be ≥ 1 and batch-size ≥ 2",
            ));
        }
        if self.learning_rates.is_empty()
            || !self
                .learning_rates
                .iter()
                .all(|lr| *lr > 0.0 && lr.is_finite())
        {
            return Err(Error::config(
                "eval.finetune.learning-rates",
                format!(
                    "{:?}: give one or more positive numbers",
                    self.learning_rates
                ),
            ));
        }
        if self.learning_rates.len() > 1 {
            if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
                return Err(Error::config(
                    "eval.finetune.validation-fraction",
                    format!("{} is outside (0, 1)", self.validation_fraction),
                ));
            }
            if self.label_fraction + self.validation_fraction > 1.0 {
                return Err(Error::config(
                    "eval.finetune.validation-fraction",
                    format!(
                        "{} of the training images held out for choosing among {} learning rates, and {} labelled: together more than all of them",
                        self.validation_fraction,
                        self.learning_rates.len(),
                        self.label_fraction
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The views of fine-tuning and of distillation: random resized crop and flip only (paper
/// Appendix C.2).
pub fn training_view() -> ViewConfig {
    ViewConfig {
        jitter_prob: 0.0,
        grayscale_prob: 0.0,
        blur_prob: 0.0,
        solarize_prob: 0.0,
        ..ViewConfig::paper_view1()
    }
}

/// The pixels of `view` of the images `indices` of `set`, row after row ([N, 3, S, S] flat);
/// image `i`'s view is drawn from (`seed`, `stream`, [`epoch`, `i`]).
pub fn view_pixels(
    set: &ImageSet,
    indices: &[usize],
    size: usize,
    view: &ViewConfig,
    aug: &AugmentConfig,
    (seed, stream, epoch): (u64, Stream, u64),
) -> Result<Vec<f32>> {
    let pix: Vec<Vec<f32>> = indices
        .par_iter()
        .map(|&i| {
            Ok(make_view(
                &*set.rgb(i)?,
                size,
                view,
                aug,
                &mut rng(seed, stream, &[epoch, i as u64]),
            ))
        })
        .collect::<Result<_>>()?;
    Ok(pix.concat())
}

/// Encoder, optionally the projector's first layer, and classifier.
#[derive(Module, Debug)]
pub struct Finetuned {
    pub encoder: Encoder,
    /// The projector's first Linear and BatchNorm (ReLU follows), with `from = "projector:1"`.
    pub stem: Option<ProjectorLayer>,
    pub head: Linear,
}

/// A projector's first layer, taken from a pre-trained [`Mlp`].
#[derive(Module, Debug)]
pub struct ProjectorLayer {
    pub fc: Linear,
    pub bn: BatchNorm,
}

impl ProjectorLayer {
    /// The first layer of `projector` (its weights and BatchNorm statistics as they are).
    pub fn of(projector: Mlp) -> Self {
        ProjectorLayer {
            fc: projector.fc1,
            bn: projector.bn,
        }
    }

    /// Its output width.
    pub fn width(&self) -> usize {
        self.bn.gamma.dims()[0]
    }
}

impl Finetuned {
    /// The model fine-tuning starts from: `encoder` (and `stem`) moved to `device`, under a new
    /// classifier into `classes`, initialised from `seed`.
    pub fn new(
        encoder: Encoder,
        stem: Option<ProjectorLayer>,
        encoder_dim: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Self {
        let dim = stem.as_ref().map_or(encoder_dim, ProjectorLayer::width);
        let head = crate::model::params::reinit(
            LinearConfig::new(dim, classes).init(device),
            crate::rng::key(seed, Stream::FinetuneHead, &[]),
        );
        Finetuned {
            encoder: encoder.fork(device),
            stem: stem.map(|s| s.fork(device)),
            head,
        }
    }

    /// Top-1 and top-5 accuracy on `set` (centre crops of `size`, `aug`'s normalisation), in
    /// eval mode on `device`: call it on a network moved there with `valid()`.
    pub fn accuracy(
        &self,
        set: &ImageSet,
        size: usize,
        aug: &AugmentConfig,
        device: &Device,
    ) -> Result<Accuracy> {
        let classes = self.head.weight.dims()[1];
        let mut logits = Vec::with_capacity(set.len() * classes);
        for start in (0..set.len()).step_by(256) {
            let x = eval_batch(set, start..(start + 256).min(set.len()), size, aug, device)?; // [b, 3, S, S]
            logits.extend(
                self.forward(x)
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| Error::readback("the classifier's logits", e))?,
            );
        }
        Ok(top1_top5(&logits, classes, &set.labels))
    }

    /// `x`: [B, 3, S, S] → logits [B, C].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let y = self.encoder.forward(x); // [B, D]
        let y = match &self.stem {
            Some(s) => batch_norm_relu(&s.bn, s.fc.forward(y), None), // [B, hidden]
            None => y,
        };
        self.head.forward(y) // [B, C]
    }
}

/// The result of a fine-tuning run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneResult {
    pub labelled_images: usize,
    /// The learning rate of the network kept.
    pub learning_rate: f64,
    /// (learning rate, validation top-1) for every rate tried, when there were several.
    pub sweep: Vec<(f64, f64)>,
    /// The held-out training images the rate was chosen on (0 with one rate).
    pub validation_images: usize,
    pub test: Accuracy,
}

/// The network fine-tuning starts from, made anew on a device for each learning rate tried:
/// the encoder and, with `from = "projector:1"`, the projector's first layer.
pub type Start<'a> = dyn Fn(&Device) -> Result<(Encoder, Option<ProjectorLayer>)> + 'a;

/// Fine-tune the network `start` makes (moved to `device`'s autodiff twin) on the labelled
/// subset of `train`, with each of `cfg.learning_rates`, keep the one with the best top-1 on the
/// held-out validation images (with one rate, that one), and evaluate it on `test`. Returns the
/// result and the fine-tuned network (on `device`, eval mode). When `interrupt` is set (by a
/// signal handler), the step in progress ends and so does the run, with an error saying so:
/// fine-tuning keeps no checkpoint.
#[allow(
    clippy::too_many_arguments,
    reason = "the protocol's inputs, none of which belong together: the starting network and its output size, the two splits, the views, the protocol's config, the seed, the device"
)]
pub fn finetune(
    start: &Start<'_>,
    dim: usize,
    train: &ImageSet,
    test: &ImageSet,
    aug: &AugmentConfig,
    size: usize,
    cfg: &FinetuneConfig,
    seed: u64,
    (device, interrupt): (&Device, Option<&AtomicBool>),
) -> Result<(FinetuneResult, Finetuned)> {
    let classes = train.classes.len();
    let n = ((train.len() as f64) * cfg.label_fraction)
        .round()
        .max(classes as f64) as usize;
    let labelled = balanced_subset(&train.labels, classes, n, seed);
    let validation = if cfg.learning_rates.len() > 1 {
        held_out(train, &labelled, cfg.validation_fraction, seed)
    } else {
        Vec::new()
    };
    let validation_set = train.select(&validation);
    let (mut sweep, mut kept) = (Vec::new(), None);
    for &lr in &cfg.learning_rates {
        let (encoder, stem) = start(device)?;
        let tuned = tune(
            Finetuned::new(
                encoder,
                stem,
                dim,
                classes,
                seed,
                &device.clone().autodiff(),
            ),
            train,
            &labelled,
            aug,
            size,
            cfg,
            (lr, seed, interrupt),
        )?;
        if validation.is_empty() {
            kept = Some((lr, tuned));
            continue;
        }
        let top1 = tuned.accuracy(&validation_set, size, aug, device)?.top1;
        tracing::info!(
            "fine-tuning at learning rate {lr}: top-1 {:.2}% on {} held-out training images",
            100.0 * top1,
            validation.len()
        );
        // Highest validation accuracy; ties go to the earlier rate.
        if sweep.iter().all(|&(_, best)| top1 > best) {
            kept = Some((lr, tuned));
        }
        sweep.push((lr, top1));
    }
    let (learning_rate, tuned) = kept.expect("at least one learning rate (validated)");
    let test = tuned.accuracy(test, size, aug, device)?;
    Ok((
        FinetuneResult {
            labelled_images: labelled.len(),
            learning_rate,
            sweep,
            validation_images: validation.len(),
            test,
        },
        tuned,
    ))
}

/// A class-balanced `fraction` of `train`'s images (at least one per class) from those not in
/// `labelled`.
fn held_out(train: &ImageSet, labelled: &[usize], fraction: f64, seed: u64) -> Vec<usize> {
    let classes = train.classes.len();
    let mut taken = vec![false; train.len()];
    labelled.iter().for_each(|&i| taken[i] = true);
    let rest: Vec<usize> = (0..train.len()).filter(|&i| !taken[i]).collect();
    let labels: Vec<usize> = rest.iter().map(|&i| train.labels[i]).collect();
    let n = (((train.len() as f64) * fraction).round() as usize)
        .max(classes)
        .min(rest.len());
    balanced_subset(&labels, classes, n, seed)
        .into_iter()
        .map(|j| rest[j])
        .collect()
}

/// `cfg.epochs` of SGD with Nesterov momentum at `lr` (cosine-decayed to 0) on the images
/// `labelled` of `train` (random crop and flip); the network in eval mode on its plain device.
#[allow(
    clippy::too_many_arguments,
    reason = "one fine-tuning run: the network, its data and views, the protocol, the rate and the seed"
)]
fn tune(
    model: Finetuned,
    train: &ImageSet,
    labelled: &[usize],
    aug: &AugmentConfig,
    size: usize,
    cfg: &FinetuneConfig,
    (lr, seed, interrupt): (f64, u64, Option<&AtomicBool>),
) -> Result<Finetuned> {
    let ad = model.head.weight.device();
    let b = cfg.batch_size.min(labelled.len());
    let epochs = Epochs::new(
        labelled.to_vec(),
        b,
        cfg.epochs,
        (seed, Stream::FinetuneOrder),
        "eval.finetune",
    )?;
    let tuning = Tuning {
        section: "eval.finetune",
        epochs: &epochs,
        learning_rate: lr,
        decay: Decay::Cosine,
    };
    let view = training_view();
    let start = (
        crate::model::params::require_grad(model),
        OptimConfig::sgd(lr, 0.0, true).init(),
    );
    let mut stop = StopOn(interrupt);
    let trained = tuning.run(start, 0, &mut (), &mut stop, |model, chunk, epoch, _| {
        let pixels = view_pixels(
            train,
            chunk,
            size,
            &view,
            aug,
            (seed, Stream::FinetuneViews, epoch),
        )?;
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [b, 3, size, size]), &ad); // [B, 3, S, S]
        let y = Tensor::<2, Int>::from_data(
            TensorData::new(
                chunk
                    .iter()
                    .map(|&i| train.labels[i] as i64)
                    .collect::<Vec<_>>(),
                [b, 1],
            ),
            &ad,
        ); // [B, 1]
        Ok(log_softmax(model.forward(x), 1).gather(1, y).mean().neg()) // cross-entropy: [1]
    })?;
    if trained.stopped {
        return Err(Error::Interrupted {
            what: format!("fine-tuning at learning rate {lr}"),
            step: trained.step,
        });
    }
    Ok(trained.model.valid())
}

/// A stop when the flag is set.
struct StopOn<'a>(Option<&'a AtomicBool>);

impl<M> Hooks<M> for StopOn<'_> {
    fn stop_before(&mut self, step: u64) -> bool {
        crate::supervised::stop_requested(None, self.0, step)
    }
}

#[cfg(test)]
mod tests;
