//! ImageFolder: `root/<class>/<image>` with JPEG or PNG files. If `root/train` and `root/test`
//! both exist, they are the two splits (the layout of `../shared/data/cifar10`); otherwise a
//! seeded, class-balanced fraction of each class is held out as the test split.
//! Unreadable images are skipped, counted and reported, never fatal.

use super::{DataConfig, ImageSet, Pixels, Splits};
use crate::image::Rgb8;
use crate::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Decode a file to 8-bit RGB (grayscale, 16-bit, CMYK, palette and alpha images are converted).
pub fn decode(path: &Path) -> Result<Rgb8> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Decode an encoded image held in memory (`origin` names it in errors). Never panics on any
/// input: the property test below feeds it mutated and truncated files.
pub fn decode_bytes(bytes: &[u8], origin: &Path) -> Result<Rgb8> {
    if bytes.is_empty() {
        return Err(Error::data(origin, "empty file"));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(origin, e))?
        .decode()
        .map_err(|e| Error::data(origin, e.to_string()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::data(origin, "image has no pixels"));
    }
    Ok(Rgb8 { width: w as usize, height: h as usize, data: img.into_raw() })
}

/// Width and height from the file's header, without decoding the pixels.
fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| Error::data(path, e.to_string()))
}

/// Reject an image whose header announces more than `max_pixels` pixels, before decoding it.
fn check_size(path: &Path, max_pixels: u64) -> Result<()> {
    let (w, h) = dimensions(path)?;
    check_pixels(w, h, max_pixels, path)
}

/// Refuse the dimensions `w`×`h` a header announces when they exceed `max_pixels` or are empty
/// (`origin` names the image in the error).
pub fn check_pixels(w: u32, h: u32, max_pixels: u64, origin: &Path) -> Result<()> {
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(Error::data(origin, format!("{w}×{h} pixels is more than data.max-image-pixels = {max_pixels}")));
    }
    if w == 0 || h == 0 {
        return Err(Error::data(origin, "image has no pixels"));
    }
    Ok(())
}

