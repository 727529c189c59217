//! Optimizers over a module's parameters, with BYOL's exclusion rule: biases and BatchNorm
//! parameters get neither weight decay nor (for LARS) the trust-ratio adaptation (paper
//! Appendix C; official `byol/utils/optimizers.py`, whose filters exclude `batchnorm` and bias
//! parameters). In ResNets and the MLP heads those are exactly the rank-1 parameters, which is
//! the rule applied here.
//!
//! The optimizer state (momentum and second-moment buffers) is kept by parameter path, so it can
//! be written to and read from a checkpoint by name.

mod grads;
pub mod schedule;

use grads::bucketed_mean;
pub use grads::{BUCKET_VALUES, ParamGrads};

use crate::model::params::{PathMapper, is_buffer, map_paths};
use crate::{Error, Result};
use burn::module::{Module, Param};
use burn::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which update rule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    /// Layer-wise adaptive rate scaling (You et al. 2017), the paper's optimizer.
    Lars,
    /// SGD with heavy-ball momentum and L2 weight decay.
    Sgd,
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019).
    Adamw,
}

/// Optimizer and learning-rate schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Base learning rate; the peak is base × batch/256. Paper: 0.2 (1000 ep), 0.3 (300 ep).
    pub base_lr: f64,
    /// Weight decay. Paper: 1.5e-6 (1000 ep), 1e-6 (300 ep).
    pub weight_decay: f64,
    /// Momentum (LARS, SGD). Paper: 0.9.
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// Nesterov momentum for SGD (the evaluation protocols use it; pre-training does not).
    #[serde(default)]
    pub nesterov: bool,
    /// LARS trust coefficient η. Paper: 1e-3.
    #[serde(default = "d_eta")]
    pub trust_coefficient: f64,
    /// Linear warm-up length in epochs. Paper: 10.
    #[serde(default = "d_warmup")]
    pub warmup_epochs: f64,
    /// The predictor's learning rate as a multiple λ of the rest's (parameters under
    /// `predictor.`). The paper trains with one rate (λ = 1, the default); its own ablation
    /// without a moving-average target (Appendix, "predictor", Table 21: τ = 0 and the predictor's
    /// rate multiplied by λ) recovers good accuracy only with λ large enough, and later analyses
    /// of BYOL-like methods (Tian, Chen & Ganguli 2021, DirectPred) also credit a fast predictor.
    #[serde(default = "d_one")]
    pub predictor_lr_scale: f64,
    /// AdamW β₁.
    #[serde(default = "d_b1")]
    pub beta1: f64,
    /// AdamW β₂.
    #[serde(default = "d_b2")]
    pub beta2: f64,
    /// AdamW ε.
    #[serde(default = "d_eps")]
    pub epsilon: f64,
}

fn d_momentum() -> f64 {
    0.9
}
fn d_eta() -> f64 {
    1e-3
}
fn d_warmup() -> f64 {
    10.0
}
fn d_one() -> f64 {
    1.0
}
fn d_b1() -> f64 {
    0.9
}
fn d_b2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}

impl OptimConfig {
    pub fn validate(&self) -> Result<()> {
        let pos = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(
                    field,
                    format!("{v} must be a positive number"),
                ))
            }
        };
        let unit = |field: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} is outside [0, 1)")))
            }
        };
        pos("optim.base-lr", self.base_lr)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(
                "optim.weight-decay",
                format!("{} must be ≥ 0", self.weight_decay),
            ));
        }
        unit("optim.momentum", self.momentum)?;
        if self.nesterov && self.kind != OptimKind::Sgd {
            return Err(Error::config(
                "optim.nesterov",
                "applies only to kind = \"sgd\"",
            ));
        }
        pos("optim.trust-coefficient", self.trust_coefficient)?;
        pos("optim.predictor-lr-scale", self.predictor_lr_scale)?;
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return Err(Error::config(
                "optim.warmup-epochs",
                format!("{} must be ≥ 0", self.warmup_epochs),
            ));
        }
        unit("optim.beta1", self.beta1)?;
        unit("optim.beta2", self.beta2)?;
        pos("optim.epsilon", self.epsilon)?;
        Ok(())
    }

    pub fn init(&self) -> Optimizer {
        Optimizer {
            cfg: self.clone(),
            state: BTreeMap::new(),
            frozen: Vec::new(),
        }
    }

    /// SGD with momentum 0.9 (Nesterov's when `nesterov`), no warm-up: the optimiser of the
    /// evaluation and transfer protocols (fine-tuning, distillation, the dense tasks).
    pub fn sgd(learning_rate: f64, weight_decay: f64, nesterov: bool) -> Self {
        OptimConfig {
            kind: OptimKind::Sgd,
            base_lr: learning_rate,
            weight_decay,
            momentum: 0.9,
            nesterov,
            trust_coefficient: d_eta(),
            warmup_epochs: 0.0,
            predictor_lr_scale: 1.0,
            beta1: d_b1(),
            beta2: d_b2(),
            epsilon: d_eps(),
        }
    }
}

