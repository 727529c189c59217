//! A ViT encoder under timm's `VisionTransformer` state-dict keys and layouts, so that
//! `timm.models.vision_transformer.VisionTransformer(…)` ([`constructor`] prints the call) loads
//! it with `strict=True` and gives the same features.
//!
//! | ours | timm |
//! |---|---|
//! | `patch_embed.proj.{weight,bias}`, `cls_token` | same |
//! | `pos_embed` (learned) or the fixed sine-cosine one, computed | `pos_embed` [1, 1 + N, D] for the config's image size |
//! | `blocks.N.{norm1,norm2}.{gamma,beta}`, `norm.{gamma,beta}` | `….weight`, `….bias` |
//! | `blocks.N.attn.{qkv,proj}.weight`, `blocks.N.mlp.{fc1,fc2}.weight`: [in, out] | same names, [out, in] |
//!
//! With learned position embeddings (`pos-embed = "learned"`) `pos_embed` is a parameter, written
//! and read as the others. With the fixed ones it is written for the image size and read back only
//! to check it is that embedding: a file with learned ones (a timm-trained ViT) is refused for a
//! fixed-embedding config rather than read with other positions.

use super::layout::{Exported, f32s, norm_from_pytorch, norm_to_pytorch, swap_linear_layout};
use super::params::{Named, collect, load};
use super::{PosEmbed, Vit, VitConfig, VitPool, sincos_position_embedding};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::Path;

/// Our ViT path → timm's key.
pub fn timm_name(path: &str) -> String {
    norm_to_pytorch(path)
}

/// timm's key → our ViT path (the inverse of [`timm_name`]).
pub fn our_name(key: &str) -> String {
    norm_from_pytorch(key, "norm")
}

/// The encoder's tensors under timm's keys, with `pos_embed` for `image_size`.
pub fn tensors(vit: &Vit, cfg: &VitConfig, image_size: usize) -> Result<Vec<Exported>> {
    let mut out = Vec::new();
    for (p, Named { flat, shape }) in collect(&vit.valid()) {
        let (flat, shape) = swap_linear_layout(&p, flat, shape);
        out.push((timm_name(&p), shape, f32s(flat)?));
    }
    if vit.pos_embed.is_none() {
        let grid = image_size / cfg.patch_size;
        let d = cfg.output_dim();
        let pos = sincos_position_embedding(grid, grid, d, &Device::flex());
        out.push((
            "pos_embed".into(),
            vec![1, 1 + grid * grid, d],
            f32s(pos.reshape([(1 + grid * grid) * d]))?,
        ));
    }
    Ok(out)
}

/// The Python that builds a timm model this file loads into with `strict=True`.
pub fn constructor(cfg: &VitConfig, image_size: usize) -> String {
    let (width, depth, heads) = cfg.layout();
    let pool = match cfg.pool {
        VitPool::ClassToken => "global_pool='token'",
        VitPool::Mean => "global_pool='avg', fc_norm=False",
    };
    format!(
        "timm.models.vision_transformer.VisionTransformer(img_size={image_size}, \
         patch_size={}, embed_dim={width}, depth={depth}, num_heads={heads}, mlp_ratio=4, \
         qkv_bias=True, num_classes=0, {pool})",
        cfg.patch_size
    )
}

