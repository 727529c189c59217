//! Segmentation on real images that fits a CPU: a mosaic is `grid` × `grid` tiles, each an image
//! of a labelled set (CIFAR-10's, for one), and its label map gives every pixel its tile's class.
//! Training mosaics come from the training split and validation mosaics from the test split, so
//! no image is seen by both. The tiles are drawn from (seed, mosaic index): the same seed gives
//! the same mosaics.

use crate::data::ImageSet;
use crate::image::Rgb8;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use rand::Rng;

/// One mosaic and where its tiles came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Mosaic {
    /// `grid·tile` pixels square.
    pub image: Rgb8,
    /// The class of each pixel, row-major, `grid·tile` squared.
    pub mask: Vec<u8>,
    /// The set's index of each tile, row by row.
    pub tiles: Vec<usize>,
}

/// `count` mosaics of `grid` × `grid` tiles of `tile` px from `set` (each image resized to the
/// tile with a triangle filter when its size differs), drawn from `seed`.
pub fn mosaics(
    set: &ImageSet,
    count: usize,
    grid: usize,
    tile: usize,
    seed: u64,
) -> Result<Vec<Mosaic>> {
    if set.is_empty() {
        return Err(Error::input("mosaics", "the set has no images"));
    }
    if set.classes.len() > usize::from(super::IGNORE) {
        return Err(Error::input(
            "mosaics",
            format!(
                "{} classes do not fit in a label map of bytes below the ignore label 255",
                set.classes.len()
            ),
        ));
    }
    if grid == 0 || tile == 0 {
        return Err(Error::input("mosaics", "grid and tile must be at least 1"));
    }
    let side = grid * tile;
    (0..count)
        .map(|m| {
            let mut r = rng(seed, Stream::Mosaic, &[m as u64]);
            let tiles: Vec<usize> = (0..grid * grid)
                .map(|_| r.random_range(0..set.len()))
                .collect();
            let mut image = Rgb8 {
                width: side,
                height: side,
                data: vec![0; side * side * 3],
            };
            let mut mask = vec![0u8; side * side];
            for (k, &i) in tiles.iter().enumerate() {
                let px = fit(&*set.rgb(i)?, tile);
                let (y0, x0) = ((k / grid) * tile, (k % grid) * tile);
                for y in 0..tile {
                    let row = (y0 + y) * side + x0;
                    image.data[row * 3..(row + tile) * 3]
                        .copy_from_slice(&px.data[y * tile * 3..(y + 1) * tile * 3]);
                    mask[row..row + tile].fill(set.labels[i] as u8);
                }
            }
            Ok(Mosaic { image, mask, tiles })
        })
        .collect()
}

/// `img` at `tile` × `tile` pixels.
fn fit(img: &Rgb8, tile: usize) -> Rgb8 {
    if img.width == tile && img.height == tile {
        return img.clone();
    }
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .expect("an Rgb8 holds width·height·3 bytes");
    let out = image::imageops::resize(
        &buf,
        tile as u32,
        tile as u32,
        image::imageops::FilterType::Triangle,
    );
    Rgb8 {
        width: tile,
        height: tile,
        data: out.into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SyntheticConfig, synthetic};

    /// Each tile's pixels are its source image's and its label its class; the same seed gives
    /// the same mosaics, another seed others.
    #[test]
    fn tiles_carry_their_images_and_labels() {
        let set = synthetic::generate(
            &SyntheticConfig {
                train_per_class: 3,
                test_per_class: 1,
            },
            8,
            0,
        )
        .train;
        let ms = mosaics(&set, 4, 2, 8, 1).unwrap();
        assert_eq!(ms.len(), 4);
        for m in &ms {
            assert_eq!((m.image.width, m.mask.len(), m.tiles.len()), (16, 256, 4));
            for (k, &i) in m.tiles.iter().enumerate() {
                let (y0, x0) = ((k / 2) * 8, (k % 2) * 8);
                let src = set.rgb(i).unwrap();
                for y in 0..8 {
                    for x in 0..8 {
                        let p = (y0 + y) * 16 + x0 + x;
                        assert_eq!(m.mask[p] as usize, set.labels[i]);
                        assert_eq!(
                            m.image.data[p * 3..p * 3 + 3],
                            src.data[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3]
                        );
                    }
                }
            }
        }
        assert_eq!(mosaics(&set, 4, 2, 8, 1).unwrap(), ms);
        assert_ne!(mosaics(&set, 4, 2, 8, 2).unwrap(), ms);
    }
}
