//! A fine-tuned classifier in one file: the teacher of `byol distill` and the student it
//! trains. The tensors of a [`Finetuned`] network by path (`encoder.layer1.0.conv1.weight`,
//! `stem.fc.weight`, `head.weight`; BatchNorm statistics included) in a checksummed
//! safetensors file ([`TensorFile`]), and in its metadata what is needed to rebuild and feed it:
//! the encoder's architecture, the width of the projector layer under the head, the class
//! names, the image size and the normalisation, and the labelled subset it was trained on.

use crate::augment::AugmentConfig;
use crate::eval::{Finetuned, ProjectorLayer};
use crate::io::{FileKind, TensorFile};
use crate::model::params::{Named, collect, load, named_from, values};
use crate::model::{EncoderConfig, MlpConfig};
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a classifier file's metadata says it is.
pub const KIND: FileKind<'static> = FileKind {
    format: "byol-classifier",
    version: "1",
    kind: "byol classifier (`byol eval finetune --save-model`, `byol distill`)",
};

/// How to rebuild a saved classifier and what it expects as input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClassifierInfo {
    pub encoder: EncoderConfig,
    /// The output width of the projector layer under the head (`projector:1`), if there is one.
    pub stem_width: Option<usize>,
    pub classes: Vec<String>,
    /// The side of the square images it was trained on.
    pub image_size: usize,
    /// The per-channel normalisation of its inputs.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The labelled subset it was trained on; none for a distilled student.
    pub labelled: Option<Labelled>,
}

/// A class-balanced labelled subset as `eval finetune` draws it ([`crate::eval::finetune`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Labelled {
    /// The fraction of the training split.
    pub fraction: f64,
    /// The seed of the draw.
    pub seed: u64,
    /// The images of the training split it is a fraction of.
    pub of_images: usize,
    /// The images drawn.
    pub images: usize,
}

impl ClassifierInfo {
    /// `aug` with this classifier's normalisation.
    pub fn normalising(&self, aug: &AugmentConfig) -> AugmentConfig {
        AugmentConfig {
            mean: self.mean,
            std: self.std,
            ..aug.clone()
        }
    }
}

/// A classifier read back: the network on the device asked for, in eval mode, its description
/// and the checksum of its tensors (what a distillation records of its teacher).
pub struct Saved {
    pub network: Finetuned,
    pub info: ClassifierInfo,
    pub sha256: String,
    /// The file it was read from.
    pub path: std::path::PathBuf,
}

/// Write `network` (its BatchNorm statistics synced by `valid()`) with `info` to `path`.
pub fn save(network: &Finetuned, info: &ClassifierInfo, path: &Path) -> Result<()> {
    let mut file = TensorFile::default();
    for (name, Named { flat, shape }) in collect(&network.valid()) {
        file.tensors.insert(name, (shape, values(&flat)?));
    }
    file.meta.insert(
        "classifier".into(),
        serde_json::to_string(info).expect("json"),
    );
    file.write(path, KIND)
}

/// The encoder of the classifier at `path` on `device`, as a fresh module of its architecture
/// (training flags on, as a checkpoint's encoder: fine-tuning it trains its BatchNorm), and the
/// classifier's description.
pub fn read_encoder(
    path: &Path,
    device: &Device,
) -> Result<(crate::model::Encoder, ClassifierInfo)> {
    let file = TensorFile::read(path, KIND)?;
    let info = info_of(&file, path)?;
    let (encoder, missing) = load(
        info.encoder.init(info.image_size, device),
        &named_from(&file.tensors, "encoder.", device),
    );
    if !missing.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!(
                "encoder tensors missing or of another shape than its description says: {missing:?}"
            ),
        ));
    }
    Ok((encoder, info))
}

fn info_of(file: &TensorFile, path: &Path) -> Result<ClassifierInfo> {
    let err = |m: String| Error::checkpoint(path, m);
    let text = file
        .meta
        .get("classifier")
        .ok_or_else(|| err("no `classifier` description in its metadata".into()))?;
    let info: ClassifierInfo = serde_json::from_str(text)
        .map_err(|e| err(format!("unreadable `classifier` description ({e})")))?;
    info.encoder.validate().map_err(|e| err(e.to_string()))?;
    Ok(info)
}

