//! What the kernels share: `flex` tensors to and from row-major values, buffers written in
//! parallel without clearing, per-thread scratch buffers, and the fixed split of a reduction into
//! runs that keeps every result independent of the thread count.

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// The f32 values of a `flex` tensor in row-major order (copied only when not contiguous).
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous f32")
                .to_vec(),
        ),
    }
}

/// A `flex` tensor owning `v` (no copy).
pub(crate) fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// A buffer of `n` values written in parallel chunks of `chunk` by `f(chunk index, chunk)`, with
/// no pass to clear it first.
///
/// # Safety
/// `f` must write every element of the chunk it is given.
pub(crate) unsafe fn written(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    // SAFETY: the chunks cover all n elements and the caller guarantees `f` wrote each.
    unsafe { v.set_len(n) };
    v
}

/// Per-thread buffers, kept between calls so that the im2col matrices are not allocated (and
/// faulted in) again for every group of images.
#[derive(Default)]
pub(crate) struct Scratch {
    /// im2col matrix (in [`crate::conv::winograd`]: the transformed input).
    pub col: Vec<f32>,
    /// Its gradient (in [`crate::conv::winograd`]: the products or the transformed output gradient).
    pub dcol: Vec<f32>,
    /// dy of a group of images.
    pub dy: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::default();
}

/// Runs `f` with this thread's buffers. They are taken out for the duration rather than
/// borrowed: a thread waiting inside a parallel GEMM may run another convolution task, which
/// then gets fresh buffers instead of a borrow conflict.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.take();
    let r = f(&mut s);
    SCRATCH.set(s);
    r
}

/// Floats of partial weight gradients the backward pass may hold (see [`run_split`]).
const PARTIAL_BUDGET: usize = 1 << 22;

/// Runs of image groups in the backward pass (see [`run_split`]).
const RUNS: usize = 8;

/// (runs, groups per run) for a weight gradient over `groups` groups of images whose partial
/// sum has `partial_len` floats. The groups are cut into a fixed number of runs, each
/// accumulating its own weight gradient in order; the partial sums are then added in run order.
/// The number of runs depends on sizes only (fewer for large kernels, whose partial sums cost
/// the most: 512·4608 floats each for a 3×3 convolution of 512 channels), never on the thread
/// count or on scheduling, so training stays bit-reproducible.
pub(crate) fn run_split(groups: usize, partial_len: usize) -> (usize, usize) {
    let runs = groups.min(RUNS).min((PARTIAL_BUDGET / partial_len).max(2));
    let per_run = groups.div_ceil(runs);
    (groups.div_ceil(per_run), per_run)
}
