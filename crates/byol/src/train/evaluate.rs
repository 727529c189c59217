//! The experiment's evaluations of an encoder: each protocol of `eval` with the settings of an
//! [`ExperimentConfig`] (its evaluation view, `eval.*` section and seed), and the encoder a seed
//! initialises, which every trained encoder is compared with.

use crate::config::ExperimentConfig;
use crate::data::ImageSet;
use crate::eval::{
    Features, FinetuneFrom, FinetuneResult, Finetuned, KnnResult, LinearResult, ProjectorLayer,
    extract, finetune, knn_classify, linear_eval,
};
use crate::model::params::{copy_into, reinit};
use crate::model::{Encoder, Mlp, Online};
use crate::{Error, Result};
use burn::tensor::Device;

/// Frozen-encoder features of both splits, in eval mode (images that cannot be decoded left out).
pub fn features_of(
    encoder: &Encoder,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<(Features, Features)> {
    let ((tr, _), (te, _)) = indexed_features_of(encoder, cfg, train, test, device)?;
    Ok((tr, te))
}

/// Features, and the index in its set of the image of each row.
pub type IndexedFeatures = (Features, Vec<usize>);

/// [`features_of`], with the index in its set of the image of each row.
pub fn indexed_features_of(
    encoder: &Encoder,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<(IndexedFeatures, IndexedFeatures)> {
    let (size, batch) = (cfg.data.image_size, cfg.eval.knn.batch_size);
    let one = |set: &ImageSet| -> Result<IndexedFeatures> {
        let (values, dim, kept) = extract(encoder, set, size, &cfg.augment, batch, device)?;
        let labels = kept.iter().map(|&i| set.labels[i]).collect();
        Ok((
            Features {
                values,
                labels,
                dim,
            },
            kept,
        ))
    };
    Ok((one(train)?, one(test)?))
}

/// Whether labels can measure an encoder on `train`: at least two classes. With one (a folder
/// of one class, shards without `.cls` labels) every image has the same label, and any
/// classifier is 100 % right.
pub fn has_labels(train: &ImageSet) -> bool {
    train.classes.len() > 1
}

/// The error of a label-based evaluation on data with fewer than two classes.
fn unlabelled(train: &ImageSet, cfg: &ExperimentConfig, what: &str) -> Error {
    let path = cfg
        .data
        .source
        .path()
        .map_or_else(|| "the training set".into(), std::path::Path::to_path_buf);
    Error::data(
        path,
        format!(
            "{what} needs labels, and the training set has {} class(es): every image would have the same label and the accuracy would be 100 % whatever the encoder. \
             Evaluate on labelled data (`--data` of an ImageFolder with two or more classes), or judge the run by its loss and collapse signal (metrics.jsonl) and its representations (`byol embed`)",
            train.classes.len()
        ),
    )
}

/// kNN accuracy of `encoder` with the config's protocol.
pub fn knn_of_encoder(
    encoder: &Encoder,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<KnnResult> {
    if !has_labels(train) {
        return Err(unlabelled(train, cfg, "the kNN evaluation"));
    }
    let (tr, te) = features_of(encoder, cfg, train, test, device)?;
    let k = &cfg.eval.knn;
    Ok(knn_classify(
        &tr,
        &te,
        train.classes.len(),
        k.k,
        k.temperature,
        device,
    ))
}

/// Linear-evaluation accuracy of `encoder` with the config's protocol (fast mode).
pub fn linear_of_encoder(
    encoder: &Encoder,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<LinearResult> {
    if !has_labels(train) {
        return Err(unlabelled(train, cfg, "the linear evaluation"));
    }
    let (tr, te) = features_of(encoder, cfg, train, test, device)?;
    Ok(linear_eval(
        &tr,
        &te,
        train.classes.len(),
        &cfg.eval.linear,
        cfg.seed,
        device,
    ))
}

/// Semi-supervised fine-tuning of `encoder` with the config's protocol.
pub fn finetune_of_encoder(
    encoder: Encoder,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<FinetuneResult> {
    finetune_of_network(encoder, None, cfg, (train, test), (device, None)).map(|(r, _)| r)
}

/// [`finetune_of_encoder`], starting from the encoder and, with `eval.finetune.from =
/// "projector:1"`, the first layer of `projector` (required then). Returns the fine-tuned
/// network too. `interrupt`, when set (by a signal handler), ends it after the step in progress
/// with an error.
pub fn finetune_of_network(
    encoder: Encoder,
    projector: Option<Mlp>,
    cfg: &ExperimentConfig,
    (train, test): (&ImageSet, &ImageSet),
    (device, interrupt): (&Device, Option<&std::sync::atomic::AtomicBool>),
) -> Result<(FinetuneResult, Finetuned)> {
    if !has_labels(train) {
        return Err(unlabelled(train, cfg, "fine-tuning"));
    }
    let stem = match (cfg.eval.finetune.from, projector) {
        (FinetuneFrom::Encoder, _) => None,
        (FinetuneFrom::ProjectorLayer1, Some(p)) => Some(ProjectorLayer::of(p)),
        (FinetuneFrom::ProjectorLayer1, None) => {
            return Err(Error::config(
                "eval.finetune.from",
                "\"projector:1\" needs the network's projector, and none was given",
            ));
        }
    };
    let dim = cfg.model.encoder.output_dim();
    // A copy for each learning rate tried: each starts from the network as given.
    let start = |d: &Device| {
        let encoder = copy_into(cfg.model.encoder.init(cfg.data.image_size, d), &encoder);
        let stem = stem
            .as_ref()
            .map(|s| copy_into(ProjectorLayer::of(cfg.model.projector.init(dim, d)), s));
        Ok((encoder, stem))
    };
    finetune(
        &start,
        dim,
        train,
        test,
        &cfg.augment,
        cfg.data.image_size,
        &cfg.eval.finetune,
        cfg.seed,
        (device, interrupt),
    )
}

/// The encoder as initialised by the run's seed, before any training.
pub fn random_init_encoder(cfg: &ExperimentConfig, device: &Device) -> Encoder {
    random_init_online(cfg, device).encoder
}

/// The online network as initialised by the run's seed, before any training.
pub fn random_init_online(cfg: &ExperimentConfig, device: &Device) -> Online {
    reinit(
        Online::new(&cfg.model, cfg.data.image_size, device),
        super::state::online_seed(cfg.seed),
    )
}

/// kNN accuracy of the encoder as initialised by the run's seed, before any training.
pub fn random_init_knn(
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<KnnResult> {
    knn_of_encoder(&random_init_encoder(cfg, device), cfg, train, test, device)
}
