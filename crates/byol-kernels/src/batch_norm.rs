//! Training-mode batch normalisation on the `flex` CPU backend, optionally followed by a residual
//! add and a ReLU (the tail of every ResNet block), as one autodiff node: two passes forward
//! (statistics, then the affine map with the add and the ReLU) and three backward (the ReLU mask,
//! per-channel sums of dz and dz·x̂, then dx). Built from tensor operations, batch norm alone
//! takes ≈ 6 passes forward and ≈ 12 backward, and `flex`'s element-wise kernels (the ReLU, the
//! add and their gradients) run on one thread (docs/BENCHMARKS.md).
//!
//! With n values per channel, x̂ = (x − μ)/σ, σ = √(var + ε) (biased variance, as the paper's
//! BatchNorm and burn's), out = relu(γ·x̂ + β + r):
//! dz = dout·\[out > 0\];  dr = dz;  dβ = Σ dz;  dγ = Σ dz·x̂;  dx = γ/σ · (dz − dβ/n − x̂·dγ/n).
//! A NaN passes through the ReLU and keeps its gradient, as in burn's `relu`.
//! Taken for f32 tensors on `flex` (with or without autodiff); the callers fall back to tensor
//! operations elsewhere. Equal to the unfused form to f32 rounding (tested below).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Shape, Tensor, TensorData};
use rayon::prelude::*;

use crate::common::{tensor, values, written};
use crate::simd::multiversion;
use std::mem::MaybeUninit;

/// [N, C, R]: batch, channels, values per (batch, channel).
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    r: usize,
}

/// (output, batch mean [C], biased batch variance [C]).
type Output<const D: usize> = (Tensor<D>, Tensor<1>, Tensor<1>);

/// What the backward pass needs.
#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    /// The output, when a ReLU follows (its mask).
    out: Option<FlexTensor>,
    d: Dims,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
}

