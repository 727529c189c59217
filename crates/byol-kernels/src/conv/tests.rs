//! The tests of `conv`.

use super::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution};

fn reference(x: Tensor<4>, w: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    conv2d(
        x,
        w,
        None,
        ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
    )
}

fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

/// Forward, input gradient and weight gradient against burn's convolution, for the shapes of
/// the encoders (3×3 s1/s2, 1×1 s1/s2, 7×7 s2 stem), single images and groups of images.
#[test]
fn matches_burn_conv_values_and_gradients() {
    let device = Device::flex();
    let cases = [
        // n, c, h, o, k, stride, pad
        (3, 4, 9, 5, 3, 1, 1),
        (2, 3, 32, 8, 3, 1, 1),
        (5, 6, 8, 7, 3, 2, 1),
        (4, 6, 7, 9, 1, 1, 0),
        (3, 5, 8, 4, 1, 2, 0),
        (2, 3, 23, 4, 7, 2, 3),
        (20, 8, 4, 6, 3, 1, 1),
        (7, 16, 16, 16, 3, 1, 1),
        (3, 4, 1, 5, 3, 1, 1),
        (2, 3, 2, 4, 3, 1, 1),
        (2, 2, 2, 3, 7, 1, 3),
        // Winograd F(2×2, 3×3): odd sizes, a 1×1 map, several groups of images.
        (2, 16, 7, 20, 3, 1, 1),
        (3, 32, 4, 24, 3, 1, 1),
        (2, 16, 1, 16, 3, 1, 1),
        (9, 16, 32, 16, 3, 1, 1),
        (600, 16, 2, 17, 3, 1, 1),
    ];
    for (n, c, h, o, k, stride, pad) in cases {
        let x = Tensor::<4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.3), &device);
        let ours = try_conv2d(&x, &w, stride, pad).expect("flex f32 takes this path");
        let want = reference(x.clone(), w.clone(), stride, pad);
        assert_eq!(ours.dims(), want.dims());
        let d = max_diff(ours, want.clone());
        assert!(d < 1e-5, "forward {n}×{c}×{h}² k{k} s{stride}: {d}");

        // Gradients of Σ y ⊙ r for a fixed random r.
        let r = Tensor::<4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads = |use_ours: bool| {
            let xa = x.clone().autodiff().require_grad();
            let wa = w.clone().autodiff().require_grad();
            let y = if use_ours {
                try_conv2d(&xa, &wa, stride, pad).expect("autodiff flex f32 takes this path")
            } else {
                reference(xa.clone(), wa.clone(), stride, pad)
            };
            let g = (y * r.clone().autodiff()).sum().backward();
            (xa.grad(&g).unwrap(), wa.grad(&g).unwrap())
        };
        let ((dx, dw), (dx_ref, dw_ref)) = (grads(true), grads(false));
        let ddx = max_diff(dx, dx_ref);
        let ddw = max_diff(dw, dw_ref);
        assert!(ddx < 1e-5, "dx {n}×{c}×{h}² k{k} s{stride}: {ddx}");
        assert!(ddw < 1e-5, "dw {n}×{c}×{h}² k{k} s{stride}: {ddw}");
    }
}

/// Non-contiguous inputs (transposed views) give burn's values: a single image through the
/// im2col path, and a non-square map (odd height, even width) through the Winograd path.
#[test]
fn strided_inputs() {
    let device = Device::flex();
    for (n, c, h, w, o) in [(1, 4, 9, 7, 5), (3, 16, 8, 5, 18)] {
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device)
            .swap_dims(2, 3);
        let k = Tensor::<4>::random([o, c, 3, 3], Distribution::Normal(0.0, 0.3), &device);
        let ours = try_conv2d(&x, &k, 1, 1).unwrap();
        assert!(
            max_diff(ours, reference(x, k, 1, 1)) < 1e-5,
            "{n}×{c}×{h}×{w}"
        );
    }
}

/// Only the weight needs a gradient (the first convolution on the input views).
#[test]
fn weight_gradient_without_input_gradient() {
    let device = Device::flex();
    let x = Tensor::<4>::random([4, 3, 10, 10], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([6, 3, 3, 3], Distribution::Normal(0.0, 0.3), &device);
    let xa = x.clone().autodiff();
    let wa = w.clone().autodiff().require_grad();
    let g = try_conv2d(&xa, &wa, 1, 1)
        .unwrap()
        .powi_scalar(2)
        .sum()
        .backward();
    let wr = w.autodiff().require_grad();
    let gr = reference(x.autodiff(), wr.clone(), 1, 1)
        .powi_scalar(2)
        .sum()
        .backward();
    assert!(max_diff(wa.grad(&g).unwrap(), wr.grad(&gr).unwrap()) < 1e-5);
}

/// Empty batches and channel-less tensors are left to burn's convolution.
#[test]
fn empty_tensors_are_not_taken() {
    let device = Device::flex();
    let w = Tensor::<4>::ones([4, 16, 3, 3], &device);
    assert!(try_conv2d(&Tensor::<4>::ones([0, 16, 8, 8], &device), &w, 1, 1).is_none());
    assert!(
        try_conv2d(
            &Tensor::<4>::ones([2, 0, 8, 8], &device),
            &Tensor::<4>::ones([4, 0, 3, 3], &device),
            1,
            1
        )
        .is_none()
    );
}

/// Low-precision tensors are left to burn's convolution.
#[test]
fn other_dtypes_are_not_taken() {
    let device = Device::flex();
    let x = Tensor::<4>::ones([1, 2, 4, 4], &device).cast(burn::tensor::FloatDType::BF16);
    let w = Tensor::<4>::ones([2, 2, 3, 3], &device).cast(burn::tensor::FloatDType::BF16);
    assert!(try_conv2d(&x, &w, 1, 1).is_none());
}