/// Read the classifier at `path` onto `device`.
pub fn read(path: &Path, device: &Device) -> Result<Saved> {
    let file = TensorFile::read(path, KIND)?;
    let err = |m: String| Error::checkpoint(path, m);
    let info = info_of(&file, path)?;
    let d = info.encoder.output_dim();
    let encoder = info.encoder.init(info.image_size, device);
    let stem = info.stem_width.map(|w| {
        ProjectorLayer::of(
            MlpConfig {
                hidden: w,
                output: 1,
                layers: 2,
            }
            .init(d, device),
        )
    });
    let head = LinearConfig::new(info.stem_width.unwrap_or(d), info.classes.len()).init(device);
    let shell = Finetuned {
        encoder,
        stem,
        head,
    };
    let named = named_from(&file.tensors, "", device);
    let expected = collect(&shell).len();
    let (network, missing) = load(shell, &named);
    if !missing.is_empty() {
        return Err(err(format!(
            "tensors missing or of another shape than its description says: {missing:?}"
        )));
    }
    if named.len() != expected {
        return Err(err(format!(
            "{} tensors, where its description makes {expected}",
            named.len()
        )));
    }
    Ok(Saved {
        network: network.valid(),
        info,
        sha256: file.sha256().to_string(),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stem;
    use burn::tensor::{Tensor, TensorData};

    /// A classifier on a width-4 ResNet-18 with a projector layer whose BatchNorm statistics are
    /// not fresh, and its description.
    fn classifier_with_projector(device: &Device) -> (Finetuned, ClassifierInfo) {
        let enc: EncoderConfig = crate::model::ResNetConfig {
            arch: crate::model::Arch::Resnet18,
            width_multiplier: 1,
            base_width: 4,
            stem: Stem::Cifar,
            residual_gamma: Default::default(),
        }
        .into();
        let d = enc.output_dim();
        let mut mlp = MlpConfig {
            hidden: 12,
            output: 4,
            layers: 3,
        }
        .init(d, device);
        mlp.bn.running_mean = burn::module::RunningState::new(Tensor::<1>::from_data(
            TensorData::new((0..12).map(|i| i as f32 / 7.0).collect::<Vec<_>>(), [12]),
            device,
        ));
        let net = Finetuned::new(
            enc.init(16, device),
            Some(ProjectorLayer::of(mlp)),
            d,
            3,
            1,
            device,
        );
        let info = ClassifierInfo {
            encoder: enc.clone(),
            stem_width: Some(12),
            classes: vec!["a".into(), "b".into(), "c".into()],
            image_size: 16,
            mean: [0.1, 0.2, 0.3],
            std: [0.4, 0.5, 0.6],
            labelled: Some(Labelled {
                fraction: 0.1,
                seed: 3,
                of_images: 100,
                images: 10,
            }),
        };
        (net, info)
    }

    /// A saved classifier (with a projector layer whose BatchNorm statistics are not fresh)
    /// reads back tensor for tensor, gives the same logits, and a file whose description does
    /// not match its tensors is refused by name.
    #[test]
    fn a_classifier_round_trips_and_a_wrong_description_is_refused() {
        let device = Device::flex();
        let (net, info) = classifier_with_projector(&device);
        let dir = std::env::temp_dir().join(format!("byol-classifier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        save(&net, &info, &path).unwrap();
        let back = read(&path, &device).unwrap();
        assert_eq!(back.info, info);
        let (a, b) = (collect(&net.valid()), collect(&back.network));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &a {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                v.flat.clone().into_data().try_into_vec().unwrap(),
                b[k].flat.clone().into_data().try_into_vec().unwrap(),
            );
            assert_eq!(x, y, "{k}");
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 16 * 16)
                    .map(|i| (i % 13) as f32 / 13.0)
                    .collect::<Vec<_>>(),
                [2, 3, 16, 16],
            ),
            &device,
        );
        let (la, lb): (Vec<f32>, Vec<f32>) = (
            net.valid()
                .forward(x.clone())
                .into_data()
                .try_into_vec()
                .unwrap(),
            back.network.forward(x).into_data().try_into_vec().unwrap(),
        );
        assert_eq!(la, lb);
        // The same tensors described without the projector layer.
        let mut file = TensorFile::read(&path, KIND).unwrap();
        file.meta.insert(
            "classifier".into(),
            serde_json::to_string(&ClassifierInfo {
                stem_width: None,
                ..info
            })
            .unwrap(),
        );
        file.write(&path, KIND).unwrap();
        let e = read(&path, &device).err().unwrap().to_string();
        assert!(
            e.contains("c.safetensors") && e.contains("head.weight"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