/// relu?(batch_norm(x) + residual?) when `x`, `gamma`, `beta` (and `residual`) are f32 `flex`
/// tensors, all tracked by autodiff or all not; `None` otherwise.
pub fn try_batch_norm_act<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    residual: Option<&Tensor<D>>,
    relu: bool,
) -> Option<Output<D>> {
    let mut dtypes = vec![x.dtype(), gamma.dtype(), beta.dtype()];
    dtypes.extend(residual.map(|r| r.dtype()));
    if dtypes.iter().any(|d| *d != DType::F32)
        || D < 2
        || residual.is_some_and(|r| r.dims() != x.dims())
    {
        return None;
    }
    let shape = x.dims();
    let d = Dims {
        n: shape[0],
        c: shape[1],
        r: shape[2..].iter().product(),
    };
    if d.n * d.r == 0 {
        return None;
    }
    let stat = |v: Vec<f32>| Tensor::from_primitive::<Flex>(vector(v));
    let normalise = |xc: &FlexTensor, gv: &[f32], bv: &[f32], rv: Option<&FlexTensor>| {
        let (mean, var) = statistics(xc, d);
        let invstd: Vec<f32> = var
            .iter()
            .map(|v| 1.0 / (v + epsilon as f32).sqrt())
            .collect();
        let rc = rv.map(|r| r.to_contiguous());
        let rs = rc
            .as_ref()
            .map(|r| r.as_slice::<f32>().expect("contiguous f32"));
        let y = affine(xc, d, &mean, &invstd, gv, bv, rs, relu, shape.into());
        (y, mean, var, invstd)
    };
    let ad = |t: &Tensor<D>| t.clone().try_into_primitive::<Autodiff<Flex>>().ok();
    let ad1 = |t: &Tensor<1>| t.clone().try_into_primitive::<Autodiff<Flex>>().ok();
    if let (Some(xp), Some(gp), Some(bp)) = (ad(x), ad1(gamma), ad1(beta)) {
        let rp = match residual {
            Some(r) => Some(ad(r)?),
            None => None,
        };
        let xc = xp.primitive().to_contiguous();
        let (gv, bv) = (values(gp.primitive()).into_owned(), values(bp.primitive()));
        let (y, mean, var, invstd) = normalise(&xc, &gv, &bv, rp.as_ref().map(|r| r.primitive()));
        let state = State {
            x: xc,
            out: relu.then(|| y.clone()),
            d,
            mean: mean.clone(),
            invstd,
            gamma: gv,
        };
        let out = match rp {
            None => match BnBackward
                .prepare::<NoCheckpointing>([xp.node(), gp.node(), bp.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
            Some(rp) => match BnResidualBackward
                .prepare::<NoCheckpointing>([xp.node(), gp.node(), bp.node(), rp.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
        };
        // The statistics carry no gradient (they only feed the running averages): plain tensors.
        return Some((
            Tensor::from_primitive::<Autodiff<Flex>>(out),
            stat(mean),
            stat(var),
        ));
    }
    let plain = |t: &Tensor<D>| t.clone().try_into_primitive::<Flex>().ok();
    let plain1 = |t: &Tensor<1>| t.clone().try_into_primitive::<Flex>().ok();
    let (xp, gp, bp) = (plain(x)?, plain1(gamma)?, plain1(beta)?);
    let rp = match residual {
        Some(r) => Some(plain(r)?),
        None => None,
    };
    let (y, mean, var, _) = normalise(&xp.to_contiguous(), &values(&gp), &values(&bp), rp.as_ref());
    Some((Tensor::from_primitive::<Flex>(y), stat(mean), stat(var)))
}

fn vector(v: Vec<f32>) -> FlexTensor {
    let n = v.len();
    tensor(v, [n])
}

/// Per channel: the values of batch item `b` are `x[(b·C + ch)·R .. +R]`.
fn channel_blocks(x: &[f32], d: Dims, ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..d.n).map(move |b| &x[(b * d.c + ch) * d.r..(b * d.c + ch + 1) * d.r])
}

/// Σ f(a[i], b[i]) with 16 independent f32 partial sums (so that the loop vectorises), added up
/// in f64. Inlined into its (multi-versioned) callers.
#[inline(always)]
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
    (0..d.c)
        .into_par_iter()
        .map(|ch| channel_statistics(xv, d, ch))
        .unzip()
}

multiversion! {
/// Mean and biased variance of channel `ch`.
fn channel_statistics(xv: &[f32], d: Dims, ch: usize) -> (f32, f32) {
    // Plain loops rather than iterator adapters: an adapter's `fold` is a function of its own,
    // compiled without this function's target features.
    let count = (d.n * d.r) as f64;
    let mut sum = 0f64;
    for s in channel_blocks(xv, d, ch) {
        sum += lane_sum(s, s, |v, _| v);
    }
    let mean = (sum / count) as f32;
    let mut sq = 0f64;
    for s in channel_blocks(xv, d, ch) {
        sq += lane_sum(s, s, |v, _| (v - mean) * (v - mean));
    }
    (mean, (sq / count) as f32)
}
}

/// burn's ReLU: NaN passes through (`NaN <= 0` is false). Written as a select so that the loops
/// around it vectorise.
#[inline(always)]
fn relu_f(v: f32) -> f32 {
    if v <= 0.0 { 0.0 } else { v }
}

/// out = relu?(x·a + b + r?) per channel, a = γ/σ, b = β − μ·a.
#[allow(
    clippy::too_many_arguments,
    reason = "the batch norm's statistics and parameters, each a slice per channel, and the fused residual and ReLU: a struct would be built for this one call"
)]
fn affine(
    x: &FlexTensor,
    d: Dims,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    shape: Shape,
) -> FlexTensor {
    let xv = x.as_slice::<f32>().expect("contiguous f32");
    let a: Vec<f32> = (0..d.c).map(|ch| gamma[ch] * invstd[ch]).collect();
    let b: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] * a[ch]).collect();
    let row = d.c * d.r;
    // SAFETY: each chunk is one batch item's row; `affine_row` writes all of it.
    let y = unsafe {
        written(xv.len(), row, |i, yb| {
            affine_row(
                &xv[i * row..(i + 1) * row],
                residual.map(|r| &r[i * row..(i + 1) * row]),
                yb,
                &a,
                &b,
                d.r,
                relu,
            )
        })
    };
    FlexTensor::from_data(TensorData::new(y, shape))
}

multiversion! {
/// One batch item's row [C, R] of the affine map: yb = relu?(xb·a + b + rb?) per channel.
fn affine_row(xb: &[f32], rb: Option<&[f32]>, yb: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], r: usize, relu: bool) {
    for ch in 0..a.len() {
        let span = ch * r..(ch + 1) * r;
        let (ys, xs) = (&mut yb[span.clone()], &xb[span.clone()]);
        let (ac, bc) = (a[ch], b[ch]);
        match (rb, relu) {
            (None, false) => (0..r).for_each(|i| _ = ys[i].write(xs[i] * ac + bc)),
            (None, true) => (0..r).for_each(|i| _ = ys[i].write(relu_f(xs[i] * ac + bc))),
            (Some(rb), false) => {
                let rs = &rb[span];
                (0..r).for_each(|i| _ = ys[i].write(xs[i] * ac + bc + rs[i]))
            }
            (Some(rb), true) => {
                let rs = &rb[span];
                (0..r).for_each(|i| _ = ys[i].write(relu_f(xs[i] * ac + bc + rs[i])))
            }
        }
    }
}
}

