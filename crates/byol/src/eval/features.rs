//! Representations y of a frozen encoder: eval mode (BatchNorm running statistics), no autodiff,
//! deterministic centre-crop preprocessing.

use crate::augment::{AugmentConfig, eval_view};
use crate::data::ImageSet;
use crate::model::ResNet;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Images `range` of `set`, preprocessed for evaluation, as a [b, 3, S, S] tensor on `device`.
pub fn eval_batch(set: &ImageSet, range: std::ops::Range<usize>, size: usize, aug: &AugmentConfig, device: &Device) -> Result<Tensor<4>> {
    let b = range.len();
    let pix: Vec<Vec<f32>> = range.into_par_iter().map(|i| set.rgb(i).map(|img| eval_view(&img, size, (&aug.mean, &aug.std)))).collect::<Result<_>>()?;
    Ok(Tensor::from_data(TensorData::new(pix.concat(), [b, 3, size, size]), device))
}

/// Features of every image of `set`: a row-major [N, D] matrix.
pub fn extract(encoder: &ResNet, set: &ImageSet, size: usize, aug: &AugmentConfig, batch: usize, device: &Device) -> Result<(Vec<f32>, usize)> {
    let enc = encoder.valid().to_device(device);
    let mut out = Vec::new();
    let mut dim = 0;
    for start in (0..set.len()).step_by(batch) {
        let end = (start + batch).min(set.len());
        let x = eval_batch(set, start..end, size, aug, device)?; // [b, 3, S, S]
        let y = enc.forward(x); // [b, D]
        dim = y.dims()[1];
        let v: Vec<f32> = y.into_data().try_into_vec().map_err(|e| Error::data("features", format!("{e:?}")))?;
        out.extend(v);
    }
    Ok((out, dim))
}
