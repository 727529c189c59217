//! The tests of `depth`.

use super::super::Split;
use super::super::training::small_encoder as small;
use super::*;

/// The decoder's output has the input's size; unpooling puts each value at the top-left of
/// its 2×2 cell.
#[test]
fn the_decoder_output_has_the_input_size_and_unpooling_spreads_values() {
    let device = Device::flex();
    let (encoder, dim) = small();
    let net = DepthNet::new(encoder, dim, 8, 0, &device).valid();
    assert_eq!(net.up.len(), 2);
    assert_eq!(
        net.forward(Tensor::zeros([2, 3, 32, 32], &device)).dims(),
        [2, 1, 32, 32]
    );
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
        &device,
    );
    let u: Vec<f32> = unpool(x).into_data().try_into_vec().unwrap();
    assert_eq!(
        u,
        [
            1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0
        ]
    );
}

/// berHu by hand: errors (1, 0.1, 3) with c = 0.6: 1 and 3 are quadratic, 0.1 linear; an
/// unmeasured pixel counts in neither the value nor the gradient.
#[test]
fn berhu_by_hand_and_unmeasured_pixels_ignored() {
    let device = Device::flex().autodiff();
    let p = Tensor::<4>::from_data(
        TensorData::new(vec![2.0f32, 1.1, 4.0, 9.0], [1, 1, 2, 2]),
        &device,
    )
    .require_grad();
    let truth = [1.0, 1.0, 1.0, 0.0];
    let loss = depth_loss(p.clone(), &truth, DepthLoss::Berhu);
    let c = 0.6f64;
    let q = |e: f64| (e * e + c * c) / (2.0 * c);
    let expect = (q(1.0) + 0.1 + q(3.0)) / 3.0;
    assert!(
        (f64::from(loss.clone().into_scalar::<f32>()) - expect).abs() < 1e-5,
        "{}",
        loss.into_scalar::<f32>()
    );
    let g: Vec<f32> = p
        .grad(&loss.backward())
        .unwrap()
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(g[3], 0.0, "{g:?}");
    // d/dp of (e² + c²)/2c = e/c, over 3 pixels; of |e| = sign(e).
    assert!(
        (f64::from(g[0]) - 1.0 / c / 3.0).abs() < 1e-5
            && (f64::from(g[1]) - 1.0 / 3.0).abs() < 1e-5,
        "{g:?}"
    );
    let l1 = depth_loss(
        Tensor::from_data(
            TensorData::new(vec![2.0f32, 1.1, 4.0, 9.0], [1, 1, 2, 2]),
            &device,
        ),
        &truth,
        DepthLoss::L1,
    );
    assert!((f64::from(l1.into_scalar::<f32>()) - 4.1 / 3.0).abs() < 1e-5);
}

/// Fine-tuning on a few scenes lowers the loss, and the prediction beats a constant one (the
/// mean training depth) in rms.
#[test]
fn fine_tuning_on_scenes_lowers_the_loss_and_beats_a_constant() {
    let device = Device::flex();
    let (train, val) = (
        super::super::scenes::scenes(64, 32, 0, Split::Train),
        super::super::scenes::scenes(16, 32, 0, Split::Val),
    );
    let (encoder, dim) = small();
    let cfg = DepthConfig {
        epochs: 6,
        batch_size: 8,
        learning_rate: 0.01,
        ..Default::default()
    };
    let run = Run {
        aug: &AugmentConfig::default(),
        seed: 0,
        device: &device,
        progress: &mut (),
        session: &mut (),
    };
    let (r, _) = depth((encoder, dim, 8), (&train, &val), &cfg, run)
        .unwrap()
        .unwrap();
    let mean = train.iter().flat_map(|s| s.depth.iter()).sum::<f32>() / (64 * 32 * 32) as f32;
    let truth: Vec<f32> = val.iter().flat_map(|s| s.depth.iter().copied()).collect();
    let constant = depth_scores(&vec![mean; truth.len()], &truth);
    assert_eq!(r.steps, 48);
    // Measured: 4.78 → 1.29, and rms 1.36 m against the constant's 2.52 m.
    assert!(
        r.epoch_losses[5] < 0.5 * r.epoch_losses[0],
        "{:?}",
        r.epoch_losses
    );
    assert!(
        r.val.rms < 0.8 * constant.rms,
        "{:?} against {:?}",
        r.val,
        constant
    );
}