multiversion! {
/// z = g where the output o is positive or NaN (`NaN <= 0` is false), 0 elsewhere.
fn relu_mask(o: &[f32], g: &[f32], z: &mut [MaybeUninit<f32>]) {
    for j in 0..z.len() {
        let (oj, gj) = (o[j], g[j]);
        z[j].write(if oj <= 0.0 { 0.0 } else { gj });
    }
}
}

multiversion! {
/// (Σ dz, Σ dz·(x − m)) over channel `ch`.
fn channel_gradient_sums(xv: &[f32], dzv: &[f32], d: Dims, ch: usize, m: f32) -> (f64, f64) {
    let (mut sb, mut sg) = (0f64, 0f64);
    for (xs, gs) in channel_blocks(xv, d, ch).zip(channel_blocks(dzv, d, ch)) {
        sb += lane_sum(gs, gs, |g, _| g);
        sg += lane_sum(xs, gs, |x, g| g * (x - m));
    }
    (sb, sg)
}
}

multiversion! {
/// One batch item's row [C, R] of dx = k·(dz − mb − (x − μ)·c) per channel, with k = γ/σ,
/// mb = Σdz/n and c = Σdz·x̂/(n·σ) given per channel as `coef` = [(μ, k, mb, c)].
fn input_gradient_row(xb: &[f32], gb: &[f32], ob: &mut [MaybeUninit<f32>], coef: &[(f32, f32, f32, f32)], r: usize) {
    for (ch, &(m, k, mb, c)) in coef.iter().enumerate() {
        let span = ch * r..(ch + 1) * r;
        let (o, xs, gs) = (&mut ob[span.clone()], &xb[span.clone()], &gb[span]);
        (0..r).for_each(|i| _ = o[i].write(k * (gs[i] - mb - (xs[i] - m) * c)));
    }
}
}

/// (dx, dγ, dβ, dr) for the output gradient `dout`; each only where `want` asks for it.
fn backward(s: &State, dout: FlexTensor, want: [bool; 4]) -> [Option<FlexTensor>; 4] {
    let dout = dout.to_contiguous();
    let d = s.d;
    let shape = s.x.layout().shape().clone();
    // dz = dout·[out > 0] (or dout itself without a ReLU).
    let dz = match &s.out {
        Some(out) => {
            let (ov, gv) = (
                out.as_slice::<f32>().expect("contiguous f32"),
                dout.as_slice::<f32>().expect("contiguous f32"),
            );
            const CHUNK: usize = 1 << 15;
            // SAFETY: `relu_mask` writes every index of its chunk.
            let dz = unsafe {
                written(ov.len(), CHUNK, |i, z| {
                    relu_mask(
                        &ov[i * CHUNK..i * CHUNK + z.len()],
                        &gv[i * CHUNK..i * CHUNK + z.len()],
                        z,
                    )
                })
            };
            FlexTensor::from_data(TensorData::new(dz, shape.clone()))
        }
        None => dout,
    };
    let (xv, dzv) = (
        s.x.as_slice::<f32>().expect("contiguous f32"),
        dz.as_slice::<f32>().expect("contiguous f32"),
    );
    // Σ dz and Σ dz·x̂ per channel.
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let (sb, sg) = channel_gradient_sums(xv, dzv, d, ch, s.mean[ch]);
            (sb as f32, (sg * s.invstd[ch] as f64) as f32)
        })
        .unzip();
    let dx = want[0].then(|| {
        let count = (d.n * d.r) as f32;
        let row = d.c * d.r;
        let coef: Vec<(f32, f32, f32, f32)> = (0..d.c)
            .map(|ch| {
                let sd = s.invstd[ch];
                (
                    s.mean[ch],
                    s.gamma[ch] * sd,
                    dbeta[ch] / count,
                    sd * (dgamma[ch] / count),
                )
            })
            .collect();
        // SAFETY: each chunk is one batch item's row; `input_gradient_row` writes all of it.
        let dx = unsafe {
            written(xv.len(), row, |i, ob| {
                input_gradient_row(
                    &xv[i * row..(i + 1) * row],
                    &dzv[i * row..(i + 1) * row],
                    ob,
                    &coef,
                    d.r,
                )
            })
        };
        FlexTensor::from_data(TensorData::new(dx, shape))
    });
    let dgamma = want[1].then(|| vector(dgamma));
    let dbeta = want[2].then(|| vector(dbeta));
    let dr = want[3].then_some(dz);
    [dx, dgamma, dbeta, dr]
}