/// A ViT of shape `cfg` from timm-named tensors (`values`: key → shape and values), built for the
/// image size its `pos_embed` has patches for. Extra keys (a classifier `head.*`) are ignored; a
/// missing or mis-shaped tensor, or (for the fixed embedding) a `pos_embed` that is not the
/// sine-cosine one, is an error naming `path`.
pub fn import(
    cfg: &VitConfig,
    values: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    path: &Path,
    device: &Device,
) -> Result<Vit> {
    let err = |m: String| Error::checkpoint(path, m);
    let (pos_shape, pos) = values
        .get("pos_embed")
        .ok_or_else(|| err("no pos_embed".into()))?;
    let grid = grid_of(cfg, pos_shape).map_err(err)?;
    let learned = cfg.pos_embed == PosEmbed::Learned;
    if !learned {
        check_positions(cfg, grid, pos).map_err(err)?;
    }
    let mut named = BTreeMap::new();
    for (key, (shape, v)) in values {
        if key == "pos_embed" && !learned {
            continue;
        }
        let ours = our_name(&key);
        let n = v.len();
        let flat = Tensor::from_data(TensorData::new(v, [n]), device);
        let (flat, shape) = swap_linear_layout(&ours, flat, shape);
        named.insert(ours, Named { flat, shape });
    }
    let (vit, missing) = load(cfg.init(grid * cfg.patch_size, device), &named);
    if !missing.is_empty() {
        return Err(err(format!("missing or mis-shaped tensors: {missing:?}")));
    }
    Ok(vit)
}

/// The side of the square grid of patches a `pos_embed` of `shape` is for, or an error.
fn grid_of(cfg: &VitConfig, shape: &[usize]) -> std::result::Result<usize, String> {
    let d = cfg.output_dim();
    let tokens = match shape {
        &[1, t, w] if w == d => t,
        _ => {
            return Err(format!(
                "pos_embed has shape {shape:?}, not [1, 1 + N, {d}]"
            ));
        }
    };
    let grid = (tokens.saturating_sub(1) as f64).sqrt().round() as usize;
    if grid * grid + 1 != tokens {
        return Err(format!(
            "pos_embed has {tokens} tokens, not 1 + a square grid"
        ));
    }
    Ok(grid)
}

