//! The gradients an update is made from: taken out of a backward pass by parameter path, summed
//! over micro-batches (`train.accumulate`), averaged over replicas in buckets.

use crate::model::params::{PathVisitor, is_buffer, visit_paths};
use burn::module::{Module, Param};
use burn::tensor::{Gradients, Tensor};
use std::collections::BTreeMap;

/// The most values one gradient all-reduce carries (25 MiB of f32, PyTorch DDP's default
/// `bucket_cap_mb`): a ResNet-18 at base width 8 fits in one, a ResNet-50 takes four.
pub const BUCKET_VALUES: usize = 25 << 18;

/// The gradients of a module's trainable parameters, flattened, by parameter path in the
/// module's order (the same on every replica). What [`Optimizer::apply`] updates from.
pub struct ParamGrads(pub(super) Vec<(String, Tensor<1>)>);

impl ParamGrads {
    /// The gradients of `module`'s trainable parameters, taken out of `grads` (one backward pass).
    /// A parameter that got none is left out (the update names it).
    pub fn take<M: Module>(module: &M, grads: &mut Gradients) -> Self {
        struct Take<'a> {
            grads: &'a mut Gradients,
            out: Vec<(String, Tensor<1>)>,
        }
        impl PathVisitor for Take<'_> {
            fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
                if is_buffer(path) || !param.is_require_grad() {
                    return;
                }
                if let Some(g) = param.val().grad_remove(self.grads) {
                    let n: usize = g.dims().iter().product();
                    self.out.push((path.to_string(), g.reshape([n])));
                }
            }
        }
        let mut take = Take {
            grads,
            out: Vec::new(),
        };
        visit_paths(module, &mut take);
        ParamGrads(take.out)
    }
}

/// The element-wise sum of two passes' gradients of the same module (a parameter with a gradient
/// in one pass only keeps that one).
impl std::ops::Add for ParamGrads {
    type Output = ParamGrads;

    fn add(self, other: ParamGrads) -> ParamGrads {
        let mut other: BTreeMap<String, Tensor<1>> = other.0.into_iter().collect();
        let mut sum: Vec<(String, Tensor<1>)> = self
            .0
            .into_iter()
            .map(|(path, g)| {
                let g = match other.remove(&path) {
                    Some(h) => g + h,
                    None => g,
                };
                (path, g)
            })
            .collect();
        sum.extend(other);
        ParamGrads(sum)
    }
}

/// The mean over the replica group of every gradient in `grads`: the gradients, in the module's
/// parameter order, are concatenated into buckets of at most `bucket_values` (a parameter
/// larger than that is a bucket of its own) and each bucket is one all-reduce, instead of one
/// per parameter (Horovod's tensor fusion, PyTorch DDP's buckets). Element for element the sum
/// is the one a per-parameter all-reduce computes, so the update is bit for bit the same.
pub(super) fn bucketed_mean(
    replica: &crate::collective::Replica,
    grads: ParamGrads,
    bucket_values: usize,
) -> BTreeMap<String, Tensor<1>> {
    let mut averaged = BTreeMap::new();
    let mut bucket: Vec<(String, Tensor<1>)> = Vec::new();
    let mut size = 0;
    let mut flush = |bucket: &mut Vec<(String, Tensor<1>)>| {
        if bucket.is_empty() {
            return;
        }
        let lens: Vec<usize> = bucket.iter().map(|(_, g)| g.dims()[0]).collect();
        let flat = replica.all_reduce_mean(Tensor::cat(
            bucket.iter().map(|(_, g)| g.clone()).collect(),
            0,
        )); // [Σ n]
        let mut at = 0;
        for ((path, _), n) in bucket.drain(..).zip(lens) {
            averaged.insert(path, flat.clone().narrow(0, at, n)); // [n]
            at += n;
        }
    };
    for (path, g) in grads.0 {
        let n = g.dims()[0];
        if size + n > bucket_values {
            flush(&mut bucket);
            size = 0;
        }
        bucket.push((path, g));
        size += n;
    }
    flush(&mut bucket);
    averaged
}
