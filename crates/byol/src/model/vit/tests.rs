use super::*;
use crate::model::params::{collect, count_trainable, reinit};
use burn::tensor::Distribution;

fn vit(arch: VitArch, patch: usize, depth: Option<usize>, width: Option<usize>) -> VitConfig {
    VitConfig {
        arch,
        patch_size: patch,
        depth,
        width,
        heads: width.map(|_| 2),
        pool: VitPool::ClassToken,
        freeze_patch_embedding: false,
        pos_embed: PosEmbed::Sincos,
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

/// timm's `vit_{tiny,small,base}_patch16_224` have 5,717,416, 22,050,664 and 86,567,656
/// parameters; without the 1,000-class head (D·1000 + 1000) the rest is ours with learned
/// position embeddings, and without the position embedding (197 × D) ours with fixed ones.
#[test]
fn the_sizes_have_timms_parameter_counts() {
    let device = Device::flex();
    for (arch, timm, d) in [
        (VitArch::VitTiny, 5_717_416, 192),
        (VitArch::VitSmall, 22_050_664, 384),
        (VitArch::VitBase, 86_567_656, 768),
    ] {
        let cfg = vit(arch, 16, None, None);
        assert_eq!(cfg.output_dim(), d);
        let ours = count_trainable(&cfg.init(224, &device));
        assert_eq!(ours, timm - (d * 1000 + 1000) - 197 * d, "{arch:?}");
        let learned = VitConfig {
            pos_embed: PosEmbed::Learned,
            ..cfg
        };
        let ours = count_trainable(&learned.init(224, &device));
        assert_eq!(ours, timm - (d * 1000 + 1000), "{arch:?}, learned");
    }
}

/// A learned position embedding is added where the fixed one is: holding the sine-cosine values,
/// it gives the fixed-embedding encoder's tokens bit for bit, and other values give other tokens.
#[test]
fn learned_position_embeddings_take_the_fixed_ones_place() {
    let device = Device::flex();
    let cfg = VitConfig {
        pos_embed: PosEmbed::Learned,
        ..vit(VitArch::VitTiny, 4, Some(1), Some(8))
    };
    let net = reinit(cfg.init(8, &device), 2);
    assert_eq!(net.pos_embed.as_ref().expect("learned").dims(), [1, 5, 8]);
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let sincos = sincos_position_embedding(2, 2, 8, &device).unsqueeze::<3>();
    let with = |pos: Tensor<3>| Vit {
        pos_embed: Some(Param::from_tensor(pos)),
        ..net.clone()
    };
    let fixed = Vit {
        pos_embed: None,
        ..net.clone()
    };
    let want = values(fixed.tokens(x.clone()));
    assert_eq!(values(with(sincos.clone()).tokens(x.clone())), want);
    assert_ne!(values(with(sincos.add_scalar(0.5)).tokens(x)), want);
}

#[test]
fn every_size_and_patch_gives_one_vector_per_image() {
    let device = Device::flex();
    for (arch, patch, side) in [
        (VitArch::VitTiny, 16, 224),
        (VitArch::VitTiny, 4, 32),
        (VitArch::VitSmall, 4, 32),
        (VitArch::VitBase, 8, 16),
    ] {
        let cfg = vit(arch, patch, Some(1), None);
        let net = cfg.init(side, &device);
        let x = Tensor::<4>::zeros([2, 3, side, side], &device);
        assert_eq!(
            net.tokens(x.clone()).dims(),
            [2, 1 + (side / patch).pow(2), cfg.output_dim()]
        );
        assert_eq!(
            net.forward(x).dims(),
            [2, cfg.output_dim()],
            "{arch:?}/{patch}"
        );
    }
    let mean = VitConfig {
        pool: VitPool::Mean,
        ..vit(VitArch::VitTiny, 4, Some(1), Some(8))
    };
    let y = mean
        .init(8, &device)
        .forward(Tensor::zeros([3, 3, 8, 8], &device));
    assert_eq!(y.dims(), [3, 8]);
}

#[test]
fn an_image_the_patch_does_not_divide_is_refused_with_the_fields() {
    let cfg = vit(VitArch::VitTiny, 16, None, None);
    let e = cfg.check_image_size(200).unwrap_err().to_string();
    assert!(
        e.contains("data.image-size") && e.contains("patch-size"),
        "{e}"
    );
    cfg.check_image_size(224).unwrap();
    let bad = VitConfig {
        heads: Some(5),
        ..vit(VitArch::VitTiny, 4, None, Some(12))
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("model.encoder.width"), "{e}");
}

/// The attention of a 2-head block against softmax(q kᵀ/√d) v written out per head in f64 from
/// the same weights: the fused projection's columns are (q|k|v, head, channel), as timm's.
#[test]
fn attention_matches_the_formula_per_head() {
    let device = Device::flex();
    let (n, d, h) = (3, 4, 2);
    let attn = vit(VitArch::VitTiny, 4, Some(1), Some(d))
        .init(8, &device)
        .blocks
        .remove(0)
        .attn;
    let attn = reinit(attn, 5);
    // Biases too, so that a bias in the wrong place shows.
    let attn = crate::model::params::MapNamed::new(|path, shape, old| {
        if path.ends_with("bias") {
            Tensor::random([shape[0]], Distribution::Normal(0.0, 0.5), &old.device())
        } else {
            old
        }
    })
    .apply(attn);
    let x = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    let got = values(attn.forward(x.clone()));
    let p = collect(&attn);
    let w = |k: &str| values(p[k].flat.clone());
    let (wqkv, bqkv, wo, bo, xs) = (
        w("qkv.weight"),
        w("qkv.bias"),
        w("proj.weight"),
        w("proj.bias"),
        values(x),
    );
    // Row-major [in, out] weights: y_j = Σ_i x_i w[i, j] + b_j.
    let linear = |x: &[f32], wt: &[f32], b: &[f32], o: usize| -> Vec<f64> {
        (0..o)
            .map(|j| {
                b[j] as f64
                    + (0..x.len())
                        .map(|i| x[i] as f64 * wt[i * o + j] as f64)
                        .sum::<f64>()
            })
            .collect()
    };
    let qkv: Vec<Vec<f64>> = (0..n)
        .map(|t| linear(&xs[t * d..(t + 1) * d], &wqkv, &bqkv, 3 * d))
        .collect();
    let dh = d / h;
    let mut context = vec![vec![0f64; d]; n];
    for head in 0..h {
        let at = |t: usize, part: usize, c: usize| qkv[t][part * d + head * dh + c];
        for (i, row) in context.iter_mut().enumerate() {
            let scores: Vec<f64> = (0..n)
                .map(|j| {
                    (0..dh).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() / (dh as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..dh {
                row[head * dh + c] = (0..n).map(|j| e[j] / z * at(j, 2, c)).sum();
            }
        }
    }
    let want: Vec<f64> = context
        .iter()
        .flat_map(|row| {
            let r: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            linear(&r, &wo, &bo, d)
        })
        .collect();
    for (g, w) in got.iter().zip(&want) {
        // f32 sums of 4 to 12 terms of magnitude ≲ 1 against f64: a few ulps; a head or part
        // swapped is off by the values' own scale (≈ 0.1 to 1).
        assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

/// MoCo v3's embedding: patch (row 1, column 2) of a 3 × 4 grid at width 8 (ω = 1, 1/100).
#[test]
fn the_position_embedding_is_moco_v3s() {
    let e = values(sincos_position_embedding(3, 4, 8, &Device::flex()));
    assert!(
        e[..8].iter().all(|&v| v == 0.0),
        "the class token's row is zero"
    );
    let k = 1 + 4 + 2; // the class token, one row of 4, then column 2
    let row: Vec<f64> = e[k * 8..(k + 1) * 8].iter().map(|&v| v as f64).collect();
    let want = [
        1f64.sin(),
        0.01f64.sin(),
        1f64.cos(),
        0.01f64.cos(),
        2f64.sin(),
        0.02f64.sin(),
        2f64.cos(),
        0.02f64.cos(),
    ];
    for (g, w) in row.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{row:?} vs {want:?}");
    }
}

/// `params::reinit` draws a ViT as timm: weights and the class token N(0, 0.02²), biases 0,
/// LayerNorm γ = 1, β = 0; the same seed, the same values.
#[test]
fn reinit_draws_a_vit_as_timm() {
    let device = Device::flex();
    let cfg = vit(VitArch::VitTiny, 4, Some(2), Some(64));
    let a = collect(&reinit(cfg.init(32, &device), 3));
    let b = collect(&reinit(cfg.init(32, &device), 3));
    let v = |k: &str| values(a[k].flat.clone());
    assert_eq!(
        v("blocks.1.mlp.fc1.weight"),
        values(b["blocks.1.mlp.fc1.weight"].flat.clone())
    );
    for k in [
        "blocks.1.mlp.fc1.weight",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
    ] {
        let w = v(k);
        let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        // 3,072 to 16,384 draws: the sample std's relative error is at most 1.3 %, so 8 % is a
        // 6σ bound; PyTorch's default for a 64-wide layer (±1/8 uniform, std 0.072) is off 3.6×.
        assert!((std / 0.02 - 1.0).abs() < 0.08, "{k}: std {std}");
    }
    assert!(v("blocks.0.attn.qkv.bias").iter().all(|&x| x == 0.0));
    assert!(v("patch_embed.proj.bias").iter().all(|&x| x == 0.0));
    assert!(v("blocks.0.norm1.gamma").iter().all(|&x| x == 1.0));
    assert!(v("norm.beta").iter().all(|&x| x == 0.0));
    assert!(v("cls_token").iter().any(|&x| x != 0.0));
}
