//! Training-mode batch norm with its ReLU (`byol_kernels::batch_norm::try_batch_norm_act`, the
//! fused `flex` node), forward and backward, at each ResNet-18 CIFAR stage size, batch 64, and the
//! estimate per training step for the online network (both views).
//! Run: cargo run --release -p byol-kernels --example prof_bn
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;
fn main() {
    byol_kernels::alloc::keep_freed_memory();
    let device = burn::tensor::Device::flex();
    let mut tot = 0.0;
    for (c, h, count) in [
        (64usize, 32usize, 5usize),
        (128, 16, 5),
        (256, 8, 5),
        (512, 4, 5),
    ] {
        let x = Tensor::<4>::random([64, c, h, h], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<1>::ones([c], &device);
        let b = Tensor::<1>::zeros([c], &device);
        let r = Tensor::<4>::random([64, c, h, h], Distribution::Normal(0.0, 1.0), &device);
        for it in 0..3 {
            let xa = x.clone().autodiff().require_grad();
            let ga = g.clone().autodiff().require_grad();
            let ba = b.clone().autodiff().require_grad();
            let t = Instant::now();
            let (y, _, _) =
                byol_kernels::batch_norm::try_batch_norm_act(&xa, &ga, &ba, 1e-5, None, true)
                    .expect("flex f32");
            let _ = y
                .clone()
                .slice([0..1, 0..1, 0..1, 0..1])
                .into_scalar::<f32>();
            let tf = t.elapsed().as_secs_f64();
            let yr = y * r.clone().autodiff();
            let t = Instant::now();
            let gr = yr.backward();
            let _ = xa
                .grad(&gr)
                .unwrap()
                .slice([0..1, 0..1, 0..1, 0..1])
                .into_scalar::<f32>();
            let tb = t.elapsed().as_secs_f64();
            if it == 2 {
                tot += (tf + tb) * count as f64 * 2.0;
            }
            println!(
                "{c}x{h}: bn+relu fwd {:.1} ms bwd {:.1} ms",
                tf * 1e3,
                tb * 1e3
            );
        }
    }
    println!(
        "≈ per step (×count per stage ×2 views, online only): {:.0} ms",
        tot * 1e3
    );
}
