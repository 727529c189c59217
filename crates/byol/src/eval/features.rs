//! Representations y of a frozen encoder: eval mode (BatchNorm running statistics), no autodiff,
//! deterministic centre-crop preprocessing.

use crate::augment::{AugmentConfig, eval_view};
use crate::data::ImageSet;
use crate::model::ResNet;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Features of every image of `set`: a row-major [N, D] matrix.
pub fn extract(encoder: &ResNet, set: &ImageSet, size: usize, aug: &AugmentConfig, batch: usize, device: &Device) -> Result<(Vec<f32>, usize)> {
    let enc = encoder.valid().to_device(device);
    let mut out = Vec::new();
    let mut dim = 0;
    let per = 3 * size * size;
    for start in (0..set.len()).step_by(batch) {
        let end = (start + batch).min(set.len());
        let pix: Vec<Vec<f32>> = (start..end)
            .into_par_iter()
            .map(|i| set.rgb(i).map(|img| eval_view(&img, size, (&aug.mean, &aug.std))))
            .collect::<Result<_>>()?;
        let flat: Vec<f32> = pix.into_iter().flatten().collect();
        debug_assert_eq!(flat.len(), (end - start) * per);
        let x = Tensor::<4>::from_data(TensorData::new(flat, [end - start, 3, size, size]), device); // [b, 3, S, S]
        let y = enc.forward(x); // [b, D]
        dim = y.dims()[1];
        let v: Vec<f32> = y.into_data().try_into_vec().map_err(|e| Error::data("features", format!("{e:?}")))?;
        out.extend(v);
    }
    Ok((out, dim))
}
