//! The encoder in safetensors: a ViT under timm's names ([`super::timm`]); a ResNet with the
//! tensor names and layouts of torchvision's `resnet*` (the de-facto standard ResNet in PyTorch),
//! so that
//! `torchvision.models.resnet50().load_state_dict(safetensors.torch.load_file(f), strict=False)`
//! loads everything but the classifier (`fc.*`) and gives the same features.
//!
//! Name mapping (ours → torchvision), for every block `layerS.B`:
//!
//! | ours | torchvision |
//! |---|---|
//! | `conv1.weight`, `layerS.B.convK.weight` | same |
//! | `…bnK.gamma`, `…bnK.beta` | `…bnK.weight`, `…bnK.bias` |
//! | `…bnK.running_mean`, `…bnK.running_var` | same |
//! | `layerS.B.downsample.conv.weight` | `layerS.B.downsample.0.weight` |
//! | `layerS.B.downsample.bn.{gamma,beta,running_*}` | `layerS.B.downsample.1.{weight,bias,running_*}` |
//!
//! Layouts are identical (convolutions are [out, in, kh, kw] in both). torchvision's ResNets have
//! base width 64 and the ImageNet stem; for the CIFAR stem replace `model.conv1` by
//! `nn.Conv2d(3, 64 * w, 3, 1, 1, bias=False)` and `model.maxpool` by `nn.Identity()` before
//! loading. Each BatchNorm also gets PyTorch's `num_batches_tracked` buffer (a 0-dimensional
//! int64, written as 0: `byol` does not count batches, and PyTorch reads the count only for a
//! BatchNorm with `momentum=None`), so that a `strict=True` load of a module with these layers
//! finds every key it expects.

use super::layout::{Exported, f32s, norm_from_pytorch, norm_to_pytorch, swap_linear_layout};
use super::params::{Named, collect, load};
use super::{Arch, Encoder, EncoderConfig, Mlp, ResNet, ResNetConfig, Stem};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Our encoder path → torchvision's state-dict key.
pub fn torchvision_name(path: &str) -> String {
    norm_to_pytorch(
        &path
            .replace("downsample.conv.", "downsample.0.")
            .replace("downsample.bn.", "downsample.1."),
    )
}

/// torchvision's key → our encoder path (the inverse of [`torchvision_name`]).
pub fn our_name(key: &str) -> String {
    // BatchNorm parameters: every `…bnK.weight`/`…bn.weight` and `downsample.1.*` (renamed here).
    norm_from_pytorch(
        &key.replace("downsample.0.", "downsample.conv.")
            .replace("downsample.1.", "downsample.bn."),
        "bn",
    )
}

/// The key of a projector tensor (our path inside the [`Mlp`]) in PyTorch's `nn.Sequential`
/// head (Linear, BatchNorm1d, ReLU, …, Linear) under `projector.`: SimCLR v2's layout.
pub fn projector_name(path: &str, hidden_layers: usize) -> String {
    let (module, tensor) = path.rsplit_once('.').unwrap_or(("", path));
    let index = match module.split('.').collect::<Vec<_>>().as_slice() {
        ["fc1"] => 0,
        ["bn"] => 1,
        ["mid", k, "fc"] => 3 + 3 * k.parse::<usize>().unwrap_or(0),
        ["mid", k, "bn"] => 4 + 3 * k.parse::<usize>().unwrap_or(0),
        _ => 3 + 3 * hidden_layers,
    };
    let tensor = match tensor {
        "gamma" => "weight",
        "beta" => "bias",
        t => t,
    };
    format!("projector.{index}.{tensor}")
}

