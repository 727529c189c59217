//! Training-mode batch normalisation on the `flex` CPU backend as two passes forward (statistics,
//! then the affine map) and two backward (per-channel sums of dy and dy·x̂, then dx), with its own
//! autodiff node. Built from tensor operations, the same function takes ≈ 6 passes over the
//! activation forward and ≈ 12 backward (docs/BENCHMARKS.md).
//!
//! With n values per channel, x̂ = (x − μ)/σ, σ = √(var + ε) (biased variance, as the paper's
//! BatchNorm and burn's):
//! y = γ·x̂ + β;  dβ = Σ dy;  dγ = Σ dy·x̂;  dx = γ/σ · (dy − dβ/n − x̂·dγ/n).
//! Taken for f32 tensors on `flex` (with or without autodiff); the caller falls back to tensor
//! operations elsewhere. Equal to burn's `batch_norm_train` to f32 rounding (tested in `bn`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Shape, Tensor, TensorData};
use rayon::prelude::*;

/// [N, C, R]: batch, channels, values per (batch, channel).
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    r: usize,
}

type Output<const D: usize> = (Tensor<D>, Tensor<1>, Tensor<1>);

/// (output, batch mean [C], biased batch variance [C]) when `x`, `gamma` and `beta` are f32
/// `flex` tensors, all tracked by autodiff or all not; `None` otherwise.
pub fn try_batch_norm_train<const D: usize>(x: &Tensor<D>, gamma: &Tensor<1>, beta: &Tensor<1>, epsilon: f64) -> Option<Output<D>> {
    if [x.dtype(), gamma.dtype(), beta.dtype()].iter().any(|d| *d != DType::F32) || D < 2 {
        return None;
    }
    let shape = x.dims();
    let dims = Dims { n: shape[0], c: shape[1], r: shape[2..].iter().product() };
    if dims.n * dims.r == 0 {
        return None;
    }
    if let (Ok(xp), Ok(gp), Ok(bp)) = (
        x.clone().try_into_primitive::<Autodiff<Flex>>(),
        gamma.clone().try_into_primitive::<Autodiff<Flex>>(),
        beta.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        let xc = xp.primitive().to_contiguous();
        let (gv, bv) = (values(gp.primitive()), values(bp.primitive()));
        let (mean, var) = statistics(&xc, dims);
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + epsilon as f32).sqrt()).collect();
        let y = affine(&xc, dims, &mean, &invstd, &gv, &bv, shape.into());
        let out = match BnBackward.prepare::<NoCheckpointing>([xp.node(), gp.node(), bp.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xc, dims, mean.clone(), invstd, gv), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        // The statistics carry no gradient (they only feed the running averages): plain tensors.
        let stat = |v: Vec<f32>| Tensor::from_primitive::<Flex>(vector(v));
        return Some((Tensor::from_primitive::<Autodiff<Flex>>(out), stat(mean), stat(var)));
    }
    if let (Ok(xp), Ok(gp), Ok(bp)) =
        (x.clone().try_into_primitive::<Flex>(), gamma.clone().try_into_primitive::<Flex>(), beta.clone().try_into_primitive::<Flex>())
    {
        let xc = xp.to_contiguous();
        let (mean, var) = statistics(&xc, dims);
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + epsilon as f32).sqrt()).collect();
        let y = affine(&xc, dims, &mean, &invstd, &values(&gp), &values(&bp), shape.into());
        let stat = |v: Vec<f32>| Tensor::from_primitive::<Flex>(vector(v));
        return Some((Tensor::from_primitive::<Flex>(y), stat(mean), stat(var)));
    }
    None
}

fn values(t: &FlexTensor) -> Vec<f32> {
    t.to_contiguous().as_slice::<f32>().expect("contiguous f32").to_vec()
}

fn vector(v: Vec<f32>) -> FlexTensor {
    let n = v.len();
    FlexTensor::from_data(TensorData::new(v, [n]))
}

/// Per channel: the values of batch item `b` are `x[(b·C + ch)·R .. +R]`.
fn channel_blocks(x: &[f32], d: Dims, ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..d.n).map(move |b| &x[(b * d.c + ch) * d.r..(b * d.c + ch + 1) * d.r])
}

