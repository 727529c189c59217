//! The one GEMM under the convolutions: the `gemm` crate that burn's `flex` backend uses (with
//! AVX-512 kernels chosen at run time where the CPU has them), called on raw strided operands.

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`) for lhs [m, k], rhs [k, n] and
/// dst [m, n]. Each operand is `(pointer, column stride, row stride)` in elements: element
/// (i, j) of it is at `pointer + i·row stride + j·column stride`, so transposes are free. With
/// `parallel` the product is split over rayon's threads; the result is the same either way.
///
/// # Safety
/// For the whole call, for every i < m, j < n and l < k: `lhs` at (i, l) and `rhs` at (l, j) must
/// be in bounds of an allocation and hold initialised f32 values; `dst` at (i, j) must be in
/// bounds of an allocation that nothing else reads or writes, and hold initialised values when
/// `accumulate` (without it `dst` is only written, so it may be uninitialised); and `dst` must
/// not overlap `lhs` or `rhs`.
#[allow(
    clippy::too_many_arguments,
    reason = "a GEMM's sizes, three strided operands and two flags, as `gemm::gemm` takes them"
)]
pub unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    accumulate: bool,
    parallel: bool,
) {
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract is gemm's: every element addressed by the sizes and strides
    // is in bounds and initialised where read, and the destination is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.1,
            dst.2,
            accumulate,
            lhs.0,
            lhs.1,
            lhs.2,
            rhs.0,
            rhs.1,
            rhs.2,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
