//! The PASCAL VOC segmentation layout: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (a
//! palette PNG whose pixel values are class indices, 255 for "ignore"), and
//! `ImageSets/Segmentation/<split>.txt` listing the ids of a split. [`write_split`] writes
//! mosaics in it (so that the reader is exercised on the built-in benchmark); [`read_split`]
//! reads any dataset in it. The classes are declared, not inferred from the labels seen: a
//! `classes.txt` beside the folders (one name a line, the line's index its label), else VOC's
//! own 21 ([`read_classes`]); a label outside them is an error ([`check_labels`]).

use super::Split;
use crate::data::decode::decode;
use crate::image::Rgb8;
use crate::{Error, Result};
use std::path::Path;

/// The file that declares a VOC-layout dataset's classes, one name a line.
pub const CLASSES: &str = "classes.txt";

/// PASCAL VOC 2012's 21 classes, background first, in label order.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// The classes of the dataset in `root`: the lines of its [`CLASSES`] file, or VOC's 21 when it
/// has none. A declaration of fewer than 2 or more than 255 classes (255 is "ignore") is an error
/// naming the file.
pub fn read_classes(root: &Path) -> Result<Vec<String>> {
    let path = root.join(CLASSES);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(VOC_CLASSES.map(String::from).to_vec());
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if !(2..=usize::from(super::IGNORE)).contains(&names.len()) {
        return Err(Error::data(
            &path,
            format!(
                "declares {} classes; segmentation needs 2 to 255 (label 255 is \"ignore\")",
                names.len()
            ),
        ));
    }
    Ok(names)
}

/// Write `names` as the [`CLASSES`] file of the dataset in `root`.
pub fn write_classes(root: &Path, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    crate::io::write_atomic(&root.join(CLASSES), (names.join("\n") + "\n").as_bytes())
}

/// Every label of `samples` (read from `root`) is one of `classes` classes or [`super::IGNORE`];
/// else an error naming the label map, the pixel and the declaration.
pub fn check_labels(root: &Path, samples: &[Sample], classes: usize) -> Result<()> {
    for s in samples {
        if let Some(i) = s
            .mask
            .iter()
            .position(|&l| l != super::IGNORE && usize::from(l) >= classes)
        {
            let (x, y) = (i % s.image.width, i / s.image.width);
            return Err(Error::data(
                root.join("SegmentationClass").join(format!("{}.png", s.id)),
                format!(
                    "pixel ({x}, {y}) has label {}, outside the {classes} declared classes (0–{}, 255 ignored; declare them in {CLASSES})",
                    s.mask[i],
                    classes - 1
                ),
            ));
        }
    }
    Ok(())
}

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
/// images at quality 95, lossless palette label maps, the list last; every file atomically.
pub fn write_split(root: &Path, split: Split, samples: &[Sample]) -> Result<()> {
    let (images, masks, sets) = (
        root.join("JPEGImages"),
        root.join("SegmentationClass"),
        root.join("ImageSets/Segmentation"),
    );
    for d in [&images, &masks, &sets] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut ids = String::new();
    for m in samples {
        let id = &m.id;
        let path = images.join(format!("{id}.jpg"));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode(
                &m.image.data,
                m.image.width as u32,
                m.image.height as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| Error::data(&path, e.to_string()))?;
        crate::io::write_atomic(&path, &jpeg)?;
        write_mask(
            &masks.join(format!("{id}.png")),
            &m.mask,
            m.image.width,
            m.image.height,
        )?;
        ids.push_str(id);
        ids.push('\n');
    }
    crate::io::write_atomic(&sets.join(format!("{split}.txt")), ids.as_bytes())
}

fn write_mask(path: &Path, mask: &[u8], width: usize, height: usize) -> Result<()> {
    crate::io::write_png(
        path,
        (width, height),
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some(palette()),
        mask,
    )
}

/// A label map: the pixel values of a palette PNG (class indices), with its size.
fn read_mask(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    super::read_png(
        path,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        "label map",
        "an 8-bit palette PNG whose values are class indices",
    )
}