/// Σ f(a[i], b[i]) with 16 independent f32 partial sums (so that the loop vectorises), added up
/// in f64.
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..L {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(x, y)| f(*x, *y) as f64).sum();
    acc.iter().map(|v| *v as f64).sum::<f64>() + tail
}

/// Mean and biased variance per channel (two passes).
fn statistics(x: &FlexTensor, d: Dims) -> (Vec<f32>, Vec<f32>) {
    let xv = x.as_slice::<f32>().expect("contiguous f32");
    let count = (d.n * d.r) as f64;
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = channel_blocks(xv, d, ch).map(|s| lane_sum(s, s, |v, _| v)).sum();
            let mean = (sum / count) as f32;
            let sq: f64 = channel_blocks(xv, d, ch).map(|s| lane_sum(s, s, |v, _| (v - mean) * (v - mean))).sum();
            (mean, (sq / count) as f32)
        })
        .unzip()
}

/// y = x·a + b per channel, a = γ/σ, b = β − μ·a.
fn affine(x: &FlexTensor, d: Dims, mean: &[f32], invstd: &[f32], gamma: &[f32], beta: &[f32], shape: Shape) -> FlexTensor {
    let xv = x.as_slice::<f32>().expect("contiguous f32");
    let a: Vec<f32> = (0..d.c).map(|ch| gamma[ch] * invstd[ch]).collect();
    let b: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] * a[ch]).collect();
    let mut y = vec![0f32; xv.len()];
    y.par_chunks_mut(d.c * d.r).zip(xv.par_chunks(d.c * d.r)).for_each(|(yb, xb)| {
        for ch in 0..d.c {
            let (ys, xs) = (&mut yb[ch * d.r..(ch + 1) * d.r], &xb[ch * d.r..(ch + 1) * d.r]);
            let (ac, bc) = (a[ch], b[ch]);
            ys.iter_mut().zip(xs).for_each(|(o, i)| *o = i * ac + bc);
        }
    });
    FlexTensor::from_data(TensorData::new(y, shape))
}

#[derive(Debug)]
struct BnBackward;

impl Backward<Flex, 3> for BnBackward {
    /// (x, dims, mean, 1/σ, γ)
    type State = (FlexTensor, Dims, Vec<f32>, Vec<f32>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, d, mean, invstd, gamma) = ops.state;
        let (xv, dyv) = (x.as_slice::<f32>().expect("contiguous f32"), dy.as_slice::<f32>().expect("contiguous f32"));
        // Σ dy and Σ dy·x̂ per channel.
        let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = (0..d.c)
            .into_par_iter()
            .map(|ch| {
                let (m, s) = (mean[ch], invstd[ch]);
                let (mut sb, mut sg) = (0f64, 0f64);
                for (xs, gs) in channel_blocks(xv, d, ch).zip(channel_blocks(dyv, d, ch)) {
                    sb += lane_sum(gs, gs, |g, _| g);
                    sg += lane_sum(xs, gs, |x, g| g * (x - m));
                }
                (sb as f32, (sg * s as f64) as f32)
            })
            .unzip();
        if let Some(node) = node_x {
            let count = (d.n * d.r) as f32;
            let mut dx = vec![0f32; xv.len()];
            dx.par_chunks_mut(d.c * d.r).zip(xv.par_chunks(d.c * d.r)).zip(dyv.par_chunks(d.c * d.r)).for_each(|((ob, xb), gb)| {
                for ch in 0..d.c {
                    let range = ch * d.r..(ch + 1) * d.r;
                    let (m, s) = (mean[ch], invstd[ch]);
                    let k = gamma[ch] * s;
                    let (mb, mg) = (dbeta[ch] / count, dgamma[ch] / count);
                    for ((o, xi), gi) in ob[range.clone()].iter_mut().zip(&xb[range.clone()]).zip(&gb[range]) {
                        *o = k * (gi - mb - (xi - m) * s * mg);
                    }
                }
            });
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, x.layout().shape().clone())));
        }
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, vector(dgamma));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, vector(dbeta));
        }
    }
}