/// Computes and registers the gradients of the node's parents: [x, γ, β] or [x, γ, β, residual].
fn backward_node<const N: usize>(ops: Ops<State, N>, grads: &mut Gradients) {
    let dout = grads.consume::<Flex>(&ops.node);
    let mut want = [false; 4];
    want.iter_mut()
        .zip(&ops.parents)
        .for_each(|(w, p)| *w = p.is_some());
    let out = backward(&ops.state, dout, want);
    for (node, g) in ops.parents.into_iter().zip(out) {
        if let (Some(node), Some(g)) = (node, g) {
            grads.register::<Flex>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct BnBackward;

impl Backward<Flex, 3> for BnBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads);
    }
}

#[derive(Debug)]
struct BnResidualBackward;

impl Backward<Flex, 4> for BnResidualBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, Distribution};

    fn max<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// relu(batch_norm(x) + r), fused, against burn's `batch_norm_train` followed by the add and
    /// burn's ReLU: values, batch statistics and the gradients of x, γ, β and the residual, with
    /// and without the residual and the ReLU, then without autodiff (a target network).
    #[test]
    fn matches_burns_batch_norm_add_and_relu() {
        let plain = Device::flex();
        let d = plain.clone().autodiff();
        for (with_residual, with_relu) in [(false, false), (false, true), (true, true)] {
            let x = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(0.2, 1.5), &d)
                .require_grad();
            let r = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(0.0, 1.0), &d)
                .require_grad();
            let g = Tensor::<1>::random([3], Distribution::Normal(1.0, 0.2), &d).require_grad();
            let b = Tensor::<1>::random([3], Distribution::Normal(0.0, 0.2), &d).require_grad();
            let w = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(0.0, 1.0), &d);
            let res = with_residual.then(|| r.clone());
            let (y, mean, var) =
                try_batch_norm_act(&x, &g, &b, 1e-5, res.as_ref(), with_relu).expect("flex f32");
            let reference =
                burn::tensor::module::batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
            let z = match res {
                Some(r) => reference.output + r,
                None => reference.output,
            };
            let y0 = if with_relu { relu(z) } else { z };
            assert!(max(y.clone(), y0.clone()) < 1e-5);
            assert!(max(mean, reference.mean) < 1e-5 && max(var, reference.variance) < 1e-5);
            if with_relu {
                assert!(
                    y0.clone().lower_equal_elem(0.0).any().into_scalar::<bool>(),
                    "the ReLU is active somewhere"
                );
            }
            let g1 = (y * w.clone()).sum().backward();
            let g0 = (y0 * w).sum().backward();
            assert!(max(x.grad(&g1).unwrap(), x.grad(&g0).unwrap()) < 1e-5);
            assert!(max(g.grad(&g1).unwrap(), g.grad(&g0).unwrap()) < 1e-5);
            assert!(max(b.grad(&g1).unwrap(), b.grad(&g0).unwrap()) < 1e-5);
            if with_residual {
                assert!(max(r.grad(&g1).unwrap(), r.grad(&g0).unwrap()) < 1e-6);
            }
        }
        // [B, C] (the MLP heads), without autodiff.
        let x = Tensor::<2>::random([8, 7], Distribution::Normal(-0.3, 1.5), &plain);
        let (g, b) = (
            Tensor::<1>::random([7], Distribution::Normal(1.0, 0.2), &plain),
            Tensor::<1>::zeros([7], &plain),
        );
        let (y, _, _) = try_batch_norm_act(&x, &g, &b, 1e-5, None, true).expect("flex f32");
        let reference = burn::tensor::module::batch_norm_train(x, g, b, 1e-5);
        assert!(max(y, relu(reference.output)) < 1e-5);
    }

    /// Other dtypes are declined (the caller uses tensor operations).
    #[test]
    fn declines_other_dtypes() {
        let x = Tensor::<2>::ones([4, 3], &Device::flex()).cast(burn::tensor::FloatDType::BF16);
        let (g, b) = (
            Tensor::<1>::ones([3], &Device::flex()),
            Tensor::<1>::zeros([3], &Device::flex()),
        );
        assert!(try_batch_norm_act(&x, &g, &b, 1e-5, None, false).is_none());
    }
}
