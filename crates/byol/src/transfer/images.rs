//! A whole image in, a picture out: the preprocessing of a whole image for the dense protocols'
//! networks, and the rows of their prediction pictures.

use crate::augment::{AugmentConfig, normalize};
use crate::image::Rgb8;
use burn::tensor::{Device, Tensor, TensorData};

/// A whole image, normalised, as a [1, 3, H, W] tensor on `device`.
pub fn image_tensor(img: &Rgb8, aug: &AugmentConfig, device: &Device) -> Tensor<4> {
    let n = img.width * img.height;
    let mut x = vec![0f32; 3 * n];
    for (i, p) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            x[c * n + i] = f32::from(p[c]) / 255.0;
        }
    }
    normalize(&mut x, &aug.mean, &aug.std);
    Tensor::from_data(TensorData::new(x, [1, 3, img.height, img.width]), device)
}

/// Rows of three panels (each an image of the row's size), drawn `scale` times their size with
/// a white gap between panels and rows.
pub fn rows_picture(rows: &[[Rgb8; 3]], scale: usize) -> Rgb8 {
    let (w, h) = rows
        .iter()
        .fold((0, 0), |(w, h), r| (w.max(r[0].width), h.max(r[0].height)));
    let (cw, ch, gap) = (w * scale, h * scale, 4);
    let (width, height) = (
        3 * cw + 2 * gap,
        rows.len() * ch + rows.len().saturating_sub(1) * gap,
    );
    let mut out = Rgb8 {
        width,
        height,
        data: vec![255; width * height * 3],
    };
    for (r, panels) in rows.iter().enumerate() {
        for (col, p) in panels.iter().enumerate() {
            for y in 0..p.height * scale {
                for x in 0..p.width * scale {
                    let i = ((y / scale) * p.width + x / scale) * 3;
                    let o = ((r * (ch + gap) + y) * width + col * (cw + gap) + x) * 3;
                    out.data[o..o + 3].copy_from_slice(&p.data[i..i + 3]);
                }
            }
        }
    }
    out
}