/// Class folders (sorted) and their image files (sorted).
fn scan(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if !root.exists() {
        return Err(Error::data(root, "folder does not exist"));
    }
    if !root.is_dir() {
        return Err(Error::data(root, "not a folder"));
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        if !path.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| Error::io(&path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        classes.push((name, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    classes.retain(|(_, f)| !f.is_empty());
    if classes.is_empty() {
        return Err(Error::data(root, "no images found: expected class sub-folders holding .jpg/.jpeg/.png files (root/<class>/<image>)"));
    }
    Ok(classes)
}

/// Build an [`ImageSet`] from (label, file) pairs, decoding in parallel when `cache` (otherwise
/// only the headers are read). Images over `max_pixels` are skipped.
fn build(items: Vec<(usize, PathBuf)>, classes: Vec<String>, cache: bool, max_pixels: u64) -> ImageSet {
    let results: Vec<(usize, PathBuf, Result<Pixels>)> = items
        .into_par_iter()
        .map(|(label, path)| {
            let px = check_size(&path, max_pixels).and_then(|()| if cache { decode(&path).map(Pixels::Memory) } else { Ok(Pixels::File(path.clone())) });
            (label, path, px)
        })
        .collect();
    let mut set = ImageSet::empty(classes);
    for (label, path, px) in results {
        match px {
            Ok(px) => {
                set.images.push(px);
                set.names.push(path.to_string_lossy().into_owned());
                set.labels.push(label);
            }
            Err(e) => {
                tracing::warn!("skipping unreadable image {}: {e}", path.display());
                set.skipped.push((path, e.to_string()));
            }
        }
    }
    set
}

/// Load one ImageFolder as a single labelled set; with `max > 0`, only a class-balanced subset
/// of `max` files drawn with `seed` is read at all.
pub fn load_folder(root: &Path, cache: bool, class_names: Option<&[String]>, max: usize, seed: u64, max_pixels: u64) -> Result<ImageSet> {
    let scanned = scan(root)?;
    let classes: Vec<String> = match class_names {
        Some(c) => c.to_vec(),
        None => scanned.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut items = Vec::new();
    for (name, files) in scanned {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::data(root.join(&name), "class not present in the training split"));
        };
        items.extend(files.into_iter().map(|f| (label, f)));
    }
    if max > 0 && max < items.len() {
        let labels: Vec<usize> = items.iter().map(|(l, _)| *l).collect();
        let keep = super::balanced_subset(&labels, classes.len(), max, seed);
        let mut all: Vec<Option<(usize, PathBuf)>> = items.into_iter().map(Some).collect();
        items = keep.into_iter().map(|i| all[i].take().expect("unique index")).collect();
    }
    let set = build(items, classes, cache, max_pixels);
    if set.is_empty() {
        return Err(Error::data(root, format!("all {} images are unreadable", set.skipped.len())));
    }
    Ok(set)
}

/// Train and test splits of an ImageFolder root: `root/train` and `root/test` (or `root/val`),
/// else `root/<class>/…` split by `data.holdout-fraction`.
pub fn load_splits(root: &Path, cfg: &DataConfig, seed: u64) -> Result<Splits> {
    // `val/` is the other common name of the held-out split (ImageNet's layout).
    let tr = root.join("train");
    let te = if !root.join("test").is_dir() && root.join("val").is_dir() { root.join("val") } else { root.join("test") };
    if tr.is_dir() && te.is_dir() {
        let train = load_folder(&tr, cfg.cache, None, cfg.max_train, seed, cfg.max_image_pixels)?;
        let test = load_folder(&te, cfg.cache, Some(&train.classes), cfg.max_test, seed ^ 1, cfg.max_image_pixels)?;
        return Ok(Splits { train, test });
    }
    let all = load_folder(root, cfg.cache, None, 0, seed, cfg.max_image_pixels)?;
    let n_test = ((all.len() as f64) * cfg.holdout_fraction).round() as usize;
    let test_idx = super::balanced_subset(&all.labels, all.classes.len(), n_test, seed);
    let mut is_test = vec![false; all.len()];
    for &i in &test_idx {
        is_test[i] = true;
    }
    let mut train = ImageSet { skipped: all.skipped, ..ImageSet::empty(all.classes.clone()) };
    let mut test = ImageSet::empty(all.classes);
    for (((px, name), l), t) in all.images.into_iter().zip(all.names).zip(all.labels).zip(is_test) {
        let s = if t { &mut test } else { &mut train };
        s.images.push(px);
        s.names.push(name);
        s.labels.push(l);
    }
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 100_000_000;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("byol-if-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `train/` with `val/` (and no `test/`) is read as the two splits, not as classes.
    #[test]
    fn val_is_the_test_split_when_there_is_no_test() {
        let d = tmpdir("val");
        for (split, class) in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "b")] {
            std::fs::create_dir_all(d.join(split).join(class)).unwrap();
            image::RgbImage::from_fn(4, 4, |_, _| image::Rgb([1, 2, 3])).save(d.join(split).join(class).join("x.png")).unwrap();
        }
        let cfg = crate::config::ExperimentConfig::load("small-cpu", &[]).unwrap().data;
        let s = load_splits(&d, &cfg, 0).unwrap();
        assert_eq!((s.train.len(), s.test.len(), s.train.classes.clone()), (2, 2, vec!["a".to_string(), "b".to_string()]));
        assert!(s.test.names.iter().all(|n| n.contains("/val/")), "{:?}", s.test.names);
    }

    #[test]
    fn missing_and_empty_folders_are_clear_errors() {
        let e = load_folder(Path::new("/nonexistent/byol"), true, None, 0, 0, LIMIT).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/byol") && e.contains("does not exist"), "{e}");
        let d = tmpdir("empty");
        let e = load_folder(&d, true, None, 0, 0, LIMIT).unwrap_err().to_string();
        assert!(e.contains("no images found"), "{e}");
    }

    /// Property test of the decoding path: valid PNG and JPEG files with random bytes changed,
    /// inserted, or cut off never make it panic; it returns an image or an error.
    #[test]
    fn decoding_mutated_files_never_panics() {
        use crate::rng::{Stream, rng};
        use rand::Rng;
        let mut seeds = Vec::new();
        let img = image::RgbImage::from_fn(13, 9, |x, y| image::Rgb([(x * 19) as u8, (y * 27) as u8, ((x + y) * 7) as u8]));
        for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, fmt).unwrap();
            seeds.push(buf.into_inner());
        }
        seeds.push(include_bytes!("../../tests/fixtures/cmyk.jpg").to_vec());
        let origin = Path::new("fuzz");
        let mut r = rng(0, Stream::Synthetic, &[42]);
        let (mut ok, mut err) = (0, 0);
        for i in 0..3000 {
            let mut b = seeds[i % seeds.len()].clone();
            match r.random_range(0..4) {
                0 => {
                    for _ in 0..r.random_range(1..8) {
                        let k = r.random_range(0..b.len());
                        b[k] = r.random();
                    }
                }
                1 => b.truncate(r.random_range(0..b.len())),
                2 => {
                    let k = r.random_range(0..b.len());
                    let junk: Vec<u8> = (0..r.random_range(1..64)).map(|_| r.random()).collect();
                    b.splice(k..k, junk);
                }
                _ => b = (0..r.random_range(0..256)).map(|_| r.random()).collect(),
            }
            match decode_bytes(&b, origin) {
                Ok(img) => {
                    assert_eq!(img.data.len(), img.width * img.height * 3);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("fuzz"), "errors name the file: {e}");
                    err += 1;
                }
            }
        }
        assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    }

    #[test]
    fn corrupt_images_are_skipped_and_counted() {
        let d = tmpdir("corrupt");
        for class in ["a", "b"] {
            std::fs::create_dir_all(d.join(class)).unwrap();
            for i in 0..3 {
                let img = image::RgbImage::from_pixel(5, 4, image::Rgb([i * 40, 10, 200]));
                img.save(d.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        std::fs::write(d.join("a").join("bad.jpg"), b"not an image").unwrap();
        std::fs::write(d.join("b").join("empty.png"), b"").unwrap();
        std::fs::write(d.join("b").join("notes.txt"), b"ignored").unwrap();
        let gray = image::GrayImage::from_pixel(3, 3, image::Luma([77]));
        gray.save(d.join("b").join("gray.png")).unwrap();
        for cache in [true, false] {
            let set = load_folder(&d, cache, None, 0, 0, LIMIT).unwrap();
            assert_eq!(set.len(), 7);
            assert_eq!(set.skipped.len(), 2);
            assert_eq!(set.classes, vec!["a", "b"]);
        }
        let set = load_folder(&d, true, None, 0, 0, LIMIT).unwrap();
        let g = set.images.iter().filter_map(|p| if let Pixels::Memory(m) = p { Some(m) } else { None }).find(|m| m.width == 3).unwrap();
        assert_eq!(g.data[..3], [77, 77, 77]);
    }
}
