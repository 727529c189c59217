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

/// Whether a parameter is excluded from weight decay and LARS adaptation (biases, BatchNorm).
pub fn is_excluded(shape: &[usize]) -> bool {
    shape.len() == 1
}

/// An optimizer with its per-parameter state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    cfg: OptimConfig,
    /// path → buffers (momentum; or Adam's first and second moments), flattened.
    pub state: BTreeMap<String, Vec<Tensor<1>>>,
}

impl Optimizer {
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
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
    /// Every parameter (BatchNorm running statistics aside) must require a gradient and have one
    /// in `grads`: a parameter that would silently stay at its initial value is an error naming
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
            .update(path, w, g, is_excluded(&dims), lr, self.step);
        let new = Tensor::from_inner(new.reshape(dims)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use std::collections::BTreeMap;

    fn v(x: &[f32]) -> Tensor<1> {
        Tensor::from_data(TensorData::new(x.to_vec(), [x.len()]), &Device::flex())
    }
    fn get(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_into_vec().unwrap()
    }
    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((f64::from(*x) - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }
    fn cfg(kind: OptimKind) -> OptimConfig {
        OptimConfig {
            kind,
            base_lr: 1.0,
            weight_decay: 0.1,
            momentum: 0.9,
            nesterov: false,
            trust_coefficient: 1e-3,
            warmup_epochs: 0.0,
            predictor_lr_scale: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    #[test]
    fn lars_matches_formula_and_excludes_rank1() {
        let mut opt = cfg(OptimKind::Lars).init();
        let w = [3.0f64, 4.0]; // ‖w‖ = 5
        let g = [0.5f64, -1.0];
        let lr = 0.5;
        // Two steps with the same gradient, by hand: g̃ = g + wd·w; r = η‖w‖/‖g̃‖; m = 0.9·m + r·g̃.
        let mut wh = w;
        let mut m = [0.0f64; 2];
        let mut w_t = v(&[3.0, 4.0]);
        for _ in 0..2 {
            let gt = [g[0] + 0.1 * wh[0], g[1] + 0.1 * wh[1]];
            let r = 1e-3 * (wh[0].hypot(wh[1])) / gt[0].hypot(gt[1]);
            m = [0.9 * m[0] + r * gt[0], 0.9 * m[1] + r * gt[1]];
            wh = [wh[0] - lr * m[0], wh[1] - lr * m[1]];
            w_t = opt.update("w", w_t, v(&[0.5, -1.0]), false, lr, 1);
        }
        close(&get(w_t), &wh);

        // Excluded (bias/BN): plain momentum SGD, no decay, no trust ratio.
        let mut opt = cfg(OptimKind::Lars).init();
        let b1 = opt.update("b", v(&[1.0, 2.0]), v(&[0.5, -1.0]), true, lr, 1);
        close(&get(b1.clone()), &[1.0 - 0.25, 2.0 + 0.5]);
        let b2 = opt.update("b", b1, v(&[0.5, -1.0]), true, lr, 2);
        // m = 0.9·g + g = 1.9·g
        close(&get(b2), &[0.75 - 0.5 * 1.9 * 0.5, 2.5 + 0.5 * 1.9]);
    }

    #[test]
    fn lars_trust_ratio_is_one_for_zero_weights() {
        let r = get(trust_ratio(v(&[0.0, 0.0]), v(&[1.0, 1.0]), 1e-3));
        assert_eq!(r, vec![1.0]);
        let r = get(trust_ratio(v(&[1.0, 0.0]), v(&[0.0, 0.0]), 1e-3));
        assert_eq!(r, vec![1.0]);
    }

    #[test]
    fn sgd_and_adamw_match_formulas() {
        let mut sgd = cfg(OptimKind::Sgd).init();
        let w = sgd.update("w", v(&[1.0, -2.0]), v(&[0.5, 0.5]), false, 0.1, 1);
        close(
            &get(w),
            &[1.0 - 0.1 * (0.5 + 0.1), -2.0 - 0.1 * (0.5 - 0.2)],
        );
        // Nesterov, two steps on an excluded (no decay) parameter with gradient 1:
        // m₁ = 1, step g + 0.9·m₁ = 1.9; m₂ = 1.9, step 1 + 0.9·1.9 = 2.71.
        let mut nag = OptimConfig {
            nesterov: true,
            ..cfg(OptimKind::Sgd)
        }
        .init();
        let b = nag.update("b", v(&[0.0]), v(&[1.0]), true, 0.1, 1);
        let b = nag.update("b", b, v(&[1.0]), true, 0.1, 2);
        close(&get(b), &[-0.1 * (1.9 + 2.71)]);

        let mut adam = cfg(OptimKind::Adamw).init();
        let w = adam.update("w", v(&[1.0, -2.0]), v(&[0.5, -0.25]), false, 0.1, 1);
        // First step: m̂ = g, v̂ = g², so the step is sign(g) (up to ε) plus decoupled decay.
        close(
            &get(w),
            &[1.0 - 0.1 * (1.0 + 0.1), -2.0 - 0.1 * (-1.0 - 0.2)],
        );
        let b = adam.update("b", v(&[1.0]), v(&[0.5]), true, 0.1, 1);
        close(&get(b), &[1.0 - 0.1]);
    }

    /// Two replicas' step averages their gradients in one all-reduce (one bucket) and applies
    /// the update one process makes from the mean of the two losses, to f32 rounding; in buckets
    /// of at most 20 values (the MLP's 24- and 36-value weights each a bucket of their own, the
    /// small vectors sharing theirs) it takes several all-reduces and gives the same bits.
    #[test]
    fn replicas_average_their_gradients_in_buckets() {
        use crate::model::MlpConfig;
        use crate::model::params::{collect, reinit, require_grad};
        let d = Device::flex().autodiff();
        let net = || {
            require_grad(reinit(
                MlpConfig {
                    hidden: 6,
                    output: 3,
                    layers: 3,
                }
                .init(4, &d),
                9,
            ))
        };
        let x = |r: usize| {
            Tensor::<2>::from_data(
                TensorData::new(
                    (0..8)
                        .map(|i| ((i * 7 + r * 3) % 5) as f32 - 2.0)
                        .collect::<Vec<_>>(),
                    [2, 4],
                ),
                &d,
            )
        };
        let loss = |m: &crate::model::Mlp, r: usize| m.forward(x(r)).square().sum(); // [1]
        let c = OptimConfig {
            nesterov: true,
            ..cfg(OptimKind::Sgd)
        };
        let values = |m: crate::model::Mlp| -> BTreeMap<String, Vec<f32>> {
            // The parameters (each replica's BatchNorm statistics are its own batch's).
            collect(&m.valid())
                .into_iter()
                .filter(|(k, _)| !is_buffer(k))
                .map(|(k, v)| (k, v.flat.into_data().try_into_vec().unwrap()))
                .collect()
        };
        // One process: the mean of the two replicas' losses.
        let one = net();
        let mut grads = (loss(&one, 0) + loss(&one, 1)).div_scalar(2.0).backward();
        let want = values(c.init().step(one, &mut grads, 0.1, 1).unwrap());
        // Two replicas with buckets of `cap` values: each one's parameters and the all-reduces.
        let replicated = |cap: usize| {
            let group = crate::collective::host_group(2);
            let got: Vec<BTreeMap<String, Vec<f32>>> = std::thread::scope(|s| {
                let hs: Vec<_> = group
                    .iter()
                    .map(|replica| {
                        let (replica, c) = (replica.clone(), c.clone());
                        s.spawn(move || {
                            let _in = replica.enter(false);
                            let m = net();
                            let grads =
                                ParamGrads::take(&m, &mut loss(&m, replica.rank()).backward());
                            values(c.init().apply_in_buckets(m, grads, 0.1, 1, cap).unwrap())
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(got[0], got[1]);
            (got[0].clone(), group[0].completed())
        };
        let (whole, reduces) = replicated(BUCKET_VALUES);
        assert_eq!(
            reduces,
            Some(1),
            "one all-reduce for every gradient of the step"
        );
        for (k, w) in &want {
            for (a, b) in w.iter().zip(&whole[k]) {
                assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{k}: {a} vs {b}");
            }
        }
        let (split, reduces) = replicated(20);
        assert!(
            reduces.is_some_and(|n| n >= 4),
            "several buckets: {reduces:?} all-reduces"
        );
        assert_eq!(split, whole, "the same sums, bucket by bucket");
    }
}
