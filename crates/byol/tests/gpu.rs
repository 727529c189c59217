//! The GPU code path (burn's CubeCL kernels, compiled to WGSL, through wgpu) against `flex`, on
//! whatever device wgpu finds: in CI, Mesa's lavapipe, a Vulkan implementation on the CPU.
//! Built only with `--features wgpu`; `.ci/run` installs lavapipe and runs these.

#![cfg(feature = "wgpu")]

use burn::tensor::{Device, Tensor, TensorData};
use byol::ExperimentConfig;
use byol::augment::{AugmentConfig, ViewPipeline, finish_host, sample_params};
use byol::backend::BackendKind;
use byol::model::params::collect;
use byol::rng::{Stream, rng};
use byol::train::{TrainState, train_step};
use rand::Rng;

fn gpu() -> Device {
    BackendKind::Wgpu
        .device()
        .expect("a wgpu device (CI: Mesa's lavapipe, package mesa-vulkan-drivers)")
}

fn on(device: &Device, data: &TensorData) -> Tensor<4> {
    Tensor::from_data(data.clone(), device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Three training steps of a tiny ResNet from the same initial weights (drawn on the host from
/// the seed, so equal on both backends) and the same views: the losses agree and so do the
/// weights after the steps.
///
/// Tolerance: the two backends sum in different orders (tiled GPU matmul and convolution
/// kernels, tree reductions for BatchNorm and the loss, against flex's blocked sums), so f32
/// results differ by a few ulps. Measured on lavapipe over the three steps: losses within
/// 1.7e-7 relative (2 ulps), weights within 4.7e-7 absolute. The bounds are ten times that,
/// 2e-6 and 5e-6; a wrong sign, index or missing term moves the loss by more than 1e-3.
#[test]
fn first_training_steps_match_flex() {
    steps_match_flex(&["model.encoder.base-width=4"]);
}

/// The same for a ViT encoder (two blocks, 16 wide, 4 px patches): LayerNorm, the attention
/// operation, GELU and the patch embedding on wgpu, within the ResNet's bounds (measured: losses
/// within 8.3e-7 relative, weights within 2.6e-6). The representation is the mean of the patch
/// tokens here: the class token barely varies across a batch at initialisation, so the heads'
/// BatchNorm, dividing by that spread, magnifies f32 rounding about 50× (2.4e-5 on the
/// projection, against 4.8e-7 on the encoder's output), beyond any rounding bound. (At
/// initialisation the MLP's inputs are small, where GELU's tanh approximation is exact enough:
/// [`gelu_and_its_gradient_match_flex`] guards GELU.)
#[test]
fn first_vit_training_steps_match_flex() {
    steps_match_flex(&[
        "model.encoder.arch=\"vit-tiny\"",
        "model.encoder.patch-size=4",
        "model.encoder.depth=2",
        "model.encoder.width=16",
        "model.encoder.heads=2",
        "model.encoder.pool=\"mean\"",
    ]);
}

/// The ViT's GELU and its gradient on wgpu against flex, at inputs of N(0, 2²) where the tanh
/// approximation is off: burn's fused `gelu` gets its backward on CubeCL from burn-backend's
/// default, the tanh approximation's derivative (measured 5e-4 of the largest gradient away from
/// the exact one, which flex gives to 8e-8); the composition with `erf` agrees to 1.4e-7.
#[test]
fn gelu_and_its_gradient_match_flex() {
    let mut r = rng(5, Stream::Augment, &[1]);
    let mut normal = |std: f32| -> TensorData {
        let v: Vec<f32> = (0..64 * 96)
            .map(|_| byol::rng::normal(&mut r, f64::from(std)) as f32)
            .collect();
        TensorData::new(v, [64, 96])
    };
    let (x, w) = (normal(2.0), normal(1.0));
    let run = |d: &Device| {
        let xt = Tensor::<2>::from_data(x.clone(), d)
            .autodiff()
            .require_grad();
        let y = byol::model::gelu(xt.clone());
        let out: Vec<f32> = y.clone().into_data().try_into_vec().unwrap();
        let grads = (y * Tensor::<2>::from_data(w.clone(), d).autodiff())
            .sum()
            .backward();
        let g: Vec<f32> = xt.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        (out, g)
    };
    let ((fa, ga), (fb, gb)) = (run(&Device::flex()), run(&gpu()));
    let rel =
        |a: &[f32], b: &[f32]| max_abs_diff(a, b) / a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        rel(&fa, &fb) < 2e-6,
        "GELU differs by {:.2e}",
        rel(&fa, &fb)
    );
    assert!(
        rel(&ga, &gb) < 2e-6,
        "GELU's gradient differs by {:.2e}",
        rel(&ga, &gb)
    );
}

/// Three steps of the `small-cpu` preset with small heads and `encoder` on flex and on wgpu.
fn steps_match_flex(encoder: &[&str]) {
    let mut o: Vec<String> = [
        "model.projector.hidden=32",
        "model.projector.output=16",
        "model.predictor.hidden=32",
        "model.predictor.output=16",
    ]
    .map(String::from)
    .to_vec();
    o.extend(encoder.iter().map(|s| s.to_string()));
    let cfg = ExperimentConfig::load("small-cpu", &o).unwrap();
    let mut r = rng(3, Stream::Augment, &[0]);
    let mut view = || {
        let x: Vec<f32> = (0..16 * 3 * 16 * 16)
            .map(|_| r.random::<f32>() * 2.0 - 1.0)
            .collect();
        TensorData::new(x, [16, 3, 16, 16])
    };
    let batches: Vec<(TensorData, TensorData)> = (0..3).map(|_| (view(), view())).collect();
    let run = |device: &Device| {
        let mut state = TrainState::init(&cfg, device);
        let mut losses = Vec::new();
        for (k, (v1, v2)) in batches.iter().enumerate() {
            let (next, m) = train_step(
                state,
                on(device, v1),
                on(device, v2),
                0.2,
                0.99 - 0.01 * k as f64,
                &cfg.objective,
            )
            .unwrap();
            losses.push(m.loss.into_scalar::<f32>());
            state = next;
        }
        let weights = collect(&state.online);
        let target = collect(state.target.as_ref().unwrap());
        (losses, weights, target)
    };
    let (flex_losses, flex_w, flex_t) = run(&Device::flex());
    let (gpu_losses, gpu_w, gpu_t) = run(&gpu());
    let loss_rel = flex_losses
        .iter()
        .zip(&gpu_losses)
        .map(|(a, b)| (a - b).abs() / a.abs())
        .fold(0.0, f32::max);
    for (k, (a, b)) in flex_losses.iter().zip(&gpu_losses).enumerate() {
        assert!(
            (a - b).abs() <= 2e-6 * a.abs(),
            "step {}: loss {b} on wgpu, {a} on flex",
            k + 1
        );
    }
    assert!(
        flex_losses[2] < flex_losses[0],
        "the steps changed nothing: {flex_losses:?}"
    );
    let mut weights = 0.0f32;
    for (network, flex, gpu) in [("online", &flex_w, &gpu_w), ("target", &flex_t, &gpu_t)] {
        for (name, w) in flex {
            let a: Vec<f32> = w.flat.clone().into_data().try_into_vec().unwrap();
            let b: Vec<f32> = gpu[name].flat.clone().into_data().try_into_vec().unwrap();
            assert!(
                max_abs_diff(&a, &b) < 5e-6,
                "{network} {name} differs by {}",
                max_abs_diff(&a, &b)
            );
            weights = weights.max(max_abs_diff(&a, &b));
        }
    }
    eprintln!(
        "wgpu against flex over 3 steps: losses within {loss_rel:.2e} relative, weights within {weights:.2e}"
    );
}

/// The batched view pipeline (flip, jitter in random order, grayscale, blur, solarize,
/// normalisation) on the wgpu device equals the per-image host computation, as on `flex`.
#[test]
fn device_view_pipeline_matches_the_host_reference() {
    let device = gpu();
    let aug = AugmentConfig::default();
    for (size, view) in [(32, &aug.view1), (32, &aug.view2)] {
        let b = 32;
        let mut r = rng(11, Stream::Augment, &[size as u64]);
        let crops: Vec<u8> = (0..b * 3 * size * size).map(|_| r.random()).collect();
        let params: Vec<_> = (0..b)
            .map(|_| sample_params(size, size, view, &mut r))
            .collect();
        let host = finish_host(&crops, &params, size, view, &aug);
        let ours: Vec<f32> = ViewPipeline::new(view, &aug, size, &device)
            .apply(crops, &params)
            .into_data()
            .try_into_vec()
            .unwrap();
        // As on flex: 1e-5 in [0, 1] before the division by std ≈ 0.225.
        let d = max_abs_diff(&host, &ours);
        assert!(
            d < 5e-5,
            "size {size}: the wgpu views differ from the host's by {d}"
        );
    }
}