/// Whether a parameter is excluded from weight decay and LARS adaptation: biases and the
/// normalisations' scales and shifts (every rank-1 tensor), and a ViT's class token and learned
/// position embeddings (as ViT recipes do: timm's `no_weight_decay`, MoCo v3's optimiser groups).
pub fn is_excluded(path: &str, shape: &[usize]) -> bool {
    shape.len() == 1 || path.ends_with("cls_token") || path.ends_with("pos_embed")
}

/// An optimizer with its per-parameter state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    cfg: OptimConfig,
    /// path → buffers (momentum; or Adam's first and second moments), flattened.
    pub state: BTreeMap<String, Vec<Tensor<1>>>,
    /// Path prefixes of parameters that are not updated (and need no gradient).
    frozen: Vec<String>,
}

impl Optimizer {
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// The optimiser with the parameters under `prefixes` left as they are: no update, no
    /// state, no gradient required ([`crate::model::ModelConfig::frozen_paths`]).
    pub fn with_frozen(mut self, prefixes: Vec<String>) -> Self {
        self.frozen = prefixes;
        self
    }

    fn is_frozen(&self, path: &str) -> bool {
        self.frozen.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Write the state into `out` as `optim/<path>/<slot>` (what a checkpoint holds).
    pub fn save_state(&self, out: &mut crate::model::params::HostTensors) -> Result<()> {
        for (path, slots) in &self.state {
            for (i, t) in slots.iter().enumerate() {
                out.insert(
                    format!("optim/{path}/{i}"),
                    (t.dims().to_vec(), crate::model::params::values(t)?),
                );
            }
        }
        Ok(())
    }

    /// Read back the state [`Optimizer::save_state`] wrote, onto `device`.
    pub fn load_state(
        &mut self,
        tensors: &crate::model::params::HostTensors,
        device: &burn::tensor::Device,
    ) -> Result<()> {
        for (k, (_, v)) in tensors {
            if let Some(rest) = k.strip_prefix("optim/") {
                let (path, idx) = rest
                    .rsplit_once('/')
                    .ok_or_else(|| Error::checkpoint(k, "bad optimizer tensor name"))?;
                let idx: usize = idx
                    .parse()
                    .map_err(|_| Error::checkpoint(k, "bad optimizer slot"))?;
                let slots = self.state.entry(path.to_string()).or_default();
                if slots.len() != idx {
                    return Err(Error::checkpoint(k, "optimizer slots out of order"));
                }
                slots.push(Tensor::from_data(
                    burn::tensor::TensorData::new(v.clone(), [v.len()]),
                    device,
                ));
            }
        }
        Ok(())
    }

    /// Apply one update with learning rate `lr` to every parameter of `module`, from the
    /// gradients of one backward pass. `step` is the 1-based update count (Adam's bias
    /// correction). See [`Optimizer::apply`].
    pub fn step<M: Module>(
        &mut self,
        module: M,
        grads: &mut Gradients,
        lr: f64,
        step: u64,
    ) -> Result<M> {
        let taken = ParamGrads::take(&module, grads);
        self.apply(module, taken, lr, step)
    }

    /// Apply one update with learning rate `lr` to every parameter of `module` from `grads`
    /// (taken from one backward pass, or averaged over several: `train.accumulate`).
    ///
    /// Every parameter (BatchNorm running statistics and frozen parameters aside) must require a
    /// gradient and have one in `grads`: a parameter that would silently stay at its initial value is an error naming
    /// it ([`Error::Untrained`]), and `module` is lost with it.
    ///
    /// On a thread that is one of several replicas ([`crate::collective::current`]) the
    /// gradients are first averaged over the replicas, bucketed ([`bucketed_mean`]), so that
    /// every replica applies the same update.
    pub fn apply<M: Module>(
        &mut self,
        module: M,
        grads: ParamGrads,
        lr: f64,
        step: u64,
    ) -> Result<M> {
        self.apply_in_buckets(module, grads, lr, step, BUCKET_VALUES)
    }

    /// [`Optimizer::apply`] with buckets of at most `bucket_values` values.
    fn apply_in_buckets<M: Module>(
        &mut self,
        module: M,
        grads: ParamGrads,
        lr: f64,
        step: u64,
        bucket_values: usize,
    ) -> Result<M> {
        let grads = match crate::collective::current() {
            Some(r) => bucketed_mean(&r, grads, bucket_values),
            None => grads.0.into_iter().collect(),
        };
        let mut mapper = Updater {
            opt: self,
            grads,
            lr,
            step,
            untrained: Vec::new(),
        };
        let module = map_paths(module, &mut mapper);
        if mapper.untrained.is_empty() {
            Ok(module)
        } else {
            Err(Error::Untrained {
                parameters: mapper.untrained,
            })
        }
    }

    /// The update of one parameter: `w` and `g` flattened, `excluded` per [`is_excluded`].
    /// Returns the new weights; updates the state of `path`.
    pub fn update(
        &mut self,
        path: &str,
        w: Tensor<1>,
        g: Tensor<1>,
        excluded: bool,
        lr: f64,
        step: u64,
    ) -> Tensor<1> {
        let c = &self.cfg;
        let slots = self.state.entry(path.to_string()).or_default();
        match c.kind {
            OptimKind::Lars | OptimKind::Sgd => {
                let mut g = g;
                if !excluded && c.weight_decay > 0.0 {
                    g = g + w.clone().mul_scalar(c.weight_decay); // decay before the trust ratio
                }
                if c.kind == OptimKind::Lars && !excluded {
                    g = g.clone() * trust_ratio(w.clone(), g, c.trust_coefficient);
                }
                let m = match slots.pop() {
                    Some(m) => m.mul_scalar(c.momentum) + g.clone(),
                    None => g.clone(),
                };
                slots.push(m.clone());
                // Nesterov: step along g + μ·m instead of m.
                let direction = if c.nesterov && c.kind == OptimKind::Sgd {
                    g + m.mul_scalar(c.momentum)
                } else {
                    m
                };
                w - direction.mul_scalar(lr)
            }
            OptimKind::Adamw => {
                let (m, v) = match (slots.len(), std::mem::take(slots)) {
                    (2, mut s) => {
                        let v = s.pop().unwrap();
                        let m = s.pop().unwrap();
                        (
                            m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1),
                            v.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2),
                        )
                    }
                    _ => (
                        g.clone().mul_scalar(1.0 - c.beta1),
                        g.square().mul_scalar(1.0 - c.beta2),
                    ),
                };
                let t = step.max(1) as i32;
                let mhat = m.clone().div_scalar(1.0 - c.beta1.powi(t));
                let vhat = v.clone().div_scalar(1.0 - c.beta2.powi(t));
                slots.push(m);
                slots.push(v);
                let mut upd = mhat / vhat.sqrt().add_scalar(c.epsilon);
                if !excluded && c.weight_decay > 0.0 {
                    upd = upd + w.clone().mul_scalar(c.weight_decay);
                }
                w - upd.mul_scalar(lr)
            }
        }
    }
}