/// Write the encoder: a ResNet's parameters and BatchNorm statistics with torchvision names, and
/// with `projector` its layers as PyTorch's `nn.Sequential` head (`projector.0.weight`, …;
/// Linear weights transposed to PyTorch's [out, in]); a ViT under timm's names, its position
/// embedding for `image_size`.
pub fn export_encoder(
    encoder: &Encoder,
    cfg: &EncoderConfig,
    image_size: usize,
    projector: Option<&Mlp>,
    path: &Path,
) -> Result<()> {
    let (mut tensors, format) = match (encoder, cfg) {
        (Encoder::Vit(vit), EncoderConfig::Vit(c)) => (
            super::timm::tensors(vit, c, image_size)?,
            "byol-encoder/timm-vit",
        ),
        (Encoder::ResNet(resnet), EncoderConfig::ResNet(_)) => {
            (resnet_tensors(resnet)?, "byol-encoder/torchvision-resnet")
        }
        _ => {
            return Err(Error::config(
                "model.encoder.arch",
                "the encoder is not of the configured kind",
            ));
        }
    };
    if let Some(projector) = projector {
        tensors.extend(projector_tensors(projector)?);
    }
    let meta: HashMap<String, String> = [
        ("format".to_string(), format.to_string()),
        (
            "encoder".to_string(),
            toml::to_string(cfg).expect("config serialises"),
        ),
    ]
    .into();
    write(path, tensors, meta)
}

/// A ResNet's tensors under torchvision's keys.
fn resnet_tensors(encoder: &ResNet) -> Result<Vec<Exported>> {
    collect(&encoder.valid())
        .into_iter()
        .map(|(p, Named { flat, shape })| Ok((torchvision_name(&p), shape, f32s(flat)?)))
        .collect()
}

/// The projector's tensors as PyTorch's `nn.Sequential` head.
fn projector_tensors(projector: &Mlp) -> Result<Vec<Exported>> {
    collect(&projector.valid())
        .into_iter()
        .map(|(p, Named { flat, shape })| {
            let (flat, shape) = swap_linear_layout(&p, flat, shape);
            Ok((projector_name(&p, projector.mid.len()), shape, f32s(flat)?))
        })
        .collect()
}

/// Write `tensors` (f32), a `num_batches_tracked` counter beside every BatchNorm's statistics,
/// and `meta` to `path` atomically.
fn write(path: &Path, tensors: Vec<Exported>, meta: HashMap<String, String>) -> Result<()> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| {
            (
                n,
                Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let counters: Vec<String> = tensors
        .iter()
        .filter_map(|(n, ..)| {
            n.strip_suffix(".running_mean")
                .map(|bn| format!("{bn}.num_batches_tracked"))
        })
        .collect();
    tensors.extend(
        counters
            .into_iter()
            .map(|n| (n, Dtype::I64, vec![], 0i64.to_le_bytes().to_vec())),
    );
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    crate::io::write_atomic(path, &bytes)
}

/// The torchvision constructor whose state dict the exported encoder of `cfg` fills (with
/// `strict=False`, the classifier left out), and what to change on it; `None` when none fits:
/// torchvision's ResNets have base width 64 and width multiplier 1, and no ResNet-200.
pub fn torchvision_constructor(cfg: &ResNetConfig) -> Option<String> {
    let name = match cfg.arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet34 => "resnet34",
        Arch::Resnet50 => "resnet50",
        Arch::Resnet101 => "resnet101",
        Arch::Resnet152 => "resnet152",
        Arch::Resnet200 => return None,
    };
    if cfg.base_width != 64 || cfg.width_multiplier != 1 {
        return None;
    }
    Some(match cfg.stem {
        Stem::Imagenet => format!("torchvision.models.{name}()"),
        Stem::Cifar => format!(
            "torchvision.models.{name}() with conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False) and maxpool = nn.Identity()"
        ),
    })
}

/// The encoder's architecture recorded in a file that `byol export` wrote (its metadata's
/// `encoder`); `None` for a file without it (one written by another program).
pub fn recorded_encoder_config(path: &Path) -> Result<Option<EncoderConfig>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    match meta.metadata().as_ref().and_then(|m| m.get("encoder")) {
        Some(text) => toml::from_str(text).map(Some).map_err(|e| {
            Error::checkpoint(path, format!("its recorded encoder does not read: {e}"))
        }),
        None => Ok(None),
    }
}