/// The samples of split `split` of the VOC-layout dataset in `root`, in the list's order.
pub fn read_split(root: &Path, split: Split) -> Result<Vec<Sample>> {
    let list = root
        .join("ImageSets/Segmentation")
        .join(format!("{split}.txt"));
    let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
    if text.lines().all(|l| l.trim().is_empty()) {
        return Err(Error::data(
            &list,
            format!("the `{split}` list names no image"),
        ));
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|id| {
            let image = decode(&root.join("JPEGImages").join(format!("{id}.jpg")))?;
            let mask_path = root.join("SegmentationClass").join(format!("{id}.png"));
            let (mask, w, h) = read_mask(&mask_path)?;
            if (w, h) != (image.width, image.height) {
                return Err(Error::data(
                    &mask_path,
                    format!(
                        "the label map is {w}×{h}, its image {}×{}",
                        image.width, image.height
                    ),
                ));
            }
            Ok(Sample {
                id: id.to_string(),
                image,
                mask,
            })
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
        assert_eq!(
            [&p[0..3], &p[3..6], &p[6..9], &p[45..48]],
            [[0, 0, 0], [128, 0, 0], [0, 128, 0], [192, 128, 128]]
        );
        assert_eq!(&p[255 * 3..], [224, 224, 192]);
    }

    /// Mosaics written in the layout read back with the same label maps, exactly, and images
    /// within JPEG's error; a missing list, a label map of another size or an RGB one are named
    /// errors.
    #[test]
    fn mosaics_round_trip_through_the_layout() {
        let set = synthetic::generate(
            &SyntheticConfig {
                train_per_class: 2,
                test_per_class: 1,
            },
            16,
            0,
        )
        .train;
        let ms = mosaics(&set, 3, 2, 16, 0).unwrap();
        let samples: Vec<Sample> = ms
            .iter()
            .enumerate()
            .map(|(i, m)| Sample {
                id: format!("train-{i:06}"),
                image: m.image.clone(),
                mask: m.mask.clone(),
            })
            .collect();
        let root = tmp("round-trip");
        write_split(&root, Split::Train, &samples).unwrap();
        let back = read_split(&root, Split::Train).unwrap();
        assert_eq!(
            back.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["train-000000", "train-000001", "train-000002"]
        );
        for (m, s) in ms.iter().zip(&back) {
            assert_eq!(s.mask, m.mask);
            let err: f64 = m
                .image
                .data
                .iter()
                .zip(&s.image.data)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .sum::<f64>()
                / m.image.data.len() as f64;
            assert!(err < 6.0, "mean absolute JPEG error {err}");
        }
        let e = read_split(&root, Split::Val).unwrap_err().to_string();
        assert!(e.contains("val.txt"), "{e}");
        // An empty list is said as such (it was "0 training images are fewer than one batch").
        std::fs::write(root.join("ImageSets/Segmentation/val.txt"), "\n").unwrap();
        let e = read_split(&root, Split::Val).unwrap_err().to_string();
        assert!(
            e.contains("val.txt") && e.contains("the `val` list names no image"),
            "{e}"
        );
        write_mask(
            &root.join("SegmentationClass/train-000001.png"),
            &[0; 20 * 10],
            20,
            10,
        )
        .unwrap();
        let e = read_split(&root, Split::Train).unwrap_err().to_string();
        assert!(
            e.contains("train-000001.png") && e.contains("20×10") && e.contains("32×32"),
            "{e}"
        );
        image::RgbImage::new(32, 32)
            .save(root.join("SegmentationClass/train-000001.png"))
            .unwrap();
        let e = read_split(&root, Split::Train).unwrap_err().to_string();
        assert!(
            e.contains("train-000001.png") && e.contains("palette"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Without `classes.txt` the classes are VOC's 21; with it, its lines; a label outside the
    /// declaration (one stray pixel) is an error naming the file and the pixel, not a new class.
    #[test]
    fn the_classes_are_declared_and_a_stray_label_is_an_error() {
        let root = tmp("classes");
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(
            read_classes(&root).unwrap(),
            VOC_CLASSES.map(String::from).to_vec()
        );
        let image = Rgb8 {
            width: 4,
            height: 2,
            data: vec![0; 4 * 2 * 3],
        };
        let mut mask = vec![0u8, 1, 20, 255, 3, 2, 1, 0];
        let sample = |mask: &[u8]| Sample {
            id: "a".into(),
            image: image.clone(),
            mask: mask.to_vec(),
        };
        check_labels(&root, &[sample(&mask)], 21).unwrap();
        mask[6] = 37;
        let e = check_labels(&root, &[sample(&mask)], 21)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SegmentationClass/a.png")
                && e.contains("pixel (2, 1)")
                && e.contains("label 37")
                && e.contains("21 declared"),
            "{e}"
        );
        write_classes(&root, &["sky".into(), "sea".into(), "boat".into()]).unwrap();
        assert_eq!(read_classes(&root).unwrap(), ["sky", "sea", "boat"]);
        let e = check_labels(&root, &[sample(&[0, 1, 2, 255, 3, 2, 1, 0])], 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pixel (0, 1)") && e.contains("label 3"), "{e}");
        std::fs::write(root.join(CLASSES), "only\n").unwrap();
        let e = read_classes(&root).unwrap_err().to_string();
        assert!(
            e.contains("classes.txt") && e.contains("declares 1 classes"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
