//! The tests of `optim`.

use super::*;
use burn::tensor::{Device, TensorData};
use std::collections::BTreeMap;

fn v(x: &[f32]) -> Tensor<1> {
    Tensor::from_data(TensorData::new(x.to_vec(), [x.len()]), &Device::flex())
}
fn get(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec().unwrap()
}
fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((f64::from(*x) - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}
fn cfg(kind: OptimKind) -> OptimConfig {
    OptimConfig {
        kind,
        base_lr: 1.0,
        weight_decay: 0.1,
        momentum: 0.9,
        nesterov: false,
        trust_coefficient: 1e-3,
        warmup_epochs: 0.0,
        predictor_lr_scale: 1.0,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    }
}

#[test]
fn lars_matches_formula_and_excludes_rank1() {
    let mut opt = cfg(OptimKind::Lars).init();
    let w = [3.0f64, 4.0]; // ‖w‖ = 5
    let g = [0.5f64, -1.0];
    let lr = 0.5;
    // Two steps with the same gradient, by hand: g̃ = g + wd·w; r = η‖w‖/‖g̃‖; m = 0.9·m + r·g̃.
    let mut wh = w;
    let mut m = [0.0f64; 2];
    let mut w_t = v(&[3.0, 4.0]);
    for _ in 0..2 {
        let gt = [g[0] + 0.1 * wh[0], g[1] + 0.1 * wh[1]];
        let r = 1e-3 * (wh[0].hypot(wh[1])) / gt[0].hypot(gt[1]);
        m = [0.9 * m[0] + r * gt[0], 0.9 * m[1] + r * gt[1]];
        wh = [wh[0] - lr * m[0], wh[1] - lr * m[1]];
        w_t = opt.update("w", w_t, v(&[0.5, -1.0]), false, lr, 1);
    }
    close(&get(w_t), &wh);

    // Excluded (bias/BN): plain momentum SGD, no decay, no trust ratio.
    let mut opt = cfg(OptimKind::Lars).init();
    let b1 = opt.update("b", v(&[1.0, 2.0]), v(&[0.5, -1.0]), true, lr, 1);
    close(&get(b1.clone()), &[1.0 - 0.25, 2.0 + 0.5]);
    let b2 = opt.update("b", b1, v(&[0.5, -1.0]), true, lr, 2);
    // m = 0.9·g + g = 1.9·g
    close(&get(b2), &[0.75 - 0.5 * 1.9 * 0.5, 2.5 + 0.5 * 1.9]);
}

#[test]
fn lars_trust_ratio_is_one_for_zero_weights() {
    let r = get(trust_ratio(v(&[0.0, 0.0]), v(&[1.0, 1.0]), 1e-3));
    assert_eq!(r, vec![1.0]);
    let r = get(trust_ratio(v(&[1.0, 0.0]), v(&[0.0, 0.0]), 1e-3));
    assert_eq!(r, vec![1.0]);
}

#[test]
fn sgd_and_adamw_match_formulas() {
    let mut sgd = cfg(OptimKind::Sgd).init();
    let w = sgd.update("w", v(&[1.0, -2.0]), v(&[0.5, 0.5]), false, 0.1, 1);
    close(
        &get(w),
        &[1.0 - 0.1 * (0.5 + 0.1), -2.0 - 0.1 * (0.5 - 0.2)],
    );
    // Nesterov, two steps on an excluded (no decay) parameter with gradient 1:
    // m₁ = 1, step g + 0.9·m₁ = 1.9; m₂ = 1.9, step 1 + 0.9·1.9 = 2.71.
    let mut nag = OptimConfig {
        nesterov: true,
        ..cfg(OptimKind::Sgd)
    }
    .init();
    let b = nag.update("b", v(&[0.0]), v(&[1.0]), true, 0.1, 1);
    let b = nag.update("b", b, v(&[1.0]), true, 0.1, 2);
    close(&get(b), &[-0.1 * (1.9 + 2.71)]);

    let mut adam = cfg(OptimKind::Adamw).init();
    let w = adam.update("w", v(&[1.0, -2.0]), v(&[0.5, -0.25]), false, 0.1, 1);
    // First step: m̂ = g, v̂ = g², so the step is sign(g) (up to ε) plus decoupled decay.
    close(
        &get(w),
        &[1.0 - 0.1 * (1.0 + 0.1), -2.0 - 0.1 * (-1.0 - 0.2)],
    );
    let b = adam.update("b", v(&[1.0]), v(&[0.5]), true, 0.1, 1);
    close(&get(b), &[1.0 - 0.1]);
}

/// A 3-layer MLP 4 → 6 → 3 drawn from seed 9, requiring gradients on `d`.
fn small_mlp(d: &Device) -> crate::model::Mlp {
    use crate::model::params::{reinit, require_grad};
    let mlp = crate::model::MlpConfig {
        hidden: 6,
        output: 3,
        layers: 3,
    }
    .init(4, d);
    require_grad(reinit(mlp, 9))
}

/// Replica `r`'s input: 2 rows of 4 values.
fn replica_input(r: usize, d: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..8).map(|i| ((i * 7 + r * 3) % 5) as f32 - 2.0).collect();
    Tensor::<2>::from_data(TensorData::new(v, [2, 4]), d)
}