/// Read an exported file into an encoder of shape `cfg`: torchvision's names for a ResNet,
/// timm's for a ViT ([`super::timm::import`]). Extra keys (such as `fc.*` or
/// `num_batches_tracked`) are ignored; a missing or mis-shaped tensor is an error.
pub fn import_encoder(cfg: &EncoderConfig, path: &Path, device: &Device) -> Result<Encoder> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let mut values = BTreeMap::new();
    for (key, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        values.insert(key, (view.shape().to_vec(), v));
    }
    let cfg = match cfg {
        EncoderConfig::Vit(c) => {
            return super::timm::import(c, values, path, device).map(Encoder::Vit);
        }
        EncoderConfig::ResNet(c) => c,
    };
    let values = values
        .into_iter()
        .map(|(key, (shape, v))| {
            let n = v.len();
            let flat = Tensor::<1>::from_data(TensorData::new(v, [n]), device);
            (our_name(&key), Named { flat, shape })
        })
        .collect();
    let (encoder, missing) = load(cfg.init(device), &values);
    if !missing.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!("missing or mis-shaped tensors: {missing:?}"),
        ));
    }
    Ok(Encoder::ResNet(encoder))
}

/// What to tell a user about loading the exported encoder of `cfg` in Python.
pub fn loader_hint(cfg: &EncoderConfig, image_size: usize) -> String {
    match cfg {
        EncoderConfig::Vit(c) => format!(
            "load it with load_state_dict(…, strict=True) into {}",
            super::timm::constructor(c, image_size)
        ),
        EncoderConfig::ResNet(c) => match torchvision_constructor(c) {
            Some(k) => format!("load it with load_state_dict(…, strict=False) into {k}"),
            None => format!(
                "no torchvision constructor fits this encoder ({:?}, base width {}, width ×{}): \
                 torchvision's ResNets have base width 64 and width ×1; build a ResNet of these \
                 sizes to load it",
                c.arch, c.base_width, c.width_multiplier
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision has ResNet-18…152 at base width 64 and width ×1 only.
    #[test]
    fn the_torchvision_constructor_is_named_only_where_one_fits() {
        let mut cfg = crate::config::ExperimentConfig::load("small-cpu", &[])
            .unwrap()
            .model
            .encoder
            .resnet("")
            .unwrap()
            .clone();
        (cfg.arch, cfg.base_width, cfg.width_multiplier, cfg.stem) =
            (Arch::Resnet50, 64, 1, Stem::Imagenet);
        assert_eq!(
            torchvision_constructor(&cfg).as_deref(),
            Some("torchvision.models.resnet50()")
        );
        cfg.stem = Stem::Cifar;
        assert!(
            torchvision_constructor(&cfg).is_some_and(|c| c.contains("maxpool = nn.Identity()"))
        );
        for (arch, base, width) in [
            (Arch::Resnet50, 8, 1),
            (Arch::Resnet50, 64, 2),
            (Arch::Resnet200, 64, 1),
        ] {
            (cfg.arch, cfg.base_width, cfg.width_multiplier) = (arch, base, width);
            assert_eq!(
                torchvision_constructor(&cfg),
                None,
                "{arch:?} base {base} ×{width}"
            );
        }
    }

    /// SimCLR v2's head as `nn.Sequential(Linear, BatchNorm1d, ReLU, Linear, BatchNorm1d, ReLU,
    /// Linear)`: our paths land on indices 0, 1, 3, 4, 6; a 2-layer head's last Linear on 3.
    #[test]
    fn projector_names_follow_the_sequential_layout() {
        assert_eq!(projector_name("fc1.weight", 1), "projector.0.weight");
        assert_eq!(projector_name("bn.gamma", 1), "projector.1.weight");
        assert_eq!(
            projector_name("bn.running_var", 1),
            "projector.1.running_var"
        );
        assert_eq!(projector_name("mid.0.fc.bias", 1), "projector.3.bias");
        assert_eq!(projector_name("mid.0.bn.beta", 1), "projector.4.bias");
        assert_eq!(projector_name("fc2.weight", 1), "projector.6.weight");
        assert_eq!(projector_name("fc2.weight", 0), "projector.3.weight");
    }

    /// PyTorch's BatchNorm counter (`num_batches_tracked`, a 0-d i64 0) beside every
    /// BatchNorm's statistics of an exported ResNet-18 and projector, and nowhere else.
    fn assert_batch_norm_counters(st: &SafeTensors) {
        for bn in [
            "bn1",
            "layer1.0.bn2",
            "layer2.0.downsample.1",
            "projector.1",
            "projector.4",
        ] {
            let t = st
                .tensor(&format!("{bn}.num_batches_tracked"))
                .unwrap_or_else(|_| panic!("no {bn}.num_batches_tracked"));
            assert_eq!(
                (t.dtype(), t.shape(), t.data()),
                (Dtype::I64, &[][..], &[0u8; 8][..]),
                "{bn}"
            );
        }
        let counters = st
            .names()
            .iter()
            .filter(|n| n.ends_with(".num_batches_tracked"))
            .count();
        assert_eq!(
            counters,
            st.names()
                .iter()
                .filter(|n| n.ends_with(".running_mean"))
                .count()
        );
    }

    /// The projector's Linear weights are written as PyTorch's [out, in]: element (o, i) of the
    /// file is element (i, o) of ours; BatchNorm tensors as they are.
    #[test]
    fn the_projector_is_written_in_pytorchs_layout() {
        let device = Device::flex();
        let cfg: EncoderConfig =
            toml::from_str("arch = \"resnet18\"\nstem = \"cifar\"\nbase-width = 4").unwrap();
        let encoder = cfg.init(32, &device);
        let projector = crate::model::MlpConfig {
            hidden: 6,
            output: 3,
            layers: 3,
        }
        .init(cfg.output_dim(), &device);
        let projector = crate::model::params::reinit(
            projector,
            crate::rng::key(1, crate::rng::Stream::Init, &[2]),
        );
        let path = std::env::temp_dir().join(format!(
            "byol-export-projector-{}.safetensors",
            std::process::id()
        ));
        export_encoder(&encoder, &cfg, 32, Some(&projector), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let read = |k: &str| -> (Vec<usize>, Vec<f32>) {
            let v = st.tensor(k).unwrap_or_else(|_| panic!("no {k}"));
            (
                v.shape().to_vec(),
                v.data()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        };
        let ours = collect(&projector);
        let d = cfg.output_dim();
        let fc1: Vec<f32> = ours["fc1.weight"]
            .flat
            .clone()
            .into_data()
            .try_into_vec()
            .unwrap(); // [d, 6]
        let (shape, values) = read("projector.0.weight");
        assert_eq!(shape, [6, d]);
        for o in 0..6 {
            for i in 0..d {
                assert_eq!(values[o * d + i], fc1[i * 6 + o], "({o}, {i})");
            }
        }
        assert_eq!(read("projector.3.weight").0, [6, 6]);
        assert_eq!(read("projector.6.weight").0, [3, 6]);
        let gamma: Vec<f32> = ours["mid.0.bn.gamma"]
            .flat
            .clone()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(read("projector.4.weight").1, gamma);
        assert!(st.tensor("conv1.weight").is_ok());
        assert_batch_norm_counters(&st);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn names_map_both_ways() {
        let table = [
            ("conv1.weight", "conv1.weight"),
            ("bn1.gamma", "bn1.weight"),
            ("bn1.beta", "bn1.bias"),
            ("bn1.running_var", "bn1.running_var"),
            ("layer2.0.conv2.weight", "layer2.0.conv2.weight"),
            ("layer2.0.bn3.gamma", "layer2.0.bn3.weight"),
            (
                "layer2.0.downsample.conv.weight",
                "layer2.0.downsample.0.weight",
            ),
            (
                "layer2.0.downsample.bn.gamma",
                "layer2.0.downsample.1.weight",
            ),
            ("layer2.0.downsample.bn.beta", "layer2.0.downsample.1.bias"),
            (
                "layer4.1.downsample.bn.running_mean",
                "layer4.1.downsample.1.running_mean",
            ),
        ];
        for (ours, tv) in table {
            assert_eq!(torchvision_name(ours), tv);
            assert_eq!(our_name(tv), ours);
        }
    }
}