/// η·‖w‖/‖g‖ where both norms are positive, else 1 (official `scale_by_lars`). Stays on the
/// device: no host synchronisation. Returns a \[1\] tensor.
pub fn trust_ratio(w: Tensor<1>, g: Tensor<1>, eta: f64) -> Tensor<1> {
    let wn = w.square().sum().sqrt(); // [1]
    let gn = g.square().sum().sqrt(); // [1]
    let ok = wn
        .clone()
        .greater_elem(0.0)
        .bool_and(gn.clone().greater_elem(0.0));
    let ratio = wn.mul_scalar(eta) / gn.clamp_min(f32::MIN_POSITIVE);
    ratio.ones_like().mask_where(ok, ratio)
}

struct Updater<'a> {
    opt: &'a mut Optimizer,
    /// The gradients by path (a replica group's mean, with several replicas).
    grads: BTreeMap<String, Tensor<1>>,
    lr: f64,
    step: u64,
    /// Parameters that do not require a gradient or got none, with the reason.
    untrained: Vec<String>,
}

impl PathMapper for Updater<'_> {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if is_buffer(path) {
            return param;
        }
        if self.opt.is_frozen(path) {
            self.grads.remove(path);
            return param;
        }
        if !param.is_require_grad() {
            self.untrained
                .push(format!("{path} (does not require a gradient)"));
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let Some(g) = self.grads.remove(path) else {
            self.untrained
                .push(format!("{path} (no gradient reached it)"));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let w = tensor.without_autodiff().reshape([n]);
        let lr = if path.starts_with("predictor.") {
            self.lr * self.opt.cfg.predictor_lr_scale
        } else {
            self.lr
        };
        let new = self
            .opt
            .update(path, w, g, is_excluded(path, &dims), lr, self.step);
        let new = Tensor::from_inner(new.reshape(dims)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests;
