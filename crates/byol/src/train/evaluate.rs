//! The experiment's evaluations of an encoder: each protocol of `eval` with the settings of an
//! [`ExperimentConfig`] (its evaluation view, `eval.*` section and seed), and the encoder a seed
//! initialises, which every trained encoder is compared with.

use crate::Result;
use crate::config::ExperimentConfig;
use crate::data::ImageSet;
use crate::eval::{Features, FinetuneResult, KnnResult, LinearResult, extract, finetune, knn_classify, linear_eval};
use crate::model::params::reinit;
use crate::model::{Online, ResNet};
use burn::tensor::Device;

/// Frozen-encoder features of both splits, in eval mode (images that cannot be decoded left out).
pub fn features_of(encoder: &ResNet, cfg: &ExperimentConfig, train: &ImageSet, test: &ImageSet, device: &Device) -> Result<(Features, Features)> {
    let ((tr, _), (te, _)) = indexed_features_of(encoder, cfg, train, test, device)?;
    Ok((tr, te))
}

/// Features, and the index in its set of the image of each row.
pub type IndexedFeatures = (Features, Vec<usize>);

/// [`features_of`], with the index in its set of the image of each row.
pub fn indexed_features_of(
    encoder: &ResNet,
    cfg: &ExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &Device,
) -> Result<(IndexedFeatures, IndexedFeatures)> {
    let (size, batch) = (cfg.data.image_size, cfg.eval.knn.batch_size);
    let one = |set: &ImageSet| -> Result<IndexedFeatures> {
        let (values, dim, kept) = extract(encoder, set, size, &cfg.augment, batch, device)?;
        let labels = kept.iter().map(|&i| set.labels[i]).collect();
        Ok((Features { values, labels, dim }, kept))
    };
    Ok((one(train)?, one(test)?))
}

/// kNN accuracy of `encoder` with the config's protocol.
pub fn knn_of_encoder(encoder: &ResNet, cfg: &ExperimentConfig, train: &ImageSet, test: &ImageSet, device: &Device) -> Result<KnnResult> {
    let (tr, te) = features_of(encoder, cfg, train, test, device)?;
    let k = &cfg.eval.knn;
    Ok(knn_classify(&tr, &te, train.classes.len(), k.k, k.temperature, device))
}

/// Linear-evaluation accuracy of `encoder` with the config's protocol (fast mode).
pub fn linear_of_encoder(encoder: &ResNet, cfg: &ExperimentConfig, train: &ImageSet, test: &ImageSet, device: &Device) -> Result<LinearResult> {
    let (tr, te) = features_of(encoder, cfg, train, test, device)?;
    Ok(linear_eval(&tr, &te, train.classes.len(), &cfg.eval.linear, cfg.seed, device))
}

/// Semi-supervised fine-tuning of `encoder` with the config's protocol.
pub fn finetune_of_encoder(encoder: ResNet, cfg: &ExperimentConfig, train: &ImageSet, test: &ImageSet, device: &Device) -> Result<FinetuneResult> {
    let dim = cfg.model.encoder.output_dim();
    finetune(encoder, dim, train, test, &cfg.augment, cfg.data.image_size, &cfg.eval.finetune, cfg.seed, device)
}

/// The encoder as initialised by the run's seed, before any training.
pub fn random_init_encoder(cfg: &ExperimentConfig, device: &Device) -> ResNet {
    reinit(Online::new(&cfg.model, device), super::state::online_seed(cfg.seed)).encoder
}

/// kNN accuracy of the encoder as initialised by the run's seed, before any training.
pub fn random_init_knn(cfg: &ExperimentConfig, train: &ImageSet, test: &ImageSet, device: &Device) -> Result<KnnResult> {
    knn_of_encoder(&random_init_encoder(cfg, device), cfg, train, test, device)
}
