//! A data folder holding every kind of bad file users have: each is decoded correctly, or
//! skipped and counted, and pre-training runs to the end with a summary of what was skipped.

use byol::ExperimentConfig;
use byol::data::decode::decode;
use byol::data::imagefolder::{Cache, load_folder};
use byol::train::{Observer, RunOptions, pretrain};
use std::path::{Path, PathBuf};

struct Quiet;
impl Observer for Quiet {}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG whose header announces `w`×`h` pixels, with a first, nearly empty block of pixel data:
/// what a huge file looks like to a reader that stops after the header.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x01, 0x00, 0x00, 0x00, 0xFF, 0xFF]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// The zoo, in class `b` of a folder whose classes `a` and `b` also hold good images.
/// Returns the names expected to be skipped.
fn make_zoo(root: &Path) -> Vec<&'static str> {
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..12u8 {
            let img = image::RgbImage::from_fn(24, 20, |x, y| {
                image::Rgb([i * 20, (x * 10) as u8, (y * 12) as u8])
            });
            img.save(root.join(class).join(format!("good{i}.png")))
                .unwrap();
        }
    }
    let b = root.join("b");
    // Truncated JPEG: the first 40% of a valid file.
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
    let jpeg = buf.into_inner();
    std::fs::write(b.join("truncated.jpg"), &jpeg[..jpeg.len() * 2 / 5]).unwrap();
    std::fs::write(b.join("zero-byte.png"), b"").unwrap();
    image::GrayImage::from_pixel(9, 7, image::Luma([77]))
        .save(b.join("grayscale.png"))
        .unwrap();
    std::fs::write(b.join("cmyk.jpg"), include_bytes!("fixtures/cmyk.jpg")).unwrap();
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(5, 5, image::Rgb([65535u16, 0, 32896]))
        .save(b.join("sixteen-bit.png"))
        .unwrap();
    image::RgbaImage::from_pixel(6, 6, image::Rgba([10, 20, 30, 0]))
        .save(b.join("alpha.png"))
        .unwrap();
    std::fs::write(b.join("huge.png"), png_header_only(20_000, 20_000)).unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 100, 50]))
        .save(b.join("tiny.png"))
        .unwrap();
    std::fs::write(
        b.join("not-an-image.jpg"),
        b"<html>this is a web page saved as .jpg</html>",
    )
    .unwrap();
    std::fs::write(b.join("notes.txt"), b"ignored: not an image extension").unwrap();
    // Symlink loops: a folder linking to itself, a file linking to itself, a class linking to the root.
    std::os::unix::fs::symlink(".", b.join("loop-dir")).unwrap();
    std::os::unix::fs::symlink("self.png", b.join("self.png")).unwrap();
    std::os::unix::fs::symlink(".", root.join("loop-class")).unwrap();
    vec!["zero-byte.png", "huge.png", "not-an-image.jpg"]
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("byol-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_bad_file_is_decoded_or_skipped_and_counted() {
    let root = tmp("zoo");
    let must_skip = make_zoo(&root);
    let b = root.join("b");
    // What decodes decodes correctly.
    let px = |name: &str| decode(&b.join(name)).unwrap();
    assert_eq!(px("grayscale.png").data[..3], [77, 77, 77]);
    let cmyk = px("cmyk.jpg");
    assert!(
        cmyk.data[0] > 240 && cmyk.data[1] < 15 && cmyk.data[2] < 15,
        "CMYK red: {:?}",
        &cmyk.data[..3]
    );
    assert_eq!(px("sixteen-bit.png").data[..3], [255, 0, 128]);
    assert_eq!(px("alpha.png").data[..3], [10, 20, 30]);
    assert_eq!((px("tiny.png").width, px("tiny.png").height), (1, 1));
    for cache in [
        Cache::InMemory {
            limit_bytes: u64::MAX,
        },
        Cache::Off,
    ] {
        let set = load_folder(&root, cache, None, 0, 0, 100_000_000).unwrap();
        assert_eq!(set.classes, vec!["a", "b"], "the root link is not a class");
        let skipped: Vec<String> = set
            .skipped
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in &must_skip {
            assert!(
                skipped.iter().any(|s| s == name),
                "{name} not skipped: {skipped:?}"
            );
        }
        // Besides the unreadable images: the folder holding notes.txt and the root link (a
        // folder without images), each said once.
        let (unreadable, left_out): (Vec<_>, Vec<_>) = set
            .skipped
            .iter()
            .partition(|(p, _)| p.extension().is_some());
        for (p, reason) in unreadable {
            let n = p.file_name().unwrap().to_string_lossy();
            assert!(
                must_skip.contains(&n.as_ref()) || n == "truncated.jpg",
                "{n} skipped: {reason}"
            );
        }
        let left_out: Vec<(String, &str)> = left_out
            .iter()
            .map(|(p, why)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    why.as_str(),
                )
            })
            .collect();
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(
            left_out
                .iter()
                .any(|(n, why)| n == "b" && why.contains("notes.txt")),
            "{left_out:?}"
        );
        assert!(
            left_out
                .iter()
                .any(|(n, why)| n == "loop-class" && why.contains("not a class")),
            "{left_out:?}"
        );
        let huge = set
            .skipped
            .iter()
            .find(|(p, _)| p.ends_with("huge.png"))
            .unwrap();
        assert!(
            huge.1.contains("20000×20000") && huge.1.contains("max-image-pixels"),
            "{}",
            huge.1
        );
        // 24 good + grayscale, cmyk, 16-bit, alpha, tiny (+ truncated if its decoder recovers).
        assert!(set.len() == 29 || set.len() == 30, "{} images", set.len());
    }
}

#[test]
fn pretraining_on_the_zoo_runs_and_summarises_what_was_skipped() {
    let root = tmp("zoo-train");
    let must_skip = make_zoo(&root);
    for cache in [true, false] {
        let cfg = ExperimentConfig::load(
            "small-cpu",
            &[
                "data.source=\"folder\"".into(),
                format!("data.path=\"{}\"", root.display()),
                format!("data.cache={cache}"),
                "data.holdout-fraction=0.2".into(),
                "data.image-size=16".into(),
                "model.encoder.base-width=4".into(),
                "model.projector.hidden=32".into(),
                "model.projector.output=16".into(),
                "model.predictor.hidden=32".into(),
                "model.predictor.output=16".into(),
                "train.batch-size=8".into(),
                "train.epochs=1".into(),
                "eval.knn.k=3".into(),
            ],
        )
        .unwrap();
        let dir = tmp(&format!("zoo-run-{cache}"));
        let report = pretrain(
            &cfg,
            &dir,
            &RunOptions {
                resume: false,
                compare_random: false,
                max_steps: None,
                ..Default::default()
            },
            &mut Quiet,
        )
        .unwrap();
        assert!(report.knn.is_some());
        assert!(
            report.skipped_images >= must_skip.len(),
            "{}",
            report.skipped_images
        );
        let summary: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("skipped.json")).unwrap())
                .unwrap();
        assert_eq!(summary.len(), report.skipped_images);
        for name in &must_skip {
            assert!(
                summary
                    .iter()
                    .any(|v| v["file"].as_str().unwrap().ends_with(name)),
                "{name}"
            );
        }
    }
}