/// An error unless `v` is the fixed embedding of a `grid` × `grid` grid for `cfg`.
fn check_positions(cfg: &VitConfig, grid: usize, v: &[f32]) -> std::result::Result<(), String> {
    let d = cfg.output_dim();
    let fixed: Vec<f32> = sincos_position_embedding(grid, grid, d, &Device::flex())
        .into_data()
        .try_into_vec()
        .map_err(|e| format!("{e:?}"))?;
    let worst = fixed
        .iter()
        .zip(v)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Written from the same f32 values: any difference beyond rounding is another embedding.
    if worst > 1e-6 {
        return Err(format!(
            "pos_embed differs from the fixed sine-cosine embedding by up to {worst}: learned \
             position embeddings need `model.encoder.pos-embed = \"learned\"`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encoder, EncoderConfig, VitArch};
    use safetensors::SafeTensors;

    /// A tiny ViT (2 blocks, 8 wide, 2 heads, 4 px patches) with drawn weights, exported for
    /// 16 px images to a temporary file.
    fn exported(tag: &str) -> (EncoderConfig, Encoder, std::path::PathBuf) {
        exported_with(tag, PosEmbed::Sincos)
    }

    fn exported_with(
        tag: &str,
        pos_embed: PosEmbed,
    ) -> (EncoderConfig, Encoder, std::path::PathBuf) {
        let cfg = EncoderConfig::Vit(VitConfig {
            arch: VitArch::VitTiny,
            patch_size: 4,
            depth: Some(2),
            width: Some(8),
            heads: Some(2),
            pool: VitPool::ClassToken,
            freeze_patch_embedding: false,
            pos_embed,
        });
        let encoder = crate::model::params::reinit(cfg.init(16, &Device::flex()), 7);
        let path = std::env::temp_dir().join(format!(
            "byol-timm-{tag}-{}.safetensors",
            std::process::id()
        ));
        crate::model::export::export_encoder(&encoder, &cfg, 16, None, &path).unwrap();
        (cfg, encoder, path)
    }

    /// Every key and shape of timm's `VisionTransformer(img_size=16, patch_size=4,
    /// embed_dim=8, depth=2, num_heads=2, num_classes=0)` state dict, and nothing else; read back,
    /// the same features.
    #[test]
    fn an_exported_vit_has_timms_keys_and_shapes_and_reads_back() {
        let (_, _, path) = keys_shapes_and_read_back(PosEmbed::Sincos);
        std::fs::remove_file(&path).ok();
    }

    /// The same with learned position embeddings, whose `pos_embed` is the encoder's parameter.
    #[test]
    fn learned_position_embeddings_are_exported_and_read_back() {
        let (_, encoder, path) = keys_shapes_and_read_back(PosEmbed::Learned);
        let Encoder::Vit(vit) = encoder else {
            unreachable!("a ViT")
        };
        let file = pos_embed_of(&path);
        let ours: Vec<f32> = vit
            .pos_embed
            .unwrap()
            .val()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(file, ours);
        std::fs::remove_file(&path).ok();
    }

    /// The values of the `pos_embed` tensor of the file at `path`.
    fn pos_embed_of(path: &std::path::Path) -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("pos_embed")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Exports a ViT with `pos_embed`, checks the file's keys and shapes against timm's and that
    /// it reads back to the same features; returns what [`exported_with`] made.
    fn keys_shapes_and_read_back(
        pos_embed: PosEmbed,
    ) -> (EncoderConfig, Encoder, std::path::PathBuf) {
        let device = Device::flex();
        let (cfg, encoder, path) = exported_with(&format!("keys-{pos_embed:?}"), pos_embed);
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut got: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.shape().to_vec()))
            .collect();
        got.sort();
        let mut want: Vec<(String, Vec<usize>)> = vec![
            ("cls_token".into(), vec![1, 1, 8]),
            ("pos_embed".into(), vec![1, 17, 8]),
            ("patch_embed.proj.weight".into(), vec![8, 3, 4, 4]),
            ("patch_embed.proj.bias".into(), vec![8]),
            ("norm.weight".into(), vec![8]),
            ("norm.bias".into(), vec![8]),
        ];
        for b in 0..2 {
            for (k, s) in [
                ("norm1.weight", vec![8]),
                ("norm1.bias", vec![8]),
                ("attn.qkv.weight", vec![24, 8]),
                ("attn.qkv.bias", vec![24]),
                ("attn.proj.weight", vec![8, 8]),
                ("attn.proj.bias", vec![8]),
                ("norm2.weight", vec![8]),
                ("norm2.bias", vec![8]),
                ("mlp.fc1.weight", vec![32, 8]),
                ("mlp.fc1.bias", vec![32]),
                ("mlp.fc2.weight", vec![8, 32]),
                ("mlp.fc2.bias", vec![8]),
            ] {
                want.push((format!("blocks.{b}.{k}"), s));
            }
        }
        want.sort();
        assert_eq!(got, want);
        let back = crate::model::export::import_encoder(&cfg, &path, &device).unwrap();
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let (a, b): (Vec<f32>, Vec<f32>) = (
            encoder
                .forward(x.clone())
                .into_data()
                .try_into_vec()
                .unwrap(),
            back.forward(x).into_data().try_into_vec().unwrap(),
        );
        assert_eq!(a, b);
        (cfg, encoder, path)
    }

    /// A file whose `pos_embed` is not the fixed embedding (one value changed, as a learned
    /// embedding would be) is refused, naming why.
    #[test]
    fn learned_position_embeddings_are_refused() {
        let (cfg, _, path) = exported("positions");
        let EncoderConfig::Vit(vit) = &cfg else {
            unreachable!("a ViT config")
        };
        let mut positions = pos_embed_of(&path);
        let fixed = import(
            vit,
            [("pos_embed".to_string(), (vec![1, 17, 8], positions.clone()))].into(),
            &path,
            &Device::flex(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            fixed.contains("missing") && !fixed.contains("pos_embed"),
            "the fixed embedding passes, the other tensors are missing: {fixed}"
        );
        positions[10] += 1e-3;
        let e = import(
            vit,
            [("pos_embed".to_string(), (vec![1, 17, 8], positions))].into(),
            &path,
            &Device::flex(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("learned position embeddings"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
