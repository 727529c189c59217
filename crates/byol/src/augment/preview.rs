//! A picture of what the model is trained on: each row is an image, its view t and its view t'
//! (made by the same code as training, on the training device), side by side.

use super::{
    AugmentConfig, Crop, Interpolation, ViewPipeline, resize_crop, resize_crop_u8, sample_params,
};
use crate::data::ImageSet;
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use burn::tensor::Device;

/// Rows of (image, view t, view t') for `count` images spread evenly over `set` (so that several
/// classes show), with the views of epoch 0 of `seed`,
/// each tile `size`·`scale` pixels (nearest-neighbour upscaling), 4-pixel white gutters.
pub fn preview_grid(
    set: &ImageSet,
    aug: &AugmentConfig,
    size: usize,
    count: usize,
    seed: u64,
    scale: usize,
    device: &Device,
) -> Result<Rgb8> {
    let count = count.min(set.len());
    if count == 0 {
        return Err(Error::input("the preview", "the data set has no images"));
    }
    let mut originals = Vec::with_capacity(count);
    let (mut crops, mut params) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for row in 0..count {
        let i = row * set.len() / count;
        let img = set.rgb(i)?;
        let mut r = rng(seed, Stream::Augment, &[0, i as u64]);
        for (v, view) in [&aug.view1, &aug.view2].into_iter().enumerate() {
            let p = sample_params(img.width, img.height, view, &mut r);
            crops[v].extend(resize_crop_u8(&img, p.crop, size, aug.interpolation));
            params[v].push(p);
        }
        originals.push(resize_crop(
            &img,
            Crop {
                x: 0.0,
                y: 0.0,
                w: img.width as f64,
                h: img.height as f64,
            },
            size,
            Interpolation::Bilinear,
        ));
    }
    let [c1, c2] = crops;
    let views: Vec<Vec<f32>> = [(c1, &params[0], &aug.view1), (c2, &params[1], &aug.view2)]
        .into_iter()
        .map(|(c, p, view)| {
            let pipe = ViewPipeline::new(view, aug, size, device);
            let x = pipe.augment(pipe.upload(c, count), p); // [count, 3, S, S] in [0, 1]
            x.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::readback("the preview's views", e))
        })
        .collect::<Result<_>>()?;
    let (tile, gap) = (size * scale, 4);
    let (w, h) = (3 * tile + 4 * gap, count * tile + (count + 1) * gap);
    let mut out = Rgb8 {
        width: w,
        height: h,
        data: vec![255; w * h * 3],
    };
    let plane = size * size;
    for row in 0..count {
        let tiles: [&[f32]; 3] = [
            &originals[row],
            &views[0][row * 3 * plane..(row + 1) * 3 * plane],
            &views[1][row * 3 * plane..(row + 1) * 3 * plane],
        ];
        for (col, chw) in tiles.into_iter().enumerate() {
            let (x0, y0) = (gap + col * (tile + gap), gap + row * (tile + gap));
            for y in 0..tile {
                for x in 0..tile {
                    let src = (y / scale) * size + x / scale;
                    for c in 0..3 {
                        out.data[((y0 + y) * w + x0 + x) * 3 + c] =
                            (chw[c * plane + src] * 255.0).round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
    Ok(out)
}