/// The parameters of `m` by path (each replica's BatchNorm statistics are its own batch's).
fn mlp_parameters(m: crate::model::Mlp) -> BTreeMap<String, Vec<f32>> {
    crate::model::params::collect(&m.valid())
        .into_iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(k, v)| (k, v.flat.into_data().try_into_vec().unwrap()))
        .collect()
}

/// Two replicas' step averages their gradients in one all-reduce (one bucket) and applies
/// the update one process makes from the mean of the two losses, to f32 rounding; in buckets
/// of at most 20 values (the MLP's 24- and 36-value weights each a bucket of their own, the
/// small vectors sharing theirs) it takes several all-reduces and gives the same bits.
#[test]
fn replicas_average_their_gradients_in_buckets() {
    let d = Device::flex().autodiff();
    let net = || small_mlp(&d);
    let loss = |m: &crate::model::Mlp, r: usize| m.forward(replica_input(r, &d)).square().sum(); // [1]
    let c = OptimConfig {
        nesterov: true,
        ..cfg(OptimKind::Sgd)
    };
    let values = mlp_parameters;
    // One process: the mean of the two replicas' losses.
    let one = net();
    let mut grads = (loss(&one, 0) + loss(&one, 1)).div_scalar(2.0).backward();
    let want = values(c.init().step(one, &mut grads, 0.1, 1).unwrap());
    // Two replicas with buckets of `cap` values: each one's parameters and the all-reduces.
    let replicated = |cap: usize| {
        let group = crate::collective::host_group(2);
        let got: Vec<BTreeMap<String, Vec<f32>>> = std::thread::scope(|s| {
            let hs: Vec<_> = group
                .iter()
                .map(|replica| {
                    let (replica, c) = (replica.clone(), c.clone());
                    s.spawn(move || {
                        let _in = replica.enter(false);
                        let m = net();
                        let grads = ParamGrads::take(&m, &mut loss(&m, replica.rank()).backward());
                        values(c.init().apply_in_buckets(m, grads, 0.1, 1, cap).unwrap())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got[0], got[1]);
        (got[0].clone(), group[0].completed())
    };
    let (whole, reduces) = replicated(BUCKET_VALUES);
    assert_eq!(
        reduces,
        Some(1),
        "one all-reduce for every gradient of the step"
    );
    for (k, w) in &want {
        for (a, b) in w.iter().zip(&whole[k]) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{k}: {a} vs {b}");
        }
    }
    let (split, reduces) = replicated(20);
    assert!(
        reduces.is_some_and(|n| n >= 4),
        "several buckets: {reduces:?} all-reduces"
    );
    assert_eq!(split, whole, "the same sums, bucket by bucket");
}

/// The ViT tensors ViT recipes keep out of weight decay and LARS adaptation (the class token, a
/// learned position embedding) are excluded, as are rank-1 tensors; weight matrices are not.
#[test]
fn a_vits_tokens_and_rank_one_tensors_are_excluded() {
    assert!(is_excluded("encoder.cls_token", &[1, 1, 64]));
    assert!(is_excluded("encoder.pos_embed", &[1, 65, 64]));
    assert!(is_excluded("encoder.blocks.0.norm1.gamma", &[64]));
    assert!(!is_excluded("encoder.blocks.0.attn.qkv.weight", &[64, 192]));
    assert!(!is_excluded(
        "encoder.patch_embed.proj.weight",
        &[64, 3, 4, 4]
    ));
}
