//! The PASCAL VOC segmentation layout: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (a
//! palette PNG whose pixel values are class indices, 255 for "ignore"), and
//! `ImageSets/Segmentation/<split>.txt` listing the ids of a split. [`write_split`] writes
//! mosaics in it (so that the reader is exercised on the built-in benchmark); [`read_split`]
//! reads any dataset in it.

use crate::data::decode::decode;
use crate::image::Rgb8;
use crate::{Error, Result};
use std::path::Path;

/// One image of a split and its label map.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub image: Rgb8,
    /// Class index per pixel, row-major, the image's size.
    pub mask: Vec<u8>,
}

/// VOC's colour map: entry i spreads the bits of i over the three channels, high bits first.
pub fn palette() -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * 3);
    for i in 0..256u32 {
        let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, i);
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        out.extend([r, g, b]);
    }
    out
}

/// Write `samples` as the split `split` of a VOC-layout dataset in `root`, under their ids; JPEG
/// images at quality 95, lossless palette label maps.
pub fn write_split(root: &Path, split: &str, samples: &[Sample]) -> Result<()> {
    let (images, masks, sets) = (root.join("JPEGImages"), root.join("SegmentationClass"), root.join("ImageSets/Segmentation"));
    for d in [&images, &masks, &sets] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut ids = String::new();
    for m in samples {
        let id = &m.id;
        let path = images.join(format!("{id}.jpg"));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 95)
            .encode(&m.image.data, m.image.width as u32, m.image.height as u32, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::data(&path, e.to_string()))?;
        write_mask(&masks.join(format!("{id}.png")), &m.mask, m.image.width, m.image.height)?;
        ids.push_str(id);
        ids.push('\n');
    }
    let list = sets.join(format!("{split}.txt"));
    std::fs::write(&list, ids).map_err(|e| Error::io(&list, e))
}

fn write_mask(path: &Path, mask: &[u8], width: usize, height: usize) -> Result<()> {
    super::write_png(path, (width, height), png::ColorType::Indexed, png::BitDepth::Eight, Some(palette()), mask)
}

/// A label map: the pixel values of a palette PNG (class indices), with its size.
fn read_mask(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    super::read_png(path, png::ColorType::Indexed, png::BitDepth::Eight, "label map", "an 8-bit palette PNG whose values are class indices")
}

/// The samples of split `split` of the VOC-layout dataset in `root`, in the list's order.
pub fn read_split(root: &Path, split: &str) -> Result<Vec<Sample>> {
    let list = root.join("ImageSets/Segmentation").join(format!("{split}.txt"));
    let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|id| {
            let image = decode(&root.join("JPEGImages").join(format!("{id}.jpg")))?;
            let mask_path = root.join("SegmentationClass").join(format!("{id}.png"));
            let (mask, w, h) = read_mask(&mask_path)?;
            if (w, h) != (image.width, image.height) {
                return Err(Error::data(&mask_path, format!("the label map is {w}×{h}, its image {}×{}", image.width, image.height)));
            }
            Ok(Sample { id: id.to_string(), image, mask })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SyntheticConfig, synthetic};
    use crate::transfer::mosaic::mosaics;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("byol-voc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// VOC's own colours for its first classes (background black, aeroplane dark red, …).
    #[test]
    fn the_palette_is_vocs() {
        let p = palette();
        assert_eq!([&p[0..3], &p[3..6], &p[6..9], &p[45..48]], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [192, 128, 128]]);
        assert_eq!(&p[255 * 3..], [224, 224, 192]);
    }

    /// Mosaics written in the layout read back with the same label maps, exactly, and images
    /// within JPEG's error; a missing list, a label map of another size or an RGB one are named
    /// errors.
    #[test]
    fn mosaics_round_trip_through_the_layout() {
        let set = synthetic::generate(&SyntheticConfig { train_per_class: 2, test_per_class: 1 }, 16, 0).train;
        let ms = mosaics(&set, 3, 2, 16, 0).unwrap();
        let samples: Vec<Sample> =
            ms.iter().enumerate().map(|(i, m)| Sample { id: format!("train-{i:06}"), image: m.image.clone(), mask: m.mask.clone() }).collect();
        let root = tmp("round-trip");
        write_split(&root, "train", &samples).unwrap();
        let back = read_split(&root, "train").unwrap();
        assert_eq!(back.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["train-000000", "train-000001", "train-000002"]);
        for (m, s) in ms.iter().zip(&back) {
            assert_eq!(s.mask, m.mask);
            let err: f64 = m.image.data.iter().zip(&s.image.data).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()).sum::<f64>() / m.image.data.len() as f64;
            assert!(err < 6.0, "mean absolute JPEG error {err}");
        }
        let e = read_split(&root, "val").unwrap_err().to_string();
        assert!(e.contains("val.txt"), "{e}");
        write_mask(&root.join("SegmentationClass/train-000001.png"), &[0; 20 * 10], 20, 10).unwrap();
        let e = read_split(&root, "train").unwrap_err().to_string();
        assert!(e.contains("train-000001.png") && e.contains("20×10") && e.contains("32×32"), "{e}");
        image::RgbImage::new(32, 32).save(root.join("SegmentationClass/train-000001.png")).unwrap();
        let e = read_split(&root, "train").unwrap_err().to_string();
        assert!(e.contains("train-000001.png") && e.contains("palette"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
