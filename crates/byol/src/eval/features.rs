//! Representations y of a frozen encoder: eval mode (BatchNorm running statistics), no autodiff,
//! deterministic centre-crop preprocessing.

use crate::augment::{AugmentConfig, eval_view};
use crate::data::ImageSet;
use crate::model::Encoder;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Images `range` of `set`, preprocessed for evaluation, as a [b, 3, S, S] tensor on `device`.
pub fn eval_batch(
    set: &ImageSet,
    range: std::ops::Range<usize>,
    size: usize,
    aug: &AugmentConfig,
    device: &Device,
) -> Result<Tensor<4>> {
    let b = range.len();
    let pix: Vec<Vec<f32>> = range
        .into_par_iter()
        .map(|i| {
            set.rgb(i)
                .map(|img| eval_view(&img, size, (&aug.mean, &aug.std)))
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::from_data(
        TensorData::new(pix.concat(), [b, 3, size, size]),
        device,
    ))
}

/// Features of the images of `set`: a row-major [N', D] matrix, the dimension D, and the indices
/// of the N' images it covers. An image that cannot be decoded (a file that broke after the
/// set was opened, a corrupt shard member: only decoding finds those) is left out with a
/// warning naming it.
pub fn extract(
    encoder: &Encoder,
    set: &ImageSet,
    size: usize,
    aug: &AugmentConfig,
    batch: usize,
    device: &Device,
) -> Result<(Vec<f32>, usize, Vec<usize>)> {
    let enc = encoder.valid().to_device(device);
    let (mut out, mut kept) = (Vec::new(), Vec::with_capacity(set.len()));
    let mut dim = 0;
    for start in (0..set.len()).step_by(batch) {
        let end = (start + batch).min(set.len());
        let pix: Vec<(usize, Result<Vec<f32>>)> = (start..end)
            .into_par_iter()
            .map(|i| {
                (
                    i,
                    set.rgb(i)
                        .map(|img| eval_view(&img, size, (&aug.mean, &aug.std))),
                )
            })
            .collect();
        let mut rows = Vec::with_capacity(pix.len());
        for (i, p) in pix {
            match p {
                Ok(p) => {
                    rows.push(p);
                    kept.push(i);
                }
                Err(e) => tracing::warn!("leaving out unreadable image {}: {e}", set.names[i]),
            }
        }
        if rows.is_empty() {
            continue;
        }
        let b = rows.len();
        let x = Tensor::<4>::from_data(TensorData::new(rows.concat(), [b, 3, size, size]), device); // [b, 3, S, S]
        let y = enc.forward(x); // [b, D]
        dim = y.dims()[1];
        let v: Vec<f32> = y
            .into_data()
            .try_into_vec()
            .map_err(|e| Error::readback("the features", e))?;
        out.extend(v);
    }
    if kept.is_empty() {
        return Err(Error::data(
            set.names.first().map_or("features", |n| n.as_str()),
            "no image of the set could be decoded",
        ));
    }
    Ok((out, dim, kept))
}
