//! One 3×3 convolution (stride 1, padding 1) at each ResNet-18 CIFAR stage size on `flex`,
//! batch 128: forward (plain and autodiff), backward and weight-gradient-only times and GFLOP/s
//! (counted as for the direct convolution), burn's `conv2d` against `byol_kernels::conv`.
//! Run: cargo run --release -p byol-kernels --example prof_conv
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;
fn main() {
    byol_kernels::alloc::keep_freed_memory();
    let device = burn::tensor::Device::flex();
    for (c, h) in [(64usize, 32usize), (128, 16), (256, 8), (512, 4)] {
        let x = Tensor::<4>::random([128, c, h, h], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([c, c, 3, 3], Distribution::Normal(0.0, 0.05), &device);
        let opts = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let gflop = 2.0 * (c * c * 9 * h * h * 128) as f64 / 1e9;
        for ours in [false, true] {
            let conv = |x: Tensor<4>, w: Tensor<4>| {
                if ours {
                    byol_kernels::conv::try_conv2d(&x, &w, 1, 1).unwrap()
                } else {
                    burn::tensor::module::conv2d(x, w, None, opts.clone())
                }
            };
            for _ in 0..2 {
                let t = Instant::now();
                let _ = conv(x.clone(), w.clone()).sum().into_scalar::<f32>();
                let tp = t.elapsed().as_secs_f64();
                let xa = x.clone().autodiff().require_grad();
                let wa = w.clone().autodiff().require_grad();
                let t = Instant::now();
                let y = conv(xa.clone(), wa.clone());
                let _ = y.clone().sum().into_scalar::<f32>();
                let tf = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let g = y.sum().backward();
                let gx = xa.grad(&g).unwrap();
                let gw = wa.grad(&g).unwrap();
                let _ = gx.sum().into_scalar::<f32>() + gw.sum().into_scalar::<f32>();
                let tb = t.elapsed().as_secs_f64();
                // The weight gradient alone (the input needs none).
                let wa = w.clone().autodiff().require_grad();
                let y = conv(x.clone().autodiff(), wa.clone());
                let _ = y.clone().sum().into_scalar::<f32>();
                let t = Instant::now();
                let g = y.sum().backward();
                let _ = wa.grad(&g).unwrap().sum().into_scalar::<f32>();
                let tw = t.elapsed().as_secs_f64();
                println!(
                    "{} {c}x{h}: plain fwd {:.1} ms ({:.0} GF/s) autodiff fwd {:.1} ms bwd {:.1} ms ({:.0} GF/s) dW only {:.1} ms",
                    if ours { "ours" } else { "burn" },
                    tp * 1e3,
                    gflop / tp,
                    tf * 1e3,
                    tb * 1e3,
                    2.0 * gflop / tb,
                    tw * 1e3
                );
            }
        }
    }
}
